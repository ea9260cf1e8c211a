//! `iopf run` end to end: the binary on small scenarios, its report, JSON, plot, split mode,
//! exit statuses and scenario errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use assert_cmd::Command;
use predicates::prelude::*;

fn iopf() -> Command {
    Command::cargo_bin("iopf").expect("the iopf binary")
}

const SMALL: &str = r#"
name = "cli-small"
duration_ms = 200
[resolver]
invalid_share = 0.05
[[devices]]
count = 2
pasids = 2
opra = 32
workload = { pattern = "sequential", region_pages = 1000000, group_pages = 2 }
"#;

fn scenario(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn text_report_with_ledger_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let f = scenario(&dir, "small.toml", SMALL);
    iopf()
        .args(["run", "--quiet"])
        .arg(&f)
        .assert()
        .success()
        .stdout(predicate::str::contains("latency per stage"))
        .stdout(predicate::str::contains("sent->device (all)"))
        .stdout(predicate::str::contains(
            "sent->device (all): every group a device received its response for, whatever the code",
        ))
        .stdout(predicate::str::contains("PARTIAL").not())
        .stdout(predicate::str::contains("IOMMU page request queue"))
        .stdout(predicate::str::contains("PRI occupancy"))
        .stdout(predicate::str::contains(
            "ledger: OK, every group answered exactly once",
        ));
}

#[test]
fn json_report_and_svg_plot() {
    let dir = tempfile::tempdir().unwrap();
    let f = scenario(&dir, "small.toml", SMALL);
    let svg = dir.path().join("latency.svg");
    let out = iopf()
        .args(["run", "--json"])
        .arg(&f)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["scenario"], "cli-small");
    assert_eq!(r["ledger"]["ok"], true);
    let groups = r["totals"]["groups"].as_u64().unwrap();
    assert!(groups > 0);
    assert_eq!(r["ledger"]["answered"].as_u64().unwrap(), groups);
    assert_eq!(
        r["ledger"]["invalid"], r["consumer"]["invalid"],
        "every INVALID the resolver chose reached a device"
    );
    assert_eq!(r["latency"].as_array().unwrap().len(), 5);
    assert_eq!(r["schema_version"], 1);
    assert_eq!(r["partial"], false);
    assert_eq!(r["interrupted_by"], serde_json::Value::Null);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"));
    for label in ["0.1-1µs", "1-10ms", "&gt;=10ms", "sent-&gt;device (all)"] {
        assert!(text.contains(label), "{label} missing from the plot");
    }
}

#[test]
fn split_run_over_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let f = scenario(&dir, "small.toml", SMALL);
    let out = iopf()
        .args(["run", "--json", "--split"])
        .arg(&f)
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["split"], true);
    assert_eq!(r["ledger"]["ok"], true);
    assert!(r["totals"]["groups"].as_u64().unwrap() > 0);
    assert!(r["consumer"]["groups"].as_u64().unwrap() > 0);
    // The consumer process's marks came back: the middle stages were measured.
    assert!(r["latency"][1]["count"].as_u64().unwrap() > 0);
}

#[test]
fn a_disagreeing_ledger_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let f = scenario(
        &dir,
        "faulty.toml",
        &format!("{SMALL}[inject]\nduplicate_responses = 0.05\n"),
    );
    iopf()
        .args(["run", "--quiet"])
        .arg(&f)
        .assert()
        .code(1)
        .stdout(predicate::str::contains("ledger: DISAGREES"))
        .stdout(predicate::str::contains("Unsolicited"))
        .stderr(predicate::str::contains("the ledger disagrees"));
}

#[test]
fn bad_scenarios_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let f = scenario(&dir, "bad.toml", &SMALL.replace("opra = 32", "opra = -4"));
    iopf()
        .args(["run", "--quiet"])
        .arg(&f)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("bad.toml:9:"))
        .stderr(predicate::str::contains("devices[0].opra"));
    let f = scenario(
        &dir,
        "rule.toml",
        &SMALL.replace("group_pages = 2", "group_pages = 40"),
    );
    iopf()
        .args(["run", "--quiet"])
        .arg(&f)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("rule.toml:10:"))
        .stderr(predicate::str::contains("devices[0].workload.group_pages"));
}

/// Every kind of bad input to `run` is exit status 2, with the file or argument named, and
/// nothing of a run printed.
#[test]
fn every_kind_of_bad_input_exits_2_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let small = scenario(&dir, "small.toml", SMALL);
    let unreadable = dir.path().join("a-directory.toml");
    std::fs::create_dir(&unreadable).unwrap();
    let plot_dir = dir.path().join("plot-is-a-dir.svg");
    std::fs::create_dir(&plot_dir).unwrap();
    let small = small.to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["/nonexistent/scenario.toml".into()],
            "/nonexistent/scenario.toml".into(),
        ),
        (
            vec![unreadable.to_str().unwrap().into()],
            "a-directory.toml".into(),
        ),
        (
            vec![small.clone(), "--duration-ms".into(), "0".into()],
            "--duration-ms must be at least 1".into(),
        ),
        (
            vec![small.clone(), "--duration-ms".into(), "soon".into()],
            "--duration-ms".into(),
        ),
        (vec!["--no-such-flag".into()], "--no-such-flag".into()),
        (
            vec![small.clone(), "--plot".into(), "x.png".into()],
            "SVG only".into(),
        ),
        (
            vec![
                small.clone(),
                "--plot".into(),
                "/nonexistent-dir/latency.svg".into(),
            ],
            "/nonexistent-dir/latency.svg: --plot cannot write there".into(),
        ),
        (
            vec![
                small.clone(),
                "--plot".into(),
                plot_dir.to_str().unwrap().into(),
            ],
            "plot-is-a-dir.svg: --plot cannot write there".into(),
        ),
    ];
    for (args, named) in cases {
        // Not quiet: a run that started would say so on stderr.
        let out = iopf().arg("run").args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(&named), "{args:?}: {err}");
        assert!(!err.contains("running scenario"), "{args:?} ran: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed a report");
    }
}

#[test]
fn the_repository_scenarios_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            iopf_sim_parse(&p);
            n += 1;
        }
    }
    assert!(n >= 5);
}

fn iopf_sim_parse(p: &std::path::Path) {
    if let Err(e) = iopf::sim::Scenario::load(p) {
        panic!("{}: {e}", p.display());
    }
}

#[test]
fn no_arguments_runs_the_built_in_default_scenario() {
    // The built-in scenario, shortened so the test stays quick; the stops fall after the end.
    iopf()
        .args(["run", "--json", "--duration-ms", "300"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"scenario\": \"default\""));
}

#[test]
fn the_nested_scenario_files_run_through_the_guest() {
    for viommu in ["vtd", "smmuv3", "amd"] {
        nested_scenario_file_runs(viommu);
    }
}

fn nested_scenario_file_runs(viommu: &str) {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../scenarios/nested-{viommu}.toml"));
    // Shortened: the guest's events past the end do not happen; the guest still answers.
    let out = iopf()
        .args(["run", "--json", "--duration-ms", "400"])
        .arg(&file)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["ledger"]["ok"], true, "{viommu}");
    assert_eq!(v["guest"]["viommu"], viommu);
    assert!(v["guest"]["host_answers"]["guest"].as_u64().unwrap() > 0);
    let stages: Vec<&str> = v["latency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["label"].as_str().unwrap())
        .collect();
    assert!(stages.contains(&"guest->answered"), "{stages:?}");
    // The text report has the guest's section; a split run carries the guest's figures over.
    iopf()
        .args(["run", "--quiet", "--split", "--duration-ms", "300"])
        .arg(&file)
        .assert()
        .success()
        .stdout(predicate::str::contains("answered by the guest"))
        .stdout(predicate::str::contains("guest-prq->guest"));
}
