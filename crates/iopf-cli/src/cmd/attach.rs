//! `iopf attach`: a consumer process. It connects to an `iopf serve` socket, negotiates (as a new
//! or an old consumer), prints fault records as they arrive, answers each group by the chosen
//! policy, and reports the producer's verdict on every response it rejected.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use iopf::queue::{connect, Consumer, Event, QueueError, Request, ResponseVerdict};
use iopf_abi::features::RecordFormats;
use iopf_abi::{FaultConsumer, Features, IommufdResponse, ResponseCode};
use serde::Serialize;

use crate::display::flag_names;
use crate::error::CliError;
use crate::json::records::UnrecoverableOut;
use crate::json::{reason_name, ser, snake_case};

/// How to answer each group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// SUCCESS: the pages are mapped, retry.
    Success,
    /// INVALID: the pages cannot be mapped.
    Invalid,
    /// FAILURE (refused by queues that name groups by cookie, as iommufd refuses it).
    Failure,
    /// SUCCESS and INVALID in turn.
    Alternate,
    /// Never answer: the groups are answered INVALID by the producer when this consumer leaves.
    Ignore,
}

/// Which consumer to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AbiKind {
    /// A new consumer: reads the offer and asks for what it wants of it.
    Current,
    /// An old consumer: ABI version 1, `iommu_fault` records, version 1 responses.
    V1,
}

/// The fault record layout to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordKind {
    /// The seed's 64-byte `iommu_fault`, answered by (PASID, grpid).
    IommuFault,
    /// The iommufd 40-byte `iommu_hwpt_pgfault`, answered by cookie.
    Hwpt,
}

/// Arguments of `iopf attach`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path of the producer's UNIX socket.
    socket: PathBuf,
    /// How to answer each group.
    #[arg(long, value_enum, default_value = "success")]
    policy: Policy,
    /// Which consumer to be.
    #[arg(long, value_enum, default_value = "current")]
    abi: AbiKind,
    /// The record layout to ask for (a new consumer only).
    #[arg(long, value_enum, default_value = "iommu-fault")]
    record: RecordKind,
    /// Ask to echo private data (version 2 responses), if offered.
    #[arg(long)]
    echo: bool,
    /// Ring entries to ask for (a power of two; 0: the producer's default).
    #[arg(long, default_value_t = 0)]
    entries: u32,
    /// Leave after this many groups (default: when the producer goes away).
    #[arg(long)]
    groups: Option<u64>,
    /// Print only the summary.
    #[arg(long)]
    quiet: bool,
    /// Print records and the summary as JSON lines.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Line {
    Fault {
        seq: u64,
        cookie: u32,
        dev_id: u32,
        pasid: Option<u32>,
        grpid: u32,
        #[serde(serialize_with = "ser::hex")]
        addr: u64,
        perm: iopf_abi::Perm,
        last: bool,
        #[serde(serialize_with = "ser::hex_pair_opt")]
        private_data: Option<[u64; 2]>,
    },
    Lost {
        first_seq: u64,
        count: u64,
        /// The reason, if the record names one.
        reason: Option<String>,
    },
    Unrecoverable {
        seq: u64,
        dev_id: u32,
        #[serde(skip)]
        raw: iopf_abi::Unrecoverable,
        fault: UnrecoverableOut,
    },
    Rejected {
        response: u64,
        reason: String,
        errno: i32,
    },
    Summary {
        abi_version: u32,
        record: String,
        features: String,
        records: u64,
        groups_answered: u64,
        lost: u64,
        /// The producer's losses by reason (snake-case `LossReason` names), from the region
        /// header.
        producer_losses: BTreeMap<String, u64>,
        accepted: u64,
        rejected: u64,
        held_when_leaving: usize,
        answered_broken: u64,
    },
}

/// An error of `connect`: no iopf producer at the path, or a request it refuses, is bad input
/// (nothing ran); the system failing otherwise is not.
fn connect_error(path: &std::path::Path, e: QueueError) -> CliError {
    match e {
        QueueError::Os { op, source } if op == "socket" => CliError::Os {
            what: format!("{}: {op}", path.display()),
            source,
        },
        QueueError::Os { op, .. } if op == "socket path" || op == "connect" => CliError::Input(
            format!("{}: no iopf producer to attach to: {e}", path.display()),
        ),
        QueueError::NotAQueue { .. } => {
            CliError::Input(format!("no iopf producer to attach to: {e}"))
        }
        other => CliError::Input(format!("{}: {other}", path.display())),
    }
}

/// An error once attached: the queue or its peer failed.
fn session_error(path: &std::path::Path, e: impl std::fmt::Display) -> CliError {
    CliError::Run(format!("{}: {e}", path.display()))
}

fn emit(args: &Args, line: &Line) -> Result<(), CliError> {
    if args.json {
        println!("{}", crate::json::line(line)?);
        return Ok(());
    }
    match line {
        Line::Fault {
            seq,
            cookie,
            dev_id,
            pasid,
            grpid,
            addr,
            perm,
            last,
            private_data,
        } => {
            print!(
                "seq {seq} cookie {cookie:#x} dev {dev_id:#x} grpid {grpid} addr {addr:#x} perm {}",
                flag_names(perm)
            );
            if let Some(p) = pasid {
                print!(" pasid {p}");
            }
            if let Some(d) = private_data {
                print!(" private_data [{:#x}, {:#x}]", d[0], d[1]);
            }
            println!("{}", if *last { " LAST" } else { "" });
        }
        Line::Lost {
            first_seq,
            count,
            reason,
        } => match reason {
            Some(r) => println!("lost {count} records from seq {first_seq}: {r}"),
            None => println!("lost {count} records from seq {first_seq}"),
        },
        Line::Unrecoverable {
            seq,
            dev_id,
            raw: fault,
            ..
        } => {
            print!(
                "seq {seq} unrecoverable dev {dev_id:#x} reason {} addr {:#x} fetch_addr {:#x} perm {} flags {}",
                reason_name(fault.reason),
                fault.addr,
                fault.fetch_addr,
                flag_names(&fault.perm),
                flag_names(&fault.flags)
            );
            if fault
                .flags
                .contains(iopf_abi::fault::UnrecoverableFlags::PASID_VALID)
            {
                print!(" pasid {}", fault.pasid);
            }
            println!();
        }
        Line::Rejected {
            response,
            reason,
            errno,
        } => {
            println!("response {response} rejected: {reason} (errno {errno})")
        }
        Line::Summary {
            abi_version,
            record,
            features,
            records,
            groups_answered,
            lost,
            producer_losses,
            accepted,
            rejected,
            held_when_leaving,
            answered_broken,
        } => {
            println!("ABI v{abi_version}, {record} records, features {features}");
            println!("{records} records, {groups_answered} groups answered, {lost} records lost");
            println!(
                "the producer's losses by reason: {}",
                crate::display::counts_or_none(producer_losses)
            );
            if *answered_broken > 0 {
                println!("{answered_broken} groups with an unreadable record answered INVALID by this consumer");
            }
            println!("responses accepted {accepted}, rejected {rejected}; {held_when_leaving} groups left unanswered (the producer answers them INVALID)");
        }
    }
    Ok(())
}

fn choose(args: &Args, offer: &iopf::queue::Offer) -> Request {
    let mut r = match args.abi {
        AbiKind::V1 => Request::v1(),
        AbiKind::Current => {
            let record = match args.record {
                RecordKind::IommuFault => RecordFormats::IOMMU_FAULT,
                RecordKind::Hwpt => RecordFormats::HWPT_PGFAULT,
            };
            // UNRECOVERABLE is dropped from the request for the iommufd record (no such form).
            let mut want = Features::LOSS_RECORDS | Features::UNRECOVERABLE;
            if args.echo {
                want |= Features::PRIV_DATA_ECHO;
            }
            if args.record == RecordKind::Hwpt {
                want |= Features::COOKIE_RESPONSE;
            }
            // Not offered at all: ask for it anyway, and let the producer say no in its words.
            Request::best_for(offer, record, want).unwrap_or(Request {
                abi_version: offer.abi_version,
                record,
                responses: iopf_abi::features::ResponseFormats::COOKIE,
                features: Features::COOKIE_RESPONSE,
                entries: 0,
            })
        }
    };
    r.entries = args.entries;
    r
}

/// Runs `iopf attach`.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    let mut c =
        connect(&args.socket, |o| choose(&args, o)).map_err(|e| connect_error(&args.socket, e))?;
    let mut events = Vec::new();
    let mut verdicts: Vec<ResponseVerdict> = Vec::new();
    let mut answered = 0u64;
    let mut turn = 0u64;
    loop {
        if args.groups.is_some_and(|n| answered >= n) {
            break;
        }
        let ready = c
            .wait(Some(Duration::from_millis(200)))
            .map_err(|e| session_error(&args.socket, e))?;
        if !ready && c.producer_gone() {
            break;
        }
        events.clear();
        if let Err(e) = c.pop_events(&mut events, 256) {
            eprintln!("iopf attach: {e}");
        }
        let mut responses = Vec::new();
        for ev in &events {
            match ev {
                Event::Fault(f) => {
                    if !args.quiet {
                        let r = &f.request;
                        emit(
                            &args,
                            &Line::Fault {
                                seq: f.seq,
                                cookie: f.cookie,
                                dev_id: f.dev_id,
                                pasid: r.pasid(),
                                grpid: r.grpid,
                                addr: r.addr,
                                perm: r.perm,
                                last: r.is_last(),
                                private_data: r
                                    .flags
                                    .contains(iopf_abi::PageRequestFlags::PRIV_DATA)
                                    .then_some(r.private_data),
                            },
                        )?;
                    }
                    if f.request.is_last()
                        && args
                            .groups
                            .is_none_or(|n| answered + (responses.len() as u64) < n)
                    {
                        let code = match args.policy {
                            Policy::Success => Some(ResponseCode::Success),
                            Policy::Invalid => Some(ResponseCode::Invalid),
                            Policy::Failure => Some(ResponseCode::Failure),
                            Policy::Alternate => {
                                turn += 1;
                                Some(if turn % 2 == 1 {
                                    ResponseCode::Success
                                } else {
                                    ResponseCode::Invalid
                                })
                            }
                            Policy::Ignore => None,
                        };
                        match code {
                            Some(code) => responses.push(IommufdResponse {
                                cookie: f.cookie,
                                code,
                            }),
                            None => answered += 1,
                        }
                    }
                }
                Event::Unrecoverable { seq, dev_id, fault } => {
                    if !args.quiet {
                        emit(
                            &args,
                            &Line::Unrecoverable {
                                seq: *seq,
                                dev_id: *dev_id,
                                raw: *fault,
                                fault: fault.into(),
                            },
                        )?;
                    }
                }
                Event::Lost {
                    first_seq,
                    count,
                    reason,
                } => {
                    if !args.quiet {
                        emit(
                            &args,
                            &Line::Lost {
                                first_seq: *first_seq,
                                count: *count,
                                reason: reason
                                    .map(|r| format!("{} ({r})", snake_case(&format!("{r:?}")))),
                            },
                        )?;
                    }
                }
            }
        }
        answered += send_all(&mut c, &responses, &args)?;
        report_verdicts(&mut c, &mut verdicts, &args)?;
    }
    // Give the producer a moment to judge the last responses, then report its verdicts.
    let deadline = Instant::now() + Duration::from_millis(500);
    while c.stats().accepted + c.stats().rejected < sent_responses(&c) && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
        report_verdicts(&mut c, &mut verdicts, &args)?;
    }
    report_verdicts(&mut c, &mut verdicts, &args)?;
    let s = c.stats();
    let a = *c.agreement();
    emit(
        &args,
        &Line::Summary {
            abi_version: a.abi_version,
            record: flag_names(&a.record.bits()),
            features: flag_names(&a.features),
            records: s.records,
            groups_answered: answered,
            lost: s.lost,
            producer_losses: c
                .producer_losses()
                .nonzero()
                .map(|(r, n)| (snake_case(&format!("{r:?}")), n))
                .collect(),
            accepted: s.accepted,
            rejected: s.rejected,
            held_when_leaving: c.held_groups(),
            answered_broken: s.answered_broken,
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

fn sent_responses(c: &Consumer) -> u64 {
    c.responses_sent()
}

/// Sends every response, waiting for room when the response ring is full.
fn send_all(c: &mut Consumer, responses: &[IommufdResponse], args: &Args) -> Result<u64, CliError> {
    let mut done = 0;
    while done < responses.len() {
        match c.respond(&responses[done..]) {
            Ok(0) => {
                if c.producer_gone() {
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            Ok(n) => done += n,
            Err(e) => {
                eprintln!("iopf attach: response refused: {e}");
                done += 1;
            }
        }
    }
    let _ = args;
    Ok(done as u64)
}

fn report_verdicts(
    c: &mut Consumer,
    buf: &mut Vec<ResponseVerdict>,
    args: &Args,
) -> Result<(), CliError> {
    buf.clear();
    c.take_verdicts(buf);
    for v in buf.iter() {
        if let Err(r) = v.outcome {
            emit(
                args,
                &Line::Rejected {
                    response: v.id,
                    reason: r.reason.to_string(),
                    errno: r.errno,
                },
            )?;
        }
    }
    Ok(())
}
