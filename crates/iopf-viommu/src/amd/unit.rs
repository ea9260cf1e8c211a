//! [`AmdPri`]: the page request path of one emulated AMD IOMMU, behind the calls a VMM's MMIO
//! handler makes, and the [`GuestQueue`] the bridge posts into.
//!
//! **Registers** ([`super::regs`]): the command buffer, event log and PPR log base, head and
//! tail registers, `CONTROL` (64-bit, every bit stored; the unit acts on IOMMU_EN's
//! neighbours listed in `regs`), `EXT_FEATURES` (read only: [`AmdConfig::ext_features`] with
//! [`EFR_PAGE_REQUESTS`]), `STATUS` (the `*_INT` and `*_OVERFLOW` bits RW1C, the `*_RUN` bits
//! read only), and the device table and exclusion range registers (stored, unused). Other
//! offsets below [`END`] read as zero and ignore writes.
//!
//! **The interrupt.** The IOMMU's MSI is in its PCI configuration space, which the VMM
//! emulates: it passes the programmed message with [`AmdPri::set_msi`]. The unit has three
//! interrupt conditions: the PPR log (`PPR_INT` or `PPR_OVERFLOW` set, with `PPRINT_EN`), the
//! event log (`EVT_INT` or `EVT_OVERFLOW`, with `EVT_INT_EN`) and the completion wait
//! (`COMWAIT_INT`, with `COMWAIT_EN`). When one of them becomes true the message is sent (if
//! MSI is enabled). Since a condition stays true until software clears its status bits,
//! entries written meanwhile send nothing more: Linux's handler clears the bits before it
//! reads the log (`amd_iommu_handle_irq()`), so an entry written after that sends again. A
//! status bit is set whether or not its interrupt is enabled (AMD 48882, `ComWaitInt`).

use crate::guest_ram::GuestRam;

use super::command_buffer::{CommandBuffer, Effects, Processed};
use super::log::{Log, Logged};
use super::ppr_log::{PprLog, PprSignal};
use super::regs::*;
use crate::bridge::PageResponseSink;
use crate::bridge::{GuestPageRequest, GuestQueue, Posted, PrivateDataMode};
use crate::interrupt::MsiSink;
pub use crate::mmio::MmioError;
use crate::mmio::{half, merge_half};

/// What the emulated unit reports about itself.
///
/// New fields may be added: build one from `AmdConfig::default()` and set the fields to change.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AmdConfig {
    /// The extended feature register as the guest reads it; [`EFR_PAGE_REQUESTS`] is always
    /// added and PASMAX is always 15 (Linux refuses more than 16-bit PASIDs).
    pub ext_features: u64,
}

impl AmdConfig {
    /// The extended feature register the guest reads.
    pub fn efr(&self) -> u64 {
        (self.ext_features & !FEATURE_PASMAX) | EFR_PAGE_REQUESTS
    }
}

/// What an MMIO write did that the caller may act on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Room may have appeared in the PPR log (`PPR_HEAD` moved, the log enabled or moved):
    /// the bridge can post again.
    pub room: bool,
    /// The command buffer has work (`CMD_TAIL` moved, `CMDBUF_EN` set): the unit carried it
    /// out.
    pub commands: bool,
}

/// Interrupt conditions, one bit each.
const COND_PPR: u8 = 1;
const COND_EVT: u8 = 2;
const COND_COMWAIT: u8 = 4;

/// The page request path of one AMD IOMMU; see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct AmdPri {
    cfg: AmdConfig,
    control: u64,
    status: u32,
    dev_table: u64,
    excl: [u64; 2],
    cmd: CommandBuffer,
    evt: Log,
    ppr: PprLog,
    msi: Option<(u64, u32)>,
    asserted: u8,
    msis_sent: u64,
    events_lost: u64,
}

impl AmdPri {
    /// A unit in its reset state (everything zero, MSI disabled).
    pub fn new(cfg: AmdConfig) -> AmdPri {
        AmdPri {
            cfg,
            ..AmdPri::default()
        }
    }

    /// The configuration.
    pub fn config(&self) -> AmdConfig {
        self.cfg
    }

    /// Back to the reset state (registers zero, MSI disabled). The bridge's groups are the
    /// caller's: [`crate::Bridge::reset`] answers them ([`super::AmdBridge::reset`] does both).
    pub fn reset(&mut self) {
        *self = AmdPri::new(self.cfg);
    }

    /// The guest programmed the IOMMU's MSI capability (PCI configuration space, emulated by
    /// the VMM): `address`/`data` is the message, `enabled` its MSI Enable bit. While disabled
    /// the unit sends nothing (a condition that arises meanwhile is not remembered, as for a
    /// disabled MSI).
    pub fn set_msi(&mut self, address: u64, data: u32, enabled: bool) {
        self.msi = enabled.then_some((address, data));
    }

    /// MSIs sent so far.
    pub fn msis_sent(&self) -> u64 {
        self.msis_sent
    }

    /// `CONTROL`.
    pub fn control(&self) -> u64 {
        self.control
    }

    /// `STATUS` as the guest reads it.
    pub fn status(&self) -> u32 {
        let mut s = self.status & STATUS_RW1C;
        if self.evt.running() {
            s |= STATUS_EVT_RUN;
        }
        if self.cmd.running() {
            s |= STATUS_CMDBUF_RUN;
        }
        if self.ppr.log.running() {
            s |= STATUS_PPR_RUN;
        }
        s
    }

    /// The command buffer.
    pub fn command_buffer(&self) -> &CommandBuffer {
        &self.cmd
    }

    /// The PPR log.
    pub fn ppr_log(&self) -> &PprLog {
        &self.ppr
    }

    /// The event log.
    pub fn event_log(&self) -> &Log {
        &self.evt
    }

    /// Events that could not be logged (the event log off, full or unreachable).
    pub fn events_lost(&self) -> u64 {
        self.events_lost
    }

    /// Whether the guest has the PPR log on: `PPR_EN` and `PPRLOG_EN` set and a usable length.
    pub fn ppr_enabled(&self) -> bool {
        let need = ctl(CONTROL_PPR_EN) | ctl(CONTROL_PPRLOG_EN);
        self.control & need == need && self.ppr.log.ring.usable()
    }

    /// A guest read of `data.len()` bytes (4 or 8) at `offset`.
    pub fn mmio_read(&self, offset: u64, data: &mut [u8]) -> Result<(), MmioError> {
        let dwords = crate::mmio::check_access(offset, data.len(), END)?;
        for (i, chunk) in data.chunks_mut(4).enumerate().take(dwords) {
            chunk.copy_from_slice(&self.read_dword(offset + 4 * i as u64).to_le_bytes());
        }
        Ok(())
    }

    /// A guest write of `data` (4 or 8 bytes) at `offset`. A write that gives the command
    /// buffer work carries it out at once (completions go to `responses`); the caller pumps
    /// the bridge when [`Written::room`] says room appeared.
    pub fn mmio_write(
        &mut self,
        offset: u64,
        data: &[u8],
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        responses: &mut dyn PageResponseSink,
    ) -> Result<Written, MmioError> {
        let dwords = crate::mmio::check_access(offset, data.len(), END)?;
        let mut done = Written::default();
        for (off, v) in crate::mmio::dwords(offset, data).take(dwords) {
            let w = self.write_dword(off, v);
            done.room |= w.room;
            done.commands |= w.commands;
            self.update_irq(irq);
        }
        if done.commands {
            self.process_commands(mem, irq, responses);
        }
        Ok(done)
    }

    /// Carries out the command buffer (after `CMD_TAIL` moved, or when a COMPLETION_WAIT was
    /// waiting for the host). A fault logs its event.
    pub fn process_commands(
        &mut self,
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        responses: &mut dyn PageResponseSink,
    ) -> Processed {
        let mut fx = Effects::default();
        let p = self.cmd.process(mem, responses, &mut fx);
        if fx.comwait_int {
            self.status |= STATUS_COMWAIT_INT;
        }
        if let Processed::Stopped(fault) = p {
            self.log_event(mem, &fault.event().to_bytes());
        }
        self.update_irq(irq);
        p
    }

    /// The PPR log as the bridge posts into it.
    pub fn guest_queue<'a, M: GuestRam>(
        &'a mut self,
        mem: &'a M,
        irq: &'a mut dyn MsiSink,
    ) -> AmdGuestQueue<'a, M> {
        AmdGuestQueue {
            pri: self,
            mem,
            irq,
        }
    }

    fn log_event(&mut self, mem: &impl GuestRam, entry: &[u8; 16]) {
        if self.status & STATUS_EVT_OVERFLOW != 0 {
            self.events_lost += 1;
            return;
        }
        match self.evt.write(mem, entry) {
            Logged::Written => self.status |= STATUS_EVT_INT,
            Logged::Overflowed => {
                self.status |= STATUS_EVT_OVERFLOW;
                self.events_lost += 1;
            }
            Logged::NotRunning | Logged::Unreachable => self.events_lost += 1,
        }
    }

    fn post(
        &mut self,
        mem: &impl GuestRam,
        req: &GuestPageRequest,
        irq: &mut dyn MsiSink,
    ) -> Posted {
        // The log never runs while PPR_OVERFLOW is set (the overflow stopped it, and only an
        // enable with the bit clear restarts it): the log's own state says it all.
        let (posted, signal) = self.ppr.post(mem, req);
        match signal {
            PprSignal::Entry => self.status |= STATUS_PPR_INT,
            PprSignal::Overflow => self.status |= STATUS_PPR_OVERFLOW,
            PprSignal::None => {}
        }
        self.update_irq(irq);
        posted
    }

    /// Sends the MSI when an interrupt condition becomes true (module documentation).
    fn update_irq(&mut self, irq: &mut dyn MsiSink) {
        let on = |bit: u32| self.control & ctl(bit) != 0;
        let mut now = 0;
        if on(CONTROL_PPRINT_EN) && self.status & (STATUS_PPR_INT | STATUS_PPR_OVERFLOW) != 0 {
            now |= COND_PPR;
        }
        if on(CONTROL_EVT_INT_EN) && self.status & (STATUS_EVT_INT | STATUS_EVT_OVERFLOW) != 0 {
            now |= COND_EVT;
        }
        if on(CONTROL_COMWAIT_EN) && self.status & STATUS_COMWAIT_INT != 0 {
            now |= COND_COMWAIT;
        }
        let rose = now & !self.asserted != 0;
        self.asserted = now;
        if rose {
            if let Some((address, data)) = self.msi {
                self.msis_sent += 1;
                irq.signal_msi(address, data);
            }
        }
    }

    fn read_dword(&self, off: u64) -> u32 {
        let h = |v: u64| half(v, off);
        match off & !7 {
            DEV_TABLE => h(self.dev_table),
            CMD_BUF => h(self.cmd.ring.base_reg()),
            EVT_BUF => h(self.evt.ring.base_reg()),
            CONTROL => h(self.control),
            EXCL_BASE => h(self.excl[0]),
            EXCL_LIMIT => h(self.excl[1]),
            EXT_FEATURES => h(self.cfg.efr()),
            PPR_LOG => h(self.ppr.log.ring.base_reg()),
            CMD_HEAD => h(self.cmd.ring.head_reg()),
            CMD_TAIL => h(self.cmd.ring.tail_reg()),
            EVT_HEAD => h(self.evt.ring.head_reg()),
            EVT_TAIL => h(self.evt.ring.tail_reg()),
            STATUS => h(u64::from(self.status())),
            PPR_HEAD => h(self.ppr.log.ring.head_reg()),
            PPR_TAIL => h(self.ppr.log.ring.tail_reg()),
            _ => 0,
        }
    }

    fn write_dword(&mut self, off: u64, v: u32) -> Written {
        let merge = |old: u64| merge_half(old, off, v);
        let mut w = Written::default();
        match off & !7 {
            DEV_TABLE => self.dev_table = merge(self.dev_table),
            CMD_BUF => self.cmd.ring.write_base(merge(self.cmd.ring.base_reg())),
            EVT_BUF => self.evt.ring.write_base(merge(self.evt.ring.base_reg())),
            CONTROL => w = self.write_control(merge(self.control)),
            EXCL_BASE => self.excl[0] = merge(self.excl[0]),
            EXCL_LIMIT => self.excl[1] = merge(self.excl[1]),
            PPR_LOG => {
                self.ppr
                    .log
                    .ring
                    .write_base(merge(self.ppr.log.ring.base_reg()));
                // Room only once the high half (the length) is written: never post at a
                // half-written base.
                w.room = off & 4 != 0;
            }
            CMD_HEAD => self.cmd.ring.write_head(merge(self.cmd.ring.head_reg())),
            CMD_TAIL => {
                self.cmd.ring.write_tail(merge(self.cmd.ring.tail_reg()));
                w.commands = true;
            }
            EVT_HEAD => self.evt.ring.write_head(merge(self.evt.ring.head_reg())),
            EVT_TAIL => self.evt.ring.write_tail(merge(self.evt.ring.tail_reg())),
            STATUS if off == STATUS => {
                let was = self.status;
                self.status &= !(v & STATUS_RW1C);
                w.room = was & STATUS_PPR_OVERFLOW != 0 && self.status & STATUS_PPR_OVERFLOW == 0;
            }
            PPR_HEAD => {
                self.ppr
                    .log
                    .ring
                    .write_head(merge(self.ppr.log.ring.head_reg()));
                w.room = true;
            }
            PPR_TAIL => self
                .ppr
                .log
                .ring
                .write_tail(merge(self.ppr.log.ring.tail_reg())),
            _ => {}
        }
        w
    }

    fn write_control(&mut self, new: u64) -> Written {
        let old = self.control;
        self.control = new;
        let edge = |bit: u32| (old & ctl(bit) != 0, new & ctl(bit) != 0);
        let (was, now) = edge(CONTROL_CMDBUF_EN);
        self.cmd.set_enabled(was, now);
        let (was, now) = edge(CONTROL_EVT_LOG_EN);
        self.evt
            .set_enabled(was, now, self.status & STATUS_EVT_OVERFLOW != 0);
        let (was, now) = edge(CONTROL_PPRLOG_EN);
        self.ppr
            .log
            .set_enabled(was, now, self.status & STATUS_PPR_OVERFLOW != 0);
        let changed = old ^ new;
        Written {
            room: changed & (ctl(CONTROL_PPRLOG_EN) | ctl(CONTROL_PPR_EN)) != 0,
            commands: changed & ctl(CONTROL_CMDBUF_EN) != 0 && new & ctl(CONTROL_CMDBUF_EN) != 0,
        }
    }
}

/// The PPR log of an [`AmdPri`] with the memory and interrupt sink it writes through: what
/// [`crate::Bridge::pump`] posts into.
pub struct AmdGuestQueue<'a, M: GuestRam> {
    pri: &'a mut AmdPri,
    mem: &'a M,
    irq: &'a mut dyn MsiSink,
}

impl<M: GuestRam> GuestQueue for AmdGuestQueue<'_, M> {
    /// One PPR log for every function: on with `PPR_EN` and `PPRLOG_EN` and a usable length.
    fn enabled(&self, _rid: u16) -> bool {
        self.pri.ppr_enabled()
    }

    /// 0 while the log is stopped (overflowed and not yet restarted).
    fn room(&self, _rid: u16) -> usize {
        self.pri.ppr.log.room() as usize
    }

    fn capacity(&self, _rid: u16) -> usize {
        self.pri.ppr.log.ring.entries().saturating_sub(1) as usize
    }

    /// AMD's PPR log carries no private data.
    fn private_data_mode(&self) -> PrivateDataMode {
        PrivateDataMode::None
    }

    fn post(&mut self, req: &GuestPageRequest) -> Posted {
        self.pri.post(self.mem, req, self.irq)
    }

    /// The interrupt is raised as each entry lands: nothing to do.
    fn notify(&mut self) {}
}
