//! Workloads: which pages a device's work items touch, and how.
//!
//! A work item is one DMA of a device on one PASID: one or more pages (the multi-page group it
//! becomes if none is mapped) with one kind of access. The patterns are the classic ones: a
//! sequential stream, random access, and strided access across a region.

use iopf_abi::Perm;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::PAGE_SIZE;

/// The address pattern of a stream of work items.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// Consecutive pages, each work item starting where the previous one ended (wrapping).
    Sequential,
    /// Each work item starts at a random page of the region.
    Random,
    /// Pages `stride_pages` apart: each work item's pages are strided, and items follow on.
    Strided,
}

/// How the accesses of a stream are mixed: relative weights of reads, writes and executes, and
/// the share of accesses made in privileged mode.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessMix {
    /// Weight of reads (`READ`).
    pub read: u32,
    /// Weight of writes (`READ | WRITE`, as a read-for-ownership asks).
    pub write: u32,
    /// Weight of instruction fetches (`READ | EXEC`; PCIe allows Execute only with Read).
    pub exec: u32,
    /// Share (0..=1) of accesses that also request privileged mode (`PRIV`).
    pub privileged: f64,
}

impl Default for AccessMix {
    fn default() -> AccessMix {
        AccessMix {
            read: 1,
            write: 0,
            exec: 0,
            privileged: 0.0,
        }
    }
}

/// The workload of one (device, PASID) stream.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// The address pattern.
    pub pattern: Pattern,
    /// First I/O virtual address of the region (page aligned).
    #[serde(default = "default_base")]
    pub base: u64,
    /// Size of the region in 4 KiB pages.
    pub region_pages: u64,
    /// Pages per work item: the size of the page request group when none of them is mapped.
    #[serde(default = "one")]
    pub group_pages: u32,
    /// Distance between the pages of a strided pattern, in pages.
    #[serde(default = "one_u64")]
    pub stride_pages: u64,
    /// The access mix.
    #[serde(default)]
    pub access: AccessMix,
}

fn default_base() -> u64 {
    0x1_0000_0000
}
fn one() -> u32 {
    1
}
fn one_u64() -> u64 {
    1
}

/// One DMA of a device: the pages it touches and the access it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkItem {
    /// The PASID it runs on.
    pub pasid: u32,
    /// The page addresses it touches, in order.
    pub pages: Vec<u64>,
    /// The access.
    pub perm: Perm,
}

/// The generator of a stream's work items (deterministic for a given seed).
#[derive(Debug, Clone)]
pub struct Workload {
    spec: WorkloadSpec,
    pasid: u32,
    rng: SmallRng,
    cursor: u64,
}

impl Workload {
    /// A generator for `spec` on `pasid`, seeded with `seed`.
    pub fn new(spec: WorkloadSpec, pasid: u32, seed: u64) -> Workload {
        Workload {
            spec,
            pasid,
            rng: SmallRng::seed_from_u64(seed),
            cursor: 0,
        }
    }

    /// The spec it follows.
    pub fn spec(&self) -> &WorkloadSpec {
        &self.spec
    }

    /// The next work item.
    pub fn next_item(&mut self) -> WorkItem {
        let s = &self.spec;
        let region = s.region_pages.max(1);
        let n = u64::from(s.group_pages.max(1));
        let (start, step) = match s.pattern {
            Pattern::Sequential => {
                let start = self.cursor;
                self.cursor = (self.cursor + n) % region;
                (start, 1)
            }
            Pattern::Random => (self.rng.random_range(0..region), 1),
            Pattern::Strided => {
                let stride = s.stride_pages.max(1);
                let start = self.cursor;
                // Next item starts one stride after this one's last page; after a full sweep the
                // sweep shifts by one page so every page of the region is eventually touched.
                let next = self.cursor + n * stride;
                self.cursor = if next >= region {
                    (next % region + 1) % stride.min(region)
                } else {
                    next
                };
                (start, stride)
            }
        };
        let pages = (0..n)
            .map(|i| s.base + ((start + i * step) % region) * PAGE_SIZE)
            .collect();
        WorkItem {
            pasid: self.pasid,
            pages,
            perm: self.pick_perm(),
        }
    }

    fn pick_perm(&mut self) -> Perm {
        let a = self.spec.access;
        let total = u64::from(a.read) + u64::from(a.write) + u64::from(a.exec);
        let mut perm = if total == 0 {
            Perm::READ
        } else {
            let r = self.rng.random_range(0..total);
            if r < u64::from(a.read) {
                Perm::READ
            } else if r < u64::from(a.read) + u64::from(a.write) {
                Perm::READ | Perm::WRITE
            } else {
                Perm::READ | Perm::EXEC
            }
        };
        if a.privileged > 0.0 && self.rng.random_bool(a.privileged.clamp(0.0, 1.0)) {
            perm |= Perm::PRIV;
        }
        perm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pattern: Pattern, group_pages: u32) -> WorkloadSpec {
        WorkloadSpec {
            pattern,
            base: 0x10_0000,
            region_pages: 16,
            group_pages,
            stride_pages: 4,
            access: AccessMix::default(),
        }
    }

    #[test]
    fn sequential_follows_on_and_wraps() {
        let mut w = Workload::new(spec(Pattern::Sequential, 3), 7, 1);
        let a = w.next_item();
        assert_eq!(a.pasid, 7);
        assert_eq!(a.pages, vec![0x10_0000, 0x10_1000, 0x10_2000]);
        let b = w.next_item();
        assert_eq!(b.pages[0], 0x10_3000);
        for _ in 0..3 {
            w.next_item();
        }
        // 5 items × 3 pages = 15: the sixth starts at page 15 and wraps.
        assert_eq!(w.next_item().pages, vec![0x10_f000, 0x10_0000, 0x10_1000]);
    }

    #[test]
    fn strided_covers_the_region() {
        let mut w = Workload::new(spec(Pattern::Strided, 2), 1, 1);
        let first = w.next_item();
        assert_eq!(first.pages, vec![0x10_0000, 0x10_4000]);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..64 {
            for p in w.next_item().pages {
                seen.insert(p);
            }
        }
        assert_eq!(seen.len(), 16, "every page of the region is reached");
    }

    #[test]
    fn random_stays_in_region_and_mix_is_respected() {
        let mut s = spec(Pattern::Random, 1);
        s.access = AccessMix {
            read: 0,
            write: 1,
            exec: 1,
            privileged: 1.0,
        };
        let mut w = Workload::new(s, 1, 42);
        let mut kinds = std::collections::HashSet::new();
        for _ in 0..200 {
            let it = w.next_item();
            assert!(it.pages[0] >= 0x10_0000 && it.pages[0] < 0x10_0000 + 16 * PAGE_SIZE);
            assert!(it.perm.contains(Perm::READ | Perm::PRIV));
            kinds.insert(it.perm);
        }
        assert_eq!(kinds.len(), 2, "writes and executes, never plain reads");
    }
}
