//! The fault queue against its peers, measured in one run (see docs/PERFORMANCE.md).
//!
//! ```text
//! cargo bench -p iopf-queue --bench transport            # full run (a few seconds per peer)
//! IOPF_BENCH_SCALE=0.1 cargo bench -p iopf-queue --bench transport   # a quick look
//! ```
//!
//! Peers, all moving 64-byte records: this queue (`iommu_fault` records, cookie responses: every
//! record is a one-request group that the consumer answers and the producer judges, so each
//! record makes a full trip of the protocol); `rtrb`; `crossbeam` `ArrayQueue` (no batch API: a
//! batch is 64 single pushes); a stream socketpair with one `write`/`read` pair per batch (the
//! iommufd fault-fd transport); and the floor, a cache-line ping-pong.
//!
//! Throughput is records per second one way (this queue also carries every answer back).
//! Round trip: a batch of `b` records to the other side and `b` answers back, busy-polled on both
//! sides (the socketpair blocks in `read`, as a socket consumer does); median and p99.
//! Process-to-process runs re-execute this binary as the consumer.
#![allow(clippy::unwrap_used)] // a benchmark that fails to set up should stop loudly
#![allow(missing_docs)]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iopf_abi::features::RecordFormats;
use iopf_abi::{
    FaultConsumer, Features, IommufdResponse, PageRequest, PageRequestFlags, Perm, ResponseCode,
};
use iopf_queue::{
    channel, connect, Consumer, Group, Listener, Offer, Producer, ProducerConfig, Request,
    ServeConfig,
};

type Rec = [u8; 64];
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

// ---------------------------------------------------------------------------------------------
// This queue.

/// Pushes `n` one-request groups in batches of `b`, draining answers, until all are answered.
fn queue_producer_throughput(p: &mut Producer, n: u64, b: usize) -> Duration {
    let reqs: Vec<[PageRequest; 1]> = (0..b as u64).map(|i| [page_request(i)]).collect();
    let groups: Vec<Group<'_>> = reqs
        .iter()
        .map(|r| Group {
            tag: 0,
            dev_id: 1,
            requests: r,
        })
        .collect();
    let mut results = Vec::with_capacity(b);
    let mut answers = Vec::with_capacity(512);
    let (mut sent, mut answered) = (0u64, 0u64);
    let mut idle = Idle::default();
    let start = Instant::now();
    while answered < n {
        let mut progress = false;
        if sent < n && p.pending_groups() + b < ENTRIES as usize && p.has_room(b as u64) {
            let k = (b as u64).min(n - sent) as usize;
            results.clear();
            p.push_groups(&groups[..k], &mut results);
            sent += results.iter().filter(|r| r.is_ok()).count() as u64;
            progress = true;
        }
        answers.clear();
        let d = p.drain_responses(&mut answers) as u64;
        answered += d;
        if progress || d > 0 {
            idle.reset();
        } else {
            idle.wait();
        }
    }
    start.elapsed()
}

/// `rounds` round trips of `b` records each.
fn queue_producer_latency(p: &mut Producer, rounds: u64, b: usize) -> Vec<Duration> {
    let reqs: Vec<[PageRequest; 1]> = (0..b as u64).map(|i| [page_request(i)]).collect();
    let groups: Vec<Group<'_>> = reqs
        .iter()
        .map(|r| Group {
            tag: 0,
            dev_id: 1,
            requests: r,
        })
        .collect();
    let mut results = Vec::with_capacity(b);
    let mut answers = Vec::with_capacity(512);
    let mut out = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let t = Instant::now();
        results.clear();
        p.push_groups(&groups, &mut results);
        assert!(results.iter().all(|r| r.is_ok()));
        let mut got = 0;
        let mut idle = Idle::polling();
        while got < b {
            answers.clear();
            got += p.drain_responses(&mut answers);
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
        let k = c.pop_events(&mut events, b).unwrap();
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
// Peers.

fn rtrb_throughput(n: u64, b: usize) -> Duration {
    let (mut tx, mut rx) = rtrb::RingBuffer::<Rec>::new(ENTRIES as usize);
    let consumer = std::thread::spawn(move || {
        let mut got = 0u64;
        let mut sum = 0u64;
        let mut idle = Idle::default();
        while got < n {
            let before = got;
            if b == 1 {
                if let Ok(r) = rx.pop() {
                    sum = sum.wrapping_add(u64::from(r[0]));
                    got += 1;
                }
            } else if let Ok(chunk) = rx.read_chunk(rx.slots().min(b)) {
                let (a, c) = chunk.as_slices();
                for r in a.iter().chain(c) {
                    sum = sum.wrapping_add(u64::from(r[0]));
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
    let rec = [7u8; 64];
    let mut idle = Idle::default();
    while sent < n {
        let before = sent;
        if b == 1 {
            if tx.push(rec).is_ok() {
                sent += 1;
            }
        } else {
            let k = (b as u64).min(n - sent) as usize;
            if let Ok(chunk) = tx.write_chunk_uninit(k) {
                sent += chunk.fill_from_iter(std::iter::repeat(rec)) as u64;
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

fn rtrb_latency(rounds: u64, b: usize) -> Vec<Duration> {
    let (mut tx, mut rx) = rtrb::RingBuffer::<Rec>::new(ENTRIES as usize);
    let (mut atx, mut arx) = rtrb::RingBuffer::<u64>::new(ENTRIES as usize);
    let echo = std::thread::spawn(move || {
        let mut idle = Idle::polling();
        for _ in 0..rounds * b as u64 {
            let r = loop {
                if let Ok(r) = rx.pop() {
                    break r;
                }
                idle.wait();
            };
            while atx.push(u64::from(r[0])).is_err() {
                idle.wait();
            }
        }
    });
    let mut out = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let t = Instant::now();
        let mut idle = Idle::polling();
        for _ in 0..b {
            while tx.push([1u8; 64]).is_err() {
                idle.wait();
            }
        }
        for _ in 0..b {
            while arx.pop().is_err() {
                idle.wait();
            }
        }
        out.push(t.elapsed());
    }
    echo.join().unwrap();
    out
}

fn crossbeam_throughput(n: u64, b: usize) -> Duration {
    let q = Arc::new(crossbeam_queue::ArrayQueue::<Rec>::new(ENTRIES as usize));
    let q2 = q.clone();
    let consumer = std::thread::spawn(move || {
        let mut got = 0u64;
        let mut sum = 0u64;
        let mut idle = Idle::default();
        while got < n {
            let before = got;
            for _ in 0..b {
                if let Some(r) = q2.pop() {
                    sum = sum.wrapping_add(u64::from(r[0]));
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
            if sent < n && q.push([7u8; 64]).is_ok() {
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
    let echo = std::thread::spawn(move || {
        let mut idle = Idle::polling();
        for _ in 0..rounds * b as u64 {
            let r = loop {
                if let Some(r) = q2.pop() {
                    break r;
                }
                idle.wait();
            };
            while a2.push(u64::from(r[0])).is_err() {
                idle.wait();
            }
        }
    });
    let mut out = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let t = Instant::now();
        let mut idle = Idle::polling();
        for _ in 0..b {
            while q.push([1u8; 64]).is_err() {
                idle.wait();
            }
        }
        for _ in 0..b {
            while a.pop().is_none() {
                idle.wait();
            }
        }
        out.push(t.elapsed());
    }
    echo.join().unwrap();
    out
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
    let other = std::thread::spawn(move || {
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
        "socket" | "socket-echo" => {
            let mut s = UnixStream::connect(path).unwrap();
            socket_reader(&mut s, n, b, peer == "socket-echo");
        }
        other => panic!("unknown child {other}"),
    }
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

fn main() {
    if let Ok(spec) = std::env::var("IOPF_BENCH_CHILD") {
        child_main(&spec);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // Repetitions, interleaved across peers so that a change in the machine's load falls on all of
    // them; each row reports the median repetition.
    let reps: u64 = std::env::var("IOPF_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let n1 = scaled(400_000) / reps;
    let n64 = scaled(4_000_000) / reps;
    let rounds = scaled(20_000) / reps;
    let mut r = Results { rows: Vec::new() };
    let dir = std::env::temp_dir().join(format!("iopf-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    for _ in 0..reps {
        let pp = percentiles(ping_pong(rounds));
        r.add("cache-line ping-pong", "thread", 1, None, Some(pp));

        for b in [1usize, 64] {
            let n = if b == 1 { n1 } else { n64 };
            let lat_rounds = if b == 1 { rounds } else { rounds / 8 };

            // This queue, thread to thread.
            let (mut p, mut c) = channel(
                &Offer::current(),
                &request(&Offer::current()),
                ProducerConfig::default(),
            )
            .unwrap();
            let t = std::thread::spawn(move || {
                queue_consumer(&mut c, n, lat_rounds * b as u64, b);
                c
            });
            let d = queue_producer_throughput(&mut p, n, b);
            let lat = percentiles(queue_producer_latency(&mut p, lat_rounds, b));
            drop(t.join().unwrap());
            r.add("iopf queue", "thread", b, Some(rate(n, d)), Some(lat));

            let d = rtrb_throughput(n, b);
            let lat = percentiles(rtrb_latency(lat_rounds, b));
            r.add("rtrb", "thread", b, Some(rate(n, d)), Some(lat));

            let d = crossbeam_throughput(n, b);
            let lat = percentiles(crossbeam_latency(lat_rounds, b));
            r.add(
                "crossbeam ArrayQueue",
                "thread",
                b,
                Some(rate(n, d)),
                Some(lat),
            );

            let sn = if b == 1 { n / 4 } else { n };
            let (mut a, mut z) = UnixStream::pair().unwrap();
            let t = std::thread::spawn(move || socket_reader(&mut z, sn, b, false));
            let d = socket_writer_throughput(&mut a, sn, b);
            t.join().unwrap();
            let (mut a, mut z) = UnixStream::pair().unwrap();
            let lr = lat_rounds / 4;
            let t = std::thread::spawn(move || socket_reader(&mut z, lr * b as u64, b, true));
            let lat = percentiles(socket_writer_latency(&mut a, lr, b));
            t.join().unwrap();
            r.add(
                "socketpair read/write",
                "thread",
                b,
                Some(rate(sn, d)),
                Some(lat),
            );

            // Process to process.
            let path = dir.join(format!("q{b}.sock"));
            let listener = Listener::bind(
                &path,
                ServeConfig {
                    offer: Offer::current(),
                    ..ServeConfig::default()
                },
            )
            .unwrap();
            let mut child = spawn_child("queue", &path, b, n, lat_rounds * b as u64);
            let mut p = listener.accept().unwrap();
            let d = queue_producer_throughput(&mut p, n, b);
            let lat = percentiles(queue_producer_latency(&mut p, lat_rounds, b));
            drop(p);
            child.wait().unwrap();
            drop(listener);
            r.add("iopf queue", "process", b, Some(rate(n, d)), Some(lat));

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
            r.add(
                "socketpair read/write",
                "process",
                b,
                Some(rate(sn, d)),
                Some(lat),
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let rows = r.summary();
    let get = |peer: &str, mode: &str, b: usize| {
        rows.iter().find(|x| x.0 == peer && x.1 == mode && x.2 == b)
    };

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
    let tp =
        |peer: &str, mode: &str, b: usize| get(peer, mode, b).and_then(|x| x.3).unwrap_or(f64::NAN);
    let med = |peer: &str, mode: &str, b: usize| {
        get(peer, mode, b)
            .and_then(|x| x.4)
            .map(|x| x.0)
            .unwrap_or(f64::NAN)
    };
    println!();
    println!("| target | measured ratio |");
    println!("|---|---:|");
    println!(
        "| throughput ≥ rtrb at batch 1 | {:.2}× |",
        tp("iopf queue", "thread", 1) / tp("rtrb", "thread", 1)
    );
    for b in [1, 64] {
        for mode in ["thread", "process"] {
            println!(
                "| throughput ≥ 10× socketpair, batch {b}, {mode} | {:.1}× |",
                tp("iopf queue", mode, b) / tp("socketpair read/write", mode, b)
            );
        }
    }
    println!(
        "| busy-polled round trip median ≤ 3× ping-pong (batch 1, thread) | {:.2}× |",
        med("iopf queue", "thread", 1) / med("cache-line ping-pong", "thread", 1)
    );
    println!(
        "| same, process to process | {:.2}× |",
        med("iopf queue", "process", 1) / med("cache-line ping-pong", "thread", 1)
    );
}
