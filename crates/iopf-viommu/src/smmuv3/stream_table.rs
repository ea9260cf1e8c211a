//! The linear stream table, as far as page responses need it: `STRTAB_BASE`,
//! `STRTAB_BASE_CFG`, and each stream's `STE.PPAR`.
//!
//! `STE.PPAR` (STE bit 82, dword 1 bit 18; SMMUv3 spec §5.2, not defined by Linux 6.12) says
//! whether the SMMU's own responses to a stream carry the PASID, and Arm expects it to equal the
//! function's "PRG Response PASID Required" bit (spec §8.1). This model takes it as that bit: with
//! `PPAR` = 0 a guest's `CMD_PRI_RESP` is matched without its SubstreamID
//! ([`crate::GroupNaming::PRI_NO_PASID_IN_RESPONSE`]). An STE that cannot be read (the SMMU
//! off, a two-level format this model does not advertise, a StreamID beyond the table, memory
//! that is not there, `V` = 0) reads as `PPAR` = 0, as §8.1 says for an STE it cannot check.

use crate::guest_ram::GuestRam;
use vm_memory::GuestAddress;

use super::regs::{SIDSIZE, STRTAB_BASE_ADDR_MASK, STRTAB_BASE_CFG_FMT_SHIFT};

/// Bytes per stream table entry.
pub const STE_BYTES: u64 = 64;
/// `STRTAB_STE_0_V`.
pub const STE_0_V: u64 = 1;
/// `STE.PPAR`, in dword 1.
pub const STE_1_PPAR: u64 = 1 << 18;

/// The stream table registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamTable {
    /// `STRTAB_BASE` as written (fields only).
    pub base: u64,
    /// `STRTAB_BASE_CFG` as written (fields only).
    pub cfg: u32,
}

impl StreamTable {
    /// The STE's `PPAR` for `sid`, by the rules of this module's documentation.
    pub fn ppar(&self, mem: &impl GuestRam, sid: u32) -> bool {
        if (self.cfg >> STRTAB_BASE_CFG_FMT_SHIFT) & 3 != 0 {
            return false;
        }
        let log2size = (self.cfg & 0x3f).min(SIDSIZE);
        if u64::from(sid) >> log2size != 0 {
            return false;
        }
        let at = (self.base & STRTAB_BASE_ADDR_MASK).wrapping_add(u64::from(sid) * STE_BYTES);
        let mut b = [0u8; 16];
        if mem.read_guest(&mut b, GuestAddress(at)).is_err() {
            return false;
        }
        let dw: [u64; 2] = super::pri_entry::dwords(&b);
        dw[0] & STE_0_V != 0 && dw[1] & STE_1_PPAR != 0
    }
}
