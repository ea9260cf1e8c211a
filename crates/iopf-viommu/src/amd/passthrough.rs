//! [`AmdBridge`]: an AMD IOMMU's page request path and the bridge from a host fault queue,
//! wired together.

use crate::guest_ram::GuestRam;
use iopf_abi::FaultConsumer;

use super::command_buffer::Processed;
use super::unit::{AmdConfig, AmdPri, MmioError, Written};
use crate::bridge::{Bridge, BridgeConfig, ConfigError};
use crate::interrupt::MsiSink;

/// A host function's page requests carried into an emulated AMD IOMMU's PPR log and its
/// guest's COMPLETE_PPR_REQUEST commands carried back: an [`AmdPri`] and a [`Bridge`].
///
/// The VMM calls [`mmio_read`](Self::mmio_read) and [`mmio_write`](Self::mmio_write) from its
/// MMIO handler, [`set_msi`](Self::set_msi) when the guest programs the IOMMU's MSI capability,
/// and [`pump`](Self::pump) when the host queue is readable (or on a timer, for the age limit
/// and for answers that waited for room in the host queue).
///
/// ```
/// use iopf_abi::{PageRequest, PageRequestFlags, Perm};
/// use iopf_iommufd::compat_fault_queue;
/// use iopf_viommu::amd::{AmdBridge, AmdConfig};
/// use iopf_viommu::{BridgeConfig, Endpoint, PasidMap, RecordedMsis};
/// use iopf_viommu::guest::{AmdGuestDriver, GuestDriverModel, IdentityResolver};
/// use vm_memory::{GuestAddress, GuestMemoryMmap};
///
/// let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)])?;
/// let (device, host) = compat_fault_queue(1)?;
/// let ep = Endpoint::new(1, 0x08);
/// let mut amd = AmdBridge::new(host, BridgeConfig::new(vec![ep]), AmdConfig::default())?;
/// let mut irq = RecordedMsis::default();
/// // The guest's driver sets the buffers and logs up through MMIO, as Linux does.
/// let mut guest = AmdGuestDriver::new(0x10000);
/// guest.init(&mut amd, &mem, &mut irq, 0)?;
/// // A fault on the host: pumped into the guest's PPR log.
/// device.report(PageRequest { flags: PageRequestFlags::LAST_PAGE
///     | PageRequestFlags::PASID_VALID, pasid: 5, grpid: 9, perm: Perm::READ, addr: 0x7000,
///     private_data: [0; 2] });
/// amd.pump(&mem, &mut irq, 0)?;
/// // The guest handles its interrupt and answers with COMPLETE_PPR_REQUEST.
/// let handled = guest.handle_event(&mut amd, &mem, &mut irq, &mut IdentityResolver, 0)?;
/// assert_eq!(handled.responses, 1);
/// assert_eq!(device.take_answers().len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct AmdBridge<C: FaultConsumer> {
    pri: AmdPri,
    bridge: Bridge<C>,
}

impl<C: FaultConsumer> AmdBridge<C> {
    /// A unit over `host` for the functions `bridge` names. AMD's PPR log carries no private
    /// data, so the bridge is asked for none.
    pub fn new(host: C, bridge: BridgeConfig, amd: AmdConfig) -> Result<AmdBridge<C>, ConfigError> {
        let bridge = Bridge::new(
            host,
            BridgeConfig {
                private_data: crate::PrivateDataMode::None,
                ..bridge
            },
        )?;
        Ok(AmdBridge {
            pri: AmdPri::new(amd),
            bridge,
        })
    }

    /// The unit.
    pub fn pri(&self) -> &AmdPri {
        &self.pri
    }

    /// The unit, mutably: a VMM's own emulated PRI devices post into
    /// [`AmdPri::guest_queue`] beside the bridge.
    pub fn pri_mut(&mut self) -> &mut AmdPri {
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

    /// The guest programmed the IOMMU's MSI capability ([`AmdPri::set_msi`]).
    pub fn set_msi(&mut self, address: u64, data: u32, enabled: bool) {
        self.pri.set_msi(address, data, enabled);
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
        let room_in_queue_on = written.room && self.pri.ppr_enabled();
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

    /// Moves host groups into the guest's PPR log, expires aged groups, sends owed answers,
    /// and resumes a command buffer that waited for them at a COMPLETION_WAIT. Returns the
    /// groups posted.
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
            self.pri.process_commands(mem, irq, &mut self.bridge);
            self.bridge.flush();
        }
        Ok(posted)
    }

    /// Carries out the command buffer (a VMM that defers command processing calls this).
    pub fn process_commands(&mut self, mem: &impl GuestRam, irq: &mut dyn MsiSink) -> Processed {
        let p = self.pri.process_commands(mem, irq, &mut self.bridge);
        self.bridge.flush();
        p
    }

    /// The unit is reset (a guest reboot, a VMM reset): registers to their reset values, MSI
    /// disabled, and every group the guest held answered INVALID.
    pub fn reset(&mut self) {
        self.pri.reset();
        self.bridge.reset();
    }
}

crate::passthrough_unit::delegate_passthrough_unit!(AmdBridge);
