//! An emulated AMD IOMMU's page request path: the PPR log in guest memory, the
//! COMPLETE_PPR_REQUEST and COMPLETION_WAIT commands from the command buffer, the event log
//! entries for illegal commands, their registers and the IOMMU's MSI.
//!
//! * [`ppr_entry`]: the 16-byte PPR log entry;
//! * [`command`]: COMPLETE_PPR_REQUEST (0x07) and COMPLETION_WAIT (0x01), decoded strictly;
//! * [`event`]: the ILLEGAL_COMMAND_ERROR and COMMAND_HARDWARE_ERROR event log entries;
//! * [`ring`], [`log`]: the ring shape the three buffers share, and the run/overflow rule of
//!   the two logs;
//! * [`ppr_log`]: the PPR log and its overflow;
//! * [`command_buffer`]: the command buffer, its waits and its errors;
//! * [`regs`]: register offsets and bits (Linux's `amd_iommu_types.h`);
//! * [`AmdPri`] (unit.rs): the register file a VMM's MMIO handler calls, and the
//!   [`crate::GuestQueue`] the bridge posts into;
//! * [`AmdBridge`] (passthrough.rs): an [`AmdPri`] and a [`crate::Bridge`] wired together.
//!
//! Responses are matched with [`crate::GroupNaming::PRI`]: a COMPLETE_PPR_REQUEST with GN
//! names the PASID (and a wrong one matches nothing); without GN it names none.

pub mod command;
pub mod command_buffer;
pub mod event;
pub mod log;
mod passthrough;
pub mod ppr_entry;
pub mod ppr_log;
pub mod regs;
pub mod ring;
mod unit;

pub use command::{CommandError, CompletionWait, PprCompletion};
pub use command_buffer::{CommandFault, Processed};
pub use event::Event;
pub use passthrough::AmdBridge;
pub use ppr_entry::{PprEntry, PprEntryError};
pub use unit::{AmdConfig, AmdGuestQueue, AmdPri, MmioError, Written};
