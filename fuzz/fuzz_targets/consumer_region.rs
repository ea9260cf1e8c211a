//! The consumer facing a hostile producer: the input is a program of producer-side word writes
//! (the producer's header words, the fault ring, the verdict ring) interleaved with legitimate
//! pushes, `read_faults` with any room, `pop_events`, responses by cookie (handed out or not, any
//! code), verdict collection and the producer's drains. Checked: nothing panics; errors are
//! values; a response is accepted only for a group handed out (by `read_faults`, or as a
//! LAST_PAGE record by `pop_events`) and not answered since, so no group handed out is answered
//! twice; FAILURE is accepted only where the agreement allows it, and no group is answered
//! FAILURE unless the consumer's caller sent it; every verdict names a response that was sent,
//! once; every group the producer delivered is answered exactly once by the end.
#![no_main]

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use iopf_abi::features::RecordFormats;
use iopf_abi::{
    FaultConsumer, Features, IommufdResponse, PageRequest, PageRequestFlags, Perm, PgFault,
    ResponseCode,
};
use iopf_queue::{
    channel, Answer, Event, Offer, ProducerConfig, QueueError, Request, TaggedGroup,
};
use libfuzzer_sys::fuzz_target;

use iopf_queue::layout::hdr;

/// Header words the producer writes (the consumer only reads them).
const PRODUCER_WORDS: [usize; 20] = [
    hdr::MAGIC,
    hdr::VERSION_RECORD,
    hdr::RESPONSES_SLOT,
    hdr::ENTRIES,
    hdr::FEATURES,
    hdr::RING_OFFS,
    hdr::VERDICT_OFF,
    hdr::SIZE,
    hdr::FAULT_HEAD,
    hdr::RESP_TAIL,
    hdr::JUDGED,
    hdr::VERDICT_HEAD,
    hdr::PRODUCER_SLEEPING,
    hdr::NEXT_SEQ,
    hdr::LOST,
    hdr::PRODUCER_FLAGS,
    hdr::LOST_BY_REASON,
    hdr::LOST_BY_REASON + 1,
    hdr::LOST_BY_REASON + 2,
    hdr::ROOM_WAIT,
];

fn request(kind: u8) -> Option<(Offer, Request)> {
    let cur = Offer::current();
    let mut r = match kind % 4 {
        0 => Request::v1(),
        1 => Request::best_for(&cur, RecordFormats::IOMMU_FAULT, Features::PRIV_DATA_ECHO)?,
        2 => Request::best_for(
            &cur,
            RecordFormats::HWPT_PGFAULT,
            Features::COOKIE_RESPONSE | Features::LOSS_RECORDS,
        )?,
        _ => Request::best_for(
            &cur,
            RecordFormats::HWPT_PGFAULT,
            Features::COOKIE_RESPONSE | Features::COOKIE_FAILURE,
        )
        .or_else(|| Request::best_for(&cur, RecordFormats::HWPT_PGFAULT, Features::COOKIE_RESPONSE))?,
    };
    r.entries = 16;
    Some((cur, r))
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, prog)) = data.split_first() else {
        return;
    };
    let Some((offer, req)) = request(kind) else {
        return;
    };
    let config = ProducerConfig {
        max_pending: 64,
        max_per_wake: 8,
        max_backlog: 64,
    };
    let Ok((mut p, mut c)) = channel(&offer, &req, config) else {
        return;
    };
    let agreement = *c.agreement();
    let failure_ok =
        !agreement.cookie_responses() || agreement.features.contains(Features::COOKIE_FAILURE);
    // The region's layout (byte offsets in the header), read before anything is scribbled.
    let (fault_off, resp_off, verdict_off, len) = {
        let w = c.raw_region();
        let offs = w[hdr::RING_OFFS].load(Ordering::Relaxed);
        (
            (offs & 0xffff_ffff) as usize / 8,
            (offs >> 32) as usize / 8,
            w[hdr::VERDICT_OFF].load(Ordering::Relaxed) as usize / 8,
            w.len(),
        )
    };
    assert!(fault_off < resp_off && resp_off < verdict_off && verdict_off < len);

    let mut delivered = HashSet::new();
    let mut answered = HashSet::new();
    let mut answers: Vec<Answer> = Vec::new();
    let mut handed: HashSet<u32> = HashSet::new();
    let mut recent: Vec<u32> = Vec::new();
    let mut verdict_ids = HashSet::new();
    let mut verdicts = Vec::new();
    let mut sent_failure = false;
    let mut tag = 0u64;
    let mut out = [PgFault::from_bytes(&[0; 40]).expect("zeroes decode"); 32];
    let mut events = Vec::new();

    let settle = |answers: &mut Vec<Answer>, answered: &mut HashSet<u64>, sent_failure: bool| {
        for a in answers.drain(..) {
            assert!(answered.insert(a.tag), "group {} answered twice", a.tag);
            if a.code == ResponseCode::Failure {
                assert!(sent_failure, "FAILURE the consumer's caller never sent: {a:?}");
            }
        }
    };
    let hand = |handed: &mut HashSet<u32>, recent: &mut Vec<u32>, cookie: u32| {
        // A hostile producer may repeat a cookie while it is held: the group is replaced.
        handed.insert(cookie);
        recent.push(cookie);
        if recent.len() > 64 {
            recent.drain(..32);
        }
    };

    for chunk in prog.chunks(11) {
        let op = chunk[0];
        let arg = |i: usize| chunk.get(i).copied().unwrap_or(0);
        match op % 8 {
            0 | 1 => {
                let n = 1 + usize::from(op >> 4) % 3;
                let reqs: Vec<PageRequest> = (0..n)
                    .map(|i| PageRequest {
                        flags: (if i + 1 == n {
                            PageRequestFlags::LAST_PAGE
                        } else {
                            PageRequestFlags::empty()
                        }) | PageRequestFlags::from_bits_truncate(u32::from(arg(1) & 0xd)),
                        pasid: u32::from(arg(2) & 3),
                        grpid: (tag % 512) as u32,
                        perm: Perm::WRITE,
                        addr: tag << 12,
                        private_data: [tag, 1],
                    })
                    .collect();
                match p.push_group(&TaggedGroup {
                    tag,
                    dev_id: 0,
                    requests: &reqs,
                }) {
                    Ok(_) => {
                        delivered.insert(tag);
                    }
                    Err(QueueError::Lost(_)) => {}
                    Err(e) => panic!("{e}"),
                }
                tag += 1;
            }
            2 => {
                let room = usize::from(arg(1)) % (out.len() + 1);
                if let Ok(n) = c.read_faults(&mut out[..room]) {
                    assert!(n <= room);
                    for f in out[..n].iter().filter(|f| f.is_last()) {
                        hand(&mut handed, &mut recent, f.cookie);
                    }
                }
            }
            3 => {
                events.clear();
                let max = usize::from(arg(1)) % 40;
                if let Ok(n) = c.pop_events(&mut events, max) {
                    assert!(n <= max && n == events.len());
                    for e in &events {
                        if let Event::Fault(f) = e {
                            if f.request.is_last() {
                                hand(&mut handed, &mut recent, f.cookie);
                            }
                        }
                    }
                }
            }
            4 => {
                // Responses by cookie: handed out, recently answered, or raw; any code.
                let count = 1 + usize::from(arg(1) & 3);
                let rs: Vec<IommufdResponse> = (0..count)
                    .map(|i| {
                        let pick = arg(2 + i);
                        let cookie = if pick & 0x80 != 0 || recent.is_empty() {
                            u32::from(pick & 0x7f)
                        } else {
                            recent[usize::from(pick) % recent.len()]
                        };
                        let code = match arg(6) >> (2 * i) & 3 {
                            0 | 3 => ResponseCode::Success,
                            1 => ResponseCode::Invalid,
                            _ => ResponseCode::Failure,
                        };
                        IommufdResponse { cookie, code }
                    })
                    .collect();
                if let Ok(n) = c.respond(&rs) {
                    assert!(n <= rs.len());
                    for r in &rs[..n] {
                        assert!(
                            handed.remove(&r.cookie),
                            "response accepted for cookie {} not held (answered twice?)",
                            r.cookie
                        );
                        if r.code == ResponseCode::Failure {
                            assert!(failure_ok, "FAILURE accepted where the agreement forbids it");
                            sent_failure = true;
                        }
                    }
                }
            }
            5 => {
                // The hostile producer writes one of its words.
                let mut v = [0u8; 8];
                for (i, b) in v.iter_mut().enumerate() {
                    *b = arg(3 + i);
                }
                let v = u64::from_le_bytes(v);
                let at = usize::from(u16::from_le_bytes([arg(1), arg(2)]));
                let i = match op >> 6 {
                    0 => PRODUCER_WORDS[at % PRODUCER_WORDS.len()],
                    1 | 2 => fault_off + at % (resp_off - fault_off),
                    _ => verdict_off + at % (len - verdict_off),
                };
                c.raw_region()[i].store(v, Ordering::Relaxed);
            }
            6 => {
                let before = verdicts.len();
                c.take_verdicts(&mut verdicts);
                for v in &verdicts[before..] {
                    assert!(v.id < c.responses_sent(), "a verdict on a response never sent: {v:?}");
                    assert!(verdict_ids.insert(v.id), "two verdicts on response {}", v.id);
                }
                if verdicts.len() > 256 {
                    verdicts.clear();
                }
            }
            _ => {
                p.drain_responses(&mut answers);
                settle(&mut answers, &mut answered, sent_failure);
            }
        }
    }
    p.drain_responses(&mut answers);
    settle(&mut answers, &mut answered, sent_failure);
    drop(c);
    p.close(&mut answers);
    settle(&mut answers, &mut answered, sent_failure);
    assert_eq!(answered, delivered, "every delivered group answered exactly once");
});
