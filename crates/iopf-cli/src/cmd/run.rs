//! `iopf run`: the main job. A whole machine's worth of recoverable I/O page faults through the
//! real iopf path (IOMMU → fault core → fault queue → resolver → back to the devices) on the
//! built-in simulated platform, with a progress bar, a report, and the verdict of the ledger that
//! watched the devices' links. Exit status: 0 when the ledger agrees, 1 when it does not (or the
//! run failed), 2 for a bad scenario or bad arguments (a scenario file that cannot be read
//! included; `--plot` is checked before the run), 130 or 143 when SIGINT or SIGTERM stopped the
//! run: the devices stop starting work, the groups in flight are answered, the rest INVALID, and
//! the report is printed marked partial.
//!
//! With `--split` the consumer side runs in a second process (this program again, with the
//! hidden `--consumer-of SOCKET`), connected over the fault queue's UNIX socket.

use std::cell::Cell;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use iopf::sim::latency::{Stage, StageLatency, BUCKET_LABELS};
use iopf::sim::platform::{self, Progress};
use iopf::sim::report::RunReport;
use iopf::sim::resolver::{ConsumerMark, ResolverStats};
use iopf::sim::{Scenario, SimError};

use crate::error::CliError;
use crate::signals::{Interrupt, Signal};

/// Arguments of `iopf run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scenario file (TOML; see scenarios/README.md). Without it, the built-in default
    /// scenario runs (about ten seconds).
    scenario: Option<PathBuf>,
    /// Override the scenario's duration (milliseconds the devices start new work).
    #[arg(long, value_name = "MS")]
    duration_ms: Option<u64>,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Draw the latency histogram per stage (VT-d debugfs buckets) into this SVG file (checked
    /// before the run: a path that cannot be written is bad input).
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Run the consumer side in a second process, over the fault queue's UNIX socket.
    #[arg(long)]
    split: bool,
    /// No progress bar, and no "running" line on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// (internal) Be the consumer process of a split run: connect to this socket.
    #[arg(long, hide = true, value_name = "SOCKET", requires = "consumer_out")]
    consumer_of: Option<PathBuf>,
    /// (internal) Where the consumer process writes its figures.
    #[arg(long, hide = true, value_name = "FILE")]
    consumer_out: Option<PathBuf>,
}

/// Runs `iopf run`.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    let mut scenario = match &args.scenario {
        Some(path) => Scenario::load(path).map_err(sim_error)?,
        None => Scenario::default_scenario(),
    };
    if let Some(ms) = args.duration_ms {
        if ms == 0 {
            return Err(CliError::Input("--duration-ms must be at least 1".into()));
        }
        scenario.duration_ms = ms;
    }
    let interrupt = Interrupt::install()?;
    if let (Some(socket), Some(out)) = (&args.consumer_of, &args.consumer_out) {
        // The consumer process serves until the producer closes the queue: a Ctrl-C reaches
        // the whole process group, and the producer process drains and closes on it.
        return consumer_process(&scenario, socket, out);
    }
    let mut plot = args.plot.as_deref().map(PlotFile::open).transpose()?;
    let progress = Progress::default();
    let announced = Cell::new(args.quiet);
    let stop = || {
        if !announced.get() && progress.groups.load(Ordering::Relaxed) > 0 {
            announced.set(true);
            eprintln!(
                "iopf run: running scenario {:?} ({} ms); SIGINT or SIGTERM stops it with a partial report",
                scenario.name, scenario.duration_ms
            );
        }
        interrupt.requested()
    };
    let report = std::thread::scope(|s| {
        let bar = (!args.quiet && !args.json).then(|| {
            let progress = &progress;
            let scenario = &scenario;
            s.spawn(move || show_progress(scenario, progress))
        });
        let report = if args.split {
            run_split(&scenario, &progress, &stop, &interrupt)
        } else {
            platform::run_until(&scenario, &progress, &stop).map_err(sim_error)
        };
        progress.draining.store(true, Ordering::Relaxed);
        progress.elapsed_ms.store(u64::MAX, Ordering::Relaxed);
        if let Some(bar) = bar {
            let _ = bar.join();
        }
        report
    })?;
    let interrupted_by = report.partial.then(|| interrupt.signal()).flatten();
    if let Some(plot) = &mut plot {
        plot.draw(&report)?;
    }
    if args.json {
        let doc = JsonReport {
            interrupted_by: interrupted_by.map(Signal::name),
            report: &report,
        };
        println!("{}", crate::json::pretty(&doc)?);
    } else {
        print!("{}", render(&report, interrupted_by));
        if let Some(plot) = &args.plot {
            println!("latency plot written to {}", plot.display());
        }
    }
    if !report.ledger.ok {
        eprintln!(
            "iopf: the ledger disagrees: {} violation(s)",
            report.ledger.violation_count
        );
    }
    Ok(match interrupted_by {
        Some(signal) => ExitCode::from(signal.exit_status()),
        None if report.ledger.ok => ExitCode::SUCCESS,
        None => ExitCode::from(crate::error::EXIT_FAILED),
    })
}

/// The JSON document of `iopf run`: the report, and the signal that stopped it.
#[derive(serde::Serialize)]
struct JsonReport<'a> {
    /// `SIGINT` or `SIGTERM` when one stopped the run (the report's `partial` is then true),
    /// else null.
    interrupted_by: Option<&'static str>,
    #[serde(flatten)]
    report: &'a RunReport,
}

fn sim_error(e: SimError) -> CliError {
    match e {
        SimError::ScenarioIo { path, source } => CliError::InputFile {
            path: path.display().to_string(),
            source,
        },
        SimError::Scenario { .. } => CliError::Input(e.to_string()),
        other => CliError::Run(format!("run failed: {other}")),
    }
}

/// Draws the progress bar until the run says it is over (`elapsed_ms == u64::MAX`).
fn show_progress(scenario: &Scenario, progress: &Progress) {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let bar = ProgressBar::with_draw_target(
        Some(scenario.duration_ms),
        ProgressDrawTarget::stderr_with_hz(10),
    );
    let style =
        ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos:>5}/{len} ms {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(scenario.name.clone());
    loop {
        let elapsed = progress.elapsed_ms.load(Ordering::Relaxed);
        if elapsed == u64::MAX {
            break;
        }
        bar.set_position(elapsed.min(scenario.duration_ms));
        let phase = if progress.draining.load(Ordering::Relaxed) {
            "draining"
        } else {
            "running"
        };
        bar.set_message(format!(
            "{phase}: {} groups, {} items",
            progress.groups.load(Ordering::Relaxed),
            progress.items.load(Ordering::Relaxed)
        ));
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();
}

// ---------------------------------------------------------------------------------------------
// Split runs.

/// The producer process: binds a socket in a private directory, starts the consumer process,
/// serves it, and joins its figures.
fn run_split(
    scenario: &Scenario,
    progress: &Progress,
    stop: &dyn Fn() -> bool,
    interrupt: &Interrupt,
) -> Result<RunReport, CliError> {
    use iopf::queue::{Listener, ServeConfig};
    let dir = tempfile::tempdir().map_err(|source| CliError::Os {
        what: "creating a temporary directory".into(),
        source,
    })?;
    let socket = dir.path().join("fault-queue.sock");
    let out = dir.path().join("consumer.out");
    let scenario_file = dir.path().join("scenario.toml");
    let text = toml::to_string(scenario).map_err(|e| CliError::Run(format!("scenario: {e}")))?;
    std::fs::write(&scenario_file, text).map_err(|source| CliError::Os {
        what: format!("writing {}", scenario_file.display()),
        source,
    })?;
    let listener = Listener::bind(
        &socket,
        ServeConfig {
            offer: platform::producer_offer(scenario),
            producer: platform::producer_config(),
            ..ServeConfig::default()
        },
    )
    .map_err(|e| CliError::Run(format!("{}: {e}", socket.display())))?;
    let exe = std::env::current_exe().map_err(|source| CliError::Os {
        what: "finding the current executable".into(),
        source,
    })?;
    let mut child = Command::new(exe)
        .arg("run")
        .arg(&scenario_file)
        .arg("--quiet")
        .arg("--consumer-of")
        .arg(&socket)
        .arg("--consumer-out")
        .arg(&out)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|source| CliError::Os {
            what: "starting the consumer process".into(),
            source,
        })?;
    let producer = match accept_within(&listener, &mut child, Duration::from_secs(30), interrupt) {
        Ok(p) => p,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let child = std::sync::Mutex::new(child);
    let gone = || {
        child
            .lock()
            .map(|mut c| matches!(c.try_wait(), Ok(Some(_))))
            .unwrap_or(true)
    };
    let outcome = platform::run_producer_side(scenario, producer, progress, &gone, stop);
    let mut child = child
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let status = child.wait().map_err(|source| CliError::Os {
        what: "waiting for the consumer process".into(),
        source,
    })?;
    let mut outcome = outcome.map_err(sim_error)?;
    if !status.success() {
        return Err(CliError::Run(format!(
            "the consumer process failed ({status})"
        )));
    }
    let (stats, marks) = read_consumer_out(&out)?;
    outcome.finish(stats, &marks).map_err(sim_error)
}

/// Waits for the consumer process to connect, polling so that a consumer that dies first is
/// noticed instead of waited for.
fn accept_within(
    listener: &iopf::queue::Listener,
    child: &mut Child,
    limit: Duration,
    interrupt: &Interrupt,
) -> Result<iopf::queue::Producer, CliError> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let start = std::time::Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(CliError::Run(format!(
                "the consumer process exited before connecting ({status})"
            )));
        }
        if let Some(signal) = interrupt.signal() {
            return Err(CliError::Interrupted {
                signal,
                during: "before the consumer process connected",
            });
        }
        if start.elapsed() > limit {
            return Err(CliError::Run(
                "the consumer process did not connect within 30 s".into(),
            ));
        }
        let fd = listener.as_fd();
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        let timeout = Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        if matches!(poll(&mut fds, Some(&timeout)), Ok(n) if n > 0) {
            return listener
                .accept()
                .map_err(|e| CliError::Run(format!("accepting the consumer: {e}")));
        }
    }
}

/// The consumer process: connects, serves until the producer closes the queue, writes its
/// figures.
fn consumer_process(scenario: &Scenario, socket: &Path, out: &Path) -> Result<ExitCode, CliError> {
    let depth = scenario.queue.depth;
    let mut request_error = None;
    let mut consumer = iopf::queue::connect(socket, |offer| {
        match platform::consumer_request(offer, depth) {
            Ok(r) => r,
            Err(e) => {
                request_error = Some(e.to_string());
                iopf::queue::Request::v1()
            }
        }
    })
    .map_err(|e| CliError::Run(format!("{}: {e}", socket.display())))?;
    if let Some(e) = request_error {
        return Err(CliError::Run(e));
    }
    let (stats, marks) = platform::run_consumer_side(scenario, &mut consumer).map_err(sim_error)?;
    write_consumer_out(out, &stats, &marks)?;
    Ok(ExitCode::SUCCESS)
}

fn write_consumer_out(
    out: &Path,
    stats: &ResolverStats,
    marks: &[ConsumerMark],
) -> Result<(), CliError> {
    let io = |source| CliError::Os {
        what: format!("writing {}", out.display()),
        source,
    };
    let head = serde_json::to_vec(stats).map_err(|e| CliError::Run(e.to_string()))?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(out).map_err(io)?);
    f.write_all(&(head.len() as u64).to_le_bytes())
        .map_err(io)?;
    f.write_all(&head).map_err(io)?;
    for m in marks {
        for v in [
            u64::from(m.dev),
            u64::from(m.grpid),
            m.delivered_ns,
            m.answered_ns,
            m.posted_ns.unwrap_or(u64::MAX),
            m.guest_ns.unwrap_or(u64::MAX),
        ] {
            f.write_all(&v.to_le_bytes()).map_err(io)?;
        }
    }
    f.flush().map_err(io)
}

/// One consumer mark in the consumer process's figures: six little-endian words (device, PRG
/// index, delivered, answered, posted to the guest, guest handler; `u64::MAX` for none).
const MARK_BYTES: usize = 48;

fn read_consumer_out(out: &Path) -> Result<(ResolverStats, Vec<ConsumerMark>), CliError> {
    let mut bytes = Vec::new();
    std::fs::File::open(out)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| CliError::Os {
            what: format!("reading {}", out.display()),
            source,
        })?;
    let bad = || {
        CliError::Run(format!(
            "{}: the consumer's figures are malformed",
            out.display()
        ))
    };
    let head_len = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(bad)? as usize;
    let head = bytes.get(8..8 + head_len).ok_or_else(bad)?;
    let stats: ResolverStats = serde_json::from_slice(head).map_err(|_| bad())?;
    let body = bytes.get(8 + head_len..).ok_or_else(bad)?;
    if body.len() % MARK_BYTES != 0 {
        return Err(bad());
    }
    let some = |v: u64| (v != u64::MAX).then_some(v);
    let word = |c: &[u8], i: usize| -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&c[i * 8..i * 8 + 8]);
        u64::from_le_bytes(w)
    };
    let marks = body
        .chunks_exact(MARK_BYTES)
        .map(|c| ConsumerMark {
            dev: word(c, 0) as u32,
            grpid: word(c, 1) as u32,
            delivered_ns: word(c, 2),
            answered_ns: word(c, 3),
            posted_ns: some(word(c, 4)),
            guest_ns: some(word(c, 5)),
        })
        .collect();
    Ok((stats, marks))
}

// ---------------------------------------------------------------------------------------------
// The report.

fn ns(v: f64) -> String {
    if v < 1_000.0 {
        format!("{v:.0} ns")
    } else if v < 1_000_000.0 {
        format!("{:.1} us", v / 1e3)
    } else if v < 1_000_000_000.0 {
        format!("{:.2} ms", v / 1e6)
    } else {
        format!("{:.2} s", v / 1e9)
    }
}

/// The text report; `interrupted_by` is the signal that stopped a partial run.
pub fn render(r: &RunReport, interrupted_by: Option<Signal>) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let t = &r.totals;
    if r.partial {
        let _ = writeln!(
            o,
            "PARTIAL ({}): the devices stopped starting work after {:.2} s; the groups in flight were drained, any the consumer still held at the end answered INVALID",
            interrupted_by.map_or_else(
                || "stopped early".to_string(),
                |s| format!("interrupted by {}", s.name())
            ),
            r.issue_s
        );
    }
    let _ = writeln!(
        o,
        "iopf run: scenario {:?}{}, {:.2} s ({:.2} s issuing, then drain)",
        r.scenario,
        if r.split { ", two processes" } else { "" },
        r.wall_s,
        r.issue_s
    );
    let _ = writeln!(o, "\nfaults and groups");
    let _ = writeln!(
        o,
        "  {} faults in {} groups ({} refaults after retry); {:.0} faults/s, {:.0} groups/s",
        t.faults, t.groups, t.refaults, r.throughput.faults_per_s, r.throughput.groups_per_s
    );
    let _ = writeln!(
        o,
        "  work items: {} started, {} completed ({:.0}/s), {} INVALID, {} PRI disabled, {} dropped by PASID stop",
        t.items_started,
        t.items_completed,
        r.throughput.items_per_s,
        t.items_invalid,
        t.items_pri_disabled,
        t.items_abandoned
    );
    let _ = writeln!(
        o,
        "  responses at the devices: {} SUCCESS, {} INVALID, {} FAILURE; {} stop markers, {} PASIDs stopped, {} function resets",
        t.success, t.invalid, t.failure, t.stop_markers, t.pasids_stopped, t.resets
    );
    let _ = writeln!(o, "\nlatency per stage");
    let _ = writeln!(
        o,
        "  {:<22} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "stage", "groups", "mean", "p50", "p90", "p99", "p99.9", "max"
    );
    for s in &r.latency {
        let _ = writeln!(
            o,
            "  {:<22} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            s.label,
            s.count,
            ns(s.mean_ns),
            ns(s.p50_ns as f64),
            ns(s.p90_ns as f64),
            ns(s.p99_ns as f64),
            ns(s.p999_ns as f64),
            ns(s.max_ns as f64)
        );
    }
    let _ = write!(o, "  {:<22} {:>9}", "buckets (VT-d)", "");
    for l in BUCKET_LABELS {
        let _ = write!(o, " {l:>9}");
    }
    let _ = writeln!(o);
    for s in &r.latency {
        let _ = write!(o, "  {:<22} {:>9}", s.label, "");
        for b in s.buckets {
            let _ = write!(o, " {b:>9}");
        }
        let _ = writeln!(o);
    }
    if let Some(total) = r.latency.iter().find(|s| s.stage == Stage::Total) {
        let _ = writeln!(o, "  {}: {}", total.label, total.counts);
    }
    let p = &r.iommu.prq;
    let _ = writeln!(o, "\nIOMMU page request queue");
    let _ = writeln!(
        o,
        "  depth {}, high-water {}, {} queued; {} overflows, {} requests dropped, {} auto-answered SUCCESS by the IOMMU, overflow cleared {} times (partials discarded each time)",
        p.depth, p.high_water, p.queued, p.overflows, p.dropped, p.auto_success, p.overflow_cleared
    );
    let q = &r.queue;
    let _ = writeln!(o, "\nfault queue");
    let _ = writeln!(
        o,
        "  depth {} records, {} delivered, high-water {} groups held for the consumer; {} groups waited in the backlog (high-water {} requests); {} responses accepted, {} rejected, {} answered INVALID as the consumer went away",
        q.depth,
        q.delivered,
        q.pending_high_water,
        q.held_back,
        q.backlog_high_water,
        q.accepted,
        q.rejected,
        q.answered_consumer_gone
    );
    let _ = writeln!(
        o,
        "  lost groups: {} ({} records, {} of them announced to the consumer)",
        list_or_none(q.lost_by_reason.iter().map(|(k, n)| format!("{k} {n}"))),
        q.lost_records,
        r.consumer.lost_signalled
    );
    if let Some(g) = &r.guest {
        render_guest(&mut o, g);
    }
    let c = &r.core;
    let _ = writeln!(o, "\nfault core");
    let _ = writeln!(
        o,
        "  {} requests reported, {} groups, {} delivered, {} consumer responses, {} rejected, {} FAILURE sent as INVALID",
        c.reported, c.groups, c.delivered, c.consumer_responses, c.rejected, c.failure_as_invalid
    );
    let autos = c.auto.iter().filter(|(_, n)| **n > 0);
    let _ = writeln!(
        o,
        "  automatic responses: {}; partial requests discarded {}, dropped {}",
        list_or_none(autos.map(|(k, n)| format!("{k} {n}"))),
        c.discarded_partials,
        c.dropped_partials
    );
    let _ = writeln!(o, "\nPRI occupancy (outstanding page requests / OPRA)");
    for d in &r.devices {
        let s = &d.stats;
        let _ = writeln!(
            o,
            "  function {:>3}: OPRA {:>5}, max {:>5} ({:>3.0}%), mean {:>3.0}%, max {:>3} groups in flight{}",
            s.id,
            s.opra,
            s.max_outstanding,
            100.0 * f64::from(s.max_outstanding) / f64::from(s.opra.max(1)),
            100.0 * d.mean_occupancy,
            s.max_groups_in_flight,
            if s.pri_disabled { ", PRI DISABLED" } else { "" }
        );
    }
    let _ = writeln!(
        o,
        "\nPRI-disabled functions: {}",
        list_or_none(r.pri_disabled.iter().map(|d| d.to_string()))
    );
    let l = &r.ledger;
    let _ = writeln!(
        o,
        "\nledger: {} — {} groups sent, {} answered ({} SUCCESS, {} INVALID, {} FAILURE), {} stop markers, {} violations",
        if l.ok {
            "OK, every group answered exactly once"
        } else {
            "DISAGREES"
        },
        l.groups_sent,
        l.answered,
        l.success,
        l.invalid,
        l.failure,
        l.stop_markers,
        l.violation_count
    );
    for v in &l.violations {
        let _ = writeln!(o, "  {v:?}");
    }
    o
}

/// The vIOMMU and guest section of the text report.
fn render_guest(o: &mut String, g: &iopf::sim::nested::GuestReport) {
    use std::fmt::Write as _;
    let _ = writeln!(
        o,
        "\nguest (vIOMMU {}, functions {}, page request queue {} slots, age limit {})",
        g.viommu,
        list_or_none(g.functions.iter().map(|f| f.to_string())),
        g.prq_slots,
        g.age_limit_ms
            .map_or_else(|| "none".to_string(), |ms| format!("{ms} ms"))
    );
    let _ = writeln!(
        o,
        "  {} groups read from the host queue, {} posted to the guest ({} requests), {} requests dropped; {} interrupts, handler ran {} times, {} descriptors read, {} malformed answered INVALID",
        g.groups_read,
        g.groups_posted,
        g.records_posted,
        g.records_dropped,
        g.interrupts,
        g.handler_runs,
        g.descriptors,
        g.bad_requests
    );
    let by_bridge = g
        .host_answers
        .iter()
        .filter(|(k, n)| k.as_str() != "guest" && **n > 0)
        .map(|(k, n)| format!("{k} {n}"));
    let _ = writeln!(
        o,
        "  answered by the guest: {} ({} SUCCESS, {} INVALID, {} FAILURE sent to the host as INVALID); by the vIOMMU: {}",
        g.host_answers.get("guest").copied().unwrap_or(0),
        g.guest_success,
        g.guest_invalid,
        g.guest_failure,
        list_or_none(by_bridge)
    );
    let _ = writeln!(
        o,
        "  {} unmatched guest responses, {} answers refused by the host queue, {} guest queue overflows ({} answered SUCCESS by the vIOMMU), {} partial groups discarded by the guest, {} pages mapped by the guest, {} vIOMMU resets, {} silent periods, {} groups held by the guest at the end",
        g.unmatched,
        g.host_refused,
        g.prq_overflows,
        g.prq_auto_success,
        g.discarded_partials,
        g.pages_mapped,
        g.resets,
        g.silent_periods,
        g.outstanding_at_end
    );
}

// ---------------------------------------------------------------------------------------------
// The plot.

/// The `--plot` file, opened before the run so that a path that cannot be written is bad input
/// found at once, not after the run. A file this opened and never wrote is removed again.
struct PlotFile {
    path: PathBuf,
    file: std::fs::File,
    created: bool,
    written: bool,
}

impl PlotFile {
    fn open(path: &Path) -> Result<PlotFile, CliError> {
        if path.extension().and_then(|e| e.to_str()) != Some("svg") {
            return Err(CliError::Input(format!(
                "{}: --plot writes SVG only; name the file *.svg",
                path.display()
            )));
        }
        let existed = path.exists();
        // Not truncated yet: an existing plot stays whole if the run fails.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| {
                CliError::Input(format!(
                    "{}: --plot cannot write there: {e}",
                    path.display()
                ))
            })?;
        Ok(PlotFile {
            path: path.to_path_buf(),
            file,
            created: !existed,
            written: false,
        })
    }

    fn draw(&mut self, r: &RunReport) -> Result<(), CliError> {
        let mut svg = String::new();
        draw_plot(r, &mut svg, &self.path)?;
        let io = |source| CliError::Os {
            what: format!("writing {}", self.path.display()),
            source,
        };
        self.file.set_len(0).map_err(io)?;
        self.file.write_all(svg.as_bytes()).map_err(io)?;
        self.file.flush().map_err(io)?;
        self.written = true;
        Ok(())
    }
}

impl Drop for PlotFile {
    fn drop(&mut self) {
        if self.created && !self.written {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Draws the share of groups per VT-d bucket, one line per stage, as SVG into `out` (`path`
/// names it in errors).
fn draw_plot(r: &RunReport, out: &mut String, path: &Path) -> Result<(), CliError> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| CliError::Run(format!("{}: {e}", path.display()));
    let stages: Vec<&StageLatency> = r.latency.iter().collect();
    let share = |s: &StageLatency, b: usize| {
        if s.count == 0 {
            0.0
        } else {
            100.0 * s.buckets[b] as f64 / s.count as f64
        }
    };
    let root = SVGBackend::with_string(out, (960, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "iopf run \"{}\"{}: latency per stage ({} groups)",
                r.scenario,
                if r.split { ", two processes" } else { "" },
                r.totals.groups
            ),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.3f64..6.3f64, 0f64..100f64)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_labels(7)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && (0.0..7.0).contains(&i) {
                BUCKET_LABELS[i as usize].replace("us", "µs").to_string()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}%"))
        .x_desc("latency bucket (Linux VT-d debugfs)")
        .y_desc("% of the stage's groups")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| err(&e))?;
    let colours = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(40, 40, 40),
    ];
    for (i, s) in stages.iter().enumerate() {
        // The round trip (the last stage) is always the dark line.
        let colour = if i + 1 == stages.len() {
            colours[colours.len() - 1]
        } else {
            colours[i % (colours.len() - 1)]
        };
        let points: Vec<(f64, f64)> = (0..7).map(|b| (b as f64, share(s, b))).collect();
        let width = if i == stages.len() - 1 { 3 } else { 2 };
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(width)))
            .map_err(|e| err(&e))?
            .label(format!(
                "{} (p50 {}, p99 {})",
                s.label,
                ns(s.p50_ns as f64),
                ns(s.p99_ns as f64)
            ))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3))
            });
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// The items joined by ", ", or "none" when there are none.
fn list_or_none(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}
