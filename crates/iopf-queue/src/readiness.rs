//! Event loops: what a queue end has to do ([`Readiness`]), and the one file descriptor an
//! epoll, mio or tokio loop sleeps on for it.
//!
//! Every end ([`Consumer`](crate::Consumer), [`Producer`](crate::Producer),
//! [`CoreLink`](crate::CoreLink)) implements `AsFd`. The descriptor is
//! level-triggered readable once the end has been *armed* and something it asked for may have
//! happened; it is never written by the loop. The protocol, the same for every end:
//!
//! ```text
//!   loop {
//!       let r = end.arm(want)?;          // look; if nothing, declare "I sleep" (the peer rings)
//!       if r.is_empty() { epoll_wait / AsyncFd::readable on end.as_fd() }
//!       do the work `end.ready()` names: read faults, respond, pump, ...
//!   }
//! ```
//!
//! Arming is what makes the descriptor trustworthy: a peer rings the eventfd only for an end
//! that said it sleeps (the wake-up handshake of the `wake` module), so an end that goes to sleep
//! on the descriptor without arming may sleep on published work. An armed end that wakes for any
//! other reason need not disarm: the word costs at most one spurious ring.
//!
//! For an end whose peer is in another process, the descriptor is an epoll set of the eventfd
//! and the socket, so the peer's death (the socket closes) wakes the loop too.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::epoll;

use crate::QueueError;

bitflags::bitflags! {
    /// What a queue end can do now without waiting. Each end names the flags it uses; the others
    /// stay clear.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Readiness: u32 {
        /// Consumer: records wait to be read.
        const FAULTS = 1 << 0;
        /// Consumer: the response ring has room for at least one response.
        const RESPONSE_ROOM = 1 << 1;
        /// Producer and link: responses wait to be judged ([`crate::Producer::drain_responses`],
        /// [`crate::CoreLink::pump`]).
        const RESPONSES = 1 << 2;
        /// Producer and link: groups are held back and the fault ring has room for them (the
        /// same calls deliver them).
        const FAULT_ROOM = 1 << 3;
        /// Either end: the other end has gone away (closed, died, or broke the protocol and was
        /// dropped). Always reported, whether asked for or not.
        const PEER_GONE = 1 << 4;
    }
}

/// The descriptor an end's event loop sleeps on: its own eventfd, or an epoll set of the eventfd
/// and the peer's socket.
#[derive(Debug)]
pub(crate) enum PollFd {
    /// The eventfd alone (a peer in this process).
    Bell(OwnedFd),
    /// An epoll set of the eventfd and the socket (a peer in another process).
    Set(OwnedFd),
}

impl PollFd {
    /// The descriptor for an end whose bell is `bell` and whose peer, if in another process,
    /// holds the other end of `socket`. Duplicates `bell` (the end keeps its own).
    pub(crate) fn new(bell: &OwnedFd, socket: Option<&OwnedFd>) -> Result<PollFd, QueueError> {
        let Some(socket) = socket else {
            let dup = bell.try_clone().map_err(|e| QueueError::os("dup", e))?;
            return Ok(PollFd::Bell(dup));
        };
        let set = epoll::create(epoll::CreateFlags::CLOEXEC)
            .map_err(|e| QueueError::os("epoll_create1", e))?;
        epoll::add(
            &set,
            bell,
            epoll::EventData::new_u64(0),
            epoll::EventFlags::IN,
        )
        .map_err(|e| QueueError::os("epoll_ctl", e))?;
        epoll::add(
            &set,
            socket,
            epoll::EventData::new_u64(1),
            epoll::EventFlags::IN | epoll::EventFlags::RDHUP,
        )
        .map_err(|e| QueueError::os("epoll_ctl", e))?;
        Ok(PollFd::Set(set))
    }

    /// Stops watching `socket` (its peer was dropped for writing to it: its unread bytes would
    /// keep the set readable for ever).
    pub(crate) fn forget_socket(&self, socket: &OwnedFd) {
        if let PollFd::Set(set) = self {
            let _ = epoll::delete(set, socket);
        }
    }
}

impl AsFd for PollFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            PollFd::Bell(fd) | PollFd::Set(fd) => fd.as_fd(),
        }
    }
}
