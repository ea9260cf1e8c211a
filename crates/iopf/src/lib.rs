//! iopf: the recoverable I/O page fault path of a virtualised machine.
//!
//! ```text
//!  PRI device ──page request──▶ IOMMU page-request queue ──▶ fault core ──▶ fault queue ──▶ consumer (VMM)
//!      ▲                                                        │ pending groups            │ resolve / inject
//!      └──────────────── page (group) response ◀── validate ◀───┴──────── response ◀────────┘
//! ```
//!
//! Each stage is its own crate, re-exported here under the name of its stage, its documentation
//! inlined so these pages are complete on their own:
//!
//! | module | crate | feature | stage | Linux counterpart |
//! |---|---|---|---|---|
//! | [`abi`] | `iopf-abi` | always | kernel-exact records, the extensible-struct rule, feature bits, the [`FaultConsumer`](abi::FaultConsumer) interface | `uapi/linux/iommu.h`, `uapi/linux/iommufd.h` |
//! | [`core`] | `iopf-core` | always | the fault core: partial and complete groups, cookies, response validation, exactly-once, teardown | `io-pgfault.c`, `iommufd/fault.c` |
//! | [`queue`] | `iopf-queue` | always | the fault queue shared with user space: shared-memory rings, negotiation, UNIX socket | the VFIO fault region (never merged) |
//! | [`iommufd`] | `iopf-iommufd` | `iommufd` (default) | the real Linux iommufd fault queue, and an iommufd-compatible queue of iopf's own | `/dev/iommu` |
//! | [`viommu`] | `iopf-viommu` | `viommu` (default) | the guest side: emulated VT-d, SMMUv3 and AMD page request queues and their command queues in guest memory, the bridge from any host fault queue to them, guest driver models | the guest's `intel/prq.c`, `arm-smmu-v3.c`, `amd/ppr.c`; QEMU's vIOMMUs |
//! | [`sim`] | `iopf-sim` | `sim` | the built-in simulated platform: PRI devices, IOMMU page request queue, I/O page tables, workloads, `iopf run` | hardware |
//!
//! Who owns what: the [`core::FaultCore`] owns the devices, their handlers and every outstanding
//! group, and is the only thing that sends a response to a device (through its
//! [`core::ResponseSink`]); a queue's [`queue::Producer`] lives with the core, its
//! [`queue::Consumer`] with the VMM; the consumer only ever *asks*, and the core judges.
//!
//! The rules are written once: every stage keeps its groups in [`core::GroupTable`] and rules on
//! responses with [`core::GroupTable::judge`] (a group keeps the core's cookie all the way to the
//! consumer); a group that does not fit the fault ring waits in the producer's backlog, bounded by
//! the devices' allocations, and nothing transient ever ends in Response Failure.
//!
//! The whole path in one process, from a page request to the response at the device:
//!
//! ```
//! use iopf::abi::{Fault, FaultConsumer, Features, IommufdResponse, PageRequest,
//!                 PageRequestFlags, Perm, PgFault, RecordFormats, ResponseCode};
//! use iopf::core::{DeviceId, DeviceResponse, FaultCore, PriCaps, ResponseSink};
//! use iopf::queue::{channel, CoreLink, Offer, ProducerConfig, Request};
//!
//! /// Stands in for the IOMMU: what reaches the device.
//! #[derive(Default)]
//! struct ToDevice(Vec<DeviceResponse>);
//! impl ResponseSink for ToDevice {
//!     fn page_response(&mut self, _dev: DeviceId, r: &DeviceResponse) { self.0.push(*r) }
//! }
//!
//! // The producer side: a fault core with one PRI function, feeding a negotiated queue.
//! let mut core = FaultCore::new(ToDevice::default());
//! let dev = core.register(PriCaps::default())?;
//! let offer = Offer::current();
//! let ask = Request::best_for(&offer, RecordFormats::HWPT_PGFAULT, Features::COOKIE_RESPONSE)
//!     .ok_or("the producer does not offer cookie responses")?;
//! let (producer, mut consumer) = channel(&offer, &ask, ProducerConfig::default())?;
//! let mut link = CoreLink::attach(&mut core, dev, None, producer)?;
//!
//! // The device asks for a page; the IOMMU reports it.
//! let request = PageRequest { flags: PageRequestFlags::LAST_PAGE, pasid: 0, grpid: 3,
//!                             perm: Perm::READ | Perm::WRITE, addr: 0x7000, private_data: [0; 2] };
//! core.report(dev, &Fault::PageRequest(request), 0)?;
//!
//! // The consumer (a VMM) reads whole groups, maps the page, and answers by cookie.
//! let mut faults = [PgFault::from_bytes(&[0; 40])?; 8];
//! let n = consumer.read_faults(&mut faults)?;
//! assert_eq!((n, faults[0].addr), (1, 0x7000));
//! consumer.respond(&[IommufdResponse { cookie: faults[0].cookie, code: ResponseCode::Success }])?;
//!
//! // Back on the producer side: the core judges the response and answers the device, once.
//! link.pump(&mut core);
//! assert_eq!(core.sink().0.len(), 1);
//! assert_eq!((core.sink().0[0].grpid, core.sink().0[0].code), (3, ResponseCode::Success));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//!
//! The defaults are what a VMM's fault path needs: [`abi`], [`core`] and [`queue`] always, and
//! the default features `iommufd` (the kernel's fault queue; pulls `iommufd-ioctls`) and `viommu`
//! (the guest side; pulls `vm-memory`). Turn defaults off to leave either out.
//!
//! * `sim`: the simulated platform [`sim`] (pulls `serde`, `toml`, `rand`, `hdrhistogram`,
//!   `vm-memory`'s mmap backend); off by default, the `iopf` command turns it on.
//! * `serde`: `serde::Serialize` on [`abi`]'s decoded records.
//! * `test-utils`: the fault core's test doubles (a recording response sink, a handler that keeps
//!   its groups), so a VMM's own fault handling can be tested against iopf.
//! * `selftest`: the iommufd selftest mock device (Linux `CONFIG_IOMMUFD_TEST`); implies
//!   `iommufd`.
//! * `virtio-iommu-experimental`: virtio-iommu page requests as the unmerged 2021 RFC proposed
//!   them (the format may change); implies `viommu`.
//!
//! <!-- The links of the modules behind features: the module when it is built, else the list
//! above. -->
#![cfg_attr(feature = "sim", doc = "[`sim`]: mod@sim")]
#![cfg_attr(not(feature = "sim"), doc = "[`sim`]: #features")]
#![cfg_attr(feature = "iommufd", doc = "[`iommufd`]: mod@iommufd")]
#![cfg_attr(not(feature = "iommufd"), doc = "[`iommufd`]: #features")]
#![cfg_attr(feature = "viommu", doc = "[`viommu`]: mod@viommu")]
#![cfg_attr(not(feature = "viommu"), doc = "[`viommu`]: #features")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

#[doc(inline)]
pub use iopf_abi as abi;
#[doc(inline)]
pub use iopf_core as core;
#[doc(inline)]
#[cfg(feature = "iommufd")]
pub use iopf_iommufd as iommufd;
#[doc(inline)]
pub use iopf_queue as queue;
#[doc(inline)]
#[cfg(feature = "sim")]
pub use iopf_sim as sim;
#[doc(inline)]
#[cfg(feature = "viommu")]
pub use iopf_viommu as viommu;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
