//! The crate's one error type, why records were lost, and the verdict on a rejected response.
//! Why a response is rejected is the fault core's [`RejectReason`], the one list of every stage.

use iopf_abi::AbiError;
pub use iopf_core::RejectReason;

/// What went wrong on a fault queue. Each variant maps to the errno Linux returns for the same
/// kind of mistake ([`QueueError::errno`]). New kinds of mistake may be added.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// The ring asked for cannot hold the largest group the producer may push: that group would
    /// wait for room that never comes.
    #[error("a ring of {entries} entries cannot hold a group of {max_group} page requests, the largest the producer may send")]
    RingTooSmall {
        /// The ring size asked for.
        entries: u32,
        /// The producer's largest group.
        max_group: u32,
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
    /// A peer on the socket did something the protocol does not allow (wrote after the
    /// handshake, sent a message of the wrong kind) and was dropped. `peer` names it (its pid
    /// and uid for a consumer, the socket's path for a producer).
    #[error("peer {peer}: {what}")]
    PeerMisbehaved {
        /// Who: `pid 1234 (uid 1000)`, or the socket's path.
        peer: String,
        /// What it did, and what became of it.
        what: String,
    },
    /// A peer on the socket said nothing for as long as the handshake may take, and was dropped.
    #[error("peer {peer} sent nothing within {waited:?}: {hint}")]
    PeerSilent {
        /// Who: `pid 1234 (uid 1000)`, or the socket's path.
        peer: String,
        /// How long it was given.
        waited: std::time::Duration,
        /// What that probably means.
        hint: &'static str,
    },
    /// The socket at `path` is not an iopf fault queue (`connect`), or `path` cannot be served
    /// (`bind`): a socket of another type, another program's socket, a file that is not a
    /// socket, or a live producer already there.
    #[error("{}: {why}", path.display())]
    NotAQueue {
        /// The socket's path.
        path: std::path::PathBuf,
        /// What was found there.
        why: String,
        /// The errno: `EPROTOTYPE`, `ECONNREFUSED`, `EADDRINUSE`, `ENOTSOCK`, ...
        errno: i32,
    },
    /// A setting (an argument or an environment variable) has a value iopf cannot use.
    #[error("{setting}={value}: {why}")]
    BadSetting {
        /// What was being set: the environment variable's name, or what the argument sets.
        setting: &'static str,
        /// The value given.
        value: String,
        /// Why it cannot be used, and what can.
        why: String,
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
    /// corruption and a misbehaving peer, `ETIMEDOUT` for a silent one, `EACCES` for a refused
    /// peer, `EINVAL` for a bad setting, and the system call's own errno otherwise.
    pub fn errno(&self) -> i32 {
        match self {
            QueueError::VersionNotOffered { .. }
            | QueueError::NotOffered(_)
            | QueueError::NotAgreed(_) => libc::EOPNOTSUPP,
            QueueError::Inconsistent(_)
            | QueueError::BadEntries { .. }
            | QueueError::RingTooSmall { .. } => libc::EINVAL,
            QueueError::BadGroup(_) => libc::EINVAL,
            QueueError::Lost(_) => libc::ENOSPC,
            QueueError::Closed => libc::EPIPE,
            QueueError::Corrupt(_) | QueueError::Protocol(_) => libc::EPROTO,
            QueueError::Refused(r) => r.errno(),
            QueueError::Abi(e) => e.errno(),
            QueueError::PeerNotAllowed { .. } => libc::EACCES,
            QueueError::RefusedByProducer { errno, .. } => *errno,
            QueueError::PeerMisbehaved { .. } => libc::EPROTO,
            QueueError::PeerSilent { .. } => libc::ETIMEDOUT,
            QueueError::NotAQueue { errno, .. } => *errno,
            QueueError::BadSetting { .. } => libc::EINVAL,
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

/// Why records were not delivered (invariant 2 of the design: counted, announced to the consumer
/// at once by the header's counters and a loss record, and the group still answered). The
/// numbers are ABI: loss records and the region header carry them.
///
/// A group that does not fit the ring *now* is never lost: it waits in the producer's backlog
/// (bounded by the attached devices' allocations) and is delivered, in order, when room frees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum LossReason {
    /// Neither the ring nor the backlog had room: the devices sent more than their allocations
    /// allow (or, for a producer without a fault core, more than its configured backlog).
    BacklogFull = 1,
    /// The group has more requests than the ring can ever hold, or than the producer offered:
    /// it could never be delivered.
    TooLarge = 2,
    /// The consumer has gone away.
    ConsumerGone = 3,
    /// An unrecoverable fault found the ring full (they are information and take no answer, so
    /// they are not held back).
    RingFull = 4,
    /// The fault core answered the group at once: its device was past its Outstanding Page
    /// Request Allocation (`iopf_core::AutoReason::OverAllocation`).
    OverAllocation = 5,
    /// The fault core answered the group at once: its device was past its storm limit.
    Storm = 6,
    /// The fault core answered the group at once: its group table was full.
    CoreFull = 7,
}

impl LossReason {
    /// Every reason, in number order.
    pub const ALL: [LossReason; 7] = [
        LossReason::BacklogFull,
        LossReason::TooLarge,
        LossReason::ConsumerGone,
        LossReason::RingFull,
        LossReason::OverAllocation,
        LossReason::Storm,
        LossReason::CoreFull,
    ];

    /// The reason with this number (as a loss record carries it); `None` for 0 (several
    /// reasons, or a producer that does not say) and unknown numbers.
    pub fn from_raw(raw: u32) -> Option<LossReason> {
        LossReason::ALL.into_iter().find(|r| *r as u32 == raw)
    }
}

impl std::fmt::Display for LossReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LossReason::BacklogFull => "neither the ring nor the backlog had room",
            LossReason::TooLarge => "the group is larger than the ring or the offer",
            LossReason::ConsumerGone => "the consumer has gone away",
            LossReason::RingFull => "an unrecoverable fault found the ring full",
            LossReason::OverAllocation => "the device was past its outstanding allocation",
            LossReason::Storm => "the device was past its storm limit",
            LossReason::CoreFull => "the fault core's group table was full",
        })
    }
}

/// Records lost, by [`LossReason`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct LossCounts {
    counts: [u64; LossReason::ALL.len()],
}

impl LossCounts {
    /// Counts `n` records lost for `reason`.
    pub fn count(&mut self, reason: LossReason, n: u64) {
        let c = &mut self.counts[reason as usize - 1];
        *c = c.saturating_add(n);
    }

    /// Records lost for `reason`.
    pub fn get(&self, reason: LossReason) -> u64 {
        self.counts[reason as usize - 1]
    }

    /// Sets the count of `reason` (a consumer copying the region header's counters).
    pub(crate) fn set(&mut self, reason: LossReason, n: u64) {
        self.counts[reason as usize - 1] = n;
    }

    /// Records lost for any reason.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &b| a.saturating_add(b))
    }

    /// The reasons with a non-zero count, with their counts.
    pub fn nonzero(&self) -> impl Iterator<Item = (LossReason, u64)> + '_ {
        LossReason::ALL
            .into_iter()
            .map(|r| (r, self.get(r)))
            .filter(|&(_, n)| n > 0)
    }
}

impl std::fmt::Display for LossCounts {
    /// `none`, or `3 BacklogFull, 1 ConsumerGone`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut any = false;
        for (r, n) in self.nonzero() {
            if any {
                f.write_str(", ")?;
            }
            write!(f, "{n} {r:?}")?;
            any = true;
        }
        if !any {
            f.write_str("none")?;
        }
        Ok(())
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

    /// The verdict for the judge's rejection (`iopf_core::GroupTable::judge`): its reason,
    /// EINVAL.
    pub(crate) fn judged(r: iopf_core::Rejected) -> Rejection {
        Rejection::new(r.reason())
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
