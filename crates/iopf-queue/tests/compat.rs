//! The seed's compatibility cases: every pair of old/new producer and old/new consumer, with a
//! VT-d-like device whose page requests carry private data and need the PASID in responses.
//!
//! * old producer = ABI version 1 (`Offer::v1()`): like the ≤ 6.8 kernel, it knows only version 1
//!   responses and rejects the PRIV_DATA flag;
//! * old consumer = `Request::v1()`, which builds 28-byte version 1 `vfio_iommu_page_response`s by
//!   hand and never echoes private data;
//! * new consumer = reads the offer and asks for `PRIV_DATA_ECHO` if it is offered.
//!
//! In all four pairs the device gets its private data back; only new × new has the consumer echo
//! it (and checked), elsewhere the producer keeps and restores it.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

mod common;

use common::vtd_req;
use iopf_abi::features::RecordFormats;
use iopf_abi::response::{VFIO_PAGE_RESPONSE_V1_SIZE, VFIO_PAGE_RESPONSE_V2_SIZE};
use iopf_abi::{FaultConsumer, Features, IommufdResponse, PageResponse, ResponseCode};
use iopf_queue::{
    channel, Consumer, Event, Offer, Producer, ProducerConfig, QueueError, RawFormat, RejectReason,
    Request, TaggedGroup,
};

const DATA: [u64; 2] = [0xaaaa_0000_0000_0001, 0xbbbb_0000_0000_0002];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    Old,
    New,
}

fn open(producer: Side, consumer: Side) -> (Producer, Consumer) {
    let offer = match producer {
        Side::Old => Offer::v1(),
        Side::New => Offer::current(),
    };
    let request = match consumer {
        Side::Old => Request::v1(),
        Side::New => Request::best_for(
            &offer,
            RecordFormats::IOMMU_FAULT,
            Features::PRIV_DATA_ECHO | Features::LOSS_RECORDS,
        )
        .unwrap(),
    };
    channel(&offer, &request, ProducerConfig::default()).unwrap()
}

fn v1_bytes(pasid: Option<u32>, grpid: u32, code: ResponseCode) -> Vec<u8> {
    let r = PageResponse {
        version: 1,
        pasid,
        grpid,
        code,
        private_data: None,
    };
    let mut buf = [0u8; VFIO_PAGE_RESPONSE_V1_SIZE];
    let n = r.write_vfio(VFIO_PAGE_RESPONSE_V1_SIZE, &mut buf).unwrap();
    buf[..n].to_vec()
}

fn v2_bytes(pasid: Option<u32>, grpid: u32, data: Option<[u64; 2]>) -> Vec<u8> {
    let r = PageResponse {
        version: 2,
        pasid,
        grpid,
        code: ResponseCode::Success,
        private_data: data,
    };
    let mut buf = [0u8; VFIO_PAGE_RESPONSE_V2_SIZE];
    let n = r.write_vfio(VFIO_PAGE_RESPONSE_V2_SIZE, &mut buf).unwrap();
    buf[..n].to_vec()
}

fn reasons(c: &mut Consumer) -> Vec<Option<RejectReason>> {
    let mut v = Vec::new();
    c.take_verdicts(&mut v);
    v.iter()
        .map(|v| v.outcome.err().map(|r| r.reason))
        .collect()
}

#[test]
fn every_old_new_pair_answers_the_device_with_its_private_data() {
    for producer in [Side::Old, Side::New] {
        for consumer in [Side::Old, Side::New] {
            let (mut p, mut c) = open(producer, consumer);
            let echo = producer == Side::New && consumer == Side::New;
            assert_eq!(
                c.agreement().echoes_private_data(),
                echo,
                "{producer:?}/{consumer:?}"
            );
            let cookie = p
                .push_group(&TaggedGroup {
                    tag: 77,
                    dev_id: 1,
                    requests: &[vtd_req(12, 5, DATA)],
                })
                .unwrap();
            let mut evs = Vec::new();
            c.pop_events(&mut evs, 8).unwrap();
            let Event::Fault(f) = evs[0] else {
                panic!("expected a fault")
            };
            assert_eq!(f.cookie, cookie);
            // The private data reaches the consumer only if it agreed to echo it.
            assert_eq!(
                f.request
                    .flags
                    .contains(iopf_abi::PageRequestFlags::PRIV_DATA),
                echo,
                "{producer:?}/{consumer:?}"
            );
            assert_eq!(f.request.private_data, if echo { DATA } else { [0, 0] });
            match consumer {
                Side::Old => {
                    c.push_raw_response(
                        RawFormat::Vfio,
                        &v1_bytes(Some(5), 12, ResponseCode::Success),
                    )
                    .unwrap()
                    .unwrap();
                }
                Side::New => {
                    assert_eq!(
                        c.respond(&[IommufdResponse {
                            cookie,
                            code: ResponseCode::Success
                        }])
                        .unwrap(),
                        1
                    );
                }
            }
            let mut answers = Vec::new();
            p.drain_responses(&mut answers);
            assert_eq!(reasons(&mut c), vec![None], "{producer:?}/{consumer:?}");
            assert_eq!(answers.len(), 1);
            let a = answers[0];
            assert_eq!(
                (a.tag, a.pasid, a.grpid, a.code),
                (77, Some(5), 12, ResponseCode::Success)
            );
            assert_eq!(a.private_data, Some(DATA), "{producer:?}/{consumer:?}");
        }
    }
}

#[test]
fn a_new_consumer_on_an_old_producer_is_stopped_before_sending_what_it_would_reject() {
    let (mut p, mut c) = open(Side::Old, Side::New);
    assert_eq!(c.agreement().abi_version, 1);
    p.push_group(&TaggedGroup {
        tag: 1,
        dev_id: 1,
        requests: &[vtd_req(3, 5, DATA)],
    })
    .unwrap();
    let mut evs = Vec::new();
    c.pop_events(&mut evs, 8).unwrap();
    let with_data = PageResponse {
        version: 2,
        pasid: Some(5),
        grpid: 3,
        code: ResponseCode::Success,
        private_data: Some(DATA),
    };
    let e = c.respond_pages(&[with_data]).unwrap_err();
    assert!(
        matches!(e, QueueError::Refused(r) if r.reason == RejectReason::PrivDataNotAgreed),
        "{e}"
    );
    // Sent anyway, raw: the old producer rejects it like the old kernel rejects the flag.
    c.push_raw_response(RawFormat::Vfio, &v2_bytes(Some(5), 3, Some(DATA)))
        .unwrap();
    // Cookie responses were not agreed either.
    c.push_raw_response(RawFormat::Cookie, &[0; 8]).unwrap();
    let mut answers = Vec::new();
    p.drain_responses(&mut answers);
    assert!(answers.is_empty());
    assert_eq!(
        reasons(&mut c),
        vec![
            Some(RejectReason::FormatNotAgreed),
            Some(RejectReason::FormatNotAgreed)
        ]
    );
    // A plain version 1 response still answers the group.
    c.respond_pages(&[PageResponse {
        version: 1,
        private_data: None,
        ..with_data
    }])
    .unwrap();
    p.drain_responses(&mut answers);
    assert_eq!(answers[0].private_data, Some(DATA));
}

#[test]
fn an_old_consumer_on_a_new_producer_gets_version_1_rules() {
    let (mut p, mut c) = open(Side::New, Side::Old);
    for g in 0..3 {
        p.push_group(&TaggedGroup {
            tag: g,
            dev_id: 1,
            requests: &[vtd_req(g as u32, 5, DATA)],
        })
        .unwrap();
    }
    // Version 2 is outside what was agreed; a v1 response padded with a zero tail (a caller
    // whose struct grew) is fine by the extensible-struct rule; a non-zero byte past the 44 bytes
    // this producer knows is E2BIG.
    c.push_raw_response(RawFormat::Vfio, &v2_bytes(Some(5), 0, None))
        .unwrap();
    let mut padded = v1_bytes(Some(5), 0, ResponseCode::Invalid);
    padded[0] = 40;
    padded.resize(40, 0);
    c.push_raw_response(RawFormat::Vfio, &padded).unwrap();
    let mut tail = v1_bytes(Some(5), 1, ResponseCode::Invalid);
    tail[0] = 48;
    tail.resize(48, 0);
    tail[47] = 1;
    c.push_raw_response(RawFormat::Vfio, &tail).unwrap();
    // The device needs the PASID in its response: leaving it out is rejected.
    c.push_raw_response(RawFormat::Vfio, &v1_bytes(None, 1, ResponseCode::Success))
        .unwrap();
    c.push_raw_response(
        RawFormat::Vfio,
        &v1_bytes(Some(6), 1, ResponseCode::Success),
    )
    .unwrap();
    // FAILURE is a code the VFIO response may carry.
    c.push_raw_response(
        RawFormat::Vfio,
        &v1_bytes(Some(5), 2, ResponseCode::Failure),
    )
    .unwrap();
    let mut answers = Vec::new();
    p.drain_responses(&mut answers);
    let mut v = Vec::new();
    c.take_verdicts(&mut v);
    let got: Vec<_> = v
        .iter()
        .map(|v| v.outcome.err().map(|r| (r.reason, r.errno)))
        .collect();
    assert_eq!(
        got,
        vec![
            Some((RejectReason::FormatNotAgreed, libc::EINVAL)),
            None,
            Some((RejectReason::Decode, libc::E2BIG)),
            Some((RejectReason::PasidMismatch, libc::EINVAL)),
            Some((RejectReason::PasidMismatch, libc::EINVAL)),
            None,
        ]
    );
    assert_eq!(
        answers
            .iter()
            .map(|a| (a.grpid, a.code))
            .collect::<Vec<_>>(),
        vec![(0, ResponseCode::Invalid), (2, ResponseCode::Failure)]
    );
    assert!(answers.iter().all(|a| a.private_data == Some(DATA)));
}

/// Private data as Linux: the device gets the LAST_PAGE request's own, whatever the consumer
/// echoes; an echo that differs is rejected (strict in what user space sends), a response
/// without one is fine (the producer restores it), as in the fault core.
#[test]
fn a_new_consumer_on_a_new_producer_must_echo_the_right_private_data_or_none() {
    let (mut p, mut c) = open(Side::New, Side::New);
    for g in [4, 5] {
        p.push_group(&TaggedGroup {
            tag: u64::from(g),
            dev_id: 1,
            requests: &[vtd_req(g, 5, DATA)],
        })
        .unwrap();
    }
    let mut evs = Vec::new();
    c.pop_events(&mut evs, 8).unwrap();
    c.push_raw_response(RawFormat::Vfio, &v2_bytes(Some(5), 4, Some([1, 2])))
        .unwrap();
    c.push_raw_response(RawFormat::Vfio, &v2_bytes(Some(5), 4, Some(DATA)))
        .unwrap();
    c.push_raw_response(RawFormat::Vfio, &v2_bytes(Some(5), 5, None))
        .unwrap();
    let mut answers = Vec::new();
    p.drain_responses(&mut answers);
    assert_eq!(
        reasons(&mut c),
        vec![Some(RejectReason::PrivDataMismatch), None, None]
    );
    assert_eq!(answers.len(), 2);
    assert!(answers.iter().all(|a| a.private_data == Some(DATA)));
}

/// The private data that goes back is the LAST_PAGE request's, as Linux keeps `last_fault`:
/// an earlier request's does not count.
#[test]
fn the_private_data_answered_is_the_last_page_requests() {
    let (mut p, mut c) = open(Side::New, Side::New);
    let mut first = vtd_req(6, 5, [9, 9]);
    first.flags.remove(iopf_abi::PageRequestFlags::LAST_PAGE);
    let mut last = vtd_req(6, 5, DATA);
    last.flags.remove(iopf_abi::PageRequestFlags::PRIV_DATA);
    last.private_data = [0, 0];
    p.push_group(&TaggedGroup {
        tag: 1,
        dev_id: 1,
        requests: &[first, last],
    })
    .unwrap();
    let mut evs = Vec::new();
    c.pop_events(&mut evs, 8).unwrap();
    // Echoing the first request's data is wrong: the group's (its LAST_PAGE's) has none.
    c.push_raw_response(RawFormat::Vfio, &v2_bytes(Some(5), 6, Some([9, 9])))
        .unwrap();
    c.push_raw_response(
        RawFormat::Vfio,
        &v1_bytes(Some(5), 6, ResponseCode::Success),
    )
    .unwrap();
    let mut answers = Vec::new();
    p.drain_responses(&mut answers);
    assert_eq!(
        reasons(&mut c),
        vec![Some(RejectReason::PrivDataMismatch), None]
    );
    assert_eq!(answers[0].private_data, None);
}
