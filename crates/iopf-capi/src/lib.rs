//! The C API of iopf, for VMMs written in C (QEMU and others): a static and a shared library
//! (`libiopf_capi.a`, `libiopf_capi.so`) and the header `include/iopf.h`, generated from this
//! crate by cbindgen and checked up to date by the test suite.
//!
//! ```text
//!  device ─▶ host IOMMU ─▶ host fault queue ─────────────── iopf_host
//!            Linux fault fd (iopf_host_from_fault_fd)  │  iopf_host_read_faults
//!            iopf's shared queue (iopf_host_attach)    │  iopf_host_respond
//!            compatible queue (iopf_compat_new)        │  iopf_host_fd / _arm / _wait
//!                                                      ▼
//!  iopf_viommu_new_vtd / _smmuv3 / _amd (takes the host) ─ iopf_viommu
//!       VMM's MMIO handler ─▶ iopf_viommu_mmio_read / _mmio_write
//!       host fd readable   ─▶ iopf_viommu_pump
//!       guest memory       ─  iopf_guest_memory (mapped regions, or read/write callbacks)
//!       interrupts         ◀─ the iopf_msi_fn given at creation
//! ```
//!
//! The rules of the boundary: every fallible function returns 0 or a count, or a negative
//! errno with a message for [`iopf_last_error`]; nothing panics into C; each handle is owned by
//! the caller from its constructor to its `_free`, except a host handed to a vIOMMU, which the
//! vIOMMU then owns. The Rust side is iopf's own crates: this crate adds no rule of the fault
//! path, only the translation of pointers, codes and errors.

mod compat;
mod error;
mod ffi;
mod host;
mod memory;
mod viommu;

pub use compat::*;
pub use error::{iopf_last_error, CError};
pub use host::*;
pub use memory::*;
pub use viommu::*;

/// The version of the C API (the crate's version), as a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn iopf_version() -> *const std::ffi::c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
