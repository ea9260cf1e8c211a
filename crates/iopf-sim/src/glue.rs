//! The glue between the simulated platform and the real fault path: the fault core's
//! [`GroupHandler`] that pushes each device's groups into the one fault queue every device shares
//! (tagged with the core's cookie, so an answer names the core's group), the [`ResponseSink`]
//! mailbox through which the core's responses reach the devices, and the IOMMU driver's
//! [`FaultSink`] that reports page requests into the core (`iommu_report_device_fault()`) and
//! discards partial groups after a PRQ overflow (`iopf_queue_discard_partial()`).
//!
//! `iopf_queue::CoreLink` does the same for one device per queue; a simulated machine has many
//! devices on one queue, as many `IOMMU_HWPT_ALLOC`s may name one iommufd fault object.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use iopf_abi::Fault;
use iopf_core::{Cookie, DeviceResponse, FaultCore, GroupHandler, Refusal, Reported, ResponseSink};
use iopf_queue::{LossReason, Producer, QueueError};

use crate::iommu::FaultSink;
use crate::prq::QueuedRequest;
use crate::{DeviceId, PAGE_SIZE};

/// Where the core's responses to devices go: a mailbox the producer loop empties.
#[derive(Debug, Default)]
pub(crate) struct Mailbox(pub(crate) Vec<(iopf_core::DeviceId, DeviceResponse)>);

impl ResponseSink for Mailbox {
    fn page_response(&mut self, device: iopf_core::DeviceId, response: &DeviceResponse) {
        self.0.push((device, *response));
    }
}

/// The producer end of the fault queue as the core's handlers share it.
#[derive(Debug)]
pub(crate) struct QueueEnd {
    pub(crate) producer: Producer,
    /// With `map_on_success`: each delivered group's pages, by tag, to map on SUCCESS.
    pub(crate) pages: Option<HashMap<u64, GroupPages>>,
    pub(crate) lost: [u64; 3],
    pub(crate) pending_high_water: usize,
}

/// A delivered group's pages, kept by tag in a split run to map them on SUCCESS.
#[derive(Debug)]
pub(crate) struct GroupPages {
    pub(crate) dev: DeviceId,
    pub(crate) pasid: u32,
    pub(crate) pages: Vec<(u64, iopf_abi::Perm)>,
}

/// The glue from the fault core to the fault queue: the core's [`GroupHandler`] for one device,
/// pushing its groups into the shared queue, tagged with the core's cookie.
#[derive(Debug)]
pub(crate) struct QueueHandler {
    pub(crate) dev: DeviceId,
    pub(crate) queue: Rc<RefCell<QueueEnd>>,
}

impl GroupHandler for QueueHandler {
    fn deliver(&mut self, group: &iopf_core::Group<'_>) -> Result<(), Refusal> {
        let mut q = self.queue.borrow_mut();
        let tag = u64::from(group.cookie.raw());
        let pushed = q.producer.push_group(&iopf_queue::Group {
            tag,
            dev_id: self.dev,
            requests: group.requests,
        });
        match pushed {
            Ok(_) => {
                q.pending_high_water = q.pending_high_water.max(q.producer.pending_groups());
                let dev = self.dev;
                if let Some(pages) = q.pages.as_mut() {
                    let pasid = group.requests.last().map_or(0, |r| r.pasid);
                    let list = group
                        .requests
                        .iter()
                        .map(|r| (r.addr & !(PAGE_SIZE - 1), r.perm))
                        .collect();
                    pages.insert(
                        tag,
                        GroupPages {
                            dev,
                            pasid,
                            pages: list,
                        },
                    );
                }
                Ok(())
            }
            Err(QueueError::Lost(reason)) => {
                let i = match reason {
                    LossReason::RingFull => 0,
                    LossReason::TooManyPending => 1,
                    _ => 2,
                };
                q.lost[i] += 1;
                Err(if reason == LossReason::ConsumerGone {
                    Refusal::ShuttingDown
                } else {
                    Refusal::QueueFull
                })
            }
            Err(_) => Err(Refusal::ShuttingDown),
        }
    }

    /// The core answered the group itself: the queue forgets it (a later consumer response is
    /// rejected with a verdict), and so do the split run's page lists.
    fn withdraw(&mut self, cookie: Cookie) {
        let mut q = self.queue.borrow_mut();
        let tag = u64::from(cookie.raw());
        q.producer.withdraw(tag);
        if let Some(p) = q.pages.as_mut() {
            p.remove(&tag);
        }
    }
}

/// The driver's view of the core: reports from the IOMMU's queue go into it.
pub(crate) struct CoreFeed<'a> {
    pub(crate) core: &'a mut FaultCore<Mailbox, QueueHandler>,
    pub(crate) core_ids: &'a [iopf_core::DeviceId],
    pub(crate) report_at: &'a mut HashMap<(DeviceId, u32), u64>,
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
