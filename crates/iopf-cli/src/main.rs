//! `iopf`: the command-line program.
//!
//! One binary, one subcommand per job; each subcommand lives in `cmd/<name>.rs` with its `Args`
//! and a `run(args) -> Result<ExitCode, CliError>`.

mod cmd;
mod display;
mod error;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The recoverable I/O page fault path of a virtualised machine.
#[derive(Debug, Parser)]
#[command(name = "iopf", version, about, long_about = None)]
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
