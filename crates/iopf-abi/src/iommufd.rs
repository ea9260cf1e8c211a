//! The iommufd fault queue records of Linux 6.12 (`include/uapi/linux/iommufd.h`).
//!
//! A fault fd's `read()` yields `struct iommu_hwpt_pgfault` records, whole groups at a time, every
//! record of a group carrying the group's cookie; `write()` takes `struct iommu_hwpt_page_response`
//! records naming a group by that cookie.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

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
    /// `iommu_hwpt_pgfault.flags` (`enum iommu_hwpt_pgfault_flags`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct PgfaultFlags: u32 {
        /// `IOMMU_PGFAULT_FLAGS_PASID_VALID`.
        const PASID_VALID = 1 << 0;
        /// `IOMMU_PGFAULT_FLAGS_LAST_PAGE`: the last fault of its group.
        const LAST_PAGE = 1 << 1;
    }
}

/// A decoded `struct iommu_hwpt_pgfault`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PgFault {
    /// `PASID_VALID`, `LAST_PAGE`.
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

    /// Decodes the record: unknown flags or permissions and a non-zero `__reserved` are errors.
    pub fn decode(&self) -> Result<PgFault, AbiError> {
        if self.reserved != 0 {
            return Err(AbiError::NonZeroReserved {
                field: "iommu_hwpt_pgfault.__reserved",
            });
        }
        Ok(PgFault {
            flags: PgfaultFlags::from_bits(self.flags).ok_or(AbiError::UnknownFlags {
                field: "iommu_hwpt_pgfault.flags",
                bits: self.flags & !PgfaultFlags::all().bits(),
            })?,
            dev_id: self.dev_id,
            pasid: self.pasid,
            grpid: self.grpid,
            perm: Perm::decode(self.perm, "iommu_hwpt_pgfault.perm")?,
            addr: self.addr,
            length: self.length,
            cookie: self.cookie,
        })
    }
}

impl PgFault {
    /// Reads and decodes one record from exactly 40 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<PgFault, AbiError> {
        HwptPgfault::read(bytes)?.decode()
    }

    /// The raw record.
    pub fn encode(&self) -> HwptPgfault {
        HwptPgfault {
            flags: self.flags.bits(),
            dev_id: self.dev_id,
            pasid: self.pasid,
            grpid: self.grpid,
            perm: self.perm.bits(),
            reserved: 0,
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
