//! Whatever the guest does, every host group is answered exactly once: a property test over
//! random guest behaviour (honest handling, silence, double answers, responses with wrong names
//! or reserved codes, garbage descriptors and their recovery, PRI toggled, `PQA` rewritten or
//! pointed at missing memory, resets, time passing an age limit, a host response ring that
//! fills), checked at the host: the bridge never answers a group twice (the host would refuse
//! it) and, once the guest is reset, no group is left unanswered.

mod common;

use std::collections::HashMap;

use common::*;
use iopf_abi::ResponseCode;
use iopf_viommu::vtd::regs::{FSTS, FSTS_IQE, IQH, PQA};
use iopf_viommu::vtd::{PageGroupResponse, VtdConfig, WaitDescriptor};
use iopf_viommu::{BridgeConfig, PrivateDataMode};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Fault {
        grpid: u32,
        n: usize,
    },
    Pump,
    GuestRuns,
    Silent(bool),
    AnswerTwice(bool),
    Raw {
        grpid: u16,
        pasid: u8,
        rid_off: u8,
        code: u8,
    },
    Garbage([u64; 4]),
    RecoverIqe,
    Pri(bool),
    Reset,
    Pqa {
        order: u64,
        missing: bool,
    },
    Time(u64),
    HostRoom(Option<usize>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..24, 1usize..5).prop_map(|(grpid, n)| Op::Fault { grpid, n }),
        4 => Just(Op::Pump),
        4 => Just(Op::GuestRuns),
        1 => any::<bool>().prop_map(Op::Silent),
        1 => any::<bool>().prop_map(Op::AnswerTwice),
        2 => (0u16..24, 0u8..3, 0u8..2, 0u8..16)
            .prop_map(|(grpid, pasid, rid_off, code)| Op::Raw { grpid, pasid, rid_off, code }),
        1 => any::<[u64; 4]>().prop_map(Op::Garbage),
        1 => Just(Op::RecoverIqe),
        1 => any::<bool>().prop_map(Op::Pri),
        1 => Just(Op::Reset),
        1 => (0u64..2, any::<bool>()).prop_map(|(order, missing)| Op::Pqa { order, missing }),
        1 => (0u64..500).prop_map(Op::Time),
        1 => prop_oneof![Just(None), (0usize..3).prop_map(Some)].prop_map(Op::HostRoom),
    ]
}

fn run(ops: &[Op], age_limit: Option<u64>) -> Result<(), TestCaseError> {
    let mut cfg = BridgeConfig::new(vec![endpoint()]);
    cfg.age_limit_ns = age_limit;
    let mut rig = rig_with(
        HostDouble::new(HOST_DEV),
        cfg,
        VtdConfig::new(PrivateDataMode::None),
        0,
    );
    // Groups the host device has outstanding, by PRG index (a device does not reuse an index
    // before its response), and every answer the device got.
    let mut outstanding: HashMap<u32, usize> = HashMap::new();
    let mut reported = 0usize;
    let mut answers = Vec::new();
    for op in ops {
        match *op {
            Op::Fault { grpid, n } => {
                if outstanding.get(&grpid).copied().unwrap_or(0) == 0 {
                    rig.fault(grpid, n);
                    *outstanding.entry(grpid).or_default() += 1;
                    reported += 1;
                }
            }
            Op::Pump => {
                rig.pump();
            }
            Op::GuestRuns => {
                rig.guest_runs();
            }
            Op::Silent(b) => rig.guest.misbehaviour.silent = b,
            Op::AnswerTwice(b) => rig.guest.misbehaviour.answer_twice = b,
            Op::Raw {
                grpid,
                pasid,
                rid_off,
                code,
            } => {
                let pasid = [Some(PASID), Some(PASID + 1), None][pasid as usize];
                let mut d = PageGroupResponse::new(
                    RID + u16::from(rid_off),
                    pasid,
                    grpid,
                    ResponseCode::Success,
                    None,
                )
                .encode(PrivateDataMode::None);
                d[0] |= u64::from(code) << 12;
                rig.submit_raw(&[d]);
            }
            Op::Garbage(d) => rig.submit_raw(&[d]),
            Op::RecoverIqe => {
                if rig.read32(FSTS) & FSTS_IQE != 0 {
                    // As Linux's qi_check_fault(): overwrite the bad descriptor, clear IQE.
                    use vm_memory::{Bytes, GuestAddress};
                    let head = rig.read64(IQH);
                    let wait = WaitDescriptor {
                        fence: true,
                        ..Default::default()
                    }
                    .encode();
                    rig.mem
                        .write_slice(
                            &iopf_viommu::vtd::page_request::to_bytes(&wait),
                            GuestAddress(IQ_BASE + head),
                        )
                        .expect("iq memory");
                    rig.write32(FSTS, FSTS_IQE);
                }
            }
            Op::Pri(on) => {
                rig.unit.bridge_mut().set_pri_enabled(RID, on);
            }
            Op::Reset => {
                rig.unit.reset();
                rig.guest
                    .init(&mut rig.unit, &rig.mem, &mut rig.irq, rig.now)
                    .expect("init");
            }
            Op::Pqa { order, missing } => {
                let base = if missing { 0x4000_0000 } else { PRQ_BASE };
                rig.write64(PQA, base | order);
            }
            Op::Time(dt) => rig.now += dt,
            Op::HostRoom(r) => rig.unit.bridge_mut().host_mut().room = r,
        }
        for a in rig.answers() {
            let n = outstanding.entry(a.grpid).or_default();
            prop_assert!(
                *n > 0,
                "an answer for PRG index {} with nothing outstanding",
                a.grpid
            );
            *n -= 1;
            prop_assert_ne!(
                a.code,
                ResponseCode::Failure,
                "the device never gets Response Failure"
            );
            answers.push(a);
        }
        prop_assert_eq!(
            rig.unit.bridge().stats().host_refused,
            0,
            "the bridge answered a group twice"
        );
    }
    // The guest is reset with the host ring free: every group is answered, none twice.
    rig.unit.bridge_mut().host_mut().room = None;
    rig.pump();
    rig.unit.reset();
    for a in rig.answers() {
        let n = outstanding.entry(a.grpid).or_default();
        prop_assert!(*n > 0);
        *n -= 1;
        answers.push(a);
    }
    let left: usize = outstanding.values().sum();
    prop_assert_eq!(left, 0, "groups left unanswered");
    prop_assert_eq!(answers.len(), reported);
    let b = rig.unit.bridge();
    prop_assert_eq!(
        (b.outstanding(), b.staged_records(), b.owed_answers()),
        (0, 0, 0)
    );
    prop_assert_eq!(b.stats().answered() as usize, reported);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: iopf_core::testing::proptest_cases(256), ..ProptestConfig::default() })]

    #[test]
    fn every_host_group_is_answered_exactly_once(
        ops in proptest::collection::vec(op(), 1..80),
        age in prop_oneof![Just(None), (1u64..300).prop_map(Some)],
    ) {
        run(&ops, age)?;
    }
}
