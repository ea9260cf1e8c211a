//! The command buffer, as far as page responses need it: `CMD_BUF`, `CMD_HEAD`, `CMD_TAIL`,
//! `CONTROL.CMDBUF_EN` and `STATUS.CMDBUF_RUN`.
//!
//! Software writes 16-byte commands at the tail and moves `CMD_TAIL`; the IOMMU fetches from
//! `CMD_HEAD` to the tail, in order, while it runs. COMPLETE_PPR_REQUEST goes to the
//! [`PageResponseSink`] (the bridge), which answers the host. COMPLETION_WAIT completes only
//! once every earlier completion has reached the host ([`PageResponseSink::flushed`]): until
//! then fetching stops at it and resumes on a later [`CommandBuffer::process`] (the bridge's
//! next pump), so a guest that waits for its store knows its answers were sent. The other
//! commands ([`super::command`]) are accepted and counted.
//!
//! **Running and errors** (AMD 48882, `CmdBufEn` and `CmdBufRun`): the buffer runs from the
//! moment `CMDBUF_EN` goes from 0 to 1. An illegal command ([`CommandError`]) stops it with the
//! head at that command and an `ILLEGAL_COMMAND_ERROR` event naming the command's address; a
//! fetch or a COMPLETION_WAIT store that cannot reach guest memory stops it with a
//! `COMMAND_HARDWARE_ERROR` event. Nothing the failing command asked for is done. Fetching
//! resumes, at `CMD_HEAD`, once software writes `CMDBUF_EN` 0 then 1; it may move the head and
//! tail in between, as `amd_iommu_reset_cmd_buffer()` does (head = tail = 0). Linux 6.12 only
//! logs the event (`iommu_print_event()`, `dump_command()`) and never restarts the buffer: its
//! next COMPLETION_WAIT times out ("Completion-Wait loop timed out"); the restart is the
//! sequence Linux runs at init and resume.

use crate::guest_ram::GuestRam;
use vm_memory::GuestAddress;

use super::command::{bytes_to_words, Command, CommandError};
use super::event::Event;
use super::regs::ENTRY_BYTES;
use super::ring::Ring;
use crate::bridge::PageResponseSink;

/// What the command buffer has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommandStats {
    /// COMPLETE_PPR_REQUEST commands handed to the sink.
    pub ppr_completions: u64,
    /// Of those, with a status the architecture reserves (taken as Response Failure).
    pub reserved_status: u64,
    /// COMPLETION_WAIT commands completed.
    pub waits: u64,
    /// Times a COMPLETION_WAIT had to wait for the sink.
    pub wait_stalls: u64,
    /// Other commands accepted (invalidations, prefetch).
    pub other: u64,
    /// Illegal commands.
    pub illegal: u64,
    /// Command hardware errors.
    pub hardware_errors: u64,
}

/// Why the buffer stopped.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandFault {
    /// An illegal command at this guest-physical address.
    Illegal {
        /// The command's address.
        address: u64,
        /// What is wrong with it.
        error: CommandError,
    },
    /// This guest-physical address could not be read or written.
    Hardware(u64),
}

impl CommandFault {
    /// The event the unit logs for it.
    pub fn event(&self) -> Event {
        match *self {
            CommandFault::Illegal { address, .. } => Event::illegal_command(address),
            CommandFault::Hardware(address) => Event::command_hardware_error(address),
        }
    }
}

/// Outcome of [`CommandBuffer::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    /// Head reached the tail (or the buffer is not running).
    Drained,
    /// Stopped at a COMPLETION_WAIT until the sink has flushed; call again later.
    Waiting,
    /// Stopped at a fault just now (the caller logs its event); the buffer no longer runs.
    Stopped(CommandFault),
}

/// The command buffer's registers and state.
#[derive(Debug, Clone, Default)]
pub struct CommandBuffer {
    /// The base, head and tail registers.
    pub ring: Ring,
    running: bool,
    fault: Option<CommandFault>,
    stats: CommandStats,
}

/// What one [`CommandBuffer::process`] asks of the unit besides its outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effects {
    /// A COMPLETION_WAIT with I set completed: set `STATUS.COMWAIT_INT`.
    pub comwait_int: bool,
}

impl CommandBuffer {
    /// Whether it runs (`STATUS.CMDBUF_RUN`).
    pub fn running(&self) -> bool {
        self.running
    }

    /// The fault it last stopped at, until it is restarted.
    pub fn fault(&self) -> Option<CommandFault> {
        self.fault
    }

    /// The counters.
    pub fn stats(&self) -> CommandStats {
        self.stats
    }

    /// `CMDBUF_EN` changed from `was` to `now`: 0 → 1 (re)starts fetching at the head.
    pub fn set_enabled(&mut self, was: bool, now: bool) {
        if !now {
            self.running = false;
        } else if !was {
            self.running = true;
            self.fault = None;
        }
    }

    /// Fetches and carries out commands from the head to the tail, by the rules of this
    /// module's documentation.
    pub fn process(
        &mut self,
        mem: &impl GuestRam,
        sink: &mut dyn PageResponseSink,
        fx: &mut Effects,
    ) -> Processed {
        if !self.running || !self.ring.usable() {
            return Processed::Drained;
        }
        while self.ring.head() != self.ring.tail() {
            let at = self.ring.addr(self.ring.head());
            let mut b = [0u8; ENTRY_BYTES as usize];
            if mem.read_guest(&mut b, GuestAddress(at)).is_err() {
                return self.stop(CommandFault::Hardware(at));
            }
            match Command::decode(&bytes_to_words(&b)) {
                Err(error) => return self.stop(CommandFault::Illegal { address: at, error }),
                Ok(Command::CompletePpr(c)) => {
                    self.stats.ppr_completions += 1;
                    if c.raw_status_reserved() {
                        self.stats.reserved_status += 1;
                    }
                    sink.page_response(&c.to_guest());
                }
                Ok(Command::CompletionWait(w)) => {
                    if !sink.flushed() {
                        self.stats.wait_stalls += 1;
                        return Processed::Waiting;
                    }
                    if w.store
                        && mem
                            .write_guest(&w.data.to_le_bytes(), GuestAddress(w.address))
                            .is_err()
                    {
                        return self.stop(CommandFault::Hardware(w.address));
                    }
                    fx.comwait_int |= w.interrupt;
                    self.stats.waits += 1;
                }
                Ok(Command::Other(_)) => self.stats.other += 1,
            }
            self.ring.advance_head();
        }
        Processed::Drained
    }

    fn stop(&mut self, fault: CommandFault) -> Processed {
        match fault {
            CommandFault::Illegal { .. } => self.stats.illegal += 1,
            CommandFault::Hardware(_) => self.stats.hardware_errors += 1,
        }
        self.running = false;
        self.fault = Some(fault);
        Processed::Stopped(fault)
    }
}
