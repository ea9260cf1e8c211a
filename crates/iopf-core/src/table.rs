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

#[derive(Debug, Default)]
pub(crate) struct GroupTable {
    slots: Vec<GroupSlot>,
    free: Vec<u32>,
}

impl GroupTable {
    pub fn new() -> GroupTable {
        GroupTable::default()
    }

    /// Takes a free slot (reused first, else a new one), bumps its generation and marks it live.
    /// `None` when all [`Cookie::MAX_SLOTS`] slots are outstanding.
    #[inline]
    pub fn alloc(&mut self) -> Option<u32> {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                if self.slots.len() >= Cookie::MAX_SLOTS {
                    return None;
                }
                self.slots.push(GroupSlot::EMPTY);
                (self.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots[idx as usize];
        s.gen = next_gen(s.gen, Cookie::MAX_GEN);
        s.flags = LIVE;
        s.prev = NIL;
        s.next = NIL;
        s.next_same_grpid = NIL;
        Some(idx)
    }

    /// Returns a live slot to the free list. Its generation stays, so its cookie reads as
    /// answered until the slot is reused.
    #[inline]
    pub fn free(&mut self, idx: u32) {
        let s = &mut self.slots[idx as usize];
        s.flags = 0;
        s.handler = NIL;
        self.free.push(idx);
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
        let b = t.alloc().unwrap();
        assert_eq!(a, b, "freed slots are reused");
        assert_ne!(t.cookie(b), ca, "a reused slot gets a new cookie");
        assert_eq!(t.lookup(ca), Lookup::Unknown);
        assert_eq!(t.lookup(Cookie::from_raw(0)), Lookup::Unknown);
    }
}
