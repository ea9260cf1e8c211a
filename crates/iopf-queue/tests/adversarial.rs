//! An adversarial review of the queue against the design's invariants: groups the fault core
//! legitimately forms, a consumer that writes wrapping indices or stamps a response slot for a
//! lap of the ring that has not come, never drains its verdicts, sleeps
//! with groups held, answers another queue's cookies, or replays a cookie after the producer's
//! cookie space came round. Each test fails if a group is answered twice, not at all, or by a
//! response that was not meant for it.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

mod common;

use std::sync::atomic::Ordering;

use common::{caps, cookie_queue, cookie_request, push_one, req, slot_word, RING_OFFS};
use iopf_abi::{Fault, FaultConsumer, IommufdResponse, PgFault, ResponseCode};
use iopf_core::testing::RecordingSink;
use iopf_core::{AgeLimit, FaultCore, Reported};
use iopf_queue::{
    channel, AnsweredBy, CoreLink, Offer, ProducerConfig, RawFormat, RejectReason, ResponseVerdict,
    TaggedGroup,
};

/// Header words the consumer owns (see `layout::hdr`).
const FAULT_TAIL: usize = 16;
const VERDICT_TAIL: usize = 48;

fn pgfaults() -> Vec<PgFault> {
    vec![PgFault::from_bytes(&[0; 40]).unwrap(); 64]
}

/// Group 2 of three requests (pages 1, 2, 3; LAST_PAGE on the third), pushed; its cookie.
fn three_request_group(p: &mut iopf_queue::Producer) -> u32 {
    p.push_group(&TaggedGroup {
        tag: 2,
        dev_id: 0,
        requests: &[
            req(2, None, false, 0x1000),
            req(2, None, false, 0x2000),
            req(2, None, true, 0x3000),
        ],
    })
    .unwrap()
}

fn cookie_bytes(cookie: u32, code: ResponseCode) -> [u8; 8] {
    let one: u64 = zerocopy::transmute!(IommufdResponse { cookie, code }.encode());
    one.to_ne_bytes()
}

#[test]
fn a_group_whose_partials_carry_another_pasid_reaches_the_consumer() {
    // Linux's iopf_group_alloc() gathers held partials by PRG index whatever their PASID, and
    // the core does too; the queue must carry such a group, or at least announce it lost.
    let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    let dev = core.register(caps(8)).unwrap();
    let (p, mut c) = channel(
        &Offer::current(),
        &cookie_request(8),
        ProducerConfig::default(),
    )
    .unwrap();
    let mut link = CoreLink::attach(&mut core, dev, None, p).unwrap();
    assert_eq!(
        core.report(dev, &Fault::PageRequest(req(4, Some(1), false, 0x1000)), 0)
            .unwrap(),
        Reported::Held
    );
    let r = core
        .report(dev, &Fault::PageRequest(req(4, Some(2), true, 0x2000)), 1)
        .unwrap();
    assert!(
        matches!(r, Reported::Delivered { .. }),
        "the queue refused a group the core formed: {r:?}"
    );
    let mut out = pgfaults();
    assert_eq!(c.read_faults(&mut out).unwrap(), 2);
    assert_eq!((out[0].pasid, out[1].pasid), (1, 2));
    c.respond(&[IommufdResponse {
        cookie: out[1].cookie,
        code: ResponseCode::Success,
    }])
    .unwrap();
    assert_eq!(link.pump(&mut core).answered, 1);
    let sent = core.sink_mut().take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.code, ResponseCode::Success);
}

#[test]
fn indices_wrapping_u64_are_ignored_and_every_group_still_answered_once() {
    let (mut p, c) = cookie_queue(8);
    for g in 0..4 {
        push_one(&mut p, g).unwrap();
    }
    let region = c.raw_region();
    let resp_slot0 = (region[RING_OFFS].load(Ordering::Relaxed) >> 32) as usize / 8;
    // Response slot 0 stamped for later laps of the ring (index 8, 16, ...): not index 0's.
    let laps = [8u64, 16, (1 << 32) - 8, u64::MAX - 7];
    for (v, lap) in [u64::MAX, u64::MAX - 3, 1 << 63, 9].into_iter().zip(laps) {
        region[FAULT_TAIL].store(v, Ordering::Release);
        region[resp_slot0].store(lap.wrapping_add(1) << 32 | 8, Ordering::Release);
        region[VERDICT_TAIL].store(v, Ordering::Release);
        let mut answers = Vec::new();
        assert_eq!(p.drain_responses(&mut answers), 0, "tail {v:#x}");
        assert!(answers.is_empty());
        // A lying tail must not make room that is not there: 4 slots are still in use.
        assert!(p.free_slots() <= 4, "tail {v:#x}");
    }
    assert!(p.stats().violations >= 4);
    let mut answers = Vec::new();
    assert_eq!(p.close(&mut answers), 4);
    let mut tags: Vec<u64> = answers.iter().map(|a| a.tag).collect();
    tags.sort_unstable();
    assert_eq!(tags, vec![0, 1, 2, 3]);
    assert!(answers.iter().all(|a| a.by == AnsweredBy::ConsumerGone));
}

#[test]
fn a_verdict_ring_never_drained_stalls_judging_but_loses_no_group() {
    let (mut p, mut c) = cookie_queue(4);
    let cookies: Vec<u32> = (0..4).map(|g| push_one(&mut p, g).unwrap()).collect();
    // Four rejections fill the verdict ring.
    for bogus in 0..4u32 {
        let bytes = cookie_bytes(0xdead_0000 | bogus, ResponseCode::Success);
        c.push_raw_response(RawFormat::Cookie, &bytes)
            .unwrap()
            .unwrap();
    }
    let mut answers = Vec::new();
    assert_eq!(p.drain_responses(&mut answers), 4);
    assert!(answers.is_empty());
    // The consumer answers every group properly but pretends it never read a verdict.
    for &cookie in &cookies {
        let bytes = cookie_bytes(cookie, ResponseCode::Success);
        c.push_raw_response(RawFormat::Cookie, &bytes)
            .unwrap()
            .unwrap();
        c.raw_region()[VERDICT_TAIL].store(0, Ordering::Release);
    }
    assert_eq!(
        p.drain_responses(&mut answers),
        0,
        "a response was judged with no room for its verdict"
    );
    assert_eq!(p.pending_groups(), 4);
    // Once the consumer drains its verdicts, judging resumes and each group is answered once.
    let mut v: Vec<ResponseVerdict> = Vec::new();
    c.raw_region()[VERDICT_TAIL].store(4, Ordering::Release);
    while p.drain_responses(&mut answers) > 0 {}
    c.take_verdicts(&mut v);
    assert_eq!(answers.len(), 4);
    assert!(answers.iter().all(|a| a.by == AnsweredBy::Consumer));
    assert_eq!(p.close(&mut answers), 0);
}

#[test]
fn a_consumer_that_sleeps_forever_is_overtaken_by_the_age_limit_and_its_late_answer_refused() {
    let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    let dev = core.register(caps(8)).unwrap();
    core.set_age_limit(
        dev,
        Some(AgeLimit {
            limit: 1_000,
            answer: Some(ResponseCode::Invalid),
        }),
    )
    .unwrap();
    let (p, mut c) = channel(
        &Offer::current(),
        &cookie_request(8),
        ProducerConfig::default(),
    )
    .unwrap();
    let mut link = CoreLink::attach(&mut core, dev, None, p).unwrap();
    core.report(dev, &Fault::PageRequest(req(3, None, true, 0)), 0)
        .unwrap();
    let mut out = pgfaults();
    assert_eq!(c.read_faults(&mut out).unwrap(), 1);
    let stale = out[0].cookie;
    // The consumer sleeps; the age limit answers the group.
    assert_eq!(core.expire(5_000), 1);
    assert_eq!(link.with_producer(|p| p.pending_groups()), 0);
    // The device reuses PRG index 3 for a new group, which gets a new queue cookie.
    core.report(dev, &Fault::PageRequest(req(3, None, true, 0)), 6_000)
        .unwrap();
    assert_eq!(c.read_faults(&mut out).unwrap(), 1);
    assert_ne!(out[0].cookie, stale);
    // The consumer wakes and answers the old group, bypassing its own bookkeeping.
    c.push_raw_response(
        RawFormat::Cookie,
        &cookie_bytes(stale, ResponseCode::Success),
    )
    .unwrap()
    .unwrap();
    let pumped = link.pump(&mut core);
    assert_eq!((pumped.answered, pumped.refused_by_core), (0, 0));
    let sent = core.sink_mut().take();
    assert_eq!(
        sent.len(),
        1,
        "only the age limit's answer reached the device"
    );
    assert_eq!(sent[0].1.code, ResponseCode::Invalid);
    assert_eq!(core.outstanding(dev).unwrap(), 1);
}

#[test]
fn a_consumer_cannot_answer_another_queues_group() {
    let mut core: FaultCore<RecordingSink> = FaultCore::new(RecordingSink::default());
    let a = core.register(caps(8)).unwrap();
    let b = core.register(caps(8)).unwrap();
    let (pa, mut ca) = channel(&Offer::current(), &cookie_request(8), Default::default()).unwrap();
    let (pb, mut cb) = channel(&Offer::current(), &cookie_request(8), Default::default()).unwrap();
    let mut la = CoreLink::attach(&mut core, a, None, pa).unwrap();
    let mut lb = CoreLink::attach(&mut core, b, None, pb).unwrap();
    // B has two groups, A none: B's second cookie names no group of A's queue.
    for (i, g) in [1u32, 2].into_iter().enumerate() {
        core.report(b, &Fault::PageRequest(req(g, None, true, 0)), i as u64)
            .unwrap();
    }
    let mut out = pgfaults();
    assert_eq!(cb.read_faults(&mut out).unwrap(), 2);
    let theirs = out[1].cookie;
    ca.push_raw_response(
        RawFormat::Cookie,
        &cookie_bytes(theirs, ResponseCode::Success),
    )
    .unwrap()
    .unwrap();
    assert_eq!(la.pump(&mut core).answered, 0);
    let mut v = Vec::new();
    ca.take_verdicts(&mut v);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].outcome.unwrap_err().reason, RejectReason::UnknownGroup);
    assert!(core.sink().sent.is_empty());
    assert_eq!(core.outstanding(b).unwrap(), 2);
    // B answers its own, once each.
    let rs: Vec<IommufdResponse> = out[..2]
        .iter()
        .map(|f| IommufdResponse {
            cookie: f.cookie,
            code: ResponseCode::Success,
        })
        .collect();
    cb.respond(&rs).unwrap();
    assert_eq!(lb.pump(&mut core).answered, 2);
    assert_eq!(core.sink_mut().take().len(), 2);
}

#[test]
fn a_cookie_replayed_after_the_generations_came_round_does_not_answer_a_new_group() {
    let (mut p, mut c) = channel(
        &Offer::current(),
        &cookie_request(8),
        ProducerConfig::default(),
    )
    .unwrap();
    let mut answers = Vec::new();
    let first = p
        .push_group(&TaggedGroup {
            tag: 0,
            dev_id: 0,
            requests: &[req(0, None, true, 0)],
        })
        .unwrap();
    let stale = cookie_bytes(first, ResponseCode::Success);
    let mut cookie = first;
    let mut tag = 0u64;
    // One group at a time, answered, for as many rounds as a 16-bit generation has values.
    for _ in 0..u16::MAX {
        c.push_raw_response(
            RawFormat::Cookie,
            &cookie_bytes(cookie, ResponseCode::Success),
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.drain_responses(&mut answers), 1);
        assert_eq!(answers.pop().unwrap().tag, tag);
        tag += 1;
        cookie = p
            .push_group(&TaggedGroup {
                tag,
                dev_id: 0,
                requests: &[req(0, None, true, 0)],
            })
            .unwrap();
        let mut drop_records = Vec::new();
        c.pop_events(&mut drop_records, 8).unwrap();
    }
    // The very first response, replayed now, answers nothing.
    c.push_raw_response(RawFormat::Cookie, &stale)
        .unwrap()
        .unwrap();
    p.drain_responses(&mut answers);
    assert!(
        answers.is_empty(),
        "a replayed cookie answered group {} (cookie {cookie:#x})",
        tag
    );
    assert_eq!(p.pending_groups(), 1);
}

mod handshake {
    //! A socket peer that sends garbage, oversized or over-long requests, unknown bits, or
    //! descriptors during the handshake: refused with a specific error, told why, and the
    //! listener serves the next consumer.

    use std::io::IoSlice;
    use std::mem::MaybeUninit;
    use std::os::fd::{AsFd, OwnedFd};

    use iopf_abi::features::{RecordFormats, ResponseFormats};
    use iopf_abi::Features;
    use iopf_queue::{connect, Listener, QueueError, ServeConfig};
    use rustix::net::{
        AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
        SocketType,
    };

    fn request(size: u32, features: u64, tail: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        for w in [
            size,
            2, // KIND_REQUEST
            2, // ABI version 2
            RecordFormats::HWPT_PGFAULT.bits(),
            ResponseFormats::COOKIE.bits(),
            0,
        ] {
            m.extend_from_slice(&w.to_ne_bytes());
        }
        m.extend_from_slice(&features.to_ne_bytes());
        m.extend_from_slice(tail);
        m
    }

    fn peer(path: &std::path::Path, msg: &[u8], fds: &[OwnedFd]) -> OwnedFd {
        let fd = rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
        rustix::net::connect(&fd, &SocketAddrUnix::new(path).unwrap()).unwrap();
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(8))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !borrowed.is_empty() {
            assert!(control.push(SendAncillaryMessage::ScmRights(&borrowed)));
        }
        rustix::net::sendmsg(&fd, &[IoSlice::new(msg)], &mut control, SendFlags::empty()).unwrap();
        fd
    }

    /// The kind and errno of the refusal the peer received after the offer.
    fn refusal(fd: &OwnedFd) -> (u32, u32) {
        let mut buf = [0u8; 512];
        let n = rustix::net::recv(fd, &mut buf, rustix::net::RecvFlags::empty())
            .unwrap()
            .0;
        assert_eq!(
            u32::from_ne_bytes(buf[4..8].try_into().unwrap()),
            1,
            "offer"
        );
        assert!(n >= 32);
        let n = rustix::net::recv(fd, &mut buf, rustix::net::RecvFlags::empty())
            .unwrap()
            .0;
        assert!(n >= 16);
        (
            u32::from_ne_bytes(buf[4..8].try_into().unwrap()),
            u32::from_ne_bytes(buf[8..12].try_into().unwrap()),
        )
    }

    fn some_fds(n: usize) -> Vec<OwnedFd> {
        (0..n)
            .map(|_| {
                rustix::fs::open(
                    "/dev/null",
                    rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn garbage_sizes_bits_and_descriptors_are_refused_and_the_listener_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sock");
        let listener = Listener::bind(&path, ServeConfig::default()).unwrap();
        let cookie = Features::COOKIE_RESPONSE.bits();
        let cases: Vec<(&str, Vec<u8>, usize, i32)> = vec![
            ("three bytes", vec![2, 0, 0], 0, libc::EPROTO),
            ("argsz 0", request(0, cookie, &[]), 0, libc::EINVAL),
            ("argsz 31", request(31, cookie, &[]), 0, libc::EINVAL),
            (
                "argsz past the message",
                request(600, cookie, &[]),
                0,
                libc::EINVAL,
            ),
            (
                "argsz u32::MAX",
                request(u32::MAX, cookie, &[]),
                0,
                libc::EINVAL,
            ),
            (
                "non-zero tail",
                request(40, cookie, &[0, 0, 0, 1, 0, 0, 0, 0]),
                0,
                libc::E2BIG,
            ),
            (
                "unknown feature bit",
                request(32, cookie | 1 << 40, &[]),
                0,
                0,
            ),
            (
                "descriptors with the request",
                request(32, cookie, &[]),
                3,
                libc::EPROTO,
            ),
            (
                "more descriptors than room",
                request(32, cookie, &[]),
                6,
                libc::EPROTO,
            ),
        ];
        for (what, msg, nfds, errno) in cases {
            let fds = some_fds(nfds);
            let fd = peer(&path, &msg, &fds);
            drop(fds);
            let e = listener.accept().unwrap_err();
            if errno != 0 {
                assert_eq!(e.errno(), errno, "{what}: {e}");
            }
            assert!(!matches!(e, QueueError::Os { .. }), "{what}: {e}");
            let (kind, sent_errno) = refusal(&fd);
            assert_eq!(kind, 4, "{what}: a refusal follows the offer");
            assert_eq!(sent_errno as i32, e.errno(), "{what}");
        }
        // A newer consumer's longer request with a zero tail is accepted.
        let fd = peer(&path, &request(40, cookie, &[0; 8]), &[]);
        listener.accept().unwrap();
        drop(fd);
        // And an ordinary consumer is still served.
        let p2 = path.clone();
        let t = std::thread::spawn(move || {
            connect(&p2, |o| {
                iopf_queue::Request::best_for(o, RecordFormats::HWPT_PGFAULT, Features::empty())
                    .unwrap()
            })
            .map(|_| ())
        });
        listener.accept().unwrap();
        t.join().unwrap().unwrap();
    }
}

/// A group one of whose records cannot be read (a slot scribbled over) is never stranded: the
/// consumer does not hand the truncated group out, answers it INVALID itself, says so in its
/// counters, skips the group's remaining records, and the groups around it are read as usual.
#[test]
fn a_group_with_an_unreadable_record_is_answered_by_the_consumer_not_stranded() {
    let (mut p, mut c) = cookie_queue(16);
    push_one(&mut p, 1).unwrap();
    let broken = three_request_group(&mut p);
    push_one(&mut p, 3).unwrap();
    // The group's second record (ring slot 2): an unknown slot kind in its header, whatever
    // the ring's base.
    let base = c.raw_region()[RING_OFFS].load(Ordering::Relaxed) & 0xffff_ffff;
    let word = (base / 8) as usize + 2 * 8 + 1;
    c.raw_region()[word].store(0xdead_0000_0000_0007, Ordering::Relaxed);
    let mut out = pgfaults();
    let n = c.read_faults(&mut out).unwrap();
    let last: Vec<u32> = out[..n]
        .iter()
        .filter(|f| f.is_last())
        .map(|f| f.grpid)
        .collect();
    assert_eq!(last, vec![1, 3], "the broken group is not handed out");
    let s = c.stats();
    assert_eq!(
        (s.corrupt, s.answered_broken, s.broken_unanswered),
        (1, 1, 0)
    );
    assert_eq!(c.held_groups(), 2);
    let mut answers = Vec::new();
    p.drain_responses(&mut answers);
    assert_eq!(answers.len(), 1);
    assert_eq!(
        (answers[0].cookie, answers[0].code, answers[0].by),
        (broken, ResponseCode::Invalid, AnsweredBy::Consumer)
    );
    assert_eq!(p.pending_groups(), 2);
}

/// A broken group found while the consumer's response ring is full waits for room and is
/// answered INVALID as soon as there is some, at the consumer's next read or response (it used
/// to be left to the queue's close: stranded while the queue lived).
#[test]
fn a_broken_group_found_with_the_response_ring_full_is_answered_once_room_frees() {
    let (mut p, mut c) = cookie_queue(16);
    let mut out = pgfaults();
    // Sixteen groups read and answered one response slot each: the response ring is full.
    for g in 0..16 {
        push_one(&mut p, 100 + g).unwrap();
    }
    assert_eq!(c.read_faults(&mut out).unwrap(), 16);
    for f in &out[..16] {
        let r = IommufdResponse {
            cookie: f.cookie,
            code: ResponseCode::Success,
        };
        assert_eq!(c.respond(&[r]).unwrap(), 1);
    }
    // Ring slots 16..=18 (slots 0..=2 of the ring): a group whose second record is unreadable.
    let broken = three_request_group(&mut p);
    let base = c.raw_region()[RING_OFFS].load(Ordering::Relaxed) & 0xffff_ffff;
    let word = (base / 8) as usize + 8 + 1;
    c.raw_region()[word].store(0xdead_0000_0000_0007, Ordering::Relaxed);
    assert_eq!(c.read_faults(&mut out).unwrap(), 0);
    let s = c.stats();
    assert_eq!(
        (s.corrupt, s.answered_broken, s.broken_unanswered),
        (1, 1, 0)
    );
    let mut answers = Vec::new();
    p.drain_responses(&mut answers);
    assert_eq!(answers.len(), 16);
    assert_eq!(
        p.pending_groups(),
        1,
        "the broken group waits for its answer"
    );
    // The consumer's next call finds room and answers it.
    assert_eq!(c.read_faults(&mut out).unwrap(), 0);
    answers.clear();
    p.drain_responses(&mut answers);
    assert_eq!(answers.len(), 1);
    assert_eq!(
        (answers[0].cookie, answers[0].code, answers[0].by),
        (broken, ResponseCode::Invalid, AnsweredBy::Consumer)
    );
    assert_eq!(p.pending_groups(), 0);
}

/// Regression (review of the chunked reader): a ring full of records none of which is
/// LAST_PAGE (a scribbled region, or a producer that lies) made `read_faults` return 0 for
/// ever while `ready()` said FAULTS: an event loop spun, nothing was counted, the queue was
/// wedged. Each record was of another group, so the groups were broken where the next began;
/// they are now answered INVALID one by one and counted corrupt.
#[test]
fn records_of_groups_that_never_end_are_answered_broken_not_a_wedge() {
    let (mut p, mut c) = cookie_queue(4);
    for g in 0..4 {
        push_one(&mut p, g).unwrap();
    }
    for s in 0..4 {
        // The hwpt record's first word holds its flags: clear LAST_PAGE (bit 1).
        let w = slot_word(&c, s, 3);
        let v = c.raw_region()[w].load(Ordering::Relaxed);
        c.raw_region()[w].store(v & !(1 << 1), Ordering::Relaxed);
    }
    let mut out = pgfaults();
    assert_eq!(c.read_faults(&mut out).unwrap(), 0);
    let s = c.stats();
    assert_eq!((s.corrupt, s.answered_broken, s.records), (3, 3, 3));
    let mut answers = Vec::new();
    p.drain_responses(&mut answers);
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert!(answers.iter().all(|a| a.code == ResponseCode::Invalid));
    // The fourth is still being gathered: room freed, a well-behaved producer would send its
    // LAST_PAGE next. None comes; the group stays the producer's, to its age limit.
    assert_eq!(p.pending_groups(), 1);
}

/// The same with one group's cookie on every slot: a whole ring of one group and no LAST_PAGE
/// can never end (no group is larger than the ring), so it is answered broken at once.
#[test]
fn a_whole_ring_of_one_group_without_last_page_is_answered_broken() {
    let (mut p, mut c) = cookie_queue(4);
    let cookie = p
        .push_group(&TaggedGroup {
            tag: 1,
            dev_id: 0,
            requests: &[
                req(1, None, false, 0x1000),
                req(1, None, false, 0x2000),
                req(1, None, false, 0x3000),
                req(1, None, true, 0x4000),
            ],
        })
        .unwrap();
    let w = slot_word(&c, 3, 3);
    let v = c.raw_region()[w].load(Ordering::Relaxed);
    c.raw_region()[w].store(v & !(1 << 1), Ordering::Relaxed);
    let mut out = pgfaults();
    assert_eq!(c.read_faults(&mut out).unwrap(), 0);
    let s = c.stats();
    assert_eq!((s.corrupt, s.answered_broken, s.records), (1, 1, 4));
    assert!(c.last_refusal().is_some());
    let mut answers = Vec::new();
    p.drain_responses(&mut answers);
    assert_eq!(
        answers
            .iter()
            .map(|a| (a.cookie, a.code))
            .collect::<Vec<_>>(),
        [(cookie, ResponseCode::Invalid)]
    );
    assert_eq!(p.pending_groups(), 0);
    assert_eq!(c.read_faults(&mut out).unwrap(), 0);
}

/// Regression (review of the chunked reader): `read_faults` dropped the records it had read of
/// a group broken by an unreadable record without counting them, so the next record counted
/// them lost; `pop_events` counted them read. Both readers now account the same.
#[test]
fn a_broken_group_is_accounted_the_same_by_both_readers() {
    let setup = || {
        let (mut p, c) = cookie_queue(16);
        push_one(&mut p, 1).unwrap(); // seq 0
        three_request_group(&mut p); // seqs 1, 2 (made unreadable), 3
        push_one(&mut p, 3).unwrap(); // seq 4
        let w = slot_word(&c, 2, 1);
        c.raw_region()[w].store(0xdead_0000_0000_0007, Ordering::Relaxed);
        (p, c)
    };
    let (_p1, mut a) = setup();
    let mut evs = Vec::new();
    a.pop_events(&mut evs, 64).unwrap();
    let (_p2, mut b) = setup();
    let mut out = pgfaults();
    b.read_faults(&mut out).unwrap();
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!((sa.records, sa.lost, sa.corrupt), (4, 1, 1));
    assert_eq!(
        (sb.records, sb.lost, sb.corrupt),
        (sa.records, sa.lost, sa.corrupt)
    );
}

/// Regression (review of the chunked reader): after `read_faults` answered a broken group
/// INVALID, the rest of it read by `pop_events` was handed out and held again, so the VMM
/// answered a group twice (the producer refused the second: AlreadyAnswered). Every reader now
/// skips the rest of a group already answered.
#[test]
fn the_rest_of_a_group_answered_broken_is_skipped_by_every_reader() {
    let (mut p, mut c) = cookie_queue(16);
    let cookie = three_request_group(&mut p);
    // Slot 1 unreadable; slot 2 not yet visible (its stamp hidden, then restored).
    c.raw_region()[slot_word(&c, 1, 1)].store(0xdead_0000_0000_0007, Ordering::Relaxed);
    let sw = slot_word(&c, 2, 2);
    let stamp = c.raw_region()[sw].load(Ordering::Relaxed);
    c.raw_region()[sw].store(stamp & !0xffff_ffff, Ordering::Relaxed);
    let mut out = pgfaults();
    assert_eq!(c.read_faults(&mut out).unwrap(), 0);
    assert_eq!(c.stats().answered_broken, 1);
    c.raw_region()[sw].store(stamp, Ordering::Release);
    let mut evs = Vec::new();
    assert_eq!(c.pop_events(&mut evs, 64).unwrap(), 0, "{evs:?}");
    assert_eq!(c.held_groups(), 0);
    assert_eq!(c.stats().records, 2, "the skipped record is counted read");
    assert!(c
        .respond(&[IommufdResponse {
            cookie,
            code: ResponseCode::Success,
        }])
        .is_err());
    let mut answers = Vec::new();
    p.drain_responses(&mut answers);
    assert_eq!(
        answers
            .iter()
            .map(|a| (a.cookie, a.code))
            .collect::<Vec<_>>(),
        [(cookie, ResponseCode::Invalid)]
    );
}
