//! The iommufd selftest mock (`drivers/iommu/iommufd/selftest.c`, `CONFIG_IOMMUFD_TEST`): mock
//! devices on a mock IOMMU whose `IOMMU_TEST_OP_TRIGGER_IOPF` reports a real page request through
//! `iommu_report_device_fault()`, so fault records reach a fault queue without hardware.
//!
//! The flow that works on Linux 6.12 (with `IOMMUFD_TEST` selecting `IOMMU_IOPF`), as in
//! `tools/testing/selftests/iommu/iommufd.c`:
//! `IOAS_ALLOC` → [`MockDevice::create`] → `HWPT_ALLOC(NEST_PARENT)` → `FAULT_QUEUE_ALLOC` →
//! `HWPT_ALLOC(nested selftest data, FAULT_ID_VALID)` → [`MockDevice::replace`] →
//! [`MockDevice::trigger_iopf`] → read/write the fault fd.

use std::os::fd::AsFd;

use iopf_abi::Perm;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::sys::{test_cmd, IommuTestCmd};
use crate::{Error, Iommufd, Result};

/// `IOMMU_TEST_OP_MOCK_DOMAIN`.
const IOMMU_TEST_OP_MOCK_DOMAIN: u32 = 2;
/// `IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE`.
const IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: u32 = 10;
/// `IOMMU_TEST_OP_TRIGGER_IOPF`.
const IOMMU_TEST_OP_TRIGGER_IOPF: u32 = 15;

/// `IOMMU_HWPT_DATA_SELFTEST`: the `data_type` of a mock nested HWPT.
pub const IOMMU_HWPT_DATA_SELFTEST: u32 = 0xdead;
/// `IOMMU_TEST_IOTLB_DEFAULT`: the `iotlb` value of `struct iommu_hwpt_selftest`.
pub const IOMMU_TEST_IOTLB_DEFAULT: u32 = 0x0bad_beef;
/// `IOMMU_NO_PASID`: a trigger with this PASID reports a request without `PASID_VALID`.
pub const IOMMU_NO_PASID: u32 = 0;

/// `struct iommu_hwpt_selftest`, the data of a mock nested HWPT, as bytes for
/// [`crate::Iommufd::alloc_fault_hwpt`].
pub fn selftest_hwpt_data() -> [u8; 4] {
    IOMMU_TEST_IOTLB_DEFAULT.to_ne_bytes()
}

/// `iommu_test_cmd.mock_domain` (output).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct MockDomainOut {
    out_stdev_id: u32,
    out_hwpt_id: u32,
    out_idev_id: u32,
}

/// `iommu_test_cmd.trigger_iopf`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct TriggerIopfCmd {
    dev_id: u32,
    pasid: u32,
    grpid: u32,
    perm: u32,
    addr: u64,
}

fn cmd(op: u32, id: u32, payload: &[u8]) -> IommuTestCmd {
    let mut c = IommuTestCmd {
        size: std::mem::size_of::<IommuTestCmd>() as u32,
        op,
        id,
        reserved: 0,
        payload: [0; 48],
        last: 0,
        pad: 0,
    };
    c.payload[..payload.len()].copy_from_slice(payload);
    c
}

/// One page request for [`MockDevice::trigger_iopf`]. The mock always reports it with
/// `LAST_PAGE` (a one-request group), and with `PASID_VALID` unless `pasid` is
/// [`IOMMU_NO_PASID`] (`iommufd_test_trigger_iopf()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriggerIopf {
    /// The PASID.
    pub pasid: u32,
    /// The PRG index.
    pub grpid: u32,
    /// The access.
    pub perm: Perm,
    /// The faulting address.
    pub addr: u64,
}

/// A selftest mock device bound to an iommufd (`IOMMU_TEST_OP_MOCK_DOMAIN`): the selftest
/// object (`stdev_id`), the auto-domain HWPT it starts attached to, and the device's iommufd id.
/// Destroyed with the iommufd, or by [`Iommufd::destroy`] of `stdev_id`.
#[derive(Debug, Clone)]
pub struct MockDevice {
    iommufd: Iommufd,
    /// The selftest object id (`out_stdev_id`), the handle for replace and destroy.
    pub stdev_id: u32,
    /// The HWPT the device was first attached to (`out_hwpt_id`): an automatic domain of the
    /// IOAS, not fault-capable, destroyed by the kernel once the device leaves it.
    pub hwpt_id: u32,
    /// The IOAS the device was created on.
    pub ioas_id: u32,
    /// The device's iommufd id (`out_idev_id`): `dev_id` in HWPT_ALLOC, triggers and records.
    pub dev_id: u32,
}

impl MockDevice {
    /// `IOMMU_TEST_OP_MOCK_DOMAIN`: creates a mock device attached to a new domain on `ioas_id`.
    pub fn create(iommufd: &Iommufd, ioas_id: u32) -> Result<MockDevice> {
        let mut c = cmd(IOMMU_TEST_OP_MOCK_DOMAIN, ioas_id, &[]);
        test_cmd(iommufd.as_fd(), &mut c).map_err(|errno| Error::Ioctl {
            op: "IOMMU_TEST_OP_MOCK_DOMAIN",
            errno,
        })?;
        let (out, _) = MockDomainOut::read_from_prefix(&c.payload).map_err(|_| Error::Ioctl {
            op: "IOMMU_TEST_OP_MOCK_DOMAIN (short payload)",
            errno: rustix::io::Errno::IO,
        })?;
        Ok(MockDevice {
            iommufd: iommufd.clone(),
            stdev_id: out.out_stdev_id,
            hwpt_id: out.out_hwpt_id,
            ioas_id,
            dev_id: out.out_idev_id,
        })
    }

    /// `IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE`: attaches the device to `pt_id` (a HWPT, or an IOAS
    /// for an automatic domain) in place of its current one; returns the HWPT now attached.
    /// Leaving a fault-capable HWPT answers its outstanding groups INVALID.
    pub fn replace(&self, pt_id: u32) -> Result<u32> {
        let mut c = cmd(
            IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
            self.stdev_id,
            pt_id.as_bytes(),
        );
        test_cmd(self.iommufd.as_fd(), &mut c).map_err(|errno| Error::Ioctl {
            op: "IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE",
            errno,
        })?;
        let (now, _) = u32::read_from_prefix(&c.payload).map_err(|_| Error::Ioctl {
            op: "IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE (short payload)",
            errno: rustix::io::Errno::IO,
        })?;
        Ok(now)
    }

    /// `IOMMU_TEST_OP_TRIGGER_IOPF`: the mock device reports one page request. Succeeds even
    /// when no fault-capable HWPT is attached (the kernel then answers it INVALID itself and no
    /// record reaches any queue).
    pub fn trigger_iopf(&self, req: &TriggerIopf) -> Result<()> {
        let t = TriggerIopfCmd {
            dev_id: self.dev_id,
            pasid: req.pasid,
            grpid: req.grpid,
            perm: req.perm.bits(),
            addr: req.addr,
        };
        let mut c = cmd(IOMMU_TEST_OP_TRIGGER_IOPF, 0, t.as_bytes());
        test_cmd(self.iommufd.as_fd(), &mut c).map_err(|errno| Error::Ioctl {
            op: "IOMMU_TEST_OP_TRIGGER_IOPF",
            errno,
        })
    }
}

impl iommufd_ioctls::AttachHwpt for MockDevice {
    fn attach_hwpt(&self, pt_id: u32) -> std::io::Result<()> {
        self.replace(pt_id)
            .map(|_| ())
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }

    /// Back to an automatic (not fault-capable) domain of the device's IOAS.
    fn detach_hwpt(&self) -> std::io::Result<()> {
        self.attach_hwpt(self.ioas_id)
    }
}
