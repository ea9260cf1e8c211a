//! A `CoreLink` waiting (or armed) on one thread while another reports into the core: a group
//! held back after the wait began is not stranded (found by the issue-12 review: the wait's
//! snapshot said "nothing held", so nobody asked the consumer to ring when slots came back).

mod common;

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use common::{caps, req};
use iopf_abi::fault::{FaultReason, UnrecoverableFlags};
use iopf_abi::features::RecordFormats;
use iopf_abi::{Fault, Features, Perm, Unrecoverable};
use iopf_core::testing::RecordingSink;
use iopf_core::{FaultCore, Reported};
use iopf_queue::{channel, CoreLink, Offer, ProducerConfig, Readiness, Request};
use rustix::event::{PollFd, PollFlags};

fn unrec() -> Unrecoverable {
    Unrecoverable {
        reason: FaultReason::Permission,
        flags: UnrecoverableFlags::ADDR_VALID,
        pasid: 0,
        perm: Perm::WRITE,
        addr: 0x1000,
        fetch_addr: 0,
    }
}

fn setup() -> (
    FaultCore<RecordingSink>,
    iopf_core::DeviceId,
    CoreLink,
    iopf_queue::Consumer,
) {
    let want = Features::COOKIE_RESPONSE | Features::LOSS_RECORDS | Features::UNRECOVERABLE;
    let mut r =
        Request::best_for(&Offer::current(), RecordFormats::IOMMU_FAULT, want).expect("set-up");
    r.entries = 4;
    let (p, c) = channel(&Offer::current(), &r, ProducerConfig::default()).expect("set-up");
    let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    let dev = core.register(caps(4)).expect("set-up");
    let link = CoreLink::attach(&mut core, dev, None, p).expect("set-up");
    (core, dev, link, c)
}

/// Fill the ring with 4 unrecoverable records, then report one page-request group (held back).
fn fill_and_hold(core: &mut FaultCore<RecordingSink>, dev: iopf_core::DeviceId) {
    for i in 0..4 {
        core.report(dev, &Fault::Unrecoverable(unrec()), i)
            .expect("set-up");
    }
    let got = core
        .report(dev, &Fault::PageRequest(req(7, None, true, 0x2000)), 9)
        .expect("set-up");
    assert!(matches!(got, Reported::Delivered { .. }), "{got:?}");
}

/// `CoreLink::wait` on a pump thread, entered while the backlog is empty; a reporter thread then
/// holds a group back; the consumer frees the ring. The waiter must wake (FAULT_ROOM) so that a
/// pump delivers the group.
#[test]
fn a_link_wait_entered_with_no_backlog_wakes_when_held_back_group_gets_room() {
    let (mut core, dev, link, mut c) = setup();
    let link = std::sync::Arc::new(link);
    let l2 = link.clone();
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        // A minute: a failure detector for a stranded group, not a speed claim.
        let r = l2.wait(Some(Duration::from_secs(60))).expect("set-up");
        (r, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300)); // the waiter is asleep
    fill_and_hold(&mut core, dev);
    assert_eq!(link.with_producer(|p| p.backlog_requests()), 1);
    let mut ev = Vec::new();
    assert_eq!(c.pop_events(&mut ev, 16).expect("set-up"), 4); // slots go back (caught up)
    assert_eq!(
        link.with_producer(|p| p.free_slots()),
        4,
        "ring is empty again"
    );
    let (woke, took) = waiter.join().expect("set-up");
    assert!(
        woke && took < Duration::from_secs(60),
        "link.wait did not wake although its held-back group now fits: woke={woke} after {took:?}"
    );
}

/// Same with the event-loop protocol: `CoreLink::arm(RESPONSES | FAULT_ROOM)` armed while the
/// backlog is empty, then a group is held back and room frees: the descriptor must turn readable.
#[test]
fn an_armed_link_fd_turns_readable_when_a_group_held_back_after_arming_gets_room() {
    let (mut core, dev, link, mut c) = setup();
    let r = link
        .arm(Readiness::RESPONSES | Readiness::FAULT_ROOM)
        .expect("set-up");
    assert!(r.is_empty());
    fill_and_hold(&mut core, dev);
    let mut ev = Vec::new();
    assert_eq!(c.pop_events(&mut ev, 16).expect("set-up"), 4);
    assert!(link.ready().contains(Readiness::FAULT_ROOM), "work exists");
    let fd = link.as_fd();
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let ts = rustix::event::Timespec {
        tv_sec: 60,
        tv_nsec: 0,
    };
    let n = rustix::event::poll(&mut fds, Some(&ts)).expect("set-up");
    assert!(
        n > 0,
        "armed link fd never became readable: held-back group stranded"
    );
}
