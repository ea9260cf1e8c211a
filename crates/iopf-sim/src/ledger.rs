//! The ledger: an independent witness on the links between the devices and the IOMMU.
//!
//! It sees what a PCIe analyser on each function's link would see, page requests going up and
//! PRG responses coming down, and nothing of the fault core or the queue in between. From that
//! alone it checks invariant 1 of the design: every group a device sent (its LAST_PAGE request
//! left the device) is answered exactly once, and no response arrives for a group that is not
//! outstanding. It keeps its own books: it never asks a device what it thinks is in flight.

use std::collections::HashMap;

use iopf_abi::ResponseCode;
use serde::Serialize;

use crate::FunctionId;

/// A PRG Response message as it arrives at a function (PCIe 6.0 §10.4.2): the PRG index it
/// answers, the PASID when the function asked for it ("PRG Response PASID Required"), the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrgResponse {
    /// The PRG index being answered.
    pub prgi: u16,
    /// The PASID, when carried.
    pub pasid: Option<u32>,
    /// The response code.
    pub code: ResponseCode,
}

/// What a link analyser reports: implemented by [`Ledger`], called by the devices.
pub trait LinkTap {
    /// A function sent the LAST_PAGE request of group `prgi` on `pasid`: a response is owed.
    fn group_sent(&mut self, dev: FunctionId, pasid: u32, prgi: u16);
    /// A function sent a stop marker for `pasid`: no response is owed.
    fn stop_marker_sent(&mut self, dev: FunctionId, pasid: u32);
    /// A PRG response reached function `dev`.
    fn response_seen(&mut self, dev: FunctionId, resp: &PrgResponse);
    /// Function `dev` was reset: PRI may be enabled again.
    fn function_reset(&mut self, dev: FunctionId);
}

/// One thing the ledger found wrong.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// A response for a PRG index with no group outstanding: a duplicate, or made up.
    Unsolicited {
        /// The function.
        dev: FunctionId,
        /// The PRG index.
        prgi: u16,
    },
    /// A response that carried a PASID other than its group's.
    WrongPasid {
        /// The function.
        dev: FunctionId,
        /// The PRG index.
        prgi: u16,
        /// The group's PASID.
        expected: u32,
        /// What the response carried.
        got: Option<u32>,
    },
    /// A group sent again while its PRG index was still outstanding.
    IndexReused {
        /// The function.
        dev: FunctionId,
        /// The PRG index.
        prgi: u16,
    },
    /// A function sent a page request group after it had received Response Failure (PRI must
    /// stay disabled until the function is reset).
    SentAfterFailure {
        /// The function.
        dev: FunctionId,
        /// The PRG index of the group.
        prgi: u16,
    },
    /// A group never answered by the end of the run.
    Unanswered {
        /// The function.
        dev: FunctionId,
        /// The PRG index.
        prgi: u16,
        /// Its PASID.
        pasid: u32,
    },
}

/// The ledger's conclusion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerVerdict {
    /// Whether every group was answered exactly once and nothing else was answered.
    pub ok: bool,
    /// Groups the devices sent.
    pub groups_sent: u64,
    /// Responses that answered an outstanding group.
    pub answered: u64,
    /// Of those, by code: SUCCESS, INVALID, FAILURE.
    pub success: u64,
    /// INVALID responses.
    pub invalid: u64,
    /// FAILURE responses.
    pub failure: u64,
    /// Stop markers seen (owed nothing).
    pub stop_markers: u64,
    /// Number of violations (only the first [`Ledger::KEEP`] are listed).
    pub violation_count: u64,
    /// The violations.
    pub violations: Vec<Violation>,
}

/// The ledger itself.
#[derive(Debug, Default)]
pub struct Ledger {
    outstanding: HashMap<(FunctionId, u16), u32>,
    failed: std::collections::HashSet<FunctionId>,
    verdict: LedgerVerdict,
}

impl Default for LedgerVerdict {
    fn default() -> LedgerVerdict {
        LedgerVerdict {
            ok: true,
            groups_sent: 0,
            answered: 0,
            success: 0,
            invalid: 0,
            failure: 0,
            stop_markers: 0,
            violation_count: 0,
            violations: Vec::new(),
        }
    }
}

impl Ledger {
    /// How many violations are kept for the report.
    pub const KEEP: usize = 32;

    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    fn violate(&mut self, v: Violation) {
        self.verdict.ok = false;
        self.verdict.violation_count += 1;
        if self.verdict.violations.len() < Self::KEEP {
            self.verdict.violations.push(v);
        }
    }

    /// Groups sent and not yet answered.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Closes the books: every group still outstanding is a violation.
    pub fn finish(mut self) -> LedgerVerdict {
        let mut left: Vec<_> = self.outstanding.drain().collect();
        left.sort_unstable();
        for ((dev, prgi), pasid) in left {
            self.violate(Violation::Unanswered { dev, prgi, pasid });
        }
        self.verdict
    }
}

impl LinkTap for Ledger {
    fn group_sent(&mut self, dev: FunctionId, pasid: u32, prgi: u16) {
        self.verdict.groups_sent += 1;
        if self.failed.contains(&dev) {
            self.violate(Violation::SentAfterFailure { dev, prgi });
        }
        if self.outstanding.insert((dev, prgi), pasid).is_some() {
            self.violate(Violation::IndexReused { dev, prgi });
        }
    }

    fn stop_marker_sent(&mut self, _dev: FunctionId, _pasid: u32) {
        self.verdict.stop_markers += 1;
    }

    fn response_seen(&mut self, dev: FunctionId, resp: &PrgResponse) {
        let Some(pasid) = self.outstanding.remove(&(dev, resp.prgi)) else {
            self.violate(Violation::Unsolicited {
                dev,
                prgi: resp.prgi,
            });
            return;
        };
        if resp.pasid.is_some_and(|p| p != pasid) {
            self.violate(Violation::WrongPasid {
                dev,
                prgi: resp.prgi,
                expected: pasid,
                got: resp.pasid,
            });
        }
        self.verdict.answered += 1;
        match resp.code {
            ResponseCode::Success => self.verdict.success += 1,
            ResponseCode::Invalid => self.verdict.invalid += 1,
            ResponseCode::Failure => {
                self.verdict.failure += 1;
                self.failed.insert(dev);
            }
        }
    }

    fn function_reset(&mut self, dev: FunctionId) {
        self.failed.remove(&dev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(prgi: u16, pasid: Option<u32>) -> PrgResponse {
        PrgResponse {
            prgi,
            pasid,
            code: ResponseCode::Success,
        }
    }

    #[test]
    fn exactly_once_is_ok() {
        let mut l = Ledger::new();
        l.group_sent(1, 5, 0);
        l.group_sent(2, 5, 0);
        l.stop_marker_sent(1, 5);
        l.response_seen(1, &resp(0, Some(5)));
        l.response_seen(2, &resp(0, None));
        let v = l.finish();
        assert!(v.ok, "{v:?}");
        assert_eq!(
            (v.groups_sent, v.answered, v.success, v.stop_markers),
            (2, 2, 2, 1)
        );
    }

    #[test]
    fn duplicates_strays_and_silence_are_caught() {
        let mut l = Ledger::new();
        l.group_sent(1, 5, 0);
        l.group_sent(1, 5, 1);
        l.response_seen(1, &resp(0, Some(5)));
        l.response_seen(1, &resp(0, Some(5))); // duplicate
        l.response_seen(3, &resp(9, None)); // never asked
        l.group_sent(1, 6, 2);
        l.response_seen(1, &resp(2, Some(5))); // wrong PASID
        l.response_seen(
            1,
            &PrgResponse {
                prgi: 1,
                pasid: Some(5),
                code: ResponseCode::Failure,
            },
        );
        l.group_sent(1, 5, 3); // PRI is disabled
        l.function_reset(1);
        l.group_sent(1, 5, 4); // fine after reset
        let v = l.finish(); // groups 3 and 4 never answered
        assert!(!v.ok);
        assert_eq!(v.violation_count, 6, "{v:?}");
        assert!(v
            .violations
            .contains(&Violation::SentAfterFailure { dev: 1, prgi: 3 }));
        assert!(v.violations.contains(&Violation::Unanswered {
            dev: 1,
            prgi: 4,
            pasid: 5
        }));
        assert!(v
            .violations
            .contains(&Violation::Unsolicited { dev: 3, prgi: 9 }));
    }
}
