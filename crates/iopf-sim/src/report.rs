//! The report of a run: what the devices, the IOMMU, the fault core, the fault queue and the
//! consumer did, the latency per stage, and the ledger's verdict. Plain data, serialisable (the
//! CLI's `--json`).

use serde::Serialize;

use crate::device::DeviceStats;
use crate::iommu::IommuStats;
use crate::latency::StageLatency;
use crate::ledger::LedgerVerdict;
use crate::resolver::ResolverStats;
use crate::FunctionId;

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The scenario's name.
    pub scenario: String,
    /// Whether the two sides ran in two processes.
    pub split: bool,
    /// Whether the run was ended early by its stop check
    /// ([`run_until`](crate::platform::run_until)): the devices stopped starting work before
    /// the scenario's duration was over. The figures cover what was sent until then and its
    /// drain; the ledger's books are as complete as for a whole run.
    pub partial: bool,
    /// Wall time of the whole run, seconds (issuing plus drain).
    pub wall_s: f64,
    /// Time the devices started new work, seconds.
    pub issue_s: f64,
    /// Platform steps the producer side took (each: devices, IOMMU pass, responses).
    pub steps: u64,
    /// Totals over all functions.
    pub totals: Totals,
    /// Rates over the wall time.
    pub throughput: Throughput,
    /// Latency per stage.
    pub latency: Vec<StageLatency>,
    /// The IOMMU and its page request queue.
    pub iommu: IommuStats,
    /// The fault queue.
    pub queue: QueueReport,
    /// The fault core's automatic responses and drops, by reason.
    pub core: CoreReport,
    /// The consumer side.
    pub consumer: ResolverStats,
    /// Each function.
    pub devices: Vec<DeviceReport>,
    /// Functions whose PRI is disabled at the end (they received Response Failure).
    pub pri_disabled: Vec<FunctionId>,
    /// The ledger's verdict.
    pub ledger: LedgerVerdict,
    /// The vIOMMU and the guest, when the scenario passes functions through to one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest: Option<crate::nested::GuestReport>,
}

/// Totals over all functions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Page requests sent (faults).
    pub faults: u64,
    /// Page request groups sent.
    pub groups: u64,
    /// Groups sent again for work that had faulted before.
    pub refaults: u64,
    /// Work items started.
    pub items_started: u64,
    /// Work items completed.
    pub items_completed: u64,
    /// Work items failed with INVALID.
    pub items_invalid: u64,
    /// Work items failed because PRI was disabled.
    pub items_pri_disabled: u64,
    /// Work items dropped by a PASID stop.
    pub items_abandoned: u64,
    /// Responses received, SUCCESS.
    pub success: u64,
    /// INVALID.
    pub invalid: u64,
    /// FAILURE.
    pub failure: u64,
    /// Stop markers sent.
    pub stop_markers: u64,
    /// PASIDs stopped.
    pub pasids_stopped: u64,
    /// Function resets.
    pub resets: u64,
}

/// Rates.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Throughput {
    /// Faults per second.
    pub faults_per_s: f64,
    /// Groups per second.
    pub groups_per_s: f64,
    /// Completed work items per second.
    pub items_per_s: f64,
}

/// The fault queue's side of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueReport {
    /// Ring entries agreed.
    pub depth: u32,
    /// Records delivered into the ring.
    pub delivered: u64,
    /// Records that could not be delivered (each lost group's records), announced to the
    /// consumer.
    pub lost_records: u64,
    /// Groups that could not be delivered (refused by the queue, or answered by the core without
    /// delivery: over allocation, storm limit, full table).
    pub lost_groups: u64,
    /// Lost groups by reason (`iopf_queue::LossReason` names in snake case, `backlog_full`,
    /// `consumer_gone`, ...; reasons with none left out).
    pub lost_by_reason: std::collections::BTreeMap<String, u64>,
    /// Groups that waited in the backlog because the ring had no room when they came.
    pub held_back: u64,
    /// The most page requests in the backlog at once (bounded by the devices' allocations).
    pub backlog_high_water: u64,
    /// Consumer responses accepted by the queue.
    pub accepted: u64,
    /// Consumer responses the queue rejected.
    pub rejected: u64,
    /// Groups the queue answered INVALID because the consumer went away.
    pub answered_consumer_gone: u64,
    /// The most groups the queue held for the consumer at once (delivered, unanswered).
    pub pending_high_water: usize,
}

/// The fault core's side of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CoreReport {
    /// Page requests reported into the core.
    pub reported: u64,
    /// Groups completed in the core.
    pub groups: u64,
    /// Groups delivered to a handler.
    pub delivered: u64,
    /// Responses from the consumer the core accepted.
    pub consumer_responses: u64,
    /// Automatic responses by reason (`no_handler`, `over_allocation`, `no_room`, ...:
    /// `iopf_core::AutoReason` names in snake case), every reason present.
    pub auto: std::collections::BTreeMap<String, u64>,
    /// Responses the core rejected.
    pub rejected: u64,
    /// FAILUREs sent as INVALID because the function may not receive FAILURE.
    pub failure_as_invalid: u64,
    /// Partial requests discarded after a PRQ overflow.
    pub discarded_partials: u64,
    /// Partial requests not held (over allocation, storm).
    pub dropped_partials: u64,
}

/// One function.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    /// The device's own counters.
    #[serde(flatten)]
    pub stats: DeviceStats,
    /// Mean PRI occupancy: outstanding page requests / OPRA, averaged over the run's steps.
    pub mean_occupancy: f64,
}
