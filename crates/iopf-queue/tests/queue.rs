//! The queue in one process: round trips, verdicts, loss, consumer death.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

mod common;

use common::{cookie_request, push_one, req};
use iopf_abi::{FaultConsumer, Features, IommufdResponse, PgFault, ResponseCode};
use iopf_queue::{
    channel, AnsweredBy, Event, Group, LossReason, Offer, ProducerConfig, QueueError, RawFormat,
    RejectReason, Verdict,
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
        .push_group(&Group {
            tag: 100,
            dev_id: 7,
            requests: &two,
        })
        .unwrap();
    let c2 = p
        .push_group(&Group {
            tag: 200,
            dev_id: 8,
            requests: &one,
        })
        .unwrap();
    assert_ne!(c1, c2);
    let mut out = [PgFault::from_bytes(&[0; 40]).unwrap(); 8];
    assert!(c.wait_readable(Some(0)).unwrap());
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
            Verdict {
                id: 0,
                outcome: Ok(())
            },
            Verdict {
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
    p.push_group(&Group {
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
            .push_group(&Group {
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
        p.push_group(&Group {
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
        .push_group(&Group {
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
            Some(RejectReason::UnknownGroup),
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

#[test]
fn a_full_ring_loses_groups_counts_them_and_says_so() {
    let (mut p, mut c) = channel(
        &Offer::current(),
        &cookie_request(4),
        ProducerConfig::default(),
    )
    .unwrap();
    let mut lost = Vec::new();
    let mut ok = Vec::new();
    for g in 0..6u32 {
        match push_one(&mut p, g) {
            Ok(c) => ok.push((g, c)),
            Err(QueueError::Lost(LossReason::RingFull)) => lost.push(g),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok.len(), 4);
    assert_eq!(lost, vec![4, 5]);
    assert_eq!(p.stats().lost, 2);
    assert_eq!(c.producer_lost(), 2);
    let mut evs = Vec::new();
    c.pop_events(&mut evs, 16).unwrap();
    assert_eq!(evs.len(), 4);
    // The next group is preceded by a loss record naming the two lost sequence numbers.
    p.push_group(&Group {
        tag: 6,
        dev_id: 0,
        requests: &[req(6, None, true, 0)],
    })
    .unwrap();
    evs.clear();
    c.pop_events(&mut evs, 16).unwrap();
    assert_eq!(
        evs[0],
        Event::Lost {
            first_seq: 4,
            count: 2
        }
    );
    let Event::Fault(f) = evs[1] else {
        panic!("expected a fault")
    };
    assert_eq!(f.seq, 6);
    assert_eq!(c.stats().lost, 2);
}

#[test]
fn losses_after_the_last_push_are_announced_once_there_is_room() {
    let (mut p, mut c) = channel(
        &Offer::current(),
        &cookie_request(4),
        ProducerConfig::default(),
    )
    .unwrap();
    for g in 0..6 {
        let _ = push_one(&mut p, g);
    }
    assert_eq!(p.stats().lost, 2);
    // The ring is full: nothing can be announced yet, and nothing more is pushed.
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
            count: 2
        }]
    );
    // Announced once only.
    assert!(!p.announce_losses());
    p.drain_responses(&mut answers);
    evs.clear();
    c.pop_events(&mut evs, 16).unwrap();
    assert!(evs.is_empty());
}

#[test]
fn without_loss_records_the_consumer_sees_the_gap() {
    let mut r = cookie_request(2);
    r.features.remove(Features::LOSS_RECORDS);
    let (mut p, mut c) = channel(&Offer::current(), &r, ProducerConfig::default()).unwrap();
    for g in 0..3u32 {
        let _ = p.push_group(&Group {
            tag: 0,
            dev_id: 0,
            requests: &[req(g, None, true, 0)],
        });
    }
    let mut evs = Vec::new();
    c.pop_events(&mut evs, 16).unwrap();
    p.push_group(&Group {
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
fn too_many_pending_groups_are_lost_not_kept() {
    let config = ProducerConfig {
        max_pending: 2,
        max_per_wake: 256,
    };
    let (mut p, _c) = channel(&Offer::current(), &cookie_request(64), config).unwrap();
    for g in 0..2u32 {
        p.push_group(&Group {
            tag: 0,
            dev_id: 0,
            requests: &[req(g, None, true, 0)],
        })
        .unwrap();
    }
    assert!(matches!(
        p.push_group(&Group {
            tag: 0,
            dev_id: 0,
            requests: &[req(3, None, true, 0)]
        }),
        Err(QueueError::Lost(LossReason::TooManyPending))
    ));
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
        p.push_group(&Group {
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
        p.push_group(&Group {
            tag: 0,
            dev_id: 0,
            requests: &[req(g, None, true, 0)],
        })
        .unwrap();
    }
    assert_eq!(t.join().unwrap(), 3);
}
