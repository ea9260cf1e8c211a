//! The consumer interface: what a VMM programs against, whichever fault queue feeds it.
//!
//! iopf's own fault queue, its iommufd-compatible queue and the real Linux iommufd fault fd all
//! implement [`FaultConsumer`], so the same resolver code runs on each. The interface is the
//! iommufd one, the lowest common form: records carry their group's cookie, and responses name a
//! group by cookie with SUCCESS or INVALID.

use core::time::Duration;

use crate::{IommufdResponse, PgFault};

/// The consuming end of a fault queue.
///
/// Contract, mirroring `iommufd_fault_fops_read()` / `_write()`:
/// * [`read_faults`](FaultConsumer::read_faults) hands out whole groups only, in arrival order;
///   every record of a group carries the same cookie and the last one has `LAST_PAGE`. A group
///   handed out is the consumer's to answer, exactly once.
/// * [`respond`](FaultConsumer::respond) answers groups in order and stops at the first response
///   it rejects: it returns how many it accepted, or that first error if it accepted none.
/// * Dropping the consumer is not a way to leave groups unanswered: iopf's queues answer INVALID
///   for every group the consumer still held (the kernel does so on detach or replace).
pub trait FaultConsumer {
    /// The implementation's error, with the errno Linux would return where one exists.
    type Error: core::fmt::Debug + core::fmt::Display;

    /// Moves as many whole waiting groups as fit into `out` and returns the number of records
    /// written; `Ok(0)` when nothing is waiting. If the first waiting group alone is larger than
    /// `out`, nothing is taken and an error (EINVAL) is returned.
    fn read_faults(&mut self, out: &mut [PgFault]) -> Result<usize, Self::Error>;

    /// Answers groups by cookie, in order. Returns the number accepted; an unknown cookie
    /// (EINVAL) stops the batch there.
    fn respond(&mut self, responses: &[IommufdResponse]) -> Result<usize, Self::Error>;

    /// Waits until at least one group is waiting or `timeout` passes (`None`: without limit;
    /// `Some(Duration::ZERO)`: just look). Returns whether a group is waiting. Every wait of
    /// iopf takes its timeout as an `Option<Duration>`, with these meanings.
    fn wait_readable(&mut self, timeout: Option<Duration>) -> Result<bool, Self::Error>;

    /// Whether this queue delivers page-request private data beside its records
    /// ([`private_data`](FaultConsumer::private_data)). The iommufd record has no room for it
    /// (the kernel keeps it and restores it in the device's response), so the default is
    /// `false`; iopf's own queue carries it. A vIOMMU learns from this whether its guest can be
    /// shown the private data (the seed's negotiation, host side).
    fn carries_private_data(&self) -> bool {
        false
    }

    /// The private data of the LAST_PAGE request of the group `cookie` names, for a group handed
    /// out and not yet answered, when the queue carries it and the request had some; `None`
    /// otherwise. Answering needs no echo: the producer restores it.
    fn private_data(&self, cookie: u32) -> Option<[u64; 2]> {
        let _ = cookie;
        None
    }
}
