//! The CLI speaks one language: the same exit statuses for the same kinds of trouble in every
//! command, and JSON documents that all begin with `schema_version`, use snake_case keys, write
//! addresses as hex strings and response codes as the kernel's names, in every command.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

use std::path::Path;
use std::process::{Command, Output, Stdio};

use iopf_abi::*;
use serde_json::Value;
use zerocopy::IntoBytes;

fn iopf() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iopf"))
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const SMALL: &str = r#"
name = "language"
duration_ms = 150
[resolver]
invalid_share = 0.05
[[devices]]
count = 2
pasids = 2
opra = 32
workload = { pattern = "sequential", region_pages = 1000000, group_pages = 2 }
"#;

/// Keys that hold addresses or 64-bit words written in hex.
const HEX_KEYS: [&str; 4] = ["addr", "iova", "fetch_addr", "private_data"];

/// Walks `v` and checks every rule of the JSON language below the top; `at` names the place.
fn check_value(v: &Value, at: &str, problems: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let here = format!("{at}.{k}");
                let snake = !k.is_empty()
                    && k.starts_with(|c: char| c.is_ascii_lowercase())
                    && k.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !snake {
                    problems.push(format!("{here}: key not in snake_case"));
                }
                if HEX_KEYS.contains(&k.as_str()) {
                    check_hex(v, &here, problems);
                }
                if k == "code" && !v.is_null() {
                    let ok = matches!(v.as_str(), Some("SUCCESS" | "INVALID" | "FAILURE"));
                    if !ok {
                        problems.push(format!("{here}: code {v} is not SUCCESS/INVALID/FAILURE"));
                    }
                }
                check_value(v, &here, problems);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                check_value(v, &format!("{at}[{i}]"), problems);
            }
        }
        _ => {}
    }
}

fn check_hex(v: &Value, at: &str, problems: &mut Vec<String>) {
    match v {
        Value::Null => {}
        Value::Array(words) => {
            for (i, w) in words.iter().enumerate() {
                check_hex(w, &format!("{at}[{i}]"), problems);
            }
        }
        Value::String(s) if s.starts_with("0x") && u64::from_str_radix(&s[2..], 16).is_ok() => {}
        other => problems.push(format!("{at}: {other} is not a hex string")),
    }
}

/// Checks one JSON document as printed: it starts with `schema_version` 1, and every rule holds.
fn check_document(raw: &str, what: &str) -> Value {
    let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(
        compact.starts_with(r#"{"schema_version":1,"#),
        "{what}: does not begin with schema_version 1: {raw}"
    );
    let v: Value = serde_json::from_str(raw).unwrap_or_else(|e| panic!("{what}: {e}: {raw}"));
    let mut problems = Vec::new();
    check_value(&v, what, &mut problems);
    assert!(problems.is_empty(), "{what}:\n{}", problems.join("\n"));
    v
}

/// Each line of a JSON-lines output, checked.
fn check_lines(out: &str, what: &str) -> Vec<Value> {
    out.lines()
        .enumerate()
        .map(|(i, l)| check_document(l, &format!("{what} line {i}")))
        .collect()
}

#[test]
fn the_run_report_speaks_the_language_and_its_buckets_state_their_edges() {
    let dir = tempfile::tempdir().unwrap();
    let nested = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/nested-vtd.toml");
    let small = dir.path().join("small.toml");
    std::fs::write(&small, SMALL).unwrap();
    // A faulty path, so that the ledger's violations are in the document too.
    let faulty = dir.path().join("faulty.toml");
    std::fs::write(
        &faulty,
        format!("{SMALL}[inject]\nduplicate_responses = 0.05\n"),
    )
    .unwrap();
    for (file, expect) in [(&nested, 0), (&small, 0), (&faulty, 1)] {
        let out = iopf()
            .args(["run", "--json", "--quiet", "--duration-ms", "200"])
            .arg(file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(expect), "{}", text(&out.stderr));
        let r = check_document(&text(&out.stdout), &file.display().to_string());
        assert_eq!(r["partial"], false);
        if expect == 1 {
            assert!(!r["ledger"]["violations"].as_array().unwrap().is_empty());
        }
        for stage in r["latency"].as_array().unwrap() {
            let buckets = stage["buckets"].as_array().unwrap();
            assert_eq!(buckets.len(), 7, "{stage}");
            assert_eq!(buckets[0]["lower_ns"], 0);
            assert!(buckets[6]["upper_ns"].is_null());
            for pair in buckets.windows(2) {
                assert_eq!(pair[0]["upper_ns"], pair[1]["lower_ns"], "{stage}");
                assert!(pair[0]["upper_ns"].as_u64() > pair[0]["lower_ns"].as_u64());
            }
            let sum: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
            assert_eq!(Some(sum), stage["count"].as_u64(), "{stage}");
            assert!(stage["counts"].as_str().is_some_and(|s| !s.is_empty()));
        }
        // Keys named after enum variants are snake case too (check_document saw them).
        assert!(
            r["core"]["auto"].get("no_handler").is_some(),
            "{}",
            r["core"]
        );
    }
}

fn page_request() -> Fault {
    Fault::PageRequest(PageRequest {
        flags: PageRequestFlags::PASID_VALID | PageRequestFlags::LAST_PAGE,
        pasid: 7,
        grpid: 42,
        perm: Perm::READ | Perm::WRITE,
        addr: 0x7000,
        private_data: [0; 2],
    })
}

fn unrecoverable() -> Fault {
    Fault::Unrecoverable(Unrecoverable {
        reason: FaultReason::Permission,
        flags: UnrecoverableFlags::PASID_VALID
            | UnrecoverableFlags::ADDR_VALID
            | UnrecoverableFlags::FETCH_ADDR_VALID,
        pasid: 3,
        perm: Perm::WRITE,
        addr: 0xdead_0000_1000,
        fetch_addr: 0xffff_ffff_ffff_f000,
    })
}

fn decode_json(format: &str, hex: &str) -> Value {
    let out = iopf()
        .args(["decode", "--json", "--format", format, hex])
        .output()
        .unwrap();
    assert!(out.status.success(), "{format}: {}", text(&out.stderr));
    let doc = check_document(&text(&out.stdout), format);
    assert_eq!(doc["format"], format);
    assert_eq!(doc["error"], Value::Null);
    doc
}

#[test]
fn decode_speaks_the_language_in_every_format() {
    let faults = [page_request().encode(), unrecoverable().encode()];
    let doc = decode_json("fault", &hex_of(faults.as_bytes()));
    let r = &doc["records"];
    assert_eq!(r[0]["addr"], "0x7000");
    assert_eq!(r[0]["private_data"], serde_json::json!(["0x0", "0x0"]));
    assert_eq!(r[1]["addr"], "0xdead00001000");
    assert_eq!(r[1]["fetch_addr"], "0xfffffffffffff000", "past 2^53, exact");
    assert_eq!(r[1]["reason"], "PERMISSION");

    let responses = [
        IommufdResponse {
            cookie: 1,
            code: ResponseCode::Success,
        }
        .encode(),
        IommufdResponse {
            cookie: 2,
            code: ResponseCode::Invalid,
        }
        .encode(),
    ];
    let doc = decode_json("hwpt-response", &hex_of(responses.as_bytes()));
    assert_eq!(doc["records"][0]["code"], "SUCCESS");
    assert_eq!(doc["records"][1]["code"], "INVALID");

    let pg = PgFault {
        flags: PgfaultFlags::PASID_VALID | PgfaultFlags::LAST_PAGE,
        dev_id: 1,
        pasid: 5,
        grpid: 3,
        perm: Perm::READ,
        addr: 0x1000,
        length: 0,
        cookie: 9,
        reserved: 0,
    }
    .encode();
    let doc = decode_json("pgfault", &hex_of(pg.as_bytes()));
    assert_eq!(doc["records"][0]["addr"], "0x1000");

    let vtd =
        iopf_viommu::vtd::PageGroupResponse::new(0x0108, Some(7), 42, ResponseCode::Failure, None)
            .encode(iopf_viommu::PrivateDataMode::None);
    let vtd_hex: String = vtd.iter().map(|w| hex_of(&w.to_le_bytes())).collect();
    let doc = decode_json("vtd-page-group-response", &vtd_hex);
    assert_eq!(doc["records"][0]["code"], "FAILURE");
}

/// Good, good, bad, good: the two good records are printed, the bad one is named by index,
/// byte offset and reason, the one after it is not read, and the status is 2.
#[test]
fn decode_prints_the_good_records_before_a_bad_one_and_names_it() {
    let good = page_request().encode();
    let mut bad = page_request().encode();
    bad.type_ = 9;
    let input = [good, good, bad, good];
    let hex = hex_of(input.as_bytes());
    let out = iopf().args(["decode", &hex]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("record 0: page request grpid 42"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("record 1: page request grpid 42"),
        "{stdout}"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("record 2 (byte offset 128): unknown fault type 9"),
        "{stderr}"
    );
    assert!(!stderr.contains("record 3") && !stdout.contains("record 3"));

    let out = iopf().args(["decode", "--json", &hex]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let doc = check_document(&text(&out.stdout), "decode with a bad record");
    assert_eq!(doc["records"].as_array().unwrap().len(), 2);
    assert_eq!(doc["error"]["record"], 2);
    assert_eq!(doc["error"]["offset"], 128);
    assert_eq!(doc["error"]["reason"], "unknown fault type 9");
}

#[test]
fn decode_exits_2_for_every_kind_of_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.bin");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--file".into(), missing.to_str().unwrap().into()],
            "missing.bin",
        ),
        (
            vec!["--file".into(), dir.path().to_str().unwrap().into()],
            dir.path().to_str().unwrap(),
        ),
        (vec!["zz".into()], "not a hex digit"),
        (vec!["abc".into()], "odd number of digits"),
        (
            vec!["--format".into(), "nonsense".into(), "00".into()],
            "nonsense",
        ),
        (vec!["00".repeat(10)], "byte offset 0"),
    ];
    for (args, named) in cases {
        let out = iopf()
            .arg("decode")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(named), "{args:?}: {err}");
    }
}

fn wait_for_socket(sock: &Path, serve: &mut std::process::Child) {
    use std::io::{BufRead, BufReader};
    let mut err = BufReader::new(serve.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "serve ended");
    }
    assert!(sock.exists());
    // Keep reading, so that serve never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
}

#[test]
fn serve_and_attach_speak_the_language() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("q.sock");
    let mut serve = iopf()
        .arg("serve")
        .arg(&sock)
        .args([
            "--json",
            "--groups",
            "30",
            "--unrecoverable",
            "3",
            "--private-data",
        ])
        .args(["--consumers", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_socket(&sock, &mut serve);
    let out = iopf()
        .args(["attach", "--json", "--echo", "--policy", "alternate"])
        .arg(&sock)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = check_lines(&text(&out.stdout), "attach --json");
    let faults: Vec<&Value> = lines.iter().filter(|l| l["event"] == "fault").collect();
    assert_eq!(faults.len(), 30);
    assert!(faults[0]["addr"].as_str().unwrap().starts_with("0x"));
    assert!(faults[0]["private_data"][0]
        .as_str()
        .unwrap()
        .starts_with("0x5afe"));
    let un: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "unrecoverable")
        .collect();
    assert_eq!(un.len(), 3);
    assert_eq!(un[0]["fault"]["reason"], "PERMISSION");
    assert!(un[0]["fault"]["addr"]
        .as_str()
        .unwrap()
        .starts_with("0xdead"));
    assert_eq!(lines.last().unwrap()["event"], "summary");
    assert_eq!(lines.last().unwrap()["record"], "IOMMU_FAULT");

    // The text forms spell the codes the same way.
    let out = iopf()
        .args(["attach", "--record", "hwpt"])
        .arg(&sock)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = serve.wait_with_output().unwrap();
    assert!(out.status.success());
    let sums = check_lines(&text(&out.stdout), "serve --json");
    assert_eq!(sums.len(), 2);
    assert_eq!(sums[0]["success"], 15);
    assert_eq!(sums[0]["invalid"], 15);
    assert_eq!(sums[0]["lost_by_reason"], serde_json::json!({}));
    assert_eq!(sums[1]["record"], "HWPT_PGFAULT");
}

#[test]
fn codes_are_spelled_one_way_in_every_text_output() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.toml");
    std::fs::write(&small, SMALL).unwrap();
    let run = iopf()
        .args(["run", "--quiet"])
        .arg(&small)
        .output()
        .unwrap();
    assert!(run.status.success());
    let sock = dir.path().join("q.sock");
    let mut serve = iopf()
        .arg("serve")
        .arg(&sock)
        .args(["--groups", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_socket(&sock, &mut serve);
    let attach = iopf()
        .args(["attach", "--policy", "invalid"])
        .arg(&sock)
        .output()
        .unwrap();
    assert!(attach.status.success());
    let serve = serve.wait_with_output().unwrap();
    assert!(serve.status.success());
    let responses = [
        IommufdResponse {
            cookie: 1,
            code: ResponseCode::Success,
        }
        .encode(),
        IommufdResponse {
            cookie: 2,
            code: ResponseCode::Invalid,
        }
        .encode(),
    ];
    let decode = iopf()
        .args(["decode", "--format", "hwpt-response"])
        .arg(hex_of(responses.as_bytes()))
        .output()
        .unwrap();
    assert!(decode.status.success());
    let decoded = text(&decode.stdout);
    assert!(decoded.contains("code SUCCESS") && decoded.contains("code INVALID"));
    let served = text(&serve.stdout);
    assert!(
        served.contains("SUCCESS 0, INVALID 10, FAILURE 0"),
        "{served}"
    );
    for (what, out) in [
        ("run", text(&run.stdout)),
        ("serve", served),
        ("attach", text(&attach.stdout)),
        ("decode", decoded),
    ] {
        for other in ["Success", "Invalid", "Failure", "success:", "invalid:"] {
            assert!(!out.contains(other), "{what} says {other:?}:\n{out}");
        }
    }
}

#[test]
fn serve_and_attach_exit_2_for_a_socket_path_that_cannot_be_used() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "hello").unwrap();
    let cases: Vec<(&str, std::path::PathBuf, &str)> = vec![
        ("serve", file.clone(), "cannot create the socket"),
        (
            "serve",
            dir.path().join("no/such/dir.sock"),
            "cannot create the socket",
        ),
        (
            "attach",
            dir.path().join("absent.sock"),
            "no iopf producer to attach to",
        ),
        ("attach", file.clone(), "no iopf producer to attach to"),
    ];
    for (cmd, path, named) in cases {
        let out = iopf().arg(cmd).arg(&path).output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{cmd} {}: {err}",
            path.display()
        );
        assert!(
            err.contains(named) && err.contains(path.to_str().unwrap()),
            "{err}"
        );
    }
}

#[test]
fn help_documents_the_exit_statuses_and_the_json_schema() {
    let out: Output = iopf().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = text(&out.stdout);
    for needle in [
        "Exit status",
        "130",
        "143",
        "bad input",
        "schema_version",
        "snake_case",
        "hex strings",
        "SUCCESS",
        "lower_ns",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}
