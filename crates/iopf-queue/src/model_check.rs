//! The ring's protocol, model-checked with loom: the code the two ends run (stamps, tails given
//! back, the held stamp of a batch, the sleep and wake-up handshakes) under every interleaving
//! loom explores, and every value its memory model lets a load return.
//!
//! Built only with `--cfg iopf_loom` (`scripts/loom.sh`, which the test suite runs): the region's
//! words and fences are then loom's ([`crate::sync`]), a doorbell's sleep is a loom condition
//! variable ([`crate::wake`]), and a wake-up the protocol loses leaves a thread blocked for ever,
//! which loom reports as a deadlock. What loom does not model (see `docs/TESTING.md`): the
//! `membarrier(2)` handshake (outside the language's memory model: the last test shows that the
//! light publication is wrong without it, which is why it needs it), `SeqCst` accesses beyond
//! the mapping [`crate::sync`] states, and the in-process atomics that are not region words.
//!
//! Two levels. The protocol tests drive the region's primitives directly ([`Shared`]'s stamped
//! writes and reads, [`accept_tail`], [`publish_and_wake`], [`wait_until_woke`], [`arm`]) with
//! a two-slot ring and few records, so that loom's search is wide; the whole-queue tests run a
//! real [`Producer`] and [`Consumer`] from [`crate::channel`] against each other, backlog and
//! response ring included, with loom's search bounded by preemptions.

use std::sync::Arc;

use loom::thread;

use crate::layout::{accept_tail, Geometry, FAULT_SLOT_WORDS, HWPT_STAMP};
use crate::negotiate::negotiate;
use crate::read_chunk::FaultReader;
use crate::shared::{HeldStamp, Shared};
use crate::shm::Region;
use crate::wake::{arm, publish_and_wake, wait_until_woke, Doorbell, Publish, Woke};
use crate::{channel, Consumer, Event, Offer, Producer, ProducerConfig, Request, TaggedGroup};
use iopf_abi::features::RecordFormats;
use iopf_abi::{FaultConsumer, Features, IommufdResponse};
use iopf_abi::{PageRequest, PageRequestFlags, Perm, ResponseCode};
use std::sync::atomic::Ordering;

/// Loom's search, bounded by `preemptions` (`None`: every interleaving) unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise. Prints how many executions it explored (and fails if
/// only one: then nothing interleaved).
fn model(preemptions: Option<usize>, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = preemptions;
    }
    b.max_branches = 1_000_000;
    let executions = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = executions.clone();
    b.check(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        f()
    });
    let n = executions.load(Ordering::Relaxed);
    eprintln!(
        "loom: {n} executions (preemption bound {:?})",
        b.preemption_bound
    );
    assert!(n > 1, "loom explored a single execution");
}

fn agreement(entries: u32) -> crate::negotiate::Agreement {
    let offer = Offer::current();
    let mut r = Request::best_for(
        &offer,
        RecordFormats::HWPT_PGFAULT,
        Features::COOKIE_RESPONSE,
    )
    .expect("the current offer has iommu_hwpt_pgfault records with cookie responses");
    r.entries = entries;
    negotiate(&offer, &r).expect("a two-slot ring is within the offer")
}

/// A region with the geometry of a two-slot `iommu_hwpt_pgfault` ring.
fn region() -> Shared {
    let geo = Geometry::new(&agreement(2));
    let (region, _memfd) = Region::create(&geo).expect("memfd");
    Shared::new(Arc::new(region), geo).expect("the region fits its geometry")
}

/// The words of record `i`: every word says `i`, so a slot read while half written is seen.
fn record(i: u64) -> [u64; FAULT_SLOT_WORDS] {
    let mut w = [0u64; FAULT_SLOT_WORDS];
    for (k, v) in w.iter_mut().enumerate() {
        *v = if k == HWPT_STAMP.word {
            HWPT_STAMP.clear(i.wrapping_mul(0x9e37) + k as u64)
        } else {
            i.wrapping_mul(0x9e37) + k as u64
        };
    }
    w
}

/// Writer side of the fault ring, as [`Producer`] writes it: room from the reader's tail
/// ([`accept_tail`]), slots written with [`Shared::write_stamped`], the batch published by its
/// held first stamp.
struct Writer {
    shared: Shared,
    head: u64,
    cached_tail: u64,
    held: HeldStamp,
}

impl Writer {
    fn room(&mut self) -> u64 {
        let t = self.shared.header().fault_tail.load(Ordering::Acquire);
        let accepted = accept_tail(self.head, self.cached_tail, t);
        assert!(
            accepted.is_some(),
            "the reader's tail went back or past the head"
        );
        self.cached_tail = accepted.unwrap_or(self.cached_tail);
        self.shared.geo.entries - self.head.wrapping_sub(self.cached_tail)
    }

    fn write(&mut self, i: u64) {
        Shared::write_stamped(
            self.shared.fault_slot(self.head),
            self.head,
            &record(i),
            HWPT_STAMP,
            &mut self.held,
        );
        self.head += 1;
    }

    /// Writes records `from..to` as one run ([`Shared::write_stamped_run`], as the producer
    /// writes a batch).
    fn write_run(&mut self, from: u64, to: u64) {
        self.head += Shared::write_stamped_run(
            self.shared.faults(),
            self.head,
            HWPT_STAMP,
            &mut self.held,
            (from..to).map(record),
        );
    }

    fn publish(&mut self, bell: &Doorbell, how: Publish) {
        if let Some((index, stamped)) = self.held.take() {
            publish_and_wake(
                &self.shared.fault_slot(index).0[HWPT_STAMP.word],
                stamped,
                &self.shared.header().consumer_sleeping,
                bell,
                how,
            );
        }
    }
}

/// Reader side, with [`Consumer`]'s own reader ([`FaultReader`]): the slot at the tail when it
/// carries the tail's stamp, the tail given back with [`publish_and_wake`] (which rings the
/// writer if it waits for room).
struct Reader {
    shared: Shared,
    reader: FaultReader,
}

impl Reader {
    fn take(&mut self) -> Option<[u64; FAULT_SLOT_WORDS]> {
        let chunk = self.reader.chunk(&self.shared, 1, HWPT_STAMP);
        if chunk.len() == 0 {
            return None;
        }
        let w = chunk.words(&self.shared, 0);
        self.reader.commit(1);
        Some(w)
    }

    fn give_back(&self, bell: &Doorbell) {
        publish_and_wake(
            &self.shared.header().fault_tail,
            self.reader.tail(),
            &self.shared.header().room_wait,
            bell,
            Publish::Fenced,
        );
    }

    fn published(&mut self) -> bool {
        self.reader.next_published(&self.shared, HWPT_STAMP)
    }
}

/// Strips the stamp the writer put in, to compare a slot with the record written.
fn unstamped(mut w: [u64; FAULT_SLOT_WORDS]) -> [u64; FAULT_SLOT_WORDS] {
    w[HWPT_STAMP.word] = HWPT_STAMP.clear(w[HWPT_STAMP.word]);
    w
}

/// Three records through two slots, the last two as one run (`write_stamped_run`) behind a held
/// stamp; the reader polls. Every record arrives whole (no word from another lap or half
/// written), in order, once; the writer never overwrites a slot the reader has not given back (a
/// tail ahead of the head would fail `room`).
#[test]
fn model_stamped_slots_arrive_whole_in_order_and_once() {
    model(None, || {
        let shared = region();
        let (wbell, rbell) = (
            Doorbell::new().expect("eventfd"),
            Doorbell::new().expect("eventfd"),
        );
        let mut reader = Reader {
            shared: shared.clone(),
            reader: FaultReader::default(),
        };
        let read = thread::spawn(move || {
            let mut got = Vec::new();
            while got.len() < 3 {
                match reader.take() {
                    Some(w) => {
                        got.push(unstamped(w));
                        reader.give_back(&rbell);
                    }
                    None => thread::yield_now(),
                }
            }
            got
        });
        let mut w = Writer {
            shared,
            head: 0,
            cached_tail: 0,
            held: HeldStamp::default(),
        };
        while w.room() < 1 {
            thread::yield_now();
        }
        w.write(0);
        w.publish(&wbell, Publish::Fenced);
        while w.room() < 2 {
            thread::yield_now();
        }
        w.write_run(1, 3);
        w.publish(&wbell, Publish::Fenced);
        let got = read.join().expect("reader");
        assert_eq!(got, vec![record(0), record(1), record(2)]);
    });
}

/// The consumer's sleep against the producer's publication ([`Publish::Fenced`], the default):
/// the reader waits for each record with [`wait_until_woke`] (spins once, raises its sleeping
/// word, fences, looks, sleeps on the bell); the writer publishes with [`publish_and_wake`]. A
/// lost wake-up leaves the reader asleep: loom reports the deadlock.
#[test]
fn model_a_sleeping_consumer_is_woken_for_every_publication() {
    model(None, || sleeper_against_publisher(Publish::Fenced));
}

fn sleeper_against_publisher(how: Publish) {
    let shared = region();
    let bell = Doorbell::new().expect("eventfd");
    let twin = bell.twin().expect("dup");
    let mut reader = Reader {
        shared: shared.clone(),
        reader: FaultReader::default(),
    };
    let read = thread::spawn(move || {
        for _ in 0..2 {
            let sleeping = reader.shared.clone();
            wait_until_woke(
                &sleeping.header().consumer_sleeping,
                &twin,
                None,
                None,
                false,
                || reader.published(),
            )
            .expect("a wait without a timeout or a socket");
            assert!(reader.take().is_some(), "woken with nothing to read");
        }
    });
    let mut w = Writer {
        shared,
        head: 0,
        cached_tail: 0,
        held: HeldStamp::default(),
    };
    for i in 0..2 {
        w.write(i);
        w.publish(&bell, how);
    }
    read.join().expect("reader");
}

/// The producer waiting for room (its groups held back) against the consumer giving slots back:
/// the writer raises `ROOM_WAIT` and sleeps as [`crate::producer`]'s response wait does; the
/// reader's give-back rings it when it sees the word. A lost wake-up is a deadlock.
#[test]
fn model_a_producer_waiting_for_room_is_woken_when_slots_come_back() {
    model(None, || {
        let shared = region();
        let bell = Doorbell::new().expect("eventfd");
        let twin = bell.twin().expect("dup");
        let quiet = Doorbell::new().expect("eventfd");
        let mut w = Writer {
            shared: shared.clone(),
            head: 0,
            cached_tail: 0,
            held: HeldStamp::default(),
        };
        w.write(0);
        w.write(1);
        w.publish(&quiet, Publish::Fenced);
        let mut reader = Reader {
            shared,
            reader: FaultReader::default(),
        };
        let read = thread::spawn(move || {
            while reader.take().is_none() {
                thread::yield_now();
            }
            reader.give_back(&twin);
        });
        // The ring is full: wait for room as the producer does with groups held back.
        let cached = w.cached_tail;
        let s = w.shared.clone();
        s.header().room_wait.store(1, Ordering::SeqCst);
        let woke = wait_until_woke(
            &s.header().producer_sleeping,
            &bell,
            None,
            None,
            false,
            || s.header().fault_tail.load(Ordering::Acquire) != cached,
        )
        .expect("a wait without a timeout or a socket");
        s.header().room_wait.store(0, Ordering::Relaxed);
        assert_ne!(woke, Woke::Peer);
        assert_eq!(w.room(), 1, "the slot given back is free");
        read.join().expect("reader");
    });
}

/// An event loop's half of the handshake ([`arm`]: raise the word, fence, look once more, then
/// sleep on the descriptor) against a publication: when `arm` says sleep, the bell rings.
#[test]
fn model_an_armed_event_loop_is_rung_for_a_publication() {
    model(None, || {
        let shared = region();
        let bell = Doorbell::new().expect("eventfd");
        let twin = bell.twin().expect("dup");
        let mut reader = Reader {
            shared: shared.clone(),
            reader: FaultReader::default(),
        };
        let read = thread::spawn(move || {
            let s = reader.shared.clone();
            if !arm(&s.header().consumer_sleeping, &twin, false, || {
                reader.published()
            }) {
                // What the event loop's epoll does: sleep until the descriptor is readable.
                twin.wait(None, None).expect("the model's wait");
            }
            assert!(reader.published());
        });
        let mut w = Writer {
            shared,
            head: 0,
            cached_tail: 0,
            held: HeldStamp::default(),
        };
        w.write(0);
        w.publish(&bell, Publish::Fenced);
        read.join().expect("reader");
    });
}

/// The checker has teeth: [`Publish::Light`] is correct only because a light waker's sleeper
/// calls `membarrier(2)`, which loom cannot see. Without it the model must find the lost
/// wake-up (the waker's store and its load of the sleeping word pass each other) — if it did
/// not, the tests above would prove nothing about lost wake-ups.
#[test]
fn model_light_publication_without_the_barrier_loses_a_wake_up() {
    let found = std::panic::catch_unwind(|| {
        model(None, || sleeper_against_publisher(Publish::Light));
    });
    assert!(
        found.is_err(),
        "loom found no lost wake-up in a handshake that has one"
    );
}

fn request(i: u64) -> PageRequest {
    PageRequest {
        flags: PageRequestFlags::LAST_PAGE,
        pasid: 0,
        grpid: i as u32,
        perm: Perm::READ,
        addr: i << 12,
        private_data: [0, 0],
    }
}

/// A real [`Producer`] and [`Consumer`] over a two-slot ring, each sleeping when it has nothing
/// to do: the producer pushes three groups (the third is held back until a slot comes back),
/// then waits for responses and drains them (which delivers the backlog); the consumer waits
/// for records, reads them as `read_faults` does, and answers each (waiting for response room
/// when the ring is full). Every group is answered exactly once with the consumer's code; no
/// side sleeps on work the other published (loom reports that as a deadlock).
#[test]
fn model_a_producer_and_a_consumer_answer_every_group_once() {
    whole_queue(Read::PopEvents);
}

/// [`model_a_producer_and_a_consumer_answer_every_group_once`] with the consumer reading as a
/// VMM reads the kernel's fault fd ([`FaultConsumer::read_faults`]: whole groups into a buffer).
#[test]
fn model_a_consumer_reading_like_the_fault_fd_answers_every_group_once() {
    whole_queue(Read::ReadFaults);
}

/// How the whole-queue model's consumer reads.
#[derive(Clone, Copy)]
enum Read {
    PopEvents,
    ReadFaults,
}

fn whole_queue(read: Read) {
    model(Some(2), move || {
        let (p, c) = channel(
            &Offer::current(),
            &Request {
                entries: 2,
                ..Request::best_for(
                    &Offer::current(),
                    RecordFormats::HWPT_PGFAULT,
                    Features::COOKIE_RESPONSE,
                )
                .expect("cookie responses are offered")
            },
            ProducerConfig::default(),
        )
        .expect("an in-process queue");
        let consumer = thread::spawn(move || consume(c, 3, read));
        let answers = produce(p, 3);
        consumer.join().expect("consumer");
        let mut tags: Vec<u64> = answers.iter().map(|a| a.tag).collect();
        tags.sort_unstable();
        assert_eq!(tags, vec![0, 1, 2], "every group answered exactly once");
        assert!(
            answers.iter().all(|a| a.code == ResponseCode::Success),
            "every group answered with the consumer's code, none as \"consumer gone\": {answers:?}"
        );
    });
}

fn produce(mut p: Producer, n: u64) -> Vec<crate::Answer> {
    for i in 0..n {
        p.push_group(&TaggedGroup {
            tag: i,
            dev_id: 0,
            requests: &[request(i)],
        })
        .expect("held back, not lost: the backlog has room");
    }
    let mut answers = Vec::new();
    while (answers.len() as u64) < n {
        if p.drain_responses(&mut answers) == 0 {
            if p.consumer_closed() {
                // The consumer answered everything and left: what it published before it
                // closed is visible now, and `close` judges it.
                p.close(&mut answers);
                break;
            }
            p.wait_responses(None).expect("a wait without a timeout");
            // The wait ends at once once the consumer is gone (its liveness count, which loom
            // does not see, says so) until the flag is seen: a spin, which loom needs told.
            thread::yield_now();
        }
    }
    answers
}

fn consume(mut c: Consumer, n: u64, read: Read) {
    let mut answered = 0;
    let mut events = Vec::new();
    let mut records = [iopf_abi::PgFault::composed(0, 0, &request(0)); 4];
    let mut cookies = Vec::new();
    while answered < n {
        cookies.clear();
        match read {
            Read::PopEvents => {
                events.clear();
                c.pop_events(&mut events, 4).expect("in-process queue");
                for ev in &events {
                    let Event::Fault(f) = ev else {
                        panic!("only faults were pushed: {ev:?}");
                    };
                    cookies.push(f.cookie);
                }
            }
            Read::ReadFaults => {
                let got = c.read_faults(&mut records).expect("groups of one record");
                cookies.extend(records.iter().take(got).map(|r| r.cookie));
            }
        }
        if cookies.is_empty() {
            c.wait(None).expect("a wait without a timeout");
            continue;
        }
        for &cookie in &cookies {
            let r = IommufdResponse {
                cookie,
                code: ResponseCode::Success,
            };
            while c.respond(&[r]).expect("a well-formed response") == 0 {
                c.wait_for(crate::Readiness::RESPONSE_ROOM, None)
                    .expect("a wait without a timeout");
            }
            answered += 1;
        }
    }
}
