//! A model of the guest's AMD IOMMU driver, as far as page requests go, written from the AMD
//! specification (48882) and from what Linux 6.12 does (`drivers/iommu/amd/init.c`, `ppr.c`,
//! `iommu.c`): what the tests and the simulator run as "the guest".
//!
//! * [`AmdGuestDriver::init`] programs the unit as Linux does at boot:
//!   `iommu_enable_command_buffer()` (`CMD_BUF = base | 512 entries`, CMDBUF_EN off, head =
//!   tail = 0, CMDBUF_EN on), `iommu_enable()` (IOMMU_EN), `iommu_enable_event_buffer()`
//!   (`EVT_BUF`, head = tail = 0, EVT_LOG_EN), the MSI and EVT_INT_EN (`iommu_init_irq()`),
//!   and, when the EFR has GT, PPR and EPHSUP (`amd_iommu_gt_ppr_supported()`),
//!   `amd_iommu_enable_ppr_log()` (PPR_EN, `PPR_LOG`, head = tail = 0, PPRINT_EN, PPRLOG_EN).
//!   `max_pasids` is `(1 << (PASMAX + 1)) - 1`, as `iommu_init_pci()` computes it.
//! * [`AmdGuestDriver::handle_event`] is `amd_iommu_int_thread()`: for the event log and then
//!   the PPR log, `amd_iommu_handle_irq()`: while `STATUS` has the log's INT or OVERFLOW bit,
//!   write both back (W1C), poll the log, and on overflow restart it
//!   (`amd_iommu_restart_log()`: if `*_RUN` is clear, disable log and interrupt, W1C
//!   overflow, enable interrupt and log). Polling the PPR log is `amd_iommu_poll_ppr_log()`:
//!   read head and tail; for each entry, zero it (erratum 733), write the new head, then
//!   `iommu_call_iopf_notifier()`: an entry whose type is not `PPR_REQ_FAULT` is dropped; one
//!   without GN, with RSVD, or with PASID 0 or ≥ `max_pasids` is answered
//!   `IOMMU_PAGE_RESP_FAILURE` (2) at once, last in group or not, as ppr.c does; the others
//!   join their group (the guest's io-pgfault partial list, by device and PRG index) and the
//!   last request's group is resolved in the guest's page tables and answered. Linux does not
//!   discard partial groups after a PPR log overflow (only VT-d does), nor does the model.
//! * Answers go as COMPLETE_PPR_REQUEST commands (`build_complete_ppr()`, GN = the device's
//!   `pri_tlp`: the function's "PRG Response PASID Required" bit, which the VMM shows the
//!   guest as `Endpoint::prg_response_pasid_required`) followed by one COMPLETION_WAIT that stores the
//!   next `cmd_sem` value, as `iommu_completion_wait()` does; the driver checks the store.
//!   (Linux writes `CMD_TAIL` after every command; the model writes it once per batch so that a
//!   batch reaches the host in one write.)

use std::collections::HashMap;

use crate::guest_ram::GuestRam;
use iopf_abi::{FaultConsumer, ResponseCode};
use vm_memory::GuestAddress;

use super::model::{
    read32, read64, resolve_group, write32, write64, DriverError, GuestResolver, Handled,
    Misbehaviour,
};
use crate::amd::command::{words_to_bytes, CompletionWait, PprCompletion};
use crate::amd::event::{Event, ILLEGAL_COMMAND_ERROR};
use crate::amd::ppr_entry::{bytes_to_qwords, PprEntry, PPR_REQ_FAULT};
use crate::amd::regs::*;
use crate::amd::AmdBridge;
use crate::code_map;
use crate::interrupt::MsiSink;

/// Linux's `CMD_BUFFER_SIZE` and `EVTLOG_SIZE_DEF`: 8 KiB, 512 entries.
const BUF_BYTES: u64 = 8192;
/// How many times the model re-reads `STATUS` in one handler (Linux loops until clear; a
/// "hardware" that never clears must not hang the model).
const STATUS_LOOPS: usize = 16;

/// The guest driver model; see the module documentation.
#[derive(Debug, Clone)]
pub struct AmdGuestDriver {
    cmd_base: u64,
    evt_base: u64,
    sem_addr: u64,
    ppr_base: u64,
    ppr_len: u64,
    max_pasids: u32,
    cmd_tail: u64,
    sem_val: u64,
    /// Partial groups: (devid, PRG index) → their requests.
    partial: HashMap<(u16, u16), Vec<PprEntry>>,
    /// Completions not yet submitted (the command buffer was full or stopped).
    unsent: Vec<PprCompletion>,
    /// Write Linux's own `IOMMU_PAGE_RESP_FAILURE` (2) for Response Failure, as Linux 6.12's
    /// `amd_iommu_complete_ppr()` does (default); off, the PCIe code (0xf).
    pub linux_failure_code: bool,
    /// The device's "PRG Response PASID Required" (`dev_data->pri_tlp`): GN and the PASID in
    /// every completion (default on).
    pub pri_tlp: bool,
    /// What the guest does wrong.
    pub misbehaviour: Misbehaviour,
    /// Groups answered so far.
    pub answered: u64,
    /// ILLEGAL_COMMAND_ERROR events seen in the event log.
    pub illegal_commands: u64,
    /// Events of any kind seen in the event log.
    pub events: u64,
    /// PPR log entries dropped for their type ("Unknown PPR request received").
    pub unknown_entries: u64,
}

impl AmdGuestDriver {
    /// A driver whose command buffer (8 KiB), event log (8 KiB), completion semaphore and PPR
    /// log (512 entries, Linux's `PPRLOG_SIZE_DEF`) lie from guest-physical `base`
    /// (`base + 0x5000` is the PPR log; a log of 2^15 entries needs 512 KiB from there).
    pub fn new(base: u64) -> AmdGuestDriver {
        AmdGuestDriver {
            cmd_base: base,
            evt_base: base + 0x2000,
            sem_addr: base + 0x4000,
            ppr_base: base + 0x5000,
            ppr_len: LEN_DEFAULT,
            max_pasids: 0,
            cmd_tail: 0,
            sem_val: 0,
            partial: HashMap::new(),
            unsent: Vec::new(),
            linux_failure_code: true,
            pri_tlp: true,
            misbehaviour: Misbehaviour::default(),
            answered: 0,
            illegal_commands: 0,
            events: 0,
            unknown_entries: 0,
        }
    }

    /// A PPR log of `2^len` entries (8 to 15) instead of 512.
    pub fn with_ppr_len(mut self, len: u64) -> AmdGuestDriver {
        self.ppr_len = len.clamp(LEN_MIN, LEN_MAX);
        self
    }

    /// The PPR log's guest-physical base.
    pub fn ppr_base(&self) -> u64 {
        self.ppr_base
    }

    /// The command buffer's guest-physical base (8 KiB, 512 entries).
    pub fn cmd_base(&self) -> u64 {
        self.cmd_base
    }

    /// The event log's guest-physical base (8 KiB, 512 entries).
    pub fn evt_base(&self) -> u64 {
        self.evt_base
    }

    /// Partial groups held.
    pub fn partial_groups(&self) -> usize {
        self.partial.len()
    }

    fn ppr_bytes(&self) -> u64 {
        ENTRY_BYTES << self.ppr_len
    }

    /// Sets the unit up, as Linux does at boot. `0xfee0_0000` / vector 0x41 is the message.
    pub fn init<C: FaultConsumer>(
        &mut self,
        amd: &mut AmdBridge<C>,
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        now: u64,
    ) -> Result<(), DriverError> {
        // A semaphore left by an earlier driver (before a reset) must not read as done.
        self.cmd_tail = 0;
        mem.write_guest(&self.sem_val.to_le_bytes(), GuestAddress(self.sem_addr))
            .map_err(|_| DriverError::Memory(self.sem_addr))?;
        let efr = read64(amd, EXT_FEATURES)?;
        let pasmax = (efr & FEATURE_PASMAX) >> FEATURE_PASMAX_SHIFT;
        self.max_pasids = if efr & FEATURE_GT != 0 {
            ((1u64 << (pasmax + 1)) - 1).min(u64::from(u32::MAX)) as u32
        } else {
            0
        };
        // iommu_enable_command_buffer() + amd_iommu_reset_cmd_buffer().
        write64(
            amd,
            CMD_BUF,
            self.cmd_base | (LEN_DEFAULT << LEN_SHIFT),
            mem,
            irq,
            now,
        )?;
        feature(amd, CONTROL_CMDBUF_EN, false, mem, irq, now)?;
        write32(amd, CMD_HEAD, 0, mem, irq, now)?;
        write32(amd, CMD_TAIL, 0, mem, irq, now)?;
        feature(amd, CONTROL_CMDBUF_EN, true, mem, irq, now)?;
        feature(amd, CONTROL_IOMMU_EN, true, mem, irq, now)?;
        // iommu_enable_event_buffer().
        write64(
            amd,
            EVT_BUF,
            self.evt_base | (LEN_DEFAULT << LEN_SHIFT),
            mem,
            irq,
            now,
        )?;
        write32(amd, EVT_HEAD, 0, mem, irq, now)?;
        write32(amd, EVT_TAIL, 0, mem, irq, now)?;
        feature(amd, CONTROL_EVT_LOG_EN, true, mem, irq, now)?;
        // The MSI capability (PCI configuration space), then iommu_init_irq().
        amd.set_msi(0xfee0_0000, 0x41, true);
        feature(amd, CONTROL_EVT_INT_EN, true, mem, irq, now)?;
        // amd_iommu_enable_ppr_log(), when amd_iommu_gt_ppr_supported().
        let gt_ppr = FEATURE_GT | FEATURE_PPR | FEATURE_EPHSUP;
        if efr & gt_ppr == gt_ppr {
            feature(amd, CONTROL_PPR_EN, true, mem, irq, now)?;
            write64(
                amd,
                PPR_LOG,
                self.ppr_base | (self.ppr_len << LEN_SHIFT),
                mem,
                irq,
                now,
            )?;
            write32(amd, PPR_HEAD, 0, mem, irq, now)?;
            write32(amd, PPR_TAIL, 0, mem, irq, now)?;
            feature(amd, CONTROL_PPRINT_EN, true, mem, irq, now)?;
            feature(amd, CONTROL_PPRLOG_EN, true, mem, irq, now)?;
        }
        Ok(())
    }

    /// Handles the IOMMU's interrupt (`amd_iommu_int_thread()`); see the module documentation.
    pub fn handle_event<C: FaultConsumer>(
        &mut self,
        amd: &mut AmdBridge<C>,
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        resolver: &mut dyn GuestResolver,
        now: u64,
    ) -> Result<Handled, DriverError> {
        let mut done = Handled::default();
        // The event log.
        let mask = STATUS_EVT_INT | STATUS_EVT_OVERFLOW;
        let mut status = read32(amd, STATUS)?;
        for _ in 0..STATUS_LOOPS {
            if status & mask == 0 {
                break;
            }
            write32(amd, STATUS, mask, mem, irq, now)?;
            self.poll_events(amd, mem, irq, now)?;
            if status & STATUS_EVT_OVERFLOW != 0 {
                self.restart_log(amd, mem, irq, now, LogKind::Event)?;
            }
            status = read32(amd, STATUS)?;
        }
        // The PPR log.
        let mask = STATUS_PPR_INT | STATUS_PPR_OVERFLOW;
        let mut status = read32(amd, STATUS)?;
        for _ in 0..STATUS_LOOPS {
            if status & mask == 0 {
                break;
            }
            write32(amd, STATUS, mask, mem, irq, now)?;
            self.poll_ppr_log(amd, mem, irq, resolver, now, &mut done)?;
            if status & STATUS_PPR_OVERFLOW != 0 {
                done.overflow_cleared |= self.restart_log(amd, mem, irq, now, LogKind::Ppr)?;
            }
            status = read32(amd, STATUS)?;
        }
        done.waits_done = self.submit(amd, mem, irq, now)?;
        Ok(done)
    }

    /// Submits unsent completions and a COMPLETION_WAIT; whether every wait has completed.
    pub fn submit<C: FaultConsumer>(
        &mut self,
        amd: &mut AmdBridge<C>,
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        now: u64,
    ) -> Result<bool, DriverError> {
        // The tail as the unit has it (another writer, a test, may have moved it).
        self.cmd_tail = (read64(amd, CMD_TAIL)? % BUF_BYTES) & !0xf;
        while !self.unsent.is_empty() {
            let head = (read64(amd, CMD_HEAD)? % BUF_BYTES) & !0xf;
            // __iommu_queue_command_sync(): keep more than 0x20 bytes free.
            let free = (head + BUF_BYTES - self.cmd_tail - ENTRY_BYTES) % BUF_BYTES / ENTRY_BYTES;
            if free < 3 {
                break;
            }
            let n = self.unsent.len().min(free as usize - 2);
            let batch: Vec<PprCompletion> = self.unsent.drain(..n).collect();
            for c in &batch {
                self.put(mem, &c.to_bytes())?;
            }
            self.sem_val = self.sem_val.wrapping_add(1);
            let wait = CompletionWait {
                store: true,
                address: self.sem_addr,
                data: self.sem_val,
                ..CompletionWait::default()
            };
            self.put(mem, &words_to_bytes(&wait.encode()))?;
            write32(amd, CMD_TAIL, self.cmd_tail as u32, mem, irq, now)?;
        }
        Ok(self.unsent.is_empty() && self.wait_done(mem)?)
    }

    /// Whether the last COMPLETION_WAIT has stored its value (`wait_on_sem()`).
    pub fn wait_done(&self, mem: &impl GuestRam) -> Result<bool, DriverError> {
        let mut b = [0u8; 8];
        mem.read_guest(&mut b, GuestAddress(self.sem_addr))
            .map_err(|_| DriverError::Memory(self.sem_addr))?;
        Ok(u64::from_le_bytes(b).wrapping_sub(self.sem_val) as i64 >= 0)
    }

    fn put(&mut self, mem: &impl GuestRam, b: &[u8; 16]) -> Result<(), DriverError> {
        let at = self.cmd_base + self.cmd_tail;
        mem.write_guest(b, GuestAddress(at))
            .map_err(|_| DriverError::Memory(at))?;
        self.cmd_tail = (self.cmd_tail + ENTRY_BYTES) % BUF_BYTES;
        Ok(())
    }

    /// `iommu_poll_events()`: each event read, counted and zeroed (erratum 732).
    fn poll_events<C: FaultConsumer>(
        &mut self,
        amd: &mut AmdBridge<C>,
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        now: u64,
    ) -> Result<(), DriverError> {
        let mut head = u64::from(read32(amd, EVT_HEAD)?) % BUF_BYTES;
        let tail = u64::from(read32(amd, EVT_TAIL)?) % BUF_BYTES;
        while head != tail {
            let at = self.evt_base + head;
            let mut b = [0u8; 16];
            mem.read_guest(&mut b, GuestAddress(at))
                .map_err(|_| DriverError::Memory(at))?;
            let e = Event::from_bytes(&b);
            self.events += 1;
            if e.code == ILLEGAL_COMMAND_ERROR {
                self.illegal_commands += 1;
            }
            mem.write_guest(&[0u8; 16], GuestAddress(at))
                .map_err(|_| DriverError::Memory(at))?;
            head = (head + ENTRY_BYTES) % BUF_BYTES;
            write32(amd, EVT_HEAD, head as u32, mem, irq, now)?;
        }
        Ok(())
    }

    /// `amd_iommu_poll_ppr_log()`.
    fn poll_ppr_log<C: FaultConsumer>(
        &mut self,
        amd: &mut AmdBridge<C>,
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        resolver: &mut dyn GuestResolver,
        now: u64,
        done: &mut Handled,
    ) -> Result<(), DriverError> {
        let size = self.ppr_bytes();
        let mut head = u64::from(read32(amd, PPR_HEAD)?) % size;
        let tail = u64::from(read32(amd, PPR_TAIL)?) % size;
        while head != tail {
            let at = self.ppr_base + head;
            let mut b = [0u8; 16];
            mem.read_guest(&mut b, GuestAddress(at))
                .map_err(|_| DriverError::Memory(at))?;
            mem.write_guest(&[0u8; 16], GuestAddress(at))
                .map_err(|_| DriverError::Memory(at))?;
            head = (head + ENTRY_BYTES) % size;
            write32(amd, PPR_HEAD, head as u32, mem, irq, now)?;
            done.descriptors += 1;
            self.take(&bytes_to_qwords(&b), resolver, done);
        }
        Ok(())
    }

    /// `iommu_call_iopf_notifier()`.
    fn take(&mut self, raw: &[u64; 2], resolver: &mut dyn GuestResolver, done: &mut Handled) {
        let e = PprEntry::fields(raw);
        if e.entry_type != PPR_REQ_FAULT {
            self.unknown_entries += 1;
            return;
        }
        let pasid = PprEntry::raw_pasid(raw[0]);
        // ppr_is_valid(), then the PASID check.
        let bad = e.pasid.is_none() || e.reserved_flag || pasid == 0 || pasid >= self.max_pasids;
        if bad {
            done.bad += 1;
            self.respond(e.devid, pasid, e.prg_index, ResponseCode::Failure, done);
            return;
        }
        let key = (e.devid, e.prg_index);
        let entry = PprEntry {
            addr: e.addr & !0xfff,
            ..e
        };
        self.partial.entry(key).or_default().push(entry);
        if !e.last {
            return;
        }
        let group = self.partial.remove(&key).unwrap_or_default();
        let code = resolve_group(
            resolver,
            group.iter().map(|r| (r.devid, r.pasid, r.addr, r.perm)),
        );
        self.respond(e.devid, pasid, e.prg_index, code, done);
    }

    /// `amd_iommu_complete_ppr()`.
    fn respond(
        &mut self,
        devid: u16,
        pasid: u32,
        tag: u16,
        code: ResponseCode,
        done: &mut Handled,
    ) {
        if self.misbehaviour.silent {
            return;
        }
        let raw = if code == ResponseCode::Failure && self.linux_failure_code {
            2
        } else {
            code_map::pcie_to_amd(code)
        };
        let c = PprCompletion::with_raw_status(devid, self.pri_tlp.then_some(pasid), tag, raw);
        self.unsent.push(c);
        if self.misbehaviour.answer_twice {
            self.unsent.push(c);
        }
        self.answered += 1;
        done.responses += 1;
    }

    /// `amd_iommu_restart_log()`; whether it restarted the log.
    fn restart_log<C: FaultConsumer>(
        &mut self,
        amd: &mut AmdBridge<C>,
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        now: u64,
        kind: LogKind,
    ) -> Result<bool, DriverError> {
        let (int_en, log_en, run, overflow) = match kind {
            LogKind::Event => (
                CONTROL_EVT_INT_EN,
                CONTROL_EVT_LOG_EN,
                STATUS_EVT_RUN,
                STATUS_EVT_OVERFLOW,
            ),
            LogKind::Ppr => (
                CONTROL_PPRINT_EN,
                CONTROL_PPRLOG_EN,
                STATUS_PPR_RUN,
                STATUS_PPR_OVERFLOW,
            ),
        };
        if read32(amd, STATUS)? & run != 0 {
            return Ok(false);
        }
        let mut c = read64(amd, CONTROL)?;
        c &= !ctl(log_en);
        write64(amd, CONTROL, c, mem, irq, now)?;
        c &= !ctl(int_en);
        write64(amd, CONTROL, c, mem, irq, now)?;
        write32(amd, STATUS, overflow, mem, irq, now)?;
        c |= ctl(int_en);
        write64(amd, CONTROL, c, mem, irq, now)?;
        c |= ctl(log_en);
        write64(amd, CONTROL, c, mem, irq, now)?;
        Ok(true)
    }
}

/// `iommu_feature_enable()` / `iommu_feature_disable()`: read-modify-write of `CONTROL`.
fn feature<C: FaultConsumer>(
    amd: &mut AmdBridge<C>,
    bit: u32,
    on: bool,
    mem: &impl GuestRam,
    irq: &mut dyn MsiSink,
    now: u64,
) -> Result<(), DriverError> {
    let c = read64(amd, CONTROL)?;
    let c = if on { c | ctl(bit) } else { c & !ctl(bit) };
    write64(amd, CONTROL, c, mem, irq, now)
}

#[derive(Debug, Clone, Copy)]
enum LogKind {
    Event,
    Ppr,
}

// Linux does not discard partial groups after a PPR log overflow: always 0.
super::model::delegate_driver_model!(AmdGuestDriver, AmdBridge, |_| 0);
