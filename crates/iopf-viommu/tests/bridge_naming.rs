//! The bridge's per-function naming and routing, against a guest queue double with two
//! queues: what SMMUv3 needs (a stall's 16-bit tag, a response without PASID under
//! `STE.PPAR` = 0, `CMD_STALL_TERM`) checked at the host, architecture aside.

use iopf_abi::{
    FaultConsumer, IommufdResponse, PageRequest, PageRequestFlags, Perm, PgFault, PgfaultFlags,
    ResponseCode,
};
use iopf_core::RejectReason;
use iopf_iommufd::{compat_fault_queue, CompatFaultQueue, CompatProducer};
use iopf_viommu::{
    Bridge, BridgeConfig, Endpoint, GroupNaming, GuestPageRequest, GuestQueue, GuestResponse,
    HostAnswer, Posted, PrivateDataMode, Unmatched,
};

const PRI_RID: u16 = 0x08;
const STALL_RID: u16 = 0x10;

/// Two queues: PRI functions' and stalling functions', each with its own room.
struct TwoQueues {
    pri: Vec<GuestPageRequest>,
    stall: Vec<GuestPageRequest>,
    pri_room: usize,
    stall_room: usize,
    pri_naming: GroupNaming,
}

impl TwoQueues {
    fn new() -> TwoQueues {
        TwoQueues {
            pri: Vec::new(),
            stall: Vec::new(),
            pri_room: 64,
            stall_room: 64,
            pri_naming: GroupNaming::PRI,
        }
    }
}

impl GuestQueue for TwoQueues {
    fn enabled(&self, _rid: u16) -> bool {
        true
    }
    fn room(&self, rid: u16) -> usize {
        if rid == STALL_RID {
            self.stall_room - self.stall.len()
        } else {
            self.pri_room - self.pri.len()
        }
    }
    fn capacity(&self, rid: u16) -> usize {
        if rid == STALL_RID {
            self.stall_room
        } else {
            self.pri_room
        }
    }
    fn naming(&self, rid: u16) -> GroupNaming {
        if rid == STALL_RID {
            GroupNaming::STALL
        } else {
            self.pri_naming
        }
    }
    fn private_data_mode(&self) -> PrivateDataMode {
        PrivateDataMode::None
    }
    fn post(&mut self, req: &GuestPageRequest) -> Posted {
        if req.rid == STALL_RID {
            self.stall.push(*req);
        } else {
            self.pri.push(*req);
        }
        Posted::Queued
    }
    fn notify(&mut self) {}
}

fn request(grpid: u32, pasid: u32) -> PageRequest {
    PageRequest {
        flags: PageRequestFlags::LAST_PAGE | PageRequestFlags::PASID_VALID,
        pasid,
        grpid,
        perm: Perm::READ,
        addr: 0x1000,
        private_data: [0; 2],
    }
}

fn bridge(dev: u32, rid: u16) -> (CompatProducer, Bridge<CompatFaultQueue>) {
    let (device, host) = compat_fault_queue(dev).expect("queue");
    let ep = Endpoint::new(dev, rid);
    let b = Bridge::new(host, BridgeConfig::new(vec![ep])).expect("bridge");
    (device, b)
}

fn response(rid: u16, pasid: Option<u32>, tag: u16, code: ResponseCode) -> GuestResponse {
    GuestResponse {
        rid,
        pasid,
        prg_index: tag,
        code,
        private_data: None,
    }
}

#[test]
fn a_stall_keeps_its_16_bit_tag_and_is_answered_without_a_pasid() {
    let (device, mut b) = bridge(2, STALL_RID);
    let mut q = TwoQueues::new();
    device.report(request(0x1234, 5));
    b.pump(&mut q, 0).expect("pump");
    assert_eq!(q.stall[0].prg_index, 0x1234, "all 16 bits of the tag");
    // The tag's low 9 bits are another tag.
    assert!(b
        .guest_response(&response(STALL_RID, None, 0x34, ResponseCode::Success))
        .is_err());
    b.guest_response(&response(STALL_RID, None, 0x1234, ResponseCode::Success))
        .expect("CMD_RESUME names no SubstreamID");
    assert_eq!(device.take_answers()[0].code, ResponseCode::Success);
}

#[test]
fn without_ppar_a_response_need_not_name_the_pasid() {
    let (device, mut b) = bridge(1, PRI_RID);
    let mut q = TwoQueues::new();
    q.pri_naming = GroupNaming::PRI_NO_PASID_IN_RESPONSE;
    device.report(request(7, 5));
    b.pump(&mut q, 0).expect("pump");
    assert_eq!(q.pri[0].pasid, Some(5), "the request still carries it");
    b.guest_response(&response(PRI_RID, None, 7, ResponseCode::Success))
        .expect("matched by requester id and PRG index");
    assert_eq!(device.take_answers().len(), 1);

    // With PPAR the PASID must be named.
    let (device, mut b) = bridge(1, PRI_RID);
    let mut q = TwoQueues::new();
    device.report(request(7, 5));
    b.pump(&mut q, 0).expect("pump");
    assert!(matches!(
        b.guest_response(&response(PRI_RID, None, 7, ResponseCode::Success)),
        Err(Unmatched::Rejected(_))
    ));
    assert_eq!(b.stats().unmatched[RejectReason::PasidMismatch as usize], 1);
    assert!(device.take_answers().is_empty());
}

#[test]
fn terminating_a_function_answers_its_groups_invalid_as_the_guest() {
    let (device, mut b) = bridge(2, STALL_RID);
    let mut q = TwoQueues::new();
    for tag in [1, 2, 3] {
        device.report(request(tag, 5));
    }
    b.pump(&mut q, 0).expect("pump");
    assert_eq!(b.guest_terminate(STALL_RID), 3);
    let answers = device.take_answers();
    assert_eq!(answers.len(), 3);
    assert!(answers.iter().all(|a| a.code == ResponseCode::Invalid));
    let s = b.stats();
    assert_eq!(s.host_answers[HostAnswer::Guest as usize], 3);
    assert_eq!(s.guest_codes[ResponseCode::Invalid as usize], 3);
    assert_eq!(b.guest_terminate(STALL_RID), 0, "nothing left");
    assert_eq!(b.guest_terminate(0x7777), 0, "not an endpoint");
}

/// A host queue of two devices' one-request groups, answers kept.
#[derive(Default)]
struct TwoDevices {
    faults: std::collections::VecDeque<PgFault>,
    answers: Vec<IommufdResponse>,
}

impl TwoDevices {
    fn report(&mut self, dev_id: u32, grpid: u32) {
        self.faults.push_back(PgFault {
            flags: PgfaultFlags::LAST_PAGE | PgfaultFlags::PASID_VALID,
            dev_id,
            pasid: 5,
            grpid,
            perm: Perm::READ,
            addr: 0x1000,
            length: 0,
            cookie: 100 + grpid,
            reserved: 0,
        });
    }
}

impl FaultConsumer for TwoDevices {
    type Error = std::convert::Infallible;
    fn read_faults(&mut self, out: &mut [PgFault]) -> Result<usize, Self::Error> {
        let n = out.len().min(self.faults.len());
        for slot in &mut out[..n] {
            if let Some(f) = self.faults.pop_front() {
                *slot = f;
            }
        }
        Ok(n)
    }
    fn respond(&mut self, responses: &[IommufdResponse]) -> Result<usize, Self::Error> {
        self.answers.extend_from_slice(responses);
        Ok(responses.len())
    }
    fn wait_readable(&mut self, _: Option<std::time::Duration>) -> Result<bool, Self::Error> {
        Ok(!self.faults.is_empty())
    }
}

#[test]
fn room_is_the_queue_of_the_function_the_group_is_for() {
    let eps = vec![Endpoint::new(1, PRI_RID), Endpoint::new(2, STALL_RID)];
    let mut host = TwoDevices::default();
    host.report(2, 1);
    host.report(2, 2);
    host.report(1, 3);
    let mut b = Bridge::new(host, BridgeConfig::new(eps)).expect("bridge");
    let mut q = TwoQueues::new();
    q.stall_room = 1;
    b.pump(&mut q, 0).expect("pump");
    // The stall queue took one; the second stall waits for room, and the PRI group behind it
    // waits too: the host's order is kept.
    assert_eq!((q.stall.len(), q.pri.len()), (1, 0));
    assert_eq!(b.stats().host_answers[HostAnswer::Overflow as usize], 0);
    q.stall.clear();
    b.guest_response(&response(STALL_RID, None, 1, ResponseCode::Success))
        .expect("answer");
    b.pump(&mut q, 0).expect("pump");
    assert_eq!((q.stall.len(), q.pri.len()), (1, 1));
    assert_eq!(b.host().answers.len(), 1);
}
