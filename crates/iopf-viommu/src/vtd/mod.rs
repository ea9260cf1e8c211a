//! An emulated Intel VT-d's page request path: the page request queue in guest memory, the
//! page group responses from the invalidation queue, their registers and interrupts.
//!
//! * [`page_request`]: the 32-byte page request descriptor;
//! * [`inv_descriptor`]: the page group response (0x9) and invalidation wait (0x5) descriptors;
//! * [`prq`]: the page request queue, its event and overflow;
//! * [`invalidation_queue`]: the invalidation queue, its completion event and errors;
//! * [`regs`]: register offsets and bits;
//! * [`VtdPri`] (unit.rs): the register file a VMM's MMIO handler calls, and the
//!   [`crate::GuestQueue`] the bridge posts into;
//! * [`VtdBridge`] (passthrough.rs): a [`VtdPri`] and a [`crate::Bridge`] wired together, what
//!   most VMMs use.

pub mod inv_descriptor;
pub mod invalidation_queue;
pub mod page_request;
mod passthrough;
pub mod prq;
pub mod regs;
mod unit;

pub use crate::bridge::PageResponseSink;
pub use inv_descriptor::{DescriptorError, PageGroupResponse, WaitDescriptor};
pub use invalidation_queue::{Processed, QueueError};
pub use page_request::{PageRequestError, VtdPageRequest};
pub use passthrough::VtdBridge;
pub use unit::{MmioError, VtdConfig, VtdGuestQueue, VtdPri, Written};
