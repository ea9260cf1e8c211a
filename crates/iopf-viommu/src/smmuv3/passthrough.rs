//! [`SmmuBridge`]: an SMMUv3's page request path and the bridge from a host fault queue,
//! wired together.

use crate::guest_ram::GuestRam;
use iopf_abi::FaultConsumer;

use super::command_queue::Processed;
use super::unit::{MmioError, SmmuConfig, SmmuPri, Written};
use crate::bridge::{Bridge, BridgeConfig, ConfigError};
use crate::interrupt::MsiSink;

/// A host function's page requests carried into an emulated SMMUv3 (its PRI queue, or its
/// event queue for a stalling stream) and the guest's `CMD_PRI_RESP` / `CMD_RESUME` carried
/// back: a [`SmmuPri`] and a [`Bridge`].
///
/// The VMM calls [`mmio_read`](Self::mmio_read) and [`mmio_write`](Self::mmio_write) from its
/// MMIO handler for the unit's two 64 KiB register pages, and [`pump`](Self::pump) when the
/// host queue is readable (or on a timer, for the age limit and for answers that waited for
/// room in the host queue, which a `CMD_SYNC` waits for).
///
/// ```
/// use iopf_abi::{PageRequest, PageRequestFlags, Perm};
/// use iopf_iommufd::compat_fault_queue;
/// use iopf_viommu::smmuv3::{SmmuBridge, SmmuConfig};
/// use iopf_viommu::{BridgeConfig, Endpoint, PasidMap, PassthroughUnit, RecordedMsis};
/// use iopf_viommu::guest::{GuestDriverModel, IdentityResolver, SmmuGuestDriver};
/// use vm_memory::{GuestAddress, GuestMemoryMmap};
///
/// let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)])?;
/// let (device, host) = compat_fault_queue(1)?;
/// let ep = Endpoint::new(1, 0x08);
/// let mut smmu = SmmuBridge::new(host, BridgeConfig::new(vec![ep]), SmmuConfig::default())?;
/// let mut irq = RecordedMsis::default();
/// // The guest's driver sets the unit up through MMIO, as Linux's arm_smmu_device_reset() does.
/// let mut guest = SmmuGuestDriver::new(0x10000).with_streams(&[0x08]);
/// guest.init(&mut smmu, &mem, &mut irq, 0)?;
/// device.report(PageRequest { flags: PageRequestFlags::LAST_PAGE
///     | PageRequestFlags::PASID_VALID, pasid: 5, grpid: 9, perm: Perm::READ, addr: 0x7000,
///     private_data: [0; 2] });
/// smmu.pump(&mem, &mut irq, 0)?;
/// // The guest's PRI queue thread answers with CMD_PRI_RESP and a CMD_SYNC.
/// let handled = guest.handle_event(&mut smmu, &mem, &mut irq, &mut IdentityResolver, 0)?;
/// assert_eq!((handled.responses, handled.waits_done), (1, true));
/// assert_eq!(device.take_answers().len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SmmuBridge<C: FaultConsumer> {
    pri: SmmuPri,
    bridge: Bridge<C>,
}

impl<C: FaultConsumer> SmmuBridge<C> {
    /// A unit configured by `smmu` over a bridge configured by `bridge`.
    pub fn new(
        host: C,
        bridge: BridgeConfig,
        smmu: SmmuConfig,
    ) -> Result<SmmuBridge<C>, ConfigError> {
        Ok(SmmuBridge {
            pri: SmmuPri::new(smmu),
            bridge: Bridge::new(host, bridge)?,
        })
    }

    /// The unit.
    pub fn pri(&self) -> &SmmuPri {
        &self.pri
    }

    /// The unit, mutably (a VMM's own emulated devices post into [`SmmuPri::guest_queue`]).
    pub fn pri_mut(&mut self) -> &mut SmmuPri {
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

    /// A guest write of the unit's registers: carries out commands at once and posts waiting
    /// host groups when room appears. `now_ns` is the caller's clock.
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
        let room_in_queue_on = written.room && (self.pri.pri_enabled() || self.pri.evtq_enabled());
        crate::passthrough_unit::after_guest_write(
            self,
            written.commands,
            room_in_queue_on,
            mem,
            irq,
            now_ns,
        );
        Ok(written)
    }

    /// Moves host groups into the guest's queues, expires aged groups, sends owed answers, and
    /// resumes a command queue that was waiting at a `CMD_SYNC`. Returns the groups posted.
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
        self.process_commands(mem, irq);
        Ok(posted)
    }

    /// Carries out the command queue (a VMM that defers command processing calls this).
    pub fn process_commands(&mut self, mem: &impl GuestRam, irq: &mut dyn MsiSink) -> Processed {
        let p = self.pri.process_commands(mem, irq, &mut self.bridge);
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

crate::passthrough_unit::delegate_passthrough_unit!(SmmuBridge);
