//! Which wake-up handshake this process's queues use: the process-wide choice between the fenced
//! handshake (the default) and the `membarrier(2)` one (the `wake` module explains both).
//!
//! The `membarrier` handshake takes a locked instruction off every publication, but each time a
//! side goes to sleep it makes the kernel interrupt every CPU that runs a thread of a process
//! registered for `MEMBARRIER_CMD_GLOBAL_EXPEDITED`: in a VMM, its vCPU threads (a vCPU in guest
//! mode takes a VM exit for it). `docs/PERFORMANCE.md` ("membarrier in a VMM") has the figures
//! the default was chosen from: the barrier saves the publisher a few nanoseconds a record and
//! costs every busy thread of the process an interruption per sleep, so **fenced is the
//! default**, and a process that wants the other handshake asks for it.
//!
//! The choice is the process's because registration is: once registered, a process cannot
//! unregister, and every `GLOBAL_EXPEDITED` barrier on the machine interrupts its threads. A queue
//! end takes the choice when it is created; changing it later changes only queues created after.
//! A queue publishes the light way only when *both* ends chose `membarrier`, so two processes
//! that chose differently still work together (fenced).
//!
//! The environment can choose too, for a program that does not: `IOPF_WAKE_HANDSHAKE=fenced` or
//! `IOPF_WAKE_HANDSHAKE=membarrier`, read once, at the first queue or [`wake_handshake`] call,
//! and overridden by [`set_wake_handshake`]. `IOPF_NO_MEMBARRIER` (any value) forbids the
//! `membarrier` handshake whatever asks for it.
//!
//! # Example
//!
//! ```
//! use iopf_queue::{set_wake_handshake, wake_handshake, WakeHandshake};
//!
//! // The default, unless the environment says otherwise.
//! set_wake_handshake(WakeHandshake::Fenced)?;
//! assert_eq!(wake_handshake()?, WakeHandshake::Fenced);
//! // A kernel without `membarrier`, a seccomp policy or `IOPF_NO_MEMBARRIER` refuses this,
//! // with the reason; the choice then stays as it was.
//! match set_wake_handshake(WakeHandshake::Membarrier) {
//!     Ok(()) => assert_eq!(wake_handshake()?, WakeHandshake::Membarrier),
//!     Err(e) => eprintln!("membarrier handshake unavailable: {e}"),
//! }
//! # Ok::<(), iopf_queue::QueueError>(())
//! ```

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;

use rustix::thread::{membarrier, MembarrierCommand};

use crate::QueueError;

/// The environment variable that chooses the handshake for a process that does not call
/// [`set_wake_handshake`].
pub const WAKE_HANDSHAKE_ENV: &str = "IOPF_WAKE_HANDSHAKE";
/// The environment variable that forbids the `membarrier` handshake (any value).
pub const NO_MEMBARRIER_ENV: &str = "IOPF_NO_MEMBARRIER";

/// How a queue's sleeping side and its waker agree that no wake-up is lost (the
/// `wake` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WakeHandshake {
    /// The waker publishes with a `SeqCst` store and reads the sleeper's word with a `SeqCst`
    /// load; the sleeper fences. No system call, nothing interrupted. The default.
    Fenced,
    /// The waker publishes with plain stores; the sleeper calls
    /// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` before it sleeps, which interrupts every CPU
    /// running a thread of a registered process. Cheaper publication, dearer sleeps.
    Membarrier,
}

impl WakeHandshake {
    /// The name the environment variable takes.
    pub fn name(self) -> &'static str {
        match self {
            WakeHandshake::Fenced => "fenced",
            WakeHandshake::Membarrier => "membarrier",
        }
    }
}

impl std::fmt::Display for WakeHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for WakeHandshake {
    type Err = QueueError;

    /// `fenced` or `membarrier`; anything else is [`QueueError::BadSetting`] (`EINVAL`).
    fn from_str(s: &str) -> Result<WakeHandshake, QueueError> {
        match s {
            "fenced" => Ok(WakeHandshake::Fenced),
            "membarrier" => Ok(WakeHandshake::Membarrier),
            other => Err(QueueError::BadSetting {
                setting: "wake handshake",
                value: other.to_owned(),
                why: "expected `fenced` or `membarrier`".to_owned(),
            }),
        }
    }
}

const UNDECIDED: u8 = 0;
const FENCED: u8 = 1;
const MEMBARRIER: u8 = 2;

/// What [`set_wake_handshake`] chose; `UNDECIDED` until it is called (the environment decides).
static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);
/// How many barriers this process's sleepers issued.
static MEMBARRIER_CALLS: AtomicU64 = AtomicU64::new(0);

/// Chooses the handshake for queue ends this process creates from now on (see the module doc).
///
/// # Errors
///
/// For [`WakeHandshake::Membarrier`]: [`QueueError::BadSetting`] (`EINVAL`) when
/// `IOPF_NO_MEMBARRIER` is set; [`QueueError::Os`] with the kernel's errno when it refuses to
/// register the process (`EINVAL`: no `GLOBAL_EXPEDITED` in this kernel; `EPERM`: a seccomp
/// policy). The choice is then unchanged. [`WakeHandshake::Fenced`] always succeeds.
pub fn set_wake_handshake(handshake: WakeHandshake) -> Result<(), QueueError> {
    let code = match handshake {
        WakeHandshake::Fenced => FENCED,
        WakeHandshake::Membarrier => {
            register()?;
            MEMBARRIER
        }
    };
    CHOICE.store(code, Ordering::Release);
    Ok(())
}

/// The handshake queue ends created now take: what [`set_wake_handshake`] chose, else what
/// `IOPF_WAKE_HANDSHAKE` says, else [`WakeHandshake::Fenced`].
///
/// # Errors
///
/// When the environment decides and says something wrong: a value other than `fenced` or
/// `membarrier`, or `membarrier` where it cannot be had (the reasons of
/// [`set_wake_handshake`]), as [`QueueError::BadSetting`] naming the variable. Queue ends are
/// not created with such an environment: a handshake the user did not choose is not used.
pub fn wake_handshake() -> Result<WakeHandshake, QueueError> {
    match CHOICE.load(Ordering::Acquire) {
        FENCED => Ok(WakeHandshake::Fenced),
        MEMBARRIER => Ok(WakeHandshake::Membarrier),
        _ => from_env(),
    }
}

/// How many `membarrier(GLOBAL_EXPEDITED)` calls this process's queue ends made before sleeping
/// (each interrupts the CPUs running the registered processes' threads): zero under the fenced
/// handshake.
pub fn membarrier_calls() -> u64 {
    MEMBARRIER_CALLS.load(Ordering::Relaxed)
}

/// Whether a queue end created now calls `membarrier` before it sleeps and declares so to its
/// peer (the process chose, and is registered for, the `membarrier` handshake).
pub(crate) fn chose_membarrier() -> Result<bool, QueueError> {
    Ok(wake_handshake()? == WakeHandshake::Membarrier)
}

/// The sleeper's barrier of the `membarrier` handshake, counted. An error means the waker's
/// plain stores may not be seen: the caller must not sleep long on them.
pub(crate) fn sleeper_barrier() -> Result<(), rustix::io::Errno> {
    MEMBARRIER_CALLS.fetch_add(1, Ordering::Relaxed);
    membarrier(MembarrierCommand::GlobalExpedited)
}

/// Registers the process for `GLOBAL_EXPEDITED` barriers, once (a registration cannot be undone,
/// so the kernel's answer is kept).
pub(crate) fn register() -> Result<(), QueueError> {
    if std::env::var_os(NO_MEMBARRIER_ENV).is_some() {
        return Err(QueueError::BadSetting {
            setting: "wake handshake",
            value: WakeHandshake::Membarrier.name().to_owned(),
            why: format!("{NO_MEMBARRIER_ENV} is set, which forbids it"),
        });
    }
    static REGISTERED: OnceLock<Result<(), rustix::io::Errno>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| membarrier(MembarrierCommand::RegisterGlobalExpedited))
        .map_err(|e| QueueError::os("membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)", e))
}

/// The environment's choice, read once.
fn from_env() -> Result<WakeHandshake, QueueError> {
    static FROM_ENV: OnceLock<Result<WakeHandshake, (String, String)>> = OnceLock::new();
    FROM_ENV
        .get_or_init(|| {
            let Some(raw) = std::env::var_os(WAKE_HANDSHAKE_ENV) else {
                return Ok(WakeHandshake::Fenced);
            };
            let value = raw.to_string_lossy().into_owned();
            let chosen = value
                .parse::<WakeHandshake>()
                .map_err(|_| "expected `fenced` or `membarrier`".to_owned());
            match chosen {
                Ok(WakeHandshake::Membarrier) => register()
                    .map(|()| WakeHandshake::Membarrier)
                    .map_err(|e| (value, e.to_string())),
                Ok(h) => Ok(h),
                Err(why) => Err((value, why)),
            }
        })
        .clone()
        .map_err(|(value, why)| QueueError::BadSetting {
            setting: WAKE_HANDSHAKE_ENV,
            value,
            why,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_a_wrong_one_says_what_is_expected() {
        for h in [WakeHandshake::Fenced, WakeHandshake::Membarrier] {
            assert_eq!(h.name().parse::<WakeHandshake>().expect("own name"), h);
        }
        let err = "membarier".parse::<WakeHandshake>().expect_err("typo");
        assert_eq!(err.errno(), libc::EINVAL);
        let msg = err.to_string();
        assert!(
            msg.contains("membarier") && msg.contains("`fenced` or `membarrier`"),
            "{msg}"
        );
    }
}
