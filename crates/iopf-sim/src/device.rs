//! A PCIe function with PRI (PCIe 6.0 §10.4) and its work.
//!
//! The device runs work items; each first asks the IOMMU to translate its pages (ATS). Pages that
//! do not translate become one Page Request Group: one page request per missing page, the same
//! 9-bit PRG index on each and LAST_PAGE on the last. The function never has more page requests
//! outstanding than its Outstanding Page Request Allocation (OPRA), nor more than 512 groups.
//! On the group's PRG Response:
//! * SUCCESS: the device retries the translation (it may fault again, e.g. after the IOMMU's own
//!   Success for a request it had to drop);
//! * INVALID: the access fails and the device reports an error for that work item;
//! * FAILURE (Response Failure): PRI is disabled on the function until it is reset; from then on
//!   it sends no page request and every work item needing one fails.
//!
//! Stopping a PASID (PCIe §10.4.1.2) either waits until its outstanding groups are answered, or
//! sends a stop marker (a LAST_PAGE request with neither read nor write) and stops at once; the
//! responses still owed for its groups arrive later and are consumed without a retry.

use std::collections::{HashMap, VecDeque};

use iopf_abi::{PageRequest, PageRequestFlags, Perm, ResponseCode};
use serde::{Deserialize, Serialize};

use crate::iommu::Iommu;
use crate::ledger::{LinkTap, PrgResponse};
use crate::page_table::Translation;
use crate::prg::PrgIndexAllocator;
use crate::prq::QueuedRequest;
use crate::workload::{WorkItem, Workload, WorkloadSpec};
use crate::FunctionId;

/// How a PASID is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMode {
    /// Stop issuing, wait for every outstanding group of the PASID to be answered.
    Wait,
    /// Send a stop marker and stop at once.
    Marker,
}

/// The fixed properties of one function.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Its id (requester id; the `dev_id` of its fault records).
    pub id: FunctionId,
    /// Outstanding Page Request Allocation: page requests in flight, at most.
    pub opra: u32,
    /// Groups in flight at most (≤ 512, the 9-bit PRG index).
    pub max_groups: usize,
    /// "PRG Response PASID Required": responses must carry the PASID.
    pub response_needs_pasid: bool,
    /// Work items the function starts per step, at most.
    pub items_per_step: u32,
    /// New work items the function starts per second, at most (`None`: as fast as its steps
    /// and its allocation allow). Retries are not limited.
    pub items_per_s: Option<f64>,
    /// One workload per PASID.
    pub streams: Vec<(u32, WorkloadSpec)>,
    /// Seed of the workloads.
    pub seed: u64,
}

/// Counters of one function.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceStats {
    /// The function's id.
    pub id: FunctionId,
    /// Its OPRA.
    pub opra: u32,
    /// Work items started.
    pub items_started: u64,
    /// Work items whose pages all translated (at once or after retries).
    pub items_completed: u64,
    /// Work items that failed with INVALID.
    pub items_invalid: u64,
    /// Work items that failed because PRI was disabled.
    pub items_pri_disabled: u64,
    /// Work items dropped because their PASID was stopped.
    pub items_abandoned: u64,
    /// Page requests sent (faults).
    pub page_requests: u64,
    /// Page request groups sent.
    pub groups: u64,
    /// Of those, groups sent again for a work item that had already faulted (retry faulted).
    pub refaults: u64,
    /// Responses by code.
    pub success: u64,
    /// INVALID responses.
    pub invalid: u64,
    /// FAILURE responses.
    pub failure: u64,
    /// Responses for no group in flight, ignored.
    pub unexpected: u64,
    /// Stop markers sent.
    pub stop_markers: u64,
    /// PASIDs stopped.
    pub pasids_stopped: u64,
    /// Function resets.
    pub resets: u64,
    /// Groups sent before the last reset (so `groups - groups_before_reset` were sent since).
    pub groups_before_reset: u64,
    /// The most page requests outstanding at once (never above `opra`).
    pub max_outstanding: u32,
    /// The most groups in flight at once (never above 512).
    pub max_groups_in_flight: usize,
    /// Whether PRI is disabled now (a FAILURE was received and no reset followed).
    pub pri_disabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Running,
    Draining,
    Stopped,
}

#[derive(Debug)]
struct Stream {
    pasid: u32,
    workload: Workload,
    state: StreamState,
    blocked: Option<Job>,
}

/// A work item with how often it already faulted.
#[derive(Debug, Clone)]
struct Job {
    item: WorkItem,
    faulted: bool,
}

#[derive(Debug)]
struct InFlight {
    job: Job,
    pages: u32,
    sent_ns: u64,
}

/// A group that got its response: what the platform needs to time it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupDone {
    /// The PRG index.
    pub prgi: u16,
    /// The PASID.
    pub pasid: u32,
    /// When its LAST_PAGE left the device.
    pub sent_ns: u64,
    /// The code it got.
    pub code: ResponseCode,
}

/// One simulated PRI function.
#[derive(Debug)]
pub struct PriDevice {
    cfg: DeviceConfig,
    streams: Vec<Stream>,
    next_stream: usize,
    prg: PrgIndexAllocator,
    outstanding: u32,
    in_flight: HashMap<u16, InFlight>,
    retries: VecDeque<Job>,
    issuing: bool,
    /// Work items the rate still allows (a token bucket holding at most one step's worth).
    tokens: f64,
    last_step_ns: Option<u64>,
    stats: DeviceStats,
}

enum Outcome {
    Done,
    Blocked(Job),
}

impl PriDevice {
    /// A function with PRI enabled and nothing in flight.
    pub fn new(cfg: DeviceConfig) -> PriDevice {
        let streams = cfg
            .streams
            .iter()
            .enumerate()
            .map(|(i, (pasid, spec))| Stream {
                pasid: *pasid,
                workload: Workload::new(
                    *spec,
                    *pasid,
                    cfg.seed ^ (u64::from(cfg.id) << 32) ^ i as u64,
                ),
                state: StreamState::Running,
                blocked: None,
            })
            .collect();
        PriDevice {
            prg: PrgIndexAllocator::new(cfg.max_groups),
            stats: DeviceStats {
                id: cfg.id,
                opra: cfg.opra,
                ..DeviceStats::default()
            },
            cfg,
            streams,
            next_stream: 0,
            outstanding: 0,
            in_flight: HashMap::new(),
            retries: VecDeque::new(),
            issuing: true,
            tokens: 0.0,
            last_step_ns: None,
        }
    }

    /// The function's id.
    pub fn id(&self) -> FunctionId {
        self.cfg.id
    }

    /// Whether PRI is enabled.
    pub fn pri_enabled(&self) -> bool {
        !self.stats.pri_disabled
    }

    /// Page requests outstanding now.
    pub fn outstanding(&self) -> u32 {
        self.outstanding
    }

    /// Groups in flight now.
    pub fn groups_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The counters so far.
    pub fn stats(&self) -> &DeviceStats {
        &self.stats
    }

    /// Stops (or resumes) starting new work items; work already started still finishes.
    pub fn set_issuing(&mut self, issuing: bool) {
        self.issuing = issuing;
    }

    /// Whether nothing is in flight and no started work item waits.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
            && self.retries.is_empty()
            && self.streams.iter().all(|s| s.blocked.is_none())
    }

    /// One step of the function at time `now_ns`: retries first, then new work, up to
    /// `items_per_step` work items, each translated and, where pages are missing, turned into a
    /// page request group sent to `iommu`. `tap` sees every group and stop marker sent.
    pub fn step(&mut self, now_ns: u64, iommu: &mut Iommu, tap: &mut dyn LinkTap) {
        let mut budget = self.cfg.items_per_step.max(1);
        while budget > 0 {
            let Some(job) = self.retries.pop_front() else {
                break;
            };
            budget -= 1;
            if let Outcome::Blocked(job) = self.run(job, now_ns, iommu, tap) {
                self.retries.push_front(job);
                return;
            }
        }
        if let Some(rate) = self.cfg.items_per_s {
            let dt = self.last_step_ns.map_or(0, |t| now_ns.saturating_sub(t)) as f64 / 1e9;
            let cap = f64::from(self.cfg.items_per_step.max(1));
            self.tokens = (self.tokens + rate * dt).min(cap);
            budget = budget.min(self.tokens as u32);
        }
        self.last_step_ns = Some(now_ns);
        let n = self.streams.len();
        let mut idle_streams = 0;
        while budget > 0 && n > 0 && idle_streams < n {
            let i = self.next_stream % n;
            self.next_stream = self.next_stream.wrapping_add(1);
            let s = &mut self.streams[i];
            let job = match s.blocked.take() {
                Some(job) => job,
                // A function whose PRI is disabled starts no new work: its driver has seen
                // Response Failure and waits for a reset.
                None if self.issuing
                    && s.state == StreamState::Running
                    && !self.stats.pri_disabled =>
                {
                    self.stats.items_started += 1;
                    if self.cfg.items_per_s.is_some() {
                        self.tokens -= 1.0;
                    }
                    Job {
                        item: s.workload.next_item(),
                        faulted: false,
                    }
                }
                None => {
                    idle_streams += 1;
                    continue;
                }
            };
            budget -= 1;
            if let Outcome::Blocked(job) = self.run(job, now_ns, iommu, tap) {
                self.streams[i].blocked = Some(job);
                idle_streams += 1;
            }
        }
    }

    fn run(&mut self, job: Job, now_ns: u64, iommu: &mut Iommu, tap: &mut dyn LinkTap) -> Outcome {
        if self.stream_state(job.item.pasid) != Some(StreamState::Running) {
            self.stats.items_abandoned += 1;
            return Outcome::Done;
        }
        // With the whole allocation or every PRG index in flight, a page still missing could not
        // be requested: wait without translating (the common case of a saturated function).
        if !self.stats.pri_disabled
            && (self.outstanding >= self.cfg.opra || self.in_flight.len() >= self.cfg.max_groups)
        {
            return Outcome::Blocked(job);
        }
        let access = job.item.perm;
        let missing: Vec<u64> = job
            .item
            .pages
            .iter()
            .copied()
            .filter(|&p| {
                iommu.translate(self.cfg.id, job.item.pasid, p, access) != Translation::Mapped
            })
            .collect();
        if missing.is_empty() {
            self.stats.items_completed += 1;
            return Outcome::Done;
        }
        if self.stats.pri_disabled {
            self.stats.items_pri_disabled += 1;
            return Outcome::Done;
        }
        let pages = missing.len() as u32;
        if pages > self.cfg.opra - self.outstanding {
            return Outcome::Blocked(job);
        }
        let Some(prgi) = self.prg.alloc() else {
            return Outcome::Blocked(job);
        };
        let pasid = job.item.pasid;
        let mut flags = PageRequestFlags::PASID_VALID;
        if self.cfg.response_needs_pasid {
            flags |= PageRequestFlags::RESPONSE_NEEDS_PASID;
        }
        self.outstanding += pages;
        self.stats.max_outstanding = self.stats.max_outstanding.max(self.outstanding);
        self.stats.page_requests += u64::from(pages);
        self.stats.groups += 1;
        if job.faulted {
            self.stats.refaults += 1;
        }
        for (i, &addr) in missing.iter().enumerate() {
            let last = i + 1 == missing.len();
            let req = PageRequest {
                flags: if last {
                    flags | PageRequestFlags::LAST_PAGE
                } else {
                    flags
                },
                pasid,
                grpid: u32::from(prgi),
                perm: access,
                addr,
                private_data: [0; 2],
            };
            if last {
                tap.group_sent(self.cfg.id, pasid, prgi);
            }
            iommu.page_request(QueuedRequest {
                dev: self.cfg.id,
                req,
                sent_ns: now_ns,
            });
        }
        self.in_flight.insert(
            prgi,
            InFlight {
                job: Job {
                    faulted: true,
                    ..job
                },
                pages,
                sent_ns: now_ns,
            },
        );
        self.stats.max_groups_in_flight = self.stats.max_groups_in_flight.max(self.in_flight.len());
        Outcome::Done
    }

    fn stream_state(&self, pasid: u32) -> Option<StreamState> {
        self.streams
            .iter()
            .find(|s| s.pasid == pasid)
            .map(|s| s.state)
    }

    /// A PRG Response arrives. `tap` sees it first. A response for no group in flight is
    /// counted and ignored; otherwise the group's index and allocation are released and the
    /// code acted on. Returns the finished group, for timing.
    pub fn page_response(&mut self, resp: PrgResponse, tap: &mut dyn LinkTap) -> Option<GroupDone> {
        tap.response_seen(self.cfg.id, &resp);
        let Some(g) = self.in_flight.remove(&resp.prgi) else {
            self.stats.unexpected += 1;
            return None;
        };
        // The index was in flight (it is a key of `in_flight`), so freeing cannot fail.
        let _ = self.prg.free(resp.prgi);
        self.outstanding -= g.pages;
        let pasid = g.job.item.pasid;
        match resp.code {
            ResponseCode::Success => {
                self.stats.success += 1;
                self.retries.push_back(g.job);
            }
            ResponseCode::Invalid => {
                self.stats.invalid += 1;
                self.stats.items_invalid += 1;
            }
            ResponseCode::Failure => {
                self.stats.failure += 1;
                self.stats.pri_disabled = true;
                self.stats.items_pri_disabled += 1;
            }
        }
        self.settle_draining();
        Some(GroupDone {
            prgi: resp.prgi,
            pasid,
            sent_ns: g.sent_ns,
            code: resp.code,
        })
    }

    fn settle_draining(&mut self) {
        for s in &mut self.streams {
            if s.state == StreamState::Draining
                && !self.in_flight.values().any(|g| g.job.item.pasid == s.pasid)
            {
                s.state = StreamState::Stopped;
                self.stats.pasids_stopped += 1;
            }
        }
    }

    /// Stops `pasid` (no effect if it is not one of the function's or already stopping).
    /// Started work items of the PASID are dropped; with [`StopMode::Marker`] a stop marker is
    /// sent to `iommu` (unless PRI is disabled) and the PASID is stopped at once.
    pub fn stop_pasid(
        &mut self,
        pasid: u32,
        mode: StopMode,
        now_ns: u64,
        iommu: &mut Iommu,
        tap: &mut dyn LinkTap,
    ) {
        let Some(s) = self.streams.iter_mut().find(|s| s.pasid == pasid) else {
            return;
        };
        if s.state != StreamState::Running {
            return;
        }
        if s.blocked.take().is_some() {
            self.stats.items_abandoned += 1;
        }
        let before = self.retries.len();
        self.retries.retain(|j| j.item.pasid != pasid);
        self.stats.items_abandoned += (before - self.retries.len()) as u64;
        match mode {
            StopMode::Wait => {
                s.state = StreamState::Draining;
                self.settle_draining();
            }
            StopMode::Marker => {
                s.state = StreamState::Stopped;
                self.stats.pasids_stopped += 1;
                if !self.stats.pri_disabled {
                    self.stats.stop_markers += 1;
                    tap.stop_marker_sent(self.cfg.id, pasid);
                    iommu.page_request(QueuedRequest {
                        dev: self.cfg.id,
                        req: PageRequest {
                            flags: PageRequestFlags::PASID_VALID | PageRequestFlags::LAST_PAGE,
                            pasid,
                            grpid: 0,
                            perm: Perm::empty(),
                            addr: 0,
                            private_data: [0; 2],
                        },
                        sent_ns: now_ns,
                    });
                }
            }
        }
    }

    /// A function reset (FLR): re-enables PRI. Refused (returns false) while groups are in
    /// flight, since their responses are still owed to this function.
    pub fn reset(&mut self, tap: &mut dyn LinkTap) -> bool {
        if !self.in_flight.is_empty() {
            return false;
        }
        tap.function_reset(self.cfg.id);
        self.stats.pri_disabled = false;
        self.stats.resets += 1;
        self.stats.groups_before_reset = self.stats.groups;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::iommu::FaultSink;
    use crate::ledger::Ledger;
    use crate::workload::{AccessMix, Pattern};
    use crate::PageTables;

    fn cfg(opra: u32, group_pages: u32) -> DeviceConfig {
        DeviceConfig {
            id: 4,
            opra,
            max_groups: 512,
            response_needs_pasid: true,
            items_per_step: 4,
            items_per_s: None,
            streams: vec![(
                7,
                WorkloadSpec {
                    pattern: Pattern::Sequential,
                    base: 0x10_0000,
                    region_pages: 1024,
                    group_pages,
                    stride_pages: 1,
                    access: AccessMix::default(),
                },
            )],
            seed: 1,
        }
    }

    #[derive(Default)]
    struct Collect(Vec<QueuedRequest>);
    impl FaultSink for Collect {
        fn report(&mut self, q: &QueuedRequest) {
            self.0.push(*q);
        }
        fn discard_partial(&mut self) {}
    }

    fn ok(prgi: u16, code: ResponseCode) -> PrgResponse {
        PrgResponse {
            prgi,
            pasid: Some(7),
            code,
        }
    }

    #[test]
    fn groups_carry_last_page_on_the_last_request_and_respect_opra() {
        let mut iommu = Iommu::new(Arc::new(PageTables::new()), 4096);
        let mut ledger = Ledger::new();
        let mut d = PriDevice::new(cfg(8, 3));
        d.step(0, &mut iommu, &mut ledger);
        // 4 items of 3 pages each, OPRA 8: two groups fit (6 requests), the third waits.
        assert_eq!(d.groups_in_flight(), 2);
        assert_eq!(d.outstanding(), 6);
        let mut sink = Collect::default();
        iommu.service(100, &mut sink);
        let reqs = sink.0;
        assert_eq!(reqs.len(), 6);
        for g in reqs.chunks(3) {
            assert!(!g[0].req.is_last() && !g[1].req.is_last() && g[2].req.is_last());
            assert!(g
                .iter()
                .all(|q| q.req.grpid == g[0].req.grpid && q.req.pasid() == Some(7)));
            assert!(g[2]
                .req
                .flags
                .contains(PageRequestFlags::RESPONSE_NEEDS_PASID));
        }
        d.step(1, &mut iommu, &mut ledger);
        assert_eq!(d.outstanding(), 6, "still blocked by OPRA");
        assert!(d.stats().max_outstanding <= 8);
    }

    #[test]
    fn success_retries_invalid_fails_failure_disables_pri() {
        let tables = Arc::new(PageTables::new());
        let mut iommu = Iommu::new(tables.clone(), 4096);
        let mut ledger = Ledger::new();
        let mut c = cfg(64, 1);
        c.items_per_step = 3;
        let mut d = PriDevice::new(c);
        d.step(0, &mut iommu, &mut ledger);
        assert_eq!(d.groups_in_flight(), 3);
        // Group 0: map its page, answer SUCCESS: the retry completes the item.
        tables.map(4, 7, 0x10_0000, Perm::READ).unwrap();
        let done = d
            .page_response(ok(0, ResponseCode::Success), &mut ledger)
            .unwrap();
        assert_eq!((done.prgi, done.pasid), (0, 7));
        // Group 1: INVALID: the item fails.
        d.page_response(ok(1, ResponseCode::Invalid), &mut ledger);
        // A duplicate is ignored and counted.
        assert!(d
            .page_response(ok(1, ResponseCode::Invalid), &mut ledger)
            .is_none());
        d.set_issuing(false);
        d.step(1, &mut iommu, &mut ledger);
        assert_eq!(d.stats().items_completed, 1);
        assert_eq!(d.stats().items_invalid, 1);
        assert_eq!(d.stats().unexpected, 1);
        // Group 2: FAILURE: PRI off, nothing more is sent.
        d.page_response(ok(2, ResponseCode::Failure), &mut ledger);
        assert!(!d.pri_enabled());
        let sent = d.stats().page_requests;
        d.set_issuing(true);
        for t in 2..10 {
            d.step(t, &mut iommu, &mut ledger);
        }
        assert_eq!(
            d.stats().page_requests,
            sent,
            "no page request after FAILURE"
        );
        assert_eq!(d.stats().items_pri_disabled, 1);
        assert!(d.reset(&mut ledger));
        assert!(d.pri_enabled());
        let v = ledger.finish();
        assert_eq!(v.violation_count, 1, "the duplicate: {v:?}");
    }

    #[test]
    fn item_rate_limits_new_work() {
        let tables = Arc::new(PageTables::new());
        let mut iommu = Iommu::new(tables, 1 << 16);
        let mut ledger = Ledger::new();
        let mut c = cfg(1 << 16, 1);
        c.items_per_step = 100;
        c.items_per_s = Some(1000.0);
        let mut d = PriDevice::new(c);
        // 50 steps 1 ms apart at 1000 items/s: one item per step, 49 in all (the first step
        // has no elapsed time yet).
        for t in 0..50u64 {
            d.step(t * 1_000_000, &mut iommu, &mut ledger);
        }
        assert_eq!(d.stats().items_started, 49);
    }

    #[test]
    fn stop_with_marker_and_with_wait() {
        let mut iommu = Iommu::new(Arc::new(PageTables::new()), 4096);
        let mut ledger = Ledger::new();
        let mut d = PriDevice::new(cfg(64, 1));
        d.step(0, &mut iommu, &mut ledger);
        d.stop_pasid(7, StopMode::Marker, 1, &mut iommu, &mut ledger);
        assert_eq!(d.stats().stop_markers, 1);
        assert_eq!(d.stats().pasids_stopped, 1);
        let mut sink = Collect::default();
        iommu.service(100, &mut sink);
        assert_eq!(sink.0.len(), 4, "the marker is dropped by the IOMMU");
        assert_eq!(iommu.stats().stop_markers_dropped, 1);
        // Responses still owed arrive and are consumed without retry.
        for i in 0..4 {
            d.page_response(ok(i, ResponseCode::Success), &mut ledger);
        }
        d.step(2, &mut iommu, &mut ledger);
        assert!(d.is_idle());
        assert_eq!(d.stats().items_abandoned, 4);

        let mut d = PriDevice::new(cfg(64, 1));
        d.step(0, &mut iommu, &mut ledger);
        d.stop_pasid(7, StopMode::Wait, 1, &mut iommu, &mut ledger);
        assert_eq!(d.stats().pasids_stopped, 0, "waiting for 4 groups");
        for i in 0..4 {
            d.page_response(ok(i, ResponseCode::Success), &mut ledger);
        }
        assert_eq!(d.stats().pasids_stopped, 1);
        assert_eq!(d.stats().stop_markers, 0);
    }
}
