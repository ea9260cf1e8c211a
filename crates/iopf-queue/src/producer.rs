//! The producing end: the fault core's side of the queue.
//!
//! The producer never blocks the fault path and never trusts the region: it keeps its own indices
//! privately and only *reads* the consumer's (`fault_tail`, `verdict_tail`), each checked to lie
//! between the last valid value and the producer's own index; an impossible value is counted as a
//! violation and treated as "no progress". A response slot is taken only when its stamp names the
//! index the producer expects next (see [`crate::layout`]), is copied out before it is judged, and
//! at most [`ProducerConfig::max_per_wake`] responses are handled per call.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use iopf_abi::fault::PageRequestFlags;
use iopf_abi::{Features, PageRequest, ResponseCode, Unrecoverable};

use crate::error::{LossReason, Rejection};
use crate::layout::{
    hdr, pack, stamp, StampAt, FLAG_CONSUMER_CLOSED, FLAG_CONSUMER_MEMBARRIER, HWPT_STAMP,
    IOMMU_FAULT_STAMP, PRODUCER_FLAG_MEMBARRIER, RESP_SLOT_WORDS, RESP_STAMP,
};
use crate::negotiate::{Agreement, RecordFormat};
use crate::pending::{Pending, PendingGroup};
use crate::record::{encode_fault, encode_lost, encode_unrecoverable, SlotWords};
use crate::response::{judge, judge_packed, packed_in};
use crate::shared::{HeldStamp, Shared};
use crate::wake::{membarrier_registered, publish_and_wake, wait_until, Doorbell, Publish};
use crate::QueueError;

/// Tunables of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerConfig {
    /// The most unanswered groups the producer keeps for its consumer; past it, new groups are
    /// lost ([`LossReason::TooManyPending`]). At most 65536.
    pub max_pending: usize,
    /// The most responses judged per [`Producer::drain_responses`] call.
    pub max_per_wake: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            max_pending: 4096,
            max_per_wake: 256,
        }
    }
}

/// A page request group handed to the producer: all its requests, the last with `LAST_PAGE`.
#[derive(Debug, Clone, Copy)]
pub struct Group<'a> {
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
    /// The request's private data, to go back to the IOMMU with the response. Always the
    /// producer's own copy: when the consumer echoes it, the echo was checked against it.
    pub private_data: Option<[u64; 2]>,
    /// Who answered.
    pub by: AnsweredBy,
}

/// How the producer learns that its consumer is gone.
#[derive(Debug)]
pub(crate) enum Link {
    /// A consumer in this process holds the strong end.
    InProcess(Weak<()>),
    /// A consumer in another process holds the other end of this socket.
    Socket(OwnedFd),
}

/// Counters a producer keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerStats {
    /// Records pushed into the ring.
    pub delivered: u64,
    /// Records lost (not delivered).
    pub lost: u64,
    /// Responses accepted.
    pub accepted: u64,
    /// Responses rejected.
    pub rejected: u64,
    /// Impossible indices the consumer wrote (ignored).
    pub violations: u64,
}

/// The producing end of a fault queue. Owned by one thread at a time (`Send`, not `Sync`).
///
/// Contract: every group pushed successfully ends up in exactly one [`Answer`], from
/// [`drain_responses`](Producer::drain_responses) or from [`close`](Producer::close); a group
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
    unreported_loss: Option<(u64, u64)>,
    pending: Pending,
    fault_bell: Doorbell,
    resp_bell: Doorbell,
    link: Link,
    closed: bool,
    /// This process is registered for `membarrier` (declared in the region's producer flags).
    membarrier: bool,
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
    ) -> Producer {
        shared.write_header(&agreement);
        let membarrier = membarrier_registered();
        if membarrier {
            shared
                .w(hdr::PRODUCER_FLAGS)
                .store(PRODUCER_FLAG_MEMBARRIER, Ordering::Release);
        }
        Producer {
            pending: Pending::new(config.max_pending, agreement.vfio_responses()),
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
            resp_bell,
            link,
            closed: false,
            membarrier,
            stats: ProducerStats::default(),
            memfd,
        }
    }

    pub(crate) fn set_link(&mut self, link: Link) {
        self.link = link;
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

    /// Groups delivered and not yet answered.
    pub fn pending_groups(&self) -> usize {
        self.pending.len()
    }

    /// Pushes one group and publishes it. Returns the group's cookie, or an error: a malformed
    /// group ([`QueueError::BadGroup`]), or [`QueueError::Lost`] when it could not be delivered
    /// — counted, announced to the consumer, and the caller must answer the group itself.
    pub fn push_group(&mut self, group: &Group<'_>) -> Result<u32, QueueError> {
        let r = self.push_one(group);
        self.publish();
        r
    }

    /// Pushes several groups with one publication and at most one wake-up; `out` receives one
    /// result per group, as [`push_group`](Producer::push_group) would return it.
    pub fn push_groups(&mut self, groups: &[Group<'_>], out: &mut Vec<Result<u32, QueueError>>) {
        for g in groups {
            let r = self.push_one(g);
            out.push(r);
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
    /// * [`QueueError::Lost`] when the ring has no room ([`LossReason::RingFull`]) or the
    ///   consumer is gone ([`LossReason::ConsumerGone`]): counted and announced like a lost page
    ///   request (its sequence number is in the loss record), and there is nothing to answer.
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
        let (word, stamped) = self.shared.write_unstamped(
            self.shared.geo.fault_slot(head),
            &encode_unrecoverable(seq, dev_id, fault),
            IOMMU_FAULT_STAMP,
            stamp(head),
        );
        self.fault_head = head + 1;
        self.next_seq = seq + 1;
        self.stats.delivered += 1;
        self.publish_stamp(word, stamped);
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
            // Room for all of them and nothing to do first: one check for the batch.
            out.extend(
                faults
                    .iter()
                    .map(|(dev_id, fault)| Ok(self.write_unrecoverable(*dev_id, fault))),
            );
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
    /// caller checked the agreement and that the slot is free; unrecoverable faults are only ever
    /// agreed with `iommu_fault` records.
    #[inline(always)]
    fn write_unrecoverable(&mut self, dev_id: u32, fault: &Unrecoverable) -> u64 {
        let seq = self.next_seq;
        self.write_slot_at(&encode_unrecoverable(seq, dev_id, fault), IOMMU_FAULT_STAMP);
        self.next_seq += 1;
        self.stats.delivered += 1;
        seq
    }

    /// Whether `n` records can be written without anything else first: the consumer has not
    /// closed, no loss waits to be announced, and the cached tail leaves room (the tail itself is
    /// re-read only on the slow path).
    #[inline(always)]
    fn clear_to_write(&self, n: u64) -> bool {
        !self.closed
            && self.unreported_loss.is_none()
            && self.shared.geo.entries - self.fault_head.wrapping_sub(self.cached_fault_tail) >= n
            && self.shared.header()[hdr::FLAGS].load(Ordering::Relaxed) & FLAG_CONSUMER_CLOSED == 0
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
        let reason = if self.closed
            || self.shared.w(hdr::FLAGS).load(Ordering::Relaxed) & FLAG_CONSUMER_CLOSED != 0
        {
            Some(LossReason::ConsumerGone)
        } else {
            let report = self.unreported_loss.is_some()
                && self.agreement.features.contains(Features::LOSS_RECORDS);
            (!self.has_room(1 + u64::from(report))).then_some(LossReason::RingFull)
        };
        if let Some(reason) = reason {
            self.count_loss(1);
            return Err(QueueError::Lost(reason));
        }
        self.write_loss_record();
        Ok(self.write_unrecoverable(dev_id, fault))
    }

    fn check_group(&self, group: &Group<'_>) -> Result<(), QueueError> {
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

    fn push_one(&mut self, group: &Group<'_>) -> Result<u32, QueueError> {
        self.check_group(group)?;
        let n = group.requests.len() as u64;
        // The link (a socket poll) is looked at by `wait_responses` and `consumer_gone`, not on
        // this hot path; the closed flag is one load.
        let reason = if self.closed
            || self.shared.w(hdr::FLAGS).load(Ordering::Relaxed) & FLAG_CONSUMER_CLOSED != 0
        {
            Some(LossReason::ConsumerGone)
        } else if self.pending.is_full() {
            Some(LossReason::TooManyPending)
        } else if self.pending.grpid_taken(group.requests[0].grpid) {
            Some(LossReason::AmbiguousGroup)
        } else {
            let report = self.unreported_loss.is_some()
                && self
                    .agreement
                    .features
                    .contains(iopf_abi::Features::LOSS_RECORDS);
            let need = n + u64::from(report);
            if !self.has_room(need) {
                Some(LossReason::RingFull)
            } else {
                None
            }
        };
        if let Some(reason) = reason {
            self.count_loss(n);
            return Err(QueueError::Lost(reason));
        }
        self.write_loss_record();
        let Some(last) = group.requests.last() else {
            return Err(QueueError::BadGroup("a group has at least one request"));
        };
        let private_data = group
            .requests
            .iter()
            .rev()
            .find(|r| r.flags.contains(PageRequestFlags::PRIV_DATA))
            .map(|r| r.private_data);
        let Some(cookie) = self.pending.insert(PendingGroup {
            tag: group.tag,
            dev_id: group.dev_id,
            pasid: last.pasid(),
            grpid: last.grpid,
            needs_pasid: last.flags.contains(PageRequestFlags::RESPONSE_NEEDS_PASID),
            private_data,
        }) else {
            return Err(QueueError::Lost(LossReason::TooManyPending));
        };
        // The format chosen once, so that its encoder and stamp position are constants.
        match self.agreement.record {
            RecordFormat::IommuFault => {
                self.write_requests(group, cookie, RecordFormat::IommuFault, IOMMU_FAULT_STAMP)
            }
            RecordFormat::HwptPgfault => {
                self.write_requests(group, cookie, RecordFormat::HwptPgfault, HWPT_STAMP)
            }
        }
        self.stats.delivered += n;
        Ok(cookie)
    }

    /// Writes a group's requests, the group's cookie in each, in `format` (the agreed one) whose
    /// slots keep their stamp at `at`. Private data goes only to a consumer that echoes it.
    #[inline(always)]
    fn write_requests(
        &mut self,
        group: &Group<'_>,
        cookie: u32,
        format: RecordFormat,
        at: StampAt,
    ) {
        let echo = self.agreement.echoes_private_data();
        for r in group.requests {
            let mut r = *r;
            if !echo {
                r.flags.remove(PageRequestFlags::PRIV_DATA);
                r.private_data = [0, 0];
            }
            let words = encode_fault(format, self.next_seq, cookie, group.dev_id, &r);
            self.write_slot_at(&words, at);
            self.next_seq += 1;
        }
    }

    /// Free slots in the fault ring (re-reading the consumer's tail). An owner that would rather
    /// hold groups back than lose them looks here before pushing; the fault path itself never
    /// waits.
    pub fn free_slots(&mut self) -> u64 {
        let tail = self.shared.w(hdr::FAULT_TAIL).load(Ordering::Acquire);
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
        let tail = self.shared.w(hdr::FAULT_TAIL).load(Ordering::Acquire);
        self.accept_tail(tail);
        entries - self.fault_head.wrapping_sub(self.cached_fault_tail) >= need
    }

    fn accept_tail(&mut self, tail: u64) {
        let progress = tail.wrapping_sub(self.cached_fault_tail);
        if progress <= self.fault_head.wrapping_sub(self.cached_fault_tail) {
            self.cached_fault_tail = tail;
        } else {
            self.stats.violations += 1;
        }
    }

    /// Writes the next slot. Its stamp goes last: with `Release` when an earlier slot of this
    /// batch is still unpublished (a reader cannot pass that one), or else kept for
    /// [`Producer::publish`].
    #[inline]
    fn write_slot(&mut self, words: &SlotWords) {
        match self.agreement.record {
            RecordFormat::IommuFault => self.write_slot_at(words, IOMMU_FAULT_STAMP),
            RecordFormat::HwptPgfault => self.write_slot_at(words, HWPT_STAMP),
        }
    }

    /// [`Producer::write_slot`] with the agreed format's stamp position given as a constant, so
    /// the slot's stores compile to a straight line.
    #[inline(always)]
    fn write_slot_at(&mut self, words: &SlotWords, at: StampAt) {
        debug_assert_eq!(at, self.shared.geo.stamp);
        let base = self.shared.geo.fault_slot(self.fault_head);
        self.shared.write_stamped(
            base,
            words,
            at,
            stamp(self.fault_head),
            &mut self.unpublished,
        );
        self.fault_head += 1;
    }

    fn count_loss(&mut self, n: u64) {
        let first = self.next_seq;
        self.next_seq += n;
        self.stats.lost += n;
        self.unreported_loss = Some(match self.unreported_loss {
            Some((f, c)) => (f, c + n),
            None => (first, n),
        });
        self.shared
            .w(hdr::LOST)
            .store(self.stats.lost, Ordering::Release);
        if !self
            .agreement
            .features
            .contains(iopf_abi::Features::LOSS_RECORDS)
        {
            self.unreported_loss = None;
        }
    }

    fn write_loss_record(&mut self) {
        if let Some((first, count)) = self.unreported_loss.take() {
            self.write_slot(&encode_lost(self.agreement.record, first, count));
        }
    }

    /// Writes the loss record for losses no record has named yet, if the fault ring has a free
    /// slot now, and publishes it. A push does this before its next record; [`drain_responses`]
    /// calls it too, so losses after the last push are announced as soon as the consumer makes
    /// room, not only when another group arrives. Returns whether a record was written. (The
    /// header's lost counter is exact at all times; the record is what a consumer reading the
    /// ring in order sees.)
    ///
    /// [`drain_responses`]: Producer::drain_responses
    pub fn announce_losses(&mut self) -> bool {
        if self.unreported_loss.is_none() || !self.has_room(1) {
            return false;
        }
        self.write_loss_record();
        self.publish();
        true
    }

    /// Makes written records visible — the first unpublished slot's stamp, which releases the
    /// whole batch — and wakes the consumer if it sleeps ([`crate::wake`]: light when both ends
    /// are registered for `membarrier`, fenced otherwise).
    #[inline]
    fn publish(&mut self) {
        let Some((word, stamped)) = self.unpublished.take() else {
            self.shared.header()[hdr::NEXT_SEQ].store(self.next_seq, Ordering::Relaxed);
            return;
        };
        self.publish_stamp(word, stamped);
    }

    /// Stores the stamp word `word` (value `stamped`), which publishes every slot written since
    /// the last publication, with the header's head and sequence; wakes the consumer if it
    /// sleeps.
    #[inline(always)]
    fn publish_stamp(&mut self, word: usize, stamped: u64) {
        let h = self.shared.header();
        h[hdr::NEXT_SEQ].store(self.next_seq, Ordering::Relaxed);
        h[hdr::FAULT_HEAD].store(self.fault_head, Ordering::Relaxed);
        let how = if self.membarrier
            && h[hdr::FLAGS].load(Ordering::Relaxed) & FLAG_CONSUMER_MEMBARRIER != 0
        {
            Publish::Light
        } else {
            Publish::Fenced
        };
        publish_and_wake(
            self.shared.w(word),
            stamped,
            &h[hdr::CONSUMER_SLEEPING],
            &self.fault_bell,
            how,
        );
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
        let entries = self.shared.geo.entries;
        let max = self.config.max_per_wake.max(1);
        // The consumer's verdict tail is re-read only when the cached one says the ring may be
        // too full: with no rejections the consumer's line is never pulled over.
        let mut room = entries - self.verdict_head.wrapping_sub(self.cached_verdict_tail);
        let (mut slots, mut judged) = (0u64, 0usize);
        let mut rejected = false;
        while slots < entries && judged < max {
            let Some(w) = self.copy_response(self.resp_tail) else {
                break;
            };
            // Judged from the copy only: what the consumer writes now changes nothing.
            let packed = packed_in(&w, entries);
            let k = packed.unwrap_or(1);
            if room < k as u64 {
                room = self.verdict_room();
                if room < k as u64 {
                    break;
                }
            }
            for i in 0..k {
                let verdict = match packed {
                    Some(_) => judge_packed(&self.agreement, &mut self.pending, &w, i),
                    None => judge(&self.agreement, &mut self.pending, &w),
                };
                match verdict {
                    Ok(acc) => {
                        self.stats.accepted += 1;
                        out.push(Answer {
                            tag: acc.group.tag,
                            cookie: acc.cookie,
                            dev_id: acc.group.dev_id,
                            pasid: acc.group.pasid,
                            grpid: acc.group.grpid,
                            code: acc.code,
                            private_data: acc.group.private_data,
                            by: AnsweredBy::Consumer,
                        });
                    }
                    Err(rej) => {
                        self.stats.rejected += 1;
                        let vbase = self.shared.geo.verdict_slot(self.verdict_head);
                        self.shared.w(vbase).store(self.judged, Ordering::Relaxed);
                        self.shared
                            .w(vbase + 1)
                            .store(verdict_word(rej), Ordering::Relaxed);
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
                .w(hdr::VERDICT_HEAD)
                .store(self.verdict_head, Ordering::Release);
        }
        self.shared
            .w(hdr::JUDGED)
            .store(self.judged, Ordering::Release);
        self.shared
            .w(hdr::RESP_TAIL)
            .store(self.resp_tail, Ordering::Release);
        judged
    }

    /// Free entries in the verdict ring, re-reading (and checking) the consumer's tail.
    fn verdict_room(&mut self) -> u64 {
        let vt = self.shared.w(hdr::VERDICT_TAIL).load(Ordering::Acquire);
        if vt.wrapping_sub(self.cached_verdict_tail)
            <= self.verdict_head.wrapping_sub(self.cached_verdict_tail)
        {
            self.cached_verdict_tail = vt;
        } else {
            self.stats.violations += 1;
        }
        self.shared.geo.entries - self.verdict_head.wrapping_sub(self.cached_verdict_tail)
    }

    /// Copies response slot `index` out of the ring if the consumer has published it (its stamp
    /// names `index`): the copy is what gets judged, whatever the consumer writes afterwards.
    fn copy_response(&self, index: u64) -> Option<[u64; RESP_SLOT_WORDS]> {
        let slot = self
            .shared
            .words_at(self.shared.geo.resp_slot(index), RESP_SLOT_WORDS);
        let first = slot.first()?.load(Ordering::Acquire);
        if RESP_STAMP.get(first) != stamp(index) {
            return None;
        }
        let mut w = [0u64; RESP_SLOT_WORDS];
        w[0] = first;
        for (v, src) in w.iter_mut().zip(slot).skip(1) {
            *v = src.load(Ordering::Relaxed);
        }
        Some(w)
    }

    /// Whether a response is waiting (the next response slot carries the expected stamp).
    pub fn responses_waiting(&self) -> bool {
        response_published(&self.shared, self.resp_tail)
    }

    /// Waits until responses wait, the consumer is gone, or `timeout` passes (spinning briefly,
    /// then sleeping on the response eventfd and, for a socket consumer, the socket). Returns
    /// whether there is something to do.
    pub fn wait_responses(&mut self, timeout: Option<Duration>) -> Result<bool, QueueError> {
        let shared = self.shared.clone();
        let resp_tail = self.resp_tail;
        let link = &self.link;
        let extra = match link {
            Link::Socket(fd) => Some(fd),
            Link::InProcess(_) => None,
        };
        wait_until(
            shared.w(hdr::PRODUCER_SLEEPING),
            &self.resp_bell,
            extra,
            timeout,
            self.membarrier,
            || {
                response_published(&shared, resp_tail)
                    || shared.w(hdr::FLAGS).load(Ordering::Relaxed) & FLAG_CONSUMER_CLOSED != 0
                    || link_gone(link)
            },
        )
    }

    /// Whether the consumer has gone away: it closed its end, its process died (socket closed)
    /// or, in process, it was dropped.
    pub fn consumer_gone(&self) -> bool {
        self.closed
            || self.shared.w(hdr::FLAGS).load(Ordering::Relaxed) & FLAG_CONSUMER_CLOSED != 0
            || link_gone(&self.link)
    }

    /// Forgets the pending group pushed with `tag`, because its owner answered it otherwise (the
    /// fault core's PASID flush or age limit). A response the consumer sends for it later is
    /// rejected as naming no pending group. Returns whether the group was pending.
    pub fn withdraw(&mut self, tag: u64) -> bool {
        match self.pending.cookie_of_tag(tag) {
            Some(cookie) => self.pending.remove(cookie).is_some(),
            None => false,
        }
    }

    /// Ends the queue: judges the responses already in the ring, then answers every group still
    /// pending INVALID ([`AnsweredBy::ConsumerGone`]), as Linux does for a detached fault queue.
    /// Later pushes are lost with [`LossReason::ConsumerGone`]. Returns how many answers were
    /// appended to `out`.
    pub fn close(&mut self, out: &mut Vec<Answer>) -> usize {
        let before = out.len();
        let mut rounds = 0;
        while rounds < 64 && self.drain_responses(out) > 0 {
            rounds += 1;
        }
        self.closed = true;
        for (cookie, g) in self.pending.drain() {
            out.push(Answer {
                tag: g.tag,
                cookie,
                dev_id: g.dev_id,
                pasid: g.pasid,
                grpid: g.grpid,
                code: ResponseCode::Invalid,
                private_data: g.private_data,
                by: AnsweredBy::ConsumerGone,
            });
        }
        out.len() - before
    }
}

/// Whether the consumer has published response slot `index`.
fn response_published(shared: &Shared, index: u64) -> bool {
    let w = shared
        .w(shared.geo.resp_slot(index))
        .load(Ordering::Acquire);
    RESP_STAMP.get(w) == stamp(index)
}

fn verdict_word(rej: Rejection) -> u64 {
    pack(rej.errno as u32, rej.reason as u32)
}

fn link_gone(link: &Link) -> bool {
    match link {
        Link::InProcess(w) => w.strong_count() == 0,
        Link::Socket(fd) => crate::socket::peer_closed(fd),
    }
}
