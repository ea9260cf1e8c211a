//! Fault handlers: where a completed page request group goes (the `iopf_handler` of a Linux
//! `iommu_domain`, e.g. `iommufd_fault_iopf_handler()`).
//!
//! **Ownership.** The core owns its handlers (`H`, by default `Box<dyn GroupHandler + Send>`):
//! [`crate::FaultCore::attach`] moves one in, [`crate::FaultCore::detach`] and
//! [`crate::FaultCore::replace`] hand it back. Delivery is then one indirect call on a handler the
//! core already holds: O(1), no lookup outside the core's tables, no allocation per fault (the
//! box is allocated once, at attach). A caller that wants static dispatch picks a concrete `H`.

use iopf_abi::{PageRequest, Unrecoverable};

use crate::{Cookie, DeviceId, HandlerId, Nanos};

/// Why a handler would not take a group. The core then answers the device at once (FAILURE, or
/// INVALID where the function may not receive FAILURE), counts it under
/// [`crate::AutoReason::Refused`], and forgets the group: as `iommu_report_device_fault()` does when
/// `iopf_handler()` fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Refusal {
    /// The handler's queue has no room for the group.
    QueueFull = 0,
    /// The handler is going away and takes no more groups.
    ShuttingDown = 1,
}

/// One completed page request group, as handed to [`GroupHandler::deliver`]. Borrowed: the
/// handler copies what it needs (records into its ring) before returning. Built by the core, or by
/// [`Group::new`] (e.g. to test a handler on its own).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Group<'a> {
    /// The device that sent it.
    pub device: DeviceId,
    /// The handler it is delivered to.
    pub handler: HandlerId,
    /// Its cookie: the name its response must give.
    pub cookie: Cookie,
    /// Its page requests in arrival order; the last one has LAST_PAGE. Each carries
    /// `RESPONSE_NEEDS_PASID` exactly when the device requires the PASID in responses and the
    /// request has one.
    pub requests: &'a [PageRequest],
    /// When its first request was reported.
    pub first_at: Nanos,
    /// When its LAST_PAGE request was reported (the group completed and was delivered).
    pub completed_at: Nanos,
}

impl<'a> Group<'a> {
    /// A group of `requests`, or `None` unless they are non-empty and only the last one has
    /// LAST_PAGE (the shape the core delivers).
    pub fn new(
        device: DeviceId,
        handler: HandlerId,
        cookie: Cookie,
        requests: &'a [PageRequest],
        first_at: Nanos,
        completed_at: Nanos,
    ) -> Option<Group<'a>> {
        let (last, partials) = requests.split_last()?;
        if !last.is_last() || partials.iter().any(|r| r.is_last()) {
            return None;
        }
        Some(Group {
            device,
            handler,
            cookie,
            requests,
            first_at,
            completed_at,
        })
    }

    /// The LAST_PAGE request, whose PASID, PRG index and private data the response uses
    /// (`iopf_group.last_fault`). `None` only for an empty request list, which the core never
    /// delivers.
    pub fn last(&self) -> Option<&'a PageRequest> {
        self.requests.last()
    }
}

/// Something that takes completed groups: iopf's fault queue, the iommufd backend, a test.
///
/// Contract:
/// * [`deliver`](GroupHandler::deliver) returning `Ok(())` makes the group *outstanding* with this
///   handler: it must eventually be answered through [`crate::FaultCore::respond`] naming this
///   handler, or the core answers it on teardown (detach, replace, remove, flush) or by the age
///   policy. Returning a [`Refusal`] leaves nothing outstanding: the core answers at once.
/// * The core never calls back into a handler while a call into that handler is running, and a
///   handler cannot call the core (it holds no reference to it).
pub trait GroupHandler {
    /// Takes a completed group. Must not block; O(1) in the group's size is expected.
    fn deliver(&mut self, group: &Group<'_>) -> Result<(), Refusal>;

    /// The core answered `cookie` on the handler's behalf (PASID flush or age limit) while the
    /// handler stays attached: drop the group if it has not been handed out yet; a response for it
    /// will be rejected as already answered. Default: nothing.
    fn withdraw(&mut self, cookie: Cookie) {
        let _ = cookie;
    }

    /// An unrecoverable fault on the device (or the handler's PASID), for information; it needs no
    /// answer. Default: ignored.
    fn unrecoverable(&mut self, device: DeviceId, fault: &Unrecoverable) {
        let _ = (device, fault);
    }
}

impl<T: GroupHandler + ?Sized> GroupHandler for Box<T> {
    fn deliver(&mut self, group: &Group<'_>) -> Result<(), Refusal> {
        (**self).deliver(group)
    }
    fn withdraw(&mut self, cookie: Cookie) {
        (**self).withdraw(cookie)
    }
    fn unrecoverable(&mut self, device: DeviceId, fault: &Unrecoverable) {
        (**self).unrecoverable(device, fault)
    }
}
