//! Names the core hands out: devices, handlers, group cookies, and the caller's clock.
//!
//! Every name packs a slot index with a generation, so a stale name (a removed device, a detached
//! handler, an answered group whose slot was reused) is told apart from a live one in O(1).

/// A point in time, in nanoseconds, on the caller's clock. The core never reads a clock itself:
/// the simulator drives time, tests use any monotonic counter, real backends pass
/// `Instant`-derived nanoseconds. Only differences between values are used.
pub type Nanos = u64;

/// A registered PRI device (a PCIe function), as named by [`crate::FaultCore::register`].
///
/// Opaque: a 16-bit slot index and a 16-bit generation, so an id of a removed device is not
/// mistaken for the device that reuses its slot. [`DeviceId::raw`] is stable for the device's
/// lifetime and suits the `dev_id` field of an `iommu_hwpt_pgfault` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub(crate) u32);

/// An attached fault handler, as named by [`crate::FaultCore::attach`] or
/// [`crate::FaultCore::replace`]. A response is accepted only through the handler its group was
/// delivered to. Opaque: slot index and generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HandlerId(pub(crate) u32);

/// The name of one delivered page request group, unique among outstanding groups (the
/// `cookie` of `iommu_hwpt_pgfault`, which `iommufd_fault_fops_read()` allocates with
/// `xa_alloc()`). Never reused while its group is outstanding; a cookie of an answered group stays
/// recognisable as *answered* until its slot is reused, and is then unknown. Slots are reused
/// oldest-first and only once 256 are free, so a cookie value comes back only after more than a
/// million later deliveries (iommufd reuses the lowest free cookie at once): a very late response
/// is rejected rather than taken for a new group's.
///
/// Layout: low [`Cookie::INDEX_BITS`] bits are the slot index, the high bits a generation that is
/// never 0, so a cookie is never 0 (iommufd also starts at 1: `XA_FLAGS_ALLOC1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cookie(pub(crate) u32);

const SLOT_BITS: u32 = 16;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;

impl DeviceId {
    /// The id as a number (for records and logs).
    #[inline]
    pub fn raw(self) -> u32 {
        self.0
    }
    /// An id from a number, e.g. read back from a record. Whether it names a live device is
    /// checked by every call that takes it.
    #[inline]
    pub fn from_raw(raw: u32) -> DeviceId {
        DeviceId(raw)
    }
    #[inline]
    pub(crate) fn new(index: u32, gen: u16) -> DeviceId {
        DeviceId((u32::from(gen) << SLOT_BITS) | index)
    }
    #[inline]
    pub(crate) fn index(self) -> usize {
        (self.0 & SLOT_MASK) as usize
    }
    #[inline]
    pub(crate) fn gen(self) -> u16 {
        (self.0 >> SLOT_BITS) as u16
    }
}

impl HandlerId {
    /// The id as a number.
    #[inline]
    pub fn raw(self) -> u32 {
        self.0
    }
    /// An id from a number; checked by every call that takes it.
    #[inline]
    pub fn from_raw(raw: u32) -> HandlerId {
        HandlerId(raw)
    }
    #[inline]
    pub(crate) fn new(index: u32, gen: u16) -> HandlerId {
        HandlerId((u32::from(gen) << SLOT_BITS) | index)
    }
    #[inline]
    pub(crate) fn index(self) -> usize {
        (self.0 & SLOT_MASK) as usize
    }
    #[inline]
    pub(crate) fn gen(self) -> u16 {
        (self.0 >> SLOT_BITS) as u16
    }
}

impl Cookie {
    /// Bits of the slot index: at most 2^20 (1,048,576) groups outstanding in one core, e.g.
    /// 2,048 functions with all 512 PRG indexes in flight; the other 12 bits are the generation.
    pub const INDEX_BITS: u32 = 20;
    /// Number of group slots a core can have.
    pub const MAX_SLOTS: usize = 1 << Self::INDEX_BITS;
    const INDEX_MASK: u32 = (1 << Self::INDEX_BITS) - 1;
    /// Largest generation (12 bits); generations run 1..=MAX_GEN.
    pub(crate) const MAX_GEN: u16 = (1 << (32 - Self::INDEX_BITS)) - 1;

    /// The cookie as the number a consumer echoes.
    #[inline]
    pub fn raw(self) -> u32 {
        self.0
    }
    /// A cookie from the number a consumer sent; whether it names an outstanding group is checked
    /// by [`crate::FaultCore::respond`].
    #[inline]
    pub fn from_raw(raw: u32) -> Cookie {
        Cookie(raw)
    }
    #[inline]
    pub(crate) fn new(index: u32, gen: u16) -> Cookie {
        Cookie((u32::from(gen) << Self::INDEX_BITS) | index)
    }
    #[inline]
    pub(crate) fn index(self) -> usize {
        (self.0 & Self::INDEX_MASK) as usize
    }
    #[inline]
    pub(crate) fn gen(self) -> u16 {
        (self.0 >> Self::INDEX_BITS) as u16
    }
}

/// The generation after `gen` among 1..=`max` (0 is never used, so a zeroed name is never live).
#[inline]
pub(crate) fn next_gen(gen: u16, max: u16) -> u16 {
    if gen >= max {
        1
    } else {
        gen + 1
    }
}

impl core::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "device {}#{}", self.index(), self.gen())
    }
}
impl core::fmt::Display for HandlerId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "handler {}#{}", self.index(), self.gen())
    }
}
impl core::fmt::Display for Cookie {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "cookie {:#x}", self.0)
    }
}
