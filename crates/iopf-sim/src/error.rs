//! The crate's one error type.

use std::path::PathBuf;

/// What went wrong in the simulated platform or in a scenario. Scenario errors name the file, the
/// line and the field; platform errors name the rule that was broken.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A scenario file could not be read.
    #[error("{path}: {source}")]
    ScenarioIo {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A scenario file is not valid TOML or does not fit the scenario format.
    #[error("{file}:{line}:{column}: {field}: {message}")]
    Scenario {
        /// The file (or `<built-in>`).
        file: String,
        /// 1-based line of the offending value (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// The field, as a dotted path (`devices[1].opra`), or `-` when the file itself is bad.
        field: String,
        /// What is wrong, in plain words.
        message: String,
    },
    /// An I/O virtual address is not 4 KiB aligned where a page address is required.
    #[error("address {0:#x} is not 4 KiB aligned")]
    Unaligned(u64),
    /// A PRG index was freed that was not allocated.
    #[error("PRG index {0} is not in flight")]
    PrgIndexNotInFlight(u16),
    /// A thread of the run panicked or a channel between them closed early.
    #[error("the {0} side of the run stopped unexpectedly")]
    SideLost(&'static str),
    /// The fault path (core or queue) refused an operation.
    #[error("fault path: {0}")]
    FaultPath(String),
}

impl SimError {
    /// The errno Linux returns for the same mistake, where one exists.
    pub fn errno(&self) -> Option<i32> {
        match self {
            SimError::ScenarioIo { source, .. } => source.raw_os_error(),
            SimError::Scenario { .. }
            | SimError::Unaligned(_)
            | SimError::PrgIndexNotInFlight(_) => {
                Some(22) // EINVAL
            }
            SimError::SideLost(_) => Some(32), // EPIPE
            SimError::FaultPath(_) => None,
        }
    }
}
