//! SMMUv3 as the shared misbehaving-guest suite drives it, twice: a PRI function
//! ([`SmmuPri`]) and a stalling one ([`SmmuStall`]).
#![allow(dead_code)]

use iopf_abi::ResponseCode;
use iopf_viommu::code_map;
use iopf_viommu::guest::SmmuGuestDriver;
use iopf_viommu::smmuv3::regs::{
    CERROR_ILL, CMDQ_BASE, CMDQ_CONS, CMDQ_CONS_ERR_SHIFT, CMDQ_PROD, CR0, CR0_EVTQEN, CR0_PRIQEN,
    EVTQ_BASE, GERROR, GERRORN, GERROR_CMDQ_ERR, PRIQ_BASE,
};
use iopf_viommu::smmuv3::{Command, SmmuBridge, SmmuConfig, SyncCs};
use iopf_viommu::BridgeConfig;
use vm_memory::{Bytes, GuestAddress};

use super::arch::{Arch, Rig, NO_MEMORY, RID};
use super::HostDouble;

/// Where the driver lays out its queues and stream table.
pub const SMMU_BASE: u64 = 0x10_0000;

/// The log2 of the smallest queue that holds `entries`.
pub fn log2_for(entries: usize) -> u32 {
    let mut k = 0;
    while (1usize << k) < entries {
        k += 1;
    }
    k
}

/// Writes raw commands at the unit's `CMDQ_PROD` and moves it, as a guest would.
pub fn submit<A: Arch>(rig: &mut Rig<A>, cmds: &[Command]) {
    let base = rig.read64(CMDQ_BASE) & 0x000f_ffff_ffff_ffe0;
    let shift = (rig.read64(CMDQ_BASE) & 0x1f) as u32;
    let mask = (2u32 << shift) - 1;
    let mut prod = rig.read32(CMDQ_PROD) & mask;
    for c in cmds {
        let at = base + 16 * u64::from(prod & ((1 << shift) - 1));
        rig.mem
            .write_slice(&c.to_bytes(), GuestAddress(at))
            .expect("cmdq memory");
        prod = (prod + 1) & mask;
    }
    rig.write32(CMDQ_PROD, prod);
}

/// A `CMD_SYNC` without completion signal.
pub fn sync() -> Command {
    Command::Sync {
        cs: SyncCs::None,
        msh: 0,
        msi_attr: 0,
        msi_data: 0,
        msi_addr: 0,
    }
}

/// An opcode no SMMUv3 defines.
pub fn garbage<A: Arch>(rig: &mut Rig<A>) -> bool {
    submit(rig, &[Command::Other { opcode: 0xff }]);
    let cons = rig.read32(CMDQ_CONS);
    let active = rig.read32(GERROR) ^ rig.read32(GERRORN);
    active & GERROR_CMDQ_ERR != 0 && (cons >> CMDQ_CONS_ERR_SHIFT) & 0x7f == u32::from(CERROR_ILL)
}

/// `arm_smmu_cmdq_skip_err()` and the `GERRORN` write of `arm_smmu_gerror_handler()`.
pub fn skip_err<A: Arch>(rig: &mut Rig<A>) {
    let base = rig.read64(CMDQ_BASE) & 0x000f_ffff_ffff_ffe0;
    let shift = (rig.read64(CMDQ_BASE) & 0x1f) as u32;
    let cons = rig.read32(CMDQ_CONS);
    let at = base + 16 * u64::from(cons & ((1 << shift) - 1));
    let cmd = Command::Sync {
        cs: SyncCs::Sev,
        msh: 3,
        msi_attr: 0xf,
        msi_data: 0,
        msi_addr: 0,
    };
    rig.mem
        .write_slice(&cmd.to_bytes(), GuestAddress(at))
        .expect("cmdq memory");
    let gerror = rig.read32(GERROR);
    rig.write32(GERRORN, gerror);
}

/// Turns a queue off, points it at `base`, turns it on again.
pub fn move_queue<A: Arch>(rig: &mut Rig<A>, en: u32, reg: u64, base: u64) {
    let cr0 = rig.read32(CR0);
    rig.write32(CR0, cr0 & !en);
    let log2 = rig.read64(reg) & 0x1f;
    rig.write64(reg, base | log2);
    rig.write32(CR0, cr0);
}

/// An SMMUv3 PRI function.
pub struct SmmuPri;

impl Arch for SmmuPri {
    const NAME: &'static str = "smmuv3-pri";
    type Unit = SmmuBridge<HostDouble>;
    type Driver = SmmuGuestDriver;
    const LINUX_FAILURE_RAW: u8 = 1;
    const RAW_CODES: u8 = 4;

    fn build(host: HostDouble, cfg: BridgeConfig, entries: usize) -> (Self::Unit, Self::Driver) {
        let unit = SmmuBridge::new(host, cfg, SmmuConfig::default()).expect("bridge");
        let driver = SmmuGuestDriver::new(SMMU_BASE)
            .with_streams(&[RID, RID + 1])
            .with_priq_log2(log2_for(entries));
        (unit, driver)
    }

    fn raw_code(code: ResponseCode) -> u8 {
        code_map::pcie_to_smmu_pri_resp(code)
    }

    fn queue_capacity(rig: &Rig<Self>) -> usize {
        rig.unit.pri().priq().entries() as usize
    }

    fn respond_raw(rig: &mut Rig<Self>, responses: &[(u16, Option<u32>, u16, u8)]) {
        let mut cmds: Vec<Command> = responses
            .iter()
            .map(|&(rid, ssid, grpid, resp)| Command::PriResp {
                sid: u32::from(rid),
                ssid,
                grpid,
                resp,
            })
            .collect();
        cmds.push(sync());
        submit(rig, &cmds);
    }

    fn write_garbage(rig: &mut Rig<Self>) -> bool {
        garbage(rig)
    }

    fn recover(rig: &mut Rig<Self>) {
        skip_err(rig)
    }

    fn queue_off(rig: &mut Rig<Self>) {
        let cr0 = rig.read32(CR0);
        rig.write32(CR0, cr0 & !CR0_PRIQEN);
    }

    fn queue_in_missing_memory(rig: &mut Rig<Self>) {
        move_queue(rig, CR0_PRIQEN, PRIQ_BASE, NO_MEMORY);
    }
}

/// An SMMUv3 stalling function.
pub struct SmmuStall;

impl Arch for SmmuStall {
    const NAME: &'static str = "smmuv3-stall";
    type Unit = SmmuBridge<HostDouble>;
    type Driver = SmmuGuestDriver;
    const MAX_GROUP: usize = 1;
    const RESPONSE_NAMES_PASID: bool = false;
    const LINUX_FAILURE_RAW: u8 = 2;
    const RAW_CODES: u8 = 4;

    fn build(host: HostDouble, cfg: BridgeConfig, entries: usize) -> (Self::Unit, Self::Driver) {
        let smmu = SmmuConfig::with_stall_streams(vec![RID]);
        let unit = SmmuBridge::new(host, cfg, smmu).expect("bridge");
        let driver = SmmuGuestDriver::new(SMMU_BASE)
            .with_streams(&[RID])
            .with_evtq_log2(log2_for(entries));
        (unit, driver)
    }

    fn raw_code(code: ResponseCode) -> u8 {
        code_map::pcie_to_smmu_resume(code)
    }

    fn queue_capacity(rig: &Rig<Self>) -> usize {
        rig.unit.pri().evtq().entries() as usize
    }

    fn respond_raw(rig: &mut Rig<Self>, responses: &[(u16, Option<u32>, u16, u8)]) {
        let mut cmds: Vec<Command> = responses
            .iter()
            .map(|&(rid, _, stag, resp)| Command::Resume {
                sid: u32::from(rid),
                stag,
                resp,
            })
            .collect();
        cmds.push(sync());
        submit(rig, &cmds);
    }

    fn write_garbage(rig: &mut Rig<Self>) -> bool {
        garbage(rig)
    }

    fn recover(rig: &mut Rig<Self>) {
        skip_err(rig)
    }

    fn queue_off(rig: &mut Rig<Self>) {
        let cr0 = rig.read32(CR0);
        rig.write32(CR0, cr0 & !CR0_EVTQEN);
    }

    fn queue_in_missing_memory(rig: &mut Rig<Self>) {
        move_queue(rig, CR0_EVTQEN, EVTQ_BASE, NO_MEMORY);
    }
}
