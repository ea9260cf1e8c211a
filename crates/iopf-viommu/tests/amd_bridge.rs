//! The emulated AMD IOMMU's page request path, end to end: host faults into the guest's PPR
//! log, the guest driver model's COMPLETE_PPR_REQUEST and COMPLETION_WAIT back to the host, and
//! the AMD-specific rules: GN and PASID matching, Linux's status 2, PPR log overflow and its
//! restart, illegal commands, register access and a register fuzz loop.

mod common;

use common::amd::{Amd, AMD_BASE};
use common::arch::{Arch, Rig, PASID, RID};
use common::{endpoint, HostDouble, HOST_DEV};
use iopf_abi::{Perm, ResponseCode};
use iopf_core::RejectReason;
use iopf_viommu::amd::command::CompletionWait;
use iopf_viommu::amd::event::ILLEGAL_COMMAND_ERROR;
use iopf_viommu::amd::ppr_entry::{bytes_to_qwords, PprEntry};
use iopf_viommu::amd::regs::*;
use iopf_viommu::amd::{AmdBridge, AmdConfig};
use iopf_viommu::{BridgeConfig, HostAnswer, MmioError};
use vm_memory::{Bytes, GuestAddress};

fn ppr_entry(rig: &Rig<Amd>, index: u64) -> PprEntry {
    let mut b = [0u8; 16];
    rig.mem
        .read_slice(&mut b, GuestAddress(rig.guest.ppr_base() + 16 * index))
        .expect("PPR log memory");
    PprEntry::decode(&bytes_to_qwords(&b)).expect("a well-formed entry")
}

#[test]
fn a_fault_is_logged_as_linux_reads_it_and_its_completion_reaches_the_host() {
    let mut rig = Rig::<Amd>::new(64);
    rig.fault(0x1a5, 2);
    assert_eq!(rig.pump(), 1);
    assert_eq!(
        rig.irq.messages,
        vec![(0xfee0_0000, 0x41)],
        "one MSI for the batch"
    );
    assert_eq!(rig.read64(PPR_TAIL), 32);
    let first = ppr_entry(&rig, 0);
    let last = ppr_entry(&rig, 1);
    assert_eq!(
        (first.devid, first.pasid, first.prg_index, first.last),
        (RID, Some(PASID), 0x1a5, false)
    );
    assert!(last.last && last.perm.contains(Perm::READ) && !last.perm.contains(Perm::PRIV));
    assert_ne!(rig.read32(STATUS) & STATUS_PPR_INT, 0);
    let h = rig.guest_runs();
    assert_eq!((h.descriptors, h.responses, h.waits_done), (2, 1, true));
    assert_eq!(
        rig.read32(STATUS) & STATUS_PPR_INT,
        0,
        "the driver cleared PPR_INT"
    );
    assert_eq!(rig.read64(PPR_HEAD), 32);
    let answers = rig.answers();
    assert_eq!(
        (answers.len(), answers[0].grpid, answers[0].code),
        (1, 0x1a5, ResponseCode::Success)
    );
    let cmd = rig.unit.pri().command_buffer().stats();
    assert_eq!((cmd.ppr_completions, cmd.waits), (1, 1));
}

#[test]
fn a_completion_names_the_pasid_only_with_gn() {
    let mut rig = Rig::<Amd>::new(64);
    rig.guest.misbehaviour.silent = true;
    rig.fault(4, 1);
    rig.pump();
    rig.guest_runs();
    let ok = Amd::raw_code(ResponseCode::Success);
    // No GN: the response names no PASID, and the group has one the response must name.
    Amd::respond_raw(
        &mut rig,
        &[(RID, None, 4, ok), (RID, Some(PASID + 1), 4, ok)],
    );
    assert!(rig.answers().is_empty());
    assert_eq!(
        rig.stats().unmatched[RejectReason::PasidMismatch as usize],
        2
    );
    Amd::respond_raw(&mut rig, &[(RID, Some(PASID), 4, ok)]);
    assert_eq!(rig.answers()[0].code, ResponseCode::Success);
}

#[test]
fn linux_status_2_is_a_failure_the_host_sees_as_invalid() {
    let mut rig = Rig::<Amd>::new(64);
    // Linux answers a request with PASID 0 FAILURE (2) itself (iommu_call_iopf_notifier()).
    let mut req = common::request(3, true);
    req.pasid = 0;
    rig.host.report(req);
    rig.pump();
    let h = rig.guest_runs();
    assert_eq!((h.bad, h.responses), (1, 1));
    let answers = rig.answers();
    assert_eq!((answers.len(), answers[0].code), (1, ResponseCode::Invalid));
    let s = rig.stats();
    assert_eq!(s.guest_codes[ResponseCode::Failure as usize], 1);
    assert_eq!(rig.unit.pri().command_buffer().stats().reserved_status, 1);
}

#[test]
fn an_overflowed_ppr_log_answers_success_and_linux_restarts_it() {
    let mut rig = Rig::<Amd>::new(255);
    let cap = Amd::queue_capacity(&rig);
    assert_eq!(cap, 255);
    // A group larger than the whole log goes into the empty log and overflows it.
    rig.fault(7, cap + 5);
    rig.pump();
    let status = rig.read32(STATUS);
    assert_ne!(status & STATUS_PPR_OVERFLOW, 0);
    assert_eq!(status & STATUS_PPR_RUN, 0, "the log stopped");
    let answers = rig.answers();
    assert_eq!((answers.len(), answers[0].code), (1, ResponseCode::Success));
    assert_eq!(rig.answered(HostAnswer::Overflow), 1);
    assert_eq!(rig.unit.pri().ppr_log().stats().overflows, 1);
    // While stopped nothing is posted: backpressure.
    rig.fault(8, 1);
    rig.pump();
    assert_eq!(rig.outstanding(), 0);
    assert!(rig.unit.bridge().staged_records() > 0);
    // Linux drains the log, then amd_iommu_restart_ppr_log(); the restarted log takes the
    // waiting group at once and the handler's loop answers it.
    let h = rig.guest_runs();
    assert!(h.overflow_cleared);
    assert_eq!(h.descriptors, cap + 1);
    assert_eq!(
        h.responses, 1,
        "group 8; the partial group 7 waits for its lost last request"
    );
    let status = rig.read32(STATUS);
    assert_eq!(status & STATUS_PPR_OVERFLOW, 0);
    assert_ne!(status & STATUS_PPR_RUN, 0, "restarted");
    let answers = rig.answers();
    assert_eq!(
        (answers.len(), answers[0].grpid, answers[0].code),
        (1, 8, ResponseCode::Success)
    );
}

#[test]
fn clearing_overflow_alone_does_not_restart_the_log() {
    let mut rig = Rig::<Amd>::new(255);
    rig.fault(1, 300);
    rig.pump();
    rig.write32(STATUS, STATUS_PPR_OVERFLOW);
    assert_eq!(
        rig.read32(STATUS) & (STATUS_PPR_OVERFLOW | STATUS_PPR_RUN),
        0
    );
    rig.write32(PPR_HEAD, rig.read32(PPR_TAIL));
    rig.fault(2, 1);
    rig.pump();
    assert_eq!(rig.outstanding(), 0, "not posted into a stopped log");
    let c = rig.read64(CONTROL);
    rig.write64(CONTROL, c & !ctl(CONTROL_PPRLOG_EN));
    rig.write64(CONTROL, c);
    rig.pump();
    assert_eq!(rig.outstanding(), 1);
}

#[test]
fn a_full_log_holds_groups_back() {
    let mut rig = Rig::<Amd>::new(255);
    for g in 0..300 {
        rig.fault(g % 512, 1);
    }
    rig.pump();
    assert_eq!(rig.outstanding(), 255);
    assert_eq!(rig.read32(STATUS) & STATUS_PPR_OVERFLOW, 0);
    assert!(rig.unit.bridge().staged_records() > 0);
    let mut n = 0;
    for _ in 0..4 {
        rig.guest_runs();
        rig.pump();
        n += rig.answers().len();
    }
    assert_eq!(n, 300);
    assert_eq!(rig.answered(HostAnswer::Overflow), 0);
}

#[test]
fn completion_wait_holds_the_command_buffer_until_the_host_has_room() {
    let (producer, mut host) = HostDouble::new(HOST_DEV);
    host.room = Some(0);
    let mut rig = Rig::<Amd>::with_host(producer, host, BridgeConfig::new(vec![endpoint()]), 64);
    rig.fault(1, 1);
    rig.pump();
    let h = rig.guest_runs();
    assert!(!h.waits_done);
    let head = rig.read64(CMD_HEAD);
    assert_eq!(
        head, 16,
        "stopped at the COMPLETION_WAIT after the completion"
    );
    assert_eq!(rig.read64(CMD_TAIL), 32);
    assert_eq!(rig.unit.pri().command_buffer().stats().wait_stalls, 1);
    rig.pump();
    assert_eq!(rig.read64(CMD_HEAD), 16, "still waiting");
    rig.unit.bridge_mut().host_mut().room = Some(4);
    rig.pump();
    assert_eq!(rig.read64(CMD_HEAD), 32);
    assert_eq!(rig.answers().len(), 1);
    assert!(rig.guest.wait_done(&rig.mem).expect("semaphore"));
}

#[test]
fn completion_wait_interrupt_sets_comwait_int_and_signals_only_with_comwait_en() {
    let mut rig = Rig::<Amd>::new(64);
    let wait = CompletionWait {
        interrupt: true,
        ..CompletionWait::default()
    };
    let before = rig.irq.messages.len();
    Amd::submit(&mut rig, &[wait.encode()]);
    assert_ne!(rig.read32(STATUS) & STATUS_COMWAIT_INT, 0);
    assert_eq!(
        rig.irq.messages.len(),
        before,
        "COMWAIT_EN is off (Linux polls)"
    );
    rig.write32(STATUS, STATUS_COMWAIT_INT);
    let c = rig.read64(CONTROL);
    rig.write64(CONTROL, c | ctl(CONTROL_COMWAIT_EN));
    Amd::submit(&mut rig, &[wait.encode()]);
    assert_eq!(rig.irq.messages.len(), before + 1);
}

#[test]
fn an_illegal_command_is_logged_stops_the_buffer_and_a_restart_resumes_it() {
    let mut rig = Rig::<Amd>::new(64);
    rig.guest.misbehaviour.silent = true;
    rig.fault(1, 1);
    rig.pump();
    rig.guest_runs();
    let at = rig.read64(CMD_TAIL);
    let mut bad =
        iopf_viommu::amd::PprCompletion::new(RID, Some(PASID), 1, ResponseCode::Success).encode();
    bad[0] |= 1 << 16; // a reserved bit
    let msis = rig.irq.messages.len();
    Amd::submit(&mut rig, &[bad]);
    assert_eq!(rig.read32(STATUS) & STATUS_CMDBUF_RUN, 0);
    assert_eq!(
        rig.read64(CMD_HEAD),
        at,
        "the head stays at the illegal command"
    );
    let events = Amd::events(&rig);
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].code, events[0].address),
        (ILLEGAL_COMMAND_ERROR, AMD_BASE + at)
    );
    assert_eq!(
        rig.irq.messages.len(),
        msis + 1,
        "EVT_INT_EN: the event interrupts"
    );
    assert!(
        rig.answers().is_empty(),
        "nothing the illegal command asked was done"
    );
    // Commands behind it wait.
    Amd::respond_raw(&mut rig, &[(RID, Some(PASID), 1, 0)]);
    assert!(rig.answers().is_empty());
    // The driver's handler reads the event.
    rig.guest_runs();
    assert_eq!(rig.guest.illegal_commands, 1);
    Amd::recover(&mut rig);
    assert_ne!(rig.read32(STATUS) & STATUS_CMDBUF_RUN, 0);
    Amd::respond_raw(&mut rig, &[(RID, Some(PASID), 1, 0)]);
    assert_eq!(rig.answers().len(), 1);
}

#[test]
fn an_unknown_opcode_is_illegal_and_invalidations_are_accepted() {
    let mut rig = Rig::<Amd>::new(64);
    Amd::submit(
        &mut rig,
        &[[0, 3 << 28, 0, 0], [0, 8 << 28, 0, 0], [0, 2 << 28, 0, 0]],
    );
    assert_eq!(rig.unit.pri().command_buffer().stats().other, 3);
    assert!(Amd::write_garbage(&mut rig));
}

#[test]
fn pprlog_off_answers_queue_off_and_ppr_en_is_needed_too() {
    let mut rig = Rig::<Amd>::new(64);
    let c = rig.read64(CONTROL);
    rig.write64(CONTROL, c & !ctl(CONTROL_PPR_EN));
    rig.fault(1, 1);
    rig.pump();
    assert_eq!(rig.answered(HostAnswer::QueueOff), 1);
    rig.write64(CONTROL, c & !ctl(CONTROL_PPRLOG_EN));
    rig.fault(2, 1);
    rig.pump();
    assert_eq!(rig.answered(HostAnswer::QueueOff), 2);
    assert!(rig
        .answers()
        .iter()
        .all(|a| a.code == ResponseCode::Invalid));
}

#[test]
fn reset_answers_held_groups_and_clears_the_registers() {
    let mut rig = Rig::<Amd>::new(64);
    rig.guest.misbehaviour.silent = true;
    rig.fault(1, 1);
    rig.pump();
    rig.guest_runs();
    rig.unit.reset();
    assert_eq!(rig.answered(HostAnswer::Reset), 1);
    for off in [CONTROL, PPR_LOG, PPR_HEAD, PPR_TAIL, CMD_BUF, STATUS] {
        assert_eq!(rig.read64(off), 0, "{off:#x}");
    }
    assert_eq!(rig.read64(EXT_FEATURES), EFR_PAGE_REQUESTS);
    // The driver sets it up again and faults flow.
    rig.guest
        .init(&mut rig.unit, &rig.mem, &mut rig.irq, 0)
        .expect("init");
    rig.guest.misbehaviour.silent = false;
    rig.fault(2, 1);
    rig.pump();
    rig.guest_runs();
    assert_eq!(rig.answers().len(), 2);
}

#[test]
fn registers_take_aligned_dwords_and_qwords_only() {
    let (_, host) = HostDouble::new(HOST_DEV);
    let amd = AmdBridge::new(
        host,
        BridgeConfig::new(vec![endpoint()]),
        AmdConfig::default(),
    )
    .expect("bridge");
    let mut b2 = [0u8; 2];
    assert_eq!(
        amd.mmio_read(0x18, &mut b2),
        Err(MmioError::BadAccess {
            offset: 0x18,
            len: 2
        })
    );
    let mut b8 = [0u8; 8];
    assert!(amd.mmio_read(0x1c, &mut b8).is_err());
    assert_eq!(
        amd.mmio_read(END, &mut [0u8; 4]),
        Err(MmioError::OutOfRange(END))
    );
    let mut b4 = [0u8; 4];
    amd.mmio_read(EXT_FEATURES + 4, &mut b4)
        .expect("upper half");
    assert_eq!(u64::from(u32::from_le_bytes(b4)), EFR_PAGE_REQUESTS >> 32);
    let mut rig = Rig::<Amd>::new(64);
    // A 32-bit guest writes a 64-bit register low half first.
    rig.write32(EXCL_BASE, 0x1234_5000);
    rig.write32(EXCL_BASE + 4, 0xab);
    assert_eq!(rig.read64(EXCL_BASE), 0xab_1234_5000);
    // EXT_FEATURES is read only; reserved bits of a base register read as zero.
    rig.write64(EXT_FEATURES, 0);
    assert_eq!(rig.read64(EXT_FEATURES), EFR_PAGE_REQUESTS);
    rig.write64(EVT_BUF, u64::MAX);
    assert_eq!(rig.read64(EVT_BUF), 0x0f0f_ffff_ffff_f000);
    // STATUS: RUN bits read only.
    let s = rig.read32(STATUS);
    rig.write32(STATUS, 0xffff_ffff);
    assert_eq!(
        rig.read32(STATUS) & s & (STATUS_PPR_RUN | STATUS_CMDBUF_RUN | STATUS_EVT_RUN),
        s & 0x98
    );
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn register_fuzz_never_answers_twice_or_failure_and_reset_answers_the_rest() {
    for seed in 1..=8u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut rig = Rig::<Amd>::new(255);
        let mut reported = 0usize;
        let mut answers = Vec::new();
        for step in 0..600 {
            match rng.next() % 8 {
                0..=2 => {
                    let off = (rng.next() % (END / 4)) * 4;
                    let v = rng.next();
                    // Mostly the registers that matter; sometimes anything in the window.
                    let off = if rng.next() % 2 == 0 {
                        [
                            CONTROL, STATUS, PPR_HEAD, PPR_TAIL, PPR_LOG, CMD_TAIL, CMD_HEAD,
                            CMD_BUF,
                        ][(rng.next() % 8) as usize]
                    } else {
                        off
                    };
                    let data = v.to_le_bytes();
                    let len = if off % 8 == 0 && rng.next() % 2 == 0 {
                        8
                    } else {
                        4
                    };
                    rig.now += 1;
                    rig.unit
                        .mmio_write(off, &data[..len], &rig.mem, &mut rig.irq, rig.now)
                        .expect("aligned access inside the window");
                }
                3 | 4 => {
                    rig.fault((step % 512) as u32, 1 + (rng.next() % 3) as usize);
                    reported += 1;
                }
                5 => {
                    let raw = (rng.next() % 16) as u8;
                    let tag = (rng.next() % 512) as u16;
                    Amd::respond_raw(&mut rig, &[(RID, Some(PASID), tag, raw)]);
                }
                6 => {
                    rig.now += 1;
                    let _ = rig.guest.handle_event(
                        &mut rig.unit,
                        &rig.mem,
                        &mut rig.irq,
                        &mut iopf_viommu::guest::IdentityResolver,
                        rig.now,
                    );
                }
                _ => {
                    rig.pump();
                }
            }
            answers.extend(rig.answers());
        }
        rig.unit.reset();
        rig.pump();
        answers.extend(rig.answers());
        assert!(
            answers.iter().all(|a| a.code != ResponseCode::Failure),
            "seed {seed}"
        );
        assert_eq!(
            rig.stats().host_refused,
            0,
            "seed {seed}: an answer sent twice"
        );
        assert_eq!(
            answers.len(),
            reported,
            "seed {seed}: every group answered exactly once"
        );
    }
}

/// Found by the review of issue 14: Linux's AMD driver sets GN from the function's "PRG
/// Response PASID Required" (`pri_tlp`), not from the request. A function with it clear gets
/// its answers without GN for requests that carry a PASID, and they must match.
#[test]
fn a_function_without_prg_response_pasid_required_is_answered_without_gn() {
    let mut ep = common::endpoint();
    ep.prg_response_pasid_required = false;
    let mut rig = Rig::<Amd>::with(iopf_viommu::BridgeConfig::new(vec![ep]), 64);
    assert!(!rig.guest.pri_tlp, "the guest sees the function's bit");
    rig.fault(4, 1);
    assert_eq!(rig.pump(), 1);
    let h = rig.guest_runs();
    assert_eq!((h.responses, h.waits_done), (1, true));
    assert_eq!(rig.answers().len(), 1);
    assert_eq!(rig.outstanding(), 0);
}
