//! CPU cost of each step of the protocol, per record, on one thread (no cross-core traffic): the
//! producer's push, the consumer's pop, its response, and the producer's judgement. Batches of 64
//! one-request groups through a 512-entry queue; `iommu_fault` records, cookie responses. Then
//! the record direction alone (unrecoverable `iommu_fault` records, which take no answer): 64
//! pushes of one record (each published), then 64 pops of one record, as the transport bench's
//! batch 1 does.
//!
//! ```text
//! cargo bench -p iopf-queue --bench steps
//! IOPF_STEPS_ROUNDS=5000 valgrind --tool=callgrind target/release/deps/steps-*   # instructions
//! ```
#![allow(clippy::unwrap_used)] // a benchmark that fails to set up should stop loudly
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use iopf_abi::fault::{FaultReason, UnrecoverableFlags};
use iopf_abi::features::RecordFormats;
use iopf_abi::{
    FaultConsumer, Features, IommufdResponse, PageRequest, PageRequestFlags, Perm, ResponseCode,
    Unrecoverable,
};
use iopf_queue::{channel, Event, Offer, ProducerConfig, Request, TaggedGroup};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // IOPF_STEPS_ROUNDS: fewer rounds for an instruction count under `valgrind --tool=callgrind`.
    let rounds: u32 = std::env::var("IOPF_STEPS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50_000)
        .max(1);
    // IOPF_STEPS_ONLY=exchange or one-way: one of the two, for a profile of it alone.
    let only = std::env::var("IOPF_STEPS_ONLY").unwrap_or_default();
    if only != "one-way" {
        exchange(rounds);
    }
    if only != "exchange" {
        one_way(rounds);
    }
}

/// The whole exchange, step by step: `rounds` batches of 64 one-request groups.
fn exchange(rounds: u32) {
    let offer = Offer::current();
    let mut r = Request::best_for(
        &offer,
        RecordFormats::IOMMU_FAULT,
        Features::COOKIE_RESPONSE,
    )
    .unwrap();
    r.entries = 512;
    let (mut p, mut c) = channel(&offer, &r, ProducerConfig::default()).unwrap();
    let reqs: Vec<[PageRequest; 1]> = (0..64u64)
        .map(|i| {
            [PageRequest {
                flags: PageRequestFlags::LAST_PAGE | PageRequestFlags::PASID_VALID,
                pasid: 1,
                grpid: i as u32,
                perm: Perm::READ,
                addr: i << 12,
                private_data: [0, 0],
            }]
        })
        .collect();
    let groups: Vec<TaggedGroup<'_>> = reqs
        .iter()
        .map(|r| TaggedGroup {
            tag: 0,
            dev_id: 1,
            requests: r,
        })
        .collect();
    let (mut results, mut events, mut responses, mut answers) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut t = [Duration::ZERO; 4];
    for _ in 0..rounds {
        let s = Instant::now();
        results.clear();
        p.push_groups(&groups, &mut results);
        t[0] += s.elapsed();
        let s = Instant::now();
        events.clear();
        c.pop_events(&mut events, 64).unwrap();
        t[1] += s.elapsed();
        let s = Instant::now();
        responses.clear();
        for e in &events {
            if let Event::Fault(f) = e {
                responses.push(IommufdResponse {
                    cookie: f.cookie,
                    code: ResponseCode::Success,
                });
            }
        }
        assert_eq!(c.respond(&responses).unwrap(), 64);
        t[2] += s.elapsed();
        let s = Instant::now();
        answers.clear();
        assert_eq!(p.drain_responses(&mut answers), 64);
        t[3] += s.elapsed();
    }
    let per = |d: Duration| d.as_nanos() as f64 / f64::from(rounds * 64);
    println!(
        "per record: push {:.0} ns, pop {:.0} ns, respond {:.0} ns, judge {:.0} ns; total {:.0} ns",
        per(t[0]),
        per(t[1]),
        per(t[2]),
        per(t[3]),
        per(t.iter().sum())
    );
}

/// The record direction: `rounds × 64` unrecoverable records, each pushed and popped alone.
fn one_way(rounds: u32) {
    let offer = Offer::current();
    let mut r = Request::best_for(
        &offer,
        RecordFormats::IOMMU_FAULT,
        Features::COOKIE_RESPONSE | Features::UNRECOVERABLE,
    )
    .unwrap();
    r.entries = 512;
    let (mut p, mut c) = channel(&offer, &r, ProducerConfig::default()).unwrap();
    let fault = Unrecoverable {
        reason: FaultReason::Permission,
        flags: UnrecoverableFlags::PASID_VALID | UnrecoverableFlags::ADDR_VALID,
        pasid: 1,
        perm: Perm::WRITE,
        addr: 0x1000,
        fetch_addr: 0,
    };
    let mut t = [Duration::ZERO; 2];
    let mut sum = 0u64;
    for _ in 0..rounds {
        let s = Instant::now();
        for _ in 0..64 {
            p.push_unrecoverable(1, &fault).unwrap();
        }
        t[0] += s.elapsed();
        let s = Instant::now();
        for _ in 0..64 {
            if let Some(Event::Unrecoverable { seq, .. }) = c.pop_event() {
                sum = sum.wrapping_add(seq);
            }
        }
        t[1] += s.elapsed();
    }
    // The same records 64 at a time: one `push_unrecoverables`, one `pop_events`.
    let batch: Vec<(u32, Unrecoverable)> = (0..64).map(|_| (1, fault)).collect();
    let (mut results, mut events) = (Vec::with_capacity(64), Vec::with_capacity(64));
    let mut tb = [Duration::ZERO; 2];
    for _ in 0..rounds {
        let s = Instant::now();
        results.clear();
        p.push_unrecoverables(&batch, &mut results);
        tb[0] += s.elapsed();
        let s = Instant::now();
        events.clear();
        c.pop_events(&mut events, 64).unwrap();
        for e in &events {
            if let Event::Unrecoverable { seq, .. } = e {
                sum = sum.wrapping_add(*seq);
            }
        }
        tb[1] += s.elapsed();
    }
    std::hint::black_box(sum);
    let per = |d: Duration| d.as_nanos() as f64 / f64::from(rounds * 64);
    println!(
        "record direction, per record: push {:.1} ns, pop {:.1} ns (one at a time); \
         push {:.1} ns, pop {:.1} ns (64 at a time)",
        per(t[0]),
        per(t[1]),
        per(tb[0]),
        per(tb[1]),
    );
}
