//! Arbitrary guest register writes against the bridge, from a hostile review: a scripted host
//! that refuses any answer to a cookie it does not hold, so a double answer shows.

mod common;

use std::collections::{HashMap, VecDeque};

use common::*;
use iopf_abi::{FaultConsumer, IommufdResponse, Perm, PgFault, PgfaultFlags, ResponseCode};
use iopf_viommu::guest::VtdGuestDriver;
use iopf_viommu::vtd::regs::*;
use iopf_viommu::vtd::{VtdBridge, VtdConfig};
use iopf_viommu::{BridgeConfig, Endpoint, PrivateDataMode, RecordedMsis};
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// A scripted host: delivers whole groups of arbitrary records, refuses answers to cookies it
/// does not hold.
struct ScriptHost {
    pending: VecDeque<Vec<PgFault>>,
    outstanding: HashMap<u32, ()>,
    answers: Vec<IommufdResponse>,
    refused: u64,
}

impl ScriptHost {
    fn new() -> ScriptHost {
        ScriptHost {
            pending: VecDeque::new(),
            outstanding: HashMap::new(),
            answers: vec![],
            refused: 0,
        }
    }
    fn group(&mut self, recs: Vec<PgFault>) {
        self.pending.push_back(recs);
    }
}

fn rec(dev: u32, cookie: u32, pasid: Option<u32>, grpid: u32, last: bool) -> PgFault {
    let mut flags = PgfaultFlags::empty();
    if pasid.is_some() {
        flags |= PgfaultFlags::PASID_VALID;
    }
    if last {
        flags |= PgfaultFlags::LAST_PAGE;
    }
    PgFault {
        flags,
        dev_id: dev,
        pasid: pasid.unwrap_or(0),
        grpid,
        perm: Perm::READ,
        addr: 0x5000,
        length: 0,
        cookie,
        reserved: 0,
    }
}

#[derive(Debug)]
struct Refused;
impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused")
    }
}

impl FaultConsumer for ScriptHost {
    type Error = Refused;
    fn read_faults(&mut self, out: &mut [PgFault]) -> Result<usize, Refused> {
        let mut n = 0;
        while let Some(g) = self.pending.front() {
            if n + g.len() > out.len() {
                if n == 0 {
                    return Err(Refused); // EINVAL: the first group does not fit
                }
                break;
            }
            let Some(g) = self.pending.pop_front() else {
                break;
            };
            for r in &g {
                self.outstanding.insert(r.cookie, ());
            }
            out[n..n + g.len()].copy_from_slice(&g);
            n += g.len();
        }
        Ok(n)
    }
    fn respond(&mut self, rs: &[IommufdResponse]) -> Result<usize, Refused> {
        for (i, r) in rs.iter().enumerate() {
            if self.outstanding.remove(&r.cookie).is_none() {
                if i == 0 {
                    self.refused += 1;
                    return Err(Refused);
                }
                return Ok(i);
            }
            assert_ne!(
                r.code,
                ResponseCode::Failure,
                "the host got Response Failure"
            );
            self.answers.push(*r);
        }
        Ok(rs.len())
    }
    fn wait_readable(&mut self, _: Option<std::time::Duration>) -> Result<bool, Refused> {
        Ok(!self.pending.is_empty())
    }
}

fn script_rig(
    host: ScriptHost,
    eps: Vec<Endpoint>,
) -> (
    GuestMemoryMmap,
    VtdBridge<ScriptHost>,
    RecordedMsis,
    VtdGuestDriver,
) {
    let mem =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).expect("guest memory");
    let mut vtd = VtdBridge::new(
        host,
        BridgeConfig::new(eps),
        VtdConfig::new(PrivateDataMode::None),
    )
    .expect("bridge");
    let mut irq = RecordedMsis::default();
    let mut guest = VtdGuestDriver::new(PRQ_BASE, IQ_BASE).with_prq_order(0);
    guest.init(&mut vtd, &mem, &mut irq, 0).expect("init");
    (mem, vtd, irq, guest)
}

/// Arbitrary 4- and 8-byte writes to every register, interleaved with host groups, pumps and
/// guest runs, then a reset: exactly once at the host, no answer refused, no Response Failure, no
/// panic, no hang (an infinite loop here was the review's first finding).
#[test]
fn fuzz_mmio_keeps_exactly_once() {
    {
        for seed in 1..40u64 {
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let (mem, mut vtd, mut irq, mut guest) =
                script_rig(ScriptHost::new(), vec![endpoint()]);
            let mut cookie = 1;
            for step in 0..400u64 {
                match next() % 6 {
                    0 => {
                        let n = 1 + (next() % 3) as usize;
                        let g = (next() % 1024) as u32;
                        let recs = (0..n)
                            .map(|i| rec(HOST_DEV, cookie, Some(PASID), g, i + 1 == n))
                            .collect();
                        vtd.bridge_mut().host_mut().group(recs);
                        cookie += 1;
                    }
                    1 => {
                        let _ = vtd.pump(&mem, &mut irq, step);
                    }
                    2 => {
                        let _ = guest.handle_event(
                            &mut vtd,
                            &mem,
                            &mut irq,
                            &mut iopf_viommu::guest::IdentityResolver,
                            step,
                        );
                    }
                    _ => {
                        let off = (next() % 0xf0) & !3;
                        let v = match next() % 4 {
                            0 => 0,
                            1 => next() & 0xffff_ffff,
                            2 => 1 << (next() % 64),
                            _ => next(),
                        };
                        let v = if off & !7 == PQA && next() % 2 == 0 {
                            (v & 7) | PRQ_BASE
                        } else {
                            v
                        };
                        if off % 8 == 0 && next() % 2 == 0 {
                            let _ = vtd.mmio_write(off, &v.to_le_bytes(), &mem, &mut irq, step);
                        } else {
                            let _ = vtd.mmio_write(
                                off,
                                &(v as u32).to_le_bytes(),
                                &mem,
                                &mut irq,
                                step,
                            );
                        }
                    }
                }
            }
            vtd.reset();
            let _ = vtd.pump(&mem, &mut irq, 10_000);
            vtd.bridge_mut().reset();
            let h = vtd.bridge().host();
            assert_eq!(h.refused, 0, "seed {seed}: host refused an answer");
            let s = vtd.bridge().stats();
            assert_eq!(s.answered(), s.groups_read, "seed {seed}: {s:?}");
        }
    }
}
