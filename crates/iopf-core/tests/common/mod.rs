//! Helpers shared by the integration tests.
#![allow(dead_code)]

use iopf_abi::{Fault, PageRequest, PageRequestFlags, Perm};
use iopf_core::testing::{BoundedHandler, RecordingSink};
use iopf_core::{AutoReason, DeviceCounters, FaultCore};

pub type Core = FaultCore<RecordingSink, BoundedHandler>;

/// A page request of group `grpid`, optionally with a PASID, LAST_PAGE when `last`.
pub fn req(pasid: Option<u32>, grpid: u32, last: bool, addr: u64) -> PageRequest {
    let mut flags = PageRequestFlags::empty();
    flags.set(PageRequestFlags::PASID_VALID, pasid.is_some());
    flags.set(PageRequestFlags::LAST_PAGE, last);
    PageRequest {
        flags,
        pasid: pasid.unwrap_or(0),
        grpid,
        perm: Perm::READ | Perm::WRITE,
        addr,
        private_data: [0; 2],
    }
}

/// The same with private data.
pub fn req_priv(pasid: Option<u32>, grpid: u32, data: [u64; 2]) -> PageRequest {
    let mut r = req(pasid, grpid, true, 0x4000);
    r.flags |= PageRequestFlags::PRIV_DATA;
    r.private_data = data;
    r
}

pub fn pr(r: PageRequest) -> Fault {
    Fault::PageRequest(r)
}

/// Checks the counter identities documented in `counters.rs`, given the device's outstanding
/// count.
pub fn check_identities(c: &DeviceCounters, outstanding: u64) {
    let at_report: u64 = AutoReason::ALL
        .iter()
        .filter(|r| r.at_report())
        .map(|r| c.auto(*r))
        .sum();
    let after: u64 = AutoReason::ALL
        .iter()
        .filter(|r| !r.at_report())
        .map(|r| c.auto(*r))
        .sum();
    assert_eq!(
        c.groups,
        c.delivered + at_report,
        "groups = delivered + answered at report: {c:?}"
    );
    assert_eq!(
        c.delivered,
        c.consumer_responses + after + outstanding,
        "delivered = consumer responses + automatic after delivery + outstanding: {c:?}"
    );
    assert_eq!(
        c.responses_total(),
        c.groups - outstanding,
        "one response per finished group: {c:?}"
    );
}
