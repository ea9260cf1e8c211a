//! The PRI queue and the event queue as the bridge posts into them ([`SmmuGuestQueue`]).
//!
//! **Routing.** A stream listed in [`super::SmmuConfig::stall_streams`] stalls: its requests
//! become `F_TRANSLATION` stall records in the event queue ([`super::event`]), named by a
//! 16-bit `STAG` ([`GroupNaming::STALL`]). Every other stream is PCIe PRI: its requests become
//! PRI queue entries ([`super::pri_entry`]), named as its `STE.PPAR` says
//! ([`super::stream_table`]), read when the group is posted.
//!
//! **On.** The PRI queue takes requests while `CR0.SMMUEN` and `CR0.PRIQEN` are set and
//! `GERROR.PRIQ_ABT_ERR` is not active (spec §8.2); the event queue likewise with `EVTQEN`
//! and `EVTQ_ABT_ERR`. A write to queue memory that is not there loses the request
//! ([`Posted::Unreachable`]) and makes the queue's abort error active until software
//! acknowledges it in `GERRORN`.
//!
//! **Interrupts.** A queue's MSI is sent when an entry lands in a queue that was empty, with its
//! `IRQ_CTRL` enable set (`PRIQ_IRQ_CFG2.LO` is not modelled).
//!
//! **PRI overflow** (spec §8.1). A request that finds the PRI queue full toggles
//! `PRIQ_PROD.OVFLG` (if no overflow is active) and is dropped; while `OVFLG` != `OVACKFLG`
//! every request is dropped, even once there is room: "an active overflow condition inhibits
//! new entries". A dropped last request (not a Stop marker) is answered by the "hardware" with
//! Success ([`Posted::AnsweredByHardware`]); the spec answers Failure where `STE.PPAR` cannot be
//! read, which this model does not send (a transient condition never ends in Response Failure).
//!
//! **Stalls** are never dropped by the spec (§7.4: a stall record waits for room, and causes
//! no overflow); the bridge holds them back when the event queue is full. One that still finds
//! it full (a host group larger than the whole queue) is aborted: Invalid, the device sees an
//! abort.

use crate::guest_ram::GuestRam;
use iopf_abi::{Perm, ResponseCode};
use vm_memory::GuestAddress;

use super::event::{StallEvent, F_TRANSLATION};
use super::pri_entry::PriEntry;
use super::queue::Q_OVF;
use super::regs::*;
use super::unit::SmmuPri;
use crate::bridge::{GroupNaming, GuestPageRequest, GuestQueue, Posted, PrivateDataMode};
use crate::interrupt::MsiSink;

impl SmmuPri {
    /// Whether `rid` is a stalling stream.
    pub fn is_stall_stream(&self, rid: u16) -> bool {
        self.cfg.stall_streams.contains(&rid)
    }

    /// Whether the PRI queue takes requests.
    pub fn pri_enabled(&self) -> bool {
        let want = CR0_SMMUEN | CR0_PRIQEN;
        self.cr0 & want == want && self.active_errors() & GERROR_PRIQ_ABT_ERR == 0
    }

    /// Whether the event queue takes stall records.
    pub fn evtq_enabled(&self) -> bool {
        let want = CR0_SMMUEN | CR0_EVTQEN;
        self.cr0 & want == want && self.active_errors() & GERROR_EVTQ_ABT_ERR == 0
    }

    /// Requests the PRI queue takes now: 0 while an overflow is not acknowledged.
    pub fn pri_room(&self) -> u64 {
        if self.priq.overflowed() {
            0
        } else {
            self.priq.room()
        }
    }

    /// How `rid`'s groups are named now (reads its STE for a PRI stream).
    pub fn naming(&self, mem: &impl GuestRam, rid: u16) -> GroupNaming {
        if self.is_stall_stream(rid) {
            GroupNaming::STALL
        } else if self.cr0 & CR0_SMMUEN != 0 && self.strtab.ppar(mem, u32::from(rid)) {
            GroupNaming::PRI
        } else {
            GroupNaming::PRI_NO_PASID_IN_RESPONSE
        }
    }

    /// Offers one PRI request to the PRI queue, by the rules of this module's documentation.
    pub fn post_pri(
        &mut self,
        mem: &impl GuestRam,
        req: &GuestPageRequest,
        irq: &mut dyn MsiSink,
    ) -> Posted {
        let entry = PriEntry {
            sid: u32::from(req.rid),
            ssid: req.pasid,
            perm: req.perm & Perm::all(),
            last: req.last,
            prg_index: req.prg_index,
            addr: req.addr,
        };
        let active = self.priq.overflowed();
        if active || self.priq.room() == 0 {
            if !active {
                self.priq.prod ^= Q_OVF;
                self.stats.pri_overflows += 1;
            }
            self.stats.pri_dropped += 1;
            if entry.last && !entry.is_stop_marker() {
                self.stats.pri_auto_success += 1;
                return Posted::AnsweredByHardware(ResponseCode::Success);
            }
            return Posted::Dropped;
        }
        let at = GuestAddress(self.priq.slot(self.priq.prod));
        if mem.write_guest(&entry.to_bytes(), at).is_err() {
            self.stats.unreachable += 1;
            self.raise_gerror(GERROR_PRIQ_ABT_ERR, irq);
            return Posted::Unreachable;
        }
        let was_empty = self.priq.is_empty();
        self.priq.prod = self.priq.inc(self.priq.prod);
        self.stats.pri_written += 1;
        if was_empty {
            let on = self.irq_ctrl & IRQ_CTRL_PRIQ_IRQEN != 0;
            self.priq_msi.send(on, irq);
        }
        Posted::Queued
    }

    /// Offers one stalled transaction to the event queue.
    pub fn post_stall(
        &mut self,
        mem: &impl GuestRam,
        req: &GuestPageRequest,
        irq: &mut dyn MsiSink,
    ) -> Posted {
        if self.evtq.room() == 0 {
            self.stats.event_full_aborts += 1;
            return Posted::AnsweredByHardware(ResponseCode::Invalid);
        }
        let event = StallEvent {
            id: F_TRANSLATION,
            sid: u32::from(req.rid),
            ssid: req.pasid,
            stag: req.prg_index,
            perm: req.perm,
            addr: req.addr,
        };
        let at = GuestAddress(self.evtq.slot(self.evtq.prod));
        if mem.write_guest(&event.to_bytes(), at).is_err() {
            self.stats.unreachable += 1;
            self.raise_gerror(GERROR_EVTQ_ABT_ERR, irq);
            return Posted::Unreachable;
        }
        let was_empty = self.evtq.is_empty();
        self.evtq.prod = self.evtq.inc(self.evtq.prod);
        self.stats.events_written += 1;
        if was_empty {
            let on = self.irq_ctrl & IRQ_CTRL_EVTQ_IRQEN != 0;
            self.evtq_msi.send(on, irq);
        }
        Posted::Queued
    }

    /// The unit's queues as the bridge posts into them.
    pub fn guest_queue<'a, M: GuestRam>(
        &'a mut self,
        mem: &'a M,
        irq: &'a mut dyn MsiSink,
    ) -> SmmuGuestQueue<'a, M> {
        SmmuGuestQueue {
            pri: self,
            mem,
            irq,
        }
    }
}

/// The PRI and event queues of a [`SmmuPri`] with the memory and interrupt sink they write
/// through: what [`crate::Bridge::pump`] posts into. Each function's requests go to the queue
/// its stream uses.
pub struct SmmuGuestQueue<'a, M: GuestRam> {
    pri: &'a mut SmmuPri,
    mem: &'a M,
    irq: &'a mut dyn MsiSink,
}

impl<M: GuestRam> GuestQueue for SmmuGuestQueue<'_, M> {
    fn enabled(&self, rid: u16) -> bool {
        if self.pri.is_stall_stream(rid) {
            self.pri.evtq_enabled()
        } else {
            self.pri.pri_enabled()
        }
    }

    fn room(&self, rid: u16) -> usize {
        if self.pri.is_stall_stream(rid) {
            self.pri.evtq.room() as usize
        } else {
            self.pri.pri_room() as usize
        }
    }

    fn capacity(&self, rid: u16) -> usize {
        if self.pri.is_stall_stream(rid) {
            self.pri.evtq.entries() as usize
        } else {
            self.pri.priq.entries() as usize
        }
    }

    fn naming(&self, rid: u16) -> GroupNaming {
        self.pri.naming(self.mem, rid)
    }

    /// SMMUv3 carries no private data.
    fn private_data_mode(&self) -> PrivateDataMode {
        PrivateDataMode::None
    }

    fn post(&mut self, req: &GuestPageRequest) -> Posted {
        if !self.enabled(req.rid) {
            return Posted::Unreachable;
        }
        if self.pri.is_stall_stream(req.rid) {
            self.pri.post_stall(self.mem, req, self.irq)
        } else {
            self.pri.post_pri(self.mem, req, self.irq)
        }
    }

    /// The MSIs are sent as entries land: nothing to do.
    fn notify(&mut self) {}
}
