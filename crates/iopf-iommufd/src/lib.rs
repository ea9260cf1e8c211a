//! The Linux iommufd fault queue backend, and an iommufd-compatible fault queue of iopf's own.
//!
//! ```text
//!  device ─PRI─▶ IOMMU driver ─▶ iommu_report_device_fault() ─▶ fault-capable HWPT ─▶ fault queue
//!                                                                 (IOMMU_HWPT_ALLOC    │ read(): whole groups,
//!                                                                  + FAULT_ID_VALID)   │ 40-byte records
//!  device ◀─ page response ◀── iopf_group_response() ◀── write(): 8-byte {cookie, code} ◀┘
//! ```
//!
//! * [`Iommufd`]: `/dev/iommu` (through cloud-hypervisor's `iommufd-ioctls`): IOAS and HWPT
//!   allocation, [`Iommufd::alloc_fault_queue`] (`IOMMU_FAULT_QUEUE_ALLOC`, which
//!   `iommufd-ioctls` lacks), [`Iommufd::alloc_fault_hwpt`], and [`attach_hwpt`] for any device
//!   implementing `iommufd_ioctls::AttachHwpt`.
//! * [`FaultQueue`]: the kernel's fault fd, read and answered with the kernel's exact rules
//!   ([`FaultFd`]) and usable as an [`iopf_abi::FaultConsumer`].
//! * [`CompatFaultQueue`] / [`CompatProducer`]: iopf's own queue with the same records, rules
//!   and errno, built on iopf's fault core (`iopf-core`), for machines without `/dev/iommu`.
//! * `selftest` (feature `selftest`): the kernel's iommufd selftest mock device, which produces
//!   real fault records without hardware. The in-guest test program of the kernel tier
//!   (`crates/iopf-kernel-tests`, run by `scripts/kernel-tier.sh`) is built on it.
//! * [`differential`]: one script of fault-queue operations, run against any [`FaultFd`], so
//!   the kernel and [`CompatFaultQueue`] can be required to behave identically.
//!
//! Errors are [`Error`]s; [`Error::errno`] is the errno Linux returns for each.
//!
//! A VMM's fault loop, the same on the kernel's queue and on iopf's (`dev_id`, the parent HWPT,
//! the stage-1 data and the device handle come from the VMM's own setup):
//!
//! ```no_run
//! use iopf_abi::{FaultConsumer, IommufdResponse, PgFault, ResponseCode};
//! use iopf_iommufd::{attach_hwpt, Iommufd};
//!
//! fn serve<C: FaultConsumer>(queue: &mut C) -> Result<(), C::Error> {
//!     let mut records = [PgFault::from_bytes(&[0; 40]).expect("a zeroed record decodes"); 64];
//!     while queue.wait_readable(None)? {
//!         let n = queue.read_faults(&mut records)?;
//!         // Resolve each group (map the pages), then answer it once, by its cookie.
//!         let answers: Vec<IommufdResponse> = records[..n]
//!             .iter()
//!             .filter(|r| r.is_last())
//!             .map(|r| IommufdResponse { cookie: r.cookie, code: ResponseCode::Success })
//!             .collect();
//!         queue.respond(&answers)?;
//!     }
//!     Ok(())
//! }
//!
//! # fn setup(dev_id: u32, parent_hwpt: u32, data_type: u32, stage1: &[u8],
//! #          device: &dyn iommufd_ioctls::AttachHwpt) -> Result<(), iopf_iommufd::Error> {
//! let iommufd = Iommufd::open()?;
//! let mut queue = iommufd.alloc_fault_queue()?;
//! let hwpt = iommufd.alloc_fault_hwpt(dev_id, parent_hwpt, data_type, stage1, &queue)?;
//! attach_hwpt(device, hwpt)?;
//! serve(&mut queue)?;
//! # Ok(()) }
//! ```

mod compat;
pub mod differential;
mod error;
mod fault_queue;
mod iommufd;
#[cfg(feature = "selftest")]
pub mod selftest;
mod sys;
mod wire;

pub use compat::{
    compat_fault_queue, compat_fault_queue_with, CompatConfig, CompatFaultQueue, CompatProducer,
    KernelModel,
};
pub use error::{Error, Result};
pub use fault_queue::FaultQueue;
pub use iommufd::{attach_hwpt, HwptAlloc, Iommufd, IOMMU_HWPT_ALLOC_NEST_PARENT};
pub use wire::{encode_response, FaultFd, Readiness, RECORD_SIZE, RESPONSE_SIZE};
