//! [`VirtioIommuBridge`]: an emulated virtio-iommu's page request side and the bridge from a
//! host fault queue, wired together (experimental).

use crate::guest_ram::GuestRam;
use iopf_abi::FaultConsumer;
use vm_memory::GuestAddress;

use super::unit::{EventBufferError, VirtioIommuConfig, VirtioIommuPri};
use crate::bridge::{Bridge, BridgeConfig, ConfigError, PrivateDataMode};

/// A host function's page requests carried into an emulated virtio-iommu's event queue and its
/// guest's `PAGE_RESP` requests carried back: a [`VirtioIommuPri`] and a [`Bridge`].
///
/// Unlike the VT-d unit there are no registers (it is not a [`crate::PassthroughUnit`]): the
/// VMM's virtio-iommu device owns the virtqueues and calls
///
/// * [`add_event_buffer`](Self::add_event_buffer) for each buffer it pops from the event
///   queue's available ring, then [`pump`](Self::pump);
/// * [`pump`](Self::pump) when the host queue is readable (or on a timer, for the age limit and
///   for answers that waited for room in the host queue);
/// * [`take_used`](Self::take_used) after each pump, to put the used buffers in the used ring
///   and notify the driver;
/// * [`handle_request`](Self::handle_request) for each request of type
///   `VIRTIO_IOMMU_T_PAGE_RESP` on the request queue, writing the returned status into its
///   tail.
///
/// Endpoint IDs are the bridge's [`crate::Endpoint::guest_rid`]s: the fault record's
/// `endpoint` is the guest requester id, and a `PAGE_RESP` naming an endpoint that is not one
/// is refused with `S_NOENT`. Private data is never carried (`PAGE_RESP` cannot echo it).
///
/// ```
/// use iopf_abi::{PageRequest, PageRequestFlags, Perm, ResponseCode};
/// use iopf_iommufd::compat_fault_queue;
/// use iopf_viommu::virtio_iommu::{
///     PageRespRequest, VirtioIommuBridge, VirtioIommuConfig, VirtioIommuFault, VIRTIO_IOMMU_S_OK,
/// };
/// use iopf_viommu::{BridgeConfig, Endpoint, PasidMap};
/// use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
///
/// let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 16)])?;
/// let (device, host) = compat_fault_queue(1)?;
/// let ep = Endpoint::new(1, 0x08);
/// let mut viommu = VirtioIommuBridge::new(host, BridgeConfig::new(vec![ep]), VirtioIommuConfig::new(64))?;
/// viommu.pri_mut().set_driver_ok(true);
/// viommu.add_event_buffer(GuestAddress(0x1000), 48)?;
/// device.report(PageRequest { flags: PageRequestFlags::LAST_PAGE
///     | PageRequestFlags::PASID_VALID, pasid: 5, grpid: 9, perm: Perm::READ, addr: 0x7000,
///     private_data: [0; 2] });
/// viommu.pump(&mem, 0)?;
/// let used = viommu.take_used();
/// assert_eq!(used, vec![(GuestAddress(0x1000), 48)]);
/// // The guest reads its record and answers.
/// let mut b = [0u8; 48];
/// mem.read_slice(&mut b, used[0].0)?;
/// let fault = VirtioIommuFault::from_bytes(&b)?;
/// let resp = PageRespRequest::new(0, fault.endpoint, fault.pasid(), 9, 0);
/// assert_eq!(viommu.handle_request(&resp.to_bytes()), VIRTIO_IOMMU_S_OK);
/// assert_eq!(device.take_answers()[0].code, ResponseCode::Success);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct VirtioIommuBridge<C: FaultConsumer> {
    pri: VirtioIommuPri,
    bridge: Bridge<C>,
}

impl<C: FaultConsumer> VirtioIommuBridge<C> {
    /// A device reading `host` for the functions `bridge` names, its private data off whatever
    /// `bridge` asks. The device starts in its reset state: no buffers, `DRIVER_OK` not set
    /// ([`VirtioIommuPri::set_driver_ok`] through [`pri_mut`](Self::pri_mut)).
    pub fn new(
        host: C,
        bridge: BridgeConfig,
        virtio: VirtioIommuConfig,
    ) -> Result<VirtioIommuBridge<C>, ConfigError> {
        let bridge = Bridge::new(
            host,
            BridgeConfig {
                private_data: PrivateDataMode::None,
                ..bridge
            },
        )?;
        Ok(VirtioIommuBridge {
            pri: VirtioIommuPri::new(virtio),
            bridge,
        })
    }

    /// The device.
    pub fn pri(&self) -> &VirtioIommuPri {
        &self.pri
    }

    /// The device, mutably (its `DRIVER_OK`; a VMM's own emulated PRI devices post into
    /// [`VirtioIommuPri::guest_queue`] beside the bridge).
    pub fn pri_mut(&mut self) -> &mut VirtioIommuPri {
        &mut self.pri
    }

    /// The bridge.
    pub fn bridge(&self) -> &Bridge<C> {
        &self.bridge
    }

    /// The bridge, mutably (its PRI enable per function, its host queue).
    pub fn bridge_mut(&mut self) -> &mut Bridge<C> {
        &mut self.bridge
    }

    /// Takes one event buffer ([`VirtioIommuPri::add_event_buffer`]); pump afterwards.
    pub fn add_event_buffer(
        &mut self,
        addr: GuestAddress,
        len: u32,
    ) -> Result<(), EventBufferError> {
        self.pri.add_event_buffer(addr, len)
    }

    /// The used event buffers to give back ([`VirtioIommuPri::take_used`]).
    pub fn take_used(&mut self) -> Vec<(GuestAddress, u32)> {
        self.pri.take_used()
    }

    /// Moves host groups into the event buffers as they allow, expires aged groups, sends owed
    /// answers. `now_ns` is the caller's clock. Returns the groups posted. Errors: the host
    /// queue's (the groups stay in it).
    pub fn pump(&mut self, mem: &impl GuestRam, now_ns: u64) -> Result<usize, C::Error> {
        let mut q = self.pri.guest_queue(mem);
        self.bridge.pump(&mut q, now_ns)
    }

    /// Handles one `PAGE_RESP` request's device-readable bytes; returns the tail's status
    /// ([`VirtioIommuPri::handle_request`]). The answer, if any, is sent to the host at once,
    /// unless the host's response ring is full: then it waits in the bridge
    /// ([`Bridge::owed_answers`]) for the next [`pump`](Self::pump). virtio has no sync
    /// command; a VMM that wants the request's completion to mean "the host has the answer"
    /// (what `CMD_SYNC` and `COMPLETION_WAIT` mean on SMMUv3 and AMD) puts the request in the
    /// used ring only once `bridge().owed_answers()` is 0.
    pub fn handle_request(&mut self, bytes: &[u8]) -> u8 {
        self.pri.handle_request(bytes, &mut self.bridge)
    }

    /// The device is reset (a guest reboot, a VMM reset, the driver writing 0 to the device
    /// status): buffers forgotten, `DRIVER_OK` cleared, and every group the guest held or the
    /// bridge staged answered INVALID.
    pub fn reset(&mut self) {
        self.pri.reset();
        self.bridge.reset();
    }
}
