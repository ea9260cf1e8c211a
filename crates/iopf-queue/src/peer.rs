//! How each end learns that the other has gone: the producer holds a [`Link`] to its consumer
//! (in this process, or over the socket it was accepted on), and either end can ask whether the
//! peer of a connected socket has closed it ([`peer_closed`]).

use std::os::fd::OwnedFd;
use std::sync::Weak;

use rustix::event::{PollFd, PollFlags};

/// How the producer learns that its consumer is gone.
#[derive(Debug)]
pub(crate) enum Link {
    /// A consumer in this process holds the strong end.
    InProcess(Weak<()>),
    /// A consumer in another process holds the other end of this socket.
    Socket(OwnedFd),
}

impl Link {
    /// Whether the consumer behind the link has gone away.
    pub(crate) fn gone(&self) -> bool {
        match self {
            Link::InProcess(w) => w.strong_count() == 0,
            Link::Socket(fd) => peer_closed(fd),
        }
    }

    /// The socket, for a consumer in another process.
    pub(crate) fn socket(&self) -> Option<&OwnedFd> {
        match self {
            Link::Socket(fd) => Some(fd),
            Link::InProcess(_) => None,
        }
    }
}

/// Whether the peer of a connected socket has closed it (or died). Never blocks.
pub(crate) fn peer_closed(fd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::RDHUP)];
    match rustix::event::poll(
        &mut fds,
        Some(&rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        }),
    ) {
        Ok(0) => false,
        Ok(_) => fds[0]
            .revents()
            .intersects(PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR),
        Err(_) => false,
    }
}
