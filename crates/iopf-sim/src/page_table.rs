//! Per-PASID I/O page tables: sparse, 4 KiB pages, each with its permissions.
//!
//! The IOMMU walks them to translate a device's access (an ATS Translation Request); the resolver
//! on the consumer side fills them in (demand paging, what a VMM does with `IOMMU_IOAS_MAP` before
//! answering SUCCESS). Only present pages take memory.

use std::sync::RwLock;

use rustc_hash::FxHashMap as HashMap;

use iopf_abi::Perm;

use crate::SimError;

/// The page size of the simulated I/O page tables: 4 KiB.
pub const PAGE_SIZE: u64 = 4096;

/// A device function's identity on the platform (its requester id, and the `dev_id` the fault
/// queue reports).
pub type FunctionId = u32;

/// The outcome of translating one access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    /// The page is present with every permission the access asked for.
    Mapped,
    /// No page is mapped at that address: a page request is needed.
    NotPresent,
    /// A page is mapped but lacks a permission the access needs (e.g. a write to a read-only
    /// page): a page request asking for the missing permission is needed.
    Denied,
}

/// One address space: the I/O page table bound to one PASID of one device. (Keyed with FxHash:
/// the keys are page numbers chosen by the simulation, not by an adversary, and translation is
/// the platform's hottest path.)
#[derive(Debug, Default, Clone)]
pub struct IoPageTable {
    pages: HashMap<u64, Perm>,
}

impl IoPageTable {
    /// Maps the 4 KiB page at `iova` with `perm`, adding to what it already had.
    /// Error: [`SimError::Unaligned`] if `iova` is not page aligned.
    pub fn map(&mut self, iova: u64, perm: Perm) -> Result<(), SimError> {
        if iova % PAGE_SIZE != 0 {
            return Err(SimError::Unaligned(iova));
        }
        *self.pages.entry(iova / PAGE_SIZE).or_default() |= perm;
        Ok(())
    }

    /// Removes the page holding `iova`; returns whether one was mapped.
    pub fn unmap(&mut self, iova: u64) -> bool {
        self.pages.remove(&(iova / PAGE_SIZE)).is_some()
    }

    /// The permissions of the page holding `iova`, if it is mapped.
    pub fn lookup(&self, iova: u64) -> Option<Perm> {
        self.pages.get(&(iova / PAGE_SIZE)).copied()
    }

    /// Translates an access of kind `access` to `iova` (any offset in the page).
    pub fn translate(&self, iova: u64, access: Perm) -> Translation {
        match self.lookup(iova) {
            None => Translation::NotPresent,
            Some(have) if have.contains(access) => Translation::Mapped,
            Some(_) => Translation::Denied,
        }
    }

    /// How many pages are mapped.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }
}

/// Every address space of the platform, keyed by (device, PASID), shared between the IOMMU
/// (which reads) and the resolver (which maps). A PASID without a table translates nothing.
#[derive(Debug, Default)]
pub struct PageTables {
    tables: RwLock<HashMap<(FunctionId, u32), IoPageTable>>,
}

impl PageTables {
    /// An empty set of tables.
    pub fn new() -> PageTables {
        PageTables::default()
    }

    /// Translates `access` to `iova` in the address space of (`dev`, `pasid`).
    pub fn translate(&self, dev: FunctionId, pasid: u32, iova: u64, access: Perm) -> Translation {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        tables
            .get(&(dev, pasid))
            .map_or(Translation::NotPresent, |t| t.translate(iova, access))
    }

    /// Maps a page in the address space of (`dev`, `pasid`), creating the table if needed.
    /// Error: [`SimError::Unaligned`].
    pub fn map(&self, dev: FunctionId, pasid: u32, iova: u64, perm: Perm) -> Result<(), SimError> {
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        tables.entry((dev, pasid)).or_default().map(iova, perm)
    }

    /// Pages mapped in the address space of (`dev`, `pasid`).
    pub fn mapped_pages(&self, dev: FunctionId, pasid: u32) -> usize {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        tables.get(&(dev, pasid)).map_or(0, IoPageTable::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translation_needs_every_permission() {
        let mut t = IoPageTable::default();
        assert_eq!(t.translate(0x1000, Perm::READ), Translation::NotPresent);
        t.map(0x1000, Perm::READ).unwrap();
        assert_eq!(t.translate(0x1fff, Perm::READ), Translation::Mapped);
        assert_eq!(t.translate(0x1000, Perm::WRITE), Translation::Denied);
        t.map(0x1000, Perm::WRITE).unwrap();
        assert_eq!(
            t.translate(0x1000, Perm::READ | Perm::WRITE),
            Translation::Mapped
        );
        assert_eq!(t.translate(0x2000, Perm::READ), Translation::NotPresent);
        assert!(t.unmap(0x1800));
        assert!(t.is_empty());
    }

    #[test]
    fn unaligned_map_is_refused() {
        let mut t = IoPageTable::default();
        assert!(matches!(
            t.map(0x1001, Perm::READ),
            Err(SimError::Unaligned(0x1001))
        ));
    }

    #[test]
    fn address_spaces_are_separate() {
        let pt = PageTables::new();
        pt.map(1, 5, 0x4000, Perm::READ).unwrap();
        assert_eq!(pt.translate(1, 5, 0x4000, Perm::READ), Translation::Mapped);
        assert_eq!(
            pt.translate(1, 6, 0x4000, Perm::READ),
            Translation::NotPresent
        );
        assert_eq!(
            pt.translate(2, 5, 0x4000, Perm::READ),
            Translation::NotPresent
        );
        assert_eq!(pt.mapped_pages(1, 5), 1);
    }
}
