//! Whatever the guest does, every host group is answered exactly once, on every architecture: a
//! property test over random guest behaviour (honest handling, silence, double answers, raw
//! responses with wrong names or any code, illegal commands with and without the Linux
//! recovery, PRI toggled, the queue turned off or pointed at missing memory, resets, time
//! passing an age limit, a host response ring that fills), checked at the host: no answer
//! without an outstanding group, never Response Failure, never twice, and once the guest is
//! reset, none left.

mod common;

use std::collections::HashMap;

use common::arch::{Arch, Rig, PASID, RID};
use common::endpoint;
use iopf_abi::ResponseCode;
use iopf_viommu::guest::GuestDriverModel;
use iopf_viommu::{BridgeConfig, PassthroughUnit};
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
    Garbage {
        recover: bool,
    },
    Pri(bool),
    Reset,
    QueueOff,
    QueueMissing,
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
        2 => (0u16..24, 0u8..3, 0u8..2, any::<u8>())
            .prop_map(|(grpid, pasid, rid_off, code)| Op::Raw { grpid, pasid, rid_off, code }),
        1 => any::<bool>().prop_map(|recover| Op::Garbage { recover }),
        1 => any::<bool>().prop_map(Op::Pri),
        1 => Just(Op::Reset),
        1 => Just(Op::QueueOff),
        1 => Just(Op::QueueMissing),
        1 => (0u64..500).prop_map(Op::Time),
        1 => prop_oneof![Just(None), (0usize..3).prop_map(Some)].prop_map(Op::HostRoom),
    ]
}

fn take_answers<A: Arch>(
    rig: &mut Rig<A>,
    outstanding: &mut HashMap<u32, usize>,
    answered: &mut usize,
) -> Result<(), TestCaseError> {
    for a in rig.answers() {
        let n = outstanding.entry(a.grpid).or_default();
        prop_assert!(
            *n > 0,
            "{}: an answer for group {} with nothing outstanding",
            A::NAME,
            a.grpid
        );
        *n -= 1;
        prop_assert_ne!(
            a.code,
            ResponseCode::Failure,
            "{}: the device got Response Failure",
            A::NAME
        );
        *answered += 1;
    }
    prop_assert_eq!(
        rig.stats().host_refused,
        0,
        "{}: a group was answered twice",
        A::NAME
    );
    Ok(())
}

fn run<A: Arch>(ops: &[Op], age_limit: Option<u64>) -> Result<(), TestCaseError> {
    let mut cfg = BridgeConfig::new(vec![endpoint()]);
    cfg.age_limit_ns = age_limit;
    let mut rig = Rig::<A>::with(cfg, 16);
    // Groups the host device has outstanding, by group index (a device does not reuse an index
    // before its response).
    let mut outstanding: HashMap<u32, usize> = HashMap::new();
    let mut reported = 0usize;
    let mut answered = 0usize;
    for op in ops {
        match *op {
            Op::Fault { grpid, n } => {
                if outstanding.get(&grpid).copied().unwrap_or(0) == 0 {
                    rig.fault(grpid, n.min(A::MAX_GROUP));
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
            Op::Silent(b) => rig.guest.misbehaviour_mut().silent = b,
            Op::AnswerTwice(b) => rig.guest.misbehaviour_mut().answer_twice = b,
            Op::Raw {
                grpid,
                pasid,
                rid_off,
                code,
            } => {
                let pasid = [Some(PASID), Some(PASID + 1), None][pasid as usize];
                let raw = code % A::RAW_CODES;
                A::respond_raw(&mut rig, &[(RID + u16::from(rid_off), pasid, grpid, raw)]);
            }
            Op::Garbage { recover } => {
                A::write_garbage(&mut rig);
                if recover {
                    A::recover(&mut rig);
                }
            }
            Op::Pri(on) => {
                rig.unit.bridge_mut().set_pri_enabled(RID, on);
            }
            Op::Reset => {
                rig.unit.reset();
                let now = rig.now;
                rig.guest
                    .init(&mut rig.unit, &rig.mem, &mut rig.irq, now)
                    .expect("init");
            }
            Op::QueueOff => A::queue_off(&mut rig),
            Op::QueueMissing => A::queue_in_missing_memory(&mut rig),
            Op::Time(dt) => rig.now += dt,
            Op::HostRoom(r) => rig.unit.bridge_mut().host_mut().room = r,
        }
        take_answers(&mut rig, &mut outstanding, &mut answered)?;
    }
    // The guest is reset with the host ring free: every group is answered, none twice. The
    // reset answers what the bridge read; what still waits in the host queue (more than the
    // guest's queue had room for: an SMMUv3 PRI queue of 16 entries) is answered by the pump
    // the VMM runs while the host queue is readable, the unit's queue being off after a reset.
    // (The soak's 4,096 cases found the oracle missing that pump: an SMMUv3 case left groups
    // in the host queue, not stranded, only not yet pumped.)
    rig.unit.bridge_mut().host_mut().room = None;
    rig.pump();
    rig.unit.reset();
    rig.pump();
    take_answers(&mut rig, &mut outstanding, &mut answered)?;
    let left: usize = outstanding.values().sum();
    prop_assert_eq!(left, 0, "{}: groups left unanswered", A::NAME);
    prop_assert_eq!(answered, reported);
    let b = rig.unit.bridge();
    prop_assert_eq!(
        (b.outstanding(), b.staged_records(), b.owed_answers()),
        (0, 0, 0)
    );
    prop_assert_eq!(b.stats().answered() as usize, reported);
    Ok(())
}

macro_rules! property {
    ($name:ident: $ty:ty) => {
        proptest! {
            #![proptest_config(ProptestConfig { cases: iopf_core::testing::proptest_cases(128), ..ProptestConfig::default() })]

            #[test]
            fn $name(
                ops in proptest::collection::vec(op(), 1..80),
                age in prop_oneof![Just(None), (1u64..300).prop_map(Some)],
            ) {
                run::<$ty>(&ops, age)?;
            }
        }
    };
}

property!(vtd_every_host_group_is_answered_exactly_once: common::vtd::Vtd);
property!(amd_every_host_group_is_answered_exactly_once: common::amd::Amd);
property!(smmu_pri_every_host_group_is_answered_exactly_once: common::smmuv3::SmmuPri);
property!(smmu_stall_every_host_group_is_answered_exactly_once: common::smmuv3::SmmuStall);
