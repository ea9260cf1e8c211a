//! The guest side of iopf: emulated vIOMMU page request queues in guest memory, the guest's
//! page responses, and the bridge that carries host faults to them and the answers back.
//!
//! A VMM that passes a PRI device to a guest emulates an IOMMU for it. The host reports the
//! device's page requests on a fault queue (Linux's iommufd fault fd, iopf's own queue, or the
//! compatible queue: any [`iopf_abi::FaultConsumer`]); the vIOMMU writes them into the guest's
//! page request queue and interrupts the guest; the guest's driver resolves them in its own
//! page tables and answers through its command queue; the answer goes back to the host group.
//!
//! ```text
//!  device ─▶ host IOMMU ─▶ iopf-core ─▶ host fault queue (FaultConsumer)
//!                                           │ Bridge::pump: whole groups, room allowing
//!                                           ▼
//!          guest memory: page request queue ◀─ VtdPri (PQH/PQT/PQA/PRS, PECTL → MsiSink)
//!                                           │ guest driver: prq_event_thread()
//!                                           ▼
//!          guest memory: invalidation queue ─▶ VtdPri (IQT → page group response 0x9)
//!                                           │ Bridge::guest_response: GroupTable + judge
//!                                           ▼
//!                              host fault queue: respond(cookie, code_map::guest_to_host)
//! ```
//!
//! * [`Bridge`] (bridge.rs): architecture-neutral; the group table of the guest's outstanding
//!   groups is iopf-core's [`iopf_core::GroupTable`], and a guest's response is matched by its
//!   [`judge`](iopf_core::GroupTable::judge), the one set of matching rules of every stage.
//! * [`code_map`]: every response-code translation of the guest side, a test per cell.
//! * [`vtd`]: Intel VT-d: descriptors, the page request queue, the invalidation queue, the
//!   registers ([`vtd::VtdPri`]) and the wiring to a bridge ([`vtd::VtdBridge`]).
//! * [`smmuv3`]: Arm SMMUv3: the PRI queue, the stall model (event queue, `CMD_RESUME`), the
//!   command queue's `CMD_PRI_RESP` / `CMD_SYNC`, the stream table's `PPAR`, the registers
//!   ([`smmuv3::SmmuPri`]) and the wiring to a bridge ([`smmuv3::SmmuBridge`]).
//! * [`amd`]: AMD-Vi: the PPR log, `COMPLETE_PPR_REQUEST` / `COMPLETION_WAIT`, the registers
//!   ([`amd::AmdPri`]) and the wiring to a bridge ([`amd::AmdBridge`]).
//! * [`PassthroughUnit`]: what every architecture's unit-and-bridge offers a VMM.
//! * [`guest`]: guest driver models ([`guest::VtdGuestDriver`], [`guest::SmmuGuestDriver`],
//!   [`guest::AmdGuestDriver`]) behind [`guest::GuestDriverModel`], for tests and the simulator.
//! * [`interrupt`]: [`MsiSink`], the VMM's MSI injection, and the mask/pending rule.
//! * [`testing`]: a guest queue in a `Vec`.
//! * `virtio_iommu` (feature `virtio-iommu-experimental`): page requests and responses as the
//!   unmerged 2021 virtio-iommu RFC proposed them.
//!
//! Guest memory is the VMM's, as a [`GuestRam`]: every `vm-memory`
//! `GuestMemory` is one, and a VMM with its own accessors implements
//! it over them. Descriptors are read and written with bounds-checked copies, so a guest that
//! points a queue at memory that is not there loses its own requests and nothing else.

pub mod amd;
pub mod bridge;
pub mod code_map;
pub mod guest;
mod guest_ram;
pub mod interrupt;
pub mod mmio;
mod passthrough_unit;
pub mod smmuv3;
pub mod testing;
#[cfg(feature = "virtio-iommu-experimental")]
pub mod virtio_iommu;
pub mod vtd;

pub use bridge::{
    Bridge, BridgeConfig, BridgeStats, ConfigError, Endpoint, GroupNaming, GuestPageRequest,
    GuestQueue, GuestResponse, HostAnswer, PageResponseSink, PasidMap, Posted, PrivateDataMode,
    Unmatched,
};
pub use guest_ram::{GuestRam, Unreachable};
pub use interrupt::{EventInterrupt, MsiSink, RecordedMsis};
pub use mmio::MmioError;
pub use passthrough_unit::PassthroughUnit;
