//! Soak: a malicious consumer against the fault core and its queue, at full load, for a set
//! time. `scripts/soak.sh` runs it (release build, `IOPF_SOAK_SECONDS`, default 60 there;
//! `IOPF_SOAK_SEED` replays a run).
//!
//! The device reports groups as fast as the queue takes them; the consumer reads them and, at
//! random, answers them well (SUCCESS, INVALID), tries FAILURE (not agreed), answers twice
//! through a raw slot, answers cookies nobody holds, writes garbage slots, leaves groups
//! unanswered for a while, or stops taking its verdicts; the age limit answers what it sits on
//! too long. Every response that reaches the device is checked as it arrives: the group was
//! outstanding, it is answered once, never with Response Failure. At the end the consumer
//! leaves and the link is pumped: no group may be left outstanding. Printed: operations,
//! violations, stranded groups, memory high-water. Ignored in the normal suite (it runs for a
//! set time); `cargo test -p iopf-queue --test soak` runs its short form.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{caps, cookie_request, req};
use iopf_abi::{Fault, FaultConsumer, IommufdResponse, PgFault, ResponseCode};
use iopf_core::testing::RecordingSink;
use iopf_core::{AgeLimit, FaultCore};
use iopf_queue::{channel, CoreLink, Offer, ProducerConfig, RawFormat, ResponseVerdict};

/// PRG indexes the device uses (PCIe's 9 bits).
const PRG_INDEXES: u32 = 512;

#[derive(Default, Debug)]
struct Tally {
    reports: u64,
    reads: u64,
    good_answers: u64,
    failure_tries: u64,
    duplicates: u64,
    forged: u64,
    garbage: u64,
    pumps: u64,
    answered_at_device: u64,
    violations: u64,
}

impl Tally {
    fn operations(&self) -> u64 {
        self.reports
            + self.reads
            + self.good_answers
            + self.failure_tries
            + self.duplicates
            + self.forged
            + self.garbage
            + self.pumps
    }
}

/// The peak resident set of this process, from `/proc/self/status` (`VmHWM`), in KiB.
fn memory_high_water_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn cookie_bytes(cookie: u32, code: ResponseCode) -> [u8; 8] {
    let one: u64 = zerocopy::transmute!(IommufdResponse { cookie, code }.encode());
    one.to_ne_bytes()
}

/// Runs the soak for `time`; returns the tally and the groups left outstanding at the end.
fn soak(time: Duration, seed: u64) -> (Tally, u32) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    let dev = core.register(caps(64)).unwrap();
    core.set_age_limit(
        dev,
        Some(AgeLimit {
            limit: 2_000_000,
            answer: Some(ResponseCode::Invalid),
        }),
    )
    .unwrap();
    let (p, mut c) = channel(
        &Offer::current(),
        &cookie_request(64),
        ProducerConfig::default(),
    )
    .unwrap();
    let mut link = CoreLink::attach(&mut core, dev, None, p).unwrap();
    let mut t = Tally::default();
    // PRG index → outstanding at the device (reported, not yet answered).
    let mut outstanding: HashMap<u32, ()> = HashMap::new();
    let mut free: Vec<u32> = (0..PRG_INDEXES).collect();
    // Cookies the consumer read and has not answered yet, and ones it answered.
    let mut held: Vec<u32> = Vec::new();
    let mut answered_cookies: Vec<u32> = Vec::new();
    let mut out = vec![PgFault::ZEROED; 64];
    let mut verdicts: Vec<ResponseVerdict> = Vec::new();
    let mut take_verdicts = true;
    let start = Instant::now();
    let mut now: u64 = 0;
    let check_device = |core: &mut FaultCore<RecordingSink>,
                        outstanding: &mut HashMap<u32, ()>,
                        free: &mut Vec<u32>,
                        t: &mut Tally| {
        for (_, r) in core.sink_mut().take() {
            t.answered_at_device += 1;
            if r.code == ResponseCode::Failure || outstanding.remove(&r.grpid).is_none() {
                t.violations += 1;
            } else {
                free.push(r.grpid);
            }
        }
    };
    while start.elapsed() < time {
        now += 1_000;
        // The device: a burst of one-request groups on free PRG indexes.
        for _ in 0..rng.usize(1..16) {
            if free.is_empty() {
                break;
            }
            let g = free.swap_remove(rng.usize(..free.len()));
            outstanding.insert(g, ());
            t.reports += 1;
            core.report(dev, &Fault::PageRequest(req(g, None, true, 0)), now)
                .unwrap();
        }
        // The consumer.
        t.reads += 1;
        if let Ok(n) = c.read_faults(&mut out) {
            held.extend(out[..n].iter().filter(|f| f.is_last()).map(|f| f.cookie));
        }
        let mut i = 0;
        while i < held.len() {
            match rng.u8(..100) {
                0..=49 => {
                    let code = if rng.bool() {
                        ResponseCode::Success
                    } else {
                        ResponseCode::Invalid
                    };
                    let cookie = held.swap_remove(i);
                    if c.respond(&[IommufdResponse { cookie, code }]).unwrap_or(0) == 1 {
                        t.good_answers += 1;
                        answered_cookies.push(cookie);
                    } else {
                        held.push(cookie);
                    }
                    continue;
                }
                50..=54 => {
                    t.failure_tries += 1;
                    let _ = c.respond(&[IommufdResponse {
                        cookie: held[i],
                        code: ResponseCode::Failure,
                    }]);
                }
                55..=59 if !answered_cookies.is_empty() => {
                    t.duplicates += 1;
                    let cookie = answered_cookies[rng.usize(..answered_cookies.len())];
                    let _ = c.push_raw_response(
                        RawFormat::Cookie,
                        &cookie_bytes(cookie, ResponseCode::Success),
                    );
                }
                60..=64 => {
                    t.forged += 1;
                    let _ = c.push_raw_response(
                        RawFormat::Cookie,
                        &cookie_bytes(rng.u32(..), ResponseCode::Success),
                    );
                }
                65..=67 => {
                    t.garbage += 1;
                    let mut junk = [0u8; 8];
                    rng.fill(&mut junk);
                    let _ = c.push_raw_response(RawFormat::Cookie, &junk);
                }
                68 => take_verdicts = !take_verdicts,
                _ => {} // Left for later (the age limit may get there first).
            }
            i += 1;
        }
        if answered_cookies.len() > 4096 {
            answered_cookies.drain(..2048);
        }
        if take_verdicts {
            c.take_verdicts(&mut verdicts);
            verdicts.clear();
        }
        t.pumps += 1;
        link.pump(&mut core);
        core.expire(now);
        check_device(&mut core, &mut outstanding, &mut free, &mut t);
    }
    // The consumer leaves: the producer answers what it held, the link carries it.
    drop(c);
    for _ in 0..4 {
        link.pump(&mut core);
    }
    check_device(&mut core, &mut outstanding, &mut free, &mut t);
    let stranded = core.outstanding(dev).unwrap() + outstanding.len() as u32;
    (t, stranded)
}

fn report(time: Duration, seed: u64) {
    let (t, stranded) = soak(time, seed);
    println!(
        "malicious-consumer soak (seed {seed}, {:.0} s): {} operations ({} groups reported, {} answered at the device, {} good answers, {} FAILURE tries, {} duplicates, {} forged cookies, {} garbage slots), {} violations, {} stranded groups, memory high-water {} KiB",
        time.as_secs_f64(),
        t.operations(),
        t.reports,
        t.answered_at_device,
        t.good_answers,
        t.failure_tries,
        t.duplicates,
        t.forged,
        t.garbage,
        t.violations,
        stranded,
        memory_high_water_kib()
    );
    assert!(
        t.reports > 0 && t.good_answers > 0,
        "the soak did something: {t:?}"
    );
    assert_eq!(t.violations, 0, "{t:?}");
    assert_eq!(
        stranded, 0,
        "groups left outstanding after the consumer left"
    );
}

fn seed() -> u64 {
    std::env::var("IOPF_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..))
}

/// The short form, in the normal suite: a second of the soak.
#[test]
fn a_malicious_consumer_for_a_second() {
    report(Duration::from_secs(1), seed());
}

/// The soak proper: `IOPF_SOAK_SECONDS` (default 60).
#[test]
#[ignore = "a soak for a set time: scripts/soak.sh runs it"]
fn a_malicious_consumer_at_full_load() {
    let secs = std::env::var("IOPF_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    report(Duration::from_secs(secs), seed());
}
