//! The command queue, as far as page responses need it (SMMUv3 spec §4; Linux 6.12
//! `arm_smmu_cmdq_issue_cmdlist()` and `__arm_smmu_cmdq_skip_err()`).
//!
//! Software writes commands at `CMDQ_PROD` and moves it; the unit carries them out from
//! `CMDQ_CONS`, in order, while `CR0.CMDQEN` is set and no command error is active.
//! `CMD_PRI_RESP` and `CMD_RESUME` go to the [`PageResponseSink`] (the bridge) as a
//! [`GuestResponse`] in PCIe's code meaning (`code_map`); `CMD_STALL_TERM` terminates every
//! stalled transaction of its stream. A `CMD_SYNC` completes only once every earlier response
//! has reached the host ([`PageResponseSink::flushed`]): until then the queue stops at it and
//! resumes on the next pump, so a guest that sees its sync complete knows its responses were
//! sent. On completion with `CS` = SIG_IRQ, `MSIDATA` is written to `MSIADDR`: into guest
//! memory when that is guest RAM (Linux's MSI-poll points it at the `CMD_SYNC` itself), else
//! through the [`MsiSink`]. A response of the wrong kind for its stream (see
//! [`super::SmmuStats::misrouted`]) answers nothing.
//!
//! **Errors.** An illegal command (unknown opcode, reserved `RESP` or `CS`, a RES0 bit set:
//! [`CommandError`]) sets `CMDQ_CONS.ERR` = `CERROR_ILL`; a command that cannot be fetched,
//! `CERROR_ABT`. Either way `GERROR.CMDQ_ERR` becomes active (the `GERROR` MSI is sent), the
//! queue stops with `CONS` at the bad command, and nothing it asked for is done, until software
//! makes `GERRORN.CMDQ_ERR` equal `GERROR.CMDQ_ERR` (Linux's `arm_smmu_cmdq_skip_err()`
//! overwrites an illegal command with a `CMD_SYNC` first, and retries a failed fetch as is).

use crate::guest_ram::GuestRam;
use vm_memory::GuestAddress;

use super::command::{Command, CommandError, SyncCs};
use super::regs::{CERROR_ABT, CERROR_ILL, CR0_CMDQEN, GERROR_CMDQ_ERR, GERROR_MSI_CMDQ_ABT_ERR};
use super::unit::SmmuPri;
use crate::bridge::GuestResponse;
use crate::bridge::PageResponseSink;
use crate::code_map;
use crate::interrupt::MsiSink;

/// Outcome of [`SmmuPri::process_commands`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    /// `CONS == PROD`, or the queue is off.
    Drained,
    /// Stopped at a `CMD_SYNC` until the sink has flushed; call again later.
    Waiting,
    /// Stopped at a command error (`GERROR.CMDQ_ERR` active): the illegal command's decoding
    /// error, or `None` for a failed fetch or an error still unacknowledged from before.
    Error(Option<CommandError>),
}

impl SmmuPri {
    /// Carries out commands from `CMDQ_CONS` to `CMDQ_PROD` by the rules of this module's
    /// documentation.
    pub fn process_commands(
        &mut self,
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        sink: &mut dyn PageResponseSink,
    ) -> Processed {
        if self.cr0 & CR0_CMDQEN == 0 {
            return Processed::Drained;
        }
        if self.active_errors() & GERROR_CMDQ_ERR != 0 {
            return Processed::Error(None);
        }
        let mask = self.cmdq.ptr_mask();
        while (self.cmdq.cons ^ self.cmdq.prod) & mask != 0 {
            let mut b = [0u8; super::command::COMMAND_BYTES];
            let at = GuestAddress(self.cmdq.slot(self.cmdq.cons));
            if mem.read_guest(&mut b, at).is_err() {
                return self.fail(CERROR_ABT, None, irq);
            }
            let cmd = match Command::from_bytes(&b) {
                Ok(c) => c,
                Err(e) => return self.fail(CERROR_ILL, Some(e), irq),
            };
            if let Command::Sync { .. } = cmd {
                if !sink.flushed() {
                    self.stats.sync_stalls += 1;
                    return Processed::Waiting;
                }
            }
            self.execute(cmd, mem, irq, sink);
            self.stats.commands += 1;
            self.cmdq.cons = self.cmdq.inc(self.cmdq.cons);
        }
        Processed::Drained
    }

    fn execute(
        &mut self,
        cmd: Command,
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        sink: &mut dyn PageResponseSink,
    ) {
        match cmd {
            Command::PriResp {
                sid,
                ssid,
                grpid,
                resp,
            } => {
                let code = code_map::smmu_pri_resp_to_pcie(resp);
                // The SubstreamID as the guest wrote it: whether it has to match was decided when
                // the group was posted (STE.PPAR then), not now (the guest may have cleared
                // SMMUEN or rewritten the STE since).
                self.respond(sid, false, sink, |rid| {
                    code.map(|code| GuestResponse {
                        rid,
                        pasid: ssid,
                        prg_index: grpid,
                        code,
                        private_data: None,
                    })
                });
            }
            Command::Resume { sid, stag, resp } => {
                let code = code_map::smmu_resume_to_pcie(resp);
                self.respond(sid, true, sink, |rid| {
                    code.map(|code| GuestResponse {
                        rid,
                        pasid: None,
                        prg_index: stag,
                        code,
                        private_data: None,
                    })
                });
            }
            Command::StallTerm { sid } => match u16::try_from(sid) {
                Ok(rid) if self.is_stall_stream(rid) => {
                    self.stats.stall_terms += 1;
                    sink.terminate(rid);
                }
                _ => self.stats.misrouted += 1,
            },
            Command::Sync {
                cs: SyncCs::Irq,
                msi_addr,
                msi_data,
                ..
            } => {
                self.stats.syncs += 1;
                // Into guest RAM (Linux's MSI-poll points it at the sync itself, which may be
                // at guest-physical 0), else an MSI; address 0 outside RAM sends none, as the
                // IRQ_CFG0 registers' "ADDR == 0: no MSI" rule has it.
                let at = GuestAddress(msi_addr);
                if mem.is_ram(at, 4) {
                    if mem.write_guest(&msi_data.to_le_bytes(), at).is_err() {
                        self.raise_gerror(GERROR_MSI_CMDQ_ABT_ERR, irq);
                    }
                } else if msi_addr != 0 {
                    irq.signal_msi(msi_addr, msi_data);
                }
            }
            Command::Sync { .. } => self.stats.syncs += 1,
            Command::Other { .. } => self.stats.other_commands += 1,
        }
    }

    /// Hands a response for `sid` to the sink if it is of the stream's kind (`stall`: a
    /// `CMD_RESUME`), or the sink does not serve the stream; `build` gets the requester id.
    fn respond(
        &mut self,
        sid: u32,
        stall: bool,
        sink: &mut dyn PageResponseSink,
        build: impl FnOnce(u16) -> Option<GuestResponse>,
    ) {
        let Ok(rid) = u16::try_from(sid) else {
            self.stats.misrouted += 1;
            return;
        };
        if self.is_stall_stream(rid) != stall && sink.serves(rid) {
            self.stats.misrouted += 1;
            return;
        }
        if let Some(r) = build(rid) {
            self.stats.responses += 1;
            sink.page_response(&r);
        }
    }

    fn fail(&mut self, cerror: u8, why: Option<CommandError>, irq: &mut dyn MsiSink) -> Processed {
        self.cmdq_err = cerror;
        self.stats.command_errors += 1;
        self.raise_gerror(GERROR_CMDQ_ERR, irq);
        Processed::Error(why)
    }
}
