//! Wake-ups: an eventfd per direction, rung only when the other side said it sleeps.
//!
//! The sleeper spins briefly first (a cache line moves between cores in well under a
//! microsecond, waking a sleeping thread costs tens of microseconds), then raises its *sleeping*
//! word, looks once more, and only then blocks in `poll()`. The waker publishes, then swaps the
//! sleeping word to zero and rings the eventfd only if it was set.
//!
//! This is the Dekker pattern: neither side's store may pass its own later load, or both can
//! miss the other (the waker reads "awake" while the sleeper's last look misses the record) and
//! the sleeper sleeps on a published record. The waker's side is the hot path — every
//! publication — and the sleeper's is taken once per sleep, so the barrier is made as cheap as
//! possible on the waker's side, in one of two ways ([`Publish`]):
//!
//! * **Light** (when both processes chose the `membarrier` handshake, [`crate::handshake`]): the
//!   waker publishes with a plain `Release` store and reads the sleeping word with a plain load,
//!   separated only by a compiler fence; the *sleeper*, after raising its sleeping word and
//!   before its last look, calls `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, which makes every
//!   running thread of every registered process (the waker's, which registered) execute a full
//!   memory barrier before it returns. That barrier falls somewhere in the waker's program: if
//!   after its publishing store, the store is visible when the sleeper looks; if before its load
//!   of the sleeping word, that load sees the sleeper's store. Either way the wake-up is not
//!   lost. This is the asymmetric fence of liburcu's `sys_membarrier` flavour and folly's
//!   `asymmetricHeavyBarrier`: it takes a locked instruction (and, on x86, its wait for the
//!   published line to be owned) off every publication, and interrupts every CPU running a
//!   registered process's thread at every sleep.
//! * **Fenced** (the default, and whenever either side did not choose `membarrier`): the
//!   publishing store is `SeqCst` and so is the load of the sleeping word (on x86 an `xchg` and a
//!   plain `mov`); the sleeper stores its word `SeqCst` and puts a `SeqCst` fence before its
//!   last look. In the C++20 memory model all three are in the single total order *S*: if the
//!   waker's store precedes the sleeper's fence in *S*, the sleeper's look sees it; if not, the
//!   sleeper's store precedes the waker's load in *S*, which sees it.
//!
//! The sleeper always does the fenced side, and also calls `membarrier` when it declared that it
//! chose the `membarrier` handshake, so a waker may switch from fenced to light at any time once
//! it has seen that declaration; a waker whose peer did not declare stays fenced. A peer that
//! declares and then does not call `membarrier` only delays its own wake-ups.

use std::os::fd::OwnedFd;
use std::sync::atomic::{compiler_fence, Ordering};
use std::time::{Duration, Instant};

use rustix::event::EventfdFlags;
#[cfg(not(iopf_loom))]
use rustix::event::{PollFd, PollFlags};

use crate::handshake::sleeper_barrier;
use crate::sync::{fence, AtomicU64};
use crate::QueueError;

/// How many times a sleeper looks before it sleeps. Under loom once: the spin is a shortcut
/// past the handshake, which is what the model checks.
pub const SPIN_LOOKS: u32 = if cfg!(iopf_loom) { 1 } else { 4096 };

/// One direction's eventfd (non-blocking).
#[derive(Debug)]
pub(crate) struct Doorbell {
    fd: OwnedFd,
    /// Under loom a sleep cannot be a `poll()` (loom runs its threads on one), so the counter is
    /// also kept here, and a wait sleeps on a loom condition variable: a wake-up the protocol
    /// loses leaves the sleeper blocked, which loom reports as a deadlock.
    #[cfg(iopf_loom)]
    model: std::sync::Arc<model::Bell>,
}

impl Doorbell {
    pub fn new() -> Result<Doorbell, QueueError> {
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| QueueError::os("eventfd", e))?;
        Ok(Doorbell::from_fd(fd))
    }

    pub fn from_fd(fd: OwnedFd) -> Doorbell {
        Doorbell {
            fd,
            #[cfg(iopf_loom)]
            model: Default::default(),
        }
    }

    /// A second handle on the same counter (the descriptor duplicated), for the other end of an
    /// in-process queue.
    pub fn twin(&self) -> Result<Doorbell, QueueError> {
        let fd = self.fd.try_clone().map_err(|e| QueueError::os("dup", e))?;
        Ok(Doorbell {
            fd,
            #[cfg(iopf_loom)]
            model: self.model.clone(),
        })
    }

    /// A doorbell a peer sent: it must be an eventfd (where `/proc` can tell), and it is made
    /// non-blocking whatever the peer made it, so that no read or write of it can hang this side
    /// (a blocking eventfd from a hostile or confused producer hung a timed wait in its drain).
    pub fn from_peer(fd: OwnedFd) -> Result<Doorbell, QueueError> {
        use std::os::fd::AsRawFd;
        if let Ok(target) = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
            if target.as_os_str() != "anon_inode:[eventfd]" {
                return Err(QueueError::Protocol(
                    "a doorbell descriptor from the peer is not an eventfd",
                ));
            }
        }
        let flags =
            rustix::fs::fcntl_getfl(&fd).map_err(|e| QueueError::os("fcntl(F_GETFL)", e))?;
        rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)
            .map_err(|e| QueueError::os("fcntl(F_SETFL, O_NONBLOCK)", e))?;
        Ok(Doorbell::from_fd(fd))
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Adds one to the counter. A full counter (`EAGAIN`, which only a peer writing huge values
    /// can cause) already wakes the reader, so it is not an error.
    pub fn ring(&self) {
        let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
        #[cfg(iopf_loom)]
        self.model.ring();
    }

    /// Resets the counter without waiting (before a sleeper declares itself again, so that a
    /// stale ring does not end its next sleep at once).
    pub fn drain(&self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.fd, &mut buf);
        #[cfg(iopf_loom)]
        self.model.drain();
    }

    /// Waits until the counter is non-zero, `extra` (a peer's socket) has news, or `timeout`
    /// passes, then resets the counter. Says which.
    #[cfg(not(iopf_loom))]
    pub fn wait(
        &self,
        extra: Option<&OwnedFd>,
        timeout: Option<Duration>,
    ) -> Result<BellEnd, QueueError> {
        let ts = timeout.map(|t| rustix::event::Timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        let mut fds = [
            PollFd::new(&self.fd, PollFlags::IN),
            PollFd::new(extra.unwrap_or(&self.fd), PollFlags::IN | PollFlags::RDHUP),
        ];
        let polled = if extra.is_some() { 2 } else { 1 };
        let end = match rustix::event::poll(&mut fds[..polled], ts.as_ref()) {
            Ok(0) => BellEnd::TimedOut,
            Ok(_) if polled == 2 && !fds[1].revents().is_empty() => BellEnd::Peer,
            Ok(_) => BellEnd::Rung,
            // A signal: as good as a wake-up, the caller looks again.
            Err(rustix::io::Errno::INTR) => BellEnd::Rung,
            Err(e) => return Err(QueueError::os("poll", e)),
        };
        self.drain();
        Ok(end)
    }

    /// [`Doorbell::wait`] under loom: sleeps until the counter is non-zero, then resets it.
    /// `extra` and `timeout` are not modelled (the models pass neither): a wait that needs them
    /// to end is a wake-up the protocol lost.
    #[cfg(iopf_loom)]
    pub fn wait(
        &self,
        _extra: Option<&OwnedFd>,
        _timeout: Option<Duration>,
    ) -> Result<BellEnd, QueueError> {
        self.model.wait();
        self.drain();
        Ok(BellEnd::Rung)
    }
}

/// The doorbell's counter as loom sees it.
#[cfg(iopf_loom)]
mod model {
    use loom::sync::{Condvar, Mutex};

    #[derive(Debug, Default)]
    pub struct Bell {
        count: Mutex<u64>,
        rung: Condvar,
    }

    impl Bell {
        pub fn ring(&self) {
            let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
            *count += 1;
            self.rung.notify_all();
        }

        pub fn drain(&self) {
            *self.count.lock().unwrap_or_else(|p| p.into_inner()) = 0;
        }

        pub fn wait(&self) {
            let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
            while *count == 0 {
                count = self.rung.wait(count).unwrap_or_else(|p| p.into_inner());
            }
        }
    }
}

/// How a [`Doorbell::wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BellEnd {
    /// The bell rang (or a signal came).
    Rung,
    /// The peer's socket has news: it closed, or the peer wrote to it.
    Peer,
    /// The timeout passed.
    // Under loom no wait times out: the models pass no timeout.
    #[cfg_attr(iopf_loom, allow(dead_code))]
    TimedOut,
}

/// How a waker publishes (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Publish {
    /// The sleeper calls `membarrier` before its last look: plain stores and loads here.
    Light,
    /// The sleeper does not: a `SeqCst` store and a `SeqCst` load.
    Fenced,
}

/// Publishes `value` into `word` (the store that makes the new entries visible), then rings
/// `bell` if the peer said it sleeps.
#[inline]
pub(crate) fn publish_and_wake(
    word: &AtomicU64,
    value: u64,
    sleeping: &AtomicU64,
    bell: &Doorbell,
    how: Publish,
) {
    let asleep = match how {
        Publish::Light => {
            word.store(value, Ordering::Release);
            // Keeps the compiler from hoisting the load above the store; the sleeper's
            // `membarrier` does what a fence would on this CPU.
            compiler_fence(Ordering::SeqCst);
            sleeping.load(Ordering::Relaxed) != 0
        }
        Publish::Fenced => {
            word.store(value, Ordering::SeqCst);
            sleeping.load(Ordering::SeqCst) != 0
        }
    };
    if asleep && sleeping.swap(0, Ordering::SeqCst) != 0 {
        bell.ring();
    }
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woke {
    /// `ready()` was true without sleeping.
    Ready,
    /// After sleeping, woken by the bell (or `extra`, or a signal), and `ready()`.
    Rung,
    /// The timeout passed; `ready()` said what it says.
    TimedOut(bool),
    /// The peer's socket has news (it closed or wrote): the caller looks at the peer.
    Peer,
}

/// Waits until `ready()` is true or `timeout` passes: spins, then raises `sleeping`, looks again,
/// and blocks on `bell`. Returns the last `ready()`. `heavy`: this side declared that it chose the
/// `membarrier` handshake, so its peer may publish [`Publish::Light`], and it must call
/// `membarrier` before its last look.
pub(crate) fn wait_until(
    sleeping: &AtomicU64,
    bell: &Doorbell,
    extra: Option<&OwnedFd>,
    timeout: Option<Duration>,
    heavy: bool,
    ready: impl FnMut() -> bool,
) -> Result<bool, QueueError> {
    Ok(
        match wait_until_woke(sleeping, bell, extra, timeout, heavy, ready)? {
            Woke::Ready | Woke::Rung | Woke::Peer => true,
            Woke::TimedOut(r) => r,
        },
    )
}

/// [`wait_until`], saying how the wait ended.
pub(crate) fn wait_until_woke(
    sleeping: &AtomicU64,
    bell: &Doorbell,
    extra: Option<&OwnedFd>,
    timeout: Option<Duration>,
    heavy: bool,
    mut ready: impl FnMut() -> bool,
) -> Result<Woke, QueueError> {
    if timeout == Some(Duration::ZERO) {
        return Ok(if ready() {
            Woke::Ready
        } else {
            Woke::TimedOut(false)
        });
    }
    for _ in 0..SPIN_LOOKS {
        if ready() {
            return Ok(Woke::Ready);
        }
        std::hint::spin_loop();
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        sleeping.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        // A registered process's `membarrier` does not fail; if it ever did, a light waker's
        // publication could be missed, so this side then sleeps a millisecond at a time.
        let barrier_failed = heavy && sleeper_barrier().is_err();
        if ready() {
            sleeping.store(0, Ordering::Relaxed);
            return Ok(Woke::Ready);
        }
        let left = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => {
                    sleeping.store(0, Ordering::Relaxed);
                    return Ok(Woke::TimedOut(ready()));
                }
            },
            None => None,
        };
        let left = match (barrier_failed, left) {
            (true, Some(l)) => Some(l.min(Duration::from_millis(1))),
            (true, None) => Some(Duration::from_millis(1)),
            (false, l) => l,
        };
        let end = bell.wait(extra, left)?;
        sleeping.store(0, Ordering::Relaxed);
        if end == BellEnd::Peer {
            // Not `ready()`'s business (it must stay cheap: it runs in the spin): the caller
            // asks the peer what happened, and a peer that wrote junk is dropped there, so the
            // socket is not polled again and cannot keep this loop awake.
            return Ok(Woke::Peer);
        }
        let woken = end == BellEnd::Rung;
        if !woken && deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Woke::TimedOut(ready()));
        }
        if ready() {
            return Ok(if woken { Woke::Rung } else { Woke::Ready });
        }
    }
}

/// The non-blocking half of [`wait_until`], for an event loop that sleeps on the bell's file
/// descriptor itself: resets the bell, raises `sleeping`, makes that visible to a light waker
/// (`membarrier` when `heavy`) and looks once more. Returns `ready()`; when it is false, the
/// waker rings the bell for the next publication, so the caller may sleep on it. When it is
/// true the word is lowered again and the caller goes to work instead.
pub(crate) fn arm(
    sleeping: &AtomicU64,
    bell: &Doorbell,
    heavy: bool,
    mut ready: impl FnMut() -> bool,
) -> bool {
    if ready() {
        return true;
    }
    bell.drain();
    sleeping.store(1, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    if heavy && sleeper_barrier().is_err() {
        // A light waker's publication could be missed: do not let the caller sleep on it
        // (a registered process's `membarrier` does not fail; this is belt and braces).
        sleeping.store(0, Ordering::Relaxed);
        return true;
    }
    if ready() {
        sleeping.store(0, Ordering::Relaxed);
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn count(bell: &Doorbell) -> u64 {
        let mut buf = [0u8; 8];
        match rustix::io::read(bell.fd(), &mut buf) {
            Ok(8) => u64::from_ne_bytes(buf),
            _ => 0,
        }
    }

    #[test]
    fn a_doorbell_from_a_peer_is_made_non_blocking_and_must_be_an_eventfd() {
        // A peer that sends a blocking eventfd: a timed wait still ends at its timeout (the
        // drain after it used to block for ever on a zero counter).
        let blocking = rustix::event::eventfd(0, EventfdFlags::CLOEXEC).expect("eventfd");
        let bell = Doorbell::from_peer(blocking).expect("an eventfd");
        let end = bell
            .wait(None, Some(Duration::from_millis(10)))
            .expect("poll");
        assert_eq!(end, BellEnd::TimedOut);
        bell.drain();
        // A pipe is not a doorbell.
        let (r, _w) = std::io::pipe().expect("pipe");
        let err = Doorbell::from_peer(OwnedFd::from(r)).expect_err("a pipe");
        assert_eq!(err.errno(), libc::EPROTO, "{err}");
    }

    #[test]
    fn an_awake_peer_is_never_sent_a_wake_up_and_a_sleeper_gets_exactly_one() {
        for how in [Publish::Light, Publish::Fenced] {
            let bell = Doorbell::new().unwrap();
            let (word, sleeping) = (AtomicU64::new(0), AtomicU64::new(0));
            for i in 0..100 {
                publish_and_wake(&word, i, &sleeping, &bell, how);
            }
            assert_eq!(
                count(&bell),
                0,
                "no system call for an awake peer ({how:?})"
            );
            sleeping.store(1, Ordering::SeqCst);
            for i in 0..100 {
                publish_and_wake(&word, i, &sleeping, &bell, how);
            }
            assert_eq!(
                count(&bell),
                1,
                "one wake-up, then the word says awake ({how:?})"
            );
            assert_eq!(sleeping.load(Ordering::SeqCst), 0);
            assert_eq!(word.load(Ordering::SeqCst), 99);
        }
    }

    /// A waiter and a publisher in lock step, the publisher pausing now and then long enough for
    /// the waiter to go to sleep. A lost wake-up leaves the waiter asleep on a published value
    /// until its 60-second timeout, which this test reports as a failure: every wait must end
    /// ready or rung, never timed out.
    fn no_wake_up_is_lost(how: Publish, heavy: bool) {
        const ROUNDS: u64 = 300;
        let bell = Arc::new(Doorbell::new().unwrap());
        let sleeping = Arc::new(AtomicU64::new(0));
        let index = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let (b2, s2, i2, d2) = (bell.clone(), sleeping.clone(), index.clone(), done.clone());
        let waiter = std::thread::spawn(move || {
            let mut outcomes = Vec::new();
            for round in 1..=ROUNDS {
                let woke =
                    wait_until_woke(&s2, &b2, None, Some(Duration::from_secs(60)), heavy, || {
                        i2.load(Ordering::Acquire) >= round
                    })
                    .unwrap();
                outcomes.push(woke);
                d2.store(round, Ordering::Release);
            }
            outcomes
        });
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 1..=ROUNDS {
            // Lock step: the waiter is waiting for this round when it is published.
            while done.load(Ordering::Acquire) < round - 1 {
                std::hint::spin_loop();
            }
            if rng.u8(0..4) == 0 {
                // Long enough for the waiter's spinning to give up.
                std::thread::sleep(Duration::from_millis(2));
            } else {
                for _ in 0..rng.u32(0..5000) {
                    std::hint::spin_loop();
                }
            }
            publish_and_wake(&index, round, &sleeping, &bell, how);
        }
        let outcomes = waiter.join().unwrap();
        let lost = outcomes
            .iter()
            .filter(|w| matches!(w, Woke::TimedOut(_)))
            .count();
        assert_eq!(lost, 0, "wake-ups lost ({how:?})");
        assert!(
            outcomes.contains(&Woke::Rung),
            "the waiter never slept, so the handshake was not exercised"
        );
    }

    #[test]
    fn no_wake_up_is_lost_fenced() {
        no_wake_up_is_lost(Publish::Fenced, false);
    }

    #[test]
    fn no_wake_up_is_lost_light_with_membarrier() {
        // The light handshake is only used when this process registered; on a kernel without
        // `membarrier` it is never chosen, and the fenced test covers what runs there.
        if let Err(e) = crate::handshake::register() {
            eprintln!("membarrier handshake unavailable ({e}): light mode unused");
            return;
        }
        no_wake_up_is_lost(Publish::Light, true);
    }
}
