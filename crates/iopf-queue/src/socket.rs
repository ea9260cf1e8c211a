//! Across processes: a `SOCK_SEQPACKET` UNIX socket carrying the negotiation, and the region's
//! memfd and the two eventfds passed with `SCM_RIGHTS`.
//!
//! ```text
//!  producer (serve)                                   consumer (connect)
//!   bind, chmod 0600, listen
//!   accept, SO_PEERCRED uid check
//!   OFFER  {version, records, responses, features, max_entries, max_group}  ──▶
//!                                          ◀──  REQUEST {version, record, responses, features, entries}
//!   negotiate(); create memfd + eventfds
//!   ACCEPT {agreement, region size} + SCM_RIGHTS[memfd, fault_efd, resp_efd] ──▶  map, check header
//!   or REFUSE {errno, text}                                       ──▶  error
//!   ... the socket stays open: its closing is how the producer learns that the consumer died.
//! ```
//!
//! Every message is a size-prefixed struct read by the extensible-struct rule, so a newer peer's
//! longer message is accepted when its unknown tail is zero. The socket is bound and given mode
//! 0600 *before* `listen()`, so nobody can connect while it is still open to others; the peer's
//! uid is checked anyway.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iopf_abi::extensible::read_struct;
use iopf_abi::features::{RecordFormats, ResponseFormats};
use iopf_abi::Features;
use rustix::event::{PollFd, PollFlags};
use rustix::fs::Mode;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::consumer::Consumer;
use crate::layout::Geometry;
use crate::negotiate::{negotiate, Agreement, Offer, RecordFormat, Request};
use crate::peer::{peer_words, Link, PeerName};
use crate::producer::{Producer, ProducerConfig};
use crate::shared::Shared;
use crate::shm::Region;
use crate::wake::Doorbell;
use crate::QueueError;

const KIND_OFFER: u32 = 1;
const KIND_REQUEST: u32 = 2;
const KIND_ACCEPT: u32 = 3;
const KIND_REFUSE: u32 = 4;
const MAX_MSG: usize = 512;

#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct WireOffer {
    size: u32,
    kind: u32,
    abi_version: u32,
    records: u32,
    responses: u32,
    max_entries: u32,
    features: u64,
    max_group: u32,
    reserved: u32,
}

#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct WireRequest {
    size: u32,
    kind: u32,
    abi_version: u32,
    record: u32,
    responses: u32,
    entries: u32,
    features: u64,
}

#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct WireAccept {
    size: u32,
    kind: u32,
    abi_version: u32,
    record: u32,
    responses: u32,
    entries: u32,
    features: u64,
    region_bytes: u64,
    max_group: u32,
    reserved: u32,
}

#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct WireRefuse {
    size: u32,
    kind: u32,
    errno: u32,
    text_len: u32,
}

fn kind_of(msg: &[u8]) -> Result<u32, QueueError> {
    let (_, rest) =
        u32::read_from_prefix(msg).map_err(|_| QueueError::Protocol("short message"))?;
    let (kind, _) =
        u32::read_from_prefix(rest).map_err(|_| QueueError::Protocol("short message"))?;
    Ok(kind)
}

fn send(fd: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), QueueError> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(QueueError::Protocol("too many descriptors"));
    }
    let n = rustix::net::sendmsg(
        fd,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .map_err(|e| QueueError::os("sendmsg", e))?;
    if n != bytes.len() {
        return Err(QueueError::Protocol("short send"));
    }
    Ok(())
}

fn recv(fd: BorrowedFd<'_>, fds: &mut Vec<OwnedFd>) -> Result<Vec<u8>, QueueError> {
    let mut buf = [0u8; MAX_MSG];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        fd,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| QueueError::os("recvmsg", e))?;
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(iter) = m {
            fds.extend(iter);
        }
    }
    if msg.bytes == 0 {
        return Err(QueueError::Closed);
    }
    if msg.flags.contains(rustix::net::ReturnFlags::TRUNC)
        || msg.flags.contains(rustix::net::ReturnFlags::CTRUNC)
    {
        return Err(QueueError::Protocol("message or descriptors truncated"));
    }
    Ok(buf[..msg.bytes.min(MAX_MSG)].to_vec())
}

/// The uid this process runs as (`getuid()`), the one [`ServeConfig::allowed_uids`] defaults to.
pub fn own_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// How a producer serves its socket.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// What it offers each consumer.
    pub offer: Offer,
    /// The uids allowed to connect (`SO_PEERCRED`). Empty: only the producer's own uid.
    pub allowed_uids: Vec<u32>,
    /// Tunables of each connection's producer.
    pub producer: ProducerConfig,
    /// How long a connecting peer has to send its request: a peer that connects and says nothing
    /// cannot hold the listener.
    pub handshake_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            offer: Offer::current(),
            allowed_uids: Vec::new(),
            producer: ProducerConfig::default(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// How long [`connect`] waits for each of the producer's messages, and the default of
/// [`ServeConfig::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection whose offer was sent and whose request has not come yet.
#[derive(Debug)]
struct Pending {
    conn: OwnedFd,
    peer: Option<PeerName>,
    deadline: Instant,
}

/// A listening socket; each accepted consumer gets its own region and [`Producer`]. The socket
/// file is removed when the listener is dropped.
///
/// Handshakes run side by side: a peer that connects and says nothing holds no slot and delays
/// no other peer; it is dropped once [`ServeConfig::handshake_timeout`] has passed.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    path: PathBuf,
    /// The placed socket file's device and inode: what `Drop` removes, and nothing else.
    placed: (u64, u64),
    config: ServeConfig,
    pending: Mutex<Vec<Pending>>,
}

impl Listener {
    /// Creates the socket at `path` with mode 0600, listening before the path appears. A socket
    /// file left
    /// behind by a producer that died (nobody accepts on it: `ECONNREFUSED`) is replaced. Errors:
    /// [`QueueError::NotAQueue`] with `EADDRINUSE` when a live listener is there, with `EEXIST`
    /// when `path` is not a socket (never removed); a failed system call otherwise.
    pub fn bind(path: impl AsRef<Path>, config: ServeConfig) -> Result<Listener, QueueError> {
        let path = path.as_ref().to_path_buf();
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| QueueError::os("socket", e))?;
        // Bound and made listening under a private name in the same directory, then moved into
        // place without replacing anything (`RENAME_NOREPLACE`): a client never finds the path
        // before it accepts connections (no ECONNREFUSED window), nobody can connect before the
        // mode is 0600, and of two listeners racing for one path only one gets it. The private
        // name is short, so any path that fits `sun_path` can be served.
        static STAGED: AtomicU32 = AtomicU32::new(0);
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let staging = dir.join(format!(
            ".iopf-{}-{}",
            std::process::id(),
            STAGED.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&staging);
        let addr = SocketAddrUnix::new(&staging).map_err(|e| QueueError::os("socket path", e))?;
        rustix::net::bind(&fd, &addr).map_err(|e| QueueError::os("bind", e))?;
        let placed = rustix::fs::chmod(&staging, Mode::from_raw_mode(0o600))
            .map_err(|e| QueueError::os("chmod", e))
            .and_then(|()| rustix::net::listen(&fd, 64).map_err(|e| QueueError::os("listen", e)))
            .and_then(|()| {
                std::fs::symlink_metadata(&staging).map_err(|e| QueueError::os("stat", e))
            })
            .and_then(|meta| {
                let place = || {
                    rustix::fs::renameat_with(
                        rustix::fs::CWD,
                        &staging,
                        rustix::fs::CWD,
                        &path,
                        rustix::fs::RenameFlags::NOREPLACE,
                    )
                };
                match place() {
                    Err(rustix::io::Errno::EXIST) => {
                        // Something is there: a stale socket is replaced (once), anything else
                        // is named and left alone.
                        replace_stale_socket(&path)?;
                        place().map_err(|e| match e {
                            rustix::io::Errno::EXIST => QueueError::NotAQueue {
                                path: path.clone(),
                                why: "another listener took the path meanwhile; it is left \
                                      alone"
                                    .into(),
                                errno: libc::EADDRINUSE,
                            },
                            e => QueueError::os("rename", e),
                        })
                    }
                    r => r.map_err(|e| QueueError::os("rename", e)),
                }
                .map(|()| (meta.dev(), meta.ino()))
            });
        let placed = match placed {
            Ok(id) => id,
            Err(e) => {
                let _ = std::fs::remove_file(&staging);
                return Err(e);
            }
        };
        let listener = Listener {
            fd,
            path,
            placed,
            config,
            pending: Mutex::new(Vec::new()),
        };
        Ok(listener)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The listening socket, to poll for incoming connections (handshakes already under way are
    /// not in it: an event loop calls [`Listener::accept_timeout`] with a short timeout, at least
    /// every [`ServeConfig::handshake_timeout`]).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Waits for a consumer to complete its handshake and returns the producer end of its new
    /// queue. Errors: as [`Listener::accept_timeout`]; after one, the listener keeps working.
    pub fn accept(&self) -> Result<Producer, QueueError> {
        loop {
            if let Some(p) = self.accept_timeout(None)? {
                return Ok(p);
            }
        }
    }

    /// Accepts connections, sends each its offer, and waits until one of them has sent its
    /// request or `timeout` passes (`Ok(None)`). Each peer gets its own time to answer: a
    /// connection is checked for its uid (`SO_PEERCRED`), and a peer that is not allowed
    /// ([`QueueError::PeerNotAllowed`]), breaks the protocol ([`QueueError::PeerMisbehaved`]),
    /// stays silent past [`ServeConfig::handshake_timeout`] ([`QueueError::PeerSilent`]) or asks
    /// for what is not offered is answered with a refusal and disconnected, and its error,
    /// naming it, returned: the other handshakes are kept, and the listener keeps working.
    pub fn accept_timeout(
        &self,
        timeout: Option<Duration>,
    ) -> Result<Option<Producer>, QueueError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            let now = Instant::now();
            if let Some(i) = pending.iter().position(|p| p.deadline <= now) {
                let p = pending.swap_remove(i);
                let err = QueueError::PeerSilent {
                    peer: peer_words(p.peer),
                    waited: self.config.handshake_timeout,
                    hint: "it connected and sent no request; dropped, the slot is free",
                };
                let _ = refuse(p.conn.as_fd(), &err);
                return Err(err);
            }
            let mut wake = deadline;
            for p in pending.iter() {
                wake = Some(wake.map_or(p.deadline, |w| w.min(p.deadline)));
            }
            let left = wake.map(|w| w.saturating_duration_since(now));
            let ts = left.map(|t| rustix::event::Timespec {
                tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
                tv_nsec: i64::from(t.subsec_nanos()),
            });
            let mut fds = Vec::with_capacity(pending.len() + 1);
            // At the cap, new connections wait in the kernel's backlog until a handshake ends
            // (each ends within the handshake timeout): a flood costs bounded descriptors and
            // work, never this call's timeout.
            let full = pending.len() >= MAX_PENDING_HANDSHAKES;
            fds.push(PollFd::new(
                &self.fd,
                if full {
                    PollFlags::empty()
                } else {
                    PollFlags::IN
                },
            ));
            for p in pending.iter() {
                fds.push(PollFd::new(&p.conn, PollFlags::IN | PollFlags::RDHUP));
            }
            match rustix::event::poll(&mut fds, ts.as_ref()) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(QueueError::os("poll", e)),
            }
            let listening = fds[0].revents().contains(PollFlags::IN);
            let answered = fds[1..].iter().position(|f| !f.revents().is_empty());
            drop(fds);
            if let Some(i) = answered {
                let p = pending.swap_remove(i);
                return self.finish(p).map(Some);
            }
            if listening {
                if let Some(p) = self.start()? {
                    pending.push(p);
                }
            }
            // Checked after a new connection too: a flood of them must not hold this call
            // past its timeout (found by the issue-12 review: 2.9 s for a 200 ms timeout).
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }
}

/// How many handshakes [`Listener::accept_timeout`] keeps under way at once.
pub const MAX_PENDING_HANDSHAKES: usize = 64;

impl Listener {
    /// Accepts one connection, checks its uid and sends the offer: the handshake under way.
    fn start(&self) -> Result<Option<Pending>, QueueError> {
        let conn = match rustix::net::accept_with(&self.fd, SocketFlags::CLOEXEC) {
            Ok(c) => c,
            // The peer went before it was accepted.
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::CONNABORTED) => return Ok(None),
            Err(e) => return Err(QueueError::os("accept", e)),
        };
        let peer = PeerName::of(&conn);
        let uid = peer.map_or(u32::MAX, |p| p.uid);
        let allowed = if self.config.allowed_uids.is_empty() {
            uid == own_uid()
        } else {
            self.config.allowed_uids.contains(&uid)
        };
        if !allowed {
            let err = QueueError::PeerNotAllowed { uid };
            let _ = refuse(conn.as_fd(), &err);
            return Err(err);
        }
        // Nothing here blocks on the peer: its receive buffer holds the offer.
        rustix::net::sockopt::set_socket_timeout(
            &conn,
            rustix::net::sockopt::Timeout::Recv,
            Some(Duration::from_millis(100)),
        )
        .map_err(|e| QueueError::os("SO_RCVTIMEO", e))?;
        if let Err(e) = send_offer(conn.as_fd(), &self.config) {
            if matches!(e.errno(), libc::EPIPE | libc::ECONNRESET) {
                // The peer went before its offer (another listener's probe for a stale socket
                // does this): as if it had never been accepted.
                return Ok(None);
            }
            return Err(QueueError::PeerMisbehaved {
                peer: peer_words(peer),
                what: format!("could not be sent the offer ({e}); dropped"),
            });
        }
        Ok(Some(Pending {
            conn,
            peer,
            deadline: Instant::now() + self.config.handshake_timeout.max(Duration::from_millis(1)),
        }))
    }

    /// Reads a peer's request (it has sent something, or hung up) and completes its handshake.
    fn finish(&self, p: Pending) -> Result<Producer, QueueError> {
        match finish_handshake(p.conn.as_fd(), &self.config) {
            Ok(mut producer) => {
                producer.set_link(Link::socket(p.conn))?;
                Ok(producer)
            }
            Err(e) => {
                let _ = refuse(p.conn.as_fd(), &e);
                Err(match e {
                    QueueError::Protocol(_) | QueueError::Closed | QueueError::Os { .. } => {
                        QueueError::PeerMisbehaved {
                            peer: peer_words(p.peer),
                            what: format!("broke the handshake ({e}); refused and dropped"),
                        }
                    }
                    other => other,
                })
            }
        }
    }
}

/// `path` is taken: replaces it when it is a socket nobody listens on (a producer that died),
/// refuses otherwise.
fn replace_stale_socket(path: &Path) -> Result<(), QueueError> {
    let not_served = |why: String, errno: i32| QueueError::NotAQueue {
        path: path.to_path_buf(),
        why,
        errno,
    };
    let meta = std::fs::symlink_metadata(path).map_err(|e| QueueError::os("stat", e))?;
    if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
        return Err(not_served(
            "exists and is not a socket; it is left alone: choose another path or remove it".into(),
            libc::EEXIST,
        ));
    }
    let probe = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| QueueError::os("socket", e))?;
    let addr = SocketAddrUnix::new(path).map_err(|e| QueueError::os("socket path", e))?;
    match rustix::net::connect(&probe, &addr) {
        Err(rustix::io::Errno::CONNREFUSED) => {
            std::fs::remove_file(path).map_err(|e| QueueError::os("unlink stale socket", e))
        }
        Err(rustix::io::Errno::PROTOTYPE) => Err(not_served(
            "another program's socket (not SOCK_SEQPACKET) is there; it is left alone".into(),
            libc::EADDRINUSE,
        )),
        _ => Err(not_served(
            "a live listener (another iopf serve?) is there; it is left alone".into(),
            libc::EADDRINUSE,
        )),
    }
}

impl Drop for Listener {
    /// Removes the socket file, if it is still this listener's (another listener may have
    /// replaced a stale one since: that one is left alone).
    fn drop(&mut self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.placed);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn refuse(fd: BorrowedFd<'_>, err: &QueueError) -> Result<(), QueueError> {
    let text = err.to_string();
    let text = &text.as_bytes()[..text.len().min(MAX_MSG - 16)];
    let head = WireRefuse {
        size: 16,
        kind: KIND_REFUSE,
        errno: err.errno() as u32,
        text_len: text.len() as u32,
    };
    let mut msg = head.as_bytes().to_vec();
    msg.extend_from_slice(text);
    send(fd, &msg, &[])
}

fn send_offer(conn: BorrowedFd<'_>, config: &ServeConfig) -> Result<(), QueueError> {
    let o = &config.offer;
    let offer = WireOffer {
        size: std::mem::size_of::<WireOffer>() as u32,
        kind: KIND_OFFER,
        abi_version: o.abi_version,
        records: o.records.bits(),
        responses: o.responses.bits(),
        max_entries: o.max_entries,
        features: o.features.bits(),
        max_group: o.max_group,
        reserved: 0,
    };
    send(conn, offer.as_bytes(), &[])
}

fn finish_handshake(conn: BorrowedFd<'_>, config: &ServeConfig) -> Result<Producer, QueueError> {
    let o = &config.offer;
    let mut fds = Vec::new();
    let msg = recv(conn, &mut fds)?;
    if !fds.is_empty() {
        return Err(QueueError::Protocol("a request carries no descriptors"));
    }
    if kind_of(&msg)? != KIND_REQUEST {
        return Err(QueueError::Protocol("expected a request"));
    }
    let w: WireRequest = read_struct("request", &msg, std::mem::size_of::<WireRequest>())?;
    let request = Request {
        abi_version: w.abi_version,
        record: RecordFormats::from_bits(w.record)
            .ok_or_else(|| QueueError::NotOffered(format!("record format bits {:#x}", w.record)))?,
        responses: ResponseFormats::from_bits(w.responses).ok_or_else(|| {
            QueueError::NotOffered(format!("response format bits {:#x}", w.responses))
        })?,
        features: Features::from_bits(w.features)
            .ok_or_else(|| QueueError::NotOffered(format!("feature bits {:#x}", w.features)))?,
        entries: w.entries,
    };
    let agreement = negotiate(o, &request)?;
    let geo = Geometry::new(&agreement);
    let (region, memfd) = Region::create(&geo)?;
    let shared = Shared::new(Arc::new(region), geo)?;
    let fault_bell = Doorbell::new()?;
    let resp_bell = Doorbell::new()?;
    let producer = Producer::new(
        shared,
        agreement,
        config.producer,
        fault_bell,
        resp_bell,
        Link::InProcess(std::sync::Weak::new()),
        Some(memfd),
    )?;
    let accept = WireAccept {
        size: std::mem::size_of::<WireAccept>() as u32,
        kind: KIND_ACCEPT,
        abi_version: agreement.abi_version,
        record: agreement.record.bits().bits(),
        responses: agreement.responses.bits(),
        entries: agreement.entries,
        features: agreement.features.bits(),
        region_bytes: geo.bytes() as u64,
        max_group: agreement.max_group,
        reserved: 0,
    };
    let (fault_fd, resp_fd) = producer.bells();
    let memfd = producer
        .memfd()
        .ok_or(QueueError::Protocol("the region has no memfd"))?;
    send(
        conn,
        accept.as_bytes(),
        &[memfd.as_fd(), fault_fd.as_fd(), resp_fd.as_fd()],
    )?;
    Ok(producer)
}

/// Connects to a producer's socket, lets `choose` pick a [`Request`] from its [`Offer`], and maps
/// the agreed queue, giving the producer [`DEFAULT_HANDSHAKE_TIMEOUT`] for each message: see
/// [`connect_timeout`].
pub fn connect(
    path: impl AsRef<Path>,
    choose: impl FnOnce(&Offer) -> Request,
) -> Result<Consumer, QueueError> {
    connect_timeout(path, DEFAULT_HANDSHAKE_TIMEOUT, choose)
}

/// [`connect`], waiting at most `timeout` for each of the producer's messages. Errors, each
/// naming the path: [`QueueError::NotAQueue`] when nothing listens there (`ECONNREFUSED`, a
/// stale socket file), the socket is of another type (`EPROTOTYPE`: not iopf's), or nothing is
/// there (`ENOENT`); [`QueueError::PeerSilent`] when no offer (or answer) comes within
/// `timeout`; [`QueueError::PeerMisbehaved`] when the peer sends something that is not the
/// protocol; the producer's refusal ([`QueueError::RefusedByProducer`], its errno and words); or
/// a region that does not match the agreement.
pub fn connect_timeout(
    path: impl AsRef<Path>,
    timeout: Duration,
    choose: impl FnOnce(&Offer) -> Request,
) -> Result<Consumer, QueueError> {
    let path = path.as_ref();
    let named = |e: QueueError| match e {
        QueueError::Os { source, .. }
            if source.raw_os_error() == Some(libc::EAGAIN)
                || source.raw_os_error() == Some(libc::ETIMEDOUT) =>
        {
            QueueError::PeerSilent {
                peer: path.display().to_string(),
                waited: timeout,
                hint: "not an iopf producer, or a stuck one",
            }
        }
        QueueError::Protocol(what) => QueueError::PeerMisbehaved {
            peer: path.display().to_string(),
            what: format!("{what}: not an iopf producer, or an incompatible one"),
        },
        QueueError::Closed => QueueError::PeerMisbehaved {
            peer: path.display().to_string(),
            what: "closed the connection during the handshake".into(),
        },
        other => other,
    };
    connect_inner(path, timeout, choose).map_err(named)
}

fn connect_inner(
    path: &Path,
    timeout: Duration,
    choose: impl FnOnce(&Offer) -> Request,
) -> Result<Consumer, QueueError> {
    // Non-blocking for the connect: a listener whose backlog is full makes a blocking
    // connect() wait for as long as the listener does not accept, past any timeout.
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(|e| QueueError::os("socket", e))?;
    let addr = SocketAddrUnix::new(path).map_err(|e| QueueError::os("socket path", e))?;
    let deadline = std::time::Instant::now() + timeout;
    let not_a_queue = |why: &str, errno: i32| QueueError::NotAQueue {
        path: path.to_path_buf(),
        why: why.to_string(),
        errno,
    };
    let connected = loop {
        match rustix::net::connect(&fd, &addr) {
            // A full backlog: try again until the timeout (AF_UNIX has no EINPROGRESS).
            Err(rustix::io::Errno::AGAIN) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            other => break other,
        }
    };
    match connected {
        Ok(()) => {}
        Err(rustix::io::Errno::PROTOTYPE) => {
            return Err(not_a_queue(
                "a socket of another type (iopf serves SOCK_SEQPACKET): not an iopf fault queue",
                libc::EPROTOTYPE,
            ))
        }
        Err(rustix::io::Errno::CONNREFUSED) => {
            return Err(not_a_queue(
                "nobody listens on it (a socket file left by a producer that died?)",
                libc::ECONNREFUSED,
            ))
        }
        Err(rustix::io::Errno::NOENT) => {
            return Err(not_a_queue(
                "no such socket: is `iopf serve` running?",
                libc::ENOENT,
            ))
        }
        Err(e) => return Err(QueueError::os("connect", e)),
    }
    rustix::io::ioctl_fionbio(&fd, false).map_err(|e| QueueError::os("FIONBIO", e))?;
    rustix::net::sockopt::set_socket_timeout(
        &fd,
        rustix::net::sockopt::Timeout::Recv,
        Some(timeout.max(Duration::from_millis(1))),
    )
    .map_err(|e| QueueError::os("SO_RCVTIMEO", e))?;
    let mut fds = Vec::new();
    let msg = recv_from_producer(fd.as_fd(), &mut fds, KIND_OFFER, "expected an offer")?;
    let w: WireOffer = read_struct("offer", &msg, std::mem::size_of::<WireOffer>())?;
    let offer = Offer {
        abi_version: w.abi_version,
        records: RecordFormats::from_bits_truncate(w.records),
        responses: ResponseFormats::from_bits_truncate(w.responses),
        features: Features::from_bits_truncate(w.features),
        max_entries: w.max_entries,
        max_group: w.max_group,
    };
    let request = choose(&offer);
    let wire = WireRequest {
        size: std::mem::size_of::<WireRequest>() as u32,
        kind: KIND_REQUEST,
        abi_version: request.abi_version,
        record: request.record.bits(),
        responses: request.responses.bits(),
        entries: request.entries,
        features: request.features.bits(),
    };
    send(fd.as_fd(), wire.as_bytes(), &[])?;
    let mut fds = Vec::new();
    let msg = recv_from_producer(fd.as_fd(), &mut fds, KIND_ACCEPT, "expected an acceptance")?;
    let w: WireAccept = read_struct("accept", &msg, std::mem::size_of::<WireAccept>())?;
    let agreement = Agreement {
        abi_version: w.abi_version,
        record: if w.record == RecordFormats::IOMMU_FAULT.bits() {
            RecordFormat::IommuFault
        } else if w.record == RecordFormats::HWPT_PGFAULT.bits() {
            RecordFormat::HwptPgfault
        } else {
            return Err(QueueError::Protocol("unknown agreed record format"));
        },
        responses: ResponseFormats::from_bits(w.responses)
            .ok_or(QueueError::Protocol("unknown agreed response format"))?,
        features: Features::from_bits(w.features)
            .ok_or(QueueError::Protocol("unknown agreed feature"))?,
        entries: w.entries,
        max_group: w.max_group,
    };
    if agreement.record.bits() != request.record
        || !request.responses.contains(agreement.responses)
        || !request.features.contains(agreement.features)
        || !agreement.entries.is_power_of_two()
        || agreement.entries > crate::negotiate::DEFAULT_MAX_ENTRIES
        || agreement.max_group != offer.max_group
        || agreement.entries < agreement.max_group
    {
        return Err(QueueError::Protocol(
            "the producer agreed to something not asked for",
        ));
    }
    let geo = Geometry::new(&agreement);
    if w.region_bytes != geo.bytes() as u64 {
        return Err(QueueError::Protocol(
            "the region size does not match the agreement",
        ));
    }
    let mut fds = fds.into_iter();
    let (Some(memfd), Some(fault_fd), Some(resp_fd), None) =
        (fds.next(), fds.next(), fds.next(), fds.next())
    else {
        return Err(QueueError::Protocol("expected exactly three descriptors"));
    };
    let region = Region::map(&memfd, &geo)?;
    let shared = Shared::new(Arc::new(region), geo)?;
    Consumer::new(
        shared,
        agreement,
        Doorbell::from_peer(fault_fd)?,
        Doorbell::from_peer(resp_fd)?,
        None,
        Some(fd),
    )
}

/// Receives the producer's next message, which must be of `kind` (else `Protocol(expected)`) or
/// a refusal (returned as the producer's error).
fn recv_from_producer(
    fd: BorrowedFd<'_>,
    fds: &mut Vec<OwnedFd>,
    kind: u32,
    expected: &'static str,
) -> Result<Vec<u8>, QueueError> {
    let msg = recv(fd, fds)?;
    check_refusal(&msg)?;
    if kind_of(&msg)? != kind {
        return Err(QueueError::Protocol(expected));
    }
    Ok(msg)
}

fn check_refusal(msg: &[u8]) -> Result<(), QueueError> {
    if kind_of(msg)? != KIND_REFUSE {
        return Ok(());
    }
    let (head, rest) =
        WireRefuse::read_from_prefix(msg).map_err(|_| QueueError::Protocol("short refusal"))?;
    let text = rest.get(..head.text_len as usize).unwrap_or(rest);
    // An errno is 1 to 4095 (the kernel's MAX_ERRNO); anything else is not a refusal.
    let errno = match head.errno {
        e @ 1..=4095 => e as i32,
        _ => {
            return Err(QueueError::Protocol(
                "a refusal whose errno is not 1 to 4095",
            ))
        }
    };
    Err(QueueError::RefusedByProducer {
        errno,
        text: String::from_utf8_lossy(text).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (review of the C API): a peer's refusal carried errno 0x80000000 as an i32,
    /// which the C API's `-errno` overflowed on (an abort in a debug build). An errno is 1 to
    /// 4095; anything else is the peer breaking the protocol.
    #[test]
    fn a_refusal_with_an_errno_out_of_range_is_a_protocol_error() {
        for errno in [0u32, 4096, 0x7fff_ffff, 0x8000_0000, u32::MAX] {
            let msg = [16u32, KIND_REFUSE, errno, 0];
            let bytes: Vec<u8> = msg.iter().flat_map(|w| w.to_ne_bytes()).collect();
            match check_refusal(&bytes) {
                Err(QueueError::Protocol(_)) => {}
                other => panic!("errno {errno:#x}: {other:?}"),
            }
        }
        let msg = [16u32, KIND_REFUSE, libc::EACCES as u32, 0];
        let bytes: Vec<u8> = msg.iter().flat_map(|w| w.to_ne_bytes()).collect();
        match check_refusal(&bytes) {
            Err(QueueError::RefusedByProducer { errno, .. }) => assert_eq!(errno, libc::EACCES),
            other => panic!("{other:?}"),
        }
    }
}
