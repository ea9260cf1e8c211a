//! Kernel-exact records of the Linux recoverable I/O page fault ABI.
//!
//! Every record here exists twice: a *raw* `#[repr(C)]` form that is byte-identical to the
//! kernel's (derived with `zerocopy`, so reading one out of a byte buffer is a checked copy, never a
//! transmute), and a *decoded* form with enums and flag sets in which every value is known. Turning
//! raw into decoded is where untrusted bytes are judged: unknown types, flags, codes and non-zero
//! reserved bytes are [`AbiError`]s, each mapped to the errno Linux returns for it.
//!
//! ```text
//!  device ──page request──▶ IOMMU ──▶ fault core ──▶ fault record ──────────────▶ consumer
//!                                                   [`fault::IommuFault`] (64 B, seed / ≤6.5)
//!                                                   [`iommufd::HwptPgfault`] (40 B, ≥6.11)
//!  device ◀──page response── fault core ◀── validate ◀── response record ◀───────── consumer
//!                                                   [`response::VfioIommuPageResponse`] (argsz)
//!                                                   [`iommufd::HwptPageResponse`] (8 B, cookie)
//! ```
//!
//! * [`fault`]: `struct iommu_fault` and its two payloads.
//! * [`response`]: `struct iommu_page_response` v1, the seed's v2 with private data appended, and
//!   the VFIO wrapper `struct vfio_iommu_page_response { argsz; pr }`.
//! * [`iommufd`]: the iommufd fault queue records of Linux 6.12.
//! * [`code`]: the response codes and their PCIe meaning.
//! * [`extensible`]: the `copy_struct_from_user()` rule for size-prefixed structs, both directions.
//! * [`features`]: what a producer offers and a consumer asks for in the negotiation.
//! * [`consumer`]: the consumer interface shared by iopf's fault queue and the kernel's.
//!
//! The crate is `no_std` and never allocates, so a VMM, an emulator or kernel-side Rust can use it
//! on its own.
#![no_std]
#![deny(missing_docs)]

pub mod code;
pub mod consumer;
pub mod error;
pub mod extensible;
pub mod fault;
pub mod features;
pub mod iommufd;
pub mod perm;
pub mod response;

pub use code::ResponseCode;
pub use consumer::FaultConsumer;
pub use error::AbiError;
pub use fault::{
    Fault, FaultReason, IommuFault, IommuFaultWords, PageRequest, PageRequestFlags, Unrecoverable,
    UnrecoverableFlags,
};
pub use features::{Features, RecordFormats, ResponseFormats};
pub use iommufd::{
    HwptPageResponse, HwptPgfault, IommufdResponse, PgFault, PgfaultFlags, Unnamed,
    KERNEL_RESPONSE_NEEDS_PASID,
};
pub use perm::Perm;
pub use response::{
    IommuPageResponse, IommuPageResponseV1, PageResponse, ResponseFlags, VfioIommuPageResponse,
};

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
