//! `struct iommu_fault`: the 64-byte fault record the seed sends to user space
//! (`include/uapi/linux/iommu.h`, Linux ≤ 6.5).
//!
//! The record is padded to 64 bytes because user space allocates the buffer and the kernel fills
//! it: the padding is room to grow, and today it must read as zero.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::{AbiError, Perm};

/// `IOMMU_FAULT_DMA_UNRECOV`: an unrecoverable fault, reported for information.
pub const IOMMU_FAULT_DMA_UNRECOV: u32 = 1;
/// `IOMMU_FAULT_PAGE_REQ`: a page request (PRI) that must be answered.
pub const IOMMU_FAULT_PAGE_REQ: u32 = 2;

/// Raw `struct iommu_fault` (64 bytes, 8-byte aligned). The union of the kernel's struct is kept
/// as its bytes, `payload`; [`IommuFault::decode`] reads it according to `type_`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(8))]
pub struct IommuFault {
    /// `type`: `IOMMU_FAULT_DMA_UNRECOV` or `IOMMU_FAULT_PAGE_REQ`.
    pub type_: u32,
    /// `padding`: reserved, zero.
    pub padding: u32,
    /// The union `{ event; prm; padding2[56] }`.
    pub payload: [u8; 56],
}

/// Raw `struct iommu_fault_unrecoverable` (32 bytes).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct IommuFaultUnrecoverable {
    /// `reason`: an `enum iommu_fault_reason`.
    pub reason: u32,
    /// `flags`: `IOMMU_FAULT_UNRECOV_*`.
    pub flags: u32,
    /// `pasid`.
    pub pasid: u32,
    /// `perm`: `IOMMU_FAULT_PERM_*`.
    pub perm: u32,
    /// `addr`: the offending address.
    pub addr: u64,
    /// `fetch_addr`: the address whose fetch aborted, if any.
    pub fetch_addr: u64,
}

/// Raw `struct iommu_fault_page_request` (40 bytes).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct IommuFaultPageRequest {
    /// `flags`: `IOMMU_FAULT_PAGE_REQUEST_*`.
    pub flags: u32,
    /// `pasid`: valid when `PASID_VALID` is set.
    pub pasid: u32,
    /// `grpid`: the Page Request Group index.
    pub grpid: u32,
    /// `perm`: `IOMMU_FAULT_PERM_*`.
    pub perm: u32,
    /// `addr`: the page address.
    pub addr: u64,
    /// `private_data`: device-specific data (VT-d ≤ 3.x) to echo back in the response.
    pub private_data: [u64; 2],
}

bitflags::bitflags! {
    /// `iommu_fault_page_request.flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct PageRequestFlags: u32 {
        /// `IOMMU_FAULT_PAGE_REQUEST_PASID_VALID`: `pasid` is meaningful.
        const PASID_VALID = 1 << 0;
        /// `IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE`: the last request of its group; the group is
        /// complete and may be answered.
        const LAST_PAGE = 1 << 1;
        /// `IOMMU_FAULT_PAGE_REQUEST_PRIV_DATA`: `private_data` is meaningful and must come back
        /// with the response.
        const PRIV_DATA = 1 << 2;
        /// `IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID`: the response must carry the request's PASID
        /// (PCIe "PRG Response PASID Required").
        const RESPONSE_NEEDS_PASID = 1 << 3;
    }
}

bitflags::bitflags! {
    /// `iommu_fault_unrecoverable.flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct UnrecoverableFlags: u32 {
        /// `IOMMU_FAULT_UNRECOV_PASID_VALID`.
        const PASID_VALID = 1 << 0;
        /// `IOMMU_FAULT_UNRECOV_ADDR_VALID`.
        const ADDR_VALID = 1 << 1;
        /// `IOMMU_FAULT_UNRECOV_FETCH_ADDR_VALID`.
        const FETCH_ADDR_VALID = 1 << 2;
    }
}

/// `enum iommu_fault_reason`: why an unrecoverable fault happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[repr(u32)]
pub enum FaultReason {
    /// `IOMMU_FAULT_REASON_UNKNOWN`.
    Unknown = 0,
    /// `IOMMU_FAULT_REASON_PASID_FETCH`: the PASID table could not be read.
    PasidFetch = 1,
    /// `IOMMU_FAULT_REASON_BAD_PASID_ENTRY`: the PASID entry is invalid or misconfigured.
    BadPasidEntry = 2,
    /// `IOMMU_FAULT_REASON_PASID_INVALID`: the PASID is out of range or disabled.
    PasidInvalid = 3,
    /// `IOMMU_FAULT_REASON_WALK_EABT`: external abort while walking the tables.
    WalkEabt = 4,
    /// `IOMMU_FAULT_REASON_PTE_FETCH`: the page table entry could not be read.
    PteFetch = 5,
    /// `IOMMU_FAULT_REASON_PERMISSION`: the access was not permitted.
    Permission = 6,
    /// `IOMMU_FAULT_REASON_ACCESS`: the access flag check failed.
    Access = 7,
    /// `IOMMU_FAULT_REASON_OOR_ADDRESS`: output address out of range.
    OorAddress = 8,
}

impl FaultReason {
    /// Decodes a reason; unknown values are an error.
    #[inline]
    pub fn decode(raw: u32) -> Result<FaultReason, AbiError> {
        FaultReason::from_raw(raw).ok_or(AbiError::UnknownReason(raw))
    }

    /// The reason `raw` names, if it names one.
    #[inline]
    pub fn from_raw(raw: u32) -> Option<FaultReason> {
        use FaultReason::*;
        Some(match raw {
            0 => Unknown,
            1 => PasidFetch,
            2 => BadPasidEntry,
            3 => PasidInvalid,
            4 => WalkEabt,
            5 => PteFetch,
            6 => Permission,
            7 => Access,
            8 => OorAddress,
            _ => return None,
        })
    }
}

/// A decoded unrecoverable fault.
///
/// `#[repr(C)]`: the fields lie in memory as in the record's words 1 to 4 (reason and flags,
/// pasid and perm, addr, fetch_addr), so a decoder moves whole words into it; in Rust's own
/// layout the compiler stored the `u32` fields one by one and read them back as words, a
/// store-forwarding stall that took half a ring consumer's time per record (see
/// docs/PERFORMANCE.md, issue 17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[repr(C)]
pub struct Unrecoverable {
    /// Why it happened.
    pub reason: FaultReason,
    /// Which fields are valid.
    pub flags: UnrecoverableFlags,
    /// The PASID, if `flags` says so.
    pub pasid: u32,
    /// The access.
    pub perm: Perm,
    /// The offending address.
    pub addr: u64,
    /// The address whose fetch aborted.
    pub fetch_addr: u64,
}

/// A decoded page request: one page of a Page Request Group.
///
/// `#[repr(C)]` for the reason [`Unrecoverable`] is: the fields lie as in the record's words 1
/// to 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[repr(C)]
pub struct PageRequest {
    /// Which fields are valid, and whether this request ends its group.
    pub flags: PageRequestFlags,
    /// The PASID, if `flags` has `PASID_VALID`.
    pub pasid: u32,
    /// The PRG index (9 bits on PCIe PRI; 16 on an SMMUv3 stall tag).
    pub grpid: u32,
    /// The access.
    pub perm: Perm,
    /// The page address.
    pub addr: u64,
    /// Device-specific data to echo, if `flags` has `PRIV_DATA`.
    pub private_data: [u64; 2],
}

impl PageRequest {
    /// Whether this request completes its group.
    pub fn is_last(&self) -> bool {
        self.flags.contains(PageRequestFlags::LAST_PAGE)
    }

    /// Whether this is a PCIe stop marker: LAST_PAGE with neither read nor write requested. Stop
    /// markers get no response and Linux drops them before grouping.
    pub fn is_stop_marker(&self) -> bool {
        self.is_last() && !self.perm.intersects(Perm::READ | Perm::WRITE)
    }

    /// The PASID, when the request carries one.
    pub fn pasid(&self) -> Option<u32> {
        self.flags
            .contains(PageRequestFlags::PASID_VALID)
            .then_some(self.pasid)
    }
}

/// A decoded `struct iommu_fault`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "type", rename_all = "snake_case"))]
pub enum Fault {
    /// `IOMMU_FAULT_DMA_UNRECOV`.
    Unrecoverable(Unrecoverable),
    /// `IOMMU_FAULT_PAGE_REQ`.
    PageRequest(PageRequest),
}

impl IommuFault {
    /// Size of the record: 64 bytes.
    pub const SIZE: usize = core::mem::size_of::<IommuFault>();

    /// Reads one record from exactly [`IommuFault::SIZE`] bytes (any alignment).
    pub fn read(bytes: &[u8]) -> Result<IommuFault, AbiError> {
        IommuFault::read_from_bytes(bytes).map_err(|_| AbiError::BadSize {
            record: "iommu_fault",
            expected: Self::SIZE,
            got: bytes.len(),
        })
    }

    /// Decodes the record. Errors: unknown type, reason, flags or permissions, and any non-zero
    /// reserved byte (`padding`, or the union's bytes past the member `type_` selects).
    #[inline]
    pub fn decode(&self) -> Result<Fault, AbiError> {
        if self.padding != 0 {
            return Err(AbiError::NonZeroReserved {
                field: "iommu_fault.padding",
            });
        }
        match self.type_ {
            IOMMU_FAULT_DMA_UNRECOV => {
                let (raw, tail) = IommuFaultUnrecoverable::read_from_prefix(&self.payload)
                    .map_err(|_| AbiError::UnknownFaultType(self.type_))?;
                check_zero(tail, "iommu_fault.padding2")?;
                Ok(Fault::Unrecoverable(raw.decode()?))
            }
            IOMMU_FAULT_PAGE_REQ => {
                let (raw, tail) = IommuFaultPageRequest::read_from_prefix(&self.payload)
                    .map_err(|_| AbiError::UnknownFaultType(self.type_))?;
                check_zero(tail, "iommu_fault.padding2")?;
                Ok(Fault::PageRequest(raw.decode()?))
            }
            other => Err(AbiError::UnknownFaultType(other)),
        }
    }
}

#[inline]
fn check_zero(bytes: &[u8], field: &'static str) -> Result<(), AbiError> {
    if bytes.iter().all(|&b| b == 0) {
        Ok(())
    } else {
        Err(AbiError::NonZeroReserved { field })
    }
}

impl IommuFaultUnrecoverable {
    /// Decodes the payload; unknown reason, flags or permissions are errors.
    #[inline]
    pub fn decode(&self) -> Result<Unrecoverable, AbiError> {
        Ok(Unrecoverable {
            reason: FaultReason::decode(self.reason)?,
            flags: UnrecoverableFlags::from_bits(self.flags).ok_or(AbiError::UnknownFlags {
                field: "iommu_fault_unrecoverable.flags",
                bits: self.flags & !UnrecoverableFlags::all().bits(),
            })?,
            pasid: self.pasid,
            perm: Perm::decode(self.perm, "iommu_fault_unrecoverable.perm")?,
            addr: self.addr,
            fetch_addr: self.fetch_addr,
        })
    }
}

impl IommuFaultPageRequest {
    /// Decodes the payload; unknown flags or permissions are errors.
    #[inline]
    pub fn decode(&self) -> Result<PageRequest, AbiError> {
        Ok(PageRequest {
            flags: PageRequestFlags::from_bits(self.flags).ok_or(AbiError::UnknownFlags {
                field: "iommu_fault_page_request.flags",
                bits: self.flags & !PageRequestFlags::all().bits(),
            })?,
            pasid: self.pasid,
            grpid: self.grpid,
            perm: Perm::decode(self.perm, "iommu_fault_page_request.perm")?,
            addr: self.addr,
            private_data: self.private_data,
        })
    }
}

impl Unrecoverable {
    /// The raw payload.
    #[inline]
    pub fn encode(&self) -> IommuFaultUnrecoverable {
        IommuFaultUnrecoverable {
            reason: self.reason as u32,
            flags: self.flags.bits(),
            pasid: self.pasid,
            perm: self.perm.bits(),
            addr: self.addr,
            fetch_addr: self.fetch_addr,
        }
    }
}

impl PageRequest {
    /// The raw payload.
    #[inline]
    pub fn encode(&self) -> IommuFaultPageRequest {
        IommuFaultPageRequest {
            flags: self.flags.bits(),
            pasid: self.pasid,
            grpid: self.grpid,
            perm: self.perm.bits(),
            addr: self.addr,
            private_data: self.private_data,
        }
    }
}

impl Fault {
    /// Reads and decodes one record from exactly 64 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Fault, AbiError> {
        IommuFault::read(bytes)?.decode()
    }

    /// The raw record, reserved bytes zeroed.
    #[inline]
    pub fn encode(&self) -> IommuFault {
        let mut rec = IommuFault {
            type_: 0,
            padding: 0,
            payload: [0; 56],
        };
        match self {
            Fault::Unrecoverable(u) => {
                rec.type_ = IOMMU_FAULT_DMA_UNRECOV;
                let raw = u.encode();
                rec.payload[..raw.as_bytes().len()].copy_from_slice(raw.as_bytes());
            }
            Fault::PageRequest(p) => {
                rec.type_ = IOMMU_FAULT_PAGE_REQ;
                let raw = p.encode();
                rec.payload[..raw.as_bytes().len()].copy_from_slice(raw.as_bytes());
            }
        }
        rec
    }
}

/// A `struct iommu_fault` as the eight native-endian 64-bit words it occupies in 8-byte-aligned
/// memory: word `i` holds bytes `8i..8i + 8`, so two `__u32` fields share a word in memory order.
/// A ring that stores records a word at a time (iopf's fault queue) encodes and decodes here:
/// the same record, the same rules and the same errors as [`Fault::encode`] and
/// [`IommuFault::decode`] (a property test holds them to it), without a byte copy between the
/// word stores and the field reads.
pub type IommuFaultWords = [u64; 8];

/// The two `__u32` fields a word holds, in memory order.
#[inline]
fn halves(w: u64) -> (u32, u32) {
    // Shifts, not byte arrays: the compiler does not always fold those back into one move.
    if cfg!(target_endian = "little") {
        (w as u32, (w >> 32) as u32)
    } else {
        ((w >> 32) as u32, w as u32)
    }
}

/// The word holding two `__u32` fields, `first` at the lower address.
#[inline]
fn join(first: u32, second: u32) -> u64 {
    if cfg!(target_endian = "little") {
        u64::from(first) | (u64::from(second) << 32)
    } else {
        (u64::from(first) << 32) | u64::from(second)
    }
}

impl IommuFault {
    /// Decodes a record given as its words: [`IommuFault::decode`] of the same bytes, with the
    /// same errors in the same order (reserved `padding`, unknown type, reserved union bytes,
    /// then the member's own fields).
    ///
    /// A valid record is checked and built from the words' fields without constructing any
    /// error (the fast path a ring's consumer takes per record); only a record that fails a check
    /// goes the byte path, which names the error.
    #[inline]
    pub fn decode_words(w: &IommuFaultWords) -> Result<Fault, AbiError> {
        if let Some(u) = Unrecoverable::from_words(w) {
            return Ok(Fault::Unrecoverable(u));
        }
        if let Some(p) = PageRequest::from_words(w) {
            return Ok(Fault::PageRequest(p));
        }
        Self::word_error(w)
    }

    /// The error [`IommuFault::decode`] gives for the bytes of `w` (which the fast path refused).
    #[cold]
    #[inline(never)]
    pub fn word_error(w: &IommuFaultWords) -> Result<Fault, AbiError> {
        let rec: IommuFault = zerocopy::transmute!(*w);
        rec.decode()
    }
}

impl Unrecoverable {
    /// The unrecoverable fault a record in word form holds, if it is a valid
    /// `IOMMU_FAULT_DMA_UNRECOV` record; `None` for anything [`IommuFault::decode_words`] would
    /// not decode to one (it names the error). No error is built, so a ring's consumer can take
    /// the valid case without the cost of the error type.
    #[inline]
    pub fn from_words(w: &IommuFaultWords) -> Option<Unrecoverable> {
        // reason, flags, pasid, perm; addr, fetch_addr: 32 bytes of member, words 1..=4; the
        // rest of the union is reserved.
        let ((reason, flags), (pasid, perm)) = (halves(w[1]), halves(w[2]));
        // Every check folded into one word of "bad" bits, for one branch: a record read from a
        // ring has just come from another core, and a chain of branches waiting on its words
        // holds the reader up more than the few operations do. Word 0 is `type` and `padding`.
        let bad = (w[0] ^ join(IOMMU_FAULT_DMA_UNRECOV, 0))
            | w[5]
            | w[6]
            | w[7]
            | u64::from(flags & !UnrecoverableFlags::all().bits())
            | u64::from(perm & !Perm::all().bits());
        if bad != 0 {
            return None;
        }
        Some(Unrecoverable {
            reason: FaultReason::from_raw(reason)?,
            flags: UnrecoverableFlags::from_bits_retain(flags),
            pasid,
            perm: Perm::from_bits_retain(perm),
            addr: w[3],
            fetch_addr: w[4],
        })
    }
}

impl PageRequest {
    /// The page request a record in word form holds, if it is a valid `IOMMU_FAULT_PAGE_REQ`
    /// record; `None` for anything [`IommuFault::decode_words`] would not decode to one.
    #[inline]
    pub fn from_words(w: &IommuFaultWords) -> Option<PageRequest> {
        // flags, pasid, grpid, perm; addr, private_data: 40 bytes of member, words 1..=5.
        let ((flags, pasid), (grpid, perm)) = (halves(w[1]), halves(w[2]));
        // One branch for every check, as in `Unrecoverable::from_words`.
        let bad = (w[0] ^ join(IOMMU_FAULT_PAGE_REQ, 0))
            | w[6]
            | w[7]
            | u64::from(flags & !PageRequestFlags::all().bits())
            | u64::from(perm & !Perm::all().bits());
        if bad != 0 {
            return None;
        }
        Some(PageRequest {
            flags: PageRequestFlags::from_bits_retain(flags),
            pasid,
            grpid,
            perm: Perm::from_bits_retain(perm),
            addr: w[3],
            private_data: [w[4], w[5]],
        })
    }
}

impl Fault {
    /// The raw record as its words: the bytes of [`Fault::encode`], reserved bytes zeroed.
    #[inline]
    pub fn encode_words(&self) -> IommuFaultWords {
        match self {
            Fault::Unrecoverable(u) => [
                join(IOMMU_FAULT_DMA_UNRECOV, 0),
                join(u.reason as u32, u.flags.bits()),
                join(u.pasid, u.perm.bits()),
                u.addr,
                u.fetch_addr,
                0,
                0,
                0,
            ],
            Fault::PageRequest(p) => [
                join(IOMMU_FAULT_PAGE_REQ, 0),
                join(p.flags.bits(), p.pasid),
                join(p.grpid, p.perm.bits()),
                p.addr,
                p.private_data[0],
                p.private_data[1],
                0,
                0,
            ],
        }
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for PageRequestFlags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::features::serialize_flag_names(self.iter_names().map(|(n, _)| n), s)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for UnrecoverableFlags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::features::serialize_flag_names(self.iter_names().map(|(n, _)| n), s)
    }
}
