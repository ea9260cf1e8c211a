//! A log the IOMMU writes and software reads (the event log and the PPR log): a [`Ring`] that
//! runs once software turns it on, and stops on overflow.
//!
//! **Running** (AMD 48882, `EventLogEn`/`PPRLogEn` and the `EventOverflow`/`PPROverflow`
//! status bits): the log runs (`EVT_RUN`/`PPR_RUN`) from the moment its enable bit goes from 0
//! to 1 with its overflow bit clear. An entry that finds the log full (`tail + 16 == head`) sets
//! the overflow bit and is discarded, and the log stops: no entry is written while the overflow
//! bit is set, and clearing it (RW1C) does not restart the log by itself. Software restarts it
//! by clearing the overflow bit and writing the enable bit 0 then 1, which is exactly what
//! Linux's `amd_iommu_restart_log()` does (disable log and interrupt, W1C overflow, enable
//! interrupt and log; the 0-then-1 is also what the hardware needs according to Linux commit
//! "iommu/amd: Recover from event log overflow").

use crate::guest_ram::GuestRam;
use vm_memory::GuestAddress;

use super::ring::Ring;

/// What became of one entry offered to a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logged {
    /// Written at the old tail; the tail moved on.
    Written,
    /// The log was full: the caller sets the overflow bit; the log has stopped.
    Overflowed,
    /// The log is off, stopped, unusable, or its overflow bit is set: discarded.
    NotRunning,
    /// The log's memory could not be written: discarded.
    Unreachable,
}

/// One log's registers and run state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Log {
    /// The base, head and tail registers.
    pub ring: Ring,
    running: bool,
}

impl Log {
    /// Whether the log runs (the `*_RUN` status bit).
    pub fn running(&self) -> bool {
        self.running
    }

    /// The enable bit changed from `was` to `now`; `overflow` is the overflow status bit.
    pub fn set_enabled(&mut self, was: bool, now: bool, overflow: bool) {
        if !now {
            self.running = false;
        } else if !was && !overflow {
            self.running = true;
        }
    }

    /// Entries that fit now without overflowing (0 while stopped or unusable).
    pub fn room(&self) -> u64 {
        if self.running && self.ring.usable() {
            self.ring.free()
        } else {
            0
        }
    }

    /// Offers one entry; see the module documentation.
    pub fn write(&mut self, mem: &impl GuestRam, entry: &[u8; 16]) -> Logged {
        if !self.running || !self.ring.usable() {
            return Logged::NotRunning;
        }
        if self.ring.free() == 0 {
            self.running = false;
            return Logged::Overflowed;
        }
        let at = GuestAddress(self.ring.addr(self.ring.tail()));
        if mem.write_guest(entry, at).is_err() {
            return Logged::Unreachable;
        }
        self.ring.advance_tail();
        Logged::Written
    }
}
