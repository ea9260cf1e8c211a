//! Per-device counters: what was reported, what became of it, and every response by its origin.
//!
//! Identities that hold after every call (the property test checks them):
//! * `groups == delivered + auto_total(at report: NoHandler, ConsumerGone, OverAllocation, Storm,
//!   CoreFull, NoRoom, TooLarge)`
//! * `delivered == consumer_responses + auto_total(after delivery: Detached, Replaced, Removed,
//!   Flushed, Aged) + outstanding`
//! * `responses_total() == groups - outstanding`: one response per group, never more.

use iopf_abi::ResponseCode;

use crate::judge::RejectReason;

/// Why the core answered a group itself instead of its consumer. Every automatic response is
/// counted under exactly one reason. None of them is ever Response Failure: each is a transient
/// condition or a teardown, and FAILURE disables PRI on the function (DESIGN.md, "Backpressure,
/// not failure").
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(usize)]
pub enum AutoReason {
    /// No handler for the request's PASID or device (INVALID; `iommu_report_device_fault()`'s
    /// `err_bad_iopf` path, `iopf_error_response()`).
    NoHandler = 0,
    /// The handler refused the group because its consumer has gone ([`crate::Refusal::ShuttingDown`]):
    /// INVALID, as a detach answers (Linux's `err_abort` path would send FAILURE).
    ConsumerGone = 1,
    /// The device exceeded its Outstanding Page Request Allocation (the device's
    /// [`crate::OverflowPolicy`], by default SUCCESS: retry).
    OverAllocation = 2,
    /// The device's storm limit was reached in the current interval (the policy's code).
    Storm = 3,
    /// The core's group table (2^20 slots) is full (the overflow policy's code).
    CoreFull = 4,
    /// The handler had no room even in its backlog ([`crate::Refusal::QueueFull`]): the
    /// overflow policy's code. A queue whose backlog is bounded by its devices' allocations
    /// never refuses for this.
    NoRoom = 5,
    /// The group could never fit its handler's queue ([`crate::Refusal::TooLarge`]): INVALID.
    TooLarge = 6,
    /// The handler was detached (INVALID; `iommufd_fault_domain_detach_dev()` →
    /// `iommufd_auto_response_faults()`).
    Detached = 7,
    /// The handler was replaced (INVALID; `iommufd_fault_domain_replace_dev()`).
    Replaced = 8,
    /// The device was removed (INVALID; `iopf_queue_remove_device()`).
    Removed = 9,
    /// The group's PASID was flushed before reuse (INVALID).
    Flushed = 10,
    /// The group outlived the device's opt-in age limit (the policy's code).
    Aged = 11,
}

impl AutoReason {
    /// Number of reasons.
    pub const COUNT: usize = 12;
    /// All reasons, in counter order.
    pub const ALL: [AutoReason; Self::COUNT] = [
        AutoReason::NoHandler,
        AutoReason::ConsumerGone,
        AutoReason::OverAllocation,
        AutoReason::Storm,
        AutoReason::CoreFull,
        AutoReason::NoRoom,
        AutoReason::TooLarge,
        AutoReason::Detached,
        AutoReason::Replaced,
        AutoReason::Removed,
        AutoReason::Flushed,
        AutoReason::Aged,
    ];
    /// Whether this reason answers a group at report time (it was never delivered), rather than a
    /// delivered, outstanding group.
    pub fn at_report(self) -> bool {
        (self as usize) <= AutoReason::TooLarge as usize
    }
}

/// Counters of one device, from registration on. Plain data; read with
/// [`crate::FaultCore::counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    /// Page requests reported (stop markers included).
    pub reported: u64,
    /// Unrecoverable faults reported.
    pub unrecoverable: u64,
    /// Unrecoverable faults passed on to a handler.
    pub unrecoverable_passed: u64,
    /// Stop markers dropped (they need no response).
    pub stop_markers: u64,
    /// Groups completed by a LAST_PAGE request.
    pub groups: u64,
    /// Groups a handler accepted.
    pub delivered: u64,
    /// Responses the consumer sent that reached the device.
    pub consumer_responses: u64,
    /// Responses that reached the device, by the code the device received (SUCCESS, INVALID,
    /// FAILURE).
    pub responses: [u64; 3],
    /// Automatic responses, by [`AutoReason`].
    pub auto: [u64; AutoReason::COUNT],
    /// Rejected responses, by [`RejectReason`].
    pub rejected: [u64; RejectReason::COUNT],
    /// Groups refused by their handler, by [`crate::Refusal`] (queue full, shutting down, too
    /// large); each also counts under [`AutoReason::NoRoom`], [`AutoReason::ConsumerGone`] or
    /// [`AutoReason::TooLarge`].
    pub refusals: [u64; 3],
    /// FAILURE codes sent as INVALID because the function may not receive Response Failure.
    pub failure_as_invalid: u64,
    /// Partial requests discarded: overflow, device removal, PASID flush, or a group answered at
    /// report time whose partials are freed.
    pub discarded_partials: u64,
    /// Partial requests not held because of the storm limit or the outstanding allocation.
    pub dropped_partials: u64,
    /// Partial requests whose PASID differs from their group's LAST_PAGE request (Linux groups by
    /// PRG index alone; the partial still goes with the group).
    pub pasid_mismatches: u64,
    /// LAST_PAGE requests whose PRG index is already outstanding on the device (a device may not
    /// reuse an index before its response; both groups are kept and answered).
    pub grpid_reuses: u64,
    /// Delivered groups that outlived the age limit (counted once each, whether or not the policy
    /// answers them).
    pub aged: u64,
}

impl DeviceCounters {
    /// Automatic responses for `reason`.
    pub fn auto(&self, reason: AutoReason) -> u64 {
        self.auto[reason as usize]
    }
    /// Rejected responses for `reason`.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason as usize]
    }
    /// Groups refused for `refusal`.
    pub fn refusals(&self, refusal: crate::Refusal) -> u64 {
        self.refusals[refusal as usize]
    }
    /// Responses the device received with `code`.
    pub fn responses(&self, code: ResponseCode) -> u64 {
        self.responses[code as usize]
    }
    /// All responses the device received.
    pub fn responses_total(&self) -> u64 {
        self.responses.iter().sum()
    }
    /// All automatic responses.
    pub fn auto_total(&self) -> u64 {
        self.auto.iter().sum()
    }
    /// All rejected responses.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }
}

/// Counters that belong to no device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreCounters {
    /// Reports for a device that is not registered (nothing was sent).
    pub unknown_device_reports: u64,
    /// Responses through a handler that is not attached (nothing was sent).
    pub unknown_handler_responses: u64,
}
