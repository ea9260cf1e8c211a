//! What every guest driver model shares: the guest's page tables ([`GuestResolver`]), what one
//! interrupt's handling did ([`Handled`]), the misbehaviour switches, the [`GuestDriverModel`]
//! trait the simulator and the shared misbehaving-guest suite drive, and the guest's own
//! io-pgfault rule for a group's answer ([`resolve_group`]).

use std::collections::HashSet;
use std::ops::Range;

use crate::guest_ram::GuestRam;
use iopf_abi::{Perm, ResponseCode};

use crate::interrupt::MsiSink;
use crate::mmio::MmioError;
use crate::PassthroughUnit;

/// How the guest resolves a page request: its own page tables.
pub trait GuestResolver {
    /// Makes `addr` accessible for `perm` in the address space of (`rid`, `pasid`), or says why
    /// not: Success, Invalid, or Failure (the guest's policy for a device that must be stopped;
    /// the bridge sends the host INVALID for it).
    fn resolve(&mut self, rid: u16, pasid: Option<u32>, addr: u64, perm: Perm) -> ResponseCode;
}

/// A resolver that maps every page it is asked for.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdentityResolver;

impl GuestResolver for IdentityResolver {
    fn resolve(&mut self, _: u16, _: Option<u32>, _: u64, _: Perm) -> ResponseCode {
        ResponseCode::Success
    }
}

/// The guest's page tables: pages inside `allowed` are mapped on demand (Success), others are
/// not the process's (Invalid).
#[derive(Debug, Default, Clone)]
pub struct GuestPageTables {
    /// Addresses the guest's processes may map.
    pub allowed: Vec<Range<u64>>,
    /// Pages mapped so far: (rid, PASID, page).
    pub mapped: HashSet<(u16, Option<u32>, u64)>,
}

impl GuestResolver for GuestPageTables {
    fn resolve(&mut self, rid: u16, pasid: Option<u32>, addr: u64, _: Perm) -> ResponseCode {
        if self.allowed.iter().any(|r| r.contains(&addr)) {
            self.mapped.insert((rid, pasid, addr & !0xfff));
            ResponseCode::Success
        } else {
            ResponseCode::Invalid
        }
    }
}

/// Why the driver model could not go on.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The unit refused an MMIO access.
    #[error("MMIO: {0}")]
    Mmio(#[from] MmioError),
    /// The driver's own queue memory is not there.
    #[error("guest memory at {0:#x} is not accessible")]
    Memory(u64),
}

/// What one [`GuestDriverModel::handle_event`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Handled {
    /// Descriptors read from the page request queue.
    pub descriptors: usize,
    /// Page group responses submitted.
    pub responses: usize,
    /// Of those, for malformed requests (`handle_bad_prq_event()`).
    pub bad: usize,
    /// Stop markers dropped.
    pub stop_markers: usize,
    /// Whether `PRO` was found set and cleared (partial groups discarded).
    pub overflow_cleared: bool,
    /// Whether every submitted response's wait descriptor has completed.
    pub waits_done: bool,
}

/// Misbehaviour the simulator and tests can switch on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Misbehaviour {
    /// Read the queue but never answer.
    pub silent: bool,
    /// Answer every group twice.
    pub answer_twice: bool,
}

/// A guest IOMMU driver model for the unit `U`: what the tests and the simulator run as "the
/// guest". Each architecture's model is written from its specification and Linux's driver.
pub trait GuestDriverModel<U: PassthroughUnit> {
    /// Sets the unit up as Linux does at boot (queues, interrupts, enables).
    fn init<M: GuestRam>(
        &mut self,
        unit: &mut U,
        mem: &M,
        irq: &mut dyn MsiSink,
        now_ns: u64,
    ) -> Result<(), DriverError>;

    /// The driver's interrupt thread: reads its queue(s), resolves whole groups through
    /// `resolver`, answers through its command queue and waits for the answers' completion.
    fn handle_event<M: GuestRam>(
        &mut self,
        unit: &mut U,
        mem: &M,
        irq: &mut dyn MsiSink,
        resolver: &mut dyn GuestResolver,
        now_ns: u64,
    ) -> Result<Handled, DriverError>;

    /// The misbehaviour switches.
    fn misbehaviour_mut(&mut self) -> &mut Misbehaviour;

    /// Groups answered so far.
    fn answered(&self) -> u64;

    /// Partial groups the driver discarded after its queue overflowed (Linux discards its
    /// partial list when it clears the overflow).
    fn discarded_partials(&self) -> u64;
}

/// The answer to a whole group, as the guest's io-pgfault gives it: each page resolved, and the
/// worst answer wins (Failure over Invalid over Success).
pub fn resolve_group(
    resolver: &mut dyn GuestResolver,
    pages: impl IntoIterator<Item = (u16, Option<u32>, u64, Perm)>,
) -> ResponseCode {
    let mut code = ResponseCode::Success;
    for (rid, pasid, addr, perm) in pages {
        code = match (code, resolver.resolve(rid, pasid, addr, perm)) {
            (ResponseCode::Failure, _) | (_, ResponseCode::Failure) => ResponseCode::Failure,
            (ResponseCode::Invalid, _) | (_, ResponseCode::Invalid) => ResponseCode::Invalid,
            _ => ResponseCode::Success,
        };
    }
    code
}

/// A 48-bit canonical address (`is_canonical_address()` with 4-level paging).
pub fn canonical(addr: u64) -> bool {
    let top = addr >> 47;
    top == 0 || top == (1 << 17) - 1
}

/// Reads a 32-bit register of `unit`.
pub fn read32(unit: &impl PassthroughUnit, off: u64) -> Result<u32, DriverError> {
    let mut b = [0u8; 4];
    unit.mmio_read(off, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Reads a 64-bit register of `unit`.
pub fn read64(unit: &impl PassthroughUnit, off: u64) -> Result<u64, DriverError> {
    let mut b = [0u8; 8];
    unit.mmio_read(off, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Writes a 32-bit register of `unit`.
pub fn write32<U: PassthroughUnit, M: GuestRam>(
    unit: &mut U,
    off: u64,
    v: u32,
    mem: &M,
    irq: &mut dyn MsiSink,
    now: u64,
) -> Result<(), DriverError> {
    unit.mmio_write(off, &v.to_le_bytes(), mem, irq, now)?;
    Ok(())
}

/// Writes a 64-bit register of `unit`.
pub fn write64<U: PassthroughUnit, M: GuestRam>(
    unit: &mut U,
    off: u64,
    v: u64,
    mem: &M,
    irq: &mut dyn MsiSink,
    now: u64,
) -> Result<(), DriverError> {
    unit.mmio_write(off, &v.to_le_bytes(), mem, irq, now)?;
    Ok(())
}

/// Implements [`GuestDriverModel`] for a driver model `$driver` of unit `$unit<C>` whose
/// inherent `init` and `handle_event` have the trait's meaning, with its `misbehaviour` and
/// `answered` fields, and `$discarded` (a function of the driver) for the partial groups it
/// discarded: one delegation for every architecture.
macro_rules! delegate_driver_model {
    ($driver:ident, $unit:ident, $discarded:expr) => {
        impl<C: iopf_abi::FaultConsumer> $crate::guest::GuestDriverModel<$unit<C>> for $driver {
            fn init<M: $crate::GuestRam>(
                &mut self,
                unit: &mut $unit<C>,
                mem: &M,
                irq: &mut dyn $crate::MsiSink,
                now_ns: u64,
            ) -> Result<(), $crate::guest::DriverError> {
                $driver::init(self, unit, mem, irq, now_ns)
            }

            fn handle_event<M: $crate::GuestRam>(
                &mut self,
                unit: &mut $unit<C>,
                mem: &M,
                irq: &mut dyn $crate::MsiSink,
                resolver: &mut dyn $crate::guest::GuestResolver,
                now_ns: u64,
            ) -> Result<$crate::guest::Handled, $crate::guest::DriverError> {
                $driver::handle_event(self, unit, mem, irq, resolver, now_ns)
            }

            fn misbehaviour_mut(&mut self) -> &mut $crate::guest::Misbehaviour {
                &mut self.misbehaviour
            }

            fn answered(&self) -> u64 {
                self.answered
            }

            fn discarded_partials(&self) -> u64 {
                let discarded: fn(&$driver) -> u64 = $discarded;
                discarded(self)
            }
        }
    };
}

pub(crate) use delegate_driver_model;
