//! The report → deliver → respond cycle, single-threaded: the fault core against a simple
//! `Mutex<HashMap>`-based tracker written here as the baseline, in the same run.
//!
//! Each iteration reports a window of 64 groups on one device (delivered to a handler that copies
//! the records into a ring, as a fault queue does) and then answers all 64 by cookie; the
//! throughput is in groups. `single` groups are one LAST_PAGE request; `group4` groups are three
//! partial requests plus LAST_PAGE. `core_mutex` is the core behind a `Mutex` as a shared user
//! would hold it, so the lock cost is the same on both sides.
//!
//! Before criterion's runs, `interleaved` times the core and the baseline in alternation and
//! prints their ratio, which stays meaningful on a loaded machine.
//!
//! Run briefly: `cargo bench -p iopf-core --bench cycle -- --warm-up-time 1 --measurement-time 3`.
//! Instructions per group: `IOPF_CYCLE_ONLY=single valgrind --tool=callgrind
//! target/release/deps/cycle-<hash>` (2,000 windows of 64 groups; `group4` for the other).
#![allow(missing_docs)] // criterion generates the benchmark group functions

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;

use std::time::Instant;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use iopf_abi::{Fault, Features, PageRequest, PageRequestFlags, Perm, ResponseCode};
use iopf_core::{
    DeviceId, DeviceResponse, FaultCore, Group, GroupHandler, PriCaps, Refusal, Reported, Response,
    ResponseSink,
};

const WINDOW: u32 = 64;

/// Copies each delivered record into a fixed ring, like a fault queue's producer.
struct Ring {
    slots: Box<[PageRequest; 256]>,
    head: usize,
}

impl Ring {
    fn new() -> Ring {
        Ring {
            slots: Box::new([req(0, false); 256]),
            head: 0,
        }
    }
    fn push_all(&mut self, reqs: &[PageRequest]) {
        for r in reqs {
            self.slots[self.head & 255] = *r;
            self.head = self.head.wrapping_add(1);
        }
    }
}

impl GroupHandler for Ring {
    fn deliver(&mut self, group: &Group<'_>) -> Result<(), Refusal> {
        self.push_all(group.requests);
        Ok(())
    }
}

/// Sums what reaches the device, so nothing is optimised away.
#[derive(Default)]
struct Sum(u64);

impl ResponseSink for Sum {
    fn page_response(&mut self, _: DeviceId, r: &DeviceResponse) {
        self.0 = self.0.wrapping_add(u64::from(r.grpid) + r.code as u64);
    }
}

fn req(grpid: u32, last: bool) -> PageRequest {
    let mut flags = PageRequestFlags::PASID_VALID;
    flags.set(PageRequestFlags::LAST_PAGE, last);
    PageRequest {
        flags,
        pasid: 1,
        grpid,
        perm: Perm::READ | Perm::WRITE,
        addr: u64::from(grpid) << 12,
        private_data: [0; 2],
    }
}

// ---- the fault core -------------------------------------------------------------------------

struct CoreRig {
    core: FaultCore<Sum, Ring>,
    dev: DeviceId,
    handler: iopf_core::HandlerId,
    cookies: Vec<iopf_core::Cookie>,
}

impl CoreRig {
    fn new() -> CoreRig {
        let mut core = FaultCore::new(Sum::default());
        let dev = core
            .register(PriCaps::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let handler = core
            .attach(dev, None, Ring::new(), Features::COOKIE_RESPONSE)
            .unwrap_or_else(|e| panic!("{e}"));
        CoreRig {
            core,
            dev,
            handler,
            cookies: Vec::with_capacity(WINDOW as usize),
        }
    }

    fn window(&mut self, partials: u32, now: u64) {
        self.cookies.clear();
        for g in 0..WINDOW {
            for _ in 0..partials {
                let _ = self
                    .core
                    .report(self.dev, &Fault::PageRequest(req(g, false)), now);
            }
            if let Ok(Reported::Delivered { cookie, .. }) =
                self.core
                    .report(self.dev, &Fault::PageRequest(req(g, true)), now)
            {
                self.cookies.push(cookie);
            }
        }
        for &c in &self.cookies {
            let _ = black_box(
                self.core
                    .respond(self.handler, &Response::by_cookie(c, ResponseCode::Success)),
            );
        }
    }
}

// ---- the baseline: a simple Mutex<HashMap> tracker --------------------------------------------

struct Pending {
    device: u32,
    pasid: Option<u32>,
    grpid: u32,
}

struct BaselineState {
    next_cookie: u32,
    pending: HashMap<u32, Pending>,
    partials: HashMap<(u32, u32), Vec<PageRequest>>,
    scratch: Vec<PageRequest>,
    handler: Ring,
    sink: Sum,
}

struct Baseline {
    state: Mutex<BaselineState>,
    cookies: Vec<u32>,
}

impl Baseline {
    fn new() -> Baseline {
        Baseline {
            state: Mutex::new(BaselineState {
                next_cookie: 1,
                pending: HashMap::new(),
                partials: HashMap::new(),
                scratch: Vec::new(),
                handler: Ring::new(),
                sink: Sum::default(),
            }),
            cookies: Vec::with_capacity(WINDOW as usize),
        }
    }

    fn report(&self, device: u32, r: PageRequest) -> Option<u32> {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut *guard;
        if !r.is_last() {
            s.partials.entry((device, r.grpid)).or_default().push(r);
            return None;
        }
        s.scratch.clear();
        if let Some(parts) = s.partials.remove(&(device, r.grpid)) {
            s.scratch.extend_from_slice(&parts);
        }
        s.scratch.push(r);
        let cookie = s.next_cookie;
        s.next_cookie = s.next_cookie.wrapping_add(1).max(1);
        s.pending.insert(
            cookie,
            Pending {
                device,
                pasid: r.pasid(),
                grpid: r.grpid,
            },
        );
        s.handler.push_all(&s.scratch);
        Some(cookie)
    }

    fn respond(&self, device: u32, cookie: u32, code: ResponseCode) -> bool {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut *guard;
        match s.pending.remove(&cookie) {
            Some(p) if p.device == device => {
                s.sink.page_response(
                    DeviceId::from_raw(device),
                    &DeviceResponse {
                        pasid: p.pasid,
                        grpid: p.grpid,
                        code,
                        private_data: None,
                    },
                );
                true
            }
            Some(p) => {
                s.pending.insert(cookie, p);
                false
            }
            None => false,
        }
    }

    fn window(&mut self, partials: u32) {
        let mut cookies = std::mem::take(&mut self.cookies);
        cookies.clear();
        for g in 0..WINDOW {
            for _ in 0..partials {
                self.report(0, req(g, false));
            }
            if let Some(c) = self.report(0, req(g, true)) {
                cookies.push(c);
            }
        }
        for &c in &cookies {
            black_box(self.respond(0, c, ResponseCode::Success));
        }
        self.cookies = cookies;
    }
}

fn cycle(c: &mut Criterion) {
    let mut g = c.benchmark_group("cycle");
    g.throughput(Throughput::Elements(u64::from(WINDOW)));
    for (name, partials) in [("single", 0u32), ("group4", 3)] {
        let mut rig = CoreRig::new();
        let mut now = 0u64;
        g.bench_function(BenchmarkId::new("core", name), |b| {
            b.iter(|| {
                now += 1;
                rig.window(partials, now)
            })
        });
        let rig = Mutex::new(CoreRig::new());
        let mut cookies = Vec::with_capacity(WINDOW as usize);
        g.bench_function(BenchmarkId::new("core_mutex", name), |b| {
            b.iter(|| {
                now += 1;
                // One lock per report and per response, as the baseline takes.
                cookies.clear();
                let (dev, handler) = {
                    let r = rig.lock().unwrap_or_else(|p| p.into_inner());
                    (r.dev, r.handler)
                };
                for grp in 0..WINDOW {
                    for _ in 0..partials {
                        let mut r = rig.lock().unwrap_or_else(|p| p.into_inner());
                        let _ = r
                            .core
                            .report(dev, &Fault::PageRequest(req(grp, false)), now);
                    }
                    let mut r = rig.lock().unwrap_or_else(|p| p.into_inner());
                    if let Ok(Reported::Delivered { cookie, .. }) =
                        r.core.report(dev, &Fault::PageRequest(req(grp, true)), now)
                    {
                        cookies.push(cookie);
                    }
                }
                for &ck in &cookies {
                    let mut r = rig.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = black_box(
                        r.core
                            .respond(handler, &Response::by_cookie(ck, ResponseCode::Success)),
                    );
                }
            })
        });
        let mut base = Baseline::new();
        g.bench_function(BenchmarkId::new("mutex_hashmap", name), |b| {
            b.iter(|| base.window(partials))
        });
    }
    g.finish();
}

/// The same two cycles timed in alternation, 20 windows at a time, so that both see the same
/// interference from other work on the machine: the ratio of the fastest rounds and the median of
/// per-round ratios are robust to load in a way that two separate criterion runs are not.
fn interleaved(name: &str, partials: u32) {
    const ROUNDS: usize = 300;
    const PER_ROUND: u32 = 20;
    let mut rig = CoreRig::new();
    let mut base = Baseline::new();
    for i in 0..200 {
        rig.window(partials, i);
        base.window(partials);
    }
    let (mut core_min, mut base_min) = (f64::MAX, f64::MAX);
    let mut ratios = Vec::with_capacity(ROUNDS);
    let mut now = 1_000;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..PER_ROUND {
            now += 1;
            rig.window(partials, now);
        }
        let c = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..PER_ROUND {
            base.window(partials);
        }
        let b = t.elapsed().as_secs_f64();
        core_min = core_min.min(c);
        base_min = base_min.min(b);
        ratios.push(b / c);
    }
    ratios.sort_by(f64::total_cmp);
    let per_group = 1e9 / f64::from(PER_ROUND * WINDOW);
    println!(
        "interleaved/{name}: core {:.1} ns/group, mutex_hashmap {:.1} ns/group (fastest rounds): \
         baseline/core = {:.2}x; median per-round ratio {:.2}x",
        core_min * per_group,
        base_min * per_group,
        base_min / core_min,
        ratios[ROUNDS / 2]
    );
}

criterion_group!(benches, cycle);

fn main() {
    // IOPF_CYCLE_ONLY=single|group4: that many core windows (IOPF_CYCLE_WINDOWS, default 2,000)
    // and nothing else, for an instruction count under `valgrind --tool=callgrind`.
    if let Ok(which) = std::env::var("IOPF_CYCLE_ONLY") {
        let windows: u64 = std::env::var("IOPF_CYCLE_WINDOWS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2_000);
        let partials = if which == "group4" { 3 } else { 0 };
        let mut rig = CoreRig::new();
        for i in 0..windows {
            rig.window(partials, i);
        }
        return;
    }
    if std::env::args().any(|a| a == "--bench") {
        interleaved("single", 0);
        interleaved("group4", 3);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
