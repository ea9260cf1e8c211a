//! One test per rule of the fault core (issue 6), each naming the Linux behaviour it checks.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

mod common;

use common::*;
use iopf_abi::fault::{FaultReason, Unrecoverable, UnrecoverableFlags};
use iopf_abi::{Fault, Features, PageRequestFlags, Perm, ResponseCode};
use iopf_core::testing::{BoundedHandler, RecordingSink};
use iopf_core::*;

const ALL: Features = Features::COOKIE_RESPONSE.union(Features::PRIV_DATA_ECHO);

fn core() -> Core {
    FaultCore::new(RecordingSink::default())
}

fn setup(caps: PriCaps) -> (Core, DeviceId, HandlerId) {
    let mut c = core();
    let d = c.register(caps).unwrap();
    let h = c.attach(d, None, BoundedHandler::new(1024), ALL).unwrap();
    (c, d, h)
}

fn delivered(r: Reported) -> Cookie {
    match r {
        Reported::Delivered { cookie, .. } => cookie,
        other => panic!("expected delivery, got {other:?}"),
    }
}

fn cookie_resp(c: Cookie, code: ResponseCode) -> Response {
    Response::by_cookie(c, code)
}

fn vf() -> PriCaps {
    PriCaps {
        failure_allowed: false,
        ..PriCaps::default()
    }
}

#[test]
fn register_rejects_zero_allocation_and_unknown_devices_send_nothing() {
    let mut c = core();
    let bad = PriCaps {
        outstanding_allocation: 0,
        ..PriCaps::default()
    };
    assert!(matches!(c.register(bad), Err(CoreError::BadConfig(_))));
    let d = c.register(PriCaps::default()).unwrap();
    let gone = c.register(PriCaps::default()).unwrap();
    c.remove_device(gone).unwrap();
    let err = c.report(gone, &pr(req(None, 1, true, 0)), 0).unwrap_err();
    assert_eq!(err, CoreError::UnknownDevice(gone));
    assert_eq!(err.errno(), libc::ENODEV);
    assert_eq!(c.core_counters().unknown_device_reports, 1);
    assert!(c.sink().sent.is_empty());
    // A new device may reuse the slot but never the id.
    let again = c.register(PriCaps::default()).unwrap();
    assert_ne!(again, gone);
    assert_eq!(c.devices().collect::<Vec<_>>(), vec![d, again]);
}

#[test]
fn attach_twice_is_ebusy_and_pasid_handlers_take_their_pasid() {
    let mut c = core();
    let d = c.register(PriCaps::default()).unwrap();
    let dev_h = c.attach(d, None, BoundedHandler::new(8), ALL).unwrap();
    let err = c.attach(d, None, BoundedHandler::new(8), ALL).unwrap_err();
    assert_eq!(
        err,
        CoreError::HandlerBusy {
            device: d,
            pasid: None
        }
    );
    assert_eq!(err.errno(), libc::EBUSY);
    let p5 = c.attach(d, Some(5), BoundedHandler::new(8), ALL).unwrap();
    assert!(c.attach(d, Some(5), BoundedHandler::new(8), ALL).is_err());
    assert_eq!(c.handler_at(d, Some(5)).unwrap(), Some(p5));

    let r = c.report(d, &pr(req(Some(5), 1, true, 0)), 0).unwrap();
    assert!(matches!(r, Reported::Delivered { handler, .. } if handler == p5));
    // Another PASID, and no PASID, go to the device-wide handler (find_fault_handler()).
    let r = c.report(d, &pr(req(Some(6), 2, true, 0)), 0).unwrap();
    assert!(matches!(r, Reported::Delivered { handler, .. } if handler == dev_h));
    let r = c.report(d, &pr(req(None, 3, true, 0)), 0).unwrap();
    assert!(matches!(r, Reported::Delivered { handler, .. } if handler == dev_h));
    assert_eq!(c.handler(p5).unwrap().queue.len(), 1);
    assert_eq!(c.handler(dev_h).unwrap().queue.len(), 2);
}

#[test]
fn partials_wait_for_last_page_and_complete_their_group_in_order() {
    // report_partial_fault() + iopf_group_alloc(): partials of the same PRG index join the group.
    let (mut c, d, h) = setup(PriCaps::default());
    assert_eq!(
        c.report(d, &pr(req(Some(1), 4, false, 0x1000)), 10)
            .unwrap(),
        Reported::Held
    );
    assert_eq!(
        c.report(d, &pr(req(Some(1), 9, false, 0x9000)), 11)
            .unwrap(),
        Reported::Held
    );
    assert_eq!(
        c.report(d, &pr(req(Some(1), 4, false, 0x2000)), 12)
            .unwrap(),
        Reported::Held
    );
    assert_eq!(c.held_partials(d).unwrap(), 3);
    assert!(
        c.handler(h).unwrap().queue.is_empty(),
        "nothing delivered before LAST_PAGE"
    );
    let cookie = delivered(c.report(d, &pr(req(Some(1), 4, true, 0x3000)), 13).unwrap());
    let g = c.handler_mut(h).unwrap().pop().unwrap();
    assert_eq!(g.cookie, cookie);
    assert_eq!(
        g.requests.iter().map(|r| r.addr).collect::<Vec<_>>(),
        [0x1000, 0x2000, 0x3000]
    );
    assert!(g.requests.last().unwrap().is_last());
    assert_eq!(c.counters(d).unwrap().refusals, [0, 0, 0]);
    assert_eq!((g.first_at, g.completed_at), (10, 13));
    assert_eq!(
        c.held_partials(d).unwrap(),
        1,
        "the other group's partial stays"
    );
    let info = c.group(cookie).unwrap();
    assert_eq!((info.grpid, info.requests, info.pasid), (4, 3, Some(1)));
    check_identities(c.counters(d).unwrap(), 1);
}

#[test]
fn partial_with_other_pasid_joins_by_index_and_is_counted() {
    let (mut c, d, h) = setup(PriCaps::default());
    c.report(d, &pr(req(Some(2), 4, false, 0x1000)), 0).unwrap();
    delivered(c.report(d, &pr(req(Some(1), 4, true, 0x2000)), 0).unwrap());
    assert_eq!(c.handler_mut(h).unwrap().pop().unwrap().requests.len(), 2);
    assert_eq!(c.counters(d).unwrap().pasid_mismatches, 1);
}

#[test]
fn no_handler_answers_invalid_at_once() {
    // iommu_report_device_fault() → err_bad_iopf → iopf_error_response(): INVALID.
    let mut c = core();
    let d = c.register(PriCaps::default()).unwrap();
    c.report(d, &pr(req(None, 3, false, 0)), 0).unwrap();
    let r = c.report(d, &pr(req(None, 3, true, 0)), 0).unwrap();
    let sent = DeviceResponse {
        pasid: None,
        grpid: 3,
        code: ResponseCode::Invalid,
        private_data: None,
    };
    assert_eq!(
        r,
        Reported::Answered {
            reason: AutoReason::NoHandler,
            sent
        }
    );
    assert_eq!(c.sink().sent, vec![(d, sent)]);
    assert_eq!(
        c.held_partials(d).unwrap(),
        0,
        "the group's partial went with it"
    );
    let k = c.counters(d).unwrap();
    assert_eq!(k.auto(AutoReason::NoHandler), 1);
    check_identities(k, 0);
}

#[test]
fn a_refusal_never_answers_response_failure() {
    // Linux's err_abort path sends FAILURE, which disables PRI on the function for what is a
    // transient condition. iopf: a full queue gets the overflow policy (SUCCESS, so the device
    // retries, or INVALID if set), a consumer that has gone INVALID, on a PF as on a VF.
    for (caps, policy) in [
        (PriCaps::default(), OverflowPolicy::RETRY),
        (vf(), OverflowPolicy::RETRY),
        (PriCaps::default(), OverflowPolicy::INVALID),
    ] {
        let mut c = core();
        let d = c.register(caps).unwrap();
        c.set_overflow_policy(d, policy).unwrap();
        let h = c.attach(d, None, BoundedHandler::new(1), ALL).unwrap();
        delivered(c.report(d, &pr(req(None, 1, true, 0)), 0).unwrap());
        let r = c.report(d, &pr(req(None, 2, true, 0)), 0).unwrap();
        assert!(
            matches!(r, Reported::Answered { reason: AutoReason::NoRoom, sent } if sent.code == policy.answer),
            "{r:?}"
        );
        c.handler_mut(h).unwrap().shutting_down = true;
        c.handler_mut(h).unwrap().capacity = 10;
        let r = c.report(d, &pr(req(None, 3, true, 0)), 0).unwrap();
        assert!(matches!(
            r,
            Reported::Answered {
                reason: AutoReason::ConsumerGone,
                sent: DeviceResponse {
                    code: ResponseCode::Invalid,
                    ..
                },
            }
        ));
        let k = c.counters(d).unwrap();
        assert_eq!(
            (k.auto(AutoReason::NoRoom), k.auto(AutoReason::ConsumerGone)),
            (1, 1)
        );
        assert_eq!(
            (
                k.refusals(Refusal::QueueFull),
                k.refusals(Refusal::ShuttingDown)
            ),
            (1, 1)
        );
        assert_eq!(k.responses(ResponseCode::Failure), 0);
        assert_eq!(k.failure_as_invalid, 0);
        check_identities(k, 1);
    }
}

#[test]
fn policies_may_not_answer_response_failure() {
    let (mut c, d, _) = setup(PriCaps::default());
    let failure = ResponseCode::Failure;
    assert!(matches!(
        c.set_overflow_policy(d, OverflowPolicy { answer: failure }),
        Err(CoreError::BadConfig(_))
    ));
    assert!(matches!(
        c.set_storm_limit(
            d,
            Some(StormLimit {
                max_requests: 1,
                interval: 1,
                code: failure
            })
        ),
        Err(CoreError::BadConfig(_))
    ));
    assert!(matches!(
        c.set_age_limit(
            d,
            Some(AgeLimit {
                limit: 1,
                answer: Some(failure)
            })
        ),
        Err(CoreError::BadConfig(_))
    ));
    assert_eq!(c.overflow_policy(d).unwrap(), OverflowPolicy::RETRY);
}

#[test]
fn stop_markers_are_dropped_without_response() {
    let (mut c, d, h) = setup(PriCaps::default());
    let mut stop = req(Some(1), 0, true, 0);
    stop.perm = Perm::empty();
    assert_eq!(c.report(d, &pr(stop), 0).unwrap(), Reported::StopMarker);
    assert!(c.sink().sent.is_empty());
    assert!(c.handler(h).unwrap().queue.is_empty());
    assert_eq!(c.counters(d).unwrap().stop_markers, 1);
    assert_eq!(c.counters(d).unwrap().groups, 0);
}

#[test]
fn unrecoverable_faults_are_passed_on_and_need_no_answer() {
    let (mut c, d, h) = setup(PriCaps::default());
    let u = Unrecoverable {
        reason: FaultReason::Permission,
        flags: UnrecoverableFlags::ADDR_VALID,
        pasid: 0,
        perm: Perm::WRITE,
        addr: 0xdead000,
        fetch_addr: 0,
    };
    let r = c.report(d, &Fault::Unrecoverable(u), 0).unwrap();
    assert_eq!(r, Reported::Unrecoverable { passed_on: true });
    assert_eq!(c.handler(h).unwrap().unrecoverable, vec![(d, u)]);
    c.detach(h).unwrap();
    let r = c.report(d, &Fault::Unrecoverable(u), 0).unwrap();
    assert_eq!(r, Reported::Unrecoverable { passed_on: false });
    assert!(c.sink().sent.is_empty());
    assert_eq!(c.counters(d).unwrap().unrecoverable, 2);
}

#[test]
fn overflow_discards_partial_lists() {
    // iopf_queue_discard_partial(): the LAST_PAGE may have been lost.
    let (mut c, d, h) = setup(PriCaps::default());
    let d2 = c.register(PriCaps::default()).unwrap();
    c.report(d, &pr(req(None, 1, false, 0x1000)), 0).unwrap();
    c.report(d, &pr(req(None, 2, false, 0x2000)), 0).unwrap();
    c.report(d2, &pr(req(None, 1, false, 0x1000)), 0).unwrap();
    assert_eq!(c.discard_partials(), 3);
    assert_eq!(c.held_partials(d).unwrap(), 0);
    assert_eq!(c.counters(d).unwrap().discarded_partials, 2);
    delivered(c.report(d, &pr(req(None, 1, true, 0x3000)), 0).unwrap());
    assert_eq!(c.handler_mut(h).unwrap().pop().unwrap().requests.len(), 1);
    assert!(
        c.sink().sent.is_empty(),
        "discarding partials answers nothing"
    );
    c.report(d, &pr(req(None, 5, false, 0)), 0).unwrap();
    assert_eq!(c.discard_device_partials(d).unwrap(), 1);
}

#[test]
fn cookies_are_unique_nonzero_and_respond_restores_private_data() {
    let (mut c, d, h) = setup(PriCaps {
        pasid_required: true,
        ..PriCaps::default()
    });
    let mut cookies = std::collections::HashSet::new();
    for g in 0..100 {
        let cookie = delivered(c.report(d, &pr(req(Some(7), g, true, 0)), 0).unwrap());
        assert_ne!(cookie.raw(), 0);
        assert!(cookies.insert(cookie), "cookie reused while outstanding");
    }
    let cookie = delivered(
        c.report(d, &pr(req_priv(Some(7), 200, [0xaa, 0xbb])), 5)
            .unwrap(),
    );
    let g = c.handler_mut(h).unwrap().queue.back().cloned().unwrap();
    assert!(g.requests[0]
        .flags
        .contains(PageRequestFlags::RESPONSE_NEEDS_PASID));
    // An old consumer that does not echo private data: the core restores it.
    let a = c
        .respond(h, &cookie_resp(cookie, ResponseCode::Success))
        .unwrap();
    let sent = DeviceResponse {
        pasid: Some(7),
        grpid: 200,
        code: ResponseCode::Success,
        private_data: Some([0xaa, 0xbb]),
    };
    assert_eq!(a.sent, sent);
    assert_eq!((a.device, a.cookie, a.completed_at), (d, cookie, 5));
    assert_eq!(c.sink().sent.last(), Some(&(d, sent)));
    // An echoing consumer gets the same.
    let cookie = delivered(c.report(d, &pr(req_priv(Some(7), 201, [1, 2])), 5).unwrap());
    let resp = Response {
        private_data: Some([1, 2]),
        ..cookie_resp(cookie, ResponseCode::Invalid)
    };
    assert_eq!(c.respond(h, &resp).unwrap().sent.private_data, Some([1, 2]));
    check_identities(c.counters(d).unwrap(), 100);
}

#[test]
fn pasid_is_sent_only_when_the_device_requires_it() {
    let (mut c, d, h) = setup(PriCaps::default());
    let cookie = delivered(c.report(d, &pr(req(Some(7), 1, true, 0)), 0).unwrap());
    let g = c.handler(h).unwrap().queue[0].clone();
    assert!(!g.requests[0]
        .flags
        .contains(PageRequestFlags::RESPONSE_NEEDS_PASID));
    let a = c
        .respond(h, &cookie_resp(cookie, ResponseCode::Success))
        .unwrap();
    assert_eq!(a.sent.pasid, None);
}

/// Asserts that `resp` through `h` fails with `err`, nothing reaches a device, nothing
/// outstanding changes, and the device's rejection counter for `reason` moves by one.
fn assert_rejected(
    c: &mut Core,
    d: DeviceId,
    h: HandlerId,
    resp: Response,
    err: CoreError,
    reason: RejectReason,
) {
    let sent = c.sink().sent.len();
    let before = *c.counters(d).unwrap();
    let out: Vec<_> = c.devices().map(|x| c.outstanding(x).unwrap()).collect();
    assert_eq!(c.respond(h, &resp), Err(err));
    assert_eq!(err.errno(), libc::EINVAL);
    assert_eq!(c.sink().sent.len(), sent, "nothing reaches a device");
    let after: Vec<_> = c.devices().map(|x| c.outstanding(x).unwrap()).collect();
    assert_eq!(out, after, "nothing outstanding disturbed");
    let k = c.counters(d).unwrap();
    assert_eq!(k.rejected(reason), before.rejected(reason) + 1);
    assert_eq!(k.responses_total(), before.responses_total());
}

#[test]
fn each_bad_response_gets_its_own_error_and_disturbs_nothing() {
    let mut c = core();
    let caps = PriCaps {
        pasid_required: true,
        ..PriCaps::default()
    };
    let d = c.register(caps).unwrap();
    let d2 = c.register(caps).unwrap();
    let h = c.attach(d, None, BoundedHandler::new(64), ALL).unwrap();
    let hp = c.attach(d, Some(9), BoundedHandler::new(64), ALL).unwrap();
    let h2 = c.attach(d2, None, BoundedHandler::new(64), ALL).unwrap();
    let old = c
        .attach(d2, Some(1), BoundedHandler::new(64), Features::empty())
        .unwrap();
    let mine = delivered(c.report(d, &pr(req_priv(Some(3), 1, [5, 6])), 0).unwrap());
    let pasid9 = delivered(c.report(d, &pr(req(Some(9), 2, true, 0)), 0).unwrap());
    let other_dev = delivered(c.report(d2, &pr(req(None, 1, true, 0)), 0).unwrap());
    let answered = delivered(c.report(d, &pr(req(Some(3), 3, true, 0)), 0).unwrap());
    c.respond(h, &cookie_resp(answered, ResponseCode::Success))
        .unwrap();

    let by = |c, code| Response::by_cookie(c, code);
    assert_rejected(
        &mut c,
        d,
        h,
        by(Cookie::from_raw(0x1234), ResponseCode::Success),
        CoreError::UnknownGroup,
        RejectReason::UnknownGroup,
    );
    assert_rejected(
        &mut c,
        d,
        h,
        by(answered, ResponseCode::Success),
        CoreError::AlreadyAnswered(answered),
        RejectReason::AlreadyAnswered,
    );
    assert_rejected(
        &mut c,
        d,
        h,
        by(other_dev, ResponseCode::Success),
        CoreError::WrongDevice {
            cookie: other_dev,
            owner: d2,
        },
        RejectReason::WrongDevice,
    );
    assert_rejected(
        &mut c,
        d,
        h,
        by(pasid9, ResponseCode::Success),
        CoreError::WrongHandler(pasid9),
        RejectReason::ForeignGroup,
    );
    let grp = |pasid, grpid| Response {
        group: GroupRef::Grpid { pasid, grpid },
        code: 0,
        private_data: None,
    };
    assert_rejected(
        &mut c,
        d,
        h,
        grp(Some(4), 1),
        CoreError::WrongPasid {
            grpid: 1,
            got: Some(4),
        },
        RejectReason::PasidMismatch,
    );
    assert_rejected(
        &mut c,
        d,
        h,
        grp(None, 1),
        CoreError::WrongPasid {
            grpid: 1,
            got: None,
        },
        RejectReason::PasidMismatch,
    );
    assert_rejected(
        &mut c,
        d,
        h,
        grp(Some(9), 2),
        CoreError::WrongHandler(pasid9),
        RejectReason::ForeignGroup,
    );
    assert_rejected(
        &mut c,
        d,
        h,
        grp(Some(3), 77),
        CoreError::UnknownGroup,
        RejectReason::UnknownGroup,
    );
    assert_rejected(
        &mut c,
        d,
        h,
        Response {
            code: 3,
            ..by(mine, ResponseCode::Success)
        },
        CoreError::UnknownCode(3),
        RejectReason::UnknownCode,
    );
    assert_rejected(
        &mut c,
        d,
        h,
        Response {
            private_data: Some([5, 7]),
            ..by(mine, ResponseCode::Success)
        },
        CoreError::PrivateDataMismatch(mine),
        RejectReason::PrivDataMismatch,
    );
    assert_rejected(
        &mut c,
        d,
        hp,
        Response {
            private_data: Some([0, 0]),
            ..by(pasid9, ResponseCode::Success)
        },
        CoreError::PrivateDataMismatch(pasid9),
        RejectReason::PrivDataMismatch,
    );
    // A consumer that agreed on nothing may not use cookies or echo private data.
    let g = delivered(c.report(d2, &pr(req(Some(1), 5, true, 0)), 0).unwrap());
    assert_rejected(
        &mut c,
        d2,
        old,
        by(g, ResponseCode::Success),
        CoreError::NotAgreed(Features::COOKIE_RESPONSE),
        RejectReason::FormatNotAgreed,
    );
    assert_rejected(
        &mut c,
        d2,
        old,
        Response {
            private_data: Some([0, 0]),
            ..grp(Some(1), 5)
        },
        CoreError::NotAgreed(Features::PRIV_DATA_ECHO),
        RejectReason::PrivDataNotAgreed,
    );
    // ... but the old (PASID, grpid) form works for it.
    assert_eq!(c.respond(old, &grp(Some(1), 5)).unwrap().cookie, g);
    // Unknown handler: counted on the core.
    let bogus = HandlerId::from_raw(0xffff_0000);
    assert_eq!(
        c.respond(bogus, &by(mine, ResponseCode::Success)),
        Err(CoreError::UnknownHandler(bogus))
    );
    assert_eq!(c.core_counters().unknown_handler_responses, 1);
    // The real answers still go through, once.
    c.respond(h, &grp(Some(3), 1)).unwrap();
    c.respond(hp, &by(pasid9, ResponseCode::Invalid)).unwrap();
    c.respond(h2, &by(other_dev, ResponseCode::Success))
        .unwrap();
    check_identities(c.counters(d).unwrap(), 0);
    check_identities(c.counters(d2).unwrap(), 0);
}

#[test]
fn grpid_response_ignores_pasid_when_not_required_and_matches_oldest_reuse_first() {
    let (mut c, d, h) = setup(PriCaps::default());
    let a = delivered(c.report(d, &pr(req(Some(1), 8, true, 0)), 0).unwrap());
    // The device reuses index 8 before its response: counted, both kept.
    let b = delivered(c.report(d, &pr(req(Some(1), 8, true, 0)), 1).unwrap());
    assert_eq!(c.counters(d).unwrap().grpid_reuses, 1);
    let grp = Response {
        group: GroupRef::Grpid {
            pasid: Some(999),
            grpid: 8,
        },
        code: 0,
        private_data: None,
    };
    assert_eq!(c.respond(h, &grp).unwrap().cookie, a);
    assert_eq!(c.respond(h, &grp).unwrap().cookie, b);
    assert_eq!(c.respond(h, &grp), Err(CoreError::UnknownGroup));
}

#[test]
fn consumer_failure_is_sent_as_invalid_on_a_vf() {
    let (mut c, d, h) = setup(vf());
    let g = delivered(c.report(d, &pr(req(None, 1, true, 0)), 0).unwrap());
    let a = c
        .respond(h, &cookie_resp(g, ResponseCode::Failure))
        .unwrap();
    assert_eq!(a.sent.code, ResponseCode::Invalid);
    assert_eq!(c.counters(d).unwrap().failure_as_invalid, 1);
}

#[test]
fn detach_answers_every_group_of_the_handler_delivered_or_not() {
    // iommufd_fault_domain_detach_dev() → iommufd_auto_response_faults().
    let (mut c, d, h) = setup(PriCaps::default());
    let hp = c.attach(d, Some(2), BoundedHandler::new(8), ALL).unwrap();
    let a = delivered(c.report(d, &pr(req(None, 1, true, 0)), 0).unwrap());
    let b = delivered(c.report(d, &pr(req(None, 2, true, 0)), 0).unwrap());
    let keep = delivered(c.report(d, &pr(req(Some(2), 3, true, 0)), 0).unwrap());
    c.handler_mut(h).unwrap().pop(); // a was read by the consumer, b was not
    let q = c.detach(h).unwrap();
    // Both were withdrawn from the handler before it came back (b unread, so it left the queue).
    assert!(q.queue.is_empty());
    assert_eq!(q.withdrawn, [a, b]);
    let sent: Vec<_> = c
        .sink()
        .sent
        .iter()
        .map(|(_, r)| (r.grpid, r.code))
        .collect();
    assert_eq!(
        sent,
        [(1, ResponseCode::Invalid), (2, ResponseCode::Invalid)]
    );
    assert_eq!(
        c.respond(h, &cookie_resp(a, ResponseCode::Success)),
        Err(CoreError::UnknownHandler(h))
    );
    assert!(c.group(a).is_none() && c.group(b).is_none() && c.group(keep).is_some());
    let r = c.report(d, &pr(req(None, 4, true, 0)), 0).unwrap();
    assert!(matches!(
        r,
        Reported::Answered {
            reason: AutoReason::NoHandler,
            ..
        }
    ));
    assert_eq!(c.counters(d).unwrap().auto(AutoReason::Detached), 2);
    c.respond(hp, &cookie_resp(keep, ResponseCode::Success))
        .unwrap();
    check_identities(c.counters(d).unwrap(), 0);
}

#[test]
fn replace_answers_the_old_handlers_groups_and_routes_to_the_new() {
    let (mut c, d, h) = setup(PriCaps::default());
    delivered(c.report(d, &pr(req(None, 1, true, 0)), 0).unwrap());
    let (h2, old) = c.replace(h, BoundedHandler::new(8), ALL).unwrap();
    assert!(
        old.queue.is_empty(),
        "the old handler's group was withdrawn from it"
    );
    assert_eq!(old.withdrawn.len(), 1);
    assert_eq!(c.sink().sent.len(), 1);
    assert_eq!(c.counters(d).unwrap().auto(AutoReason::Replaced), 1);
    assert_eq!(c.handler_at(d, None).unwrap(), Some(h2));
    assert!(c.handler(h).is_none());
    let r = c.report(d, &pr(req(None, 1, true, 0)), 0).unwrap();
    assert!(matches!(r, Reported::Delivered { handler, .. } if handler == h2));
    assert!(c.replace(h, BoundedHandler::new(1), ALL).is_err());
}

#[test]
fn remove_device_stops_reception_answers_everything_then_forgets() {
    // iopf_queue_remove_device(): partials freed, every pending group INVALID, param dropped.
    let (mut c, d, h) = setup(PriCaps::default());
    let hp = c.attach(d, Some(4), BoundedHandler::new(8), ALL).unwrap();
    c.report(d, &pr(req(None, 9, false, 0)), 0).unwrap();
    let a = delivered(c.report(d, &pr(req(None, 1, true, 0)), 0).unwrap());
    delivered(c.report(d, &pr(req(Some(4), 2, true, 0)), 0).unwrap());
    let other = c.register(PriCaps::default()).unwrap();
    let ho = c.attach(other, None, BoundedHandler::new(8), ALL).unwrap();
    let o = delivered(c.report(other, &pr(req(None, 1, true, 0)), 0).unwrap());

    let removed = c.remove_device(d).unwrap();
    assert_eq!((removed.answered, removed.discarded_partials), (2, 1));
    assert_eq!(removed.handlers.len(), 2);
    assert!(removed
        .handlers
        .iter()
        .any(|(id, p, _)| *id == hp && *p == Some(4)));
    assert!(removed
        .handlers
        .iter()
        .any(|(id, p, _)| *id == h && p.is_none()));
    assert_eq!(removed.counters.auto(AutoReason::Removed), 2);
    check_identities(&removed.counters, 0);
    assert!(c
        .sink()
        .sent
        .iter()
        .all(|(dev, r)| *dev == d && r.code == ResponseCode::Invalid));
    assert_eq!(
        c.report(d, &pr(req(None, 1, true, 0)), 0),
        Err(CoreError::UnknownDevice(d))
    );
    assert_eq!(
        c.respond(h, &cookie_resp(a, ResponseCode::Success)),
        Err(CoreError::UnknownHandler(h))
    );
    assert!(c.remove_device(d).is_err());
    // The other device is untouched.
    assert_eq!(c.outstanding(other).unwrap(), 1);
    c.respond(ho, &cookie_resp(o, ResponseCode::Success))
        .unwrap();
}

#[test]
fn flush_pasid_answers_its_groups_before_reuse_and_tells_the_handler() {
    let (mut c, d, h) = setup(PriCaps::default());
    let hp = c.attach(d, Some(5), BoundedHandler::new(8), ALL).unwrap();
    let a = delivered(c.report(d, &pr(req(Some(5), 1, true, 0)), 0).unwrap());
    let keep = delivered(c.report(d, &pr(req(Some(6), 2, true, 0)), 0).unwrap());
    c.report(d, &pr(req(Some(5), 3, false, 0)), 0).unwrap();
    c.report(d, &pr(req(Some(6), 3, false, 0)), 0).unwrap();
    assert_eq!(c.flush_pasid(d, 5).unwrap(), 1);
    assert_eq!(c.handler(hp).unwrap().withdrawn, vec![a]);
    assert!(c.handler(hp).unwrap().queue.is_empty());
    assert_eq!(
        c.held_partials(d).unwrap(),
        1,
        "only PASID 5's partial is discarded"
    );
    assert_eq!(
        c.respond(hp, &cookie_resp(a, ResponseCode::Success)),
        Err(CoreError::AlreadyAnswered(a))
    );
    assert_eq!(c.counters(d).unwrap().auto(AutoReason::Flushed), 1);
    // Device-wide handler groups of the flushed PASID go too.
    let b = delivered(c.report(d, &pr(req(Some(6), 4, true, 0)), 0).unwrap());
    assert_eq!(c.flush_pasid(d, 6).unwrap(), 2);
    assert_eq!(c.handler(h).unwrap().withdrawn, vec![keep, b]);
    assert_eq!(c.held_partials(d).unwrap(), 0);
    check_identities(c.counters(d).unwrap(), 0);
}

#[test]
fn no_timeout_by_default_and_the_age_limit_counts_or_answers() {
    let (mut c, d, h) = setup(PriCaps::default());
    delivered(c.report(d, &pr(req(None, 1, true, 0)), 100).unwrap());
    assert_eq!(c.expire(u64::MAX), 0);
    assert_eq!(c.counters(d).unwrap().aged, 0);
    assert_eq!(c.outstanding(d).unwrap(), 1);

    c.set_age_limit(
        d,
        Some(AgeLimit {
            limit: 1000,
            answer: None,
        }),
    )
    .unwrap();
    let young = delivered(c.report(d, &pr(req(None, 2, true, 0)), 900).unwrap());
    assert_eq!(c.expire(1100), 0);
    assert_eq!(c.counters(d).unwrap().aged, 1, "counted, not answered");
    assert_eq!(c.expire(1200), 0);
    assert_eq!(c.counters(d).unwrap().aged, 1, "counted once");
    assert!(!c.group(young).unwrap().aged);

    c.set_age_limit(
        d,
        Some(AgeLimit {
            limit: 1000,
            answer: Some(ResponseCode::Invalid),
        }),
    )
    .unwrap();
    assert_eq!(
        c.expire(1850),
        1,
        "the old group is answered, the young one is not yet"
    );
    assert_eq!(c.expire(1850), 0);
    assert_eq!(c.expire(1900), 1);
    let k = c.counters(d).unwrap();
    assert_eq!((k.aged, k.auto(AutoReason::Aged)), (2, 2));
    assert_eq!(c.handler(h).unwrap().withdrawn.len(), 2);
    assert!(c.handler(h).unwrap().queue.is_empty());
    check_identities(c.counters(d).unwrap(), 0);
    assert!(c
        .set_age_limit(
            d,
            Some(AgeLimit {
                limit: 0,
                answer: None
            })
        )
        .is_err());
}

#[test]
fn storm_limit_answers_the_excess_at_once() {
    let (mut c, d, _h) = setup(PriCaps::default());
    c.set_storm_limit(
        d,
        Some(StormLimit {
            max_requests: 2,
            interval: 1000,
            code: ResponseCode::Invalid,
        }),
    )
    .unwrap();
    delivered(c.report(d, &pr(req(None, 1, true, 0)), 0).unwrap());
    assert_eq!(
        c.report(d, &pr(req(None, 2, false, 0)), 10).unwrap(),
        Reported::Held
    );
    assert_eq!(
        c.report(d, &pr(req(None, 3, false, 0)), 20).unwrap(),
        Reported::Dropped(DropReason::Storm)
    );
    let r = c.report(d, &pr(req(None, 2, true, 0)), 30).unwrap();
    assert!(
        matches!(r, Reported::Answered { reason: AutoReason::Storm, sent } if sent.code == ResponseCode::Invalid && sent.grpid == 2)
    );
    assert_eq!(c.held_partials(d).unwrap(), 0);
    // A new interval admits again.
    delivered(c.report(d, &pr(req(None, 4, true, 0)), 1000).unwrap());
    let k = c.counters(d).unwrap();
    assert_eq!(
        (
            k.auto(AutoReason::Storm),
            k.dropped_partials,
            k.discarded_partials
        ),
        (1, 1, 1)
    );
    check_identities(k, 2);
    assert!(c
        .set_storm_limit(
            d,
            Some(StormLimit {
                max_requests: 0,
                interval: 1,
                code: ResponseCode::Invalid
            })
        )
        .is_err());
}

#[test]
fn outstanding_allocation_bounds_what_is_held() {
    let (mut c, d, h) = setup(PriCaps {
        outstanding_allocation: 3,
        ..PriCaps::default()
    });
    c.report(d, &pr(req(None, 1, false, 0)), 0).unwrap();
    let a = delivered(c.report(d, &pr(req(None, 1, true, 0)), 0).unwrap());
    c.report(d, &pr(req(None, 2, false, 0)), 0).unwrap();
    assert_eq!(
        c.report(d, &pr(req(None, 2, false, 0)), 0).unwrap(),
        Reported::Dropped(DropReason::OverAllocation)
    );
    let r = c.report(d, &pr(req(None, 2, true, 0)), 0).unwrap();
    assert!(matches!(
        r,
        Reported::Answered {
            reason: AutoReason::OverAllocation,
            ..
        }
    ));
    // Answering frees the allocation.
    c.respond(h, &cookie_resp(a, ResponseCode::Success))
        .unwrap();
    delivered(c.report(d, &pr(req(None, 3, true, 0)), 0).unwrap());
    check_identities(c.counters(d).unwrap(), 1);
}

#[test]
fn groups_built_outside_the_core_have_the_delivered_shape() {
    let d = DeviceId::from_raw(1);
    let (h, c) = (HandlerId::from_raw(1), Cookie::from_raw(1 << 22));
    let parts = [req(None, 1, false, 0), req(None, 1, true, 0)];
    let g = Group::new(d, h, c, &parts, 0, 1).unwrap();
    assert_eq!(g.last().map(|r| r.addr), Some(0));
    assert!(Group::new(d, h, c, &[], 0, 1).is_none());
    assert!(
        Group::new(d, h, c, &parts[..1], 0, 1).is_none(),
        "no LAST_PAGE"
    );
    assert!(
        Group::new(d, h, c, &[parts[1], parts[1]], 0, 1).is_none(),
        "LAST_PAGE inside"
    );
}

#[test]
fn dyn_handlers_share_one_core() {
    struct Count(u32);
    impl GroupHandler for Count {
        fn deliver(&mut self, _: &Group<'_>) -> Result<(), Refusal> {
            self.0 += 1;
            Ok(())
        }
    }
    let mut c: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    let d = c.register(PriCaps::default()).unwrap();
    c.attach(d, None, Box::new(Count(0)), ALL).unwrap();
    c.attach(d, Some(1), Box::new(BoundedHandler::new(1)), ALL)
        .unwrap();
    delivered(c.report(d, &pr(req(None, 1, true, 0)), 0).unwrap());
    delivered(c.report(d, &pr(req(Some(1), 2, true, 0)), 0).unwrap());
}
