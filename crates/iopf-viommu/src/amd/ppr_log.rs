//! The PPR log: peripheral page requests written into guest memory, with the log rules of
//! [`super::log`] and the overflow rule below.
//!
//! **Overflow.** A request that finds the log full sets `STATUS.PPR_OVERFLOW` (an interrupt
//! condition with `PPRINT_EN`) and clears `PPR_RUN`; it and every later request are discarded
//! until the guest restarts the log (Linux: `amd_iommu_restart_ppr_log()`, see
//! [`super::log`]). What the hardware answers the device for a discarded request is not
//! something the stored copies of the AMD specification (48882) that could be searched say,
//! and Linux 6.12 does not rely on it (it never answers after an overflow either: it only
//! restarts the log). This model answers a discarded *last* request Success itself
//! ([`Posted::AnsweredByHardware`]), so that the device retries, as SMMUv3 hardware does on
//! PRI queue overflow and as the VT-d model does: never Response Failure, which would disable
//! PRI on the function for what is a transient condition. Other discarded requests get
//! nothing ([`Posted::Dropped`]; the bridge answers their group the same way).
//!
//! The bridge itself never overflows the log: it posts a group only when the log has room for
//! all of it, except a group larger than the whole log, which it posts into an empty log so
//! that this rule answers it.

use crate::guest_ram::GuestRam;
use iopf_abi::ResponseCode;

use super::log::{Log, Logged};
use super::ppr_entry::PprEntry;
use crate::bridge::{GuestPageRequest, Posted};

/// What the PPR log has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PprStats {
    /// Entries written.
    pub written: u64,
    /// Times `PPR_OVERFLOW` was set.
    pub overflows: u64,
    /// Requests discarded (log full, stopped or off).
    pub dropped: u64,
    /// Of those, groups the model answered Success itself.
    pub auto_success: u64,
    /// Requests lost because the log's memory could not be written.
    pub unreachable: u64,
}

/// The PPR log's registers, run state and counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PprLog {
    /// The log (`PPR_LOG`, `PPR_HEAD`, `PPR_TAIL`, running).
    pub log: Log,
    stats: PprStats,
}

/// What one post asks of the unit's status register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PprSignal {
    /// Nothing changes.
    None,
    /// An entry was written: set `PPR_INT`.
    Entry,
    /// The log overflowed: set `PPR_OVERFLOW`.
    Overflow,
}

impl PprLog {
    /// The counters.
    pub fn stats(&self) -> PprStats {
        self.stats
    }

    /// Offers one request, by the rules of this module's documentation.
    pub fn post(&mut self, mem: &impl GuestRam, req: &GuestPageRequest) -> (Posted, PprSignal) {
        let entry = PprEntry::request(
            req.rid,
            req.pasid,
            req.prg_index,
            req.last,
            req.perm,
            req.addr,
        );
        let signal = match self.log.write(mem, &entry.to_bytes()) {
            Logged::Written => {
                self.stats.written += 1;
                return (Posted::Queued, PprSignal::Entry);
            }
            Logged::Unreachable => {
                self.stats.unreachable += 1;
                return (Posted::Unreachable, PprSignal::None);
            }
            Logged::Overflowed => {
                self.stats.overflows += 1;
                PprSignal::Overflow
            }
            Logged::NotRunning => PprSignal::None,
        };
        self.stats.dropped += 1;
        if req.last {
            self.stats.auto_success += 1;
            (Posted::AnsweredByHardware(ResponseCode::Success), signal)
        } else {
            (Posted::Dropped, signal)
        }
    }
}
