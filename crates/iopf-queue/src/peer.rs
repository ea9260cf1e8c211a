//! How each end learns that the other has gone: the producer holds a [`Link`] to its consumer
//! (in this process, or over the socket it was accepted on), and either end can ask whether the
//! peer of a connected socket has closed it ([`peer_closed`]).
//!
//! After the handshake the socket carries nothing: its only job is to close when the consumer
//! dies. A consumer that writes to it anyway has broken the protocol, and is dropped as if it had
//! gone ([`Link::gone`], [`Link::misbehaviour`]): otherwise its unread bytes would keep the socket
//! readable and every wait would return at once, spinning the producer's core.

use std::cell::OnceCell;
use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Weak};

use rustix::event::{PollFd, PollFlags};
use rustix::net::RecvFlags;

use crate::QueueError;

/// Who is at the other end of a socket: its pid and uid as the kernel reports them
/// (`SO_PEERCRED`), for the messages that name a misbehaving peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerName {
    /// The peer's process id when it connected.
    pub pid: i32,
    /// The peer's user id.
    pub uid: u32,
}

impl PeerName {
    /// The peer of a connected UNIX socket; `None` when the kernel does not say.
    pub(crate) fn of(fd: &OwnedFd) -> Option<PeerName> {
        let cred = rustix::net::sockopt::socket_peercred(fd).ok()?;
        Some(PeerName {
            pid: cred.pid.as_raw_nonzero().get(),
            uid: cred.uid.as_raw(),
        })
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} (uid {})", self.pid, self.uid)
    }
}

/// How the producer learns that its consumer is gone.
#[derive(Debug)]
pub(crate) enum Link {
    /// A consumer in this process holds the strong end.
    InProcess(Weak<()>),
    /// A consumer in another process holds the other end of this socket.
    Socket {
        /// Shared with a wait that runs without the producer ([`crate::CoreLink::wait`]).
        fd: Arc<OwnedFd>,
        peer: Option<PeerName>,
        /// Set once the consumer wrote to the socket after the handshake: it is dropped.
        broke: OnceCell<QueueError>,
    },
}

impl Link {
    /// The link over an accepted socket whose handshake is done.
    pub(crate) fn socket(fd: OwnedFd) -> Link {
        let peer = PeerName::of(&fd);
        Link::Socket {
            fd: Arc::new(fd),
            peer,
            broke: OnceCell::new(),
        }
    }

    /// Whether the consumer behind the link has gone away, or broke the protocol and is taken
    /// for gone ([`Link::misbehaviour`] says what it did). Never blocks.
    pub(crate) fn gone(&self) -> bool {
        match self {
            Link::InProcess(w) => w.strong_count() == 0,
            Link::Socket { fd, peer, broke } => {
                if broke.get().is_some() {
                    return true;
                }
                match socket_state(fd) {
                    SocketState::Open => false,
                    SocketState::Closed => true,
                    SocketState::HalfClosed => {
                        let _ = broke.set(QueueError::PeerMisbehaved {
                            peer: peer_words(*peer),
                            what: "shut its end of the socket for writing (shutdown(SHUT_WR)) \
                                   after the handshake while still connected; it was dropped as \
                                   gone"
                                .to_owned(),
                        });
                        true
                    }
                    SocketState::SentBytes(n) => {
                        let _ = broke.set(QueueError::PeerMisbehaved {
                            peer: peer_words(*peer),
                            what: format!(
                                "wrote a message ({n}{} bytes) to the socket after the handshake, \
                                 which carries nothing then; it was dropped as gone",
                                if n >= PEEK_BYTES { " or more" } else { "" }
                            ),
                        });
                        true
                    }
                }
            }
        }
    }

    /// What the consumer did that made the producer drop it, if it misbehaved.
    pub(crate) fn misbehaviour(&self) -> Option<&QueueError> {
        match self {
            Link::Socket { broke, .. } => broke.get(),
            Link::InProcess(_) => None,
        }
    }

    /// The socket to sleep on beside the doorbell, for a consumer in another process that has
    /// not been dropped: it wakes the sleeper when the consumer dies (or writes, which drops it).
    pub(crate) fn wake_fd(&self) -> Option<&Arc<OwnedFd>> {
        match self {
            Link::Socket { fd, broke, .. } if broke.get().is_none() => Some(fd),
            _ => None,
        }
    }

    /// The consumer's liveness token, for a consumer in this process.
    pub(crate) fn in_process(&self) -> Option<Weak<()>> {
        match self {
            Link::InProcess(w) => Some(w.clone()),
            Link::Socket { .. } => None,
        }
    }

    /// The socket, for a peer in another process.
    pub(crate) fn socket_fd(&self) -> Option<&OwnedFd> {
        match self {
            Link::Socket { fd, .. } => Some(fd),
            Link::InProcess(_) => None,
        }
    }

    /// The peer, for a consumer in another process.
    pub(crate) fn peer(&self) -> Option<PeerName> {
        match self {
            Link::Socket { peer, .. } => *peer,
            Link::InProcess(_) => None,
        }
    }
}

/// How a peer is named in an error: its pid and uid, or that the kernel did not say.
pub(crate) fn peer_words(peer: Option<PeerName>) -> String {
    peer.map_or_else(|| "an unidentified peer".to_string(), |p| p.to_string())
}

/// How many bytes [`socket_state`] peeks at: enough to say "it wrote something".
const PEEK_BYTES: usize = 64;

/// What a connected socket's peer has done, as far as a look without blocking can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketState {
    /// Still connected, nothing to read.
    Open,
    /// The peer closed it or died (or the socket failed).
    Closed,
    /// The peer shut its writing side (`shutdown(SHUT_WR)`) but is still connected: a protocol
    /// break (nothing in the protocol shuts a socket half way), not a death.
    HalfClosed,
    /// The peer wrote this many bytes (at least; at most [`PEEK_BYTES`] are looked at), which
    /// stay unread.
    SentBytes(usize),
}

/// Looks at a connected socket without blocking and without consuming anything.
pub(crate) fn socket_state(fd: &OwnedFd) -> SocketState {
    let mut fds = [PollFd::new(fd, PollFlags::IN | PollFlags::RDHUP)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let revents = match rustix::event::poll(&mut fds, Some(&zero)) {
        Ok(0) | Err(_) => return SocketState::Open,
        Ok(_) => fds[0].revents(),
    };
    if revents.intersects(PollFlags::HUP | PollFlags::ERR) {
        return SocketState::Closed;
    }
    if revents.contains(PollFlags::RDHUP) {
        // Our reading side was shut while the socket is still connected: the peer called
        // `shutdown(SHUT_WR)` and lives on.
        return SocketState::HalfClosed;
    }
    if !revents.contains(PollFlags::IN) {
        return SocketState::Open;
    }
    let mut buf = [0u8; PEEK_BYTES];
    match rustix::net::recv(fd, &mut buf, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
        // Readable without a hang-up: a message, perhaps an empty one (a `SOCK_SEQPACKET` peer
        // can send those), which stays unread and keeps the socket readable all the same.
        Ok((n, _)) => SocketState::SentBytes(n),
        Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => SocketState::Open,
        Err(_) => SocketState::Closed,
    }
}
