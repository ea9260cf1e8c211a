//! Model-based property test of backpressure through the whole host path: devices that respect
//! their Outstanding Page Request Allocation report into a fault core, one `CoreLink` carries
//! their groups through a ring far smaller than the allocations to a consumer that reads and
//! answers at random (and may go away), and after every step:
//!
//! * no group is answered for lack of room (no `NoRoom`, `TooLarge` or `OverAllocation`
//!   answer, no loss but to a consumer that has gone) and none gets Response Failure unless the consumer answered FAILURE and the
//!   function may receive it;
//! * the backlog never holds more than the devices' allocations allow;
//! * the consumer receives the groups in the order the core delivered them;
//! * every response that reaches a device answers a group the device has outstanding, once; at
//!   the end every group has been answered exactly once.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

mod common;

use std::collections::{HashMap, HashSet, VecDeque};

use common::req;
use iopf_abi::features::RecordFormats;
use iopf_abi::{Fault, FaultConsumer, Features, IommufdResponse, PgFault, ResponseCode};
use iopf_core::testing::RecordingSink;
use iopf_core::{AutoReason, Cookie, DeviceId, FaultCore, PriCaps, Reported};
use iopf_queue::{channel, CoreLink, LossReason, Offer, ProducerConfig, Request};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Device `dev` sends a group of `requests` with a free PRG index, if its allocation allows.
    Report { dev: usize, requests: u32 },
    /// The consumer reads whole groups into a buffer of `room` records.
    Read { room: usize },
    /// The consumer answers one group it holds.
    Answer { pick: usize, code: u8 },
    /// The link judges responses and delivers the backlog.
    Pump,
    /// The consumer goes away.
    Leave,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..3, 1u32..4).prop_map(|(dev, requests)| Op::Report { dev, requests }),
        3 => (1usize..12).prop_map(|room| Op::Read { room }),
        3 => (any::<usize>(), 0u8..3).prop_map(|(pick, code)| Op::Answer { pick, code }),
        3 => Just(Op::Pump),
        1 => Just(Op::Leave),
    ]
}

/// One simulated function: its allocation, what it has in flight, by PRG index.
struct Function {
    id: DeviceId,
    caps: PriCaps,
    in_flight: HashMap<u32, u32>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: iopf_core::testing::proptest_cases(192), ..ProptestConfig::default() })]

    #[test]
    fn groups_wait_for_room_and_are_never_failed_for_it(
        oprs in proptest::collection::vec((3u32..24, any::<bool>()), 3),
        entries in prop_oneof![Just(4u32), Just(8)],
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
        let offer = Offer::current().with_max_group(3);
        let mut r = Request::best_for(
            &offer,
            RecordFormats::HWPT_PGFAULT,
            Features::COOKIE_RESPONSE | Features::LOSS_RECORDS | Features::COOKIE_FAILURE,
        )
        .unwrap();
        r.entries = entries;
        let (p, c) = channel(&offer, &r, ProducerConfig::default()).unwrap();
        let mut c = Some(c);
        let mut link = CoreLink::new(p).unwrap();
        let mut fns = Vec::new();
        for &(opra, failure_allowed) in &oprs {
            let caps = PriCaps { outstanding_allocation: opra, pasid_required: false, failure_allowed };
            let id = core.register(caps).unwrap();
            link.attach_device(&mut core, id, None).unwrap();
            fns.push(Function { id, caps, in_flight: HashMap::new() });
        }
        let allocations: u32 = oprs.iter().map(|(o, _)| o).sum();
        // Cookies in the order the core delivered them, and in the order the consumer saw them.
        let mut delivered_order: VecDeque<u32> = VecDeque::new();
        let mut held: Vec<(u32, usize)> = Vec::new();
        let mut answered_by_consumer: HashMap<u32, ResponseCode> = HashMap::new();
        let mut cookie_dev: HashMap<u32, (usize, u32)> = HashMap::new();
        let mut answered_groups: HashSet<(usize, u32, u64)> = HashSet::new();
        let mut epoch: HashMap<(usize, u32), u64> = HashMap::new();
        let mut buf = [PgFault::from_bytes(&[0; 40]).unwrap(); 16];

        for op in &ops {
            match *op {
                Op::Report { dev, requests } => {
                    let f = &mut fns[dev];
                    let n = requests.min(f.caps.outstanding_allocation);
                    let used: u32 = f.in_flight.values().sum();
                    let Some(grpid) = (0..512).find(|g| !f.in_flight.contains_key(g)) else { continue };
                    if used + n > f.caps.outstanding_allocation {
                        continue; // a well-behaved function waits
                    }
                    f.in_flight.insert(grpid, n);
                    let id = f.id;
                    for i in 0..n {
                        let got = core.report(id, &Fault::PageRequest(req(grpid, None, i + 1 == n, u64::from(i) << 12)), 0).unwrap();
                        if i + 1 == n {
                            match got {
                                Reported::Delivered { cookie, .. } => {
                                    delivered_order.push_back(cookie.raw());
                                    cookie_dev.insert(cookie.raw(), (dev, grpid));
                                }
                                // Only a consumer that has gone is a reason to answer at once.
                                Reported::Answered { reason, .. } => {
                                    prop_assert!(matches!(reason, AutoReason::ConsumerGone | AutoReason::NoHandler), "{reason:?}");
                                    prop_assert!(c.is_none());
                                }
                                other => prop_assert!(false, "{other:?}"),
                            }
                        }
                    }
                }
                Op::Read { room } => if let Some(c) = c.as_mut() {
                    if let Ok(k) = c.read_faults(&mut buf[..room]) {
                        for f in buf[..k].iter().filter(|f| f.is_last()) {
                            let want = delivered_order.pop_front();
                            prop_assert_eq!(Some(f.cookie), want, "groups reach the consumer in delivery order");
                            held.push((f.cookie, fns.iter().position(|x| x.id.raw() == f.dev_id).unwrap()));
                        }
                    }
                },
                Op::Answer { pick, code } => if let Some(c) = c.as_mut() {
                    if !held.is_empty() {
                        let (cookie, _) = held.swap_remove(pick % held.len());
                        let code = [ResponseCode::Success, ResponseCode::Invalid, ResponseCode::Failure][code as usize];
                        if c.respond(&[IommufdResponse { cookie, code }]).unwrap() == 1 {
                            answered_by_consumer.insert(cookie, code);
                        } else {
                            held.push((cookie, 0));
                        }
                    }
                },
                Op::Pump => {
                    link.pump(&mut core);
                }
                Op::Leave => {
                    c = None;
                    delivered_order.clear();
                    held.clear();
                }
            }
            // What reached the devices.
            for (dev_id, resp) in core.sink_mut().take() {
                let dev = fns.iter().position(|f| f.id == dev_id).unwrap();
                let f = &mut fns[dev];
                prop_assert!(f.in_flight.remove(&resp.grpid).is_some(), "a response for a group not outstanding: {resp:?}");
                let e = epoch.entry((dev, resp.grpid)).or_default();
                prop_assert!(answered_groups.insert((dev, resp.grpid, *e)), "answered twice");
                *e += 1;
                if resp.code == ResponseCode::Failure {
                    prop_assert!(f.caps.failure_allowed, "FAILURE to a function that may not receive it");
                }
            }
            let backlog = link.with_producer(|p| p.backlog_requests());
            prop_assert!(backlog as u32 <= allocations, "backlog {backlog} past the allocations {allocations}");
            let lost = link.lost();
            prop_assert_eq!(lost.total(), lost.get(LossReason::ConsumerGone), "{}", lost);
        }
        // FAILURE reached a device only for groups the consumer answered FAILURE.
        for f in &fns {
            let k = core.counters(f.id).unwrap();
            let no_room = [AutoReason::NoRoom, AutoReason::TooLarge, AutoReason::OverAllocation, AutoReason::CoreFull];
            prop_assert_eq!(no_room.iter().map(|r| k.auto(*r)).sum::<u64>(), 0, "{:?}", k);
            let failures = answered_by_consumer
                .iter()
                .filter(|(c, code)| **code == ResponseCode::Failure && cookie_dev.get(c).map(|d| d.0) == fns.iter().position(|x| x.id == f.id))
                .count() as u64;
            prop_assert!(k.responses(ResponseCode::Failure) <= failures);
        }
        // The end: the queue closes and every group still outstanding is answered.
        link.close(&mut core);
        for (dev_id, resp) in core.sink_mut().take() {
            let dev = fns.iter().position(|f| f.id == dev_id).unwrap();
            prop_assert!(fns[dev].in_flight.remove(&resp.grpid).is_some());
        }
        for f in &fns {
            prop_assert!(f.in_flight.is_empty(), "{} groups stranded", f.in_flight.len());
            prop_assert_eq!(core.outstanding(f.id).unwrap(), 0);
        }
        let _ = Cookie::from_raw(0);
    }
}
