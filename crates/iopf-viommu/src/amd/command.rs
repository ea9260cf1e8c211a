//! The 16-byte commands of the command buffer that the page request path needs, decoded
//! strictly, as Linux 6.12's `iommu.c` builds them (`struct iommu_cmd { u32 data[4]; }`, the
//! opcode in `data[1][31:28]` by `CMD_SET_TYPE`):
//!
//! ```text
//! COMPLETE_PPR_REQUEST 0x07 (build_complete_ppr)
//!   data[0]  devid[15:0]                     [31:16] reserved
//!   data[1]  PASID[19:0] (with GN)           [27:20] reserved   opcode[31:28]
//!   data[2]  GN[2] (CMD_INV_IOMMU_PAGES_GN_MASK)   other bits reserved
//!   data[3]  tag[8:0]  status[15:12] (PPR_STATUS_SHIFT)   other bits reserved
//! COMPLETION_WAIT 0x01 (build_completion_wait)
//!   data[0]  S[0] store  I[1] interrupt  F[2] flush queue  address[31:3]
//!   data[1]  address[51:32] at [19:0]        [27:20] reserved   opcode[31:28]
//!   data[2], data[3]  the 64-bit data stored
//! ```
//!
//! INVALIDATE_DEVTAB_ENTRY 0x02, INVALIDATE_IOMMU_PAGES 0x03, INVALIDATE_IOTLB_PAGES 0x04,
//! INVALIDATE_INTERRUPT_TABLE 0x05, PREFETCH_IOMMU_PAGES 0x06 and INVALIDATE_IOMMU_ALL 0x08
//! are accepted without looking further (this model holds no translation caches); any other
//! opcode is an illegal command.
//!
//! **What is illegal** (consistent with VT-d, [`crate::vtd::inv_descriptor`]): a reserved bit
//! set, or a PASID without GN, makes the command illegal (`ILLEGAL_COMMAND_ERROR`: the command
//! buffer stops at it). A *status code* the architecture reserves (2h–Eh) is not: it is kept
//! visible ([`PprCompletion::raw_status`]), read as Response Failure
//! ([`code_map::amd_to_pcie`]) and counted, because Linux 6.12 writes its own
//! `IOMMU_PAGE_RESP_FAILURE` (2) there unchanged.

use iopf_abi::ResponseCode;

use super::ppr_entry::{bytes_to_qwords, qwords_to_bytes};
use crate::bridge::GuestResponse;
use crate::code_map;

/// `CMD_COMPL_WAIT`.
pub const COMPLETION_WAIT: u8 = 0x01;
/// `CMD_INV_DEV_ENTRY`.
pub const INVALIDATE_DEVTAB_ENTRY: u8 = 0x02;
/// `CMD_INV_IOMMU_PAGES`.
pub const INVALIDATE_IOMMU_PAGES: u8 = 0x03;
/// `CMD_INV_IOTLB_PAGES`.
pub const INVALIDATE_IOTLB_PAGES: u8 = 0x04;
/// `CMD_INV_IRT`.
pub const INVALIDATE_INTERRUPT_TABLE: u8 = 0x05;
/// PREFETCH_IOMMU_PAGES (Linux does not send it).
pub const PREFETCH_IOMMU_PAGES: u8 = 0x06;
/// `CMD_COMPLETE_PPR`.
pub const COMPLETE_PPR_REQUEST: u8 = 0x07;
/// `CMD_INV_ALL`.
pub const INVALIDATE_IOMMU_ALL: u8 = 0x08;

/// `CMD_COMPL_WAIT_STORE_MASK`.
pub const WAIT_STORE: u32 = 0x01;
/// `CMD_COMPL_WAIT_INT_MASK`.
pub const WAIT_INT: u32 = 0x02;
/// The flush-queue bit (F) of COMPLETION_WAIT.
pub const WAIT_FLUSH: u32 = 0x04;
/// `CMD_INV_IOMMU_PAGES_GN_MASK`: GN in `data[2]` of COMPLETE_PPR_REQUEST.
pub const PPR_GN: u32 = 0x04;
/// `PPR_STATUS_SHIFT`.
pub const PPR_STATUS_SHIFT: u32 = 12;
/// `PPR_STATUS_MASK`.
pub const PPR_STATUS_MASK: u32 = 0xf;

/// A command's opcode: `data[1][31:28]`.
pub fn opcode(data: &[u32; 4]) -> u8 {
    (data[1] >> 28) as u8
}

/// A decoded COMPLETE_PPR_REQUEST: the guest's answer to a page request group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PprCompletion {
    /// The device id answered.
    pub devid: u16,
    /// The PASID, when GN is set (the response then names it).
    pub pasid: Option<u32>,
    /// The PRG index (completion tag, 9 bits).
    pub tag: u16,
    /// The status in PCIe's meaning (a reserved code reads as Response Failure).
    pub code: ResponseCode,
    /// The status field as the guest wrote it.
    pub raw_status: u8,
}

/// Why 16 bytes are not a legal command: each one an `ILLEGAL_COMMAND_ERROR`.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum CommandError {
    /// The opcode is not one AMD-Vi defines here (0, 9–15), or not the one expected.
    #[error("command opcode {0:#x} is not valid here")]
    BadOpcode(u8),
    /// A reserved bit is set.
    #[error("reserved bits {mask:#010x} of data[{word}] are set")]
    ReservedBits {
        /// Which 32-bit word.
        word: usize,
        /// The reserved bits that are set.
        mask: u32,
    },
    /// GN is clear but the PASID field is not zero.
    #[error("the PASID field is {0:#x} without GN")]
    PasidWithoutGn(u32),
}

fn reserved(value: u32, fields: u32, word: usize) -> Result<(), CommandError> {
    match value & !fields {
        0 => Ok(()),
        mask => Err(CommandError::ReservedBits { word, mask }),
    }
}

impl PprCompletion {
    /// A completion carrying `code` in PCIe's encoding ([`code_map::pcie_to_amd`]).
    pub fn new(devid: u16, pasid: Option<u32>, tag: u16, code: ResponseCode) -> PprCompletion {
        PprCompletion::with_raw_status(devid, pasid, tag, code_map::pcie_to_amd(code))
    }

    /// A completion carrying the status field `raw` as written (Linux writes its FAILURE, 2).
    pub fn with_raw_status(devid: u16, pasid: Option<u32>, tag: u16, raw: u8) -> PprCompletion {
        PprCompletion {
            devid,
            pasid,
            tag: tag & 0x1ff,
            code: code_map::amd_to_pcie(raw),
            raw_status: raw & 0xf,
        }
    }

    /// Encodes the command as `build_complete_ppr()` does, with `gn` = PASID present.
    pub fn encode(&self) -> [u32; 4] {
        let mut d = [u32::from(self.devid), 0, 0, 0];
        if let Some(p) = self.pasid {
            d[1] = p & 0xf_ffff;
            d[2] = PPR_GN;
        }
        d[3] = u32::from(self.tag & 0x1ff)
            | (u32::from(self.raw_status) & PPR_STATUS_MASK) << PPR_STATUS_SHIFT;
        d[1] |= u32::from(COMPLETE_PPR_REQUEST) << 28;
        d
    }

    /// Decodes strictly (see the module documentation for what is illegal).
    pub fn decode(d: &[u32; 4]) -> Result<PprCompletion, CommandError> {
        let op = opcode(d);
        if op != COMPLETE_PPR_REQUEST {
            return Err(CommandError::BadOpcode(op));
        }
        reserved(d[0], 0xffff, 0)?;
        reserved(d[1], 0xf00f_ffff, 1)?;
        reserved(d[2], PPR_GN, 2)?;
        reserved(d[3], 0x1ff | (PPR_STATUS_MASK << PPR_STATUS_SHIFT), 3)?;
        let pasid_field = d[1] & 0xf_ffff;
        let pasid = if d[2] & PPR_GN != 0 {
            Some(pasid_field)
        } else if pasid_field != 0 {
            return Err(CommandError::PasidWithoutGn(pasid_field));
        } else {
            None
        };
        let raw = ((d[3] >> PPR_STATUS_SHIFT) & PPR_STATUS_MASK) as u8;
        Ok(PprCompletion {
            devid: d[0] as u16,
            pasid,
            tag: (d[3] & 0x1ff) as u16,
            code: code_map::amd_to_pcie(raw),
            raw_status: raw,
        })
    }

    /// Whether the status is one the architecture reserves (read as Response Failure).
    pub fn raw_status_reserved(&self) -> bool {
        !code_map::pcie_field_defined(self.raw_status)
    }

    /// The answer in the bridge's terms: the PASID is named only with GN.
    pub fn to_guest(&self) -> GuestResponse {
        GuestResponse {
            rid: self.devid,
            pasid: self.pasid,
            prg_index: self.tag,
            code: self.code,
            private_data: None,
        }
    }

    /// The command's 16 bytes, as they sit in guest memory.
    pub fn to_bytes(&self) -> [u8; 16] {
        words_to_bytes(&self.encode())
    }

    /// Decodes 16 bytes strictly ([`decode`](Self::decode)), for `iopf decode`.
    pub fn from_bytes(b: &[u8; 16]) -> Result<PprCompletion, CommandError> {
        Self::decode(&bytes_to_words(b))
    }
}

/// A decoded COMPLETION_WAIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CompletionWait {
    /// S: store `data` at `address`.
    pub store: bool,
    /// I: set `STATUS.COMWAIT_INT` (and interrupt if `CONTROL.COMWAIT_EN`).
    pub interrupt: bool,
    /// F: flush the queue (this model completes commands in order anyway).
    pub flush: bool,
    /// Where the data goes (8-byte aligned, 52 bits).
    pub address: u64,
    /// The 64-bit data stored.
    pub data: u64,
}

impl CompletionWait {
    /// Decodes strictly: opcode 1, `data[1][27:20]` reserved.
    pub fn decode(d: &[u32; 4]) -> Result<CompletionWait, CommandError> {
        let op = opcode(d);
        if op != COMPLETION_WAIT {
            return Err(CommandError::BadOpcode(op));
        }
        reserved(d[1], 0xf00f_ffff, 1)?;
        Ok(CompletionWait {
            store: d[0] & WAIT_STORE != 0,
            interrupt: d[0] & WAIT_INT != 0,
            flush: d[0] & WAIT_FLUSH != 0,
            address: (u64::from(d[1] & 0xf_ffff) << 32) | u64::from(d[0] & !7),
            data: (u64::from(d[3]) << 32) | u64::from(d[2]),
        })
    }

    /// Encodes the command as `build_completion_wait()` does.
    pub fn encode(&self) -> [u32; 4] {
        let mut d0 = (self.address as u32) & !7;
        for (on, bit) in [
            (self.store, WAIT_STORE),
            (self.interrupt, WAIT_INT),
            (self.flush, WAIT_FLUSH),
        ] {
            if on {
                d0 |= bit;
            }
        }
        [
            d0,
            ((self.address >> 32) as u32 & 0xf_ffff) | (u32::from(COMPLETION_WAIT) << 28),
            self.data as u32,
            (self.data >> 32) as u32,
        ]
    }
}

/// A command as the command buffer carries it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// COMPLETE_PPR_REQUEST.
    CompletePpr(PprCompletion),
    /// COMPLETION_WAIT.
    CompletionWait(CompletionWait),
    /// An invalidation or prefetch (opcode 0x02–0x06, 0x08): accepted, nothing to do here.
    Other(u8),
}

impl Command {
    /// Decodes one command; an error is an illegal command.
    pub fn decode(d: &[u32; 4]) -> Result<Command, CommandError> {
        match opcode(d) {
            COMPLETE_PPR_REQUEST => PprCompletion::decode(d).map(Command::CompletePpr),
            COMPLETION_WAIT => CompletionWait::decode(d).map(Command::CompletionWait),
            op @ (INVALIDATE_DEVTAB_ENTRY..=PREFETCH_IOMMU_PAGES | INVALIDATE_IOMMU_ALL) => {
                Ok(Command::Other(op))
            }
            op => Err(CommandError::BadOpcode(op)),
        }
    }
}

/// Four 32-bit words as 16 little-endian bytes.
pub fn words_to_bytes(d: &[u32; 4]) -> [u8; 16] {
    qwords_to_bytes(&[
        u64::from(d[0]) | (u64::from(d[1]) << 32),
        u64::from(d[2]) | (u64::from(d[3]) << 32),
    ])
}

/// 16 little-endian bytes as four 32-bit words.
pub fn bytes_to_words(b: &[u8; 16]) -> [u32; 4] {
    let qw = bytes_to_qwords(b);
    [
        qw[0] as u32,
        (qw[0] >> 32) as u32,
        qw[1] as u32,
        (qw[1] >> 32) as u32,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_ppr_round_trips_and_is_strict() {
        let c = PprCompletion::new(0x0210, Some(0xabcde), 0x1ff, ResponseCode::Invalid);
        assert_eq!(PprCompletion::decode(&c.encode()), Ok(c));
        assert_eq!(PprCompletion::from_bytes(&c.to_bytes()), Ok(c));
        assert_eq!(c.to_guest().pasid, Some(0xabcde));
        let n = PprCompletion::new(0x0210, None, 3, ResponseCode::Success);
        assert_eq!(PprCompletion::decode(&n.encode()), Ok(n));
        assert_eq!(n.to_guest().pasid, None);
        // Linux's FAILURE (2): Response Failure, kept visible, not illegal.
        let l = PprCompletion::with_raw_status(1, Some(1), 1, 2);
        let d = PprCompletion::decode(&l.encode()).expect("legal");
        assert_eq!(
            (d.code, d.raw_status, d.raw_status_reserved()),
            (ResponseCode::Failure, 2, true)
        );
        let mut d = c.encode();
        d[3] |= 1 << 9;
        assert_eq!(
            PprCompletion::decode(&d),
            Err(CommandError::ReservedBits {
                word: 3,
                mask: 1 << 9
            })
        );
        let mut d = n.encode();
        d[1] |= 7;
        assert_eq!(
            PprCompletion::decode(&d),
            Err(CommandError::PasidWithoutGn(7))
        );
        let mut d = c.encode();
        d[2] |= 1;
        assert!(PprCompletion::decode(&d).is_err());
    }

    #[test]
    fn completion_wait_round_trips_and_other_opcodes() {
        let w = CompletionWait {
            store: true,
            interrupt: true,
            flush: false,
            address: 0x000f_1234_5678_9ab8,
            data: 0x1122_3344_5566_7788,
        };
        assert_eq!(CompletionWait::decode(&w.encode()), Ok(w));
        let mut d = w.encode();
        d[1] |= 1 << 20;
        assert!(CompletionWait::decode(&d).is_err());
        for op in [2u32, 3, 4, 5, 6, 8] {
            assert_eq!(
                Command::decode(&[0, op << 28, 0, 0]),
                Ok(Command::Other(op as u8))
            );
        }
        for op in [0u32, 9, 15] {
            assert_eq!(
                Command::decode(&[0, op << 28, 0, 0]),
                Err(CommandError::BadOpcode(op as u8))
            );
        }
        assert_eq!(bytes_to_words(&words_to_bytes(&w.encode())), w.encode());
    }
}
