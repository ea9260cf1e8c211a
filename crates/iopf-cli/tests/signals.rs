//! SIGINT and SIGTERM during `iopf run` and `iopf serve`: the program stops issuing, drains,
//! answers what is still held INVALID, prints its report marked partial with a ledger that lost
//! nothing, removes its socket, and exits 130 or 143.
//!
//! No test sleeps a fixed time: each waits for the line the program prints once it is running
//! ("iopf run: running ...", "iopf serve: listening on ...", a consumer's first fault), then
//! signals it.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Instant;

use rustix::process::Signal;

fn iopf() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iopf"))
}

/// Two minutes of work: only a signal ends it in a test's time. Five percent of the pages are
/// unbacked (INVALID); nothing answers FAILURE.
const LONG: &str = r#"
name = "long"
duration_ms = 120000
[resolver]
invalid_share = 0.05
[[devices]]
count = 2
pasids = 2
opra = 32
workload = { pattern = "sequential", region_pages = 100000000, group_pages = 2 }
"#;

/// A child with its stdout read to the end on another thread (a report may not fit a pipe).
struct Running {
    child: Child,
    stdout: JoinHandle<String>,
    stderr: BufReader<ChildStderr>,
    /// What stderr said so far.
    said: String,
}

impl Running {
    fn spawn(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            out.read_to_string(&mut s).unwrap();
            s
        });
        let stderr = BufReader::new(child.stderr.take().unwrap());
        Running {
            child,
            stdout,
            stderr,
            said: String::new(),
        }
    }

    /// Reads stderr until a line contains `what`.
    fn wait_for(&mut self, what: &str) {
        loop {
            let mut line = String::new();
            let n = self.stderr.read_line(&mut line).unwrap();
            assert!(n > 0, "stderr ended before {what:?}: {}", self.said);
            self.said.push_str(&line);
            if line.contains(what) {
                return;
            }
        }
    }

    fn signal(&self, signal: Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Waits for the exit: (status code, stdout, all of stderr).
    fn finish(mut self) -> (Option<i32>, String, String) {
        let mut rest = String::new();
        self.stderr.read_to_string(&mut rest).unwrap();
        self.said.push_str(&rest);
        let status = self.child.wait().unwrap();
        (status.code(), self.stdout.join().unwrap(), self.said)
    }
}

fn scenario(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let p = dir.path().join("long.toml");
    std::fs::write(&p, LONG).unwrap();
    p
}

/// The checks every partial run report passes: nothing lost, nothing FAILURE.
fn assert_partial_and_whole(r: &serde_json::Value, signal: &str) {
    assert_eq!(r["schema_version"], 1);
    assert_eq!(r["partial"], true, "{r}");
    assert_eq!(r["interrupted_by"], signal);
    let l = &r["ledger"];
    assert_eq!(l["ok"], true, "{l}");
    let groups = r["totals"]["groups"].as_u64().unwrap();
    assert!(groups > 0, "the devices were running when the signal came");
    assert_eq!(l["groups_sent"].as_u64(), Some(groups));
    assert_eq!(
        l["answered"].as_u64(),
        Some(groups),
        "every group accounted for"
    );
    assert_eq!(
        l["success"].as_u64().unwrap() + l["invalid"].as_u64().unwrap(),
        groups
    );
    assert_eq!(l["failure"], 0, "a stop never answers FAILURE");
    assert_eq!(r["totals"]["failure"], 0);
    let issue = r["issue_s"].as_f64().unwrap();
    assert!(issue < 120.0, "the devices stopped starting work early");
}

fn run_interrupted(signal: Signal, name: &str, split: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = iopf();
    cmd.arg("run").arg(scenario(&dir)).arg("--json");
    if split {
        cmd.arg("--split");
    }
    let mut run = Running::spawn(&mut cmd);
    run.wait_for("iopf run: running");
    let at = Instant::now();
    run.signal(signal);
    let (code, stdout, stderr) = run.finish();
    let took = at.elapsed();
    let r: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {stdout:?}, stderr {stderr}"));
    assert_eq!(code, Some(128 + signal.as_raw()), "{stderr}");
    assert_partial_and_whole(&r, name);
    assert_eq!(r["split"], split);
    // Measured, not asserted.
    eprintln!(
        "run{} {name}: exit {code:?} {took:?} after the signal; {} groups, issued {:.3} s, wall {:.3} s, {} answered INVALID as the queue closed",
        if split { " --split" } else { "" },
        r["totals"]["groups"],
        r["issue_s"].as_f64().unwrap(),
        r["wall_s"].as_f64().unwrap(),
        r["queue"]["answered_consumer_gone"]
    );
}

#[test]
fn sigint_during_run_prints_a_partial_report_and_exits_130() {
    run_interrupted(Signal::INT, "SIGINT", false);
}

#[test]
fn sigterm_during_run_prints_a_partial_report_and_exits_143() {
    run_interrupted(Signal::TERM, "SIGTERM", false);
}

#[test]
fn sigint_during_a_split_run_drains_the_consumer_process_too() {
    run_interrupted(Signal::INT, "SIGINT", true);
}

#[test]
fn the_text_report_of_an_interrupted_run_says_partial() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = Running::spawn(iopf().arg("run").arg(scenario(&dir)));
    run.wait_for("iopf run: running");
    run.signal(Signal::TERM);
    let (code, stdout, stderr) = run.finish();
    assert_eq!(code, Some(143), "{stderr}");
    let first = stdout.lines().next().unwrap();
    assert!(
        first.starts_with("PARTIAL (interrupted by SIGTERM)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ledger: OK, every group answered exactly once"),
        "{stdout}"
    );
}

/// Serve, signalled while it waits for a consumer, removes its socket and exits 143.
#[test]
fn sigterm_while_serve_waits_for_a_consumer_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("q.sock");
    let mut serve = Running::spawn(iopf().arg("serve").arg(&sock));
    serve.wait_for("listening on");
    assert!(sock.exists());
    serve.signal(Signal::TERM);
    let (code, stdout, stderr) = serve.finish();
    assert_eq!(code, Some(143), "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("stopped by SIGTERM: 0 of 1 consumers served"),
        "{stderr}"
    );
    assert!(!sock.exists(), "the socket file is gone");
}

/// A consumer that holds every group and never answers: on SIGINT serve stops issuing, waits
/// `--drain-ms` for answers, answers the held groups INVALID, prints its partial summary,
/// removes its socket and exits 130; the consumer sees the producer go and leaves.
#[test]
fn sigint_while_serving_answers_held_groups_invalid_and_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("q.sock");
    let mut serve = Running::spawn(
        iopf()
            .arg("serve")
            .arg(&sock)
            .args(["--json", "--groups", "100000000", "--window", "16"])
            .args(["--drain-ms", "50"]),
    );
    serve.wait_for("listening on");
    let mut attach = iopf()
        .args(["attach", "--json", "--policy", "ignore"])
        .arg(&sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut faults = BufReader::new(attach.stdout.take().unwrap()).lines();
    let first = faults.next().unwrap().unwrap();
    assert!(first.contains("\"event\":\"fault\""), "{first}");
    let rest = std::thread::spawn(move || faults.map(|l| l.unwrap()).collect::<Vec<_>>());
    serve.signal(Signal::INT);
    let (code, stdout, stderr) = serve.finish();
    assert_eq!(code, Some(130), "{stderr}");
    assert!(!sock.exists(), "the socket file is gone");
    let s: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(s["schema_version"], 1);
    assert_eq!(s["partial"], true, "{s}");
    assert_eq!(s["interrupted_by"], "SIGINT");
    let groups = s["groups"].as_u64().unwrap();
    assert!(groups >= 1, "{s}");
    assert_eq!(
        s["responses_to_device"].as_u64(),
        Some(groups),
        "nothing lost: {s}"
    );
    assert_eq!(s["invalid"].as_u64(), Some(groups), "{s}");
    assert_eq!(s["failure"], 0, "{s}");
    assert_eq!(s["answered_invalid_at_stop"].as_u64(), Some(groups), "{s}");
    assert_eq!(s["answered_by_consumer"], 0);
    assert!(attach.wait().unwrap().success());
    let lines = rest.join().unwrap();
    let summary: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(summary["event"], "summary");
    eprintln!(
        "serve SIGINT with an ignoring consumer: {groups} groups issued, all answered INVALID at the stop"
    );
}

/// A consumer that answers: after SIGTERM every group in flight is answered by it, none is
/// made INVALID by the stop.
#[test]
fn sigterm_while_serving_a_live_consumer_lets_it_answer_what_is_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("q.sock");
    let mut serve = Running::spawn(
        iopf()
            .arg("serve")
            .arg(&sock)
            .args(["--json", "--groups", "100000000"])
            .args(["--drain-ms", "60000"]),
    );
    serve.wait_for("listening on");
    let mut attach = iopf()
        .args(["attach", "--json"])
        .arg(&sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(attach.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("\"event\":\"fault\""), "{first}");
    let rest = std::thread::spawn(move || lines.map(|l| l.unwrap()).collect::<Vec<_>>());
    serve.signal(Signal::TERM);
    let (code, stdout, stderr) = serve.finish();
    assert_eq!(code, Some(143), "{stderr}");
    assert!(!sock.exists());
    let s: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(s["partial"], true);
    let groups = s["groups"].as_u64().unwrap();
    assert_eq!(s["responses_to_device"].as_u64(), Some(groups), "{s}");
    assert_eq!(s["answered_by_consumer"].as_u64(), Some(groups), "{s}");
    assert_eq!(s["success"].as_u64(), Some(groups), "{s}");
    assert_eq!(s["answered_invalid_at_stop"], 0, "{s}");
    assert!(attach.wait().unwrap().success());
    let lines = rest.join().unwrap();
    let summary: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(summary["accepted"].as_u64(), Some(groups), "{summary}");
    eprintln!("serve SIGTERM with a live consumer: {groups} groups issued, every one answered SUCCESS by it");
}

/// A peer that connects and says nothing does not take the only consumer slot, nor delay the
/// consumer after it: handshakes run side by side, so that one is served at once (long before
/// the silent peer's 5 s handshake timeout), and serve ends with it.
#[test]
fn a_silent_peer_does_not_take_the_only_consumer_slot() {
    use rustix::net::{connect, socket, AddressFamily, SocketAddrUnix, SocketType};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("q.sock");
    let mut serve = Running::spawn(
        iopf()
            .arg("serve")
            .arg(&sock)
            .args(["--json", "--groups", "20"]),
    );
    serve.wait_for("listening on");
    let silent = socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
    connect(&silent, &SocketAddrUnix::new(Path::new(&sock)).unwrap()).unwrap();
    // Connected first, but the handshakes run side by side: this one does not wait for it.
    let attach = iopf()
        .args(["attach", "--json", "--quiet"])
        .arg(&sock)
        .output()
        .unwrap();
    assert!(
        attach.status.success(),
        "{}",
        String::from_utf8_lossy(&attach.stderr)
    );
    let (code, stdout, stderr) = serve.finish();
    drop(silent);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("refused a peer"), "{stderr}");
    let s: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(s["responses_to_device"], 20, "{s}");
    assert_eq!(s["answered_by_consumer"], 20, "{s}");
    assert!(!sock.exists());
}
