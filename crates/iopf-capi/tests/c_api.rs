//! The C API's tests in C: each program in `tests/c/` is compiled with
//! `gcc -std=c11 -Wall -Wextra -Werror -pedantic` against `include/iopf.h` and this build's
//! `libiopf_capi.a`, and run under valgrind's memcheck, which must report no error and no
//! leak. `scripts/install-deps.sh` installs gcc and valgrind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use iopf_abi::{PageRequest, PageRequestFlags, Perm, ResponseCode};
use iopf_queue::{AnsweredBy, Listener, ServeConfig, TaggedGroup};

const NATIVE_LIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The static library cargo built with this test (beside the test binary's `deps/`).
fn static_lib() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in <target>/<profile>/deps");
    let lib = profile_dir.join("libiopf_capi.a");
    assert!(
        lib.exists(),
        "{} is missing: cargo builds it with this crate's tests",
        lib.display()
    );
    lib
}

fn tool(name: &str) -> String {
    let found = Command::new(name).arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "{name} is needed by the C API's tests: scripts/install-deps.sh installs it"
    );
    name.to_string()
}

/// Compiles `tests/c/<name>.c` (and `extra` sources) into a program.
fn compile(name: &str, extra: &[&Path]) -> PathBuf {
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-tests");
    std::fs::create_dir_all(&out_dir).expect("the C tests' build directory");
    let exe = out_dir.join(name);
    let src = crate_dir().join("tests/c").join(format!("{name}.c"));
    let examples = crate_dir().join("../../examples/c");
    let out = Command::new(tool("gcc"))
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-g",
            "-O1",
        ])
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg("-I")
        .arg(crate_dir().join("tests/c"))
        .arg("-I")
        .arg(&examples)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .args(extra)
        .arg(static_lib())
        .args(NATIVE_LIBS)
        .output()
        .expect("gcc runs");
    assert!(
        out.status.success(),
        "gcc failed on {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Runs `exe` under memcheck; returns its output after checking it succeeded cleanly.
fn memcheck(exe: &Path, args: &[&str]) -> Output {
    let out = Command::new(tool("valgrind"))
        .args([
            "--tool=memcheck",
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect",
            "--show-leak-kinds=definite,indirect",
        ])
        .arg(exe)
        .args(args)
        .output()
        .expect("valgrind runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} under memcheck: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        exe.display(),
        out.status
    );
    assert!(
        stderr.contains("ERROR SUMMARY: 0 errors"),
        "memcheck reported errors:\n{stderr}"
    );
    out
}

fn vtd_guest() -> PathBuf {
    crate_dir().join("../../examples/c/vtd_guest.c")
}

#[test]
fn c_errors() {
    memcheck(&compile("errors", &[]), &[]);
}

#[test]
fn c_compat_queue() {
    memcheck(&compile("compat", &[]), &[]);
}

#[test]
fn c_vtd_bridge() {
    memcheck(&compile("vtd", &[&vtd_guest()]), &[]);
}

#[test]
fn c_smmuv3_and_amd_units() {
    memcheck(&compile("units", &[]), &[]);
}

fn request(grpid: u32, last: bool, addr: u64) -> PageRequest {
    let mut flags = PageRequestFlags::PASID_VALID;
    flags.set(PageRequestFlags::LAST_PAGE, last);
    PageRequest {
        flags,
        pasid: 3,
        grpid,
        perm: Perm::READ,
        addr,
        private_data: [0; 2],
    }
}

/// The producer is iopf-queue's, in this process; the consumer is the C program, in its own.
#[test]
fn c_shared_queue_consumer() {
    let exe = compile("shared", &[]);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("q.sock");
    // The consumer runs under valgrind: give its handshake time.
    let config = ServeConfig {
        handshake_timeout: Duration::from_secs(60),
        ..ServeConfig::default()
    };
    let listener = Listener::bind(&path, config).expect("bind");
    let arg = path.to_str().expect("a UTF-8 path").to_string();
    let consumer = std::thread::spawn(move || memcheck(&exe, &[&arg]));
    let mut producer = listener
        .accept_timeout(Some(Duration::from_secs(120)))
        .expect("accept")
        .expect("the C consumer connects");
    let groups: [&[PageRequest]; 3] = [
        &[request(1, true, 0x1000)],
        &[request(2, false, 0x2000), request(2, true, 0x3000)],
        &[request(3, true, 0x20_0000)],
    ];
    for (tag, requests) in groups.iter().enumerate() {
        producer
            .push_group(&TaggedGroup {
                tag: tag as u64,
                dev_id: 5,
                requests,
            })
            .expect("push");
    }
    let mut answers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while answers.len() < 3 && Instant::now() < deadline {
        producer
            .wait_responses(Some(Duration::from_millis(200)))
            .expect("wait");
        producer.drain_responses(&mut answers);
    }
    let mut got: Vec<_> = answers.iter().map(|a| (a.tag, a.code, a.by)).collect();
    got.sort_by_key(|a| a.0);
    assert_eq!(
        got,
        [
            (0, ResponseCode::Success, AnsweredBy::Consumer),
            (1, ResponseCode::Success, AnsweredBy::Consumer),
            (2, ResponseCode::Invalid, AnsweredBy::Consumer),
        ]
    );
    // The producer leaves; the consumer sees it go and exits cleanly.
    drop(producer);
    drop(listener);
    let out = consumer.join().expect("the consumer thread");
    assert!(String::from_utf8_lossy(&out.stdout).contains("shared: all checks passed"));
}
