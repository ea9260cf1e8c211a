//! Property tests of invariants 1–3 on the queue alone: whatever a (well-formed or not) consumer
//! does, every group the producer took (delivered at once or held in its backlog) is answered
//! exactly once, groups reach the consumer in the order they were pushed, nothing is lost while
//! the backlog has room, every lost record is counted and announced with its reason, sequence
//! numbers account for every record, and every response gets one verdict.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

mod common;

use std::collections::{HashMap, HashSet};

use common::req;
use iopf_abi::features::RecordFormats;
use iopf_abi::{FaultConsumer, Features, IommufdResponse, PgFault, ResponseCode};
use iopf_queue::{
    channel, Event, LossReason, Offer, ProducerConfig, QueueError, RawFormat, Request, TaggedGroup,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Push { requests: usize },
    Pop { max: usize },
    PopOne,
    ReadGroups,
    Answer { pick: usize, code: u32 },
    Garbage(Vec<u8>, bool),
    Drain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..4).prop_map(|requests| Op::Push { requests }),
        2 => (1usize..20).prop_map(|max| Op::Pop { max }),
        2 => Just(Op::PopOne),
        1 => Just(Op::ReadGroups),
        3 => (any::<usize>(), 0u32..3).prop_map(|(pick, code)| Op::Answer { pick, code }),
        1 => (proptest::collection::vec(any::<u8>(), 0..57), any::<bool>()).prop_map(|(b, c)| Op::Garbage(b, c)),
        2 => Just(Op::Drain),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: iopf_core::testing::proptest_cases(256), ..ProptestConfig::default() })]

    #[test]
    fn exactly_once_and_nothing_lost_silently(
        ops in proptest::collection::vec(op(), 1..200),
        entries in prop_oneof![Just(4u32), Just(8), Just(64)],
        loss_records in any::<bool>(),
        drop_consumer_at in proptest::option::of(0usize..200),
    ) {
        let mut features = Features::COOKIE_RESPONSE;
        if loss_records {
            features |= Features::LOSS_RECORDS;
        }
        let mut r = Request::best_for(&Offer::current(), RecordFormats::HWPT_PGFAULT, features).unwrap();
        r.entries = entries;
        let config = ProducerConfig { max_pending: 16, max_per_wake: 4, max_backlog: 12 };
        let (mut p, c) = channel(&Offer::current(), &r, config).unwrap();
        let mut c = Some(c);
        let mut delivered = HashSet::new();
        let mut answered = HashSet::new();
        let mut lost_records = 0u64;
        let mut pushed_records = 0u64;
        let mut seen_cookies: Vec<u32> = Vec::new();
        let mut responses_sent = 0u64;
        let mut verdicts = Vec::new();
        let mut answers = Vec::new();
        let mut events = Vec::new();
        // The next sequence number expected; unknown after a read_faults (which hides them).
        let mut next_seq: Option<u64> = Some(0);
        let mut tag = 0u64;
        // Which tag each cookie was pushed with, and the last tag the consumer saw complete.
        let mut tag_of: HashMap<u32, u64> = HashMap::new();
        let mut last_seen_tag: Option<u64> = None;
        let settle = |answers: &mut Vec<iopf_queue::Answer>, answered: &mut HashSet<u64>, delivered: &HashSet<u64>| {
            for a in answers.drain(..) {
                prop_assert!(delivered.contains(&a.tag), "answer for an undelivered group");
                prop_assert!(answered.insert(a.tag), "group {} answered twice", a.tag);
            }
            Ok(())
        };
        for (i, op) in ops.iter().enumerate() {
            if drop_consumer_at == Some(i) {
                if let Some(mut c) = c.take() {
                    c.take_verdicts(&mut verdicts);
                }
            }
            match op {
                Op::Push { requests } => {
                    let reqs: Vec<_> = (0..*requests).map(|k| req((tag % 512) as u32, None, k + 1 == *requests, 0)).collect();
                    pushed_records += *requests as u64;
                    let room = p.backlog_requests() + *requests <= config.max_backlog as usize;
                    match p.push_group(&TaggedGroup { tag, dev_id: 0, requests: &reqs }) {
                        Ok(cookie) => {
                            delivered.insert(tag);
                            tag_of.insert(cookie, tag);
                        }
                        Err(QueueError::Lost(why)) => {
                            // Lost only past the backlog, or once the consumer has gone.
                            prop_assert!(
                                (why == LossReason::BacklogFull && !room)
                                    || (why == LossReason::ConsumerGone && c.is_none()),
                                "lost for {why:?} with the backlog at {}", p.backlog_requests()
                            );
                            lost_records += *requests as u64;
                        }
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                    prop_assert!(p.backlog_requests() as u64 <= config.max_backlog);
                    tag += 1;
                }
                Op::Pop { .. } | Op::PopOne => if let Some(c) = c.as_mut() {
                    events.clear();
                    match op {
                        Op::Pop { max } => {
                            c.pop_events(&mut events, *max).unwrap();
                        }
                        _ => events.extend(c.pop_event()),
                    }
                    for e in &events {
                        match e {
                            Event::Fault(f) => {
                                let expected = next_seq.unwrap_or(f.seq);
                                if loss_records {
                                    prop_assert_eq!(f.seq, expected, "a gap without a loss record");
                                } else {
                                    prop_assert!(f.seq >= expected);
                                }
                                next_seq = Some(f.seq + 1);
                                if f.request.is_last() {
                                    seen_cookies.push(f.cookie);
                                    // In the order they were pushed, backlog or not.
                                    let t = tag_of.get(&f.cookie).copied();
                                    prop_assert!(t.is_some(), "a cookie nobody pushed");
                                    prop_assert!(last_seen_tag < t, "group {t:?} after {last_seen_tag:?}");
                                    last_seen_tag = t;
                                }
                            }
                            Event::Lost { first_seq, count, reason } => {
                                prop_assert!(loss_records);
                                prop_assert!(matches!(reason, None | Some(LossReason::BacklogFull)));
                                prop_assert_eq!(*first_seq, next_seq.unwrap_or(*first_seq));
                                next_seq = Some(first_seq + count);
                            }
                            Event::Unrecoverable { .. } => {
                                prop_assert!(false, "no unrecoverable fault was pushed");
                            }
                        }
                    }
                },
                Op::ReadGroups => if let Some(c) = c.as_mut() {
                    let mut out = [PgFault::from_bytes(&[0; 40]).unwrap(); 8];
                    next_seq = None;
                    if let Ok(n) = c.read_faults(&mut out) {
                        seen_cookies.extend(out[..n].iter().filter(|f| f.is_last()).map(|f| f.cookie));
                    }
                },
                Op::Answer { pick, code } => if let Some(c) = c.as_mut() {
                    if !seen_cookies.is_empty() {
                        // Any cookie it has seen, answered or not: duplicates are part of the test.
                        let cookie = seen_cookies[pick % seen_cookies.len()];
                        let raw = iopf_abi::HwptPageResponse { cookie, code: *code };
                        if c.push_raw_response(RawFormat::Cookie, zerocopy::IntoBytes::as_bytes(&raw)).unwrap().is_some() {
                            responses_sent += 1;
                        }
                    }
                },
                Op::Garbage(bytes, cookie) => if let Some(c) = c.as_mut() {
                    let f = if *cookie { RawFormat::Cookie } else { RawFormat::Vfio };
                    if c.push_raw_response(f, bytes).unwrap().is_some() {
                        responses_sent += 1;
                    }
                },
                Op::Drain => {
                    p.drain_responses(&mut answers);
                    settle(&mut answers, &mut answered, &delivered)?;
                }
            }
        }
        // Let the consumer see its last verdicts before it goes.
        while p.drain_responses(&mut answers) > 0 {}
        settle(&mut answers, &mut answered, &delivered)?;
        if let Some(mut c) = c.take() {
            c.take_verdicts(&mut verdicts);
            prop_assert_eq!(verdicts.len() as u64, responses_sent, "one verdict per response");
            let ids: Vec<u64> = verdicts.iter().map(|v| v.id).collect();
            prop_assert_eq!(ids, (0..responses_sent).collect::<Vec<_>>());
            // Lost records are announced: by loss records (seen above) or by the header
            // counters, by reason.
            prop_assert_eq!(c.producer_lost(), lost_records);
            prop_assert_eq!(c.producer_losses(), p.stats().lost_by);
        }
        let held_back = p.backlog_requests() as u64;
        p.close(&mut answers);
        settle(&mut answers, &mut answered, &delivered)?;
        prop_assert_eq!(&answered, &delivered, "every group the producer took answered");
        prop_assert_eq!(p.stats().lost, lost_records);
        prop_assert_eq!(p.stats().lost_by.total(), lost_records);
        prop_assert_eq!(p.stats().delivered + p.stats().lost + held_back, pushed_records);
        prop_assert_eq!(p.pending_groups(), 0);
        let _ = IommufdResponse { cookie: 0, code: ResponseCode::Success };
    }
}
