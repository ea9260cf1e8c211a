//! One SMMUv3 MSI: `*_IRQ_CFG0` (address \[51:2\]), `*_IRQ_CFG1` (data), `*_IRQ_CFG2`
//! (attributes). The unit sends it when its interrupt condition occurs, its `IRQ_CTRL` enable
//! is set and the address is not zero (SMMUv3 spec: "If ADDR == 0, no MSI is sent").

use super::regs::{MSI_CFG0_ADDR_MASK, MSI_CFG2_MASK};
use crate::interrupt::MsiSink;
use crate::mmio::{half, merge_half};

/// An MSI's three configuration registers and how often it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsiConfig {
    addr: u64,
    data: u32,
    attr: u32,
    sent: u64,
}

impl MsiConfig {
    /// Reads the dword at `off` from `CFG0` (0–7: the address), `CFG1` (8) or `CFG2` (12).
    pub fn read(&self, off: u64) -> u32 {
        match off {
            0..=7 => half(self.addr, off),
            8 => self.data,
            _ => self.attr,
        }
    }

    /// Writes the dword at `off` (as [`read`](Self::read)), keeping only the fields.
    pub fn write(&mut self, off: u64, v: u32) {
        match off {
            0..=7 => self.addr = merge_half(self.addr, off, v) & MSI_CFG0_ADDR_MASK,
            8 => self.data = v,
            _ => self.attr = v & MSI_CFG2_MASK,
        }
    }

    /// Sends the message if `enabled` and an address is programmed; whether it did.
    pub fn send(&mut self, enabled: bool, sink: &mut dyn MsiSink) -> bool {
        if !enabled || self.addr == 0 {
            return false;
        }
        self.sent += 1;
        sink.signal_msi(self.addr, self.data);
        true
    }

    /// Messages sent.
    pub fn sent(&self) -> u64 {
        self.sent
    }
}
