//! The age limit and groups held back behind a full guest queue, against a scripted host and
//! per-function guest queues. Found by the second review of issue 14 (each failed before its
//! fix): a held-back group is aged only when a pump finds its queue still full, is answered
//! INVALID if the guest could not take it at all, another function's group behind it is posted
//! (not aged) once the front is answered, and the bridge does not read the host's backlog to
//! age it while the host refuses answers.
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;

use iopf_abi::{FaultConsumer, IommufdResponse, Perm, PgFault, PgfaultFlags, ResponseCode};
use iopf_viommu::testing::VecGuestQueue;
use iopf_viommu::{
    Bridge, BridgeConfig, Endpoint, GroupNaming, GuestPageRequest, GuestQueue, GuestResponse,
    HostAnswer, Posted, PrivateDataMode,
};

/// A host that hands out whole groups, records every answer by cookie, and can produce forever.
#[derive(Default)]
struct Script {
    groups: VecDeque<Vec<PgFault>>,
    answers: Vec<IommufdResponse>,
    next_cookie: u32,
    /// Produce a fresh 1-record group for dev `forever` on every read (an endless producer).
    forever: Option<u32>,
    reads: usize,
    /// Answers the host takes (None: all).
    room: Option<usize>,
}

impl Script {
    fn group(&mut self, dev: u32, grpid: u32, n: usize, pasid: Option<u32>) -> u32 {
        self.next_cookie += 1;
        let c = self.next_cookie;
        let g = (0..n)
            .map(|i| {
                let mut f = PgFault::ZEROED;
                f.dev_id = dev;
                f.grpid = grpid;
                f.cookie = c;
                f.perm = Perm::READ;
                f.addr = 0x1000 * (i as u64 + 1);
                if let Some(p) = pasid {
                    f.flags |= PgfaultFlags::PASID_VALID;
                    f.pasid = p;
                }
                if i + 1 == n {
                    f.flags |= PgfaultFlags::LAST_PAGE;
                }
                f
            })
            .collect();
        self.groups.push_back(g);
        c
    }
    fn answered(&self, cookie: u32) -> Vec<ResponseCode> {
        self.answers
            .iter()
            .filter(|a| a.cookie == cookie)
            .map(|a| a.code)
            .collect()
    }
}

impl FaultConsumer for Script {
    type Error = Infallible;
    fn read_faults(&mut self, out: &mut [PgFault]) -> Result<usize, Infallible> {
        self.reads += 1;
        if let Some(dev) = self.forever {
            self.group(dev, 1, 1, None);
        }
        let mut n = 0;
        while let Some(g) = self.groups.front() {
            if n + g.len() > out.len() {
                break;
            }
            let Some(g) = self.groups.pop_front() else {
                break;
            };
            out[n..n + g.len()].copy_from_slice(&g);
            n += g.len();
        }
        Ok(n)
    }
    fn respond(&mut self, r: &[IommufdResponse]) -> Result<usize, Infallible> {
        let n = self.room.map_or(r.len(), |k| k.min(r.len()));
        if let Some(k) = self.room.as_mut() {
            *k -= n;
        }
        self.answers.extend_from_slice(&r[..n]);
        Ok(n)
    }
    fn wait_readable(&mut self, _t: Option<std::time::Duration>) -> Result<bool, Infallible> {
        Ok(!self.groups.is_empty())
    }
}

/// One queue per requester id.
#[derive(Default)]
struct PerRid {
    q: HashMap<u16, VecGuestQueue>,
    stall: Vec<u16>,
}
impl GuestQueue for PerRid {
    fn enabled(&self, rid: u16) -> bool {
        self.q[&rid].enabled(rid)
    }
    fn room(&self, rid: u16) -> usize {
        self.q[&rid].room(rid)
    }
    fn capacity(&self, rid: u16) -> usize {
        self.q[&rid].capacity(rid)
    }
    fn naming(&self, rid: u16) -> GroupNaming {
        if self.stall.contains(&rid) {
            GroupNaming::STALL
        } else {
            GroupNaming::PRI
        }
    }
    fn private_data_mode(&self) -> PrivateDataMode {
        PrivateDataMode::None
    }
    fn post(&mut self, req: &GuestPageRequest) -> Posted {
        self.q
            .get_mut(&req.rid)
            .map_or(Posted::Unreachable, |q| q.post(req))
    }
    fn notify(&mut self) {}
}

fn cfg(eps: &[(u32, u16)], age: Option<u64>) -> BridgeConfig {
    let mut c = BridgeConfig::new(eps.iter().map(|&(d, r)| Endpoint::new(d, r)).collect());
    c.age_limit_ns = age;
    c
}

/// A staged group whose queue has room by the pump at its age limit is posted, not aged.
#[test]
fn a_held_back_group_is_posted_when_the_queue_has_room_by_the_next_pump() {
    let mut host = Script::default();
    host.group(1, 1, 1, None);
    let b_cookie = host.group(1, 2, 1, None);
    let mut bridge = Bridge::new(host, cfg(&[(1, 0x10)], Some(100))).expect("infallible here");
    let mut guest = VecGuestQueue::new(1);
    assert_eq!(bridge.pump(&mut guest, 0).expect("infallible here"), 1);
    assert_eq!(
        bridge.staged_records(),
        1,
        "B held back behind the full queue"
    );
    // The guest takes A well within the limit and answers it: room for B.
    let a = guest.posted.remove(0);
    bridge
        .guest_response(&GuestResponse {
            rid: 0x10,
            pasid: None,
            prg_index: a.prg_index,
            code: ResponseCode::Success,
            private_data: None,
        })
        .expect("infallible here");
    // The VMM's next pump comes at the limit (e.g. its next timer tick).
    let posted = bridge.pump(&mut guest, 100).expect("infallible here");
    assert_eq!(
        bridge.stats().host_answers[HostAnswer::Aged as usize],
        0,
        "B was aged although the queue had room when the bridge looked"
    );
    assert_eq!(posted, 1, "B should have been posted");
    let _ = b_cookie;
}

/// A group of a function the VMM did not configure, held back behind a full queue, is
/// answered INVALID (NoEndpoint), not with the aged code (SUCCESS: retry).
#[test]
fn a_held_back_group_the_guest_cannot_take_is_answered_invalid_not_aged() {
    let mut host = Script::default();
    host.group(1, 1, 1, None);
    host.group(1, 2, 1, None); // blocks: queue full
    let stranger = host.group(99, 3, 1, None);
    let mut bridge = Bridge::new(host, cfg(&[(1, 0x10)], Some(10))).expect("infallible here");
    let mut guest = VecGuestQueue::new(1);
    bridge.pump(&mut guest, 0).expect("infallible here");
    bridge.pump(&mut guest, 50).expect("infallible here");
    bridge.flush();
    assert_eq!(
        bridge.host().answered(stranger),
        vec![ResponseCode::Invalid],
        "a function not configured is answered INVALID"
    );
}

/// Endpoint B's queue is empty all along: B's group behind A's blocked group waits (the host's
/// order is kept) and is posted once A's is aged, never aged unseen.
#[test]
fn another_functions_group_behind_a_blocked_front_is_posted_not_aged() {
    let mut host = Script::default();
    host.group(1, 1, 1, None);
    host.group(1, 2, 1, None); // A's, blocked
    let b = host.group(2, 7, 1, None); // B's, queue empty
    let mut bridge =
        Bridge::new(host, cfg(&[(1, 0x10), (2, 0x20)], Some(10))).expect("infallible here");
    let mut guest = PerRid::default();
    guest.q.insert(0x10, VecGuestQueue::new(1));
    guest.q.insert(0x20, VecGuestQueue::new(64));
    bridge.pump(&mut guest, 0).expect("infallible here");
    bridge.pump(&mut guest, 50).expect("infallible here");
    bridge.flush();
    assert!(
        guest.q[&0x20].posted.iter().any(|r| r.prg_index == 7)
            || bridge.host().answered(b).is_empty(),
        "B's group was answered {:?} without B's guest ever seeing it",
        bridge.host().answered(b)
    );
}

/// An endless producer, a full queue, an age limit: pump returns, what is staged stays
/// bounded, and each group read is answered once.
#[test]
fn endless_producer_is_bounded_and_answered_once() {
    let mut host = Script::default();
    host.group(1, 1, 1, None);
    host.forever = Some(1);
    let mut bridge = Bridge::new(host, cfg(&[(1, 0x10)], Some(10))).expect("infallible here");
    let mut guest = VecGuestQueue::new(1);
    for t in 0..5u64 {
        bridge.pump(&mut guest, t * 20).expect("infallible here");
        assert!(
            bridge.staged_records() <= (1 << 18) + 64,
            "staged {}",
            bridge.staged_records()
        );
    }
    bridge.reset();
    let st = bridge.stats();
    let h = bridge.host();
    let mut seen = HashMap::new();
    for a in &h.answers {
        *seen.entry(a.cookie).or_insert(0) += 1;
    }
    assert!(seen.values().all(|&n| n == 1), "answered twice");
    assert_eq!(
        st.groups_read,
        seen.len() as u64 + bridge.outstanding() as u64,
        "every read group answered"
    );
}

/// A stall: a 3-record group posts one request into a queue with room 1; a queue of capacity 0
/// or off answers INVALID (QueueOff).
#[test]
fn stall_needs_one_slot_and_capacity_zero_is_off() {
    let mut host = Script::default();
    let a = host.group(1, 0x1234, 3, Some(4));
    let b = host.group(2, 0x55, 2, None);
    let c = host.group(3, 0x56, 2, None);
    let mut bridge =
        Bridge::new(host, cfg(&[(1, 0x10), (2, 0x20), (3, 0x30)], None)).expect("infallible here");
    let mut guest = PerRid {
        stall: vec![0x10, 0x20, 0x30],
        ..PerRid::default()
    };
    guest.q.insert(0x10, VecGuestQueue::new(1));
    guest.q.insert(0x20, VecGuestQueue::new(0));
    let mut off = VecGuestQueue::new(4);
    off.enabled = false;
    guest.q.insert(0x30, off);
    bridge.pump(&mut guest, 0).expect("infallible here");
    bridge.flush();
    assert_eq!(guest.q[&0x10].posted.len(), 1);
    assert!(bridge.host().answered(a).is_empty());
    assert_eq!(bridge.host().answered(b), vec![ResponseCode::Invalid]);
    assert_eq!(bridge.host().answered(c), vec![ResponseCode::Invalid]);
    assert!(guest.q[&0x20].posted.is_empty() && guest.q[&0x30].posted.is_empty());
}

/// A reset with groups staged by the backlog read: each answered once.
#[test]
fn reset_with_staged_from_drain_answers_once() {
    let mut host = Script::default();
    let cs: Vec<u32> = (0..50).map(|i| host.group(1, i, 2, Some(1))).collect();
    let mut bridge = Bridge::new(host, cfg(&[(1, 0x10)], Some(1000))).expect("infallible here");
    let mut guest = VecGuestQueue::new(4);
    bridge.pump(&mut guest, 0).expect("infallible here");
    assert!(bridge.staged_records() > 0);
    bridge.expire(500);
    bridge.reset();
    bridge.pump(&mut guest, 5000).expect("infallible here");
    bridge.expire(100000);
    bridge.flush();
    for c in cs {
        assert_eq!(bridge.host().answered(c).len(), 1, "cookie {c}");
    }
}

/// With an age limit and a host response ring that takes nothing, the bridge stops reading the
/// host's backlog to age it once an answer waits, so what it owes the host does not grow (and
/// what it reads stays within its bound).
#[test]
fn nothing_is_read_to_age_while_the_host_refuses_answers() {
    let mut host = Script::default();
    host.group(1, 1, 1, None);
    host.forever = Some(1);
    host.room = Some(0);
    let mut bridge = Bridge::new(host, cfg(&[(1, 0x10)], Some(10))).expect("infallible here");
    let mut guest = VecGuestQueue::new(1);
    let mut owed = vec![];
    for t in 0..4u64 {
        bridge.pump(&mut guest, t * 20).expect("infallible here");
        owed.push(bridge.owed_answers());
    }
    assert!(owed.iter().all(|&n| n <= 4), "owed grows: {owed:?}");
    assert!(
        bridge.staged_records() <= (1 << 18) + 64,
        "what is read to age is bounded: {}",
        bridge.staged_records()
    );
}
