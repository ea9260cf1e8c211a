//! Every reader against well-behaved producers and hostile ones (from a hostile review of the
//! chunked reader): a legitimate group is never answered broken or skipped, whatever the buffer,
//! the ring offset, the mix of readers or how much of it is published yet; a group that cannot
//! end (past the largest agreed, without LAST_PAGE) or is interrupted by another's records is
//! answered INVALID once, its other records skipped by every reader, and never wedges the queue.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use common::{cookie_queue, cookie_request, req, slot_word};
use iopf_abi::fault::{FaultReason, UnrecoverableFlags};
use iopf_abi::features::RecordFormats;
use iopf_abi::{
    FaultConsumer, Features, IommufdResponse, Perm, PgFault, ResponseCode, Unrecoverable,
};
use iopf_queue::{
    channel, Consumer, Event, LossReason, Offer, Producer, ProducerConfig, QueueError, Readiness,
    Request, TaggedGroup,
};

fn buf(n: usize) -> Vec<PgFault> {
    vec![PgFault::from_bytes(&[0; 40]).unwrap(); n]
}

fn group(grpid: u32, n: usize) -> Vec<iopf_abi::PageRequest> {
    (0..n)
        .map(|k| req(grpid, None, k + 1 == n, 0x1000 * (k as u64 + 1)))
        .collect()
}

fn push(p: &mut Producer, grpid: u32, n: usize) -> u32 {
    let r = group(grpid, n);
    p.push_group(&TaggedGroup {
        tag: u64::from(grpid),
        dev_id: 0,
        requests: &r,
    })
    .unwrap()
}

fn answer_all(c: &mut Consumer, out: &[PgFault]) {
    let rs: Vec<_> = out
        .iter()
        .filter(|f| f.flags.contains(iopf_abi::iommufd::PgfaultFlags::LAST_PAGE))
        .map(|f| IommufdResponse {
            cookie: f.cookie,
            code: ResponseCode::Success,
        })
        .collect();
    assert_eq!(c.respond(&rs).unwrap(), rs.len());
}

/// A legitimate group of exactly `entries` records, at every ring offset, any buffer >= entries.
#[test]
fn exact_ring_group_at_every_offset() {
    const E: usize = 8;
    let (mut p, mut c) = cookie_queue(E as u32);
    let mut answers = Vec::new();
    for off in 0..E {
        for _ in 0..off {
            push(&mut p, 1, 1);
        }
        let mut out = buf(64);
        assert_eq!(c.read_faults(&mut out).unwrap(), off);
        answer_all(&mut c, &out[..off]);
        p.drain_responses(&mut answers);
        let ck = push(&mut p, 2, E);
        // too small a buffer: EINVAL, nothing broken; then exactly E
        for small in 1..E {
            let mut o = buf(small);
            assert!(matches!(
                c.read_faults(&mut o),
                Err(QueueError::Inconsistent(_))
            ));
        }
        let mut o = buf(E);
        assert_eq!(c.read_faults(&mut o).unwrap(), E);
        assert!(o.iter().all(|f| f.cookie == ck));
        answer_all(&mut c, &o);
        p.drain_responses(&mut answers);
        assert_eq!(p.pending_groups(), 0);
    }
    let s = c.stats();
    assert_eq!((s.corrupt, s.answered_broken, s.lost), (0, 0, 0));
    assert_eq!(s.records, p.stats().delivered);
}

/// The same group with its LAST_PAGE slot not published yet (a producer publishing in batches):
/// nothing broken, delivered whole once it is published; likewise for pop_event readers.
#[test]
fn exact_ring_group_partly_published() {
    const E: usize = 8;
    for off in 0..E {
        for hide in 1..E {
            let (mut p, mut c) = cookie_queue(E as u32);
            let mut answers = Vec::new();
            for _ in 0..off {
                push(&mut p, 1, 1);
            }
            let mut out = buf(64);
            assert_eq!(c.read_faults(&mut out).unwrap(), off);
            answer_all(&mut c, &out[..off]);
            p.drain_responses(&mut answers);
            push(&mut p, 2, E);
            // hide the stamps of slots hide..E of the group (publication in a batch of `hide`)
            let mut saved = Vec::new();
            for k in hide..E {
                let sw = slot_word(&c, (off + k) % E, 2);
                let st = c.raw_region()[sw].load(Ordering::Relaxed);
                saved.push((sw, st));
                c.raw_region()[sw].store(st & !0xffff_ffff, Ordering::Relaxed);
            }
            for _ in 0..3 {
                assert_eq!(c.read_faults(&mut out).unwrap(), 0);
            }
            for (sw, st) in saved {
                c.raw_region()[sw].store(st, Ordering::Release);
            }
            assert_eq!(c.read_faults(&mut out).unwrap(), E, "off {off} hide {hide}");
            let s = c.stats();
            assert_eq!((s.corrupt, s.answered_broken, s.lost), (0, 0, 0));
            assert_eq!(s.records, (off + E) as u64);
        }
    }
}

/// A hostile whole ring of one group without LAST_PAGE: to a buffer smaller than the largest
/// group (the ring here) it is the specific error a group too large for the buffer gets
/// (`Inconsistent`, EINVAL: read with a buffer of `largest_group()` records); read with such a
/// buffer it is answered broken.
#[test]
fn a_never_ending_group_is_refused_to_a_small_buffer_and_broken_for_a_largest_group_one() {
    const E: usize = 8;
    let (mut p, mut c) = cookie_queue(E as u32);
    push(&mut p, 2, E);
    let w = slot_word(&c, E - 1, 3);
    let v = c.raw_region()[w].load(Ordering::Relaxed);
    c.raw_region()[w].store(v & !(1 << 1), Ordering::Relaxed);
    let mut out = buf(4);
    assert!(matches!(
        c.read_faults(&mut out),
        Err(QueueError::Inconsistent(_))
    ));
    assert_eq!(c.stats().answered_broken, 0);
    let mut out = buf(c.agreement().largest_group() as usize);
    assert_eq!(c.read_faults(&mut out).unwrap(), 0);
    assert_eq!(c.stats().answered_broken, 1);
    assert!(!c.ready().contains(Readiness::FAULTS));
    let mut answers = Vec::new();
    p.drain_responses(&mut answers);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].code, ResponseCode::Invalid);
}

/// Regression: with a largest group agreed (max_group 4 of an 8-ring), a hostile 7-record group
/// without LAST_PAGE (larger than any group the producer may send) wedged read_faults (Ok(0)
/// for ever, ready() FAULTS). It is answered broken once it has the largest group's records.
#[test]
fn a_group_past_the_agreed_largest_without_last_page_is_answered_broken() {
    let offer = Offer::current().with_max_group(4);
    let (mut p, mut c) = channel(&offer, &cookie_request(8), ProducerConfig::default()).unwrap();
    assert_eq!(p.agreement().max_group, 4);
    push(&mut p, 2, 4); // slots 0..4, cookie A
    push(&mut p, 3, 3); // slots 4..7
                        // Make slots 4..7 records of A, and clear LAST_PAGE on slot 3.
    for s in 4..7 {
        for w in [1, 3, 4, 5, 6, 7] {
            let v = c.raw_region()[slot_word(&c, 0, w)].load(Ordering::Relaxed);
            c.raw_region()[slot_word(&c, s, w)].store(v, Ordering::Relaxed);
        }
    }
    let w = slot_word(&c, 3, 3);
    let v = c.raw_region()[w].load(Ordering::Relaxed);
    c.raw_region()[w].store(v & !(1 << 1), Ordering::Relaxed);
    let mut out = buf(64);
    for _ in 0..100 {
        assert_eq!(c.read_faults(&mut out).unwrap(), 0);
        if c.stats().answered_broken > 0 {
            return;
        }
        assert!(c.ready().contains(Readiness::FAULTS));
    }
    panic!(
        "wedged: 7 records of one group (max_group 4) never answered, ready() FAULTS; {:?}",
        c.stats()
    );
}

/// Regression: A0, B0(LAST), A1(LAST): A was answered broken at B0, then A1 was delivered as
/// group A again (answered twice). The consumer remembers the broken groups it skips.
#[test]
fn an_interrupted_group_resumed_later_is_not_handed_out_again() {
    let (mut p, mut c) = cookie_queue(8);
    let a = push(&mut p, 2, 2); // slots 0, 1
    let b = push(&mut p, 3, 1); // slot 2
    assert_ne!(a, b);
    swap_record_1_and_2(&c);
    let mut out = buf(64);
    let n = c.read_faults(&mut out).unwrap();
    let delivered: Vec<u32> = out[..n].iter().map(|f| f.cookie).collect();
    assert_eq!(c.stats().answered_broken, 1);
    assert_delivered_once(&c, a, &delivered);
}

/// Swaps the contents (not stamps or sequence numbers) of fault slots 1 and 2.
fn swap_record_1_and_2(c: &Consumer) {
    let words = [1, 3, 4, 5, 6, 7];
    let s1: Vec<u64> = words
        .iter()
        .map(|&w| c.raw_region()[slot_word(c, 1, w)].load(Ordering::Relaxed))
        .collect();
    let s2: Vec<u64> = words
        .iter()
        .map(|&w| c.raw_region()[slot_word(c, 2, w)].load(Ordering::Relaxed))
        .collect();
    for (k, &w) in words.iter().enumerate() {
        c.raw_region()[slot_word(c, 1, w)].store(s2[k], Ordering::Relaxed);
        c.raw_region()[slot_word(c, 2, w)].store(s1[k], Ordering::Relaxed);
    }
}

/// The same, with the resumed record left to `pop_events` (which decodes each event where it
/// lies in its caller's `Vec` and must take a skipped one back out of it).
#[test]
fn an_interrupted_group_resumed_later_is_not_popped_either() {
    let (mut p, mut c) = cookie_queue(8);
    let a = push(&mut p, 2, 2);
    let b = push(&mut p, 3, 1);
    swap_record_1_and_2(&c);
    // A0 and B0 only (A1's slot unpublished for a moment): A is broken at B0, and A1 is left
    // in the ring.
    let stamp_word = &c.raw_region()[slot_word(&c, 2, 2)];
    let stamp = stamp_word.swap(0, Ordering::Relaxed);
    let mut out = buf(64);
    let n = c.read_faults(&mut out).unwrap();
    assert_eq!((n, out[0].cookie), (1, b));
    assert_eq!(c.stats().answered_broken, 1);
    c.raw_region()[slot_word(&c, 2, 2)].store(stamp, Ordering::Relaxed);
    let mut evs = vec![];
    assert_eq!(c.pop_events(&mut evs, 64).unwrap(), 0, "{evs:?}");
    assert!(evs.is_empty(), "{evs:?}");
    assert_delivered_once(&c, a, &[b]);
}

fn assert_delivered_once(c: &Consumer, a: u32, delivered: &[u32]) {
    assert!(
        !delivered.contains(&a),
        "group {a:#x} answered INVALID by the consumer and also handed out: {delivered:x?}, held {}",
        c.held_groups()
    );
}

fn unrecov() -> Unrecoverable {
    Unrecoverable {
        reason: FaultReason::Permission,
        flags: UnrecoverableFlags::ADDR_VALID | UnrecoverableFlags::PASID_VALID,
        pasid: 3,
        perm: Perm::WRITE,
        addr: 0xdead_0000,
        fetch_addr: 0,
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn mixed(iommu: bool, seed: u64) {
    const E: u32 = 8;
    let (mut p, mut c) = if iommu {
        let mut r = Request::best_for(
            &Offer::current(),
            RecordFormats::IOMMU_FAULT,
            Features::COOKIE_RESPONSE | Features::LOSS_RECORDS | Features::UNRECOVERABLE,
        )
        .unwrap();
        r.entries = E;
        channel(&Offer::current(), &r, ProducerConfig::default()).unwrap()
    } else {
        cookie_queue(E)
    };
    let mut rng = Rng(seed);
    let mut pushed: HashMap<u32, usize> = HashMap::new();
    let mut answered: HashMap<u32, u32> = HashMap::new();
    let mut answers = Vec::new();
    let mut evs = Vec::new();
    let mut grp = 0u32;
    for _step in 0..3000 {
        match rng.below(10) {
            0..=3 => {
                grp = (grp + 1) % 500;
                let n = 1 + rng.below(u64::from(E)) as usize;
                let r = group(grp, n);
                if let Ok(ck) = p.push_group(&TaggedGroup {
                    tag: u64::from(grp),
                    dev_id: 0,
                    requests: &r,
                }) {
                    pushed.insert(ck, n);
                }
            }
            4 if iommu => {
                let _ = p.push_unrecoverable(1, &unrecov());
            }
            5 => p.report_loss(1 + rng.below(3), LossReason::OverAllocation),
            _ => {
                let mut to_answer = Vec::new();
                match rng.below(3) {
                    0 => {
                        while let Some(ev) = c.pop_event() {
                            evs.push(ev);
                            if rng.below(3) == 0 {
                                break;
                            }
                        }
                    }
                    1 => {
                        c.pop_events(&mut evs, 1 + rng.below(12) as usize).unwrap();
                    }
                    _ => {
                        let mut out = buf(1 + rng.below(12) as usize);
                        match c.read_faults(&mut out) {
                            Ok(n) => {
                                for f in &out[..n] {
                                    if f.flags.contains(iopf_abi::iommufd::PgfaultFlags::LAST_PAGE)
                                    {
                                        to_answer.push(f.cookie);
                                    }
                                }
                            }
                            Err(QueueError::Inconsistent(_)) => {}
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                }
                for ev in evs.drain(..) {
                    if let Event::Fault(f) = ev {
                        if f.request.is_last() {
                            to_answer.push(f.cookie);
                        }
                    }
                }
                for ck in to_answer {
                    *answered.entry(ck).or_default() += 1;
                    let r = c.respond(&[IommufdResponse {
                        cookie: ck,
                        code: ResponseCode::Success,
                    }]);
                    assert_eq!(r.unwrap(), 1);
                }
                p.drain_responses(&mut answers);
            }
        }
        let s = c.stats();
        assert_eq!(
            (s.corrupt, s.answered_broken),
            (0, 0),
            "seed {seed}: {s:?} {:?}",
            c.last_refusal()
        );
    }
    // drain everything
    for _ in 0..20000 {
        let mut out = buf(64);
        let n = c.read_faults(&mut out).unwrap();
        for f in &out[..n] {
            if f.flags.contains(iopf_abi::iommufd::PgfaultFlags::LAST_PAGE) {
                *answered.entry(f.cookie).or_default() += 1;
                c.respond(&[IommufdResponse {
                    cookie: f.cookie,
                    code: ResponseCode::Success,
                }])
                .unwrap();
            }
        }
        p.drain_responses(&mut answers);
    }
    assert!(answered.values().all(|&v| v == 1));
    if p.pending_groups() != 0 {
        let mut o = buf(64);
        eprintln!(
            "read_faults -> {:?} refusal {:?}",
            c.read_faults(&mut o),
            c.last_refusal()
        );
        let mut e = Vec::new();
        c.pop_events(&mut e, 64).unwrap();
        for ev in &e {
            eprintln!("{ev:?}");
        }
    }
    assert_eq!(
        p.pending_groups(),
        0,
        "seed {seed}: held {} backlog {} free {} stats {:?} {:?} answered {} ready {:?}",
        c.held_groups(),
        p.backlog_entries(),
        p.free_slots(),
        c.stats(),
        p.stats(),
        answered.len(),
        c.ready()
    );
    let (s, ps) = (c.stats(), p.stats());
    assert_eq!(
        s.records + s.lost,
        s.records + ps.lost,
        "seed {seed}: {s:?} {ps:?}"
    );
    assert_eq!(s.records, ps.delivered, "seed {seed}: {s:?} {ps:?}");
    assert!(answers.iter().all(|a| a.code == ResponseCode::Success));
    let _ = pushed;
}

#[test]
fn mixed_readers_hwpt() {
    for seed in 1..40 {
        mixed(false, seed * 0x9e37_79b9);
    }
}

#[test]
fn mixed_readers_iommu_fault() {
    for seed in 1..40 {
        mixed(true, seed * 0x9e37_79b9 + 7);
    }
}

/// Regression: max_group 4, a buffer of the largest group (4): a hostile complete group of 6
/// (LAST on the last) got EINVAL for ever. It is answered broken at its fourth record and the
/// rest skipped.
#[test]
fn a_complete_group_past_the_agreed_largest_is_answered_broken() {
    let offer = Offer::current().with_max_group(4);
    let (mut p, mut c) = channel(&offer, &cookie_request(8), ProducerConfig::default()).unwrap();
    push(&mut p, 2, 4); // slots 0..4
    push(&mut p, 3, 2); // slots 4..6
    for (dst, src) in [(4, 0), (5, 3)] {
        for w in [1, 3, 4, 5, 6, 7] {
            let v = c.raw_region()[slot_word(&c, src, w)].load(Ordering::Relaxed);
            c.raw_region()[slot_word(&c, dst, w)].store(v, Ordering::Relaxed);
        }
    }
    let w = slot_word(&c, 3, 3);
    let v = c.raw_region()[w].load(Ordering::Relaxed);
    c.raw_region()[w].store(v & !(1 << 1), Ordering::Relaxed);
    let mut out = buf(p.agreement().largest_group() as usize);
    for _ in 0..100 {
        let r = c.read_faults(&mut out);
        if c.stats().answered_broken > 0 || matches!(r, Ok(n) if n > 0) {
            return;
        }
        assert!(matches!(r, Err(QueueError::Inconsistent(_))));
    }
    panic!(
        "wedged: EINVAL for ever on a group above max_group; {:?}",
        c.stats()
    );
}
