//! [`VtdBridge`]: a VT-d unit's page request path and the bridge from a host fault queue,
//! wired together.

use crate::guest_ram::GuestRam;
use iopf_abi::FaultConsumer;

use super::invalidation_queue::Processed;
use super::unit::{MmioError, VtdConfig, VtdPri, Written};
use crate::bridge::{Bridge, BridgeConfig, ConfigError};
use crate::interrupt::MsiSink;

/// A host function's page requests carried into an emulated VT-d and its guest's page group
/// responses carried back: a [`VtdPri`] and a [`Bridge`].
///
/// The VMM calls [`mmio_read`](Self::mmio_read) and [`mmio_write`](Self::mmio_write) from its
/// MMIO handler for the unit's registers, and [`pump`](Self::pump) when the host queue is
/// readable (or on a timer, for the age limit and for answers that waited for room in the host
/// queue). `mem` is the guest's memory, `irq` where the unit's MSIs go.
///
/// ```
/// use iopf_abi::{PageRequest, PageRequestFlags, Perm};
/// use iopf_iommufd::compat_fault_queue;
/// use iopf_viommu::vtd::{VtdBridge, VtdConfig};
/// use iopf_viommu::{BridgeConfig, Endpoint, PasidMap, PrivateDataMode, RecordedMsis};
/// use iopf_viommu::guest::{IdentityResolver, VtdGuestDriver};
/// use vm_memory::{GuestAddress, GuestMemoryMmap};
///
/// let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)])?;
/// let (device, host) = compat_fault_queue(1)?;
/// let ep = Endpoint::new(1, 0x08);
/// let mut vtd = VtdBridge::new(host, BridgeConfig::new(vec![ep]), VtdConfig::new(PrivateDataMode::None))?;
/// let mut irq = RecordedMsis::default();
/// // The guest's driver sets the queues up through MMIO, as Linux does.
/// let mut guest = VtdGuestDriver::new(0x10000, 0x20000);
/// guest.init(&mut vtd, &mem, &mut irq, 0)?;
/// // A fault on the host: pumped into the guest's page request queue.
/// device.report(PageRequest { flags: PageRequestFlags::LAST_PAGE
///     | PageRequestFlags::PASID_VALID, pasid: 5, grpid: 9, perm: Perm::READ, addr: 0x7000,
///     private_data: [0; 2] });
/// vtd.pump(&mem, &mut irq, 0)?;
/// // The guest handles its page request interrupt and answers through its invalidation queue.
/// let handled = guest.handle_event(&mut vtd, &mem, &mut irq, &mut IdentityResolver, 0)?;
/// assert_eq!(handled.responses, 1);
/// assert_eq!(device.take_answers().len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct VtdBridge<C: FaultConsumer> {
    pri: VtdPri,
    bridge: Bridge<C>,
}

impl<C: FaultConsumer> VtdBridge<C> {
    /// A unit whose private-data mode is what `vtd` asks for and the host path can carry
    /// (a 3.0 unit needs a host queue that delivers private data; otherwise the unit is 4.0).
    pub fn new(host: C, bridge: BridgeConfig, vtd: VtdConfig) -> Result<VtdBridge<C>, ConfigError> {
        let bridge = Bridge::new(
            host,
            BridgeConfig {
                private_data: vtd.private_data,
                ..bridge
            },
        )?;
        let cfg = VtdConfig {
            private_data: bridge.private_data_mode(),
            ..vtd
        };
        Ok(VtdBridge {
            pri: VtdPri::new(cfg),
            bridge,
        })
    }

    /// The unit.
    pub fn pri(&self) -> &VtdPri {
        &self.pri
    }

    /// The unit, mutably: a VMM's own emulated PRI devices post into
    /// [`VtdPri::guest_queue`] beside the bridge (QEMU's emulated-device PRI).
    pub fn pri_mut(&mut self) -> &mut VtdPri {
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

    /// A guest read of the unit's registers.
    pub fn mmio_read(&self, offset: u64, data: &mut [u8]) -> Result<(), MmioError> {
        self.pri.mmio_read(offset, data)
    }

    /// A guest write of the unit's registers: carries out invalidation descriptors at once and
    /// posts waiting host groups when room appears. `now_ns` is the caller's clock.
    pub fn mmio_write(
        &mut self,
        offset: u64,
        data: &[u8],
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        now_ns: u64,
    ) -> Result<Written, MmioError> {
        let written = self
            .pri
            .mmio_write(offset, data, mem, irq, &mut self.bridge)?;
        let room_in_queue_on = written.room && self.pri.prq().enabled();
        crate::passthrough_unit::after_guest_write(
            self,
            written.invalidations,
            room_in_queue_on,
            mem,
            irq,
            now_ns,
        );
        Ok(written)
    }

    /// Moves host groups into the guest's queue, expires aged groups, sends owed answers, and
    /// resumes an invalidation queue that was waiting for them. Returns the groups posted.
    pub fn pump(
        &mut self,
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
        now_ns: u64,
    ) -> Result<usize, C::Error> {
        let posted = {
            let mut q = self.pri.guest_queue(mem, irq);
            self.bridge.pump(&mut q, now_ns)?
        };
        if self.bridge.flush() {
            self.pri.process_invalidations(mem, irq, &mut self.bridge);
        }
        Ok(posted)
    }

    /// Carries out the invalidation queue (a VMM that defers descriptor processing calls this).
    pub fn process_invalidations(
        &mut self,
        mem: &impl GuestRam,
        irq: &mut dyn MsiSink,
    ) -> Processed {
        let p = self.pri.process_invalidations(mem, irq, &mut self.bridge);
        self.bridge.flush();
        p
    }

    /// The unit is reset (a guest reboot, a VMM reset): registers to their reset values, and
    /// every group the guest held answered INVALID.
    pub fn reset(&mut self) {
        self.pri.reset();
        self.bridge.reset();
    }
}

crate::passthrough_unit::delegate_passthrough_unit!(VtdBridge);
