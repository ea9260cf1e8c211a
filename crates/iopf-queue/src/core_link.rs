//! The glue between the fault core (`iopf-core`) and a fault queue: the queue's [`Producer`] as
//! the core's [`GroupHandler`] for any number of devices (and per-(device, PASID) handlers), and
//! the pump that carries validated responses back into [`FaultCore::respond`].
//!
//! ```text
//!  FaultCore::report ─deliver(Group)─▶ LinkHandler[slot] ─push_named(cookie)─▶ ring / backlog ─▶ consumer
//!      ▲  (lost past the backlog: Refusal → core answers, never FAILURE)                    │
//!      └─ FaultCore::respond(handler[slot], cookie) ◀─ CoreLink::pump ◀─ drain_responses ◀──────┘
//!         consumer gone: CoreLink::pump detaches every handler → core answers INVALID
//!         core answers a group itself: withdraw(cookie) → the queue forgets it (one lookup)
//!         core answers a group at once (over allocation, storm): missed() → loss announced
//!  FaultCore::report(unrecoverable) ─unrecoverable()─▶ LinkHandler ─push_unrecoverable─▶ …
//! ```
//!
//! One queue may serve many devices, as many `IOMMU_HWPT_ALLOC`s may name one iommufd fault
//! object: each [`CoreLink::attach_as`] adds one handler, numbered by its slot in the link. A
//! group keeps the fault core's cookie all the way to the consumer (the producer names groups by
//! upstream cookies, [`Producer::name_by_upstream`]); the queue's tag for it is the slot (high 32
//! bits) and the cookie (low 32 bits), so an answer names the core's handler and its group
//! directly, and the core judges it once more (its own exactly-once rule) and restores private
//! data from its own copy.
//!
//! **Backpressure.** A group that does not fit the ring waits in the producer's backlog, whose
//! bound the link sets to the sum of its devices' Outstanding Page Request Allocations: the core
//! never lets a device have more requests in flight than its allocation, so the backlog never
//! overflows and no group is answered for lack of room. Past it (only when misconfigured) the
//! group is lost, counted by reason ([`LossCounts`]) and refused, and the core answers it by the
//! device's overflow policy (SUCCESS, retry, by default; never Response Failure). A group the
//! core answered without delivering (over allocation, storm limit, full table) is announced to
//! the consumer at once as a loss with its reason. A teardown (detach, replace, device removal,
//! PASID flush, age limit) withdraws its groups from the queue, so that a late answer gets a
//! rejection as its verdict.
//!
//! Unrecoverable faults are passed on as records when the consumer agreed
//! [`Features::UNRECOVERABLE`](iopf_abi::Features::UNRECOVERABLE), and dropped otherwise. A
//! [`LinkObserver`] sees each delivered group, each withdrawn one and each answer before the core
//! judges it (e.g. to map a group's pages when its SUCCESS arrives).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use iopf_abi::Unrecoverable;
use iopf_core::{
    AutoReason, Cookie, CoreError, DeviceId, FaultCore, GroupHandler, GroupRef, HandlerId,
    MissedGroup, Refusal, Response, ResponseSink,
};

use crate::error::{LossCounts, LossReason};
use crate::producer::{Answer, AnsweredBy, Producer, TaggedGroup};
use crate::readiness::Readiness;
use crate::QueueError;

/// What became of the unrecoverable faults the core passed to the link's handlers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnrecoverableCounts {
    /// Pushed into the fault ring as records.
    pub delivered: u64,
    /// Dropped because the consumer did not agree
    /// [`Features::UNRECOVERABLE`](iopf_abi::Features::UNRECOVERABLE).
    pub not_agreed: u64,
    /// Lost (full ring, consumer gone): counted and announced by the queue.
    pub lost: u64,
}

/// Watches the groups going through a [`CoreLink`]. Every method runs with the link's producer
/// locked, on the thread that reports into or pumps the core; `ticket` is the group's tag in the
/// queue (unique among the link's pending groups). All methods default to doing nothing. An
/// observer must not call into the fault core (report, detach, remove a device): the core calls
/// back into the link's handlers, which take the same lock, and the thread deadlocks.
///
/// `delivered` means the queue took the group: handed to the consumer, or held in the backlog
/// until the ring has room.
pub trait LinkObserver: Send {
    /// `group` was pushed into the fault ring as `ticket`.
    fn delivered(&mut self, ticket: u64, group: &iopf_core::Group<'_>) {
        let _ = (ticket, group);
    }
    /// The core answered `ticket` itself; no answer from the consumer will be passed on.
    fn withdrawn(&mut self, ticket: u64) {
        let _ = ticket;
    }
    /// The link took `answer` (its `tag` is the ticket) and the core judged it: `at_device`
    /// says whether this answer is the one the device receives. It is false when the core
    /// refused it (the group was already answered on detach, replace, removal, flush or age
    /// limit) and for [`AnsweredBy::ConsumerGone`] answers, which the core replaces with its own
    /// INVALID when the link detaches. Act on an answer's code (map pages on SUCCESS, say) only
    /// when `at_device` is true. Called for every answer the link takes.
    fn answered(&mut self, answer: &Answer, at_device: bool) {
        let _ = (answer, at_device);
    }
}

/// What the core's handlers and the link share: the producer and the link's own figures.
struct LinkState {
    producer: Producer,
    /// Groups (not records) the link refused or the core answered without delivery, by reason.
    lost: LossCounts,
    pending_high_water: usize,
    /// The sum of the attached devices' allocations: the backlog's bound.
    allocations: u64,
    unrecoverable: UnrecoverableCounts,
    observer: Option<Box<dyn LinkObserver>>,
}

impl std::fmt::Debug for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkState")
            .field("producer", &self.producer)
            .field("lost", &self.lost)
            .field("pending_high_water", &self.pending_high_water)
            .field("unrecoverable", &self.unrecoverable)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

/// The link's state shared between the core (which owns the handlers) and the [`CoreLink`].
type Shared = Arc<Mutex<LinkState>>;

fn lock(p: &Shared) -> MutexGuard<'_, LinkState> {
    // A panic while the lock was held cannot leave the producer half-updated in a way that
    // matters more than losing the queue; keep serving.
    p.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The queue's tag for the core's `cookie` delivered to the handler in `slot`.
fn ticket(slot: u32, cookie: Cookie) -> u64 {
    (u64::from(slot) << 32) | u64::from(cookie.raw())
}

/// The loss reason the queue announces for a group the core answered at once, for `reason`.
fn loss_reason(reason: AutoReason) -> LossReason {
    match reason {
        AutoReason::OverAllocation => LossReason::OverAllocation,
        AutoReason::Storm => LossReason::Storm,
        _ => LossReason::CoreFull,
    }
}

/// The fault core's handler for one device (or one (device, PASID)) on a shared queue: delivers
/// each group into the fault ring, or its backlog.
#[derive(Debug)]
pub struct LinkHandler {
    state: Shared,
    slot: u32,
    dev_id: u32,
    /// The device's allocation, counted in the link's backlog bound while this handler lives.
    allocation: u64,
}

impl Drop for LinkHandler {
    /// The core dropped the handler (detach, replace, device removal, or a failed attach): its
    /// device's allocation leaves the backlog's bound.
    fn drop(&mut self) {
        let mut st = lock(&self.state);
        st.allocations = st.allocations.saturating_sub(self.allocation);
        let bound = st.allocations;
        st.producer.set_max_backlog(bound);
    }
}

impl GroupHandler for LinkHandler {
    /// Pushes the group under the core's cookie (tag = slot and cookie, dev_id = the id the
    /// device was attached under): into the ring, or the backlog when the ring has no room now. A
    /// group that cannot be taken at all (past the backlog, larger than the ring, consumer gone)
    /// is counted lost by the queue and the link, announced to the consumer, and refused here so
    /// the core answers it at once.
    fn deliver(&mut self, group: &iopf_core::Group<'_>) -> Result<(), Refusal> {
        let mut st = lock(&self.state);
        let tag = ticket(self.slot, group.cookie);
        let g = TaggedGroup {
            tag,
            dev_id: self.dev_id,
            requests: group.requests,
        };
        match st.producer.push_named(group.cookie.raw(), &g) {
            Ok(()) => {
                let pending = st.producer.pending_groups();
                st.pending_high_water = st.pending_high_water.max(pending);
                if let Some(o) = st.observer.as_mut() {
                    o.delivered(tag, group);
                }
                Ok(())
            }
            Err(QueueError::Lost(reason)) => {
                st.lost.count(reason, 1);
                Err(match reason {
                    LossReason::ConsumerGone => Refusal::ShuttingDown,
                    LossReason::TooLarge => Refusal::TooLarge,
                    _ => Refusal::QueueFull,
                })
            }
            // A malformed group: the core never delivers one; refuse rather than strand it.
            Err(_) => Err(Refusal::TooLarge),
        }
    }

    /// The core answers the group itself: the queue forgets it (one lookup, by the core's
    /// cookie), and a later response from the consumer is rejected with a verdict.
    fn withdraw(&mut self, cookie: Cookie) {
        let mut st = lock(&self.state);
        if st.producer.withdraw(cookie.raw()) {
            let tag = ticket(self.slot, cookie);
            if let Some(o) = st.observer.as_mut() {
                o.withdrawn(tag);
            }
        }
    }

    /// The core answered a group routed here without delivering it: the queue counts its
    /// requests lost for the reason and announces it at once.
    fn missed(&mut self, group: &MissedGroup) {
        let mut st = lock(&self.state);
        let reason = loss_reason(group.reason);
        st.lost.count(reason, 1);
        st.producer.report_loss(u64::from(group.requests), reason);
    }

    /// Pushes the fault as an unrecoverable fault record (dev_id = the id the device was attached
    /// under). It needs no answer, so every outcome is final here: not agreed by the consumer, it
    /// is dropped; lost (full ring, consumer gone), the queue counts and announces it. The link
    /// counts each outcome ([`CoreLink::unrecoverable`]).
    fn unrecoverable(&mut self, _device: DeviceId, fault: &Unrecoverable) {
        let mut st = lock(&self.state);
        match st.producer.push_unrecoverable(self.dev_id, fault) {
            Ok(_) => st.unrecoverable.delivered += 1,
            Err(QueueError::NotAgreed(_)) => st.unrecoverable.not_agreed += 1,
            Err(_) => st.unrecoverable.lost += 1,
        }
    }
}

/// What one [`CoreLink::pump`] (or [`CoreLink::close`]) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pumped {
    /// Responses the queue judged (accepted or rejected with a verdict).
    pub judged: usize,
    /// Responses the core accepted and sent to the device.
    pub answered: usize,
    /// Responses the queue accepted but the core refused (the group was answered meanwhile).
    pub refused_by_core: usize,
    /// Groups the queue answered INVALID because the consumer is gone
    /// ([`AnsweredBy::ConsumerGone`]); the core answers them when it detaches their handlers.
    pub consumer_gone: usize,
    /// The consumer is gone: every handler was detached, and the core answered INVALID every
    /// group it still owed.
    pub detached: bool,
}

/// One queue attached to the fault core for any number of devices: owns the link's half of the
/// producer.
///
/// Threads: the link is `Send` (move it to the thread that pumps), and its handlers, owned by
/// the core, share the producer with it behind one lock that no wait holds: one thread may
/// [`wait`](CoreLink::wait) (or sleep on the link's descriptor, [`AsFd`]) while another reports
/// into the core, and neither blocks the other beyond the few instructions of a push or a pump.
/// The core itself is not shared: the thread that pumps needs `&mut FaultCore`, so a VMM that
/// reports and pumps on different threads puts the core behind its own lock and takes it only
/// to report or to pump, never across a wait.
#[derive(Debug)]
pub struct CoreLink {
    state: Shared,
    /// A second descriptor for the producer's: what an event loop sleeps on.
    poll_fd: OwnedFd,
    /// The core's handler for each slot (the slot is the index).
    handlers: Vec<HandlerId>,
    detached: bool,
    answers: Vec<Answer>,
    /// For each of `answers`, whether the core passed it on to the device.
    at_device: Vec<bool>,
}

impl CoreLink {
    /// A link over `producer` with no handler yet: [`CoreLink::attach_device`] adds them. The
    /// producer must have no pending group: it names groups by the core's cookies from now on,
    /// and its backlog is bounded by the attached devices' allocations (none yet). Errors:
    /// [`QueueError::Inconsistent`] for a producer with pending groups.
    pub fn new(mut producer: Producer) -> Result<CoreLink, QueueError> {
        producer.name_by_upstream()?;
        producer.set_max_backlog(0);
        let poll_fd = producer.poll_fd_dup()?;
        Ok(CoreLink {
            poll_fd,
            state: Arc::new(Mutex::new(LinkState {
                producer,
                lost: LossCounts::default(),
                pending_high_water: 0,
                allocations: 0,
                unrecoverable: UnrecoverableCounts::default(),
                observer: None,
            })),
            handlers: Vec::new(),
            detached: false,
            answers: Vec::new(),
            at_device: Vec::new(),
        })
    }

    /// The one-device shorthand: [`CoreLink::new`] then [`CoreLink::attach_device`] for
    /// `device` and `pasid`. Errors: as [`CoreLink::attach_device`].
    pub fn attach<S: ResponseSink>(
        core: &mut FaultCore<S>,
        device: DeviceId,
        pasid: Option<u32>,
        producer: Producer,
    ) -> Result<CoreLink, CoreError> {
        let mut link = CoreLink::new(producer)
            .map_err(|_| CoreError::BadConfig("the queue's producer has pending groups"))?;
        link.attach_device(core, device, pasid)?;
        Ok(link)
    }

    /// Attaches this queue to `core` as the handler of `device` (`pasid: None`: device-wide),
    /// naming the device in records by the core's id for it. Returns the core's handler id.
    /// Errors: as [`CoreLink::attach_as`].
    pub fn attach_device<S: ResponseSink>(
        &mut self,
        core: &mut FaultCore<S>,
        device: DeviceId,
        pasid: Option<u32>,
    ) -> Result<HandlerId, CoreError> {
        self.attach_as(core, device, pasid, device.raw())
    }

    /// Attaches this queue to `core` as the handler of `device` (`pasid: None`: device-wide),
    /// naming the device `dev_id` in the records it delivers (iommufd: the device's object id).
    /// The consumer's agreement is enforced by the queue; towards the core the link always names
    /// groups by the core's cookie, so the handler is attached with the consumer's features plus
    /// `COOKIE_RESPONSE`. The device's Outstanding Page Request Allocation is added to the
    /// backlog's bound. Errors: the core's ([`CoreError::HandlerBusy`], unknown device, ...),
    /// [`CoreError::BadConfig`] when the offer stated no largest group
    /// ([`crate::Offer::with_max_group`]) and the device's allocation (the largest group it may
    /// send) exceeds the ring's entries, or once the consumer is gone and the link detached
    /// every handler, [`CoreError::TableFull`] past `u32::MAX` handlers.
    pub fn attach_as<S: ResponseSink>(
        &mut self,
        core: &mut FaultCore<S>,
        device: DeviceId,
        pasid: Option<u32>,
        dev_id: u32,
    ) -> Result<HandlerId, CoreError> {
        if self.detached {
            return Err(CoreError::BadConfig("the queue's consumer is gone"));
        }
        let agreement = *lock(&self.state).producer.agreement();
        let agreed = agreement.features | iopf_abi::Features::COOKIE_RESPONSE;
        let allocation = core.caps(device)?.outstanding_allocation;
        if agreement.max_group == 0 && allocation > agreement.entries {
            // Nobody stated how large the groups may be: the device's allocation is the bound,
            // and a group the ring can never hold would be answered at fault time instead.
            return Err(CoreError::BadConfig(
                "the ring is smaller than the device's Outstanding Page Request Allocation, the \
                 largest group it may send: ask for more entries, or state the largest group in \
                 the offer (Offer::with_max_group)",
            ));
        }
        let allocation = u64::from(allocation);
        let slot = u32::try_from(self.handlers.len())
            .map_err(|_| CoreError::TableFull("queue link handlers"))?;
        {
            // Counted before the handler exists: its drop, even on a failed attach, uncounts it.
            let mut st = lock(&self.state);
            st.allocations = st.allocations.saturating_add(allocation);
            let bound = st.allocations;
            st.producer.set_max_backlog(bound);
        }
        let handler = LinkHandler {
            state: self.state.clone(),
            slot,
            dev_id,
            allocation,
        };
        let id = core.attach(device, pasid, Box::new(handler), agreed)?;
        self.handlers.push(id);
        Ok(id)
    }

    /// The core's id of the first handler attached (the only one for a link made by
    /// [`CoreLink::attach`]); `None` before any.
    pub fn handler(&self) -> Option<HandlerId> {
        self.handlers.first().copied()
    }

    /// The core's ids of every handler this link attached, in attach order.
    pub fn handlers(&self) -> &[HandlerId] {
        &self.handlers
    }

    /// Sets the observer told of every delivered, withdrawn and answered group from now on.
    pub fn set_observer(&mut self, observer: Box<dyn LinkObserver>) {
        lock(&self.state).observer = Some(observer);
    }

    /// Groups the queue refused, or the core answered without delivering them, so far, by
    /// reason (the producer's [`crate::ProducerStats::lost_by`] counts their records).
    pub fn lost(&self) -> LossCounts {
        lock(&self.state).lost
    }

    /// What became of the unrecoverable faults passed to this link so far.
    pub fn unrecoverable(&self) -> UnrecoverableCounts {
        lock(&self.state).unrecoverable
    }

    /// The most groups ever pending in the queue at once (after a delivery).
    pub fn pending_high_water(&self) -> usize {
        lock(&self.state).pending_high_water
    }

    /// Runs `f` on the producer (statistics, agreement), with the link's lock held: `f` must not
    /// call into the fault core (report, detach, remove a device), whose calls back into the
    /// link's handlers (and a handler's drop) take the same lock and would deadlock.
    pub fn with_producer<T>(&self, f: impl FnOnce(&mut Producer) -> T) -> T {
        f(&mut lock(&self.state).producer)
    }

    /// Waits until responses are waiting, held-back groups may move, the consumer is gone, or
    /// `timeout` passes; returns whether there is something to [`pump`](CoreLink::pump). The
    /// wait holds no lock: the fault path ([`FaultCore::report`] into this link's handlers) runs
    /// on other threads meanwhile. Returns `Ok(false)` at once once the link has detached.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool, QueueError> {
        if self.detached {
            return Ok(false);
        }
        let wait = lock(&self.state).producer.response_wait();
        wait.wait(timeout)
    }

    /// What [`pump`](CoreLink::pump) has to do now ([`Producer::ready`]): empty once detached.
    pub fn ready(&self) -> Readiness {
        if self.detached {
            return Readiness::empty();
        }
        lock(&self.state).producer.ready()
    }

    /// Prepares to sleep on the link's descriptor ([`AsFd`]): [`Producer::arm`] under the lock
    /// (which the sleep then does not hold). `want` is usually
    /// `Readiness::RESPONSES | Readiness::FAULT_ROOM`. Empty once detached (nothing will ring).
    pub fn arm(&self, want: Readiness) -> Result<Readiness, QueueError> {
        if self.detached {
            return Ok(Readiness::empty());
        }
        lock(&self.state).producer.arm(want)
    }

    /// Judges the responses waiting in the queue (at most the producer's `max_per_wake`) and
    /// hands the accepted ones to [`FaultCore::respond`], each to the handler its group was
    /// delivered through. When the consumer is gone (checked once no response is waiting), it
    /// has taken the responses it had already written, and detaches every handler: the core
    /// answers every group still outstanding with them INVALID
    /// (`iommufd_auto_response_faults()`). After that, pumping does nothing.
    pub fn pump<S: ResponseSink>(&mut self, core: &mut FaultCore<S>) -> Pumped {
        if self.detached {
            return Pumped::default();
        }
        let gone = {
            let mut st = lock(&self.state);
            let judged = st.producer.drain_responses(&mut self.answers);
            // Only once the ring is empty: every response a dead consumer wrote is taken first,
            // and a busy queue does not ask (for a socket consumer, a system call) each time.
            let gone = judged == 0 && st.producer.consumer_gone();
            if gone {
                st.producer.close(&mut self.answers);
            }
            (judged, gone)
        };
        let (judged, gone) = gone;
        let mut done = self.finish(core, gone);
        done.judged = judged;
        done
    }

    /// Closes the queue (the producer side is done, or shutting down): takes the responses
    /// already judged, has the queue answer every group still pending INVALID
    /// ([`Producer::close`]) and detaches every handler, so the core answers INVALID every group
    /// it still owed. After that, pumping does nothing.
    pub fn close<S: ResponseSink>(&mut self, core: &mut FaultCore<S>) -> Pumped {
        if self.detached {
            return Pumped::default();
        }
        let judged = {
            let mut st = lock(&self.state);
            let judged = st.producer.drain_responses(&mut self.answers);
            st.producer.close(&mut self.answers);
            judged
        };
        let mut done = self.finish(core, true);
        done.judged = judged;
        done
    }

    /// What the consumer did to be dropped, if it broke the protocol
    /// ([`Producer::consumer_misbehaviour`]), as a message naming it.
    pub fn consumer_misbehaviour(&self) -> Option<String> {
        lock(&self.state)
            .producer
            .consumer_misbehaviour()
            .map(|e| e.to_string())
    }

    /// Hands the taken answers to the core; with `detach`, detaches every handler.
    fn finish<S: ResponseSink>(&mut self, core: &mut FaultCore<S>, detach: bool) -> Pumped {
        let mut done = Pumped::default();
        self.at_device.clear();
        for a in &self.answers {
            let at_device = if a.by == AnsweredBy::ConsumerGone {
                done.consumer_gone += 1;
                false // the core's detach answers these, below
            } else if let Some(&handler) = self.handlers.get((a.tag >> 32) as usize) {
                let r = Response {
                    group: GroupRef::Cookie(Cookie::from_raw(a.tag as u32)),
                    code: a.code.raw(),
                    private_data: None,
                };
                match core.respond(handler, &r) {
                    Ok(_) => {
                        done.answered += 1;
                        true
                    }
                    Err(_) => {
                        done.refused_by_core += 1;
                        false
                    }
                }
            } else {
                done.refused_by_core += 1; // not a tag this link made
                false
            };
            self.at_device.push(at_device);
        }
        // The observer hears each answer after the core judged it (and outside the core's
        // calls, which may take the same lock through a handler).
        if !self.answers.is_empty() {
            let mut st = lock(&self.state);
            if let Some(o) = st.observer.as_mut() {
                for (a, &at_device) in self.answers.iter().zip(&self.at_device) {
                    o.answered(a, at_device);
                }
            }
        }
        self.answers.clear();
        if detach {
            // Detach answers INVALID for every group the core still holds for each handler.
            for &h in &self.handlers {
                let _ = core.detach(h);
            }
            self.detached = true;
            done.detached = true;
        }
        done
    }
}

impl AsFd for CoreLink {
    /// The producer's descriptor ([`Producer`]'s `AsFd`): sleep on it after
    /// [`CoreLink::arm`], then [`pump`](CoreLink::pump). See [`crate::readiness`].
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.poll_fd.as_fd()
    }
}

impl std::os::fd::AsRawFd for CoreLink {
    /// The [`AsFd`] descriptor's number, for reactors that take raw descriptors (tokio's
    /// `AsyncFd`, mio's `SourceFd`). Owned by the link: do not close it.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.as_fd().as_raw_fd()
    }
}
