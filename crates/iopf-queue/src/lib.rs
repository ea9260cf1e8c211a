//! The iopf fault queue: the seed's shared fault region, page responses, negotiation, across
//! processes.
//!
//! ```text
//!  fault core ──Group──▶ Producer ══ fault ring (iommu_fault | iommu_hwpt_pgfault + seq) ══▶ Consumer ──▶ VMM
//!      ▲                    │    ◀═══ response ring (vfio_iommu_page_response | ≤7 cookies) ═    │
//!      └──── Answer ◀── judge ──═════ judged watermark + verdict ring (rejections + reason) ══▶   │
//!                 eventfd ×2: rung only for a side that said it sleeps
//! ```
//!
//! Each fault and response slot is one cache line and carries a *stamp* that says it is full, so
//! a reader polls the slot it wants next and never the writer's index ([`layout`]); the
//! consumer gives slots back an eighth of the ring at a time, or at once when it has caught up;
//! the wake-up handshake is fenced by default, and can take the fence off the publishing side
//! with `membarrier(2)` at the price of interrupting the process's other threads
//! ([`handshake`]: the process chooses). Figures and how they were measured:
//! `docs/PERFORMANCE.md`.
//!
//! * [`negotiate`](mod@negotiate): the producer's [`Offer`], the consumer's [`Request`], the [`Agreement`].
//! * [`Producer`]: pushes groups (or reports them [`QueueError::Lost`]) and, when
//!   [`Features::UNRECOVERABLE`](iopf_abi::Features::UNRECOVERABLE) was agreed (`iommu_fault`
//!   records only), unrecoverable faults for information ([`Producer::push_unrecoverable`]);
//!   judges responses, answers everything INVALID when the consumer goes away
//!   ([`Producer::close`]).
//! * [`Consumer`]: reads records ([`Event`]: page requests, loss records, unrecoverable
//!   faults) one at a time ([`Consumer::pop_event`]) or in batches ([`Consumer::pop_events`]),
//!   writes responses, receives verdicts; implements [`iopf_abi::FaultConsumer`], whose
//!   `read_faults` skips unrecoverable faults (the iommufd record cannot express them).
//! * [`core_link`]: the producer as the fault core's handler for any number of devices on one
//!   queue, and the pump that feeds validated responses back into the core (and detaches a dead
//!   consumer's handlers so the core answers INVALID).
//! * [`channel`] builds both ends in one process; [`Listener`] / [`connect`] put them in two,
//!   over a UNIX socket with `SCM_RIGHTS`. Handshakes run side by side and time out; a peer that
//!   breaks the protocol (a consumer writing to the socket after the handshake, say) is dropped
//!   with an error that names it, and costs the producer no CPU.
//! * [`readiness`]: event loops. Every end ([`Consumer`], [`Producer`], [`CoreLink`]) implements
//!   `AsFd`, says what it can do now ([`Readiness`]) and is armed before its loop sleeps; a
//!   consumer whose response ring is full waits for room ([`Consumer::wait_for`]). Every timeout
//!   is an `Option<Duration>`. `examples/epoll_vmm.rs` (vmm-sys-util's epoll) and
//!   `examples/tokio_vmm.rs` (tokio's `AsyncFd`) are built and run by `cargo test`.
//!   Threads: each end is `Send`, owned by one thread; a [`CoreLink`]'s waits hold no lock, so
//!   reporting into the core and pumping run on different threads without blocking each other.
//! * [`layout`], `shm`, `wake`, [`record`], [`response`], `read_chunk`: the region's words, its
//!   mapping (the crate's only `unsafe`), wake-ups, slot encodings, response judgement, and the
//!   one reader of the fault ring that every way of reading shares. The producer's unanswered
//!   groups and the consumer's held ones are kept in `iopf_core`'s one group table.
//!
//! ```
//! use iopf_abi::features::RecordFormats;
//! use iopf_abi::{FaultConsumer, Features, IommufdResponse, ResponseCode};
//! use iopf_queue::{channel, TaggedGroup, Offer, ProducerConfig, Request};
//! # use iopf_abi::{PageRequest, PageRequestFlags, Perm};
//! # let request = PageRequest { flags: PageRequestFlags::LAST_PAGE, pasid: 0, grpid: 1,
//! #     perm: Perm::READ, addr: 0x1000, private_data: [0; 2] };
//! let offer = Offer::current();
//! let ask = Request::best_for(&offer, RecordFormats::HWPT_PGFAULT, Features::COOKIE_RESPONSE)
//!     .expect("offered");
//! let (mut producer, mut consumer) = channel(&offer, &ask, ProducerConfig::default())?;
//! producer.push_group(&TaggedGroup { tag: 7, dev_id: 1, requests: &[request] })?;
//! let mut faults = [iopf_abi::PgFault::from_bytes(&[0; 40])?; 16];
//! let n = consumer.read_faults(&mut faults)?;
//! consumer.respond(&[IommufdResponse { cookie: faults[n - 1].cookie, code: ResponseCode::Success }])?;
//! let mut answers = Vec::new();
//! producer.drain_responses(&mut answers);
//! assert_eq!(answers[0].tag, 7);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The producer treats the whole region as hostile (invariant 3 of the design): it keeps its own
//! indices, checks the consumer's, copies a response out before judging it, and caps the work
//! done per call. Records carry sequence numbers; a group that does not fit is lost, counted in
//! the header and announced by a loss record (invariant 2).
#![deny(missing_docs)]

pub mod consumer;
pub mod core_link;
pub mod error;
pub mod handshake;
pub mod layout;
pub mod negotiate;
pub mod producer;
pub mod readiness;
pub mod record;
pub mod response;
pub mod socket;

mod peer;
mod read_chunk;
mod shared;
mod shm;
mod sync;
mod wake;

#[cfg(all(test, iopf_loom))]
mod model_check;

use std::sync::Arc;

pub use consumer::{Consumer, ConsumerStats, ResponseVerdict};
pub use core_link::{CoreLink, LinkHandler, LinkObserver, Pumped, UnrecoverableCounts};
pub use error::{LossCounts, LossReason, QueueError, RejectReason, Rejection};
pub use handshake::{membarrier_calls, set_wake_handshake, wake_handshake, WakeHandshake};
pub use negotiate::{negotiate, Agreement, Offer, RecordFormat, Request};
pub use peer::PeerName;
pub use producer::{Answer, AnsweredBy, Producer, ProducerConfig, ProducerStats, TaggedGroup};
pub use readiness::Readiness;
pub use record::{Event, FaultEvent};
pub use response::RawFormat;
pub use socket::{
    connect, connect_timeout, own_uid, Listener, ServeConfig, DEFAULT_HANDSHAKE_TIMEOUT,
};

/// Negotiates `request` against `offer` and builds both ends of a queue in this process (the
/// region is still a sealed memfd, exactly as across processes). Errors: the negotiation's
/// refusal, or a failed system call.
pub fn channel(
    offer: &Offer,
    request: &Request,
    config: ProducerConfig,
) -> Result<(Producer, Consumer), QueueError> {
    let agreement = negotiate(offer, request)?;
    let geo = layout::Geometry::new(&agreement);
    let (region, _memfd) = shm::Region::create(&geo)?;
    let shared = shared::Shared::new(Arc::new(region), geo)?;
    let fault_bell = wake::Doorbell::new()?;
    let resp_bell = wake::Doorbell::new()?;
    let consumer_fault = fault_bell.twin()?;
    let consumer_resp = resp_bell.twin()?;
    let alive = Arc::new(());
    let producer = Producer::new(
        shared.clone(),
        agreement,
        config,
        fault_bell,
        resp_bell,
        peer::Link::InProcess(Arc::downgrade(&alive)),
        None,
    )?;
    let consumer = Consumer::new(
        shared,
        agreement,
        consumer_fault,
        consumer_resp,
        Some(alive),
        None,
    )?;
    Ok((producer, consumer))
}
