//! The crate's one error type, and the reasons a response can be rejected.

use iopf_abi::AbiError;

/// What went wrong on a fault queue. Each variant maps to the errno Linux returns for the same
/// kind of mistake ([`QueueError::errno`]).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The consumer asked for an ABI version the producer does not offer.
    #[error("ABI version {asked} was asked for, the producer offers 1 to {offered}")]
    VersionNotOffered {
        /// The consumer's version.
        asked: u32,
        /// The producer's newest version.
        offered: u32,
    },
    /// The consumer asked for something outside the producer's offer or the agreed ABI version.
    #[error("not offered: {0}")]
    NotOffered(String),
    /// The producer was asked to deliver something the consumer did not agree to receive (an
    /// unrecoverable fault without [`iopf_abi::Features::UNRECOVERABLE`]); nothing was written.
    #[error("not agreed with the consumer: {0}")]
    NotAgreed(&'static str),
    /// The consumer's request contradicts itself.
    #[error("inconsistent request: {0}")]
    Inconsistent(&'static str),
    /// A ring size that is not a power of two between 2 and the offered maximum.
    #[error("{entries} entries: a ring needs a power of two between 2 and {max}")]
    BadEntries {
        /// The size asked for.
        entries: u32,
        /// The largest size offered.
        max: u32,
    },
    /// A group handed to the producer is not a well-formed page request group.
    #[error("bad group: {0}")]
    BadGroup(&'static str),
    /// The group could not be delivered and was counted as lost; its owner must answer it.
    #[error("group lost: {0}")]
    Lost(LossReason),
    /// The other end has gone away.
    #[error("the other end of the queue has gone away")]
    Closed,
    /// The shared region does not describe a valid queue (bad magic, geometry or index).
    #[error("corrupt shared region: {0}")]
    Corrupt(&'static str),
    /// A response the consumer end refused to send, because the producer would reject it.
    #[error("response refused: {0}")]
    Refused(Rejection),
    /// A record or response did not encode or decode.
    #[error(transparent)]
    Abi(#[from] AbiError),
    /// A peer on the socket broke the handshake protocol.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The peer of a socket runs as a user that is not allowed.
    #[error("peer uid {uid} is not allowed")]
    PeerNotAllowed {
        /// The peer's uid (`SO_PEERCRED`).
        uid: u32,
    },
    /// The producer refused the connection or the request.
    #[error("the producer refused: {text}")]
    RefusedByProducer {
        /// The errno it gave.
        errno: i32,
        /// Its words.
        text: String,
    },
    /// A system call failed.
    #[error("{op}: {source}")]
    Os {
        /// What was being done.
        op: &'static str,
        /// What the kernel said.
        source: std::io::Error,
    },
}

impl QueueError {
    /// The errno Linux returns for this kind of mistake: `EINVAL` for bad requests, groups and
    /// responses (`E2BIG` for a non-zero unknown tail), `EOPNOTSUPP` for what was not offered or agreed,
    /// `ENOSPC` for a lost group, `EPIPE` for a closed peer, `EPROTO` for protocol and region
    /// corruption, `EACCES` for a refused peer, and the system call's own errno otherwise.
    pub fn errno(&self) -> i32 {
        match self {
            QueueError::VersionNotOffered { .. }
            | QueueError::NotOffered(_)
            | QueueError::NotAgreed(_) => libc::EOPNOTSUPP,
            QueueError::Inconsistent(_) | QueueError::BadEntries { .. } => libc::EINVAL,
            QueueError::BadGroup(_) => libc::EINVAL,
            QueueError::Lost(_) => libc::ENOSPC,
            QueueError::Closed => libc::EPIPE,
            QueueError::Corrupt(_) | QueueError::Protocol(_) => libc::EPROTO,
            QueueError::Refused(r) => r.errno(),
            QueueError::Abi(e) => e.errno(),
            QueueError::PeerNotAllowed { .. } => libc::EACCES,
            QueueError::RefusedByProducer { errno, .. } => *errno,
            QueueError::Os { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    pub(crate) fn os(op: &'static str, e: impl Into<std::io::Error>) -> QueueError {
        QueueError::Os {
            op,
            source: e.into(),
        }
    }
}

/// Why a group was not delivered (invariant 2: it is counted, signalled, and its owner answers it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// The fault ring had no room for the whole group (the producer never blocks the fault path).
    RingFull,
    /// The producer already holds its maximum of unanswered groups for this consumer.
    TooManyPending,
    /// Responses name groups by grpid on this queue, and a group with the same grpid is still
    /// unanswered: the consumer could not tell them apart.
    AmbiguousGroup,
    /// The consumer has gone away.
    ConsumerGone,
}

impl std::fmt::Display for LossReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LossReason::RingFull => "the fault ring is full",
            LossReason::TooManyPending => "too many unanswered groups",
            LossReason::AmbiguousGroup => "a group with the same grpid is still unanswered",
            LossReason::ConsumerGone => "the consumer has gone away",
        })
    }
}

/// Why the producer rejected a response. Written into the verdict ring as a number, so the values
/// are ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum RejectReason {
    /// The response slot's length or format tag is impossible.
    Malformed = 1,
    /// The response did not decode (unknown version, flags or code, non-zero unknown tail...).
    Decode = 2,
    /// The response uses a format that was not agreed.
    FormatNotAgreed = 3,
    /// The response carries private data, but echoing it was not agreed.
    PrivDataNotAgreed = 4,
    /// No unanswered group of this consumer has that cookie or grpid (a duplicate, a replay, a
    /// guess, or another consumer's group).
    UnknownGroup = 5,
    /// The PASID is missing where the device requires it, or is not the request's.
    PasidMismatch = 6,
    /// Private data was agreed to be echoed but is missing or differs from the request's.
    PrivDataMismatch = 7,
}

impl RejectReason {
    /// Decodes a reason number from the verdict ring.
    pub fn from_raw(raw: u32) -> Option<RejectReason> {
        use RejectReason::*;
        Some(match raw {
            1 => Malformed,
            2 => Decode,
            3 => FormatNotAgreed,
            4 => PrivDataNotAgreed,
            5 => UnknownGroup,
            6 => PasidMismatch,
            7 => PrivDataMismatch,
            _ => return None,
        })
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RejectReason::Malformed => "malformed response slot",
            RejectReason::Decode => "the response does not decode",
            RejectReason::FormatNotAgreed => "response format not agreed",
            RejectReason::PrivDataNotAgreed => "private data echo not agreed",
            RejectReason::UnknownGroup => "no unanswered group matches",
            RejectReason::PasidMismatch => "PASID missing or wrong",
            RejectReason::PrivDataMismatch => "private data missing or wrong",
        })
    }
}

/// A rejected response: the reason and the errno Linux would have returned for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rejection {
    /// Why.
    pub reason: RejectReason,
    /// The errno (`EINVAL`, or `E2BIG` for a non-zero unknown tail).
    pub errno: i32,
}

impl Rejection {
    pub(crate) fn new(reason: RejectReason) -> Rejection {
        Rejection {
            reason,
            errno: libc::EINVAL,
        }
    }

    pub(crate) fn decode(e: AbiError) -> Rejection {
        Rejection {
            reason: RejectReason::Decode,
            errno: e.errno(),
        }
    }

    /// The errno.
    pub fn errno(&self) -> i32 {
        self.errno
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (errno {})", self.reason, self.errno)
    }
}
