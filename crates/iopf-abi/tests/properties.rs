//! Property tests: every record survives encode → bytes → decode; arbitrary bytes never panic a
//! decoder and give either a value that re-encodes to the same bytes or a specific error; the
//! extensible-struct rule holds on random sizes and tails.

#![allow(clippy::unwrap_used)] // test strategies build values known to be valid

use iopf_abi::extensible::{copy_struct, write_struct};
use iopf_abi::fault::{FaultReason, UnrecoverableFlags};
use iopf_abi::iommufd::PgfaultFlags;
use iopf_abi::response::*;
use iopf_abi::*;
use proptest::prelude::*;
use zerocopy::IntoBytes;

fn perm() -> impl Strategy<Value = Perm> {
    (0u32..16).prop_map(Perm::from_bits_truncate)
}

fn code() -> impl Strategy<Value = ResponseCode> {
    prop_oneof![
        Just(ResponseCode::Success),
        Just(ResponseCode::Invalid),
        Just(ResponseCode::Failure)
    ]
}

fn page_request() -> impl Strategy<Value = PageRequest> {
    (
        0u32..16,
        any::<u32>(),
        any::<u32>(),
        perm(),
        any::<u64>(),
        any::<[u64; 2]>(),
    )
        .prop_map(
            |(flags, pasid, grpid, perm, addr, private_data)| PageRequest {
                flags: PageRequestFlags::from_bits_truncate(flags),
                pasid,
                grpid,
                perm,
                addr,
                private_data,
            },
        )
}

fn unrecoverable() -> impl Strategy<Value = Unrecoverable> {
    (
        0u32..9,
        0u32..8,
        any::<u32>(),
        perm(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(reason, flags, pasid, perm, addr, fetch_addr)| Unrecoverable {
                reason: FaultReason::decode(reason).unwrap(),
                flags: UnrecoverableFlags::from_bits_truncate(flags),
                pasid,
                perm,
                addr,
                fetch_addr,
            },
        )
}

fn page_response() -> impl Strategy<Value = PageResponse> {
    (
        any::<Option<u32>>(),
        any::<u32>(),
        code(),
        any::<Option<[u64; 2]>>(),
        any::<bool>(),
    )
        .prop_map(|(pasid, grpid, code, private_data, v2)| PageResponse {
            version: if v2 || private_data.is_some() { 2 } else { 1 },
            pasid,
            grpid,
            code,
            private_data,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn fault_round_trip(f in prop_oneof![
        page_request().prop_map(Fault::PageRequest),
        unrecoverable().prop_map(Fault::Unrecoverable),
    ]) {
        let raw = f.encode();
        prop_assert_eq!(raw.as_bytes().len(), 64);
        prop_assert_eq!(Fault::from_bytes(raw.as_bytes()), Ok(f));
    }

    #[test]
    fn pgfault_round_trip(flags in 0u32..4, dev_id: u32, pasid: u32, grpid: u32, perm in perm(),
                          addr: u64, length: u32, cookie: u32) {
        let f = PgFault { flags: PgfaultFlags::from_bits_truncate(flags), dev_id, pasid, grpid,
                          perm, addr, length, cookie, reserved: 0 };
        prop_assert_eq!(PgFault::from_bytes(f.encode().as_bytes()), Ok(f));
        prop_assert!(f.unnamed().is_empty());
        prop_assert_eq!(f.encode().check(), Ok(()));
    }

    /// Liberal in what a kernel emits: every 40 bytes are a record, kept bit for bit, and the
    /// strict check refuses exactly the records with something outside the uAPI.
    #[test]
    fn any_pgfault_record_is_kept_and_checked_strictly(bytes in proptest::collection::vec(
            prop_oneof![3 => Just(0u8), 1 => any::<u8>()], 40)) {
        let raw = iopf_abi::HwptPgfault::read(&bytes).unwrap();
        let f = raw.decode();
        let back = f.encode();
        prop_assert_eq!(back.as_bytes(), &bytes[..]);
        prop_assert_eq!(raw.check().is_ok(), f.unnamed().is_empty());
    }

    #[test]
    fn iommufd_response_round_trip(cookie: u32, ok: bool) {
        let r = IommufdResponse { cookie, code: if ok { ResponseCode::Success } else { ResponseCode::Invalid } };
        prop_assert_eq!(IommufdResponse::from_bytes(r.encode().as_bytes()), Ok(r));
    }

    #[test]
    fn vfio_response_round_trip_new_peer(r in page_response()) {
        let mut buf = [0u8; 64];
        let n = r.write_vfio(VFIO_PAGE_RESPONSE_V2_SIZE, &mut buf).unwrap();
        prop_assert_eq!(n, 44);
        prop_assert_eq!(VfioIommuPageResponse::read(&buf[..n]), Ok(r));
        // The bare struct reads the same by its own argsz.
        prop_assert_eq!(IommuPageResponse::read(&buf[4..n]), Ok(r));
    }

    #[test]
    fn vfio_response_to_old_peer(r in page_response()) {
        let mut buf = [0u8; 64];
        match r.write_vfio(VFIO_PAGE_RESPONSE_V1_SIZE, &mut buf) {
            Ok(n) => {
                prop_assert!(r.private_data.is_none());
                prop_assert_eq!(n, 28);
                prop_assert_eq!(VfioIommuPageResponse::read(&buf[..n]), Ok(r));
            }
            Err(e) => {
                // Only private data cannot travel to a peer that knows version 1 alone.
                prop_assert!(r.private_data.is_some());
                prop_assert_eq!(e.errno(), libc::E2BIG);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
        if let Ok(f) = Fault::from_bytes(&bytes) {
            prop_assert_eq!(f.encode().as_bytes().to_vec(), bytes.clone());
        }
        if let Ok(f) = PgFault::from_bytes(&bytes) {
            prop_assert_eq!(f.encode().as_bytes().to_vec(), bytes.clone());
        }
        if let Ok(r) = IommufdResponse::from_bytes(&bytes) {
            prop_assert_eq!(r.encode().as_bytes().to_vec(), bytes.clone());
        }
        let _ = IommuPageResponse::read(&bytes);
        let _ = VfioIommuPageResponse::read(&bytes);
    }

    /// The word form is the byte form: the same words for the same record, and the same verdict
    /// (value or error) on any 64 bytes, structured so that every error path is reached.
    #[test]
    fn fault_words_are_the_fault_bytes(type_ in 0u32..4, padding in prop_oneof![Just(0u32), any::<u32>()],
                                       payload in proptest::collection::vec(
                                           prop_oneof![3 => Just(0u8), 1 => any::<u8>()], 56),
                                       f in prop_oneof![
                                           page_request().prop_map(Fault::PageRequest),
                                           unrecoverable().prop_map(Fault::Unrecoverable),
                                       ]) {
        let words_of = |bytes: &[u8]| -> IommuFaultWords {
            core::array::from_fn(|i| u64::from_ne_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap()))
        };
        prop_assert_eq!(f.encode_words(), words_of(f.encode().as_bytes()));
        prop_assert_eq!(IommuFault::decode_words(&f.encode_words()), Ok(f));
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&type_.to_ne_bytes());
        bytes.extend_from_slice(&padding.to_ne_bytes());
        bytes.extend_from_slice(&payload);
        prop_assert_eq!(IommuFault::decode_words(&words_of(&bytes)), Fault::from_bytes(&bytes));
    }

    #[test]
    fn structured_fault_bytes_decode_or_say_why(type_ in 0u32..4, padding in prop_oneof![Just(0u32), any::<u32>()],
                                                 payload in proptest::collection::vec(any::<u8>(), 56)) {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&type_.to_ne_bytes());
        bytes.extend_from_slice(&padding.to_ne_bytes());
        bytes.extend_from_slice(&payload);
        match Fault::from_bytes(&bytes) {
            Ok(f) => prop_assert_eq!(f.encode().as_bytes().to_vec(), bytes.clone()),
            Err(AbiError::UnknownFaultType(t)) => prop_assert!(t == 0 || t == 3),
            Err(AbiError::NonZeroReserved { .. })
            | Err(AbiError::UnknownFlags { .. })
            | Err(AbiError::UnknownReason(_)) => {}
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }

    /// copy_struct_from_user(): short → zero-filled, long → only with a zero tail.
    #[test]
    fn extensible_rule(known in 8usize..64, min in 1usize..8,
                       given in proptest::collection::vec(any::<u8>(), 0..96),
                       zero_tail: bool) {
        let mut given = given;
        if zero_tail && given.len() > known {
            given[known..].fill(0);
        }
        let mut out = vec![0xAAu8; known];
        let res = copy_struct("t", &mut out, &given, min);
        if given.len() < min {
            prop_assert!(matches!(res, Err(AbiError::ArgszTooSmall { .. })), "{:?}", res);
            prop_assert_eq!(res.unwrap_err().errno(), libc::EINVAL);
        } else if given.len() > known && given[known..].iter().any(|&b| b != 0) {
            let first = known + given[known..].iter().position(|&b| b != 0).unwrap();
            prop_assert_eq!(res, Err(AbiError::NonZeroTail { record: "t", known, offset: first }));
            prop_assert_eq!(res.unwrap_err().errno(), libc::E2BIG);
        } else {
            prop_assert_eq!(res, Ok(()));
            let n = given.len().min(known);
            prop_assert_eq!(&out[..n], &given[..n]);
            prop_assert!(out[n..].iter().all(|&b| b == 0));
        }
    }

    /// The writer side: a value reaches an older peer only if nothing lies past what it knows.
    #[test]
    fn writer_for_older_peer(words in proptest::collection::vec(any::<u32>(), 10), peer_words in 0usize..=10) {
        let value: [u32; 10] = words.clone().try_into().unwrap();
        let mut out = [0u8; 40];
        let res = write_struct("t", &value, peer_words * 4, &mut out);
        if words[peer_words..].iter().all(|&w| w == 0) {
            prop_assert_eq!(res, Ok(peer_words * 4));
            prop_assert_eq!(&out[..peer_words * 4], &value.as_bytes()[..peer_words * 4]);
        } else {
            prop_assert!(matches!(res, Err(AbiError::NonZeroTail { .. })), "{:?}", res);
        }
    }
}

#[test]
fn old_kernel_rules_for_version_1() {
    // Version 1 accepts PASID_VALID only, like iommu_page_response() of Linux ≤ 6.8.
    let mut raw = IommuPageResponse {
        argsz: 24,
        version: 1,
        flags: ResponseFlags::PRIV_DATA.bits(),
        ..Default::default()
    };
    assert!(matches!(
        raw.decode(24),
        Err(AbiError::UnknownFlags { bits: 2, .. })
    ));
    raw.flags = 1 << 7;
    assert_eq!(raw.decode(24).unwrap_err().errno(), libc::EINVAL);
    raw.flags = 0;
    raw.version = 3;
    assert_eq!(raw.decode(24), Err(AbiError::UnknownVersion(3)));
    raw.version = 1;
    raw.code = 3;
    assert_eq!(raw.decode(24), Err(AbiError::UnknownCode(3)));
}

#[test]
fn priv_data_needs_its_bytes() {
    let r = PageResponse {
        version: 2,
        pasid: Some(5),
        grpid: 9,
        code: ResponseCode::Success,
        private_data: Some([1, 2]),
    };
    let mut buf = [0u8; 44];
    r.write_vfio(44, &mut buf).unwrap();
    // A caller that sets PRIV_DATA but passes only the v1 size: the data is not there.
    buf[0..4].copy_from_slice(&28u32.to_ne_bytes());
    assert!(matches!(
        VfioIommuPageResponse::read(&buf[..28]),
        Err(AbiError::InconsistentArgsz(_))
    ));
    // argsz larger than the buffer is reported, not read past.
    buf[0..4].copy_from_slice(&100u32.to_ne_bytes());
    assert!(matches!(
        VfioIommuPageResponse::read(&buf),
        Err(AbiError::Truncated {
            argsz: 100,
            got: 44,
            ..
        })
    ));
    // A newer caller with a longer, zero tail is accepted.
    let mut long = [0u8; 60];
    r.write_vfio(44, &mut long).unwrap();
    long[0..4].copy_from_slice(&60u32.to_ne_bytes());
    assert_eq!(VfioIommuPageResponse::read(&long), Ok(r));
    long[59] = 1;
    assert_eq!(
        VfioIommuPageResponse::read(&long).unwrap_err().errno(),
        libc::E2BIG
    );
}

#[test]
fn iommufd_rejects_failure_and_unknown_codes() {
    let raw = HwptPageResponse { cookie: 1, code: 2 };
    assert_eq!(raw.decode(), Err(AbiError::CodeNotAllowed(2)));
    let raw = HwptPageResponse { cookie: 1, code: 7 };
    assert_eq!(raw.decode(), Err(AbiError::UnknownCode(7)));
}

#[test]
fn stop_marker_is_last_page_without_read_or_write() {
    let mut p = PageRequest {
        flags: PageRequestFlags::LAST_PAGE,
        pasid: 0,
        grpid: 1,
        perm: Perm::empty(),
        addr: 0,
        private_data: [0; 2],
    };
    assert!(p.is_stop_marker());
    p.perm = Perm::EXEC;
    assert!(p.is_stop_marker());
    p.perm = Perm::READ;
    assert!(!p.is_stop_marker());
}
