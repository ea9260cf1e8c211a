//! VT-d as the shared misbehaving-guest suite drives it.

use iopf_abi::ResponseCode;
use iopf_viommu::code_map;
use iopf_viommu::guest::VtdGuestDriver;
use iopf_viommu::vtd::regs::{FSTS, FSTS_IQE, IQH, IQT, PQA};
use iopf_viommu::vtd::{page_request, PageGroupResponse, VtdBridge, VtdConfig, WaitDescriptor};
use iopf_viommu::{BridgeConfig, PrivateDataMode};
use vm_memory::{Bytes, GuestAddress};

use super::arch::{Arch, Rig, NO_MEMORY};
use super::{HostDouble, IQ_BASE, PRQ_BASE};

/// The invalidation queue the driver model sets up: 256-bit descriptors, two pages.
const IQ_BYTES: u64 = 8192;

pub struct Vtd;

impl Vtd {
    fn submit(rig: &mut Rig<Vtd>, descs: &[[u64; 4]]) {
        let mut iqt = rig.read64(IQT);
        for d in descs {
            rig.mem
                .write_slice(&page_request::to_bytes(d), GuestAddress(IQ_BASE + iqt))
                .expect("iq memory");
            iqt = (iqt + 32) % IQ_BYTES;
        }
        rig.write64(IQT, iqt);
    }
}

impl Arch for Vtd {
    const NAME: &'static str = "vtd";
    type Unit = VtdBridge<HostDouble>;
    type Driver = VtdGuestDriver;
    const LINUX_FAILURE_RAW: u8 = 2;

    fn build(host: HostDouble, cfg: BridgeConfig, entries: usize) -> (Self::Unit, Self::Driver) {
        // 2^order pages of 128 descriptors, one slot kept empty.
        let mut order = 0;
        while (128usize << order) - 1 < entries {
            order += 1;
        }
        let unit =
            VtdBridge::new(host, cfg, VtdConfig::new(PrivateDataMode::None)).expect("bridge");
        let driver = VtdGuestDriver::new(PRQ_BASE, IQ_BASE).with_prq_order(order);
        (unit, driver)
    }

    fn raw_code(code: ResponseCode) -> u8 {
        code_map::pcie_to_vtd(code)
    }

    fn queue_capacity(rig: &Rig<Self>) -> usize {
        (rig.unit.pri().prq().entries() - 1) as usize
    }

    fn respond_raw(rig: &mut Rig<Self>, responses: &[(u16, Option<u32>, u16, u8)]) {
        let mut descs: Vec<[u64; 4]> = responses
            .iter()
            .map(|&(rid, pasid, prg, raw)| {
                let mut d = PageGroupResponse::new(rid, pasid, prg, ResponseCode::Success, None)
                    .encode(PrivateDataMode::None);
                d[0] |= u64::from(raw & 0xf) << 12;
                d
            })
            .collect();
        descs.push(WaitDescriptor::default().encode());
        Vtd::submit(rig, &descs);
    }

    fn write_garbage(rig: &mut Rig<Self>) -> bool {
        Vtd::submit(rig, &[[0xff, 0, 0, 0]]);
        rig.read32(FSTS) & FSTS_IQE != 0
    }

    fn recover(rig: &mut Rig<Self>) {
        // qi_check_fault(): the bad descriptor is overwritten with a wait descriptor, IQE cleared.
        let head = rig.read64(IQH);
        rig.mem
            .write_slice(
                &page_request::to_bytes(&WaitDescriptor::default().encode()),
                GuestAddress(IQ_BASE + head),
            )
            .expect("iq memory");
        rig.write32(FSTS, FSTS_IQE);
    }

    fn queue_off(rig: &mut Rig<Self>) {
        rig.write64(PQA, 0);
    }

    fn queue_in_missing_memory(rig: &mut Rig<Self>) {
        rig.write64(PQA, NO_MEMORY);
    }
}
