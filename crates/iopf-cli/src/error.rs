//! The CLI's error type: what went wrong, in words a user can act on, and the exit status that
//! says which kind of wrong it was.
//!
//! Exit statuses, the same in every command:
//!
//! | status | meaning |
//! |---|---|
//! | 0 | done, and every group was answered exactly once |
//! | 1 | the run failed: the ledger disagrees, a group was not answered exactly once, a peer broke off, or the operating system failed the command while it ran |
//! | 2 | bad input: a bad argument, an input or scenario file that cannot be read or is wrong, a record that does not decode, a socket path where no socket can be made or no iopf producer answers, a request the producer refuses |
//! | 130 | stopped by SIGINT (the report printed is partial) |
//! | 143 | stopped by SIGTERM (the report printed is partial) |

use std::process::ExitCode;

/// The run failed (see the module's table).
pub const EXIT_FAILED: u8 = 1;
/// Bad input (see the module's table).
pub const EXIT_BAD_INPUT: u8 = 2;

/// An error that ends a subcommand.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An input file (a scenario, `decode --file`, standard input) could not be read: bad
    /// input, exit status 2.
    #[error("{path}: {source}")]
    InputFile {
        /// The file (or `<stdin>`).
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The arguments or the input are not what the subcommand needs: exit status 2.
    #[error("{0}")]
    Input(String),
    /// A record did not decode: exit status 2.
    #[error("record {index} (byte offset {offset}): {reason}")]
    Record {
        /// Which record of the input (0-based).
        index: usize,
        /// Where it begins in the input, in bytes.
        offset: usize,
        /// Why it does not decode.
        reason: String,
    },
    /// The operating system failed the command while it ran (a temporary directory, a child
    /// process, a socket that stopped working): exit status 1.
    #[error("{what}: {source}")]
    Os {
        /// What was being done.
        what: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A run could not complete (the fault path failed to set up, or one side of it stopped):
    /// exit status 1.
    #[error("{0}")]
    Run(String),
    /// A signal stopped the command before it had anything to report: exit status 130 or 143.
    #[error("stopped by {} {during}", signal.name())]
    Interrupted {
        /// The signal.
        signal: crate::signals::Signal,
        /// When, in words ("before the consumer process connected").
        during: &'static str,
    },
}

impl CliError {
    /// The process exit code: 2 for bad input, 1 for a failed run, 130 or 143 for a signal.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Interrupted { signal, .. } => signal.exit_status(),
            CliError::Os { .. } | CliError::Run(_) => EXIT_FAILED,
            CliError::InputFile { .. } | CliError::Input(_) | CliError::Record { .. } => {
                EXIT_BAD_INPUT
            }
        })
    }
}
