//! iopf: the recoverable I/O page fault path of a virtualised machine.
//!
//! ```text
//!  PRI device ──page request──▶ IOMMU page-request queue ──▶ fault core ──▶ fault queue ──▶ consumer (VMM)
//!      ▲                                                        │ pending groups            │ resolve / inject
//!      └──────────────── page (group) response ◀── validate ◀───┴──────── response ◀────────┘
//! ```
//!
//! Each stage is its own crate, re-exported here under the name of its stage:
//!
//! | module | crate | stage |
//! |---|---|---|
//! | [`abi`] | `iopf-abi` | kernel-exact records, the extensible-struct rule, feature bits, the consumer interface |
//! | [`core`] | `iopf-core` | the fault core: groups, cookies, response validation, teardown |
//! | [`queue`] | `iopf-queue` | the fault queue shared with user space |
//! | [`iommufd`] | `iopf-iommufd` | the real Linux iommufd fault queue, and a compatible one of iopf's own |
//! | [`sim`] | `iopf-sim` | the built-in simulated platform |
#![deny(missing_docs)]

pub use iopf_abi as abi;
pub use iopf_core as core;
pub use iopf_iommufd as iommufd;
pub use iopf_queue as queue;
pub use iopf_sim as sim;
