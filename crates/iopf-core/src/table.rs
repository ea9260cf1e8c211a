//! The outstanding-group table: one fixed-size slot per delivered, unanswered group, named by
//! its [`Cookie`] (slot index + generation), linked into its handler's list in delivery order and
//! into its device's chain of groups with the same PRG index.
//!
//! This is the bookkeeping of `drivers/iommu/iommufd/fault.c` (`fault->response`, an xarray from
//! cookie to group) and of `iommu_fault_param.faults` (the per-device pending list), in one slab:
//! lookup by cookie is an index, insert and remove are O(1), and freed slots are reused without
//! allocating. A slot holds what the response needs (PASID, PRG index, private data) and the
//! timestamps, not the page requests themselves: those were copied out by the handler at delivery.

use crate::ids::next_gen;
use crate::{Cookie, DeviceId, Nanos};

/// "No slot" in the intrusive links.
pub(crate) const NIL: u32 = u32::MAX;

pub(crate) const LIVE: u8 = 1;
pub(crate) const HAS_PASID: u8 = 2;
pub(crate) const PRIV_DATA: u8 = 4;
pub(crate) const AGED: u8 = 8;

/// One outstanding group (72 bytes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupSlot {
    /// The LAST_PAGE request's private data (meaningful with `PRIV_DATA`).
    pub private_data: [u64; 2],
    pub first_at: Nanos,
    pub completed_at: Nanos,
    pub pasid: u32,
    pub grpid: u32,
    pub device: DeviceId,
    /// Handler slot index.
    pub handler: u32,
    /// Handler list links; `next` also links the free list.
    pub prev: u32,
    pub next: u32,
    /// Next outstanding group of the same device with the same PRG index.
    pub next_same_grpid: u32,
    pub requests: u32,
    pub gen: u16,
    pub flags: u8,
}

impl GroupSlot {
    const EMPTY: GroupSlot = GroupSlot {
        private_data: [0; 2],
        first_at: 0,
        completed_at: 0,
        pasid: 0,
        grpid: 0,
        device: DeviceId(0),
        handler: NIL,
        prev: NIL,
        next: NIL,
        next_same_grpid: NIL,
        requests: 0,
        gen: 0,
        flags: 0,
    };
    #[inline]
    pub fn live(&self) -> bool {
        self.flags & LIVE != 0
    }
    #[inline]
    pub fn pasid(&self) -> Option<u32> {
        (self.flags & HAS_PASID != 0).then_some(self.pasid)
    }
    #[inline]
    pub fn private_data(&self) -> Option<[u64; 2]> {
        (self.flags & PRIV_DATA != 0).then_some(self.private_data)
    }
}

/// A doubly linked list of slots (a handler's outstanding groups, oldest first).
#[derive(Debug, Clone, Copy)]
pub(crate) struct List {
    pub head: u32,
    pub tail: u32,
    pub len: u32,
}

impl List {
    pub const EMPTY: List = List {
        head: NIL,
        tail: NIL,
        len: 0,
    };
}

/// What a cookie names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// An outstanding group, at this slot.
    Live(u32),
    /// A group that was answered; its slot has not been reused since.
    Answered,
    /// Nothing: never handed out, or its slot has been reused.
    Unknown,
}

/// Free slots are reused oldest-first, and only once at least this many are free: a cookie's
/// value then comes back only after `REUSE_DISTANCE × Cookie::MAX_GEN` (over a million) later
/// deliveries, so a very late response is recognised as stale instead of answering a new group
/// (iommufd's `xa_alloc()` hands the lowest free cookie out again at once).
pub(crate) const REUSE_DISTANCE: u32 = 256;

/// The slot vector grows by a quarter of its length (at least this many slots) at a time, with
/// `reserve_exact`, rather than doubling: at most a quarter more slots are reserved than are in use,
/// and growth stays amortised O(1) per slot.
const GROWTH_MIN: usize = 1024;

/// The slots: one vector, grown by [`GROWTH_MIN`] or a quarter, whichever is more.
#[derive(Debug, Default)]
struct Slots(Vec<GroupSlot>);

impl Slots {
    #[inline]
    fn len(&self) -> usize {
        self.0.len()
    }
    #[inline]
    fn get(&self, idx: usize) -> Option<&GroupSlot> {
        self.0.get(idx)
    }
    /// Makes one more slot; returns its index.
    fn push(&mut self) -> usize {
        if self.0.len() == self.0.capacity() {
            let grow = (self.0.len() / 4).max(GROWTH_MIN);
            self.0.reserve_exact(grow);
        }
        self.0.push(GroupSlot::EMPTY);
        self.0.len() - 1
    }
}

impl core::ops::Index<usize> for Slots {
    type Output = GroupSlot;
    #[inline]
    fn index(&self, idx: usize) -> &GroupSlot {
        &self.0[idx]
    }
}

impl core::ops::IndexMut<usize> for Slots {
    #[inline]
    fn index_mut(&mut self, idx: usize) -> &mut GroupSlot {
        &mut self.0[idx]
    }
}

#[derive(Debug)]
pub(crate) struct GroupTable {
    slots: Slots,
    /// Free slots, oldest first, linked through `next`.
    free_head: u32,
    free_tail: u32,
    free_len: u32,
}

impl GroupTable {
    pub fn new() -> GroupTable {
        GroupTable {
            slots: Slots::default(),
            free_head: NIL,
            free_tail: NIL,
            free_len: 0,
        }
    }

    /// Takes a slot, bumps its generation and marks it live: the oldest free slot once
    /// [`REUSE_DISTANCE`] are free (or no new slot can be made), else a new one. `None` when all
    /// [`Cookie::MAX_SLOTS`] slots are outstanding.
    #[inline]
    pub fn alloc(&mut self) -> Option<u32> {
        let full = self.slots.len() >= Cookie::MAX_SLOTS;
        let idx = if self.free_len >= REUSE_DISTANCE || (full && self.free_len > 0) {
            let idx = self.free_head;
            self.free_head = self.slots[idx as usize].next;
            if self.free_head == NIL {
                self.free_tail = NIL;
            }
            self.free_len -= 1;
            idx
        } else if full {
            return None;
        } else {
            self.slots.push() as u32
        };
        let s = &mut self.slots[idx as usize];
        s.gen = next_gen(s.gen, Cookie::MAX_GEN);
        s.flags = LIVE;
        s.prev = NIL;
        s.next = NIL;
        s.next_same_grpid = NIL;
        Some(idx)
    }

    /// Returns a live slot to the end of the free list. Its generation stays, so its cookie reads
    /// as answered until the slot is reused.
    #[inline]
    pub fn free(&mut self, idx: u32) {
        let s = &mut self.slots[idx as usize];
        s.flags = 0;
        s.handler = NIL;
        s.next = NIL;
        if self.free_tail == NIL {
            self.free_head = idx;
        } else {
            self.slots[self.free_tail as usize].next = idx;
        }
        self.free_tail = idx;
        self.free_len += 1;
    }

    #[inline]
    pub fn get(&self, idx: u32) -> &GroupSlot {
        &self.slots[idx as usize]
    }

    #[inline]
    pub fn get_mut(&mut self, idx: u32) -> &mut GroupSlot {
        &mut self.slots[idx as usize]
    }

    #[inline]
    pub fn cookie(&self, idx: u32) -> Cookie {
        Cookie::new(idx, self.slots[idx as usize].gen)
    }

    #[inline]
    pub fn lookup(&self, cookie: Cookie) -> Lookup {
        match self.slots.get(cookie.index()) {
            Some(s) if s.gen == cookie.gen() && cookie.gen() != 0 => {
                if s.live() {
                    Lookup::Live(cookie.index() as u32)
                } else {
                    Lookup::Answered
                }
            }
            _ => Lookup::Unknown,
        }
    }

    /// Appends `idx` to `list`.
    #[inline]
    pub fn push_back(&mut self, list: &mut List, idx: u32) {
        {
            let s = &mut self.slots[idx as usize];
            s.prev = list.tail;
            s.next = NIL;
        }
        if list.tail == NIL {
            list.head = idx;
        } else {
            self.slots[list.tail as usize].next = idx;
        }
        list.tail = idx;
        list.len += 1;
    }

    /// Removes `idx` from `list`; returns the slot that followed it.
    #[inline]
    pub fn unlink(&mut self, list: &mut List, idx: u32) -> u32 {
        let (prev, next) = {
            let s = &self.slots[idx as usize];
            (s.prev, s.next)
        };
        if prev == NIL {
            list.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            list.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
        list.len -= 1;
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_is_72_bytes() {
        assert_eq!(core::mem::size_of::<GroupSlot>(), 72);
    }

    #[test]
    fn cookie_of_answered_group_reads_answered_until_reuse() {
        let mut t = GroupTable::new();
        let a = t.alloc().unwrap();
        let ca = t.cookie(a);
        assert_eq!(t.lookup(ca), Lookup::Live(a));
        t.free(a);
        assert_eq!(t.lookup(ca), Lookup::Answered);
        // Fewer than REUSE_DISTANCE free: new slots are made, the answered one is kept.
        for _ in 1..REUSE_DISTANCE {
            let i = t.alloc().unwrap();
            assert_ne!(i, a);
            t.free(i);
        }
        assert_eq!(t.lookup(ca), Lookup::Answered);
        let b = t.alloc().unwrap();
        assert_eq!(a, b, "the oldest free slot is reused first");
        assert_ne!(t.cookie(b), ca, "a reused slot gets a new cookie");
        assert_eq!(t.lookup(ca), Lookup::Unknown);
        assert_eq!(t.lookup(Cookie::from_raw(0)), Lookup::Unknown);
    }

    #[test]
    fn a_cookie_value_recurs_only_after_a_million_deliveries() {
        let mut t = GroupTable::new();
        let first = t.alloc().unwrap();
        let c0 = t.cookie(first);
        t.free(first);
        let distance = REUSE_DISTANCE as usize * Cookie::MAX_GEN as usize;
        for n in 1..=distance {
            let i = t.alloc().unwrap();
            let c = t.cookie(i);
            t.free(i);
            if c == c0 {
                assert_eq!(n, distance, "cookie came back after {n} deliveries");
                return;
            }
        }
        panic!("the cookie never came back within {distance} deliveries plus one");
    }
}
