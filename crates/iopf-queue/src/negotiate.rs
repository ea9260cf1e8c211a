//! The two-way negotiation the seed asks for: the producer offers, the consumer picks a subset,
//! both keep what was agreed, and nothing outside it is used.
//!
//! This answers both compatibility cases of the seed: a new consumer on an old producer learns
//! from the [`Offer`] that version 2 responses (private data) are not understood and does not send
//! them (the old `iommu_page_response()` would reject the flag); an old consumer on a new producer
//! asks for no [`Features::PRIV_DATA_ECHO`], so the producer knows the private data will not come
//! back and keeps it with the group itself. Likewise a consumer that does not agree
//! [`Features::UNRECOVERABLE`] is never sent an unrecoverable fault record.

use iopf_abi::features::{RecordFormats, ResponseFormats};
use iopf_abi::Features;

use crate::QueueError;

/// ABI version 1: the seed's first form — `iommu_fault` records, version 1
/// `vfio_iommu_page_response`, no optional features.
pub const ABI_V1: u32 = 1;
/// ABI version 2: adds the iommufd record and cookie response, version 2 responses with private
/// data, and the optional [`Features`].
pub const ABI_V2: u32 = 2;
/// The newest ABI version this crate implements.
pub const ABI_VERSION: u32 = ABI_V2;

/// The largest ring this crate offers by default (entries).
pub const DEFAULT_MAX_ENTRIES: u32 = 4096;
/// The ring size used when a request says 0: the never-merged VFIO fault region's 512.
pub const DEFAULT_ENTRIES: u32 = 512;

/// What a producer advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// The newest ABI version the producer speaks; it also speaks every older one.
    pub abi_version: u32,
    /// The record layouts it can put in the fault ring.
    pub records: RecordFormats,
    /// The response layouts it can read.
    pub responses: ResponseFormats,
    /// The optional behaviours it supports.
    pub features: Features,
    /// The largest ring (entries) it will allocate.
    pub max_entries: u32,
    /// The most page requests a group it pushes may have (0: not stated). A producer that
    /// serves a fault core states its devices' largest group; negotiation then refuses a ring
    /// that could not hold it, so that no group ever waits for room that cannot come.
    pub max_group: u32,
}

impl Offer {
    /// Everything this crate implements (ABI version 2).
    pub fn current() -> Offer {
        Offer {
            abi_version: ABI_V2,
            records: RecordFormats::IOMMU_FAULT | RecordFormats::HWPT_PGFAULT,
            responses: ResponseFormats::VFIO_V1
                | ResponseFormats::VFIO_V2
                | ResponseFormats::COOKIE,
            features: Features::PRIV_DATA_ECHO
                | Features::COOKIE_RESPONSE
                | Features::LOSS_RECORDS
                | Features::UNRECOVERABLE
                | Features::COOKIE_FAILURE,
            max_entries: DEFAULT_MAX_ENTRIES,
            max_group: 0,
        }
    }

    /// This offer, stating that no group has more than `requests` page requests.
    pub fn with_max_group(self, requests: u32) -> Offer {
        Offer {
            max_group: requests,
            ..self
        }
    }

    /// What an old producer offers (ABI version 1): the seed's first form only. Like the ≤ 6.8
    /// kernel, it rejects version 2 responses and the `PRIV_DATA` flag.
    pub fn v1() -> Offer {
        Offer {
            abi_version: ABI_V1,
            records: RecordFormats::IOMMU_FAULT,
            responses: ResponseFormats::VFIO_V1,
            features: Features::empty(),
            max_entries: DEFAULT_MAX_ENTRIES,
            max_group: 0,
        }
    }
}

/// What a consumer asks for: one record layout, a set of response layouts, a set of features and
/// a ring size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The ABI version the consumer speaks (at most the offer's).
    pub abi_version: u32,
    /// Exactly one record layout.
    pub record: RecordFormats,
    /// The response layouts the consumer will send (at least one).
    pub responses: ResponseFormats,
    /// The features it wants.
    pub features: Features,
    /// Ring entries: a power of two up to the offer's maximum, at least the offer's
    /// `max_group`, or 0 for [`DEFAULT_ENTRIES`] (or the smallest power of two that holds
    /// `max_group`, if larger).
    pub entries: u32,
}

impl Request {
    /// What an old consumer asks for, knowing nothing of any offer: ABI version 1, `iommu_fault`
    /// records, version 1 responses.
    pub fn v1() -> Request {
        Request {
            abi_version: ABI_V1,
            record: RecordFormats::IOMMU_FAULT,
            responses: ResponseFormats::VFIO_V1,
            features: Features::empty(),
            entries: 0,
        }
    }

    /// What a new consumer that wants `record` records and the `features` it lists asks for,
    /// having read `offer`: the newest common version, and of its wishes only what is offered
    /// (responses follow from the features: cookies with `COOKIE_RESPONSE`, version 2 with
    /// `PRIV_DATA_ECHO`, version 1 always when offered). `PRIV_DATA_ECHO` and `UNRECOVERABLE`
    /// are dropped unless the record is `iommu_fault` (the iommufd record has neither private
    /// data nor an unrecoverable form). Returns `None` when the offer lacks the record layout.
    pub fn best_for(offer: &Offer, record: RecordFormats, features: Features) -> Option<Request> {
        if !offer.records.contains(record) || record.bits().count_ones() != 1 {
            return None;
        }
        let mut features = features & offer.features;
        if record != RecordFormats::IOMMU_FAULT
            || !offer.responses.contains(ResponseFormats::VFIO_V2)
        {
            features.remove(Features::PRIV_DATA_ECHO);
        }
        if record != RecordFormats::IOMMU_FAULT {
            features.remove(Features::UNRECOVERABLE);
        }
        if !offer.responses.contains(ResponseFormats::COOKIE) {
            features.remove(Features::COOKIE_RESPONSE);
        }
        if !features.contains(Features::COOKIE_RESPONSE) {
            features.remove(Features::COOKIE_FAILURE);
        }
        let mut responses = ResponseFormats::empty();
        if features.contains(Features::COOKIE_RESPONSE) {
            responses |= ResponseFormats::COOKIE;
        } else {
            responses |= offer.responses & ResponseFormats::VFIO_V1;
        }
        if features.contains(Features::PRIV_DATA_ECHO) {
            responses |= ResponseFormats::VFIO_V2;
        }
        if responses.is_empty() {
            return None;
        }
        Some(Request {
            abi_version: offer.abi_version.min(ABI_VERSION),
            record,
            responses,
            features,
            entries: 0,
        })
    }
}

/// The record layout of an agreed fault ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordFormat {
    /// The seed's 64-byte `iommu_fault`; responses name groups by grpid (VFIO) or by cookie.
    IommuFault,
    /// The iommufd 40-byte `iommu_hwpt_pgfault`, cookie in every record.
    HwptPgfault,
}

impl RecordFormat {
    /// The format as its negotiation bit.
    pub fn bits(self) -> RecordFormats {
        match self {
            RecordFormat::IommuFault => RecordFormats::IOMMU_FAULT,
            RecordFormat::HwptPgfault => RecordFormats::HWPT_PGFAULT,
        }
    }
}

/// What both ends agreed on; both keep a copy, and the shared region's header records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// The agreed ABI version.
    pub abi_version: u32,
    /// The fault ring's record layout.
    pub record: RecordFormat,
    /// The response layouts the producer will accept.
    pub responses: ResponseFormats,
    /// The agreed features.
    pub features: Features,
    /// Entries in the fault ring, the response ring and the verdict ring (a power of two).
    pub entries: u32,
    /// The most page requests a group may have, as the producer offered (0: not stated; a
    /// group is then bounded only by the ring).
    pub max_group: u32,
}

impl Agreement {
    /// Whether the consumer echoes private data (version 2 responses).
    pub fn echoes_private_data(&self) -> bool {
        self.features.contains(Features::PRIV_DATA_ECHO)
    }

    /// Whether responses name groups by cookie.
    pub fn cookie_responses(&self) -> bool {
        self.responses.contains(ResponseFormats::COOKIE)
    }

    /// Whether grpid-named (VFIO) responses are accepted.
    pub fn vfio_responses(&self) -> bool {
        self.responses
            .intersects(ResponseFormats::VFIO_V1 | ResponseFormats::VFIO_V2)
    }

    /// The most page requests a group may have to ever be delivered: the ring's entries, or the
    /// offered maximum if smaller.
    pub fn largest_group(&self) -> u32 {
        match self.max_group {
            0 => self.entries,
            m => m.min(self.entries),
        }
    }
}

/// Checks `request` against `offer` and returns what was agreed. Every refusal names what was
/// outside the offer or inconsistent: a version above the offer's; a record, response format or
/// feature not offered (or, at version 1, not part of version 1); not exactly one record format;
/// no response format; `PRIV_DATA_ECHO` without version 2 responses and `iommu_fault` records
/// (the iommufd record has no private data); `UNRECOVERABLE` without `iommu_fault` records (the
/// iommufd record has no unrecoverable form); `COOKIE_RESPONSE` and the cookie response format
/// asked for without each other; a ring size that is not a power of two within the offer.
pub fn negotiate(offer: &Offer, request: &Request) -> Result<Agreement, QueueError> {
    if request.abi_version == 0 || request.abi_version > offer.abi_version.min(ABI_VERSION) {
        return Err(QueueError::VersionNotOffered {
            asked: request.abi_version,
            offered: offer.abi_version.min(ABI_VERSION),
        });
    }
    let (records, responses, features) = if request.abi_version == ABI_V1 {
        (
            offer.records & RecordFormats::IOMMU_FAULT,
            offer.responses & ResponseFormats::VFIO_V1,
            Features::empty(),
        )
    } else {
        (offer.records, offer.responses, offer.features)
    };
    if request.record.bits().count_ones() != 1 {
        return Err(QueueError::Inconsistent(
            "exactly one record format must be asked for",
        ));
    }
    if !records.contains(request.record) {
        return Err(QueueError::NotOffered(format!(
            "record format {:?} at ABI version {}",
            request.record, request.abi_version
        )));
    }
    if request.responses.is_empty() {
        return Err(QueueError::Inconsistent("no response format asked for"));
    }
    if !responses.contains(request.responses) {
        return Err(QueueError::NotOffered(format!(
            "response formats {:?} at ABI version {}",
            request.responses - responses,
            request.abi_version
        )));
    }
    if !features.contains(request.features) {
        return Err(QueueError::NotOffered(format!(
            "features {:?} at ABI version {}",
            request.features - features,
            request.abi_version
        )));
    }
    let record = if request.record == RecordFormats::IOMMU_FAULT {
        RecordFormat::IommuFault
    } else {
        RecordFormat::HwptPgfault
    };
    if request.features.contains(Features::PRIV_DATA_ECHO)
        && (record != RecordFormat::IommuFault
            || !request.responses.contains(ResponseFormats::VFIO_V2))
    {
        return Err(QueueError::Inconsistent(
            "PRIV_DATA_ECHO needs iommu_fault records and version 2 responses",
        ));
    }
    if request.features.contains(Features::UNRECOVERABLE) && record != RecordFormat::IommuFault {
        return Err(QueueError::Inconsistent(
            "UNRECOVERABLE needs iommu_fault records (iommu_hwpt_pgfault has no unrecoverable form)",
        ));
    }
    if request.features.contains(Features::COOKIE_RESPONSE)
        != request.responses.contains(ResponseFormats::COOKIE)
    {
        return Err(QueueError::Inconsistent(
            "COOKIE_RESPONSE and the cookie response format go together",
        ));
    }
    if request.features.contains(Features::COOKIE_FAILURE)
        && !request.features.contains(Features::COOKIE_RESPONSE)
    {
        return Err(QueueError::Inconsistent(
            "COOKIE_FAILURE needs COOKIE_RESPONSE",
        ));
    }
    let max = offer.max_entries.min(DEFAULT_MAX_ENTRIES);
    let entries = if request.entries == 0 {
        DEFAULT_ENTRIES
            .max(offer.max_group.checked_next_power_of_two().unwrap_or(max))
            .min(max)
    } else {
        request.entries
    };
    if !entries.is_power_of_two() || entries < 2 || entries > max {
        return Err(QueueError::BadEntries { entries, max });
    }
    if entries < offer.max_group {
        return Err(QueueError::RingTooSmall {
            entries,
            max_group: offer.max_group,
        });
    }
    Ok(Agreement {
        abi_version: request.abi_version,
        record,
        responses: request.responses,
        features: request.features,
        entries,
        max_group: offer.max_group,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_consumer_on_current_producer_agrees_on_v1() {
        let a = negotiate(&Offer::current(), &Request::v1()).unwrap();
        assert_eq!(a.abi_version, ABI_V1);
        assert!(!a.echoes_private_data());
        assert_eq!(a.entries, DEFAULT_ENTRIES);
    }

    #[test]
    fn new_consumer_on_old_producer_drops_what_is_not_offered() {
        let r = Request::best_for(
            &Offer::v1(),
            RecordFormats::IOMMU_FAULT,
            Features::PRIV_DATA_ECHO | Features::LOSS_RECORDS,
        )
        .unwrap();
        assert_eq!(r.abi_version, ABI_V1);
        assert_eq!(r.features, Features::empty());
        assert_eq!(r.responses, ResponseFormats::VFIO_V1);
        negotiate(&Offer::v1(), &r).unwrap();
        assert!(
            Request::best_for(&Offer::v1(), RecordFormats::HWPT_PGFAULT, Features::all()).is_none()
        );
    }

    #[test]
    fn anything_outside_the_offer_is_refused() {
        let mut r = Request::v1();
        r.features = Features::PRIV_DATA_ECHO;
        r.responses |= ResponseFormats::VFIO_V2;
        assert!(matches!(
            negotiate(&Offer::v1(), &r),
            Err(QueueError::NotOffered(_))
        ));
        r.abi_version = 2;
        assert!(matches!(
            negotiate(&Offer::v1(), &r),
            Err(QueueError::VersionNotOffered {
                asked: 2,
                offered: 1
            })
        ));
        // A producer that does not offer UNRECOVERABLE (this crate's before it carried them).
        let mut old = Offer::current();
        old.features.remove(Features::UNRECOVERABLE);
        let mut r = Request::best_for(&old, RecordFormats::IOMMU_FAULT, Features::all()).unwrap();
        assert!(!r.features.contains(Features::UNRECOVERABLE));
        r.features |= Features::UNRECOVERABLE;
        let e = negotiate(&old, &r).unwrap_err();
        assert_eq!(e.errno(), libc::EOPNOTSUPP);
        assert!(e.to_string().contains("UNRECOVERABLE"), "{e}");
    }

    #[test]
    fn inconsistent_requests_are_refused() {
        let o = Offer::current();
        let mut r =
            Request::best_for(&o, RecordFormats::HWPT_PGFAULT, Features::COOKIE_RESPONSE).unwrap();
        r.features |= Features::PRIV_DATA_ECHO;
        r.responses |= ResponseFormats::VFIO_V2;
        assert!(matches!(
            negotiate(&o, &r),
            Err(QueueError::Inconsistent(_))
        ));
        let mut r =
            Request::best_for(&o, RecordFormats::HWPT_PGFAULT, Features::COOKIE_RESPONSE).unwrap();
        r.features = Features::empty();
        assert!(matches!(
            negotiate(&o, &r),
            Err(QueueError::Inconsistent(_))
        ));
        let mut r = Request::v1();
        r.record = RecordFormats::all();
        assert!(matches!(
            negotiate(&o, &r),
            Err(QueueError::Inconsistent(_))
        ));
        for bad in [3, 1, 8192] {
            let mut r = Request::v1();
            r.entries = bad;
            assert!(
                matches!(negotiate(&o, &r), Err(QueueError::BadEntries { .. })),
                "{bad}"
            );
        }
    }
}
