//! `struct iommu_page_response` and the VFIO wrapper the seed agrees on.
//!
//! Version 1 is the kernel's (`include/uapi/linux/iommu.h` ≤ 6.5): argsz, version, flags, pasid,
//! grpid, code. Version 2 is the seed's extension: the page request's `private_data[2]` appended
//! at the end and a flag, `IOMMU_PAGE_RESP_PRIV_DATA`, saying it is present, so that VT-d can have
//! it echoed back. User space passes it wrapped as `struct vfio_iommu_page_response { __u32 argsz;
//! struct iommu_page_response pr; }`, and the outer argsz follows the extensible-struct rule
//! ([`crate::extensible`]): an old caller's 28-byte v1 response still reads, a new caller's 44-byte
//! v2 response reads on an old reader only if its tail is zero.
//!
//! Layout choice: `private_data` is appended as four `__u32` words (two 64-bit values in native
//! order, [`zerocopy::byteorder::U64`] here) so the struct keeps its 4-byte alignment. Appending a
//! `__u64` would raise the alignment to 8 and move `pr` inside the VFIO wrapper from offset 4 to
//! offset 8, breaking every existing caller.

use zerocopy::byteorder::{NativeEndian, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::extensible::{read_struct, write_struct};
use crate::{AbiError, ResponseCode};

/// `IOMMU_PAGE_RESP_VERSION_1`: the kernel's version.
pub const IOMMU_PAGE_RESP_VERSION_1: u32 = 1;
/// `IOMMU_PAGE_RESP_VERSION_2`: the seed's version, with `private_data` appended.
pub const IOMMU_PAGE_RESP_VERSION_2: u32 = 2;

bitflags::bitflags! {
    /// `iommu_page_response.flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct ResponseFlags: u32 {
        /// `IOMMU_PAGE_RESP_PASID_VALID`: `pasid` is meaningful (version 1 and 2).
        const PASID_VALID = 1 << 0;
        /// `IOMMU_PAGE_RESP_PRIV_DATA`: `private_data` is present (version 2 only).
        const PRIV_DATA = 1 << 1;
    }
}

/// Raw `struct iommu_page_response`, version 1 (24 bytes): the kernel's struct exactly.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct IommuPageResponseV1 {
    /// `argsz`: the size the caller filled in.
    pub argsz: u32,
    /// `version`: `IOMMU_PAGE_RESP_VERSION_1`.
    pub version: u32,
    /// `flags`: `IOMMU_PAGE_RESP_PASID_VALID`.
    pub flags: u32,
    /// `pasid`.
    pub pasid: u32,
    /// `grpid`: the PRG index being answered.
    pub grpid: u32,
    /// `code`: an [`ResponseCode`] value.
    pub code: u32,
}

/// Raw `struct iommu_page_response`, version 2 (40 bytes, 4-byte aligned): version 1 with
/// `private_data[2]` appended.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct IommuPageResponse {
    /// `argsz`.
    pub argsz: u32,
    /// `version`: 1 or 2.
    pub version: u32,
    /// `flags`: [`ResponseFlags`].
    pub flags: u32,
    /// `pasid`.
    pub pasid: u32,
    /// `grpid`.
    pub grpid: u32,
    /// `code`.
    pub code: u32,
    /// `private_data`: the page request's private data, echoed (version 2, `PRIV_DATA`).
    pub private_data: [U64<NativeEndian>; 2],
}

/// Raw `struct vfio_iommu_page_response { __u32 argsz; struct iommu_page_response pr; }` (44
/// bytes with a version 2 `pr`, 28 with version 1).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct VfioIommuPageResponse {
    /// `argsz`: the bytes the caller passes, this field included.
    pub argsz: u32,
    /// `pr`: the response.
    pub pr: IommuPageResponse,
}

/// Size of a version 1 `iommu_page_response`.
pub const IOMMU_PAGE_RESPONSE_V1_SIZE: usize = core::mem::size_of::<IommuPageResponseV1>();
/// Size of a version 2 `iommu_page_response`.
pub const IOMMU_PAGE_RESPONSE_V2_SIZE: usize = core::mem::size_of::<IommuPageResponse>();
/// Size of a VFIO page response wrapping a version 1 response: the smallest accepted argsz.
pub const VFIO_PAGE_RESPONSE_V1_SIZE: usize = 4 + IOMMU_PAGE_RESPONSE_V1_SIZE;
/// Size of a VFIO page response wrapping a version 2 response.
pub const VFIO_PAGE_RESPONSE_V2_SIZE: usize = core::mem::size_of::<VfioIommuPageResponse>();

/// A decoded page response, valid in every field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PageResponse {
    /// 1 or 2. A response with `private_data` is version 2.
    pub version: u32,
    /// The PASID, when the response carries one (`PASID_VALID`).
    pub pasid: Option<u32>,
    /// The PRG index being answered.
    pub grpid: u32,
    /// The response code.
    pub code: ResponseCode,
    /// The echoed private data (`PRIV_DATA`, version 2 only).
    pub private_data: Option<[u64; 2]>,
}

impl IommuPageResponse {
    /// Decodes the response. `argsz` is the number of bytes the peer actually gave for this
    /// struct, so private data that was zero-filled rather than sent is told apart. Errors:
    /// unknown version; a flag the version does not define (the ≤ 6.8 kernel accepts only
    /// version 1 with `PASID_VALID`); `PRIV_DATA` without the bytes for it; private-data bytes
    /// without `PRIV_DATA`; an unknown code.
    pub fn decode(&self, argsz: usize) -> Result<PageResponse, AbiError> {
        let allowed = match self.version {
            IOMMU_PAGE_RESP_VERSION_1 => ResponseFlags::PASID_VALID,
            IOMMU_PAGE_RESP_VERSION_2 => ResponseFlags::all(),
            other => return Err(AbiError::UnknownVersion(other)),
        };
        let flags = ResponseFlags::from_bits(self.flags)
            .filter(|f| allowed.contains(*f))
            .ok_or(AbiError::UnknownFlags {
                field: "iommu_page_response.flags",
                bits: self.flags & !allowed.bits(),
            })?;
        let data = [self.private_data[0].get(), self.private_data[1].get()];
        let private_data = if flags.contains(ResponseFlags::PRIV_DATA) {
            if argsz < IOMMU_PAGE_RESPONSE_V2_SIZE {
                return Err(AbiError::InconsistentArgsz(
                    "PRIV_DATA is set but argsz does not cover private_data",
                ));
            }
            Some(data)
        } else {
            if data != [0, 0] {
                return Err(AbiError::NonZeroReserved {
                    field: "iommu_page_response.private_data",
                });
            }
            None
        };
        Ok(PageResponse {
            version: self.version,
            pasid: flags
                .contains(ResponseFlags::PASID_VALID)
                .then_some(self.pasid),
            grpid: self.grpid,
            code: ResponseCode::decode(self.code)?,
            private_data,
        })
    }

    /// Reads a bare `iommu_page_response` whose own `argsz` says how long it is, by the
    /// extensible-struct rule (smallest: version 1, 24 bytes).
    pub fn read(buf: &[u8]) -> Result<PageResponse, AbiError> {
        let raw: IommuPageResponse =
            read_struct("iommu_page_response", buf, IOMMU_PAGE_RESPONSE_V1_SIZE)?;
        raw.decode(raw.argsz as usize)
    }
}

impl VfioIommuPageResponse {
    /// Reads a VFIO page response as the seed's `VFIO_IOMMU_PAGE_RESPONSE` would: the outer
    /// argsz governs (extensible-struct rule, smallest 28 bytes); the inner `pr.argsz` is not
    /// trusted beyond being no larger than what the outer argsz carries.
    pub fn read(buf: &[u8]) -> Result<PageResponse, AbiError> {
        let raw: VfioIommuPageResponse =
            read_struct("vfio_iommu_page_response", buf, VFIO_PAGE_RESPONSE_V1_SIZE)?;
        let given = (raw.argsz as usize).min(VFIO_PAGE_RESPONSE_V2_SIZE) - 4;
        if raw.pr.argsz as usize > raw.argsz as usize - 4 {
            return Err(AbiError::InconsistentArgsz(
                "pr.argsz is larger than the outer argsz leaves for it",
            ));
        }
        raw.pr.decode(given)
    }
}

impl PageResponse {
    /// The raw version 2 layout, with `argsz` set to the size this version needs.
    pub fn encode(&self) -> IommuPageResponse {
        let mut flags = ResponseFlags::empty();
        flags.set(ResponseFlags::PASID_VALID, self.pasid.is_some());
        flags.set(ResponseFlags::PRIV_DATA, self.private_data.is_some());
        let data = self.private_data.unwrap_or([0, 0]);
        IommuPageResponse {
            argsz: if self.version >= IOMMU_PAGE_RESP_VERSION_2 {
                IOMMU_PAGE_RESPONSE_V2_SIZE as u32
            } else {
                IOMMU_PAGE_RESPONSE_V1_SIZE as u32
            },
            version: self.version,
            flags: flags.bits(),
            pasid: self.pasid.unwrap_or(0),
            grpid: self.grpid,
            code: self.code.raw(),
            private_data: [U64::new(data[0]), U64::new(data[1])],
        }
    }

    /// Encodes as a VFIO page response for a peer that knows `peer_size` bytes of it
    /// ([`VFIO_PAGE_RESPONSE_V1_SIZE`] for an old peer, [`VFIO_PAGE_RESPONSE_V2_SIZE`] for a new
    /// one) into `out`, returning the bytes written. A response carrying private data cannot be
    /// sent to a peer that knows fewer than [`VFIO_PAGE_RESPONSE_V2_SIZE`] bytes, whatever the
    /// data's value: [`AbiError::NonZeroTail`] (its `PRIV_DATA` flag would promise bytes the
    /// peer does not receive, and [`VfioIommuPageResponse::read`] would reject it).
    pub fn write_vfio(&self, peer_size: usize, out: &mut [u8]) -> Result<usize, AbiError> {
        let mut pr = self.encode();
        if peer_size < VFIO_PAGE_RESPONSE_V1_SIZE {
            return Err(AbiError::ArgszTooSmall {
                record: "vfio_iommu_page_response",
                argsz: u32::try_from(peer_size).unwrap_or(u32::MAX),
                min: VFIO_PAGE_RESPONSE_V1_SIZE,
            });
        }
        if self.private_data.is_some() && peer_size < VFIO_PAGE_RESPONSE_V2_SIZE {
            return Err(AbiError::NonZeroTail {
                record: "vfio_iommu_page_response",
                known: peer_size,
                offset: VFIO_PAGE_RESPONSE_V1_SIZE,
            });
        }
        pr.argsz = pr.argsz.min(peer_size as u32 - 4);
        let raw = VfioIommuPageResponse {
            argsz: peer_size as u32,
            pr,
        };
        write_struct("vfio_iommu_page_response", &raw, peer_size, out)
    }
}
