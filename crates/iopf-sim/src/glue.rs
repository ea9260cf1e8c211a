//! The glue between the simulated platform and the real fault path: the [`ResponseSink`]
//! mailbox through which the core's responses reach the devices, the IOMMU driver's
//! [`FaultSink`] that reports page requests into the core (`iommu_report_device_fault()`) and
//! discards partial groups after a PRQ overflow (`iopf_queue_discard_partial()`), and, for a
//! split run, the [`LinkObserver`] that maps a group's pages when its SUCCESS is accepted.
//!
//! The fault core's handlers are `iopf_queue::CoreLink`'s: one link serves every attached
//! device on the one fault queue they share, as many `IOMMU_HWPT_ALLOC`s may name one iommufd
//! fault object.

use std::collections::HashMap;
use std::sync::Arc;

use iopf_abi::{Fault, ResponseCode};
use iopf_core::{DeviceResponse, FaultCore, Reported, ResponseSink};
use iopf_queue::{Answer, LinkObserver};

use crate::iommu::FaultSink;
use crate::prq::QueuedRequest;
use crate::{FunctionId, PageTables, PAGE_SIZE};

/// Where the core's responses to devices go: a mailbox the producer loop empties.
#[derive(Debug, Default)]
pub(crate) struct Mailbox(pub(crate) Vec<(iopf_core::DeviceId, DeviceResponse)>);

impl ResponseSink for Mailbox {
    fn page_response(&mut self, device: iopf_core::DeviceId, response: &DeviceResponse) {
        self.0.push((device, *response));
    }
}

/// A delivered group's pages, kept by ticket in a split run to map them on SUCCESS.
#[derive(Debug)]
struct GroupPages {
    pasid: u32,
    pages: Vec<(u64, iopf_abi::Perm)>,
}

/// The split run's page bookkeeping: the consumer process cannot reach this side's page tables,
/// so a group's pages are mapped here when the queue accepts the consumer's SUCCESS for it (the
/// `IOMMU_IOAS_MAP` a VMM issues reaches the host kernel, which is this side). A group the core
/// answered itself, or answered otherwise, is forgotten.
#[derive(Debug)]
pub(crate) struct MapOnSuccess {
    tables: Arc<PageTables>,
    pages: HashMap<u64, GroupPages>,
}

impl MapOnSuccess {
    /// Maps into `tables`.
    pub(crate) fn new(tables: Arc<PageTables>) -> MapOnSuccess {
        MapOnSuccess {
            tables,
            pages: HashMap::new(),
        }
    }
}

impl LinkObserver for MapOnSuccess {
    fn delivered(&mut self, ticket: u64, group: &iopf_core::Group<'_>) {
        let pasid = group.requests.last().map_or(0, |r| r.pasid);
        let pages = group
            .requests
            .iter()
            .map(|r| (r.addr & !(PAGE_SIZE - 1), r.perm))
            .collect();
        self.pages.insert(ticket, GroupPages { pasid, pages });
    }

    fn withdrawn(&mut self, ticket: u64) {
        self.pages.remove(&ticket);
    }

    fn answered(&mut self, answer: &Answer, at_device: bool) {
        let Some(g) = self.pages.remove(&answer.tag) else {
            return;
        };
        // Only an answer the device receives maps pages: a late SUCCESS for a group the core
        // already answered INVALID (detach, removal, age limit) must not.
        if at_device && answer.code == ResponseCode::Success {
            let dev: FunctionId = answer.dev_id;
            for (iova, perm) in g.pages {
                // Page-aligned by construction, so mapping cannot fail.
                let _ = self.tables.map(dev, g.pasid, iova, perm);
            }
        }
    }
}

/// The driver's view of the core: reports from the IOMMU's queue go into it.
pub(crate) struct CoreFeed<'a> {
    pub(crate) core: &'a mut FaultCore<Mailbox>,
    pub(crate) core_ids: &'a [iopf_core::DeviceId],
    pub(crate) report_at: &'a mut HashMap<(FunctionId, u32), u64>,
    pub(crate) now: u64,
    pub(crate) unknown: u64,
}

impl FaultSink for CoreFeed<'_> {
    fn report(&mut self, q: &QueuedRequest) {
        let Some(&core_dev) = (q.dev as usize)
            .checked_sub(1)
            .and_then(|i| self.core_ids.get(i))
        else {
            self.unknown += 1;
            return;
        };
        match self
            .core
            .report(core_dev, &Fault::PageRequest(q.req), self.now)
        {
            Ok(Reported::Delivered { .. }) | Ok(Reported::Answered { .. }) => {
                self.report_at.insert((q.dev, q.req.grpid), self.now);
            }
            Ok(_) => {}
            Err(_) => self.unknown += 1,
        }
    }

    fn discard_partial(&mut self) {
        self.core.discard_partials();
    }
}
