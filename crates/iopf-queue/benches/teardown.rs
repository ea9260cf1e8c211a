//! What teardown costs: expiring N outstanding groups through a `CoreLink` (the core answers each
//! INVALID and withdraws it from the queue), for N from 4,096 to 65,536. Linear: the time per
//! group stays flat as N grows (it grew with N, quadratic in all, while the queue found each
//! group by scanning its pending slots). Then withdrawals from the middle of a blocked backlog
//! of N held-back groups, each followed by a push held back behind the rest (a PASID flush while
//! the consumer sleeps): the time per withdrawal and push stays flat too (a compaction of the
//! whole backlog per push made it linear in N).
//!
//! ```text
//! cargo bench -p iopf-queue --bench teardown
//! ```
#![allow(clippy::unwrap_used)] // a benchmark that fails to set up should stop loudly
#![allow(missing_docs)]

use std::time::Instant;

use iopf_abi::features::RecordFormats;
use iopf_abi::{Fault, Features, PageRequest, PageRequestFlags, Perm, ResponseCode};
use iopf_core::testing::RecordingSink;
use iopf_core::{AgeLimit, FaultCore, PriCaps};
use iopf_queue::{channel, CoreLink, Offer, Producer, ProducerConfig, Request, TaggedGroup};

fn expire(n: u32) -> f64 {
    let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    let mut r = Request::best_for(
        &Offer::current(),
        RecordFormats::HWPT_PGFAULT,
        Features::COOKIE_RESPONSE | Features::LOSS_RECORDS,
    )
    .unwrap();
    r.entries = 4096;
    let config = ProducerConfig {
        max_pending: 1 << 17,
        ..ProducerConfig::default()
    };
    let (p, mut c) = channel(&Offer::current(), &r, config).unwrap();
    let mut link = CoreLink::new(p).unwrap();
    let mut evs = Vec::new();
    let mut devices = Vec::new();
    for _ in 0..n / 512 {
        let d = core.register(PriCaps::default()).unwrap();
        link.attach_device(&mut core, d, None).unwrap();
        for g in 0..512 {
            let req = PageRequest {
                flags: PageRequestFlags::LAST_PAGE,
                pasid: 0,
                grpid: g,
                perm: Perm::READ,
                addr: u64::from(g) << 12,
                private_data: [0; 2],
            };
            core.report(d, &Fault::PageRequest(req), 1).unwrap();
        }
        // Read, not answered: the ring keeps room and every group stays outstanding.
        evs.clear();
        while c.pop_events(&mut evs, 4096).unwrap() > 0 {}
        link.pump(&mut core);
        devices.push(d);
    }
    for &d in &devices {
        let limit = AgeLimit {
            limit: 1,
            answer: Some(ResponseCode::Invalid),
        };
        core.set_age_limit(d, Some(limit)).unwrap();
    }
    let t = Instant::now();
    let answered = core.expire(10);
    let dt = t.elapsed().as_secs_f64();
    assert_eq!(answered, n);
    assert_eq!(link.with_producer(|p| p.pending_groups()), 0);
    dt
}

/// Holds `held` groups back behind a full ring of 4, then withdraws `held / 2` of them from the
/// middle, each followed by one more held-back push. Returns the seconds of the second part.
fn withdraw_from_blocked_backlog(held: u32) -> f64 {
    let mut r = Request::best_for(
        &Offer::current(),
        RecordFormats::HWPT_PGFAULT,
        Features::COOKIE_RESPONSE | Features::LOSS_RECORDS,
    )
    .unwrap();
    r.entries = 4;
    let config = ProducerConfig {
        max_backlog: 2 * u64::from(held) + 8,
        ..ProducerConfig::default()
    };
    let (mut p, _c) = channel(&Offer::current(), &r, config).unwrap();
    p.name_by_upstream().unwrap();
    let name = |i: u32| (1u32 << 20) | i;
    let push = |p: &mut Producer, i: u32| {
        let req = PageRequest {
            flags: PageRequestFlags::LAST_PAGE,
            pasid: 0,
            grpid: i % 512,
            perm: Perm::READ,
            addr: u64::from(i) << 12,
            private_data: [0; 2],
        };
        let g = TaggedGroup {
            tag: u64::from(i),
            dev_id: 0,
            requests: &[req],
        };
        p.push_named(name(i), &g).unwrap();
    };
    for i in 0..held + 4 {
        push(&mut p, i);
    }
    let rounds = held / 2;
    let t = Instant::now();
    for k in 0..rounds {
        assert!(p.withdraw(name(4 + held / 4 + k)));
        push(&mut p, held + 4 + k);
    }
    let dt = t.elapsed().as_secs_f64();
    assert_eq!(p.backlog_requests(), held as usize);
    dt
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("| groups expired | time | per group |");
    println!("|---:|---:|---:|");
    for n in [4096u32, 8192, 16384, 65536] {
        let best = (0..3).map(|_| expire(n)).fold(f64::MAX, f64::min);
        println!(
            "| {n} | {:.2} ms | {:.0} ns |",
            best * 1e3,
            best * 1e9 / f64::from(n)
        );
    }
    println!();
    println!(
        "| backlog (groups held back) | withdrawals + pushes | time | per withdrawal + push |"
    );
    println!("|---:|---:|---:|---:|");
    for n in [4096u32, 32768, 131072] {
        let best = (0..3)
            .map(|_| withdraw_from_blocked_backlog(n))
            .fold(f64::MAX, f64::min);
        println!(
            "| {n} | {} | {:.2} ms | {:.0} ns |",
            n / 2,
            best * 1e3,
            best * 1e9 / f64::from(n / 2)
        );
    }
}
