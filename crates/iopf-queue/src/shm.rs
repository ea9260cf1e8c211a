//! The shared region: a sealed memfd mapped into both processes, seen only as `AtomicU64` words.
//!
//! This is the crate's one `unsafe` module. Everything either end does to the region is an atomic
//! load or store of a whole aligned 64-bit word, so a peer writing anything at any time cannot
//! cause undefined behaviour here: every bit pattern is a valid `u64`, and atomic accesses never
//! race in the language's sense. What the values *mean* is judged elsewhere (indices
//! bounds-checked, records copied out and then decoded).
//!
//! The producer seals the memfd's size (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`), so a hostile
//! consumer cannot `ftruncate()` it and make the producer's next access fault with `SIGBUS`. The
//! consumer checks the seals before it maps.

use std::os::fd::OwnedFd;

use crate::sync::AtomicU64;

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{MemfdFlags, SealFlags};

use crate::QueueError;

/// A mapped region of `words` 64-bit words.
#[derive(Debug)]
pub struct Region {
    map: MmapRaw,
    words: usize,
    /// Under loom the words are loom's atomics, which cannot live in a mapping: they live here,
    /// and the mapping (still made, sealed and checked) is not read.
    #[cfg(iopf_loom)]
    model: Vec<AtomicU64>,
}

impl Region {
    /// Creates a zeroed memfd of `bytes` (a multiple of the page size), seals its size, and maps
    /// it. Returns the mapping and the memfd (to pass to a consumer).
    pub fn create(bytes: usize) -> Result<(Region, OwnedFd), QueueError> {
        let fd = rustix::fs::memfd_create(
            "iopf-queue",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(|e| QueueError::os("memfd_create", e))?;
        rustix::fs::ftruncate(&fd, bytes as u64).map_err(|e| QueueError::os("ftruncate", e))?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(|e| QueueError::os("F_ADD_SEALS", e))?;
        let region = Region::map_fd(&fd, bytes)?;
        Ok((region, fd))
    }

    /// Maps a region received from a producer: it must be a memfd whose size is sealed and at
    /// least `bytes` long (the size the consumer computed from the agreement).
    pub fn map(fd: &OwnedFd, bytes: usize) -> Result<Region, QueueError> {
        let seals =
            rustix::fs::fcntl_get_seals(fd).map_err(|e| QueueError::os("F_GET_SEALS", e))?;
        if !seals.contains(SealFlags::SHRINK) {
            return Err(QueueError::Corrupt(
                "the region's memfd is not sealed against shrinking",
            ));
        }
        let st = rustix::fs::fstat(fd).map_err(|e| QueueError::os("fstat", e))?;
        if (st.st_size as u64) < bytes as u64 {
            return Err(QueueError::Corrupt(
                "the region's memfd is smaller than agreed",
            ));
        }
        Region::map_fd(fd, bytes)
    }

    fn map_fd(fd: &OwnedFd, bytes: usize) -> Result<Region, QueueError> {
        if bytes == 0 || bytes % 8 != 0 {
            return Err(QueueError::Corrupt(
                "region size is not a whole number of words",
            ));
        }
        let map = MmapOptions::new()
            .len(bytes)
            .map_raw(fd)
            .map_err(|e| QueueError::os("mmap", e))?;
        Ok(Region {
            map,
            words: bytes / 8,
            #[cfg(iopf_loom)]
            model: (0..bytes / 8).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// The region as words. The slice lives as long as the mapping.
    #[cfg(iopf_loom)]
    pub fn words(&self) -> &[AtomicU64] {
        let _ = &self.map;
        &self.model[..self.words]
    }

    /// The region as words. The slice lives as long as the mapping.
    #[cfg(not(iopf_loom))]
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: `map` is a live shared mapping of `words * 8` bytes (checked in `map_fd`; mmap
        // returns page-aligned memory, so 8-byte alignment holds) that stays mapped until `self`
        // is dropped, which the returned borrow of `self` outlives not. `AtomicU64` has the size
        // and alignment of `u64`, every bit pattern is a valid value, and all accesses to the
        // region, in this process and the peer's, go through atomic operations, so concurrent
        // writes by the peer are not data races. No `&mut` to the memory is ever created.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<AtomicU64>(), self.words) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_second_mapping_sees_the_first_ones_writes_and_the_size_is_sealed() {
        let (a, fd) = Region::create(8192).unwrap();
        let b = Region::map(&fd, 8192).unwrap();
        a.words()[1023].store(0xfeed, Ordering::Release);
        assert_eq!(b.words()[1023].load(Ordering::Acquire), 0xfeed);
        assert_eq!(b.words().len(), 1024);
        assert!(rustix::fs::ftruncate(&fd, 4096).is_err());
        assert!(matches!(
            Region::map(&fd, 16384),
            Err(QueueError::Corrupt(_))
        ));
    }

    #[test]
    fn an_unsealed_memfd_is_refused() {
        let fd = rustix::fs::memfd_create("t", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 4096).unwrap();
        assert!(matches!(
            Region::map(&fd, 4096),
            Err(QueueError::Corrupt(_))
        ));
    }
}
