//! The producer's table of delivered, unanswered groups: what a response is checked against, and
//! where private data waits when the consumer does not echo it.
//!
//! A group's cookie is its slot index in the low 16 bits and the slot's generation in the high 16,
//! so a replayed response to a group answered earlier finds a newer generation and is rejected,
//! like an unknown cookie in `iommufd_fault_fops_write()`. When responses name groups by grpid
//! (the seed's VFIO response), a second index by grpid finds them, as the old
//! `iommu_page_response()` matched by grpid.
//!
//! Freed slots are reused oldest-first and only once `REUSE_DISTANCE` of them are free (as the
//! fault core's group table does): with a stack of free slots, one group at a time would cycle a
//! single slot through its 65,535 generations, and a response replayed 65,535 groups later would
//! answer whatever group then held the cookie.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

/// A delivered group waiting for its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PendingGroup {
    pub tag: u64,
    pub dev_id: u32,
    pub pasid: Option<u32>,
    pub grpid: u32,
    pub needs_pasid: bool,
    pub private_data: Option<[u64; 2]>,
}

const INDEX_BITS: u32 = 16;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;

/// A freed slot is reused only once this many slots are free (or no new slot can be made), so a
/// cookie's value comes back only after about `REUSE_DISTANCE × 65,535` later groups.
const REUSE_DISTANCE: usize = 256;

#[derive(Debug)]
struct Slot {
    generation: u16,
    group: Option<PendingGroup>,
}

/// PCIe's Page Request Group Index is 9 bits: grpids below this are indexed directly.
const DIRECT_GRPIDS: usize = 512;

/// Cookies by grpid: a direct table for PCIe's 9-bit PRG indices (0 = none: a cookie's
/// generation is never 0), a map for anything larger a caller hands in.
#[derive(Debug)]
struct GrpidIndex {
    direct: Box<[u32; DIRECT_GRPIDS]>,
    wide: FxHashMap<u32, u32>,
}

impl GrpidIndex {
    fn new() -> GrpidIndex {
        GrpidIndex {
            direct: Box::new([0; DIRECT_GRPIDS]),
            wide: FxHashMap::default(),
        }
    }

    #[inline]
    fn get(&self, grpid: u32) -> Option<u32> {
        match self.direct.get(grpid as usize) {
            Some(&0) => None,
            Some(&c) => Some(c),
            None => self.wide.get(&grpid).copied(),
        }
    }

    #[inline]
    fn insert(&mut self, grpid: u32, cookie: u32) {
        match self.direct.get_mut(grpid as usize) {
            Some(c) => *c = cookie,
            None => {
                self.wide.insert(grpid, cookie);
            }
        }
    }

    #[inline]
    fn remove(&mut self, grpid: u32) {
        match self.direct.get_mut(grpid as usize) {
            Some(c) => *c = 0,
            None => {
                self.wide.remove(&grpid);
            }
        }
    }
}

/// Groups by cookie, plus an optional grpid index.
#[derive(Debug)]
pub(crate) struct Pending {
    slots: Vec<Slot>,
    /// Freed slots, oldest first.
    free: VecDeque<u32>,
    by_grpid: Option<GrpidIndex>,
    max: usize,
    len: usize,
}

impl Pending {
    /// A table holding at most `max` groups (at most 65536), indexed by grpid if `by_grpid`.
    pub fn new(max: usize, by_grpid: bool) -> Pending {
        Pending {
            slots: Vec::new(),
            free: VecDeque::new(),
            by_grpid: by_grpid.then(GrpidIndex::new),
            max: max.min(1 << INDEX_BITS),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_full(&self) -> bool {
        self.len >= self.max
    }

    /// Whether a group with this grpid is pending (only meaningful with the grpid index).
    pub fn grpid_taken(&self, grpid: u32) -> bool {
        self.by_grpid
            .as_ref()
            .is_some_and(|m| m.get(grpid).is_some())
    }

    /// Stores a group and returns its cookie, or `None` when the table is full.
    pub fn insert(&mut self, group: PendingGroup) -> Option<u32> {
        if self.is_full() {
            return None;
        }
        let can_grow = self.slots.len() < 1 << INDEX_BITS;
        let index = if self.free.len() >= REUSE_DISTANCE || !can_grow {
            self.free.pop_front()?
        } else {
            let i = u32::try_from(self.slots.len()).ok()?;
            self.slots.push(Slot {
                generation: 1,
                group: None,
            });
            i
        };
        let slot = self.slots.get_mut(index as usize)?;
        slot.group = Some(group);
        let cookie = (u32::from(slot.generation) << INDEX_BITS) | index;
        if let Some(m) = self.by_grpid.as_mut() {
            m.insert(group.grpid, cookie);
        }
        self.len += 1;
        Some(cookie)
    }

    /// The group with this cookie, if it is pending.
    pub fn get(&self, cookie: u32) -> Option<&PendingGroup> {
        let slot = self.slots.get((cookie & INDEX_MASK) as usize)?;
        if u32::from(slot.generation) != cookie >> INDEX_BITS {
            return None;
        }
        slot.group.as_ref()
    }

    /// The cookie of the pending group with this grpid.
    pub fn cookie_of_grpid(&self, grpid: u32) -> Option<u32> {
        self.by_grpid.as_ref()?.get(grpid)
    }

    /// Removes and returns the group with this cookie; its slot's generation moves on, so the
    /// cookie is never valid again until the generation wraps.
    pub fn remove(&mut self, cookie: u32) -> Option<PendingGroup> {
        let index = cookie & INDEX_MASK;
        let slot = self.slots.get_mut(index as usize)?;
        if u32::from(slot.generation) != cookie >> INDEX_BITS {
            return None;
        }
        let group = slot.group.take()?;
        slot.generation = slot.generation.wrapping_add(1).max(1);
        self.free.push_back(index);
        if let Some(m) = self.by_grpid.as_mut() {
            m.remove(group.grpid);
        }
        self.len -= 1;
        Some(group)
    }

    /// The cookie of the pending group with this owner's tag (a scan: for rare withdrawals).
    pub fn cookie_of_tag(&self, tag: u64) -> Option<u32> {
        self.slots.iter().enumerate().find_map(|(i, s)| {
            s.group
                .filter(|g| g.tag == tag)
                .map(|_| (u32::from(s.generation) << INDEX_BITS) | i as u32)
        })
    }

    /// Removes every group, returning (cookie, group) pairs.
    pub fn drain(&mut self) -> Vec<(u32, PendingGroup)> {
        let cookies: Vec<u32> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.group.is_some())
            .map(|(i, s)| (u32::from(s.generation) << INDEX_BITS) | i as u32)
            .collect();
        cookies
            .into_iter()
            .filter_map(|c| self.remove(c).map(|g| (c, g)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(grpid: u32) -> PendingGroup {
        PendingGroup {
            tag: u64::from(grpid),
            dev_id: 0,
            pasid: None,
            grpid,
            needs_pasid: false,
            private_data: None,
        }
    }

    #[test]
    fn a_cookie_works_once_and_replays_are_unknown() {
        let mut p = Pending::new(4, true);
        let c = p.insert(group(7)).unwrap();
        assert_eq!(p.cookie_of_grpid(7), Some(c));
        assert_eq!(p.remove(c).unwrap().grpid, 7);
        assert!(p.remove(c).is_none());
        let c2 = p.insert(group(8)).unwrap();
        assert_ne!(c, c2, "the reused slot has a new generation");
        assert!(p.get(c).is_none());
        assert!(!p.grpid_taken(7));
        assert!(p.grpid_taken(8));
    }

    #[test]
    fn grpids_past_the_pcie_range_are_indexed_too() {
        let mut p = Pending::new(8, true);
        let small = p.insert(group(511)).unwrap();
        let wide = p.insert(group(0x1_0000)).unwrap();
        assert_eq!(p.cookie_of_grpid(511), Some(small));
        assert_eq!(p.cookie_of_grpid(0x1_0000), Some(wide));
        assert_eq!(p.cookie_of_grpid(512), None);
        p.remove(wide).unwrap();
        assert!(!p.grpid_taken(0x1_0000));
        assert!(p.grpid_taken(511));
    }

    #[test]
    fn the_table_is_bounded_and_drains_everything() {
        let mut p = Pending::new(3, false);
        for g in 0..3 {
            p.insert(group(g)).unwrap();
        }
        assert!(p.insert(group(9)).is_none());
        let all = p.drain();
        assert_eq!(all.len(), 3);
        assert_eq!(p.len(), 0);
        for (c, _) in all {
            assert!(p.get(c).is_none());
        }
    }
}
