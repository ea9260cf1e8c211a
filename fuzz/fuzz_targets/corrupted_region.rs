//! The producer facing a corrupted region: the input is a program of consumer-side word writes
//! anywhere in the shared region, interleaved with pushes, legitimate reads and responses, and
//! response drains. The producer must never panic, and every group it delivered must be answered
//! exactly once (by the consumer or, at close, INVALID).
#![no_main]

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use iopf_abi::features::RecordFormats;
use iopf_abi::{
    FaultConsumer, Features, IommufdResponse, PageRequest, PageRequestFlags, Perm, PgFault,
    ResponseCode,
};
use iopf_queue::{channel, TaggedGroup, Offer, ProducerConfig, QueueError, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cur = Offer::current();
    let Some(mut req) = Request::best_for(
        &cur,
        RecordFormats::HWPT_PGFAULT,
        Features::COOKIE_RESPONSE | Features::LOSS_RECORDS,
    ) else {
        return;
    };
    req.entries = 16;
    let config = ProducerConfig {
        max_pending: 64,
        max_per_wake: 8,
        max_backlog: 64,
    };
    let Ok((mut p, mut c)) = channel(&cur, &req, config) else {
        return;
    };
    let mut outstanding = HashSet::new();
    let mut answers = Vec::new();
    let mut tag = 0u64;
    let mut out = [PgFault::from_bytes(&[0; 40]).unwrap_or_else(|_| unreachable!()); 32];
    let settle = |answers: &mut Vec<iopf_queue::Answer>, outstanding: &mut HashSet<u64>| {
        for a in answers.drain(..) {
            assert!(
                outstanding.remove(&a.tag),
                "answered twice or never delivered: {a:?}"
            );
        }
    };
    for chunk in data.chunks(10) {
        let op = chunk[0];
        match op % 5 {
            0 | 1 => {
                let n = 1 + usize::from(op >> 4) % 3;
                let reqs: Vec<PageRequest> = (0..n)
                    .map(|i| PageRequest {
                        flags: if i + 1 == n {
                            PageRequestFlags::LAST_PAGE
                        } else {
                            PageRequestFlags::empty()
                        },
                        pasid: 0,
                        grpid: (tag % 512) as u32,
                        perm: Perm::WRITE,
                        addr: tag << 12,
                        private_data: [0, 0],
                    })
                    .collect();
                match p.push_group(&TaggedGroup {
                    tag,
                    dev_id: 0,
                    requests: &reqs,
                }) {
                    Ok(_) => {
                        outstanding.insert(tag);
                    }
                    Err(QueueError::Lost(_)) => {}
                    Err(e) => panic!("{e}"),
                }
                tag += 1;
            }
            2 => {
                if let Ok(n) = c.read_faults(&mut out) {
                    let rs: Vec<IommufdResponse> = out[..n]
                        .iter()
                        .filter(|f| f.is_last())
                        .map(|f| IommufdResponse {
                            cookie: f.cookie,
                            code: ResponseCode::Success,
                        })
                        .collect();
                    let _ = c.respond(&rs);
                }
            }
            3 => {
                // Write a word anywhere (the consumer's closed flag included).
                if chunk.len() >= 10 {
                    let words = c.raw_region();
                    let i = usize::from(u16::from_le_bytes([chunk[1], chunk[2]])) % words.len();
                    let mut v = [0u8; 8];
                    v.copy_from_slice(&chunk[2..10]);
                    words[i].store(u64::from_le_bytes(v), Ordering::Relaxed);
                }
            }
            _ => {
                p.drain_responses(&mut answers);
                settle(&mut answers, &mut outstanding);
            }
        }
    }
    drop(c);
    p.close(&mut answers);
    settle(&mut answers, &mut outstanding);
    assert!(
        outstanding.is_empty(),
        "{} groups never answered",
        outstanding.len()
    );
});
