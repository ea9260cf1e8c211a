//! Wake-ups: an eventfd per direction, rung only when the other side said it sleeps.
//!
//! The sleeper spins briefly first (a cache line moves between cores in well under a
//! microsecond, waking a sleeping thread costs tens of microseconds), then raises its *sleeping*
//! word, looks once more, and only then blocks in `poll()`. The waker publishes its index, then
//! swaps the sleeping word to zero and rings the eventfd only if it was set. Both sides put a
//! `SeqCst` fence between their store and their load (the Dekker pattern), so either the sleeper's
//! last look sees the new index or the waker sees the sleeping word: a wake-up is never lost, and
//! a busy peer is never sent a system call.

use std::os::fd::OwnedFd;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{EventfdFlags, PollFd, PollFlags};

use crate::QueueError;

/// How many times a sleeper looks before it sleeps.
pub const SPIN_LOOKS: u32 = 4096;

/// One direction's eventfd (non-blocking).
#[derive(Debug)]
pub(crate) struct Doorbell {
    fd: OwnedFd,
}

impl Doorbell {
    pub fn new() -> Result<Doorbell, QueueError> {
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| QueueError::os("eventfd", e))?;
        Ok(Doorbell { fd })
    }

    pub fn from_fd(fd: OwnedFd) -> Doorbell {
        Doorbell { fd }
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Adds one to the counter. A full counter (`EAGAIN`, which only a peer writing huge values
    /// can cause) already wakes the reader, so it is not an error.
    pub fn ring(&self) {
        let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
    }

    /// Waits until the counter is non-zero, `extra` (a peer's socket) has news, or `timeout`
    /// passes, then resets the counter.
    pub fn wait(
        &self,
        extra: Option<&OwnedFd>,
        timeout: Option<Duration>,
    ) -> Result<(), QueueError> {
        let ts = timeout.map(|t| rustix::event::Timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        let mut fds = vec![PollFd::new(&self.fd, PollFlags::IN)];
        if let Some(fd) = extra {
            fds.push(PollFd::new(fd, PollFlags::IN | PollFlags::RDHUP));
        }
        match rustix::event::poll(&mut fds, ts.as_ref()) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(QueueError::os("poll", e)),
        }
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.fd, &mut buf);
        Ok(())
    }
}

/// Called by the side that just published new entries: rings `bell` if the peer said it sleeps.
pub(crate) fn wake_if_sleeping(sleeping: &AtomicU64, bell: &Doorbell) {
    fence(Ordering::SeqCst);
    if sleeping.load(Ordering::Relaxed) != 0 && sleeping.swap(0, Ordering::SeqCst) != 0 {
        bell.ring();
    }
}

/// Waits until `ready()` is true or `timeout` passes: spins, then raises `sleeping`, looks again,
/// and blocks on `bell`. Returns the last `ready()`.
pub(crate) fn wait_until(
    sleeping: &AtomicU64,
    bell: &Doorbell,
    extra: Option<&OwnedFd>,
    timeout: Option<Duration>,
    mut ready: impl FnMut() -> bool,
) -> Result<bool, QueueError> {
    if timeout == Some(Duration::ZERO) {
        return Ok(ready());
    }
    for _ in 0..SPIN_LOOKS {
        if ready() {
            return Ok(true);
        }
        std::hint::spin_loop();
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        sleeping.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if ready() {
            sleeping.store(0, Ordering::Relaxed);
            return Ok(true);
        }
        let left = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => {
                    sleeping.store(0, Ordering::Relaxed);
                    return Ok(ready());
                }
            },
            None => None,
        };
        bell.wait(extra, left)?;
        sleeping.store(0, Ordering::Relaxed);
        if ready() {
            return Ok(true);
        }
    }
}
