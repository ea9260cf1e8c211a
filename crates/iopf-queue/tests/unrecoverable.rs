//! Unrecoverable fault records: carried when (and only when) `Features::UNRECOVERABLE` was
//! agreed, in the same sequence as page requests, lost and announced like any record, skipped by
//! `read_faults`, refused with the iommufd record format, and fed from the fault core.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

mod common;

use std::sync::atomic::Ordering;

use common::{caps, req};
use iopf_abi::fault::{FaultReason, UnrecoverableFlags};
use iopf_abi::features::RecordFormats;
use iopf_abi::{
    Fault, FaultConsumer, Features, IommufdResponse, Perm, PgFault, ResponseCode, Unrecoverable,
};
use iopf_core::testing::RecordingSink;
use iopf_core::{FaultCore, Reported};
use iopf_queue::{
    channel, negotiate, Consumer, CoreLink, Event, LossReason, Offer, Producer, ProducerConfig,
    QueueError, Request, TaggedGroup,
};

fn fault(addr: u64) -> Unrecoverable {
    Unrecoverable {
        reason: FaultReason::Permission,
        flags: UnrecoverableFlags::ADDR_VALID | UnrecoverableFlags::PASID_VALID,
        pasid: 9,
        perm: Perm::WRITE,
        addr,
        fetch_addr: 0,
    }
}

/// An `iommu_fault` queue with cookie responses, loss records and, if `unrecoverable`, the
/// feature.
fn request(entries: u32, unrecoverable: bool) -> Request {
    let mut want = Features::COOKIE_RESPONSE | Features::LOSS_RECORDS;
    if unrecoverable {
        want |= Features::UNRECOVERABLE;
    }
    let mut r = Request::best_for(&Offer::current(), RecordFormats::IOMMU_FAULT, want).unwrap();
    assert_eq!(r.features, want);
    r.entries = entries;
    r
}

fn queue(entries: u32, unrecoverable: bool) -> (Producer, Consumer) {
    channel(
        &Offer::current(),
        &request(entries, unrecoverable),
        ProducerConfig::default(),
    )
    .unwrap()
}

fn push(p: &mut Producer, grpid: u32, n: usize) -> u32 {
    let mut rs: Vec<_> = (0..n)
        .map(|i| req(grpid, None, false, 0x1000 * i as u64))
        .collect();
    if let Some(last) = rs.last_mut() {
        *last = req(grpid, None, true, 0x1000 * (n as u64 - 1));
    }
    p.push_group(&TaggedGroup {
        tag: u64::from(grpid),
        dev_id: 1,
        requests: &rs,
    })
    .unwrap()
}

#[test]
fn delivered_when_agreed_and_never_pending() {
    assert!(Offer::current().features.contains(Features::UNRECOVERABLE));
    let (mut p, mut c) = queue(8, true);
    assert_eq!(p.push_unrecoverable(5, &fault(0xdead_0000)).unwrap(), 0);
    assert_eq!(p.pending_groups(), 0);
    assert_eq!(p.stats().delivered, 1);
    assert!(c.wait(Some(std::time::Duration::ZERO)).unwrap());
    let mut evs = Vec::new();
    assert_eq!(c.pop_events(&mut evs, 8).unwrap(), 1);
    assert_eq!(
        evs,
        vec![Event::Unrecoverable {
            seq: 0,
            dev_id: 5,
            fault: fault(0xdead_0000)
        }]
    );
    assert_eq!(c.held_groups(), 0);
    assert_eq!((c.stats().records, c.stats().lost), (1, 0));
    // Nothing to answer: no response is waiting and the producer owes nothing.
    let mut answers = Vec::new();
    assert_eq!(p.drain_responses(&mut answers), 0);
    assert_eq!(p.close(&mut answers), 0);
}

#[test]
fn not_written_when_not_agreed() {
    for r in [request(8, false), Request::v1()] {
        let (mut p, mut c) = channel(&Offer::current(), &r, ProducerConfig::default()).unwrap();
        let e = p.push_unrecoverable(5, &fault(0x1000)).unwrap_err();
        assert!(matches!(e, QueueError::NotAgreed(_)), "{e}");
        assert_eq!(e.errno(), libc::EOPNOTSUPP);
        assert!(e.to_string().contains("UNRECOVERABLE"), "{e}");
        assert_eq!((p.stats().delivered, p.stats().lost), (0, 0));
        let mut evs = Vec::new();
        assert_eq!(c.pop_events(&mut evs, 8).unwrap(), 0);
        // No sequence number was used: the next page request is seq 0, and no loss is seen.
        push(&mut p, 1, 1);
        c.pop_events(&mut evs, 8).unwrap();
        let [Event::Fault(f)] = evs[..] else {
            panic!("{evs:?}")
        };
        assert_eq!(f.seq, 0);
        assert_eq!(c.stats().lost, 0);
    }
}

#[test]
fn sequence_numbers_run_on_through_page_requests() {
    let (mut p, mut c) = queue(16, true);
    let g1 = push(&mut p, 1, 2);
    assert_eq!(p.push_unrecoverable(3, &fault(0xa000)).unwrap(), 2);
    let g2 = push(&mut p, 2, 1);
    assert_eq!(p.push_unrecoverable(4, &fault(0xb000)).unwrap(), 4);
    let mut evs = Vec::new();
    assert_eq!(c.pop_events(&mut evs, 16).unwrap(), 5);
    let seen: Vec<(u64, Option<u32>, Option<u64>)> = evs
        .iter()
        .map(|e| match e {
            Event::Fault(f) => (f.seq, Some(f.cookie), None),
            Event::Unrecoverable { seq, fault, .. } => (*seq, None, Some(fault.addr)),
            Event::Lost { .. } => panic!("nothing was lost"),
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (0, Some(g1), None),
            (1, Some(g1), None),
            (2, None, Some(0xa000)),
            (3, Some(g2), None),
            (4, None, Some(0xb000)),
        ]
    );
    assert_eq!((c.stats().records, c.stats().lost), (5, 0));
    assert_eq!(c.held_groups(), 2);
}

#[test]
fn a_full_ring_loses_them_and_announces_the_loss() {
    let (mut p, mut c) = queue(4, true);
    push(&mut p, 1, 2);
    push(&mut p, 2, 1);
    assert_eq!(p.push_unrecoverable(1, &fault(0x1000)).unwrap(), 3);
    let e = p.push_unrecoverable(1, &fault(0x2000)).unwrap_err();
    assert!(matches!(e, QueueError::Lost(LossReason::RingFull)), "{e}");
    assert_eq!(e.errno(), libc::ENOSPC);
    assert_eq!((p.stats().delivered, p.stats().lost), (4, 1));
    assert_eq!(c.producer_lost(), 1);
    let mut evs = Vec::new();
    assert_eq!(c.pop_events(&mut evs, 16).unwrap(), 4);
    // The next one is preceded by the loss record naming seq 4.
    evs.clear();
    assert_eq!(p.push_unrecoverable(1, &fault(0x3000)).unwrap(), 5);
    c.pop_events(&mut evs, 16).unwrap();
    assert_eq!(
        evs,
        vec![
            Event::Lost {
                first_seq: 4,
                count: 1,
                reason: Some(LossReason::RingFull)
            },
            Event::Unrecoverable {
                seq: 5,
                dev_id: 1,
                fault: fault(0x3000)
            }
        ]
    );
    assert_eq!(c.stats().lost, 1);
    // Lost after the last push: announced once the consumer has made room.
    for a in 0..4 {
        p.push_unrecoverable(1, &fault(a)).unwrap();
    }
    assert!(p.push_unrecoverable(1, &fault(0x4000)).is_err());
    evs.clear();
    c.pop_events(&mut evs, 16).unwrap();
    assert!(p.announce_losses());
    evs.clear();
    c.pop_events(&mut evs, 16).unwrap();
    assert_eq!(
        evs,
        vec![Event::Lost {
            first_seq: 10,
            count: 1,
            reason: Some(LossReason::RingFull)
        }]
    );
    // A consumer that is gone loses them too.
    drop(c);
    let e = p.push_unrecoverable(1, &fault(0x5000)).unwrap_err();
    assert!(
        matches!(e, QueueError::Lost(LossReason::ConsumerGone)),
        "{e}"
    );
    assert_eq!(p.stats().lost, 3);
}

#[test]
fn read_faults_skips_them_and_keeps_groups_whole() {
    let (mut p, mut c) = queue(16, true);
    let g1 = push(&mut p, 1, 2);
    p.push_unrecoverable(1, &fault(0xa000)).unwrap();
    let g2 = push(&mut p, 2, 1);
    p.push_unrecoverable(1, &fault(0xb000)).unwrap();
    p.push_unrecoverable(1, &fault(0xc000)).unwrap();
    // Room for the first group only: it comes whole, the second waits.
    let mut out = [PgFault::from_bytes(&[0; 40]).unwrap(); 2];
    assert_eq!(c.read_faults(&mut out).unwrap(), 2);
    assert_eq!((out[0].cookie, out[1].cookie), (g1, g1));
    assert!(out[1].is_last());
    let mut out = [PgFault::from_bytes(&[0; 40]).unwrap(); 8];
    assert_eq!(c.read_faults(&mut out).unwrap(), 1);
    assert_eq!((out[0].cookie, out[0].grpid), (g2, 2));
    // Only unrecoverable records were left, and they were skipped: the ring is empty.
    assert_eq!(c.read_faults(&mut out).unwrap(), 0);
    let mut evs = Vec::new();
    assert_eq!(c.pop_events(&mut evs, 8).unwrap(), 0);
    // Skipped records are in the sequence: no loss is counted for them.
    assert_eq!((c.stats().records, c.stats().lost), (6, 0));
    // Both groups are answerable.
    let rs = [g1, g2].map(|cookie| IommufdResponse {
        cookie,
        code: ResponseCode::Success,
    });
    assert_eq!(c.respond(&rs).unwrap(), 2);
    let mut answers = Vec::new();
    while p.drain_responses(&mut answers) > 0 {}
    assert_eq!(answers.len(), 2);
    assert_eq!(p.pending_groups(), 0);
}

#[test]
fn a_malformed_record_from_the_producer_is_skipped_not_a_panic() {
    let (mut p, mut c) = queue(4, true);
    p.push_unrecoverable(1, &fault(0xa000)).unwrap();
    p.push_unrecoverable(1, &fault(0xb000)).unwrap();
    // The fault ring starts at word 128; an `iommu_fault` slot is the record's 8 words, its
    // word 1 the reason and flags. Scribble an unknown reason into the first record.
    c.raw_region()[128 + 1].store(0xffff, Ordering::Relaxed);
    let mut evs = Vec::new();
    assert_eq!(c.pop_events(&mut evs, 8).unwrap(), 1);
    assert!(matches!(evs[0], Event::Unrecoverable { seq: 1, .. }));
    assert_eq!(c.stats().corrupt, 1);
    // Why it was skipped: the record's own decoding error (an unknown reason).
    assert!(
        matches!(
            c.last_refusal(),
            Some(QueueError::Abi(iopf_abi::AbiError::UnknownReason(0xffff)))
        ),
        "{:?}",
        c.last_refusal()
    );
}

#[test]
fn the_iommufd_record_format_cannot_carry_them() {
    let offer = Offer::current();
    // A consumer asking for everything gets UNRECOVERABLE only with iommu_fault records.
    let r = Request::best_for(&offer, RecordFormats::HWPT_PGFAULT, Features::all()).unwrap();
    assert!(!r.features.contains(Features::UNRECOVERABLE));
    negotiate(&offer, &r).unwrap();
    let r = Request::best_for(&offer, RecordFormats::IOMMU_FAULT, Features::all()).unwrap();
    assert!(r.features.contains(Features::UNRECOVERABLE));
    negotiate(&offer, &r).unwrap();
    // Asked for anyway with the 40-byte record: refused, naming the feature.
    let mut r = Request::best_for(
        &offer,
        RecordFormats::HWPT_PGFAULT,
        Features::COOKIE_RESPONSE,
    )
    .unwrap();
    r.features |= Features::UNRECOVERABLE;
    let e = negotiate(&offer, &r).unwrap_err();
    assert!(matches!(e, QueueError::Inconsistent(_)), "{e}");
    assert_eq!(e.errno(), libc::EINVAL);
    assert!(e.to_string().contains("UNRECOVERABLE"), "{e}");
    assert!(channel(&offer, &r, ProducerConfig::default()).is_err());
    // At ABI version 1 it is not offered at all.
    let mut r = Request::v1();
    r.features = Features::UNRECOVERABLE;
    assert!(matches!(
        negotiate(&offer, &r),
        Err(QueueError::NotOffered(_))
    ));
}

#[test]
fn core_to_queue_to_consumer() {
    for agreed in [true, false] {
        let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
        let dev = core.register(caps(8)).unwrap();
        let (p, mut c) = queue(8, agreed);
        let link = CoreLink::attach(&mut core, dev, None, p).unwrap();
        let r = core
            .report(dev, &Fault::Unrecoverable(fault(0xf000)), 0)
            .unwrap();
        assert_eq!(r, Reported::Unrecoverable { passed_on: true });
        let r = core
            .report(dev, &Fault::PageRequest(req(1, None, true, 0x1000)), 1)
            .unwrap();
        assert!(matches!(r, Reported::Delivered { .. }), "{r:?}");
        let mut evs = Vec::new();
        c.pop_events(&mut evs, 8).unwrap();
        if agreed {
            assert_eq!(evs.len(), 2, "{evs:?}");
            assert_eq!(
                evs[0],
                Event::Unrecoverable {
                    seq: 0,
                    dev_id: dev.raw(),
                    fault: fault(0xf000)
                }
            );
            assert!(matches!(evs[1], Event::Fault(f) if f.seq == 1));
        } else {
            assert_eq!(evs.len(), 1, "{evs:?}");
            assert!(matches!(evs[0], Event::Fault(f) if f.seq == 0));
        }
        assert_eq!(link.with_producer(|p| p.stats().lost), 0);
        // Nothing was sent to the device for the unrecoverable fault.
        assert!(core.sink_mut().take().is_empty());
    }
}

#[test]
fn a_batch_is_published_once_and_its_overflow_lost_and_announced_like_single_pushes() {
    let (mut p, mut c) = queue(4, true);
    let faults: Vec<(u32, Unrecoverable)> = (0..6u64).map(|i| (i as u32, fault(i << 12))).collect();
    let mut results = Vec::new();
    p.push_unrecoverables(&faults, &mut results);
    // Four fit; the last two are lost with the ring full, their sequence numbers used.
    assert_eq!(results.len(), 6);
    assert_eq!(
        results[..4]
            .iter()
            .map(|r| *r.as_ref().unwrap())
            .collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert!(results[4..]
        .iter()
        .all(|r| matches!(r, Err(QueueError::Lost(LossReason::RingFull)))));
    assert_eq!((p.stats().delivered, p.stats().lost), (4, 2));
    let mut evs = Vec::new();
    assert_eq!(c.pop_events(&mut evs, 8).unwrap(), 4);
    for (i, e) in evs.iter().enumerate() {
        let Event::Unrecoverable {
            seq,
            dev_id,
            fault: f,
        } = e
        else {
            panic!("not an unrecoverable record: {e:?}")
        };
        assert_eq!(
            (*seq, *dev_id, *f),
            (i as u64, i as u32, fault((i as u64) << 12))
        );
    }
    // With room again, the loss is announced before anything else.
    assert!(p.announce_losses());
    evs.clear();
    assert_eq!(c.pop_events(&mut evs, 8).unwrap(), 1);
    assert_eq!(
        evs[0],
        Event::Lost {
            first_seq: 4,
            count: 2,
            reason: Some(LossReason::RingFull)
        }
    );
    // Not agreed: every fault of the batch is refused, nothing counted.
    let (mut p, _c) = queue(4, false);
    results.clear();
    p.push_unrecoverables(&faults[..2], &mut results);
    assert!(results
        .iter()
        .all(|r| matches!(r, Err(QueueError::NotAgreed(_)))));
    assert_eq!((p.stats().delivered, p.stats().lost), (0, 0));
}

/// Pushes the same mix into a queue — a group, unrecoverable faults, a loss (the ring full), a
/// record scribbled over — and returns the queue with the scribble in place.
fn mixed_queue() -> (Producer, Consumer) {
    let (mut p, c) = queue(8, true);
    push(&mut p, 1, 2);
    for a in 0..6 {
        p.push_unrecoverable(3, &fault(a << 12)).unwrap();
    }
    assert!(p.push_unrecoverable(3, &fault(0xf000)).is_err(), "full");
    // Word 1 of the fourth slot: an unknown reason.
    c.raw_region()[128 + 3 * 8 + 1].store(0xffff, Ordering::Relaxed);
    (p, c)
}

#[test]
fn pop_event_takes_exactly_what_pop_events_takes() {
    let (mut p1, mut c1) = mixed_queue();
    let (mut p2, mut c2) = mixed_queue();
    let mut batch = Vec::new();
    let mut one = Vec::new();
    for round in 0..2 {
        c1.pop_events(&mut batch, 64).unwrap();
        while let Some(e) = c2.pop_event() {
            one.push(e);
        }
        assert_eq!(one, batch, "round {round}");
        assert_eq!(c2.stats(), c1.stats(), "round {round}");
        // Nothing waits, so both gave every slot back: the producers have the whole ring.
        assert_eq!((p1.free_slots(), p2.free_slots()), (8, 8), "round {round}");
        // The loss is announced now that there is room, then one more record.
        for p in [&mut p1, &mut p2] {
            p.announce_losses();
            p.push_unrecoverable(3, &fault(0xe000)).unwrap();
        }
    }
    // Lost: the one the full ring lost, and the scribbled one (its sequence number is a gap).
    assert_eq!((c2.stats().corrupt, c2.stats().lost), (1, 2));
    assert!(one.contains(&Event::Lost {
        first_seq: 8,
        count: 1,
        reason: Some(LossReason::RingFull)
    }));
    assert!(one.contains(&Event::Unrecoverable {
        seq: 9,
        dev_id: 3,
        fault: fault(0xe000)
    }));
    // The record pushed after the second round.
    assert!(matches!(
        c2.pop_event(),
        Some(Event::Unrecoverable { seq: 10, .. })
    ));
    assert!(c2.pop_event().is_none());
}

#[test]
fn pop_event_gives_slots_back_an_eighth_of_the_ring_at_a_time_or_when_nothing_more_waits() {
    let (mut p, mut c) = queue(16, true);
    for a in 0..3 {
        p.push_unrecoverable(1, &fault(a)).unwrap();
    }
    assert_eq!(p.free_slots(), 13);
    // One record taken, two waiting: its slot stays with the consumer for now.
    assert!(c.pop_event().is_some());
    assert_eq!(p.free_slots(), 13);
    // The second makes an eighth of the ring (2 slots): both go back.
    assert!(c.pop_event().is_some());
    assert_eq!(p.free_slots(), 15);
    // The last waiting record: nothing waits after it, so its slot goes back at once, and a
    // consumer that stops calling here holds none.
    assert!(c.pop_event().is_some());
    assert_eq!(p.free_slots(), 16);
    assert!(c.pop_event().is_none());
    assert_eq!(p.free_slots(), 16);
}
