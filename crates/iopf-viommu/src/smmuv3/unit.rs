//! [`SmmuPri`]: the page request path of one emulated SMMUv3, behind the calls a VMM's MMIO
//! handler makes: the register file (this file), the PRI and event queues the bridge posts
//! into (output_queue.rs) and the command queue (command_queue.rs).

use crate::guest_ram::GuestRam;

use super::msi::MsiConfig;
use super::queue::{Ring, Q_OVF};
use super::regs::*;
use super::stream_table::StreamTable;
use crate::bridge::PageResponseSink;
use crate::interrupt::MsiSink;
pub use crate::mmio::MmioError;
use crate::mmio::{half, merge_half};

/// What the emulated unit is.
///
/// New fields may be added: build one from `SmmuConfig::default()` or [`SmmuConfig::with_stall_streams`] and set the fields to change.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmmuConfig {
    /// StreamIDs (guest requester ids) of stalling functions: their faults are stall event
    /// records in the event queue, answered by `CMD_RESUME`. Every other stream is PCIe PRI.
    pub stall_streams: Vec<u16>,
    /// `IDR1.CMDQS`: the largest command queue, log2 entries (at most 19).
    pub cmdq_max_log2: u32,
    /// `IDR1.EVTQS`: the largest event queue (at most 19).
    pub evtq_max_log2: u32,
    /// `IDR1.PRIQS`: the largest PRI queue (at most 19, the spec's limit).
    pub priq_max_log2: u32,
}

impl Default for SmmuConfig {
    /// Every stream PRI; queues up to 2^19 entries.
    fn default() -> Self {
        SmmuConfig {
            stall_streams: Vec::new(),
            cmdq_max_log2: 19,
            evtq_max_log2: 19,
            priq_max_log2: 19,
        }
    }
}

impl SmmuConfig {
    /// A unit whose `stall_streams` stall and whose other streams use PRI.
    pub fn with_stall_streams(stall_streams: Vec<u16>) -> SmmuConfig {
        SmmuConfig {
            stall_streams,
            ..SmmuConfig::default()
        }
    }
}

/// What the unit has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmmuStats {
    /// PRI queue entries written.
    pub pri_written: u64,
    /// Times the PRI queue entered overflow (`PRIQ_PROD.OVFLG` toggled).
    pub pri_overflows: u64,
    /// Page requests dropped in overflow.
    pub pri_dropped: u64,
    /// Of those, last requests the "hardware" answered Success.
    pub pri_auto_success: u64,
    /// Stall event records written.
    pub events_written: u64,
    /// Stalls that found the event queue full (answered as an abort).
    pub event_full_aborts: u64,
    /// Records lost to queue memory that is not there (`*Q_ABT_ERR`).
    pub unreachable: u64,
    /// Commands carried out.
    pub commands: u64,
    /// Of those, accepted without effect (TLB and configuration invalidations, prefetches).
    pub other_commands: u64,
    /// `CMD_PRI_RESP` and `CMD_RESUME` handed to the response sink.
    pub responses: u64,
    /// Responses of the wrong kind for their stream (`CMD_RESUME` to a PRI function,
    /// `CMD_PRI_RESP` or `CMD_STALL_TERM` to a stalling one, a StreamID beyond 16 bits):
    /// nothing to answer.
    pub misrouted: u64,
    /// `CMD_STALL_TERM`s carried out.
    pub stall_terms: u64,
    /// `CMD_SYNC`s completed.
    pub syncs: u64,
    /// Times a `CMD_SYNC` had to wait for the host.
    pub sync_stalls: u64,
    /// Command queue errors.
    pub command_errors: u64,
}

/// What an MMIO write did that the caller may act on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Room may have appeared in the PRI or event queue (a `CONS` moved, a queue or the SMMU
    /// enabled, an abort error acknowledged): the bridge can post again.
    pub room: bool,
    /// The command queue may have work (`CMDQ_PROD` moved, `CMDQEN` set, `CMDQ_ERR`
    /// acknowledged); [`SmmuPri::mmio_write`] has processed it.
    pub commands: bool,
}

/// The page request path of one SMMUv3: `IDR0`/`IDR1`/`IDR5`, `CR0`/`CR0ACK`, `IRQ_CTRL`,
/// `GERROR`/`GERRORN` and the three MSIs, the linear stream table's base, the command, event
/// and PRI queues. Other registers in the two 64 KiB pages read as zero and ignore writes.
/// Acknowledgements (`CR0ACK`, `IRQ_CTRLACK`, `GBPA.UPDATE`) take effect at once.
/// A queue's `BASE` (and the SMMU-owned `PROD` of an output queue, `CMDQ_CONS`) is writable
/// only while that queue is disabled, `STRTAB_BASE*` only while `SMMUEN` = 0, as the spec has
/// them read-only otherwise.
#[derive(Debug, Clone)]
pub struct SmmuPri {
    pub(super) cfg: SmmuConfig,
    pub(super) cr0: u32,
    pub(super) cr1: u32,
    pub(super) cr2: u32,
    pub(super) gbpa: u32,
    pub(super) irq_ctrl: u32,
    pub(super) gerror: u32,
    pub(super) gerrorn: u32,
    pub(super) gerror_msi: MsiConfig,
    pub(super) evtq_msi: MsiConfig,
    pub(super) priq_msi: MsiConfig,
    pub(super) strtab: StreamTable,
    pub(super) cmdq: Ring,
    pub(super) cmdq_err: u8,
    pub(super) evtq: Ring,
    pub(super) priq: Ring,
    pub(super) stats: SmmuStats,
}

/// The pointer bits software may write: index and wrap (up to 2^19 entries).
const PTR_BITS: u32 = 0xf_ffff;

impl SmmuPri {
    /// A unit in its reset state: everything disabled, registers zero.
    pub fn new(cfg: SmmuConfig) -> SmmuPri {
        SmmuPri {
            cmdq: Ring::new(cfg.cmdq_max_log2, 16),
            evtq: Ring::new(cfg.evtq_max_log2, 32),
            priq: Ring::new(cfg.priq_max_log2, 16),
            cfg,
            cr0: 0,
            cr1: 0,
            cr2: 0,
            gbpa: 0,
            irq_ctrl: 0,
            gerror: 0,
            gerrorn: 0,
            gerror_msi: MsiConfig::default(),
            evtq_msi: MsiConfig::default(),
            priq_msi: MsiConfig::default(),
            strtab: StreamTable::default(),
            cmdq_err: CERROR_NONE,
            stats: SmmuStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SmmuConfig {
        &self.cfg
    }

    /// The counters.
    pub fn stats(&self) -> SmmuStats {
        self.stats
    }

    /// The PRI queue's pointers.
    pub fn priq(&self) -> &Ring {
        &self.priq
    }

    /// The event queue's pointers.
    pub fn evtq(&self) -> &Ring {
        &self.evtq
    }

    /// The command queue's pointers.
    pub fn cmdq(&self) -> &Ring {
        &self.cmdq
    }

    /// The global errors active now (`GERROR ^ GERRORN`).
    pub fn active_errors(&self) -> u32 {
        (self.gerror ^ self.gerrorn) & GERROR_ERR_MASK
    }

    /// Back to the reset state. The bridge's groups are the caller's: [`crate::Bridge::reset`]
    /// answers them ([`super::SmmuBridge::reset`] does both).
    pub fn reset(&mut self) {
        *self = SmmuPri::new(self.cfg.clone());
    }

    /// `IDR1` as the guest reads it.
    pub fn idr1(&self) -> u32 {
        (self.cmdq.max_shift << IDR1_CMDQS_SHIFT)
            | (self.evtq.max_shift << IDR1_EVTQS_SHIFT)
            | (self.priq.max_shift << IDR1_PRIQS_SHIFT)
            | (SSIDSIZE << IDR1_SSIDSIZE_SHIFT)
            | (SIDSIZE << IDR1_SIDSIZE_SHIFT)
    }

    /// Makes global error `bit` active (toggles it in `GERROR`) unless it is already, and
    /// sends the `GERROR` MSI when `IRQ_CTRL.GERROR_IRQEN`.
    pub(super) fn raise_gerror(&mut self, bit: u32, irq: &mut dyn MsiSink) {
        if self.active_errors() & bit != 0 {
            return;
        }
        self.gerror ^= bit;
        let on = self.irq_ctrl & IRQ_CTRL_GERROR_IRQEN != 0;
        self.gerror_msi.send(on, irq);
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
    /// queue work carries out its commands at once (responses go to `sink`); the caller pumps
    /// the bridge when [`Written::room`] says room appeared.
    pub fn mmio_write(
        &mut self,
        offset: u64,
        data: &[u8],
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        sink: &mut dyn PageResponseSink,
    ) -> Result<Written, MmioError> {
        let mut done = Written::default();
        for (off, v) in crate::mmio::dwords(offset, data).take(crate::mmio::check_access(
            offset,
            data.len(),
            END,
        )?) {
            let w = self.write_dword(off, v);
            done.room |= w.room;
            done.commands |= w.commands;
        }
        if done.commands {
            self.process_commands(mem, irq, sink);
        }
        Ok(done)
    }

    fn read_dword(&self, off: u64) -> u32 {
        match off {
            IDR0 => IDR0_VALUE,
            IDR1 => self.idr1(),
            IDR5 => IDR5_VALUE,
            CR0 | CR0ACK => self.cr0,
            CR1 => self.cr1,
            CR2 => self.cr2,
            GBPA => self.gbpa,
            IRQ_CTRL | IRQ_CTRLACK => self.irq_ctrl,
            GERROR => self.gerror,
            GERRORN => self.gerrorn,
            0x68..=0x77 => self.gerror_msi.read(off - GERROR_IRQ_CFG0),
            0x80 | 0x84 => half(self.strtab.base, off),
            STRTAB_BASE_CFG => self.strtab.cfg,
            0x90 | 0x94 => half(self.cmdq.base, off),
            CMDQ_PROD => self.cmdq.prod,
            CMDQ_CONS => self.cmdq.cons | (u32::from(self.cmdq_err) << CMDQ_CONS_ERR_SHIFT),
            0xa0 | 0xa4 => half(self.evtq.base, off),
            0xb0..=0xbf => self.evtq_msi.read(off - EVTQ_IRQ_CFG0),
            0xc0 | 0xc4 => half(self.priq.base, off),
            0xd0..=0xdf => self.priq_msi.read(off - PRIQ_IRQ_CFG0),
            EVTQ_PROD => self.evtq.prod,
            EVTQ_CONS => self.evtq.cons,
            PRIQ_PROD => self.priq.prod,
            PRIQ_CONS => self.priq.cons,
            _ => 0,
        }
    }

    fn write_dword(&mut self, off: u64, v: u32) -> Written {
        let mut w = Written::default();
        let on = |bit: u32| self.cr0 & bit != 0;
        let (cmdq_on, evtq_on, priq_on, smmu_on) = (
            on(CR0_CMDQEN),
            on(CR0_EVTQEN),
            on(CR0_PRIQEN),
            on(CR0_SMMUEN),
        );
        match off {
            CR0 => {
                let new = v & CR0_MASK;
                let set = new & !self.cr0;
                self.cr0 = new;
                w.commands = new & CR0_CMDQEN != 0;
                w.room = set & (CR0_EVTQEN | CR0_PRIQEN | CR0_SMMUEN) != 0;
            }
            CR1 => self.cr1 = v,
            CR2 => self.cr2 = v,
            GBPA => self.gbpa = v & !GBPA_UPDATE,
            IRQ_CTRL => self.irq_ctrl = v & IRQ_CTRL_MASK,
            GERRORN => {
                let before = self.active_errors();
                self.gerrorn = v & GERROR_ERR_MASK;
                let cleared = before & !self.active_errors();
                w.commands = cleared & GERROR_CMDQ_ERR != 0;
                w.room = cleared & (GERROR_PRIQ_ABT_ERR | GERROR_EVTQ_ABT_ERR) != 0;
            }
            0x68..=0x77 => self.gerror_msi.write(off - GERROR_IRQ_CFG0, v),
            0x80 | 0x84 if !smmu_on => {
                self.strtab.base =
                    merge_half(self.strtab.base, off, v) & (STRTAB_BASE_RA | STRTAB_BASE_ADDR_MASK)
            }
            STRTAB_BASE_CFG if !smmu_on => self.strtab.cfg = v & STRTAB_BASE_CFG_MASK,
            0x90 | 0x94 if !cmdq_on => self.cmdq.base = queue_base(self.cmdq.base, off, v),
            CMDQ_PROD => {
                self.cmdq.prod = v & PTR_BITS;
                w.commands = true;
            }
            CMDQ_CONS if !cmdq_on => {
                self.cmdq.cons = v & PTR_BITS;
                self.cmdq_err = ((v & CMDQ_CONS_ERR) >> CMDQ_CONS_ERR_SHIFT) as u8;
            }
            0xa0 | 0xa4 if !evtq_on => self.evtq.base = queue_base(self.evtq.base, off, v),
            0xb0..=0xbf => self.evtq_msi.write(off - EVTQ_IRQ_CFG0, v),
            0xc0 | 0xc4 if !priq_on => self.priq.base = queue_base(self.priq.base, off, v),
            0xd0..=0xdf => self.priq_msi.write(off - PRIQ_IRQ_CFG0, v),
            EVTQ_PROD if !evtq_on => self.evtq.prod = v & (Q_OVF | PTR_BITS),
            EVTQ_CONS => {
                self.evtq.cons = v & (Q_OVF | PTR_BITS);
                w.room = true;
            }
            PRIQ_PROD if !priq_on => self.priq.prod = v & (Q_OVF | PTR_BITS),
            PRIQ_CONS => {
                self.priq.cons = v & (Q_OVF | PTR_BITS);
                w.room = true;
            }
            _ => {}
        }
        w
    }
}

/// A queue `BASE` after a dword write at `off`: RWA, ADDR, LOG2SIZE kept.
fn queue_base(old: u64, off: u64, v: u32) -> u64 {
    merge_half(old, off, v) & (Q_BASE_RWA | Q_BASE_ADDR_MASK | Q_BASE_LOG2SIZE)
}
