//! The VT-d guest side end to end: host compatible queue → bridge → emulated page request
//! queue → guest driver model → invalidation queue → host. One test per VT-d behaviour; each
//! checks at the host that every group was answered exactly once. The behaviours every
//! architecture shares (a silent guest, answers twice, wrong names, Linux's FAILURE code, PRI
//! off, queue off or in missing memory, …) are in tests/misbehaving_guest.rs.

mod common;

use common::*;
use iopf_abi::{Perm, ResponseCode};
use iopf_core::RejectReason;
use iopf_viommu::guest::GuestPageTables;
use iopf_viommu::vtd::regs::*;
use iopf_viommu::vtd::{PageGroupResponse, VtdConfig, WaitDescriptor};
use iopf_viommu::{BridgeConfig, HostAnswer, PasidMap, PrivateDataMode};

fn answered(rig: &Rig, why: HostAnswer) -> u64 {
    rig.unit.bridge().stats().host_answers[why as usize]
}

#[test]
fn a_fault_reaches_the_guest_and_its_answer_reaches_the_host() {
    let mut rig = rig();
    rig.fault(3, 2);
    assert_eq!(rig.pump(), 1);
    // The page request event fired once (PPR went 0 → 1 on the first descriptor only).
    assert_eq!(rig.irq.messages, vec![(0xfee0_0000, 0x40)]);
    assert_eq!(rig.read32(PRS) & PRS_PPR, PRS_PPR);
    let mut tables = GuestPageTables {
        allowed: std::iter::once(0..0x1000_0000).collect(),
        ..Default::default()
    };
    let h = rig.guest_runs_with(&mut tables);
    assert_eq!((h.descriptors, h.responses, h.waits_done), (2, 1, true));
    assert_eq!(
        tables.mapped.len(),
        2,
        "both pages of the group were mapped"
    );
    let answers = rig.answers();
    assert_eq!(answers.len(), 1);
    assert_eq!(
        (answers[0].grpid, answers[0].code),
        (3, ResponseCode::Success)
    );
    assert_eq!(rig.unit.bridge().outstanding(), 0);
    assert_eq!(
        rig.read64(PQH),
        rig.read64(PQT),
        "the guest consumed the queue"
    );
}

#[test]
fn a_full_guest_queue_holds_groups_back_and_never_overflows() {
    // 4 KiB queue: 128 slots, 127 usable.
    let mut rig = rig();
    for g in 0..300 {
        rig.fault(g % 512, 1);
    }
    assert_eq!(rig.pump(), 127);
    assert_eq!(rig.unit.pri().prq().room(), 0);
    assert_eq!(rig.read32(PRS) & PRS_PRO, 0, "backpressure, not overflow");
    let mut total = 0;
    while total < 300 {
        let h = rig.guest_runs();
        total += h.responses;
        assert!(h.responses > 0);
        // PQH moved: the unit posted more at once.
    }
    let answers = rig.answers();
    assert_eq!(answers.len(), 300);
    assert!(answers.iter().all(|a| a.code == ResponseCode::Success));
    assert_eq!(rig.unit.pri().prq().stats().overflows, 0);
    assert_eq!(rig.unit.bridge().stats().answered(), 300);
}

#[test]
fn a_group_larger_than_the_queue_overflows_and_the_hardware_answers_it() {
    let mut rig = rig();
    rig.fault(9, 200);
    rig.fault(10, 1);
    rig.pump();
    // 127 requests fit; the 128th found the queue full: PRO, the rest dropped, the last
    // answered Success by the "hardware", so the device retries.
    assert_eq!(rig.read32(PRS) & PRS_PRO, PRS_PRO);
    assert_eq!(answered(&rig, HostAnswer::Overflow), 1);
    let answers = rig.answers();
    assert_eq!(
        (answers[0].grpid, answers[0].code),
        (9, ResponseCode::Success)
    );
    // The guest drains, finds PRO with an empty queue, discards the partial group, clears PRO.
    let h = rig.guest_runs();
    assert!(h.overflow_cleared);
    assert_eq!((h.responses, rig.guest.partial_groups()), (0, 0));
    assert_eq!(rig.guest.discarded_partials, 1);
    // The group behind it waited (never dropped) and now flows.
    rig.pump();
    rig.guest_runs();
    assert_eq!(rig.answers()[0].grpid, 10);
    assert_eq!(rig.unit.bridge().stats().answered(), 2);
}

#[test]
fn while_pro_is_set_every_request_is_dropped_even_with_room() {
    use iopf_viommu::{GuestPageRequest, GuestQueue, Posted};
    let mut rig = rig();
    let req = |g: u16, last: bool| GuestPageRequest {
        rid: RID,
        pasid: Some(PASID),
        prg_index: g,
        perm: Perm::READ,
        addr: 0x1000,
        last,
        private_data: None,
    };
    let mut q = rig.unit.pri_mut().guest_queue(&rig.mem, &mut rig.irq);
    for g in 0..127 {
        assert_eq!(q.post(&req(g, true)), Posted::Queued);
    }
    assert_eq!(q.post(&req(200, false)), Posted::Dropped);
    assert_eq!(
        q.post(&req(201, true)),
        Posted::AnsweredByHardware(ResponseCode::Success)
    );
    // Make room without clearing PRO: still dropped.
    let tail = rig.read64(PQT);
    rig.write64(PQH, tail);
    let mut q = rig.unit.pri_mut().guest_queue(&rig.mem, &mut rig.irq);
    assert_eq!(q.room(RID), 0);
    assert_eq!(
        q.post(&req(202, true)),
        Posted::AnsweredByHardware(ResponseCode::Success)
    );
    rig.write32(PRS, PRS_PRO);
    let mut q = rig.unit.pri_mut().guest_queue(&rig.mem, &mut rig.irq);
    assert_eq!(q.post(&req(203, true)), Posted::Queued);
    let stats = rig.unit.pri().prq().stats();
    assert_eq!(
        (stats.overflows, stats.dropped, stats.auto_success),
        (1, 3, 2)
    );
}

#[test]
fn the_page_request_event_respects_mask_and_pending() {
    let mut rig = rig();
    rig.write32(PECTL, iopf_viommu::interrupt::IM);
    rig.fault(1, 1);
    rig.pump();
    assert!(rig.irq.messages.is_empty());
    assert_eq!(
        rig.read32(PECTL),
        iopf_viommu::interrupt::IM | iopf_viommu::interrupt::IP
    );
    rig.write32(PECTL, 0);
    assert_eq!(
        rig.irq.messages.len(),
        1,
        "unmasking sends the pending message"
    );
    assert_eq!(rig.read32(PECTL), 0);
    // Clearing PPR while masked-and-pending drops the message.
    rig.guest_runs();
    rig.write32(PECTL, iopf_viommu::interrupt::IM);
    rig.fault(2, 1);
    rig.pump();
    rig.write32(PRS, PRS_PPR);
    rig.write32(PECTL, 0);
    assert_eq!(rig.irq.messages.len(), 1);
}

#[test]
fn a_silent_guest_without_age_limit_holds_its_groups_until_reset() {
    let mut rig = rig();
    rig.guest.misbehaviour.silent = true;
    rig.fault(7, 1);
    rig.fault(8, 3);
    rig.pump();
    rig.guest_runs();
    rig.now += 1 << 40;
    rig.pump();
    assert!(rig.answers().is_empty());
    rig.unit.reset();
    let answers = rig.answers();
    assert_eq!(answers.len(), 2);
    assert!(answers.iter().all(|a| a.code == ResponseCode::Invalid));
    assert_eq!(answered(&rig, HostAnswer::Reset), 2);
    assert_eq!(rig.read64(PQA), 0, "the unit is back in its reset state");
}

fn response(rid: u16, pasid: Option<u32>, prg: u16, code: ResponseCode) -> [u64; 4] {
    PageGroupResponse::new(rid, pasid, prg, code, None).encode(PrivateDataMode::None)
}

#[test]
fn answers_to_groups_never_sent_or_with_the_wrong_names_answer_nothing() {
    let mut rig = rig();
    rig.guest.misbehaviour.silent = true;
    rig.fault(6, 1);
    rig.pump();
    rig.guest_runs();
    rig.submit_raw(&[
        response(RID, Some(PASID), 7, ResponseCode::Success), // never sent
        response(RID, Some(PASID + 1), 6, ResponseCode::Success), // wrong PASID
        response(RID, None, 6, ResponseCode::Success),        // PASID missing
        response(RID + 1, Some(PASID), 6, ResponseCode::Success), // another requester
    ]);
    assert!(rig.answers().is_empty());
    let s = rig.unit.bridge().stats();
    assert_eq!(s.unmatched[RejectReason::UnknownGroup as usize], 1);
    assert_eq!(s.unmatched[RejectReason::PasidMismatch as usize], 2);
    assert_eq!(s.unmatched[0], 1, "unknown requester id");
    assert_eq!(rig.unit.bridge().outstanding(), 1);
    rig.submit_raw(&[response(RID, Some(PASID), 6, ResponseCode::Invalid)]);
    let answers = rig.answers();
    assert_eq!((answers.len(), answers[0].code), (1, ResponseCode::Invalid));
}

#[test]
fn a_guest_failure_reaches_the_host_as_invalid_whatever_code_carried_it() {
    let mut rig = rig();
    rig.guest.misbehaviour.silent = true;
    rig.fault(1, 1);
    rig.fault(2, 1);
    rig.pump();
    rig.guest_runs();
    let mut linux_failure = response(RID, Some(PASID), 2, ResponseCode::Success);
    linux_failure[0] |= 2 << 12; // Linux 6.12 writes its FAILURE (2) unchanged
    rig.submit_raw(&[
        response(RID, Some(PASID), 1, ResponseCode::Failure),
        linux_failure,
    ]);
    let answers = rig.answers();
    assert_eq!(answers.len(), 2);
    assert!(answers.iter().all(|a| a.code == ResponseCode::Invalid));
    assert_eq!(
        rig.unit.bridge().stats().guest_codes[ResponseCode::Failure as usize],
        2
    );
    assert_eq!(
        rig.unit.pri().invalidation_queue().stats().reserved_codes,
        1
    );
}

#[test]
fn rewriting_pqa_mid_flight_strands_nothing() {
    let mut rig = rig();
    rig.fault(1, 1);
    rig.pump();
    // The guest moves its queue without reading it: the request is in the old queue.
    rig.write64(PQA, 0x80000);
    rig.fault(2, 1);
    rig.pump();
    rig.guest.misbehaviour.silent = true;
    let h = rig.guest_runs();
    assert!(h.descriptors <= 2);
    assert_eq!(rig.unit.bridge().outstanding(), 2);
    rig.unit.reset();
    assert_eq!(rig.answers().len(), 2);
}

#[test]
fn garbage_in_the_invalidation_queue_is_an_invalidation_queue_error() {
    let mut rig = rig();
    rig.write32(FECTL + 4, 0x51);
    rig.write32(FECTL + 8, 0xfee0_1000);
    rig.write32(FECTL, 0);
    rig.guest.misbehaviour.silent = true;
    rig.fault(1, 1);
    rig.pump();
    rig.guest_runs();
    let msis = rig.irq.messages.len();
    let mut bad = response(RID, Some(PASID), 1, ResponseCode::Success);
    bad[1] |= 1 << 40; // a reserved bit
    let head = rig.read64(IQH);
    rig.submit_raw(&[bad, [0xff, 0, 0, 0]]);
    assert_eq!(rig.read32(FSTS) & FSTS_IQE, FSTS_IQE);
    assert_eq!(rig.read64(IQH), head, "stopped at the bad descriptor");
    assert_eq!(rig.read64(IQER) & 0xf, IqeReason::InvalidDescriptor as u64);
    assert_eq!(rig.irq.messages.len(), msis + 1);
    assert_eq!(rig.irq.messages.last(), Some(&(0xfee0_1000, 0x51)));
    assert!(rig.answers().is_empty());
    // Recovery as Linux's qi_check_fault(): overwrite the bad descriptor, clear IQE.
    use vm_memory::{Bytes, GuestAddress};
    let good = response(RID, Some(PASID), 1, ResponseCode::Success);
    rig.mem
        .write_slice(
            &iopf_viommu::vtd::page_request::to_bytes(&good),
            GuestAddress(IQ_BASE + head),
        )
        .expect("iq memory");
    rig.write32(FSTS, FSTS_IQE);
    // Fetching resumes at IQH, and stops again at the unknown type 0xff.
    assert_eq!(rig.answers().len(), 1);
    assert_eq!(rig.read32(FSTS) & FSTS_IQE, FSTS_IQE);
    assert_eq!(
        rig.unit
            .pri()
            .invalidation_queue()
            .error()
            .map(|e| e.reason),
        Some(IqeReason::InvalidDescriptor)
    );
}

#[test]
fn a_wait_descriptor_completes_only_once_the_host_has_the_answers() {
    let (producer, mut host) = HostDouble::new(HOST_DEV);
    host.room = Some(0);
    let mut rig = rig_with(
        (producer, host),
        BridgeConfig::new(vec![endpoint()]),
        VtdConfig::new(PrivateDataMode::None),
        0,
    );
    rig.fault(1, 1);
    rig.pump();
    let h = rig.guest_runs();
    assert_eq!(h.responses, 1);
    assert!(
        !h.waits_done,
        "the host's response ring is full: the wait waits"
    );
    assert_eq!(rig.unit.bridge().owed_answers(), 1);
    assert!(rig.answers().is_empty());
    rig.unit.bridge_mut().host_mut().room = Some(8);
    rig.pump();
    assert_eq!(rig.answers().len(), 1);
    assert!(rig.guest.wait_done(&rig.mem).expect("status"));
    assert!(rig.unit.bridge().stats().host_full >= 1);
}

#[test]
fn wait_descriptors_write_status_and_raise_the_completion_event() {
    let mut rig = rig();
    rig.write32(IECTL + 4, 0x61);
    rig.write32(IECTL + 8, 0xfee0_2000);
    rig.write32(IECTL, 0);
    let wait = WaitDescriptor {
        interrupt: true,
        status_write: true,
        status_data: 0xabcd,
        status_address: 0x3000,
        ..Default::default()
    };
    rig.submit_raw(&[wait.encode()]);
    use vm_memory::{Bytes, GuestAddress};
    let mut b = [0u8; 4];
    rig.mem
        .read_slice(&mut b, GuestAddress(0x3000))
        .expect("status");
    assert_eq!(u32::from_le_bytes(b), 0xabcd);
    assert_eq!(rig.read32(ICS) & ICS_IWC, ICS_IWC);
    assert_eq!(rig.irq.messages.last(), Some(&(0xfee0_2000, 0x61)));
    rig.write32(ICS, ICS_IWC);
    assert_eq!(rig.read32(ICS), 0);
}

#[test]
fn private_data_is_negotiated_both_ways() {
    // A 3.0 guest on a host path that carries private data: the descriptor has it, and the
    // guest's echo must match.
    let (producer, mut host) = HostDouble::new(HOST_DEV);
    host.carries = true;
    host.private.insert(4, [0x1111, 0x2222]);
    let host = (producer, host);
    let mut cfg = BridgeConfig::new(vec![endpoint()]);
    cfg.private_data = PrivateDataMode::Carried;
    let mut rig = rig_with(
        host,
        cfg.clone(),
        VtdConfig::new(PrivateDataMode::Carried),
        0,
    );
    assert_eq!(
        rig.unit.pri().config().private_data,
        PrivateDataMode::Carried
    );
    assert_eq!(rig.read32(VER), 0x30);
    assert!(rig
        .unit
        .bridge()
        .host_features_wanted()
        .contains(iopf_abi::Features::PRIV_DATA_ECHO));
    rig.guest.misbehaviour.silent = true;
    rig.fault(4, 1);
    rig.pump();
    use vm_memory::{Bytes, GuestAddress};
    let mut b = [0u8; 32];
    rig.mem
        .read_slice(&mut b, GuestAddress(PRQ_BASE))
        .expect("prq");
    let qw = iopf_viommu::vtd::page_request::from_bytes(&b);
    assert_eq!((qw[0] >> 9 & 1, qw[2], qw[3]), (1, 0x1111, 0x2222));
    let wrong = PageGroupResponse::new(RID, Some(PASID), 4, ResponseCode::Success, Some([1, 2]));
    rig.submit_raw(&[wrong.encode(PrivateDataMode::Carried)]);
    assert!(rig.answers().is_empty());
    assert_eq!(
        rig.unit.bridge().stats().unmatched[RejectReason::PrivDataMismatch as usize],
        1
    );
    let right = PageGroupResponse::new(
        RID,
        Some(PASID),
        4,
        ResponseCode::Success,
        Some([0x1111, 0x2222]),
    );
    rig.submit_raw(&[right.encode(PrivateDataMode::Carried)]);
    assert_eq!(rig.answers().len(), 1);

    // The same request to a host path that cannot carry it: the unit is 4.0, no private data.
    let (producer, mut host) = HostDouble::new(HOST_DEV);
    host.private.insert(4, [0x1111, 0x2222]);
    let host = (producer, host);
    let mut rig = rig_with(host, cfg, VtdConfig::new(PrivateDataMode::Carried), 0);
    assert_eq!(rig.unit.pri().config().private_data, PrivateDataMode::None);
    assert_eq!(rig.read32(VER), 0x40);
    rig.fault(4, 1);
    rig.pump();
    rig.mem
        .read_slice(&mut b, GuestAddress(PRQ_BASE))
        .expect("prq");
    let qw = iopf_viommu::vtd::page_request::from_bytes(&b);
    assert_eq!((qw[0] >> 9 & 1, qw[2], qw[3]), (0, 0, 0));
    // And a 4.0 guest that sets the old PDP bit writes an invalid descriptor.
    let pd = PageGroupResponse::new(
        RID,
        Some(PASID),
        4,
        ResponseCode::Success,
        Some([0x1111, 0x2222]),
    );
    rig.submit_raw(&[pd.encode(PrivateDataMode::Carried)]);
    assert_eq!(rig.read32(FSTS) & FSTS_IQE, FSTS_IQE);
}

#[test]
fn groups_of_any_size_are_read_whole() {
    // A 64 KiB queue (2047 slots) and a 1,500-request group: more than QEMU's 100-record buffer.
    let mut rig = rig_with(
        HostDouble::new(HOST_DEV),
        BridgeConfig::new(vec![endpoint()]),
        VtdConfig::new(PrivateDataMode::None),
        4,
    );
    rig.fault(11, 1500);
    assert_eq!(rig.pump(), 1);
    let h = rig.guest_runs();
    assert_eq!((h.descriptors, h.responses), (1500, 1));
    assert_eq!(rig.answers().len(), 1);
}

#[test]
fn a_bad_configuration_is_refused() {
    use iopf_viommu::{Bridge, ConfigError};
    let two = BridgeConfig::new(vec![endpoint(), endpoint()]);
    assert!(matches!(
        Bridge::new(HostDouble::new(1).1, two),
        Err(ConfigError::DuplicateHostDevice(1))
    ));
    let mut second = endpoint();
    second.host_dev_id = 2;
    let rid = BridgeConfig::new(vec![endpoint(), second]);
    assert!(matches!(
        Bridge::new(HostDouble::new(1).1, rid),
        Err(ConfigError::DuplicateRequesterId(RID))
    ));
    let mut mapped = endpoint();
    mapped.pasids = PasidMap::Pairs(vec![(1, 2), (3, 2)]);
    let map = BridgeConfig::new(vec![mapped]);
    assert!(matches!(
        Bridge::new(HostDouble::new(1).1, map),
        Err(ConfigError::BadPasidMap(HOST_DEV))
    ));
}

#[test]
fn mmio_accepts_32_and_64_bit_accesses_only() {
    use iopf_viommu::vtd::MmioError;
    let mut rig = rig();
    let mut b = [0u8; 2];
    assert_eq!(
        rig.unit.mmio_read(PQH, &mut b),
        Err(MmioError::BadAccess {
            offset: PQH,
            len: 2
        })
    );
    let mut b = [0u8; 8];
    assert_eq!(
        rig.unit.mmio_read(PRS, &mut b),
        Err(MmioError::BadAccess {
            offset: PRS,
            len: 8
        })
    );
    assert_eq!(
        rig.unit.mmio_read(0x1000, &mut [0u8; 4]),
        Err(MmioError::OutOfRange(0x1000))
    );
    // Two 32-bit halves are one 64-bit write.
    rig.write32(PQA, 0x0008_1001);
    rig.write32(PQA + 4, 0x1);
    assert_eq!(rig.read64(PQA), 0x1_0008_1001);
    assert_eq!(rig.read32(PQA + 4), 1);
    // Reserved bits read as zero.
    rig.write64(PQH, u64::MAX);
    assert_eq!(rig.read64(PQH), 0x7_ffe0);
    let ecap = rig.read64(ECAP);
    assert_eq!(ecap & ECAP_PRS, ECAP_PRS);
    assert_eq!(rig.read32(GSTS) & QIE, QIE);
}

#[test]
fn the_guest_model_answers_bad_requests_invalid_and_drops_stop_markers() {
    use iopf_abi::PageRequestFlags;
    let mut rig = rig();
    // No PASID: Linux's guest answers INVALID.
    let mut nopasid = request(1, true);
    nopasid.flags.remove(PageRequestFlags::PASID_VALID);
    rig.host.report(nopasid);
    // Privileged read.
    let mut privileged = request(2, true);
    privileged.perm = Perm::READ | Perm::PRIV;
    rig.host.report(privileged);
    rig.pump();
    let h = rig.guest_runs();
    assert_eq!((h.bad, h.responses), (2, 2));
    assert!(rig
        .answers()
        .iter()
        .all(|a| a.code == ResponseCode::Invalid));
    assert_eq!(rig.unit.pri().invalidation_queue().stats().waits, 1);
}

#[test]
fn groups_that_came_before_the_guest_set_its_queue_up_wait_for_it() {
    // Found by the kernel tier: Linux's set-up writes PQH and PQT before PQA, and the PQH write
    // must not pump groups into a queue that is still off (they were answered INVALID).
    let (producer, host) = HostDouble::new(HOST_DEV);
    let mem =
        vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(vm_memory::GuestAddress(0), 1 << 20)])
            .expect("guest memory");
    let mut vtd = iopf_viommu::vtd::VtdBridge::new(
        host,
        BridgeConfig::new(vec![endpoint()]),
        VtdConfig::new(PrivateDataMode::None),
    )
    .expect("bridge");
    producer.report(request(3, true));
    let mut irq = iopf_viommu::RecordedMsis::default();
    let mut guest = iopf_viommu::guest::VtdGuestDriver::new(PRQ_BASE, IQ_BASE);
    guest.init(&mut vtd, &mem, &mut irq, 0).expect("init");
    assert!(producer.take_answers().is_empty());
    assert_eq!(
        vtd.bridge().outstanding(),
        1,
        "posted once the queue was on"
    );
    guest
        .handle_event(
            &mut vtd,
            &mem,
            &mut irq,
            &mut iopf_viommu::guest::IdentityResolver,
            1,
        )
        .expect("guest");
    assert_eq!(producer.take_answers()[0].code, ResponseCode::Success);
}

// Found by the hostile review (each failed, looped or panicked before its fix).

#[test]
fn changing_the_descriptor_width_mid_flight_does_not_hang_the_vmm() {
    let mut rig = rig();
    // 128-bit descriptors: one wait leaves IQH at 0x10.
    rig.write32(GCMD, 0);
    rig.write64(IQA, IQ_BASE);
    rig.write64(IQT, 0);
    rig.write32(GCMD, QIE);
    rig.submit_raw_at(&[WaitDescriptor::default().encode()], 16);
    assert_eq!(rig.read64(IQH), 0x10);
    // The guest switches to 256-bit descriptors with the queue on, and moves the tail.
    rig.write64(IQA, IQ_BASE | IQA_DW | 1);
    rig.write64(IQT, 0x20);
    assert_eq!(
        rig.read64(IQH),
        0x20,
        "fetching restarted at the top and stopped at the tail"
    );
}

#[test]
fn a_pqa_written_in_two_halves_is_used_only_once_whole() {
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    let (producer, host) = HostDouble::new(HOST_DEV);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0), 1 << 20),
        (GuestAddress(1 << 32), 1 << 20),
    ])
    .expect("guest memory");
    let mut vtd = iopf_viommu::vtd::VtdBridge::new(
        host,
        BridgeConfig::new(vec![endpoint()]),
        VtdConfig::new(PrivateDataMode::None),
    )
    .expect("bridge");
    let mut irq = iopf_viommu::RecordedMsis::default();
    producer.report(request(3, true));
    // A 32-bit guest's lo_hi_writeq() of 0x1_0001_0000: the low half first.
    vtd.mmio_write(PQA, &0x0001_0000u32.to_le_bytes(), &mem, &mut irq, 0)
        .expect("lo");
    vtd.mmio_write(PQA + 4, &1u32.to_le_bytes(), &mem, &mut irq, 0)
        .expect("hi");
    let mut b = [0u8; 32];
    mem.read_slice(&mut b, GuestAddress(0x10000))
        .expect("low memory");
    assert_eq!(b, [0; 32], "nothing written at the half-written base");
    mem.read_slice(&mut b, GuestAddress((1 << 32) + 0x10000))
        .expect("high memory");
    assert_eq!(b[0], 1, "the descriptor is at the whole base");
}

#[test]
fn a_host_pasid_wider_than_20_bits_is_not_the_guests() {
    let mut rig = rig();
    let mut req = request(1, true);
    req.pasid = 1 << 20;
    rig.host.report(req);
    rig.pump();
    assert_eq!(rig.answers()[0].code, ResponseCode::Invalid);
    assert_eq!(answered(&rig, HostAnswer::PasidNotMapped), 1);
}

#[test]
fn the_guest_model_survives_a_misaligned_tail() {
    let mut rig = rig();
    rig.write64(IQT, 0x1ff0); // bit 4 with 256-bit descriptors: an IQE
    assert_eq!(rig.read32(FSTS) & FSTS_IQE, FSTS_IQE);
    rig.fault(1, 1);
    rig.pump();
    let h = rig.guest_runs();
    assert_eq!(h.responses, 1);
}
