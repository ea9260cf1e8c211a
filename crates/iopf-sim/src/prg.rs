//! The Page Request Group index allocator of one PRI function (PCIe 6.0 §10.4.1).
//!
//! A PRG index is 9 bits, so at most 512 groups are in flight per function. An index stays
//! allocated until the group's PRG Response arrives. Indexes are handed out round robin, so a late
//! duplicate response is as unlikely as possible to hit a reused index.

use crate::SimError;

/// Number of PRG indexes: 2^9.
pub const PRG_INDEXES: usize = 512;

/// Allocates the 9-bit PRG indexes of one function.
#[derive(Debug, Clone)]
pub struct PrgIndexAllocator {
    in_use: [u64; PRG_INDEXES / 64],
    next: u16,
    count: usize,
    limit: usize,
}

impl PrgIndexAllocator {
    /// An allocator handing out at most `limit` indexes at once (clamped to 1..=512).
    pub fn new(limit: usize) -> PrgIndexAllocator {
        PrgIndexAllocator {
            in_use: [0; PRG_INDEXES / 64],
            next: 0,
            count: 0,
            limit: limit.clamp(1, PRG_INDEXES),
        }
    }

    /// Allocates a free index, or `None` when `limit` groups are already in flight.
    pub fn alloc(&mut self) -> Option<u16> {
        if self.count >= self.limit {
            return None;
        }
        for step in 0..PRG_INDEXES {
            let idx = (usize::from(self.next) + step) % PRG_INDEXES;
            if !self.is_in_flight(idx as u16) {
                self.in_use[idx / 64] |= 1 << (idx % 64);
                self.count += 1;
                self.next = ((idx + 1) % PRG_INDEXES) as u16;
                return Some(idx as u16);
            }
        }
        None
    }

    /// Frees `idx`. Error: [`SimError::PrgIndexNotInFlight`] if it was not allocated (or is not a
    /// 9-bit value).
    pub fn free(&mut self, idx: u16) -> Result<(), SimError> {
        if !self.is_in_flight(idx) {
            return Err(SimError::PrgIndexNotInFlight(idx));
        }
        let i = usize::from(idx);
        self.in_use[i / 64] &= !(1 << (i % 64));
        self.count -= 1;
        Ok(())
    }

    /// Whether `idx` is allocated.
    pub fn is_in_flight(&self, idx: u16) -> bool {
        let i = usize::from(idx);
        i < PRG_INDEXES && self.in_use[i / 64] & (1 << (i % 64)) != 0
    }

    /// How many indexes are allocated.
    pub fn in_flight(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_512_in_flight() {
        let mut a = PrgIndexAllocator::new(10_000);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..PRG_INDEXES {
            let i = a.alloc().unwrap();
            assert!(i < 512);
            assert!(seen.insert(i));
        }
        assert_eq!(a.alloc(), None);
        a.free(17).unwrap();
        assert_eq!(a.alloc(), Some(17));
    }

    #[test]
    fn round_robin_and_limit() {
        let mut a = PrgIndexAllocator::new(2);
        assert_eq!(a.alloc(), Some(0));
        assert_eq!(a.alloc(), Some(1));
        assert_eq!(a.alloc(), None);
        a.free(0).unwrap();
        assert_eq!(a.alloc(), Some(2), "round robin skips the just-freed index");
        assert!(matches!(a.free(0), Err(SimError::PrgIndexNotInFlight(0))));
        assert!(matches!(
            a.free(600),
            Err(SimError::PrgIndexNotInFlight(600))
        ));
        assert_eq!(a.in_flight(), 2);
    }
}
