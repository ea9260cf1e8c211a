//! The queue in one process: round trips, verdicts, loss, consumer death.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

mod common;

use common::{cookie_request, push_one, req};
use iopf_abi::{FaultConsumer, Features, IommufdResponse, PgFault, ResponseCode};
use iopf_queue::{
    channel, AnsweredBy, Event, LossReason, Offer, ProducerConfig, QueueError, RawFormat,
    RejectReason, ResponseVerdict, TaggedGroup,
};

#[test]
fn groups_go_out_whole_and_answers_come_back_with_their_tags() {
    let (mut p, mut c) = channel(
        &Offer::current(),
        &cookie_request(64),
        ProducerConfig::default(),
    )
    .unwrap();
    let two = [
        req(1, Some(3), false, 0x1000),
        req(1, Some(3), true, 0x2000),
    ];
    let one = [req(2, None, true, 0x3000)];
    let c1 = p
        .push_group(&TaggedGroup {
            tag: 100,
            dev_id: 7,
            requests: &two,
        })
        .unwrap();
    let c2 = p
        .push_group(&TaggedGroup {
            tag: 200,
            dev_id: 8,
            requests: &one,
        })
        .unwrap();
    assert_ne!(c1, c2);
    let mut out = [PgFault::from_bytes(&[0; 40]).unwrap(); 8];
    assert!(c.wait_readable(Some(std::time::Duration::ZERO)).unwrap());
    assert_eq!(c.read_faults(&mut out).unwrap(), 3);
    assert_eq!(out[0].cookie, c1);
    assert_eq!(out[1].cookie, c1);
    assert!(out[1].is_last() && !out[0].is_last());
    assert_eq!((out[2].cookie, out[2].dev_id, out[2].grpid), (c2, 8, 2));
    assert_eq!(c.read_faults(&mut out).unwrap(), 0);
    let n = c
        .respond(&[
            IommufdResponse {
                cookie: c2,
                code: ResponseCode::Invalid,
            },
            IommufdResponse {
                cookie: c1,
                code: ResponseCode::Success,
            },
        ])
        .unwrap();
    assert_eq!(n, 2);
    // A cookie the consumer never read is refused at once, like the kernel's write().
    let e = c
        .respond(&[IommufdResponse {
            cookie: c1,
            code: ResponseCode::Success,
        }])
        .unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
    let mut answers = Vec::new();
    assert!(p
        .wait_responses(Some(std::time::Duration::from_secs(5)))
        .unwrap());
    assert_eq!(p.drain_responses(&mut answers), 2);
    assert_eq!(answers[0].tag, 200);
    assert_eq!(answers[0].code, ResponseCode::Invalid);
    assert_eq!(answers[1].tag, 100);
    assert_eq!(answers[1].pasid, Some(3));
    assert_eq!(answers[1].by, AnsweredBy::Consumer);
    let mut v = Vec::new();
    c.take_verdicts(&mut v);
    assert_eq!(
        v,
        vec![
            ResponseVerdict {
                id: 0,
                outcome: Ok(())
            },
            ResponseVerdict {
                id: 1,
                outcome: Ok(())
            }
        ]
    );
    assert_eq!(p.pending_groups(), 0);
}

#[test]
fn the_first_group_must_fit_whole() {
    let (mut p, mut c) = channel(
        &Offer::current(),
        &cookie_request(64),
        ProducerConfig::default(),
    )
    .unwrap();
    let three = [
        req(1, None, false, 0),
        req(1, None, false, 1),
        req(1, None, true, 2),
    ];
    p.push_group(&TaggedGroup {
        tag: 1,
        dev_id: 0,
        requests: &three,
    })
    .unwrap();
    let mut out = [PgFault::from_bytes(&[0; 40]).unwrap(); 2];
    assert!(matches!(
        c.read_faults(&mut out),
        Err(QueueError::Inconsistent(_))
    ));
    let mut out = [PgFault::from_bytes(&[0; 40]).unwrap(); 3];
    assert_eq!(c.read_faults(&mut out).unwrap(), 3);
}

#[test]
fn malformed_groups_are_refused_not_queued() {
    let (mut p, _c) = channel(
        &Offer::current(),
        &cookie_request(64),
        ProducerConfig::default(),
    )
    .unwrap();
    for bad in [
        vec![],
        vec![req(1, None, false, 0)],
        vec![req(1, None, true, 0), req(1, None, true, 0)],
        vec![req(1, None, false, 0), req(2, None, true, 0)],
    ] {
        let e = p
            .push_group(&TaggedGroup {
                tag: 0,
                dev_id: 0,
                requests: &bad,
            })
            .unwrap_err();
        assert!(matches!(e, QueueError::BadGroup(_)), "{e}");
    }
    let mut stop = req(1, None, true, 0);
    stop.perm = iopf_abi::Perm::empty();
    assert!(matches!(
        p.push_group(&TaggedGroup {
            tag: 0,
            dev_id: 0,
            requests: &[stop]
        }),
        Err(QueueError::BadGroup(_))
    ));
    assert_eq!(p.stats().delivered, 0);
}

#[test]
fn every_bad_response_gets_a_verdict_with_its_reason() {
    let (mut p, mut c) = channel(
        &Offer::current(),
        &cookie_request(64),
        ProducerConfig::default(),
    )
    .unwrap();
    let cookie = p
        .push_group(&TaggedGroup {
            tag: 9,
            dev_id: 0,
            requests: &[req(5, Some(1), true, 0)],
        })
        .unwrap();
    let mut evs = Vec::new();
    c.pop_events(&mut evs, 16).unwrap();
    let ok = IommufdResponse {
        cookie,
        code: ResponseCode::Success,
    }
    .encode();
    let failure = iopf_abi::HwptPageResponse { cookie, code: 2 };
    let sends: Vec<(RawFormat, Vec<u8>)> = vec![
        (
            RawFormat::Cookie,
            zerocopy::IntoBytes::as_bytes(&failure).to_vec(),
        ),
        (RawFormat::Cookie, vec![1, 2, 3]),
        (RawFormat::Vfio, vec![0; 28]),
        (
            RawFormat::Cookie,
            zerocopy::IntoBytes::as_bytes(&ok).to_vec(),
        ),
        (
            RawFormat::Cookie,
            zerocopy::IntoBytes::as_bytes(&ok).to_vec(),
        ),
        (RawFormat::Cookie, 0xdead_beef_u64.to_ne_bytes().to_vec()),
    ];
    for (f, b) in &sends {
        c.push_raw_response(*f, b).unwrap().unwrap();
    }
    // An impossible slot length, written by hand.
    let mut answers = Vec::new();
    while p.drain_responses(&mut answers) > 0 {}
    assert_eq!(
        answers.len(),
        1,
        "only the first good response answers the group"
    );
    assert_eq!(answers[0].tag, 9);
    let mut v = Vec::new();
    c.take_verdicts(&mut v);
    let reasons: Vec<Option<RejectReason>> = v
        .iter()
        .map(|v| v.outcome.err().map(|r| r.reason))
        .collect();
    assert_eq!(
        reasons,
        vec![
            Some(RejectReason::Decode),
            Some(RejectReason::Decode),
            Some(RejectReason::FormatNotAgreed),
            None,
            // The one judge tells a duplicate from a cookie nobody handed out.
            Some(RejectReason::AlreadyAnswered),
            Some(RejectReason::UnknownGroup),
        ]
    );
    assert_eq!(
        v.iter().map(|v| v.id).collect::<Vec<_>>(),
        (0..6).collect::<Vec<_>>()
    );
    assert_eq!(p.stats().rejected, 5);
    assert_eq!(c.stats().rejected, 5);
}

/// Backpressure, not failure: a group that finds the ring full waits in the backlog and is
/// delivered, in order, once the consumer makes room; nothing is lost.
#[test]
fn a_full_ring_holds_groups_back_and_delivers_them_in_order() {
    let (mut p, mut c) = channel(
        &Offer::current(),
        &cookie_request(4),
        ProducerConfig::default(),
    )
    .unwrap();
    let cookies: Vec<u32> = (0..6u32).map(|g| push_one(&mut p, g).unwrap()).collect();
    assert_eq!((p.stats().lost, p.stats().held_back), (0, 2));
    assert_eq!(p.backlog_requests(), 2);
    let mut evs = Vec::new();
    c.pop_events(&mut evs, 16).unwrap();
    assert_eq!(evs.len(), 4);
    // The owner's routine drain delivers the backlog now that the consumer made room.
    let mut answers = Vec::new();
    p.drain_responses(&mut answers);
    assert_eq!(p.backlog_requests(), 0);
    c.pop_events(&mut evs, 16).unwrap();
    let got: Vec<(u64, u32)> = evs
        .iter()
        .map(|e| match e {
            Event::Fault(f) => (f.seq, f.cookie),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        cookies
            .iter()
            .enumerate()
            .map(|(i, &c)| (i as u64, c))
            .collect::<Vec<_>>()
    );
    assert_eq!((c.stats().lost, c.producer_lost()), (0, 0));
    assert_eq!(p.stats().backlog_high_water, 2);
}

/// A response cannot name a group that is still held back: the consumer has not seen its
/// cookie, exactly as a kernel cookie counts only once `read()` handed it out.
#[test]
fn a_held_back_group_cannot_be_answered_before_it_is_delivered() {
    let (mut p, mut c) = channel(
        &Offer::current(),
        &cookie_request(2),
        ProducerConfig::default(),
    )
    .unwrap();
    let cookies: Vec<u32> = (0..3u32).map(|g| push_one(&mut p, g).unwrap()).collect();
    c.push_raw_response(
        RawFormat::Cookie,
        zerocopy::IntoBytes::as_bytes(&iopf_abi::HwptPageResponse {
            cookie: cookies[2],
            code: 0,
        }),
    )
    .unwrap();
    let mut answers = Vec::new();
    p.drain_responses(&mut answers);
    assert!(answers.is_empty());
    let mut v = Vec::new();
    c.take_verdicts(&mut v);
    assert_eq!(
        v[0].outcome.err().map(|r| r.reason),
        Some(RejectReason::UnknownGroup)
    );
}

/// Past the backlog's bound a group is lost, counted by reason, and announced (a record naming
/// the reason) once there is a slot for the record.
#[test]
fn losses_past_the_backlog_are_announced_with_their_reason_once_there_is_room() {
    let config = ProducerConfig {
        max_backlog: 0,
        ..ProducerConfig::default()
    };
    let (mut p, mut c) = channel(&Offer::current(), &cookie_request(4), config).unwrap();
    let mut lost = Vec::new();
    for g in 0..6 {
        if let Err(e) = push_one(&mut p, g) {
            lost.push(e.to_string());
        }
    }
    assert_eq!(lost.len(), 2, "{lost:?}");
    assert_eq!(p.stats().lost_by.get(LossReason::BacklogFull), 2);
    // Known at once, from the header, before any record could be written.
    assert_eq!(c.producer_losses().get(LossReason::BacklogFull), 2);
    // The ring is full: nothing can be announced yet.
    assert!(!p.announce_losses());
    let mut evs = Vec::new();
    c.pop_events(&mut evs, 16).unwrap();
    assert_eq!(evs.len(), 4);
    // The owner's routine drain writes the record now that the consumer made room.
    let mut answers = Vec::new();
    p.drain_responses(&mut answers);
    evs.clear();
    c.pop_events(&mut evs, 16).unwrap();
    assert_eq!(
        evs,
        vec![Event::Lost {
            first_seq: 4,
            count: 2,
            reason: Some(LossReason::BacklogFull)
        }]
    );
    // Announced once only.
    assert!(!p.announce_losses());
    p.drain_responses(&mut answers);
    evs.clear();
    c.pop_events(&mut evs, 16).unwrap();
    assert!(evs.is_empty());
    assert_eq!(c.stats().lost, 2);
}

#[test]
fn without_loss_records_the_consumer_sees_the_gap() {
    let mut r = cookie_request(2);
    r.features.remove(Features::LOSS_RECORDS);
    let config = ProducerConfig {
        max_backlog: 0,
        ..ProducerConfig::default()
    };
    let (mut p, mut c) = channel(&Offer::current(), &r, config).unwrap();
    for g in 0..3u32 {
        let _ = p.push_group(&TaggedGroup {
            tag: 0,
            dev_id: 0,
            requests: &[req(g, None, true, 0)],
        });
    }
    let mut evs = Vec::new();
    c.pop_events(&mut evs, 16).unwrap();
    p.push_group(&TaggedGroup {
        tag: 0,
        dev_id: 0,
        requests: &[req(9, None, true, 0)],
    })
    .unwrap();
    c.pop_events(&mut evs, 16).unwrap();
    let seqs: Vec<u64> = evs
        .iter()
        .map(|e| match e {
            Event::Fault(f) => f.seq,
            Event::Lost { .. } => panic!("loss records were not agreed"),
            Event::Unrecoverable { .. } => panic!("no unrecoverable fault was pushed"),
        })
        .collect();
    assert_eq!(seqs, vec![0, 1, 3]);
    assert_eq!(c.stats().lost, 1);
}

#[test]
fn groups_past_the_pending_limit_wait_for_answers_instead_of_being_lost() {
    let config = ProducerConfig {
        max_pending: 2,
        ..ProducerConfig::default()
    };
    let (mut p, mut c) = channel(&Offer::current(), &cookie_request(64), config).unwrap();
    let cookies: Vec<u32> = (0..3u32).map(|g| push_one(&mut p, g).unwrap()).collect();
    assert_eq!((p.pending_groups(), p.backlog_requests()), (3, 1));
    let mut out = [PgFault::from_bytes(&[0; 40]).unwrap(); 8];
    assert_eq!(c.read_faults(&mut out).unwrap(), 2);
    c.respond(&[IommufdResponse {
        cookie: cookies[0],
        code: ResponseCode::Success,
    }])
    .unwrap();
    let mut answers = Vec::new();
    p.drain_responses(&mut answers);
    assert_eq!(answers.len(), 1);
    // The answer made room under the limit: the third group is delivered.
    assert_eq!(c.read_faults(&mut out).unwrap(), 1);
    assert_eq!(out[0].cookie, cookies[2]);
    assert_eq!(p.stats().lost, 0);
}

#[test]
fn a_consumer_that_goes_away_has_all_its_groups_answered_invalid() {
    let (mut p, mut c) = channel(
        &Offer::current(),
        &cookie_request(64),
        ProducerConfig::default(),
    )
    .unwrap();
    let cookies: Vec<u32> = (0..5).map(|g| push_one(&mut p, g).unwrap()).collect();
    let mut out = [PgFault::from_bytes(&[0; 40]).unwrap(); 8];
    c.read_faults(&mut out).unwrap();
    c.respond(&[IommufdResponse {
        cookie: cookies[1],
        code: ResponseCode::Success,
    }])
    .unwrap();
    drop(c);
    assert!(p.consumer_gone());
    assert!(p.wait_responses(None).unwrap());
    let mut answers = Vec::new();
    assert_eq!(p.close(&mut answers), 5);
    let by_consumer: Vec<u64> = answers
        .iter()
        .filter(|a| a.by == AnsweredBy::Consumer)
        .map(|a| a.tag)
        .collect();
    assert_eq!(by_consumer, vec![1]);
    let mut gone: Vec<u64> = answers
        .iter()
        .filter(|a| a.by == AnsweredBy::ConsumerGone)
        .inspect(|a| assert_eq!(a.code, ResponseCode::Invalid))
        .map(|a| a.tag)
        .collect();
    gone.sort();
    assert_eq!(gone, vec![0, 2, 3, 4]);
    assert!(matches!(
        p.push_group(&TaggedGroup {
            tag: 0,
            dev_id: 0,
            requests: &[req(9, None, true, 0)]
        }),
        Err(QueueError::Lost(LossReason::ConsumerGone))
    ));
}

#[test]
fn a_sleeping_consumer_is_woken_by_the_producer() {
    let (mut p, mut c) = channel(
        &Offer::current(),
        &cookie_request(64),
        ProducerConfig::default(),
    )
    .unwrap();
    let t = std::thread::spawn(move || {
        let mut got = 0;
        let mut evs = Vec::new();
        while got < 3 {
            c.wait(Some(std::time::Duration::from_secs(10))).unwrap();
            got += c.pop_events(&mut evs, 16).unwrap();
        }
        got
    });
    for g in 0..3u32 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        p.push_group(&TaggedGroup {
            tag: 0,
            dev_id: 0,
            requests: &[req(g, None, true, 0)],
        })
        .unwrap();
    }
    assert_eq!(t.join().unwrap(), 3);
}

/// A producer asleep with groups held back is woken when the consumer gives slots back, even if
/// the consumer answers nothing: the backlog cannot wait forever on a consumer that only reads.
#[test]
fn a_producer_holding_groups_back_wakes_when_slots_come_back() {
    let (mut p, mut c) = channel(
        &Offer::current(),
        &cookie_request(4),
        ProducerConfig::default(),
    )
    .unwrap();
    for g in 0..6u32 {
        push_one(&mut p, g).unwrap();
    }
    assert_eq!(p.backlog_requests(), 2);
    let reader = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut evs = Vec::new();
        c.pop_events(&mut evs, 16).unwrap();
        assert_eq!(evs.len(), 4);
        c
    });
    // No response ever comes; only returned slots can end this wait.
    assert!(p
        .wait_responses(Some(std::time::Duration::from_secs(30)))
        .unwrap());
    let mut answers = Vec::new();
    p.drain_responses(&mut answers);
    assert_eq!(p.backlog_requests(), 0, "the backlog moved into the ring");
    let mut c = reader.join().unwrap();
    let mut evs = Vec::new();
    c.pop_events(&mut evs, 16).unwrap();
    assert_eq!(evs.len(), 2);
}

/// A push delivers what waits in the backlog first when room has freed (the consumer read),
/// without waiting for the owner's next drain: the held-back group and the new one both reach
/// the consumer, in order. (A push used to hold the new group back behind the old one.)
#[test]
fn a_push_delivers_the_backlog_first_once_room_has_freed() {
    let (mut p, mut c) = common::cookie_queue(2);
    for g in 1..=3 {
        push_one(&mut p, g).unwrap();
    }
    assert_eq!(p.backlog_requests(), 1);
    let mut out = [PgFault::from_bytes(&[0; 40]).unwrap(); 4];
    assert_eq!(c.read_faults(&mut out).unwrap(), 2);
    push_one(&mut p, 4).unwrap();
    assert_eq!(p.backlog_requests(), 0);
    assert_eq!(c.read_faults(&mut out).unwrap(), 2);
    assert_eq!((out[0].grpid, out[1].grpid), (3, 4));
}
