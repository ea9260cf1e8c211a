//! Per-device index from PRG index to the oldest outstanding group with it: the lookup the old
//! `iommu_page_response()` did by walking `iommu_fault_param.faults` for a matching `grpid`.
//!
//! PCIe PRG indexes are 9 bits, so indexes below 512 live in a flat table of slot numbers (2 KiB,
//! allocated the first time the device completes a group): one array access, no hashing, 4 bytes
//! per index. Larger indexes (an SMMUv3 stall tag is 16 bits) go to a hash map.

use rustc_hash::FxHashMap;

use crate::table::NIL;

/// Indexes below this use the flat table: the PCIe PRI PRG index space.
const FLAT: usize = 512;

#[derive(Debug, Default)]
pub(crate) struct GrpidIndex {
    flat: Option<Box<[u32; FLAT]>>,
    large: FxHashMap<u32, u32>,
}

impl GrpidIndex {
    /// The head slot for `grpid`, or NIL.
    #[inline]
    pub fn get(&self, grpid: u32) -> u32 {
        if (grpid as usize) < FLAT {
            match &self.flat {
                Some(t) => t[grpid as usize],
                None => NIL,
            }
        } else {
            self.large.get(&grpid).copied().unwrap_or(NIL)
        }
    }

    /// Sets the head slot for `grpid` (NIL: none).
    #[inline]
    pub fn set(&mut self, grpid: u32, slot: u32) {
        if (grpid as usize) < FLAT {
            let t = self.flat.get_or_insert_with(|| Box::new([NIL; FLAT]));
            t[grpid as usize] = slot;
        } else if slot == NIL {
            self.large.remove(&grpid);
        } else {
            self.large.insert(grpid, slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_and_large_indexes() {
        let mut g = GrpidIndex::default();
        assert_eq!(g.get(3), NIL);
        g.set(3, 7);
        g.set(70_000, 8);
        assert_eq!((g.get(3), g.get(70_000), g.get(4)), (7, 8, NIL));
        g.set(3, NIL);
        g.set(70_000, NIL);
        assert_eq!((g.get(3), g.get(70_000)), (NIL, NIL));
        assert!(g.large.is_empty());
    }
}
