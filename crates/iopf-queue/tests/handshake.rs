//! The wake-up handshake is the process's choice: fenced by default, `membarrier` when asked
//! for; queue ends created under either (and a pair that chose differently, in two processes)
//! lose no wake-up; a wrong `IOPF_WAKE_HANDSHAKE` stops queue creation with an error that names
//! it.
//!
//! The choice is process-wide, so every test that sets it is one `#[test]` (tests of a binary run
//! on parallel threads); the environment is read once per process, so its tests run in a child
//! process (this binary again, with a filter and the variable set).

mod common;

use std::time::Duration;

use common::{cookie_request, req};
use iopf_abi::features::RecordFormats;
use iopf_abi::{FaultConsumer, Features, IommufdResponse, PgFault, ResponseCode};
use iopf_queue::{
    channel, connect, membarrier_calls, set_wake_handshake, wake_handshake, Consumer, Listener,
    Offer, Producer, ProducerConfig, QueueError, Request, ServeConfig, TaggedGroup, WakeHandshake,
};

const ROUNDS: u64 = 40;
/// A minute: a failure detector for a lost wake-up, not a speed claim.
const LOST: Duration = Duration::from_secs(60);

fn blank() -> PgFault {
    PgFault::from_bytes(&[0; 40]).expect("a zero record decodes")
}

/// The consumer's half of [`exchange`]: answers `ROUNDS` groups one at a time, each after a
/// wait that must not time out.
fn answer_all(c: &mut Consumer) {
    let mut faults = [blank(); 4];
    for round in 0..ROUNDS {
        assert!(
            c.wait(Some(LOST)).expect("wait"),
            "round {round}: wake-up lost"
        );
        let n = c.read_faults(&mut faults).expect("read");
        assert_eq!(n, 1, "round {round}");
        let sent = c
            .respond(&[IommufdResponse {
                cookie: faults[0].cookie,
                code: ResponseCode::Success,
            }])
            .expect("respond");
        assert_eq!(sent, 1);
    }
}

/// The producer's half: `ROUNDS` groups one at a time, pausing long enough for the consumer to
/// go to sleep every other round (so that both the spin and the sleep are taken), waiting for
/// each answer.
fn send_all(p: &mut Producer) {
    let mut answers = Vec::new();
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            std::thread::sleep(Duration::from_millis(3));
        }
        p.push_group(&TaggedGroup {
            tag: round,
            dev_id: 1,
            requests: &[req(round as u32 & 0x1ff, None, true, 0x1000)],
        })
        .expect("push");
        answers.clear();
        while answers.is_empty() {
            assert!(
                p.wait_responses(Some(LOST)).expect("wait"),
                "round {round}: the answer's wake-up was lost"
            );
            p.drain_responses(&mut answers);
        }
        assert_eq!(
            (answers[0].tag, answers[0].code),
            (round, ResponseCode::Success)
        );
    }
}

/// One in-process pair created under the process's current choice; returns the barriers issued.
fn exchange() -> u64 {
    let before = membarrier_calls();
    let (mut p, mut c) = channel(
        &Offer::current(),
        &cookie_request(8),
        ProducerConfig::default(),
    )
    .expect("channel");
    let t = std::thread::spawn(move || answer_all(&mut c));
    send_all(&mut p);
    t.join().expect("consumer thread");
    membarrier_calls() - before
}

#[test]
fn fenced_is_the_default_and_issues_no_barrier_and_membarrier_issues_them_when_chosen() {
    if std::env::var_os("IOPF_HANDSHAKE_TEST_CHILD").is_some() {
        return;
    }
    assert_eq!(
        wake_handshake().expect("no environment choice in the test run"),
        WakeHandshake::Fenced,
        "the default (is IOPF_WAKE_HANDSHAKE set?)"
    );
    assert_eq!(exchange(), 0, "the fenced handshake issued a barrier");
    match set_wake_handshake(WakeHandshake::Membarrier) {
        Ok(()) => {
            assert_eq!(wake_handshake().expect("chosen"), WakeHandshake::Membarrier);
            // Every other round the consumer sleeps, and calls `membarrier` before it does.
            let barriers = exchange();
            assert!(
                barriers >= ROUNDS / 2,
                "{barriers} barriers for {} sleeps",
                ROUNDS / 2
            );
        }
        Err(e) => {
            // A kernel without `membarrier` or a seccomp policy: the refusal names the call,
            // and the choice stays fenced.
            assert!(e.to_string().contains("membarrier"), "{e}");
            assert_eq!(wake_handshake().expect("unchanged"), WakeHandshake::Fenced);
        }
    }
    set_wake_handshake(WakeHandshake::Fenced).expect("fenced is always available");
    assert_eq!(exchange(), 0, "back to fenced: no barrier");
}

/// Runs this test binary as a child: `test` only, with `env` set; returns its exit status
/// and its output.
fn child(test: &str, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("own path"));
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("IOPF_HANDSHAKE_TEST_CHILD", "1")
        .env_remove("IOPF_WAKE_HANDSHAKE")
        .env_remove("IOPF_NO_MEMBARRIER");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the child");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Child: with a wrong `IOPF_WAKE_HANDSHAKE`, queue ends are not created, and the error names
/// the variable and the value.
#[test]
fn child_refuses_a_wrong_environment_choice() {
    let Ok(value) = std::env::var("IOPF_WAKE_HANDSHAKE") else {
        return;
    };
    if std::env::var_os("IOPF_HANDSHAKE_TEST_CHILD").is_none() {
        return;
    }
    let err = channel(
        &Offer::current(),
        &cookie_request(8),
        ProducerConfig::default(),
    )
    .expect_err("a wrong handshake in the environment");
    assert!(matches!(err, QueueError::BadSetting { .. }), "{err:?}");
    assert_eq!(err.errno(), libc::EINVAL);
    let msg = err.to_string();
    assert!(
        msg.contains("IOPF_WAKE_HANDSHAKE") && msg.contains(&value),
        "{msg}"
    );
    // An explicit choice overrides the environment.
    set_wake_handshake(WakeHandshake::Fenced).expect("fenced");
    channel(
        &Offer::current(),
        &cookie_request(8),
        ProducerConfig::default(),
    )
    .expect("the program's own choice is used");
    println!("refused: {msg}");
}

#[test]
fn a_wrong_environment_choice_is_refused_with_its_name() {
    if std::env::var_os("IOPF_HANDSHAKE_TEST_CHILD").is_some() {
        return;
    }
    let (ok, out) = child(
        "child_refuses_a_wrong_environment_choice",
        &[("IOPF_WAKE_HANDSHAKE", "membarier")],
    );
    assert!(ok && out.contains("refused: "), "{out}");
    // `IOPF_NO_MEMBARRIER` forbids what the environment asks for, with the reason.
    let (ok, out) = child(
        "child_refuses_a_wrong_environment_choice",
        &[
            ("IOPF_WAKE_HANDSHAKE", "membarrier"),
            ("IOPF_NO_MEMBARRIER", "1"),
        ],
    );
    assert!(ok && out.contains("IOPF_NO_MEMBARRIER"), "{out}");
}

fn cookie_choice(o: &Offer) -> Request {
    Request::best_for(o, RecordFormats::HWPT_PGFAULT, Features::COOKIE_RESPONSE)
        .expect("the offer has cookie responses")
}

/// Child: a consumer under whatever the environment chose, connected to the parent's producer.
#[test]
fn child_consumer_under_the_environment_choice() {
    let Ok(path) = std::env::var("IOPF_HANDSHAKE_TEST_SOCKET") else {
        return;
    };
    let mut c = connect(&path, cookie_choice).expect("connect");
    answer_all(&mut c);
    println!("answered {ROUNDS}");
}

/// Child: a producer under whatever the environment chose, serving a grandchild consumer that
/// chose `IOPF_HANDSHAKE_TEST_THEIRS`.
#[test]
fn child_producer_under_the_environment_choice() {
    let Ok(theirs) = std::env::var("IOPF_HANDSHAKE_TEST_THEIRS") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("q.sock");
    let listener = Listener::bind(&path, ServeConfig::default()).expect("bind");
    let path_text = path.to_str().expect("a UTF-8 temporary path").to_owned();
    let consumer = std::thread::spawn(move || {
        child(
            "child_consumer_under_the_environment_choice",
            &[
                ("IOPF_WAKE_HANDSHAKE", &theirs),
                ("IOPF_HANDSHAKE_TEST_SOCKET", &path_text),
            ],
        )
    });
    // A consumer that cannot start (no `membarrier` here) never connects: watch it.
    let mut p = loop {
        if let Some(p) = listener
            .accept_timeout(Some(Duration::from_millis(100)))
            .expect("accept")
        {
            break p;
        }
        assert!(!consumer.is_finished(), "{:?}", consumer.join());
    };
    send_all(&mut p);
    let (ok, out) = consumer.join().expect("consumer thread");
    assert!(ok && out.contains(&format!("answered {ROUNDS}")), "{out}");
    println!("served {ROUNDS}");
}

#[test]
fn processes_that_chose_different_handshakes_lose_no_wake_up() {
    if std::env::var_os("IOPF_HANDSHAKE_TEST_CHILD").is_some() {
        return;
    }
    for ours in ["fenced", "membarrier"] {
        for theirs in ["fenced", "membarrier"] {
            let (ok, out) = child(
                "child_producer_under_the_environment_choice",
                &[
                    ("IOPF_WAKE_HANDSHAKE", ours),
                    ("IOPF_HANDSHAKE_TEST_THEIRS", theirs),
                ],
            );
            // Only a side that chose `membarrier` can fail so, on a kernel without it.
            if !ok && out.contains("MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED") {
                eprintln!(
                    "membarrier unavailable here: producer {ours}, consumer {theirs} skipped"
                );
                continue;
            }
            assert!(
                ok && out.contains(&format!("served {ROUNDS}")),
                "producer {ours}, consumer {theirs}: {out}"
            );
        }
    }
}
