//! The fault queue against its peers, measured in one run (see docs/PERFORMANCE.md).
//!
//! ```text
//! cargo bench -p iopf-queue --bench transport            # full run (a few seconds per peer)
//! IOPF_BENCH_SCALE=0.1 cargo bench -p iopf-queue --bench transport   # a quick look
//! IOPF_BENCH_REPS=5 ...                                   # repetitions (default 3), interleaved
//! ```
//!
//! Rows, all moving 64-byte records, at batch 1 and batch 64:
//! * **iopf ring, one way** — this queue carrying `iommu_fault` records one way with its public
//!   API and nothing to answer: `Features::UNRECOVERABLE` is agreed and every record is an
//!   unrecoverable fault (`Producer::push_unrecoverable`, which publishes each record, at batch 1;
//!   `Producer::push_unrecoverables`, one publication, at batch 64),
//!   taken with `Consumer::pop_event` at batch 1 (one record a call, as `rtrb`'s `pop`) and
//!   `Consumer::pop_events(.., 64)` at batch 64 (decoded and validated) and touched. The producer
//!   waits for room rather than lose a record; no record may be lost. Thread to thread and
//!   process to process. This is the row to hold against the one-way peers below.
//! * **rtrb**; **crossbeam ArrayQueue** (no batch API: a batch is 64 single pushes); a stream
//!   **socketpair** with one `write`/`read` pair per batch (the iommufd fault-fd transport):
//!   a raw 64-byte record (aligned to a cache line, as this queue's slots are) one way, the
//!   consumer touching one byte of each.
//! * **rtrb + iommu_fault codec** — `rtrb` carrying the one-way row's records with the same
//!   per-record codec work (encoded by the producer, decoded and validated by the consumer with
//!   the decoder this queue uses), thread to thread: which part of the gap to bare `rtrb` is
//!   reading the record, and which is the queue's own.
//! * **iopf queue, full exchange** — the whole page-request protocol per record: every record is
//!   a one-request group (`push_groups`), the consumer takes it (`pop_event` at batch 1,
//!   `pop_events` at 64; either also holds the group) and answers with a cookie (`respond`), and
//!   the producer judges the answer
//!   (`drain_responses`) and hands it back as an `Answer`. Thread to thread and process to
//!   process.
//! * **rtrb exchange** — the same exchange built by hand from two `rtrb` rings, thread to thread:
//!   the producer assigns a cookie, keeps the group in a `std::collections::HashMap` pending
//!   table, and pushes the request's `iommu_fault` record (`iopf_abi` encoding) behind a small
//!   header (sequence number, cookie, device id: what this queue's slot header carries); the
//!   consumer decodes and validates each record (`IommuFault::decode`, as a VMM would) and answers
//!   each group with an 8-byte `iommu_hwpt_page_response` on the second ring; the producer
//!   decodes the answer, removes its cookie from the table (an unknown cookie counts as rejected)
//!   and keeps the answer. It has none of the queue's other duties (held-group table and
//!   sequence check on the consumer side, verdicts, loss records, doorbells, cross-process
//!   mapping): it is what the protocol's bare bones cost on `rtrb`.
//! * **cache-line ping-pong** — the floor: one cache line each way between two threads.
//!
//! Throughput is records per second one way (the exchange rows also carry every answer back).
//! Round trip: a batch of `b` records to the other side and `b` answers back, busy-polled on both
//! sides (the socketpair blocks in `read`, as a socket consumer does); median and p99. The one-way
//! rows have no round trip: their API has no way back. Process-to-process runs re-execute this
//! binary as the consumer. The table ends with the issue's targets as ratios of rows measured in
//! the same repetition (median and range over the repetitions), and the ping-pong of each
//! repetition, which tells where the hypervisor had put the two vCPUs (~90 ns: two hyperthreads
//! of one core; ~130-150 ns: two cores).
//!
//! The producing side runs pinned to CPU 0 and the consuming side (thread or child process) to
//! CPU 1, for every row.
//!
//! `IOPF_BENCH_ONLY=<list>` runs a subset: any of pingpong, full, rtrb-exchange, oneway, rtrb,
//! crossbeam, socket, and thread or process.
#![allow(clippy::unwrap_used)] // a benchmark that fails to set up should stop loudly
#![allow(missing_docs)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iopf_abi::features::RecordFormats;
use iopf_abi::{
    Fault, FaultConsumer, FaultReason, Features, HwptPageResponse, IommuFault, IommuFaultWords,
    IommufdResponse, PageRequest, PageRequestFlags, Perm, ResponseCode, Unrecoverable,
    UnrecoverableFlags,
};
use iopf_queue::{
    channel, connect, Consumer, Event, Listener, Offer, Producer, ProducerConfig, Request,
    ServeConfig, TaggedGroup,
};

/// A 64-byte record as the peers carry it: aligned to a cache line, so each one is one line in
/// their buffers, as in this queue's ring (a `[u8; 64]` has alignment 1 and usually straddles
/// two lines, which made the peers slower than they can be).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Rec([u8; 64]);

const fn rec(b: u8) -> Rec {
    Rec([b; 64])
}
/// Ring entries, the same for every peer: the never-merged VFIO fault region's 512.
const ENTRIES: u32 = 512;

fn scale() -> f64 {
    std::env::var("IOPF_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn scaled(n: u64) -> u64 {
    ((n as f64 * scale()) as u64).max(1000)
}

/// What every busy-waiting loop does when it made no progress: spin a little, then give the
/// core away. The machine is small and shared, so a waiting thread that never yields can keep the
/// thread it waits for off the CPU; every peer gets the same treatment.
/// Round trips are busy-polled: their waits spin far longer before giving the core away.
#[derive(Default)]
struct Idle(u32, u32);

impl Idle {
    fn polling() -> Idle {
        Idle(0, 1 << 16)
    }
    fn wait(&mut self) {
        self.0 += 1;
        if self.0 < self.1.max(4096) {
            std::hint::spin_loop();
        } else {
            self.0 = 0;
            std::thread::yield_now();
        }
    }
    fn reset(&mut self) {
        self.0 = 0;
    }
}

fn request(offer: &Offer) -> Request {
    let mut r =
        Request::best_for(offer, RecordFormats::IOMMU_FAULT, Features::COOKIE_RESPONSE).unwrap();
    r.entries = ENTRIES;
    r
}

fn page_request(i: u64) -> PageRequest {
    PageRequest {
        flags: PageRequestFlags::LAST_PAGE | PageRequestFlags::PASID_VALID,
        pasid: 1,
        grpid: (i % 512) as u32,
        perm: Perm::READ | Perm::WRITE,
        addr: i << 12,
        private_data: [0, 0],
    }
}

/// Pins the calling thread to CPU `cpu`, if the machine has it: the producing side runs on CPU 0
/// and the consuming side (thread or process) on CPU 1 for every row, so that no row has its two
/// sides share one CPU because the scheduler put them there. Best effort: where pinning is
/// refused, the row runs unpinned.
fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// Starts the consuming side of a row on its own thread, pinned to CPU 1.
fn spawn_peer<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        pin(1);
        f()
    })
}

// ---------------------------------------------------------------------------------------------
// This queue.

/// The producing end of an exchange (this queue's, or the hand-built one on `rtrb`), as the
/// throughput and round-trip drivers below use it: one-request groups out, answers back.
trait ExchangeProducer {
    /// Whether `k` more groups can go out now.
    fn room(&mut self, k: usize) -> bool;
    /// Pushes `k` one-request groups with one publication; returns how many went out.
    fn push(&mut self, k: usize) -> usize;
    /// Takes the answers waiting; returns how many.
    fn drain(&mut self) -> usize;
}

/// This queue's producer, pushing one-request groups from `groups`.
struct QueueExchange<'a, 'g> {
    p: &'a mut Producer,
    groups: &'a [TaggedGroup<'g>],
    results: Vec<Result<u32, iopf_queue::QueueError>>,
    answers: Vec<iopf_queue::Answer>,
}

impl ExchangeProducer for QueueExchange<'_, '_> {
    fn room(&mut self, k: usize) -> bool {
        self.p.pending_groups() + k < ENTRIES as usize && self.p.has_room(k as u64)
    }
    fn push(&mut self, k: usize) -> usize {
        self.results.clear();
        self.p.push_groups(&self.groups[..k], &mut self.results);
        self.results.iter().filter(|r| r.is_ok()).count()
    }
    fn drain(&mut self) -> usize {
        self.answers.clear();
        self.p.drain_responses(&mut self.answers)
    }
}

/// Runs `f` with this queue's producer as an [`ExchangeProducer`] of `b`-group batches.
fn with_queue_exchange<T>(
    p: &mut Producer,
    b: usize,
    f: impl FnOnce(&mut QueueExchange<'_, '_>) -> T,
) -> T {
    let reqs: Vec<[PageRequest; 1]> = (0..b as u64).map(|i| [page_request(i)]).collect();
    let groups: Vec<TaggedGroup<'_>> = reqs
        .iter()
        .map(|r| TaggedGroup {
            tag: 0,
            dev_id: 1,
            requests: r,
        })
        .collect();
    f(&mut QueueExchange {
        p,
        groups: &groups,
        results: Vec::with_capacity(b),
        answers: Vec::with_capacity(ENTRIES as usize),
    })
}

/// Pushes `n` one-request groups in batches of `b`, draining answers, until all are answered.
fn exchange_throughput(x: &mut impl ExchangeProducer, n: u64, b: usize) -> Duration {
    let (mut sent, mut answered) = (0u64, 0u64);
    let mut idle = Idle::default();
    let start = Instant::now();
    while answered < n {
        let mut progress = false;
        let k = (b as u64).min(n - sent) as usize;
        if sent < n && x.room(k) {
            let pushed = x.push(k);
            sent += pushed as u64;
            progress = pushed > 0;
        }
        let d = x.drain() as u64;
        answered += d;
        if progress || d > 0 {
            idle.reset();
        } else {
            idle.wait();
        }
    }
    start.elapsed()
}

/// `rounds` round trips of `b` one-request groups each: pushed, then their answers polled for.
fn exchange_latency(x: &mut impl ExchangeProducer, rounds: u64, b: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let t = Instant::now();
        assert_eq!(x.push(b), b);
        let mut got = 0;
        let mut idle = Idle::polling();
        while got < b {
            got += x.drain();
            idle.wait();
        }
        out.push(t.elapsed());
    }
    out
}

/// Takes `n_tput + n_lat` records in batches of up to `b` and answers each at once; busy-polls
/// once the first `n_tput` (the throughput run) are done.
fn queue_consumer(c: &mut Consumer, n_tput: u64, n_lat: u64, b: usize) {
    let n = n_tput + n_lat;
    let mut events = Vec::with_capacity(b);
    let mut responses = Vec::with_capacity(b);
    let mut got = 0;
    let mut idle = Idle::default();
    while got < n {
        events.clear();
        // Batch 1: one record a call, as the peers' `pop`.
        let k = if b == 1 {
            events.extend(c.pop_event());
            events.len()
        } else {
            c.pop_events(&mut events, b).unwrap()
        };
        if k == 0 {
            idle.wait();
            continue;
        }
        if got < n_tput && got + k as u64 >= n_tput {
            idle = Idle::polling();
        }
        idle.reset();
        got += k as u64;
        responses.clear();
        for e in &events {
            if let iopf_queue::Event::Fault(f) = e {
                responses.push(IommufdResponse {
                    cookie: f.cookie,
                    code: ResponseCode::Success,
                });
            }
        }
        let mut done = 0;
        while done < responses.len() {
            let k = c.respond(&responses[done..]).unwrap();
            if k == 0 {
                idle.wait();
            }
            done += k;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// This queue, one way: unrecoverable `iommu_fault` records, which take no answer.

/// An `iommu_fault` queue that agreed `UNRECOVERABLE`.
fn oneway_request(offer: &Offer) -> Request {
    let mut r =
        Request::best_for(offer, RecordFormats::IOMMU_FAULT, Features::UNRECOVERABLE).unwrap();
    assert!(r.features.contains(Features::UNRECOVERABLE), "{r:?}");
    r.entries = ENTRIES;
    r
}

fn unrecoverable(i: u64) -> Unrecoverable {
    Unrecoverable {
        reason: FaultReason::Permission,
        flags: UnrecoverableFlags::ADDR_VALID | UnrecoverableFlags::PASID_VALID,
        pasid: 1,
        perm: Perm::WRITE,
        addr: i << 12,
        fetch_addr: 0,
    }
}

/// Pushes `n` unrecoverable records, `b` at a time once the ring has room for `b` (batch 1: one
/// `push_unrecoverable`, which publishes its record; batch 64: one `push_unrecoverables`, one
/// publication), and waits for room rather than lose one. Returns the time the pushes started;
/// the caller adds the wait for the consumer to have taken them all.
fn oneway_producer(p: &mut Producer, n: u64, b: usize) -> Instant {
    let faults: Vec<(u32, Unrecoverable)> = (0..b as u64).map(|i| (1, unrecoverable(i))).collect();
    let mut results = Vec::with_capacity(b);
    let mut sent = 0u64;
    let mut idle = Idle::default();
    let start = Instant::now();
    while sent < n {
        let k = (b as u64).min(n - sent);
        if p.has_room(k) {
            if b == 1 {
                p.push_unrecoverable(1, &faults[0].1).unwrap();
            } else {
                results.clear();
                p.push_unrecoverables(&faults[..k as usize], &mut results);
                assert!(results.iter().all(Result::is_ok));
            }
            sent += k;
            idle.reset();
        } else {
            idle.wait();
        }
    }
    assert_eq!((p.stats().delivered, p.stats().lost), (n, 0));
    start
}

/// Takes `n` records in batches of up to `b`, touching each; returns a checksum. Every record
/// must be an unrecoverable fault, and none may be missing.
fn oneway_consumer(c: &mut Consumer, n: u64, b: usize) -> u64 {
    let mut events = Vec::with_capacity(b);
    let (mut got, mut sum) = (0u64, 0u64);
    let mut idle = Idle::default();
    while got < n {
        if b == 1 {
            // Batch 1: one record a call, as `rtrb`'s `pop`.
            match c.pop_event() {
                Some(Event::Unrecoverable { fault, .. }) => {
                    sum = sum.wrapping_add(fault.addr);
                    got += 1;
                    idle.reset();
                }
                Some(other) => panic!("one-way run received {other:?}"),
                None => idle.wait(),
            }
            continue;
        }
        events.clear();
        let k = c.pop_events(&mut events, b).unwrap();
        if k == 0 {
            idle.wait();
            continue;
        }
        idle.reset();
        for e in &events {
            match e {
                Event::Unrecoverable { fault, .. } => sum = sum.wrapping_add(fault.addr),
                other => panic!("one-way run received {other:?}"),
            }
        }
        got += k as u64;
    }
    assert_eq!((got, c.stats().records, c.stats().lost), (n, n, 0));
    sum
}

/// One way, thread to thread: records per second, counted until the consumer has all of them.
fn oneway_thread(n: u64, b: usize) -> f64 {
    let (mut p, mut c) = channel(
        &Offer::current(),
        &oneway_request(&Offer::current()),
        ProducerConfig::default(),
    )
    .unwrap();
    let t = spawn_peer(move || oneway_consumer(&mut c, n, b));
    let start = oneway_producer(&mut p, n, b);
    std::hint::black_box(t.join().unwrap());
    rate(n, start.elapsed())
}

/// One way, process to process: counted until the consumer's tail has caught up with every
/// record (the ring is as empty as before the first push).
fn oneway_process(dir: &Path, n: u64, b: usize) -> f64 {
    let (listener, mut child, mut p) = serve_child(dir, &format!("o{b}.sock"), "oneway", b, n, 0);
    let empty = p.free_slots();
    let start = oneway_producer(&mut p, n, b);
    let mut idle = Idle::default();
    while p.free_slots() != empty {
        idle.wait();
    }
    let d = start.elapsed();
    drop(p);
    assert!(child.wait().unwrap().success(), "one-way consumer failed");
    drop(listener);
    rate(n, d)
}

// ---------------------------------------------------------------------------------------------
// Peers.

/// `n` values made by `make(i)` through `rtrb`, one way, `b` at a time (batch 1: `push` and
/// `pop`; otherwise write and read chunks); the consumer passes each to `take`.
fn rtrb_one_way<T: Copy + Send + 'static>(
    n: u64,
    b: usize,
    make: impl Fn(u64) -> T,
    take: impl Fn(&T) -> u64 + Send + 'static,
) -> Duration {
    let (mut tx, mut rx) = rtrb::RingBuffer::<T>::new(ENTRIES as usize);
    let consumer = spawn_peer(move || {
        let (mut got, mut sum) = (0u64, 0u64);
        let mut idle = Idle::default();
        while got < n {
            let before = got;
            if b == 1 {
                if let Ok(v) = rx.pop() {
                    sum = sum.wrapping_add(take(&v));
                    got += 1;
                }
            } else if let Ok(chunk) = rx.read_chunk(rx.slots().min(b)) {
                let (a, c) = chunk.as_slices();
                for v in a.iter().chain(c) {
                    sum = sum.wrapping_add(take(v));
                }
                got += (a.len() + c.len()) as u64;
                chunk.commit_all();
            }
            if got == before {
                idle.wait();
            } else {
                idle.reset();
            }
        }
        sum
    });
    let start = Instant::now();
    let mut sent = 0u64;
    let mut idle = Idle::default();
    while sent < n {
        let before = sent;
        if b == 1 {
            if tx.push(make(sent)).is_ok() {
                sent += 1;
            }
        } else {
            let k = (b as u64).min(n - sent) as usize;
            if let Ok(chunk) = tx.write_chunk_uninit(k) {
                let first = sent;
                sent += chunk.fill_from_iter((first..).map(&make)) as u64;
            }
        }
        if sent == before {
            idle.wait();
        } else {
            idle.reset();
        }
    }
    std::hint::black_box(consumer.join().unwrap());
    start.elapsed()
}

/// Bare `rtrb`: a 64-byte record, the consumer touching one byte.
fn rtrb_throughput(n: u64, b: usize) -> Duration {
    rtrb_one_way(n, b, |_| rec(7), |r: &Rec| u64::from(r.0[0]))
}

/// One record a line, like `Rec`.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Words(IommuFaultWords);

/// `rtrb` carrying the same records as the one-way row, with the same per-record codec work: the
/// producer encodes each unrecoverable fault into its `iommu_fault` words
/// (`Fault::encode_words`), the consumer decodes and validates them (`IommuFault::decode_words`,
/// the decoder this queue's consumer uses) and touches the address. What `rtrb` would cost a VMM
/// that must read the records, without the queue's sequence numbers, stamps, loss accounting or
/// sleep and wake-up.
fn rtrb_codec_throughput(n: u64, b: usize) -> Duration {
    rtrb_one_way(
        n,
        b,
        |i| Words(Fault::Unrecoverable(unrecoverable(i)).encode_words()),
        |w: &Words| match IommuFault::decode_words(&w.0) {
            Ok(Fault::Unrecoverable(u)) => u.addr,
            other => panic!("rtrb codec run received {other:?}"),
        },
    )
}

/// `rounds` round trips of `b` records through a pair of one-way queues, busy-polled: `send`
/// puts a record on the way (false when full), `recv` takes an answer (false when none); on the
/// other side a thread takes each record (`take`) and answers it with its first byte (`answer`,
/// false when full).
fn echo_latency(
    rounds: u64,
    b: usize,
    mut send: impl FnMut(Rec) -> bool,
    mut recv: impl FnMut() -> bool,
    mut take: impl FnMut() -> Option<Rec> + Send + 'static,
    mut answer: impl FnMut(u64) -> bool + Send + 'static,
) -> Vec<Duration> {
    let echo = spawn_peer(move || {
        let mut idle = Idle::polling();
        for _ in 0..rounds * b as u64 {
            let r = loop {
                if let Some(r) = take() {
                    break r;
                }
                idle.wait();
            };
            while !answer(u64::from(r.0[0])) {
                idle.wait();
            }
        }
    });
    let mut out = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let t = Instant::now();
        let mut idle = Idle::polling();
        for _ in 0..b {
            while !send(rec(1)) {
                idle.wait();
            }
        }
        for _ in 0..b {
            while !recv() {
                idle.wait();
            }
        }
        out.push(t.elapsed());
    }
    echo.join().unwrap();
    out
}

fn rtrb_latency(rounds: u64, b: usize) -> Vec<Duration> {
    let (mut tx, mut rx) = rtrb::RingBuffer::<Rec>::new(ENTRIES as usize);
    let (mut atx, mut arx) = rtrb::RingBuffer::<u64>::new(ENTRIES as usize);
    echo_latency(
        rounds,
        b,
        move |r| tx.push(r).is_ok(),
        move || arx.pop().is_ok(),
        move || rx.pop().ok(),
        move |a| atx.push(a).is_ok(),
    )
}

// ---------------------------------------------------------------------------------------------
// The exchange by hand on rtrb.

/// One rtrb slot of the hand-built exchange: what this queue's slot carries (sequence number,
/// cookie, device id) and the 64-byte `iommu_fault` record.
#[derive(Clone, Copy)]
struct ExchangeSlot {
    seq: u64,
    cookie: u32,
    dev_id: u32,
    record: IommuFault,
}

/// A group the hand-built producer waits on: tag, device, PASID, PRG index.
type PendingGroup = (u64, u32, u32, u32);

/// The producing end of the hand-built exchange.
struct RtrbExchange {
    tx: rtrb::Producer<ExchangeSlot>,
    answers: rtrb::Consumer<HwptPageResponse>,
    pending: HashMap<u32, PendingGroup>,
    next_cookie: u32,
    next_seq: u64,
    accepted: u64,
    rejected: u64,
}

impl RtrbExchange {
    /// Pushes one one-request group per request, all or none (one publication); returns how many.
    fn push(&mut self, requests: &[PageRequest]) -> usize {
        let (pending, cookie, seq) = (&mut self.pending, &mut self.next_cookie, &mut self.next_seq);
        // Assigns the next cookie and sequence number, and remembers the group.
        let mut track = |r: &PageRequest| {
            let slot = ExchangeSlot {
                seq: *seq,
                cookie: *cookie,
                dev_id: 1,
                record: Fault::PageRequest(*r).encode(),
            };
            pending.insert(slot.cookie, (0, slot.dev_id, r.pasid, r.grpid));
            *cookie = cookie.wrapping_add(1);
            *seq += 1;
            slot
        };
        if let [r] = requests {
            // Batch 1: rtrb's single push, as the rtrb row uses.
            let slot = track(r);
            if self.tx.push(slot).is_ok() {
                return 1;
            }
            // Full: the group was not sent; take it back.
            self.pending.remove(&slot.cookie);
            (self.next_cookie, self.next_seq) = (slot.cookie, slot.seq);
            return 0;
        }
        let Ok(chunk) = self.tx.write_chunk_uninit(requests.len()) else {
            return 0;
        };
        chunk.fill_from_iter(requests.iter().map(track))
    }

    /// Judges every waiting answer: decoded, its cookie taken out of the pending table (an answer
    /// naming no pending group is rejected), accepted ones appended to `out`. Returns how many
    /// answers were judged.
    fn drain(&mut self, out: &mut Vec<(PendingGroup, ResponseCode)>) -> usize {
        let k = self.answers.slots();
        if k == 0 {
            return 0;
        }
        for raw in self.answers.read_chunk(k).unwrap() {
            match raw
                .decode()
                .ok()
                .and_then(|a| Some((self.pending.remove(&a.cookie)?, a.code)))
            {
                Some(answer) => {
                    self.accepted += 1;
                    out.push(answer);
                }
                None => self.rejected += 1,
            }
        }
        k
    }
}

fn rtrb_exchange() -> (RtrbExchange, impl FnOnce(u64, u64, usize) -> u64 + Send) {
    let (tx, mut rx) = rtrb::RingBuffer::<ExchangeSlot>::new(ENTRIES as usize);
    let (mut atx, answers) = rtrb::RingBuffer::<HwptPageResponse>::new(ENTRIES as usize);
    let producer = RtrbExchange {
        tx,
        answers,
        pending: HashMap::new(),
        next_cookie: 1,
        next_seq: 0,
        accepted: 0,
        rejected: 0,
    };
    // The consumer: takes up to `b` records, decodes each (validated), answers each group; busy-
    // polls once the first `n_tput` are done, like `queue_consumer`.
    let consumer = move |n_tput: u64, n_lat: u64, b: usize| {
        let n = n_tput + n_lat;
        let mut responses: Vec<HwptPageResponse> = Vec::with_capacity(b);
        let (mut got, mut expected_seq, mut sum) = (0u64, 0u64, 0u64);
        let mut idle = Idle::default();
        while got < n {
            let k = rx.slots().min(b);
            if k == 0 {
                idle.wait();
                continue;
            }
            if got < n_tput && got + k as u64 >= n_tput {
                idle = Idle::polling();
            }
            idle.reset();
            responses.clear();
            for slot in rx.read_chunk(k).unwrap() {
                assert_eq!(slot.seq, expected_seq);
                expected_seq += 1;
                let Ok(Fault::PageRequest(r)) = slot.record.decode() else {
                    panic!("not a page request");
                };
                sum = sum.wrapping_add(u64::from(slot.dev_id) ^ r.addr);
                if r.is_last() {
                    responses.push(
                        IommufdResponse {
                            cookie: slot.cookie,
                            code: ResponseCode::Success,
                        }
                        .encode(),
                    );
                }
            }
            got += k as u64;
            let mut done = 0;
            while done < responses.len() {
                let room = atx.slots().min(responses.len() - done);
                if room == 0 {
                    idle.wait();
                    continue;
                }
                let chunk = atx.write_chunk_uninit(room).unwrap();
                done += chunk.fill_from_iter(responses[done..].iter().copied());
            }
        }
        sum
    };
    (producer, consumer)
}

/// The hand-built exchange as an [`ExchangeProducer`] of batches of `reqs`.
struct RtrbDriver<'a> {
    x: &'a mut RtrbExchange,
    reqs: Vec<PageRequest>,
    answers: Vec<(PendingGroup, ResponseCode)>,
}

impl<'a> RtrbDriver<'a> {
    fn new(x: &'a mut RtrbExchange, b: usize) -> RtrbDriver<'a> {
        RtrbDriver {
            x,
            reqs: (0..b as u64).map(page_request).collect(),
            answers: Vec::with_capacity(ENTRIES as usize),
        }
    }
}

impl ExchangeProducer for RtrbDriver<'_> {
    fn room(&mut self, k: usize) -> bool {
        self.x.pending.len() + k < ENTRIES as usize
    }
    fn push(&mut self, k: usize) -> usize {
        self.x.push(&self.reqs[..k])
    }
    fn drain(&mut self) -> usize {
        self.answers.clear();
        self.x.drain(&mut self.answers);
        self.answers.len()
    }
}

fn crossbeam_throughput(n: u64, b: usize) -> Duration {
    let q = Arc::new(crossbeam_queue::ArrayQueue::<Rec>::new(ENTRIES as usize));
    let q2 = q.clone();
    let consumer = spawn_peer(move || {
        let mut got = 0u64;
        let mut sum = 0u64;
        let mut idle = Idle::default();
        while got < n {
            let before = got;
            for _ in 0..b {
                if let Some(r) = q2.pop() {
                    sum = sum.wrapping_add(u64::from(r.0[0]));
                    got += 1;
                }
            }
            if got == before {
                idle.wait();
            } else {
                idle.reset();
            }
        }
        sum
    });
    let start = Instant::now();
    let mut sent = 0u64;
    let mut idle = Idle::default();
    while sent < n {
        let before = sent;
        for _ in 0..b {
            if sent < n && q.push(rec(7)).is_ok() {
                sent += 1;
            }
        }
        if sent == before {
            idle.wait();
        } else {
            idle.reset();
        }
    }
    std::hint::black_box(consumer.join().unwrap());
    start.elapsed()
}

fn crossbeam_latency(rounds: u64, b: usize) -> Vec<Duration> {
    let q = Arc::new(crossbeam_queue::ArrayQueue::<Rec>::new(ENTRIES as usize));
    let a = Arc::new(crossbeam_queue::ArrayQueue::<u64>::new(ENTRIES as usize));
    let (q2, a2) = (q.clone(), a.clone());
    echo_latency(
        rounds,
        b,
        move |r| q.push(r).is_ok(),
        move || a.pop().is_some(),
        move || q2.pop(),
        move |x| a2.push(x).is_ok(),
    )
}

/// Writes `n` records, one `write` per batch of `b`.
fn socket_writer_throughput(s: &mut UnixStream, n: u64, b: usize) -> Duration {
    let buf = vec![7u8; 64 * b];
    let start = Instant::now();
    let mut sent = 0;
    while sent < n {
        let k = (b as u64).min(n - sent) as usize;
        s.write_all(&buf[..64 * k]).unwrap();
        sent += k as u64;
    }
    // The reader's one-byte acknowledgement: everything arrived.
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).unwrap();
    start.elapsed()
}

fn socket_reader(s: &mut UnixStream, n: u64, b: usize, echo: bool) {
    let mut buf = vec![0u8; 64 * b];
    let answers = vec![1u8; 8 * b];
    let mut got = 0;
    while got < n {
        let k = (b as u64).min(n - got) as usize;
        s.read_exact(&mut buf[..64 * k]).unwrap();
        got += k as u64;
        if echo {
            s.write_all(&answers[..8 * k]).unwrap();
        }
    }
    if !echo {
        s.write_all(&[1]).unwrap();
    }
}

fn socket_writer_latency(s: &mut UnixStream, rounds: u64, b: usize) -> Vec<Duration> {
    let buf = vec![7u8; 64 * b];
    let mut answers = vec![0u8; 8 * b];
    let mut out = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let t = Instant::now();
        s.write_all(&buf).unwrap();
        s.read_exact(&mut answers).unwrap();
        out.push(t.elapsed());
    }
    out
}

#[repr(align(128))]
struct Line(AtomicU64);

fn ping_pong(rounds: u64) -> Vec<Duration> {
    let ping = Arc::new(Line(AtomicU64::new(0)));
    let pong = Arc::new(Line(AtomicU64::new(0)));
    let (ping2, pong2) = (ping.clone(), pong.clone());
    let other = spawn_peer(move || {
        for i in 1..=rounds {
            while ping2.0.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            pong2.0.store(i, Ordering::Release);
        }
    });
    let mut out = Vec::with_capacity(rounds as usize);
    for i in 1..=rounds {
        let t = Instant::now();
        ping.0.store(i, Ordering::Release);
        while pong.0.load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        out.push(t.elapsed());
    }
    other.join().unwrap();
    out
}

// ---------------------------------------------------------------------------------------------
// Runs.

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q) as usize].as_nanos() as f64;
    (at(0.5), at(0.99))
}

/// transport, mode, batch, throughput, (median, p99) round trip in ns.
type Row = (String, String, usize, Option<f64>, Option<(f64, f64)>);

struct Results {
    rows: Vec<Row>,
    /// The repetition each row of `rows` was measured in.
    reps: Vec<usize>,
    rep: usize,
}

impl Results {
    fn add(
        &mut self,
        peer: &str,
        mode: &str,
        b: usize,
        tput: Option<f64>,
        lat: Option<(f64, f64)>,
    ) {
        let t = tput
            .map(|t| format!("{:.2} M/s", t / 1e6))
            .unwrap_or_else(|| "—".into());
        let l = lat
            .map(|(m, p)| format!("{} / {}", fmt_ns(m), fmt_ns(p)))
            .unwrap_or_else(|| "—".into());
        eprintln!("{peer:<28} {mode:<8} batch {b:>2}: {t:>12}  round trip median/p99 {l}");
        self.rows.push((peer.into(), mode.into(), b, tput, lat));
        self.reps.push(self.rep);
    }

    /// `value(a) / value(b)` in each repetition that measured both: the ratio of two rows taken
    /// minutes apart at most, so a change in the machine (load, or where the hypervisor put the
    /// two vCPUs) falls on both. Sorted.
    fn paired(
        &self,
        a: (&str, &str, usize),
        b: (&str, &str, usize),
        value: fn(&Row) -> Option<f64>,
    ) -> Vec<f64> {
        let find = |k: (&str, &str, usize), rep: usize| {
            self.rows
                .iter()
                .zip(&self.reps)
                .find(|(r, &p)| p == rep && r.0 == k.0 && r.1 == k.1 && r.2 == k.2)
                .and_then(|(r, _)| value(r))
        };
        let mut v: Vec<f64> = (0..=self.rep)
            .filter_map(|rep| Some(find(a, rep)? / find(b, rep)?))
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// One row per (peer, mode, batch): the median throughput of the repetitions, and the
    /// round trip of the repetition whose median is the median.
    fn summary(&self) -> Vec<Row> {
        let mut keys: Vec<(String, String, usize)> = Vec::new();
        for r in &self.rows {
            let k = (r.0.clone(), r.1.clone(), r.2);
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        keys.into_iter()
            .map(|(peer, mode, b)| {
                let reps: Vec<&Row> = self
                    .rows
                    .iter()
                    .filter(|r| r.0 == peer && r.1 == mode && r.2 == b)
                    .collect();
                let mut t: Vec<f64> = reps.iter().filter_map(|r| r.3).collect();
                t.sort_by(f64::total_cmp);
                let mut l: Vec<(f64, f64)> = reps.iter().filter_map(|r| r.4).collect();
                l.sort_by(|a, b| a.0.total_cmp(&b.0));
                (
                    peer,
                    mode,
                    b,
                    t.get(t.len() / 2).copied(),
                    l.get(l.len() / 2).copied(),
                )
            })
            .collect()
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 10_000.0 {
        format!("{:.1} µs", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

fn child_main(spec: &str) {
    pin(1);
    // spec: "<peer>:<path>:<b>:<n>:<n_lat>"
    let parts: Vec<&str> = spec.split(':').collect();
    let (peer, path, b, n) = (
        parts[0],
        parts[1],
        parts[2].parse().unwrap(),
        parts[3].parse().unwrap(),
    );
    let n_lat: u64 = parts.get(4).and_then(|s| s.parse().ok()).unwrap_or(0);
    match peer {
        "queue" => {
            let mut c = connect(path, request).unwrap();
            queue_consumer(&mut c, n, n_lat, b);
            // Stay until the producer has the last answers.
            while !c.producer_gone() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        "oneway" => {
            let mut c = connect(path, oneway_request).unwrap();
            std::hint::black_box(oneway_consumer(&mut c, n, b));
            while !c.producer_gone() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        "socket" | "socket-echo" => {
            let mut s = UnixStream::connect(path).unwrap();
            socket_reader(&mut s, n, b, peer == "socket-echo");
        }
        other => panic!("unknown child {other}"),
    }
}

/// Serves a queue on the socket `dir/name`, starts a consumer process of kind `peer` on it, and
/// accepts it: the listener (keep it until the child is done), the child, the producer.
fn serve_child(
    dir: &Path,
    name: &str,
    peer: &str,
    b: usize,
    n: u64,
    n_lat: u64,
) -> (Listener, std::process::Child, Producer) {
    let path = dir.join(name);
    let listener = Listener::bind(
        &path,
        ServeConfig {
            offer: Offer::current(),
            ..ServeConfig::default()
        },
    )
    .unwrap();
    let child = spawn_child(peer, &path, b, n, n_lat);
    let p = listener.accept().unwrap();
    (listener, child, p)
}

fn spawn_child(peer: &str, path: &Path, b: usize, n: u64, n_lat: u64) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .env(
            "IOPF_BENCH_CHILD",
            format!("{peer}:{}:{b}:{n}:{n_lat}", path.display()),
        )
        .spawn()
        .unwrap()
}

/// Row names.
const ONE_WAY: &str = "iopf ring, one way";
const FULL: &str = "iopf queue, full exchange";
const RTRB_EXCHANGE: &str = "rtrb exchange";
const RTRB: &str = "rtrb";
const RTRB_CODEC: &str = "rtrb + iommu_fault codec";
const SOCKET: &str = "socketpair read/write";
const PING_PONG: &str = "cache-line ping-pong";

fn main() {
    if let Ok(spec) = std::env::var("IOPF_BENCH_CHILD") {
        child_main(&spec);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    pin(0);
    // Repetitions, interleaved across peers so that a change in the machine's load falls on all of
    // them; each row reports the median repetition.
    let reps: u64 = std::env::var("IOPF_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    // Per repetition: long enough (tens of milliseconds and up per row) that thread start-up and
    // a scheduling hiccup do not decide a row, short enough to interleave several repetitions.
    let n1 = scaled(2_000_000);
    let n64 = scaled(8_000_000);
    let rounds = scaled(20_000);
    // IOPF_BENCH_ONLY: a comma-separated subset of pingpong, full, rtrb-exchange, oneway, rtrb,
    // crossbeam, socket, thread, process (a quick look at a few rows; the ratio table then leaves
    // out what was not run).
    let only: Option<Vec<String>> = std::env::var("IOPF_BENCH_ONLY")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let want = |what: &str, mode: &str| {
        only.as_ref().is_none_or(|o| {
            let modes = o.iter().any(|x| x == "thread" || x == "process");
            let peers = o.iter().any(|x| x != "thread" && x != "process");
            (!peers || o.iter().any(|x| x == what)) && (!modes || o.iter().any(|x| x == mode))
        })
    };
    let mut r = Results {
        rows: Vec::new(),
        reps: Vec::new(),
        rep: 0,
    };
    let dir = std::env::temp_dir().join(format!("iopf-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    for rep in 0..reps as usize {
        r.rep = rep;
        if want("pingpong", "thread") {
            let pp = percentiles(ping_pong(rounds));
            r.add(PING_PONG, "thread", 1, None, Some(pp));
        }

        for b in [1usize, 64] {
            let n = if b == 1 { n1 } else { n64 };
            let lat_rounds = if b == 1 { rounds } else { rounds / 8 };

            if want("full", "thread") {
                // This queue, thread to thread.
                let (mut p, mut c) = channel(
                    &Offer::current(),
                    &request(&Offer::current()),
                    ProducerConfig::default(),
                )
                .unwrap();
                let t = spawn_peer(move || {
                    queue_consumer(&mut c, n, lat_rounds * b as u64, b);
                    c
                });
                let (d, lat) = with_queue_exchange(&mut p, b, |x| {
                    let d = exchange_throughput(x, n, b);
                    (d, percentiles(exchange_latency(x, lat_rounds, b)))
                });
                drop(t.join().unwrap());
                r.add(FULL, "thread", b, Some(rate(n, d)), Some(lat));
            }

            if want("rtrb-exchange", "thread") {
                // The same exchange by hand on rtrb.
                let (mut x, consumer) = rtrb_exchange();
                let t = spawn_peer(move || consumer(n, lat_rounds * b as u64, b));
                let mut driver = RtrbDriver::new(&mut x, b);
                let d = exchange_throughput(&mut driver, n, b);
                let lat = percentiles(exchange_latency(&mut driver, lat_rounds, b));
                std::hint::black_box(t.join().unwrap());
                assert_eq!((x.accepted, x.rejected), (n + lat_rounds * b as u64, 0));
                r.add(RTRB_EXCHANGE, "thread", b, Some(rate(n, d)), Some(lat));
            }

            if want("oneway", "thread") {
                // This queue, one way.
                r.add(ONE_WAY, "thread", b, Some(oneway_thread(n, b)), None);
            }

            if want("rtrb", "thread") {
                let d = rtrb_throughput(n, b);
                let lat = percentiles(rtrb_latency(lat_rounds, b));
                r.add(RTRB, "thread", b, Some(rate(n, d)), Some(lat));
                let d = rtrb_codec_throughput(n, b);
                r.add(RTRB_CODEC, "thread", b, Some(rate(n, d)), None);
            }

            if want("crossbeam", "thread") {
                let d = crossbeam_throughput(n, b);
                let lat = percentiles(crossbeam_latency(lat_rounds, b));
                r.add(
                    "crossbeam ArrayQueue",
                    "thread",
                    b,
                    Some(rate(n, d)),
                    Some(lat),
                );
            }

            let sn = if b == 1 { n / 4 } else { n };
            let lr = lat_rounds / 4;
            if want("socket", "thread") {
                let (mut a, mut z) = UnixStream::pair().unwrap();
                let t = spawn_peer(move || socket_reader(&mut z, sn, b, false));
                let d = socket_writer_throughput(&mut a, sn, b);
                t.join().unwrap();
                let (mut a, mut z) = UnixStream::pair().unwrap();
                let t = spawn_peer(move || socket_reader(&mut z, lr * b as u64, b, true));
                let lat = percentiles(socket_writer_latency(&mut a, lr, b));
                t.join().unwrap();
                r.add(SOCKET, "thread", b, Some(rate(sn, d)), Some(lat));
            }

            if want("full", "process") {
                // Process to process.
                let (listener, mut child, mut p) = serve_child(
                    &dir,
                    &format!("q{b}.sock"),
                    "queue",
                    b,
                    n,
                    lat_rounds * b as u64,
                );
                let (d, lat) = with_queue_exchange(&mut p, b, |x| {
                    let d = exchange_throughput(x, n, b);
                    (d, percentiles(exchange_latency(x, lat_rounds, b)))
                });
                drop(p);
                child.wait().unwrap();
                drop(listener);
                r.add(FULL, "process", b, Some(rate(n, d)), Some(lat));
            }

            if want("oneway", "process") {
                r.add(
                    ONE_WAY,
                    "process",
                    b,
                    Some(oneway_process(&dir, n, b)),
                    None,
                );
            }

            if want("socket", "process") {
                let path = dir.join(format!("s{b}.sock"));
                let l = UnixListener::bind(&path).unwrap();
                let mut child = spawn_child("socket", &path, b, sn, 0);
                let (mut s, _) = l.accept().unwrap();
                let d = socket_writer_throughput(&mut s, sn, b);
                child.wait().unwrap();
                std::fs::remove_file(&path).unwrap();
                let l = UnixListener::bind(&path).unwrap();
                let mut child = spawn_child("socket-echo", &path, b, lr * b as u64, 0);
                let (mut s, _) = l.accept().unwrap();
                let lat = percentiles(socket_writer_latency(&mut s, lr, b));
                child.wait().unwrap();
                std::fs::remove_file(&path).unwrap();
                r.add(SOCKET, "process", b, Some(rate(sn, d)), Some(lat));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let rows = r.summary();

    // The table and the ratios against the issue's targets.
    println!("| transport | mode | batch | throughput (records/s) | round trip median / p99 |");
    println!("|---|---|---:|---:|---:|");
    for (peer, mode, b, t, l) in &rows {
        let t = t
            .map(|t| format!("{:.2} M", t / 1e6))
            .unwrap_or_else(|| "—".into());
        let l = l
            .map(|(m, p)| format!("{} / {}", fmt_ns(m), fmt_ns(p)))
            .unwrap_or_else(|| "—".into());
        println!("| {peer} | {mode} | {b} | {t} | {l} |");
    }
    // Each target as the ratio of two rows within each repetition (so a change in the machine
    // between repetitions falls on both), summarised by the median and the range.
    println!();
    println!("| target | compared | ratio, median of repetitions | range |");
    println!("|---|---|---:|---:|");
    let tput: fn(&Row) -> Option<f64> = |x| x.3;
    let rt: fn(&Row) -> Option<f64> = |x| x.4.map(|l| l.0);
    // A comparison whose rows were not run (an `IOPF_BENCH_ONLY` subset) is left out.
    let line = |target: &str, compared: String, v: Vec<f64>| {
        if let (Some(med), Some(lo), Some(hi)) = (v.get(v.len() / 2), v.first(), v.last()) {
            println!("| {target} | {compared} | {med:.2}× | {lo:.2}–{hi:.2}× |");
        }
    };
    for b in [1, 64] {
        let target = if b == 1 {
            "throughput ≥ 1× rtrb"
        } else {
            "(information)"
        };
        line(
            target,
            format!("{ONE_WAY} / {RTRB}, thread, batch {b}"),
            r.paired((ONE_WAY, "thread", b), (RTRB, "thread", b), tput),
        );
        line(
            "(information: the same records, decoded, on rtrb)",
            format!("{ONE_WAY} / {RTRB_CODEC}, thread, batch {b}"),
            r.paired((ONE_WAY, "thread", b), (RTRB_CODEC, "thread", b), tput),
        );
    }
    for b in [1, 64] {
        for mode in ["thread", "process"] {
            let target = if b == 1 {
                "throughput ≥ 10× socketpair"
            } else {
                "(information)"
            };
            line(
                target,
                format!("{ONE_WAY} / {SOCKET}, {mode}, batch {b}"),
                r.paired((ONE_WAY, mode, b), (SOCKET, mode, b), tput),
            );
        }
    }
    for mode in ["thread", "process"] {
        line(
            "busy-polled round trip median ≤ 3× ping-pong",
            format!("{FULL} ({mode}) / {PING_PONG} (thread), batch 1"),
            r.paired((FULL, mode, 1), (PING_PONG, "thread", 1), rt),
        );
    }
    for b in [1, 64] {
        line(
            "(information, aim ≥ 1×)",
            format!("{FULL} / {RTRB_EXCHANGE}, throughput, thread, batch {b}"),
            r.paired((FULL, "thread", b), (RTRB_EXCHANGE, "thread", b), tput),
        );
        line(
            "(information, aim ≤ 1×)",
            format!("{FULL} / {RTRB_EXCHANGE}, round trip median, thread, batch {b}"),
            r.paired((FULL, "thread", b), (RTRB_EXCHANGE, "thread", b), rt),
        );
    }
    // Where the two threads ran: a ping-pong well under ~110 ns means the hypervisor had put the
    // two vCPUs on one physical core's two hyperthreads (shared caches), which flatters the
    // peers that do least per record; each repetition says which it got.
    let pp: Vec<String> = (0..=r.rep)
        .filter_map(|rep| {
            r.rows
                .iter()
                .zip(&r.reps)
                .find(|(x, &p)| p == rep && x.0 == PING_PONG)
                .and_then(|(x, _)| x.4)
                .map(|l| format!("{:.0} ns", l.0))
        })
        .collect();
    println!();
    println!("ping-pong median by repetition: {}", pp.join(", "));
}
