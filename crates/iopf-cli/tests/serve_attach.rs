//! `iopf serve` and `iopf attach` as two processes, including a consumer killed mid-way.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn iopf() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iopf"))
}

fn serve(sock: &Path, extra: &[&str]) -> Child {
    let child = iopf()
        .arg("serve")
        .arg(sock)
        .arg("--json")
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the socket to appear.
    for _ in 0..500 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(sock.exists(), "iopf serve did not create its socket");
    child
}

/// Sends `signal` to `child`.
fn signal(child: &Child, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_child(child);
    rustix::process::kill_process(pid, signal).expect("the child is ours to signal");
}

fn summary(child: Child) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

#[test]
fn every_group_is_answered_by_the_attached_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("q.sock");
    let server = serve(
        &sock,
        &["--groups", "200", "--requests", "2", "--private-data"],
    );
    let out = iopf()
        .args(["attach", "--quiet", "--json", "--echo"])
        .arg(&sock)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let attach: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(attach["records"], 400);
    assert_eq!(attach["accepted"], 200);
    assert_eq!(attach["rejected"], 0);
    let s = summary(server);
    assert_eq!(s["responses_to_device"], 200);
    assert_eq!(s["answered_by_consumer"], 200);
    assert_eq!(s["private_data_at_device"], 200);
    assert!(s["features"].as_str().unwrap().contains("PRIV_DATA_ECHO"));
}

#[test]
fn a_killed_consumer_has_its_groups_answered_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("q.sock");
    let server = serve(&sock, &["--groups", "100", "--window", "16"]);
    let mut attach = iopf()
        .args(["attach", "--policy", "ignore", "--json"])
        .arg(&sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Once it has printed a fault record it holds groups; kill it without warning.
    let mut lines = BufReader::new(attach.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("\"event\":\"fault\""), "{first}");
    attach.kill().unwrap();
    attach.wait().unwrap();
    let s = summary(server);
    assert_eq!(s["consumer_gone"], true);
    assert_eq!(s["responses_to_device"], 100, "{s}");
    assert_eq!(s["answered_by_consumer"], 0);
    assert!(
        s["answered_invalid_consumer_gone"].as_u64().unwrap() >= 1,
        "{s}"
    );
    assert_eq!(s["invalid"], 100);
}

#[test]
fn an_old_consumer_is_refused_what_an_old_producer_lacks_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("q.sock");
    let server = serve(&sock, &["--groups", "5", "--offer", "v1"]);
    let out = iopf()
        .args(["attach", "--record", "hwpt"])
        .arg(&sock)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not offered") && err.contains("HWPT_PGFAULT"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(2), "a request refused is bad input");
    // The refused peer did not count as the one consumer: the server still waits for one.
    assert!(sock.exists());
    signal(&server, rustix::process::Signal::TERM);
    let out = server.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143));
    assert!(out.stdout.is_empty(), "nobody was served");
    assert!(!sock.exists(), "the socket is removed");
}

#[test]
fn unrecoverable_faults_reach_a_consumer_that_agreed_them_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("q.sock");
    let server = serve(
        &sock,
        &["--groups", "40", "--unrecoverable", "5", "--consumers", "2"],
    );
    // `iommu_fault` records (the default) carry unrecoverable faults: UNRECOVERABLE is agreed.
    let out = iopf()
        .args(["attach", "--json"])
        .arg(&sock)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let unrecov: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["event"] == "unrecoverable")
        .collect();
    assert_eq!(unrecov.len(), 5, "{text}");
    for u in &unrecov {
        assert_eq!(u["fault"]["reason"], "PERMISSION", "{u}");
        assert!(
            u["fault"]["addr"].as_str().unwrap().starts_with("0xdead"),
            "{u}"
        );
        assert_eq!(u["fault"]["pasid"], 1, "{u}");
    }
    // Spread among the page requests, not all before or after them.
    let first_fault = lines.iter().position(|l| l["event"] == "fault").unwrap();
    let last_fault = lines.iter().rposition(|l| l["event"] == "fault").unwrap();
    let positions: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l["event"] == "unrecoverable")
        .map(|(i, _)| i)
        .collect();
    assert!(positions.iter().any(|&i| i > first_fault && i < last_fault));

    // iommufd records have no unrecoverable form: that consumer is not told.
    let out = iopf()
        .args(["attach", "--json", "--record", "hwpt"])
        .arg(&sock)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("\"event\":\"unrecoverable\""), "{text}");

    let out = server.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let sums: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(sums.len(), 2, "{text}");
    for s in &sums {
        assert_eq!(s["responses_to_device"], 40, "{s}");
        assert_eq!(s["unrecoverable_reported"], 5, "{s}");
    }
    assert_eq!(sums[0]["unrecoverable_delivered"], 5, "{}", sums[0]);
    assert_eq!(sums[1]["unrecoverable_delivered"], 0, "{}", sums[1]);
    assert_eq!(sums[1]["unrecoverable_not_agreed"], 5, "{}", sums[1]);
}

#[test]
fn a_consumer_that_never_answers_is_bounded_by_the_age_limit() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("q.sock");
    let server = serve(
        &sock,
        &["--groups", "40", "--window", "16", "--age-limit-ms", "20"],
    );
    // Stays connected, answers nothing, leaves when the producer goes away.
    let attach = iopf()
        .args(["attach", "--policy", "ignore", "--quiet", "--json"])
        .arg(&sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = summary(server);
    assert_eq!(s["responses_to_device"], 40);
    assert_eq!(s["invalid"], 40);
    assert_eq!(s["answered_invalid_aged"], 40);
    assert_eq!(s["answered_by_consumer"], 0);
    assert_eq!(s["consumer_gone"], false);
    let out = attach.wait_with_output().unwrap();
    assert!(out.status.success());
}

/// A ring far smaller than the groups in flight: before, 197 of these 200 groups were answered
/// FAILURE (the ring was full, the core refused them); now they wait in the producer's backlog
/// and every one is answered by the consumer, SUCCESS.
#[test]
fn a_small_ring_holds_groups_back_instead_of_failing_them() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("q.sock");
    let server = serve(&sock, &["--groups", "200", "--requests", "4"]);
    let out = iopf()
        .args([
            "attach",
            "--quiet",
            "--json",
            "--entries",
            "8",
            "--record",
            "hwpt",
        ])
        .arg(&sock)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let attach: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(attach["accepted"], 200, "{attach}");
    assert_eq!(attach["lost"], 0, "{attach}");
    assert_eq!(attach["producer_losses"], serde_json::json!({}), "{attach}");
    let s = summary(server);
    assert_eq!(s["responses_to_device"], 200, "{s}");
    assert_eq!(
        (s["success"].as_u64(), s["failure"].as_u64()),
        (Some(200), Some(0)),
        "{s}"
    );
    assert_eq!(s["answered_by_consumer"], 200, "{s}");
    assert!(s["held_back"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["lost_by_reason"], serde_json::json!({}), "{s}");
}

/// A ring that could never hold one of the producer's groups is refused when the consumer
/// connects, in plain words, not at fault time.
#[test]
fn a_ring_too_small_for_the_largest_group_is_refused_at_negotiation() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("q.sock");
    let mut server = serve(&sock, &["--groups", "5", "--requests", "8"]);
    let out = iopf()
        .args(["attach", "--entries", "4", "--record", "hwpt"])
        .arg(&sock)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a ring of 4 entries cannot hold a group of 8 page requests"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(2));
    // It waits for a consumer it can serve; this test has none.
    signal(&server, rustix::process::Signal::INT);
    assert_eq!(server.wait().unwrap().code(), Some(130));
    assert!(!sock.exists());
}
