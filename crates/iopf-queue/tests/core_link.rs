//! The fault core feeding a queue: groups in, validated responses back into the core, lost groups
//! and a dead consumer's groups answered by the core — each group exactly once at the device.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

mod common;

use std::collections::HashMap;

use common::{cookie_request, req, vtd_req};
use iopf_abi::{Fault, FaultConsumer, IommufdResponse, PgFault, ResponseCode};
use iopf_core::testing::RecordingSink;
use iopf_core::{FaultCore, PriCaps, Reported};
use iopf_queue::{channel, CoreLink, Event, Offer, ProducerConfig, Request};

#[test]
fn core_to_queue_to_consumer_and_back_exactly_once() {
    let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    let dev = core.register(PriCaps::default()).unwrap();
    let (p, mut c) = channel(
        &Offer::current(),
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
