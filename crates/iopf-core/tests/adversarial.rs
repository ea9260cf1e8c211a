//! An adversarial review of the fault core's invariants (DESIGN.md "Invariants"): late responses
//! after teardown with the PRG index reused, responses that name someone else's group, private
//! data that does not match, partials of other PASIDs held across a completion. Each test fails
//! if a response reaches the device for a group that is not outstanding, or if an outstanding
//! group is answered twice or not at all.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

mod common;

use common::*;
use iopf_abi::{Features, ResponseCode};
use iopf_core::testing::{BoundedHandler, RecordingSink};
use iopf_core::*;

const ALL: Features = Features::COOKIE_RESPONSE.union(Features::PRIV_DATA_ECHO);

fn delivered(r: Reported) -> Cookie {
    match r {
        Reported::Delivered { cookie, .. } => cookie,
        other => panic!("expected delivery, got {other:?}"),
    }
}

fn pasid_caps() -> PriCaps {
    PriCaps {
        pasid_required: true,
        ..PriCaps::default()
    }
}

fn by_grpid(pasid: Option<u32>, grpid: u32, code: ResponseCode) -> Response {
    Response {
        group: GroupRef::Grpid { pasid, grpid },
        code: code.raw(),
        private_data: None,
    }
}

#[test]
fn a_late_response_after_detach_never_answers_the_next_group_with_that_prg_index() {
    let mut c: Core = FaultCore::new(RecordingSink::default());
    let d = c.register(PriCaps::default()).unwrap();
    let h1 = c.attach(d, None, BoundedHandler::new(8), ALL).unwrap();
    let old = delivered(c.report(d, &pr(req(None, 5, true, 0x1000)), 0).unwrap());
    c.detach(h1).unwrap();
    let sent = c.sink_mut().take();
    assert_eq!(sent.len(), 1, "detach answers the group once");
    assert_eq!(sent[0].1.code, ResponseCode::Invalid);

    // A new handler takes the device; the device reuses PRG index 5.
    let h2 = c.attach(d, None, BoundedHandler::new(8), ALL).unwrap();
    let new = delivered(c.report(d, &pr(req(None, 5, true, 0x2000)), 1).unwrap());
    assert_ne!(old, new);

    // The old consumer's late answers, by cookie and by grpid, through its old handler id.
    for r in [
        Response::by_cookie(old, ResponseCode::Success),
        by_grpid(None, 5, ResponseCode::Success),
    ] {
        assert!(matches!(
            c.respond(h1, &r),
            Err(CoreError::UnknownHandler(_))
        ));
    }
    // The old cookie through the new handler is a stale cookie, not the new group.
    assert!(matches!(
        c.respond(h2, &Response::by_cookie(old, ResponseCode::Success)),
        Err(CoreError::AlreadyAnswered(_) | CoreError::UnknownGroup)
    ));
    assert!(c.sink().sent.is_empty(), "nothing reached the device");
    assert_eq!(c.outstanding(d).unwrap(), 1);
    c.respond(h2, &Response::by_cookie(new, ResponseCode::Success))
        .unwrap();
    assert_eq!(c.sink_mut().take().len(), 1);
    check_identities(c.counters(d).unwrap(), 0);
}

#[test]
fn a_late_response_after_replace_and_flush_is_refused() {
    let mut c: Core = FaultCore::new(RecordingSink::default());
    let d = c.register(pasid_caps()).unwrap();
    let h1 = c.attach(d, Some(7), BoundedHandler::new(8), ALL).unwrap();
    let a = delivered(c.report(d, &pr(req(Some(7), 9, true, 0x1000)), 0).unwrap());
    let (h2, _) = c.replace(h1, BoundedHandler::new(8), ALL).unwrap();
    assert_eq!(
        c.sink_mut().take().len(),
        1,
        "replace answers the old group"
    );
    let b = delivered(c.report(d, &pr(req(Some(7), 9, true, 0x2000)), 1).unwrap());
    assert!(c
        .respond(h1, &Response::by_cookie(a, ResponseCode::Success))
        .is_err());
    assert!(c
        .respond(h2, &Response::by_cookie(a, ResponseCode::Success))
        .is_err());

    // Flush PASID 7: b is answered once; the PASID's next user reuses PRG index 9.
    assert_eq!(c.flush_pasid(d, 7).unwrap(), 1);
    assert_eq!(c.sink_mut().take().len(), 1);
    let next = delivered(c.report(d, &pr(req(Some(7), 9, true, 0x3000)), 2).unwrap());
    assert!(c
        .respond(h2, &Response::by_cookie(b, ResponseCode::Success))
        .is_err());
    assert!(c.sink().sent.is_empty());
    assert!(c.group(next).is_some());
    // A second flush answers only the new group, and only once.
    assert_eq!(c.flush_pasid(d, 7).unwrap(), 1);
    assert_eq!(c.flush_pasid(d, 7).unwrap(), 0);
    assert_eq!(c.sink_mut().take().len(), 1);
    check_identities(c.counters(d).unwrap(), 0);
}

#[test]
fn a_removed_devices_slot_reused_by_another_device_keeps_old_ids_dead() {
    let mut c: Core = FaultCore::new(RecordingSink::default());
    let d1 = c.register(PriCaps::default()).unwrap();
    let h1 = c.attach(d1, None, BoundedHandler::new(8), ALL).unwrap();
    let old = delivered(c.report(d1, &pr(req(None, 3, true, 0)), 0).unwrap());
    let removed = c.remove_device(d1).unwrap();
    assert_eq!(removed.answered, 1);
    c.sink_mut().take();

    let d2 = c.register(PriCaps::default()).unwrap();
    let h2 = c.attach(d2, None, BoundedHandler::new(8), ALL).unwrap();
    assert_ne!(d1, d2, "a reused device slot gets a new id");
    let new = delivered(c.report(d2, &pr(req(None, 3, true, 0)), 1).unwrap());
    assert!(c.report(d1, &pr(req(None, 3, true, 0)), 2).is_err());
    assert!(c
        .respond(h1, &by_grpid(None, 3, ResponseCode::Success))
        .is_err());
    assert!(c
        .respond(h2, &Response::by_cookie(old, ResponseCode::Success))
        .is_err());
    assert!(c.sink().sent.is_empty());
    assert!(c.group(new).is_some());
}

#[test]
fn same_prg_index_on_two_pasids_is_answered_by_pasid_not_by_age() {
    let mut c: Core = FaultCore::new(RecordingSink::default());
    let d = c.register(pasid_caps()).unwrap();
    let h = c.attach(d, None, BoundedHandler::new(8), ALL).unwrap();
    let a = delivered(c.report(d, &pr(req(Some(1), 4, true, 0x1000)), 0).unwrap());
    let b = delivered(c.report(d, &pr(req(Some(2), 4, true, 0x2000)), 1).unwrap());
    // No PASID, or a PASID with no group of index 4: refused, nothing sent.
    assert!(matches!(
        c.respond(h, &by_grpid(None, 4, ResponseCode::Success)),
        Err(CoreError::WrongPasid { .. })
    ));
    assert!(matches!(
        c.respond(h, &by_grpid(Some(3), 4, ResponseCode::Success)),
        Err(CoreError::WrongPasid { .. })
    ));
    assert!(c.sink().sent.is_empty());
    // PASID 2 answers b, the younger group, and leaves a alone.
    let ans = c
        .respond(h, &by_grpid(Some(2), 4, ResponseCode::Success))
        .unwrap();
    assert_eq!(ans.cookie, b);
    assert_eq!(ans.sent.pasid, Some(2));
    assert!(c.group(a).is_some());
    assert!(matches!(
        c.respond(h, &by_grpid(Some(2), 4, ResponseCode::Success)),
        Err(CoreError::WrongPasid { .. })
    ));
    assert_eq!(
        c.respond(h, &by_grpid(Some(1), 4, ResponseCode::Invalid))
            .unwrap()
            .cookie,
        a
    );
    assert_eq!(c.sink_mut().take().len(), 2);
}

#[test]
fn a_handler_cannot_answer_another_handlers_group_by_grpid_or_cookie() {
    let mut c: Core = FaultCore::new(RecordingSink::default());
    let d = c.register(pasid_caps()).unwrap();
    let e = c.register(pasid_caps()).unwrap();
    let h7 = c.attach(d, Some(7), BoundedHandler::new(8), ALL).unwrap();
    let hd = c.attach(d, None, BoundedHandler::new(8), ALL).unwrap();
    let he = c.attach(e, None, BoundedHandler::new(8), ALL).unwrap();
    let g7 = delivered(c.report(d, &pr(req(Some(7), 2, true, 0)), 0).unwrap());
    let ge = delivered(c.report(e, &pr(req(Some(7), 2, true, 0)), 0).unwrap());
    // The device-wide handler names PASID 7's group.
    assert!(matches!(
        c.respond(hd, &by_grpid(Some(7), 2, ResponseCode::Success)),
        Err(CoreError::WrongHandler(_))
    ));
    assert!(matches!(
        c.respond(hd, &Response::by_cookie(g7, ResponseCode::Success)),
        Err(CoreError::WrongHandler(_))
    ));
    // Another device's handler names this device's group, and the reverse.
    assert!(matches!(
        c.respond(he, &Response::by_cookie(g7, ResponseCode::Success)),
        Err(CoreError::WrongDevice { .. })
    ));
    assert!(matches!(
        c.respond(h7, &Response::by_cookie(ge, ResponseCode::Success)),
        Err(CoreError::WrongDevice { .. })
    ));
    assert!(c.sink().sent.is_empty());
    assert_eq!(
        (c.outstanding(d).unwrap(), c.outstanding(e).unwrap()),
        (1, 1)
    );
}

#[test]
fn a_mismatched_echo_is_refused_and_the_device_gets_the_requests_private_data() {
    let mut c: Core = FaultCore::new(RecordingSink::default());
    let d = c.register(pasid_caps()).unwrap();
    let h = c.attach(d, None, BoundedHandler::new(8), ALL).unwrap();
    let data = [0x1111, 0x2222];
    let g = delivered(c.report(d, &pr(req_priv(Some(1), 6, data)), 0).unwrap());
    let other = c.register(PriCaps::default()).unwrap();
    let plain = c
        .attach(
            other,
            None,
            BoundedHandler::new(8),
            Features::COOKIE_RESPONSE,
        )
        .unwrap();
    for bad in [[0x1111, 0x2223], [0, 0], [0x2222, 0x1111]] {
        let r = Response {
            private_data: Some(bad),
            ..Response::by_cookie(g, ResponseCode::Success)
        };
        assert!(matches!(
            c.respond(h, &r),
            Err(CoreError::PrivateDataMismatch(_))
        ));
    }
    // Echo without the feature agreed is refused before the group is looked at.
    let r = Response {
        private_data: Some(data),
        ..Response::by_cookie(g, ResponseCode::Success)
    };
    assert!(matches!(c.respond(plain, &r), Err(CoreError::NotAgreed(_))));
    assert!(c.sink().sent.is_empty());
    assert!(c.group(g).is_some());
    // No echo at all: the core restores the request's private data for the device.
    let ans = c
        .respond(h, &by_grpid(Some(1), 6, ResponseCode::Success))
        .unwrap();
    assert_eq!(ans.sent.private_data, Some(data));
    assert_eq!(c.sink_mut().take()[0].1.private_data, Some(data));
}

#[test]
fn a_completion_leaves_other_prg_indexes_partials_held_and_flush_takes_only_its_pasid() {
    let mut c: Core = FaultCore::new(RecordingSink::default());
    let d = c.register(pasid_caps()).unwrap();
    let h = c.attach(d, None, BoundedHandler::new(8), ALL).unwrap();
    // Partials of PASID 1 (index 10) and PASID 2 (index 11) wait.
    for (i, r) in [
        req(Some(1), 10, false, 0x1000),
        req(Some(2), 11, false, 0x2000),
        req(Some(2), 11, false, 0x3000),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(c.report(d, &pr(r), i as u64).unwrap(), Reported::Held);
    }
    // PASID 2's group 12 completes: neither held chain is touched.
    let g12 = delivered(c.report(d, &pr(req(Some(2), 12, true, 0x4000)), 5).unwrap());
    assert_eq!(c.group(g12).unwrap().requests, 1);
    assert_eq!(c.held_partials(d).unwrap(), 3);
    // Flushing PASID 1 drops only its partial; PASID 2's group 11 still completes whole.
    assert_eq!(c.flush_pasid(d, 1).unwrap(), 0);
    assert_eq!(c.held_partials(d).unwrap(), 2);
    let g11 = delivered(c.report(d, &pr(req(Some(2), 11, true, 0x5000)), 6).unwrap());
    assert_eq!(c.group(g11).unwrap().requests, 3);
    // Group 10's LAST_PAGE now forms a group of one: its partial was flushed, not merged.
    let g10 = delivered(c.report(d, &pr(req(Some(1), 10, true, 0x6000)), 7).unwrap());
    assert_eq!(c.group(g10).unwrap().requests, 1);
    assert_eq!(c.held_partials(d).unwrap(), 0);
    for g in [g12, g11, g10] {
        c.respond(h, &Response::by_cookie(g, ResponseCode::Success))
            .unwrap();
    }
    assert_eq!(c.sink_mut().take().len(), 3);
    check_identities(c.counters(d).unwrap(), 0);
}

#[test]
fn every_cookie_bit_pattern_is_refused_without_a_response() {
    let mut c: Core = FaultCore::new(RecordingSink::default());
    let d = c.register(PriCaps::default()).unwrap();
    let h = c.attach(d, None, BoundedHandler::new(8), ALL).unwrap();
    let g = delivered(c.report(d, &pr(req(None, 1, true, 0)), 0).unwrap());
    for raw in [0, 1, u32::MAX, g.raw() ^ 1, g.raw().wrapping_add(1 << 16)] {
        if raw == g.raw() {
            continue;
        }
        assert!(c
            .respond(
                h,
                &Response::by_cookie(Cookie::from_raw(raw), ResponseCode::Success)
            )
            .is_err());
    }
    for code in [3, 4, u32::MAX] {
        let r = Response {
            code,
            ..Response::by_cookie(g, ResponseCode::Success)
        };
        assert!(matches!(c.respond(h, &r), Err(CoreError::UnknownCode(_))));
    }
    assert!(c.sink().sent.is_empty());
    c.respond(h, &Response::by_cookie(g, ResponseCode::Success))
        .unwrap();
    assert!(matches!(
        c.respond(h, &Response::by_cookie(g, ResponseCode::Success)),
        Err(CoreError::AlreadyAnswered(_))
    ));
    assert_eq!(c.sink_mut().take().len(), 1);
}
