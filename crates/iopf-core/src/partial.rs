//! Partial page requests: requests without LAST_PAGE, held until their group's LAST_PAGE request
//! arrives (`report_partial_fault()` and the partial list of `struct iommu_fault_param`).
//!
//! Linux keeps one list per device and scans it for the PRG index when the LAST_PAGE request
//! arrives (`iopf_group_alloc()`). Here each device maps a PRG index to a chain of pooled slots,
//! so holding a partial is O(1) and completing a group is O(its size), with slots reused rather
//! than allocated per request.

use iopf_abi::PageRequest;

use crate::prg_index::NIL;
use crate::Nanos;

/// One held partial request.
#[derive(Debug, Clone, Copy)]
struct PartialSlot {
    req: PageRequest,
    next: u32,
}

/// The held partials of one PRG index on one device, oldest first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chain {
    head: u32,
    tail: u32,
    pub count: u32,
    /// When the oldest was reported.
    pub first_at: Nanos,
}

/// The pool every device's chains draw their slots from.
#[derive(Debug)]
pub(crate) struct PartialPool {
    slots: Vec<PartialSlot>,
    free: u32,
}

impl PartialPool {
    pub fn new() -> PartialPool {
        PartialPool {
            slots: Vec::new(),
            free: NIL,
        }
    }

    #[inline]
    fn alloc(&mut self, req: PageRequest) -> u32 {
        if self.free != NIL {
            let idx = self.free;
            let s = &mut self.slots[idx as usize];
            self.free = s.next;
            s.req = req;
            s.next = NIL;
            idx
        } else {
            self.slots.push(PartialSlot { req, next: NIL });
            (self.slots.len() - 1) as u32
        }
    }

    #[inline]
    fn release(&mut self, idx: u32) {
        self.slots[idx as usize].next = self.free;
        self.free = idx;
    }

    /// Starts a chain with one request.
    #[inline]
    pub fn start(&mut self, req: PageRequest, at: Nanos) -> Chain {
        let idx = self.alloc(req);
        Chain {
            head: idx,
            tail: idx,
            count: 1,
            first_at: at,
        }
    }

    /// Appends a request to a chain.
    #[inline]
    pub fn push(&mut self, chain: &mut Chain, req: PageRequest) {
        let idx = self.alloc(req);
        self.slots[chain.tail as usize].next = idx;
        chain.tail = idx;
        chain.count += 1;
    }

    /// Moves the chain's requests, oldest first, to the end of `out`, and frees its slots.
    #[inline]
    pub fn take_into(&mut self, chain: Chain, out: &mut Vec<PageRequest>) {
        let mut idx = chain.head;
        while idx != NIL {
            let s = self.slots[idx as usize];
            out.push(s.req);
            self.release(idx);
            idx = s.next;
        }
    }

    /// Frees the chain's slots; returns how many requests it held.
    pub fn drop_chain(&mut self, chain: Chain) -> u32 {
        let mut idx = chain.head;
        while idx != NIL {
            let next = self.slots[idx as usize].next;
            self.release(idx);
            idx = next;
        }
        chain.count
    }

    /// Frees the requests of `chain` for which `discard` holds; returns how many, and the chain
    /// that remains (`None` if empty).
    pub fn drop_where(
        &mut self,
        chain: Chain,
        mut discard: impl FnMut(&PageRequest) -> bool,
    ) -> (u32, Option<Chain>) {
        let mut kept: Option<Chain> = None;
        let mut dropped = 0;
        let mut idx = chain.head;
        while idx != NIL {
            let next = self.slots[idx as usize].next;
            if discard(&self.slots[idx as usize].req) {
                self.release(idx);
                dropped += 1;
            } else {
                self.slots[idx as usize].next = NIL;
                match kept.as_mut() {
                    None => {
                        kept = Some(Chain {
                            head: idx,
                            tail: idx,
                            count: 1,
                            first_at: chain.first_at,
                        })
                    }
                    Some(k) => {
                        self.slots[k.tail as usize].next = idx;
                        k.tail = idx;
                        k.count += 1;
                    }
                }
            }
            idx = next;
        }
        (dropped, kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iopf_abi::{PageRequestFlags, Perm};

    fn req(addr: u64, pasid: u32) -> PageRequest {
        PageRequest {
            flags: PageRequestFlags::PASID_VALID,
            pasid,
            grpid: 3,
            perm: Perm::READ,
            addr,
            private_data: [0; 2],
        }
    }

    #[test]
    fn chains_keep_order_and_reuse_slots() {
        let mut p = PartialPool::new();
        let mut c = p.start(req(1, 0), 5);
        p.push(&mut c, req(2, 1));
        p.push(&mut c, req(3, 0));
        let (n, kept) = p.drop_where(c, |r| r.pasid == 1);
        assert_eq!(n, 1);
        let kept = kept.unwrap();
        assert_eq!(kept.count, 2);
        assert_eq!(kept.first_at, 5);
        let mut out = Vec::new();
        p.take_into(kept, &mut out);
        assert_eq!(out.iter().map(|r| r.addr).collect::<Vec<_>>(), [1, 3]);
        let before = p.slots.len();
        let c = p.start(req(9, 0), 6);
        assert_eq!(p.slots.len(), before, "a freed slot is reused");
        assert_eq!(p.drop_chain(c), 1);
    }
}
