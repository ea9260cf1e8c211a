//! The C API's tests in C: each program in `tests/c/` is compiled with
//! `gcc -std=c11 -Wall -Wextra -Werror -pedantic` against `include/iopf.h` and this build's
//! `libiopf_capi.a`, and run under valgrind's memcheck, which must report no error and no
//! leak. `scripts/install-deps.sh` installs gcc and valgrind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use iopf_abi::{PageRequest, PageRequestFlags, Perm, ResponseCode};
use iopf_queue::{Answer, AnsweredBy, Listener, ServeConfig, TaggedGroup};

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

/// Where cargo put this crate's libraries: beside the test binary's `deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary is in <target>/<profile>/deps")
        .to_path_buf()
}

/// Where this crate's C libraries are: `deps/`, where cargo builds them with this test
/// (always current), else the profile directory (`cargo build` copies them there, but
/// `cargo test` alone does not: a fresh checkout has none there, an older build a stale one).
fn lib_dir() -> PathBuf {
    let deps = profile_dir().join("deps");
    if deps.join("libiopf_capi.a").exists() {
        deps
    } else {
        profile_dir()
    }
}

/// The static library cargo built with this test.
fn static_lib() -> PathBuf {
    let lib = lib_dir().join("libiopf_capi.a");
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

/// Compiles `tests/c/<name>.c` (and `extra` sources) into a program linked with the static
/// library.
fn compile(name: &str, extra: &[&Path]) -> PathBuf {
    compile_with(name, extra, Link::Static)
}

/// Which of the two libraries a test program links.
#[derive(PartialEq)]
enum Link {
    Static,
    Shared,
}

fn compile_with(name: &str, extra: &[&Path], link: Link) -> PathBuf {
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-tests");
    std::fs::create_dir_all(&out_dir).expect("the C tests' build directory");
    let exe = out_dir.join(match link {
        Link::Static => name.to_string(),
        Link::Shared => format!("{name}-shared"),
    });
    let src = crate_dir().join("tests/c").join(format!("{name}.c"));
    let examples = crate_dir().join("../../examples/c");
    let mut gcc = Command::new(tool("gcc"));
    gcc.args([
        "-std=c11",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pedantic",
        "-g",
        "-O1",
        "-pthread",
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
    .args(extra);
    match link {
        Link::Static => gcc.arg(static_lib()).args(NATIVE_LIBS),
        Link::Shared => {
            let dir = lib_dir();
            gcc.arg("-L")
                .arg(&dir)
                .arg("-liopf_capi")
                .arg(format!("-Wl,-rpath,{}", dir.display()))
        }
    };
    let out = gcc.output().expect("gcc runs");
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
    under_valgrind("memcheck", exe, args)
}

/// Runs `exe` under valgrind's `tool` (memcheck, helgrind, drd); returns its output after
/// checking it succeeded and the tool found nothing.
fn under_valgrind(tool_name: &str, exe: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(tool("valgrind"));
    cmd.arg(format!("--tool={tool_name}"))
        .arg("--error-exitcode=99");
    if tool_name == "memcheck" {
        cmd.args([
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect",
            "--show-leak-kinds=definite,indirect",
        ]);
    }
    let out = cmd
        .arg(exe)
        .args(args)
        // cargo's own LD_LIBRARY_PATH names the profile directory, where an older `cargo
        // build` may have left a stale libiopf_capi.so that would win over the rpath.
        .env("LD_LIBRARY_PATH", lib_dir())
        .output()
        .expect("valgrind runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} under {tool_name}: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        exe.display(),
        out.status
    );
    assert!(
        stderr.contains("ERROR SUMMARY: 0 errors"),
        "{tool_name} reported errors:\n{stderr}"
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

/// A C guest driver of the tests' own (not an example's), compiled with the test using it.
fn test_guest(name: &str) -> PathBuf {
    crate_dir().join("tests/c").join(format!("{name}.c"))
}

#[test]
fn c_smmuv3_bridge() {
    let out = memcheck(&compile("smmuv3", &[&test_guest("smmuv3_guest")]), &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("smmuv3: all checks passed"));
}

#[test]
fn c_amd_bridge() {
    let out = memcheck(&compile("amd", &[&test_guest("amd_guest")]), &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("amd: all checks passed"));
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

/// The producer is iopf-queue's, in this process; the consumer is the C program `exe` (with
/// the socket's path as its argument), under memcheck, in its own. Pushes `groups` and collects
/// answers until `want` have come (or two minutes passed); then the producer leaves, and the
/// consumer's run (checked clean) is returned with the answers.
fn serve_c_consumer(
    exe: PathBuf,
    groups: &[TaggedGroup<'_>],
    want: usize,
) -> (Vec<Answer>, Output) {
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
    for g in groups {
        producer.push_group(g).expect("push");
    }
    let mut answers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while answers.len() < want && Instant::now() < deadline {
        producer
            .wait_responses(Some(Duration::from_millis(200)))
            .expect("wait");
        producer.drain_responses(&mut answers);
    }
    // The producer leaves; the consumer sees it go and exits.
    drop(producer);
    drop(listener);
    let out = consumer.join().expect("the consumer thread");
    (answers, out)
}

#[test]
fn c_shared_queue_consumer() {
    let groups: [&[PageRequest]; 3] = [
        &[request(1, true, 0x1000)],
        &[request(2, false, 0x2000), request(2, true, 0x3000)],
        &[request(3, true, 0x20_0000)],
    ];
    let tagged: Vec<TaggedGroup<'_>> = groups
        .iter()
        .enumerate()
        .map(|(tag, requests)| TaggedGroup {
            tag: tag as u64,
            dev_id: 5,
            requests,
        })
        .collect();
    let (answers, out) = serve_c_consumer(compile("shared", &[]), &tagged, 3);
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
    assert!(String::from_utf8_lossy(&out.stdout).contains("shared: all checks passed"));
}

/// The shared library works as the static one does, and exports the C API and nothing else.
#[test]
fn c_errors_against_the_shared_library() {
    memcheck(&compile_with("errors", &[], Link::Shared), &[]);
    let so = lib_dir().join("libiopf_capi.so");
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&so)
        .output()
        .expect("nm runs (binutils, with gcc)");
    assert!(out.status.success());
    let symbols = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = symbols
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert!(names.contains(&"iopf_viommu_new_vtd"), "{names:?}");
    let foreign: Vec<&&str> = names.iter().filter(|n| !n.starts_with("iopf_")).collect();
    assert!(
        foreign.is_empty(),
        "{} exports more than iopf_*: {foreign:?}",
        so.display()
    );
}

/// The header is C++ too (`extern "C"`, no C-only syntax), for VMMs with C++ parts.
#[test]
fn the_header_compiles_as_cpp() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-tests");
    std::fs::create_dir_all(&dir).expect("the C tests' build directory");
    let src = dir.join("header.cpp");
    std::fs::write(
        &src,
        "#include \"iopf.h\"\nint main() { return iopf_host_fd(nullptr) == -22 ? 0 : 1; }\n",
    )
    .expect("write header.cpp");
    let exe = dir.join("header-cpp");
    let out = Command::new(tool("g++"))
        .args(["-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .arg(static_lib())
        .args(NATIVE_LIBS)
        .output()
        .expect("g++ runs");
    assert!(
        out.status.success(),
        "g++ failed on the header:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).status().expect("run header-cpp");
    assert!(
        run.success(),
        "iopf_host_fd(nullptr) is -EINVAL from C++ too"
    );
}

#[test]
fn c_calls_from_a_callback_into_its_own_viommu_are_refused() {
    memcheck(&compile("reentry", &[&vtd_guest()]), &[]);
}

// The second review's tests (each named for what it holds; the first and the last failed
// before their fixes).

/// Regression: freeing guest memory from inside one of its own accessors, during a vIOMMU call
/// that uses it, was a use after free; now refused (the call holds a lease on it).
#[test]
fn c_guest_memory_freed_from_its_own_callback_is_refused() {
    memcheck(&compile("memory_freed_in_callback", &[&vtd_guest()]), &[]);
}

/// The compatible queue's device end used from inside the vIOMMU's MSI callback: no deadlock,
/// each group answered once, a late guest answer after a detach refused by the host.
#[test]
fn c_compat_device_used_from_inside_a_callback() {
    memcheck(&compile("compat_in_callback", &[&vtd_guest()]), &[]);
}

/// Read and respond follow Linux 6.12's fault fd (`iommufd_fault_fops_read/_write`).
#[test]
fn c_read_and_respond_follow_the_kernel() {
    memcheck(&compile("kernel_rules", &[]), &[]);
}

/// An SMMUv3 `CMD_SYNC` whose MSI address is the unit's own `CMDQ_PROD`: the nested call is
/// refused, the sync completes once.
#[test]
fn c_smmuv3_sync_into_its_own_registers_is_refused() {
    memcheck(&compile("smmuv3_reentry", &[]), &[]);
}

/// Two vIOMMUs on two threads sharing one region-backed guest memory: helgrind and drd clean.
#[test]
fn c_two_threads_two_viommus_one_memory() {
    let exe = compile("threads", &[&vtd_guest()]);
    under_valgrind("helgrind", &exe, &[]);
    under_valgrind("drd", &exe, &[]);
}

/// Regression: `iopf_host_read_faults` allocated scratch for all `n` records: a large, valid `n`
/// aborted the process when the allocation failed. Now it reads in bounded chunks. (Not under
/// valgrind: the program limits its address space.)
#[test]
fn c_a_large_read_does_not_allocate_for_all_of_it() {
    let exe = compile("big_read", &[]);
    let out = Command::new(&exe)
        .env("LD_LIBRARY_PATH", lib_dir())
        .output()
        .expect("run big_read");
    assert!(
        out.status.success(),
        "{}: {}\n{}",
        exe.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// VT-d 3.x private data through the C API: over the compatible queue (which carries none) the
/// unit is 4.0 and the device still gets its data back from the host's copy.
#[test]
fn c_private_data_over_the_compatible_queue_is_a_4_0_unit() {
    memcheck(&compile("private_data", &[&vtd_guest()]), &["compat"]);
}

/// Regression: over iopf's shared queue the guest of a VT-d 3.0 unit got no private data (the
/// consumer said it carried private data whatever records were agreed, and the C API agreed
/// records without room for it). Now the C API asks for `iommu_fault` records, which carry it,
/// and the consumer says so only when they do.
#[test]
fn c_private_data_over_the_shared_queue_reaches_the_guest_and_comes_back() {
    let pd = [0x1111_1111_1111_1111, 0x2222_2222_2222_2222];
    let req = PageRequest {
        flags: PageRequestFlags::PASID_VALID
            | PageRequestFlags::LAST_PAGE
            | PageRequestFlags::PRIV_DATA,
        pasid: 3,
        grpid: 7,
        perm: Perm::READ,
        addr: 0x1000,
        private_data: pd,
    };
    let group = TaggedGroup {
        tag: 9,
        dev_id: 5,
        requests: &[req],
    };
    let exe = compile("private_data", &[&vtd_guest()]);
    let (answers, out) = serve_c_consumer(exe, &[group], 1);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].private_data, Some(pd));
    assert!(String::from_utf8_lossy(&out.stdout).contains("all checks passed"));
}
