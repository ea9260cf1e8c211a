//! Event loops and threads: every end's descriptor says when it has work (after arming), a
//! consumer waits for response room instead of spinning, and a link's wait holds no lock the
//! fault path needs.

mod common;

use std::os::fd::AsFd;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::{caps, cookie_request, req};
use iopf_abi::{Fault, FaultConsumer, IommufdResponse, PgFault, ResponseCode};
use iopf_core::testing::RecordingSink;
use iopf_core::FaultCore;
use iopf_queue::{channel, CoreLink, Offer, ProducerConfig, Readiness, TaggedGroup};
use rustix::event::{PollFd, PollFlags};

/// Whether `fd` polls readable within a minute (a lost wake-up shows as `false`; a minute is a
/// failure detector, not a speed claim).
fn readable(fd: impl AsFd) -> bool {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let ts = rustix::event::Timespec {
        tv_sec: 60,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&ts)), Ok(n) if n > 0)
}

/// Whether `fd` polls readable right now.
fn readable_now(fd: impl AsFd) -> bool {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let ts = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&ts)), Ok(n) if n > 0)
}

fn blank() -> PgFault {
    PgFault::from_bytes(&[0; 40]).expect("a zero record decodes")
}

#[test]
fn an_armed_consumer_descriptor_turns_readable_when_a_record_is_published() {
    let (mut p, mut c) = channel(
        &Offer::current(),
        &cookie_request(8),
        ProducerConfig::default(),
    )
    .expect("channel");
    assert_eq!(c.arm(Readiness::FAULTS).expect("arm"), Readiness::empty());
    assert!(!readable_now(&c), "nothing published yet");
    let t = std::thread::spawn(move || {
        p.push_group(&TaggedGroup {
            tag: 1,
            dev_id: 1,
            requests: &[req(1, None, true, 0x1000)],
        })
        .expect("push");
        p
    });
    assert!(readable(&c), "the producer rang an armed consumer");
    assert!(c.ready().contains(Readiness::FAULTS));
    let mut out = [blank(); 4];
    assert_eq!(c.read_faults(&mut out).expect("read"), 1);
    let mut p = t.join().expect("join");
    // Arming again resets the descriptor: it does not stay readable on the old ring.
    assert_eq!(c.arm(Readiness::FAULTS).expect("arm"), Readiness::empty());
    assert!(!readable_now(&c));
    // The producer side: armed for responses, readable once the consumer answers.
    assert_eq!(
        p.arm(Readiness::RESPONSES).expect("arm"),
        Readiness::empty()
    );
    c.respond(&[IommufdResponse {
        cookie: out[0].cookie,
        code: ResponseCode::Success,
    }])
    .expect("respond");
    assert!(readable(&p));
    assert!(p.ready().contains(Readiness::RESPONSES));
    let mut answers = Vec::new();
    p.drain_responses(&mut answers);
    assert_eq!(answers.len(), 1);
    // The consumer goes: the producer's descriptor says so.
    assert_eq!(
        p.arm(Readiness::RESPONSES).expect("arm"),
        Readiness::empty()
    );
    drop(c);
    assert!(readable(&p));
    assert!(p.ready().contains(Readiness::PEER_GONE));
}

/// Regression: a full response ring left `respond` returning a partial count, and callers
/// busy-looped; now the consumer sleeps until the producer judges responses and frees slots.
#[test]
fn a_consumer_waits_for_response_room_instead_of_spinning() {
    // A two-slot response ring, and responses sent one per slot (cookie responses are packed
    // per call, so one call each).
    let (mut p, mut c) = channel(
        &Offer::current(),
        &cookie_request(2),
        ProducerConfig::default(),
    )
    .expect("channel");
    let mut cookies = Vec::new();
    for g in 0..2u32 {
        p.push_group(&TaggedGroup {
            tag: u64::from(g),
            dev_id: 1,
            requests: &[req(g, None, true, 0x1000)],
        })
        .expect("push");
        let mut out = [blank(); 2];
        assert_eq!(c.read_faults(&mut out).expect("read"), 1);
        cookies.push(out[0].cookie);
    }
    let answer = |cookie| IommufdResponse {
        cookie,
        code: ResponseCode::Success,
    };
    assert_eq!(c.respond(&[answer(cookies[0])]).expect("respond"), 1);
    assert_eq!(c.respond(&[answer(cookies[1])]).expect("respond"), 1);
    // The ring is full of unjudged responses.
    assert!(!c.ready().contains(Readiness::RESPONSE_ROOM));
    assert_eq!(
        c.arm(Readiness::RESPONSE_ROOM).expect("arm"),
        Readiness::empty()
    );
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let mut answers = Vec::new();
        // Judges once the consumer has gone to sleep on room.
        rx.recv().expect("go");
        p.drain_responses(&mut answers);
        (p, answers.len())
    });
    tx.send(()).expect("send");
    assert!(
        readable(&c),
        "the producer rang a consumer waiting for room"
    );
    assert!(c.ready().contains(Readiness::RESPONSE_ROOM));
    let (_p, judged) = t.join().expect("join");
    assert_eq!(judged, 2);
    // The blocking form says the same.
    let got = c
        .wait_for(Readiness::RESPONSE_ROOM, Some(Duration::from_secs(60)))
        .expect("wait");
    assert!(got.contains(Readiness::RESPONSE_ROOM));
}

/// Regression: `CoreLink::wait` held the link's lock for the whole wait, and the fault path
/// takes that lock: with one thread in `wait(None)`, `core.report` on another blocked until
/// the wait ended, and a consumer waiting for that fault never answered (a deadlock). Here a
/// pump thread waits without limit while a reporter thread reports every group and a consumer
/// answers them; the run must finish (the channel's minute is a deadlock detector only).
#[test]
fn reporting_and_pumping_on_different_threads_never_block_each_other() {
    const GROUPS: u32 = 200;
    let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    let dev = core.register(caps(64)).expect("register");
    let (producer, mut consumer) = channel(
        &Offer::current(),
        &cookie_request(64),
        ProducerConfig::default(),
    )
    .expect("channel");
    let mut link = CoreLink::attach(&mut core, dev, None, producer).expect("attach");
    let core = Arc::new(Mutex::new(core));
    let (done_tx, done_rx) = mpsc::channel();

    let c2 = core.clone();
    let pump = std::thread::spawn(move || {
        let mut answered = 0;
        while answered < GROUPS as usize {
            // Without limit, holding no lock: the reporter must get through meanwhile.
            link.wait(None).expect("wait");
            let mut core = c2.lock().expect("core lock");
            answered += link.pump(&mut core).answered;
        }
        answered
    });
    let consumer_thread = std::thread::spawn(move || {
        let mut answered = 0;
        let mut out = [blank(); 16];
        while answered < GROUPS {
            consumer.wait(None).expect("wait");
            let n = consumer.read_faults(&mut out).expect("read");
            let answers: Vec<_> = out[..n]
                .iter()
                .map(|f| IommufdResponse {
                    cookie: f.cookie,
                    code: ResponseCode::Success,
                })
                .collect();
            let mut sent = 0;
            while sent < answers.len() {
                sent += consumer.respond(&answers[sent..]).expect("respond");
                if sent < answers.len() {
                    consumer
                        .wait_for(Readiness::RESPONSE_ROOM, None)
                        .expect("wait for room");
                }
            }
            answered += n as u32;
        }
        consumer
    });
    let c3 = core.clone();
    let reporter = std::thread::spawn(move || {
        for g in 0..GROUPS {
            // Stays within the device's allocation: waits for answers to come back.
            loop {
                let mut core = c3.lock().expect("core lock");
                if core.outstanding(dev).expect("device") < 32 {
                    core.report(
                        dev,
                        &Fault::PageRequest(req(g % 512, None, true, 0x1000)),
                        0,
                    )
                    .expect("report");
                    break;
                }
                drop(core);
                std::thread::yield_now();
            }
        }
    });
    std::thread::spawn(move || {
        reporter.join().expect("reporter");
        let answered = pump.join().expect("pump");
        let _consumer = consumer_thread.join().expect("consumer");
        let _ = done_tx.send(answered);
    });
    let answered = done_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("deadlock: reporting and pumping blocked each other");
    assert_eq!(answered, GROUPS as usize);
    let core = core.lock().expect("core lock");
    assert_eq!(core.sink().sent.len(), GROUPS as usize);
    assert!(core
        .sink()
        .sent
        .iter()
        .all(|(_, r)| r.code == ResponseCode::Success));
}
