//! A run: the producer side (devices, IOMMU, fault core, fault queue producer) on one thread and
//! the consumer side (fault queue consumer, resolver) on another, connected by the real fault
//! queue; or, for a split run, in another process over the queue's UNIX socket.
//!
//! The producer side loops over platform steps: every device steps (translates, sends page
//! requests), the IOMMU's own Success responses for requests it dropped go back to their devices,
//! the driver takes a batch from the page request queue and reports it into the fault core (which
//! groups and delivers to the queue), the consumer's responses are drained from the queue and
//! judged by the core, and the responses the core sends reach the devices. The devices start new
//! work for the scenario's duration; then the run drains until every device is idle, or the drain
//! timeout passes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use iopf_abi::{Features, RecordFormats};
use iopf_core::{AutoReason, FaultCore, PriCaps};
use iopf_queue::{CoreLink, Offer, Producer, ProducerConfig, Request};

use rand::RngExt;

use crate::clock::now_ns;
use crate::device::PriDevice;
use crate::glue::{CoreFeed, Mailbox, MapOnSuccess};
use crate::iommu::Iommu;
use crate::latency::{join, ProducerMark};
use crate::ledger::{Ledger, PrgResponse};
use crate::report::{CoreReport, DeviceReport, QueueReport, RunReport, Throughput, Totals};
use crate::resolver::{ConsumerMark, Resolver, ResolverStats};
use crate::scenario::Scenario;
use crate::{FunctionId, PageTables, SimError};

/// Live figures of a running run, for a progress display on another thread.
#[derive(Debug, Default)]
pub struct Progress {
    /// Milliseconds since the start.
    pub elapsed_ms: AtomicU64,
    /// Groups the devices sent so far.
    pub groups: AtomicU64,
    /// Work items completed so far.
    pub items: AtomicU64,
    /// Set once the devices stopped starting work and the run drains.
    pub draining: AtomicBool,
}

/// What the producer side offers for `scenario`: everything iopf's queue implements, and the
/// scenario's largest group (so that a ring too small for it is refused at negotiation).
pub fn producer_offer(scenario: &Scenario) -> Offer {
    Offer::current().with_max_group(scenario.max_group())
}

/// The request a simulated consumer makes: iommufd records, cookie responses (which may carry
/// the resolver's FAILURE), loss records.
pub fn consumer_request(offer: &Offer, depth: u32) -> Result<Request, SimError> {
    let mut req = Request::best_for(
        offer,
        RecordFormats::HWPT_PGFAULT,
        Features::COOKIE_RESPONSE | Features::LOSS_RECORDS | Features::COOKIE_FAILURE,
    )
    .ok_or_else(|| {
        SimError::FaultPath("the producer offers no iommufd records with cookie responses".into())
    })?;
    req.entries = depth;
    Ok(req)
}

/// Runs `scenario` with both sides in this process, on two threads. `progress` is updated as it
/// goes. Errors: the fault path failed to set up, or a side stopped unexpectedly; a run whose
/// ledger disagrees is not an error (see [`RunReport::ledger`]).
pub fn run(scenario: &Scenario, progress: &Progress) -> Result<RunReport, SimError> {
    run_until(scenario, progress, &never)
}

/// A stop check that never asks a run to stop: what [`run`] passes to [`run_until`].
pub fn never() -> bool {
    false
}

/// Runs `scenario` as [`run`] does, and ends it early once `stop` returns true (a CLI's
/// Ctrl-C or SIGTERM flag, a test's deadline).
///
/// The producer side calls `stop` once per platform step, on the thread that called this
/// function, and takes its first `true` as final. From then on the run ends as a run whose
/// duration is over does, only sooner: the devices start no new work, the work in flight goes
/// on (refaults included) until every device is idle or the scenario's `drain_timeout_ms`
/// passes, and the queue is closed, which answers INVALID every group the consumer still holds
/// (never FAILURE). Every group the devices sent is in the report and the ledger's books;
/// [`RunReport::partial`] is set.
pub fn run_until(
    scenario: &Scenario,
    progress: &Progress,
    stop: &dyn Fn() -> bool,
) -> Result<RunReport, SimError> {
    let tables = Arc::new(PageTables::new());
    let offer = producer_offer(scenario);
    let request = consumer_request(&offer, scenario.queue.depth)?;
    let (producer, mut consumer) = iopf_queue::channel(&offer, &request, producer_config())
        .map_err(|e| SimError::FaultPath(e.to_string()))?;
    let done = Arc::new(AtomicBool::new(false));
    let consumer_side = {
        let done = done.clone();
        let tables = tables.clone();
        let spec = scenario.resolver;
        let seed = scenario.seed;
        let nested = scenario.guest.clone().map(|g| (scenario.clone(), g));
        let start = now_ns();
        std::thread::Builder::new()
            .name("iopf-consumer".into())
            .spawn(
                move || -> Result<(ResolverStats, Vec<ConsumerMark>), SimError> {
                    if let Some((scenario, guest)) = nested {
                        let is_done = |_: &iopf_queue::Consumer| done.load(Ordering::Acquire);
                        let (mut stats, marks) = crate::nested::serve(
                            &scenario,
                            &guest,
                            &mut consumer,
                            tables,
                            start,
                            &is_done,
                        )?;
                        stats.lost_signalled = consumer.stats().lost;
                        return Ok((stats, marks));
                    }
                    let mut resolver = Resolver::new(spec, seed, tables);
                    let served = resolver.serve(&mut consumer, &|_| done.load(Ordering::Acquire));
                    served.map(|()| {
                        let (mut stats, marks) = resolver.finish();
                        stats.lost_signalled = consumer.stats().lost;
                        (stats, marks)
                    })
                },
            )
            .map_err(|_| SimError::SideLost("consumer"))?
    };
    let side = ProducerSide::new(scenario, tables, producer, false)?;
    let outcome = side.run(scenario, progress, &|| consumer_side.is_finished(), stop);
    done.store(true, Ordering::Release);
    let consumer_result = consumer_side
        .join()
        .map_err(|_| SimError::SideLost("consumer"))?;
    let mut outcome = outcome?;
    let (cstats, marks) = consumer_result?;
    outcome.finish(cstats, &marks)
}

/// Runs the producer side of a split run: `producer` is the end of a queue accepted on the
/// socket; the consumer process maps nothing here, so this side maps a group's pages when the
/// consumer's SUCCESS for it is accepted (the `IOMMU_IOAS_MAP` a VMM issues reaches the host
/// kernel, which is this side). `consumer_gone` says when the consumer process has exited;
/// `stop` ends the run early, as for [`run_until`] (pass [`never()`] to run it whole).
pub fn run_producer_side(
    scenario: &Scenario,
    producer: Producer,
    progress: &Progress,
    consumer_gone: &dyn Fn() -> bool,
    stop: &dyn Fn() -> bool,
) -> Result<ProducerOutcome, SimError> {
    let tables = Arc::new(PageTables::new());
    ProducerSide::new(scenario, tables, producer, true)?.run(
        scenario,
        progress,
        consumer_gone,
        stop,
    )
}

/// The queue tunables a run uses: a pending limit past any scenario's in-flight groups (the
/// backlog's bound is set by the link to the devices' allocations).
pub fn producer_config() -> ProducerConfig {
    ProducerConfig {
        max_pending: 65536,
        max_per_wake: 256,
        max_backlog: 0,
    }
}

struct ProducerSide {
    devices: Vec<PriDevice>,
    iommu: Iommu,
    core: FaultCore<Mailbox>,
    core_ids: Vec<iopf_core::DeviceId>,
    sim_of_core: HashMap<u32, FunctionId>,
    link: CoreLink,
    ledger: Ledger,
    split: bool,
    consumer_gone_answers: u64,
    inject: crate::scenario::InjectSpec,
    rng: rand::rngs::SmallRng,
}

/// What the producer side measured; [`ProducerOutcome::finish`] joins it with the consumer's.
#[derive(Debug)]
pub struct ProducerOutcome {
    scenario: String,
    split: bool,
    wall_s: f64,
    issue_s: f64,
    steps: u64,
    devices: Vec<DeviceReport>,
    iommu: crate::iommu::IommuStats,
    queue: QueueReport,
    core: CoreReport,
    ledger: crate::ledger::LedgerVerdict,
    marks: Vec<ProducerMark>,
    partial: bool,
}

impl ProducerSide {
    fn new(
        scenario: &Scenario,
        tables: Arc<PageTables>,
        producer: Producer,
        split: bool,
    ) -> Result<ProducerSide, SimError> {
        let fault = |e: iopf_core::CoreError| SimError::FaultPath(e.to_string());
        // Every attached device shares the one queue; a split run maps pages on SUCCESS.
        let mut link = CoreLink::new(producer).map_err(|e| SimError::FaultPath(e.to_string()))?;
        if split {
            link.set_observer(Box::new(MapOnSuccess::new(tables.clone())));
        }
        let mut core = FaultCore::new(Mailbox::default());
        let mut devices = Vec::new();
        let mut core_ids = Vec::new();
        let mut sim_of_core = HashMap::new();
        for f in scenario.functions() {
            let id = f.config.id;
            let core_dev = core
                .register(PriCaps {
                    outstanding_allocation: f.config.opra,
                    pasid_required: f.config.response_needs_pasid,
                    failure_allowed: f.failure_allowed,
                })
                .map_err(fault)?;
            if f.attached {
                // Records name the device by its simulated id, as the resolver knows it.
                link.attach_as(&mut core, core_dev, None, id)
                    .map_err(fault)?;
            }
            core_ids.push(core_dev);
            sim_of_core.insert(core_dev.raw(), id);
            devices.push(PriDevice::new(f.config));
        }
        Ok(ProducerSide {
            devices,
            iommu: Iommu::new(tables, scenario.iommu.prq_depth),
            core,
            core_ids,
            sim_of_core,
            link,
            ledger: Ledger::new(),
            split,
            consumer_gone_answers: 0,
            inject: scenario.inject,
            rng: rand::SeedableRng::seed_from_u64(scenario.seed ^ 0x1e0f),
        })
    }

    /// Idle steps spun through before the producer yields its core.
    const IDLE_STEPS_BEFORE_YIELD: u32 = 256;

    fn run(
        mut self,
        scenario: &Scenario,
        progress: &Progress,
        consumer_gone: &dyn Fn() -> bool,
        stop: &dyn Fn() -> bool,
    ) -> Result<ProducerOutcome, SimError> {
        let start = now_ns();
        let issue_ns = scenario.duration_ms * 1_000_000;
        let drain_ns = scenario.drain_timeout_ms * 1_000_000;
        let mut stops = scenario.stops.clone();
        stops.sort_by_key(|s| s.at_ms);
        let mut next_stop = 0;
        let mut resets = scenario.resets.clone();
        let mut issuing = true;
        let mut issue_end = start;
        let mut report_at: HashMap<(FunctionId, u32), u64> = HashMap::new();
        let mut marks: Vec<ProducerMark> = Vec::new();
        let mut occupancy: Vec<f64> = vec![0.0; self.devices.len()];
        let mut steps: u64 = 0;
        let mut gone_at: Option<u64> = None;
        let mut idle_steps = 0u32;
        let mut stopped = false;
        loop {
            let now = now_ns();
            let elapsed = now - start;
            // Asked once per step until it says stop; then the run drains as at its end.
            if issuing && !stopped && stop() {
                stopped = true;
            }
            if issuing && (stopped || elapsed >= issue_ns) {
                issuing = false;
                issue_end = now;
                progress.draining.store(true, Ordering::Relaxed);
                for d in &mut self.devices {
                    d.set_issuing(false);
                }
            }
            while let Some(s) = stops
                .get(next_stop)
                .filter(|s| s.at_ms * 1_000_000 <= elapsed)
            {
                if let Some(d) = (s.device as usize)
                    .checked_sub(1)
                    .and_then(|i| self.devices.get_mut(i))
                {
                    d.stop_pasid(s.pasid, s.mode, now, &mut self.iommu, &mut self.ledger);
                }
                next_stop += 1;
            }
            // A reset waits until the function has no group in flight.
            resets.retain(|r| {
                if r.at_ms * 1_000_000 > elapsed {
                    return true;
                }
                match (r.device as usize)
                    .checked_sub(1)
                    .and_then(|i| self.devices.get_mut(i))
                {
                    Some(d) => !d.reset(&mut self.ledger),
                    None => false,
                }
            });
            let offered = self.iommu.stats().prq.queued + self.iommu.stats().prq.dropped;
            for d in &mut self.devices {
                d.step(now, &mut self.iommu, &mut self.ledger);
            }
            let stats = self.iommu.stats();
            let mut worked = stats.prq.queued + stats.prq.dropped != offered;
            // Each phase reads the clock afresh: a stage's time is the time it really took.
            let t = now_ns();
            for (dev, resp) in self.iommu.take_auto_responses() {
                self.deliver(dev, resp, t, &mut report_at, &mut marks);
            }
            let mut feed = CoreFeed {
                core: &mut self.core,
                core_ids: &self.core_ids,
                report_at: &mut report_at,
                now: now_ns(),
                unknown: 0,
            };
            worked |= self.iommu.service(scenario.iommu.service_batch, &mut feed) > 0;
            worked |= self.pump_responses() > 0;
            worked |= self.deliver_mail(&mut report_at, &mut marks) > 0;
            // After a run of steps in which nothing moved, let the consumer have the core if it
            // shares ours; a short run is spun through, so a busy path never waits a time slice.
            idle_steps = if worked { 0 } else { idle_steps + 1 };
            if idle_steps >= Self::IDLE_STEPS_BEFORE_YIELD {
                std::thread::yield_now();
            }
            steps += 1;
            for (o, d) in occupancy.iter_mut().zip(&self.devices) {
                *o += f64::from(d.outstanding()) / f64::from(d.stats().opra.max(1));
            }
            if steps % 64 == 0 {
                progress
                    .elapsed_ms
                    .store(elapsed / 1_000_000, Ordering::Relaxed);
                progress.groups.store(
                    self.devices.iter().map(|d| d.stats().groups).sum(),
                    Ordering::Relaxed,
                );
                progress.items.store(
                    self.devices.iter().map(|d| d.stats().items_completed).sum(),
                    Ordering::Relaxed,
                );
            }
            if !issuing {
                let idle = self.devices.iter().all(PriDevice::is_idle) && self.iommu.queued() == 0;
                if idle || elapsed >= issue_ns + drain_ns {
                    break;
                }
                // A consumer that went away leaves its groups to the queue's close(): give it
                // a moment to answer what is in flight, then close.
                if consumer_gone() {
                    let t = *gone_at.get_or_insert(now);
                    if now - t > 100_000_000 {
                        break;
                    }
                }
            }
        }
        // Close the queue: groups still pending are answered INVALID (ConsumerGone), and those
        // answers reach their devices through the core.
        let closed = self.link.close(&mut self.core);
        self.consumer_gone_answers += closed.consumer_gone as u64;
        let _ = self.deliver_mail(&mut report_at, &mut marks);
        let end = now_ns();
        if issuing {
            issue_end = end;
        }
        let mut outcome = self.outcome(scenario, start, issue_end, end, steps, &occupancy, marks);
        outcome.partial = stopped;
        Ok(outcome)
    }

    /// Delivers the responses the core sent to their devices; returns how many there were.
    fn deliver_mail(
        &mut self,
        report_at: &mut HashMap<(FunctionId, u32), u64>,
        marks: &mut Vec<ProducerMark>,
    ) -> usize {
        let mail = std::mem::take(&mut self.core.sink_mut().0);
        let n = mail.len();
        if mail.is_empty() {
            return 0;
        }
        let now = now_ns();
        for (core_dev, r) in mail {
            let Some(&dev) = self.sim_of_core.get(&core_dev.raw()) else {
                continue;
            };
            let resp = PrgResponse {
                prgi: (r.grpid & 0x1ff) as u16,
                pasid: r.pasid,
                code: r.code,
            };
            let (dup, drop) = (self.inject.duplicate_responses, self.inject.drop_responses);
            if drop > 0.0 && self.rng.random_bool(drop) {
                continue;
            }
            self.deliver(dev, resp, now, report_at, marks);
            if dup > 0.0 && self.rng.random_bool(dup) {
                self.deliver(dev, resp, now, report_at, marks);
            }
        }
        n
    }

    fn deliver(
        &mut self,
        dev: FunctionId,
        resp: PrgResponse,
        now: u64,
        report_at: &mut HashMap<(FunctionId, u32), u64>,
        marks: &mut Vec<ProducerMark>,
    ) {
        let Some(d) = (dev as usize)
            .checked_sub(1)
            .and_then(|i| self.devices.get_mut(i))
        else {
            return;
        };
        if let Some(done) = d.page_response(resp, &mut self.ledger) {
            marks.push(ProducerMark {
                dev,
                grpid: u32::from(done.prgi),
                sent_ns: done.sent_ns,
                report_ns: report_at.remove(&(dev, u32::from(done.prgi))),
                retry_ns: now,
            });
        }
    }

    /// Judges the consumer's waiting responses and hands them to the core; returns how many
    /// the queue judged. A consumer found gone detaches every handler: the core answers INVALID.
    fn pump_responses(&mut self) -> usize {
        let mut total = 0;
        loop {
            let p = self.link.pump(&mut self.core);
            self.consumer_gone_answers += p.consumer_gone as u64;
            if p.judged == 0 || p.detached {
                return total + p.judged;
            }
            total += p.judged;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn outcome(
        self,
        scenario: &Scenario,
        start: u64,
        issue_end: u64,
        end: u64,
        steps: u64,
        occupancy: &[f64],
        marks: Vec<ProducerMark>,
    ) -> ProducerOutcome {
        let (ps, depth) = self
            .link
            .with_producer(|p| (p.stats(), p.agreement().entries));
        let lost = self.link.lost();
        let mut core = CoreReport::default();
        let mut auto = [0u64; AutoReason::COUNT];
        for &c in &self.core_ids {
            if let Ok(k) = self.core.counters(c) {
                core.reported += k.reported;
                core.groups += k.groups;
                core.delivered += k.delivered;
                core.consumer_responses += k.consumer_responses;
                core.rejected += k.rejected_total();
                core.failure_as_invalid += k.failure_as_invalid;
                core.discarded_partials += k.discarded_partials;
                core.dropped_partials += k.dropped_partials;
                for r in AutoReason::ALL {
                    auto[r as usize] += k.auto(r);
                }
            }
        }
        core.auto = AutoReason::ALL
            .iter()
            .map(|&r| (snake_case(&format!("{r:?}")), auto[r as usize]))
            .collect();
        let queue = QueueReport {
            depth,
            delivered: ps.delivered,
            lost_records: ps.lost,
            lost_groups: lost.total(),
            lost_by_reason: lost
                .nonzero()
                .map(|(r, n)| (snake_case(&format!("{r:?}")), n))
                .collect(),
            held_back: ps.held_back,
            backlog_high_water: ps.backlog_high_water,
            accepted: ps.accepted,
            rejected: ps.rejected,
            answered_consumer_gone: self.consumer_gone_answers,
            pending_high_water: self.link.pending_high_water(),
        };
        let devices = self
            .devices
            .iter()
            .zip(occupancy)
            .map(|(d, o)| DeviceReport {
                stats: d.stats().clone(),
                mean_occupancy: if steps == 0 { 0.0 } else { o / steps as f64 },
            })
            .collect();
        ProducerOutcome {
            scenario: scenario.name.clone(),
            split: self.split,
            wall_s: (end - start) as f64 / 1e9,
            issue_s: (issue_end - start) as f64 / 1e9,
            steps,
            devices,
            iommu: self.iommu.stats(),
            queue,
            core,
            ledger: self.ledger.finish(),
            marks,
            partial: false,
        }
    }
}

/// A Rust variant name in snake case (`OverAllocation` → `over_allocation`), as the report's
/// keys are spelled.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl ProducerOutcome {
    /// Joins the consumer side's figures and produces the report.
    pub fn finish(
        &mut self,
        mut consumer: ResolverStats,
        marks: &[ConsumerMark],
    ) -> Result<RunReport, SimError> {
        let guest = consumer.guest.take();
        let mut t = Totals::default();
        let mut pri_disabled = Vec::new();
        for d in &self.devices {
            let s = &d.stats;
            t.faults += s.page_requests;
            t.groups += s.groups;
            t.refaults += s.refaults;
            t.items_started += s.items_started;
            t.items_completed += s.items_completed;
            t.items_invalid += s.items_invalid;
            t.items_pri_disabled += s.items_pri_disabled;
            t.items_abandoned += s.items_abandoned;
            t.success += s.success;
            t.invalid += s.invalid;
            t.failure += s.failure;
            t.stop_markers += s.stop_markers;
            t.pasids_stopped += s.pasids_stopped;
            t.resets += s.resets;
            if s.pri_disabled {
                pri_disabled.push(s.id);
            }
        }
        let wall = self.wall_s.max(1e-9);
        Ok(RunReport {
            scenario: self.scenario.clone(),
            split: self.split,
            partial: self.partial,
            wall_s: self.wall_s,
            issue_s: self.issue_s,
            steps: self.steps,
            throughput: Throughput {
                faults_per_s: t.faults as f64 / wall,
                groups_per_s: t.groups as f64 / wall,
                items_per_s: t.items_completed as f64 / wall,
            },
            totals: t,
            latency: join(&self.marks, marks),
            iommu: self.iommu,
            queue: self.queue.clone(),
            core: self.core.clone(),
            consumer,
            devices: self.devices.clone(),
            pri_disabled,
            ledger: self.ledger.clone(),
            guest,
        })
    }
}

/// Serves a queue consumer in this process until the producer side has closed the queue and
/// nothing is left to read: the consumer side of a split run. Returns its figures and marks.
pub fn run_consumer_side(
    scenario: &Scenario,
    consumer: &mut iopf_queue::Consumer,
) -> Result<(ResolverStats, Vec<ConsumerMark>), SimError> {
    /// The consumer process cannot reach the producer's page tables: its SUCCESS stands for
    /// "mapped", and the producer side maps the group's pages when it accepts it.
    #[derive(Clone, Copy)]
    struct MappedByProducer;
    impl crate::resolver::Mapper for MappedByProducer {
        fn map(
            &self,
            _dev: FunctionId,
            _pasid: u32,
            _iova: u64,
            _perm: iopf_abi::Perm,
        ) -> Result<(), SimError> {
            Ok(())
        }
    }
    if let Some(guest) = &scenario.guest {
        let done = |c: &iopf_queue::Consumer| c.producer_gone();
        let (mut stats, marks) =
            crate::nested::serve(scenario, guest, consumer, MappedByProducer, now_ns(), &done)?;
        stats.lost_signalled = consumer.stats().lost;
        return Ok((stats, marks));
    }
    let mut r = Resolver::new(scenario.resolver, scenario.seed, MappedByProducer);
    r.serve(consumer, &|c: &iopf_queue::Consumer| c.producer_gone())?;
    let (mut stats, marks) = r.finish();
    stats.lost_signalled = consumer.stats().lost;
    Ok((stats, marks))
}
