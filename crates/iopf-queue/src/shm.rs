//! The shared region: a sealed memfd mapped into both processes, seen as the typed layout of
//! [`crate::layout`] ([`Header`], [`RingSlot`]s, [`VerdictSlot`]s), all `AtomicU64` words.
//!
//! This is the crate's one `unsafe` module, and the one place the mapping is cast: once, when
//! it is mapped, into the header and the three rings the [`Geometry`] places. Everything either
//! end does to the region is an atomic load or store of a whole aligned 64-bit word, so a peer
//! writing anything at any time cannot cause undefined behaviour here: every bit pattern is a
//! valid `u64`, and atomic accesses never race in the language's sense. What the values *mean*
//! is judged elsewhere (indices bounds-checked, records copied out and then decoded).
//!
//! The producer seals the memfd's size (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`), so a hostile
//! consumer cannot `ftruncate()` it and make the producer's next access fault with `SIGBUS`. The
//! consumer checks the seals before it maps.

use std::os::fd::OwnedFd;

use crate::layout::{Geometry, Header, RingSlot, VerdictSlot};
#[cfg(not(iopf_loom))]
use crate::sync::AtomicU64;

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{MemfdFlags, SealFlags};

use crate::QueueError;

/// A mapped region laid out by a [`Geometry`]: its header and its three rings, each ring of
/// `entries` slots.
#[derive(Debug)]
pub struct Region {
    map: MmapRaw,
    geo: Geometry,
    /// Under loom the words are loom's atomics, which cannot live in a mapping: they live here,
    /// and the mapping (still made, sealed and checked) is not read.
    #[cfg(iopf_loom)]
    model: Model,
}

/// The region's parts on the heap, under loom.
#[cfg(iopf_loom)]
#[derive(Debug)]
struct Model {
    header: Box<Header>,
    faults: Vec<RingSlot>,
    responses: Vec<RingSlot>,
    verdicts: Vec<VerdictSlot>,
}

impl Region {
    /// Creates a zeroed memfd of the geometry's size (a multiple of the page size), seals its
    /// size, and maps it. Returns the mapping and the memfd (to pass to a consumer).
    pub fn create(geo: &Geometry) -> Result<(Region, OwnedFd), QueueError> {
        let fd = rustix::fs::memfd_create(
            "iopf-queue",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(|e| QueueError::os("memfd_create", e))?;
        rustix::fs::ftruncate(&fd, geo.bytes() as u64)
            .map_err(|e| QueueError::os("ftruncate", e))?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(|e| QueueError::os("F_ADD_SEALS", e))?;
        let region = Region::map_fd(&fd, geo)?;
        Ok((region, fd))
    }

    /// Maps a region received from a producer: it must be a memfd whose size is sealed and at
    /// least the size of the geometry the consumer computed from the agreement.
    pub fn map(fd: &OwnedFd, geo: &Geometry) -> Result<Region, QueueError> {
        let seals =
            rustix::fs::fcntl_get_seals(fd).map_err(|e| QueueError::os("F_GET_SEALS", e))?;
        if !seals.contains(SealFlags::SHRINK) {
            return Err(QueueError::Corrupt(
                "the region's memfd is not sealed against shrinking",
            ));
        }
        let st = rustix::fs::fstat(fd).map_err(|e| QueueError::os("fstat", e))?;
        if (st.st_size as u64) < geo.bytes() as u64 {
            return Err(QueueError::Corrupt(
                "the region's memfd is smaller than agreed",
            ));
        }
        Region::map_fd(fd, geo)
    }

    fn map_fd(fd: &OwnedFd, geo: &Geometry) -> Result<Region, QueueError> {
        let entries = geo.entries as usize;
        // What the casts below rely on, checked here rather than assumed from `Geometry::new`:
        // the header at word 0, each ring on a line boundary (a slot is a line), and every
        // ring's last slot inside the mapping.
        let fits = geo.fault_off >= crate::layout::HEADER_WORDS
            && geo.fault_off % 8 == 0
            && geo.resp_off % 8 == 0
            && geo.fault_off + entries * 8 <= geo.resp_off
            && geo.resp_off + entries * 8 <= geo.verdict_off
            && geo.verdict_off + entries * 2 <= geo.words
            && entries > 0;
        if !fits {
            return Err(QueueError::Corrupt(
                "the region's geometry does not fit its mapping",
            ));
        }
        let map = MmapOptions::new()
            .len(geo.bytes())
            .map_raw(fd)
            .map_err(|e| QueueError::os("mmap", e))?;
        Ok(Region {
            map,
            geo: *geo,
            #[cfg(iopf_loom)]
            model: Model {
                header: Box::default(),
                faults: (0..entries).map(|_| RingSlot::default()).collect(),
                responses: (0..entries).map(|_| RingSlot::default()).collect(),
                verdicts: (0..entries).map(|_| VerdictSlot::default()).collect(),
            },
        })
    }

    /// The geometry the region was mapped with.
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// `n` values of type `T` at word `off` of the mapping.
    ///
    /// `T` is one of the layout's types: `#[repr(C)]` structs of `AtomicU64` words only.
    #[cfg(not(iopf_loom))]
    fn cast<T>(&self, off: usize, n: usize) -> &[T] {
        // SAFETY: `map_fd` checked that `off` (a header at 0, or a ring's offset) plus `n`
        // values of `T` lie inside the mapping of `geo.words * 8` bytes (`size_of::<T>()` is a
        // whole number of words: asserted in `layout`), and that the slot rings start on a
        // 64-byte boundary of the page-aligned mapping (the verdict ring's `VerdictSlot` needs
        // 8 bytes, which every word offset has), so each `T` is aligned. The mapping lives until
        // `self` is dropped, which the returned borrow of `self` outlives not. `T` is made of
        // `AtomicU64`s only (size and alignment of `u64`, every bit pattern valid), and every
        // access this process makes to the region is atomic (a peer in this process is this
        // code). A peer in another process is outside this program's memory model: whatever
        // it stores, aligned 64-bit loads do not tear, and every value read is checked before
        // it is used. No `&mut` to the memory is
        // ever created.
        unsafe {
            std::slice::from_raw_parts(self.map.as_ptr().cast::<u64>().add(off).cast::<T>(), n)
        }
    }

    /// The header.
    #[cfg(not(iopf_loom))]
    #[inline]
    pub fn header(&self) -> &Header {
        &self.cast::<Header>(0, 1)[0]
    }

    /// The fault ring's `entries` slots.
    #[cfg(not(iopf_loom))]
    #[inline]
    pub fn faults(&self) -> &[RingSlot] {
        self.cast(self.geo.fault_off, self.geo.entries as usize)
    }

    /// The response ring's `entries` slots.
    #[cfg(not(iopf_loom))]
    #[inline]
    pub fn responses(&self) -> &[RingSlot] {
        self.cast(self.geo.resp_off, self.geo.entries as usize)
    }

    /// The verdict ring's `entries` slots.
    #[cfg(not(iopf_loom))]
    #[inline]
    pub fn verdicts(&self) -> &[VerdictSlot] {
        self.cast(self.geo.verdict_off, self.geo.entries as usize)
    }

    /// The whole region as words, for tools and the tests and fuzz targets that play a
    /// misbehaving peer ([`crate::Consumer::raw_region`]). The slice lives as long as the
    /// mapping.
    #[cfg(not(iopf_loom))]
    pub fn words(&self) -> &[AtomicU64] {
        self.cast(0, self.geo.words)
    }

    /// [`Region::header`] under loom.
    #[cfg(iopf_loom)]
    pub fn header(&self) -> &Header {
        let _ = &self.map;
        &self.model.header
    }

    /// [`Region::faults`] under loom.
    #[cfg(iopf_loom)]
    pub fn faults(&self) -> &[RingSlot] {
        &self.model.faults
    }

    /// [`Region::responses`] under loom.
    #[cfg(iopf_loom)]
    pub fn responses(&self) -> &[RingSlot] {
        &self.model.responses
    }

    /// [`Region::verdicts`] under loom.
    #[cfg(iopf_loom)]
    pub fn verdicts(&self) -> &[VerdictSlot] {
        &self.model.verdicts
    }
}

#[cfg(all(test, not(iopf_loom)))]
mod tests {
    use super::*;
    use crate::negotiate::{negotiate, Offer, Request};
    use std::sync::atomic::Ordering;

    fn geometry(entries: u32) -> Geometry {
        let mut r = Request::v1();
        r.entries = entries;
        Geometry::new(&negotiate(&Offer::current(), &r).expect("a valid request"))
    }

    #[test]
    fn a_second_mapping_sees_the_first_ones_writes_and_the_size_is_sealed() {
        let geo = geometry(64);
        let (a, fd) = Region::create(&geo).unwrap();
        let b = Region::map(&fd, &geo).unwrap();
        a.faults()[63].0[7].store(0xfeed, Ordering::Release);
        assert_eq!(b.faults()[63].0[7].load(Ordering::Acquire), 0xfeed);
        assert_eq!(
            b.words()[geo.fault_off + 63 * 8 + 7].load(Ordering::Acquire),
            0xfeed,
            "the typed views and the words are one mapping"
        );
        a.header().judged.store(7, Ordering::Release);
        assert_eq!(
            b.words()[crate::layout::hdr::JUDGED].load(Ordering::Acquire),
            7
        );
        a.verdicts()[63].0[1].store(9, Ordering::Release);
        assert_eq!(b.words()[geo.verdict_off + 127].load(Ordering::Acquire), 9);
        assert_eq!(b.words().len(), geo.words);
        assert!(rustix::fs::ftruncate(&fd, 4096).is_err());
        assert!(matches!(
            Region::map(&fd, &geometry(4096)),
            Err(QueueError::Corrupt(_))
        ));
    }

    #[test]
    fn an_unsealed_memfd_is_refused() {
        let geo = geometry(2);
        let fd = rustix::fs::memfd_create("t", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, geo.bytes() as u64).unwrap();
        assert!(matches!(
            Region::map(&fd, &geo),
            Err(QueueError::Corrupt(_))
        ));
    }
}
