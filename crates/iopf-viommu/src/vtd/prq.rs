//! The VT-d page request queue: the `PQH`, `PQT`, `PQA` and `PRS` registers, the descriptors in
//! guest memory, the page request event, and overflow.
//!
//! **The queue** is `2^PQS` 4 KiB pages at `PQA[63:12]`: `2^(PQS+7)` descriptors of 32 bytes
//! (VT-d spec §11.4.11.3). `PQH` and `PQT` hold byte offsets (bits 18:5); the hardware writes at
//! `PQT` and software consumes from `PQH`. One slot is always left empty, so `PQH == PQT` is an
//! empty queue and the queue is full when `PQT + 32 == PQH` (modulo its size).
//!
//! **The event** (VT-d spec §7.5 and the `PECTL` register description): writing a descriptor
//! sets `PRS.PPR`; if neither `PPR` nor `PRO` was set, that is a new event condition and the
//! page request event interrupt fires ([`EventInterrupt`]: sent, or held pending while
//! `PECTL.IM`). Software clears `PPR` and `PRO` by writing 1 (RW1C); clearing both while the
//! message is pending drops it.
//!
//! **Overflow** (VT-d spec §7.5.1, as the host simulator's queue, `iopf-sim`'s `prq.rs`, models
//! the host's): a request that finds the queue full sets `PRS.PRO` (an event condition) and is
//! dropped, and from then on *every* request is dropped, even once room has been made, until
//! software clears `PRO` (Linux's `prq_event_thread()` clears it only once it has drained the
//! queue, discarding its partial groups first). A dropped request that needs a response (last
//! in its group and not a stop marker, or carrying private data) is answered by the hardware
//! itself with Success, so that the device retries; other dropped requests get nothing.
//! (QEMU's emulation drops without answering, which leaves the device waiting for a response
//! that never comes.)
//!
//! **Memory.** Descriptors are written through the VMM's [`GuestRam`]; a queue pointed at
//! memory that is not there loses the request ([`Posted::Unreachable`]), never the VMM.

use crate::guest_ram::GuestRam;
use iopf_abi::{Perm, ResponseCode};
use vm_memory::GuestAddress;

use super::page_request::{to_bytes, VtdPageRequest, DESCRIPTOR_BYTES};
use super::regs::{PRS_PPR, PRS_PRO};
use crate::bridge::{GuestPageRequest, Posted, PrivateDataMode};
use crate::interrupt::{EventInterrupt, MsiSink};

/// What the page request queue has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrqStats {
    /// Descriptors written.
    pub written: u64,
    /// Times `PRO` was set.
    pub overflows: u64,
    /// Requests dropped while full or overflowed.
    pub dropped: u64,
    /// Of those, groups the hardware answered Success itself.
    pub auto_success: u64,
    /// Requests lost because the queue's memory could not be written.
    pub unreachable: u64,
    /// Page request events signalled or made pending.
    pub events: u64,
}

/// The page request queue's registers and state.
#[derive(Debug, Clone, Default)]
pub struct PageRequestQueue {
    pqh: u64,
    pqt: u64,
    pqa: u64,
    prs: u32,
    /// The page request event interrupt (`PECTL`, `PEDATA`, `PEADDR`, `PEUADDR`).
    pub event: EventInterrupt,
    stats: PrqStats,
}

/// The bits of `PQH` and `PQT` software may write: 18:5.
const OFFSET_MASK: u64 = 0x7_ffe0;
/// The bits of `PQA` that are fields: base 63:12 and PQS 2:0.
const PQA_MASK: u64 = !0xff8;

impl PageRequestQueue {
    /// Whether the guest has set the queue up (`PQA` not zero: Linux's
    /// `intel_iommu_finish_prq()` writes 0 to turn it off).
    pub fn enabled(&self) -> bool {
        self.pqa != 0
    }

    /// The queue's size in bytes.
    pub fn size_bytes(&self) -> u64 {
        4096 << (self.pqa & 7)
    }

    /// The queue's size in descriptors.
    pub fn entries(&self) -> u64 {
        self.size_bytes() / DESCRIPTOR_BYTES as u64
    }

    /// The guest-physical base.
    pub fn base(&self) -> u64 {
        self.pqa & !0xfff
    }

    /// The head, as a byte offset inside the queue (a head software wrote past the end of the
    /// queue is taken modulo its size).
    pub fn head(&self) -> u64 {
        self.pqh % self.size_bytes()
    }

    /// The tail, as a byte offset inside the queue.
    pub fn tail(&self) -> u64 {
        self.pqt % self.size_bytes()
    }

    /// Descriptors written and not yet consumed.
    pub fn used(&self) -> u64 {
        let size = self.size_bytes();
        (self.tail() + size - self.head()) % size / DESCRIPTOR_BYTES as u64
    }

    /// How many requests fit without overflowing: 0 while `PRO` is set.
    pub fn room(&self) -> u64 {
        if self.prs & PRS_PRO != 0 {
            0
        } else {
            self.entries() - 1 - self.used()
        }
    }

    /// `PRS`.
    pub fn prs(&self) -> u32 {
        self.prs
    }

    /// The counters.
    pub fn stats(&self) -> PrqStats {
        self.stats
    }

    /// Reads `PQH` (0), `PQT` (1) or `PQA` (2).
    pub fn reg(&self, which: usize) -> u64 {
        match which {
            0 => self.pqh,
            1 => self.pqt,
            _ => self.pqa,
        }
    }

    /// Writes `PQH` (0), `PQT` (1) or `PQA` (2), keeping only their fields. Nothing else
    /// changes: rewriting `PQA` moves the queue without touching head or tail (Linux writes
    /// both to 0 first).
    pub fn write_reg(&mut self, which: usize, value: u64) {
        match which {
            0 => self.pqh = value & OFFSET_MASK,
            1 => self.pqt = value & OFFSET_MASK,
            _ => self.pqa = value & PQA_MASK,
        }
    }

    /// Software writes `PRS`: 1 clears `PPR` or `PRO`. Returns whether `PRO` was cleared (room
    /// may have appeared).
    pub fn write_prs(&mut self, value: u32) -> bool {
        let was_pro = self.prs & PRS_PRO != 0;
        self.prs &= !(value & (PRS_PPR | PRS_PRO));
        if self.prs == 0 {
            self.event.serviced();
        }
        was_pro && self.prs & PRS_PRO == 0
    }

    /// Offers one request to the queue, by the rules of this module's documentation.
    pub fn post(
        &mut self,
        mem: &impl GuestRam,
        req: &GuestPageRequest,
        mode: PrivateDataMode,
        irq: &mut dyn MsiSink,
    ) -> Posted {
        let needs_response = (req.last && req.perm.intersects(Perm::READ | Perm::WRITE))
            || (mode == PrivateDataMode::Carried && req.private_data.is_some());
        if self.prs & PRS_PRO == 0 && self.room() == 0 {
            self.stats.overflows += 1;
            self.set_status(PRS_PRO, irq);
        }
        if self.prs & PRS_PRO != 0 {
            self.stats.dropped += 1;
            return if needs_response {
                self.stats.auto_success += 1;
                Posted::AnsweredByHardware(ResponseCode::Success)
            } else {
                Posted::Dropped
            };
        }
        let desc = VtdPageRequest {
            rid: req.rid,
            pasid: req.pasid,
            prg_index: req.prg_index,
            perm: req.perm,
            addr: req.addr,
            lpig: req.last,
            private_data: req.private_data,
        }
        .encode(mode);
        let tail = self.tail();
        let at = GuestAddress(self.base().wrapping_add(tail));
        if mem.write_guest(&to_bytes(&desc), at).is_err() {
            self.stats.unreachable += 1;
            return Posted::Unreachable;
        }
        self.pqt = (tail + DESCRIPTOR_BYTES as u64) % self.size_bytes();
        self.stats.written += 1;
        self.set_status(PRS_PPR, irq);
        Posted::Queued
    }

    /// Sets a `PRS` bit; a new event condition if neither `PPR` nor `PRO` was set.
    fn set_status(&mut self, bit: u32, irq: &mut dyn MsiSink) {
        let was = self.prs;
        self.prs |= bit;
        if was & (PRS_PPR | PRS_PRO) == 0 {
            self.stats.events += 1;
            self.event.raise(irq);
        }
    }
}
