//! The fault core feeding a queue: groups in, validated responses back into the core, lost groups
//! and a dead consumer's groups answered by the core — each group exactly once at the device.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

mod common;

use std::collections::HashMap;

use common::{caps, cookie_request, req, vtd_req};
use iopf_abi::features::{RecordFormats, ResponseFormats};
use iopf_abi::{
    Fault, FaultConsumer, Features, IommufdResponse, PageResponse, PgFault, ResponseCode,
};
use iopf_core::testing::RecordingSink;
use iopf_core::{AgeLimit, AutoReason, DeviceResponse, FaultCore, PriCaps, Reported};
use iopf_queue::{channel, CoreLink, Event, LossReason, Offer, ProducerConfig, RawFormat, Request};

/// A version 1 `vfio_iommu_page_response` answering `grpid` SUCCESS, with `pasid` if given.
fn v1_bytes(pasid: Option<u32>, grpid: u32) -> Vec<u8> {
    let r = PageResponse {
        version: 1,
        pasid,
        grpid,
        code: ResponseCode::Success,
        private_data: None,
    };
    let mut buf = [0u8; 28];
    let n = r.write_vfio(28, &mut buf).unwrap();
    buf[..n].to_vec()
}

#[test]
fn core_to_queue_to_consumer_and_back_exactly_once() {
    let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    // More requests in flight than the ring holds, in groups of at most 2 (as the offer says).
    let dev = core.register(caps(16)).unwrap();
    let (p, mut c) = channel(
        &Offer::current().with_max_group(2),
        &cookie_request(8),
        ProducerConfig::default(),
    )
    .unwrap();
    let mut link = CoreLink::attach(&mut core, dev, None, p).unwrap();

    // Group 1 has two requests; groups 2..=3 one each.
    let mut delivered = Vec::new();
    for (i, r) in [
        req(1, None, false, 0x1000),
        req(1, None, true, 0x2000),
        req(2, None, true, 0x3000),
        req(3, None, true, 0x4000),
    ]
    .iter()
    .enumerate()
    {
        match core.report(dev, &Fault::PageRequest(*r), i as u64).unwrap() {
            Reported::Delivered { cookie, .. } => delivered.push(cookie),
            Reported::Held => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(delivered.len(), 3);
    let mut out = [PgFault::from_bytes(&[0; 40]).unwrap(); 16];
    assert_eq!(c.read_faults(&mut out).unwrap(), 4);
    assert_eq!(out[0].dev_id, dev.raw());
    c.respond(&[
        IommufdResponse {
            cookie: out[1].cookie,
            code: ResponseCode::Success,
        },
        IommufdResponse {
            cookie: out[2].cookie,
            code: ResponseCode::Invalid,
        },
    ])
    .unwrap();
    let pumped = link.pump(&mut core);
    assert_eq!(
        (pumped.answered, pumped.refused_by_core, pumped.detached),
        (2, 0, false)
    );
    let sent = core.sink_mut().take();
    assert_eq!(
        sent.iter()
            .map(|(_, r)| (r.grpid, r.code))
            .collect::<Vec<_>>(),
        vec![(1, ResponseCode::Success), (2, ResponseCode::Invalid)]
    );

    // Overfill the 8-entry ring: the groups that do not fit wait in the backlog, none is
    // answered for lack of room, and the consumer gets them all, in order, as it reads.
    for g in 10..20u32 {
        let got = core
            .report(dev, &Fault::PageRequest(req(g, None, true, 0)), 100)
            .unwrap();
        assert!(matches!(got, Reported::Delivered { .. }), "{got:?}");
    }
    assert!(core.sink_mut().take().is_empty());
    assert_eq!(link.with_producer(|p| p.stats().lost), 0);
    let mut grpids = Vec::new();
    let mut evs = Vec::new();
    for _ in 0..4 {
        evs.clear();
        c.pop_events(&mut evs, 64).unwrap();
        link.pump(&mut core);
        grpids.extend(evs.iter().filter_map(|e| match e {
            Event::Fault(f) => Some(f.request.grpid),
            _ => None,
        }));
    }
    assert_eq!(grpids, (10..20).collect::<Vec<_>>());
    core.report(dev, &Fault::PageRequest(req(30, None, true, 0)), 200)
        .unwrap();

    // The consumer goes away: the core answers everything it still owed, INVALID.
    drop(c);
    let pumped = link.pump(&mut core);
    assert!(pumped.detached);
    assert_eq!(core.outstanding(dev).unwrap(), 0);
    let mut per_group: HashMap<u32, usize> = HashMap::new();
    for (_, r) in core.sink_mut().take() {
        *per_group.entry(r.grpid).or_default() += 1;
    }
    per_group.insert(1, 1);
    per_group.insert(2, 1);
    let mut expected: Vec<u32> = vec![1, 2, 3, 30];
    expected.extend(10..20);
    for g in expected {
        assert_eq!(
            per_group.get(&g),
            Some(&1),
            "group {g} answered {:?} times",
            per_group.get(&g)
        );
    }
    assert_eq!(link.pump(&mut core), Default::default());
}

#[test]
fn an_old_consumer_still_gets_private_data_back_to_the_device() {
    let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    let caps = PriCaps {
        pasid_required: true,
        ..PriCaps::default()
    };
    let dev = core.register(caps).unwrap();
    let (p, mut c) = channel(&Offer::current(), &Request::v1(), ProducerConfig::default()).unwrap();
    let mut link = CoreLink::attach(&mut core, dev, None, p).unwrap();
    let data = [0x1111, 0x2222];
    core.report(dev, &Fault::PageRequest(vtd_req(7, 4, data)), 0)
        .unwrap();
    let mut out = [PgFault::from_bytes(&[0; 40]).unwrap(); 4];
    assert_eq!(c.read_faults(&mut out).unwrap(), 1);
    // The old consumer answers with a version 1 response built from (PASID, grpid).
    c.respond(&[IommufdResponse {
        cookie: out[0].cookie,
        code: ResponseCode::Success,
    }])
    .unwrap();
    assert_eq!(link.pump(&mut core).answered, 1);
    let sent = core.sink_mut().take();
    assert_eq!(sent[0].1.private_data, Some(data));
    assert_eq!(sent[0].1.pasid, Some(4));
}

/// A consumer that closes before the link's pump has noticed: the next group is refused by the
/// queue (its consumer is gone) and answered INVALID by the core, never Response Failure (which
/// Linux's `err_abort` path would send, and which disables PRI on the function).
#[test]
fn a_consumer_closed_before_the_pump_never_costs_response_failure() {
    let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    let dev = core.register(caps(8)).unwrap();
    let (p, c) = channel(
        &Offer::current(),
        &cookie_request(8),
        ProducerConfig::default(),
    )
    .unwrap();
    let mut link = CoreLink::attach(&mut core, dev, None, p).unwrap();
    drop(c);
    let got = core
        .report(dev, &Fault::PageRequest(req(1, None, true, 0)), 0)
        .unwrap();
    assert!(
        matches!(
            got,
            Reported::Answered {
                reason: AutoReason::ConsumerGone,
                sent: DeviceResponse {
                    code: ResponseCode::Invalid,
                    ..
                },
            }
        ),
        "{got:?}"
    );
    assert_eq!(link.lost().get(LossReason::ConsumerGone), 1);
    assert!(link.pump(&mut core).detached);
    let k = core.counters(dev).unwrap();
    assert_eq!(k.responses(ResponseCode::Failure), 0);
}

/// One PRG index on two devices of one link, on a queue answered by grpid (the seed's VFIO
/// response carries no device): the second group waits in the backlog until the first is
/// answered, instead of being lost and answered FAILURE (the old `AmbiguousGroup`).
#[test]
fn one_prg_index_on_two_devices_of_a_link_waits_instead_of_failing() {
    let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    let a = core.register(caps(8)).unwrap();
    let b = core.register(caps(8)).unwrap();
    let mut r = Request::best_for(
        &Offer::current(),
        RecordFormats::HWPT_PGFAULT,
        Features::LOSS_RECORDS,
    )
    .unwrap();
    r.entries = 8;
    assert!(!r.responses.contains(ResponseFormats::COOKIE));
    let (p, mut c) = channel(&Offer::current(), &r, ProducerConfig::default()).unwrap();
    let mut link = CoreLink::new(p).unwrap();
    link.attach_as(&mut core, a, None, 1).unwrap();
    link.attach_as(&mut core, b, None, 2).unwrap();
    for dev in [a, b] {
        let got = core
            .report(dev, &Fault::PageRequest(req(5, None, true, 0x1000)), 0)
            .unwrap();
        assert!(matches!(got, Reported::Delivered { .. }), "{got:?}");
    }
    let mut out = [PgFault::from_bytes(&[0; 40]).unwrap(); 4];
    assert_eq!(c.read_faults(&mut out).unwrap(), 1, "b's group waits");
    assert_eq!(out[0].dev_id, 1);
    let answer = PageResponse {
        version: 1,
        pasid: None,
        grpid: 5,
        code: ResponseCode::Success,
        private_data: None,
    };
    c.respond_pages(&[answer]).unwrap();
    assert_eq!(link.pump(&mut core).answered, 1);
    assert_eq!(c.read_faults(&mut out).unwrap(), 1, "now b's");
    assert_eq!(out[0].dev_id, 2);
    c.respond_pages(&[answer]).unwrap();
    assert_eq!(link.pump(&mut core).answered, 1);
    let sent = core.sink_mut().take();
    assert_eq!(
        sent.iter().map(|(d, r)| (*d, r.code)).collect::<Vec<_>>(),
        vec![(a, ResponseCode::Success), (b, ResponseCode::Success)]
    );
    assert_eq!(link.lost().total(), 0);
}

/// PASID as Linux: a grpid-named response for a device that does not need the PASID in its
/// responses is matched by PRG index alone, whatever PASID it gives (≤ 6.8
/// `iommu_page_response()`: "No big deal, just clear it"). The queue used to reject it.
#[test]
fn a_pasid_the_device_does_not_need_is_ignored_by_the_queue_as_by_the_core() {
    let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    let dev = core.register(caps(8)).unwrap();
    let (p, mut c) = channel(&Offer::current(), &Request::v1(), ProducerConfig::default()).unwrap();
    let mut link = CoreLink::attach(&mut core, dev, None, p).unwrap();
    // A request with PASID 4 and one without.
    core.report(dev, &Fault::PageRequest(req(1, Some(4), true, 0)), 0)
        .unwrap();
    core.report(dev, &Fault::PageRequest(req(2, None, true, 0)), 0)
        .unwrap();
    let mut evs = Vec::new();
    c.pop_events(&mut evs, 8).unwrap();
    // The wrong PASID for the first, a PASID for the second, which had none: both answer.
    for (grpid, pasid) in [(1, Some(9)), (2, Some(3))] {
        c.push_raw_response(RawFormat::Vfio, &v1_bytes(pasid, grpid))
            .unwrap();
    }
    let pumped = link.pump(&mut core);
    assert_eq!((pumped.judged, pumped.answered), (2, 2));
    let mut v = Vec::new();
    c.take_verdicts(&mut v);
    assert!(v.iter().all(|v| v.outcome.is_ok()), "{v:?}");
    // The device does not need its PASID back: its responses carry none.
    assert!(core.sink().sent.iter().all(|(_, r)| r.pasid.is_none()));
}

/// A device past its Outstanding Page Request Allocation: the core answers the excess group by
/// the overflow policy (SUCCESS, retry, by default; never FAILURE) and the consumer is told at
/// once, by the region header and a loss record naming the reason.
#[test]
fn a_group_over_the_allocation_is_retried_and_announced_at_once() {
    let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    let dev = core
        .register(PriCaps {
            outstanding_allocation: 1,
            ..PriCaps::default()
        })
        .unwrap();
    let (p, mut c) = channel(
        &Offer::current(),
        &cookie_request(8),
        ProducerConfig::default(),
    )
    .unwrap();
    let _link = CoreLink::attach(&mut core, dev, None, p).unwrap();
    core.report(dev, &Fault::PageRequest(req(1, None, true, 0)), 0)
        .unwrap();
    let got = core
        .report(dev, &Fault::PageRequest(req(2, None, true, 0)), 0)
        .unwrap();
    assert!(
        matches!(
            got,
            Reported::Answered {
                reason: AutoReason::OverAllocation,
                sent: DeviceResponse {
                    code: ResponseCode::Success,
                    ..
                },
            }
        ),
        "{got:?}"
    );
    assert_eq!(c.producer_losses().get(LossReason::OverAllocation), 1);
    let mut evs = Vec::new();
    c.pop_events(&mut evs, 8).unwrap();
    assert!(
        evs.contains(&Event::Lost {
            first_seq: 1,
            count: 1,
            reason: Some(LossReason::OverAllocation),
        }),
        "{evs:?}"
    );
}

/// Teardown costs what it withdraws: expiring 65,536 outstanding groups through a link follows
/// one list link per group in the core and none in the queue (the queue's withdrawal is one
/// lookup by the core's cookie; it used to scan every pending slot, quadratic in the groups).
#[test]
fn expiring_groups_costs_work_linear_in_the_groups_withdrawn() {
    let devices = 128usize;
    let n = devices * 512;
    let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    let (p, mut c) = channel(
        &Offer::current(),
        &cookie_request(4096),
        ProducerConfig {
            max_pending: 1 << 17,
            ..ProducerConfig::default()
        },
    )
    .unwrap();
    let mut link = CoreLink::new(p).unwrap();
    let mut evs = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..devices {
        let d = core.register(PriCaps::default()).unwrap();
        link.attach_device(&mut core, d, None).unwrap();
        for g in 0..512 {
            core.report(d, &Fault::PageRequest(req(g, None, true, 0)), 0)
                .unwrap();
        }
        // The consumer reads (but does not answer), so the ring keeps room.
        evs.clear();
        while c.pop_events(&mut evs, 4096).unwrap() > 0 {}
        link.pump(&mut core);
        core.set_age_limit(
            d,
            Some(AgeLimit {
                limit: 1,
                answer: Some(ResponseCode::Invalid),
            }),
        )
        .unwrap();
        ids.push(d);
    }
    assert_eq!(link.with_producer(|p| p.pending_groups()), n);
    let (core_before, queue_before) = (
        core.links_walked(),
        link.with_producer(|p| p.links_walked()),
    );
    assert_eq!(core.expire(10), n as u32);
    let core_work = core.links_walked() - core_before;
    let queue_work = link.with_producer(|p| p.links_walked()) - queue_before;
    assert!(core_work <= 2 * n as u64, "core: {core_work} steps for {n}");
    assert_eq!(queue_work, 0, "the queue looked each group up directly");
    assert_eq!(link.with_producer(|p| p.pending_groups()), 0);
    assert_eq!(core.sink_mut().take().len(), n);
}
