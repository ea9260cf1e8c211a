//! An adversarial review of the queue against the design's invariants: groups the fault core
//! legitimately forms, a consumer that writes wrapping indices, never drains its verdicts, sleeps
//! with groups held, answers another queue's cookies, or replays a cookie after the producer's
//! cookie space came round. Each test fails if a group is answered twice, not at all, or by a
//! response that was not meant for it.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

mod common;

use std::sync::atomic::Ordering;

use common::req;
use iopf_abi::features::RecordFormats;
use iopf_abi::{Fault, FaultConsumer, Features, IommufdResponse, PgFault, ResponseCode};
use iopf_core::testing::RecordingSink;
use iopf_core::{AgeLimit, FaultCore, PriCaps, Reported};
use iopf_queue::{
    channel, AnsweredBy, CoreLink, Group, Offer, ProducerConfig, RawFormat, RejectReason, Request,
    Verdict,
};

/// Header words the consumer owns (see `layout::hdr`).
const FAULT_TAIL: usize = 16;
const RESP_HEAD: usize = 24;
const VERDICT_TAIL: usize = 48;

fn cookie_request(entries: u32) -> Request {
    let mut r = Request::best_for(
        &Offer::current(),
        RecordFormats::HWPT_PGFAULT,
        Features::COOKIE_RESPONSE | Features::LOSS_RECORDS,
    )
    .unwrap();
    r.entries = entries;
    r
}

fn pgfaults() -> Vec<PgFault> {
    vec![PgFault::from_bytes(&[0; 40]).unwrap(); 64]
}

fn cookie_bytes(cookie: u32, code: ResponseCode) -> [u8; 8] {
    let one: u64 = zerocopy::transmute!(IommufdResponse { cookie, code }.encode());
    one.to_ne_bytes()
}

#[test]
fn a_group_whose_partials_carry_another_pasid_reaches_the_consumer() {
    // Linux's iopf_group_alloc() gathers held partials by PRG index whatever their PASID, and
    // the core does too; the queue must carry such a group, or at least announce it lost.
    let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    let dev = core.register(PriCaps::default()).unwrap();
    let (p, mut c) = channel(
        &Offer::current(),
        &cookie_request(8),
        ProducerConfig::default(),
    )
    .unwrap();
    let mut link = CoreLink::attach(&mut core, dev, None, p).unwrap();
    assert_eq!(
        core.report(dev, &Fault::PageRequest(req(4, Some(1), false, 0x1000)), 0)
            .unwrap(),
        Reported::Held
    );
    let r = core
        .report(dev, &Fault::PageRequest(req(4, Some(2), true, 0x2000)), 1)
        .unwrap();
    assert!(
        matches!(r, Reported::Delivered { .. }),
        "the queue refused a group the core formed: {r:?}"
    );
    let mut out = pgfaults();
    assert_eq!(c.read_faults(&mut out).unwrap(), 2);
    assert_eq!((out[0].pasid, out[1].pasid), (1, 2));
    c.respond(&[IommufdResponse {
        cookie: out[1].cookie,
        code: ResponseCode::Success,
    }])
    .unwrap();
    assert_eq!(link.pump(&mut core).answered, 1);
    let sent = core.sink_mut().take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.code, ResponseCode::Success);
}

#[test]
fn indices_wrapping_u64_are_ignored_and_every_group_still_answered_once() {
    let (mut p, c) = channel(
        &Offer::current(),
        &cookie_request(8),
        ProducerConfig::default(),
    )
    .unwrap();
    let mut cookies = Vec::new();
    for g in 0..4 {
        cookies.push(
            p.push_group(&Group {
                tag: g,
                dev_id: 0,
                requests: &[req(g as u32, None, true, 0)],
            })
            .unwrap(),
        );
    }
    let region = c.raw_region();
    for v in [u64::MAX, u64::MAX - 3, 1 << 63, 9] {
        region[FAULT_TAIL].store(v, Ordering::Release);
        region[RESP_HEAD].store(v, Ordering::Release);
        region[VERDICT_TAIL].store(v, Ordering::Release);
        let mut answers = Vec::new();
        assert_eq!(p.drain_responses(&mut answers), 0, "tail {v:#x}");
        assert!(answers.is_empty());
        // A lying tail must not make room that is not there: 4 slots are still in use.
        assert!(p.free_slots() <= 4, "tail {v:#x}");
    }
    assert!(p.stats().violations >= 4);
    let mut answers = Vec::new();
    assert_eq!(p.close(&mut answers), 4);
    let mut tags: Vec<u64> = answers.iter().map(|a| a.tag).collect();
    tags.sort_unstable();
    assert_eq!(tags, vec![0, 1, 2, 3]);
    assert!(answers.iter().all(|a| a.by == AnsweredBy::ConsumerGone));
}

#[test]
fn a_verdict_ring_never_drained_stalls_judging_but_loses_no_group() {
    let (mut p, mut c) = channel(
        &Offer::current(),
        &cookie_request(4),
        ProducerConfig::default(),
    )
    .unwrap();
    let mut cookies = Vec::new();
    for g in 0..4u32 {
        cookies.push(
            p.push_group(&Group {
                tag: u64::from(g),
                dev_id: 0,
                requests: &[req(g, None, true, 0)],
            })
            .unwrap(),
        );
    }
    // Four rejections fill the verdict ring.
    for bogus in 0..4u32 {
        let bytes = cookie_bytes(0xdead_0000 | bogus, ResponseCode::Success);
        c.push_raw_response(RawFormat::Cookie, &bytes)
            .unwrap()
            .unwrap();
    }
    let mut answers = Vec::new();
    assert_eq!(p.drain_responses(&mut answers), 4);
    assert!(answers.is_empty());
    // The consumer answers every group properly but pretends it never read a verdict.
    for &cookie in &cookies {
        let bytes = cookie_bytes(cookie, ResponseCode::Success);
        c.push_raw_response(RawFormat::Cookie, &bytes)
            .unwrap()
            .unwrap();
        c.raw_region()[VERDICT_TAIL].store(0, Ordering::Release);
    }
    assert_eq!(
        p.drain_responses(&mut answers),
        0,
        "a response was judged with no room for its verdict"
    );
    assert_eq!(p.pending_groups(), 4);
    // Once the consumer drains its verdicts, judging resumes and each group is answered once.
    let mut v: Vec<Verdict> = Vec::new();
    c.raw_region()[VERDICT_TAIL].store(4, Ordering::Release);
    while p.drain_responses(&mut answers) > 0 {}
    c.take_verdicts(&mut v);
    assert_eq!(answers.len(), 4);
    assert!(answers.iter().all(|a| a.by == AnsweredBy::Consumer));
    assert_eq!(p.close(&mut answers), 0);
}

#[test]
fn a_consumer_that_sleeps_forever_is_overtaken_by_the_age_limit_and_its_late_answer_refused() {
    let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    let dev = core.register(PriCaps::default()).unwrap();
    core.set_age_limit(
        dev,
        Some(AgeLimit {
            limit: 1_000,
            answer: Some(ResponseCode::Invalid),
        }),
    )
    .unwrap();
    let (p, mut c) = channel(
        &Offer::current(),
        &cookie_request(8),
        ProducerConfig::default(),
    )
    .unwrap();
    let mut link = CoreLink::attach(&mut core, dev, None, p).unwrap();
    core.report(dev, &Fault::PageRequest(req(3, None, true, 0)), 0)
        .unwrap();
    let mut out = pgfaults();
    assert_eq!(c.read_faults(&mut out).unwrap(), 1);
    let stale = out[0].cookie;
    // The consumer sleeps; the age limit answers the group.
    assert_eq!(core.expire(5_000), 1);
    assert_eq!(link.with_producer(|p| p.pending_groups()), 0);
    // The device reuses PRG index 3 for a new group, which gets a new queue cookie.
    core.report(dev, &Fault::PageRequest(req(3, None, true, 0)), 6_000)
        .unwrap();
    assert_eq!(c.read_faults(&mut out).unwrap(), 1);
    assert_ne!(out[0].cookie, stale);
    // The consumer wakes and answers the old group, bypassing its own bookkeeping.
    c.push_raw_response(
        RawFormat::Cookie,
        &cookie_bytes(stale, ResponseCode::Success),
    )
    .unwrap()
    .unwrap();
    let pumped = link.pump(&mut core);
    assert_eq!((pumped.answered, pumped.refused_by_core), (0, 0));
    let sent = core.sink_mut().take();
    assert_eq!(
        sent.len(),
        1,
        "only the age limit's answer reached the device"
    );
    assert_eq!(sent[0].1.code, ResponseCode::Invalid);
    assert_eq!(core.outstanding(dev).unwrap(), 1);
}

#[test]
fn a_consumer_cannot_answer_another_queues_group() {
    let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    let a = core.register(PriCaps::default()).unwrap();
    let b = core.register(PriCaps::default()).unwrap();
    let (pa, mut ca) = channel(&Offer::current(), &cookie_request(8), Default::default()).unwrap();
    let (pb, mut cb) = channel(&Offer::current(), &cookie_request(8), Default::default()).unwrap();
    let mut la = CoreLink::attach(&mut core, a, None, pa).unwrap();
    let mut lb = CoreLink::attach(&mut core, b, None, pb).unwrap();
    // B has two groups, A none: B's second cookie names no group of A's queue.
    for (i, g) in [1u32, 2].into_iter().enumerate() {
        core.report(b, &Fault::PageRequest(req(g, None, true, 0)), i as u64)
            .unwrap();
    }
    let mut out = pgfaults();
    assert_eq!(cb.read_faults(&mut out).unwrap(), 2);
    let theirs = out[1].cookie;
    ca.push_raw_response(
        RawFormat::Cookie,
        &cookie_bytes(theirs, ResponseCode::Success),
    )
    .unwrap()
    .unwrap();
    assert_eq!(la.pump(&mut core).answered, 0);
    let mut v = Vec::new();
    ca.take_verdicts(&mut v);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].outcome.unwrap_err().reason, RejectReason::UnknownGroup);
    assert!(core.sink().sent.is_empty());
    assert_eq!(core.outstanding(b).unwrap(), 2);
    // B answers its own, once each.
    let rs: Vec<IommufdResponse> = out[..2]
        .iter()
        .map(|f| IommufdResponse {
            cookie: f.cookie,
            code: ResponseCode::Success,
        })
        .collect();
    cb.respond(&rs).unwrap();
    assert_eq!(lb.pump(&mut core).answered, 2);
    assert_eq!(core.sink_mut().take().len(), 2);
}

#[test]
fn a_cookie_replayed_after_the_generations_came_round_does_not_answer_a_new_group() {
    let (mut p, mut c) = channel(
        &Offer::current(),
        &cookie_request(8),
        ProducerConfig::default(),
    )
    .unwrap();
    let mut answers = Vec::new();
    let first = p
        .push_group(&Group {
            tag: 0,
            dev_id: 0,
            requests: &[req(0, None, true, 0)],
        })
        .unwrap();
    let stale = cookie_bytes(first, ResponseCode::Success);
    let mut cookie = first;
    let mut tag = 0u64;
    // One group at a time, answered, for as many rounds as a 16-bit generation has values.
    for _ in 0..u16::MAX {
        c.push_raw_response(
            RawFormat::Cookie,
            &cookie_bytes(cookie, ResponseCode::Success),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.drain_responses(&mut answers), 1);
        assert_eq!(answers.pop().unwrap().tag, tag);
        tag += 1;
        cookie = p
            .push_group(&Group {
                tag,
                dev_id: 0,
                requests: &[req(0, None, true, 0)],
            })
            .unwrap();
        let mut drop_records = Vec::new();
        c.pop_events(&mut drop_records, 8).unwrap();
    }
    // The very first response, replayed now, answers nothing.
    c.push_raw_response(RawFormat::Cookie, &stale)
        .unwrap()
        .unwrap();
    p.drain_responses(&mut answers);
    assert!(
        answers.is_empty(),
        "a replayed cookie answered group {} (cookie {cookie:#x})",
        tag
    );
    assert_eq!(p.pending_groups(), 1);
}
