//! One queue serving many devices and a per-(device, PASID) handler through one `CoreLink`:
//! each answer reaches the handler its group was delivered through, losses are counted by
//! reason, an observer sees every group, and a dead consumer detaches every handler.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

mod common;

use std::sync::{Arc, Mutex};

use common::{caps, cookie_request, req};
use iopf_abi::{Fault, FaultConsumer, IommufdResponse, PgFault, ResponseCode};
use iopf_core::testing::RecordingSink;
use iopf_core::{CoreError, FaultCore, Reported};
use iopf_queue::{channel, Answer, CoreLink, LinkObserver, Offer, ProducerConfig};

/// Records what the link tells it: delivered tickets, withdrawn tickets, answered tickets.
#[derive(Default)]
struct Seen {
    delivered: Vec<u64>,
    withdrawn: Vec<u64>,
    answered: Vec<(u64, ResponseCode)>,
    /// Answers the core did not pass on to the device.
    not_at_device: Vec<u64>,
}

struct Watch(Arc<Mutex<Seen>>);

impl LinkObserver for Watch {
    fn delivered(&mut self, ticket: u64, _group: &iopf_core::Group<'_>) {
        self.0.lock().unwrap().delivered.push(ticket);
    }
    fn withdrawn(&mut self, ticket: u64) {
        self.0.lock().unwrap().withdrawn.push(ticket);
    }
    fn answered(&mut self, answer: &Answer, at_device: bool) {
        let mut seen = self.0.lock().unwrap();
        seen.answered.push((answer.tag, answer.code));
        if !at_device {
            seen.not_at_device.push(answer.tag);
        }
    }
}

#[test]
fn many_devices_on_one_queue_each_answer_reaches_its_own_handler() {
    let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    let a = core.register(caps(8)).unwrap();
    let b = core.register(caps(8)).unwrap();
    let (p, mut c) = channel(
        &Offer::current(),
        &cookie_request(8),
        ProducerConfig::default(),
    )
    .unwrap();
    let mut link = CoreLink::new(p).unwrap();
    assert_eq!(link.handler(), None);
    let seen = Arc::new(Mutex::new(Seen::default()));
    link.set_observer(Box::new(Watch(seen.clone())));
    let ha = link.attach_device(&mut core, a, None).unwrap();
    let hb = link.attach_as(&mut core, b, None, 77).unwrap();
    let hb5 = link.attach_device(&mut core, b, Some(5)).unwrap();
    assert_eq!(link.handlers(), &[ha, hb, hb5]);
    assert_eq!(link.handler(), Some(ha));

    // One group each: device a, device b (device-wide), device b PASID 5.
    for (dev, r) in [
        (a, req(1, None, true, 0x1000)),
        (b, req(1, None, true, 0x2000)),
        (b, req(2, Some(5), true, 0x3000)),
    ] {
        let got = core.report(dev, &Fault::PageRequest(r), 0).unwrap();
        assert!(matches!(got, Reported::Delivered { .. }), "{got:?}");
    }
    assert_eq!(link.pending_high_water(), 3);
    let mut out = [PgFault::from_bytes(&[0; 40]).unwrap(); 16];
    assert_eq!(c.read_faults(&mut out).unwrap(), 3);
    let ids: Vec<u32> = out[..3].iter().map(|f| f.dev_id).collect();
    assert_eq!(ids, vec![a.raw(), 77, b.raw()]);
    let codes = [
        ResponseCode::Success,
        ResponseCode::Invalid,
        ResponseCode::Success,
    ];
    let answers: Vec<IommufdResponse> = out[..3]
        .iter()
        .zip(codes)
        .map(|(f, code)| IommufdResponse {
            cookie: f.cookie,
            code,
        })
        .collect();
    c.respond(&answers).unwrap();
    let pumped = link.pump(&mut core);
    // A response handed to the wrong handler would be refused by the core (WrongHandler).
    assert_eq!(
        (pumped.judged, pumped.answered, pumped.refused_by_core),
        (3, 3, 0)
    );
    assert_eq!(core.outstanding(a).unwrap(), 0);
    assert_eq!(core.outstanding(b).unwrap(), 0);
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.delivered.len(), 3);
        let mut answered: Vec<u64> = s.answered.iter().map(|(t, _)| *t).collect();
        answered.sort_unstable();
        let mut delivered = s.delivered.clone();
        delivered.sort_unstable();
        assert_eq!(answered, delivered);
        assert!(s.withdrawn.is_empty());
        assert!(s.not_at_device.is_empty());
    }
    core.sink_mut().take();

    // Overfill the 8-entry ring from both devices: what does not fit waits in the backlog
    // (bounded by the two devices' allocations); nothing is answered for lack of room.
    for g in 10..20u32 {
        let dev = if g % 2 == 0 { a } else { b };
        let got = core
            .report(dev, &Fault::PageRequest(req(g, None, true, 0)), 1)
            .unwrap();
        assert!(matches!(got, Reported::Delivered { .. }), "{got:?}");
    }
    assert_eq!(link.with_producer(|p| p.backlog_requests()), 2);
    assert_eq!(link.lost().total(), 0);
    assert!(core.sink_mut().take().is_empty());

    // The consumer asked for iommufd records, which carry no unrecoverable faults: dropped.
    let u = iopf_abi::Unrecoverable {
        reason: iopf_abi::fault::FaultReason::Access,
        flags: iopf_abi::fault::UnrecoverableFlags::ADDR_VALID,
        pasid: 0,
        perm: iopf_abi::Perm::READ,
        addr: 0x5000,
        fetch_addr: 0,
    };
    core.report(b, &Fault::Unrecoverable(u), 2).unwrap();
    let un = link.unrecoverable();
    assert_eq!((un.delivered, un.not_agreed, un.lost), (0, 1, 0));

    // The consumer goes away: every handler is detached and the core answers what it owed.
    drop(c);
    let owed = core.outstanding(a).unwrap() + core.outstanding(b).unwrap();
    assert!(owed > 0);
    let pumped = link.pump(&mut core);
    assert!(pumped.detached);
    assert_eq!(core.outstanding(a).unwrap(), 0);
    assert_eq!(core.outstanding(b).unwrap(), 0);
    let sent = core.sink_mut().take();
    assert_eq!(sent.len() as u32, owed);
    assert!(sent.iter().all(|(_, r)| r.code == ResponseCode::Invalid));
    assert_eq!(link.pump(&mut core), Default::default());
    assert!(matches!(
        link.attach_device(&mut core, a, None),
        Err(CoreError::BadConfig(_))
    ));
}

/// The core answered a group itself (its handler was detached behind the link's back): the
/// detach withdraws it from the queue too, so the consumer's late SUCCESS gets a rejection as its
/// verdict (the group is not the queue's any more), the observer hears the withdrawal, and nothing
/// second reaches the device.
#[test]
fn a_detach_withdraws_the_devices_groups_from_the_queue() {
    let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    let a = core.register(caps(8)).unwrap();
    let b = core.register(caps(8)).unwrap();
    let (p, mut c) = channel(
        &Offer::current(),
        &cookie_request(8),
        ProducerConfig::default(),
    )
    .unwrap();
    let mut link = CoreLink::new(p).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    link.set_observer(Box::new(Watch(seen.clone())));
    let ha = link.attach_device(&mut core, a, None).unwrap();
    link.attach_device(&mut core, b, None).unwrap();
    core.report(a, &Fault::PageRequest(req(4, None, true, 0x4000)), 0)
        .unwrap();
    core.report(b, &Fault::PageRequest(req(4, None, true, 0x8000)), 0)
        .unwrap();
    let mut out = [PgFault::from_bytes(&[0; 40]).unwrap(); 4];
    assert_eq!(c.read_faults(&mut out).unwrap(), 2);
    // Device a's handler is detached: the core answers a's group INVALID at once, and the queue
    // forgets it; b's stays.
    core.detach(ha).unwrap();
    let sent = core.sink_mut().take();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].0, sent[0].1.code), (a, ResponseCode::Invalid));
    assert_eq!(link.with_producer(|p| p.pending_groups()), 1);
    let answers = [
        IommufdResponse {
            cookie: out[0].cookie,
            code: ResponseCode::Success,
        },
        IommufdResponse {
            cookie: out[1].cookie,
            code: ResponseCode::Success,
        },
    ];
    // The consumer still holds both; the queue judges both.
    assert_eq!(c.respond(&answers).unwrap(), 2);
    let pumped = link.pump(&mut core);
    assert_eq!(
        (pumped.judged, pumped.answered, pumped.refused_by_core),
        (2, 1, 0)
    );
    let sent = core.sink_mut().take();
    assert_eq!(sent.len(), 1, "only b's group is answered now");
    assert_eq!(sent[0].0, b);
    let mut v = Vec::new();
    c.take_verdicts(&mut v);
    assert_eq!(v.len(), 2);
    assert!(v[0].outcome.is_err(), "a's late answer is rejected: {v:?}");
    assert!(v[1].outcome.is_ok());
    let s = seen.lock().unwrap();
    assert_eq!(s.withdrawn.len(), 1);
    assert_eq!(s.answered.len(), 1);
    assert!(s.not_at_device.is_empty());
}

/// Removing one device of a link that serves several withdraws that device's groups from the
/// queue (the core answers them INVALID), and only those: the other device's group is still the
/// consumer's to answer, and a late answer for a removed one is rejected by the queue.
#[test]
fn removing_a_device_withdraws_only_its_groups_from_the_queue() {
    let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    let a = core.register(caps(8)).unwrap();
    let b = core.register(caps(8)).unwrap();
    let (p, mut c) = channel(
        &Offer::current(),
        &cookie_request(8),
        ProducerConfig::default(),
    )
    .unwrap();
    let mut link = CoreLink::new(p).unwrap();
    link.attach_device(&mut core, a, None).unwrap();
    link.attach_device(&mut core, b, None).unwrap();
    for (dev, g) in [(a, 1), (a, 2), (b, 1)] {
        core.report(dev, &Fault::PageRequest(req(g, None, true, 0)), 0)
            .unwrap();
    }
    let mut out = [PgFault::from_bytes(&[0; 40]).unwrap(); 4];
    assert_eq!(c.read_faults(&mut out).unwrap(), 3);
    let removed = core.remove_device(a).unwrap();
    assert_eq!(removed.answered, 2);
    assert_eq!(link.with_producer(|p| p.pending_groups()), 1);
    let answers: Vec<IommufdResponse> = out[..3]
        .iter()
        .map(|f| IommufdResponse {
            cookie: f.cookie,
            code: ResponseCode::Success,
        })
        .collect();
    assert_eq!(c.respond(&answers).unwrap(), 3);
    let pumped = link.pump(&mut core);
    assert_eq!((pumped.judged, pumped.answered), (3, 1));
    let mut v = Vec::new();
    c.take_verdicts(&mut v);
    let rejected: Vec<bool> = v.iter().map(|v| v.outcome.is_err()).collect();
    assert_eq!(rejected, vec![true, true, false]);
    let sent = core.sink_mut().take();
    assert_eq!(
        sent.iter().filter(|(d, _)| *d == b).count(),
        1,
        "b's group answered once, by the consumer"
    );
}

/// The backlog's bound is the sum of the allocations of the devices the link serves now: a
/// detached handler, a removed device and a failed attach take their share away (they used
/// to leave it counted, so the bound only grew).
#[test]
fn the_backlog_bound_follows_the_devices_the_link_serves() {
    let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    let a = core.register(caps(8)).unwrap();
    let b = core.register(caps(4)).unwrap();
    let (p, _c) = channel(
        &Offer::current(),
        &cookie_request(8),
        ProducerConfig::default(),
    )
    .unwrap();
    let mut link = CoreLink::attach(&mut core, a, None, p).unwrap();
    let bound = |link: &CoreLink| link.with_producer(|p| p.max_backlog());
    assert_eq!(bound(&link), 8);
    let hb = link.attach_device(&mut core, b, None).unwrap();
    assert_eq!(bound(&link), 12);
    // A second device-wide handler for `a` is refused; its share is not kept.
    assert!(matches!(
        link.attach_device(&mut core, a, None),
        Err(CoreError::HandlerBusy { .. })
    ));
    assert_eq!(bound(&link), 12);
    core.detach(hb).unwrap();
    assert_eq!(bound(&link), 8);
    core.remove_device(a).unwrap();
    assert_eq!(bound(&link), 0);
}
