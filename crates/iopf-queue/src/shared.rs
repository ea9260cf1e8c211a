//! A mapped region together with the geometry both ends computed from their agreement: word
//! accessors, and the header written by the producer and checked by the consumer.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::layout::{hdr, pack, Geometry, StampAt, FAULT_SLOT_WORDS, MAGIC};
use crate::negotiate::Agreement;
use crate::shm::Region;
use crate::sync::AtomicU64;
use crate::QueueError;

/// The stamp of the first slot written since the last publication, held back until the batch
/// is published (see [`crate::wake`]): a reader stops at that slot, so the later slots' stamps
/// can be stored as they are written.
#[derive(Debug, Default)]
pub(crate) struct HeldStamp(Option<(usize, u64)>);

impl HeldStamp {
    /// The held stamp word's index and value, to publish; `None` when nothing was written since
    /// the last publication.
    #[inline]
    pub fn take(&mut self) -> Option<(usize, u64)> {
        self.0.take()
    }

    /// Whether a stamp is held (slots were written and not yet published).
    #[inline]
    pub fn is_held(&self) -> bool {
        self.0.is_some()
    }
}

/// The region and its geometry. Every index into the region is computed from `geo`, which
/// [`Shared::new`] checked against the mapping's length, so no access is out of bounds.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    region: Arc<Region>,
    pub geo: Geometry,
}

impl Shared {
    pub fn new(region: Arc<Region>, geo: Geometry) -> Result<Shared, QueueError> {
        if region.words().len() < geo.words {
            return Err(QueueError::Corrupt(
                "the mapping is smaller than the agreed region",
            ));
        }
        Ok(Shared { region, geo })
    }

    /// Word `i` of the region. `i` always comes from `geo` (below `geo.words`).
    #[inline]
    pub fn w(&self, i: usize) -> &AtomicU64 {
        &self.region.words()[i]
    }

    /// The header's words, as an array so that a caller that takes it once indexes it with
    /// constants and no bounds checks. [`Shared::new`] checked that the mapping holds the whole
    /// geometry, header first, so the all-zero stand-in is never returned.
    #[cfg(not(iopf_loom))]
    #[inline]
    pub fn header(&self) -> &[AtomicU64; hdr::WORDS] {
        static NONE: [AtomicU64; hdr::WORDS] = [const { AtomicU64::new(0) }; hdr::WORDS];
        self.region.words().first_chunk().unwrap_or(&NONE)
    }

    /// [`Shared::header`] under loom, whose atomics have no `const` constructor for the
    /// stand-in.
    #[cfg(iopf_loom)]
    pub fn header(&self) -> &[AtomicU64; hdr::WORDS] {
        self.region
            .words()
            .first_chunk()
            .expect("Shared::new checked that the mapping holds the header")
    }

    /// Words `base..base + n` of the region; both always come from `geo` (a slot), which
    /// [`Shared::new`] checked against the mapping, so this never comes out short.
    #[inline]
    pub fn words_at(&self, base: usize, n: usize) -> &[AtomicU64] {
        let words = self.region.words();
        words.get(base..base + n).unwrap_or(&[])
    }

    /// Writes a slot of a stamped ring (fault or response) at word `base`: every word but the
    /// stamp word (`Relaxed`), then the stamp word with `stamp` in it — held in `held` if it is
    /// the batch's first slot, stored with `Release` otherwise. The stamp bits of `words` are
    /// zero (the slot encoders leave them so); the slot comes from the geometry, so it is whole.
    #[inline(always)]
    pub fn write_stamped<const N: usize>(
        &self,
        base: usize,
        words: &[u64; N],
        at: StampAt,
        stamp: u32,
        held: &mut HeldStamp,
    ) {
        let (word, stamped) = self.write_unstamped(base, words, at, stamp);
        if held.0.is_none() {
            held.0 = Some((word, stamped));
        } else {
            self.w(word).store(stamped, Ordering::Release);
        }
    }

    /// Writes every word of a slot but its stamp word (`Relaxed`) and returns the stamp word's
    /// index and value (with `stamp` in it), for the caller to publish the slot with.
    #[inline(always)]
    pub fn write_unstamped<const N: usize>(
        &self,
        base: usize,
        words: &[u64; N],
        at: StampAt,
        stamp: u32,
    ) -> (usize, u64) {
        let slot = self.words_at(base, N);
        for (i, (w, &v)) in slot.iter().zip(words).enumerate() {
            if i != at.word {
                w.store(v, Ordering::Relaxed);
            }
        }
        (base + at.word, at.set(words[at.word], stamp))
    }

    /// Whether the slot whose stamp word is `word` carries `stamp` at `at` (an `Acquire` load:
    /// when it does, the writer's stores to the slot's other words are visible).
    #[inline(always)]
    pub fn stamped(&self, word: usize, at: StampAt, stamp: u32) -> bool {
        at.get(self.w(word).load(Ordering::Acquire)) == stamp
    }

    /// Copies the `N`-word slot at word `base`, every word once, `Relaxed`: for a slot whose
    /// stamp the caller has already seen with an `Acquire` load ([`Shared::stamped`]), which
    /// makes the writer's stores to it visible. The slot comes from the geometry, so it is
    /// whole.
    #[inline(always)]
    pub fn copy_published<const N: usize>(&self, base: usize) -> [u64; N] {
        match self
            .region
            .words()
            .get(base..)
            .and_then(<[AtomicU64]>::first_chunk::<N>)
        {
            Some(slot) => slot.each_ref().map(|v| v.load(Ordering::Relaxed)),
            None => [0; N],
        }
    }

    /// How many slots from `index` on, at most `max`, carry their index's stamp at `at` (each
    /// stamp looked at once, `Acquire`, in a loop that does nothing else, so that the lines of a
    /// batch are fetched together); `slot` gives a slot's first word. Readers of both stamped
    /// rings find their runs with it.
    #[inline(always)]
    pub fn published_run(
        &self,
        index: u64,
        max: u64,
        at: StampAt,
        slot: impl Fn(&Geometry, u64) -> usize,
    ) -> u64 {
        // The words taken once: an `Acquire` load keeps later loads after it, so a slice
        // looked up through the region in the loop would be looked up again for every slot.
        let words = self.region.words();
        let mut n = 0;
        while n < max {
            let i = index.wrapping_add(n);
            let Some(w) = words.get(slot(&self.geo, i) + at.word) else {
                break;
            };
            if at.get(w.load(Ordering::Acquire)) != crate::layout::stamp(i) {
                break;
            }
            n += 1;
        }
        n
    }

    /// Every word of the region.
    pub fn words(&self) -> &[AtomicU64] {
        self.region.words()
    }

    /// The header words describing `a`, as the producer writes them.
    fn header_fields(&self, a: &Agreement) -> [(usize, u64); 8] {
        let g = &self.geo;
        [
            (hdr::MAGIC, MAGIC),
            (
                hdr::VERSION_RECORD,
                pack(a.abi_version, a.record.bits().bits()),
            ),
            (
                hdr::RESPONSES_SLOT,
                pack(a.responses.bits(), FAULT_SLOT_WORDS as u32 * 8),
            ),
            (hdr::ENTRIES, pack(a.entries, a.entries)),
            (hdr::FEATURES, a.features.bits()),
            (
                hdr::RING_OFFS,
                pack(g.fault_off as u32 * 8, g.resp_off as u32 * 8),
            ),
            (hdr::VERDICT_OFF, g.verdict_off as u64 * 8),
            (hdr::SIZE, g.bytes() as u64),
        ]
    }

    /// Producer: writes the header (before the consumer can see the region).
    pub fn write_header(&self, a: &Agreement) {
        for (i, v) in self.header_fields(a) {
            self.w(i).store(v, Ordering::Release);
        }
    }

    /// Consumer: checks that the header says what was agreed.
    pub fn check_header(&self, a: &Agreement) -> Result<(), QueueError> {
        if self.w(hdr::MAGIC).load(Ordering::Acquire) != MAGIC {
            return Err(QueueError::Corrupt("bad magic"));
        }
        for (i, v) in self.header_fields(a) {
            if self.w(i).load(Ordering::Acquire) != v {
                return Err(QueueError::Corrupt(
                    "the header does not describe what was agreed",
                ));
            }
        }
        Ok(())
    }
}
