//! The emulated SMMUv3's page request path, architecture-specific behaviour: the PRI queue
//! entry and its interrupt, `STE.PPAR`, overflow and its acknowledgement, backpressure,
//! `CMD_SYNC` waiting for the host, command errors and Linux's recovery, the stall model
//! (`CMD_RESUME`, `CMD_STALL_TERM`), queue enables, reset, MMIO access rules and a register
//! fuzz loop. The architecture-neutral suite runs in misbehaving_guest.rs.

mod common;

use common::arch::{Arch, Rig, GUEST_MEM, NO_MEMORY, PASID, RID};
use common::smmuv3::{skip_err, submit, sync, SmmuPri, SmmuStall, SMMU_BASE};
use common::{endpoint, HostDouble, HOST_DEV};
use iopf_abi::{Perm, ResponseCode};
use iopf_core::RejectReason;
use iopf_viommu::guest::{SmmuGuestDriver, SMMU_MSI_DOORBELL};
use iopf_viommu::smmuv3::queue::Q_OVF;
use iopf_viommu::smmuv3::regs::*;
use iopf_viommu::smmuv3::{Command, PriEntry, SmmuBridge, SmmuConfig, StallEvent};
use iopf_viommu::{BridgeConfig, HostAnswer, MmioError, RecordedMsis};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// A PRI rig whose driver is `driver` (queues laid out from [`SMMU_BASE`]).
fn pri_rig(driver: SmmuGuestDriver) -> Rig<SmmuPri> {
    let (producer, double) = HostDouble::new(HOST_DEV);
    build(producer, double, driver, SmmuConfig::default())
}

fn build(
    producer: iopf_iommufd::CompatProducer,
    double: HostDouble,
    mut driver: SmmuGuestDriver,
    smmu: SmmuConfig,
) -> Rig<SmmuPri> {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), GUEST_MEM as usize)])
        .expect("guest memory");
    let mut unit =
        SmmuBridge::new(double, BridgeConfig::new(vec![endpoint()]), smmu).expect("bridge");
    let mut irq = RecordedMsis::default();
    driver.init(&mut unit, &mem, &mut irq, 0).expect("init");
    Rig {
        host: producer,
        mem,
        unit,
        irq,
        guest: driver,
        now: 0,
    }
}

fn driver() -> SmmuGuestDriver {
    SmmuGuestDriver::new(SMMU_BASE).with_streams(&[RID])
}

fn entry_at(rig: &Rig<SmmuPri>, index: u64) -> PriEntry {
    let base = rig.unit.pri().priq().base_addr();
    let mut b = [0u8; 16];
    rig.mem
        .read_slice(&mut b, GuestAddress(base + 16 * index))
        .expect("priq memory");
    PriEntry::from_bytes(&b).expect("a PRI queue entry")
}

fn cons_err(rig: &Rig<impl Arch>) -> u32 {
    (rig.read32(CMDQ_CONS) >> CMDQ_CONS_ERR_SHIFT) & 0x7f
}

fn cmdq_error_active(rig: &Rig<impl Arch>) -> bool {
    (rig.read32(GERROR) ^ rig.read32(GERRORN)) & GERROR_CMDQ_ERR != 0
}

#[test]
fn a_fault_lands_in_the_pri_queue_with_its_interrupt_and_the_answer_reaches_the_host() {
    let mut rig = pri_rig(driver());
    rig.fault(0x1a3, 2);
    assert_eq!(rig.pump(), 1);
    let first = entry_at(&rig, 0);
    let last = entry_at(&rig, 1);
    assert_eq!(
        (first.sid, first.ssid, first.prg_index, first.last),
        (u32::from(RID), Some(PASID), 0x1a3, false)
    );
    assert!(last.last && last.perm.contains(Perm::READ));
    assert_eq!(rig.read32(PRIQ_PROD), 2);
    assert_eq!(
        rig.irq.messages,
        vec![(SMMU_MSI_DOORBELL, 2)],
        "one PRI queue MSI: the queue went from empty to non-empty"
    );
    let h = rig.guest_runs();
    assert_eq!((h.descriptors, h.responses, h.waits_done), (2, 1, true));
    let answers = rig.answers();
    assert_eq!(
        (answers.len(), answers[0].grpid, answers[0].code),
        (1, 0x1a3, ResponseCode::Success)
    );
    assert_eq!(rig.read32(PRIQ_CONS), 2);
}

#[test]
fn ppar_1_makes_the_response_name_the_pasid() {
    let mut rig = pri_rig(driver());
    rig.guest.misbehaviour.silent = true;
    rig.fault(4, 1);
    rig.pump();
    rig.guest_runs();
    SmmuPri::respond_raw(&mut rig, &[(RID, None, 4, 2)]);
    assert!(rig.answers().is_empty(), "without SSV the PASID is missing");
    assert_eq!(
        rig.stats().unmatched[RejectReason::PasidMismatch as usize],
        1
    );
    SmmuPri::respond_raw(&mut rig, &[(RID, Some(PASID), 4, 2)]);
    assert_eq!(rig.answers()[0].code, ResponseCode::Success);
}

#[test]
fn ppar_0_matches_a_response_without_pasid_and_ignores_its_ssid() {
    let mut rig = pri_rig(driver().with_ppar(false));
    rig.guest.misbehaviour.silent = true;
    rig.fault(4, 1);
    rig.fault(5, 1);
    rig.pump();
    rig.guest_runs();
    SmmuPri::respond_raw(&mut rig, &[(RID, None, 4, 2), (RID, Some(PASID + 9), 5, 0)]);
    let answers = rig.answers();
    assert_eq!(answers.len(), 2);
    assert_eq!(
        (answers[0].code, answers[1].code),
        (ResponseCode::Success, ResponseCode::Invalid)
    );
}

#[test]
fn a_missing_ste_reads_as_ppar_0() {
    // The driver's stream table does not cover RID + 0x100.
    let mut rig = pri_rig(driver());
    let naming = rig.unit.pri().naming(&rig.mem, RID + 0x100);
    assert_eq!(naming, iopf_viommu::GroupNaming::PRI_NO_PASID_IN_RESPONSE);
    assert_eq!(
        rig.unit.pri().naming(&rig.mem, RID),
        iopf_viommu::GroupNaming::PRI
    );
    rig.pump();
}

#[test]
fn a_group_larger_than_the_queue_overflows_is_answered_success_and_the_guest_acknowledges() {
    let mut rig = pri_rig(driver().with_priq_log2(2));
    rig.fault(7, 6);
    rig.pump();
    let s = rig.unit.pri().stats();
    assert_eq!((s.pri_written, s.pri_overflows, s.pri_dropped), (4, 1, 2));
    assert_eq!(rig.read32(PRIQ_PROD) & Q_OVF, Q_OVF, "OVFLG toggled");
    assert_eq!(rig.read32(PRIQ_CONS) & Q_OVF, 0, "not acknowledged yet");
    let answers = rig.answers();
    assert_eq!(
        (answers.len(), answers[0].code),
        (1, ResponseCode::Success),
        "the hardware answered the dropped last request"
    );
    assert_eq!(rig.answered(HostAnswer::Overflow), 1);
    // While the overflow is not acknowledged nothing is written, even with room.
    let h = rig.guest_runs();
    assert!(h.overflow_cleared);
    assert_eq!((h.descriptors, h.responses), (4, 0));
    assert_eq!(rig.guest.discarded_partials, 1);
    assert_eq!(rig.read32(PRIQ_CONS) & Q_OVF, Q_OVF, "OVACKFLG = OVFLG");
    rig.fault(8, 1);
    rig.pump();
    rig.guest_runs();
    assert_eq!(rig.answers()[0].code, ResponseCode::Success);
    assert_eq!(rig.unit.pri().stats().pri_overflows, 1);
}

#[test]
fn an_unacknowledged_overflow_inhibits_new_entries() {
    let mut rig = pri_rig(driver().with_priq_log2(2));
    rig.guest.misbehaviour.silent = true;
    rig.fault(7, 6);
    rig.pump();
    // Software consumes without acknowledging: the queue has room but takes nothing.
    let prod = rig.read32(PRIQ_PROD);
    rig.write32(PRIQ_CONS, prod & !Q_OVF);
    rig.fault(8, 1);
    rig.pump();
    assert_eq!(rig.unit.pri().stats().pri_written, 4);
    assert_eq!(
        rig.unit.bridge().staged_records(),
        1,
        "held back, not answered"
    );
    rig.write32(PRIQ_CONS, prod);
    assert_eq!(
        rig.unit.pri().stats().pri_written,
        5,
        "posted once acknowledged"
    );
}

#[test]
fn a_full_queue_holds_groups_back_and_never_overflows() {
    let mut rig = pri_rig(driver().with_priq_log2(2));
    for g in 0..10 {
        rig.fault(g, 1);
    }
    rig.pump();
    assert_eq!(rig.outstanding(), 4);
    let mut answered = 0;
    for _ in 0..4 {
        rig.guest_runs();
        rig.pump();
        answered += rig.answers().len();
    }
    assert_eq!(answered, 10);
    assert_eq!(rig.unit.pri().stats().pri_overflows, 0);
    assert_eq!(rig.read32(PRIQ_PROD) & Q_OVF, 0);
}

#[test]
fn cmd_sync_waits_for_a_full_host_response_ring() {
    let (producer, mut double) = HostDouble::new(HOST_DEV);
    double.room = Some(0);
    let mut rig = build(producer, double, driver(), SmmuConfig::default());
    rig.fault(1, 1);
    rig.pump();
    let h = rig.guest_runs();
    assert_eq!(h.responses, 1);
    assert!(!h.waits_done, "the sync waits for the host");
    let prod = rig.read32(CMDQ_PROD);
    let cons = rig.read32(CMDQ_CONS);
    assert_eq!(
        prod.wrapping_sub(cons) & 0x1ff,
        1,
        "CONS stops at the CMD_SYNC"
    );
    assert!(rig.unit.pri().stats().sync_stalls >= 1);
    rig.unit.bridge_mut().host_mut().room = Some(4);
    rig.pump();
    assert_eq!(rig.read32(CMDQ_CONS), prod, "resumed on the next pump");
    assert_eq!(rig.answers().len(), 1);
    assert!(rig.guest_runs().waits_done);
}

#[test]
fn an_illegal_command_stops_the_queue_until_linux_skips_it() {
    let mut rig = pri_rig(driver());
    rig.guest.misbehaviour.silent = true;
    rig.fault(1, 1);
    rig.pump();
    rig.guest_runs();
    let msis = rig.irq.messages.len();
    submit(
        &mut rig,
        &[
            Command::Other { opcode: 0x99 },
            Command::PriResp {
                sid: u32::from(RID),
                ssid: Some(PASID),
                grpid: 1,
                resp: 2,
            },
            sync(),
        ],
    );
    assert_eq!(cons_err(&rig), u32::from(CERROR_ILL));
    assert!(cmdq_error_active(&rig));
    assert_eq!(
        rig.irq.messages[msis..],
        [(SMMU_MSI_DOORBELL, 1)],
        "the GERROR MSI"
    );
    assert!(
        rig.answers().is_empty(),
        "the queue stopped at the bad command"
    );
    // More commands wait too.
    SmmuPri::respond_raw(&mut rig, &[(RID, Some(PASID), 1, 2)]);
    assert!(rig.answers().is_empty());
    skip_err(&mut rig);
    assert!(!cmdq_error_active(&rig));
    let answers = rig.answers();
    assert_eq!(
        answers.len(),
        1,
        "resumed: the response after the bad command"
    );
    assert_eq!(
        rig.stats().unmatched_total(),
        1,
        "the second response found nothing"
    );
}

#[test]
fn reserved_values_and_res0_bits_are_illegal_and_a_fetch_from_nowhere_aborts() {
    let bad = [
        Command::PriResp {
            sid: u32::from(RID),
            ssid: None,
            grpid: 1,
            resp: 3,
        }
        .encode(),
        [u64::from(0x44u8) | (1 << 10), 0], // CMD_RESUME with SSec
        [u64::from(0x46u8) | (3 << 12), 0], // CMD_SYNC, CS = 3
        [u64::from(0x41u8), 1 << 20],       // CMD_PRI_RESP, dw1 RES0
    ];
    for dw in bad {
        let mut rig = pri_rig(driver());
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&dw[0].to_le_bytes());
        b[8..].copy_from_slice(&dw[1].to_le_bytes());
        let base = rig.unit.pri().cmdq().base_addr();
        let prod = rig.read32(CMDQ_PROD);
        rig.mem
            .write_slice(&b, GuestAddress(base + 16 * u64::from(prod & 0xff)))
            .expect("cmdq memory");
        rig.write32(CMDQ_PROD, (prod + 1) & 0x1ff);
        assert_eq!(cons_err(&rig), u32::from(CERROR_ILL), "{dw:x?}");
        assert!(cmdq_error_active(&rig));
    }
    let mut rig = pri_rig(driver());
    let cr0 = rig.read32(CR0);
    rig.write32(CR0, cr0 & !CR0_CMDQEN);
    rig.write64(CMDQ_BASE, NO_MEMORY | 8);
    rig.write32(CMDQ_PROD, 0);
    rig.write32(CMDQ_CONS, 0);
    rig.write32(CR0, cr0);
    rig.write32(CMDQ_PROD, 1);
    assert_eq!(cons_err(&rig), u32::from(CERROR_ABT));
    assert!(cmdq_error_active(&rig));
}

fn stall_rig() -> Rig<SmmuStall> {
    Rig::<SmmuStall>::new(16)
}

#[test]
fn a_stall_is_an_event_record_and_resume_retry_answers_success() {
    let mut rig = stall_rig();
    rig.guest.misbehaviour.silent = true;
    rig.fault(0xbeef, 1);
    rig.pump();
    let mut b = [0u8; 32];
    rig.mem
        .read_slice(&mut b, GuestAddress(rig.unit.pri().evtq().base_addr()))
        .expect("evtq memory");
    let ev = StallEvent::from_bytes(&b).expect("a stall record");
    assert_eq!(
        (ev.id, ev.sid, ev.ssid, ev.stag, ev.perm),
        (0x10, u32::from(RID), Some(PASID), 0xbeef, Perm::READ)
    );
    assert_eq!(rig.irq.messages.last(), Some(&(SMMU_MSI_DOORBELL, 0)));
    rig.guest_runs();
    SmmuStall::respond_raw(&mut rig, &[(RID, None, 0xbeef, 1)]);
    assert_eq!(rig.answers()[0].code, ResponseCode::Success);
}

#[test]
fn resume_abort_answers_invalid_and_the_driver_resumes_through_io_pgfault() {
    let mut rig = stall_rig();
    rig.guest.misbehaviour.silent = true;
    rig.fault(3, 1);
    rig.pump();
    rig.guest_runs();
    SmmuStall::respond_raw(&mut rig, &[(RID, None, 3, 2)]);
    assert_eq!(rig.answers()[0].code, ResponseCode::Invalid);
    rig.guest.misbehaviour.silent = false;
    rig.fault(4, 1);
    rig.pump();
    let h = rig.guest_runs();
    assert_eq!((h.descriptors, h.responses, h.waits_done), (1, 1, true));
    assert_eq!(rig.answers()[0].code, ResponseCode::Success);
}

#[test]
fn cmd_stall_term_answers_every_stalled_group_of_the_stream() {
    let mut rig = stall_rig();
    rig.guest.misbehaviour.silent = true;
    for g in 0..3 {
        rig.fault(g, 1);
    }
    rig.pump();
    rig.guest_runs();
    submit(
        &mut rig,
        &[
            Command::StallTerm {
                sid: u32::from(RID),
            },
            sync(),
        ],
    );
    let answers = rig.answers();
    assert_eq!(answers.len(), 3);
    assert!(answers.iter().all(|a| a.code == ResponseCode::Invalid));
    assert_eq!(rig.outstanding(), 0);
}

#[test]
fn responses_of_the_wrong_kind_answer_nothing() {
    let mut rig = stall_rig();
    rig.guest.misbehaviour.silent = true;
    rig.fault(3, 1);
    rig.pump();
    rig.guest_runs();
    // A CMD_PRI_RESP for a stalling stream has no PRG to answer.
    pri_resp_to_the_stalling_stream(&mut rig);
    assert!(rig.answers().is_empty());
    assert_eq!(rig.unit.pri().stats().misrouted, 1);
}

/// A `CMD_PRI_RESP` for the stalling stream's stall tag 3.
fn pri_resp_to_the_stalling_stream(rig: &mut Rig<SmmuStall>) {
    let resp = Command::PriResp {
        sid: u32::from(RID),
        ssid: Some(PASID),
        grpid: 3,
        resp: 2,
    };
    submit(rig, &[resp, sync()]);
}

#[test]
fn priq_off_answers_queue_off_and_a_stall_needs_evtqen() {
    let mut rig = pri_rig(driver());
    SmmuPri::queue_off(&mut rig);
    rig.fault(1, 1);
    rig.pump();
    assert_eq!(rig.answered(HostAnswer::QueueOff), 1);
    let mut rig = stall_rig();
    let cr0 = rig.read32(CR0);
    rig.write32(CR0, cr0 & !CR0_SMMUEN);
    rig.fault(1, 1);
    rig.pump();
    assert_eq!(
        rig.answered(HostAnswer::QueueOff),
        1,
        "SMMUEN = 0 turns the queues off"
    );
}

#[test]
fn queue_memory_that_is_not_there_raises_priq_abt_err_until_acknowledged() {
    let mut rig = pri_rig(driver());
    SmmuPri::queue_in_missing_memory(&mut rig);
    rig.fault(1, 1);
    rig.pump();
    assert_eq!(rig.answered(HostAnswer::GuestMemory), 1);
    let active = rig.read32(GERROR) ^ rig.read32(GERRORN);
    assert_eq!(active & GERROR_PRIQ_ABT_ERR, GERROR_PRIQ_ABT_ERR);
    rig.fault(2, 1);
    rig.pump();
    assert_eq!(rig.answered(HostAnswer::QueueOff), 1);
}

#[test]
fn reset_clears_the_registers_and_answers_every_group() {
    let mut rig = pri_rig(driver());
    rig.guest.misbehaviour.silent = true;
    rig.fault(1, 1);
    rig.fault(2, 3);
    rig.pump();
    rig.guest_runs();
    rig.unit.reset();
    for off in [
        CR0, CR0ACK, IRQ_CTRL, PRIQ_PROD, PRIQ_CONS, CMDQ_PROD, GERROR,
    ] {
        assert_eq!(rig.read32(off), 0, "{off:#x}");
    }
    assert_eq!(rig.read64(PRIQ_BASE), 0);
    let answers = rig.answers();
    assert_eq!(answers.len(), 2);
    assert!(answers.iter().all(|a| a.code == ResponseCode::Invalid));
    assert_eq!(rig.answered(HostAnswer::Reset), 2);
    // And the driver sets it up again.
    let now = rig.now;
    rig.guest
        .init(&mut rig.unit, &rig.mem, &mut rig.irq, now)
        .expect("init");
    rig.guest.misbehaviour.silent = false;
    rig.fault(3, 1);
    rig.pump();
    rig.guest_runs();
    assert_eq!(rig.answers()[0].code, ResponseCode::Success);
}

#[test]
fn linux_6_12_denies_every_page_request() {
    let mut rig = pri_rig(driver().linux_6_12_deny_all());
    rig.fault(1, 3);
    rig.pump();
    let h = rig.guest_runs();
    assert_eq!((h.descriptors, h.responses), (3, 1));
    assert_eq!(rig.answers()[0].code, ResponseCode::Invalid);
}

#[test]
fn mmio_accesses_are_aligned_dwords_and_qwords_in_two_pages() {
    let rig = pri_rig(driver());
    let mut b2 = [0u8; 2];
    assert!(matches!(
        rig.unit.mmio_read(0x20, &mut b2),
        Err(MmioError::BadAccess { .. })
    ));
    let mut b8 = [0u8; 8];
    assert!(matches!(
        rig.unit.mmio_read(0x24, &mut b8),
        Err(MmioError::BadAccess { .. })
    ));
    let mut b4 = [0u8; 4];
    assert_eq!(
        rig.unit.mmio_read(END, &mut b4),
        Err(MmioError::OutOfRange(END))
    );
    assert_eq!(rig.read32(IDR0) & IDR0_PRI, IDR0_PRI);
    assert_eq!(rig.read32(IDR0) & (3 << 27), 0, "linear stream table only");
    let idr1 = rig.read32(IDR1);
    assert_eq!((idr1 & 0x3f, (idr1 >> 6) & 0x1f), (16, 20));
    // PROD/CONS live in page 1; page 0's offsets read zero.
    assert_eq!(rig.read32(0xc8), 0);
    assert_eq!(rig.read64(PRIQ_BASE) & 0x1f, 7);
    // A 64-bit access is two dwords, low first.
    assert_eq!(
        rig.read64(CR0),
        u64::from(rig.read32(CR0)) | (u64::from(rig.read32(CR0ACK)) << 32)
    );
}

#[test]
fn a_register_fuzz_loop_never_answers_twice_or_failure() {
    let mut rig = pri_rig(driver().with_priq_log2(3));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut reported = 0usize;
    let mut answers = Vec::new();
    let mut off = 0;
    while off < END {
        if off % 0x400 == 0 {
            rig.fault((reported % 512) as u32, 1 + (next() % 3) as usize);
            reported += 1;
            rig.pump();
            rig.guest_runs();
        }
        let v = next();
        rig.write32(off, v as u32);
        if off % 8 == 0 {
            rig.write64(off, next());
        }
        answers.extend(rig.answers());
        off += 4;
    }
    rig.unit.bridge_mut().host_mut().room = None;
    rig.pump();
    rig.unit.reset();
    answers.extend(rig.answers());
    let mut seen = std::collections::HashSet::new();
    assert!(
        answers.iter().all(|a| seen.insert(a.grpid)),
        "a group answered twice"
    );
    assert!(answers.iter().all(|a| a.code != ResponseCode::Failure));
    assert_eq!(rig.stats().host_refused, 0);
    let b = rig.unit.bridge();
    assert_eq!(
        (b.outstanding(), b.staged_records(), b.owed_answers()),
        (0, 0, 0)
    );
    // The rest, still in the host queue, reach a guest that sets the unit up again.
    let now = rig.now;
    rig.guest
        .init(&mut rig.unit, &rig.mem, &mut rig.irq, now)
        .expect("init");
    for _ in 0..8 {
        rig.pump();
        rig.guest_runs();
    }
    answers.extend(rig.answers());
    let mut seen = std::collections::HashSet::new();
    assert!(answers.iter().all(|a| seen.insert(a.grpid)), "none twice");
    assert_eq!(answers.len(), reported, "every group answered exactly once");
}

// Found by the review of issue 14 (each failed before its fix).

/// A correct `CMD_PRI_RESP` for a group posted under `PPAR` = 1 still answers it when the
/// guest has cleared `SMMUEN` since: the naming is decided when the group is posted.
#[test]
fn a_response_names_its_group_as_it_was_posted_even_with_smmuen_clear_since() {
    let mut rig = Rig::<SmmuPri>::new(64);
    rig.guest.misbehaviour.silent = true;
    rig.fault(9, 1);
    assert_eq!(rig.pump(), 1);
    rig.guest_runs();
    let cr0 = rig.read32(CR0);
    rig.write32(CR0, cr0 & !CR0_SMMUEN); // the command queue stays on
    submit(
        &mut rig,
        &[
            Command::PriResp {
                sid: u32::from(RID),
                ssid: Some(PASID),
                grpid: 9,
                resp: 2,
            },
            sync(),
        ],
    );
    let answers = rig.answers();
    assert_eq!((answers.len(), answers[0].code), (1, ResponseCode::Success));
}

/// A host group of two records for a stalling stream is one stalled transaction: one event
/// record, answered by one `CMD_RESUME`, never aborted for want of room.
#[test]
fn a_stalled_group_is_one_event_and_waits_for_room() {
    let mut rig = Rig::<SmmuStall>::new(1);
    assert_eq!(SmmuStall::queue_capacity(&rig), 1);
    rig.guest.misbehaviour.silent = true;
    rig.fault(5, 2);
    rig.fault(6, 1);
    rig.pump();
    assert!(rig.answers().is_empty(), "nothing aborted");
    assert_eq!(
        rig.outstanding(),
        1,
        "one event in a queue of one; the next waits"
    );
    rig.guest_runs(); // reads the event (CONS moves), answers nothing
    rig.pump();
    assert_eq!(
        rig.outstanding(),
        2,
        "the second posted once there was room"
    );
    SmmuStall::respond_raw(&mut rig, &[(RID, None, 5, 1), (RID, None, 6, 2)]);
    let mut a = rig.answers();
    a.sort_by_key(|a| a.grpid);
    assert_eq!(
        a.iter().map(|a| (a.grpid, a.code)).collect::<Vec<_>>(),
        vec![(5, ResponseCode::Success), (6, ResponseCode::Invalid)]
    );
    assert_eq!(rig.answered(HostAnswer::Overflow), 0);
}

/// Linux's MSI-poll `CMD_SYNC` points `MSIADDR` at the sync's own slot; a command queue at
/// guest-physical 0 puts it at address 0, which is written like any other RAM.
#[test]
fn a_cmd_sync_msi_poll_at_guest_physical_zero_is_written() {
    use iopf_viommu::smmuv3::SyncCs;
    let mut rig = Rig::<SmmuPri>::new(64);
    let cr0 = rig.read32(CR0);
    rig.write32(CR0, cr0 & !CR0_CMDQEN);
    rig.write64(CMDQ_BASE, 8); // base 0, 256 entries
    rig.write32(CMDQ_PROD, 0);
    rig.write32(CMDQ_CONS, 0);
    rig.write32(CR0, cr0);
    let sync = Command::Sync {
        cs: SyncCs::Irq,
        msh: 3,
        msi_attr: 0xf,
        msi_data: 0,
        msi_addr: 0,
    };
    rig.mem
        .write_slice(&sync.to_bytes(), GuestAddress(0))
        .expect("guest memory");
    rig.write32(CMDQ_PROD, 1);
    let mut w = [0u8; 4];
    rig.mem
        .read_slice(&mut w, GuestAddress(0))
        .expect("guest memory");
    assert_eq!(
        u32::from_le_bytes(w),
        0,
        "the sync's first word, as Linux polls it"
    );
}
