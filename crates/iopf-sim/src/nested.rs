//! The nested consumer side: a vIOMMU and a guest driver between the host fault queue and the
//! resolver, for the functions a scenario passes through (`[guest]`).
//!
//! ```text
//!  host fault queue ──read──▶ split by function ──▶ host Resolver (functions not passed)
//!        ▲                         │ passed-through functions' groups
//!        │                         ▼
//!        │            GuestPort (a FaultConsumer for the bridge) ──▶ VtdBridge::pump
//!        │                                                             │ guest page request queue
//!        │                                                             ▼
//!        │                                   VtdGuestDriver::handle_event (GuestPaging)
//!        │                                                             │ page group responses
//!        └──────── GuestPort::respond ◀── bridge (judge, code_map) ◀───┘
//! ```
//!
//! One host queue serves both: the consumer thread reads it, resolves the groups of functions
//! the host keeps with the host [`Resolver`], and hands whole groups of passed-through
//! functions to the bridge through `GuestPort`, whose `respond` is the host queue's. The
//! guest's resolver (`GuestPaging`) makes the host resolver's decisions: the same forbidden
//! and invalid page draws, the same service time per group, the same mappings (through the same
//! [`Mapper`], named by the host function and PASID). Its Response Failure reaches the host as
//! INVALID (the fault fd takes SUCCESS and INVALID only): a forbidden page on a passed-through
//! function ends in INVALID at the device, never in FAILURE, and is counted as such.
//! Every timestamp is the consumer thread's, with the run's clock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use iopf_abi::{FaultConsumer, IommufdResponse, Perm, PgFault, ResponseCode};
use iopf_viommu::amd::{AmdBridge, AmdConfig};
use iopf_viommu::guest::{
    AmdGuestDriver, GuestDriverModel, GuestResolver, SmmuGuestDriver, VtdGuestDriver,
};
use iopf_viommu::smmuv3::{SmmuBridge, SmmuConfig};
use iopf_viommu::vtd::{VtdBridge, VtdConfig};
use iopf_viommu::{
    BridgeConfig, Endpoint, HostAnswer, PassthroughUnit, PrivateDataMode, RecordedMsis,
};
use serde::{Deserialize, Serialize};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::clock::{now_ns, spin_for};
use crate::resolver::{is_forbidden, is_invalid, ConsumerMark, Mapper, Resolver, ResolverStats};
use crate::scenario::{GuestEventKind, GuestSpec, Scenario, Viommu};
use crate::{FunctionId, SimError, PAGE_SIZE};

/// Guest-physical address of the guest's page request queue.
const PRQ_BASE: u64 = 0x10_0000;
/// Guest-physical address of its invalidation queue (and wait status word).
const IQ_BASE: u64 = 0x8_0000;
/// Where the AMD driver model puts its PPR log above the base it is given.
const AMD_PPR_OFFSET: u64 = 0x5000;
/// Guest memory: 8 MiB (a page request queue takes at most 512 KiB; an SMMUv3 stream table
/// for requester ids up to 0xfff8, 4 MiB).
const GUEST_MEM: usize = 8 << 20;

/// What the vIOMMU and the guest did in a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestReport {
    /// The vIOMMU (`vtd`, `smmuv3`, `amd`).
    pub viommu: String,
    /// The host functions passed through.
    pub functions: Vec<FunctionId>,
    /// Usable slots of the guest's page request queue.
    pub prq_slots: u64,
    /// The age limit, if any.
    pub age_limit_ms: Option<u64>,
    /// Host groups the bridge read.
    pub groups_read: u64,
    /// Groups posted whole into the guest's queue.
    pub groups_posted: u64,
    /// Requests written into the guest's queue.
    pub records_posted: u64,
    /// Requests the guest's queue dropped (its overflow).
    pub records_dropped: u64,
    /// Host answers by who answered (`guest`) or why the bridge did (`iopf_viommu::HostAnswer`
    /// names), every reason present.
    pub host_answers: BTreeMap<String, u64>,
    /// The guest's answers: SUCCESS.
    pub guest_success: u64,
    /// The guest's answers: INVALID.
    pub guest_invalid: u64,
    /// The guest's answers: Response Failure (sent to the host as INVALID).
    pub guest_failure: u64,
    /// Guest responses that matched no outstanding group.
    pub unmatched: u64,
    /// Answers the host queue refused.
    pub host_refused: u64,
    /// Groups the guest held when the run ended.
    pub outstanding_at_end: u64,
    /// Overflows of the guest's page request queue (VT-d `PRS.PRO`, SMMUv3 `PRIQ_PROD.OVF`,
    /// AMD `PPR_OVERFLOW`).
    pub prq_overflows: u64,
    /// Of the dropped requests, last ones the "hardware" answered SUCCESS.
    pub prq_auto_success: u64,
    /// Interrupt messages the vIOMMU sent to the guest.
    pub interrupts: u64,
    /// Times the guest driver's handler ran.
    pub handler_runs: u64,
    /// Descriptors it read.
    pub descriptors: u64,
    /// Requests it found malformed and answered INVALID (Linux: privileged with read/write,
    /// execute with read, no PASID).
    pub bad_requests: u64,
    /// Partial groups it discarded after an overflow.
    pub discarded_partials: u64,
    /// Pages the guest's resolver mapped.
    pub pages_mapped: u64,
    /// vIOMMU resets.
    pub resets: u64,
    /// Times the guest stopped answering.
    pub silent_periods: u64,
}

/// A group waiting for the bridge, and its marks.
#[derive(Debug, Clone, Copy)]
struct Pending {
    dev: FunctionId,
    grpid: u32,
    delivered_ns: u64,
    posted_ns: Option<u64>,
}

/// The host queue as the bridge sees it: only the passed-through functions' groups, which the
/// consumer thread read and handed over; answers go straight to the host queue.
struct GuestPort<'a, C> {
    queue: &'a mut C,
    waiting: VecDeque<PgFault>,
    pending: HashMap<u32, Pending>,
    /// Set while the guest driver's handler runs: when it started.
    guest_event: Option<u64>,
    marks: Vec<ConsumerMark>,
    success: u64,
    invalid: u64,
    failure: u64,
    refused: u64,
}

impl<C: FaultConsumer> GuestPort<'_, C> {
    fn push(&mut self, group: &[PgFault], delivered_ns: u64) {
        if let Some(last) = group.last() {
            self.pending.insert(
                last.cookie,
                Pending {
                    dev: last.dev_id,
                    grpid: last.grpid,
                    delivered_ns,
                    posted_ns: None,
                },
            );
        }
        self.waiting.extend(group.iter().copied());
    }

    /// Records of the first waiting group.
    fn front_len(&self) -> usize {
        PgFault::first_group_len(&self.waiting)
    }
}

impl<C: FaultConsumer> FaultConsumer for GuestPort<'_, C> {
    type Error = C::Error;

    fn read_faults(&mut self, out: &mut [PgFault]) -> Result<usize, C::Error> {
        let now = now_ns();
        let mut n = 0;
        loop {
            let len = self.front_len();
            if len == 0 || n + len > out.len() {
                return Ok(n);
            }
            for slot in &mut out[n..n + len] {
                if let Some(f) = self.waiting.pop_front() {
                    *slot = f;
                }
            }
            if let Some(p) = self.pending.get_mut(&out[n + len - 1].cookie) {
                p.posted_ns = Some(now);
            }
            n += len;
        }
    }

    fn respond(&mut self, responses: &[IommufdResponse]) -> Result<usize, C::Error> {
        // Taken before the answer goes out: the device can retry before this thread reads the
        // clock again, and a later stamp would fall after the retry and leave the group unpaired.
        let now = now_ns();
        match self.queue.respond(responses) {
            Ok(k) => {
                for r in &responses[..k.min(responses.len())] {
                    match r.code {
                        ResponseCode::Success => self.success += 1,
                        ResponseCode::Invalid => self.invalid += 1,
                        ResponseCode::Failure => self.failure += 1,
                    }
                    if let Some(p) = self.pending.remove(&r.cookie) {
                        self.marks.push(ConsumerMark {
                            dev: p.dev,
                            grpid: p.grpid,
                            delivered_ns: p.delivered_ns,
                            answered_ns: now,
                            posted_ns: p.posted_ns,
                            guest_ns: self.guest_event,
                        });
                    }
                }
                Ok(k)
            }
            Err(e) => {
                // The bridge counts the first as refused and goes on with the rest.
                self.refused += 1;
                if let Some(r) = responses.first() {
                    self.pending.remove(&r.cookie);
                }
                Err(e)
            }
        }
    }

    fn wait_readable(&mut self, _timeout: Option<Duration>) -> Result<bool, C::Error> {
        Ok(!self.waiting.is_empty())
    }
}

/// The guest's demand paging: the host resolver's decisions, page by page (the guest driver
/// answers a group with the worst of its pages' codes, which is the host resolver's code).
struct GuestPaging<M> {
    seed: u64,
    spec: crate::ResolverSpec,
    mapper: M,
    dev_of_rid: HashMap<u16, FunctionId>,
    /// Last pages of groups handed to the guest: the group's service time is spent there.
    last_pages: HashMap<(FunctionId, u32, u64), u32>,
    /// Pages of groups the host resolver would not map (one page invalid or forbidden).
    spoiled: HashMap<(FunctionId, u32, u64), u32>,
    mapped: u64,
    error: Option<SimError>,
}

fn take(m: &mut HashMap<(FunctionId, u32, u64), u32>, key: (FunctionId, u32, u64)) -> bool {
    match m.get_mut(&key) {
        Some(n) if *n > 1 => {
            *n -= 1;
            true
        }
        Some(_) => {
            m.remove(&key);
            true
        }
        None => false,
    }
}

impl<M: Mapper> GuestPaging<M> {
    fn page_code(&self, dev: FunctionId, pasid: u32, addr: u64) -> ResponseCode {
        if is_forbidden(self.seed, self.spec.failure_share, dev, pasid, addr) {
            ResponseCode::Failure
        } else if is_invalid(self.seed, self.spec.invalid_share, dev, pasid, addr) {
            ResponseCode::Invalid
        } else {
            ResponseCode::Success
        }
    }

    /// A group is handed to the guest: note where its service time goes and whether its pages
    /// may be mapped.
    fn note(&mut self, group: &[PgFault]) {
        let key = |f: &PgFault| (f.dev_id, f.pasid, f.addr & !(PAGE_SIZE - 1));
        if let Some(last) = group.last() {
            *self.last_pages.entry(key(last)).or_default() += 1;
        }
        let spoiled = group
            .iter()
            .any(|f| self.page_code(f.dev_id, f.pasid, f.addr) != ResponseCode::Success);
        if spoiled {
            for f in group {
                *self.spoiled.entry(key(f)).or_default() += 1;
            }
        }
    }
}

impl<M: Mapper> GuestResolver for GuestPaging<M> {
    fn resolve(&mut self, rid: u16, pasid: Option<u32>, addr: u64, perm: Perm) -> ResponseCode {
        let Some(&dev) = self.dev_of_rid.get(&rid) else {
            return ResponseCode::Invalid;
        };
        let pasid = pasid.unwrap_or(0);
        let page = addr & !(PAGE_SIZE - 1);
        if take(&mut self.last_pages, (dev, pasid, page)) {
            spin_for((self.spec.service_time_us * 1000.0) as u64);
        }
        let code = self.page_code(dev, pasid, page);
        let spoiled = take(&mut self.spoiled, (dev, pasid, page));
        if code == ResponseCode::Success && !spoiled {
            match self.mapper.map(dev, pasid, page, perm) {
                Ok(()) => self.mapped += 1,
                Err(e) => {
                    self.error.get_or_insert(e);
                    return ResponseCode::Invalid;
                }
            }
        }
        code
    }
}

/// The guest requester id of host function `f`: bus 0, device `f`, function 0.
fn guest_rid(f: FunctionId) -> u16 {
    (f << 3) as u16
}

fn path_error(what: &str, e: impl std::fmt::Display) -> SimError {
    SimError::FaultPath(format!("{what}: {e}"))
}

/// Serves `queue` through a VT-d vIOMMU and a guest driver for the functions `guest` passes
/// through, and with the host resolver for the others, until `done(queue)` says the producer has
/// finished and nothing is waiting. `start_ns` is the run's start (guest events count from it).
/// Returns the consumer side's figures (with [`ResolverStats::guest`]) and the marks of every
/// answered group.
pub fn serve<C: FaultConsumer, M: Mapper + Clone>(
    scenario: &Scenario,
    guest: &GuestSpec,
    queue: &mut C,
    mapper: M,
    start_ns: u64,
    done: &dyn Fn(&C) -> bool,
) -> Result<(ResolverStats, Vec<ConsumerMark>), SimError> {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), GUEST_MEM)])
        .map_err(|e| path_error("guest memory", e))?;
    let endpoints = guest
        .functions
        .iter()
        .map(|&f| Endpoint::new(f, guest_rid(f)))
        .collect();
    let mut cfg = BridgeConfig::new(endpoints);
    cfg.age_limit_ns = guest.age_limit_ms.map(|ms| ms * 1_000_000);
    let port = GuestPort {
        queue,
        waiting: VecDeque::new(),
        pending: HashMap::new(),
        guest_event: None,
        marks: Vec::new(),
        success: 0,
        invalid: 0,
        failure: 0,
        refused: 0,
    };
    let slots = guest.viommu.queue_slots(guest.prq_order);
    let order = guest.prq_order;
    let ctx = Run {
        scenario,
        guest,
        mem: &mem,
        mapper,
        start_ns,
        slots,
    };
    match guest.viommu {
        Viommu::Vtd => {
            let unit = VtdBridge::new(port, cfg, VtdConfig::new(PrivateDataMode::None))
                .map_err(|e| path_error("vIOMMU", e))?;
            ctx.run(
                unit,
                || VtdGuestDriver::new(PRQ_BASE, IQ_BASE).with_prq_order(order),
                done,
            )
        }
        Viommu::Amd => {
            let unit = AmdBridge::new(port, cfg, AmdConfig::default())
                .map_err(|e| path_error("vIOMMU", e))?;
            // The PPR log at PRQ_BASE: the driver's command buffer, event log and semaphore sit
            // below it.
            let len = order + 8;
            let base = PRQ_BASE - AMD_PPR_OFFSET;
            ctx.run(unit, || AmdGuestDriver::new(base).with_ppr_len(len), done)
        }
        Viommu::Smmuv3 => {
            let unit = SmmuBridge::new(port, cfg, SmmuConfig::default())
                .map_err(|e| path_error("vIOMMU", e))?;
            let streams: Vec<u16> = guest.functions.iter().map(|&f| guest_rid(f)).collect();
            let log2 = order as u32 + 8;
            ctx.run(
                unit,
                || {
                    SmmuGuestDriver::new(PRQ_BASE)
                        .with_streams(&streams)
                        .with_priq_log2(log2)
                },
                done,
            )
        }
    }
}

/// What one nested run needs besides the unit and its driver.
struct Run<'a, M> {
    scenario: &'a Scenario,
    guest: &'a GuestSpec,
    mem: &'a GuestMemoryMmap,
    mapper: M,
    start_ns: u64,
    slots: u64,
}

impl<M: Mapper + Clone> Run<'_, M> {
    /// Serves the host queue behind `unit` (whose host side is the [`GuestPort`]) with the
    /// guest driver `new_driver` makes (again after each reset).
    fn run<'q, C, U, D>(
        self,
        mut unit: U,
        new_driver: impl Fn() -> D,
        done: &dyn Fn(&C) -> bool,
    ) -> Result<(ResolverStats, Vec<ConsumerMark>), SimError>
    where
        C: FaultConsumer + 'q,
        U: PassthroughUnit<Host = GuestPort<'q, C>> + UnitCounters,
        D: GuestDriverModel<U>,
    {
        let Run {
            scenario,
            guest,
            mem,
            mapper,
            start_ns,
            slots,
        } = self;
        let mut irq = RecordedMsis::default();
        let mut driver = new_driver();
        driver
            .init(&mut unit, mem, &mut irq, now_ns())
            .map_err(|e| path_error("guest driver", e))?;
        let mut paging = GuestPaging {
            seed: scenario.seed,
            spec: scenario.resolver,
            mapper: mapper.clone(),
            dev_of_rid: guest.functions.iter().map(|&f| (guest_rid(f), f)).collect(),
            last_pages: HashMap::new(),
            spoiled: HashMap::new(),
            mapped: 0,
            error: None,
        };
        let mut resolver = Resolver::new(scenario.resolver, scenario.seed, mapper);
        let mut report = GuestReport {
            viommu: guest.viommu.name().into(),
            functions: guest.functions.clone(),
            prq_slots: slots,
            age_limit_ms: guest.age_limit_ms,
            ..GuestReport::default()
        };
        // The unit's counters restart at a reset: what came before is kept here.
        let mut prq_before = (0u64, 0u64);
        let mut events = guest.events.clone();
        events.sort_by_key(|e| e.at_ms);
        let mut next_event = 0;
        let mut buf = vec![PgFault::ZEROED; 1024];
        let mut responses: Vec<IommufdResponse> = Vec::with_capacity(Resolver::<M>::ANSWER_BATCH);
        let mut marks: Vec<(FunctionId, u32)> = Vec::with_capacity(Resolver::<M>::ANSWER_BATCH);
        let mut guest_unfinished = false;
        loop {
            let now = now_ns();
            while let Some(e) = events
                .get(next_event)
                .filter(|e| e.at_ms * 1_000_000 <= now.saturating_sub(start_ns))
            {
                match e.kind {
                    GuestEventKind::StopAnswering => {
                        if !driver.misbehaviour_mut().silent {
                            report.silent_periods += 1;
                        }
                        driver.misbehaviour_mut().silent = true;
                    }
                    GuestEventKind::ResumeAnswering => driver.misbehaviour_mut().silent = false,
                    GuestEventKind::Reset => {
                        let s = unit.counters();
                        prq_before.0 += s.0;
                        prq_before.1 += s.1;
                        report.discarded_partials += driver.discarded_partials();
                        report.resets += 1;
                        unit.reset();
                        report.interrupts += irq.messages.len() as u64;
                        irq.messages.clear();
                        // The guest sets the unit up again, as after a reboot; what it was told to do
                        // wrong it still does.
                        let misbehaviour = *driver.misbehaviour_mut();
                        driver = new_driver();
                        *driver.misbehaviour_mut() = misbehaviour;
                        driver
                            .init(&mut unit, mem, &mut irq, now_ns())
                            .map_err(|e| path_error("guest driver", e))?;
                    }
                }
                next_event += 1;
            }
            // The host queue: the host's groups are resolved here, the guest's handed over.
            let n = unit
                .bridge_mut()
                .host_mut()
                .queue
                .read_faults(&mut buf)
                .map_err(|e| path_error("fault queue", e))?;
            if n > 0 {
                let delivered_ns = now_ns();
                let mut start = 0;
                let mut groups = 0;
                for i in 0..n {
                    if !buf[i].is_last() {
                        continue;
                    }
                    let group = &buf[start..=i];
                    start = i + 1;
                    groups += 1;
                    if guest.functions.contains(&buf[i].dev_id) {
                        paging.note(group);
                        unit.bridge_mut().host_mut().push(group, delivered_ns);
                        continue;
                    }
                    let code = resolver.resolve(group)?;
                    responses.push(IommufdResponse {
                        cookie: buf[i].cookie,
                        code,
                    });
                    marks.push((buf[i].dev_id, buf[i].grpid));
                    if responses.len() >= Resolver::<M>::ANSWER_BATCH {
                        let q = &mut *unit.bridge_mut().host_mut().queue;
                        resolver.answer(q, &responses, &marks, delivered_ns, done);
                        responses.clear();
                        marks.clear();
                    }
                }
                let q = &mut *unit.bridge_mut().host_mut().queue;
                resolver.answer(q, &responses, &marks, delivered_ns, done);
                responses.clear();
                marks.clear();
                resolver.count_read(n as u64, groups);
            }
            // The vIOMMU: host groups into the guest's queue (room allowing), aged groups, owed
            // answers.
            let posted = unit
                .pump(mem, &mut irq, now_ns())
                .map_err(|e| path_error("vIOMMU", e))?;
            // The guest: its page request handler runs when the interrupt came (or the pending bit
            // is set), like an interrupt handler, and again while its answers wait for room.
            let fire = !irq.messages.is_empty() || unit.event_pending() || guest_unfinished;
            if fire {
                report.interrupts += irq.messages.len() as u64;
                irq.messages.clear();
                let t = now_ns();
                unit.bridge_mut().host_mut().guest_event = Some(t);
                let handled = driver.handle_event(&mut unit, mem, &mut irq, &mut paging, t);
                unit.bridge_mut().host_mut().guest_event = None;
                let h = handled.map_err(|e| path_error("guest driver", e))?;
                report.handler_runs += 1;
                report.descriptors += h.descriptors as u64;
                report.bad_requests += h.bad as u64;
                guest_unfinished = !h.waits_done;
            }
            if let Some(e) = paging.error.take() {
                return Err(e);
            }
            if n == 0 && posted == 0 && !fire {
                let b = unit.bridge();
                let port = b.host();
                // Once the producer has finished nothing more comes; groups the guest still holds
                // were answered by the queue's close.
                if done(&*port.queue) && port.waiting.is_empty() && b.staged_records() == 0 {
                    break;
                }
                let busy = !port.waiting.is_empty()
                    || b.staged_records() > 0
                    || b.owed_answers() > 0
                    || b.outstanding() > 0;
                if busy {
                    std::thread::yield_now();
                } else {
                    unit.bridge_mut()
                        .host_mut()
                        .queue
                        .wait_readable(Some(Duration::from_millis(1)))
                        .map_err(|e| path_error("fault queue", e))?;
                }
            }
        }
        let _ = unit.bridge_mut().flush();
        let b = unit.bridge().stats();
        report.groups_read = b.groups_read;
        report.groups_posted = b.groups_posted;
        report.records_posted = b.records_posted;
        report.records_dropped = b.records_dropped;
        report.host_answers = HostAnswer::ALL
            .iter()
            .map(|&a| (a.name().to_string(), b.host_answers[a as usize]))
            .collect();
        report.guest_success = b.guest_codes[0];
        report.guest_invalid = b.guest_codes[1];
        report.guest_failure = b.guest_codes[2];
        report.unmatched = b.unmatched_total();
        report.host_refused = b.host_refused;
        report.outstanding_at_end = unit.bridge().outstanding() as u64;
        let s = unit.counters();
        report.interrupts += irq.messages.len() as u64;
        report.prq_overflows = prq_before.0 + s.0;
        report.prq_auto_success = prq_before.1 + s.1;
        report.discarded_partials += driver.discarded_partials();
        report.pages_mapped = paging.mapped;
        let port = unit.bridge().host();
        let (success, invalid, failure, refused) =
            (port.success, port.invalid, port.failure, port.refused);
        let guest_marks = port.marks.clone();
        drop(unit);
        let (mut stats, mut all_marks) = resolver.finish();
        stats.success += success;
        stats.invalid += invalid;
        stats.failure += failure;
        stats.refused += refused;
        stats.mapped += paging.mapped;
        stats.guest = Some(report);
        all_marks.extend(guest_marks);
        Ok((stats, all_marks))
    }
}

/// The unit's own counters the report shows: (overflows of the guest's page request queue,
/// groups the "hardware" answered on overflow), and whether a page request event is pending
/// (what the guest's handler polls).
trait UnitCounters {
    fn counters(&self) -> (u64, u64);
    fn event_pending(&self) -> bool;
}

impl<C: FaultConsumer> UnitCounters for VtdBridge<C> {
    fn counters(&self) -> (u64, u64) {
        let s = self.pri().prq().stats();
        (s.overflows, s.auto_success)
    }

    fn event_pending(&self) -> bool {
        self.pri().prq().prs() & iopf_viommu::vtd::regs::PRS_PPR != 0
    }
}

impl<C: FaultConsumer> UnitCounters for AmdBridge<C> {
    fn counters(&self) -> (u64, u64) {
        let s = self.pri().ppr_log().stats();
        (s.overflows, s.auto_success)
    }

    fn event_pending(&self) -> bool {
        self.pri().status() & iopf_viommu::amd::regs::STATUS_PPR_INT != 0
    }
}

impl<C: FaultConsumer> UnitCounters for SmmuBridge<C> {
    fn counters(&self) -> (u64, u64) {
        let s = self.pri().stats();
        (s.pri_overflows, s.pri_auto_success)
    }

    fn event_pending(&self) -> bool {
        !self.pri().priq().is_empty()
    }
}
