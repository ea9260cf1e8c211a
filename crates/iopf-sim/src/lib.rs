//! The simulated platform: PRI devices, an IOMMU with a page request queue, per-PASID I/O page
//! tables, workloads, a resolver, and an independent ledger.
//!
//! ```text
//!  producer side (one thread)                                         consumer side (thread or process)
//!  ┌────────────────────────────────────────────────────────────┐    ┌──────────────────────────┐
//!  │ PriDevice ──page requests──▶ Iommu (PRQ, overflow)          │    │                          │
//!  │   ▲   │ (ATS translate)          │ service(): FaultSink      │    │  fault queue consumer    │
//!  │   │   ▼                          ▼                           │    │        │                 │
//!  │   │ PageTables ◀───────────────────────────────────────────────────── Resolver (map pages)  │
//!  │   │                        fault core ──▶ fault queue ──────────────▶      │                 │
//!  │   └── PRG responses ◀────── (validate) ◀── responses ◀──────────────────────┘                │
//!  │ Ledger: taps every device's link, checks exactly-once        │    │                          │
//!  └────────────────────────────────────────────────────────────┘    └──────────────────────────┘
//! ```
//!
//! * [`page_table`]: sparse 4 KiB I/O page tables per (device, PASID), with permissions.
//! * [`prg`]: the 9-bit PRG index allocator of a PRI function.
//! * [`device`]: a PRI function: OPRA, groups with LAST_PAGE, SUCCESS/INVALID/FAILURE, stop PASID.
//! * [`prq`]: the IOMMU's page request queue and its overflow behaviour.
//! * [`iommu`]: translation, the queue, and the driver pass reporting into the fault core.
//! * [`workload`]: sequential, random and strided work items of one or more pages.
//! * [`resolver`]: the consumer side's demand paging, with service time and invalid addresses.
//! * [`nested`]: the consumer side through a VT-d vIOMMU (`iopf-viommu`) and a guest driver, for
//!   the functions a scenario passes through to a guest.
//! * [`latency`]: per-stage latency percentiles and the VT-d debugfs buckets.
//! * [`ledger`]: the independent witness of every group and response on the devices' links.
//! * [`scenario`]: the TOML scenario format and the built-in default scenario.
//! * [`platform`]: a run: both sides wired through the real fault core (`iopf-core`) and fault
//!   queue (`iopf-queue`), on two threads or, for a split run, two processes; `run_until` ends
//!   one early (a signal), drained and marked partial.
//! * [`report`]: what a run measured, serialisable.
//! * `glue` (private): the core's response mailbox, the IOMMU driver's report path into the
//!   core, and the split run's page mapping on SUCCESS; the core's handlers are
//!   `iopf_queue::CoreLink`'s, one link for every device on the shared fault queue.
//! * [`clock`]: the run's monotonic clock.
//!
//! ```no_run
//! use iopf_sim::latency::Stage;
//! use iopf_sim::platform::{run, Progress};
//! use iopf_sim::Scenario;
//!
//! let report = run(&Scenario::default_scenario(), &Progress::default())?;
//! assert!(report.ledger.ok, "every group answered exactly once");
//! let total = report.latency.iter().find(|s| s.stage == Stage::Total);
//! let p50 = total.map_or(0, |s| s.p50_ns);
//! println!("{} groups, p50 round trip {p50} ns", report.totals.groups);
//! # Ok::<(), iopf_sim::SimError>(())
//! ```
#![deny(missing_docs)]

pub mod clock;
pub mod device;
pub mod error;
mod glue;
pub mod iommu;
pub mod latency;
pub mod ledger;
pub mod nested;
pub mod page_table;
pub mod platform;
pub mod prg;
pub mod prq;
pub mod report;
pub mod resolver;
pub mod scenario;
pub mod workload;

pub use device::{DeviceConfig, DeviceStats, PriDevice, StopMode};
pub use error::SimError;
pub use iommu::{FaultSink, Iommu};
pub use ledger::{Ledger, LedgerVerdict, LinkTap, PrgResponse, Violation};
pub use page_table::{FunctionId, IoPageTable, PageTables, Translation, PAGE_SIZE};
pub use prq::{PageRequestQueue, QueuedRequest};
pub use resolver::{Resolver, ResolverSpec};
pub use scenario::Scenario;
pub use workload::{Pattern, WorkItem, Workload, WorkloadSpec};
