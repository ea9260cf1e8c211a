//! Helpers shared by the integration tests.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test
#![allow(dead_code)]

use iopf_abi::fault::PageRequestFlags;
use iopf_abi::features::RecordFormats;
use iopf_abi::{Features, PageRequest, Perm};
use iopf_core::PriCaps;
use iopf_queue::{
    channel, Consumer, Offer, Producer, ProducerConfig, QueueError, Request, TaggedGroup,
};

/// What a new consumer asks of the current producer: iommufd records answered by cookie, with
/// loss records, in a ring of `entries`.
pub fn cookie_request(entries: u32) -> Request {
    let mut r = Request::best_for(
        &Offer::current(),
        RecordFormats::HWPT_PGFAULT,
        Features::COOKIE_RESPONSE | Features::LOSS_RECORDS,
    )
    .unwrap();
    r.entries = entries;
    r
}

/// A page request of group `grpid`; `last` sets LAST_PAGE.
pub fn req(grpid: u32, pasid: Option<u32>, last: bool, addr: u64) -> PageRequest {
    let mut flags = PageRequestFlags::empty();
    flags.set(PageRequestFlags::LAST_PAGE, last);
    flags.set(PageRequestFlags::PASID_VALID, pasid.is_some());
    PageRequest {
        flags,
        pasid: pasid.unwrap_or(0),
        grpid,
        perm: Perm::READ | Perm::WRITE,
        addr,
        private_data: [0, 0],
    }
}

/// A one-request group's request with private data, as VT-d ≤ 3.x sends it, from a device that
/// needs the PASID in its response.
pub fn vtd_req(grpid: u32, pasid: u32, data: [u64; 2]) -> PageRequest {
    let mut r = req(
        grpid,
        Some(pasid),
        true,
        0x4000_0000 + u64::from(grpid) * 4096,
    );
    r.flags |= PageRequestFlags::PRIV_DATA | PageRequestFlags::RESPONSE_NEEDS_PASID;
    r.private_data = data;
    r
}

/// Both ends of a queue in this process, as [`cookie_request`] asks, default producer config.
pub fn cookie_queue(entries: u32) -> (Producer, Consumer) {
    channel(
        &Offer::current(),
        &cookie_request(entries),
        ProducerConfig::default(),
    )
    .unwrap()
}

/// Pushes the one-request group `g`: tag and grpid `g`, no PASID, LAST_PAGE.
pub fn push_one(p: &mut Producer, g: u32) -> Result<u32, QueueError> {
    p.push_group(&TaggedGroup {
        tag: u64::from(g),
        dev_id: 0,
        requests: &[req(g, None, true, 0)],
    })
}

/// A PF whose Outstanding Page Request Allocation is `opra`: the largest group it may send, so
/// a ring of at least `opra` entries may serve it (`CoreLink` refuses a smaller one when the
/// offer states no largest group).
pub fn caps(opra: u32) -> PriCaps {
    PriCaps {
        outstanding_allocation: opra,
        ..PriCaps::default()
    }
}

/// The header word with the fault ring's offset (low half) and the response ring's (high half),
/// in bytes (`layout::hdr::RING_OFFS`, pinned by the layout's own test).
pub const RING_OFFS: usize = 5;

/// Index, in `c.raw_region()`, of word `w` of fault ring slot `slot`.
pub fn slot_word(c: &Consumer, slot: usize, w: usize) -> usize {
    let base = c.raw_region()[RING_OFFS].load(std::sync::atomic::Ordering::Relaxed) & 0xffff_ffff;
    (base / 8) as usize + slot * 8 + w
}
