//! Invariant 3 under load: a deliberately malicious consumer scribbles over the header and every
//! ring, writes impossible indices, garbage and replayed responses, while the producer keeps
//! pushing groups. The producer must never panic (every index it uses is its own or checked) and
//! every group it delivered must be answered exactly once — by a validated response, or INVALID
//! when the consumer is gone.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::req;
use iopf_abi::features::RecordFormats;
use iopf_abi::{FaultConsumer, Features, IommufdResponse, PgFault, ResponseCode};
use iopf_queue::layout::MAGIC;
use iopf_queue::{channel, Offer, ProducerConfig, QueueError, RawFormat, Request, TaggedGroup};

/// Header word of the consumer's `flags` (its CLOSED bit would end the run early; a consumer that
/// closes is covered elsewhere).
const FLAGS_WORD: usize = 80;

fn hostile_consumer(
    mut c: iopf_queue::Consumer,
    stop: Arc<AtomicBool>,
    scribble: Arc<AtomicBool>,
    seed: u64,
) -> u64 {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut seen: Vec<u32> = Vec::new();
    let mut out = vec![PgFault::from_bytes(&[0; 40]).unwrap_or_else(|_| unreachable!()); 64];
    let mut scribbles = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let top = if scribble.load(Ordering::Relaxed) {
            40
        } else {
            34
        };
        match rng.u32(0..top) {
            0..=27 => {
                // Behave: read whole groups and answer most of them.
                if let Ok(n) = c.read_faults(&mut out) {
                    let mut rs = Vec::new();
                    for f in out[..n].iter().filter(|f| f.is_last()) {
                        seen.push(f.cookie);
                        let code = if rng.u8(..) < 200 {
                            ResponseCode::Success
                        } else {
                            ResponseCode::Invalid
                        };
                        rs.push(IommufdResponse {
                            cookie: f.cookie,
                            code,
                        });
                    }
                    let _ = c.respond(&rs);
                }
            }
            28..=31 => {
                let len = rng.usize(0..=56);
                let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
                let f = if rng.bool() {
                    RawFormat::Cookie
                } else {
                    RawFormat::Vfio
                };
                let _ = c.push_raw_response(f, &bytes);
            }
            32..=33 => {
                // Replay (or guess near) a cookie it saw.
                if !seen.is_empty() {
                    let cookie = seen[rng.usize(0..seen.len())].wrapping_add(rng.u32(0..2));
                    let raw = IommufdResponse {
                        cookie,
                        code: ResponseCode::Success,
                    }
                    .encode();
                    let _ =
                        c.push_raw_response(RawFormat::Cookie, zerocopy::IntoBytes::as_bytes(&raw));
                }
            }
            34..=36 => {
                // Impossible or random values in the hot header words.
                let words = c.raw_region();
                let w = [8, 16, 24, 32, 40, 48, 56, 64, 72, 73][rng.usize(0..10)];
                let v = match rng.u8(0..4) {
                    0 => u64::MAX,
                    1 => words[w]
                        .load(Ordering::Relaxed)
                        .wrapping_add(rng.u64(0..1 << 20)),
                    2 => words[w].load(Ordering::Relaxed).wrapping_sub(rng.u64(0..8)),
                    _ => rng.u64(..),
                };
                words[w].store(v, Ordering::Relaxed);
                scribbles += 1;
            }
            37 if rng.bool() => {
                // A response slot stamped by hand: for its next lap (ahead of its turn), its
                // current one again (a replay), or a random one; the content is whatever is there.
                // (The ring's offset is read from the header, which another case scribbles: an
                // offset out of the region is skipped, one inside it forges some other word.)
                let words = c.raw_region();
                let resp_off = (words[5].load(Ordering::Relaxed) >> 32) as usize / 8;
                let entries = c.agreement().entries as usize;
                let i = resp_off.saturating_add(rng.usize(0..entries) * 8);
                if let Some(w) = words.get(i).filter(|_| i != FLAGS_WORD) {
                    let w0 = w.load(Ordering::Relaxed);
                    let stamp = match rng.u8(0..3) {
                        0 => (w0 >> 32).wrapping_add(entries as u64),
                        1 => w0 >> 32,
                        _ => rng.u64(..),
                    };
                    w.store((w0 & 0xffff_ffff) | (stamp << 32), Ordering::Release);
                    scribbles += 1;
                }
            }
            37 => {
                // The read-mostly header line.
                let words = c.raw_region();
                words[rng.usize(0..8)].store(
                    if rng.bool() { MAGIC ^ 1 } else { rng.u64(..) },
                    Ordering::Relaxed,
                );
                scribbles += 1;
            }
            _ => {
                // Anywhere in the rings.
                let words = c.raw_region();
                let i = rng.usize(128..words.len());
                if i != FLAGS_WORD {
                    words[i].store(rng.u64(..), Ordering::Relaxed);
                }
                scribbles += 1;
            }
        }
    }
    scribbles
}

#[test]
fn a_malicious_consumer_cannot_break_the_producer_or_exactly_once() {
    let mut r = Request::best_for(
        &Offer::current(),
        RecordFormats::HWPT_PGFAULT,
        Features::COOKIE_RESPONSE | Features::LOSS_RECORDS,
    )
    .unwrap();
    r.entries = 64;
    let config = ProducerConfig {
        max_pending: 512,
        max_per_wake: 32,
        max_backlog: 1024,
    };
    let (mut p, c) = channel(&Offer::current(), &r, config).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let scribble = Arc::new(AtomicBool::new(false));
    let (stop2, scribble2) = (stop.clone(), scribble.clone());
    let hostile = std::thread::spawn(move || hostile_consumer(c, stop2, scribble2, 0x5eed));

    let mut outstanding: HashSet<u64> = HashSet::new();
    let mut answered: HashSet<u64> = HashSet::new();
    let mut lost = 0u64;
    let mut answers = Vec::new();
    let mut take = |answers: &mut Vec<iopf_queue::Answer>, outstanding: &mut HashSet<u64>| {
        for a in answers.drain(..) {
            assert!(
                outstanding.remove(&a.tag),
                "answer for a group not outstanding: {a:?}"
            );
            assert!(answered.insert(a.tag), "group answered twice: {a:?}");
        }
    };
    // Phase 1: the consumer answers, and sends garbage and replayed responses, until the
    // producer has accepted 200 responses and rejected 20; phase 2: 30,000 more groups while it
    // also scribbles over the region.
    let mut tag = 0u64;
    let mut phase2_end = u64::MAX;
    while tag < phase2_end {
        let s = p.stats();
        if phase2_end == u64::MAX && s.accepted >= 200 && s.rejected >= 20 {
            scribble.store(true, Ordering::Relaxed);
            phase2_end = tag + 30_000;
        }
        assert!(tag < 5_000_000, "phase 1 made no progress: {s:?}");
        tag += 1;
        let grpid = (tag % 512) as u32;
        let n = 1 + (tag % 3) as usize;
        let reqs: Vec<_> = (0..n)
            .map(|i| req(grpid, Some(1), i + 1 == n, tag << 12))
            .collect();
        match p.push_group(&TaggedGroup {
            tag,
            dev_id: 1,
            requests: &reqs,
        }) {
            Ok(_) => {
                outstanding.insert(tag);
            }
            Err(QueueError::Lost(_)) => lost += 1,
            Err(e) => panic!("unexpected push error: {e}"),
        }
        p.drain_responses(&mut answers);
        take(&mut answers, &mut outstanding);
        if tag % 8 == 0 {
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let scribbles = hostile.join().unwrap();
    assert!(p.consumer_gone());
    p.close(&mut answers);
    take(&mut answers, &mut outstanding);
    assert!(
        outstanding.is_empty(),
        "{} groups never answered",
        outstanding.len()
    );
    let s = p.stats();
    assert!(scribbles > 0);
    assert!(s.violations > 0, "{s:?}");
    assert_eq!(s.lost, p.stats().lost);
    assert_eq!(s.lost_by.total(), s.lost);
    assert_eq!(lost + answered.len() as u64, tag);
    assert_eq!(p.pending_groups(), 0);
}
