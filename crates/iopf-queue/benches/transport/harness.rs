//! The transport bench's harness: the record the peers carry, pinning, idling, the exchange
//! drivers both exchanges are measured with, percentiles and the results table. Also used by
//! the whole-path bench (`benches/whole_path.rs`), which includes this file.
#![allow(dead_code)] // each bench that includes this module uses part of it

use std::time::{Duration, Instant};

use iopf_abi::{
    FaultReason, PageRequest, PageRequestFlags, Perm, Unrecoverable, UnrecoverableFlags,
};

/// A 64-byte record as the peers carry it: aligned to a cache line, so each one is one line in
/// their buffers, as in this queue's ring (a `[u8; 64]` has alignment 1 and usually straddles
/// two lines, which made the peers slower than they can be).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Rec(pub [u8; 64]);

pub(crate) const fn rec(b: u8) -> Rec {
    Rec([b; 64])
}
/// Ring entries, the same for every peer: the never-merged VFIO fault region's 512.
pub(crate) const ENTRIES: u32 = 512;

pub(crate) fn scale() -> f64 {
    std::env::var("IOPF_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

pub(crate) fn scaled(n: u64) -> u64 {
    ((n as f64 * scale()) as u64).max(1000)
}

/// What every busy-waiting loop does when it made no progress: spin a little, then give the
/// core away. The machine is small and shared, so a waiting thread that never yields can keep the
/// thread it waits for off the CPU; every peer gets the same treatment.
/// Round trips are busy-polled: their waits spin far longer before giving the core away.
#[derive(Default)]
pub(crate) struct Idle(pub u32, pub u32);

impl Idle {
    pub(crate) fn polling() -> Idle {
        Idle(0, 1 << 16)
    }
    pub(crate) fn wait(&mut self) {
        self.0 += 1;
        if self.0 < self.1.max(4096) {
            std::hint::spin_loop();
        } else {
            self.0 = 0;
            std::thread::yield_now();
        }
    }
    pub(crate) fn reset(&mut self) {
        self.0 = 0;
    }
    /// After a pass of a polling loop: waits if nothing `moved`, else starts over.
    pub(crate) fn after(&mut self, moved: bool) {
        if moved {
            self.reset();
        } else {
            self.wait();
        }
    }
}

pub(crate) fn page_request(i: u64) -> PageRequest {
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
pub(crate) fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// Starts the consuming side of a row on its own thread, pinned to CPU 1.
pub(crate) fn spawn_peer<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        pin(1);
        f()
    })
}

/// The producing end of an exchange (this queue's, or the hand-built one on `rtrb`), as the
/// throughput and round-trip drivers below use it: one-request groups out, answers back.
pub(crate) trait ExchangeProducer {
    /// Whether `k` more groups can go out now.
    fn room(&mut self, k: usize) -> bool;
    /// Pushes `k` one-request groups with one publication; returns how many went out.
    fn push(&mut self, k: usize) -> usize;
    /// Takes the answers waiting; returns how many.
    fn drain(&mut self) -> usize;
}

/// Pushes `n` one-request groups in batches of `b`, draining answers, until all are answered.
pub(crate) fn exchange_throughput(x: &mut impl ExchangeProducer, n: u64, b: usize) -> Duration {
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
pub(crate) fn exchange_latency(
    x: &mut impl ExchangeProducer,
    rounds: u64,
    b: usize,
) -> Vec<Duration> {
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

pub(crate) fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

pub(crate) fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q) as usize].as_nanos() as f64;
    (at(0.5), at(0.99))
}

/// transport, mode, batch, throughput, (median, p99) round trip in ns.
pub(crate) type Row = (String, String, usize, Option<f64>, Option<(f64, f64)>);

pub(crate) struct Results {
    pub(crate) rows: Vec<Row>,
    /// The repetition each row of `rows` was measured in.
    pub(crate) reps: Vec<usize>,
    pub(crate) rep: usize,
}

impl Results {
    pub(crate) fn add(
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
    pub(crate) fn paired(
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
    pub(crate) fn summary(&self) -> Vec<Row> {
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

pub(crate) fn fmt_ns(ns: f64) -> String {
    if ns >= 10_000.0 {
        format!("{:.1} µs", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

/// An unrecoverable fault, the one-way rows' record.
pub(crate) fn unrecoverable(i: u64) -> Unrecoverable {
    Unrecoverable {
        reason: FaultReason::Permission,
        flags: UnrecoverableFlags::ADDR_VALID | UnrecoverableFlags::PASID_VALID,
        pasid: 1,
        perm: Perm::WRITE,
        addr: i << 12,
        fetch_addr: 0,
    }
}
