//! membarrier in a VMM: what the `membarrier` wake-up handshake costs the rest of the process,
//! against the fenced one, in one run (issue 12, item 4; `docs/PERFORMANCE.md`, "membarrier in a
//! VMM").
//!
//! Each repetition runs both handshakes, in alternating order, through the same two phases:
//!
//! * **VMM**: `VCPUS` busy "vCPU" threads count units of work (a few hundred nanoseconds of
//!   arithmetic each) while a producer and a consumer thread of the same process exchange one
//!   page request and its response at a time, the producer pausing between them long enough for
//!   the consumer to go to sleep, so that every exchange is a sleep and a wake-up. A vCPU thread
//!   notes every unit that took more than `GAP_NS` longer than its usual time: an interruption
//!   (an IPI, a tick, the scheduler). Reported: the vCPU threads' work, their interruptions and
//!   the time those took, per barrier the handshake issued ([`iopf_queue::membarrier_calls`]),
//!   the machine's function-call interrupts (`CAL` in `/proc/interrupts`), and the round trip.
//! * **publisher**: one-way records thread to thread, batch 1 and 64, no vCPU threads: what the
//!   fence on the publishing side costs where the other handshake saves it.
//!
//! `IOPF_BENCH_QUICK=1` runs short phases once (a smoke run); `IOPF_BENCH_REPS`,
//! `IOPF_BENCH_SECS` and `IOPF_BENCH_VCPUS` set the repetitions (default 3), the seconds per VMM
//! phase (default 3) and the vCPU threads (default: one fewer than the CPUs, at least one).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use iopf_abi::features::RecordFormats;
use iopf_abi::{
    FaultConsumer, FaultReason, Features, IommufdResponse, PageRequest, PageRequestFlags, Perm,
    PgFault, ResponseCode, Unrecoverable, UnrecoverableFlags,
};
use iopf_queue::{
    channel, membarrier_calls, set_wake_handshake, Event, Offer, ProducerConfig, Request,
    TaggedGroup, WakeHandshake,
};

/// A unit that took this much longer than the usual one was interrupted.
const GAP_NS: u64 = 1_000;
/// The producer's pause between exchanges: longer than the consumer's spin, so it sleeps.
const PAUSE: Duration = Duration::from_micros(150);

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

/// One unit of a vCPU's work: arithmetic the compiler cannot remove.
#[inline(never)]
fn unit(mut x: u64) -> u64 {
    for _ in 0..64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

#[derive(Debug, Default, Clone, Copy)]
struct VcpuTally {
    units: u64,
    gaps: u64,
    gap_ns: u64,
}

/// A busy thread: counts units until `stop`, and the ones that were interrupted. The usual time of
/// a unit is the fastest seen in the first ten thousand.
fn vcpu(stop: Arc<AtomicBool>, start: Arc<AtomicBool>) -> VcpuTally {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut fastest = u64::MAX;
    for _ in 0..10_000 {
        let t = Instant::now();
        x = unit(x);
        fastest = fastest.min(t.elapsed().as_nanos() as u64);
    }
    while !start.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    let mut tally = VcpuTally::default();
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        x = unit(x);
        let now = Instant::now();
        let took = now.duration_since(last).as_nanos() as u64;
        if took > fastest + GAP_NS {
            tally.gaps += 1;
            tally.gap_ns += took - fastest;
        }
        tally.units += 1;
        last = now;
    }
    std::hint::black_box(x);
    tally
}

/// The machine's function-call interrupts so far (x86's `CAL` row; `None` elsewhere).
fn call_interrupts() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/interrupts").ok()?;
    let line = text.lines().find(|l| l.trim_start().starts_with("CAL:"))?;
    Some(
        line.split_whitespace()
            .skip(1)
            .map_while(|w| w.parse::<u64>().ok())
            .sum(),
    )
}

#[derive(Debug, Clone)]
struct VmmRow {
    handshake: WakeHandshake,
    secs: f64,
    vcpus: usize,
    tally: VcpuTally,
    barriers: u64,
    ipis: Option<u64>,
    round_trips_ns: Vec<u64>,
}

impl VmmRow {
    fn per_sec(&self, n: u64) -> f64 {
        n as f64 / self.secs
    }
    fn percentile(&self, p: f64) -> f64 {
        let v = &self.round_trips_ns;
        if v.is_empty() {
            return f64::NAN;
        }
        v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1e3
    }
}

fn recoverable_request(offer: &Offer) -> Request {
    Request::best_for(
        offer,
        RecordFormats::HWPT_PGFAULT,
        Features::COOKIE_RESPONSE,
    )
    .expect("the current offer has iommu_hwpt_pgfault records")
}

/// The VMM phase under `handshake`, for `secs` seconds.
fn vmm_phase(handshake: WakeHandshake, secs: f64, vcpus: usize) -> VmmRow {
    set_wake_handshake(handshake).expect("the handshake was available when the run began");
    let offer = Offer::current();
    let (mut producer, mut consumer) = channel(
        &offer,
        &recoverable_request(&offer),
        ProducerConfig::default(),
    )
    .expect("an in-process queue");
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(AtomicBool::new(false));
    let threads: Vec<JoinHandle<VcpuTally>> = (0..vcpus)
        .map(|_| {
            let (stop, start) = (stop.clone(), start.clone());
            std::thread::spawn(move || vcpu(stop, start))
        })
        .collect();
    let consumer_stop = stop.clone();
    let answerer = std::thread::spawn(move || {
        let mut faults = [PgFault::from_bytes(&[0; 40]).expect("a zero record decodes"); 4];
        while !consumer_stop.load(Ordering::Relaxed) {
            if !consumer
                .wait(Some(Duration::from_millis(50)))
                .expect("an in-process wait")
            {
                continue;
            }
            let n = consumer
                .read_faults(&mut faults)
                .expect("well-formed records");
            for f in &faults[..n] {
                let response = IommufdResponse {
                    cookie: f.cookie,
                    code: ResponseCode::Success,
                };
                while consumer.respond(&[response]).expect("a live producer") == 0 {
                    std::hint::spin_loop();
                }
            }
        }
    });
    let request = PageRequest {
        flags: PageRequestFlags::LAST_PAGE,
        pasid: 0,
        grpid: 1,
        perm: Perm::READ,
        addr: 0x1000,
        private_data: [0; 2],
    };
    let mut answers = Vec::new();
    let mut round_trips_ns = Vec::new();
    let (barriers0, ipis0) = (membarrier_calls(), call_interrupts());
    start.store(true, Ordering::Release);
    let began = Instant::now();
    let until = began + Duration::from_secs_f64(secs);
    let mut tag = 0u64;
    while Instant::now() < until {
        tag += 1;
        let sent = Instant::now();
        producer
            .push_group(&TaggedGroup {
                tag,
                dev_id: 1,
                requests: &[request],
            })
            .expect("room for one group");
        answers.clear();
        while answers.is_empty() {
            producer
                .wait_responses(Some(Duration::from_secs(1)))
                .expect("an in-process wait");
            producer.drain_responses(&mut answers);
        }
        round_trips_ns.push(sent.elapsed().as_nanos() as u64);
        assert_eq!(answers[0].tag, tag, "the answer of the group sent");
        std::thread::sleep(PAUSE);
    }
    let secs = began.elapsed().as_secs_f64();
    stop.store(true, Ordering::Release);
    let (barriers, ipis) = (
        membarrier_calls() - barriers0,
        call_interrupts().zip(ipis0).map(|(b, a)| b - a),
    );
    let mut tally = VcpuTally::default();
    for t in threads {
        let one = t.join().expect("a vCPU thread");
        tally.units += one.units;
        tally.gaps += one.gaps;
        tally.gap_ns += one.gap_ns;
    }
    answerer.join().expect("the consumer thread");
    round_trips_ns.sort_unstable();
    VmmRow {
        handshake,
        secs,
        vcpus,
        tally,
        barriers,
        ipis,
        round_trips_ns,
    }
}

/// One way, thread to thread, `n` unrecoverable records `b` at a time: records per second.
fn publisher_phase(handshake: WakeHandshake, n: u64, b: usize) -> f64 {
    set_wake_handshake(handshake).expect("the handshake was available when the run began");
    let offer = Offer::current();
    let mut ask = Request::best_for(&offer, RecordFormats::IOMMU_FAULT, Features::UNRECOVERABLE)
        .expect("the current offer has unrecoverable records");
    ask.entries = 1024;
    let (mut p, mut c) = channel(&offer, &ask, ProducerConfig::default()).expect("a queue");
    let taker = std::thread::spawn(move || {
        let (mut got, mut events) = (0u64, Vec::with_capacity(b));
        while got < n {
            events.clear();
            let k = c.pop_events(&mut events, b).expect("well-formed records");
            for e in &events {
                assert!(matches!(e, Event::Unrecoverable { .. }), "{e:?}");
            }
            got += k as u64;
            if k == 0 {
                std::hint::spin_loop();
            }
        }
    });
    let fault = Unrecoverable {
        reason: FaultReason::Permission,
        flags: UnrecoverableFlags::ADDR_VALID | UnrecoverableFlags::PASID_VALID,
        pasid: 1,
        perm: Perm::WRITE,
        addr: 0x1000,
        fetch_addr: 0,
    };
    let batch: Vec<(u32, Unrecoverable)> = vec![(1, fault); b];
    let mut results = Vec::with_capacity(b);
    let began = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        let k = (b as u64).min(n - sent);
        if !p.has_room(k) {
            std::hint::spin_loop();
            continue;
        }
        if b == 1 {
            p.push_unrecoverable(1, &fault).expect("room was checked");
        } else {
            results.clear();
            p.push_unrecoverables(&batch[..k as usize], &mut results);
            assert!(results.iter().all(Result::is_ok), "room was checked");
        }
        sent += k;
    }
    taker.join().expect("the consumer thread");
    n as f64 / began.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: both run it.
    let quick = std::env::var_os("IOPF_BENCH_QUICK").is_some();
    let reps = env_u64("IOPF_BENCH_REPS", if quick { 1 } else { 3 }).max(1);
    let secs = env_u64("IOPF_BENCH_SECS", 3) as f64 * if quick { 0.2 } else { 1.0 };
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let vcpus = env_u64("IOPF_BENCH_VCPUS", (cpus as u64 - 1).max(1)) as usize;
    let records = if quick { 200_000 } else { 2_000_000 };
    if let Err(e) = set_wake_handshake(WakeHandshake::Membarrier) {
        println!("membarrier handshake unavailable here ({e}): nothing to compare");
        return;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "membarrier in a VMM: {cpus} CPUs, {vcpus} busy vCPU thread(s), {secs:.1} s a VMM phase, \
         {reps} repetition(s), load {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let both = [WakeHandshake::Fenced, WakeHandshake::Membarrier];
    let mut vmm: Vec<(VmmRow, VmmRow)> = Vec::new();
    let mut publisher: Vec<[(f64, f64); 2]> = Vec::new();
    for rep in 0..reps {
        let order: Vec<WakeHandshake> = if rep % 2 == 0 {
            both.to_vec()
        } else {
            both.iter().rev().copied().collect()
        };
        let mut rows: Vec<VmmRow> = order.iter().map(|&h| vmm_phase(h, secs, vcpus)).collect();
        rows.sort_by_key(|r| r.handshake == WakeHandshake::Membarrier);
        let mut pubs = [(0.0, 0.0); 2];
        for (i, &b) in [1usize, 64].iter().enumerate() {
            let mut fenced = 0.0;
            let mut heavy = 0.0;
            for &h in &order {
                let r = publisher_phase(h, records, b);
                match h {
                    WakeHandshake::Fenced => fenced = r,
                    _ => heavy = r,
                }
            }
            pubs[i] = (fenced, heavy);
        }
        publisher.push(pubs);
        let membarrier = rows.pop().expect("two rows");
        let fenced = rows.pop().expect("two rows");
        vmm.push((fenced, membarrier));
    }

    println!(
        "\n{:<11} {:>4} {:>12} {:>11} {:>11} {:>11} {:>12} {:>9} {:>9} {:>9}",
        "handshake",
        "rep",
        "vCPU units/s",
        "interrupt/s",
        "int. µs/s",
        "barriers/s",
        "CAL irqs/s",
        "trips/s",
        "p50 µs",
        "p99 µs"
    );
    for (rep, pair) in vmm.iter().enumerate() {
        for r in [&pair.0, &pair.1] {
            println!(
                "{:<11} {:>4} {:>12.0} {:>11.0} {:>11.0} {:>11.0} {:>12} {:>9.0} {:>9.0} {:>9.0}",
                r.handshake.name(),
                rep,
                r.per_sec(r.tally.units) / r.vcpus as f64,
                r.per_sec(r.tally.gaps) / r.vcpus as f64,
                r.per_sec(r.tally.gap_ns) / 1e3 / r.vcpus as f64,
                r.per_sec(r.barriers),
                r.ipis
                    .map_or("n/a".to_owned(), |i| format!("{:.0}", r.per_sec(i))),
                r.round_trips_ns.len() as f64 / r.secs,
                r.percentile(0.5),
                r.percentile(0.99),
            );
        }
    }
    let extra = |f: &dyn Fn(&VmmRow) -> f64| {
        median(
            vmm.iter()
                .map(|(fenced, heavy)| {
                    let barriers = heavy.per_sec(heavy.barriers) - fenced.per_sec(fenced.barriers);
                    (f(heavy) - f(fenced)) / barriers.max(1.0)
                })
                .collect(),
        )
    };
    let (gaps, gl, gh) = extra(&|r| r.per_sec(r.tally.gaps) / r.vcpus as f64);
    let (gap_us, ul, uh) = extra(&|r| r.per_sec(r.tally.gap_ns) / 1e3 / r.vcpus as f64);
    let (work, wl, wh) = median(
        vmm.iter()
            .map(|(f, m)| m.per_sec(m.tally.units) / f.per_sec(f.tally.units))
            .collect(),
    );
    let (p50, _, _) = median(
        vmm.iter()
            .map(|(f, m)| m.percentile(0.5) / f.percentile(0.5))
            .collect(),
    );
    println!(
        "\nper barrier, each vCPU thread: {gaps:.2} more interruptions ({gl:.2}..{gh:.2}), \
         {gap_us:.2} µs more interrupted ({ul:.2}..{uh:.2})"
    );
    println!("vCPU work, membarrier / fenced: {work:.4} ({wl:.4}..{wh:.4})");
    println!("round trip p50, membarrier / fenced: {p50:.3}");
    println!("\npublisher, one way thread to thread (M records/s):");
    for (i, b) in [1, 64].iter().enumerate() {
        for (rep, p) in publisher.iter().enumerate() {
            println!(
                "  batch {b:>2} rep {rep}: fenced {:.2}, membarrier {:.2}",
                p[i].0 / 1e6,
                p[i].1 / 1e6
            );
        }
        let (r, lo, hi) = median(publisher.iter().map(|p| p[i].0 / p[i].1).collect());
        println!("  batch {b:>2}: fenced / membarrier {r:.3} ({lo:.3}..{hi:.3})");
    }
}
