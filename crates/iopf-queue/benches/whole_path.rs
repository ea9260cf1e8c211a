//! The whole host software path, with nothing else in it (see docs/PERFORMANCE.md): a page
//! request reported to the fault core (`FaultCore::report`), delivered through the core link
//! into the fault queue, read by a VMM thread (`read_faults`) whose resolver does no work and
//! answers SUCCESS (`respond`), judged by the producer, handed back to the core
//! (`CoreLink::pump`) and sent to the device (the core's `ResponseSink`). `iommufd` records and
//! cookie responses, as a VMM on Linux uses them.
//!
//! ```text
//! cargo bench -p iopf-queue --bench whole_path
//! IOPF_BENCH_SCALE=0.1 cargo bench -p iopf-queue --bench whole_path   # a quick look
//! IOPF_WHOLE_PATH_ONLY=scale ...   # one part: one, many, scale
//! ```
//!
//! Parts, in one run:
//! * **one in flight** — the device has one group outstanding at a time: report, then busy-poll
//!   until its answer reaches the device. Round trip p50 / p99 and groups/s, with the round
//!   trip split into its stages (timestamps taken on both threads from one clock): the report
//!   (core, link, push and publication), the crossing to the VMM thread (until `read_faults`
//!   returns it), the VMM's answer (`respond`), and the way back (until the device has it: the
//!   crossing, the producer's judgement, the core's). Against the `rtrb` exchange's busy-polled
//!   round trip of one record (`peers::rtrb_exchange`, the transport bench's hand-built
//!   exchange) measured in the same run.
//! * **many in flight** — 256 groups outstanding (half the device's 512 PRG indices), reported
//!   64 at a time as answers free their indices; groups/s and report-to-device p50 / p99.
//! * **scale** — one thread, no crossing: with `n` groups outstanding (1 K to 512 K, on 2,048
//!   PASIDs of one device), each operation reports one group and answers the oldest (in batches
//!   of 64 through the whole path: report, read, respond, pump); the cost per operation should
//!   stay flat as `n` grows (the tables' lookups are O(1); what grows is the memory they touch).
//!
//! The device side runs pinned to CPU 0, the VMM thread to CPU 1.
#![allow(clippy::unwrap_used)] // a benchmark that fails to set up should stop loudly
#![allow(missing_docs)]

#[path = "transport/harness.rs"]
mod harness;
#[path = "transport/peers.rs"]
mod peers;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{exchange_latency, fmt_ns, percentiles, pin, rate, scaled, spawn_peer, Idle};
use iopf_abi::features::RecordFormats;
use iopf_abi::{
    Fault, FaultConsumer, Features, IommufdResponse, PageRequest, PageRequestFlags, Perm, PgFault,
    ResponseCode,
};
use iopf_core::{DeviceId, DeviceResponse, FaultCore, PriCaps, Reported, ResponseSink};
use iopf_queue::{channel, Consumer, CoreLink, Offer, ProducerConfig, Request};
use peers::{rtrb_exchange, RtrbDriver};

/// The device: counts the answers it receives and, for the timed parts, notes when each PRG
/// index was answered.
struct Device {
    answered: u64,
    not_success: u64,
    /// Free PRG indices (answered), to report again.
    free: VecDeque<(u32, u32)>,
    /// When each (PASID-less) PRG index was reported, and its report-to-device time once
    /// answered.
    sent_at: Vec<Option<Instant>>,
    latencies: Vec<Duration>,
}

impl Device {
    fn new() -> Device {
        Device {
            answered: 0,
            not_success: 0,
            free: VecDeque::new(),
            sent_at: vec![None; 512],
            latencies: Vec::new(),
        }
    }
}

impl ResponseSink for Device {
    fn page_response(&mut self, _device: DeviceId, r: &DeviceResponse) {
        self.answered += 1;
        if r.code != ResponseCode::Success {
            self.not_success += 1;
        }
        if let Some(t) = self
            .sent_at
            .get_mut(r.grpid as usize)
            .and_then(Option::take)
        {
            self.latencies.push(t.elapsed());
        }
        self.free.push_back((r.pasid.unwrap_or(0), r.grpid));
    }
}

fn page_request(pasid: u32, grpid: u32) -> PageRequest {
    let mut flags = PageRequestFlags::LAST_PAGE;
    flags.set(PageRequestFlags::PASID_VALID, pasid != 0);
    PageRequest {
        flags,
        pasid,
        grpid,
        perm: Perm::READ | Perm::WRITE,
        addr: u64::from(grpid) << 12,
        private_data: [0, 0],
    }
}

/// A fault core with one device of `opra` outstanding requests (PRG Response PASID Required,
/// so that the core names groups by PASID and PRG index), served by a fault queue of `entries`
/// slots; the VMM's end of the queue.
fn host(
    opra: u32,
    entries: u32,
    max_pending: usize,
) -> (FaultCore<Device>, DeviceId, CoreLink, Consumer) {
    let mut core = FaultCore::new(Device::new());
    let dev = core
        .register(PriCaps {
            outstanding_allocation: opra,
            pasid_required: true,
            failure_allowed: false,
        })
        .unwrap();
    // Every group here is one page request: say so, since the scale part's device may have
    // more requests outstanding than the ring has slots.
    let offer = Offer::current().with_max_group(1);
    let mut req = Request::best_for(
        &offer,
        RecordFormats::HWPT_PGFAULT,
        Features::COOKIE_RESPONSE,
    )
    .unwrap();
    req.entries = entries;
    let config = ProducerConfig {
        max_pending,
        ..ProducerConfig::default()
    };
    let (p, c) = channel(&offer, &req, config).unwrap();
    let link = CoreLink::attach(&mut core, dev, None, p).unwrap();
    (core, dev, link, c)
}

fn report(core: &mut FaultCore<Device>, dev: DeviceId, pasid: u32, grpid: u32) {
    let got = core
        .report(dev, &Fault::PageRequest(page_request(pasid, grpid)), 0)
        .unwrap();
    assert!(matches!(got, Reported::Delivered { .. }), "{got:?}");
}

/// Nanoseconds since `epoch`, for timestamps shared between the threads.
fn since(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

/// The VMM thread: reads whole groups and answers each SUCCESS at once, busy-polling, until it
/// has answered `n`. When `stamps` is given (one group in flight), notes when it read the group
/// and when its answer went out, then how many it has answered (published last, with Release).
fn vmm(mut c: Consumer, n: u64, stamps: Option<(Instant, Arc<[AtomicU64; 3]>)>) -> Consumer {
    let mut buf = [PgFault::from_bytes(&[0; 40]).unwrap(); 64];
    let mut answers = Vec::with_capacity(64);
    let mut done = 0u64;
    let mut idle = Idle::polling();
    while done < n {
        let k = c.read_faults(&mut buf).unwrap();
        if k == 0 {
            idle.wait();
            continue;
        }
        idle.reset();
        let read_at = stamps.as_ref().map(|(e, _)| since(*e));
        answers.clear();
        answers.extend(buf[..k].iter().map(|f| IommufdResponse {
            cookie: f.cookie,
            code: ResponseCode::Success,
        }));
        let mut sent = 0;
        while sent < answers.len() {
            sent += c.respond(&answers[sent..]).unwrap();
            if sent < answers.len() {
                idle.wait();
            }
        }
        done += k as u64;
        if let (Some((e, s)), Some(r)) = (&stamps, read_at) {
            s[0].store(r, Ordering::Relaxed);
            s[1].store(since(*e), Ordering::Relaxed);
            s[2].store(done, Ordering::Release);
        }
    }
    c
}

struct OneInFlight {
    round_trip: (f64, f64),
    groups_per_s: f64,
    /// p50 of each stage: report, to the VMM, the VMM's answer, back to the device.
    stages: [f64; 4],
}

fn one_in_flight(rounds: u64) -> OneInFlight {
    let (mut core, dev, mut link, c) = host(512, 512, 4096);
    let epoch = Instant::now();
    let stamps = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let s2 = Arc::clone(&stamps);
    let t = spawn_peer(move || vmm(c, rounds, Some((epoch, s2))));
    pin(0);
    let mut rt = Vec::with_capacity(rounds as usize);
    let mut st: [Vec<u64>; 4] = Default::default();
    let mut idle = Idle::polling();
    let start = Instant::now();
    for i in 0..rounds {
        let grpid = (i % 512) as u32;
        let t0 = since(epoch);
        report(&mut core, dev, 0, grpid);
        let t1 = since(epoch);
        while core.sink_mut().answered <= i {
            link.pump(&mut core);
            idle.wait();
        }
        let t4 = since(epoch);
        idle.reset();
        // The VMM stores its stamps right after its answer went out: wait for this round's.
        while stamps[2].load(Ordering::Acquire) <= i {
            std::hint::spin_loop();
        }
        let (t2, t3) = (
            stamps[0].load(Ordering::Relaxed),
            stamps[1].load(Ordering::Relaxed),
        );
        rt.push(Duration::from_nanos(t4 - t0));
        // The VMM may read the group before the report has returned: a crossing of 0.
        for (v, d) in st.iter_mut().zip([
            t1 - t0,
            t2.saturating_sub(t1),
            t3 - t2,
            t4.saturating_sub(t3),
        ]) {
            v.push(d);
        }
    }
    let elapsed = start.elapsed();
    drop(t.join().unwrap());
    assert_eq!(core.sink_mut().answered, rounds);
    assert_eq!(core.sink_mut().not_success, 0);
    let p50 = |mut v: Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2] as f64
    };
    let [a, b, c2, d] = st;
    OneInFlight {
        round_trip: percentiles(rt),
        groups_per_s: rate(rounds, elapsed),
        stages: [p50(a), p50(b), p50(c2), p50(d)],
    }
}

/// `window` groups outstanding, reported 64 at a time as their PRG indices come back.
fn many_in_flight(n: u64, window: usize) -> (f64, (f64, f64)) {
    let (mut core, dev, mut link, c) = host(512, 512, 4096);
    let t = spawn_peer(move || vmm(c, n, None));
    pin(0);
    core.sink_mut()
        .free
        .extend((0..window as u32).map(|g| (0, g)));
    let mut reported = 0u64;
    let mut idle = Idle::polling();
    let start = Instant::now();
    while core.sink_mut().answered < n {
        let mut k = 0;
        while k < 64 && reported < n {
            let Some((_, grpid)) = core.sink_mut().free.pop_front() else {
                break;
            };
            core.sink_mut().sent_at[grpid as usize] = Some(Instant::now());
            report(&mut core, dev, 0, grpid);
            reported += 1;
            k += 1;
        }
        if link.pump(&mut core).answered == 0 && k == 0 {
            idle.wait();
        } else {
            idle.reset();
        }
    }
    let elapsed = start.elapsed();
    drop(t.join().unwrap());
    assert_eq!(core.sink_mut().not_success, 0);
    let lat = std::mem::take(&mut core.sink_mut().latencies);
    (rate(n, elapsed), percentiles(lat))
}

/// One thread: `outstanding` groups held by the VMM, then `ops` operations, each reporting one
/// group and answering the oldest, 64 at a time. Returns nanoseconds per operation.
fn scale(outstanding: usize, ops: usize) -> f64 {
    const BATCH: usize = 64;
    let (mut core, dev, mut link, mut c) =
        host(outstanding as u32 + BATCH as u32, 4096, outstanding + BATCH);
    let mut buf = vec![PgFault::from_bytes(&[0; 40]).unwrap(); 4096];
    let mut held: VecDeque<u32> = VecDeque::with_capacity(outstanding + BATCH);
    // Group k is PASID 1 + k / 512, PRG index k % 512: as many PASIDs as it takes.
    let name = |k: usize| (1 + (k / 512) as u32, (k % 512) as u32);
    let mut read = |c: &mut Consumer, held: &mut VecDeque<u32>| loop {
        let got = c.read_faults(&mut buf).unwrap();
        held.extend(buf[..got].iter().map(|f| f.cookie));
        if got == 0 {
            break;
        }
    };
    let mut next = 0usize;
    while next < outstanding {
        let (pasid, grpid) = name(next);
        report(&mut core, dev, pasid, grpid);
        next += 1;
        if next % 2048 == 0 {
            read(&mut c, &mut held);
        }
    }
    read(&mut c, &mut held);
    assert_eq!(held.len(), outstanding);
    let mut answers = Vec::with_capacity(BATCH);
    let mut op = |core: &mut FaultCore<Device>, link: &mut CoreLink, c: &mut Consumer| {
        let slot = next % (outstanding + BATCH);
        for i in 0..BATCH {
            let (pasid, grpid) = name((slot + i) % (outstanding + BATCH));
            report(core, dev, pasid, grpid);
        }
        next += BATCH;
        read(c, &mut held);
        answers.clear();
        answers.extend(held.drain(..BATCH).map(|cookie| IommufdResponse {
            cookie,
            code: ResponseCode::Success,
        }));
        assert_eq!(c.respond(&answers).unwrap(), BATCH);
        while link.pump(core).answered > 0 {}
    };
    // Warm up: every PRG index of the window reported and answered once more.
    for _ in 0..(outstanding / BATCH).clamp(16, 1024) {
        op(&mut core, &mut link, &mut c);
    }
    let rounds = ops.div_ceil(BATCH);
    let start = Instant::now();
    for _ in 0..rounds {
        op(&mut core, &mut link, &mut c);
    }
    let per = start.elapsed().as_nanos() as f64 / (rounds * BATCH) as f64;
    assert_eq!(held.len(), outstanding);
    assert_eq!(core.sink_mut().not_success, 0);
    per
}

fn rtrb_round_trip(rounds: u64) -> (f64, f64) {
    let (mut x, consumer) = rtrb_exchange();
    let t = spawn_peer(move || consumer(0, rounds, 1));
    pin(0);
    let mut driver = RtrbDriver::new(&mut x, 1);
    let lat = percentiles(exchange_latency(&mut driver, rounds, 1));
    std::hint::black_box(t.join().unwrap());
    lat
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let only = std::env::var("IOPF_WHOLE_PATH_ONLY").unwrap_or_default();
    let want = |part: &str| only.is_empty() || only.split(',').any(|p| p == part);

    if want("one") {
        let rounds = scaled(200_000);
        let one = one_in_flight(rounds);
        let rtrb = rtrb_round_trip(rounds);
        println!("## One group in flight ({rounds} groups)\n");
        println!("| path | round trip p50 / p99 | groups/s |");
        println!("|---|---:|---:|");
        println!(
            "| whole host path (report → core → queue → VMM → response → device) | {} / {} | {:.0} k |",
            fmt_ns(one.round_trip.0),
            fmt_ns(one.round_trip.1),
            one.groups_per_s / 1e3
        );
        println!(
            "| rtrb exchange, one record and its answer | {} / {} | — |",
            fmt_ns(rtrb.0),
            fmt_ns(rtrb.1)
        );
        println!(
            "\nwhole path / rtrb exchange, round trip p50: {:.2}×\n",
            one.round_trip.0 / rtrb.0
        );
        println!("| stage (p50) | ns |\n|---|---:|");
        for (name, ns) in [
            "report: core, link, push, publication",
            "to the VMM thread (until read_faults returns it)",
            "the VMM's answer (respond)",
            "back to the device: crossing, judgement, core, sink",
        ]
        .iter()
        .zip(one.stages)
        {
            println!("| {name} | {ns:.0} |");
        }
        println!();
    }
    if want("many") {
        let n = scaled(2_000_000);
        let (gps, lat) = many_in_flight(n, 256);
        println!("## 256 groups in flight ({n} groups)\n");
        println!(
            "{:.2} M groups/s; report → device p50 / p99 {} / {}\n",
            gps / 1e6,
            fmt_ns(lat.0),
            fmt_ns(lat.1)
        );
    }
    if want("scale") {
        println!("## Cost per operation by groups outstanding (one thread)\n");
        println!("| outstanding | ns per operation | against 1 K |\n|---:|---:|---:|");
        let ops = scaled(400_000) as usize;
        let mut first = None;
        let mut worst = 0f64;
        for k in [1usize, 4, 16, 64, 256, 512] {
            let n = k * 1024;
            let per = scale(n, ops);
            let base = *first.get_or_insert(per);
            worst = worst.max(per / base);
            println!("| {k} K | {per:.0} | {:.2}× |", per / base);
        }
        println!("\nlargest / 1 K: {worst:.2}× (aim: within 1.5×)\n");
    }
}
