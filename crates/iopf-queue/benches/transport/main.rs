//! The fault queue against its peers, measured in one run (see docs/PERFORMANCE.md). This file
//! holds the queue's own rows and the run; `harness.rs` the drivers, percentiles and the
//! table; `peers.rs` the peers (also used by `benches/whole_path.rs`).
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

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use iopf_abi::features::RecordFormats;
use iopf_abi::{
    FaultConsumer, Features, IommufdResponse, PageRequest, ResponseCode, Unrecoverable,
};
use iopf_queue::{
    channel, connect, Consumer, Event, Listener, Offer, Producer, ProducerConfig, Request,
    ServeConfig, TaggedGroup,
};

mod harness;
mod peers;

use harness::*;
use peers::*;

fn request(offer: &Offer) -> Request {
    let mut r =
        Request::best_for(offer, RecordFormats::IOMMU_FAULT, Features::COOKIE_RESPONSE).unwrap();
    r.entries = ENTRIES;
    r
}

// ---------------------------------------------------------------------------------------------
// This queue.

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
