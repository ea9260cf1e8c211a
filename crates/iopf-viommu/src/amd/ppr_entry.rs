//! The PPR log entry: 16 bytes the IOMMU writes into the guest's PPR log for each peripheral
//! page request, laid out as Linux 6.12's `ppr.c` reads it (`PPR_*` macros in
//! `amd_iommu_types.h`):
//!
//! ```text
//! qword0  devid[15:0]  PASID[15:0] at [31:16]  tag[41:32] (bit 9 of the tag: last in group)
//!         PASID[19:16] at [45:42]  flags[59:48]  type[63:60] (1: PPR_REQ_FAULT)
//! qword1  the address
//! flags   EXEC 0x002  READ 0x004  WRITE 0x020  US 0x040 (user; clear: supervisor)
//!         RSVD 0x080 (the request had a reserved bit set)  GN 0x100 (PASID valid)
//! ```
//!
//! Bits 47:46 and the flag bits Linux does not name (0x001, 0x008, 0x010, 0x200, 0x400,
//! 0x800) are reserved: [`PprEntry::decode`] refuses them; [`PprEntry::fields`] reads the
//! named fields as Linux does and ignores them.

use iopf_abi::Perm;

/// `PPR_REQ_FAULT`: the entry type of a page request.
pub const PPR_REQ_FAULT: u8 = 1;
/// `PPR_FLAG_EXEC`.
pub const FLAG_EXEC: u16 = 0x002;
/// `PPR_FLAG_READ`.
pub const FLAG_READ: u16 = 0x004;
/// `PPR_FLAG_WRITE`.
pub const FLAG_WRITE: u16 = 0x020;
/// `PPR_FLAG_US`: 1 user, 0 supervisor.
pub const FLAG_US: u16 = 0x040;
/// `PPR_FLAG_RVSD`: the request had a reserved bit set.
pub const FLAG_RSVD: u16 = 0x080;
/// `PPR_FLAG_GN`: the PASID (and a guest virtual address) is valid.
pub const FLAG_GN: u16 = 0x100;
/// The flag bits Linux names.
pub const FLAGS_NAMED: u16 = FLAG_EXEC | FLAG_READ | FLAG_WRITE | FLAG_US | FLAG_RSVD | FLAG_GN;
/// Tag bit 9: the last request of its group.
pub const TAG_LAST: u16 = 0x200;
/// An entry's size in bytes (`PPRLOG_ENTRY_SIZE`).
pub const ENTRY_BYTES: usize = 16;

const QW0_RESERVED: u64 = 0x3 << 46;

/// A decoded PPR log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PprEntry {
    /// The requester's device id (bus/device/function).
    pub devid: u16,
    /// The PASID (20 bits), when GN is set.
    pub pasid: Option<u32>,
    /// The PRG index (9 bits).
    pub prg_index: u16,
    /// Last request in its group (tag bit 9).
    pub last: bool,
    /// Read, write, execute; privileged when US is clear.
    pub perm: Perm,
    /// RSVD: the device's request had a reserved bit set (Linux answers it FAILURE).
    pub reserved_flag: bool,
    /// The entry type (1 for a page request).
    pub entry_type: u8,
    /// The address (qword1, as written: the IOMMU writes page addresses).
    pub addr: u64,
}

/// Why 16 bytes are not a well-formed PPR log entry.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum PprEntryError {
    /// The type (qword0\[63:60\]) is not `PPR_REQ_FAULT`.
    #[error("PPR log entry type {0:#x} is not a page request (1)")]
    NotAPageRequest(u8),
    /// A reserved bit of qword0 is set.
    #[error("reserved bits {0:#018x} of qword0 are set")]
    ReservedBits(u64),
    /// GN is clear but the PASID field is not zero.
    #[error("the PASID field is {0:#x} without GN")]
    PasidWithoutGn(u32),
}

impl PprEntry {
    /// A page request entry (type 1, RSVD clear).
    pub fn request(
        devid: u16,
        pasid: Option<u32>,
        prg_index: u16,
        last: bool,
        perm: Perm,
        addr: u64,
    ) -> PprEntry {
        PprEntry {
            devid,
            pasid,
            prg_index,
            last,
            perm,
            reserved_flag: false,
            entry_type: PPR_REQ_FAULT,
            addr,
        }
    }

    /// The flags field.
    pub fn flags(&self) -> u16 {
        let mut f = 0;
        for (on, bit) in [
            (self.perm.contains(Perm::EXEC), FLAG_EXEC),
            (self.perm.contains(Perm::READ), FLAG_READ),
            (self.perm.contains(Perm::WRITE), FLAG_WRITE),
            (!self.perm.contains(Perm::PRIV), FLAG_US),
            (self.reserved_flag, FLAG_RSVD),
            (self.pasid.is_some(), FLAG_GN),
        ] {
            if on {
                f |= bit;
            }
        }
        f
    }

    /// The tag field: PRG index \[8:0\], last \[9\].
    pub fn tag(&self) -> u16 {
        (self.prg_index & 0x1ff) | if self.last { TAG_LAST } else { 0 }
    }

    /// Encodes the two quadwords as the IOMMU writes them (PASID masked to 20 bits, PRG index
    /// to 9).
    pub fn encode(&self) -> [u64; 2] {
        let pasid = u64::from(self.pasid.unwrap_or(0) & 0xf_ffff);
        let qw0 = u64::from(self.devid)
            | ((pasid & 0xffff) << 16)
            | (u64::from(self.tag()) << 32)
            | ((pasid >> 16) << 42)
            | (u64::from(self.flags()) << 48)
            | (u64::from(self.entry_type & 0xf) << 60);
        [qw0, self.addr]
    }

    /// Reads the fields as Linux's `ppr.c` does (`PPR_DEVID`, `PPR_PASID`, `PPR_TAG`,
    /// `PPR_FLAGS`, `PPR_REQ_TYPE`), ignoring reserved bits: what a driver model reads from
    /// "hardware". The PASID is `Some` only with GN.
    pub fn fields(qw: &[u64; 2]) -> PprEntry {
        let f = ((qw[0] >> 48) & 0xfff) as u16;
        let tag = ((qw[0] >> 32) & 0x3ff) as u16;
        let mut perm = Perm::empty();
        perm.set(Perm::READ, f & FLAG_READ != 0);
        perm.set(Perm::WRITE, f & FLAG_WRITE != 0);
        perm.set(Perm::EXEC, f & FLAG_EXEC != 0);
        perm.set(Perm::PRIV, f & FLAG_US == 0);
        PprEntry {
            devid: qw[0] as u16,
            pasid: (f & FLAG_GN != 0).then_some(Self::raw_pasid(qw[0])),
            prg_index: tag & 0x1ff,
            last: tag & TAG_LAST != 0,
            perm,
            reserved_flag: f & FLAG_RSVD != 0,
            entry_type: (qw[0] >> 60) as u8,
            addr: qw[1],
        }
    }

    /// `PPR_PASID(qword0)`: the PASID field whatever GN says (Linux answers a bad request with
    /// it).
    pub fn raw_pasid(qw0: u64) -> u32 {
        ((((qw0 >> 42) & 0xf) << 16) | ((qw0 >> 16) & 0xffff)) as u32
    }

    /// Decodes strictly: type 1, no reserved bit, no PASID without GN.
    pub fn decode(qw: &[u64; 2]) -> Result<PprEntry, PprEntryError> {
        let e = Self::fields(qw);
        if e.entry_type != PPR_REQ_FAULT {
            return Err(PprEntryError::NotAPageRequest(e.entry_type));
        }
        let reserved =
            (qw[0] & QW0_RESERVED) | (((qw[0] >> 48) & 0xfff & !u64::from(FLAGS_NAMED)) << 48);
        if reserved != 0 {
            return Err(PprEntryError::ReservedBits(reserved));
        }
        if e.pasid.is_none() && Self::raw_pasid(qw[0]) != 0 {
            return Err(PprEntryError::PasidWithoutGn(Self::raw_pasid(qw[0])));
        }
        Ok(e)
    }

    /// The entry's 16 bytes, little endian, as they sit in guest memory.
    pub fn to_bytes(&self) -> [u8; ENTRY_BYTES] {
        qwords_to_bytes(&self.encode())
    }

    /// Decodes 16 bytes strictly ([`decode`](Self::decode)), for `iopf decode`.
    pub fn from_bytes(b: &[u8; ENTRY_BYTES]) -> Result<PprEntry, PprEntryError> {
        Self::decode(&bytes_to_qwords(b))
    }
}

/// Two quadwords as 16 little-endian bytes.
pub fn qwords_to_bytes(qw: &[u64; 2]) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&qw[0].to_le_bytes());
    b[8..].copy_from_slice(&qw[1].to_le_bytes());
    b
}

/// 16 little-endian bytes as two quadwords.
pub fn bytes_to_qwords(b: &[u8; 16]) -> [u64; 2] {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&b[..8]);
    hi.copy_from_slice(&b[8..]);
    [u64::from_le_bytes(lo), u64::from_le_bytes(hi)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> PprEntry {
        PprEntry::request(
            0x0108,
            Some(0xa_bcde),
            0x1ab,
            true,
            Perm::READ | Perm::WRITE,
            0x7fff_1234_5000,
        )
    }

    #[test]
    fn round_trips_and_splits_the_pasid() {
        let e = entry();
        let qw = e.encode();
        assert_eq!((qw[0] >> 16) & 0xffff, 0xbcde);
        assert_eq!((qw[0] >> 42) & 0xf, 0xa);
        assert_eq!((qw[0] >> 32) & 0x3ff, 0x3ab);
        assert_eq!(qw[0] >> 60, 1);
        assert_eq!(PprEntry::decode(&qw), Ok(e));
        assert_eq!(PprEntry::from_bytes(&e.to_bytes()), Ok(e));
        let np = PprEntry {
            pasid: None,
            perm: Perm::EXEC | Perm::PRIV,
            ..e
        };
        assert_eq!(PprEntry::decode(&np.encode()), Ok(np));
        assert_eq!(np.flags() & (FLAG_US | FLAG_GN), 0);
    }

    #[test]
    fn strict_decode_names_the_bad_bits() {
        let mut qw = entry().encode();
        qw[0] |= 1 << 46;
        assert_eq!(
            PprEntry::decode(&qw),
            Err(PprEntryError::ReservedBits(1 << 46))
        );
        let mut qw = entry().encode();
        qw[0] |= 0x800 << 48;
        assert_eq!(
            PprEntry::decode(&qw),
            Err(PprEntryError::ReservedBits(0x800 << 48))
        );
        let mut qw = entry().encode();
        qw[0] = (qw[0] & !(0xf << 60)) | (2 << 60);
        assert_eq!(
            PprEntry::decode(&qw),
            Err(PprEntryError::NotAPageRequest(2))
        );
        let mut qw = PprEntry {
            pasid: None,
            ..entry()
        }
        .encode();
        qw[0] |= 5 << 16;
        assert_eq!(PprEntry::decode(&qw), Err(PprEntryError::PasidWithoutGn(5)));
        // Liberal reading keeps the named fields.
        assert_eq!(PprEntry::fields(&qw).prg_index, 0x1ab);
    }
}
