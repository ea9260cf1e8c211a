//! Property tests of the platform's hardware rules: the page request queue's overflow
//! behaviour, the PRG index allocator, and a PRI function under arbitrary responses.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use iopf_abi::{PageRequest, PageRequestFlags, Perm, ResponseCode};
use iopf_sim::device::{DeviceConfig, PriDevice};
use iopf_sim::iommu::{FaultSink, Iommu};
use iopf_sim::prg::PrgIndexAllocator;
use iopf_sim::prq::{Enqueue, PageRequestQueue, QueuedRequest};
use iopf_sim::workload::{AccessMix, Pattern, WorkloadSpec};
use iopf_sim::{Ledger, PageTables, PrgResponse};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum PrqOp {
    Push { last: bool, marker: bool },
    Pop,
    Clear,
}

fn prq_op() -> impl Strategy<Value = PrqOp> {
    prop_oneof![
        3 => (any::<bool>(), any::<bool>()).prop_map(|(last, marker)| PrqOp::Push { last, marker }),
        2 => Just(PrqOp::Pop),
        1 => Just(PrqOp::Clear),
    ]
}

fn request(last: bool, marker: bool) -> QueuedRequest {
    let mut flags = PageRequestFlags::PASID_VALID;
    if last || marker {
        flags |= PageRequestFlags::LAST_PAGE;
    }
    QueuedRequest {
        dev: 1,
        req: PageRequest {
            flags,
            pasid: 1,
            grpid: 0,
            perm: if marker { Perm::empty() } else { Perm::READ },
            addr: 0,
            private_data: [0; 2],
        },
        sent_ns: 0,
    }
}

proptest! {
    #[test]
    fn prq_overflow_rules(depth in 1usize..8, ops in proptest::collection::vec(prq_op(), 0..200)) {
        let mut q = PageRequestQueue::new(depth);
        let (mut pushes, mut auto) = (0u64, 0u64);
        for op in ops {
            match op {
                PrqOp::Push { last, marker } => {
                    let was_over = q.overflowed();
                    let was_full = q.len() == depth;
                    let r = q.push(request(last, marker));
                    pushes += 1;
                    if was_over || was_full {
                        prop_assert!(r != Enqueue::Queued, "queued while overflowed or full");
                        prop_assert!(q.overflowed());
                        // A LAST_PAGE request that is not a stop marker is owed a response.
                        let owed = last && !marker;
                        prop_assert_eq!(r == Enqueue::DroppedAutoSuccess, owed);
                        auto += u64::from(owed);
                    } else {
                        prop_assert_eq!(r, Enqueue::Queued);
                    }
                }
                PrqOp::Pop => { q.pop(); }
                PrqOp::Clear => {
                    let (over, empty) = (q.overflowed(), q.is_empty());
                    prop_assert_eq!(q.clear_overflow_if_empty(), over && empty);
                    prop_assert_eq!(q.overflowed(), over && !empty);
                }
            }
            prop_assert!(q.len() <= depth);
        }
        let s = q.stats();
        prop_assert_eq!(s.queued + s.dropped, pushes);
        prop_assert_eq!(s.auto_success, auto);
        prop_assert!(s.high_water <= depth);
    }

    #[test]
    fn prg_indexes_unique_and_bounded(limit in 1usize..600, ops in proptest::collection::vec(any::<(bool, u16)>(), 0..2000)) {
        let mut a = PrgIndexAllocator::new(limit);
        let mut held = std::collections::BTreeSet::new();
        for (alloc, pick) in ops {
            if alloc {
                match a.alloc() {
                    Some(i) => {
                        prop_assert!(i < 512);
                        prop_assert!(held.insert(i), "index {} handed out twice", i);
                    }
                    None => prop_assert_eq!(held.len(), limit.min(512)),
                }
            } else {
                let i = pick % 520;
                prop_assert_eq!(a.free(i).is_ok(), held.remove(&i));
            }
            prop_assert_eq!(a.in_flight(), held.len());
            prop_assert!(held.len() <= limit.min(512));
        }
    }

    /// A function answered arbitrarily (each reported group exactly once, in any order, with any
    /// code) never exceeds its allocation or its PRG indexes, sends nothing after FAILURE, and
    /// the ledger finds every group answered exactly once. (The queue holds at least a whole
    /// group: a group larger than the page request queue can never be queued whole.)
    #[test]
    fn pri_function_under_arbitrary_responses(
        opra in 1u32..64,
        group_pages in 1u32..8,
        max_groups in 1usize..40,
        prq_depth in 8usize..64,
        script in proptest::collection::vec((0u8..4, any::<u16>(), any::<bool>()), 1..300),
    ) {
        let group_pages = group_pages.min(opra);
        let tables = Arc::new(PageTables::new());
        let mut iommu = Iommu::new(tables.clone(), prq_depth);
        let mut ledger = Ledger::new();
        let mut d = PriDevice::new(DeviceConfig {
            id: 1,
            opra,
            max_groups,
            response_needs_pasid: true,
            items_per_step: 4,
            items_per_s: None,
            streams: vec![(1, WorkloadSpec {
                pattern: Pattern::Random,
                base: 0,
                region_pages: 64,
                group_pages,
                stride_pages: 1,
                access: AccessMix::default(),
            })],
            seed: 3,
        });
        #[derive(Default)]
        struct Groups(Vec<(u32, u32, Vec<u64>)>, Vec<(u32, Vec<u64>)>);
        impl FaultSink for Groups {
            fn report(&mut self, q: &QueuedRequest) {
                let slot = self.1.iter().position(|(g, _)| *g == q.req.grpid);
                let mut pages = match slot {
                    Some(i) => self.1.swap_remove(i).1,
                    None => Vec::new(),
                };
                pages.push(q.req.addr);
                if q.req.is_last() {
                    self.0.push((q.req.grpid, q.req.pasid, pages));
                } else {
                    self.1.push((q.req.grpid, pages));
                }
            }
            fn discard_partial(&mut self) {
                self.1.clear();
            }
        }
        let mut sink = Groups::default();
        let mut failed = false;
        for (t, (what, pick, map)) in script.into_iter().enumerate() {
            let sent_before = d.stats().page_requests;
            d.step(t as u64, &mut iommu, &mut ledger);
            if failed {
                prop_assert_eq!(d.stats().page_requests, sent_before, "sent after FAILURE");
            }
            for (_, r) in iommu.take_auto_responses() {
                d.page_response(r, &mut ledger);
            }
            iommu.service(8, &mut sink);
            if what > 0 && !sink.0.is_empty() {
                let (grpid, pasid, pages) = sink.0.swap_remove(usize::from(pick) % sink.0.len());
                let code = match what {
                    1 => ResponseCode::Success,
                    2 => ResponseCode::Invalid,
                    _ if pick % 7 == 0 => ResponseCode::Failure,
                    _ => ResponseCode::Success,
                };
                if map && code == ResponseCode::Success {
                    for p in pages {
                        tables.map(1, pasid, p, Perm::READ).unwrap();
                    }
                }
                failed |= code == ResponseCode::Failure;
                d.page_response(PrgResponse { prgi: grpid as u16, pasid: Some(pasid), code }, &mut ledger);
            }
            prop_assert!(d.outstanding() <= opra);
            prop_assert!(d.groups_in_flight() <= max_groups);
        }
        // Answer whatever is left, then the ledger must agree.
        d.set_issuing(false);
        for _ in 0..10_000 {
            iommu.service(usize::MAX, &mut sink);
            for (_, r) in iommu.take_auto_responses() {
                d.page_response(r, &mut ledger);
            }
            for (grpid, pasid, _) in std::mem::take(&mut sink.0) {
                d.page_response(PrgResponse { prgi: grpid as u16, pasid: Some(pasid), code: ResponseCode::Invalid }, &mut ledger);
            }
            if d.is_idle() && iommu.queued() == 0 {
                break;
            }
            d.step(0, &mut iommu, &mut ledger);
        }
        prop_assert!(d.is_idle());
        let v = ledger.finish();
        prop_assert!(v.ok, "{:?}", v);
    }
}
