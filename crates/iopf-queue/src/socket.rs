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
use std::path::{Path, PathBuf};
use std::sync::Arc;

use iopf_abi::extensible::read_struct;
use iopf_abi::features::{RecordFormats, ResponseFormats};
use iopf_abi::Features;
use rustix::fs::Mode;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::consumer::Consumer;
use crate::layout::Geometry;
use crate::negotiate::{negotiate, Agreement, Offer, RecordFormat, Request};
use crate::peer::Link;
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
    pub handshake_timeout: std::time::Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            offer: Offer::current(),
            allowed_uids: Vec::new(),
            producer: ProducerConfig::default(),
            handshake_timeout: std::time::Duration::from_secs(5),
        }
    }
}

/// A listening socket; each accepted consumer gets its own region and [`Producer`]. The socket
/// file is removed when the listener is dropped.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    path: PathBuf,
    config: ServeConfig,
}

impl Listener {
    /// Creates the socket at `path` with mode 0600 and starts listening. An existing file at
    /// `path` is an error (`EADDRINUSE`), not replaced.
    pub fn bind(path: impl AsRef<Path>, config: ServeConfig) -> Result<Listener, QueueError> {
        let path = path.as_ref().to_path_buf();
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| QueueError::os("socket", e))?;
        let addr = SocketAddrUnix::new(&path).map_err(|e| QueueError::os("socket path", e))?;
        rustix::net::bind(&fd, &addr).map_err(|e| QueueError::os("bind", e))?;
        let listener = Listener { fd, path, config };
        rustix::fs::chmod(&listener.path, Mode::from_raw_mode(0o600))
            .map_err(|e| QueueError::os("chmod", e))?;
        rustix::net::listen(&listener.fd, 8).map_err(|e| QueueError::os("listen", e))?;
        Ok(listener)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The listening socket, to poll for incoming connections.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Waits for a consumer, checks its uid, negotiates, and returns the producer end of its new
    /// queue. A peer that is not allowed ([`QueueError::PeerNotAllowed`]), breaks the protocol,
    /// stays silent past [`ServeConfig::handshake_timeout`] (`EAGAIN`) or asks for what is not
    /// offered is answered with a refusal and disconnected; the error is returned and the
    /// listener keeps working.
    pub fn accept(&self) -> Result<Producer, QueueError> {
        let conn = rustix::net::accept_with(&self.fd, SocketFlags::CLOEXEC)
            .map_err(|e| QueueError::os("accept", e))?;
        let cred = rustix::net::sockopt::socket_peercred(&conn)
            .map_err(|e| QueueError::os("SO_PEERCRED", e))?;
        let uid = cred.uid.as_raw();
        let me = rustix::process::getuid().as_raw();
        let allowed = if self.config.allowed_uids.is_empty() {
            uid == me
        } else {
            self.config.allowed_uids.contains(&uid)
        };
        if !allowed {
            let err = QueueError::PeerNotAllowed { uid };
            let _ = refuse(conn.as_fd(), &err);
            return Err(err);
        }
        let timeout = Some(
            self.config
                .handshake_timeout
                .max(std::time::Duration::from_millis(1)),
        );
        rustix::net::sockopt::set_socket_timeout(
            &conn,
            rustix::net::sockopt::Timeout::Recv,
            timeout,
        )
        .map_err(|e| QueueError::os("SO_RCVTIMEO", e))?;
        match handshake(conn.as_fd(), &self.config) {
            Ok(mut producer) => {
                producer.set_link(Link::Socket(conn));
                Ok(producer)
            }
            Err(e) => {
                let _ = refuse(conn.as_fd(), &e);
                Err(e)
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
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

fn handshake(conn: BorrowedFd<'_>, config: &ServeConfig) -> Result<Producer, QueueError> {
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
    send(conn, offer.as_bytes(), &[])?;
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
    let (region, memfd) = Region::create(geo.bytes())?;
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
    );
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
/// the agreed queue. Errors: the producer's refusal (its errno and words, as
/// [`QueueError::Os`]), a protocol violation, or a region that does not match the agreement.
pub fn connect(
    path: impl AsRef<Path>,
    choose: impl FnOnce(&Offer) -> Request,
) -> Result<Consumer, QueueError> {
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| QueueError::os("socket", e))?;
    let addr = SocketAddrUnix::new(path.as_ref()).map_err(|e| QueueError::os("socket path", e))?;
    rustix::net::connect(&fd, &addr).map_err(|e| QueueError::os("connect", e))?;
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
    let region = Region::map(&memfd, geo.bytes())?;
    let shared = Shared::new(Arc::new(region), geo)?;
    Consumer::new(
        shared,
        agreement,
        Doorbell::from_fd(fault_fd),
        Doorbell::from_fd(resp_fd),
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
    Err(QueueError::RefusedByProducer {
        errno: head.errno as i32,
        text: String::from_utf8_lossy(text).into_owned(),
    })
}
