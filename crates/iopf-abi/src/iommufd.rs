//! The iommufd fault queue records of Linux 6.12 (`include/uapi/linux/iommufd.h`).
//!
//! A fault fd's `read()` yields `struct iommu_hwpt_pgfault` records, whole groups at a time, every
//! record of a group carrying the group's cookie; `write()` takes `struct iommu_hwpt_page_response`
//! records naming a group by that cookie.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::fault::{PageRequest, PageRequestFlags};
use crate::{AbiError, Perm, ResponseCode};

/// Raw `struct iommu_hwpt_pgfault` (40 bytes, 8-byte aligned: `addr` is `__aligned_u64`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct HwptPgfault {
    /// `flags`: [`PgfaultFlags`].
    pub flags: u32,
    /// `dev_id`: the iommufd object id of the faulting device.
    pub dev_id: u32,
    /// `pasid`: valid with `PASID_VALID`.
    pub pasid: u32,
    /// `grpid`: the PRG index.
    pub grpid: u32,
    /// `perm`: [`Perm`] bits (`IOMMU_PGFAULT_PERM_*`).
    pub perm: u32,
    /// `__reserved`: must be 0.
    pub reserved: u32,
    /// `addr`: the fault address.
    pub addr: u64,
    /// `length`: a hint of how much data the requester will fetch (0: none).
    pub length: u32,
    /// `cookie`: the kernel-managed group cookie, to echo in the response.
    pub cookie: u32,
}

/// Raw `struct iommu_hwpt_page_response` (8 bytes).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct HwptPageResponse {
    /// `cookie`: the cookie of the group being answered.
    pub cookie: u32,
    /// `code`: `IOMMUFD_PAGE_RESP_SUCCESS` (0) or `IOMMUFD_PAGE_RESP_INVALID` (1).
    pub code: u32,
}

/// Raw `struct iommu_fault_alloc` (16 bytes), the argument of `IOMMU_FAULT_QUEUE_ALLOC`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct IommuFaultAlloc {
    /// `size`: `sizeof(struct iommu_fault_alloc)`.
    pub size: u32,
    /// `flags`: must be 0.
    pub flags: u32,
    /// `out_fault_id`: the id of the new fault object.
    pub out_fault_id: u32,
    /// `out_fault_fd`: its file descriptor.
    pub out_fault_fd: u32,
}

/// `IOMMUFD_CMD_FAULT_QUEUE_ALLOC`.
pub const IOMMUFD_CMD_FAULT_QUEUE_ALLOC: u32 = 0x8e;
/// `IOMMU_HWPT_FAULT_ID_VALID`: `iommu_hwpt_alloc.fault_id` names a fault queue.
pub const IOMMU_HWPT_FAULT_ID_VALID: u32 = 1 << 2;
/// `IOMMUFD_PAGE_RESP_SUCCESS`.
pub const IOMMUFD_PAGE_RESP_SUCCESS: u32 = 0;
/// `IOMMUFD_PAGE_RESP_INVALID`.
pub const IOMMUFD_PAGE_RESP_INVALID: u32 = 1;

bitflags::bitflags! {
    /// `iommu_hwpt_pgfault.flags` (`enum iommu_hwpt_pgfault_flags`). A record read from a kernel
    /// may carry bits the uAPI does not name: Linux copies its internal `prm.flags` through
    /// (`iommufd_compose_fault_message()`), so VT-d's and AMD's requests arrive with
    /// [`KERNEL_RESPONSE_NEEDS_PASID`] set. Decoding keeps such bits
    /// ([`PgfaultFlags::unnamed`]).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct PgfaultFlags: u32 {
        /// `IOMMU_PGFAULT_FLAGS_PASID_VALID`.
        const PASID_VALID = 1 << 0;
        /// `IOMMU_PGFAULT_FLAGS_LAST_PAGE`: the last fault of its group.
        const LAST_PAGE = 1 << 1;
    }
}

/// The kernel-internal `IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID` (`include/linux/iommu.h`, bit 2
/// since Linux removed page-request private data in 2024): not part of the uAPI, but Linux ≥ 6.11
/// copies it into `iommu_hwpt_pgfault.flags`, and VT-d (`intel_prq_report()`) and AMD
/// (`ppr.c`) set it on every request they report.
pub const KERNEL_RESPONSE_NEEDS_PASID: u32 = 1 << 2;

impl PgfaultFlags {
    /// The bits the uAPI does not name (0 for a record iopf writes).
    pub fn unnamed(&self) -> u32 {
        self.bits() & !PgfaultFlags::all().bits()
    }
}

/// A decoded `struct iommu_hwpt_pgfault`, as liberal as a reader of kernel records must be: every
/// field as the kernel wrote it, bits the uAPI does not name included (see
/// [`PgFault::unnamed`]), so that no record, and no group, is ever refused for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PgFault {
    /// `PASID_VALID`, `LAST_PAGE`, and any bit the kernel added.
    pub flags: PgfaultFlags,
    /// The device's iommufd object id.
    pub dev_id: u32,
    /// The PASID, meaningful with `PASID_VALID`.
    pub pasid: u32,
    /// The PRG index.
    pub grpid: u32,
    /// The access.
    pub perm: Perm,
    /// The fault address.
    pub addr: u64,
    /// The length hint.
    pub length: u32,
    /// The group's cookie.
    pub cookie: u32,
    /// `__reserved`: 0 in every record Linux 6.12 writes; kept as read.
    pub reserved: u32,
}

/// What a record carries outside the uAPI: flag and permission bits it does not name, and a
/// non-zero `__reserved`. Kept visible, never a reason to refuse the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Unnamed {
    /// `flags` bits the uAPI does not name.
    pub flags: u32,
    /// `perm` bits the uAPI does not name.
    pub perm: u32,
    /// `__reserved`.
    pub reserved: u32,
}

impl Unnamed {
    /// Whether the record has nothing outside the uAPI.
    pub fn is_empty(&self) -> bool {
        *self == Unnamed::default()
    }
}

/// A decoded `struct iommu_hwpt_page_response`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct IommufdResponse {
    /// The group's cookie.
    pub cookie: u32,
    /// SUCCESS or INVALID.
    pub code: ResponseCode,
}

impl HwptPgfault {
    /// Size of the record: 40 bytes. `read()` on a fault fd needs a multiple of it.
    pub const SIZE: usize = core::mem::size_of::<HwptPgfault>();

    /// Reads one record from exactly 40 bytes (any alignment).
    pub fn read(bytes: &[u8]) -> Result<HwptPgfault, AbiError> {
        HwptPgfault::read_from_bytes(bytes).map_err(|_| AbiError::BadSize {
            record: "iommu_hwpt_pgfault",
            expected: Self::SIZE,
            got: bytes.len(),
        })
    }

    /// Decodes the record as it is: bits the uAPI does not name are kept (liberal in what a
    /// kernel emits; see [`PgFault::unnamed`]). Never fails: every 40 bytes are a record.
    pub fn decode(&self) -> PgFault {
        PgFault {
            flags: PgfaultFlags::from_bits_retain(self.flags),
            dev_id: self.dev_id,
            pasid: self.pasid,
            grpid: self.grpid,
            perm: Perm::from_bits_retain(self.perm),
            addr: self.addr,
            length: self.length,
            cookie: self.cookie,
            reserved: self.reserved,
        }
    }

    /// Checks the record strictly against the uAPI, for a peer that must not set anything else
    /// (iopf's own ring, a tool's own records): unknown flags or permissions and a non-zero
    /// `__reserved` are errors.
    pub fn check(&self) -> Result<(), AbiError> {
        if self.reserved != 0 {
            return Err(AbiError::NonZeroReserved {
                field: "iommu_hwpt_pgfault.__reserved",
            });
        }
        PgfaultFlags::from_bits(self.flags).ok_or(AbiError::UnknownFlags {
            field: "iommu_hwpt_pgfault.flags",
            bits: self.flags & !PgfaultFlags::all().bits(),
        })?;
        Perm::decode(self.perm, "iommu_hwpt_pgfault.perm")?;
        Ok(())
    }
}

impl PgFault {
    /// A zeroed record: no flags, cookie 0. What a read buffer is filled with before a read.
    pub const ZEROED: PgFault = PgFault {
        flags: PgfaultFlags::empty(),
        dev_id: 0,
        pasid: 0,
        grpid: 0,
        perm: Perm::empty(),
        addr: 0,
        length: 0,
        cookie: 0,
        reserved: 0,
    };

    /// The number of records of the first group in `records` (whole groups in arrival order, as
    /// a [`crate::FaultConsumer`] hands them out): up to and including its LAST_PAGE record, or
    /// up to the first record with another cookie if the group is cut short. 0 for no records.
    pub fn first_group_len<'a>(records: impl IntoIterator<Item = &'a PgFault>) -> usize {
        let mut it = records.into_iter();
        let Some(first) = it.next() else {
            return 0;
        };
        if first.flags.contains(PgfaultFlags::LAST_PAGE) {
            return 1;
        }
        let mut n = 1;
        for f in it {
            if f.cookie != first.cookie {
                break;
            }
            n += 1;
            if f.flags.contains(PgfaultFlags::LAST_PAGE) {
                break;
            }
        }
        n
    }

    /// Reads and decodes one record from exactly 40 bytes, keeping what the uAPI does not name.
    /// Errors: only a wrong size.
    pub fn from_bytes(bytes: &[u8]) -> Result<PgFault, AbiError> {
        Ok(HwptPgfault::read(bytes)?.decode())
    }

    /// What the record carries outside the uAPI (all zero for one iopf or Linux ≤ 6.10 wrote).
    pub fn unnamed(&self) -> Unnamed {
        Unnamed {
            flags: self.flags.unnamed(),
            perm: self.perm.bits() & !Perm::all().bits(),
            reserved: self.reserved,
        }
    }

    /// The record Linux ≥ 6.11 writes for `request` (`iommufd_compose_fault_message()`): the
    /// request's `PASID_VALID` and `LAST_PAGE`, and [`KERNEL_RESPONSE_NEEDS_PASID`] when the
    /// device needs the PASID in its response (the kernel copies its internal flags through),
    /// `length` 0. Private data has no place in the record. The one mapping from requests to
    /// records: iopf's ring and the compat fault queue both write it.
    ///
    /// ```
    /// # use iopf_abi::{PageRequest, PgFault, Perm, KERNEL_RESPONSE_NEEDS_PASID};
    /// # use iopf_abi::fault::PageRequestFlags;
    /// let req = PageRequest { flags: PageRequestFlags::LAST_PAGE | PageRequestFlags::PASID_VALID
    ///         | PageRequestFlags::RESPONSE_NEEDS_PASID, pasid: 5, grpid: 3, perm: Perm::READ,
    ///     addr: 0x1000, private_data: [0, 0] };
    /// let rec = PgFault::composed(7, 42, &req);
    /// assert_eq!(rec.flags.unnamed(), KERNEL_RESPONSE_NEEDS_PASID);
    /// assert_eq!(rec.page_request(), req);
    /// ```
    pub fn composed(dev_id: u32, cookie: u32, request: &PageRequest) -> PgFault {
        let mut flags = PgfaultFlags::empty();
        flags.set(PgfaultFlags::PASID_VALID, request.pasid().is_some());
        flags.set(PgfaultFlags::LAST_PAGE, request.is_last());
        if request
            .flags
            .contains(PageRequestFlags::RESPONSE_NEEDS_PASID)
        {
            flags |= PgfaultFlags::from_bits_retain(KERNEL_RESPONSE_NEEDS_PASID);
        }
        PgFault {
            flags,
            dev_id,
            pasid: request.pasid,
            grpid: request.grpid,
            perm: request.perm,
            addr: request.addr,
            length: 0,
            cookie,
            reserved: 0,
        }
    }

    /// The page request the record reports, the inverse of [`PgFault::composed`]:
    /// `PASID_VALID`, `LAST_PAGE` and [`KERNEL_RESPONSE_NEEDS_PASID`] become the request's
    /// flags; other bits stay in the record ([`PgFault::unnamed`]); no private data.
    pub fn page_request(&self) -> PageRequest {
        let mut flags = PageRequestFlags::empty();
        flags.set(
            PageRequestFlags::PASID_VALID,
            self.flags.contains(PgfaultFlags::PASID_VALID),
        );
        flags.set(PageRequestFlags::LAST_PAGE, self.is_last());
        flags.set(
            PageRequestFlags::RESPONSE_NEEDS_PASID,
            self.flags.bits() & KERNEL_RESPONSE_NEEDS_PASID != 0,
        );
        PageRequest {
            flags,
            pasid: self.pasid,
            grpid: self.grpid,
            perm: self.perm,
            addr: self.addr,
            private_data: [0, 0],
        }
    }

    /// The raw record.
    pub fn encode(&self) -> HwptPgfault {
        HwptPgfault {
            flags: self.flags.bits(),
            dev_id: self.dev_id,
            pasid: self.pasid,
            grpid: self.grpid,
            perm: self.perm.bits(),
            reserved: self.reserved,
            addr: self.addr,
            length: self.length,
            cookie: self.cookie,
        }
    }

    /// Whether this record ends its group.
    pub fn is_last(&self) -> bool {
        self.flags.contains(PgfaultFlags::LAST_PAGE)
    }
}

impl HwptPageResponse {
    /// Size of the record: 8 bytes. `write()` on a fault fd takes a multiple of it.
    pub const SIZE: usize = core::mem::size_of::<HwptPageResponse>();

    /// Reads one response from exactly 8 bytes.
    pub fn read(bytes: &[u8]) -> Result<HwptPageResponse, AbiError> {
        HwptPageResponse::read_from_bytes(bytes).map_err(|_| AbiError::BadSize {
            record: "iommu_hwpt_page_response",
            expected: Self::SIZE,
            got: bytes.len(),
        })
    }

    /// Decodes the response: the code must be SUCCESS or INVALID (the kernel's EINVAL otherwise).
    pub fn decode(&self) -> Result<IommufdResponse, AbiError> {
        Ok(IommufdResponse {
            cookie: self.cookie,
            code: ResponseCode::decode_iommufd(self.code)?,
        })
    }
}

impl IommufdResponse {
    /// Reads and decodes one response from exactly 8 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<IommufdResponse, AbiError> {
        HwptPageResponse::read(bytes)?.decode()
    }

    /// The raw response.
    pub fn encode(&self) -> HwptPageResponse {
        HwptPageResponse {
            cookie: self.cookie,
            code: self.code.raw(),
        }
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for PgfaultFlags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::features::serialize_flag_names(self.iter_names().map(|(n, _)| n), s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(cookie: u32, last: bool) -> PgFault {
        let mut f = PgFault::ZEROED;
        f.cookie = cookie;
        if last {
            f.flags = PgfaultFlags::LAST_PAGE;
        }
        f
    }

    #[test]
    fn the_first_group_ends_at_its_last_page_or_at_another_cookie() {
        assert_eq!(PgFault::first_group_len(&[]), 0);
        let recs = [rec(1, false), rec(1, false), rec(1, true), rec(2, true)];
        assert_eq!(PgFault::first_group_len(&recs), 3);
        assert_eq!(PgFault::first_group_len(&recs[3..]), 1);
        // Cut short (only a misbehaving queue does it): the records of its cookie.
        let cut = [rec(1, false), rec(2, true)];
        assert_eq!(PgFault::first_group_len(&cut), 1);
    }
}
