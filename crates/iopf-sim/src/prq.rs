//! The IOMMU's page request queue: a ring of fixed depth, with the overflow behaviour of real
//! hardware.
//!
//! Mirrors VT-d's PRQ (`drivers/iommu/intel/prq.c`, VT-d spec §7.5.1): when a request finds the
//! queue full, the hardware sets the overflow bit (`PRS.PRO`) and from then on drops *every*
//! request, even once room has been made, until software has drained the queue and cleared the
//! bit; `prq_event_thread()` clears it only when head == tail, and calls
//! `iopf_queue_discard_partial()` first because the LAST_PAGE of a partial group may have been
//! lost. A dropped request that ends its group (LAST_PAGE, not a stop marker) is answered by the
//! hardware itself with Success, so the device retries and faults again (as SMMUv3 does, and as
//! VT-d does for requests it cannot queue); a dropped request of a partial group gets nothing.

use std::collections::VecDeque;

use iopf_abi::PageRequest;
use serde::Serialize;

use crate::FunctionId;

/// A page request as it sits in the queue: which function sent it, and when (ns on the run's
/// clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedRequest {
    /// The requesting function.
    pub dev: FunctionId,
    /// The request.
    pub req: PageRequest,
    /// When the device sent it.
    pub sent_ns: u64,
}

/// What happened to a request offered to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueue {
    /// It is in the queue.
    Queued,
    /// It was dropped (queue full or overflowed) and nothing answers it: a partial-group request
    /// or a stop marker.
    Dropped,
    /// It was dropped and, since it ended its group, the hardware answers the group with
    /// Success itself. The caller must deliver that response to the device.
    DroppedAutoSuccess,
}

/// Counters of the page request queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PrqStats {
    /// Depth of the queue, in requests.
    pub depth: usize,
    /// Requests queued.
    pub queued: u64,
    /// The most requests ever waiting at once.
    pub high_water: usize,
    /// Times the overflow bit was set.
    pub overflows: u64,
    /// Requests dropped because the queue was full or overflowed.
    pub dropped: u64,
    /// Of those, LAST_PAGE requests the hardware answered with Success itself.
    pub auto_success: u64,
    /// Times software found the queue empty and cleared the overflow bit.
    pub overflow_cleared: u64,
}

/// The page request queue of one IOMMU.
#[derive(Debug)]
pub struct PageRequestQueue {
    ring: VecDeque<QueuedRequest>,
    depth: usize,
    overflow: bool,
    stats: PrqStats,
}

impl PageRequestQueue {
    /// A queue holding at most `depth` requests (at least 1).
    pub fn new(depth: usize) -> PageRequestQueue {
        let depth = depth.max(1);
        PageRequestQueue {
            ring: VecDeque::with_capacity(depth),
            depth,
            overflow: false,
            stats: PrqStats {
                depth,
                ..PrqStats::default()
            },
        }
    }

    /// Offers a request, as the hardware does when a page request message arrives.
    pub fn push(&mut self, q: QueuedRequest) -> Enqueue {
        if !self.overflow && self.ring.len() >= self.depth {
            self.overflow = true;
            self.stats.overflows += 1;
        }
        if self.overflow {
            self.stats.dropped += 1;
            if q.req.is_last() && !q.req.is_stop_marker() {
                self.stats.auto_success += 1;
                return Enqueue::DroppedAutoSuccess;
            }
            return Enqueue::Dropped;
        }
        self.ring.push_back(q);
        self.stats.queued += 1;
        self.stats.high_water = self.stats.high_water.max(self.ring.len());
        Enqueue::Queued
    }

    /// Takes the oldest request, as software does when it advances the head.
    pub fn pop(&mut self) -> Option<QueuedRequest> {
        self.ring.pop_front()
    }

    /// Clears the overflow bit if it is set and the queue is empty; returns whether it did, in
    /// which case the caller must discard the fault core's partial groups first
    /// (`iopf_queue_discard_partial()`).
    pub fn clear_overflow_if_empty(&mut self) -> bool {
        if self.overflow && self.ring.is_empty() {
            self.overflow = false;
            self.stats.overflow_cleared += 1;
            true
        } else {
            false
        }
    }

    /// Whether the overflow bit is set.
    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// The counters so far.
    pub fn stats(&self) -> PrqStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use iopf_abi::{PageRequestFlags, Perm};

    use super::*;

    fn req(grpid: u32, last: bool, perm: Perm) -> QueuedRequest {
        let mut flags = PageRequestFlags::PASID_VALID;
        if last {
            flags |= PageRequestFlags::LAST_PAGE;
        }
        QueuedRequest {
            dev: 1,
            req: PageRequest {
                flags,
                pasid: 1,
                grpid,
                perm,
                addr: 0x1000,
                private_data: [0; 2],
            },
            sent_ns: 0,
        }
    }

    #[test]
    fn overflow_drops_until_empty() {
        let mut q = PageRequestQueue::new(2);
        assert_eq!(q.push(req(0, false, Perm::READ)), Enqueue::Queued);
        assert_eq!(q.push(req(0, true, Perm::READ)), Enqueue::Queued);
        // Full: the partial request is dropped silently, LAST_PAGE is auto-answered.
        assert_eq!(q.push(req(1, false, Perm::READ)), Enqueue::Dropped);
        assert_eq!(
            q.push(req(1, true, Perm::READ)),
            Enqueue::DroppedAutoSuccess
        );
        assert!(q.overflowed());
        // Room is made, but the bit stays set: still dropping.
        assert!(q.pop().is_some());
        assert!(!q.clear_overflow_if_empty(), "not empty yet");
        assert_eq!(
            q.push(req(2, true, Perm::WRITE)),
            Enqueue::DroppedAutoSuccess
        );
        // A stop marker (LAST_PAGE, no R/W) gets no response even when dropped.
        assert_eq!(q.push(req(3, true, Perm::empty())), Enqueue::Dropped);
        assert!(q.pop().is_some());
        assert!(q.clear_overflow_if_empty());
        assert_eq!(q.push(req(4, true, Perm::READ)), Enqueue::Queued);
        let s = q.stats();
        assert_eq!(
            (
                s.overflows,
                s.dropped,
                s.auto_success,
                s.overflow_cleared,
                s.high_water
            ),
            (1, 4, 2, 1, 2)
        );
    }
}
