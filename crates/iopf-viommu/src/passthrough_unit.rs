//! [`PassthroughUnit`]: what every architecture's "unit wired to a bridge" offers a VMM, so that
//! a VMM, the simulator and the shared misbehaving-guest suite drive VT-d, SMMUv3 and AMD alike.

use crate::guest_ram::GuestRam;
use iopf_abi::FaultConsumer;

use crate::bridge::Bridge;
use crate::interrupt::MsiSink;
use crate::mmio::MmioError;

/// An emulated IOMMU's page request path and the [`Bridge`] from a host fault queue, wired
/// together ([`crate::vtd::VtdBridge`], [`crate::smmuv3::SmmuBridge`],
/// [`crate::amd::AmdBridge`]).
///
/// Contract: the VMM calls [`mmio_read`](Self::mmio_read) / [`mmio_write`](Self::mmio_write)
/// from its MMIO handler for the unit's registers (`offset` from the unit's base), and
/// [`pump`](Self::pump) when the host queue is readable, on a timer (age limit, answers that
/// waited for host room) and after it changed anything the unit reads from guest memory. A
/// write carries out the guest's commands at once and posts waiting host groups when room
/// appears. `mem` is the guest's memory, `irq` where the unit's interrupt messages go,
/// `now_ns` the caller's clock. Every host group the bridge reads is answered exactly once
/// (see [`Bridge`]); nothing a guest writes makes the unit panic or answer FAILURE.
pub trait PassthroughUnit {
    /// The host fault queue.
    type Host: FaultConsumer;

    /// A guest read of `data.len()` bytes (4 or 8) at `offset`.
    fn mmio_read(&self, offset: u64, data: &mut [u8]) -> Result<(), MmioError>;

    /// A guest write of `data` (4 or 8 bytes) at `offset`.
    fn mmio_write<M: GuestRam>(
        &mut self,
        offset: u64,
        data: &[u8],
        mem: &M,
        irq: &mut dyn MsiSink,
        now_ns: u64,
    ) -> Result<(), MmioError>;

    /// Moves host groups into the guest's queues, expires aged groups, sends owed answers and
    /// resumes command processing that waited for them. Returns the groups posted. Errors: the
    /// host queue's read error (the groups stay in the host queue).
    fn pump<M: GuestRam>(
        &mut self,
        mem: &M,
        irq: &mut dyn MsiSink,
        now_ns: u64,
    ) -> Result<usize, <Self::Host as FaultConsumer>::Error>;

    /// The unit is reset (guest reboot, VMM reset): registers to their reset values, every
    /// group the guest held answered INVALID ([`crate::HostAnswer::Reset`]).
    fn reset(&mut self);

    /// The bridge.
    fn bridge(&self) -> &Bridge<Self::Host>;

    /// The bridge, mutably (PRI enable per function, the host queue).
    fn bridge_mut(&mut self) -> &mut Bridge<Self::Host>;
}

/// What every unit does after a guest's register write: the page responses of a command batch
/// (`commands`) go to the host in one write, and waiting host groups are posted when room
/// appeared in a queue that is on (`room_in_queue_on`). Only into a queue that is on: Linux
/// writes a queue's head and tail before it enables the queue, and groups that came before
/// must wait for it, not be answered as if the guest had turned it off. A host read error
/// leaves the groups in the host queue; the next pump reports it.
pub(crate) fn after_guest_write<U: PassthroughUnit, M: GuestRam>(
    unit: &mut U,
    commands: bool,
    room_in_queue_on: bool,
    mem: &M,
    irq: &mut dyn MsiSink,
    now_ns: u64,
) {
    if commands {
        unit.bridge_mut().flush();
    }
    if room_in_queue_on {
        let _ = unit.pump(mem, irq, now_ns);
    }
}

/// Implements [`PassthroughUnit`] for an architecture's `$unit<C>` whose inherent `mmio_read`,
/// `mmio_write` (returning its own `Written`), `pump` and `reset` have the trait's meaning and
/// whose bridge is its `bridge` field: one delegation for every architecture.
macro_rules! delegate_passthrough_unit {
    ($unit:ident) => {
        impl<C: iopf_abi::FaultConsumer> $crate::PassthroughUnit for $unit<C> {
            type Host = C;

            fn mmio_read(&self, offset: u64, data: &mut [u8]) -> Result<(), $crate::MmioError> {
                $unit::mmio_read(self, offset, data)
            }

            fn mmio_write<M: $crate::GuestRam>(
                &mut self,
                offset: u64,
                data: &[u8],
                mem: &M,
                irq: &mut dyn $crate::MsiSink,
                now_ns: u64,
            ) -> Result<(), $crate::MmioError> {
                $unit::mmio_write(self, offset, data, mem, irq, now_ns).map(|_| ())
            }

            fn pump<M: $crate::GuestRam>(
                &mut self,
                mem: &M,
                irq: &mut dyn $crate::MsiSink,
                now_ns: u64,
            ) -> Result<usize, C::Error> {
                $unit::pump(self, mem, irq, now_ns)
            }

            fn reset(&mut self) {
                $unit::reset(self)
            }

            fn bridge(&self) -> &$crate::Bridge<C> {
                &self.bridge
            }

            fn bridge_mut(&mut self) -> &mut $crate::Bridge<C> {
                &mut self.bridge
            }
        }
    };
}

pub(crate) use delegate_passthrough_unit;
