//! Arbitrary guest MMIO reads and writes (4 and 8 bytes, queue bases sometimes pointed into guest
//! memory), interleaved with host page requests, pumps, the guest driver's runs and unit resets,
//! against each vIOMMU unit (VT-d, SMMUv3 PRI, SMMUv3 stall, AMD) over a small guest memory and
//! iopf-iommufd's compatible queue. Checked at the device: nothing panics; no PRG index is
//! answered more often than groups completed with it; never Response Failure (the compatible
//! queue's device may not receive it: not before teardown, not after); after the unit's reset
//! and the host queue's teardown every completed group was answered exactly once.
#![no_main]

use iopf_abi::{PageRequest, PageRequestFlags, Perm, ResponseCode};
use iopf_iommufd::{compat_fault_queue, CompatFaultQueue, CompatProducer};
use iopf_viommu::amd::{AmdBridge, AmdConfig};
use iopf_viommu::guest::{
    AmdGuestDriver, GuestDriverModel, IdentityResolver, SmmuGuestDriver, VtdGuestDriver,
};
use iopf_viommu::smmuv3::{SmmuBridge, SmmuConfig};
use iopf_viommu::vtd::{VtdBridge, VtdConfig};
use iopf_viommu::{BridgeConfig, Endpoint, PassthroughUnit, PrivateDataMode, RecordedMsis};
use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryMmap};

const HOST_DEV: u32 = 1;
const RID: u16 = 0x0008;
const PASID: u32 = 5;
const PRGS: usize = 16;
const GUEST_MEM: u64 = 4 << 20;
const VTD_PRQ: u64 = 0x10000;
const VTD_IQ: u64 = 0x40000;
const SMMU_BASE: u64 = 0x10_0000;
const AMD_BASE: u64 = 0x10000;

struct Device {
    host: CompatProducer,
    completed: [u64; PRGS],
    answered: [u64; PRGS],
}

impl Device {
    fn check(&mut self) {
        for a in self.host.take_answers() {
            assert_ne!(a.code, ResponseCode::Failure, "Response Failure reached the device: {a:?}");
            let g = a.grpid as usize;
            assert!(g < PRGS, "an answer to a PRG index never used: {a:?}");
            self.answered[g] += 1;
            assert!(
                self.answered[g] <= self.completed[g],
                "PRG {g} answered {} times for {} groups",
                self.answered[g],
                self.completed[g]
            );
        }
    }
}

/// Register offsets the fuzzer reaches: `sel` picks a page (the units' second pages), `x` the
/// 4-byte aligned offset in it.
fn offset(arch: u8, sel: u8, x: u8) -> u64 {
    let low = u64::from(x) & !3;
    match arch {
        0 => low % 0x100,
        1 | 2 => {
            if sel & 1 != 0 {
                0x1_0000 | low
            } else {
                low
            }
        }
        _ => {
            if sel & 1 != 0 {
                0x2000 | (low & 0x7f)
            } else {
                low
            }
        }
    }
}

fn run<U, D>(arch: u8, mut unit: U, mut guest: D, host: CompatProducer, prog: &[u8])
where
    U: PassthroughUnit<Host = CompatFaultQueue>,
    D: GuestDriverModel<U>,
{
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), GUEST_MEM as usize)])
        .expect("guest memory");
    let mut irq = RecordedMsis::default();
    let mut now = 0u64;
    let mut dev = Device {
        host,
        completed: [0; PRGS],
        answered: [0; PRGS],
    };
    let (init, prog) = prog.split_first().map_or((0, prog), |(&b, r)| (b, r));
    if init & 1 == 0 {
        // Most runs start from a driver that set the unit up as Linux does.
        let _ = guest.init(&mut unit, &mem, &mut irq, 0);
    }
    for chunk in prog.chunks(11) {
        now += 1;
        let op = chunk[0];
        let arg = |i: usize| chunk.get(i).copied().unwrap_or(0);
        match op % 8 {
            0 => {
                let n = 1 + usize::from(arg(1) % 3);
                let grpid = u32::from(arg(2)) % PRGS as u32;
                for i in 0..n {
                    let last = i + 1 == n;
                    let mut flags = if last {
                        PageRequestFlags::LAST_PAGE
                    } else {
                        PageRequestFlags::empty()
                    };
                    if arg(3) & 1 != 0 {
                        flags |= PageRequestFlags::PASID_VALID;
                    }
                    let perm = if arg(3) & 2 != 0 { Perm::WRITE } else { Perm::READ };
                    if last {
                        dev.completed[grpid as usize] += 1;
                    }
                    dev.host.report(PageRequest {
                        flags,
                        pasid: PASID + u32::from(arg(3) >> 6),
                        grpid,
                        perm,
                        addr: 0x1000 * (u64::from(grpid) + 1) + 0x10_0000 * i as u64,
                        private_data: [0; 2],
                    });
                }
            }
            1 => {
                let _ = unit.pump(&mem, &mut irq, now);
            }
            2 => {
                let _ = guest.handle_event(&mut unit, &mem, &mut irq, &mut IdentityResolver, now);
            }
            3 => {
                let mut b = [0u8; 8];
                let w = if arg(1) & 1 != 0 { 8 } else { 4 };
                let _ = unit.mmio_read(offset(arch, arg(1) >> 1, arg(2)), &mut b[..w]);
            }
            4 => {
                if arg(1) & 0x80 != 0 {
                    unit.reset();
                } else {
                    dev.check();
                }
            }
            _ => {
                let off = offset(arch, arg(1), arg(2));
                let mut v = [0u8; 8];
                for (i, b) in v.iter_mut().enumerate() {
                    *b = arg(3 + i);
                }
                let mut v = u64::from_le_bytes(v);
                if arg(1) & 2 != 0 {
                    // A queue base inside guest memory, the low (size/flag) bits kept.
                    v = (v & 0xfff) | (v >> 12 << 12) % GUEST_MEM;
                }
                let bytes = v.to_le_bytes();
                let w = if arg(1) & 4 != 0 && off % 8 == 0 { 8 } else { 4 };
                let _ = unit.mmio_write(off, &bytes[..w], &mem, &mut irq, now);
            }
        }
    }
    dev.check();
    // Teardown: the unit's reset answers what the guest held; the host queue's end the rest.
    unit.reset();
    let _ = unit.pump(&mem, &mut irq, now + 1);
    unit.bridge_mut().reset();
    dev.check();
    drop(unit);
    dev.check();
    assert_eq!(
        dev.answered, dev.completed,
        "after teardown every completed group answered exactly once"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&arch, prog)) = data.split_first() else {
        return;
    };
    let Ok((host, queue)) = compat_fault_queue(HOST_DEV) else {
        return;
    };
    let cfg = BridgeConfig::new(vec![Endpoint::new(HOST_DEV, RID)]);
    match arch % 4 {
        0 => {
            let Ok(unit) = VtdBridge::new(queue, cfg, VtdConfig::new(PrivateDataMode::None)) else {
                return;
            };
            let guest = VtdGuestDriver::new(VTD_PRQ, VTD_IQ).with_prq_order(0);
            run(0, unit, guest, host, prog);
        }
        1 => {
            let Ok(unit) = SmmuBridge::new(queue, cfg, SmmuConfig::default()) else {
                return;
            };
            let guest = SmmuGuestDriver::new(SMMU_BASE).with_streams(&[RID]);
            run(1, unit, guest, host, prog);
        }
        2 => {
            let Ok(unit) = SmmuBridge::new(queue, cfg, SmmuConfig::with_stall_streams(vec![RID]))
            else {
                return;
            };
            let guest = SmmuGuestDriver::new(SMMU_BASE).with_streams(&[RID]);
            run(2, unit, guest, host, prog);
        }
        _ => {
            let Ok(unit) = AmdBridge::new(queue, cfg, AmdConfig::default()) else {
                return;
            };
            let guest = AmdGuestDriver::new(AMD_BASE);
            run(3, unit, guest, host, prog);
        }
    }
});
