//! The iopf fault core: page request groups, pending responses, exactly-once answers, teardown.
//!
//! iopf's counterpart of Linux 6.12 `drivers/iommu/io-pgfault.c` plus the cookie bookkeeping of
//! `drivers/iommu/iommufd/fault.c`. It guarantees invariant 1 of the design: every page request
//! group whose LAST_PAGE request reached the core gets exactly one response to its device, and no
//! response ever reaches a device for a group that is not outstanding.
//!
//! ```text
//!  IOMMU page request queue
//!        │ report(device, fault, now)                    [`FaultCore::report`]
//!        ▼
//!  ┌─ FaultCore ───────────────────────────────────────────────────────────────────────┐
//!  │ stop marker → dropped      unrecoverable → handler.unrecoverable()                │
//!  │ no LAST_PAGE → partial list (per device, by PRG index)           partial.rs       │
//!  │ LAST_PAGE → group = partials of that index + it                  report.rs        │
//!  │     no handler ─────────────────────────────────────────▶ INVALID at once ───┐    │
//!  │     storm / over allocation / table full ───────────────▶ overflow policy ───┤    │
//!  │     handler.deliver(&Group) ── Refusal ─────────────────▶ (SUCCESS: retry) ──┤    │
//!  │        │ Ok: outstanding under a Cookie              group_table.rs          │    │
//!  │        ▼                                                                     │    │
//!  │ respond(handler, Response) ── the judge ── error: nothing sent  judge.rs     │    │
//!  │        │ accepted                                                            │    │
//!  │ detach / replace / remove_device / flush_pasid / expire ── INVALID ──────────┤    │
//!  │        ▼                                                    teardown.rs      ▼    │
//!  │   ResponseSink::page_response(device, DeviceResponse)  ◀── exactly once per group │
//!  └───────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! * [`FaultCore`] (core.rs): registry of devices ([`PriCaps`]) and handlers.
//! * report.rs: the report path, [`FaultCore::report`], split as Linux splits it.
//! * [`GroupHandler`] (handler.rs): where groups go; the core owns its handlers.
//! * [`ResponseSink`], [`Response`], [`DeviceResponse`] (response.rs): both directions of answers;
//!   answer.rs: the one place a device's response is built and sent.
//! * [`GroupTable`] (group_table.rs): outstanding groups and their cookies, in delivery order per
//!   owner and by PRG index; **public, and the one group table of every stage** (the fault
//!   queue's producer and consumer, the iommufd-compatible queue, the vIOMMU bridge).
//! * [`GroupTable::judge`] (judge.rs): the response-matching rules, the one judge of every stage.
//! * partial.rs: held partial requests; prg_index.rs: the PRG-index chains.
//! * respond.rs: the core's response path; teardown.rs: detach, replace, removal, flush,
//!   overflow, age.
//! * `testing` (feature `test-utils`): a recording sink and a bounded queue handler.
//! * [`DeviceCounters`] (counters.rs): what happened, per device, with the identities they obey.
//!
//! Time is the caller's ([`Nanos`]), so a simulator can drive it. The core never allocates per
//! fault once its tables have grown to the working set; an outstanding group costs one 80-byte
//! slot plus 8 bytes in its device's PRG-index table: 92.7 bytes per group measured at 1,024
//! devices × 512 groups (`tests/scale.rs`, figures and method in `docs/CORE.md`).
//!
//! **Backpressure, not failure.** The core answers Response Failure only when a consumer asks
//! for it (and the function may receive it). A group it cannot take on (past its device's
//! allocation, a full table, a handler with no room even in a backlog) is answered by the
//! device's [`OverflowPolicy`] (SUCCESS by default: the device retries, as SMMUv3 hardware
//! answers on PRI queue overflow), a group whose consumer has gone INVALID.
//!
//! ```
//! use iopf_abi::{Fault, Features, PageRequest, PageRequestFlags, Perm, ResponseCode};
//! use iopf_core::*;
//!
//! #[derive(Default)]
//! struct Recorder(Vec<(DeviceId, DeviceResponse)>);
//! impl ResponseSink for Recorder {
//!     fn page_response(&mut self, d: DeviceId, r: &DeviceResponse) { self.0.push((d, *r)) }
//! }
//! struct Accept;
//! impl GroupHandler for Accept {
//!     fn deliver(&mut self, _g: &Group<'_>) -> Result<(), Refusal> { Ok(()) }
//! }
//!
//! let mut core: FaultCore<Recorder> = FaultCore::new(Recorder::default());
//! let dev = core.register(PriCaps::default())?;
//! let h = core.attach(dev, None, Box::new(Accept), Features::COOKIE_RESPONSE)?;
//! let req = PageRequest { flags: PageRequestFlags::LAST_PAGE, pasid: 0, grpid: 7,
//!                         perm: Perm::READ, addr: 0x1000, private_data: [0; 2] };
//! let Reported::Delivered { cookie, .. } = core.report(dev, &Fault::PageRequest(req), 10)? else {
//!     unreachable!()
//! };
//! core.respond(h, &Response::by_cookie(cookie, ResponseCode::Success))?;
//! assert_eq!(core.sink().0[0].1.grpid, 7);
//! // A second answer is refused, and nothing more reaches the device.
//! assert_eq!(core.respond(h, &Response::by_cookie(cookie, ResponseCode::Success)),
//!            Err(CoreError::AlreadyAnswered(cookie)));
//! assert_eq!(core.sink().0.len(), 1);
//! # Ok::<(), CoreError>(())
//! ```
#![deny(missing_docs)]

mod answer;
mod core;
mod counters;
mod device;
mod error;
mod group_table;
mod handler;
mod ids;
mod judge;
mod partial;
mod prg_index;
mod report;
mod respond;
mod response;
mod teardown;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;

pub use crate::core::{FaultCore, GroupInfo};
pub use counters::{AutoReason, CoreCounters, DeviceCounters};
pub use device::{AgeLimit, OverflowPolicy, PriCaps, StormLimit};
pub use error::CoreError;
pub use group_table::{GroupFacts, GroupTable, Lookup, Naming, TableError, REUSE_DISTANCE};
pub use handler::{Group, GroupHandler, MissedGroup, Refusal};
pub use ids::{Cookie, DeviceId, HandlerId, Nanos};
pub use judge::{Judged, RejectReason, Rejected, Responder, Taken};
pub use report::{DropReason, Reported};
pub use response::{Answered, DeviceResponse, GroupRef, Response, ResponseSink};
pub use teardown::RemovedDevice;
