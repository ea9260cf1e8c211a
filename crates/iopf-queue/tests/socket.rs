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
    assert_eq!(e.errno(), libc::ETIMEDOUT, "{e}");
    assert!(
        matches!(&e, QueueError::PeerSilent { peer, .. } if peer.contains("pid")),
        "the error names the peer: {e}"
    );
    // The next consumer is served.
    let p2 = path.clone();
    let t = std::thread::spawn(move || connect(&p2, cookie_choice).map(|_| ()));
    listener.accept().unwrap();
    t.join().unwrap().unwrap();
}

fn raw_seqpacket() -> std::os::fd::OwnedFd {
    rustix::net::socket(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        None,
    )
    .expect("socket")
}

/// Regression: handshakes were taken one at a time, so a peer that connected and said nothing
/// kept every later consumer waiting for the whole handshake timeout.
#[test]
fn a_silent_peer_does_not_delay_the_next_consumer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("q.sock");
    let config = ServeConfig {
        handshake_timeout: Duration::from_secs(3600),
        ..ServeConfig::default()
    };
    let listener = Listener::bind(&path, config).expect("bind");
    let silent = raw_seqpacket();
    rustix::net::connect(
        &silent,
        &rustix::net::SocketAddrUnix::new(&path).expect("addr"),
    )
    .expect("connect");
    let p2 = path.clone();
    let t = std::thread::spawn(move || connect(&p2, cookie_choice).map(|c| c.agreement().entries));
    // With the old one-at-a-time handshake this waited an hour on the silent peer.
    let producer = listener.accept().expect("the second peer is served");
    let entries = t.join().expect("join").expect("connected");
    assert_eq!(producer.agreement().entries, entries);
    // The silent one is still pending, not refused: nothing else to accept now.
    assert!(listener
        .accept_timeout(Some(Duration::ZERO))
        .expect("no error")
        .is_none());
}

/// Regression: `connect` to a listener that never sends an offer waited for ever.
#[test]
fn connect_to_a_listener_that_never_offers_times_out_naming_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mute.sock");
    let fd = raw_seqpacket();
    rustix::net::bind(&fd, &rustix::net::SocketAddrUnix::new(&path).expect("addr")).expect("bind");
    rustix::net::listen(&fd, 4).expect("listen");
    let e = iopf_queue::connect_timeout(&path, Duration::from_millis(100), cookie_choice)
        .expect_err("no offer comes");
    assert_eq!(e.errno(), libc::ETIMEDOUT, "{e}");
    assert!(e.to_string().contains("mute.sock"), "{e}");
}

/// Regression: attaching to a socket that is not iopf's said "Protocol wrong type for socket".
#[test]
fn connect_to_a_stream_socket_says_it_is_not_a_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("other.sock");
    let _other = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let e = connect(&path, cookie_choice).expect_err("not a queue");
    assert!(
        matches!(&e, QueueError::NotAQueue { errno, .. } if *errno == libc::EPROTOTYPE),
        "{e:?}"
    );
    assert!(e.to_string().contains("not an iopf fault queue"), "{e}");
    assert!(e.to_string().contains("other.sock"), "{e}");
}

/// Regression: a socket file left by a producer that died made the next `bind` fail with a bare
/// EADDRINUSE. A stale socket is replaced; a live listener and a file that is no socket are not.
#[test]
fn bind_replaces_a_stale_socket_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("q.sock");
    {
        let stale = raw_seqpacket();
        rustix::net::bind(
            &stale,
            &rustix::net::SocketAddrUnix::new(&path).expect("addr"),
        )
        .expect("bind");
    } // closed: the file stays, nobody listens
    assert!(path.exists());
    let live = Listener::bind(&path, ServeConfig::default()).expect("the stale socket is replaced");
    let e = Listener::bind(&path, ServeConfig::default()).expect_err("a live listener is there");
    assert_eq!(e.errno(), libc::EADDRINUSE, "{e}");
    assert!(e.to_string().contains("live listener"), "{e}");
    drop(live);
    let file = dir.path().join("plain");
    std::fs::write(&file, b"keep me").expect("write");
    let e = Listener::bind(&file, ServeConfig::default()).expect_err("not a socket");
    assert_eq!(e.errno(), libc::EEXIST, "{e}");
    assert_eq!(std::fs::read(&file).expect("read"), b"keep me");
}

/// Regression: one byte written to the socket after the handshake kept it readable, so every
/// wait of the producer returned at once and it spun a core (calling `membarrier` each time).
/// Now the consumer is dropped as gone, with a message that names it, and the producer sleeps.
#[test]
fn a_consumer_that_writes_to_the_socket_is_dropped_and_costs_no_spin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("q.sock");
    let listener = Listener::bind(&path, ServeConfig::default()).expect("bind");
    let p2 = path.clone();
    let t = std::thread::spawn(move || connect(&p2, cookie_choice).expect("connect"));
    let mut producer = listener.accept().expect("accept");
    let consumer = t.join().expect("join");

    producer
        .push_group(&TaggedGroup {
            tag: 5,
            dev_id: 1,
            requests: &[req(1, None, true, 0x1000)],
        })
        .expect("push");
    let sock = consumer.producer_socket().expect("a socket consumer");
    rustix::io::write(sock, b"x").expect("write junk");
    assert!(producer
        .wait_responses(Some(Duration::from_secs(30)))
        .expect("wait"));
    assert!(
        producer.consumer_gone(),
        "a consumer that wrote junk is dropped"
    );
    let why = producer
        .consumer_misbehaviour()
        .expect("it says why")
        .to_string();
    assert!(
        why.contains("pid") && why.contains("after the handshake"),
        "{why}"
    );
    // Before the fix this returned `true` at once, for ever: the socket stayed readable.
    assert!(!producer
        .wait_responses(Some(Duration::from_millis(50)))
        .expect("wait"));
    let mut answers = Vec::new();
    producer.close(&mut answers);
    assert_eq!(answers.len(), 1, "its group is answered");
    assert_eq!(answers[0].code, ResponseCode::Invalid);

    drop(consumer);
}

/// A consumer that half-closes its socket (`shutdown(SHUT_WR)`) after the handshake is still
/// alive: the producer drops it and says what it did (found by the issue-12 review: it was
/// dropped as if it had died, with no word why).
#[test]
fn a_consumer_that_half_closes_is_dropped_and_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("q.sock");
    let listener = Listener::bind(&path, ServeConfig::default()).expect("bind");
    let p2 = path.clone();
    let t = std::thread::spawn(move || connect(&p2, cookie_choice).expect("connect"));
    let producer = listener.accept().expect("accept");
    let consumer = t.join().expect("consumer thread");
    let sock = consumer.producer_socket().expect("a socket consumer");
    // Synchronous on a UNIX socket: the producer's side is shut for reading when this returns.
    rustix::net::shutdown(sock, rustix::net::Shutdown::Write).expect("shutdown");
    assert!(producer.consumer_gone(), "dropped");
    let why = producer
        .consumer_misbehaviour()
        .map(|e| (e.errno(), e.to_string()));
    assert!(
        matches!(&why, Some((e, msg)) if *e == libc::EPROTO && msg.contains("shutdown(SHUT_WR)")),
        "{why:?}"
    );
}

/// A flood of connections that never speak holds at most `MAX_PENDING_HANDSHAKES` descriptors
/// and handshakes of the listener (the rest wait in the kernel's backlog or are refused by it),
/// and `accept_timeout` returns at its timeout meanwhile (found by the issue-12 review: no
/// limit, and the timeout was not looked at after a new connection).
#[test]
fn a_flood_of_silent_connections_takes_a_bounded_number_of_handshakes() {
    use iopf_queue::socket::MAX_PENDING_HANDSHAKES;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("q.sock");
    let listener = Listener::bind(&path, ServeConfig::default()).expect("bind");
    let addr = rustix::net::SocketAddrUnix::new(&path).expect("address");
    let mut clients = Vec::new();
    for _round in 0..3 {
        for _ in 0..60 {
            let fd = rustix::net::socket_with(
                rustix::net::AddressFamily::UNIX,
                rustix::net::SocketType::SEQPACKET,
                rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC,
                None,
            )
            .expect("socket");
            // A full backlog refuses (EAGAIN): that client is simply not in the flood.
            if rustix::net::connect(&fd, &addr).is_ok() {
                clients.push(fd);
            }
        }
        let got = listener
            .accept_timeout(Some(Duration::from_millis(20)))
            .expect("silent peers are not errors before their handshake timeout");
        assert!(got.is_none(), "nobody asked for a queue");
    }
    assert!(
        clients.len() > MAX_PENDING_HANDSHAKES,
        "{} connected",
        clients.len()
    );
    let mut buf = [0u8; 512];
    let offered = clients
        .iter()
        .filter(|c| {
            rustix::net::recv(c, &mut buf, rustix::net::RecvFlags::DONTWAIT)
                .is_ok_and(|(n, _)| n > 0)
        })
        .count();
    assert!(
        offered <= MAX_PENDING_HANDSHAKES,
        "{offered} handshakes under way of {} connections",
        clients.len()
    );
    assert!(offered > 0, "the listener took none at all");
}

/// `sun_path` holds 107 bytes and a NUL: a path the kernel binds can be served (found by the
/// issue-12 review: the staging name `<path>.<pid>.binding` pushed a 100-byte path past it).
#[test]
fn a_socket_path_of_100_bytes_can_be_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().as_os_str().len() + 1;
    let path = dir.path().join("q".repeat(100 - base));
    assert_eq!(path.as_os_str().len(), 100);
    let listener = Listener::bind(&path, ServeConfig::default()).expect("a 100-byte path");
    let p2 = path.clone();
    let t = std::thread::spawn(move || connect(&p2, cookie_choice).map(|_| ()));
    listener.accept().expect("accept");
    t.join().expect("consumer thread").expect("connect");
}

/// Two listeners racing for one path: exactly one gets it, the other is told a listener is
/// there, and the winner's socket stays (found by the issue-12 review: the rename replaced
/// whatever was there, so both succeeded, the second silently taking the first's path).
#[test]
fn two_listeners_racing_for_one_path_never_both_succeed() {
    for trial in 0..40 {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q.sock");
        let go = std::sync::Arc::new(std::sync::Barrier::new(2));
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let (path, go) = (path.clone(), go.clone());
                std::thread::spawn(move || {
                    go.wait();
                    Listener::bind(&path, ServeConfig::default())
                })
            })
            .collect();
        let results: Vec<_> = racers
            .into_iter()
            .map(|t| t.join().expect("racer"))
            .collect();
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "trial {trial}: {results:?}");
        let lost = results
            .iter()
            .find_map(|r| r.as_ref().err())
            .expect("a loser");
        assert_eq!(lost.errno(), libc::EADDRINUSE, "trial {trial}: {lost}");
        // The winner still serves at the path.
        let p2 = path.clone();
        let t = std::thread::spawn(move || connect(&p2, cookie_choice).map(|_| ()));
        let winner = results
            .iter()
            .find_map(|r| r.as_ref().ok())
            .expect("a winner");
        winner.accept().expect("accept");
        t.join().expect("consumer").expect("connect");
    }
}

/// Regression (review of the C API): connect() on a listener whose backlog is full blocks for
/// as long as the listener does not accept; `connect_timeout` waited with it, past its
/// timeout. Now the connect is non-blocking and retried until the timeout.
#[test]
fn connect_to_a_listener_with_a_full_backlog_keeps_its_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("full.sock");
    let listener = raw_seqpacket();
    let addr = rustix::net::SocketAddrUnix::new(&path).expect("address");
    rustix::net::bind(&listener, &addr).expect("bind");
    rustix::net::listen(&listener, 0).expect("listen");
    // Fill the backlog (it never accepts).
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let c = rustix::net::socket_with(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::NONBLOCK,
            None,
        )
        .expect("socket");
        let _ = rustix::net::connect(&c, &addr);
        fillers.push(c);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.clone();
    std::thread::spawn(move || {
        let r = iopf_queue::connect_timeout(&p, Duration::from_millis(200), cookie_choice);
        let _ = tx.send(r.map(|_| ()));
    });
    // Not a timing threshold: a generous bound that only a hang exceeds.
    let r = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("connect_timeout returned (it hung before the fix)");
    match r {
        Err(QueueError::PeerSilent { .. }) => {}
        other => panic!("want PeerSilent (ETIMEDOUT), got {other:?}"),
    }
    drop(fillers);
}
