//! Fault slots: what the producer writes for one page request, and what the consumer reads back.
//!
//! A slot is three words of its own header (sequence number; kind | cookie; stamp | dev_id, the
//! stamp left 0 here: the producer's ring writer sets it, see [`crate::layout`]) followed by
//! the agreed record: the seed's 64-byte `iommu_fault` or the iommufd 40-byte
//! `iommu_hwpt_pgfault`. A loss record (kind LOST) carries the first lost sequence number in the
//! sequence word and the number of records lost in the first body word, like iommufd's vEVENTQ
//! `IOMMU_VEVENTQ_FLAG_LOST_EVENTS` header. An unrecoverable fault record (kind UNRECOV, cookie
//! 0) carries an `iommu_fault` of type `IOMMU_FAULT_DMA_UNRECOV`, as `iommu_report_device_fault()`
//! receives it; it exists only on an `iommu_fault` queue that agreed
//! [`Features::UNRECOVERABLE`](iopf_abi::Features::UNRECOVERABLE) (the iommufd record has no
//! unrecoverable form).

use iopf_abi::fault::PageRequestFlags;
use iopf_abi::iommufd::PgfaultFlags;
use iopf_abi::{
    Fault, Features, HwptPgfault, IommuFault, IommuFaultWords, PageRequest, PgFault, Unrecoverable,
};
use zerocopy::IntoBytes;

use crate::layout::{
    pack, unpack, FAULT_STAMP_WORD, KIND_FAULT, KIND_LOST, KIND_UNRECOV, SLOT_HEADER_WORDS,
};
use crate::negotiate::{Agreement, RecordFormat};
use crate::QueueError;

/// Words of an `iommu_fault` record.
const RECORD_WORDS: usize = IommuFault::SIZE / 8;

/// The largest slot: header plus a 64-byte record.
pub(crate) const MAX_SLOT_WORDS: usize = SLOT_HEADER_WORDS + RECORD_WORDS;

/// One record taken out of the fault ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A page request of a group. Groups are contiguous; the last request has `LAST_PAGE`.
    Fault(FaultEvent),
    /// `count` records starting at sequence number `first_seq` were not delivered (the ring was
    /// full); their groups were answered without the consumer.
    Lost {
        /// The first lost sequence number.
        first_seq: u64,
        /// How many records were lost.
        count: u64,
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

/// Encodes a page request into slot words; returns how many words were used.
pub(crate) fn encode_fault(
    format: RecordFormat,
    seq: u64,
    cookie: u32,
    dev_id: u32,
    request: &PageRequest,
    out: &mut [u64; MAX_SLOT_WORDS],
) -> usize {
    out[0] = seq;
    out[1] = pack(KIND_FAULT, cookie);
    out[FAULT_STAMP_WORD] = pack(0, dev_id);
    let body = &mut out[SLOT_HEADER_WORDS..];
    match format {
        RecordFormat::IommuFault => {
            body[..RECORD_WORDS].copy_from_slice(&Fault::PageRequest(*request).encode_words());
            SLOT_HEADER_WORDS + RECORD_WORDS
        }
        RecordFormat::HwptPgfault => {
            let mut flags = PgfaultFlags::empty();
            flags.set(PgfaultFlags::PASID_VALID, request.pasid().is_some());
            flags.set(PgfaultFlags::LAST_PAGE, request.is_last());
            let rec = PgFault {
                flags,
                dev_id,
                pasid: request.pasid,
                grpid: request.grpid,
                perm: request.perm,
                addr: request.addr,
                length: 0,
                cookie,
            }
            .encode();
            body.as_mut_bytes()[..HwptPgfault::SIZE].copy_from_slice(rec.as_bytes());
            SLOT_HEADER_WORDS + HwptPgfault::SIZE / 8
        }
    }
}

/// Encodes an unrecoverable fault record into slot words (`iommu_fault` records only: the caller
/// checked the agreement); returns how many words were used.
pub(crate) fn encode_unrecoverable(
    seq: u64,
    dev_id: u32,
    fault: &Unrecoverable,
    out: &mut [u64; MAX_SLOT_WORDS],
) -> usize {
    out[0] = seq;
    out[1] = pack(KIND_UNRECOV, 0);
    out[FAULT_STAMP_WORD] = pack(0, dev_id);
    out[SLOT_HEADER_WORDS..].copy_from_slice(&Fault::Unrecoverable(*fault).encode_words());
    SLOT_HEADER_WORDS + RECORD_WORDS
}

/// Encodes a loss record into slot words (the whole slot is written, the body zeroed).
pub(crate) fn encode_lost(
    first_seq: u64,
    count: u64,
    words: usize,
    out: &mut [u64; MAX_SLOT_WORDS],
) -> usize {
    out.fill(0);
    out[0] = first_seq;
    out[1] = pack(KIND_LOST, 0);
    out[SLOT_HEADER_WORDS] = count;
    words.min(MAX_SLOT_WORDS)
}

/// Decodes slot words copied out of the ring under `agreement`. Strict, as the words come from
/// a peer: an unrecoverable record is an error unless it was agreed, carries a cookie, or its
/// `iommu_fault` is not a valid `IOMMU_FAULT_DMA_UNRECOV` record; a fault slot must hold a page
/// request. The stamp (low half of the dev_id word) is the ring's business and is ignored.
#[inline(always)]
pub(crate) fn decode_slot(
    agreement: &Agreement,
    w: &[u64; MAX_SLOT_WORDS],
) -> Result<Event, QueueError> {
    let format = agreement.record;
    let (kind, cookie) = unpack(w[1]);
    let (_stamp, dev_id) = unpack(w[FAULT_STAMP_WORD]);
    let body = &w[SLOT_HEADER_WORDS..];
    match kind {
        KIND_UNRECOV => {
            if format != RecordFormat::IommuFault
                || !agreement.features.contains(Features::UNRECOVERABLE)
            {
                return Err(QueueError::Corrupt("unrecoverable record was not agreed"));
            }
            if cookie != 0 {
                return Err(QueueError::Corrupt("unrecoverable record with a cookie"));
            }
            match IommuFault::decode_words(&record_words(body))? {
                Fault::Unrecoverable(fault) => Ok(Event::Unrecoverable {
                    seq: w[0],
                    dev_id,
                    fault,
                }),
                Fault::PageRequest(_) => {
                    Err(QueueError::Corrupt("page request in an unrecoverable slot"))
                }
            }
        }
        KIND_LOST => Ok(Event::Lost {
            first_seq: w[0],
            count: body[0],
        }),
        KIND_FAULT => {
            let request = match format {
                RecordFormat::IommuFault => match IommuFault::decode_words(&record_words(body))? {
                    Fault::PageRequest(p) => p,
                    Fault::Unrecoverable(_) => {
                        return Err(QueueError::Corrupt(
                            "unrecoverable fault in a page request slot",
                        ))
                    }
                },
                RecordFormat::HwptPgfault => {
                    let rec = HwptPgfault::read(&body.as_bytes()[..HwptPgfault::SIZE])?.decode()?;
                    if rec.cookie != cookie {
                        return Err(QueueError::Corrupt(
                            "record cookie differs from slot cookie",
                        ));
                    }
                    let mut flags = PageRequestFlags::empty();
                    flags.set(
                        PageRequestFlags::PASID_VALID,
                        rec.flags.contains(PgfaultFlags::PASID_VALID),
                    );
                    flags.set(PageRequestFlags::LAST_PAGE, rec.is_last());
                    PageRequest {
                        flags,
                        pasid: rec.pasid,
                        grpid: rec.grpid,
                        perm: rec.perm,
                        addr: rec.addr,
                        private_data: [0, 0],
                    }
                }
            };
            Ok(Event::Fault(FaultEvent {
                seq: w[0],
                cookie,
                dev_id,
                request,
            }))
        }
        _ => Err(QueueError::Corrupt("unknown slot kind")),
    }
}

/// The `iommu_fault` record of a slot body (the body is `MAX_SLOT_WORDS - 3` words: exactly it).
#[inline]
fn record_words(body: &[u64]) -> IommuFaultWords {
    core::array::from_fn(|i| body.get(i).copied().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use iopf_abi::fault::{FaultReason, UnrecoverableFlags};
    use iopf_abi::features::ResponseFormats;
    use iopf_abi::Perm;

    fn agreed(record: RecordFormat, features: Features) -> Agreement {
        Agreement {
            abi_version: 2,
            record,
            responses: ResponseFormats::COOKIE,
            features,
            entries: 8,
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
            flags: PageRequestFlags::PASID_VALID | PageRequestFlags::LAST_PAGE,
            pasid: 5,
            grpid: 300,
            perm: Perm::READ | Perm::WRITE,
            addr: 0x7000_1000,
            private_data: [0, 0],
        }
    }

    #[test]
    fn both_formats_round_trip_through_a_slot() {
        for f in [RecordFormat::IommuFault, RecordFormat::HwptPgfault] {
            let mut w = [0u64; MAX_SLOT_WORDS];
            encode_fault(f, 42, 0x10003, 9, &req(), &mut w);
            let Event::Fault(e) = decode_slot(&agreed(f, Features::empty()), &w).unwrap() else {
                panic!("not a fault")
            };
            assert_eq!(
                (e.seq, e.cookie, e.dev_id, e.request),
                (42, 0x10003, 9, req())
            );
        }
        let mut w = [0u64; MAX_SLOT_WORDS];
        encode_lost(7, 3, 11, &mut w);
        assert_eq!(
            decode_slot(&agreed(RecordFormat::IommuFault, Features::empty()), &w).unwrap(),
            Event::Lost {
                first_seq: 7,
                count: 3
            }
        );
        w[1] = pack(99, 0);
        assert!(decode_slot(&agreed(RecordFormat::IommuFault, Features::empty()), &w).is_err());
    }

    #[test]
    fn unrecoverable_slots_decode_only_when_agreed_and_well_formed() {
        let yes = agreed(RecordFormat::IommuFault, Features::UNRECOVERABLE);
        let mut w = [0u64; MAX_SLOT_WORDS];
        encode_unrecoverable(12, 4, &unrecov(), &mut w);
        assert_eq!(
            decode_slot(&yes, &w).unwrap(),
            Event::Unrecoverable {
                seq: 12,
                dev_id: 4,
                fault: unrecov()
            }
        );
        // Not agreed, or on the iommufd record format: a corrupt slot.
        for a in [
            agreed(RecordFormat::IommuFault, Features::empty()),
            agreed(RecordFormat::HwptPgfault, Features::UNRECOVERABLE),
        ] {
            assert!(matches!(decode_slot(&a, &w), Err(QueueError::Corrupt(_))));
        }
        // A cookie, a bad reason, a page request in the slot, or an unrecoverable fault in a
        // page request slot; the stamp is not the record's business.
        let mut bad = w;
        bad[1] = pack(KIND_UNRECOV, 5);
        assert!(decode_slot(&yes, &bad).is_err());
        let mut stamped = w;
        stamped[FAULT_STAMP_WORD] |= 0x1234;
        assert_eq!(
            decode_slot(&yes, &stamped).unwrap(),
            decode_slot(&yes, &w).unwrap()
        );
        let mut bad = w;
        bad[SLOT_HEADER_WORDS + 1] = 0xffff;
        assert!(matches!(decode_slot(&yes, &bad), Err(QueueError::Abi(_))));
        let mut bad = [0u64; MAX_SLOT_WORDS];
        encode_fault(RecordFormat::IommuFault, 1, 0, 4, &req(), &mut bad);
        bad[1] = pack(KIND_UNRECOV, 0);
        assert!(decode_slot(&yes, &bad).is_err());
        let mut bad = w;
        bad[1] = pack(KIND_FAULT, 1);
        assert!(decode_slot(&yes, &bad).is_err());
    }
}
