//! What the two ends of a fault queue can agree on.
//!
//! The seed asks for a two-way negotiation: the consumer learns what the producer supports (so a
//! new consumer does not send a flag an old producer rejects), and the producer learns what the
//! consumer will do (so it knows whether private data will come back). The producer offers a set
//! of [`Features`], [`RecordFormats`] and [`ResponseFormats`]; the consumer asks for a subset; both
//! keep the intersection, and nothing outside it is used.

bitflags::bitflags! {
    /// Optional behaviours of a fault queue.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Features: u64 {
        /// The consumer echoes page-request private data in version 2 responses. Without it the
        /// producer keeps the private data with the group and restores it itself.
        const PRIV_DATA_ECHO = 1 << 0;
        /// Responses name their group by cookie (the iommufd 8-byte response) rather than by
        /// (PASID, grpid).
        const COOKIE_RESPONSE = 1 << 1;
        /// Unrecoverable fault records are delivered too (for information; they need no answer).
        const UNRECOVERABLE = 1 << 2;
        /// Records the producer could not deliver are announced by a loss record in the ring (as
        /// iommufd's vEVENTQ `IOMMU_VEVENTQ_FLAG_LOST_EVENTS`), not only by the header counter.
        const LOSS_RECORDS = 1 << 3;
        /// Cookie responses may carry Response Failure (2), which the iommufd fault fd refuses
        /// (it takes SUCCESS and INVALID only): for a consumer that answers on behalf of a guest
        /// or a policy, on a queue whose producer sends FAILURE only to functions that may
        /// receive it (INVALID to the others). Needs `COOKIE_RESPONSE`.
        const COOKIE_FAILURE = 1 << 4;
    }
}

bitflags::bitflags! {
    /// Fault record layouts a ring can carry.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct RecordFormats: u32 {
        /// The seed's 64-byte `struct iommu_fault`.
        const IOMMU_FAULT = 1 << 0;
        /// The 40-byte iommufd `struct iommu_hwpt_pgfault`, with its cookie.
        const HWPT_PGFAULT = 1 << 1;
    }
}

bitflags::bitflags! {
    /// Page response layouts a response path can carry.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct ResponseFormats: u32 {
        /// `vfio_iommu_page_response` with a version 1 `iommu_page_response` (28 bytes).
        const VFIO_V1 = 1 << 0;
        /// `vfio_iommu_page_response` with a version 2 `iommu_page_response` (44 bytes).
        const VFIO_V2 = 1 << 1;
        /// The 8-byte iommufd `{cookie, code}` response.
        const COOKIE = 1 << 2;
    }
}

#[cfg(feature = "serde")]
pub(crate) fn serialize_flag_names<'a, S: serde::Serializer>(
    names: impl Iterator<Item = &'a str>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(names)
}

#[cfg(feature = "serde")]
macro_rules! serialize_as_names {
    ($($t:ty),*) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serialize_flag_names(self.iter_names().map(|(n, _)| n), s)
            }
        }
    )*};
}
#[cfg(feature = "serde")]
serialize_as_names!(Features, RecordFormats, ResponseFormats);
