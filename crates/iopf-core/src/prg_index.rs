//! PRG index → the outstanding groups with it, per device, oldest first: the lookup the old
//! `iommu_page_response()` did by walking `iommu_fault_param.faults` for a matching `grpid`.
//!
//! Each (device, PRG index) has a chain of group slots linked through the slots themselves
//! (`prg_prev` / `prg_next` in [`crate::GroupTable`]'s slots); this index keeps each chain's head
//! and tail, so a group joins the end of its chain and leaves it from anywhere in O(1), however
//! often a device reuses the index (a device bug the core counts, and keeps both groups).
//!
//! PCIe PRG indexes are 9 bits, so indexes below 512 of devices below 65,536 live in a flat
//! table per device (4 KiB, allocated the first time the device has a group): one array access,
//! no hashing. Larger indexes (an SMMUv3 stall tag is 16 bits) and device keys go to a hash map.

use rustc_hash::FxHashMap;

/// "No slot".
pub(crate) const NIL: u32 = u32::MAX;

/// Indexes below this use the flat table: the PCIe PRI PRG index space.
const FLAT: usize = 512;
/// Device keys below this use a flat table each.
const DENSE_DEVICES: usize = 1 << 16;

/// The oldest and newest slot of one chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chain {
    pub head: u32,
    pub tail: u32,
}

impl Chain {
    pub const EMPTY: Chain = Chain {
        head: NIL,
        tail: NIL,
    };
}

#[derive(Debug, Default)]
pub(crate) struct PrgIndex {
    dense: Vec<Option<Box<[Chain; FLAT]>>>,
    large: FxHashMap<(u32, u32), Chain>,
}

impl PrgIndex {
    /// The chain of (`device`, `grpid`).
    // Forced inline kept on measurement: docs/PERFORMANCE.md, "Forced inlining".
    #[inline(always)]
    pub fn get(&self, device: u32, grpid: u32) -> Chain {
        if (grpid as usize) < FLAT && (device as usize) < DENSE_DEVICES {
            match self.dense.get(device as usize) {
                Some(Some(t)) => t[grpid as usize],
                _ => Chain::EMPTY,
            }
        } else {
            self.large
                .get(&(device, grpid))
                .copied()
                .unwrap_or(Chain::EMPTY)
        }
    }

    /// Runs `f` on the chain of (`device`, `grpid`), made empty if there was none; an empty
    /// chain left in the hash map is removed.
    // Forced inline kept on measurement: docs/PERFORMANCE.md, "Forced inlining".
    #[inline(always)]
    pub fn update(&mut self, device: u32, grpid: u32, f: impl FnOnce(&mut Chain)) {
        if (grpid as usize) < FLAT && (device as usize) < DENSE_DEVICES {
            f(self.flat_mut(device as usize, grpid as usize));
        } else {
            let c = self.large.entry((device, grpid)).or_insert(Chain::EMPTY);
            f(c);
            if *c == Chain::EMPTY {
                self.large.remove(&(device, grpid));
            }
        }
    }

    /// The flat table's entry, the device's table made on first use.
    // Forced inline kept on measurement: docs/PERFORMANCE.md, "Forced inlining".
    #[inline(always)]
    fn flat_mut(&mut self, device: usize, grpid: usize) -> &mut Chain {
        if device >= self.dense.len() {
            self.dense.resize_with(device + 1, || None);
        }
        let t = self.dense[device].get_or_insert_with(|| Box::new([Chain::EMPTY; FLAT]));
        &mut t[grpid]
    }

    /// Sets the chain of (`device`, `grpid`) (`Chain::EMPTY`: none).
    #[cfg(test)]
    pub fn set(&mut self, device: u32, grpid: u32, chain: Chain) {
        self.update(device, grpid, |c| *c = chain);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_and_large_keys() {
        let mut g = PrgIndex::default();
        let c = |h, t| Chain { head: h, tail: t };
        assert_eq!(g.get(0, 3), Chain::EMPTY);
        g.set(0, 3, c(7, 9));
        g.set(2, 70_000, c(8, 8));
        g.set(100_000, 3, c(5, 5));
        assert_eq!(
            (
                g.get(0, 3),
                g.get(2, 70_000),
                g.get(100_000, 3),
                g.get(0, 4)
            ),
            (c(7, 9), c(8, 8), c(5, 5), Chain::EMPTY)
        );
        g.set(0, 3, Chain::EMPTY);
        g.set(2, 70_000, Chain::EMPTY);
        g.set(100_000, 3, Chain::EMPTY);
        assert_eq!(
            (g.get(0, 3), g.get(2, 70_000)),
            (Chain::EMPTY, Chain::EMPTY)
        );
        assert!(g.large.is_empty());
    }
}
