//! An emulated Arm SMMUv3's page request path: the PRI queue, the stall model's event records,
//! the commands that answer them, their registers and interrupts.
//!
//! * [`pri_entry`]: the 16-byte PRI queue entry;
//! * [`event`]: the 32-byte stall event record (`F_TRANSLATION` with `STALL`);
//! * [`command`]: `CMD_PRI_RESP`, `CMD_RESUME`, `CMD_STALL_TERM`, `CMD_SYNC`, and the other
//!   opcodes Linux issues;
//! * [`queue`]: queue pointers (index, wrap, overflow flag);
//! * [`stream_table`]: the linear stream table and `STE.PPAR`;
//! * [`regs`]: register offsets and bits, as Linux's `arm-smmu-v3.h` names them;
//! * [`SmmuPri`] (unit.rs, output_queue.rs, command_queue.rs): the register file a VMM's MMIO
//!   handler calls, the [`crate::GuestQueue`] the bridge posts into (PRI functions to the PRI
//!   queue, stalling functions to the event queue), and the command queue;
//! * [`SmmuBridge`] (passthrough.rs): a [`SmmuPri`] and a [`crate::Bridge`] wired together.

pub mod command;
mod command_queue;
pub mod event;
mod msi;
mod output_queue;
mod passthrough;
pub mod pri_entry;
pub mod queue;
pub mod regs;
pub mod stream_table;
mod unit;

pub use crate::bridge::PageResponseSink;
pub use command::{Command, CommandError, SyncCs};
pub use command_queue::Processed;
pub use event::{EventError, StallEvent};
pub use msi::MsiConfig;
pub use output_queue::SmmuGuestQueue;
pub use passthrough::SmmuBridge;
pub use pri_entry::{PriEntry, PriEntryError};
pub use unit::{MmioError, SmmuConfig, SmmuPri, SmmuStats, Written};
