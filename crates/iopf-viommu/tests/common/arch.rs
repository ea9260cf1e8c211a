//! The shared misbehaving-guest suite's view of one architecture: a unit bridged to a host
//! double, its guest driver model, and the raw writes a misbehaving guest makes. Each
//! architecture implements [`Arch`] (vtd.rs, smmuv3.rs, amd.rs beside this file); the suite
//! (tests/misbehaving_guest.rs) runs every test against each.
#![allow(dead_code)]

use iopf_abi::{PageRequest, PageRequestFlags, Perm, ResponseCode};
use iopf_core::DeviceResponse;
use iopf_iommufd::CompatProducer;
use iopf_viommu::guest::{GuestDriverModel, GuestResolver, Handled, IdentityResolver};
use iopf_viommu::{BridgeConfig, BridgeStats, HostAnswer, PassthroughUnit, RecordedMsis};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::HostDouble;

/// Guest memory every rig has: 4 MiB from 0.
pub const GUEST_MEM: u64 = 4 << 20;
/// Memory that is not there (for "queue in missing memory").
pub const NO_MEMORY: u64 = 0x4000_0000;

/// One architecture, as the shared suite drives it.
pub trait Arch: Sized {
    /// Its name in test output.
    const NAME: &'static str;
    /// The unit wired to a bridge over the host double.
    type Unit: PassthroughUnit<Host = HostDouble>;
    /// The guest's driver model.
    type Driver: GuestDriverModel<Self::Unit>;
    /// The largest group the architecture's queue carries as one group (a stall: 1).
    const MAX_GROUP: usize = usize::MAX;
    /// Whether the architecture's response names the PASID (a wrong PASID then matches
    /// nothing). False for SMMUv3 with PPAR = 0 and for stalls.
    const RESPONSE_NAMES_PASID: bool = true;
    /// The raw code Linux 6.12's driver writes for `IOMMU_PAGE_RESP_FAILURE` (VT-d and AMD: 2,
    /// unchanged into the 4-bit field; SMMUv3 PRI: FAIL 1; a stall: ABORT 2).
    const LINUX_FAILURE_RAW: u8;
    /// How many raw code values the response's code field holds (a 4-bit field: 16; SMMUv3's
    /// 2-bit `Resp`: 4).
    const RAW_CODES: u8 = 16;

    /// A unit over `host` for `cfg` and its driver model (not initialised), the guest's page
    /// request queue with at least `entries` entries (the smallest size the architecture
    /// allows that holds them). Guest memory is [`GUEST_MEM`] bytes from 0; the driver's
    /// queues must fit in it.
    fn build(host: HostDouble, cfg: BridgeConfig, entries: usize) -> (Self::Unit, Self::Driver);

    /// The architecture's raw code for PCIe's `code`.
    fn raw_code(code: ResponseCode) -> u8;

    /// How many requests the guest's page request queue holds when empty.
    fn queue_capacity(rig: &Rig<Self>) -> usize;

    /// Writes raw page responses (rid, PASID, PRG index or stall tag, raw code) into the
    /// guest's command queue followed by its completion command, bypassing the driver model,
    /// as a misbehaving guest would, and makes the unit process them.
    fn respond_raw(rig: &mut Rig<Self>, responses: &[(u16, Option<u32>, u16, u8)]);

    /// Writes a command the architecture calls illegal into the command queue; returns
    /// whether the unit reported the architecture's error (VT-d `FSTS.IQE`, SMMUv3
    /// `GERROR.CMDQ_ERR` with `CERROR_ILL`, AMD `ILLEGAL_COMMAND_ERROR`).
    fn write_garbage(rig: &mut Rig<Self>) -> bool;

    /// What the Linux driver does to recover from [`write_garbage`](Self::write_garbage)'s
    /// error; afterwards commands are carried out again.
    fn recover(rig: &mut Rig<Self>);

    /// The guest turns its page request queue off (VT-d `PQA` = 0, SMMUv3 `CR0.PRIQEN` = 0 or
    /// `EVTQEN` = 0 for a stall, AMD `PPRLOG_EN` = 0).
    fn queue_off(rig: &mut Rig<Self>);

    /// The guest points its page request queue at memory that is not there.
    fn queue_in_missing_memory(rig: &mut Rig<Self>);
}

/// A rig: guest memory, the unit bridged to a host double, the driver model, initialised.
pub struct Rig<A: Arch> {
    pub host: CompatProducer,
    pub mem: GuestMemoryMmap,
    pub unit: A::Unit,
    pub irq: RecordedMsis,
    pub guest: A::Driver,
    pub now: u64,
}

pub const HOST_DEV: u32 = super::HOST_DEV;
pub const RID: u16 = super::RID;
pub const PASID: u32 = super::PASID;

impl<A: Arch> Rig<A> {
    /// A rig for one endpoint (host device [`HOST_DEV`], guest rid [`RID`], PASIDs identity)
    /// whose queue holds at least `entries`.
    pub fn new(entries: usize) -> Rig<A> {
        Rig::with(BridgeConfig::new(vec![super::endpoint()]), entries)
    }

    pub fn with(cfg: BridgeConfig, entries: usize) -> Rig<A> {
        let (host, double) = HostDouble::new(HOST_DEV);
        Rig::with_host(host, double, cfg, entries)
    }

    pub fn with_host(
        host: CompatProducer,
        double: HostDouble,
        cfg: BridgeConfig,
        entries: usize,
    ) -> Rig<A> {
        let (unit, guest) = A::build(double, cfg, entries);
        Rig::from_parts(host, unit, guest)
    }

    /// A rig of a unit and driver built by the caller (an architecture's own configuration);
    /// the driver is initialised here.
    pub fn from_parts(host: CompatProducer, mut unit: A::Unit, mut guest: A::Driver) -> Rig<A> {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), GUEST_MEM as usize)])
            .expect("guest memory");
        let mut irq = RecordedMsis::default();
        guest.init(&mut unit, &mem, &mut irq, 0).expect("init");
        Rig {
            host,
            mem,
            unit,
            irq,
            guest,
            now: 0,
        }
    }

    /// The host reports a group of `n` requests with PRG index (or stall tag) `grpid`.
    pub fn fault(&mut self, grpid: u32, n: usize) {
        for i in 0..n {
            let mut r = request(grpid, i + 1 == n);
            r.addr += 0x10_0000 * i as u64;
            self.host.report(r);
        }
    }

    pub fn pump(&mut self) -> usize {
        self.now += 1;
        self.unit
            .pump(&self.mem, &mut self.irq, self.now)
            .expect("pump")
    }

    pub fn guest_runs(&mut self) -> Handled {
        self.guest_runs_with(&mut IdentityResolver)
    }

    pub fn guest_runs_with(&mut self, resolver: &mut dyn GuestResolver) -> Handled {
        self.now += 1;
        self.guest
            .handle_event(&mut self.unit, &self.mem, &mut self.irq, resolver, self.now)
            .expect("handle")
    }

    pub fn answers(&mut self) -> Vec<DeviceResponse> {
        self.host.take_answers()
    }

    pub fn stats(&self) -> BridgeStats {
        self.unit.bridge().stats()
    }

    pub fn answered(&self, why: HostAnswer) -> u64 {
        self.stats().host_answers[why as usize]
    }

    pub fn outstanding(&self) -> usize {
        self.unit.bridge().outstanding()
    }

    pub fn read32(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.unit.mmio_read(off, &mut b).expect("read");
        u32::from_le_bytes(b)
    }

    pub fn read64(&self, off: u64) -> u64 {
        let mut b = [0u8; 8];
        self.unit.mmio_read(off, &mut b).expect("read");
        u64::from_le_bytes(b)
    }

    pub fn write32(&mut self, off: u64, v: u32) {
        self.now += 1;
        self.unit
            .mmio_write(off, &v.to_le_bytes(), &self.mem, &mut self.irq, self.now)
            .expect("write");
    }

    pub fn write64(&mut self, off: u64, v: u64) {
        self.now += 1;
        self.unit
            .mmio_write(off, &v.to_le_bytes(), &self.mem, &mut self.irq, self.now)
            .expect("write");
    }
}

/// A host page request with a PASID, read permission, address from `grpid`.
pub fn request(grpid: u32, last: bool) -> PageRequest {
    super::request(grpid, last)
}

/// A request without PASID.
pub fn request_no_pasid(grpid: u32) -> PageRequest {
    PageRequest {
        flags: PageRequestFlags::LAST_PAGE,
        pasid: 0,
        grpid,
        perm: Perm::READ,
        addr: 0x1000 * u64::from(grpid + 1),
        private_data: [0; 2],
    }
}
