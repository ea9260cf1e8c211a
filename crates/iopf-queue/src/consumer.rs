//! The consuming end: the VMM's side of the queue.
//!
//! It reads fault records (record by record with [`Consumer::pop_events`], or whole groups through
//! [`FaultConsumer::read_faults`], which skips unrecoverable fault records), writes responses (by
//! grpid, by cookie, or raw bytes), and collects the producer's verdict on each of them. It keeps
//! the groups it has read and not answered in the fault core's [`GroupTable`], under the
//! producer's cookies, and judges its own responses with the same judge the producer uses
//! ([`GroupTable::judge`]) before it sends them: [`FaultConsumer::respond`] refuses an unknown
//! cookie at once, as the kernel's `write()` does, and [`Consumer::respond_pages`] a response the
//! producer would reject; PASID and private data for grpid-named responses come from the table.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use iopf_abi::features::ResponseFormats;
use iopf_abi::response::{VFIO_PAGE_RESPONSE_V1_SIZE, VFIO_PAGE_RESPONSE_V2_SIZE};
use iopf_abi::{FaultConsumer, Features, IommufdResponse, PageResponse, PgFault, ResponseCode};
use iopf_core::{
    Cookie, GroupFacts, GroupRef, GroupTable, Naming, Responder, Response, TableError,
};

use crate::error::{LossCounts, LossReason, RejectReason, Rejection};
use crate::handshake::chose_membarrier;
use crate::layout::{
    accept_tail, stamp, unpack, StampAt, COOKIES_PER_SLOT, FLAG_CONSUMER_CLOSED,
    FLAG_CONSUMER_MEMBARRIER, HWPT_STAMP, IOMMU_FAULT_STAMP, PRODUCER_FLAG_MEMBARRIER,
    RESP_SLOT_BYTES, RESP_SLOT_WORDS, RESP_STAMP,
};
use crate::negotiate::{Agreement, RecordFormat};
use crate::peer::Link;
use crate::read_chunk::FaultReader;
use crate::readiness::{PollFd, Readiness};
use crate::record::{
    decode_folded, decode_folded_with, decode_hwpt, decode_hwpt_with, decode_slot_fast, Event,
    FaultEvent, SlotDefect, SlotWords,
};
use crate::response::{encode_cookies, encode_slot, RawFormat};
use crate::shared::{HeldStamp, Shared};
#[cfg(not(iopf_loom))]
use crate::sync::AtomicU64;
use crate::wake::{arm, publish_and_wake, wait_until_woke, Doorbell};
use crate::wake::{Publish, Woke};
use crate::QueueError;

/// The most verdicts a consumer keeps for [`Consumer::take_verdicts`]; older ones are dropped
/// (and counted) when it is not called.
pub const MAX_KEPT_VERDICTS: usize = 65536;

/// The producer's verdict on one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseVerdict {
    /// The response's id, as returned when it was written: its number among the responses this
    /// consumer wrote, from 0 (several cookie responses can share one response slot).
    pub id: u64,
    /// Accepted, or why not.
    pub outcome: Result<(), Rejection>,
}

/// Verdicts kept for [`Consumer::take_verdicts`]: a run of accepted responses, or one rejection.
#[derive(Debug, Clone, Copy)]
enum Kept {
    Accepted { first: u64, count: u64 },
    Rejected(ResponseVerdict),
}

impl Kept {
    fn len(&self) -> u64 {
        match self {
            Kept::Accepted { count, .. } => *count,
            Kept::Rejected(_) => 1,
        }
    }
}

/// Counters a consumer keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Fault records read (page requests and unrecoverable faults).
    pub records: u64,
    /// Records the producer reported lost (loss records, or gaps in the sequence).
    pub lost: u64,
    /// Responses accepted by the producer, as far as this consumer has learnt: accepted
    /// responses are counted when [`Consumer::take_verdicts`] collects them (rejections as soon
    /// as they arrive).
    pub accepted: u64,
    /// Responses rejected by the producer.
    pub rejected: u64,
    /// Verdicts dropped because [`Consumer::take_verdicts`] was not called.
    pub verdicts_dropped: u64,
    /// Slots that did not decode (only a corrupted region has them); each was skipped, with the
    /// rest of the group it was part of.
    pub corrupt: u64,
    /// Groups a record of which could not be read (a corrupt slot, or a loss record inside the
    /// group): [`FaultConsumer::read_faults`] does not hand such a group out, and answers it
    /// INVALID itself, so that it is not stranded.
    pub answered_broken: u64,
    /// Of those, the ones it could not answer, not even later: the response ring was full and
    /// as many groups as the ring has entries already waited for room (only a misbehaving
    /// producer gives that many). They are answered when the queue closes (or by the producer's
    /// age limit). The others wait and are answered as soon as the ring has room.
    pub broken_unanswered: u64,
}

/// The consuming end of a fault queue. Owned by one thread at a time (`Send`, not `Sync`).
/// Dropping it tells the producer, which answers every group the consumer held INVALID.
///
/// In an event loop, sleep on its descriptor ([`AsFd`]) after [`Consumer::arm`]: see
/// [`crate::readiness`].
#[derive(Debug)]
pub struct Consumer {
    shared: Shared,
    agreement: Agreement,
    /// The one reader of the fault ring: the tail, and the slots known published.
    reader: FaultReader,
    /// The fault tail as last published: slots below it are the producer's again.
    committed_tail: u64,
    /// The sequence numbers of the records of the group `read_faults` is reading, counted when
    /// the group is complete (a group cut short stays in the ring, uncounted).
    group_seqs: Vec<u64>,
    resp_head: u64,
    /// The first unpublished response slot's stamp, stored by `publish_responses`.
    unpublished: HeldStamp,
    /// Responses written (a packed slot carries several): the next response's id.
    resp_seq: u64,
    cached_resp_tail: u64,
    verdict_tail: u64,
    expected_seq: u64,
    /// Groups read and not answered, under the producer's cookies.
    held: GroupTable<()>,
    /// Groups whose records are being skipped, as (cookie, records that may still be read
    /// before it is forgotten): each was broken (a record of it could not be read, another
    /// group's came between its records, or it grew past the largest group) and answered
    /// INVALID. At most [`BROKEN_REMEMBERED`]; each forgotten after a ring's worth of records,
    /// within which no legitimate group reuses its cookie.
    skipping: Vec<(u32, u64)>,
    /// Broken groups (their first record) waiting for room in the response ring to be answered
    /// INVALID: answered before anything else the consumer writes or reads.
    owed_broken: VecDeque<PgFault>,
    /// Responses below this id have their verdict in `verdicts` (or were dropped from it).
    judged: u64,
    verdicts: VecDeque<Kept>,
    kept: u64,
    stats: ConsumerStats,
    /// Why the last corrupt slot was skipped.
    last_refusal: Option<QueueError>,
    fault_bell: Doorbell,
    resp_bell: Doorbell,
    /// How responses are published: light when both processes chose the `membarrier`
    /// handshake ([`crate::handshake`]).
    publish: Publish,
    /// Both processes chose the `membarrier` handshake (declared in the region's flags), so this
    /// consumer calls it before it sleeps (the producer publishes the light way only then).
    membarrier: bool,
    _alive: Option<Arc<()>>,
    /// The socket to a producer in another process: how its death is learnt.
    producer: Option<Link>,
    /// What an event loop sleeps on.
    poll_fd: PollFd,
}

impl Consumer {
    pub(crate) fn new(
        shared: Shared,
        agreement: Agreement,
        fault_bell: Doorbell,
        resp_bell: Doorbell,
        alive: Option<Arc<()>>,
        socket: Option<OwnedFd>,
    ) -> Result<Consumer, QueueError> {
        shared.check_header(&agreement)?;
        let producer_chose =
            shared.header().producer_flags.load(Ordering::Acquire) & PRODUCER_FLAG_MEMBARRIER != 0;
        // Declared only when the producer chose it too: otherwise the producer publishes fenced
        // whatever this side does, and a barrier before each sleep would interrupt this
        // process's threads for nothing.
        let membarrier = producer_chose && chose_membarrier()?;
        if membarrier {
            shared
                .header()
                .flags
                .fetch_or(FLAG_CONSUMER_MEMBARRIER, Ordering::SeqCst);
        }
        let publish = if membarrier {
            Publish::Light
        } else {
            Publish::Fenced
        };
        let poll_fd = PollFd::new(fault_bell.fd(), socket.as_ref())?;
        Ok(Consumer {
            shared,
            agreement,
            reader: FaultReader::default(),
            committed_tail: 0,
            group_seqs: Vec::new(),
            resp_head: 0,
            unpublished: HeldStamp::default(),
            resp_seq: 0,
            cached_resp_tail: 0,
            verdict_tail: 0,
            expected_seq: 0,
            held: if agreement.vfio_responses() {
                GroupTable::new(Naming::Upstream).with_prg_lookup()
            } else {
                GroupTable::new(Naming::Upstream)
            },
            skipping: Vec::new(),
            owed_broken: VecDeque::new(),
            judged: 0,
            verdicts: VecDeque::new(),
            kept: 0,
            stats: ConsumerStats::default(),
            last_refusal: None,
            fault_bell,
            resp_bell,
            publish,
            membarrier,
            _alive: alive,
            producer: socket.map(Link::socket),
            poll_fd,
        })
    }

    /// What was agreed with the producer.
    pub fn agreement(&self) -> &Agreement {
        &self.agreement
    }

    /// The counters.
    pub fn stats(&self) -> ConsumerStats {
        self.stats
    }

    /// The producer's count of lost records, from the region header.
    pub fn producer_lost(&self) -> u64 {
        self.shared.header().lost.load(Ordering::Acquire)
    }

    /// The producer's lost records by reason, from the region header: exact the moment a loss
    /// happens, before any loss record reaches this consumer.
    pub fn producer_losses(&self) -> LossCounts {
        let mut c = LossCounts::default();
        for r in LossReason::ALL {
            c.set(
                r,
                self.shared.header().lost_by_reason[r as usize].load(Ordering::Acquire),
            );
        }
        c
    }

    /// Whether the producer has gone away: its process closed the socket or died, or it wrote
    /// to the socket after the handshake and is taken for gone ([`Consumer::producer_misbehaviour`]).
    /// Never blocks; always `false` for a queue built in one process by [`crate::channel`].
    pub fn producer_gone(&self) -> bool {
        let gone = self.producer.as_ref().is_some_and(Link::gone);
        if let (true, Some(link)) = (gone, &self.producer) {
            if let (Some(_), Some(fd)) = (link.misbehaviour(), link.socket_fd()) {
                self.poll_fd.forget_socket(fd);
            }
        }
        gone
    }

    /// The socket to a producer in another process (`None` in process), for a VMM that wants
    /// to watch it itself. It carries nothing after the handshake: writing to it breaks the
    /// protocol, and the producer drops this consumer ([`crate::Producer::consumer_misbehaviour`]).
    pub fn producer_socket(&self) -> Option<BorrowedFd<'_>> {
        self.producer
            .as_ref()
            .and_then(Link::socket_fd)
            .map(|fd| fd.as_fd())
    }

    /// What the producer did to be taken for gone, if it broke the protocol (wrote to the socket
    /// after the handshake); `None` while it behaves, or when it merely died.
    pub fn producer_misbehaviour(&self) -> Option<&QueueError> {
        self.producer.as_ref().and_then(Link::misbehaviour)
    }

    /// What the consumer can do now, without waiting and without changing anything:
    /// [`Readiness::FAULTS`] (records wait), [`Readiness::RESPONSE_ROOM`] (a response fits),
    /// [`Readiness::PEER_GONE`] (the producer is gone; one `poll()` for a producer in another
    /// process).
    pub fn ready(&mut self) -> Readiness {
        let mut r = Readiness::empty();
        if fault_published(&self.shared, self.reader.tail()) || !self.owed_broken.is_empty() {
            r |= Readiness::FAULTS;
        }
        if self.resp_room() > 0 {
            r |= Readiness::RESPONSE_ROOM;
        }
        if self.producer_gone() {
            r |= Readiness::PEER_GONE;
        }
        r
    }

    /// Prepares to sleep on the consumer's descriptor ([`AsFd`]) until something in `want`
    /// ([`Readiness::FAULTS`], [`Readiness::RESPONSE_ROOM`]) may be ready: returns what of
    /// `want` is ready now, plus [`Readiness::PEER_GONE`] when the producer is gone. An empty
    /// answer means: sleep; the producer rings the descriptor when it publishes a record (for
    /// `FAULTS`) or frees response slots (for `RESPONSE_ROOM`, e.g. after [`FaultConsumer::respond`]
    /// took fewer responses than given because the ring was full). Returns the slots read so far
    /// first, so that a producer waiting for room is not kept waiting by a sleeping consumer.
    /// Errors: none today (the signature leaves room for a failed system call).
    pub fn arm(&mut self, want: Readiness) -> Result<Readiness, QueueError> {
        self.return_slots(true);
        // As in `wait_for`: a full verdict ring would stop the producer judging.
        self.collect_rejections();
        let r = self.arm_words(want);
        if r.is_empty() && self.producer_gone() {
            return Ok(Readiness::PEER_GONE);
        }
        Ok(r)
    }

    /// Raises the room-wait word for `RESPONSE_ROOM`, then arms the sleeping word; returns what
    /// of `want` is ready. Both words are lowered again when something is.
    fn arm_words(&mut self, want: Readiness) -> Readiness {
        let want = want & (Readiness::FAULTS | Readiness::RESPONSE_ROOM);
        let room_wait = want.contains(Readiness::RESPONSE_ROOM);
        if room_wait {
            self.shared
                .header()
                .resp_room_wait
                .store(1, Ordering::SeqCst);
        }
        let shared = self.shared.clone();
        let tail = self.reader.tail();
        let owed = !self.owed_broken.is_empty();
        let entries = shared.geo.entries;
        let (head, cached) = (self.resp_head, self.cached_resp_tail);
        let look = || {
            let mut r = Readiness::empty();
            if want.contains(Readiness::FAULTS) && (owed || fault_published(&shared, tail)) {
                r |= Readiness::FAULTS;
            }
            if room_wait && resp_room_now(&shared, head, cached, entries) {
                r |= Readiness::RESPONSE_ROOM;
            }
            r
        };
        let mut got = Readiness::empty();
        let h = self.shared.header();
        let sleeping = if want.contains(Readiness::FAULTS) {
            &h.consumer_sleeping
        } else {
            &h.resp_room_wait
        };
        arm(sleeping, &self.fault_bell, self.membarrier, || {
            got = look();
            !got.is_empty()
        });
        if !got.is_empty() && room_wait {
            self.shared
                .header()
                .resp_room_wait
                .store(0, Ordering::Relaxed);
        }
        got
    }

    /// Responses written so far (the next response's id).
    pub fn responses_sent(&self) -> u64 {
        self.resp_seq
    }

    /// Groups read and not yet answered.
    pub fn held_groups(&self) -> usize {
        self.held.len()
    }

    /// The whole shared region as words. A consumer has write access to all of it anyway; this
    /// is for tools and tests that play a misbehaving consumer. Writing here can only harm this
    /// consumer's own queue.
    #[cfg(not(iopf_loom))]
    pub fn raw_region(&self) -> &[AtomicU64] {
        self.shared.words()
    }

    /// Counts a slot that did not decode, and keeps why ([`Consumer::last_refusal`]).
    #[cold]
    fn refused(&mut self, (why, w): (SlotDefect, SlotWords)) {
        self.stats.corrupt = self.stats.corrupt.saturating_add(1);
        self.last_refusal = Some(why.error(&w));
    }

    /// Why the last slot counted in [`ConsumerStats::corrupt`] was skipped: the record's own
    /// decoding error, or what was wrong with the slot. Only a producer that misbehaves, or a
    /// region scribbled over, gives one.
    pub fn last_refusal(&self) -> Option<&QueueError> {
        self.last_refusal.as_ref()
    }

    // Forced inline kept on measurement: docs/PERFORMANCE.md, "Forced inlining".
    #[inline(always)]
    fn note(&mut self, ev: &Event) {
        match *ev {
            Event::Fault(f) => {
                self.count_record(f.seq);
                if f.request.is_last() {
                    self.hold(&f);
                }
            }
            Event::Unrecoverable { seq, .. } => self.count_record(seq),
            Event::Lost {
                first_seq, count, ..
            } => {
                if first_seq >= self.expected_seq {
                    self.stats.lost = self.stats.lost.saturating_add(count);
                    self.expected_seq = first_seq.saturating_add(count);
                }
            }
        }
    }

    /// Keeps the group whose LAST_PAGE request `f` is, under its cookie. A cookie the producer
    /// repeats while it is held (only a misbehaving producer does) replaces the group.
    #[inline]
    fn hold(&mut self, f: &FaultEvent) {
        let cookie = Cookie::from_raw(f.cookie);
        let facts = GroupFacts::of_last(0, 0, &f.request);
        if let Err(TableError::Taken(_)) = self.held.insert_named(cookie, facts, ()) {
            self.held.remove(cookie);
            let _ = self.held.insert_named(cookie, facts, ());
        }
    }

    /// Who this consumer answers as, to its own table (which the producer's mirrors): cookie
    /// responses are always how its callers name groups locally.
    fn responder(&self) -> Responder {
        Responder {
            device: 0,
            owner: 0,
            agreed: self.agreement.features | Features::COOKIE_RESPONSE,
        }
    }

    /// Counts a record with sequence number `seq`: a gap since the last one is lost records. No
    /// branch on `seq`, which has just come from the producer's core.
    #[inline]
    fn count_record(&mut self, seq: u64) {
        self.stats.records += 1;
        self.stats.lost = self
            .stats
            .lost
            .saturating_add(seq.saturating_sub(self.expected_seq));
        self.expected_seq = seq.saturating_add(1);
    }

    /// Whether `ev` is a record of a broken group `read_faults` answered and is skipping the
    /// rest of ([`Consumer::answer_broken`]): counted, not held nor handed out, whichever reader
    /// meets it. A skipped group's LAST_PAGE ends its skipping; every other record read brings
    /// each skipped group nearer to being forgotten.
    #[cold]
    fn skip_answered(&mut self, ev: &Event) -> bool {
        let mut skipped = None;
        self.skipping.retain_mut(|(cookie, left)| match *ev {
            Event::Fault(f) if f.cookie == *cookie => {
                skipped = Some(f.seq);
                !f.request.is_last()
            }
            _ => {
                *left = left.saturating_sub(1);
                *left > 0
            }
        });
        if let Some(seq) = skipped {
            self.count_record(seq);
        }
        skipped.is_some()
    }

    /// Returns the slots read so far to the producer (publishes `fault_tail`), and wakes the
    /// producer if it sleeps waiting for room for groups it holds back.
    fn commit_tail(&mut self) {
        publish_and_wake(
            &self.shared.header().fault_tail,
            self.reader.tail(),
            &self.shared.header().room_wait,
            &self.resp_bell,
            self.publish,
        );
        self.committed_tail = self.reader.tail();
    }

    /// Returns the slots read so far once an eighth of the ring is waiting to go back, or at once
    /// when `caught_up` (no record is waiting: the producer has nothing more to say until it gets
    /// room, and this consumer may be about to sleep). Returning slots a batch at a time keeps the
    /// tail's cache line from crossing to the consumer and back for every record while the
    /// producer is ahead; it costs the producer at most an eighth of the ring while the consumer
    /// is behind, never a slot while it keeps up.
    fn return_slots(&mut self, caught_up: bool) {
        let lag = self.reader.tail().wrapping_sub(self.committed_tail);
        if lag != 0 && (caught_up || lag >= (self.shared.geo.entries / 8).max(1)) {
            self.commit_tail();
        }
    }

    /// Takes up to `max` records (page requests, loss records and, when agreed, unrecoverable
    /// faults) into `out`, returning how many. A group may be split across calls. A slot that
    /// does not decode is skipped and counted ([`ConsumerStats::corrupt`]), so a corrupted region
    /// cannot wedge the consumer.
    ///
    /// The slots read go back to the producer when this call finds no more records waiting, or
    /// once an eighth of the ring has been read since they last went back: while more records
    /// wait, up to an eighth of the ring can stay out of the producer's reach until the next call
    /// (or [`Consumer::wait`]).
    pub fn pop_events(&mut self, out: &mut Vec<Event>, max: usize) -> Result<usize, QueueError> {
        Ok(match self.agreement.record {
            RecordFormat::IommuFault => self.pop_as(out, max, IOMMU_FAULT_STAMP, |a, w, out| {
                decode_folded_with(a, w, |ev| out.push(ev))
            }),
            RecordFormat::HwptPgfault => self.pop_as(out, max, HWPT_STAMP, |_, w, out| {
                decode_hwpt_with(w, |ev| out.push(ev))
            }),
        })
    }

    /// Takes the next record, if one is waiting: [`Consumer::pop_events`] for one record, as a
    /// single-element queue's `pop`. A slot that does not decode is skipped and counted, as
    /// there. The slots read go back to the producer when no record is waiting after the one
    /// taken (or none was), or once an eighth of the ring has been read since they last went
    /// back.
    #[inline]
    pub fn pop_event(&mut self) -> Option<Event> {
        match self.agreement.record {
            RecordFormat::IommuFault => self.pop_one_as(IOMMU_FAULT_STAMP, decode_folded),
            RecordFormat::HwptPgfault => self.pop_one_as(HWPT_STAMP, |_, w| decode_hwpt(w)),
        }
    }

    /// [`Consumer::pop_event`] for one record format (see [`Consumer::pop_as`]).
    #[inline]
    fn pop_one_as(
        &mut self,
        at: StampAt,
        decode: impl Fn(&Agreement, &SlotWords) -> Result<Event, SlotDefect>,
    ) -> Option<Event> {
        // At most a ring's worth of slots a call, as `pop_events`: a producer that keeps
        // stamping unreadable slots (only a misbehaving one does) cannot keep this call going.
        for _ in 0..self.shared.geo.entries {
            let chunk = self.reader.chunk(&self.shared, 1, at);
            if chunk.len() == 0 {
                break;
            }
            let words = chunk.words(&self.shared, 0);
            self.reader.commit(1);
            match decode(&self.agreement, &words) {
                Ok(ev) if !self.skipping.is_empty() && self.skip_answered(&ev) => {}
                Ok(ev) => {
                    self.note(&ev);
                    // As `pop_events` having taken its `max`: the next slot's stamp says whether
                    // to keep the slots a while, so a consumer that stops calling after the last
                    // waiting record holds none.
                    let caught_up = !self.reader.next_published(&self.shared, at);
                    self.return_slots(caught_up);
                    return Some(ev);
                }
                Err(why) => self.refused((why, words)),
            }
        }
        self.return_slots(true);
        None
    }

    /// [`Consumer::pop_events`] for one record format: `at` is where its slots keep the stamp
    /// and `decode` its slot decoder, which pushes the event onto `out` where it makes it (see
    /// `record::decode_folded_with`), both known at compile time, so the loop is built for that
    /// format alone. The event is then noted where it lies in `out`, not copied. One chunk: at
    /// most a ring's worth a call, so a producer that stamps slots past the ones it was given
    /// back (only a misbehaving one does) cannot keep this call, or `out`, growing.
    #[inline]
    fn pop_as(
        &mut self,
        out: &mut Vec<Event>,
        max: usize,
        at: StampAt,
        decode: impl Fn(&Agreement, &SlotWords, &mut Vec<Event>) -> Result<(), SlotDefect>,
    ) -> usize {
        let max = (max as u64).min(self.shared.geo.entries);
        let chunk = self.reader.chunk(&self.shared, max, at);
        out.reserve(chunk.len() as usize);
        let mut taken = 0;
        for i in 0..chunk.len() {
            let words = chunk.words(&self.shared, i);
            if let Err(why) = decode(&self.agreement, &words, out) {
                self.refused((why, words));
                continue;
            }
            let Some(ev) = out.last() else { continue };
            if !self.skipping.is_empty() && self.skip_answered(ev) {
                out.pop();
            } else {
                self.note(ev);
                taken += 1;
            }
        }
        self.reader.commit(chunk.len());
        // Took fewer than `max`: the chunk ended at a slot not published, the producer has
        // nothing more; took `max`: the next slot's stamp says whether it is ahead (keep the
        // slots a while) or not (give them back).
        let caught_up = chunk.len() < max || !self.reader.next_published(&self.shared, at);
        self.return_slots(caught_up);
        taken
    }

    /// Waits until a record is waiting, the producer is gone, or `timeout` passes (spinning
    /// briefly, then sleeping on the fault eventfd and, for a producer in another process, its
    /// socket). Returns whether a record is waiting.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<bool, QueueError> {
        Ok(self
            .wait_for(Readiness::FAULTS, timeout)?
            .contains(Readiness::FAULTS))
    }

    /// Waits until something in `want` ([`Readiness::FAULTS`], [`Readiness::RESPONSE_ROOM`]) is
    /// ready, the producer is gone, or `timeout` passes; returns what is ready of `want`, with
    /// [`Readiness::PEER_GONE`] when the producer is gone (empty: timed out). Waiting for
    /// `RESPONSE_ROOM` is how a consumer whose [`FaultConsumer::respond`] took fewer responses
    /// than given (a full response ring) waits for the producer to judge some, instead of
    /// spinning.
    pub fn wait_for(
        &mut self,
        want: Readiness,
        timeout: Option<Duration>,
    ) -> Result<Readiness, QueueError> {
        self.return_slots(true);
        // Rejections the producer wrote are taken before sleeping: a full verdict ring stops
        // the producer judging (and accepting) this consumer's other responses.
        self.collect_rejections();
        let want = want & (Readiness::FAULTS | Readiness::RESPONSE_ROOM);
        let room_wait = want.contains(Readiness::RESPONSE_ROOM);
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            if room_wait {
                self.shared
                    .header()
                    .resp_room_wait
                    .store(1, Ordering::SeqCst);
            }
            let shared = self.shared.clone();
            let tail = self.reader.tail();
            let owed = !self.owed_broken.is_empty();
            let (head, cached, entries) =
                (self.resp_head, self.cached_resp_tail, shared.geo.entries);
            let mut got = Readiness::empty();
            let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
            let h = shared.header();
            let sleeping = if want.contains(Readiness::FAULTS) {
                &h.consumer_sleeping
            } else {
                &h.resp_room_wait
            };
            let extra = self
                .producer
                .as_ref()
                .and_then(Link::wake_fd)
                .map(|fd| &**fd);
            let woke = wait_until_woke(
                sleeping,
                &self.fault_bell,
                extra,
                left,
                self.membarrier,
                || {
                    got = Readiness::empty();
                    if want.contains(Readiness::FAULTS) && (owed || fault_published(&shared, tail))
                    {
                        got |= Readiness::FAULTS;
                    }
                    if room_wait && resp_room_now(&shared, head, cached, entries) {
                        got |= Readiness::RESPONSE_ROOM;
                    }
                    !got.is_empty()
                },
            )?;
            if room_wait {
                self.shared
                    .header()
                    .resp_room_wait
                    .store(0, Ordering::Relaxed);
            }
            match woke {
                Woke::Peer => {
                    if self.producer_gone() {
                        return Ok(got | Readiness::PEER_GONE);
                    }
                    if !got.is_empty() || deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                        return Ok(got);
                    }
                }
                _ => return Ok(got),
            }
        }
    }

    /// Room in the response ring.
    fn resp_room(&mut self) -> u64 {
        let entries = self.shared.geo.entries;
        let used = self.resp_head.wrapping_sub(self.cached_resp_tail);
        if used < entries {
            return entries - used;
        }
        let t = self.shared.header().resp_tail.load(Ordering::Acquire);
        if let Some(t) = accept_tail(self.resp_head, self.cached_resp_tail, t) {
            self.cached_resp_tail = t;
        }
        entries - self.resp_head.wrapping_sub(self.cached_resp_tail)
    }

    /// Writes the next response slot. Its first word, with the stamp, goes last: with `Release`
    /// when an earlier slot of this batch is still unpublished, or else kept for
    /// `publish_responses`.
    fn write_slot(&mut self, w: &[u64; RESP_SLOT_WORDS]) {
        Shared::write_stamped(
            self.shared.resp_slot(self.resp_head),
            self.resp_head,
            w,
            RESP_STAMP,
            &mut self.unpublished,
        );
        self.resp_head = self.resp_head.wrapping_add(1);
    }

    /// Writes one response in its own slot; returns its id.
    fn write_response(&mut self, format: RawFormat, bytes: &[u8]) -> u64 {
        self.write_slot(&encode_slot(format, bytes));
        self.resp_seq = self.resp_seq.wrapping_add(1);
        self.resp_seq.wrapping_sub(1)
    }

    /// Writes encoded cookie responses (at most [`Consumer::cookies_per_slot`]) packed in one
    /// slot; each is its own response with its own id and verdict.
    fn write_cookies(&mut self, cookies: &[u64]) {
        self.write_slot(&encode_cookies(cookies));
        self.resp_seq = self.resp_seq.wrapping_add(cookies.len() as u64);
    }

    /// Cookie responses packed per slot: 7, or the ring size if smaller (the producer judges a
    /// slot only when the verdict ring has room for all of its possible rejections).
    fn cookies_per_slot(&self) -> usize {
        COOKIES_PER_SLOT.min(self.shared.geo.entries as usize)
    }

    /// Makes written responses visible — the first unpublished slot's stamp, which releases the
    /// whole batch — and wakes the producer if it sleeps.
    fn publish_responses(&mut self) {
        let Some((index, first)) = self.unpublished.take() else {
            return;
        };
        self.shared
            .header()
            .resp_head
            .store(self.resp_head, Ordering::Relaxed);
        publish_and_wake(
            &self.shared.resp_slot(index).0[RESP_STAMP.word],
            first,
            &self.shared.header().producer_sleeping,
            &self.resp_bell,
            self.publish,
        );
    }

    /// Writes raw response bytes (at most 56) as they are, without any check, and publishes
    /// them. Returns the response's id, or `Ok(None)` when the response ring is full. For old
    /// consumers that build their own structs, and for tests that send bad responses.
    pub fn push_raw_response(
        &mut self,
        format: RawFormat,
        bytes: &[u8],
    ) -> Result<Option<u64>, QueueError> {
        if bytes.len() > RESP_SLOT_BYTES {
            return Err(QueueError::Refused(Rejection::new(RejectReason::Malformed)));
        }
        self.collect_rejections();
        if self.resp_room() == 0 {
            return Ok(None);
        }
        let id = self.write_response(format, bytes);
        self.publish_responses();
        Ok(Some(id))
    }

    /// Answers groups by (PASID, grpid) with the seed's `vfio_iommu_page_response`, version 2
    /// when it was agreed and version 1 otherwise, and publishes them. Each is judged first, by
    /// the judge the producer uses, against the groups this consumer has read: the first one the
    /// producer would reject (no VFIO format agreed, private data without echoing agreed, no held
    /// group with that PRG index, the device's needed PASID missing or wrong, echoed private data
    /// that is not the request's) stops the batch, and is the error if it is the first. Returns
    /// the ids of the responses written, in order (fewer than asked when the ring is full).
    pub fn respond_pages(&mut self, responses: &[PageResponse]) -> Result<Vec<u64>, QueueError> {
        self.pay_owed_broken();
        if !self.agreement.vfio_responses() {
            return Err(QueueError::Refused(Rejection::new(
                RejectReason::FormatNotAgreed,
            )));
        }
        let mut ids = Vec::with_capacity(responses.len());
        self.collect_rejections();
        let who = Responder {
            agreed: self.agreement.features,
            ..self.responder()
        };
        let mut refused = None;
        for r in responses {
            let judged = self.held.judge(
                &who,
                &Response {
                    group: GroupRef::Grpid {
                        pasid: r.pasid,
                        grpid: r.grpid,
                    },
                    code: r.code.raw(),
                    private_data: r.private_data,
                },
            );
            let cookie = match judged {
                Ok(j) => j.cookie,
                Err(why) => {
                    refused = Some(Rejection::judged(why));
                    break;
                }
            };
            if self.resp_room() == 0 {
                break;
            }
            ids.push(self.write_vfio(r)?);
            self.held.remove(cookie);
        }
        self.publish_responses();
        match refused {
            Some(why) if ids.is_empty() => Err(QueueError::Refused(why)),
            _ => Ok(ids),
        }
    }

    /// Writes `r` as a `vfio_iommu_page_response` of the agreed version (not published);
    /// returns its id.
    fn write_vfio(&mut self, r: &PageResponse) -> Result<u64, QueueError> {
        let v2 = self.agreement.responses.contains(ResponseFormats::VFIO_V2);
        let r = PageResponse {
            version: if v2 { 2 } else { 1 },
            ..*r
        };
        let size = if v2 {
            VFIO_PAGE_RESPONSE_V2_SIZE
        } else {
            VFIO_PAGE_RESPONSE_V1_SIZE
        };
        let mut buf = [0u8; VFIO_PAGE_RESPONSE_V2_SIZE];
        let n = r.write_vfio(size, &mut buf)?;
        Ok(self.write_response(RawFormat::Vfio, &buf[..n]))
    }

    /// Counts the records `read_faults` gathered of the group it is reading but its last
    /// (`group_seqs`), once it takes or drops the group.
    fn count_group_records(&mut self) {
        for k in 0..self.group_seqs.len() {
            self.count_record(self.group_seqs[k]);
        }
        self.group_seqs.clear();
    }

    /// The group `out[group_start..written]` that `read_faults` is gathering breaks the ring's
    /// rules (`why`): counted corrupt, kept as the last refusal, and dropped as broken.
    #[cold]
    fn break_group(
        &mut self,
        why: &'static str,
        out: &[PgFault],
        group_start: usize,
        written: usize,
    ) {
        self.stats.corrupt = self.stats.corrupt.saturating_add(1);
        self.last_refusal = Some(QueueError::Corrupt(why));
        self.drop_unfinished(out, group_start, written);
    }

    /// The unfinished group `out[group_start..written]` that `read_faults` was gathering will
    /// not be taken (a record of it could not be read, or something else came between its
    /// records): its records were read, so they are counted, and it is answered broken.
    fn drop_unfinished(&mut self, out: &[PgFault], group_start: usize, written: usize) {
        self.count_group_records();
        if written > group_start {
            let first = out[group_start];
            self.answer_broken(&first);
        }
    }

    /// Answers INVALID the group whose first record read is `first` and one of whose records
    /// could not be read, so that it is not stranded (the caller skips its other records), and
    /// publishes the answer; counted in [`ConsumerStats::answered_broken`].
    #[cold]
    fn answer_broken(&mut self, first: &PgFault) {
        self.stats.answered_broken += 1;
        if self.skipping.len() == BROKEN_REMEMBERED {
            self.skipping.remove(0);
        }
        self.skipping.push((first.cookie, self.shared.geo.entries));
        if self.owed_broken.is_empty() && self.write_broken(first) {
            return;
        }
        if (self.owed_broken.len() as u64) < self.shared.geo.entries {
            // The response ring is full: answered as soon as it has room.
            self.owed_broken.push_back(*first);
        } else {
            self.stats.broken_unanswered += 1;
        }
    }

    /// Answers the broken groups waiting for room, oldest first, while the ring has room.
    #[inline]
    fn pay_owed_broken(&mut self) {
        while let Some(first) = self.owed_broken.front().copied() {
            if !self.write_broken(&first) {
                break;
            }
            self.owed_broken.pop_front();
        }
    }

    /// Writes and publishes the INVALID answer of the broken group whose first record is
    /// `first`; false when the response ring has no room (nothing written).
    #[cold]
    fn write_broken(&mut self, first: &PgFault) -> bool {
        if self.resp_room() == 0 {
            return false;
        }
        if self.agreement.cookie_responses() {
            let one: u64 = zerocopy::transmute!(IommufdResponse {
                cookie: first.cookie,
                code: ResponseCode::Invalid,
            }
            .encode());
            self.write_cookies(&[one]);
        } else {
            let pr = PageResponse {
                version: 1,
                pasid: first.page_request().pasid(),
                grpid: first.grpid,
                code: ResponseCode::Invalid,
                private_data: None,
            };
            if self.write_vfio(&pr).is_err() {
                // A response of the agreed version always encodes: nothing to wait for.
                self.stats.broken_unanswered += 1;
                return true;
            }
        }
        self.publish_responses();
        true
    }

    /// Collects verdicts now if rejections wait in the verdict ring, which the producer must not
    /// find full (it stops judging); accepted responses, which take no entry, are learnt when
    /// [`Consumer::take_verdicts`] asks. Only the verdict head's line is read, which the producer
    /// writes only when it rejects something: an exchange without rejections never pulls the
    /// producer's watermark line (which it writes on every drain) over to this core.
    fn collect_rejections(&mut self) {
        if self.shared.header().verdict_head.load(Ordering::Relaxed) != self.verdict_tail {
            self.collect_verdicts();
        }
    }

    /// Learns the producer's verdicts: every response below the producer's `judged`
    /// watermark was judged, the rejected ones have an entry (id, errno, reason) in the verdict
    /// ring, and the rest were accepted. Accepted runs are kept as ranges, so an accepted
    /// response costs no ring entry and no per-response work here.
    fn collect_verdicts(&mut self) {
        let judged = self.shared.header().judged.load(Ordering::Acquire);
        let ahead = judged.wrapping_sub(self.judged);
        if ahead == 0 || ahead > self.resp_seq.wrapping_sub(self.judged) {
            // Nothing new, or a watermark beyond the responses sent (only a scribbled region).
            return;
        }
        // Loaded after the watermark: every rejection below it is visible.
        let head = self.shared.header().verdict_head.load(Ordering::Acquire);
        let n = head.wrapping_sub(self.verdict_tail);
        if n > self.shared.geo.entries {
            // Only a scribbled region: learn nothing rather than call a rejection accepted.
            return;
        }
        {
            for _ in 0..n {
                let verdict = &self.shared.verdict_slot(self.verdict_tail).0;
                let id = verdict[0].load(Ordering::Relaxed);
                // Relative to the first response still without a verdict (which moves as
                // rejections are taken): below `judged` is this round's, up to `resp_seq` a
                // later round's, anything else only a scribbled region has.
                let rel = id.wrapping_sub(self.judged);
                if rel >= self.resp_seq.wrapping_sub(self.judged) {
                    self.verdict_tail = self.verdict_tail.wrapping_add(1);
                    continue;
                }
                if rel >= judged.wrapping_sub(self.judged) {
                    break; // Beyond the watermark: next time.
                }
                let (errno, reason) = unpack(verdict[1].load(Ordering::Relaxed));
                self.keep_accepted(id);
                self.stats.rejected += 1;
                self.keep(Kept::Rejected(ResponseVerdict {
                    id,
                    outcome: Err(Rejection {
                        reason: RejectReason::from_raw(reason).unwrap_or(RejectReason::Malformed),
                        errno: errno as i32,
                    }),
                }));
                self.judged = id.wrapping_add(1);
                self.verdict_tail = self.verdict_tail.wrapping_add(1);
            }
            if n > 0 {
                // Wakes a producer that sleeps because the verdict ring was full (it stops
                // judging then, and sleeps until this tail moves).
                publish_and_wake(
                    &self.shared.header().verdict_tail,
                    self.verdict_tail,
                    &self.shared.header().producer_sleeping,
                    &self.resp_bell,
                    self.publish,
                );
            }
        }
        self.keep_accepted(judged);
        self.judged = judged;
    }

    /// Keeps the responses from `self.judged` up to (not including) `end` as accepted.
    fn keep_accepted(&mut self, end: u64) {
        let count = end.wrapping_sub(self.judged);
        if count == 0 {
            return;
        }
        self.stats.accepted += count;
        match self.verdicts.back_mut() {
            Some(Kept::Accepted { first, count: c }) if first.wrapping_add(*c) == self.judged => {
                *c += count;
                self.kept += count;
                self.trim_kept();
            }
            _ => self.keep(Kept::Accepted {
                first: self.judged,
                count,
            }),
        }
    }

    fn keep(&mut self, k: Kept) {
        self.kept += k.len();
        self.verdicts.push_back(k);
        self.trim_kept();
    }

    /// Drops the oldest kept verdicts beyond [`MAX_KEPT_VERDICTS`], counting them.
    fn trim_kept(&mut self) {
        while self.kept > MAX_KEPT_VERDICTS as u64 {
            let excess = self.kept - MAX_KEPT_VERDICTS as u64;
            let Some(front) = self.verdicts.front_mut() else {
                self.kept = 0;
                return;
            };
            let dropped = match front {
                Kept::Accepted { first, count } if *count > excess => {
                    *first = first.wrapping_add(excess);
                    *count -= excess;
                    excess
                }
                _ => {
                    let len = front.len();
                    self.verdicts.pop_front();
                    len
                }
            };
            self.kept -= dropped;
            self.stats.verdicts_dropped += dropped;
        }
    }

    /// Moves the verdicts received so far into `out`, oldest first.
    pub fn take_verdicts(&mut self, out: &mut Vec<ResponseVerdict>) -> usize {
        self.collect_verdicts();
        let before = out.len();
        for k in self.verdicts.drain(..) {
            match k {
                Kept::Accepted { first, count } => {
                    out.extend((0..count).map(|i| ResponseVerdict {
                        id: first.wrapping_add(i),
                        outcome: Ok(()),
                    }))
                }
                Kept::Rejected(v) => out.push(v),
            }
        }
        self.kept = 0;
        out.len() - before
    }

    /// Closes the consumer's end: the producer answers every group it still holds INVALID.
    /// Dropping the consumer does the same.
    pub fn close(self) {}

    fn to_pgfault(f: &FaultEvent) -> PgFault {
        PgFault::composed(f.dev_id, f.cookie, &f.request)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.shared
            .header()
            .flags
            .fetch_or(FLAG_CONSUMER_CLOSED, Ordering::SeqCst);
        self.resp_bell.ring();
    }
}

impl FaultConsumer for Consumer {
    type Error = QueueError;

    /// Whole groups only, as `iommufd_fault_fops_read()`; loss records are skipped (counted in
    /// [`ConsumerStats::lost`]), and so are unrecoverable fault records, which the iommufd
    /// record cannot express (counted in [`ConsumerStats::records`] and kept in the sequence, so
    /// they are not taken for losses; read them with [`Consumer::pop_events`]). A group one of
    /// whose records cannot be read (a corrupt slot, or a loss or unrecoverable record inside
    /// it: only a misbehaving producer or a scribbled region gives one) is not handed out: the
    /// consumer answers it INVALID itself ([`ConsumerStats::answered_broken`]) and skips the rest
    /// of it, so that it is not stranded. `EINVAL` ([`QueueError::Inconsistent`]) when the first
    /// group does not fit in `out`.
    fn read_faults(&mut self, out: &mut [PgFault]) -> Result<usize, QueueError> {
        if !self.owed_broken.is_empty() {
            self.pay_owed_broken();
        }
        let chunk = self
            .reader
            .chunk(&self.shared, u64::MAX, self.shared.geo.stamp);
        // Slot `i` of the chunk is read next; slots below `done` are committed.
        let (mut i, mut done) = (0u64, 0u64);
        let mut written = 0;
        let mut group_start = 0;
        let largest = self.agreement.largest_group() as usize;
        self.group_seqs.clear();
        while i < chunk.len() {
            let words = chunk.words(&self.shared, i);
            let ev = match decode_slot_fast(&self.agreement, &words) {
                Ok(ev) => ev,
                Err(why) => {
                    // Skip the slot and answer the unfinished group it breaks.
                    self.refused((why, words));
                    self.drop_unfinished(out, group_start, written);
                    i += 1;
                    done = i;
                    written = group_start;
                    continue;
                }
            };
            match ev {
                Event::Lost { .. } | Event::Unrecoverable { .. } => {
                    self.drop_unfinished(out, group_start, written);
                    self.note(&ev);
                    i += 1;
                    done = i;
                    written = group_start;
                }
                Event::Fault(_) if !self.skipping.is_empty() && self.skip_answered(&ev) => {
                    // The rest of a group already answered: counted, not taken.
                    i += 1;
                    done = i;
                }
                Event::Fault(f) => {
                    if written > group_start && out[group_start].cookie != f.cookie {
                        // The producer writes a group's records together: a record of another
                        // group before LAST_PAGE means the first one was cut short.
                        self.break_group(
                            "a group's records interrupted by another group's",
                            out,
                            group_start,
                            written,
                        );
                        done = i;
                        written = group_start;
                    }
                    let Some(slot) = out.get_mut(written) else {
                        break;
                    };
                    *slot = Consumer::to_pgfault(&f);
                    written += 1;
                    i += 1;
                    if f.request.is_last() {
                        // The group is complete: account for its records and take it.
                        self.count_group_records();
                        self.note(&ev);
                        done = i;
                        group_start = written;
                    } else {
                        self.group_seqs.push(f.seq);
                        if written - group_start >= largest {
                            // As many records as the largest group the agreement allows (at
                            // most the ring) and none of them LAST_PAGE: it cannot end. Broken,
                            // lest it wedge the queue; the rest of it is skipped.
                            self.break_group(
                                "a group past the largest agreed with no LAST_PAGE",
                                out,
                                group_start,
                                written,
                            );
                            done = i;
                            written = group_start;
                        }
                    }
                }
            }
        }
        self.reader.commit(done);
        self.commit_tail();
        if group_start == 0 && done != chunk.len() && out.len() <= written {
            return Err(QueueError::Inconsistent(
                "the first waiting group does not fit",
            ));
        }
        Ok(group_start)
    }

    /// Answers groups by cookie, in order, stopping at the first response the judge refuses
    /// (an unknown cookie: `EINVAL`, as `iommufd_fault_fops_write()`; FAILURE where the agreement
    /// does not carry it), or when the response ring is full. With cookie responses agreed it
    /// sends them as they are; otherwise it builds the VFIO response from the held group (PASID,
    /// grpid, private data when echoing was agreed).
    fn respond(&mut self, responses: &[IommufdResponse]) -> Result<usize, QueueError> {
        if !self.owed_broken.is_empty() {
            self.pay_owed_broken();
        }
        let mut done = 0;
        let cookie = self.agreement.cookie_responses();
        let failure_ok = !cookie || self.agreement.features.contains(Features::COOKIE_FAILURE);
        let v2 = self.agreement.responses.contains(ResponseFormats::VFIO_V2);
        let echo = self.agreement.echoes_private_data();
        let who = self.responder();
        // Cookie responses go packed, up to `per_slot` to a slot (one cache line).
        let per_slot = self.cookies_per_slot();
        let mut packed = [0u64; COOKIES_PER_SLOT];
        let mut k = 0;
        let mut refused = None;
        for r in responses {
            if r.code == ResponseCode::Failure && !failure_ok {
                refused = Some(Rejection::new(RejectReason::Decode));
                break;
            }
            let response = Response::by_cookie(Cookie::from_raw(r.cookie), r.code);
            if cookie {
                if k == 0 && self.resp_room() == 0 {
                    break;
                }
                // Judged and forgotten at once: the response goes out now.
                if let Err(why) = self.held.take(&who, &response) {
                    refused = Some(Rejection::judged(why));
                    break;
                }
                let one: u64 = zerocopy::transmute!(r.encode());
                packed[k] = one;
                k += 1;
                if k == per_slot {
                    self.write_cookies(&packed[..k]);
                    k = 0;
                }
            } else {
                let facts = match self.held.judge(&who, &response) {
                    Ok(j) => j.facts,
                    Err(why) => {
                        refused = Some(Rejection::judged(why));
                        break;
                    }
                };
                if self.resp_room() == 0 {
                    break;
                }
                let pr = PageResponse {
                    version: if v2 { 2 } else { 1 },
                    pasid: facts.pasid,
                    grpid: facts.grpid,
                    code: r.code,
                    private_data: if echo { facts.private_data } else { None },
                };
                self.write_vfio(&pr)?;
                self.held.remove(Cookie::from_raw(r.cookie));
            }
            done += 1;
        }
        if k > 0 {
            self.write_cookies(&packed[..k]);
        }
        if done > 0 {
            self.publish_responses();
        }
        // After the responses are published, not before: reading the verdict ring's head would
        // otherwise sit between a record's arrival and its response on the round trip.
        self.collect_rejections();
        match refused {
            Some(why) if done == 0 => Err(QueueError::Refused(why)),
            _ => Ok(done),
        }
    }

    fn wait_readable(&mut self, timeout: Option<Duration>) -> Result<bool, QueueError> {
        self.wait(timeout)
    }

    /// When the agreed records are whole `struct iommu_fault`s and `PRIV_DATA_ECHO` was agreed:
    /// only then does the producer deliver the private data (the iommufd record has no room for
    /// it, and without the echo the producer keeps it to itself).
    fn carries_private_data(&self) -> bool {
        self.agreement.record == RecordFormat::IommuFault && self.agreement.echoes_private_data()
    }

    /// From the consumer's table of the groups it handed out (the LAST_PAGE request's).
    fn private_data(&self, cookie: u32) -> Option<[u64; 2]> {
        self.held
            .get(Cookie::from_raw(cookie))
            .and_then(|(facts, _)| facts.private_data)
    }
}

impl AsFd for Consumer {
    /// The descriptor an event loop sleeps on after [`Consumer::arm`]: readable when a record
    /// was published, response slots were freed (when armed for them), or the producer (in
    /// another process) died. See [`crate::readiness`].
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.poll_fd.as_fd()
    }
}

/// Whether the response ring, with `head` written and `cached` the tail last read, has room once
/// the producer's tail is read now.
fn resp_room_now(shared: &Shared, head: u64, cached: u64, entries: u64) -> bool {
    let t = shared.header().resp_tail.load(Ordering::Acquire);
    let tail = accept_tail(head, cached, t).unwrap_or(cached);
    head.wrapping_sub(tail) < entries
}

/// Whether the producer has published fault slot `index` (it carries the index's stamp).
fn fault_published(shared: &Shared, index: u64) -> bool {
    slot_published(shared, index, shared.geo.stamp)
}

/// [`fault_published`] with the format's stamp position given.
#[inline]
fn slot_published(shared: &Shared, index: u64, at: StampAt) -> bool {
    Shared::stamped(shared.fault_slot(index), at, stamp(index))
}

impl std::os::fd::AsRawFd for Consumer {
    /// The [`AsFd`] descriptor's number, for reactors that take raw descriptors (tokio's
    /// `AsyncFd`, mio's `SourceFd`). Owned by the consumer: do not close it.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// Broken groups whose other records the consumer remembers to skip, at most.
const BROKEN_REMEMBERED: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{channel, Offer, ProducerConfig, Request, TaggedGroup};
    use iopf_abi::features::RecordFormats;
    use iopf_abi::{Features, PageRequest, PageRequestFlags, Perm, ResponseCode};
    use zerocopy::IntoBytes;

    /// A run of slots written at once is written as the slots one at a time would be, across
    /// the ring's end: every slot but the first stamped (`Release`), the first's stamp held for
    /// the publication, and a run written while a stamp is held stamps all of its slots.
    #[test]
    fn a_run_of_stamped_slots_is_the_slots_written_one_at_a_time() {
        let (_p, c) = queue(8);
        let shared = c.shared.clone();
        let at = shared.geo.stamp;
        let words = |i: u64| -> SlotWords {
            let mut w = [0u64; 8];
            for (k, v) in w.iter_mut().enumerate() {
                *v = at.clear(i * 100 + k as u64);
            }
            w
        };
        let stamped = |i: u64| at.set(words(i)[at.word], crate::layout::stamp(i));
        let read = |i: u64| Shared::copy_published(shared.fault_slot(i));
        let mut held = crate::shared::HeldStamp::default();
        let n = Shared::write_stamped_run(shared.faults(), 5, at, &mut held, (5..10).map(words));
        assert_eq!(n, 5);
        assert_eq!(held.take(), Some((5, stamped(5))));
        assert_eq!(
            read(5)[at.word],
            0,
            "the first stamp waits for the publication"
        );
        for i in 6..10 {
            let mut want = words(i);
            want[at.word] = stamped(i);
            assert_eq!(read(i), want, "slot {i}");
        }
        // With a stamp already held, the run's first slot is stamped too.
        let mut held = crate::shared::HeldStamp::default();
        Shared::write_stamped(shared.fault_slot(10), 10, &words(10), at, &mut held);
        assert_eq!(
            Shared::write_stamped_run(shared.faults(), 11, at, &mut held, (11..13).map(words)),
            2
        );
        assert_eq!(held.take(), Some((10, stamped(10))));
        assert_eq!(read(11)[at.word], stamped(11));
        assert_eq!(read(12)[at.word], stamped(12));
    }

    fn queue(entries: u32) -> (crate::Producer, Consumer) {
        let offer = Offer::current();
        let mut r = Request::best_for(
            &offer,
            RecordFormats::HWPT_PGFAULT,
            Features::COOKIE_RESPONSE,
        )
        .unwrap();
        r.entries = entries;
        channel(&offer, &r, ProducerConfig::default()).unwrap()
    }

    /// Regression (review of the chunked reader): `pop_event` skipped unreadable slots without
    /// bound, so a producer that kept stamping them just ahead of the reader (only a misbehaving
    /// one does) kept one call from returning; `pop_events` stopped at a ring's worth. The
    /// writer thread is paced at thrice the reader's cost per slot so that it stays ahead of the
    /// reader without lapping it; whatever the pacing, one call may skip a ring's worth at most.
    #[test]
    fn one_pop_event_skips_a_ring_of_unreadable_slots_at_most() {
        const N: u64 = 4096;
        let (_p, mut c) = queue(N as u32);
        let shared = c.shared.clone();
        let at = shared.geo.stamp;
        let write = move |i: u64| {
            let mut words = [0u64; 8];
            words[0] = i; // seq
            words[1] = 0xdead_0000_0000_0007; // a slot kind nobody defined
            let slot = shared.fault_slot(i);
            let stamped = Shared::write_unstamped(slot, &words, at, crate::layout::stamp(i));
            slot.0[at.word].store(stamped, Ordering::Release);
        };
        for i in 0..N {
            write(i);
        }
        let t = std::time::Instant::now();
        assert!(c.pop_event().is_none());
        let per_slot = t.elapsed() / N as u32;
        assert_eq!(c.stats().corrupt, N);
        for i in N..2 * N {
            write(i);
        }
        let go = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let go2 = go.clone();
        let writer = std::thread::spawn(move || {
            while !go2.load(Ordering::Acquire) {}
            let t = std::time::Instant::now();
            while t.elapsed() < per_slot * (N as u32 / 4) {}
            for i in 2 * N..6 * N {
                write(i);
                let t = std::time::Instant::now();
                while t.elapsed() < per_slot * 3 {}
            }
        });
        go.store(true, Ordering::Release);
        assert!(c.pop_event().is_none());
        writer.join().unwrap();
        let skipped = c.stats().corrupt - N;
        assert!(
            skipped <= N,
            "one call skipped {skipped} slots of a {N}-slot ring"
        );
    }

    /// The one reader: a group `read_faults` cannot fit stays in the ring and is read again
    /// whole by the next call; each record is counted once, when its group is taken, and none
    /// is taken for lost. Before the chunked reader each slot was decoded twice per call; the
    /// counts must not have changed with it.
    #[test]
    fn a_group_cut_short_is_read_again_whole_and_counted_once() {
        let (mut p, mut c) = queue(64);
        let req = |grpid: u32, last: bool| PageRequest {
            flags: if last {
                PageRequestFlags::LAST_PAGE
            } else {
                PageRequestFlags::empty()
            },
            pasid: 0,
            grpid,
            perm: Perm::READ,
            addr: u64::from(grpid) << 12,
            private_data: [0, 0],
        };
        for g in 0..3u32 {
            let requests = [req(g, false), req(g, true)];
            p.push_group(&TaggedGroup {
                tag: u64::from(g),
                dev_id: 0,
                requests: &requests,
            })
            .unwrap();
        }
        let mut out = [PgFault::from_bytes(&[0; 40]).unwrap(); 3];
        assert_eq!(
            c.read_faults(&mut out).unwrap(),
            2,
            "one whole group fits in 3"
        );
        assert_eq!((c.stats().records, c.stats().lost), (2, 0));
        assert_eq!(c.held_groups(), 1);
        let mut out = [PgFault::from_bytes(&[0; 40]).unwrap(); 8];
        assert_eq!(c.read_faults(&mut out).unwrap(), 4);
        assert_eq!(out[0].grpid, 1, "the group cut short comes first, whole");
        assert_eq!((c.stats().records, c.stats().lost), (6, 0));
        assert_eq!(c.held_groups(), 3);
        assert_eq!(c.read_faults(&mut out).unwrap(), 0);
    }

    /// Regression (review of the C API): the consumer said it carried private data whatever
    /// records were agreed, so a VT-d 3.0 bridge over iommufd records gave its guest none.
    #[test]
    fn private_data_is_carried_only_by_iommu_fault_records() {
        let (_p, hwpt) = queue(8);
        assert!(!hwpt.carries_private_data());
        let offer = Offer::current();
        let consumer = |features| {
            let r = Request::best_for(&offer, RecordFormats::IOMMU_FAULT, features).unwrap();
            channel(&offer, &r, ProducerConfig::default()).unwrap().1
        };
        // Without the echo the producer strips the private data from the records.
        assert!(!consumer(Features::COOKIE_RESPONSE).carries_private_data());
        assert!(
            consumer(Features::COOKIE_RESPONSE | Features::PRIV_DATA_ECHO).carries_private_data()
        );
    }

    /// Pushes and answers `n` one-request groups; every `reject_every`-th response names a
    /// cookie nobody holds (sent raw, so the producer rejects it).
    fn exchange(p: &mut crate::Producer, c: &mut Consumer, n: u64, reject_every: u64) {
        let mut answers = Vec::new();
        let mut evs = Vec::new();
        for i in 0..n {
            let request = PageRequest {
                flags: PageRequestFlags::LAST_PAGE,
                pasid: 0,
                grpid: (i % 512) as u32,
                perm: Perm::READ,
                addr: i << 12,
                private_data: [0, 0],
            };
            p.push_group(&TaggedGroup {
                tag: i,
                dev_id: 0,
                requests: &[request],
            })
            .unwrap();
            evs.clear();
            c.pop_events(&mut evs, 4).unwrap();
            let Some(Event::Fault(f)) = evs.first() else {
                panic!("no record")
            };
            if reject_every != 0 && i % reject_every == 0 {
                let bad = IommufdResponse {
                    cookie: f.cookie ^ 0x8000_0000,
                    code: ResponseCode::Success,
                };
                c.push_raw_response(RawFormat::Cookie, bad.encode().as_bytes())
                    .unwrap()
                    .unwrap();
            }
            let ok = IommufdResponse {
                cookie: f.cookie,
                code: ResponseCode::Success,
            };
            assert_eq!(c.respond(&[ok]).unwrap(), 1);
            answers.clear();
            while p.drain_responses(&mut answers) > 0 {}
            assert_eq!(answers.len(), 1);
        }
    }

    #[test]
    fn accepted_responses_take_no_verdict_entry_and_still_get_a_verdict() {
        let (mut p, mut c) = queue(4);
        exchange(&mut p, &mut c, 40, 0);
        assert_eq!(c.shared.header().verdict_head.load(Ordering::Acquire), 0);
        let mut v = Vec::new();
        assert_eq!(c.take_verdicts(&mut v), 40);
        assert!(v.iter().all(|v| v.outcome.is_ok()));
        assert_eq!(
            v.iter().map(|v| v.id).collect::<Vec<_>>(),
            (0..40).collect::<Vec<_>>()
        );
        assert_eq!((c.stats().accepted, c.stats().rejected), (40, 0));
    }

    #[test]
    fn rejections_interleave_with_accepted_runs_in_id_order() {
        let (mut p, mut c) = queue(4);
        // 30 groups, a bad response before every third good one: 40 responses in all.
        exchange(&mut p, &mut c, 30, 3);
        let mut v = Vec::new();
        assert_eq!(c.take_verdicts(&mut v), 40);
        assert_eq!(
            v.iter().map(|v| v.id).collect::<Vec<_>>(),
            (0..40).collect::<Vec<_>>()
        );
        let rejected: Vec<u64> = v
            .iter()
            .filter(|v| v.outcome.is_err())
            .map(|v| v.id)
            .collect();
        // Group i (i % 3 == 0) sends its bad response first: ids 0, 4, 8, ...
        assert_eq!(rejected, (0..10).map(|k| 4 * k).collect::<Vec<_>>());
        assert!(v
            .iter()
            .filter_map(|v| v.outcome.err())
            .all(|r| r.reason == RejectReason::UnknownGroup));
        assert_eq!((c.stats().accepted, c.stats().rejected), (30, 10));
    }

    #[test]
    fn kept_verdicts_are_capped_oldest_first_and_the_drop_is_counted() {
        let (mut p, mut c) = queue(64);
        let n = MAX_KEPT_VERDICTS as u64 + 100;
        exchange(&mut p, &mut c, n, 1000);
        let sent = c.responses_sent();
        let mut v = Vec::new();
        assert_eq!(c.take_verdicts(&mut v), MAX_KEPT_VERDICTS);
        assert_eq!(c.stats().verdicts_dropped, sent - MAX_KEPT_VERDICTS as u64);
        assert_eq!(v.last().map(|v| v.id), Some(sent - 1));
        assert!(v.windows(2).all(|w| w[1].id == w[0].id + 1));
    }

    /// Pushes `n` one-request groups and reads them; returns their cookies.
    fn deliver(p: &mut crate::Producer, c: &mut Consumer, n: u64) -> Vec<u32> {
        let mut evs = Vec::new();
        for i in 0..n {
            let request = PageRequest {
                flags: PageRequestFlags::LAST_PAGE,
                pasid: 0,
                grpid: i as u32,
                perm: Perm::READ,
                addr: i << 12,
                private_data: [0, 0],
            };
            p.push_group(&TaggedGroup {
                tag: i,
                dev_id: 0,
                requests: &[request],
            })
            .unwrap();
        }
        c.pop_events(&mut evs, n as usize).unwrap();
        evs.iter()
            .filter_map(|e| match e {
                Event::Fault(f) => Some(f.cookie),
                Event::Lost { .. } | Event::Unrecoverable { .. } => None,
            })
            .collect()
    }

    /// A SUCCESS cookie response for each cookie.
    fn successes(cookies: &[u32]) -> Vec<IommufdResponse> {
        cookies
            .iter()
            .map(|&cookie| IommufdResponse {
                cookie,
                code: ResponseCode::Success,
            })
            .collect()
    }

    #[test]
    fn cookie_responses_share_slots_and_each_gets_its_own_verdict() {
        let (mut p, mut c) = queue(64);
        let cookies = deliver(&mut p, &mut c, 20);
        let rs = successes(&cookies);
        assert_eq!(c.respond(&rs).unwrap(), 20);
        // 20 responses, 7 to a slot: 3 slots, 20 ids.
        assert_eq!(c.shared.header().resp_head.load(Ordering::Acquire), 3);
        assert_eq!(c.responses_sent(), 20);
        let mut answers = Vec::new();
        assert_eq!(p.drain_responses(&mut answers), 20);
        let mut tags: Vec<u64> = answers.iter().map(|a| a.tag).collect();
        tags.sort_unstable();
        assert_eq!(tags, (0..20).collect::<Vec<_>>());
        let mut v = Vec::new();
        assert_eq!(c.take_verdicts(&mut v), 20);
        assert!(v.iter().all(|v| v.outcome.is_ok()));
    }

    #[test]
    fn a_small_ring_packs_no_more_than_its_verdict_ring_can_reject() {
        let (mut p, mut c) = queue(2);
        let cookies = deliver(&mut p, &mut c, 2);
        let rs = successes(&cookies);
        assert_eq!(c.respond(&rs).unwrap(), 2);
        let mut answers = Vec::new();
        while p.drain_responses(&mut answers) > 0 {}
        assert_eq!(answers.len(), 2);
    }

    #[test]
    fn a_forged_packed_slot_is_one_malformed_response() {
        let (mut p, mut c) = queue(4);
        let cookies = deliver(&mut p, &mut c, 1);
        let good = IommufdResponse {
            cookie: cookies[0],
            code: ResponseCode::Success,
        };
        let one: u64 = zerocopy::transmute!(good.encode());
        // Seven packed responses in a 4-entry queue, a length that is not whole responses, and
        // an empty packed slot: each is one malformed response, and the good cookie inside the
        // first is not acted on.
        for (len, k) in [(56u32, 7usize), (12, 2), (0, 0)] {
            let mut w = encode_cookies(&[one; COOKIES_PER_SLOT][..k.max(1)]);
            w[0] = crate::layout::resp_word(len, crate::layout::RESP_COOKIES);
            let id = c.resp_seq;
            c.write_slot(&w);
            c.resp_seq += 1;
            c.publish_responses();
            let mut answers = Vec::new();
            assert_eq!(p.drain_responses(&mut answers), 1);
            assert!(answers.is_empty());
            let mut v = Vec::new();
            assert_eq!(c.take_verdicts(&mut v), 1);
            assert_eq!(v[0].id, id);
            assert_eq!(
                v[0].outcome.err().map(|r| r.reason),
                Some(RejectReason::Malformed)
            );
        }
        assert_eq!(c.respond(&[good]).unwrap(), 1);
        let mut answers = Vec::new();
        assert_eq!(p.drain_responses(&mut answers), 1);
        assert_eq!(answers.len(), 1);
    }

    #[test]
    fn rejections_published_past_the_watermark_wait_for_it() {
        // The producer publishes rejection entries before its watermark, so a consumer can see
        // entries beyond the watermark it loaded: they must wait for the next collection.
        let (mut p, mut c) = queue(8);
        for _ in 0..4 {
            c.push_raw_response(RawFormat::Cookie, &[1, 2, 3])
                .unwrap()
                .unwrap();
        }
        let mut answers = Vec::new();
        assert_eq!(p.drain_responses(&mut answers), 4);
        c.shared.header().judged.store(3, Ordering::Release);
        let mut v = Vec::new();
        assert_eq!(c.take_verdicts(&mut v), 3);
        assert_eq!(v.iter().map(|v| v.id).collect::<Vec<_>>(), vec![0, 1, 2]);
        c.shared.header().judged.store(4, Ordering::Release);
        v.clear();
        assert_eq!(c.take_verdicts(&mut v), 1);
        assert_eq!(v[0].id, 3);
        assert!(v[0].outcome.is_err());
        assert_eq!((c.stats().accepted, c.stats().rejected), (0, 4));
    }
}
