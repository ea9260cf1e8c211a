//! A model of the guest's SMMUv3 driver on the page request path, written from the SMMUv3
//! specification and from what Linux 6.12 does (`drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c`):
//! what the tests and the simulator run as "the guest".
//!
//! * [`SmmuGuestDriver::init`] is `arm_smmu_device_reset()` with `arm_smmu_setup_irqs()`:
//!   `CR0` = 0; `CR1`, `CR2`; a linear stream table with one STE per configured stream (`V`,
//!   stage-1 translate, `PPAR` as [`with_ppar`](SmmuGuestDriver::with_ppar) says, 1 by
//!   default); the command queue's base, `PROD`, `CONS`, `CMDQEN`; `CMD_CFGI_ALL` and
//!   `CMD_TLBI_NSNH_ALL`, each with a `CMD_SYNC`; the event queue, `EVTQEN`; the PRI queue,
//!   `PRIQEN`; `IRQ_CTRL` = 0, the three MSIs (`arm_smmu_write_msi_msg()`), `IRQ_CTRL` = all;
//!   `SMMUEN`. Every `CR0` and `IRQ_CTRL` write is followed by polling its `ACK`
//!   (`arm_smmu_write_reg_sync()`). The stream table holds `2^n` STEs for the smallest `n` that
//!   covers the streams, not Linux's `2^SIDSIZE`.
//! * [`SmmuGuestDriver::handle_event`] runs `arm_smmu_gerror_handler()` (a command error is
//!   skipped as `arm_smmu_cmdq_skip_err()` does, then `GERRORN` = `GERROR`),
//!   `arm_smmu_evtq_thread()` and `arm_smmu_priq_thread()`: each consumes entries up to the
//!   `PROD` it last read, writing `CONS` after each (`queue_remove_raw()`), reads `PROD` again
//!   (`queue_sync_prod_in()`, which notices an overflow by `OVFLG` changing), until the queue is
//!   empty, then acknowledges an overflow (`queue_sync_cons_ovf()`).
//! * PRI requests: Linux 6.12's own `arm_smmu_handle_ppr()` only logs and answers every last
//!   request DENY ([`linux_6_12_deny_all`](SmmuGuestDriver::linux_6_12_deny_all) behaves so).
//!   By default the model answers as a PRI-capable driver with io-pgfault would: Stop markers
//!   are dropped, requests are grouped by (StreamID, PRG index) until `LAST` and the group is
//!   resolved through the [`GuestResolver`] ([`resolve_group`]); an overflow discards the groups
//!   whose last request was lost (spec §8.1.1). The answer is `CMD_PRI_RESP` (with `SSV` and
//!   the SubstreamID when the request had one).
//! * Stalls: `arm_smmu_handle_evt()` reports a stall record to io-pgfault as a one-page group;
//!   the answer goes through `arm_smmu_page_response()`: `CMD_RESUME` with the stall tag
//!   (`code_map::pcie_to_smmu_resume`).
//! * Answers are batched and followed by a `CMD_SYNC` with `CS` = SIG_IRQ whose `MSIADDR` is the
//!   sync command itself and `MSIDATA` 0, as Linux's MSI-poll (`ARM_SMMU_OPT_MSIPOLL`) builds
//!   it; the sync has completed once the command's first word reads 0.

use std::collections::HashMap;

use crate::guest_ram::GuestRam;
use iopf_abi::{FaultConsumer, ResponseCode};
use vm_memory::GuestAddress;

use super::model::{
    read32, resolve_group, write32, write64, DriverError, GuestResolver, Handled, Misbehaviour,
};
use crate::code_map;
use crate::interrupt::MsiSink;
use crate::smmuv3::command::{Command, SyncCs};
use crate::smmuv3::event::StallEvent;
use crate::smmuv3::pri_entry::{dwords, PriEntry};
use crate::smmuv3::queue::{q_idx, q_ovf, q_wrp};
use crate::smmuv3::regs::*;
use crate::smmuv3::stream_table::{STE_0_V, STE_1_PPAR, STE_BYTES};
use crate::smmuv3::SmmuBridge;

/// The MSI doorbell the driver programs (a GIC ITS `GITS_TRANSLATER`-like address, outside
/// guest RAM); the data is the event id: 0 event queue, 1 `GERROR`, 2 PRI queue.
pub const SMMU_MSI_DOORBELL: u64 = 0x0809_0040;
/// `STRTAB_STE_0_CFG_S1_TRANS` in `STE.Config` \[3:1\].
const STE_0_CFG_S1_TRANS: u64 = 5 << 1;
/// `MSH` = inner shareable, `MSIATTR` = OIWB, as Linux builds every `CMD_SYNC`.
const SYNC_MSH: u8 = 3;
const SYNC_MSIATTR: u8 = 0xf;

/// A queue as the driver tracks it (Linux's `arm_smmu_ll_queue`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Llq {
    prod: u32,
    cons: u32,
    shift: u32,
}

impl Llq {
    fn empty(&self) -> bool {
        q_idx(self.prod, self.shift) == q_idx(self.cons, self.shift)
            && q_wrp(self.prod, self.shift) == q_wrp(self.cons, self.shift)
    }

    /// `queue_inc_cons()`.
    fn inc_cons(&mut self) {
        let mask = (1u32 << (self.shift + 1)) - 1;
        self.cons = q_ovf(self.cons) | ((self.cons & mask).wrapping_add(1) & mask);
    }
}

/// The driver model; see the module documentation.
#[derive(Debug, Clone)]
pub struct SmmuGuestDriver {
    base: u64,
    streams: Vec<u16>,
    ppar: bool,
    deny_all: bool,
    cmdq_log2: u32,
    evtq_log2: u32,
    priq_log2: u32,
    priq: Llq,
    evtq: Llq,
    /// Partial groups: (StreamID, PRG index) → their requests.
    partial: HashMap<(u32, u16), Vec<PriEntry>>,
    /// Commands not yet submitted (the command queue was full).
    unsent: Vec<Command>,
    /// The last `CMD_SYNC` submitted (its address), whose first word reads 0 once complete.
    last_sync: Option<u64>,
    /// What the guest does wrong.
    pub misbehaviour: Misbehaviour,
    /// Groups answered so far.
    pub answered: u64,
    /// Partial groups discarded on overflow.
    pub discarded_partials: u64,
}

impl SmmuGuestDriver {
    /// A driver whose queues and stream table are laid out from guest-physical `base` (each
    /// aligned to its size): a command queue of 256 entries, event and PRI queues of 128,
    /// with no stream in the stream table yet ([`with_streams`](Self::with_streams)).
    pub fn new(base: u64) -> SmmuGuestDriver {
        SmmuGuestDriver {
            base,
            streams: Vec::new(),
            ppar: true,
            deny_all: false,
            cmdq_log2: 8,
            evtq_log2: 7,
            priq_log2: 7,
            priq: Llq::default(),
            evtq: Llq::default(),
            partial: HashMap::new(),
            unsent: Vec::new(),
            last_sync: None,
            misbehaviour: Misbehaviour::default(),
            answered: 0,
            discarded_partials: 0,
        }
    }

    /// The StreamIDs whose STEs [`init`](Self::init) writes (the functions attached).
    pub fn with_streams(mut self, streams: &[u16]) -> SmmuGuestDriver {
        self.streams = streams.to_vec();
        self
    }

    /// The STEs' `PPAR` (the functions' "PRG Response PASID Required"); 1 by default.
    pub fn with_ppar(mut self, ppar: bool) -> SmmuGuestDriver {
        self.ppar = ppar;
        self
    }

    /// A PRI queue of `2^log2` entries (at most 19).
    pub fn with_priq_log2(mut self, log2: u32) -> SmmuGuestDriver {
        self.priq_log2 = log2.min(19);
        self
    }

    /// An event queue of `2^log2` entries (at most 19).
    pub fn with_evtq_log2(mut self, log2: u32) -> SmmuGuestDriver {
        self.evtq_log2 = log2.min(19);
        self
    }

    /// Answers PRI requests as Linux 6.12's `arm_smmu_handle_ppr()` does: every last request
    /// DENY (Invalid), nothing resolved. Stalls are still answered through io-pgfault.
    pub fn linux_6_12_deny_all(mut self) -> SmmuGuestDriver {
        self.deny_all = true;
        self
    }

    /// Partial groups held.
    pub fn partial_groups(&self) -> usize {
        self.partial.len()
    }

    /// Guest-physical addresses of the command queue, event queue, PRI queue and stream table.
    pub fn layout(&self) -> [u64; 4] {
        let align = |at: u64, size: u64| at.div_ceil(size) * size;
        let cmdq = align(self.base, 16 << self.cmdq_log2);
        let evtq = align(cmdq + (16 << self.cmdq_log2), 32 << self.evtq_log2);
        let priq = align(evtq + (32 << self.evtq_log2), 16 << self.priq_log2);
        let strtab = align(priq + (16 << self.priq_log2), 64);
        [cmdq, evtq, priq, strtab]
    }

    /// `log2` of the stream table's entries: the smallest that covers every stream.
    pub fn strtab_log2(&self) -> u32 {
        let max = self.streams.iter().copied().max().unwrap_or(0);
        32 - u32::from(max).leading_zeros()
    }

    /// Sets the unit up, as Linux does at boot; see the module documentation.
    pub fn init<C: FaultConsumer>(
        &mut self,
        unit: &mut SmmuBridge<C>,
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        now: u64,
    ) -> Result<(), DriverError> {
        let [cmdq, evtq, priq, strtab] = self.layout();
        self.priq = Llq {
            shift: self.priq_log2,
            ..Llq::default()
        };
        self.evtq = Llq {
            shift: self.evtq_log2,
            ..Llq::default()
        };
        self.partial.clear();
        self.unsent.clear();
        self.last_sync = None;
        // The stream table: zeroed, one STE per stream.
        let log2 = self.strtab_log2();
        let zero = vec![0u8; (STE_BYTES << log2) as usize];
        mem.write_guest(&zero, GuestAddress(strtab))
            .map_err(|_| DriverError::Memory(strtab))?;
        for &sid in &self.streams {
            let mut ste = [0u8; 16];
            ste[..8].copy_from_slice(&(STE_0_V | STE_0_CFG_S1_TRANS).to_le_bytes());
            let dw1 = if self.ppar { STE_1_PPAR } else { 0 };
            ste[8..].copy_from_slice(&dw1.to_le_bytes());
            let at = strtab + u64::from(sid) * STE_BYTES;
            mem.write_guest(&ste, GuestAddress(at))
                .map_err(|_| DriverError::Memory(at))?;
        }
        let mut w = Writer {
            unit,
            mem,
            irq,
            now,
        };
        w.reg_sync(CR0, 0, CR0ACK)?;
        // CR1: ISH, write-back tables and queues; CR2: PTM | RECINVSID.
        w.w32(
            CR1,
            (3 << 10) | (1 << 8) | (1 << 6) | (3 << 4) | (1 << 2) | 1,
        )?;
        w.w32(CR2, (1 << 2) | (1 << 1))?;
        w.w64(STRTAB_BASE, strtab | STRTAB_BASE_RA)?;
        w.w32(STRTAB_BASE_CFG, log2)?;
        w.w64(CMDQ_BASE, Q_BASE_RWA | cmdq | u64::from(self.cmdq_log2))?;
        w.w32(CMDQ_PROD, 0)?;
        w.w32(CMDQ_CONS, 0)?;
        let mut enables = CR0_CMDQEN;
        w.reg_sync(CR0, enables, CR0ACK)?;
        // CMD_CFGI_ALL (SID range 31) and CMD_TLBI_NSNH_ALL, each with a sync.
        for op in [0x04, 0x30] {
            self.unsent.push(Command::Other { opcode: op });
            self.submit(unit, mem, irq, now)?;
        }
        let mut w = Writer {
            unit,
            mem,
            irq,
            now,
        };
        w.w64(EVTQ_BASE, Q_BASE_RWA | evtq | u64::from(self.evtq_log2))?;
        w.w32(EVTQ_PROD, 0)?;
        w.w32(EVTQ_CONS, 0)?;
        enables |= CR0_EVTQEN;
        w.reg_sync(CR0, enables, CR0ACK)?;
        w.w64(PRIQ_BASE, Q_BASE_RWA | priq | u64::from(self.priq_log2))?;
        w.w32(PRIQ_PROD, 0)?;
        w.w32(PRIQ_CONS, 0)?;
        enables |= CR0_PRIQEN;
        w.reg_sync(CR0, enables, CR0ACK)?;
        // arm_smmu_setup_irqs(): off, MSIs, on.
        w.reg_sync(IRQ_CTRL, 0, IRQ_CTRLACK)?;
        for cfg0 in [GERROR_IRQ_CFG0, EVTQ_IRQ_CFG0, PRIQ_IRQ_CFG0] {
            w.w64(cfg0, 0)?;
        }
        for (cfg0, data) in [(EVTQ_IRQ_CFG0, 0), (GERROR_IRQ_CFG0, 1), (PRIQ_IRQ_CFG0, 2)] {
            w.w64(cfg0, SMMU_MSI_DOORBELL & MSI_CFG0_ADDR_MASK)?;
            w.w32(cfg0 + 8, data)?;
            w.w32(cfg0 + 12, 1)?; // ARM_SMMU_MEMATTR_DEVICE_nGnRE
        }
        let irqs = IRQ_CTRL_EVTQ_IRQEN | IRQ_CTRL_GERROR_IRQEN | IRQ_CTRL_PRIQ_IRQEN;
        w.reg_sync(IRQ_CTRL, irqs, IRQ_CTRLACK)?;
        enables |= CR0_SMMUEN;
        w.reg_sync(CR0, enables, CR0ACK)?;
        Ok(())
    }

    /// Handles the unit's interrupts (global errors, the event queue, the PRI queue) and
    /// answers; see the module documentation.
    pub fn handle_event<C: FaultConsumer>(
        &mut self,
        unit: &mut SmmuBridge<C>,
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        resolver: &mut dyn GuestResolver,
        now: u64,
    ) -> Result<Handled, DriverError> {
        let mut done = Handled::default();
        self.gerror_handler(unit, mem, irq, now)?;
        self.evtq_thread(unit, mem, irq, resolver, now, &mut done)?;
        self.priq_thread(unit, mem, irq, resolver, now, &mut done)?;
        done.waits_done = self.submit(unit, mem, irq, now)?;
        Ok(done)
    }

    /// `arm_smmu_gerror_handler()`: a command error is skipped as `arm_smmu_cmdq_skip_err()`
    /// does (an illegal command is overwritten with a `CMD_SYNC`; a fetch abort is retried),
    /// then every active error is acknowledged (`GERRORN` = `GERROR`).
    fn gerror_handler<C: FaultConsumer>(
        &mut self,
        unit: &mut SmmuBridge<C>,
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        now: u64,
    ) -> Result<(), DriverError> {
        let gerror = read32(unit, GERROR)?;
        let active = (gerror ^ read32(unit, GERRORN)?) & GERROR_ERR_MASK;
        if active == 0 {
            return Ok(());
        }
        if active & GERROR_CMDQ_ERR != 0 {
            let cons = read32(unit, CMDQ_CONS)?;
            let idx = (cons & CMDQ_CONS_ERR) >> CMDQ_CONS_ERR_SHIFT;
            if idx != u32::from(CERROR_NONE) && idx != u32::from(CERROR_ABT) && idx != 3 {
                let at = self.cmdq_slot(cons);
                let sync = Command::Sync {
                    cs: SyncCs::Sev,
                    msh: SYNC_MSH,
                    msi_attr: SYNC_MSIATTR,
                    msi_data: 0,
                    msi_addr: 0,
                };
                mem.write_guest(&sync.to_bytes(), GuestAddress(at))
                    .map_err(|_| DriverError::Memory(at))?;
            }
        }
        write32(unit, GERRORN, gerror, mem, irq, now)
    }

    /// `arm_smmu_evtq_thread()`: stall records to io-pgfault, answered by `CMD_RESUME`.
    fn evtq_thread<C: FaultConsumer>(
        &mut self,
        unit: &mut SmmuBridge<C>,
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        resolver: &mut dyn GuestResolver,
        now: u64,
        done: &mut Handled,
    ) -> Result<(), DriverError> {
        let [_, base, _, _] = self.layout();
        for _ in 0..MAX_ROUNDS {
            while !self.evtq.empty() {
                let at = base + 32 * u64::from(q_idx(self.evtq.cons, self.evtq.shift));
                let mut b = [0u8; 32];
                mem.read_guest(&mut b, GuestAddress(at))
                    .map_err(|_| DriverError::Memory(at))?;
                done.descriptors += 1;
                // Anything but a stall is only logged by Linux.
                if let Ok(ev) = StallEvent::from_bytes(&b) {
                    let code = resolve_group(
                        resolver,
                        [(ev.sid as u16, ev.ssid, ev.addr & !0xfff, ev.perm)],
                    );
                    let resp = code_map::pcie_to_smmu_resume(code);
                    self.respond(
                        Command::Resume {
                            sid: ev.sid,
                            stag: ev.stag,
                            resp,
                        },
                        done,
                    );
                }
                self.evtq.inc_cons();
                write32(unit, EVTQ_CONS, self.evtq.cons, mem, irq, now)?;
            }
            // queue_sync_prod_in(): an overflow only loses records; Linux logs it.
            self.evtq.prod = read32(unit, EVTQ_PROD)?;
            if self.evtq.empty() {
                break;
            }
        }
        self.sync_cons_ovf(unit, mem, irq, now, false)
    }

    /// `arm_smmu_priq_thread()`, answering as a PRI-capable driver (or as 6.12 does).
    fn priq_thread<C: FaultConsumer>(
        &mut self,
        unit: &mut SmmuBridge<C>,
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        resolver: &mut dyn GuestResolver,
        now: u64,
        done: &mut Handled,
    ) -> Result<(), DriverError> {
        let [_, _, base, _] = self.layout();
        let mut overflowed = false;
        for _ in 0..MAX_ROUNDS {
            while !self.priq.empty() {
                let at = base + 16 * u64::from(q_idx(self.priq.cons, self.priq.shift));
                let mut b = [0u8; 16];
                mem.read_guest(&mut b, GuestAddress(at))
                    .map_err(|_| DriverError::Memory(at))?;
                done.descriptors += 1;
                self.take_ppr(PriEntry::fields(&dwords(&b)), resolver, done);
                self.priq.inc_cons();
                write32(unit, PRIQ_CONS, self.priq.cons, mem, irq, now)?;
            }
            let prod = read32(unit, PRIQ_PROD)?;
            // queue_sync_prod_in() returning -EOVERFLOW.
            overflowed |= q_ovf(prod) != q_ovf(self.priq.prod);
            self.priq.prod = prod;
            if self.priq.empty() {
                break;
            }
        }
        if overflowed || q_ovf(self.priq.prod) != q_ovf(self.priq.cons) {
            // Spec §8.1.1: a group whose last request was not found up to PROD lost it in the
            // overflow (and was answered by the SMMU): it is ignored.
            self.discarded_partials += self.partial.len() as u64;
            self.partial.clear();
            done.overflow_cleared = true;
        }
        self.sync_cons_ovf(unit, mem, irq, now, true)
    }

    /// `queue_sync_cons_ovf()`: acknowledges an overflow (`CONS.OVACKFLG` = `PROD.OVFLG`).
    fn sync_cons_ovf<C: FaultConsumer>(
        &mut self,
        unit: &mut SmmuBridge<C>,
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        now: u64,
        pri: bool,
    ) -> Result<(), DriverError> {
        let (q, reg) = if pri {
            (&mut self.priq, PRIQ_CONS)
        } else {
            (&mut self.evtq, EVTQ_CONS)
        };
        if q_ovf(q.prod) == q_ovf(q.cons) {
            return Ok(());
        }
        q.cons = q_ovf(q.prod) | (q.cons & !q_ovf(u32::MAX));
        write32(unit, reg, q.cons, mem, irq, now)
    }

    /// One PRI queue entry.
    fn take_ppr(&mut self, e: PriEntry, resolver: &mut dyn GuestResolver, done: &mut Handled) {
        if self.deny_all {
            if e.last {
                self.respond_pri(&e, ResponseCode::Invalid, done);
            }
            return;
        }
        if e.is_stop_marker() {
            done.stop_markers += 1;
            return;
        }
        let key = (e.sid, e.prg_index);
        self.partial.entry(key).or_default().push(e);
        if !e.last {
            return;
        }
        let group = self.partial.remove(&key).unwrap_or_default();
        let code = resolve_group(
            resolver,
            group.iter().map(|r| (r.sid as u16, r.ssid, r.addr, r.perm)),
        );
        self.respond_pri(&e, code, done);
    }

    fn respond_pri(&mut self, e: &PriEntry, code: ResponseCode, done: &mut Handled) {
        self.respond(
            Command::PriResp {
                sid: e.sid,
                ssid: e.ssid,
                grpid: e.prg_index,
                resp: code_map::pcie_to_smmu_pri_resp(code),
            },
            done,
        );
    }

    fn respond(&mut self, cmd: Command, done: &mut Handled) {
        if self.misbehaviour.silent {
            return;
        }
        self.unsent.push(cmd);
        if self.misbehaviour.answer_twice {
            self.unsent.push(cmd);
        }
        self.answered += 1;
        done.responses += 1;
    }

    fn cmdq_slot(&self, p: u32) -> u64 {
        self.layout()[0] + 16 * u64::from(q_idx(p, self.cmdq_log2))
    }

    /// Submits unsent commands in batches, each followed by a `CMD_SYNC` (MSI-poll); whether
    /// all were submitted and the last sync has completed.
    pub fn submit<C: FaultConsumer>(
        &mut self,
        unit: &mut SmmuBridge<C>,
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        now: u64,
    ) -> Result<bool, DriverError> {
        let entries = 1u32 << self.cmdq_log2;
        let mask = (entries << 1) - 1;
        while !self.unsent.is_empty() {
            // The pointers as the unit has them (another writer, a test, may have moved PROD).
            let mut prod = read32(unit, CMDQ_PROD)? & mask;
            let cons = read32(unit, CMDQ_CONS)? & mask;
            let used = (prod.wrapping_sub(cons) & mask).min(entries);
            let free = (entries - used) as usize;
            if free < 2 {
                break;
            }
            let n = self.unsent.len().min(free - 1);
            let batch: Vec<Command> = self.unsent.drain(..n).collect();
            for c in batch {
                self.put(mem, prod, &c)?;
                prod = (prod + 1) & mask;
            }
            let at = self.cmdq_slot(prod);
            let sync = Command::Sync {
                cs: SyncCs::Irq,
                msh: SYNC_MSH,
                msi_attr: SYNC_MSIATTR,
                msi_data: 0,
                msi_addr: at,
            };
            self.put(mem, prod, &sync)?;
            self.last_sync = Some(at);
            prod = (prod + 1) & mask;
            write32(unit, CMDQ_PROD, prod, mem, irq, now)?;
        }
        Ok(self.unsent.is_empty() && self.sync_done(mem)?)
    }

    /// Whether the last `CMD_SYNC` has completed (its first word reads 0).
    pub fn sync_done(&self, mem: &impl GuestRam) -> Result<bool, DriverError> {
        let Some(at) = self.last_sync else {
            return Ok(true);
        };
        let mut b = [0u8; 4];
        mem.read_guest(&mut b, GuestAddress(at))
            .map_err(|_| DriverError::Memory(at))?;
        Ok(u32::from_le_bytes(b) == 0)
    }

    fn put(&self, mem: &impl GuestRam, p: u32, c: &Command) -> Result<(), DriverError> {
        let at = self.cmdq_slot(p);
        mem.write_guest(&c.to_bytes(), GuestAddress(at))
            .map_err(|_| DriverError::Memory(at))
    }
}

/// Rounds of "consume to PROD, read PROD again" per interrupt: new entries keep landing as
/// `CONS` frees room, and the driver returns after this many (the next interrupt goes on).
const MAX_ROUNDS: usize = 64;

super::model::delegate_driver_model!(SmmuGuestDriver, SmmuBridge, |d| d.discarded_partials);

/// MMIO writes with the unit, memory and interrupt sink at hand.
struct Writer<'a, C: FaultConsumer, M: GuestRam> {
    unit: &'a mut SmmuBridge<C>,
    mem: &'a M,
    irq: &'a mut dyn MsiSink,
    now: u64,
}

impl<C: FaultConsumer, M: GuestRam> Writer<'_, C, M> {
    fn w32(&mut self, off: u64, v: u32) -> Result<(), DriverError> {
        write32(self.unit, off, v, self.mem, self.irq, self.now)
    }

    fn w64(&mut self, off: u64, v: u64) -> Result<(), DriverError> {
        write64(self.unit, off, v, self.mem, self.irq, self.now)
    }

    /// `arm_smmu_write_reg_sync()`: write, then poll the acknowledgement (a few reads; the
    /// model's unit acknowledges at once, and the driver carries on either way, having no
    /// timeout error to report).
    fn reg_sync(&mut self, off: u64, v: u32, ack: u64) -> Result<(), DriverError> {
        self.w32(off, v)?;
        for _ in 0..10 {
            if read32(self.unit, ack)? == v {
                break;
            }
        }
        Ok(())
    }
}
