//! `iopf`: the command-line program.
//!
//! One binary, one subcommand per job; each subcommand lives in `cmd/<name>.rs` with its `Args`
//! and a `run(args) -> Result<ExitCode, CliError>`.

mod cmd;
mod display;
mod error;
mod json;
mod signals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// What `--help` says after the commands: the exit statuses and the JSON every command writes.
const AFTER_HELP: &str = "\
Exit status (every command):
  0    done; every group answered exactly once
  1    the run failed: the ledger disagrees, a group was not answered exactly once, a peer
       broke off, or the operating system failed the command while it ran
  2    bad input: a bad argument, an input or scenario file that cannot be read or is wrong,
       a record that does not decode, a --plot path that cannot be written, a socket path
       where no socket can be made (serve) or no iopf producer answers (attach), a request
       the producer refuses
  130  stopped by SIGINT, 143 stopped by SIGTERM (run and serve stop issuing faults, let the
       groups in flight be answered, answer the rest INVALID, print their report marked
       partial and remove their socket; a second signal exits at once)

JSON (--json): every document (run's report, decode's {format, records, error} with error
null or {record, offset, reason}, each line of serve and attach) is an object that begins
with \"schema_version\": 1; keys are snake_case; addresses and private data are hex strings
(\"0x7000\"); response codes are \"SUCCESS\", \"INVALID\", \"FAILURE\"; a partial run has
\"partial\": true and \"interrupted_by\": \"SIGINT\" or \"SIGTERM\"; latency buckets state
their edges (lower_ns <= t < upper_ns, null for none).";

/// The recoverable I/O page fault path of a virtualised machine.
#[derive(Debug, Parser)]
#[command(name = "iopf", version, about, long_about = None, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the simulated platform through the real fault path and report (the main job).
    Run(cmd::run::Args),
    /// Decode fault and response records given as hex or in a binary file.
    Decode(cmd::decode::Args),
    /// Serve a fault queue on a UNIX socket: a fault core and one PRI device feed each consumer.
    Serve(cmd::serve::Args),
    /// Attach to a served fault queue: print faults as they arrive and answer them by a policy.
    Attach(cmd::attach::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => cmd::run::run(args),
        Command::Decode(args) => cmd::decode::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Attach(args) => cmd::attach::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("iopf: {err}");
            err.exit_code()
        }
    }
}
