//! Registered devices: their PCIe PRI properties and opt-in policies.

use iopf_abi::ResponseCode;

use crate::Nanos;

/// The PRI properties of a function (PCIe Page Request Extended Capability), fixed at
/// registration ([`crate::FaultCore::register`], the `iopf_queue_add_device()` step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PriCaps {
    /// Outstanding Page Request Allocation: how many page requests the function may have in
    /// flight (held partials plus the requests of outstanding groups). At least 1. The core never
    /// holds more than this for the device: requests beyond it are not held (see
    /// [`crate::AutoReason::OverAllocation`]), so memory per device is bounded.
    pub outstanding_allocation: u32,
    /// "PRG Response PASID Required": responses to requests with a PASID carry it, and a
    /// response naming its group by (PASID, grpid) must give the right PASID
    /// (`IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID`).
    pub pasid_required: bool,
    /// Whether the function may receive Response Failure. Not on a function that shares PRI
    /// with others, such as an SR-IOV VF: Response Failure disables PRI for all of them, so
    /// FAILURE is sent as INVALID (as `iommufd_fault_iopf_enable()` explains for VFs).
    pub failure_allowed: bool,
}

impl Default for PriCaps {
    /// A PF with the largest PRG index space: 512 outstanding requests, no PASID required in
    /// responses, Response Failure allowed.
    fn default() -> PriCaps {
        PriCaps {
            outstanding_allocation: 512,
            pasid_required: false,
            failure_allowed: true,
        }
    }
}

/// Opt-in response timeout for one device. Neither PCIe nor Linux has one (a group waits for its
/// consumer as long as it takes); with this policy groups delivered more than `limit` ago are
/// counted in [`crate::DeviceCounters::aged`] by [`crate::FaultCore::expire`], and answered with
/// `answer` if it is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AgeLimit {
    /// Age (since the group completed) past which a group is aged.
    pub limit: Nanos,
    /// The code to answer aged groups with; `None`: only count them.
    pub answer: Option<ResponseCode>,
}

/// Opt-in bound on the page requests admitted per interval for one device. Requests past the
/// bound within an interval are not admitted: a partial one is dropped, a LAST_PAGE one is
/// answered at once with `code` (together with its group's held partials).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StormLimit {
    /// Page requests admitted per interval (at least 1).
    pub max_requests: u32,
    /// The interval (fixed windows starting at the first request after the previous one ended).
    pub interval: Nanos,
    /// The code excess groups are answered with (INVALID is the gentle choice: FAILURE disables
    /// PRI on the function).
    pub code: ResponseCode,
}
