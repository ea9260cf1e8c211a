//! Across processes: the UNIX socket, SCM_RIGHTS, the uid check, refusals, and a consumer
//! process that dies without closing anything.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::req;
use iopf_abi::features::RecordFormats;
use iopf_abi::{FaultConsumer, Features, IommufdResponse, PgFault, ResponseCode};
use iopf_queue::{connect, AnsweredBy, Listener, QueueError, Request, ServeConfig, TaggedGroup};

fn cookie_choice(o: &iopf_queue::Offer) -> Request {
    Request::best_for(
        o,
        RecordFormats::HWPT_PGFAULT,
        Features::COOKIE_RESPONSE | Features::LOSS_RECORDS,
    )
    .unwrap()
}

#[test]
fn a_consumer_connects_maps_the_region_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sock");
    let listener = Listener::bind(&path, ServeConfig::default()).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let p2 = path.clone();
    let consumer = std::thread::spawn(move || {
        let mut c = connect(&p2, cookie_choice).unwrap();
        let mut out = [PgFault::from_bytes(&[0; 40]).unwrap(); 16];
        let mut n = 0;
        while n == 0 {
            c.wait(Some(Duration::from_secs(10))).unwrap();
            n = c.read_faults(&mut out).unwrap();
        }
        let rs: Vec<_> = out[..n]
            .iter()
            .filter(|f| f.is_last())
            .map(|f| IommufdResponse {
                cookie: f.cookie,
                code: ResponseCode::Success,
            })
            .collect();
        c.respond(&rs).unwrap();
        (n, c)
    });
    let mut p = listener.accept().unwrap();
    assert!(p.agreement().cookie_responses());
    let two = [
        req(3, Some(9), false, 0x1000),
        req(3, Some(9), true, 0x2000),
    ];
    p.push_group(&TaggedGroup {
        tag: 42,
        dev_id: 5,
        requests: &two,
    })
    .unwrap();
    let mut answers = Vec::new();
    while answers.is_empty() {
        p.wait_responses(Some(Duration::from_secs(10))).unwrap();
        p.drain_responses(&mut answers);
    }
    assert_eq!(
        (answers[0].tag, answers[0].code, answers[0].by),
        (42, ResponseCode::Success, AnsweredBy::Consumer)
    );
    let (n, c) = consumer.join().unwrap();
    assert_eq!(n, 2);
    assert!(!p.consumer_gone());
    drop(c);
    assert!(p.consumer_gone());
    drop(listener);
    assert!(
        !path.exists(),
        "the socket file is removed with the listener"
    );
}

#[test]
fn a_peer_with_another_uid_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sock");
    let me = rustix::process::getuid().as_raw();
    let config = ServeConfig {
        allowed_uids: vec![me.wrapping_add(1)],
        ..ServeConfig::default()
    };
    let listener = Listener::bind(&path, config).unwrap();
    let p2 = path.clone();
    let consumer = std::thread::spawn(move || connect(&p2, cookie_choice));
    let e = listener.accept().unwrap_err();
    assert!(
        matches!(e, QueueError::PeerNotAllowed { uid } if uid == me),
        "{e}"
    );
    let e = consumer.join().unwrap().unwrap_err();
    assert_eq!(e.errno(), libc::EACCES, "{e}");
}

#[test]
fn a_request_outside_the_offer_is_refused_and_the_listener_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sock");
    // A producer that does not offer UNRECOVERABLE.
    let mut config = ServeConfig::default();
    config.offer.features.remove(Features::UNRECOVERABLE);
    let listener = Listener::bind(&path, config).unwrap();
    let p2 = path.clone();
    let consumer = std::thread::spawn(move || {
        let bad = connect(&p2, |o| {
            let mut r = cookie_choice(o);
            r.features |= Features::UNRECOVERABLE;
            r
        });
        let good = connect(&p2, cookie_choice);
        (bad, good.map(|_| ()))
    });
    let e = listener.accept().unwrap_err();
    assert!(matches!(e, QueueError::NotOffered(_)), "{e}");
    let _p = listener.accept().unwrap();
    let (bad, good) = consumer.join().unwrap();
    let bad = bad.unwrap_err();
    assert_eq!(bad.errno(), libc::EOPNOTSUPP, "{bad}");
    assert!(bad.to_string().contains("UNRECOVERABLE"), "{bad}");
    good.unwrap();
}

/// The child half of the next test: connects, reads one group, and dies without running any
/// destructor (no CLOSED flag, nothing answered). Does nothing unless run as that child.
#[test]
fn child_consumer_that_dies() {
    let Ok(path) = std::env::var("IOPF_QUEUE_TEST_CHILD_SOCKET") else {
        return;
    };
    let mut c = connect(&path, cookie_choice).unwrap();
    let mut out = [PgFault::from_bytes(&[0; 40]).unwrap(); 16];
    let mut n = 0;
    while n == 0 {
        c.wait(Some(Duration::from_secs(10))).unwrap();
        n = c.read_faults(&mut out).unwrap();
    }
    // Answer one group, then die holding the others.
    c.respond(&[IommufdResponse {
        cookie: out[0].cookie,
        code: ResponseCode::Success,
    }])
    .unwrap();
    std::process::abort();
}

#[test]
fn a_consumer_process_that_dies_has_its_groups_answered_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sock");
    let listener = Listener::bind(&path, ServeConfig::default()).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_consumer_that_dies",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("IOPF_QUEUE_TEST_CHILD_SOCKET", &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut p = listener.accept().unwrap();
    let groups: Vec<_> = (0..3u32).map(|g| [req(g, None, true, 0)]).collect();
    let gs: Vec<_> = groups
        .iter()
        .enumerate()
        .map(|(i, r)| TaggedGroup {
            tag: i as u64,
            dev_id: 0,
            requests: r,
        })
        .collect();
    let mut results = Vec::new();
    p.push_groups(&gs, &mut results);
    assert!(results.iter().all(Result::is_ok));
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child aborts");
    let mut answers = Vec::new();
    // The child's socket is closed by its death: the producer sees it.
    assert!(p.wait_responses(Some(Duration::from_secs(10))).unwrap());
    assert!(p.consumer_gone());
    p.close(&mut answers);
    answers.sort_by_key(|a| a.tag);
    let got: Vec<_> = answers.iter().map(|a| (a.tag, a.code, a.by)).collect();
    assert_eq!(
        got,
        vec![
            (0, ResponseCode::Success, AnsweredBy::Consumer),
            (1, ResponseCode::Invalid, AnsweredBy::ConsumerGone),
            (2, ResponseCode::Invalid, AnsweredBy::ConsumerGone),
        ]
    );
}

#[test]
fn a_silent_peer_cannot_hold_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sock");
    let config = ServeConfig {
        handshake_timeout: Duration::from_millis(100),
        ..ServeConfig::default()
    };
    let listener = Listener::bind(&path, config).unwrap();
    // Connects and never sends its request.
    let fd = rustix::net::socket(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        None,
    )
    .unwrap();
    rustix::net::connect(&fd, &rustix::net::SocketAddrUnix::new(&path).unwrap()).unwrap();
    let e = listener.accept().unwrap_err();
    assert_eq!(e.errno(), libc::EAGAIN, "{e}");
    // The next consumer is served.
    let p2 = path.clone();
    let t = std::thread::spawn(move || connect(&p2, cookie_choice).map(|_| ()));
    listener.accept().unwrap();
    t.join().unwrap().unwrap();
}
