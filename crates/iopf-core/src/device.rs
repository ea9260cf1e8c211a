//! Registered devices: their PCIe PRI properties, the opt-in policies, and the per-device fault
//! state (`struct iommu_fault_param`).

use iopf_abi::ResponseCode;
use rustc_hash::FxHashMap;

use crate::counters::DeviceCounters;
use crate::partial::Chain;
use crate::prg_index::NIL;
use crate::{CoreError, Nanos};

/// The PRI properties of a function (PCIe Page Request Extended Capability), fixed at
/// registration ([`crate::FaultCore::register`], the `iopf_queue_add_device()` step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PriCaps {
    /// Outstanding Page Request Allocation: how many page requests the function may have in
    /// flight (held partials plus the requests of outstanding groups). At least 1. The core never
    /// holds more than this for the device: requests beyond it are not held (see
    /// [`crate::AutoReason::OverAllocation`]), so memory per device is bounded, and so is every
    /// backlog downstream (a group has at most this many requests).
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
/// `answer` if it is set (SUCCESS or INVALID: a consumer that is slow is a transient condition,
/// which never ends in Response Failure).
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
    /// The code excess groups are answered with: SUCCESS (the device retries later) or INVALID.
    /// Not FAILURE, which would disable PRI on the function for a transient condition.
    pub code: ResponseCode,
}

/// What the core answers a group it cannot take on: one past its device's Outstanding Page
/// Request Allocation ([`crate::AutoReason::OverAllocation`]), one its handler had no room for
/// even in a backlog ([`crate::AutoReason::NoRoom`]), one when the group table is full
/// ([`crate::AutoReason::CoreFull`]). Each is counted by reason and the device's handler is told
/// ([`crate::GroupHandler::missed`]), so its consumer learns of it at once.
///
/// The default, [`OverflowPolicy::RETRY`], answers SUCCESS with nothing mapped: the device retries
/// the access and faults again, which is what SMMUv3 hardware does for LAST requests when its PRI
/// queue overflows (and riscv-iommu when its page request queue is full). Never FAILURE: these are
/// transient conditions, and Response Failure disables PRI on the function until a reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OverflowPolicy {
    /// SUCCESS (retry) or INVALID (the access fails).
    pub answer: ResponseCode,
}

impl OverflowPolicy {
    /// Answer SUCCESS: the device retries (SMMUv3's answer on PRI queue overflow).
    pub const RETRY: OverflowPolicy = OverflowPolicy {
        answer: ResponseCode::Success,
    };
    /// Answer INVALID: the device's access fails.
    pub const INVALID: OverflowPolicy = OverflowPolicy {
        answer: ResponseCode::Invalid,
    };
}

impl Default for OverflowPolicy {
    fn default() -> OverflowPolicy {
        OverflowPolicy::RETRY
    }
}

/// Refuses a policy code of FAILURE: only a resolver may ask for Response Failure.
pub(crate) fn policy_code(code: ResponseCode, what: &'static str) -> Result<(), CoreError> {
    if code == ResponseCode::Failure {
        Err(CoreError::BadConfig(what))
    } else {
        Ok(())
    }
}

/// The storm limit's running window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StormState {
    pub limit: StormLimit,
    window_start: Nanos,
    count: u32,
    started: bool,
}

impl StormState {
    pub(crate) fn new(limit: StormLimit) -> StormState {
        StormState {
            limit,
            window_start: 0,
            count: 0,
            started: false,
        }
    }

    /// Whether one more request is admitted at `now` (fixed windows).
    pub(crate) fn admit(&mut self, now: Nanos) -> bool {
        if !self.started || now.saturating_sub(self.window_start) >= self.limit.interval {
            self.started = true;
            self.window_start = now;
            self.count = 0;
        }
        if self.count >= self.limit.max_requests {
            false
        } else {
            self.count += 1;
            true
        }
    }
}

/// The fault state of one registered device (`struct iommu_fault_param`). Its outstanding
/// groups are in the core's group table, under the device's slot index.
#[derive(Debug)]
pub(crate) struct DeviceState {
    pub caps: PriCaps,
    pub counters: DeviceCounters,
    pub age: Option<AgeLimit>,
    pub storm: Option<StormState>,
    pub overflow: OverflowPolicy,
    /// Device-wide handler slot, or NIL.
    pub handler: u32,
    /// PASID → handler slot.
    pub pasid_handlers: FxHashMap<u32, u32>,
    /// PRG index → held partial requests.
    pub partials: FxHashMap<u32, Chain>,
    pub held_partials: u32,
    /// Page requests in flight: held partials plus the requests of outstanding groups.
    pub in_flight: u32,
    pub outstanding: u32,
}

impl DeviceState {
    pub(crate) fn new(caps: PriCaps) -> DeviceState {
        DeviceState {
            caps,
            counters: DeviceCounters::default(),
            age: None,
            storm: None,
            overflow: OverflowPolicy::default(),
            handler: NIL,
            pasid_handlers: FxHashMap::default(),
            partials: FxHashMap::default(),
            held_partials: 0,
            in_flight: 0,
            outstanding: 0,
        }
    }

    /// The handler slot a request with `pasid` goes to: the PASID's own handler, else the
    /// device-wide one (`find_fault_handler()`; Linux falls back to the RID's handler for
    /// PASIDs only with a user-managed PASID table, iopf always does, so a VMM can take all
    /// PASIDs of a device with one handler).
    pub(crate) fn route(&self, pasid: Option<u32>) -> u32 {
        if let Some(p) = pasid {
            if !self.pasid_handlers.is_empty() {
                if let Some(&h) = self.pasid_handlers.get(&p) {
                    return h;
                }
            }
        }
        self.handler
    }

    /// The handler slots attached to the device: device-wide first, then per PASID.
    pub(crate) fn handler_slots(&self) -> impl Iterator<Item = (u32, Option<u32>)> + '_ {
        (self.handler != NIL)
            .then_some((self.handler, None))
            .into_iter()
            .chain(self.pasid_handlers.iter().map(|(&p, &h)| (h, Some(p))))
    }
}
