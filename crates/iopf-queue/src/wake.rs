//! Wake-ups: an eventfd per direction, rung only when the other side said it sleeps.
//!
//! The sleeper spins briefly first (a cache line moves between cores in well under a
//! microsecond, waking a sleeping thread costs tens of microseconds), then raises its *sleeping*
//! word, looks once more, and only then blocks in `poll()`. The waker publishes, then swaps the
//! sleeping word to zero and rings the eventfd only if it was set.
//!
//! This is the Dekker pattern, and its two stores must not pass their loads. The waker's side is
//! the hot path (every publication), so it pays no fence: its publishing store — the stamp of the
//! first slot of the batch, the one a sleeper at that index looks at — is a `SeqCst` store, and
//! its load of the sleeping word a `SeqCst` load (on x86 an `xchg` and a plain `mov`, instead of a
//! store, an `mfence` and a load). The sleeper's side, taken once per sleep, stores its sleeping
//! word `SeqCst` and puts a `SeqCst` fence before its last look. In the C++20 memory model
//! (which Rust's atomics follow) all three are in the single total order *S*: if the waker's
//! store comes before the sleeper's fence in *S*, the sleeper's last look sees the stamp; if
//! not, the sleeper's store of the sleeping word precedes the waker's load in *S* and the waker
//! sees it. Either way a wake-up is never lost, and a busy peer is never sent a system call.

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

/// Called by the side that just published new entries, right after the `SeqCst` store that
/// published them (see the module doc: without it a wake-up can be lost): rings `bell` if the
/// peer said it sleeps.
#[inline]
pub(crate) fn wake_if_sleeping(sleeping: &AtomicU64, bell: &Doorbell) {
    if sleeping.load(Ordering::SeqCst) != 0 && sleeping.swap(0, Ordering::SeqCst) != 0 {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn count(bell: &Doorbell) -> u64 {
        let mut buf = [0u8; 8];
        match rustix::io::read(bell.fd(), &mut buf) {
            Ok(8) => u64::from_ne_bytes(buf),
            _ => 0,
        }
    }

    #[test]
    fn an_awake_peer_is_never_sent_a_wake_up_and_a_sleeper_gets_exactly_one() {
        let bell = Doorbell::new().unwrap();
        let sleeping = AtomicU64::new(0);
        for _ in 0..100 {
            wake_if_sleeping(&sleeping, &bell);
        }
        assert_eq!(count(&bell), 0, "no system call for an awake peer");
        sleeping.store(1, Ordering::SeqCst);
        for _ in 0..100 {
            wake_if_sleeping(&sleeping, &bell);
        }
        assert_eq!(count(&bell), 1, "one wake-up, then the word says awake");
        assert_eq!(sleeping.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_waiter_sees_work_published_before_it_sleeps_and_wakes_for_work_after() {
        let bell = std::sync::Arc::new(Doorbell::new().unwrap());
        let sleeping = std::sync::Arc::new(AtomicU64::new(0));
        let index = std::sync::Arc::new(AtomicU64::new(0));
        let (b2, s2, i2) = (bell.clone(), sleeping.clone(), index.clone());
        let waiter = std::thread::spawn(move || {
            wait_until(&s2, &b2, None, Some(Duration::from_secs(20)), || {
                i2.load(Ordering::Acquire) != 0
            })
            .unwrap()
        });
        std::thread::sleep(Duration::from_millis(50));
        index.store(1, Ordering::SeqCst);
        wake_if_sleeping(&sleeping, &bell);
        assert!(waiter.join().unwrap());
    }
}
