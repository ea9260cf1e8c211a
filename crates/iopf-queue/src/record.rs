//! Fault slots: what the producer writes for one record, and what the consumer reads back. A
//! slot is one cache line (8 words) in either record format, so a record crosses between the
//! cores as one line.
//!
//! With `iommu_fault` records (64 bytes, the seed's), the slot *is* the record, and what the
//! queue adds lives in bytes the record reserves (zero in a record, and restored to zero before
//! the record is decoded):
//!
//! ```text
//!  word 0       type | padding      the stamp (see `layout`) in `padding`
//!  words 1..=5  the record's member (unrecoverable: words 1..=4, word 5 zero)
//!  word 6       sequence number     \  the union's reserved tail (`padding2`), which neither
//!  word 7       cookie | dev_id     /   member reaches
//! ```
//!
//! A loss record there has type 0 (no `iommu_fault` has it), the number of records lost in word 1,
//! the first lost sequence number in word 6 and the [`LossReason`] number in word 7's cookie half,
//! like iommufd's vEVENTQ `IOMMU_VEVENTQ_FLAG_LOST_EVENTS` header. An unrecoverable fault record (type
//! `IOMMU_FAULT_DMA_UNRECOV`, cookie 0) is what `iommu_report_device_fault()` receives; it exists
//! only on a queue that agreed [`Features::UNRECOVERABLE`](iopf_abi::Features::UNRECOVERABLE).
//!
//! With `iommu_hwpt_pgfault` records (40 bytes, iommufd's), the slot is three words of header
//! (sequence number; kind | cookie; stamp | dev_id) and the record; a loss record has kind LOST,
//! the first lost sequence number in word 0, the reason in the cookie half of word 1 and the
//! count in word 3. The iommufd record has no unrecoverable form.
//!
//! The encoders leave the stamp bits zero: the producer's ring writer sets them.

use iopf_abi::fault::{IOMMU_FAULT_DMA_UNRECOV, IOMMU_FAULT_PAGE_REQ};
use iopf_abi::{
    Fault, Features, HwptPgfault, IommuFault, IommuFaultWords, PageRequest, PgFault, Unrecoverable,
    KERNEL_RESPONSE_NEEDS_PASID,
};
use zerocopy::IntoBytes;

use crate::layout::{
    pack, unpack, FAULT_SLOT_WORDS, IOMMU_FAULT_STAMP, KIND_FAULT, KIND_LOST, SLOT_HEADER_WORDS,
    TYPE_SHIFT,
};
use crate::negotiate::{Agreement, RecordFormat};
use crate::{LossReason, QueueError};

/// A fault slot's words.
pub(crate) type SlotWords = [u64; FAULT_SLOT_WORDS];

/// `iommu_fault` slots: the word holding the sequence number.
const SEQ_WORD: usize = 6;
/// `iommu_fault` slots: the word holding cookie | dev_id.
const IDS_WORD: usize = 7;
/// `iommu_fault` slots: the type of a loss record.
const TYPE_LOST: u32 = 0;

/// One record taken out of the fault ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A page request of a group. Groups are contiguous; the last request has `LAST_PAGE`.
    Fault(FaultEvent),
    /// `count` records starting at sequence number `first_seq` were not delivered; their groups
    /// were answered without the consumer.
    Lost {
        /// The first lost sequence number.
        first_seq: u64,
        /// How many records were lost.
        count: u64,
        /// Why, if all of them were lost for one reason (`None`: several; the region header
        /// counts each, see [`crate::Consumer::producer_losses`]).
        reason: Option<LossReason>,
    },
    /// An unrecoverable fault, for information: it has a sequence number like any record but
    /// belongs to no group and takes no response. Only on a queue that agreed
    /// [`Features::UNRECOVERABLE`].
    Unrecoverable {
        /// The record's sequence number (in the same sequence as page requests).
        seq: u64,
        /// The device's id.
        dev_id: u32,
        /// The fault, as the IOMMU reported it.
        fault: Unrecoverable,
    },
}

/// A page request as the consumer receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultEvent {
    /// The record's sequence number (consecutive; a gap is a loss).
    pub seq: u64,
    /// The group's cookie, to answer it with a cookie response.
    pub cookie: u32,
    /// The device's id.
    pub dev_id: u32,
    /// The request. Private data is present only when echoing it was agreed.
    pub request: PageRequest,
}

/// Encodes a page request into a slot.
#[inline]
pub(crate) fn encode_fault(
    format: RecordFormat,
    seq: u64,
    cookie: u32,
    dev_id: u32,
    request: &PageRequest,
) -> SlotWords {
    match format {
        RecordFormat::IommuFault => {
            let mut w = Fault::PageRequest(*request).encode_words();
            w[SEQ_WORD] = seq;
            w[IDS_WORD] = pack(cookie, dev_id);
            w
        }
        RecordFormat::HwptPgfault => {
            let rec = PgFault::composed(dev_id, cookie, request).encode();
            let mut w = [0u64; FAULT_SLOT_WORDS];
            w[0] = seq;
            w[1] = pack(KIND_FAULT, cookie);
            w[2] = pack(0, dev_id);
            w[SLOT_HEADER_WORDS..].as_mut_bytes()[..HwptPgfault::SIZE]
                .copy_from_slice(rec.as_bytes());
            w
        }
    }
}

/// Encodes an unrecoverable fault record (`iommu_fault` records only: the caller checked the
/// agreement).
#[inline]
pub(crate) fn encode_unrecoverable(seq: u64, dev_id: u32, fault: &Unrecoverable) -> SlotWords {
    let mut w = Fault::Unrecoverable(*fault).encode_words();
    w[SEQ_WORD] = seq;
    w[IDS_WORD] = pack(0, dev_id);
    w
}

/// Encodes a loss record: `count` records from sequence number `first_seq` on were not
/// delivered, for `reason` (`None`: several).
pub(crate) fn encode_lost(
    format: RecordFormat,
    first_seq: u64,
    count: u64,
    reason: Option<LossReason>,
) -> SlotWords {
    let mut w = [0u64; FAULT_SLOT_WORDS];
    let reason = reason.map_or(0, |r| r as u32);
    match format {
        RecordFormat::IommuFault => {
            w[0] = u64::from(TYPE_LOST) << TYPE_SHIFT;
            w[1] = count;
            w[SEQ_WORD] = first_seq;
            w[IDS_WORD] = pack(reason, 0);
        }
        RecordFormat::HwptPgfault => {
            w[0] = first_seq;
            w[1] = pack(KIND_LOST, reason);
            w[SLOT_HEADER_WORDS] = count;
        }
    }
    w
}

/// Why [`decode_slot_fast`] refused a slot: a one-byte code, so that the hot path builds no
/// error; [`SlotDefect::error`] says it in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotDefect {
    /// An unrecoverable record on a queue that did not agree them.
    UnrecoverableNotAgreed,
    /// An unrecoverable record with a cookie.
    UnrecoverableCookie,
    /// The `iommu_fault` record is not a valid one of its type.
    Record,
    /// The `iommu_hwpt_pgfault` record is not valid.
    HwptRecord,
    /// The `iommu_hwpt_pgfault` record's cookie is not the slot's.
    HwptCookie,
    /// An `iommu_hwpt_pgfault` slot of no known kind.
    UnknownKind,
}

impl SlotDefect {
    /// The refusal as the queue's error, recomputing the record's own error where there is one.
    #[cold]
    pub fn error(self, w: &SlotWords) -> QueueError {
        match self {
            SlotDefect::UnrecoverableNotAgreed => {
                QueueError::Corrupt("unrecoverable record was not agreed")
            }
            SlotDefect::UnrecoverableCookie => {
                QueueError::Corrupt("unrecoverable record with a cookie")
            }
            SlotDefect::Record => {
                let rec = folded_record(w);
                match IommuFault::word_error(&rec) {
                    Err(e) => QueueError::Abi(e),
                    // The fast decoders and the byte decoder agree (a property test of the ABI
                    // crate holds them to it): a record one of them took is of the other type.
                    Ok(_) => QueueError::Corrupt("record of the wrong type for its slot"),
                }
            }
            SlotDefect::HwptRecord => {
                match HwptPgfault::read(&w[SLOT_HEADER_WORDS..].as_bytes()[..HwptPgfault::SIZE])
                    .and_then(|r| check_own_hwpt(&r))
                {
                    Err(e) => QueueError::Abi(e),
                    Ok(_) => QueueError::Corrupt("iommu_hwpt_pgfault slot"),
                }
            }
            SlotDefect::HwptCookie => QueueError::Corrupt("record cookie differs from slot cookie"),
            SlotDefect::UnknownKind => QueueError::Corrupt("unknown slot kind"),
        }
    }
}

/// Decodes a slot copied out of the ring under `agreement`. Strict, as the words come from a
/// peer: an unrecoverable record is refused unless it was agreed and carries no cookie, and its
/// record must be a valid `IOMMU_FAULT_DMA_UNRECOV` one; a page request's record must be a valid
/// page request. The stamp is the ring's business and is ignored. A refusal is a [`SlotDefect`]
/// code; [`SlotDefect::error`] says it in full.
#[inline]
pub(crate) fn decode_slot_fast(agreement: &Agreement, w: &SlotWords) -> Result<Event, SlotDefect> {
    match agreement.record {
        RecordFormat::IommuFault => decode_folded(agreement, w),
        RecordFormat::HwptPgfault => decode_hwpt(w),
    }
}

/// The `iommu_fault` record of a slot in that format: the slot with the queue's own words taken
/// out of the record's reserved bytes (zeroed there, so that the record is decoded as the
/// kernel's would be).
#[inline]
fn folded_record(w: &SlotWords) -> IommuFaultWords {
    [
        IOMMU_FAULT_STAMP.clear(w[0]),
        w[1],
        w[2],
        w[3],
        w[4],
        w[5],
        0,
        0,
    ]
}

/// An `iommu_fault` slot.
#[inline]
pub(crate) fn decode_folded(agreement: &Agreement, w: &SlotWords) -> Result<Event, SlotDefect> {
    decode_folded_with(agreement, w, |ev| ev)
}

/// [`decode_folded`], handing the event to `emit` where it is made: each kind of record then
/// goes from registers to where `emit` puts it (the consumer's batch: the caller's `Vec`),
/// instead of being put together on the stack with word stores and copied from there with
/// wider loads, which cannot be forwarded from those stores and stall until they reach the
/// cache (40 % of a batch pop's time: docs/PERFORMANCE.md, "Batches").
#[inline]
pub(crate) fn decode_folded_with<R>(
    agreement: &Agreement,
    w: &SlotWords,
    emit: impl FnOnce(Event) -> R,
) -> Result<R, SlotDefect> {
    let rec = folded_record(w);
    let seq = w[SEQ_WORD];
    let (cookie, dev_id) = unpack(w[IDS_WORD]);
    match (rec[0] >> TYPE_SHIFT) as u32 {
        TYPE_LOST => Ok(emit(Event::Lost {
            first_seq: seq,
            count: w[1],
            reason: LossReason::from_raw(cookie),
        })),
        IOMMU_FAULT_DMA_UNRECOV => {
            let allowed = agreement.features.contains(Features::UNRECOVERABLE) & (cookie == 0);
            match Unrecoverable::from_words(&rec) {
                Some(fault) if allowed => Ok(emit(Event::Unrecoverable { seq, dev_id, fault })),
                _ => Err(unrecoverable_refusal(agreement, cookie)),
            }
        }
        IOMMU_FAULT_PAGE_REQ => match PageRequest::from_words(&rec) {
            Some(request) => Ok(emit(Event::Fault(FaultEvent {
                seq,
                cookie,
                dev_id,
                request,
            }))),
            None => Err(SlotDefect::Record),
        },
        _ => Err(SlotDefect::Record),
    }
}

/// Why an unrecoverable fault slot was refused, in the order the checks are stated: not agreed,
/// then a cookie (which only a page request has), then the record itself.
#[cold]
fn unrecoverable_refusal(agreement: &Agreement, cookie: u32) -> SlotDefect {
    if !agreement.features.contains(Features::UNRECOVERABLE) {
        SlotDefect::UnrecoverableNotAgreed
    } else if cookie != 0 {
        SlotDefect::UnrecoverableCookie
    } else {
        SlotDefect::Record
    }
}

/// Checks an `iommu_hwpt_pgfault` record of iopf's own ring strictly: the uAPI's fields and
/// bits, and the one bit outside it that iopf writes as Linux ≥ 6.11 does
/// ([`KERNEL_RESPONSE_NEEDS_PASID`], see [`PgFault::composed`]).
fn check_own_hwpt(raw: &HwptPgfault) -> Result<(), iopf_abi::AbiError> {
    let mut uapi = *raw;
    uapi.flags &= !KERNEL_RESPONSE_NEEDS_PASID;
    uapi.check()
}

/// An `iommu_hwpt_pgfault` slot.
#[inline]
pub(crate) fn decode_hwpt(w: &SlotWords) -> Result<Event, SlotDefect> {
    decode_hwpt_with(w, |ev| ev)
}

/// [`decode_hwpt`], handing the event to `emit` where it is made (as [`decode_folded_with`]).
#[inline]
pub(crate) fn decode_hwpt_with<R>(
    w: &SlotWords,
    emit: impl FnOnce(Event) -> R,
) -> Result<R, SlotDefect> {
    let (kind, cookie) = unpack(w[1]);
    let (_stamp, dev_id) = unpack(w[2]);
    let body = &w[SLOT_HEADER_WORDS..];
    match kind {
        KIND_LOST => Ok(emit(Event::Lost {
            first_seq: w[0],
            count: body[0],
            reason: LossReason::from_raw(cookie),
        })),
        KIND_FAULT => {
            // iopf's own ring, from iopf's own producer: checked strictly, so that a scribbled
            // slot is found (a kernel's records are read liberally, in `iopf-iommufd`).
            let raw = HwptPgfault::read(&body.as_bytes()[..HwptPgfault::SIZE])
                .map_err(|_| SlotDefect::HwptRecord)?;
            check_own_hwpt(&raw).map_err(|_| SlotDefect::HwptRecord)?;
            let rec = raw.decode();
            if rec.cookie != cookie {
                return Err(SlotDefect::HwptCookie);
            }
            Ok(emit(Event::Fault(FaultEvent {
                seq: w[0],
                cookie,
                dev_id,
                request: rec.page_request(),
            })))
        }
        _ => Err(SlotDefect::UnknownKind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::stamp;
    use iopf_abi::fault::{FaultReason, PageRequestFlags, UnrecoverableFlags};
    use iopf_abi::features::ResponseFormats;
    use iopf_abi::Perm;

    fn agreed(record: RecordFormat, features: Features) -> Agreement {
        Agreement {
            abi_version: 2,
            record,
            responses: ResponseFormats::COOKIE,
            features,
            entries: 8,
            max_group: 0,
        }
    }

    fn unrecov() -> Unrecoverable {
        Unrecoverable {
            reason: FaultReason::Permission,
            flags: UnrecoverableFlags::ADDR_VALID | UnrecoverableFlags::PASID_VALID,
            pasid: 3,
            perm: Perm::WRITE,
            addr: 0xdead_0000,
            fetch_addr: 0,
        }
    }

    fn req() -> PageRequest {
        PageRequest {
            flags: PageRequestFlags::PASID_VALID
                | PageRequestFlags::LAST_PAGE
                | PageRequestFlags::PRIV_DATA
                | PageRequestFlags::RESPONSE_NEEDS_PASID,
            pasid: 5,
            grpid: 300,
            perm: Perm::READ | Perm::WRITE,
            addr: 0x7000_1000,
            private_data: [u64::MAX, 0x1234],
        }
    }

    /// The decoder with its refusal said in full, as the consumer keeps it.
    fn decode_slot(agreement: &Agreement, w: &SlotWords) -> Result<Event, QueueError> {
        decode_slot_fast(agreement, w).map_err(|r| r.error(w))
    }

    fn stamped(format: RecordFormat, mut w: SlotWords, index: u64) -> SlotWords {
        let at = crate::layout::Geometry::new(&agreed(format, Features::empty())).stamp;
        w[at.word] = at.set(w[at.word], stamp(index));
        w
    }

    #[test]
    fn both_formats_round_trip_through_a_slot_whatever_the_stamp() {
        for f in [RecordFormat::IommuFault, RecordFormat::HwptPgfault] {
            let mut want = req();
            if f == RecordFormat::HwptPgfault {
                // The iommufd record carries no private data.
                want.flags.remove(PageRequestFlags::PRIV_DATA);
                want.private_data = [0, 0];
            }
            for index in [0, 6, u64::from(u32::MAX) - 1, u64::MAX] {
                let w = stamped(f, encode_fault(f, 42, 0x10003, 9, &req()), index);
                let Event::Fault(e) = decode_slot(&agreed(f, Features::empty()), &w).unwrap()
                else {
                    panic!("not a fault")
                };
                assert_eq!(
                    (e.seq, e.cookie, e.dev_id, e.request),
                    (42, 0x10003, 9, want)
                );
            }
            for reason in [
                None,
                Some(LossReason::BacklogFull),
                Some(LossReason::CoreFull),
            ] {
                let w = stamped(f, encode_lost(f, 7, 3, reason), 5);
                assert_eq!(
                    decode_slot(&agreed(f, Features::empty()), &w).unwrap(),
                    Event::Lost {
                        first_seq: 7,
                        count: 3,
                        reason
                    }
                );
            }
        }
        let mut w = encode_fault(RecordFormat::HwptPgfault, 1, 2, 3, &req());
        w[1] = pack(99, 0);
        let hwpt = agreed(RecordFormat::HwptPgfault, Features::empty());
        assert!(decode_slot(&hwpt, &w).is_err());
    }

    #[test]
    fn an_iommu_fault_slot_is_the_record_with_the_queue_words_in_its_reserved_bytes() {
        let w = encode_fault(RecordFormat::IommuFault, 42, 7, 9, &req());
        let rec = Fault::PageRequest(req()).encode();
        // Bytes 0..48 are the record's (its `padding`, which holds the stamp, is zero until the
        // ring writer stamps it); the union's tail holds the queue's words.
        assert_eq!(&w.as_bytes()[..48], &rec.as_bytes()[..48]);
        assert_eq!(&rec.as_bytes()[48..], &[0u8; 16]);
        assert_eq!((w[SEQ_WORD], unpack(w[IDS_WORD])), (42, (7, 9)));
        // A stamp only ever touches `padding`.
        let s = stamped(RecordFormat::IommuFault, w, 0xfffe);
        assert_eq!(&s.as_bytes()[..4], &rec.as_bytes()[..4]);
        assert_eq!(&s.as_bytes()[8..], &w.as_bytes()[8..]);
    }

    #[test]
    fn unrecoverable_slots_decode_only_when_agreed_and_well_formed() {
        let yes = agreed(RecordFormat::IommuFault, Features::UNRECOVERABLE);
        let w = stamped(
            RecordFormat::IommuFault,
            encode_unrecoverable(12, 4, &unrecov()),
            3,
        );
        assert_eq!(
            decode_slot(&yes, &w).unwrap(),
            Event::Unrecoverable {
                seq: 12,
                dev_id: 4,
                fault: unrecov()
            }
        );
        // Not agreed: a corrupt slot.
        let no = agreed(RecordFormat::IommuFault, Features::empty());
        assert!(matches!(decode_slot(&no, &w), Err(QueueError::Corrupt(_))));
        // A cookie, a bad reason, a non-zero reserved word of the record.
        let mut bad = w;
        bad[IDS_WORD] = pack(5, 4);
        assert!(matches!(
            decode_slot(&yes, &bad),
            Err(QueueError::Corrupt(_))
        ));
        let mut bad = w;
        bad[1] = 0xffff;
        assert!(matches!(decode_slot(&yes, &bad), Err(QueueError::Abi(_))));
        let mut bad = w;
        bad[5] = 1;
        assert!(matches!(decode_slot(&yes, &bad), Err(QueueError::Abi(_))));
        // An unknown type is the record's error.
        let mut bad = w;
        bad[0] = IOMMU_FAULT_STAMP.set(u64::from(7u32) << TYPE_SHIFT, 1);
        assert!(matches!(decode_slot(&yes, &bad), Err(QueueError::Abi(_))));
    }
}
