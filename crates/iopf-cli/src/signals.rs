//! SIGINT and SIGTERM: a request to stop, read by the commands' loops.
//!
//! The handlers only store which signal came (`signal_hook::flag`); `run` and `serve` ask
//! [`Interrupt::signal`] in their loops, stop issuing new faults, let the groups in flight be
//! answered, have the rest answered INVALID, print their report marked partial and return
//! normally (so that `serve`'s socket file is removed), and the process exits 130 (SIGINT) or
//! 143 (SIGTERM). A second SIGINT or SIGTERM while stopping ends the process at once with that
//! status, without a report: the way out of a drain that takes too long.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::error::CliError;

/// A termination signal the program stops for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Int,
    /// SIGTERM.
    Term,
}

impl Signal {
    /// `SIGINT` or `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Int => "SIGINT",
            Signal::Term => "SIGTERM",
        }
    }

    /// The exit status of a process stopped by the signal: 128 + its number (130, 143), as a
    /// shell reports a process the signal killed.
    pub fn exit_status(self) -> u8 {
        match self {
            Signal::Int => 130,
            Signal::Term => 143,
        }
    }

    fn number(self) -> i32 {
        match self {
            Signal::Int => SIGINT,
            Signal::Term => SIGTERM,
        }
    }
}

/// Which termination signal arrived, if one did; set by the signal handlers.
#[derive(Debug, Clone)]
pub struct Interrupt {
    /// The number of the last signal that came, 0 for none.
    which: Arc<AtomicUsize>,
}

impl Interrupt {
    /// Installs the handlers of SIGINT and SIGTERM for the rest of the process: the first one
    /// is recorded, a second one (of either kind) exits at once with its status.
    pub fn install() -> Result<Interrupt, CliError> {
        let which = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicBool::new(false));
        let os = |source| CliError::Os {
            what: "installing the SIGINT and SIGTERM handlers".into(),
            source,
        };
        for s in [Signal::Int, Signal::Term] {
            // In this order: the exit is armed by an earlier signal, not by this one.
            signal_hook::flag::register_conditional_shutdown(
                s.number(),
                i32::from(s.exit_status()),
                seen.clone(),
            )
            .map_err(os)?;
            signal_hook::flag::register(s.number(), seen.clone()).map_err(os)?;
            signal_hook::flag::register_usize(s.number(), which.clone(), s.number() as usize)
                .map_err(os)?;
        }
        Ok(Interrupt { which })
    }

    /// The signal that asked to stop, if one did.
    pub fn signal(&self) -> Option<Signal> {
        match self.which.load(Ordering::SeqCst) {
            0 => None,
            n if n == SIGTERM as usize => Some(Signal::Term),
            _ => Some(Signal::Int),
        }
    }

    /// Whether a signal asked to stop.
    pub fn requested(&self) -> bool {
        self.signal().is_some()
    }
}
