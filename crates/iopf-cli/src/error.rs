//! The CLI's error type: what went wrong, in words a user can act on.

use std::process::ExitCode;

/// An error that ends a subcommand.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Reading an input file or stdin failed.
    #[error("{path}: {source}")]
    Io {
        /// The file (or `<stdin>`).
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The input is not what the subcommand needs.
    #[error("{0}")]
    Input(String),
    /// A run of the simulated platform could not complete (the fault path failed to set up, or
    /// one side of it stopped).
    #[error("{0}")]
    Run(String),
    /// A record did not decode.
    #[error("record {index}: {source}")]
    Record {
        /// Which record of the input (0-based).
        index: usize,
        /// Why.
        source: iopf_abi::AbiError,
    },
}

impl CliError {
    /// The process exit code: 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Io { .. } | CliError::Run(_) => ExitCode::from(1),
            CliError::Input(_) | CliError::Record { .. } => ExitCode::from(2),
        }
    }
}
