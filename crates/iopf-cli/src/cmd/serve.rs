//! `iopf serve`: a producer process. It creates a UNIX socket (mode 0600), and for each consumer
//! that connects (uid checked, negotiated) it runs a fault core with one PRI device whose page
//! request groups go through the fault queue, carries the consumer's responses back to the device,
//! and prints what became of every group: answered by the consumer, held back in the queue's
//! backlog while the ring was full (then delivered), answered at once by the core, or answered
//! INVALID because the consumer went away; and the queue's losses by reason. With `--unrecoverable N` the
//! device also reports N unrecoverable faults among its page requests (`IOMMU_FAULT_DMA_UNRECOV`
//! into `iommu_report_device_fault()`); they travel through the same `CoreLink` to a consumer
//! that agreed `Features::UNRECOVERABLE`, and are dropped for one that did not.
//!
//! A peer refused at connection (a uid not allowed, a request that is not offered, a peer that
//! says nothing) is named on stderr with the reason and does not count as one of `--consumers`.
//! On SIGINT or SIGTERM it stops issuing groups, gives the consumer `--drain-ms` to answer the
//! groups in flight, answers the rest INVALID (never FAILURE), prints the summary marked
//! partial, removes its socket and exits 130 or 143.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use iopf::core::{AgeLimit, DeviceId, DeviceResponse, FaultCore, PriCaps, Reported, ResponseSink};
use iopf::queue::{CoreLink, Listener, Offer, Producer, QueueError, ServeConfig};
use iopf_abi::fault::{FaultReason, UnrecoverableFlags};
use iopf_abi::{Fault, PageRequest, PageRequestFlags, Perm, ResponseCode, Unrecoverable};
use serde::Serialize;

use crate::display::flag_names;
use crate::error::CliError;
use crate::json::snake_case;
use crate::signals::{Interrupt, Signal};

/// What the producer offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OfferKind {
    /// Everything iopf implements (ABI version 2).
    Current,
    /// An old producer: ABI version 1, `iommu_fault` records and version 1 responses only.
    V1,
}

/// Arguments of `iopf serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path of the UNIX socket to create (must not exist).
    socket: PathBuf,
    /// Page request groups to send to each consumer.
    #[arg(long, default_value_t = 1000)]
    groups: u32,
    /// Page requests per group (the last one has LAST_PAGE).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    requests: u32,
    /// Give every group VT-d-style private data, from a device that needs the PASID in its
    /// responses.
    #[arg(long)]
    private_data: bool,
    /// What to offer consumers.
    #[arg(long, value_enum, default_value = "current")]
    offer: OfferKind,
    /// Largest ring (entries) to offer.
    #[arg(long, default_value_t = 4096)]
    max_entries: u32,
    /// Groups kept in flight at once (at most 256: PRG indexes are 9 bits).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=256))]
    window: u32,
    /// Also let this uid connect (repeatable). Without it, only the server's own uid may.
    #[arg(long = "allow-uid")]
    allow_uids: Vec<u32>,
    /// Unrecoverable faults to report among each consumer's page requests (spread evenly; no
    /// answer is expected for them).
    #[arg(long, default_value_t = 0)]
    unrecoverable: u32,
    /// Answer INVALID any group a consumer has held this many milliseconds (the fault core's
    /// opt-in age limit). Without it a consumer that stays connected and never answers holds its
    /// groups for ever, as with Linux's fault fd.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    age_limit_ms: Option<u64>,
    /// Consumers to serve, one after another, before exiting (peers refused at connection do
    /// not count).
    #[arg(long, default_value_t = 1)]
    consumers: u32,
    /// After SIGINT or SIGTERM: how long the consumer has to answer the groups in flight before
    /// the rest are answered INVALID.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    drain_ms: u64,
    /// Print each consumer's summary as a JSON line.
    #[arg(long)]
    json: bool,
}

/// Counts what reached the device.
#[derive(Debug, Default)]
struct DeviceSide {
    success: u64,
    invalid: u64,
    failure: u64,
    private_data_ok: u64,
}

impl ResponseSink for DeviceSide {
    fn page_response(&mut self, _device: DeviceId, r: &DeviceResponse) {
        match r.code {
            ResponseCode::Success => self.success += 1,
            ResponseCode::Invalid => self.invalid += 1,
            ResponseCode::Failure => self.failure += 1,
        }
        if r.private_data == Some(private_data(r.grpid)) {
            self.private_data_ok += 1;
        }
    }
}

impl DeviceSide {
    fn total(&self) -> u64 {
        self.success + self.invalid + self.failure
    }
}

/// One consumer's outcome.
#[derive(Debug, Default, Serialize)]
struct Summary {
    consumer: u32,
    /// A signal stopped the serving: fewer groups than `--groups` were issued.
    partial: bool,
    /// `SIGINT` or `SIGTERM` when one stopped it.
    interrupted_by: Option<&'static str>,
    abi_version: u32,
    record: String,
    features: String,
    /// Groups issued to the device (all of `--groups` unless a signal stopped it).
    groups: u64,
    responses_to_device: u64,
    success: u64,
    invalid: u64,
    failure: u64,
    answered_by_consumer: u64,
    answered_at_once: u64,
    held_back: u64,
    backlog_high_water: u64,
    /// Records lost by reason (snake-case `LossReason` names; none: empty).
    lost_by_reason: BTreeMap<String, u64>,
    answered_invalid_consumer_gone: u64,
    answered_invalid_aged: u64,
    /// Groups still held when the drain after a signal ended, answered INVALID.
    answered_invalid_at_stop: u64,
    responses_rejected: u64,
    private_data_at_device: u64,
    consumer_gone: bool,
    unrecoverable_reported: u64,
    unrecoverable_delivered: u64,
    unrecoverable_not_agreed: u64,
    unrecoverable_lost: u64,
}

fn private_data(grpid: u32) -> [u64; 2] {
    [0x5afe_0000 | u64::from(grpid), !u64::from(grpid)]
}

/// The `n`th unrecoverable fault the device reports: a permission fault at an address beyond
/// the page requests', PASID 1 (as the page requests).
fn unrecoverable_fault(n: u32) -> Fault {
    Fault::Unrecoverable(Unrecoverable {
        reason: FaultReason::Permission,
        flags: UnrecoverableFlags::PASID_VALID | UnrecoverableFlags::ADDR_VALID,
        pasid: 1,
        perm: Perm::WRITE,
        addr: 0xdead_0000_0000 + u64::from(n) * 4096,
        fetch_addr: 0,
    })
}

/// How long one wait for a consumer lasts before the stop flag is looked at again.
const ACCEPT_POLL: Duration = Duration::from_millis(100);

/// Whether an error from `Listener::accept_timeout` is the listener's own (serving cannot go on),
/// rather than one peer's refusal.
fn listener_failed(e: &QueueError) -> bool {
    use rustix::io::Errno;
    match e {
        QueueError::Os { op, source } if *op == "accept" || *op == "poll" => {
            let transient = [Errno::CONNABORTED, Errno::INTR, Errno::AGAIN, Errno::PROTO]
                .map(Errno::raw_os_error)
                .map(Some);
            !transient.contains(&source.raw_os_error())
        }
        _ => false,
    }
}

/// An error of `bind`: a socket path where no socket can be made is a bad argument (it exists,
/// its directory does not, no permission); anything else is the system's failure.
fn bind_error(path: &std::path::Path, e: QueueError) -> CliError {
    match e {
        QueueError::Os { op, .. } if op == "socket path" || op == "bind" || op == "chmod" => {
            CliError::Input(format!("{}: cannot create the socket: {e}", path.display()))
        }
        QueueError::Os { op, source } => CliError::Os {
            what: format!("{}: {op}", path.display()),
            source,
        },
        QueueError::NotAQueue { .. } => CliError::Input(format!("cannot create the socket: {e}")),
        other => CliError::Run(format!("{}: {other}", path.display())),
    }
}

/// Runs `iopf serve`.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    let mut offer = match args.offer {
        OfferKind::Current => Offer::current(),
        OfferKind::V1 => Offer::v1(),
    };
    offer.max_entries = args.max_entries;
    // No group has more requests than `--requests`: a ring that cannot hold one is refused at
    // negotiation, not left to wait at fault time.
    offer.max_group = args.requests;
    let config = ServeConfig {
        offer,
        allowed_uids: if args.allow_uids.is_empty() {
            Vec::new()
        } else {
            let mut v = args.allow_uids.clone();
            v.push(iopf::queue::own_uid());
            v
        },
        ..ServeConfig::default()
    };
    let interrupt = Interrupt::install()?;
    let listener = Listener::bind(&args.socket, config).map_err(|e| bind_error(&args.socket, e))?;
    eprintln!("iopf serve: listening on {}", args.socket.display());
    let mut all_exact = true;
    let mut served = 0u32;
    let mut refused = 0u64;
    // The listener is dropped (its socket file removed) on every way out of here.
    while served < args.consumers && !interrupt.requested() {
        let producer = match listener.accept_timeout(Some(ACCEPT_POLL)) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) if listener_failed(&e) => {
                return Err(CliError::Run(format!(
                    "{}: the listener failed: {e}",
                    args.socket.display()
                )))
            }
            Err(e) => {
                refused += 1;
                eprintln!(
                    "iopf serve: refused a peer (not counted as a consumer; {refused} refused so far): {e}"
                );
                continue;
            }
        };
        let summary = serve_one(&args, served, producer, &interrupt).map_err(|e| {
            CliError::Run(format!("{}: consumer {served}: {e}", args.socket.display()))
        })?;
        served += 1;
        all_exact &= summary.responses_to_device == summary.groups;
        if args.json {
            println!("{}", crate::json::line(&summary)?);
        } else {
            print_summary(&summary);
        }
    }
    if let Some(signal) = interrupt.signal() {
        eprintln!(
            "iopf serve: stopped by {}: {served} of {} consumers served; removing {}",
            signal.name(),
            args.consumers,
            args.socket.display()
        );
        drop(listener);
        return Ok(ExitCode::from(signal.exit_status()));
    }
    Ok(if all_exact {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::error::EXIT_FAILED)
    })
}

fn serve_one(
    args: &Args,
    index: u32,
    producer: Producer,
    interrupt: &Interrupt,
) -> Result<Summary, Box<dyn std::error::Error>> {
    let agreement = *producer.agreement();
    let mut core: FaultCore<DeviceSide> = FaultCore::new(DeviceSide::default());
    let caps = PriCaps {
        pasid_required: args.private_data,
        outstanding_allocation: 512.max(args.window * args.requests),
        ..PriCaps::default()
    };
    let dev = core.register(caps)?;
    if let Some(ms) = args.age_limit_ms {
        let limit = AgeLimit {
            limit: ms.saturating_mul(1_000_000),
            answer: Some(ResponseCode::Invalid),
        };
        core.set_age_limit(dev, Some(limit))?;
    }
    let mut link = CoreLink::attach(&mut core, dev, None, producer)?;
    let start = Instant::now();
    let now = || start.elapsed().as_nanos() as u64;
    let mut s = Summary {
        consumer: index,
        abi_version: agreement.abi_version,
        record: flag_names(&agreement.record.bits()),
        features: flag_names(&agreement.features),
        ..Summary::default()
    };
    let drain = Duration::from_millis(args.drain_ms);
    // When a signal was seen: from then on no group is issued.
    let mut stopped: Option<(Signal, Instant)> = None;
    let mut sent = 0u32;
    let mut unrecoverable = 0u32;
    let mut reqs: Vec<PageRequest> = Vec::with_capacity(args.requests as usize);
    loop {
        if stopped.is_none() {
            stopped = interrupt.signal().map(|sig| (sig, Instant::now()));
        }
        // Keep `window` groups in flight, until a signal.
        while stopped.is_none() && sent < args.groups && core.outstanding(dev)? < args.window {
            // Unrecoverable fault i goes before group i * groups / N: spread among the groups.
            while unrecoverable < args.unrecoverable
                && u64::from(unrecoverable) * u64::from(args.groups)
                    <= u64::from(sent) * u64::from(args.unrecoverable)
            {
                core.report(dev, &unrecoverable_fault(unrecoverable), now())?;
                unrecoverable += 1;
            }
            let grpid = sent % 512;
            reqs.clear();
            for i in 0..args.requests {
                let mut flags = PageRequestFlags::PASID_VALID;
                flags.set(PageRequestFlags::LAST_PAGE, i + 1 == args.requests);
                if args.private_data {
                    flags |= PageRequestFlags::PRIV_DATA;
                }
                reqs.push(PageRequest {
                    flags,
                    pasid: 1,
                    grpid,
                    perm: Perm::READ | Perm::WRITE,
                    addr: 0x10_0000 + (u64::from(sent) * 64 + u64::from(i)) * 4096,
                    private_data: if args.private_data {
                        private_data(grpid)
                    } else {
                        [0, 0]
                    },
                });
            }
            for r in &reqs {
                if let Reported::Answered { .. } =
                    core.report(dev, &Fault::PageRequest(*r), now())?
                {
                    s.answered_at_once += 1;
                }
            }
            sent += 1;
        }
        if (stopped.is_some() || sent >= args.groups) && core.outstanding(dev)? == 0 {
            break;
        }
        if let Some((_, at)) = stopped {
            if at.elapsed() >= drain {
                // The drain is over: the queue answers what the consumer holds INVALID, and the
                // core what it still owes.
                let before = core.sink().total();
                let closed = link.close(&mut core);
                s.answered_by_consumer += closed.answered as u64;
                s.answered_invalid_at_stop += core.sink().total() - before - closed.answered as u64;
                break;
            }
        }
        link.wait(Some(Duration::from_millis(100)))?;
        let before = core.sink().total();
        let pumped = link.pump(&mut core);
        s.answered_by_consumer += pumped.answered as u64;
        if args.age_limit_ms.is_some() {
            s.answered_invalid_aged += u64::from(core.expire(now()));
        }
        if pumped.detached {
            s.consumer_gone = true;
            if let Some(why) = link.consumer_misbehaviour() {
                eprintln!("iopf serve: consumer {index} dropped: {why}");
            }
            s.answered_invalid_consumer_gone +=
                core.sink().total() - before - pumped.answered as u64;
            // The rest of the groups are answered at once: nobody takes them any more (none is
            // issued after a signal).
            while stopped.is_none() && sent < args.groups {
                let r = PageRequest {
                    flags: PageRequestFlags::PASID_VALID | PageRequestFlags::LAST_PAGE,
                    pasid: 1,
                    grpid: sent % 512,
                    perm: Perm::READ,
                    addr: 0,
                    private_data: [0, 0],
                };
                core.report(dev, &Fault::PageRequest(r), now())?;
                s.answered_at_once += 1;
                sent += 1;
            }
            break;
        }
    }
    // Those not reported yet (no groups, or the consumer left): reported now, after the groups.
    while stopped.is_none() && unrecoverable < args.unrecoverable {
        core.report(dev, &unrecoverable_fault(unrecoverable), now())?;
        unrecoverable += 1;
    }
    s.groups = u64::from(sent);
    if let Some((sig, _)) = stopped {
        s.partial = true;
        s.interrupted_by = Some(sig.name());
    }
    s.unrecoverable_reported = u64::from(unrecoverable);
    let un = link.unrecoverable();
    s.unrecoverable_delivered = un.delivered;
    s.unrecoverable_not_agreed = un.not_agreed;
    s.unrecoverable_lost = un.lost;
    let ps = link.with_producer(|p| p.stats());
    s.responses_rejected = ps.rejected;
    s.held_back = ps.held_back;
    s.backlog_high_water = ps.backlog_high_water;
    s.lost_by_reason = ps
        .lost_by
        .nonzero()
        .map(|(r, n)| (snake_case(&format!("{r:?}")), n))
        .collect();
    let d = core.sink();
    s.responses_to_device = d.total();
    s.success = d.success;
    s.invalid = d.invalid;
    s.failure = d.failure;
    s.private_data_at_device = d.private_data_ok;
    Ok(s)
}

fn print_summary(s: &Summary) {
    if let Some(sig) = s.interrupted_by {
        println!("PARTIAL (interrupted by {sig}): no group issued after it; the groups in flight were drained, the rest answered INVALID");
    }
    println!(
        "consumer {}: ABI v{}, {} records, features {}",
        s.consumer, s.abi_version, s.record, s.features
    );
    println!(
        "  {} groups, {} responses reached the device (SUCCESS {}, INVALID {}, FAILURE {})",
        s.groups, s.responses_to_device, s.success, s.invalid, s.failure
    );
    println!(
        "  answered by the consumer {}, at once by the core {}, INVALID after the consumer left {}",
        s.answered_by_consumer, s.answered_at_once, s.answered_invalid_consumer_gone
    );
    println!(
        "  held back while the ring was full {} (backlog high-water {} requests); records lost: {}",
        s.held_back,
        s.backlog_high_water,
        crate::display::counts_or_none(&s.lost_by_reason)
    );
    if s.partial {
        println!(
            "  INVALID when the drain after {} ended {}",
            s.interrupted_by.unwrap_or("the stop"),
            s.answered_invalid_at_stop
        );
    }
    if s.answered_invalid_aged > 0 {
        println!("  INVALID past the age limit {}", s.answered_invalid_aged);
    }
    if s.unrecoverable_reported > 0 {
        println!(
            "  unrecoverable faults {}: delivered {}, not agreed by the consumer {}, lost {}",
            s.unrecoverable_reported,
            s.unrecoverable_delivered,
            s.unrecoverable_not_agreed,
            s.unrecoverable_lost
        );
    }
    println!(
        "  responses rejected {}, responses carrying the request's private data to the device {}{}",
        s.responses_rejected,
        s.private_data_at_device,
        if s.consumer_gone {
            ", consumer gone"
        } else {
            ""
        }
    );
}
