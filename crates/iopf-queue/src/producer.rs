//! The producing end: the fault core's side of the queue.
//!
//! The producer never blocks the fault path and never trusts the region: it keeps its own indices
//! privately and only *reads* the consumer's (`fault_tail`, `verdict_tail`), each checked to lie
//! between the last valid value and the producer's own index; an impossible value is counted as a
//! violation and treated as "no progress". A response slot is taken only when its stamp names the
//! index the producer expects next (see [`crate::layout`]), is copied out before it is judged, and
//! at most [`ProducerConfig::max_per_wake`] responses are handled per call.
//!
//! **Backpressure, not failure.** A group that does not fit the ring now (or would exceed the
//! consumer's pending limit, or, on a queue answered by grpid, shares its PRG index with a group
//! the consumer still holds) waits in a backlog and is delivered, in order, when room frees
//! ([`Producer::flush_backlog`], which [`Producer::drain_responses`] calls). The backlog is
//! bounded ([`ProducerConfig::max_backlog`], set by [`crate::CoreLink`] to the sum of its
//! devices' Outstanding Page Request Allocations, which the fault core never lets a device
//! exceed); only past it, or for a group that could never fit the ring, is a group lost:
//! counted by [`LossReason`], announced at once, and its owner answers it.
//!
//! The producer's groups are kept in the fault core's [`GroupTable`] (under the core's cookies
//! when a [`crate::CoreLink`] feeds it, [`Naming::Upstream`]) and every response is judged by
//! [`GroupTable::judge`]: the rules of the whole fault path, written once.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use iopf_abi::fault::PageRequestFlags;
use iopf_abi::{Features, PageRequest, ResponseCode, Unrecoverable};
use iopf_core::{Cookie, GroupFacts, GroupTable, Naming, Responder, Response, TableError};

use crate::error::{LossCounts, LossReason, Rejection};
use crate::handshake::chose_membarrier;
use crate::layout::{
    accept_tail, pack, stamp, StampAt, FLAG_CONSUMER_CLOSED, FLAG_CONSUMER_MEMBARRIER, HWPT_STAMP,
    IOMMU_FAULT_STAMP, PRODUCER_FLAG_MEMBARRIER, RESP_STAMP,
};
use crate::negotiate::{Agreement, RecordFormat};
use crate::peer::Link;
use crate::peer::PeerName;
use crate::readiness::{PollFd, Readiness};
use crate::record::{encode_fault, encode_lost, encode_unrecoverable, SlotWords};
use crate::response::{decode_packed, decode_slot, packed_in};
use crate::shared::{HeldStamp, Shared};
use crate::wake::{arm, publish_and_wake, wait_until, Doorbell, Publish};
use crate::QueueError;

/// Tunables of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerConfig {
    /// The most groups handed to the consumer and not yet answered; past it, new groups wait in
    /// the backlog until the consumer answers some.
    pub max_pending: usize,
    /// The most responses judged per [`Producer::drain_responses`] call.
    pub max_per_wake: usize,
    /// The most page requests held back in the backlog; past it, a group is lost
    /// ([`LossReason::BacklogFull`]). [`crate::CoreLink`] sets it to the sum of its devices'
    /// Outstanding Page Request Allocations (so that it is never reached).
    pub max_backlog: u64,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            max_pending: 4096,
            max_per_wake: 256,
            max_backlog: 4096,
        }
    }
}

/// A page request group handed to the producer: all its requests, the last with `LAST_PAGE`,
/// and the owner's names for it.
#[derive(Debug, Clone, Copy)]
pub struct TaggedGroup<'a> {
    /// The owner's name for the group (the fault core's cookie, say), returned in its [`Answer`].
    pub tag: u64,
    /// The device's id, delivered with every record.
    pub dev_id: u32,
    /// The requests, in arrival order.
    pub requests: &'a [PageRequest],
}

/// Who answered a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnsweredBy {
    /// The consumer's response, validated.
    Consumer,
    /// The consumer went away (or the producer was closed) with the group unanswered: INVALID.
    ConsumerGone,
}

/// What the producer keeps with each group besides its [`GroupFacts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Pushed {
    tag: u64,
    dev_id: u32,
    requests: u32,
    /// The group's backlog ticket while held back (0 for a group delivered at once): its entry in
    /// the backlog is the one with this ticket, so a withdrawn entry whose cookie the owner reused
    /// is never taken for the new group.
    ticket: u32,
}

/// A group's answer, for the owner to send to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The tag the group was pushed with.
    pub tag: u64,
    /// The cookie the queue gave it.
    pub cookie: u32,
    /// The device.
    pub dev_id: u32,
    /// The request's PASID, if it had one.
    pub pasid: Option<u32>,
    /// The PRG index.
    pub grpid: u32,
    /// The response code.
    pub code: ResponseCode,
    /// The LAST_PAGE request's private data, to go back to the IOMMU with the response. Always
    /// the producer's own copy: when the consumer echoes it, the echo was checked against it.
    pub private_data: Option<[u64; 2]>,
    /// Who answered.
    pub by: AnsweredBy,
}

/// Counters a producer keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerStats {
    /// Records pushed into the ring.
    pub delivered: u64,
    /// Records lost (not delivered).
    pub lost: u64,
    /// Records lost, by reason.
    pub lost_by: LossCounts,
    /// Groups that waited in the backlog before they were delivered (or answered otherwise).
    pub held_back: u64,
    /// The most page requests in the backlog at once.
    pub backlog_high_water: u64,
    /// Responses accepted.
    pub accepted: u64,
    /// Responses rejected.
    pub rejected: u64,
    /// Impossible indices the consumer wrote (ignored).
    pub violations: u64,
}

/// A run of lost records not yet announced by a loss record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unreported {
    first_seq: u64,
    count: u64,
    /// The run's reason, `None` once two reasons met in it.
    reason: Option<LossReason>,
}

/// The producing end of a fault queue. Owned by one thread at a time (`Send`, not `Sync`; share
/// it between threads through [`crate::CoreLink`], whose waits hold no lock).
///
/// In an event loop, sleep on its descriptor ([`AsFd`]) after [`Producer::arm`]: see
/// [`crate::readiness`].
///
/// Contract: every group pushed successfully (delivered at once or held in the backlog) ends up
/// in exactly one [`Answer`], from [`drain_responses`](Producer::drain_responses) or from
/// [`close`](Producer::close), unless its owner [`withdraw`](Producer::withdraw)s it; a group
/// whose push failed was never delivered, and its owner answers it. Call `close` before
/// dropping a producer with unanswered groups, or they are answered by nobody.
#[derive(Debug)]
pub struct Producer {
    shared: Shared,
    agreement: Agreement,
    config: ProducerConfig,
    fault_head: u64,
    /// The first unpublished fault slot's stamp, stored by [`Producer::publish`].
    unpublished: HeldStamp,
    cached_fault_tail: u64,
    resp_tail: u64,
    /// Responses judged (a slot may carry several): the id of the next one.
    judged: u64,
    verdict_head: u64,
    cached_verdict_tail: u64,
    next_seq: u64,
    unreported_loss: Option<Unreported>,
    /// Every group pushed and not answered: announced (in the ring, or read) or held back.
    groups: GroupTable<Pushed>,
    /// Held-back groups, oldest first: cookie, request count, ticket. A withdrawn one stays
    /// until the flush passes it or a compaction (once withdrawn entries outnumber live ones)
    /// drops it; its cookie may meanwhile name a newer group, told apart by the ticket.
    backlog: VecDeque<(Cookie, u32, u32)>,
    /// The next backlog ticket (never 0).
    next_ticket: u32,
    /// Their requests, in the same order.
    backlog_requests: VecDeque<PageRequest>,
    /// Requests of the held-back groups not withdrawn: what the backlog's bound counts.
    held_requests: u64,
    /// Withdrawn groups still in the backlog.
    withdrawn_held: usize,
    /// A group's requests on their way from the backlog to the ring.
    scratch: Vec<PageRequest>,
    fault_bell: Doorbell,
    resp_bell: Arc<Doorbell>,
    link: Link,
    /// What an event loop sleeps on.
    poll_fd: PollFd,
    closed: bool,
    /// This process chose the `membarrier` handshake (declared in the region's producer flags).
    membarrier: bool,
    /// Groups are held back: shared with every [`ResponseWait`] taken out of this producer, so
    /// that a wait begun on another thread before the first group was held back learns it.
    holding: Arc<AtomicBool>,
    /// Judging stopped for a full verdict ring, whose consumer tail was this: until the tail
    /// moves, a waiting response is not something to do (the consumer rings when it moves).
    verdict_blocked: Option<u64>,
    stats: ProducerStats,
    memfd: Option<OwnedFd>,
}

impl Producer {
    pub(crate) fn new(
        shared: Shared,
        agreement: Agreement,
        config: ProducerConfig,
        fault_bell: Doorbell,
        resp_bell: Doorbell,
        link: Link,
        memfd: Option<OwnedFd>,
    ) -> Result<Producer, QueueError> {
        let poll_fd = PollFd::new(resp_bell.fd(), link.socket_fd())?;
        shared.write_header(&agreement);
        let membarrier = chose_membarrier()?;
        if membarrier {
            shared
                .header()
                .producer_flags
                .store(PRODUCER_FLAG_MEMBARRIER, Ordering::Release);
        }
        Ok(Producer {
            groups: table(Naming::Own, &agreement),
            backlog: VecDeque::new(),
            backlog_requests: VecDeque::new(),
            next_ticket: 1,
            held_requests: 0,
            withdrawn_held: 0,
            scratch: Vec::new(),
            shared,
            agreement,
            config,
            fault_head: 0,
            unpublished: HeldStamp::default(),
            cached_fault_tail: 0,
            resp_tail: 0,
            judged: 0,
            verdict_head: 0,
            cached_verdict_tail: 0,
            next_seq: 0,
            unreported_loss: None,
            fault_bell,
            resp_bell: Arc::new(resp_bell),
            link,
            poll_fd,
            closed: false,
            membarrier,
            holding: Arc::new(AtomicBool::new(false)),
            verdict_blocked: None,
            stats: ProducerStats::default(),
            memfd,
        })
    }

    /// Links the producer to its consumer's socket (the handshake is done), and adds the socket
    /// to what an event loop sleeps on. Errors: a failed `epoll_ctl`.
    pub(crate) fn set_link(&mut self, link: Link) -> Result<(), QueueError> {
        self.poll_fd = PollFd::new(self.resp_bell.fd(), link.socket_fd())?;
        self.link = link;
        Ok(())
    }

    /// A second descriptor for what an event loop sleeps on (for [`crate::CoreLink`]).
    pub(crate) fn poll_fd_dup(&self) -> Result<OwnedFd, QueueError> {
        self.poll_fd
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| QueueError::os("dup", e))
    }

    pub(crate) fn memfd(&self) -> Option<&OwnedFd> {
        self.memfd.as_ref()
    }

    pub(crate) fn bells(&self) -> (&OwnedFd, &OwnedFd) {
        (self.fault_bell.fd(), self.resp_bell.fd())
    }

    /// What was agreed with the consumer.
    pub fn agreement(&self) -> &Agreement {
        &self.agreement
    }

    /// The counters.
    pub fn stats(&self) -> ProducerStats {
        self.stats
    }

    /// Groups pushed and not yet answered (handed to the consumer or held back).
    pub fn pending_groups(&self) -> usize {
        self.groups.len()
    }

    /// Links of the group table's lists and chains followed so far (see
    /// `iopf_core::GroupTable::links_walked`): withdrawing a group follows none.
    pub fn links_walked(&self) -> u64 {
        self.groups.links_walked()
    }

    /// Page requests waiting in the backlog (of groups not withdrawn).
    pub fn backlog_requests(&self) -> usize {
        self.held_requests as usize
    }

    /// Groups in the backlog, withdrawn ones it has not dropped yet included: at most the live
    /// ones plus as many withdrawn ones again, or 64 withdrawn ones if more (a compaction keeps
    /// it so).
    pub fn backlog_entries(&self) -> usize {
        self.backlog.len()
    }

    /// The most page requests the backlog holds (see [`ProducerConfig::max_backlog`]).
    pub fn max_backlog(&self) -> u64 {
        self.config.max_backlog
    }

    /// Sets the most page requests the backlog holds (see [`ProducerConfig::max_backlog`]).
    pub fn set_max_backlog(&mut self, requests: u64) {
        self.config.max_backlog = requests;
    }

    /// From now on, groups are pushed under the cookies their owner gives
    /// ([`push_named`](Producer::push_named)): the fault core's, so that a group has one name
    /// from the core to the consumer and withdrawing it costs one lookup. Errors:
    /// [`QueueError::Inconsistent`] while groups are pending.
    pub fn name_by_upstream(&mut self) -> Result<(), QueueError> {
        if self.groups.naming() == Naming::Upstream {
            return Ok(());
        }
        if !self.groups.is_empty() {
            return Err(QueueError::Inconsistent(
                "groups are pending under the producer's own cookies",
            ));
        }
        self.groups = table(Naming::Upstream, &self.agreement);
        Ok(())
    }

    /// Pushes one group under a cookie of the producer's own and publishes it: delivered at
    /// once, or held in the backlog until room frees. Returns the group's cookie, or an error: a
    /// malformed group ([`QueueError::BadGroup`]), or [`QueueError::Lost`] when it cannot be
    /// delivered (past the backlog, too large for the ring, consumer gone) — counted, announced to
    /// the consumer, and the caller must answer the group itself.
    pub fn push_group(&mut self, group: &TaggedGroup<'_>) -> Result<u32, QueueError> {
        let r = self.push_one(None, group);
        self.publish();
        r.map(Cookie::raw)
    }

    /// [`push_group`](Producer::push_group) under `cookie`, the name its owner gave it (after
    /// [`name_by_upstream`](Producer::name_by_upstream)). Also [`QueueError::BadGroup`] when a
    /// group is already pending under `cookie`.
    pub fn push_named(&mut self, cookie: u32, group: &TaggedGroup<'_>) -> Result<(), QueueError> {
        let r = self.push_one(Some(Cookie::from_raw(cookie)), group);
        self.publish();
        r.map(|_| ())
    }

    /// Pushes several groups with one publication and at most one wake-up; `out` receives one
    /// result per group, as [`push_group`](Producer::push_group) would return it.
    pub fn push_groups(
        &mut self,
        groups: &[TaggedGroup<'_>],
        out: &mut Vec<Result<u32, QueueError>>,
    ) {
        for g in groups {
            let r = self.push_one(None, g);
            out.push(r.map(Cookie::raw));
        }
        self.publish();
    }

    /// Pushes an unrecoverable fault of device `dev_id`, for information, and publishes it (what
    /// `iommu_report_device_fault()` receives as `IOMMU_FAULT_DMA_UNRECOV`). It takes the next
    /// sequence number like any record, but is never pending and takes no answer. Returns its
    /// sequence number, or:
    /// * [`QueueError::NotAgreed`] (`EOPNOTSUPP`) when the consumer did not agree
    ///   [`Features::UNRECOVERABLE`]: nothing is written, no sequence number is used and nothing
    ///   is counted — the consumer asked not to be told;
    /// * [`QueueError::Lost`] when the ring has no room ([`LossReason::RingFull`]: unrecoverable
    ///   faults need no answer and are not held back) or the consumer is gone
    ///   ([`LossReason::ConsumerGone`]): counted and announced like a lost page request (its
    ///   sequence number is in the loss record), and there is nothing to answer.
    #[inline]
    pub fn push_unrecoverable(
        &mut self,
        dev_id: u32,
        fault: &Unrecoverable,
    ) -> Result<u64, QueueError> {
        if !self.unrecoverable_agreed() {
            return Err(QueueError::NotAgreed("UNRECOVERABLE"));
        }
        if !self.clear_to_write(1) || self.unpublished.is_held() {
            let r = self.push_unrecoverable_slow(dev_id, fault);
            self.publish();
            return r;
        }
        // The common case, kept to the fewest stores: the slot's words, its stamp (which
        // publishes it), the header's head and sequence, and three counters.
        let (seq, head) = (self.next_seq, self.fault_head);
        // Unrecoverable faults are only ever agreed with `iommu_fault` records.
        let stamped = Shared::write_unstamped(
            self.shared.fault_slot(head),
            &encode_unrecoverable(seq, dev_id, fault),
            IOMMU_FAULT_STAMP,
            stamp(head),
        );
        self.fault_head = head + 1;
        self.next_seq = seq + 1;
        self.stats.delivered += 1;
        self.publish_stamp(head, stamped);
        Ok(seq)
    }

    /// Pushes several unrecoverable faults (device id, fault) with one publication and at most
    /// one wake-up, as an IOMMU driver drains its event queue; `out` receives one result per
    /// fault, as [`push_unrecoverable`](Producer::push_unrecoverable) would return it.
    pub fn push_unrecoverables(
        &mut self,
        faults: &[(u32, Unrecoverable)],
        out: &mut Vec<Result<u64, QueueError>>,
    ) {
        if !self.unrecoverable_agreed() {
            out.extend(
                faults
                    .iter()
                    .map(|_| Err(QueueError::NotAgreed("UNRECOVERABLE"))),
            );
            return;
        }
        if self.clear_to_write(faults.len() as u64) {
            // Room for all of them and nothing to do first: one check for the batch, and the
            // results once the slots are written (docs/PERFORMANCE.md, "Batches").
            let first = self.next_seq;
            let n = self.write_unrecoverables(faults.iter());
            out.extend((first..first + n).map(Ok));
        } else {
            // Not all of them fit, or something goes first: each on its own, with every check.
            out.extend(
                faults
                    .iter()
                    .map(|(dev_id, fault)| self.push_unrecoverable_slow(*dev_id, fault)),
            );
        }
        self.publish();
    }

    /// Whether unrecoverable records were agreed. Negotiation agrees UNRECOVERABLE only with
    /// `iommu_fault` records; both are checked so that no other record format is ever asked to
    /// carry one.
    fn unrecoverable_agreed(&self) -> bool {
        self.agreement.features.contains(Features::UNRECOVERABLE)
            && self.agreement.record == RecordFormat::IommuFault
    }

    /// Writes an unrecoverable fault's slot (not published) and returns its sequence number. The
    /// caller checked the agreement and that the slot is free.
    fn write_unrecoverable(&mut self, dev_id: u32, fault: &Unrecoverable) -> u64 {
        let seq = self.next_seq;
        self.write_unrecoverables(std::iter::once(&(dev_id, *fault)));
        seq
    }

    /// Writes unrecoverable faults (device id, fault) into the next slots (not published) and
    /// counts them delivered; returns how many. The caller checked the agreement and that the
    /// slots are free; unrecoverable faults are only ever agreed with `iommu_fault` records.
    #[inline]
    fn write_unrecoverables<'f>(
        &mut self,
        faults: impl Iterator<Item = &'f (u32, Unrecoverable)>,
    ) -> u64 {
        let n = self.write_records(IOMMU_FAULT_STAMP, faults, |seq, (dev_id, fault)| {
            encode_unrecoverable(seq, *dev_id, fault)
        });
        self.stats.delivered += n;
        n
    }

    /// Writes records into the next fault slots (not published), one for each of `records`,
    /// `encode(seq, record)` with consecutive sequence numbers from the next; the slots keep
    /// their stamp at `at` (the agreed format's, given as a constant so the slot's stores are a
    /// straight line). The caller checked the room. Returns how many were written. The head and
    /// sequence are kept in locals for the run ([`Shared::write_stamped_run`]).
    #[inline]
    fn write_records<T>(
        &mut self,
        at: StampAt,
        records: impl Iterator<Item = T>,
        encode: impl Fn(u64, T) -> SlotWords,
    ) -> u64 {
        debug_assert_eq!(at, self.shared.geo.stamp);
        let (head, seq) = (self.fault_head, self.next_seq);
        let n = Shared::write_stamped_run(
            self.shared.faults(),
            head,
            at,
            &mut self.unpublished,
            records.zip(seq..).map(|(r, seq)| encode(seq, r)),
        );
        self.fault_head = head + n;
        self.next_seq = seq + n;
        n
    }

    /// Whether `n` records can be written without anything else first: the consumer has not
    /// closed, no loss waits to be announced, and the cached tail leaves room (the tail itself is
    /// re-read only on the slow path).
    #[inline]
    fn clear_to_write(&self, n: u64) -> bool {
        !self.closed
            && self.unreported_loss.is_none()
            && self.shared.geo.entries - self.fault_head.wrapping_sub(self.cached_fault_tail) >= n
            && self.shared.header().flags.load(Ordering::Relaxed) & FLAG_CONSUMER_CLOSED == 0
    }

    /// An unrecoverable fault (not published) when the fast path could not take it: the consumer
    /// is gone, a loss record goes first, or the cached tail said full.
    #[cold]
    #[inline(never)]
    fn push_unrecoverable_slow(
        &mut self,
        dev_id: u32,
        fault: &Unrecoverable,
    ) -> Result<u64, QueueError> {
        let reason = if self.consumer_closed() {
            Some(LossReason::ConsumerGone)
        } else {
            self.write_loss_record_if_room();
            (self.unreported_loss.is_some() || !self.has_room(1)).then_some(LossReason::RingFull)
        };
        if let Some(reason) = reason {
            self.count_loss(1, reason);
            return Err(QueueError::Lost(reason));
        }
        Ok(self.write_unrecoverable(dev_id, fault))
    }

    /// Whether the consumer has closed its end (or the producer was closed): one load, for the
    /// fault path (the link, a system call for a socket, is looked at by
    /// [`consumer_gone`](Producer::consumer_gone)).
    #[inline]
    /// Whether the consumer closed its end (or this producer was closed). `Acquire`: the
    /// consumer sets the flag last, after publishing its last responses, so a producer that sees
    /// it also sees them, and its [`close`](Producer::close) judges them instead of answering
    /// their groups "consumer gone" (the model check found this with the load `Relaxed`).
    pub(crate) fn consumer_closed(&self) -> bool {
        self.closed
            || self.shared.header().flags.load(Ordering::Acquire) & FLAG_CONSUMER_CLOSED != 0
    }

    fn check_group(&self, group: &TaggedGroup<'_>) -> Result<(), QueueError> {
        // Not `ok_or(..)?`: that builds (and drops) the error on every call of the hot path.
        let Some((last, rest)) = group.requests.split_last() else {
            return Err(QueueError::BadGroup("a group has at least one request"));
        };
        if !last.is_last() || rest.iter().any(PageRequest::is_last) {
            return Err(QueueError::BadGroup(
                "exactly the last request has LAST_PAGE",
            ));
        }
        if last.is_stop_marker() {
            return Err(QueueError::BadGroup(
                "stop markers get no response and are not queued",
            ));
        }
        // PRG indexes are per function: Linux's `iopf_group_alloc()` (and the fault core) gather
        // held partials by grpid whatever their PASID, so a group's earlier requests may carry
        // another PASID than its LAST_PAGE request, whose PASID the response uses.
        if group.requests.iter().any(|r| r.grpid != last.grpid) {
            return Err(QueueError::BadGroup("the requests of a group share grpid"));
        }
        Ok(())
    }

    /// Pushes one group (not published): delivered at once when nothing waits before it and it
    /// may go now ([`Producer::may_deliver`]), held back otherwise, lost past the backlog.
    fn push_one(
        &mut self,
        name: Option<Cookie>,
        group: &TaggedGroup<'_>,
    ) -> Result<Cookie, QueueError> {
        self.check_group(group)?;
        let n = group.requests.len() as u64;
        let Some(last) = group.requests.last() else {
            return Err(QueueError::BadGroup("a group has at least one request"));
        };
        if self.consumer_closed() {
            return Err(self.lose(n, LossReason::ConsumerGone));
        }
        if n > u64::from(self.agreement.largest_group()) {
            return Err(self.lose(n, LossReason::TooLarge));
        }
        let facts = GroupFacts::of_last(0, 0, last);
        let mut pushed = Pushed {
            tag: group.tag,
            dev_id: group.dev_id,
            requests: n as u32,
            ticket: 0,
        };
        if let Some(stale) = name.and_then(|c| self.groups.stale_for(c)) {
            // The owner reused the slot of a group it answered without withdrawing it here: that
            // group is gone, and goes now, with its counts, before room and bound are judged.
            self.withdraw(stale.raw());
        }
        if !self.backlog.is_empty() {
            // Room may have freed since the last flush: what waits goes first.
            self.deliver_held();
        }
        if self.backlog.is_empty() && self.may_deliver(n, facts.grpid) {
            let cookie = self.insert(name, facts, pushed, false)?;
            self.deliver(cookie, group.dev_id, group.requests);
            return Ok(cookie);
        }
        if self.held_requests + n > self.config.max_backlog {
            return Err(self.lose(n, LossReason::BacklogFull));
        }
        pushed.ticket = self.next_ticket;
        self.next_ticket = self.next_ticket.wrapping_add(1).max(1);
        let cookie = self.insert(name, facts, pushed, true)?;
        let first_held = self.backlog.is_empty();
        self.backlog.push_back((cookie, n as u32, pushed.ticket));
        self.backlog_requests.extend(group.requests.iter().copied());
        if first_held {
            self.announce_holding();
        }
        self.held_requests += n;
        self.stats.held_back += 1;
        self.stats.backlog_high_water = self.stats.backlog_high_water.max(self.held_requests);
        Ok(cookie)
    }

    /// Puts a pushed group in the table, under `name` or a cookie of the table's own.
    fn insert(
        &mut self,
        name: Option<Cookie>,
        facts: GroupFacts,
        pushed: Pushed,
        held_back: bool,
    ) -> Result<Cookie, QueueError> {
        let n = u64::from(pushed.requests);
        let r = match (name, held_back) {
            (None, false) => self.groups.insert(facts, pushed),
            (None, true) => self.groups.insert_held_back(facts, pushed),
            (Some(c), false) => self.groups.insert_named(c, facts, pushed).map(|()| c),
            (Some(c), true) => self
                .groups
                .insert_named_held_back(c, facts, pushed)
                .map(|()| c),
        };
        match r {
            Ok(c) => Ok(c),
            Err(TableError::Full) => Err(self.lose(n, LossReason::BacklogFull)),
            Err(TableError::Naming(_)) => Err(QueueError::BadGroup(
                "the cookie's source does not match the producer's naming",
            )),
            Err(TableError::Taken(_)) => Err(QueueError::BadGroup(
                "a group is already pending under that cookie",
            )),
        }
    }

    /// Groups handed to the consumer and not answered: the pending ones not held back (every
    /// backlog entry not withdrawn is a held-back group).
    #[inline]
    fn announced(&self) -> usize {
        self.groups.len() - (self.backlog.len() - self.withdrawn_held)
    }

    /// Whether a group of `n` requests with PRG index `grpid` may be handed to the consumer now:
    /// the consumer's pending limit leaves room, any loss waiting to be announced was written,
    /// the ring has room, and, on a queue whose responses name groups by grpid, no announced
    /// group has the same PRG index (the consumer could not tell the two apart).
    #[inline]
    fn may_deliver(&mut self, n: u64, grpid: u32) -> bool {
        if self.announced() >= self.config.max_pending {
            return false;
        }
        if self.unreported_loss.is_some() && !self.write_loss_record_if_room() {
            return false;
        }
        self.has_room(n) && !self.groups.announced_with_grpid(0, grpid)
    }

    /// Writes an announced group's records and counts it (not published).
    #[inline]
    fn deliver(&mut self, cookie: Cookie, dev_id: u32, requests: &[PageRequest]) {
        // The format chosen once, so that its encoder and stamp position are constants.
        match self.agreement.record {
            RecordFormat::IommuFault => self.write_requests(
                cookie.raw(),
                dev_id,
                requests.iter(),
                RecordFormat::IommuFault,
                IOMMU_FAULT_STAMP,
            ),
            RecordFormat::HwptPgfault => self.write_requests(
                cookie.raw(),
                dev_id,
                requests.iter(),
                RecordFormat::HwptPgfault,
                HWPT_STAMP,
            ),
        }
        self.stats.delivered += requests.len() as u64;
    }

    /// Delivers held-back groups, oldest first, while the next one may go (room in the ring and
    /// under the pending limit, no announced group with its PRG index on a grpid-answered queue),
    /// and publishes them; a withdrawn one is passed over. [`drain_responses`] calls it (an
    /// answer frees room), and so does every push, before its own group. Returns the groups
    /// delivered.
    ///
    /// [`drain_responses`]: Producer::drain_responses
    pub fn flush_backlog(&mut self) -> usize {
        let delivered = self.deliver_held();
        if delivered > 0 {
            self.publish();
        }
        delivered
    }

    /// [`flush_backlog`](Producer::flush_backlog) without the publish.
    fn deliver_held(&mut self) -> usize {
        let mut delivered = 0;
        while let Some(&(cookie, n, ticket)) = self.backlog.front() {
            let Some((facts, p)) = self.held_back(cookie, ticket) else {
                // Withdrawn: its requests are still queued here.
                self.backlog.pop_front();
                self.backlog_requests.drain(..n as usize);
                self.withdrawn_held -= 1;
                continue;
            };
            if !self.may_deliver(u64::from(p.requests), facts.grpid) {
                break;
            }
            self.groups.announce(cookie);
            let mut requests = std::mem::take(&mut self.scratch);
            requests.clear();
            requests.extend(self.backlog_requests.drain(..n as usize));
            self.backlog.pop_front();
            self.held_requests -= u64::from(n);
            self.deliver(cookie, p.dev_id, &requests);
            self.scratch = requests;
            delivered += 1;
        }
        delivered
    }

    /// The group of the backlog entry (`cookie`, `ticket`), if it is still pending and held back.
    fn held_back(&self, cookie: Cookie, ticket: u32) -> Option<(GroupFacts, Pushed)> {
        match self.groups.get(cookie) {
            Some((facts, p))
                if p.ticket == ticket && self.groups.is_held_back(cookie) == Some(true) =>
            {
                Some((facts, *p))
            }
            _ => None,
        }
    }

    /// Withdrawn entries the backlog keeps before it is compacted: past this, and past the live
    /// entries, a compaction drops them all.
    const WITHDRAWN_KEPT: usize = 64;

    /// Drops every withdrawn group, and its requests, from the backlog once withdrawn entries
    /// outnumber live ones (and [`Self::WITHDRAWN_KEPT`]): linear in the backlog, which is then
    /// at most twice the withdrawn entries, so each withdrawal pays O(1) for it.
    fn compact_backlog_if_mostly_withdrawn(&mut self) {
        let live = self.backlog.len() - self.withdrawn_held;
        if self.withdrawn_held <= Self::WITHDRAWN_KEPT || self.withdrawn_held <= live {
            return;
        }
        let mut requests = std::mem::take(&mut self.backlog_requests).into_iter();
        let mut kept = VecDeque::with_capacity(requests.len());
        let backlog = std::mem::take(&mut self.backlog);
        for (cookie, n, ticket) in backlog {
            let group = requests.by_ref().take(n as usize);
            if self.held_back(cookie, ticket).is_some() {
                kept.extend(group);
                self.backlog.push_back((cookie, n, ticket));
            } else {
                group.for_each(drop);
            }
        }
        self.backlog_requests = kept;
        self.withdrawn_held = 0;
    }

    /// Writes a group's requests, the group's cookie in each, in `format` (the agreed one) whose
    /// slots keep their stamp at `at`. Private data goes only to a consumer that echoes it.
    // Forced inline kept on measurement: docs/PERFORMANCE.md, "Forced inlining".
    #[inline(always)]
    fn write_requests<'r>(
        &mut self,
        cookie: u32,
        dev_id: u32,
        requests: impl Iterator<Item = &'r PageRequest>,
        format: RecordFormat,
        at: StampAt,
    ) {
        let echo = self.agreement.echoes_private_data();
        self.write_records(at, requests, |seq, r| {
            let mut r = *r;
            if !echo {
                r.flags.remove(PageRequestFlags::PRIV_DATA);
                r.private_data = [0, 0];
            }
            encode_fault(format, seq, cookie, dev_id, &r)
        });
    }

    /// Free slots in the fault ring (re-reading the consumer's tail). An owner that would rather
    /// hold groups back than lose them looks here before pushing; the fault path itself never
    /// waits.
    pub fn free_slots(&mut self) -> u64 {
        let tail = self.shared.header().fault_tail.load(Ordering::Acquire);
        self.accept_tail(tail);
        self.shared.geo.entries - self.fault_head.wrapping_sub(self.cached_fault_tail)
    }

    /// Whether the fault ring has `need` free slots, re-reading the consumer's tail only when the
    /// cached one says it has not. An owner that would rather hold groups back than lose them
    /// asks before pushing; the fault path itself never waits.
    pub fn has_room(&mut self, need: u64) -> bool {
        let entries = self.shared.geo.entries;
        if entries - self.fault_head.wrapping_sub(self.cached_fault_tail) >= need {
            return true;
        }
        let tail = self.shared.header().fault_tail.load(Ordering::Acquire);
        self.accept_tail(tail);
        entries - self.fault_head.wrapping_sub(self.cached_fault_tail) >= need
    }

    fn accept_tail(&mut self, tail: u64) {
        match accept_tail(self.fault_head, self.cached_fault_tail, tail) {
            Some(tail) => self.cached_fault_tail = tail,
            None => self.stats.violations += 1,
        }
    }

    /// Writes the next slot with a record that takes no sequence number of its own (a loss
    /// record). Its stamp goes last: with `Release` when an earlier slot of this batch is still
    /// unpublished (a reader cannot pass that one), or else kept for [`Producer::publish`].
    fn write_slot(&mut self, words: &SlotWords) {
        Shared::write_stamped(
            self.shared.fault_slot(self.fault_head),
            self.fault_head,
            words,
            self.shared.geo.stamp,
            &mut self.unpublished,
        );
        self.fault_head += 1;
    }

    /// Counts `n` records lost for `reason` and returns the error to give the group's owner.
    #[cold]
    fn lose(&mut self, n: u64, reason: LossReason) -> QueueError {
        self.count_loss(n, reason);
        QueueError::Lost(reason)
    }

    /// Counts `n` records lost for `reason`: they take the next sequence numbers, the header's
    /// counters (total and by reason) say so at once, and a loss record will name them.
    fn count_loss(&mut self, n: u64, reason: LossReason) {
        let first = self.next_seq;
        self.next_seq += n;
        self.stats.lost += n;
        self.stats.lost_by.count(reason, n);
        self.unreported_loss = Some(match self.unreported_loss {
            Some(u) => Unreported {
                count: u.count + n,
                reason: u.reason.filter(|r| *r == reason),
                ..u
            },
            None => Unreported {
                first_seq: first,
                count: n,
                reason: Some(reason),
            },
        });
        self.shared.header().lost_by_reason[reason as usize]
            .store(self.stats.lost_by.get(reason), Ordering::Release);
        self.shared
            .header()
            .lost
            .store(self.stats.lost, Ordering::Release);
        if !self.agreement.features.contains(Features::LOSS_RECORDS) {
            self.unreported_loss = None;
        }
    }

    /// Writes the loss record for the losses no record has named yet, if the ring has a slot for
    /// it (not published). Returns whether none waits any more.
    fn write_loss_record_if_room(&mut self) -> bool {
        let Some(u) = self.unreported_loss else {
            return true;
        };
        if !self.has_room(1) {
            return false;
        }
        self.unreported_loss = None;
        self.write_slot(&encode_lost(
            self.agreement.record,
            u.first_seq,
            u.count,
            u.reason,
        ));
        true
    }

    /// Writes the loss record for losses no record has named yet, if the fault ring has a free
    /// slot now, and publishes it. A push does this before its own records, and
    /// [`drain_responses`] and [`report_loss`] call it, so losses are announced as soon as there
    /// is a slot, not only when another group arrives. Returns whether a record was written.
    /// (The header's counters are exact at all times; the record is what a consumer reading the
    /// ring in order sees.)
    ///
    /// [`drain_responses`]: Producer::drain_responses
    /// [`report_loss`]: Producer::report_loss
    pub fn announce_losses(&mut self) -> bool {
        if self.unreported_loss.is_none() || !self.write_loss_record_if_room() {
            return false;
        }
        self.publish();
        true
    }

    /// Records that `requests` page requests routed to this queue were answered without it (the
    /// fault core answered their group at once: `reason` is one of the core's, such as
    /// [`LossReason::OverAllocation`]): counted, and announced to the consumer at once.
    pub fn report_loss(&mut self, requests: u64, reason: LossReason) {
        self.count_loss(requests, reason);
        self.announce_losses();
    }

    /// Makes written records visible — the first unpublished slot's stamp, which releases the
    /// whole batch — and wakes the consumer if it sleeps ([`crate::wake`]: light when both ends
    /// chose the `membarrier` handshake, fenced otherwise).
    #[inline]
    fn publish(&mut self) {
        let Some((index, stamped)) = self.unpublished.take() else {
            self.shared
                .header()
                .next_seq
                .store(self.next_seq, Ordering::Relaxed);
            return;
        };
        self.publish_stamp(index, stamped);
    }

    /// Stores fault slot `index`'s stamp word (value `stamped`), which publishes every slot
    /// written since the last publication, with the header's head and sequence; wakes the
    /// consumer if it sleeps.
    #[inline]
    fn publish_stamp(&mut self, index: u64, stamped: u64) {
        let h = self.shared.header();
        h.next_seq.store(self.next_seq, Ordering::Relaxed);
        h.fault_head.store(self.fault_head, Ordering::Relaxed);
        let how = self.record_publish();
        publish_and_wake(
            &self.shared.fault_slot(index).0[self.shared.geo.stamp.word],
            stamped,
            &h.consumer_sleeping,
            &self.fault_bell,
            how,
        );
    }

    /// How this producer publishes to its consumer: light when both processes chose the
    /// `membarrier` handshake (the consumer declares it in the region's flags), fenced otherwise.
    #[inline]
    fn record_publish(&self) -> Publish {
        if self.membarrier
            && self.shared.header().flags.load(Ordering::Relaxed) & FLAG_CONSUMER_MEMBARRIER != 0
        {
            Publish::Light
        } else {
            Publish::Fenced
        }
    }

    /// Judges up to `max_per_wake` waiting responses (a slot of packed cookie responses is
    /// judged whole, so up to 6 more): each gets a verdict the consumer can learn
    /// — accepted ones by the published `judged` watermark (every response below it that has
    /// no entry in the verdict ring was accepted), rejected ones by an entry in the verdict ring
    /// (response id, errno and reason). Each accepted one removes its group and is appended to
    /// `out`. Returns the number of responses judged; call again while it is non-zero. A response
    /// waits (and the consumer's response ring fills) while the consumer leaves no room in the
    /// verdict ring for a possible rejection.
    pub fn drain_responses(&mut self, out: &mut Vec<Answer>) -> usize {
        if self.unreported_loss.is_some() {
            self.announce_losses();
        }
        let judged = self.judge_waiting(out);
        if !self.backlog.is_empty() {
            self.flush_backlog();
        }
        judged
    }

    /// [`drain_responses`](Producer::drain_responses) without the backlog flush.
    fn judge_waiting(&mut self, out: &mut Vec<Answer>) -> usize {
        let entries = self.shared.geo.entries;
        let max = self.config.max_per_wake.max(1);
        // The consumer's verdict tail is re-read only when the cached one says the ring may be
        // too full: with no rejections the consumer's line is never pulled over.
        let mut room = entries - self.verdict_head.wrapping_sub(self.cached_verdict_tail);
        let (mut slots, mut judged) = (0u64, 0usize);
        let mut rejected = false;
        // The run of published slots first, each stamp looked at once in a loop of its own (as
        // the consumer's reader does), then each slot copied once and judged from the copy.
        let run = Shared::published_run(
            self.shared.responses(),
            self.resp_tail,
            entries.min(max as u64),
            RESP_STAMP,
        );
        while slots < run && judged < max {
            let w = Shared::copy_published(self.shared.resp_slot(self.resp_tail));
            // Judged from the copy only: what the consumer writes now changes nothing.
            let packed = packed_in(&w, entries);
            let k = packed.unwrap_or(1);
            if room < k as u64 {
                room = self.verdict_room();
                if room < k as u64 {
                    // Waits see no response until the consumer takes verdicts (it rings then):
                    // judging stops here, and a wait must not return for it again and again.
                    self.verdict_blocked = Some(self.cached_verdict_tail);
                    break;
                }
            }
            self.verdict_blocked = None;
            for i in 0..k {
                let response = match packed {
                    Some(_) => decode_packed(&self.agreement, &w, i),
                    None => decode_slot(&self.agreement, &w),
                };
                match response.and_then(|r| self.take_answered(&r)) {
                    Ok(answer) => {
                        self.stats.accepted += 1;
                        out.push(answer);
                    }
                    Err(rej) => {
                        self.stats.rejected += 1;
                        let verdict = &self.shared.verdict_slot(self.verdict_head).0;
                        verdict[0].store(self.judged, Ordering::Relaxed);
                        verdict[1].store(verdict_word(rej), Ordering::Relaxed);
                        self.verdict_head += 1;
                        room -= 1;
                        rejected = true;
                    }
                }
                self.judged += 1;
            }
            self.resp_tail += 1;
            slots += 1;
            judged += k;
        }
        if slots == 0 {
            return 0;
        }
        // Rejections first, then the watermark: a consumer that sees `judged` (acquire) sees
        // every rejection entry below it.
        if rejected {
            self.shared
                .header()
                .verdict_head
                .store(self.verdict_head, Ordering::Release);
        }
        self.shared
            .header()
            .judged
            .store(self.judged, Ordering::Release);
        // Wakes a consumer that sleeps on a full response ring (`Consumer::wait_for`).
        let how = self.record_publish();
        publish_and_wake(
            &self.shared.header().resp_tail,
            self.resp_tail,
            &self.shared.header().resp_room_wait,
            &self.fault_bell,
            how,
        );
        judged
    }

    /// Judges a decoded response with the one judge and, accepted, takes its group out.
    #[inline]
    fn take_answered(&mut self, r: &Response) -> Result<Answer, Rejection> {
        let who = Responder {
            device: 0,
            owner: 0,
            agreed: self.agreement.features,
        };
        let t = self.groups.take(&who, r).map_err(Rejection::judged)?;
        Ok(Answer {
            tag: t.extra.tag,
            cookie: t.cookie.raw(),
            dev_id: t.extra.dev_id,
            pasid: t.facts.pasid,
            grpid: t.facts.grpid,
            code: t.code,
            private_data: t.facts.private_data,
            by: AnsweredBy::Consumer,
        })
    }

    /// Free entries in the verdict ring, re-reading (and checking) the consumer's tail.
    fn verdict_room(&mut self) -> u64 {
        let vt = self.shared.header().verdict_tail.load(Ordering::Acquire);
        if vt.wrapping_sub(self.cached_verdict_tail)
            <= self.verdict_head.wrapping_sub(self.cached_verdict_tail)
        {
            self.cached_verdict_tail = vt;
        } else {
            self.stats.violations += 1;
        }
        self.shared.geo.entries - self.verdict_head.wrapping_sub(self.cached_verdict_tail)
    }

    /// Whether a response is waiting (the next response slot carries the expected stamp).
    pub fn responses_waiting(&self) -> bool {
        response_published(&self.shared, self.resp_tail)
    }

    /// Waits until responses wait, the consumer is gone, or `timeout` passes (spinning briefly,
    /// then sleeping on the response eventfd and, for a socket consumer, the socket); while
    /// groups are held back, also until the consumer gives slots back (it rings then, so the
    /// backlog moves even if it answers nothing). Returns whether there is something to do (call
    /// [`drain_responses`](Producer::drain_responses), which delivers the backlog).
    pub fn wait_responses(&mut self, timeout: Option<Duration>) -> Result<bool, QueueError> {
        self.response_wait().wait(timeout)
    }

    /// What [`Producer::wait_responses`] waits on, taken out of the producer so that the wait
    /// borrows nothing of it: [`crate::CoreLink::wait`] sleeps without holding its lock.
    pub(crate) fn response_wait(&mut self) -> ResponseWait {
        let holding = !self.backlog.is_empty();
        self.holding.store(holding, Ordering::Release);
        if holding {
            // Woken by slots coming back from now on: start from the tail as it is.
            self.free_slots();
        }
        ResponseWait {
            shared: self.shared.clone(),
            bell: self.resp_bell.clone(),
            socket: self.link.wake_fd().cloned(),
            in_process: self.link.in_process(),
            resp_tail: self.resp_tail,
            holding,
            held_later: self.holding.clone(),
            verdict_blocked: self.verdict_blocked,
            cached_tail: self.cached_fault_tail,
            heavy: self.membarrier,
        }
    }

    /// The backlog just got its first group: a wait or an armed descriptor that began before
    /// (on another thread, through a [`crate::CoreLink`]) did not ask the consumer to ring when
    /// slots come back. Ask now (`ROOM_WAIT`), say so to those waits, and ring the producer's own
    /// bell so that a sleeping wait or event loop looks again (and re-arms for room).
    fn announce_holding(&self) {
        self.holding.store(true, Ordering::Release);
        self.shared.header().room_wait.store(1, Ordering::SeqCst);
        self.resp_bell.ring();
    }

    /// What the producer can do now, without waiting: [`Readiness::RESPONSES`] (judge them with
    /// [`drain_responses`](Producer::drain_responses)), [`Readiness::FAULT_ROOM`] (groups are held
    /// back and the first fits the ring: the same call delivers it), [`Readiness::PEER_GONE`]
    /// (the consumer is gone: [`close`](Producer::close); one `poll()` for a consumer in another
    /// process).
    pub fn ready(&mut self) -> Readiness {
        let mut r = Readiness::empty();
        if judgeable(&self.shared, self.resp_tail, self.verdict_blocked) {
            r |= Readiness::RESPONSES;
        }
        if let Some(&(_, requests, _)) = self.backlog.front() {
            if self.has_room(u64::from(requests)) {
                r |= Readiness::FAULT_ROOM;
            }
        }
        if self.consumer_gone() {
            r |= Readiness::PEER_GONE;
        }
        r
    }

    /// Prepares to sleep on the producer's descriptor ([`AsFd`]) until something in `want`
    /// ([`Readiness::RESPONSES`], [`Readiness::FAULT_ROOM`]) may be ready: returns what of
    /// `want` is ready now, plus [`Readiness::PEER_GONE`] when the consumer is gone. An empty
    /// answer means: sleep; the consumer rings the descriptor when it publishes responses, when
    /// it gives slots back while groups are held back (for `FAULT_ROOM`), and when it closes its
    /// end; a consumer in another process that dies closes the socket, which is in the
    /// descriptor's set. Errors: none today (the signature leaves room for a failed system call).
    pub fn arm(&mut self, want: Readiness) -> Result<Readiness, QueueError> {
        let now = self.ready() & (want | Readiness::PEER_GONE);
        if !now.is_empty() {
            return Ok(now);
        }
        let holding = want.contains(Readiness::FAULT_ROOM) && !self.backlog.is_empty();
        let w = self.response_wait();
        if holding {
            w.shared.header().room_wait.store(1, Ordering::SeqCst);
        }
        let armed = !arm(
            &w.shared.header().producer_sleeping,
            &w.bell,
            w.heavy,
            || w.something(),
        );
        if armed {
            return Ok(Readiness::empty());
        }
        if holding {
            w.shared.header().room_wait.store(0, Ordering::Relaxed);
        }
        Ok(self.ready() & (want | Readiness::PEER_GONE))
    }

    /// What the consumer did to be dropped, when it broke the protocol (wrote to the socket
    /// after the handshake): [`QueueError::PeerMisbehaved`], naming its pid and uid. `None` while
    /// it behaves, or when it merely went away. A dropped consumer is gone
    /// ([`Producer::consumer_gone`]): its groups are answered INVALID on [`Producer::close`].
    pub fn consumer_misbehaviour(&self) -> Option<&QueueError> {
        self.link.misbehaviour()
    }

    /// The consumer's process (pid and uid when it connected), for a consumer in another
    /// process.
    pub fn consumer_peer(&self) -> Option<PeerName> {
        self.link.peer()
    }

    /// Whether the consumer has gone away: it closed its end, its process died (socket closed)
    /// or, in process, it was dropped.
    pub fn consumer_gone(&self) -> bool {
        let gone = self.consumer_closed() || self.link.gone();
        if gone {
            // An in-process consumer's end is also seen through its liveness count, which
            // `Weak::strong_count` loads `Relaxed`: this fence makes that load synchronise with
            // the consumer's release of it, after its last responses.
            std::sync::atomic::fence(Ordering::Acquire);
        }
        if gone && self.link.misbehaviour().is_some() {
            if let Some(fd) = self.link.socket_fd() {
                // Its unread bytes would keep an event loop's descriptor readable for ever.
                self.poll_fd.forget_socket(fd);
            }
        }
        gone
    }

    /// Forgets the pending group `cookie` names (delivered or held back), because its owner
    /// answered it otherwise (the fault core's PASID flush, age limit, detach or device
    /// removal). A response the consumer sends for it later is rejected as already answered. One
    /// lookup. Returns whether the group was pending.
    pub fn withdraw(&mut self, cookie: u32) -> bool {
        let cookie = Cookie::from_raw(cookie);
        let was_announced = self.groups.is_held_back(cookie) == Some(false);
        let Some((_, pushed)) = self.groups.remove(cookie) else {
            return false;
        };
        if !was_announced {
            // Its requests stay in the backlog until the flush passes them or a compaction.
            self.held_requests -= u64::from(pushed.requests);
            self.withdrawn_held += 1;
            self.compact_backlog_if_mostly_withdrawn();
        } else if !self.backlog.is_empty() {
            self.flush_backlog();
        }
        true
    }

    /// Ends the queue: judges the responses already in the ring, then answers every group still
    /// pending (delivered or held back) INVALID ([`AnsweredBy::ConsumerGone`]), as Linux does for
    /// a detached fault queue, oldest first. Later pushes are lost with
    /// [`LossReason::ConsumerGone`]. Returns how many answers were appended to `out`.
    pub fn close(&mut self, out: &mut Vec<Answer>) -> usize {
        let before = out.len();
        let mut rounds = 0;
        while rounds < 64 && self.judge_waiting(out) > 0 {
            rounds += 1;
        }
        self.closed = true;
        let mut cookies = Vec::with_capacity(self.groups.len());
        self.groups.cookies(&mut cookies);
        for cookie in cookies {
            if let Some((g, p)) = self.groups.remove(cookie) {
                out.push(Answer {
                    tag: p.tag,
                    cookie: cookie.raw(),
                    dev_id: p.dev_id,
                    pasid: g.pasid,
                    grpid: g.grpid,
                    code: ResponseCode::Invalid,
                    private_data: g.private_data,
                    by: AnsweredBy::ConsumerGone,
                });
            }
        }
        self.backlog.clear();
        self.backlog_requests.clear();
        self.held_requests = 0;
        self.withdrawn_held = 0;
        out.len() - before
    }
}

impl AsFd for Producer {
    /// The descriptor an event loop sleeps on after [`Producer::arm`]: readable when responses
    /// were published, slots came back while groups are held back (when armed for them), the
    /// consumer closed its end, or (in another process) its socket closed. See
    /// [`crate::readiness`].
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.poll_fd.as_fd()
    }
}

/// A wait for responses, taken out of a [`Producer`] by [`Producer::response_wait`]: everything
/// it reads is shared (the region, the bell, the socket), so it holds no borrow of the producer.
#[derive(Debug)]
pub(crate) struct ResponseWait {
    shared: Shared,
    bell: Arc<Doorbell>,
    socket: Option<Arc<OwnedFd>>,
    in_process: Option<Weak<()>>,
    resp_tail: u64,
    holding: bool,
    /// Set by the producer when a group is held back after this wait was taken.
    held_later: Arc<AtomicBool>,
    /// [`Producer`]'s `verdict_blocked` when the wait was taken.
    verdict_blocked: Option<u64>,
    cached_tail: u64,
    heavy: bool,
}

impl ResponseWait {
    /// Whether there is something for the producer to do: a response, slots back while groups
    /// are held back, the consumer closed (or, in this process, dropped). Cheap: it runs in the
    /// spin; a socket consumer's death wakes the sleep through the socket instead.
    fn something(&self) -> bool {
        judgeable(&self.shared, self.resp_tail, self.verdict_blocked)
            || ((self.holding || self.held_later.load(Ordering::Acquire))
                && self.shared.header().fault_tail.load(Ordering::Acquire) != self.cached_tail)
            || self.shared.header().flags.load(Ordering::Relaxed) & FLAG_CONSUMER_CLOSED != 0
            || self
                .in_process
                .as_ref()
                .is_some_and(|w| w.strong_count() == 0)
    }

    /// Waits until [`ResponseWait::something`], the socket has news, or `timeout` passes.
    /// Returns whether there is something to do (or to look at: the socket's news).
    pub(crate) fn wait(self, timeout: Option<Duration>) -> Result<bool, QueueError> {
        if self.holding {
            self.shared.header().room_wait.store(1, Ordering::SeqCst);
        }
        let r = wait_until(
            &self.shared.header().producer_sleeping,
            &self.bell,
            self.socket.as_deref(),
            timeout,
            self.heavy,
            || self.something(),
        );
        if self.holding {
            self.shared.header().room_wait.store(0, Ordering::Relaxed);
        }
        r
    }
}

/// Whether a response waits at `resp_tail` and can be judged: not while judging is stopped for
/// a full verdict ring (`verdict_blocked`: the consumer's verdict tail then) whose tail has not
/// moved; the consumer rings when it moves it. What [`Producer::ready`] and a [`ResponseWait`]
/// both count as a response to judge.
fn judgeable(shared: &Shared, resp_tail: u64, verdict_blocked: Option<u64>) -> bool {
    response_published(shared, resp_tail)
        && verdict_blocked
            .is_none_or(|vt| shared.header().verdict_tail.load(Ordering::Acquire) != vt)
}

/// The producer's group table: with the PRG-index lookup when responses may name groups by
/// grpid.
fn table(naming: Naming, agreement: &Agreement) -> GroupTable<Pushed> {
    let t = GroupTable::new(naming);
    if agreement.vfio_responses() {
        t.with_prg_lookup()
    } else {
        t
    }
}

/// Whether the consumer has published response slot `index`.
fn response_published(shared: &Shared, index: u64) -> bool {
    Shared::stamped(shared.resp_slot(index), RESP_STAMP, stamp(index))
}

fn verdict_word(rej: Rejection) -> u64 {
    pack(rej.errno as u32, rej.reason as u32)
}

impl std::os::fd::AsRawFd for Producer {
    /// The [`AsFd`] descriptor's number, for reactors that take raw descriptors (tokio's
    /// `AsyncFd`, mio's `SourceFd`). Owned by the producer: do not close it.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.as_fd().as_raw_fd()
    }
}
