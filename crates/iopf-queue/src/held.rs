//! The consumer's table of groups it has read and not answered, by cookie.
//!
//! iopf producers make a cookie's low 16 bits a slot index, so a table indexed by those bits finds
//! a group without hashing; the consumer does not rely on it: a cookie whose slot is taken by
//! another cookie goes to an overflow map, so any cookie scheme works.

use rustc_hash::FxHashMap;

/// What the consumer remembers of a group it read and has not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    pub pasid: Option<u32>,
    pub grpid: u32,
    pub private_data: Option<[u64; 2]>,
}

const DIRECT: usize = 1 << 16;

#[derive(Debug, Default)]
pub(crate) struct HeldTable {
    direct: Vec<Option<(u32, Held)>>,
    overflow: FxHashMap<u32, Held>,
    len: usize,
}

impl HeldTable {
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn get(&self, cookie: u32) -> Option<Held> {
        match self.direct.get(cookie as usize % DIRECT) {
            Some(Some((c, h))) if *c == cookie => Some(*h),
            _ if self.overflow.is_empty() => None,
            _ => self.overflow.get(&cookie).copied(),
        }
    }

    /// Records a group; a cookie already held is replaced (a producer never repeats a live one).
    /// The common case, a free direct slot and an empty overflow map, costs no hashing.
    #[inline]
    pub fn insert(&mut self, cookie: u32, held: Held) {
        let i = cookie as usize % DIRECT;
        if i >= self.direct.len() {
            self.direct.resize(i + 1, None);
        }
        let Some(slot) = self.direct.get_mut(i) else {
            return;
        };
        match slot {
            Some((c, h)) if *c == cookie => {
                *h = held;
                return;
            }
            None => {
                *slot = Some((cookie, held));
                if !self.overflow.is_empty() {
                    // A stale copy could only be there if the slot was taken when it was stored.
                    if self.overflow.remove(&cookie).is_some() {
                        self.len -= 1;
                    }
                }
            }
            Some(_) => {
                if self.overflow.insert(cookie, held).is_some() {
                    self.len -= 1;
                }
            }
        }
        self.len += 1;
    }

    #[inline]
    pub fn remove(&mut self, cookie: u32) -> Option<Held> {
        let i = cookie as usize % DIRECT;
        let h = match self.direct.get_mut(i) {
            Some(slot @ Some(_)) if slot.is_some_and(|(c, _)| c == cookie) => {
                slot.take().map(|(_, h)| h)
            }
            _ if self.overflow.is_empty() => None,
            _ => self.overflow.remove(&cookie),
        };
        if h.is_some() {
            self.len -= 1;
        }
        h
    }

    /// The cookie of a held group with this grpid.
    pub fn find_grpid(&self, grpid: u32) -> Option<u32> {
        self.direct
            .iter()
            .flatten()
            .find(|(_, h)| h.grpid == grpid)
            .map(|(c, _)| *c)
            .or_else(|| {
                self.overflow
                    .iter()
                    .find(|(_, h)| h.grpid == grpid)
                    .map(|(c, _)| *c)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(grpid: u32) -> Held {
        Held {
            pasid: None,
            grpid,
            private_data: None,
        }
    }

    #[test]
    fn colliding_cookies_are_kept_apart() {
        let mut t = HeldTable::default();
        t.insert(0x1_0005, held(1));
        t.insert(0x2_0005, held(2));
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(0x2_0005), Some(held(2)));
        assert_eq!(t.find_grpid(2), Some(0x2_0005));
        assert_eq!(t.remove(0x1_0005), Some(held(1)));
        assert_eq!(t.remove(0x1_0005), None);
        assert_eq!(t.get(0x2_0005), Some(held(2)));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_cookie_held_twice_counts_once_wherever_it_lives() {
        let mut t = HeldTable::default();
        t.insert(0x1_0005, held(1));
        t.insert(0x1_0005, held(3));
        assert_eq!((t.len(), t.get(0x1_0005)), (1, Some(held(3))));
        t.insert(0x2_0005, held(2));
        t.insert(0x2_0005, held(4));
        assert_eq!((t.len(), t.get(0x2_0005)), (2, Some(held(4))));
        // The direct slot frees up while 0x2_0005 sits in the overflow map: a re-insert of it
        // takes the slot and drops the overflow copy.
        assert_eq!(t.remove(0x1_0005), Some(held(3)));
        t.insert(0x2_0005, held(5));
        assert_eq!((t.len(), t.get(0x2_0005)), (1, Some(held(5))));
        assert_eq!(t.remove(0x2_0005), Some(held(5)));
        assert_eq!((t.len(), t.get(0x2_0005)), (0, None));
    }
}
