//! Scenario files: what a run simulates, in TOML (documented in `scenarios/README.md`).
//!
//! A file is read in two passes. Serde (through `serde_path_to_error`) turns it into a
//! [`Scenario`], and a failure there names the field by its dotted path and the position toml
//! reports. Then [`Scenario::validate`] checks the values against the platform's rules (an OPRA
//! the group size fits in, at most 512 groups per function, shares in 0..=1, ...), and its errors
//! find the line of the offending field in the file's own syntax tree. Either way the error is a
//! [`SimError::Scenario`] naming the file, the line and the field.

use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::device::{DeviceConfig, StopMode};
use crate::prg::PRG_INDEXES;
use crate::resolver::ResolverSpec;
use crate::workload::WorkloadSpec;
use crate::{FunctionId, SimError, PAGE_SIZE};

/// The built-in default scenario (also in the repository as `scenarios/default.toml`).
pub const DEFAULT_SCENARIO: &str = include_str!("default.toml");

/// A whole run.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A short name for reports.
    pub name: String,
    /// What the scenario shows.
    #[serde(default)]
    pub description: String,
    /// How long the devices start new work items, in milliseconds. Work started by then still
    /// finishes (the drain).
    pub duration_ms: u64,
    /// The longest the drain may take, in milliseconds; groups still unanswered then are the
    /// ledger's violations.
    #[serde(default = "default_drain")]
    pub drain_timeout_ms: u64,
    /// Seed of every random choice (workloads, invalid addresses).
    #[serde(default)]
    pub seed: u64,
    /// The IOMMU.
    #[serde(default)]
    pub iommu: IommuSpec,
    /// The fault queue between the fault core and the consumer.
    #[serde(default)]
    pub queue: QueueSpec,
    /// The consumer side's resolver.
    #[serde(default)]
    pub resolver: ResolverSpec,
    /// The PRI functions, in groups of identical ones.
    pub devices: Vec<DeviceSpec>,
    /// PASIDs to stop during the run.
    #[serde(default)]
    pub stops: Vec<StopSpec>,
    /// Functions to reset during the run (a reset re-enables PRI after Response Failure).
    #[serde(default)]
    pub resets: Vec<ResetSpec>,
    /// Defects injected below the fault core, to show the ledger catching them.
    #[serde(default)]
    pub inject: InjectSpec,
    /// A vIOMMU and a guest driver between the fault queue and the resolver, for some
    /// functions (absent: every group is resolved by the host resolver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestSpec>,
}

/// The emulated vIOMMU architecture a guest sees.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Viommu {
    /// Intel VT-d: the page request queue in guest memory, page group responses in the
    /// invalidation queue (`iopf_viommu::vtd`).
    Vtd,
    /// Arm SMMUv3: the PRI queue in guest memory, `CMD_PRI_RESP` and `CMD_SYNC` in the command
    /// queue (`iopf_viommu::smmuv3`).
    Smmuv3,
    /// AMD-Vi: the PPR log in guest memory, `COMPLETE_PPR_REQUEST` and `COMPLETION_WAIT` in the
    /// command buffer (`iopf_viommu::amd`).
    Amd,
}

impl Viommu {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Viommu::Vtd => "vtd",
            Viommu::Smmuv3 => "smmuv3",
            Viommu::Amd => "amd",
        }
    }

    /// Usable slots of a page request queue of `2^order` 4 KiB pages.
    pub fn queue_slots(self, order: u64) -> u64 {
        match self {
            // 32-byte descriptors; one slot always stays free.
            Viommu::Vtd => (1u64 << (order + 7)) - 1,
            // 16-byte entries; the wrap bit lets every slot be used.
            Viommu::Smmuv3 => 1u64 << (order + 8),
            // 16-byte entries; one slot stays free (head == tail is empty).
            Viommu::Amd => (1u64 << (order + 8)) - 1,
        }
    }
}

/// A guest behind a vIOMMU: the functions passed through to it, and what it does wrong.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSpec {
    /// The vIOMMU.
    pub viommu: Viommu,
    /// The host functions passed through (their groups go to the guest; the others' stay with
    /// the host resolver). Function `n` is requester id `n << 3` (bus 0, device `n`) in the
    /// guest, with the host's PASIDs.
    pub functions: Vec<FunctionId>,
    /// The guest's page request queue (VT-d PRQ, SMMUv3 PRI queue, AMD PPR log) is
    /// `2^prq_order` 4 KiB pages (0..=7; Linux's VT-d PRQ: 4, 2048 descriptors).
    #[serde(default = "prq_order")]
    pub prq_order: u64,
    /// Opt-in: groups the guest has not answered this long after they were posted are answered
    /// SUCCESS by the vIOMMU (the device retries).
    #[serde(default)]
    pub age_limit_ms: Option<u64>,
    /// The guest's misbehaviour during the run.
    #[serde(default)]
    pub events: Vec<GuestEvent>,
}

fn prq_order() -> u64 {
    4
}

/// One thing the guest (or the VMM) does at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuestEvent {
    /// When, in milliseconds from the start.
    pub at_ms: u64,
    /// What.
    pub kind: GuestEventKind,
}

/// What a guest event does.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestEventKind {
    /// The guest driver keeps reading its page request queue but answers nothing.
    StopAnswering,
    /// The guest driver answers again (groups it read while silent stay unanswered: only the
    /// age limit or a reset answers them).
    ResumeAnswering,
    /// The vIOMMU is reset: every group the guest holds is answered INVALID, and the guest
    /// driver sets the unit up again.
    Reset,
}

/// Defects of the response path between the fault core and the devices (a faulty IOMMU), for
/// demonstrating that the ledger, which only watches the devices' links, notices. Both are off
/// by default; a run with either on is expected to end with the ledger disagreeing.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InjectSpec {
    /// Share (0..=1) of the core's responses delivered to the device twice.
    pub duplicate_responses: f64,
    /// Share (0..=1) of the core's responses never delivered.
    pub drop_responses: f64,
}

fn default_drain() -> u64 {
    5000
}

/// The IOMMU's page request queue and its driver.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IommuSpec {
    /// Depth of the page request queue, in requests (VT-d: 2048; AMD PPR log: 512).
    pub prq_depth: usize,
    /// Requests the driver takes from the queue per pass (one pass per platform step).
    pub service_batch: usize,
}

impl Default for IommuSpec {
    fn default() -> IommuSpec {
        IommuSpec {
            prq_depth: 2048,
            service_batch: 256,
        }
    }
}

/// The fault queue.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSpec {
    /// Fault records the ring holds (a power of two; the seed's VFIO region held 512).
    pub depth: u32,
}

impl Default for QueueSpec {
    fn default() -> QueueSpec {
        QueueSpec { depth: 512 }
    }
}

/// A group of identical PRI functions.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// How many functions.
    #[serde(default = "one")]
    pub count: u32,
    /// PASIDs per function (numbered 1..=pasids), one workload stream each.
    #[serde(default = "one")]
    pub pasids: u32,
    /// Outstanding Page Request Allocation of each function.
    pub opra: u32,
    /// Groups in flight at most per function (1..=512).
    #[serde(default = "prg_indexes")]
    pub max_groups: u32,
    /// "PRG Response PASID Required".
    #[serde(default)]
    pub pasid_required: bool,
    /// Whether the function may receive Response Failure (false for SR-IOV VFs: the core sends
    /// INVALID instead).
    #[serde(default = "yes")]
    pub failure_allowed: bool,
    /// Whether a fault handler is attached (false: the core answers every group INVALID,
    /// `iommu_report_device_fault()` with no domain handler).
    #[serde(default = "yes")]
    pub attached: bool,
    /// Work items each function starts per platform step, at most.
    #[serde(default = "eight")]
    pub items_per_step: u32,
    /// New work items each function starts per second, at most (absent: as fast as the
    /// function's allocation and the round trip allow).
    #[serde(default)]
    pub items_per_s: Option<f64>,
    /// The workload of every PASID of every function of the group.
    pub workload: WorkloadSpec,
}

fn one() -> u32 {
    1
}
fn eight() -> u32 {
    8
}
fn yes() -> bool {
    true
}
fn prg_indexes() -> u32 {
    PRG_INDEXES as u32
}

/// Stopping one PASID of one function during the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StopSpec {
    /// The function's id (functions are numbered from 1 in file order).
    pub device: FunctionId,
    /// The PASID.
    pub pasid: u32,
    /// When, in milliseconds from the start.
    pub at_ms: u64,
    /// Wait for outstanding groups, or send a stop marker.
    pub mode: StopMode,
}

/// Resetting one function during the run (PCIe Function Level Reset): PRI is enabled again if
/// Response Failure had disabled it. The reset waits until none of the function's groups is in
/// flight, since their responses are still owed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResetSpec {
    /// The function's id.
    pub device: FunctionId,
    /// When, in milliseconds from the start.
    pub at_ms: u64,
}

/// A function of the scenario with its fault-path properties.
#[derive(Debug, Clone)]
pub struct FunctionPlan {
    /// The device's own configuration.
    pub config: DeviceConfig,
    /// Whether it may receive FAILURE.
    pub failure_allowed: bool,
    /// Whether a fault handler is attached.
    pub attached: bool,
}

impl Scenario {
    /// The built-in default scenario.
    pub fn default_scenario() -> Scenario {
        // The built-in text is checked by a unit test; should it ever fail to parse, that test
        // fails, so this cannot be reached in a tested build.
        match Scenario::parse(DEFAULT_SCENARIO, "<built-in>") {
            Ok(s) => s,
            Err(e) => panic!("the built-in scenario is broken: {e}"),
        }
    }

    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::ScenarioIo {
            path: path.to_owned(),
            source,
        })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// Parses and validates scenario text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Scenario, SimError> {
        let de = toml::Deserializer::parse(text).map_err(|e| toml_error(text, file, "-", &e))?;
        let scenario: Scenario = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            toml_error(text, file, &field, e.inner())
        })?;
        scenario.validate().map_err(|(field, message)| {
            let (line, column) = locate(text, &field);
            SimError::Scenario {
                file: file.to_owned(),
                line,
                column,
                field,
                message,
            }
        })?;
        Ok(scenario)
    }

    /// Checks the values against the platform's rules. Returns the dotted path of the first bad
    /// field and what is wrong with it.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, m: &str| Err((f.to_owned(), m.to_owned()));
        if self.duration_ms == 0 {
            return bad("duration_ms", "must be at least 1");
        }
        if !(1..=1 << 20).contains(&self.iommu.prq_depth) {
            return bad("iommu.prq_depth", "must be between 1 and 1048576");
        }
        if self.iommu.service_batch == 0 {
            return bad("iommu.service_batch", "must be at least 1");
        }
        // The fault queue offers rings up to `iopf_queue::negotiate::DEFAULT_MAX_ENTRIES`.
        if !self.queue.depth.is_power_of_two() || !(2..=4096).contains(&self.queue.depth) {
            return bad("queue.depth", "must be a power of two between 2 and 4096");
        }
        let r = &self.resolver;
        if !r.service_time_us.is_finite() || r.service_time_us < 0.0 || r.service_time_us > 1e6 {
            return bad("resolver.service_time_us", "must be between 0 and 1000000");
        }
        if !(0.0..=1.0).contains(&r.invalid_share) {
            return bad("resolver.invalid_share", "must be between 0 and 1");
        }
        if !(0.0..=1.0).contains(&r.failure_share) {
            return bad("resolver.failure_share", "must be between 0 and 1");
        }
        if !(0.0..=1.0).contains(&self.inject.duplicate_responses) {
            return bad("inject.duplicate_responses", "must be between 0 and 1");
        }
        if !(0.0..=1.0).contains(&self.inject.drop_responses) {
            return bad("inject.drop_responses", "must be between 0 and 1");
        }
        if self.devices.is_empty() {
            return bad("devices", "at least one device is needed");
        }
        let mut functions = 0u32;
        for (i, d) in self.devices.iter().enumerate() {
            let f = |name: &str| format!("devices[{i}].{name}");
            if !(1..=256).contains(&d.count) {
                return Err((f("count"), "must be between 1 and 256".into()));
            }
            if !(1..=1024).contains(&d.pasids) {
                return Err((f("pasids"), "must be between 1 and 1024".into()));
            }
            if !(1..=65536).contains(&d.opra) {
                return Err((f("opra"), "must be between 1 and 65536".into()));
            }
            if !(1..=PRG_INDEXES as u32).contains(&d.max_groups) {
                return Err((
                    f("max_groups"),
                    "must be between 1 and 512 (the PRG index has 9 bits)".into(),
                ));
            }
            if d.items_per_step == 0 {
                return Err((f("items_per_step"), "must be at least 1".into()));
            }
            if d.items_per_s.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                return Err((f("items_per_s"), "must be a positive number".into()));
            }
            let w = &d.workload;
            if w.group_pages == 0 || w.group_pages > d.opra {
                return Err((
                    f("workload.group_pages"),
                    format!(
                        "must be between 1 and the OPRA ({}): a group larger than the \
                         allocation could never be sent",
                        d.opra
                    ),
                ));
            }
            if w.group_pages > self.queue.depth {
                return Err((
                    f("workload.group_pages"),
                    format!(
                        "must not exceed queue.depth ({}): the fault queue must be able to hold \
                         the largest group, or it could never be delivered",
                        self.queue.depth
                    ),
                ));
            }
            if w.group_pages as usize > self.iommu.prq_depth {
                return Err((
                    f("workload.group_pages"),
                    format!(
                        "must not exceed iommu.prq_depth ({}): a larger group could never be \
                         queued whole and its device would fault forever",
                        self.iommu.prq_depth
                    ),
                ));
            }
            if w.region_pages == 0 || w.region_pages > 1 << 36 {
                return Err((
                    f("workload.region_pages"),
                    "must be between 1 and 2^36".into(),
                ));
            }
            if w.base % PAGE_SIZE != 0 || w.base.checked_add(w.region_pages * PAGE_SIZE).is_none() {
                return Err((
                    f("workload.base"),
                    "must be 4 KiB aligned and the region must fit below 2^64".into(),
                ));
            }
            if w.stride_pages == 0 {
                return Err((f("workload.stride_pages"), "must be at least 1".into()));
            }
            if !(0.0..=1.0).contains(&w.access.privileged) {
                return Err((
                    f("workload.access.privileged"),
                    "must be between 0 and 1".into(),
                ));
            }
            functions += d.count;
        }
        for (i, s) in self.stops.iter().enumerate() {
            let Some(d) = self.function_spec(s.device) else {
                return Err((
                    format!("stops[{i}].device"),
                    format!("no function {} (functions are 1..={functions})", s.device),
                ));
            };
            if !(1..=d.pasids).contains(&s.pasid) {
                return Err((
                    format!("stops[{i}].pasid"),
                    format!("function {} has PASIDs 1..={}", s.device, d.pasids),
                ));
            }
        }
        for (i, r) in self.resets.iter().enumerate() {
            if self.function_spec(r.device).is_none() {
                return Err((
                    format!("resets[{i}].device"),
                    format!("no function {} (functions are 1..={functions})", r.device),
                ));
            }
        }
        if let Some(g) = &self.guest {
            self.validate_guest(g, functions)?;
        }
        Ok(())
    }

    fn validate_guest(&self, g: &GuestSpec, functions: u32) -> Result<(), (String, String)> {
        if g.functions.is_empty() {
            return Err((
                "guest.functions".into(),
                "at least one function is passed through".into(),
            ));
        }
        if g.prq_order > 7 {
            return Err(("guest.prq_order".into(), "must be between 0 and 7".into()));
        }
        if g.age_limit_ms == Some(0) {
            return Err(("guest.age_limit_ms".into(), "must be at least 1".into()));
        }
        let capacity = g.viommu.queue_slots(g.prq_order);
        for (i, &id) in g.functions.iter().enumerate() {
            let field = format!("guest.functions[{i}]");
            let Some(d) = self.function_spec(id) else {
                return Err((
                    field,
                    format!("no function {id} (functions are 1..={functions})"),
                ));
            };
            if g.functions[..i].contains(&id) {
                return Err((field, format!("function {id} is listed twice")));
            }
            if id > 8191 {
                return Err((field, "must be at most 8191 (requester id n << 3)".into()));
            }
            if !d.attached {
                return Err((
                    field,
                    format!("function {id} has no fault handler attached: nothing to pass"),
                ));
            }
            if u64::from(d.workload.group_pages) > capacity {
                return Err((
                    field,
                    format!(
                        "function {id}'s groups ({} pages) do not fit the guest's page request \
                         queue ({capacity} slots, guest.prq_order {})",
                        d.workload.group_pages, g.prq_order
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether function `id`'s groups go to the guest.
    pub fn passed_through(&self, id: FunctionId) -> bool {
        self.guest
            .as_ref()
            .is_some_and(|g| g.functions.contains(&id))
    }

    fn function_spec(&self, id: FunctionId) -> Option<&DeviceSpec> {
        let mut first = 1;
        for d in &self.devices {
            if (first..first + d.count).contains(&id) {
                return Some(d);
            }
            first += d.count;
        }
        None
    }

    /// The most page requests one group of this scenario can have: the largest `group_pages`
    /// (a work item's missing pages make one group). The fault queue is offered with it, and
    /// negotiation refuses a ring that could not hold it.
    pub fn max_group(&self) -> u32 {
        self.devices
            .iter()
            .map(|d| d.workload.group_pages)
            .max()
            .unwrap_or(1)
    }

    /// Every function of the scenario, numbered from 1 in file order.
    pub fn functions(&self) -> Vec<FunctionPlan> {
        let mut out = Vec::new();
        let mut id = 1;
        for d in &self.devices {
            for _ in 0..d.count {
                out.push(FunctionPlan {
                    config: DeviceConfig {
                        id,
                        opra: d.opra,
                        max_groups: d.max_groups as usize,
                        response_needs_pasid: d.pasid_required,
                        items_per_step: d.items_per_step,
                        items_per_s: d.items_per_s,
                        streams: (1..=d.pasids).map(|p| (p, d.workload)).collect(),
                        seed: self.seed,
                    },
                    failure_allowed: d.failure_allowed,
                    attached: d.attached,
                });
                id += 1;
            }
        }
        out
    }
}

fn toml_error(text: &str, file: &str, field: &str, e: &toml::de::Error) -> SimError {
    let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s));
    SimError::Scenario {
        file: file.to_owned(),
        line,
        column,
        field: if field.is_empty() || field == "." {
            "-".to_owned()
        } else {
            field.to_owned()
        },
        message: e.message().trim().to_owned(),
    }
}

fn line_col(text: &str, span: Range<usize>) -> (usize, usize) {
    let at = span.start.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(at, |n| at - n - 1) + 1;
    (line, column)
}

/// Finds the line and column of the value at dotted path `field` (`devices[1].workload.base`),
/// or of the nearest enclosing item that is present (a missing key points at its table).
fn locate(text: &str, field: &str) -> (usize, usize) {
    use toml::de::{DeTable, DeValue};
    let Ok(root) = DeTable::parse(text) else {
        return (0, 0);
    };
    let mut span = root.span();
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    for part in field.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some(value) = table.and_then(|t| {
            t.iter()
                .find(|(k, _)| k.get_ref().as_ref() == key)
                .map(|(_, v)| v)
        }) else {
            break;
        };
        span = value.span();
        table = None;
        match (value.get_ref(), index) {
            (DeValue::Table(t), None) => table = Some(t),
            (DeValue::Array(a), Some(i)) => {
                let Some(item) = a.get(i) else { break };
                span = item.span();
                if let DeValue::Table(t) = item.get_ref() {
                    table = Some(t);
                }
            }
            _ => {}
        }
    }
    line_col(text, span)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
name = "small"
duration_ms = 100

[[devices]]
opra = 8
workload = { pattern = "sequential", region_pages = 64, group_pages = 2 }
"#;

    #[test]
    fn built_in_scenario_parses_and_matches_the_repository_copy() {
        let s = Scenario::default_scenario();
        assert!(!s.functions().is_empty());
        let repo = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scenarios/default.toml"
        ))
        .unwrap();
        assert_eq!(repo, DEFAULT_SCENARIO);
    }

    #[test]
    fn scenarios_survive_a_round_trip_through_toml() {
        // A split run hands its scenario to the consumer process this way.
        let s = Scenario::default_scenario();
        let text = toml::to_string(&s).unwrap();
        assert_eq!(Scenario::parse(&text, "round-trip").unwrap(), s);
    }

    #[test]
    fn small_scenario_and_defaults() {
        let s = Scenario::parse(SMALL, "small.toml").unwrap();
        assert_eq!(s.iommu, IommuSpec::default());
        assert_eq!(s.devices[0].max_groups, 512);
        let f = s.functions();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].config.id, 1);
        assert_eq!(f[0].config.streams.len(), 1);
    }

    fn err(text: &str) -> (usize, String, String) {
        match Scenario::parse(text, "bad.toml") {
            Err(SimError::Scenario {
                file,
                line,
                field,
                message,
                ..
            }) => {
                assert_eq!(file, "bad.toml");
                (line, field, message)
            }
            other => panic!("expected a scenario error, got {other:?}"),
        }
    }

    #[test]
    fn type_errors_name_line_and_field() {
        let text = SMALL.replace("opra = 8", "opra = \"eight\"");
        let (line, field, _) = err(&text);
        assert_eq!((line, field.as_str()), (6, "devices[0].opra"));
    }

    #[test]
    fn unknown_fields_and_syntax_errors_are_located() {
        let text = SMALL.replace("duration_ms = 100", "duration_ms = 100\nspeed = 3");
        let (line, _, message) = err(&text);
        assert_eq!(line, 4);
        assert!(message.contains("speed"), "{message}");
        let (line, field, _) = err("name = \"x\"\nduration_ms = = 3\n");
        assert_eq!((line, field.as_str()), (2, "-"));
    }

    #[test]
    fn rule_violations_name_line_and_field() {
        let text = SMALL.replace("group_pages = 2", "group_pages = 9");
        let (line, field, message) = err(&text);
        assert_eq!(
            (line, field.as_str()),
            (7, "devices[0].workload.group_pages")
        );
        assert!(message.contains("OPRA"), "{message}");
        let text =
            format!("{SMALL}\n[[stops]]\ndevice = 2\npasid = 1\nat_ms = 5\nmode = \"wait\"\n");
        let (line, field, _) = err(&text);
        assert_eq!((line, field.as_str()), (10, "stops[0].device"));
        let text = SMALL.replace(
            "duration_ms = 100",
            "duration_ms = 100\n[resolver]\ninvalid_share = 1.5",
        );
        let (line, field, _) = err(&text);
        assert_eq!((line, field.as_str()), (5, "resolver.invalid_share"));
        let text = SMALL.replace(
            "duration_ms = 100",
            "duration_ms = 100\n[resolver]\nfailure_share = -0.5",
        );
        let (_, field, _) = err(&text);
        assert_eq!(field, "resolver.failure_share");
        // A ring the queue cannot offer, and one too small for the largest group: named here,
        // not left to fail at negotiation.
        let text = SMALL.replace(
            "duration_ms = 100",
            "duration_ms = 100\n[queue]\ndepth = 8192",
        );
        let (_, field, message) = err(&text);
        assert_eq!(field, "queue.depth");
        assert!(message.contains("4096"), "{message}");
        let text = SMALL
            .replace("duration_ms = 100", "duration_ms = 100\n[queue]\ndepth = 2")
            .replace("group_pages = 2", "group_pages = 4");
        let (_, field, message) = err(&text);
        assert_eq!(field, "devices[0].workload.group_pages");
        assert!(message.contains("queue.depth"), "{message}");
    }
}
