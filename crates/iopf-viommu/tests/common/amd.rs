//! AMD-Vi as the shared misbehaving-guest suite drives it.

use iopf_abi::ResponseCode;
use iopf_viommu::amd::command::{words_to_bytes, CompletionWait, PprCompletion};
use iopf_viommu::amd::event::{Event, ILLEGAL_COMMAND_ERROR};
use iopf_viommu::amd::regs::{
    ctl, CMD_HEAD, CMD_TAIL, CONTROL, CONTROL_CMDBUF_EN, CONTROL_PPRLOG_EN, EVT_HEAD, EVT_TAIL,
    LEN_MIN, LEN_SHIFT, PPR_LOG, STATUS, STATUS_CMDBUF_RUN,
};
use iopf_viommu::amd::{AmdBridge, AmdConfig};
use iopf_viommu::code_map;
use iopf_viommu::guest::AmdGuestDriver;
use iopf_viommu::BridgeConfig;
use vm_memory::{Bytes, GuestAddress};

use super::arch::{Arch, Rig, NO_MEMORY};
use super::HostDouble;

/// Where the driver model's buffers start.
pub const AMD_BASE: u64 = 0x10000;
/// The command buffer the driver model sets up: 512 entries of 16 bytes.
pub const CMD_BYTES: u64 = 8192;

pub struct Amd;

impl Amd {
    /// Writes raw commands at the command buffer's tail and moves the tail.
    pub fn submit(rig: &mut Rig<Amd>, cmds: &[[u32; 4]]) {
        let mut tail = rig.read64(CMD_TAIL);
        for c in cmds {
            rig.mem
                .write_slice(&words_to_bytes(c), GuestAddress(AMD_BASE + tail))
                .expect("command buffer memory");
            tail = (tail + 16) % CMD_BYTES;
        }
        rig.write64(CMD_TAIL, tail);
    }

    /// The events in the event log between its head and tail.
    pub fn events(rig: &Rig<Amd>) -> Vec<Event> {
        let base = rig.guest.evt_base();
        let mut head = rig.read64(EVT_HEAD);
        let tail = rig.read64(EVT_TAIL);
        let mut out = Vec::new();
        while head != tail {
            let mut b = [0u8; 16];
            rig.mem
                .read_slice(&mut b, GuestAddress(base + head))
                .expect("event log memory");
            out.push(Event::from_bytes(&b));
            head = (head + 16) % 8192;
        }
        out
    }
}

impl Arch for Amd {
    const NAME: &'static str = "amd";
    type Unit = AmdBridge<HostDouble>;
    type Driver = AmdGuestDriver;
    const LINUX_FAILURE_RAW: u8 = 2;

    fn build(host: HostDouble, cfg: BridgeConfig, entries: usize) -> (Self::Unit, Self::Driver) {
        // 2^len entries (len 8 to 15), one slot kept empty.
        let mut len = LEN_MIN;
        while (1usize << len) - 1 < entries && len < 15 {
            len += 1;
        }
        // Linux's pri_tlp is the function's "PRG Response PASID Required", as the VMM shows it.
        let pri_tlp = cfg.endpoints.iter().all(|e| e.prg_response_pasid_required);
        let unit = AmdBridge::new(host, cfg, AmdConfig::default()).expect("bridge");
        let mut driver = AmdGuestDriver::new(AMD_BASE).with_ppr_len(len);
        driver.pri_tlp = pri_tlp;
        (unit, driver)
    }

    fn raw_code(code: ResponseCode) -> u8 {
        code_map::pcie_to_amd(code)
    }

    fn queue_capacity(rig: &Rig<Self>) -> usize {
        (rig.unit.pri().ppr_log().log.ring.entries() - 1) as usize
    }

    fn respond_raw(rig: &mut Rig<Self>, responses: &[(u16, Option<u32>, u16, u8)]) {
        let mut cmds: Vec<[u32; 4]> = responses
            .iter()
            .map(|&(rid, pasid, tag, raw)| {
                PprCompletion::with_raw_status(rid, pasid, tag, raw).encode()
            })
            .collect();
        cmds.push(CompletionWait::default().encode());
        Amd::submit(rig, &cmds);
    }

    fn write_garbage(rig: &mut Rig<Self>) -> bool {
        Amd::submit(rig, &[[0, 0xf << 28, 0, 0]]);
        let stopped = rig.read32(STATUS) & STATUS_CMDBUF_RUN == 0;
        stopped
            && Amd::events(rig)
                .iter()
                .any(|e| e.code == ILLEGAL_COMMAND_ERROR)
    }

    fn recover(rig: &mut Rig<Self>) {
        // amd_iommu_reset_cmd_buffer(): what Linux runs at init and resume (6.12 itself only
        // logs the event).
        let c = rig.read64(CONTROL);
        rig.write64(CONTROL, c & !ctl(CONTROL_CMDBUF_EN));
        rig.write32(CMD_HEAD, 0);
        rig.write32(CMD_TAIL, 0);
        rig.write64(CONTROL, c | ctl(CONTROL_CMDBUF_EN));
    }

    fn queue_off(rig: &mut Rig<Self>) {
        let c = rig.read64(CONTROL);
        rig.write64(CONTROL, c & !ctl(CONTROL_PPRLOG_EN));
    }

    fn queue_in_missing_memory(rig: &mut Rig<Self>) {
        rig.write64(PPR_LOG, NO_MEMORY | (9 << LEN_SHIFT));
    }
}
