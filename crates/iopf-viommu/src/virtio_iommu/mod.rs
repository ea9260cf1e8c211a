//! virtio-iommu page requests, **experimental**: the format of an unmerged RFC (2021), which
//! may change or never be merged. Behind the `virtio-iommu-experimental` feature.
//!
//! * [`records`]: the fault record ([`VirtioIommuFault`]) and the `PAGE_RESP` request
//!   ([`PageRespRequest`]), with the `VIRTIO_IOMMU_S_*` statuses;
//! * [`VirtioIommuPri`] (unit.rs): the event buffers the VMM hands over, the
//!   [`crate::GuestQueue`] the bridge posts into ([`VirtioEventQueue`]), and `PAGE_RESP`
//!   handling;
//! * [`VirtioIommuBridge`] (passthrough.rs): a [`VirtioIommuPri`] and a [`crate::Bridge`] wired
//!   together.
//!
//! # Where the layouts come from
//!
//! Merged (Linux 6.12 `include/uapi/linux/virtio_iommu.h`, virtio-iommu v0.12): the event
//! queue's `struct virtio_iommu_fault { u8 reason; u8 reserved[3]; le32 flags; le32 endpoint;
//! u8 reserved2[4]; le64 address; }` (24 bytes), flags `F_READ` 0, `F_WRITE` 1, `F_EXEC` 2,
//! `F_ADDRESS` 8, reason `R_MAPPING` 2; the request head `{ u8 type; u8 reserved[3] }`, tail
//! `{ u8 status; u8 reserved[3] }` and statuses `S_OK` 0 … `S_NOMEM` 8. No page requests.
//!
//! Unmerged: Vivek Gautam's "[PATCH RFC v1 00/11] iommu/virtio: vSVA support" (linux-iommu and
//! virtualization lists, 23 April 2021), and Jean-Philippe Brucker's review (September–October
//! 2021). Found with the `search` tool's code corpus (mail archives), by the strings
//! `VIRTIO_IOMMU_FAULT_F_PAGE_REQ`, `virtio_iommu_req_page_resp` and `VIRTIO_IOMMU_T_PAGE_RESP`:
//!
//! * **The fault record** is the review's "extended struct" (Brucker's reply to patch 01/11
//!   "uapi/virtio-iommu: Add page request grp-id and flags information", which Gautam agreed to
//!   adopt; no later revision was found): `reserved2` becomes `le32 pasid`, and `le16 group_id;
//!   u8 reserved1[6]; le64 private_data[2]` are appended (48 bytes); flags
//!   `F_PRIVILEGED` 3, `F_LAST` 4, `F_PAGE_REQ` 5, `F_PASID` 9, `F_GROUP_ID` 10,
//!   `F_PRIV_DATA` 11. It keeps Linux 6.12's offsets, which the review required ("New fields
//!   must be appended at the end of the struct"). Patch 01/11 as posted had a different layout,
//!   on an unmerged base (a `flt_type` field, a separate `pr_evt_flags` word, a 32-bit `grpid`
//!   before the address); the review rejected it, and it is not modelled.
//! * **`PAGE_RESP`** is patch 10/11 "uapi/virtio-iommu: Add a new request type to send page
//!   response" as posted (the only version found): type `0x08`; `le32 domain, endpoint, flags,
//!   pasid, grpid; le16 resp_code; u8 pasid_valid; u8 reserved[9]`, then the tail (40 bytes);
//!   flag `PASID_VALID` bit 0 (named `F_PASID_VALID` here, as the review asked); codes
//!   `SUCCESS` 0, `INVALID` 1, `FAILURE` 2 (Linux's `enum iommu_page_response_code`, read
//!   through [`crate::code_map::virtio_to_pcie`]).
//!
//! # Decisions the RFC leaves open (this model's, each marked experimental)
//!
//! * **Endpoint IDs** are the guest requester ids ([`crate::Endpoint::guest_rid`]), so an
//!   endpoint ID above 16 bits is no endpoint (`S_NOENT`).
//! * **`domain`** is not checked: the review found it redundant ("the fault report doesn't
//!   come with a domain"). A VMM that wants it checked against the endpoint's attachment does so
//!   before routing the request here.
//! * **`pasid_valid`** may be 0 or 1, and 1 only with `F_PASID_VALID`: the v1 driver writes
//!   both, and a driver that follows the review (the byte dropped) leaves it 0. The `pasid`
//!   field is ignored without the flag (the v1 driver fills it in either way).
//! * **Strictness.** A reserved byte of the body, an unknown flag, a code other than 0–2, a
//!   `grpid` above 16 bits (the record's `group_id` width) or a valid PASID above 20 bits:
//!   `S_INVAL`, and nothing is answered; a request shorter than 36 bytes: `S_INVAL`, as QEMU's
//!   `virtio_iommu_iov_to_req()` answers a short request. `head.reserved` is ignored (QEMU reads
//!   only `head.type`).
//! * **A response that matches nothing** (a second answer, a wrong PASID): `S_OK` and nothing
//!   answered, counted in the bridge's stats (see [`VirtioIommuPri::handle_request`]).
//! * **PASID in the response**: the revised RFC driver sends the PASID only when the function's
//!   "PRG Response PASID Required" bit is set, so such an endpoint's groups must be named
//!   [`crate::GroupNaming::PRI_NO_PASID_IN_RESPONSE`] ([`VirtioIommuConfig::with_naming`]).
//! * **Reason** of a page request's record: `R_MAPPING` (the RFC does not say).
//! * **Event buffers** too small for the 48-byte record: see [`VirtioIommuPri`].

mod passthrough;
pub mod records;
mod unit;

pub use passthrough::VirtioIommuBridge;
pub use records::*;
pub use unit::{
    EventBufferError, VirtioEventQueue, VirtioIommuConfig, VirtioIommuPri, VirtioPriStats,
};
