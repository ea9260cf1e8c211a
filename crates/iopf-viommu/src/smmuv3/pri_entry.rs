//! The PRI queue entry: 16 bytes the SMMU writes for each PCIe Page Request (SMMUv3 spec
//! chapter 8; Linux 6.12 `arm-smmu-v3.h`, `PRIQ_0_*` / `PRIQ_1_*`):
//!
//! ```text
//! dw0  SID[31:0]  SSID[51:32]  PRIV[58]  EXEC[59]  READ[60]  WRITE[61]  LAST[62]  SSV[63]
//! dw1  PRG index[8:0]  addr[63:12]
//! ```

use iopf_abi::Perm;

/// Bytes per entry.
pub const PRI_ENTRY_BYTES: usize = 16;

const SSID_SHIFT: u32 = 32;
const SSID_MASK: u64 = 0xf_ffff;
const PRIV: u64 = 1 << 58;
const EXEC: u64 = 1 << 59;
const READ: u64 = 1 << 60;
const WRITE: u64 = 1 << 61;
const LAST: u64 = 1 << 62;
const SSV: u64 = 1 << 63;
const DW0_FIELDS: u64 =
    0xffff_ffff | (SSID_MASK << SSID_SHIFT) | PRIV | EXEC | READ | WRITE | LAST | SSV;
const DW1_FIELDS: u64 = 0x1ff | !0xfff;

/// A decoded PRI queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PriEntry {
    /// The StreamID (a PCIe requester id in bits 15:0).
    pub sid: u32,
    /// The SubstreamID (PASID), when `SSV`.
    pub ssid: Option<u32>,
    /// Read, write, execute, privileged.
    pub perm: Perm,
    /// Last request of its page request group.
    pub last: bool,
    /// The PRG index (9 bits).
    pub prg_index: u16,
    /// The page address (bits 63:12).
    pub addr: u64,
}

/// Why 16 bytes are not a PRI queue entry.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum PriEntryError {
    /// A reserved bit is set.
    #[error("reserved bits {mask:#018x} of dw{dw} are set")]
    ReservedBits {
        /// Which doubleword.
        dw: usize,
        /// The reserved bits that are set.
        mask: u64,
    },
}

impl PriEntry {
    /// The entry's two doublewords as the SMMU writes them (SSID masked to 20 bits, the PRG
    /// index to 9, the address to its page).
    pub fn encode(&self) -> [u64; 2] {
        let mut dw0 = u64::from(self.sid);
        if let Some(ssid) = self.ssid {
            dw0 |= SSV | ((u64::from(ssid) & SSID_MASK) << SSID_SHIFT);
        }
        for (p, bit) in [
            (Perm::PRIV, PRIV),
            (Perm::EXEC, EXEC),
            (Perm::READ, READ),
            (Perm::WRITE, WRITE),
        ] {
            if self.perm.contains(p) {
                dw0 |= bit;
            }
        }
        if self.last {
            dw0 |= LAST;
        }
        let dw1 = u64::from(self.prg_index & 0x1ff) | (self.addr & !0xfff);
        [dw0, dw1]
    }

    /// Decodes strictly: no reserved bit set.
    pub fn decode(dw: &[u64; 2]) -> Result<PriEntry, PriEntryError> {
        for (i, (w, fields)) in dw.iter().zip([DW0_FIELDS, DW1_FIELDS]).enumerate() {
            if w & !fields != 0 {
                return Err(PriEntryError::ReservedBits {
                    dw: i,
                    mask: w & !fields,
                });
            }
        }
        Ok(Self::fields(dw))
    }

    /// Reads the fields as Linux's `arm_smmu_handle_ppr()` does, ignoring reserved bits (and
    /// the SSID field when `SSV` is clear, whose value the spec calls UNKNOWN).
    pub fn fields(dw: &[u64; 2]) -> PriEntry {
        let mut perm = Perm::empty();
        perm.set(Perm::PRIV, dw[0] & PRIV != 0);
        perm.set(Perm::EXEC, dw[0] & EXEC != 0);
        perm.set(Perm::READ, dw[0] & READ != 0);
        perm.set(Perm::WRITE, dw[0] & WRITE != 0);
        PriEntry {
            sid: dw[0] as u32,
            ssid: (dw[0] & SSV != 0).then_some(((dw[0] >> SSID_SHIFT) & SSID_MASK) as u32),
            perm,
            last: dw[0] & LAST != 0,
            prg_index: (dw[1] & 0x1ff) as u16,
            addr: dw[1] & !0xfff,
        }
    }

    /// A Stop PASID marker: `LWR` = 0b100 with a PASID (spec chapter 8: without a PASID it is
    /// a page request). No response is sent for it.
    pub fn is_stop_marker(&self) -> bool {
        self.last && self.ssid.is_some() && !self.perm.intersects(Perm::READ | Perm::WRITE)
    }

    /// Decodes 16 little-endian bytes strictly ([`decode`](Self::decode)).
    pub fn from_bytes(b: &[u8; PRI_ENTRY_BYTES]) -> Result<PriEntry, PriEntryError> {
        Self::decode(&dwords(b))
    }

    /// The entry's 16 bytes as they sit in guest memory.
    pub fn to_bytes(&self) -> [u8; PRI_ENTRY_BYTES] {
        bytes(&self.encode())
    }
}

/// `N` little-endian doublewords of `8 * N` bytes.
pub fn dwords<const B: usize, const N: usize>(b: &[u8; B]) -> [u64; N] {
    let mut dw = [0u64; N];
    for (i, d) in dw.iter_mut().enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i * 8..i * 8 + 8]);
        *d = u64::from_le_bytes(w);
    }
    dw
}

/// The little-endian bytes of `N` doublewords (`B` = `8 * N`).
pub fn bytes<const N: usize, const B: usize>(dw: &[u64; N]) -> [u8; B] {
    let mut b = [0u8; B];
    for (i, d) in dw.iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&d.to_le_bytes());
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_reserved_bits() {
        let e = PriEntry {
            sid: 0x0108,
            ssid: Some(0x12345),
            perm: Perm::READ | Perm::WRITE,
            last: true,
            prg_index: 0x1ab,
            addr: 0x7fff_1234_5000,
        };
        assert_eq!(PriEntry::from_bytes(&e.to_bytes()), Ok(e));
        let mut dw = e.encode();
        dw[1] |= 1 << 10;
        assert_eq!(
            PriEntry::decode(&dw),
            Err(PriEntryError::ReservedBits {
                dw: 1,
                mask: 1 << 10
            })
        );
        let stop = PriEntry {
            perm: Perm::empty(),
            ..e
        };
        assert!(stop.is_stop_marker());
        assert!(!PriEntry { ssid: None, ..stop }.is_stop_marker());
    }
}
