//! Fault handlers: where a completed page request group goes (the `iopf_handler` of a Linux
//! `iommu_domain`, e.g. `iommufd_fault_iopf_handler()`).
//!
//! **Ownership.** The core owns its handlers (`H`, by default `Box<dyn GroupHandler + Send>`):
//! [`crate::FaultCore::attach`] moves one in, [`crate::FaultCore::detach`] and
//! [`crate::FaultCore::replace`] hand it back. Delivery is then one indirect call on a handler the
//! core already holds: O(1), no lookup outside the core's tables, no allocation per fault (the
//! box is allocated once, at attach). A caller that wants static dispatch picks a concrete `H`.

use iopf_abi::{PageRequest, Unrecoverable};

use crate::{AutoReason, Cookie, DeviceId, DeviceResponse, HandlerId, Nanos};

/// Why a handler would not take a group. The core then answers the device at once and forgets
/// the group, as `iommu_report_device_fault()` does when `iopf_handler()` fails, but never with
/// Response Failure (which disables PRI on the function): a full queue is answered by the
/// device's [`crate::OverflowPolicy`] ([`AutoReason::NoRoom`], by default SUCCESS so the device
/// retries), a consumer that has gone INVALID ([`AutoReason::ConsumerGone`], as a detach), a
/// group that could never fit INVALID ([`AutoReason::TooLarge`]).
///
/// A handler should hold a group back rather than refuse it for lack of room: iopf's fault queue
/// keeps such groups in a backlog bounded by its devices' allocations and refuses only past it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Refusal {
    /// The handler's queue has no room for the group, not even in a backlog.
    QueueFull = 0,
    /// The handler is going away and takes no more groups.
    ShuttingDown = 1,
    /// The group has more page requests than the handler's queue can ever hold: INVALID
    /// ([`AutoReason::TooLarge`]), since a retry would only send the same group again. A queue
    /// set up for its devices (ring at least their largest group) never refuses for this.
    TooLarge = 2,
}

/// A group the core answered at report time without delivering it, although a handler was
/// attached for it: over the device's allocation, over its storm limit, or with the group table
/// full. [`GroupHandler::missed`] receives it, so the consumer can be told at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissedGroup {
    /// The device.
    pub device: DeviceId,
    /// Page requests in the group (its held partials, discarded, and the LAST_PAGE request).
    pub requests: u32,
    /// Why the core answered it.
    pub reason: AutoReason,
    /// What the device received.
    pub sent: DeviceResponse,
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
///   policy, telling the handler through [`GroupHandler::withdraw`]. Returning a [`Refusal`]
///   leaves nothing outstanding: the core answers at once.
/// * The core never calls back into a handler while a call into that handler is running, and a
///   handler cannot call the core (it holds no reference to it).
pub trait GroupHandler {
    /// Takes a completed group. Must not block; O(1) in the group's size is expected.
    fn deliver(&mut self, group: &Group<'_>) -> Result<(), Refusal>;

    /// The core answers `cookie` on the handler's behalf: a PASID flush or the age limit while
    /// the handler stays attached, or a detach, replace or device removal just before the
    /// handler is handed back. Drop the group if it has not been handed out yet; a response for
    /// it will be rejected as already answered. Called once per group, so it should cost O(1).
    /// Default: nothing.
    fn withdraw(&mut self, cookie: Cookie) {
        let _ = cookie;
    }

    /// A group routed to this handler was answered by the core without being delivered
    /// ([`MissedGroup`]): tell the consumer (iopf's queue counts it by reason and writes a loss
    /// record at once). Default: nothing.
    fn missed(&mut self, group: &MissedGroup) {
        let _ = group;
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
    fn missed(&mut self, group: &MissedGroup) {
        (**self).missed(group)
    }
    fn unrecoverable(&mut self, device: DeviceId, fault: &Unrecoverable) {
        (**self).unrecoverable(device, fault)
    }
}
