//! `/dev/iommu`: the IOAS and HWPT calls a VMM needs around a fault queue. IOAS, HWPT and object
//! destruction go through cloud-hypervisor's `iommufd-ioctls`; `IOMMU_FAULT_QUEUE_ALLOC`, which it
//! lacks, through [`crate::sys`].

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use iommufd_bindings::iommufd::{
    iommu_hwpt_alloc, iommu_ioas_alloc, iommufd_hwpt_alloc_flags_IOMMU_HWPT_ALLOC_NEST_PARENT,
};
use iommufd_ioctls::{AttachHwpt, IommuFd};
use iopf_abi::iommufd::{IommuFaultAlloc, IOMMU_HWPT_FAULT_ID_VALID};

use crate::{sys, Error, FaultQueue, Result};

/// `IOMMU_HWPT_ALLOC_NEST_PARENT`: the HWPT can parent nested (user-managed) HWPTs.
pub const IOMMU_HWPT_ALLOC_NEST_PARENT: u32 = iommufd_hwpt_alloc_flags_IOMMU_HWPT_ALLOC_NEST_PARENT;

/// An open iommufd (`/dev/iommu`). Cheap to clone (shares the fd); every object allocated through
/// it lives until destroyed or until the last clone is dropped (closing the fd destroys them all).
#[derive(Clone)]
pub struct Iommufd {
    inner: Arc<IommuFd>,
}

impl std::fmt::Debug for Iommufd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iommufd")
            .field("fd", &self.as_fd())
            .finish()
    }
}

/// The arguments of `IOMMU_HWPT_ALLOC` (`struct iommu_hwpt_alloc`), minus the output.
#[derive(Debug, Clone, Copy)]
pub struct HwptAlloc<'a> {
    /// The device the HWPT is for (its iommufd object id).
    pub dev_id: u32,
    /// The IOAS, parent HWPT or vIOMMU it hangs under.
    pub pt_id: u32,
    /// `IOMMU_HWPT_ALLOC_*` flags; `IOMMU_HWPT_FAULT_ID_VALID` is added when `fault_id` is set.
    pub flags: u32,
    /// `enum iommu_hwpt_data_type` (0: none, for a kernel-managed HWPT).
    pub data_type: u32,
    /// The type-specific data (a driver's stage-1 table description); empty for none.
    pub data: &'a [u8],
    /// The fault queue that receives this HWPT's I/O page faults.
    pub fault_id: Option<u32>,
}

impl Iommufd {
    /// Opens `/dev/iommu`.
    ///
    /// Errors: [`Error::Open`] (ENOENT without iommufd, EACCES without permission).
    pub fn open() -> Result<Iommufd> {
        IommuFd::new()
            .map(Iommufd::from_ioctls)
            .map_err(|e| Error::from_ioctls("open /dev/iommu", e))
    }

    /// Uses an iommufd already opened through `iommufd-ioctls` (a VMM sharing its own).
    pub fn from_ioctls(inner: IommuFd) -> Iommufd {
        Iommufd {
            inner: Arc::new(inner),
        }
    }

    /// The `iommufd-ioctls` handle, for the calls this crate does not wrap.
    pub fn ioctls(&self) -> &Arc<IommuFd> {
        &self.inner
    }

    /// `IOMMU_IOAS_ALLOC`: a new, empty I/O address space. Returns its id.
    pub fn alloc_ioas(&self) -> Result<u32> {
        let mut cmd = iommu_ioas_alloc {
            size: std::mem::size_of::<iommu_ioas_alloc>() as u32,
            ..Default::default()
        };
        self.inner
            .alloc_iommu_ioas(&mut cmd)
            .map_err(|e| Error::from_ioctls("IOMMU_IOAS_ALLOC", e))?;
        Ok(cmd.out_ioas_id)
    }

    /// `IOMMU_FAULT_QUEUE_ALLOC` (`iommufd_fault_alloc()`): a new fault queue and its fd
    /// (O_CLOEXEC, read/write, not seekable).
    pub fn alloc_fault_queue(&self) -> Result<FaultQueue> {
        let mut cmd = IommuFaultAlloc {
            size: std::mem::size_of::<IommuFaultAlloc>() as u32,
            ..Default::default()
        };
        let fd = sys::fault_queue_alloc(self.as_fd(), &mut cmd).map_err(|errno| Error::Ioctl {
            op: "IOMMU_FAULT_QUEUE_ALLOC",
            errno,
        })?;
        Ok(FaultQueue::from_parts(cmd.out_fault_id, fd))
    }

    /// `IOMMU_HWPT_ALLOC`. Returns the new HWPT's id.
    ///
    /// Errors: [`Error::Ioctl`] with the kernel's errno (ENOENT: no such device, parent or fault
    /// queue; EOPNOTSUPP: a fault queue on a NEST_PARENT HWPT, an unknown data type; EINVAL...).
    pub fn alloc_hwpt(&self, req: &HwptAlloc<'_>) -> Result<u32> {
        let mut flags = req.flags;
        if req.fault_id.is_some() {
            flags |= IOMMU_HWPT_FAULT_ID_VALID;
        }
        let data_len = u32::try_from(req.data.len()).map_err(|_| Error::Ioctl {
            op: "IOMMU_HWPT_ALLOC (data longer than u32::MAX bytes)",
            errno: rustix::io::Errno::INVAL,
        })?;
        let mut cmd = iommu_hwpt_alloc {
            size: std::mem::size_of::<iommu_hwpt_alloc>() as u32,
            flags,
            dev_id: req.dev_id,
            pt_id: req.pt_id,
            data_type: req.data_type,
            data_len,
            data_uptr: if req.data.is_empty() {
                0
            } else {
                req.data.as_ptr() as u64
            },
            fault_id: req.fault_id.unwrap_or(0),
            ..Default::default()
        };
        self.inner
            .alloc_iommu_hwpt(&mut cmd)
            .map_err(|e| Error::from_ioctls("IOMMU_HWPT_ALLOC", e))?;
        Ok(cmd.out_hwpt_id)
    }

    /// A fault-capable HWPT: `IOMMU_HWPT_ALLOC` with `IOMMU_HWPT_FAULT_ID_VALID` and `fault`'s id.
    /// Linux accepts this only for a user-managed (nested) HWPT: `pt_id` is a NEST_PARENT HWPT
    /// (or a vIOMMU) and `data_type`/`data` describe the guest's stage-1 table.
    pub fn alloc_fault_hwpt(
        &self,
        dev_id: u32,
        pt_id: u32,
        data_type: u32,
        data: &[u8],
        fault: &FaultQueue,
    ) -> Result<u32> {
        self.alloc_hwpt(&HwptAlloc {
            dev_id,
            pt_id,
            flags: 0,
            data_type,
            data,
            fault_id: Some(fault.id()),
        })
    }

    /// `IOMMU_DESTROY`: destroys an object (IOAS, HWPT, fault queue, selftest device...).
    /// Destroying a fault-capable HWPT's attachment answers its outstanding groups INVALID.
    pub fn destroy(&self, id: u32) -> Result<()> {
        self.inner
            .destroy_iommu_object(id)
            .map_err(|e| Error::from_ioctls("IOMMU_DESTROY", e))
    }
}

impl AsFd for Iommufd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        sys::borrow_iommufd(&self.inner)
    }
}

/// Attaches (or replaces the attachment of) a device to a HWPT through the VMM's own device
/// handle, `iommufd-ioctls`'s [`AttachHwpt`] (a VFIO cdev's `VFIO_DEVICE_ATTACH_IOMMUFD_PT`, or
/// the selftest mock). Attaching a fault-capable HWPT turns on IOPF for the device; replacing it
/// answers every group still outstanding on the old one INVALID (`iommufd_fault_domain_replace_dev()`).
pub fn attach_hwpt(device: &dyn AttachHwpt, hwpt_id: u32) -> Result<()> {
    device.attach_hwpt(hwpt_id).map_err(|e| Error::Ioctl {
        op: "attach HWPT",
        errno: rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO),
    })
}
