//! The resolver: the consumer side's answer to page requests, as a VMM doing demand paging.
//!
//! For each group it reads from its fault queue it spends a configurable service time, then
//! either maps every page of the group (with the permissions asked, through a [`Mapper`]: the
//! VMM's `IOMMU_IOAS_MAP`) and answers SUCCESS, or, if any page lies at an address the scenario
//! declares invalid, answers INVALID, or, if any page lies at an address the scenario declares
//! forbidden (a device touching memory it must never touch), answers Response Failure: the one
//! place in a run where FAILURE is decided, and the function receives it only if it may (a VF
//! gets INVALID instead, from the fault core). Which addresses are invalid or forbidden is a
//! deterministic function of (device, PASID, page) and the seed, with the configured shares: so
//! both sides of a run, and the tests, agree on it without talking.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use iopf_abi::{FaultConsumer, IommufdResponse, PgFault, PgfaultFlags, ResponseCode};
use serde::{Deserialize, Serialize};

use crate::clock::{now_ns, spin_for};
use crate::page_table::{FunctionId, PageTables, PAGE_SIZE};
use crate::SimError;

/// How the resolver behaves.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverSpec {
    /// Time spent per group before answering, in microseconds (VT-d's measured host service
    /// time averages 9 µs).
    #[serde(default)]
    pub service_time_us: f64,
    /// Share (0..=1) of pages that are invalid: a group holding one is answered INVALID.
    #[serde(default)]
    pub invalid_share: f64,
    /// Share (0..=1) of pages that are forbidden: a group holding one is answered FAILURE (the
    /// VMM's policy for a device that touches memory it must never touch). Decided before the
    /// invalid pages.
    #[serde(default)]
    pub failure_share: f64,
}

impl Default for ResolverSpec {
    fn default() -> ResolverSpec {
        ResolverSpec {
            service_time_us: 0.0,
            invalid_share: 0.0,
            failure_share: 0.0,
        }
    }
}

/// Where the resolver maps pages: the I/O page tables of the platform.
pub trait Mapper {
    /// Maps the page at `iova` of (`dev`, `pasid`) with `perm`.
    fn map(
        &self,
        dev: FunctionId,
        pasid: u32,
        iova: u64,
        perm: iopf_abi::Perm,
    ) -> Result<(), SimError>;
}

impl Mapper for PageTables {
    fn map(
        &self,
        dev: FunctionId,
        pasid: u32,
        iova: u64,
        perm: iopf_abi::Perm,
    ) -> Result<(), SimError> {
        PageTables::map(self, dev, pasid, iova, perm)
    }
}

impl<M: Mapper + ?Sized> Mapper for std::sync::Arc<M> {
    fn map(
        &self,
        dev: FunctionId,
        pasid: u32,
        iova: u64,
        perm: iopf_abi::Perm,
    ) -> Result<(), SimError> {
        (**self).map(dev, pasid, iova, perm)
    }
}

/// Whether the page holding `addr` of (`dev`, `pasid`) is invalid under `share` and `seed`.
pub fn is_invalid(seed: u64, share: f64, dev: FunctionId, pasid: u32, addr: u64) -> bool {
    page_drawn(seed, share, dev, pasid, addr)
}

/// Whether the page holding `addr` of (`dev`, `pasid`) is forbidden under `share` and `seed`
/// (drawn independently of the invalid pages).
pub fn is_forbidden(seed: u64, share: f64, dev: FunctionId, pasid: u32, addr: u64) -> bool {
    page_drawn(seed ^ 0xfa11_0e5e_d0c0_ffee, share, dev, pasid, addr)
}

/// Whether a page is drawn under `share`: a deterministic function of the seed and the page.
fn page_drawn(seed: u64, share: f64, dev: FunctionId, pasid: u32, addr: u64) -> bool {
    if share <= 0.0 {
        return false;
    }
    if share >= 1.0 {
        return true;
    }
    // SipHash with fixed keys: deterministic across runs and processes.
    let mut h = std::hash::DefaultHasher::new();
    (seed, dev, pasid, addr / PAGE_SIZE).hash(&mut h);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64 <= share
}

/// When the consumer took a group and when its response was accepted, for latency accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerMark {
    /// The device.
    pub dev: FunctionId,
    /// The PRG index.
    pub grpid: u32,
    /// When the group was read from the queue.
    pub delivered_ns: u64,
    /// When its response was accepted by the queue.
    pub answered_ns: u64,
    /// Through a guest: when the vIOMMU took the group to post it into the guest's page
    /// request queue (at once when the queue has room).
    #[serde(default)]
    pub posted_ns: Option<u64>,
    /// Through a guest: when the guest driver's page request handler ran that answered it.
    #[serde(default)]
    pub guest_ns: Option<u64>,
}

/// What the consumer side did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolverStats {
    /// Groups read.
    pub groups: u64,
    /// Records (page requests) read.
    pub records: u64,
    /// Groups answered SUCCESS.
    pub success: u64,
    /// Groups answered INVALID.
    pub invalid: u64,
    /// Groups answered FAILURE (a forbidden page).
    #[serde(default)]
    pub failure: u64,
    /// Responses the queue refused.
    pub refused: u64,
    /// Pages mapped.
    pub mapped: u64,
    /// Fault records the queue told the consumer were lost (loss records, sequence gaps).
    #[serde(default)]
    pub lost_signalled: u64,
    /// The vIOMMU and the guest, when the scenario has one (in a run's report they are moved to
    /// [`crate::report::RunReport::guest`]). Success, invalid and failure above count every
    /// answer the host queue accepted, the guest's included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<crate::nested::GuestReport>,
}

/// The resolver with its mapper and books.
#[derive(Debug)]
pub struct Resolver<M> {
    spec: ResolverSpec,
    seed: u64,
    mapper: M,
    stats: ResolverStats,
    marks: Vec<ConsumerMark>,
}

impl<M: Mapper> Resolver<M> {
    /// A resolver following `spec`, deciding invalid pages with `seed`, mapping through `mapper`.
    pub fn new(spec: ResolverSpec, seed: u64, mapper: M) -> Resolver<M> {
        Resolver {
            spec,
            seed,
            mapper,
            stats: ResolverStats::default(),
            marks: Vec::new(),
        }
    }

    /// Resolves one whole group (its records, LAST_PAGE last) and returns the code to answer.
    /// Errors: a mapping the page tables refuse.
    pub fn resolve(&mut self, group: &[PgFault]) -> Result<ResponseCode, SimError> {
        spin_for((self.spec.service_time_us * 1000.0) as u64);
        let forbidden = group.iter().any(|f| {
            is_forbidden(
                self.seed,
                self.spec.failure_share,
                f.dev_id,
                f.pasid,
                f.addr,
            )
        });
        if forbidden {
            self.stats.failure += 1;
            return Ok(ResponseCode::Failure);
        }
        let invalid = group.iter().any(|f| {
            is_invalid(
                self.seed,
                self.spec.invalid_share,
                f.dev_id,
                f.pasid,
                f.addr,
            )
        });
        if invalid {
            self.stats.invalid += 1;
            return Ok(ResponseCode::Invalid);
        }
        for f in group {
            let page = f.addr & !(PAGE_SIZE - 1);
            self.mapper.map(f.dev_id, f.pasid, page, f.perm)?;
            self.stats.mapped += 1;
        }
        self.stats.success += 1;
        Ok(ResponseCode::Success)
    }

    /// Serves `queue` until `done(queue)` says the producer has finished and nothing is waiting:
    /// reads whole groups in batches, resolves each, answers the batch. Errors: the queue's, or
    /// a mapping the page tables refuse.
    pub fn serve<C: FaultConsumer>(
        &mut self,
        queue: &mut C,
        done: &dyn Fn(&C) -> bool,
    ) -> Result<(), SimError> {
        let mut buf = vec![
            PgFault {
                flags: PgfaultFlags::empty(),
                dev_id: 0,
                pasid: 0,
                grpid: 0,
                perm: iopf_abi::Perm::empty(),
                addr: 0,
                length: 0,
                cookie: 0,
                reserved: 0,
            };
            1024
        ];
        let mut responses = Vec::with_capacity(256);
        let mut pending_marks = Vec::with_capacity(256);
        loop {
            let n = queue
                .read_faults(&mut buf)
                .map_err(|e| SimError::FaultPath(e.to_string()))?;
            if n == 0 {
                if done(queue) {
                    return Ok(());
                }
                queue
                    .wait_readable(Some(Duration::from_millis(5)))
                    .map_err(|e| SimError::FaultPath(e.to_string()))?;
                continue;
            }
            let delivered_ns = now_ns();
            self.stats.records += n as u64;
            responses.clear();
            pending_marks.clear();
            let mut start = 0;
            for i in 0..n {
                if !buf[i].is_last() {
                    continue;
                }
                let group = &buf[start..=i];
                start = i + 1;
                self.stats.groups += 1;
                let code = self.resolve(group)?;
                responses.push(IommufdResponse {
                    cookie: buf[i].cookie,
                    code,
                });
                pending_marks.push((buf[i].dev_id, buf[i].grpid));
                // Answer in small batches: one write per batch, and no group waits for the
                // resolution of a whole large read.
                if responses.len() >= Self::ANSWER_BATCH {
                    self.answer(queue, &responses, &pending_marks, delivered_ns, done);
                    responses.clear();
                    pending_marks.clear();
                }
            }
            self.answer(queue, &responses, &pending_marks, delivered_ns, done);
        }
    }

    /// Groups answered per write to the queue, at most.
    pub const ANSWER_BATCH: usize = 32;

    /// Counts what the consumer read (groups read by a nested consumer thread).
    pub(crate) fn count_read(&mut self, records: u64, groups: u64) {
        self.stats.records += records;
        self.stats.groups += groups;
    }

    /// Writes `responses` (with the `marks` of their groups) to `queue`, waiting while its
    /// response ring is full; a response the queue refuses (its group was withdrawn) is counted
    /// and skipped.
    pub(crate) fn answer<C: FaultConsumer>(
        &mut self,
        queue: &mut C,
        responses: &[IommufdResponse],
        marks: &[(FunctionId, u32)],
        delivered_ns: u64,
        done: &dyn Fn(&C) -> bool,
    ) {
        let mut sent = 0;
        while sent < responses.len() {
            // Stamped before the answer goes out, so that it never falls after the device's
            // retry (the producer may act on it before this thread reads the clock again).
            let answered_ns = now_ns();
            match queue.respond(&responses[sent..]) {
                Ok(0) => {
                    // The response ring is full: wait for the producer to judge what is in it.
                    // A producer that has finished answers everything itself on close.
                    if done(queue) {
                        return;
                    }
                    std::thread::yield_now();
                }
                Ok(k) => {
                    for &(dev, grpid) in &marks[sent..(sent + k).min(marks.len())] {
                        self.marks.push(ConsumerMark {
                            dev,
                            grpid,
                            delivered_ns,
                            answered_ns,
                            posted_ns: None,
                            guest_ns: None,
                        });
                    }
                    sent += k;
                }
                Err(_) => {
                    // The queue refused this response (e.g. the group was withdrawn after
                    // the core answered it itself); count it and go on with the rest.
                    self.stats.refused += 1;
                    sent += 1;
                }
            }
        }
    }

    /// What the consumer side did, and the marks of every answered group.
    pub fn finish(self) -> (ResolverStats, Vec<ConsumerMark>) {
        (self.stats, self.marks)
    }
}

#[cfg(test)]
mod tests {
    use iopf_abi::Perm;

    use super::*;

    fn fault(dev: u32, addr: u64, last: bool) -> PgFault {
        PgFault {
            flags: if last {
                PgfaultFlags::PASID_VALID | PgfaultFlags::LAST_PAGE
            } else {
                PgfaultFlags::PASID_VALID
            },
            dev_id: dev,
            pasid: 3,
            grpid: 1,
            perm: Perm::READ | Perm::WRITE,
            addr,
            length: 0,
            cookie: 77,
            reserved: 0,
        }
    }

    #[test]
    fn invalid_share_is_honoured_and_deterministic() {
        let n = 20_000;
        let hits = (0..n)
            .filter(|i| is_invalid(9, 0.05, 1, 2, i * PAGE_SIZE))
            .count();
        assert!((800..1200).contains(&hits), "{hits} of {n}");
        assert_eq!(
            is_invalid(9, 0.05, 1, 2, 0x5000),
            is_invalid(9, 0.05, 1, 2, 0x5fff)
        );
        assert!(!is_invalid(9, 0.0, 1, 2, 0));
        assert!(is_invalid(9, 1.0, 1, 2, 0));
    }

    #[test]
    fn success_maps_every_page_with_its_permissions() {
        let tables = std::sync::Arc::new(PageTables::new());
        let mut r = Resolver::new(ResolverSpec::default(), 1, tables.clone());
        let group = [fault(4, 0x1000, false), fault(4, 0x2345, true)];
        assert_eq!(r.resolve(&group).unwrap(), ResponseCode::Success);
        assert_eq!(tables.mapped_pages(4, 3), 2);
        assert_eq!(
            tables.translate(4, 3, 0x2000, Perm::WRITE),
            crate::Translation::Mapped
        );
        let spec = ResolverSpec {
            invalid_share: 1.0,
            ..ResolverSpec::default()
        };
        let mut r = Resolver::new(spec, 1, tables.clone());
        assert_eq!(r.resolve(&group).unwrap(), ResponseCode::Invalid);
        assert_eq!(r.finish().0.invalid, 1);
        // A forbidden page outranks an invalid one: the resolver's policy answers FAILURE.
        let spec = ResolverSpec {
            invalid_share: 1.0,
            failure_share: 1.0,
            ..ResolverSpec::default()
        };
        let mut r = Resolver::new(spec, 1, tables);
        assert_eq!(r.resolve(&group).unwrap(), ResponseCode::Failure);
        assert_eq!(r.finish().0.failure, 1);
    }

    #[test]
    fn forbidden_pages_are_drawn_apart_from_invalid_ones() {
        let n = 20_000u64;
        let both = (0..n)
            .filter(|i| {
                is_invalid(9, 0.5, 1, 2, i * PAGE_SIZE) && is_forbidden(9, 0.5, 1, 2, i * PAGE_SIZE)
            })
            .count();
        // Independent draws: about a quarter of pages are both.
        assert!((4_000..6_000).contains(&both), "{both} of {n}");
    }
}
