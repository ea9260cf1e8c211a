//! A model of the guest's VT-d page request driver, written from the VT-d specification and
//! from what Linux 6.12 does (`drivers/iommu/intel/prq.c`): what the tests and the simulator
//! run as "the guest".
//!
//! * [`VtdGuestDriver::init`] programs the unit as `intel_iommu_enable_prq()` and
//!   `dmar_enable_qi()` do: `IQT = 0`, `IQA = base | DW | QS`, `GCMD.QIE`; `PQH = PQT = 0`,
//!   `PQA = base | PQS`; the page request event's message, unmasked.
//! * [`VtdGuestDriver::handle_event`] is `prq_event_thread()`: clear `PPR`; read `PQT` then
//!   `PQH`; for each descriptor: no PASID, a non-canonical address, a privileged request that
//!   reads or writes, or an execute request that reads is answered INVALID (when it ends its
//!   group: `handle_bad_prq_event()`); a stop marker is dropped; otherwise the request joins its
//!   group (the guest's own io-pgfault partial list) and a group complete (LPIG, or private data
//!   in VT-d 3.x) is resolved in the guest's page tables and answered; write `PQH = PQT`; then,
//!   if `PRO` is set and the queue is empty, discard the partial groups and clear `PRO`.
//! * Answers go as page group responses into the invalidation queue, followed by a wait
//!   descriptor with a status write, as `qi_submit_sync()` does; the driver checks the status.

use std::collections::HashMap;

use crate::guest_ram::GuestRam;
use iopf_abi::{FaultConsumer, Perm, ResponseCode};
use vm_memory::GuestAddress;

use super::model::{
    canonical, read32, read64, resolve_group, write32, write64, DriverError, GuestResolver,
    Handled, Misbehaviour,
};
use crate::interrupt::MsiSink;
use crate::vtd::inv_descriptor::{PageGroupResponse, WaitDescriptor};
use crate::vtd::page_request::{from_bytes, to_bytes, VtdPageRequest};
use crate::vtd::regs::{
    GCMD, IQA, IQA_DW, IQH, IQT, PECTL, PQA, PQH, PQT, PRS, PRS_PPR, PRS_PRO, QIE,
};
use crate::vtd::VtdBridge;

const PRQ_DESC: u64 = 32;
/// The invalidation queue the driver sets up: 256-bit descriptors, QS = 1 (two pages, 256
/// descriptors), as Linux does in scalable mode.
const IQ_QS: u64 = 1;
const IQ_BYTES: u64 = 4096 << IQ_QS;

/// The guest driver model; see the module documentation.
#[derive(Debug, Clone)]
pub struct VtdGuestDriver {
    prq_base: u64,
    prq_order: u64,
    iq_base: u64,
    status_addr: u64,
    iqt: u64,
    /// Partial groups: (rid, PRG index) → their requests.
    partial: HashMap<(u16, u16), Vec<VtdPageRequest>>,
    /// Responses not yet submitted (the invalidation queue was full).
    unsent: Vec<PageGroupResponse>,
    wait_seq: u32,
    /// What the guest does wrong.
    pub misbehaviour: Misbehaviour,
    /// Groups answered so far.
    pub answered: u64,
    /// Partial groups discarded on overflow.
    pub discarded_partials: u64,
}

impl VtdGuestDriver {
    /// A driver whose page request queue is at guest-physical `prq_base` (16 pages, Linux's
    /// `PRQ_ORDER` 4: 2,048 descriptors) and whose invalidation queue and wait status word are
    /// at `iq_base` (two pages plus one).
    pub fn new(prq_base: u64, iq_base: u64) -> VtdGuestDriver {
        VtdGuestDriver {
            prq_base,
            prq_order: 4,
            iq_base,
            status_addr: iq_base + IQ_BYTES,
            iqt: 0,
            partial: HashMap::new(),
            unsent: Vec::new(),
            wait_seq: 0,
            misbehaviour: Misbehaviour::default(),
            answered: 0,
            discarded_partials: 0,
        }
    }

    /// A page request queue of `2^order` pages (0 to 7) instead of 16.
    pub fn with_prq_order(mut self, order: u64) -> VtdGuestDriver {
        self.prq_order = order.min(7);
        self
    }

    /// Sets the unit up, as Linux does at boot. `0xfee0_0000` / vector 0x40 is the page request
    /// event's message.
    pub fn init<C: FaultConsumer>(
        &mut self,
        vtd: &mut VtdBridge<C>,
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        now: u64,
    ) -> Result<(), DriverError> {
        self.iqt = 0;
        // A status word left by an earlier driver (before a reset) must not read as pending.
        mem.write_guest(&self.wait_seq.to_le_bytes(), GuestAddress(self.status_addr))
            .map_err(|_| DriverError::Memory(self.status_addr))?;
        write64(vtd, IQT, 0, mem, irq, now)?;
        write64(vtd, IQA, self.iq_base | IQA_DW | IQ_QS, mem, irq, now)?;
        write32(vtd, GCMD, QIE, mem, irq, now)?;
        write64(vtd, PQH, 0, mem, irq, now)?;
        write64(vtd, PQT, 0, mem, irq, now)?;
        write64(vtd, PQA, self.prq_base | self.prq_order, mem, irq, now)?;
        write32(vtd, PECTL + 4, 0x40, mem, irq, now)?;
        write32(vtd, PECTL + 8, 0xfee0_0000, mem, irq, now)?;
        write32(vtd, PECTL + 12, 0, mem, irq, now)?;
        write32(vtd, PECTL, 0, mem, irq, now)?;
        Ok(())
    }

    /// Handles a page request event (`prq_event_thread()`); see the module documentation.
    pub fn handle_event<C: FaultConsumer>(
        &mut self,
        vtd: &mut VtdBridge<C>,
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        resolver: &mut dyn GuestResolver,
        now: u64,
    ) -> Result<Handled, DriverError> {
        let mut done = Handled::default();
        let mode = vtd.pri().config().private_data;
        write32(vtd, PRS, PRS_PPR, mem, irq, now)?;
        let mask = (4096u64 << self.prq_order) - PRQ_DESC;
        let tail = read64(vtd, PQT)? & mask;
        let mut head = read64(vtd, PQH)? & mask;
        while head != tail {
            let mut b = [0u8; 32];
            mem.read_guest(&mut b, GuestAddress(self.prq_base + head))
                .map_err(|_| DriverError::Memory(self.prq_base + head))?;
            let req = VtdPageRequest::fields(&from_bytes(&b), mode);
            done.descriptors += 1;
            self.take(req, resolver, &mut done);
            head = (head + PRQ_DESC) & mask;
        }
        write64(vtd, PQH, tail, mem, irq, now)?;
        if read32(vtd, PRS)? & PRS_PRO != 0 {
            let tail = read64(vtd, PQT)? & mask;
            let head = read64(vtd, PQH)? & mask;
            if head == tail {
                self.discarded_partials += self.partial.len() as u64;
                self.partial.clear();
                write32(vtd, PRS, PRS_PRO, mem, irq, now)?;
                done.overflow_cleared = true;
            }
        }
        done.waits_done = self.submit(vtd, mem, irq, now)?;
        Ok(done)
    }

    /// Submits unsent responses (after a full invalidation queue); whether all waits are done.
    pub fn submit<C: FaultConsumer>(
        &mut self,
        vtd: &mut VtdBridge<C>,
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        now: u64,
    ) -> Result<bool, DriverError> {
        let mode = vtd.pri().config().private_data;
        // The tail as the unit has it (another writer, a test, may have moved it).
        self.iqt = (read64(vtd, IQT)? % IQ_BYTES) & !31;
        while !self.unsent.is_empty() {
            let iqh = read64(vtd, IQH)?;
            // Modulo the queue, whatever the registers read (a "hardware" may show anything).
            let free = ((iqh % IQ_BYTES) + 2 * IQ_BYTES - self.iqt - 32) % IQ_BYTES / 32;
            if free < 2 {
                break;
            }
            let n = self.unsent.len().min(free as usize - 1);
            let batch: Vec<PageGroupResponse> = self.unsent.drain(..n).collect();
            for r in &batch {
                self.put(mem, &r.encode(mode))?;
            }
            self.wait_seq = self.wait_seq.wrapping_add(1);
            let wait = WaitDescriptor {
                status_write: true,
                fence: true,
                status_data: self.wait_seq,
                status_address: self.status_addr,
                ..WaitDescriptor::default()
            };
            self.put(mem, &wait.encode())?;
            write64(vtd, IQT, self.iqt, mem, irq, now)?;
        }
        Ok(self.unsent.is_empty() && self.wait_done(mem)?)
    }

    /// Whether the last wait descriptor has written its status.
    pub fn wait_done(&self, mem: &impl GuestRam) -> Result<bool, DriverError> {
        let mut b = [0u8; 4];
        mem.read_guest(&mut b, GuestAddress(self.status_addr))
            .map_err(|_| DriverError::Memory(self.status_addr))?;
        Ok(u32::from_le_bytes(b) == self.wait_seq)
    }

    /// Partial groups held.
    pub fn partial_groups(&self) -> usize {
        self.partial.len()
    }

    fn put(&mut self, mem: &impl GuestRam, qw: &[u64; 4]) -> Result<(), DriverError> {
        let at = self.iq_base + self.iqt;
        mem.write_guest(&to_bytes(qw), GuestAddress(at))
            .map_err(|_| DriverError::Memory(at))?;
        self.iqt = (self.iqt + 32) % IQ_BYTES;
        Ok(())
    }

    /// One descriptor, as `prq_event_thread()` takes it.
    fn take(&mut self, req: VtdPageRequest, resolver: &mut dyn GuestResolver, done: &mut Handled) {
        let rw = req.perm.intersects(Perm::READ | Perm::WRITE);
        let bad = req.pasid.is_none()
            || !canonical(req.addr)
            || (req.perm.contains(Perm::PRIV) && rw)
            || (req.perm.contains(Perm::EXEC) && req.perm.contains(Perm::READ));
        if bad {
            if req.lpig || req.private_data.is_some() {
                done.bad += 1;
                self.respond(&req, ResponseCode::Invalid, done);
            }
            return;
        }
        if req.is_stop_marker() {
            done.stop_markers += 1;
            return;
        }
        let key = (req.rid, req.prg_index);
        let group = self.partial.entry(key).or_default();
        group.push(req);
        if !req.needs_response() {
            return;
        }
        let group = self.partial.remove(&key).unwrap_or_default();
        let code = resolve_group(
            resolver,
            group.iter().map(|r| (r.rid, r.pasid, r.addr, r.perm)),
        );
        self.respond(&req, code, done);
    }

    fn respond(&mut self, req: &VtdPageRequest, code: ResponseCode, done: &mut Handled) {
        if self.misbehaviour.silent {
            return;
        }
        let r = PageGroupResponse::new(req.rid, req.pasid, req.prg_index, code, req.private_data);
        self.unsent.push(r);
        if self.misbehaviour.answer_twice {
            self.unsent.push(r);
        }
        self.answered += 1;
        done.responses += 1;
    }
}

super::model::delegate_driver_model!(VtdGuestDriver, VtdBridge, |d| d.discarded_partials);
