//! The shared region's layout: where every header field, ring and slot lives, in 64-bit words.
//!
//! ```text
//!  word 0       header, line 0: magic, version|record format, response formats|fault slot bytes,
//!               entries, features, fault ring offset, response ring offset, verdict ring offset,
//!               region size        (written once by the producer, before the consumer maps it)
//!  word 8       fault_head        (producer)      \
//!  word 16      fault_tail        (consumer)       |
//!  word 24      resp_head         (consumer)       |  one cache line each, so the two
//!  word 32      resp_tail, judged (producer)       |  ends never share a line they write
//!  word 40      verdict_head      (producer)       |
//!  word 48      verdict_tail      (consumer)       |
//!  word 56      consumer_sleeping (consumer; producer clears it when it rings)
//!  word 64      producer_sleeping (producer; consumer clears it when it rings)
//!  word 72      next_seq, lost    (producer)
//!  word 80      flags             (consumer: CONSUMER_CLOSED, CONSUMER_MEMBARRIER)
//!  word 88      producer flags    (producer, written once before the consumer maps the region:
//!                                  PRODUCER_MEMBARRIER)
//!  word 96      lost by reason    (producer: records lost for each `LossReason`, word 96 + its
//!                                  number, updated the moment a loss happens)
//!  word 104     room_wait         (producer: it sleeps with groups held back, waiting for
//!                                  room; consumer clears it when it rings on returning slots)
//!  word 112     resp_room_wait    (consumer: it sleeps on a full response ring, waiting for
//!                                  room; producer clears it when it rings on judging responses)
//!  word 128     fault ring:    entries × 8 words    (one record a slot, see `record`: the
//!               `iommu_fault` with seq, cookie and dev_id in its reserved bytes and the stamp in
//!               its `padding`; or seq, kind|cookie, stamp|dev_id, then the 40-byte record)
//!  ...          response ring: entries × 8 words    (slot: len|format|stamp, 56 bytes of
//!               response: one VFIO or cookie response, or up to 7 packed cookie responses)
//!  ...          verdict ring:  entries × 2 words    (slot: response id, errno|reason), for
//!               rejections only: a response below `judged` (the producer's watermark, counted
//!               in responses) with no entry here was accepted
//! ```
//!
//! The layout is typed: the header is one `#[repr(C)]` struct (`Header`, whose field offsets
//! give the word numbers above and [`hdr`]'s constants), a fault or response slot a
//! `RingSlot` (one line), a verdict slot a `VerdictSlot`; the crate's one unsafe module casts the mapping into
//! them once, where it maps it, and the ends use the fields by name.
//!
//! Indices are free-running `u64` counters; a slot is `index & (entries - 1)`. The ring sizes and
//! offsets are computed from the [`Agreement`] by each end on its own; neither end ever takes an
//! offset or a size from the region to index it.
//!
//! **Stamps.** The slots of the fault and response rings say themselves whether they are full: a
//! slot written for index `i` carries the stamp `(i + 1) as u32`, stored last (release), and the
//! reader at index `i` takes the slot when the stamp matches and not before. The previous lap's
//! stamp is `i + 1 - entries`, never equal, and a zeroed region matches no index a slot is read
//! at. So a reader polls the slot it wants next, one cache line that the record itself brings,
//! instead of the writer's head index on a line of its own, then the slot: one line fewer to cross
//! the cores per record, and one fewer on the round trip each way. The heads (`fault_head`,
//! `resp_head`) are still written, for tools that look at the region; neither end reads them.
//! Tails stay indices: a writer re-reads the reader's tail only when its cached copy says full.

use crate::negotiate::{Agreement, RecordFormat};
use crate::sync::AtomicU64;

/// `"IOPFQ\0\0\x05"`: the region's magic. The last byte is the region format's version: 2 added
/// the judged watermark and packed cookie responses, 3 the slot stamps, 4 the loss reasons (in
/// loss records and the header), 5 the consumer's wait for response room, so an older peer is
/// refused ("bad magic") instead of waiting on a head nobody reads or a ring nobody rings.
pub const MAGIC: u64 = u64::from_le_bytes(*b"IOPFQ\0\0\x05");

/// The region's header: one struct, `#[repr(C)]`, laid over the mapping's first 1 KiB by
/// [`crate::shm`] (the one place the region is cast). Each line is 64 bytes; the hot words each
/// have a line of their own (the `_line_*` words fill it), so the two ends never share a line
/// they write. Changing it changes the region format: bump [`MAGIC`]'s version.
#[repr(C, align(64))]
#[cfg_attr(iopf_loom, derive(Default, Debug))]
pub(crate) struct Header {
    // Line 0: the description, written once by the producer before the consumer maps it.
    pub magic: AtomicU64,
    /// ABI version (low) | record format (high).
    pub version_record: AtomicU64,
    /// Response formats (low) | fault slot bytes (high).
    pub responses_slot: AtomicU64,
    /// Fault ring entries (low) | response ring entries (high).
    pub entries: AtomicU64,
    pub features: AtomicU64,
    /// Fault ring offset (low) | response ring offset (high), in bytes.
    pub ring_offs: AtomicU64,
    /// Verdict ring offset, in bytes.
    pub verdict_off: AtomicU64,
    /// Region size, in bytes.
    pub size: AtomicU64,
    /// The producer's fault head (for tools: neither end reads it, the stamps say what is full).
    pub fault_head: AtomicU64,
    _line_fault_head: [AtomicU64; 7],
    /// The consumer's fault tail: slots below it are the producer's again.
    pub fault_tail: AtomicU64,
    _line_fault_tail: [AtomicU64; 7],
    /// The consumer's response head (for tools, as `fault_head`).
    pub resp_head: AtomicU64,
    _line_resp_head: [AtomicU64; 7],
    /// The producer's response tail.
    pub resp_tail: AtomicU64,
    /// Responses judged (the verdict watermark), on `resp_tail`'s line: the producer writes
    /// both at once and the consumer reads both.
    pub judged: AtomicU64,
    _line_resp_tail: [AtomicU64; 6],
    pub verdict_head: AtomicU64,
    _line_verdict_head: [AtomicU64; 7],
    pub verdict_tail: AtomicU64,
    _line_verdict_tail: [AtomicU64; 7],
    /// The consumer sleeps (the producer clears it when it rings).
    pub consumer_sleeping: AtomicU64,
    _line_consumer_sleeping: [AtomicU64; 7],
    /// The producer sleeps (the consumer clears it when it rings).
    pub producer_sleeping: AtomicU64,
    _line_producer_sleeping: [AtomicU64; 7],
    /// The next sequence number the producer gives a record.
    pub next_seq: AtomicU64,
    /// Records lost in all.
    pub lost: AtomicU64,
    _line_next_seq: [AtomicU64; 6],
    /// The consumer's flags (`FLAG_CONSUMER_*`).
    pub flags: AtomicU64,
    _line_flags: [AtomicU64; 7],
    /// The producer's flags (`PRODUCER_FLAG_*`), written once before the consumer maps the
    /// region.
    pub producer_flags: AtomicU64,
    _line_producer_flags: [AtomicU64; 7],
    /// Records lost for each `LossReason`: reason `r` (numbered from 1) at index `r`, updated
    /// the moment a loss happens.
    pub lost_by_reason: [AtomicU64; 8],
    /// The producer sleeps with groups held back and wants a ring when slots come back.
    pub room_wait: AtomicU64,
    _line_room_wait: [AtomicU64; 7],
    /// The consumer sleeps on a full response ring and wants a ring when responses are judged.
    pub resp_room_wait: AtomicU64,
    _line_resp_room_wait: [AtomicU64; 7],
    _spare: [AtomicU64; 8],
}

/// A slot of the fault ring or of the response ring: one cache line, so a record (a response)
/// crosses from one core to the other as one line, and neighbouring slots never share one.
#[repr(C, align(64))]
#[cfg_attr(iopf_loom, derive(Default, Debug))]
pub(crate) struct RingSlot(pub [AtomicU64; RING_SLOT_WORDS]);

/// A slot of the verdict ring: response id; errno | reason.
#[repr(C)]
#[cfg_attr(iopf_loom, derive(Default, Debug))]
pub(crate) struct VerdictSlot(pub [AtomicU64; VERDICT_SLOT_WORDS]);

/// Words of a slot of either stamped ring.
pub(crate) const RING_SLOT_WORDS: usize = 8;

#[cfg(not(iopf_loom))]
const _: () = {
    assert!(std::mem::size_of::<Header>() == hdr::WORDS * 8);
    assert!(std::mem::size_of::<RingSlot>() == 64 && std::mem::align_of::<RingSlot>() == 64);
    assert!(std::mem::size_of::<VerdictSlot>() == VERDICT_SLOT_WORDS * 8);
};

/// Header word indices, from the fields of the (crate-private) `Header`: the region's
/// cross-process layout (versioned by [`MAGIC`]), for the fuzz targets and adversarial tests
/// that write a peer's words ([`crate::Consumer::raw_region`]) and for tools that look at a
/// region. Public but hidden; not an API.
#[doc(hidden)]
#[cfg(not(iopf_loom))]
pub mod hdr {
    use super::Header;
    use std::mem::offset_of;

    const fn word(bytes: usize) -> usize {
        bytes / 8
    }
    pub const MAGIC: usize = word(offset_of!(Header, magic));
    pub const VERSION_RECORD: usize = word(offset_of!(Header, version_record));
    pub const RESPONSES_SLOT: usize = word(offset_of!(Header, responses_slot));
    pub const ENTRIES: usize = word(offset_of!(Header, entries));
    pub const FEATURES: usize = word(offset_of!(Header, features));
    /// Fault ring offset (low) | response ring offset (high), in bytes.
    pub const RING_OFFS: usize = word(offset_of!(Header, ring_offs));
    pub const VERDICT_OFF: usize = word(offset_of!(Header, verdict_off));
    pub const SIZE: usize = word(offset_of!(Header, size));
    pub const FAULT_HEAD: usize = word(offset_of!(Header, fault_head));
    pub const FAULT_TAIL: usize = word(offset_of!(Header, fault_tail));
    pub const RESP_HEAD: usize = word(offset_of!(Header, resp_head));
    pub const RESP_TAIL: usize = word(offset_of!(Header, resp_tail));
    pub const JUDGED: usize = word(offset_of!(Header, judged));
    pub const VERDICT_HEAD: usize = word(offset_of!(Header, verdict_head));
    pub const VERDICT_TAIL: usize = word(offset_of!(Header, verdict_tail));
    pub const CONSUMER_SLEEPING: usize = word(offset_of!(Header, consumer_sleeping));
    pub const PRODUCER_SLEEPING: usize = word(offset_of!(Header, producer_sleeping));
    pub const NEXT_SEQ: usize = word(offset_of!(Header, next_seq));
    pub const LOST: usize = word(offset_of!(Header, lost));
    pub const FLAGS: usize = word(offset_of!(Header, flags));
    pub const PRODUCER_FLAGS: usize = word(offset_of!(Header, producer_flags));
    /// Records lost for loss reason `r` are at `LOST_BY_REASON + r` (reasons number from 1).
    pub const LOST_BY_REASON: usize = word(offset_of!(Header, lost_by_reason));
    // Every loss reason indexes its own counter (`reason as usize`; reason 0 is none).
    const _: () = assert!(crate::LossReason::ALL.len() < 8);
    pub const ROOM_WAIT: usize = word(offset_of!(Header, room_wait));
    pub const RESP_ROOM_WAIT: usize = word(offset_of!(Header, resp_room_wait));
    /// Words in the header.
    pub const WORDS: usize = word(std::mem::size_of::<Header>());
}

/// Words in the header (a constant of the format, also under loom, whose atomics are larger).
pub(crate) const HEADER_WORDS: usize = 128;

// The read-mostly description fits in the header's first line.
#[cfg(not(iopf_loom))]
const _: () = assert!(
    hdr::SIZE < 8 && hdr::VERDICT_OFF < 8 && hdr::RING_OFFS < 8 && hdr::WORDS == HEADER_WORDS
);

/// `flags` bit: the consumer has closed its end.
pub(crate) const FLAG_CONSUMER_CLOSED: u64 = 1;
/// `flags` bit: the consumer's process chose the `membarrier(2)` handshake (as the producer's
/// did) and calls it before it sleeps, so the producer may publish records the light way (see
/// [`crate::wake`], [`crate::handshake`]).
pub(crate) const FLAG_CONSUMER_MEMBARRIER: u64 = 2;
/// `producer flags` bit: the producer's process chose the `membarrier(2)` handshake and calls it
/// before it sleeps, so the consumer may publish responses the light way.
pub(crate) const PRODUCER_FLAG_MEMBARRIER: u64 = 1;

/// Words of a fault slot, in either record format: one cache line, so a record crosses from one
/// core to the other as one line, and neighbouring slots never share one.
pub(crate) const FAULT_SLOT_WORDS: usize = RING_SLOT_WORDS;

/// Where a fault slot's stamp lives: 32 bits of one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StampAt {
    /// The word of the slot.
    pub word: usize,
    /// The stamp's lowest bit in that word.
    pub shift: u32,
}

impl StampAt {
    /// The stamp of a slot's stamp word.
    #[inline]
    pub fn get(self, w: u64) -> u32 {
        (w >> self.shift) as u32
    }

    /// The stamp word `w` (whose stamp bits are zero) with stamp `s`.
    #[inline]
    pub fn set(self, w: u64, s: u32) -> u64 {
        w | (u64::from(s) << self.shift)
    }

    /// `w` with its stamp bits zeroed.
    #[inline]
    pub fn clear(self, w: u64) -> u64 {
        w & !(0xffff_ffff << self.shift)
    }
}

/// The bit where `iommu_fault.padding`, the second `__u32` in memory, starts in the record's first
/// word (read as a native-endian `u64`).
pub(crate) const PADDING_SHIFT: u32 = if cfg!(target_endian = "little") {
    32
} else {
    0
};

/// Where an `iommu_fault` slot keeps its stamp: the record's `padding`.
pub(crate) const IOMMU_FAULT_STAMP: StampAt = StampAt {
    word: 0,
    shift: PADDING_SHIFT,
};

/// Where an `iommu_hwpt_pgfault` slot keeps its stamp: the low half of its third header word.
pub(crate) const HWPT_STAMP: StampAt = StampAt { word: 2, shift: 0 };

/// The bit where `iommu_fault.type` starts in the record's first word.
pub(crate) const TYPE_SHIFT: u32 = 32 - PADDING_SHIFT;

/// Header words of an `iommu_hwpt_pgfault` slot: sequence number; kind | cookie; stamp | dev_id.
pub(crate) const SLOT_HEADER_WORDS: usize = 3;
/// Slot kind (`iommu_hwpt_pgfault` slots): a fault record.
pub(crate) const KIND_FAULT: u32 = 1;
/// Slot kind (`iommu_hwpt_pgfault` slots): a loss record (first lost sequence number in the seq
/// word, count in the body).
pub(crate) const KIND_LOST: u32 = 2;
/// Words of a response slot: len | format | stamp, then 56 bytes of response.
pub(crate) const RESP_SLOT_WORDS: usize = RING_SLOT_WORDS;
/// Where a response slot keeps its stamp: the high half of its first word.
pub(crate) const RESP_STAMP: StampAt = StampAt { word: 0, shift: 32 };
/// Bytes of response a slot can carry.
pub const RESP_SLOT_BYTES: usize = (RESP_SLOT_WORDS - 1) * 8;
/// Response slot format tag: a `vfio_iommu_page_response`.
pub(crate) const RESP_VFIO: u32 = 1;
/// Response slot format tag: an `iommu_hwpt_page_response`.
pub(crate) const RESP_COOKIE: u32 = 2;
/// Response slot format tag: 1 to [`COOKIES_PER_SLOT`] `iommu_hwpt_page_response`s, each its
/// own response with its own verdict (the length says how many).
pub(crate) const RESP_COOKIES: u32 = 3;
/// Cookie responses one response slot carries.
pub(crate) const COOKIES_PER_SLOT: usize = RESP_SLOT_BYTES / 8;
/// Words of a verdict slot (a rejection; accepted responses have none): response id;
/// errno | reason.
pub(crate) const VERDICT_SLOT_WORDS: usize = 2;

/// Where everything is, in words, for one agreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub entries: u64,
    /// Where the agreed record format keeps a fault slot's stamp.
    pub stamp: StampAt,
    pub fault_off: usize,
    pub resp_off: usize,
    pub verdict_off: usize,
    pub words: usize,
}

impl Geometry {
    /// Computes the layout; the region size is rounded up to a whole page.
    pub fn new(a: &Agreement) -> Geometry {
        let stamp = match a.record {
            RecordFormat::IommuFault => IOMMU_FAULT_STAMP,
            RecordFormat::HwptPgfault => HWPT_STAMP,
        };
        let entries = a.entries as usize;
        let fault_off = HEADER_WORDS;
        let resp_off = align8(fault_off + entries * FAULT_SLOT_WORDS);
        let verdict_off = align8(resp_off + entries * RESP_SLOT_WORDS);
        let end = verdict_off + entries * VERDICT_SLOT_WORDS;
        let words = end.div_ceil(512) * 512;
        Geometry {
            entries: a.entries as u64,
            stamp,
            fault_off,
            resp_off,
            verdict_off,
            words,
        }
    }

    /// The region size in bytes.
    pub fn bytes(&self) -> usize {
        self.words * 8
    }

    pub fn mask(&self) -> u64 {
        self.entries - 1
    }

    /// The position in its ring (fault, response or verdict: all have `entries` slots) of the
    /// slot for free-running index `index`.
    #[inline]
    pub fn slot(&self, index: u64) -> usize {
        (index & self.mask()) as usize
    }
}

fn align8(words: usize) -> usize {
    words.div_ceil(8) * 8
}

/// The stamp of the slot written for ring index `index`: `index + 1`, truncated to 32 bits (see
/// the module doc).
#[inline]
pub(crate) fn stamp(index: u64) -> u32 {
    index.wrapping_add(1) as u32
}

/// A reader's tail `tail` as the ring's writer reads it, given the writer's `head` and the tail
/// it accepted last (`cached`): accepted (`Some(tail)`) when it moved forward, and no further
/// than `head`; `None` for a tail that went back or past what was written, which only a
/// confused or hostile peer writes (the writer keeps `cached`, and may count the violation).
/// Free-running indices, so `wrapping_sub`: the rule holds across the `u64` wrap.
#[inline]
pub(crate) fn accept_tail(head: u64, cached: u64, tail: u64) -> Option<u64> {
    (tail.wrapping_sub(cached) <= head.wrapping_sub(cached)).then_some(tail)
}

/// The first word of a response slot, without its stamp: length in bytes (low 16 bits) and
/// format tag (next 16 bits). The writer ORs in the stamp (high 32 bits) when it publishes.
#[inline]
pub(crate) fn resp_word(len: u32, tag: u32) -> u64 {
    u64::from(len & 0xffff) | (u64::from(tag & 0xffff) << 16)
}

/// Splits a response slot's first word into (length, format tag); the stamp is ignored.
#[inline]
pub(crate) fn resp_len_tag(w: u64) -> (u32, u32) {
    ((w & 0xffff) as u32, ((w >> 16) & 0xffff) as u32)
}

/// Packs two `u32` into a header word (low, high).
pub(crate) fn pack(lo: u32, hi: u32) -> u64 {
    u64::from(lo) | (u64::from(hi) << 32)
}

/// Unpacks a header word into (low, high).
pub(crate) fn unpack(w: u64) -> (u32, u32) {
    (w as u32, (w >> 32) as u32)
}

#[cfg(all(test, not(iopf_loom)))]
mod tests {
    use super::*;
    use crate::negotiate::{negotiate, Offer, Request};

    #[test]
    fn header_fields_do_not_overlap_and_hot_indices_have_their_own_lines() {
        let hot = [
            hdr::FAULT_HEAD,
            hdr::FAULT_TAIL,
            hdr::RESP_HEAD,
            hdr::RESP_TAIL,
            hdr::VERDICT_HEAD,
            hdr::VERDICT_TAIL,
            hdr::CONSUMER_SLEEPING,
            hdr::PRODUCER_SLEEPING,
            hdr::NEXT_SEQ,
            hdr::FLAGS,
            hdr::PRODUCER_FLAGS,
        ];
        let lines: std::collections::HashSet<usize> = hot.iter().map(|w| w / 8).collect();
        assert_eq!(lines.len(), hot.len());
        assert!(hot.iter().all(|&w| w < hdr::WORDS));
        assert_eq!(
            hdr::JUDGED / 8,
            hdr::RESP_TAIL / 8,
            "read together, written together"
        );
    }

    #[test]
    fn every_ring_is_inside_the_region_and_slots_are_lines() {
        for entries in [2, 64, 4096] {
            let mut r = Request::v1();
            r.entries = entries;
            let g = Geometry::new(&negotiate(&Offer::current(), &r).unwrap());
            let n = entries as usize;
            assert_eq!(g.fault_off, hdr::WORDS);
            assert!(g.fault_off + n * FAULT_SLOT_WORDS <= g.resp_off);
            assert!(g.resp_off + n * RESP_SLOT_WORDS <= g.verdict_off);
            assert!(g.verdict_off + n * VERDICT_SLOT_WORDS <= g.words);
            assert_eq!(
                (g.fault_off % 8, g.resp_off % 8),
                (0, 0),
                "slots are whole lines"
            );
            assert_eq!(g.slot(u64::from(entries)), 0);
            assert_eq!(g.bytes() % 4096, 0);
        }
    }

    /// The header's word numbers are the region format's (a peer of the same `MAGIC` reads
    /// them there): a change to [`Header`] that moves one must bump the format's version.
    #[test]
    fn the_header_words_are_where_the_format_puts_them() {
        let want = [
            (hdr::MAGIC, 0),
            (hdr::VERSION_RECORD, 1),
            (hdr::RESPONSES_SLOT, 2),
            (hdr::ENTRIES, 3),
            (hdr::FEATURES, 4),
            (hdr::RING_OFFS, 5),
            (hdr::VERDICT_OFF, 6),
            (hdr::SIZE, 7),
            (hdr::FAULT_HEAD, 8),
            (hdr::FAULT_TAIL, 16),
            (hdr::RESP_HEAD, 24),
            (hdr::RESP_TAIL, 32),
            (hdr::JUDGED, 33),
            (hdr::VERDICT_HEAD, 40),
            (hdr::VERDICT_TAIL, 48),
            (hdr::CONSUMER_SLEEPING, 56),
            (hdr::PRODUCER_SLEEPING, 64),
            (hdr::NEXT_SEQ, 72),
            (hdr::LOST, 73),
            (hdr::FLAGS, 80),
            (hdr::PRODUCER_FLAGS, 88),
            (hdr::LOST_BY_REASON, 96),
            (hdr::ROOM_WAIT, 104),
            (hdr::RESP_ROOM_WAIT, 112),
            (hdr::WORDS, 128),
        ];
        for (got, word) in want {
            assert_eq!(got, word);
        }
    }
}
