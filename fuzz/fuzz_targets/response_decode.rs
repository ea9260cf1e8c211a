//! Response decoding: arbitrary bytes written as responses (any length up to a slot, either
//! format tag) on every kind of agreement. The producer must judge each one without panicking,
//! give every response exactly one verdict, and never answer a group twice.
#![no_main]

use iopf_abi::features::RecordFormats;
use iopf_abi::{Features, PageRequest, PageRequestFlags, Perm};
use iopf_queue::{channel, TaggedGroup, Offer, ProducerConfig, RawFormat, Request};
use libfuzzer_sys::fuzz_target;

fn request(kind: u8) -> (Offer, Request) {
    let cur = Offer::current();
    match kind % 4 {
        0 => (Offer::v1(), Request::v1()),
        1 => (cur, Request::v1()),
        2 => (
            cur,
            Request::best_for(&cur, RecordFormats::IOMMU_FAULT, Features::PRIV_DATA_ECHO)
                .unwrap_or(Request::v1()),
        ),
        _ => (
            cur,
            Request::best_for(&cur, RecordFormats::HWPT_PGFAULT, Features::COOKIE_RESPONSE)
                .unwrap_or(Request::v1()),
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, mut rest)) = data.split_first() else {
        return;
    };
    let (offer, req) = request(kind);
    let Ok((mut p, mut c)) = channel(&offer, &req, ProducerConfig::default()) else {
        return;
    };
    // A few pending groups the responses may name: grpid 0..8, PASID 1, private data.
    for g in 0..8u32 {
        let r = PageRequest {
            flags: PageRequestFlags::LAST_PAGE
                | PageRequestFlags::PASID_VALID
                | PageRequestFlags::PRIV_DATA
                | if g % 2 == 0 {
                    PageRequestFlags::RESPONSE_NEEDS_PASID
                } else {
                    PageRequestFlags::empty()
                },
            pasid: 1,
            grpid: g,
            perm: Perm::READ,
            addr: 0,
            private_data: [u64::from(g), 7],
        };
        let _ = p.push_group(&TaggedGroup {
            tag: u64::from(g),
            dev_id: 0,
            requests: &[r],
        });
    }
    let mut sent = 0u64;
    while let Some((&head, tail)) = rest.split_first() {
        let len = usize::from(head & 0x3f).min(56).min(tail.len());
        let format = if head & 0x40 != 0 {
            RawFormat::Cookie
        } else {
            RawFormat::Vfio
        };
        let (bytes, next) = tail.split_at(len);
        rest = next;
        match c.push_raw_response(format, bytes) {
            Ok(Some(_)) => sent += 1,
            _ => break,
        }
    }
    let mut answers = Vec::new();
    while p.drain_responses(&mut answers) > 0 {}
    let mut tags: Vec<u64> = answers.iter().map(|a| a.tag).collect();
    tags.sort_unstable();
    tags.dedup();
    assert_eq!(tags.len(), answers.len(), "a group answered twice");
    let mut verdicts = Vec::new();
    c.take_verdicts(&mut verdicts);
    assert_eq!(
        verdicts.len() as u64,
        sent,
        "every response gets one verdict"
    );
    assert_eq!(
        verdicts.iter().filter(|v| v.outcome.is_ok()).count(),
        answers.len()
    );
    let mut rest_answers = Vec::new();
    p.close(&mut rest_answers);
    assert_eq!(
        answers.len() + rest_answers.len(),
        8 - p.stats().lost as usize
    );
});
