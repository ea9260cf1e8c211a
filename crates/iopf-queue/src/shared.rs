//! A mapped region together with the geometry both ends computed from their agreement: the
//! typed parts of the region ([`Header`], the rings' slots), the stamped-slot rules both ends
//! write and read by, and the header written by the producer and checked by the consumer.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::layout::{
    pack, stamp, Geometry, Header, RingSlot, StampAt, VerdictSlot, FAULT_SLOT_WORDS, MAGIC,
    RING_SLOT_WORDS,
};
use crate::negotiate::Agreement;
use crate::shm::Region;
use crate::sync::AtomicU64;
use crate::QueueError;

/// The words of a slot of either stamped ring, as they are written and as a copy is read.
pub(crate) type RingWords = [u64; RING_SLOT_WORDS];

/// The stamp of the first slot written since the last publication, held back until the batch
/// is published (see [`crate::wake`]): a reader stops at that slot, so the later slots' stamps
/// can be stored as they are written. Which ring it belongs to is its holder's: the producer's
/// is a fault slot's, the consumer's a response slot's.
#[derive(Debug, Default)]
pub(crate) struct HeldStamp(Option<(u64, u64)>);

impl HeldStamp {
    /// The held slot's free-running index and its stamp word's value, to publish; `None` when
    /// nothing was written since the last publication.
    #[inline]
    pub fn take(&mut self) -> Option<(u64, u64)> {
        self.0.take()
    }

    /// Whether a stamp is held (slots were written and not yet published).
    #[inline]
    pub fn is_held(&self) -> bool {
        self.0.is_some()
    }
}

/// The region and its geometry. The region was mapped for `geo` ([`Region::map`] checked it
/// against the mapping), so every slot a free-running index names is inside it.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    region: Arc<Region>,
    pub geo: Geometry,
}

impl Shared {
    pub fn new(region: Arc<Region>, geo: Geometry) -> Result<Shared, QueueError> {
        if region.geometry() != &geo {
            return Err(QueueError::Corrupt(
                "the mapping was made for another geometry",
            ));
        }
        Ok(Shared { region, geo })
    }

    /// The header.
    #[inline]
    pub fn header(&self) -> &Header {
        self.region.header()
    }

    /// The fault ring's slots, for a loop that takes them once.
    #[inline]
    pub fn faults(&self) -> &[RingSlot] {
        self.region.faults()
    }

    /// Fault slot `index` (free-running).
    #[inline]
    pub fn fault_slot(&self, index: u64) -> &RingSlot {
        &self.region.faults()[self.geo.slot(index)]
    }

    /// Response slot `index` (free-running).
    #[inline]
    pub fn resp_slot(&self, index: u64) -> &RingSlot {
        &self.region.responses()[self.geo.slot(index)]
    }

    /// The response ring's slots, for a loop that takes them once.
    #[inline]
    pub fn responses(&self) -> &[RingSlot] {
        self.region.responses()
    }

    /// Verdict slot `index` (free-running).
    #[inline]
    pub fn verdict_slot(&self, index: u64) -> &VerdictSlot {
        &self.region.verdicts()[self.geo.slot(index)]
    }

    /// Every word of the region (for [`crate::Consumer::raw_region`]).
    #[cfg(not(iopf_loom))]
    pub fn words(&self) -> &[AtomicU64] {
        self.region.words()
    }

    /// Writes slot `index` of a stamped ring (fault or response), `slot`: every word but the
    /// stamp word (`Relaxed`), then the stamp word with the index's stamp in it — held in
    /// `held` if it is the batch's first slot, stored with `Release` otherwise. The stamp bits
    /// of `words` are zero (the slot encoders leave them so).
    #[inline]
    pub fn write_stamped(
        slot: &RingSlot,
        index: u64,
        words: &RingWords,
        at: StampAt,
        held: &mut HeldStamp,
    ) {
        Shared::write_stamped_into(slot, index, words, at, &mut held.0);
    }

    /// Writes the slots of a stamped ring, `ring`, from free-running index `first` on, one for
    /// each of `slots` (the writer has room for them all), each by the rule of
    /// [`Shared::write_stamped`]; returns how many were written. The held stamp is kept in a
    /// local for the run and given back to `held` once, so the loop stores the slots and nothing
    /// else: the writer's counters, kept in memory from one slot to the next, took up to five of
    /// the store buffer's entries a slot, and the store buffer is what bounds how many slot lines
    /// are on their way to the reader's core at once (docs/PERFORMANCE.md, "Batches").
    #[inline]
    pub fn write_stamped_run(
        ring: &[RingSlot],
        first: u64,
        at: StampAt,
        held: &mut HeldStamp,
        slots: impl IntoIterator<Item = RingWords>,
    ) -> u64 {
        let mask = (ring.len() as u64).wrapping_sub(1);
        let mut local = held.0.take();
        let mut index = first;
        for words in slots {
            // `ring` has a power-of-two number of slots (the geometry's), so this is in it.
            let slot = &ring[(index & mask) as usize];
            Shared::write_stamped_into(slot, index, &words, at, &mut local);
            index = index.wrapping_add(1);
        }
        held.0 = local;
        index.wrapping_sub(first)
    }

    /// The rule of [`Shared::write_stamped`], with the held stamp where the caller keeps it.
    #[inline]
    fn write_stamped_into(
        slot: &RingSlot,
        index: u64,
        words: &RingWords,
        at: StampAt,
        held: &mut Option<(u64, u64)>,
    ) {
        let stamped = Shared::write_unstamped(slot, words, at, stamp(index));
        if held.is_none() {
            *held = Some((index, stamped));
        } else {
            slot.0[at.word].store(stamped, Ordering::Release);
        }
    }

    /// Writes every word of `slot` but its stamp word (`Relaxed`) and returns the stamp word's
    /// value (with `stamp` in it), for the caller to publish the slot with.
    #[inline]
    pub fn write_unstamped(slot: &RingSlot, words: &RingWords, at: StampAt, stamp: u32) -> u64 {
        for (i, (w, &v)) in slot.0.iter().zip(words).enumerate() {
            if i != at.word {
                w.store(v, Ordering::Relaxed);
            }
        }
        at.set(words[at.word], stamp)
    }

    /// Whether `slot` carries `stamp` at `at` (an `Acquire` load: when it does, the writer's
    /// stores to the slot's other words are visible).
    #[inline]
    pub fn stamped(slot: &RingSlot, at: StampAt, stamp: u32) -> bool {
        at.get(slot.0[at.word].load(Ordering::Acquire)) == stamp
    }

    /// Copies `slot`, every word once, `Relaxed`: for a slot whose stamp the caller has already
    /// seen with an `Acquire` load ([`Shared::stamped`], [`Shared::published_run`]), which makes
    /// the writer's stores to it visible. The copy is what the reader decodes, whatever the
    /// writer stores afterwards.
    #[inline]
    pub fn copy_published(slot: &RingSlot) -> RingWords {
        slot.0.each_ref().map(|v| v.load(Ordering::Relaxed))
    }

    /// How many slots of `ring` from free-running index `index` on, at most `max`, carry their
    /// index's stamp at `at` (each stamp looked at once, `Acquire`, in a loop that does nothing
    /// else, so that the lines of a batch are fetched together). Readers of both stamped rings
    /// find their runs with it; `ring` is taken once by the caller, as an `Acquire` load keeps
    /// later loads after it and a ring looked up through the region in the loop would be looked
    /// up again for every slot.
    #[inline]
    pub fn published_run(ring: &[RingSlot], index: u64, max: u64, at: StampAt) -> u64 {
        let mask = ring.len().wrapping_sub(1) as u64;
        let mut n = 0;
        while n < max {
            let i = index.wrapping_add(n);
            let Some(slot) = ring.get((i & mask) as usize) else {
                break;
            };
            if !Shared::stamped(slot, at, stamp(i)) {
                break;
            }
            n += 1;
        }
        n
    }

    /// The header's description of `a`, as the producer writes it: each word with its value.
    fn header_fields<'h>(&self, h: &'h Header, a: &Agreement) -> [(&'h AtomicU64, u64); 8] {
        let g = &self.geo;
        [
            (&h.magic, MAGIC),
            (
                &h.version_record,
                pack(a.abi_version, a.record.bits().bits()),
            ),
            (
                &h.responses_slot,
                pack(a.responses.bits(), FAULT_SLOT_WORDS as u32 * 8),
            ),
            (&h.entries, pack(a.entries, a.entries)),
            (&h.features, a.features.bits()),
            (
                &h.ring_offs,
                pack(g.fault_off as u32 * 8, g.resp_off as u32 * 8),
            ),
            (&h.verdict_off, g.verdict_off as u64 * 8),
            (&h.size, g.bytes() as u64),
        ]
    }

    /// Producer: writes the header (before the consumer can see the region).
    pub fn write_header(&self, a: &Agreement) {
        for (w, v) in self.header_fields(self.header(), a) {
            w.store(v, Ordering::Release);
        }
    }

    /// Consumer: checks that the header says what was agreed.
    pub fn check_header(&self, a: &Agreement) -> Result<(), QueueError> {
        let h = self.header();
        if h.magic.load(Ordering::Acquire) != MAGIC {
            return Err(QueueError::Corrupt("bad magic"));
        }
        for (w, v) in self.header_fields(h, a) {
            if w.load(Ordering::Acquire) != v {
                return Err(QueueError::Corrupt(
                    "the header does not describe what was agreed",
                ));
            }
        }
        Ok(())
    }
}
