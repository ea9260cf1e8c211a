//! A full verdict ring (rejections the consumer has not taken yet) stops the producer judging:
//! it must neither spin (a wait returns for it again and again) nor strand the valid answers
//! behind it once the consumer takes its verdicts, which a consumer does before it sleeps.
//! Found by the issue-12 review: 0 of 10 valid answers accepted, and a pump loop at 87 % of a
//! core.

mod common;

use std::time::Duration;

use common::{cookie_queue, push_one};
use iopf_abi::{FaultConsumer, IommufdResponse, PgFault, ResponseCode};
use iopf_queue::{Answer, Consumer, Producer, Readiness, ResponseVerdict};

fn blank() -> PgFault {
    PgFault::from_bytes(&[0; 40]).expect("a zero record decodes")
}

/// 24 groups read; the core answered the first 14 itself (withdrawn); the consumer answers all
/// 24 at once (4 packed slots): 14 rejections for an 8-entry verdict ring. The producer judges
/// until the verdict ring is full.
fn blocked_on_verdicts() -> (Producer, Consumer, Vec<Answer>) {
    let (mut p, mut c) = cookie_queue(8);
    let mut cookies = Vec::new();
    let mut out = [blank(); 8];
    for round in 0..3u32 {
        for g in 0..8 {
            push_one(&mut p, round * 8 + g).expect("push");
        }
        let n = c.read_faults(&mut out).expect("read");
        assert_eq!(n, 8);
        cookies.extend(out[..n].iter().map(|f| f.cookie));
    }
    for &k in &cookies[..14] {
        assert!(p.withdraw(k));
    }
    let answers: Vec<_> = cookies
        .iter()
        .map(|&cookie| IommufdResponse {
            cookie,
            code: ResponseCode::Success,
        })
        .collect();
    assert_eq!(c.respond(&answers).expect("respond"), 24);
    let mut taken = Vec::new();
    while p.drain_responses(&mut taken) > 0 {}
    assert!(
        taken.len() < 10,
        "the verdict ring did not fill: {}",
        taken.len()
    );
    (p, c, taken)
}

#[test]
fn a_producer_blocked_on_verdict_room_sleeps_instead_of_spinning() {
    let (mut p, mut c, mut taken) = blocked_on_verdicts();
    assert!(
        p.responses_waiting(),
        "responses wait behind the full verdict ring"
    );
    assert!(
        !p.ready().contains(Readiness::RESPONSES),
        "nothing to do until the consumer takes verdicts"
    );
    assert!(
        !p.wait_responses(Some(Duration::from_millis(20)))
            .expect("wait"),
        "the wait returned for responses it cannot judge (a pump loop spins on that)"
    );
    // The consumer takes its verdicts: that rings the producer, which judges the rest.
    let mut verdicts: Vec<ResponseVerdict> = Vec::new();
    c.take_verdicts(&mut verdicts);
    assert!(
        p.wait_responses(Some(Duration::from_secs(60)))
            .expect("wait"),
        "taking verdicts did not wake the producer"
    );
    while p.drain_responses(&mut taken) > 0 {}
    c.take_verdicts(&mut verdicts);
    while p.drain_responses(&mut taken) > 0 {}
    assert_eq!(taken.len(), 10, "the valid answers are all accepted");
}

#[test]
fn a_consumer_takes_its_verdicts_before_it_sleeps() {
    let (mut p, mut c, mut taken) = blocked_on_verdicts();
    // A VMM that answered everything waits for faults: it takes the rejections first.
    for _ in 0..4 {
        let _ = c
            .wait_for(Readiness::FAULTS, Some(Duration::from_millis(1)))
            .expect("wait");
        while p.drain_responses(&mut taken) > 0 {}
    }
    let _ = c.arm(Readiness::FAULTS).expect("arm");
    while p.drain_responses(&mut taken) > 0 {}
    assert_eq!(
        taken.len(),
        10,
        "valid answers stranded behind uncollected rejections"
    );
}
