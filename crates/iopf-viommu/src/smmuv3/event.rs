//! The event record of a stalled transaction: 32 bytes in the event queue (SMMUv3 spec §7.3,
//! `F_TRANSLATION`), laid out as Linux 6.12's `arm_smmu_handle_evt()` reads it (`EVTQ_0_*`,
//! `EVTQ_1_*`, `EVTQ_2_ADDR`):
//!
//! ```text
//! dw0  ID[7:0]=0x10  SSV[11]  SSID[31:12]  SID[63:32]
//! dw1  STAG[15:0]  STALL[31]  PnU[33]  InD[34]  RnW[35]  S2[39]  CLASS[41:40]
//! dw2  input address[63:0]
//! dw3  IPA[51:12] (zero: a stage 1 fault)
//! ```
//!
//! A stall is one transaction: it reads or writes. Its permission maps as Linux maps it back:
//! `RnW` set is a read, clear a write (a request that asks for both is written as a write);
//! `InD` is an instruction fetch (execute), `PnU` privileged.

use iopf_abi::Perm;

use super::pri_entry::{bytes, dwords};

/// Bytes per event record.
pub const EVENT_BYTES: usize = 32;
/// `EVT_ID_TRANSLATION_FAULT`.
pub const F_TRANSLATION: u8 = 0x10;
/// `EVT_ID_PERMISSION_FAULT`, the last of the four IDs Linux reports as stalls.
pub const F_PERMISSION: u8 = 0x13;

const SSV: u64 = 1 << 11;
const STALL: u64 = 1 << 31;
const PNU: u64 = 1 << 33;
const IND: u64 = 1 << 34;
const RNW: u64 = 1 << 35;
/// `CLASS` = IN (0b10): the fault is on the input address.
const CLASS_IN: u64 = 2 << 40;

/// A stalled transaction's fault record, as far as the page fault path reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StallEvent {
    /// The event ID (0x10–0x13 are the faults Linux reports; this model writes 0x10).
    pub id: u8,
    /// The StreamID.
    pub sid: u32,
    /// The SubstreamID, when `SSV`.
    pub ssid: Option<u32>,
    /// The stall tag `CMD_RESUME` names.
    pub stag: u16,
    /// Read or write, execute (`InD`), privileged (`PnU`).
    pub perm: Perm,
    /// The faulting input address.
    pub addr: u64,
}

/// Why 32 bytes are not a stall record.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum EventError {
    /// The event ID is not one of the four translation-related faults.
    #[error("event {0:#04x} is not a translation-related fault")]
    NotAFault(u8),
    /// `STALL` is clear: a terminated transaction, nothing to resume.
    #[error("the fault did not stall")]
    NotStalled,
}

impl StallEvent {
    /// The record as this model writes it: `F_TRANSLATION`, `STALL`, `CLASS` = IN.
    pub fn encode(&self) -> [u64; 4] {
        let mut dw0 = u64::from(self.id) | (u64::from(self.sid) << 32);
        if let Some(ssid) = self.ssid {
            dw0 |= SSV | ((u64::from(ssid) & 0xf_ffff) << 12);
        }
        let mut dw1 = u64::from(self.stag) | STALL | CLASS_IN;
        if !self.perm.contains(Perm::WRITE) {
            dw1 |= RNW;
        }
        if self.perm.contains(Perm::EXEC) {
            dw1 |= IND;
        }
        if self.perm.contains(Perm::PRIV) {
            dw1 |= PNU;
        }
        [dw0, dw1, self.addr, 0]
    }

    /// Decodes as `arm_smmu_handle_evt()` does: one of the four fault IDs with `STALL` set.
    pub fn decode(dw: &[u64; 4]) -> Result<StallEvent, EventError> {
        let id = dw[0] as u8;
        if !(F_TRANSLATION..=F_PERMISSION).contains(&id) {
            return Err(EventError::NotAFault(id));
        }
        if dw[1] & STALL == 0 {
            return Err(EventError::NotStalled);
        }
        let mut perm = if dw[1] & RNW != 0 {
            Perm::READ
        } else {
            Perm::WRITE
        };
        perm.set(Perm::EXEC, dw[1] & IND != 0);
        perm.set(Perm::PRIV, dw[1] & PNU != 0);
        Ok(StallEvent {
            id,
            sid: (dw[0] >> 32) as u32,
            ssid: (dw[0] & SSV != 0).then_some(((dw[0] >> 12) & 0xf_ffff) as u32),
            stag: dw[1] as u16,
            perm,
            addr: dw[2],
        })
    }

    /// Decodes 32 little-endian bytes ([`decode`](Self::decode)).
    pub fn from_bytes(b: &[u8; EVENT_BYTES]) -> Result<StallEvent, EventError> {
        Self::decode(&dwords(b))
    }

    /// The record's 32 bytes as they sit in guest memory.
    pub fn to_bytes(&self) -> [u8; EVENT_BYTES] {
        bytes(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_read_and_a_write() {
        let e = StallEvent {
            id: F_TRANSLATION,
            sid: 0x10,
            ssid: Some(7),
            stag: 0xbeef,
            perm: Perm::READ | Perm::EXEC,
            addr: 0x1234_5678_9000,
        };
        assert_eq!(StallEvent::from_bytes(&e.to_bytes()), Ok(e));
        let w = StallEvent {
            perm: Perm::WRITE | Perm::PRIV,
            ssid: None,
            ..e
        };
        assert_eq!(StallEvent::decode(&w.encode()), Ok(w));
        let mut dw = e.encode();
        dw[1] &= !STALL;
        assert_eq!(StallEvent::decode(&dw), Err(EventError::NotStalled));
        dw[0] = 0x04;
        assert_eq!(StallEvent::decode(&dw), Err(EventError::NotAFault(4)));
    }
}
