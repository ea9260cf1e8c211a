//! The IOMMU: translation through the per-PASID I/O page tables, and the page request queue
//! whose requests the IOMMU driver reports into the fault core.

use std::sync::Arc;

use iopf_abi::{Perm, ResponseCode};
use serde::Serialize;

use crate::ledger::PrgResponse;
use crate::page_table::{PageTables, Translation};
use crate::prq::{Enqueue, PageRequestQueue, PrqStats, QueuedRequest};
use crate::FunctionId;

/// Where the IOMMU driver reports page requests: the fault core, seen from the driver.
pub trait FaultSink {
    /// One page request, in queue order (`iommu_report_device_fault()`). Stop markers never
    /// reach it: the driver drops them, as `prq_event_thread()` does.
    fn report(&mut self, q: &QueuedRequest);
    /// The hardware queue overflowed and has been drained: partial groups must be discarded,
    /// their LAST_PAGE may have been lost (`iopf_queue_discard_partial()`).
    fn discard_partial(&mut self);
}

/// Counters of the IOMMU beyond those of its queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IommuStats {
    /// The page request queue.
    pub prq: PrqStats,
    /// Stop markers the driver dropped (they get no response).
    pub stop_markers_dropped: u64,
    /// Requests reported into the fault core.
    pub reported: u64,
    /// Times the partial groups were discarded after an overflow.
    pub partial_discards: u64,
}

/// The simulated IOMMU.
#[derive(Debug)]
pub struct Iommu {
    tables: Arc<PageTables>,
    prq: PageRequestQueue,
    auto: Vec<(FunctionId, PrgResponse)>,
    stats: IommuStats,
}

impl Iommu {
    /// An IOMMU translating through `tables`, with a page request queue of `prq_depth`.
    pub fn new(tables: Arc<PageTables>, prq_depth: usize) -> Iommu {
        Iommu {
            tables,
            prq: PageRequestQueue::new(prq_depth),
            auto: Vec::new(),
            stats: IommuStats::default(),
        }
    }

    /// The page tables it walks.
    pub fn tables(&self) -> &Arc<PageTables> {
        &self.tables
    }

    /// An ATS translation request of `dev` for `access` to `iova` on `pasid`.
    pub fn translate(&self, dev: FunctionId, pasid: u32, iova: u64, access: Perm) -> Translation {
        self.tables.translate(dev, pasid, iova, access)
    }

    /// A page request message arrives from a device. If the queue drops it and it ended its
    /// group, the hardware's own Success response is kept for [`Iommu::take_auto_responses`].
    pub fn page_request(&mut self, q: QueuedRequest) -> Enqueue {
        let outcome = self.prq.push(q);
        if outcome == Enqueue::DroppedAutoSuccess {
            self.auto.push((
                q.dev,
                PrgResponse {
                    prgi: (q.req.grpid & 0x1ff) as u16,
                    pasid: q.req.pasid(),
                    code: ResponseCode::Success,
                },
            ));
        }
        outcome
    }

    /// The responses the hardware generated itself for dropped LAST_PAGE requests, to deliver
    /// to their devices.
    pub fn take_auto_responses(&mut self) -> Vec<(FunctionId, PrgResponse)> {
        std::mem::take(&mut self.auto)
    }

    /// One pass of the driver's page request thread (`prq_event_thread()`): takes up to `max`
    /// requests, drops stop markers, reports the rest to `sink`; then, if the overflow bit is
    /// set and the queue is empty, discards partial groups and clears the bit. Returns the
    /// number of requests taken.
    pub fn service(&mut self, max: usize, sink: &mut dyn FaultSink) -> usize {
        let mut taken = 0;
        while taken < max {
            let Some(q) = self.prq.pop() else { break };
            taken += 1;
            if q.req.is_stop_marker() {
                self.stats.stop_markers_dropped += 1;
                continue;
            }
            self.stats.reported += 1;
            sink.report(&q);
        }
        if self.prq.overflowed() && self.prq.is_empty() {
            sink.discard_partial();
            self.stats.partial_discards += 1;
            self.prq.clear_overflow_if_empty();
        }
        taken
    }

    /// Requests waiting in the queue.
    pub fn queued(&self) -> usize {
        self.prq.len()
    }

    /// The counters so far.
    pub fn stats(&self) -> IommuStats {
        IommuStats {
            prq: self.prq.stats(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use iopf_abi::{PageRequest, PageRequestFlags};

    use super::*;

    #[derive(Default)]
    struct Sink {
        reported: Vec<u32>,
        discards: u32,
    }
    impl FaultSink for Sink {
        fn report(&mut self, q: &QueuedRequest) {
            self.reported.push(q.req.grpid);
        }
        fn discard_partial(&mut self) {
            self.discards += 1;
        }
    }

    fn q(grpid: u32, perm: Perm) -> QueuedRequest {
        QueuedRequest {
            dev: 3,
            req: PageRequest {
                flags: PageRequestFlags::PASID_VALID | PageRequestFlags::LAST_PAGE,
                pasid: 9,
                grpid,
                perm,
                addr: 0,
                private_data: [0; 2],
            },
            sent_ns: 0,
        }
    }

    #[test]
    fn service_drops_markers_and_clears_overflow_after_discarding() {
        let mut iommu = Iommu::new(Arc::new(PageTables::new()), 2);
        iommu.page_request(q(1, Perm::READ));
        iommu.page_request(q(2, Perm::empty())); // stop marker
        iommu.page_request(q(3, Perm::READ)); // overflow: auto Success
        let auto = iommu.take_auto_responses();
        assert_eq!(auto.len(), 1);
        assert_eq!(auto[0].0, 3);
        assert_eq!(auto[0].1.prgi, 3);
        assert_eq!(auto[0].1.pasid, Some(9));
        let mut sink = Sink::default();
        assert_eq!(iommu.service(1, &mut sink), 1);
        assert_eq!(sink.discards, 0, "not empty yet");
        assert_eq!(iommu.service(8, &mut sink), 1);
        assert_eq!(sink.reported, vec![1]);
        assert_eq!(sink.discards, 1);
        let s = iommu.stats();
        assert_eq!(
            (s.stop_markers_dropped, s.reported, s.partial_discards),
            (1, 1, 1)
        );
        assert_eq!(s.prq.overflow_cleared, 1);
    }
}
