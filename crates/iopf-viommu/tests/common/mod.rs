//! A VT-d rig: guest memory, the unit bridged to a compatible host queue, the guest driver
//! model, and host doubles that carry private data or run out of response room.
#![allow(dead_code)]

pub mod amd;
pub mod arch;
pub mod smmuv3;
pub mod vtd;

use std::collections::HashMap;

use iopf_abi::{FaultConsumer, IommufdResponse, PageRequest, PageRequestFlags, Perm, PgFault};
use iopf_iommufd::{compat_fault_queue, CompatFaultQueue, CompatProducer};
use iopf_viommu::guest::VtdGuestDriver;
use iopf_viommu::vtd::{VtdBridge, VtdConfig};
use iopf_viommu::{BridgeConfig, Endpoint, PrivateDataMode};
use vm_memory::GuestAddress;

pub const PRQ_BASE: u64 = 0x10000;
pub const IQ_BASE: u64 = 0x40000;
pub const HOST_DEV: u32 = 1;
pub const RID: u16 = 0x0008;
pub const PASID: u32 = 5;

/// A host queue double: the compatible queue, plus private data per PRG index (as iopf's own
/// queue carries it) and an optional limit on responses accepted (a full response ring).
pub struct HostDouble {
    pub queue: CompatFaultQueue,
    pub private: HashMap<u32, [u64; 2]>,
    pub carries: bool,
    pub room: Option<usize>,
    /// Calls of `respond` (writes to the host queue).
    pub writes: usize,
    cookies: HashMap<u32, u32>,
}

impl HostDouble {
    pub fn new(dev_id: u32) -> (CompatProducer, HostDouble) {
        let (producer, queue) = compat_fault_queue(dev_id).expect("compatible queue");
        (
            producer,
            HostDouble {
                queue,
                private: HashMap::new(),
                carries: false,
                room: None,
                writes: 0,
                cookies: HashMap::new(),
            },
        )
    }
}

impl FaultConsumer for HostDouble {
    type Error = <CompatFaultQueue as FaultConsumer>::Error;

    fn read_faults(&mut self, out: &mut [PgFault]) -> Result<usize, Self::Error> {
        let n = self.queue.read_faults(out)?;
        for f in &out[..n] {
            self.cookies.insert(f.cookie, f.grpid);
        }
        Ok(n)
    }

    fn respond(&mut self, responses: &[IommufdResponse]) -> Result<usize, Self::Error> {
        self.writes += 1;
        let allowed = self
            .room
            .map_or(responses.len(), |r| r.min(responses.len()));
        if allowed == 0 {
            return Ok(0);
        }
        let n = self.queue.respond(&responses[..allowed])?;
        if let Some(r) = self.room.as_mut() {
            *r -= n;
        }
        Ok(n)
    }

    fn wait_readable(&mut self, timeout: Option<std::time::Duration>) -> Result<bool, Self::Error> {
        self.queue.wait_readable(timeout)
    }

    fn carries_private_data(&self) -> bool {
        self.carries
    }

    fn private_data(&self, cookie: u32) -> Option<[u64; 2]> {
        let grpid = self.cookies.get(&cookie)?;
        self.private.get(grpid).copied()
    }
}

/// The VT-d rig: the shared one ([`arch::Rig`]) over VT-d.
pub type Rig = arch::Rig<vtd::Vtd>;

pub fn endpoint() -> Endpoint {
    Endpoint::new(HOST_DEV, RID)
}

pub fn rig_with(
    (producer, host): (CompatProducer, HostDouble),
    cfg: BridgeConfig,
    vtd: VtdConfig,
    prq_order: u64,
) -> Rig {
    let unit = VtdBridge::new(host, cfg, vtd).expect("bridge");
    let guest = VtdGuestDriver::new(PRQ_BASE, IQ_BASE).with_prq_order(prq_order);
    Rig::from_parts(producer, unit, guest)
}

pub fn rig() -> Rig {
    rig_with(
        HostDouble::new(HOST_DEV),
        BridgeConfig::new(vec![endpoint()]),
        VtdConfig::new(PrivateDataMode::None),
        0,
    )
}

pub fn request(grpid: u32, last: bool) -> PageRequest {
    let mut flags = PageRequestFlags::PASID_VALID;
    if last {
        flags |= PageRequestFlags::LAST_PAGE;
    }
    PageRequest {
        flags,
        pasid: PASID,
        grpid,
        perm: Perm::READ,
        addr: 0x1000 * u64::from(grpid + 1),
        private_data: [0; 2],
    }
}

impl Rig {
    /// Writes raw 32-byte descriptors into the invalidation queue at its tail and moves the
    /// tail, as a guest (misbehaving or not) would.
    pub fn submit_raw(&mut self, descs: &[[u64; 4]]) {
        self.submit_raw_at(descs, 32);
    }

    /// [`submit_raw`] with descriptors of `width` bytes (16 in a 128-bit queue).
    pub fn submit_raw_at(&mut self, descs: &[[u64; 4]], width: u64) {
        use vm_memory::Bytes;
        let mut iqt = self.read64(iopf_viommu::vtd::regs::IQT);
        for d in descs {
            let b = iopf_viommu::vtd::page_request::to_bytes(d);
            self.mem
                .write_slice(&b[..width as usize], GuestAddress(IQ_BASE + iqt))
                .expect("iq memory");
            iqt = (iqt + width) % 8192;
        }
        self.write64(iopf_viommu::vtd::regs::IQT, iqt);
    }
}
