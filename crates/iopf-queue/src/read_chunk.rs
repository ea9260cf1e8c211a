//! The consumer's one reader of the fault ring, a chunk at a time (as `rtrb`'s `chunks.rs`).
//!
//! Every way of reading ([`Consumer::pop_event`], [`Consumer::pop_events`],
//! [`FaultConsumer::read_faults`]) goes through it:
//!
//! 1. [`FaultReader::chunk`] finds the run of published slots from the tail: it looks at each
//!    slot's stamp once (`Acquire`), in a loop that does nothing else, so the cache lines of a
//!    batch the producer just wrote are fetched from its core together rather than one after the
//!    other (a stamp is remembered across calls, `ready_to`, so no stamp is looked at twice);
//! 2. [`ReadChunk::words`] copies slot `i` of the chunk out of the region (every word once,
//!    `Relaxed`: the stamp's `Acquire` already ordered them), and the caller decodes the copy,
//!    once;
//! 3. [`FaultReader::commit`] gives `n` slots back (the tail moves past them); slots read but not
//!    committed are read again by the next chunk (a group `read_faults` could not fit).
//!
//! The slots committed are the producer's again only once the consumer publishes its tail, which
//! it does in batches (`Consumer::return_slots`); this module does not touch the region's header.
//!
//! [`Consumer::pop_event`]: crate::Consumer::pop_event
//! [`Consumer::pop_events`]: crate::Consumer::pop_events
//! [`FaultConsumer::read_faults`]: iopf_abi::FaultConsumer::read_faults

use crate::layout::StampAt;
use crate::record::SlotWords;
use crate::shared::Shared;

/// Where the consumer is in the fault ring: its tail, and how far slots are known published.
#[derive(Debug, Default)]
pub(crate) struct FaultReader {
    /// The next slot to read: slots below it were committed.
    tail: u64,
    /// Slots from `tail` up to here were seen stamped (published); never behind `tail`.
    ready_to: u64,
}

/// A run of published fault slots from the reader's tail: `len` slots, the first at `first`.
/// It borrows nothing, so the consumer can change its own state between reads; it stays valid
/// until the reader commits past it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadChunk {
    first: u64,
    len: u64,
}

impl FaultReader {
    /// The next slot to read.
    #[inline]
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// The chunk of up to `max` published slots from the tail (whose stamps live at `at`): the
    /// slots known published, then each further slot's stamp looked at once (`Acquire`) until
    /// one is not published or `max` are known. At most a ring's worth, whatever `max` says: a
    /// producer that stamps slots past those given back (only a misbehaving one) cannot make a
    /// chunk longer than the ring.
    #[inline]
    pub fn chunk(&mut self, shared: &Shared, max: u64, at: StampAt) -> ReadChunk {
        let max = max.min(shared.geo.entries);
        let mut known = self.ready_to.wrapping_sub(self.tail);
        if known > shared.geo.entries {
            // Cannot happen (every move of the tail is a commit within a chunk); kept so that a
            // broken invariant costs a re-read, not a read of slots that were never published.
            known = 0;
        }
        if known < max {
            let from = self.tail.wrapping_add(known);
            known += Shared::published_run(shared.faults(), from, max - known, at);
        }
        self.ready_to = self.tail.wrapping_add(known);
        ReadChunk {
            first: self.tail,
            len: known.min(max),
        }
    }

    /// Whether the slot at the tail is published: known from an earlier chunk, or its stamp
    /// looked at now (and remembered).
    #[inline]
    pub fn next_published(&mut self, shared: &Shared, at: StampAt) -> bool {
        self.chunk(shared, 1, at).len == 1
    }

    /// Gives the first `n` slots from the tail back: they are read. `n` never exceeds the slots
    /// of the chunk the caller read them from.
    #[inline]
    pub fn commit(&mut self, n: u64) {
        debug_assert!(n <= self.ready_to.wrapping_sub(self.tail));
        self.tail = self.tail.wrapping_add(n);
        if self.ready_to.wrapping_sub(self.tail) > u64::MAX / 2 {
            self.ready_to = self.tail;
        }
    }
}

impl ReadChunk {
    /// Slots in the chunk.
    #[inline]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The index in the ring of slot `i` of the chunk.
    #[inline]
    pub fn index(&self, i: u64) -> u64 {
        self.first.wrapping_add(i)
    }

    /// Copies slot `i` of the chunk (`i < len`) out of the region: every word once, `Relaxed`
    /// (the stamp's `Acquire` in [`FaultReader::chunk`] ordered them). The copy is what the
    /// caller decodes, whatever the producer writes afterwards; the stamp bits in it are the
    /// decoders' to ignore.
    #[inline]
    pub fn words(&self, shared: &Shared, i: u64) -> SlotWords {
        debug_assert!(i < self.len);
        Shared::copy_published(shared.fault_slot(self.index(i)))
    }
}
