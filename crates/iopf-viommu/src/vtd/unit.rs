//! [`VtdPri`]: the page request path of one emulated VT-d remapping unit, behind the calls a
//! VMM's MMIO handler makes.

use crate::guest_ram::GuestRam;

use super::invalidation_queue::{InvalidationQueue, Processed};
use super::prq::PageRequestQueue;
use super::regs::*;
use crate::bridge::PageResponseSink;
use crate::bridge::{GuestPageRequest, GuestQueue, Posted, PrivateDataMode};
use crate::interrupt::{EventInterrupt, MsiSink};
pub use crate::mmio::MmioError;
use crate::mmio::{half, merge_half};

/// What the emulated unit reports about itself.
///
/// New fields may be added: build one from [`VtdConfig::new`] and set the fields to change.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VtdConfig {
    /// Whether descriptors carry private data: [`PrivateDataMode::Carried`] makes this a VT-d
    /// 3.0 unit (the seed's era), [`PrivateDataMode::None`] a 4.0 one. Use the bridge's
    /// negotiated [`crate::Bridge::private_data_mode`].
    pub private_data: PrivateDataMode,
    /// `CAP` as the guest reads it (this model does not use it).
    pub cap: u64,
    /// `ECAP` as the guest reads it; [`ECAP_PAGE_REQUESTS`] is always added.
    pub ecap: u64,
}

impl VtdConfig {
    /// A unit for `private_data`, with no other capability.
    pub fn new(private_data: PrivateDataMode) -> VtdConfig {
        VtdConfig {
            private_data,
            cap: 0,
            ecap: 0,
        }
    }

    fn version(&self) -> u32 {
        match self.private_data {
            PrivateDataMode::Carried => 0x30,
            PrivateDataMode::None => 0x40,
        }
    }
}

/// The page request path of one VT-d unit: its page request queue, its invalidation queue,
/// their interrupts, `FSTS.IQE` and `GCMD.QIE`. Registers it does not model read as zero and
/// ignore writes, except `VER`, `CAP` and `ECAP`, which read [`VtdConfig`].
#[derive(Debug, Clone)]
pub struct VtdPri {
    cfg: VtdConfig,
    prq: PageRequestQueue,
    iq: InvalidationQueue,
    fault_event: EventInterrupt,
}

/// What an MMIO write did that the caller may act on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Room may have appeared in the page request queue (`PQH` moved, `PRO` cleared, `PQA`
    /// written): the bridge can post again.
    pub room: bool,
    /// The invalidation queue has work (`IQT` moved, `IQE` cleared, queued invalidation
    /// enabled): call [`VtdPri::process_invalidations`].
    pub invalidations: bool,
}

impl VtdPri {
    /// A unit in its reset state.
    pub fn new(cfg: VtdConfig) -> VtdPri {
        VtdPri {
            cfg,
            prq: PageRequestQueue::default(),
            iq: InvalidationQueue::default(),
            fault_event: EventInterrupt::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> VtdConfig {
        self.cfg
    }

    /// The page request queue.
    pub fn prq(&self) -> &PageRequestQueue {
        &self.prq
    }

    /// The invalidation queue.
    pub fn invalidation_queue(&self) -> &InvalidationQueue {
        &self.iq
    }

    /// `FSTS` as the guest reads it (this model sets only IQE).
    pub fn fsts(&self) -> u32 {
        if self.iq.error().is_some() {
            FSTS_IQE
        } else {
            0
        }
    }

    /// Back to the reset state (registers zero, interrupts masked). The bridge's groups are
    /// the caller's: [`crate::Bridge::reset`] answers them ([`super::VtdBridge::reset`] does
    /// both).
    pub fn reset(&mut self) {
        *self = VtdPri::new(self.cfg);
    }

    /// A guest read of `data.len()` bytes at `offset`.
    pub fn mmio_read(&self, offset: u64, data: &mut [u8]) -> Result<(), MmioError> {
        let dwords = crate::mmio::check_access(offset, data.len(), END)?;
        for (i, chunk) in data.chunks_mut(4).enumerate().take(dwords) {
            chunk.copy_from_slice(&self.read_dword(offset + 4 * i as u64).to_le_bytes());
        }
        Ok(())
    }

    /// A guest write of `data` at `offset`. Writes that move the invalidation queue carry out
    /// its descriptors at once (page group responses go to `responses`); the caller pumps the
    /// bridge when [`Written::room`] says room appeared.
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
        for (i, chunk) in data.chunks(4).enumerate().take(dwords) {
            let mut b = [0u8; 4];
            b.copy_from_slice(chunk);
            let w = self.write_dword(offset + 4 * i as u64, u32::from_le_bytes(b), irq);
            done.room |= w.room;
            done.invalidations |= w.invalidations;
        }
        if done.invalidations {
            self.process_invalidations(mem, irq, responses);
        }
        Ok(done)
    }

    /// Carries out the invalidation queue's descriptors (after `IQT` moved, or when a wait was
    /// waiting for the host). An error sets `FSTS.IQE` and raises the fault event.
    pub fn process_invalidations(
        &mut self,
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        responses: &mut dyn PageResponseSink,
    ) -> Processed {
        let was_error = self.iq.error().is_some();
        let p = self.iq.process(mem, responses, self.cfg.private_data, irq);
        if let Processed::Error(_) = p {
            if !was_error {
                self.fault_event.raise(irq);
            }
        }
        p
    }

    /// The page request queue as the bridge posts into it.
    pub fn guest_queue<'a, M: GuestRam>(
        &'a mut self,
        mem: &'a M,
        irq: &'a mut dyn MsiSink,
    ) -> VtdGuestQueue<'a, M> {
        VtdGuestQueue {
            pri: self,
            mem,
            irq,
        }
    }

    fn read_dword(&self, off: u64) -> u32 {
        let half = |v: u64| half(v, off);
        match off & !7 {
            VER if off == VER => self.cfg.version(),
            CAP => half(self.cfg.cap),
            ECAP => half(self.cfg.ecap | ECAP_PAGE_REQUESTS),
            0x18 if off == GSTS && self.iq.enabled() => QIE,
            0x30 if off == FSTS => self.fsts(),
            0x38 if off == FECTL => self.fault_event.ctl(),
            0x38 => self.fault_event.reg(0), // FEDATA 0x3c
            0x40 => self.fault_event.reg(((off - 0x40) / 4 + 1) as usize),
            IQH => half(self.iq.reg(0)),
            IQT => half(self.iq.reg(1)),
            IQA => half(self.iq.reg(2)),
            0x98 if off == ICS => self.iq.ics(),
            IECTL if off == IECTL => self.iq.event.ctl(),
            IECTL => self.iq.event.reg(0),
            0xa8 => self.iq.event.reg(((off - 0xa8) / 4 + 1) as usize),
            IQER => half(self.iq.reg(3)),
            PQH => half(self.prq.reg(0)),
            PQT => half(self.prq.reg(1)),
            PQA => half(self.prq.reg(2)),
            0xd8 if off == PRS => self.prq.prs(),
            PECTL if off == PECTL => self.prq.event.ctl(),
            PECTL => self.prq.event.reg(0),
            0xe8 => self.prq.event.reg(((off - 0xe8) / 4 + 1) as usize),
            _ => 0,
        }
    }

    fn write_dword(&mut self, off: u64, v: u32, irq: &mut dyn MsiSink) -> Written {
        let merge = |old: u64| merge_half(old, off, v);
        let mut w = Written::default();
        match off & !7 {
            0x18 if off == GCMD => {
                let on = v & QIE != 0;
                w.invalidations = on && !self.iq.enabled();
                self.iq.set_enabled(on);
            }
            0x30 if off == FSTS && v & FSTS_IQE != 0 && self.iq.error().is_some() => {
                self.iq.clear_error();
                self.fault_event.serviced();
                w.invalidations = true;
            }
            0x38 if off == FECTL => self.fault_event.write_ctl(v, irq),
            0x38 => self.fault_event.write_reg(0, v),
            0x40 => self
                .fault_event
                .write_reg(((off - 0x40) / 4 + 1) as usize, v),
            IQT => {
                self.iq.write_reg(1, merge(self.iq.reg(1)));
                w.invalidations = true;
            }
            IQA => self.iq.write_reg(2, merge(self.iq.reg(2))),
            0x98 if off == ICS => self.iq.write_ics(v),
            IECTL if off == IECTL => self.iq.event.write_ctl(v, irq),
            IECTL => self.iq.event.write_reg(0, v),
            0xa8 => self.iq.event.write_reg(((off - 0xa8) / 4 + 1) as usize, v),
            PQH => {
                self.prq.write_reg(0, merge(self.prq.reg(0)));
                w.room = true;
            }
            PQT => self.prq.write_reg(1, merge(self.prq.reg(1))),
            PQA => {
                self.prq.write_reg(2, merge(self.prq.reg(2)));
                // Room only once the high half is written (a 64-bit write writes it last, as
                // does a 32-bit guest's lo_hi_writeq()): never post at a half-written base.
                w.room = off & 4 != 0;
            }
            0xd8 if off == PRS => w.room = self.prq.write_prs(v),
            PECTL if off == PECTL => self.prq.event.write_ctl(v, irq),
            PECTL => self.prq.event.write_reg(0, v),
            0xe8 => self.prq.event.write_reg(((off - 0xe8) / 4 + 1) as usize, v),
            _ => {}
        }
        w
    }
}

/// The page request queue of a [`VtdPri`] with the memory and interrupt sink it writes
/// through: what [`crate::Bridge::pump`] posts into.
pub struct VtdGuestQueue<'a, M: GuestRam> {
    pri: &'a mut VtdPri,
    mem: &'a M,
    irq: &'a mut dyn MsiSink,
}

impl<M: GuestRam> GuestQueue for VtdGuestQueue<'_, M> {
    /// One page request queue for every function.
    fn enabled(&self, _rid: u16) -> bool {
        self.pri.prq.enabled()
    }

    fn room(&self, _rid: u16) -> usize {
        self.pri.prq.room() as usize
    }

    fn capacity(&self, _rid: u16) -> usize {
        (self.pri.prq.entries() - 1) as usize
    }

    fn private_data_mode(&self) -> PrivateDataMode {
        self.pri.cfg.private_data
    }

    fn post(&mut self, req: &GuestPageRequest) -> Posted {
        self.pri
            .prq
            .post(self.mem, req, self.pri.cfg.private_data, self.irq)
    }

    /// VT-d raises its event as each descriptor lands (when `PPR` was clear): nothing to do.
    fn notify(&mut self) {}
}
