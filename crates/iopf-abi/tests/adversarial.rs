//! Argsz edge cases through every reader of a size-prefixed response (invariant 4: short argsz
//! accepted down to the v1 size, longer only with a zero tail; invariant 3: no size a peer
//! writes makes a reader panic or read past its buffer). Each size is tried with a buffer of
//! exactly argsz bytes (where that fits) and with a larger zero-padded one.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

use iopf_abi::extensible::{copy_struct, read_struct};
use iopf_abi::response::{
    IOMMU_PAGE_RESPONSE_V1_SIZE, IOMMU_PAGE_RESPONSE_V2_SIZE, VFIO_PAGE_RESPONSE_V1_SIZE,
    VFIO_PAGE_RESPONSE_V2_SIZE,
};
use iopf_abi::{
    AbiError, IommuPageResponse, IommufdResponse, PageResponse, ResponseCode, VfioIommuPageResponse,
};
use zerocopy::IntoBytes;

const SIZES: [u32; 8] = [0, 27, 28, 29, 43, 44, 45, u32::MAX];

fn response(private_data: Option<[u64; 2]>) -> PageResponse {
    PageResponse {
        version: if private_data.is_some() { 2 } else { 1 },
        pasid: Some(5),
        grpid: 9,
        code: ResponseCode::Success,
        private_data,
    }
}

/// A VFIO response whose outer argsz is `argsz`, in a 64-byte zero-padded buffer.
fn vfio_bytes(r: &PageResponse, argsz: u32) -> [u8; 64] {
    let mut raw = VfioIommuPageResponse {
        argsz,
        pr: r.encode(),
    };
    raw.pr.argsz = raw
        .pr
        .argsz
        .min(argsz.saturating_sub(4))
        .max(IOMMU_PAGE_RESPONSE_V1_SIZE as u32);
    let mut buf = [0u8; 64];
    buf[..VFIO_PAGE_RESPONSE_V2_SIZE].copy_from_slice(raw.as_bytes());
    buf
}

/// Buffers for `argsz`: the padded one, and one exactly argsz long when that fits.
fn buffers(full: &[u8; 64], argsz: u32) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = vec![&full[..]];
    if (argsz as usize) < full.len() {
        v.push(&full[..argsz as usize]);
    }
    v
}

#[test]
fn vfio_v1_response_at_every_edge_size() {
    let r = response(None);
    for argsz in SIZES {
        let full = vfio_bytes(&r, argsz);
        for buf in buffers(&full, argsz) {
            let got = VfioIommuPageResponse::read(buf);
            match argsz {
                _ if buf.len() < 4 => assert!(matches!(got, Err(AbiError::BadSize { .. }))),
                0 | 27 => assert!(
                    matches!(got, Err(AbiError::ArgszTooSmall { .. })),
                    "{argsz}: {got:?}"
                ),
                28 | 29 | 43 | 44 | 45 => assert_eq!(got.unwrap(), r, "argsz {argsz}"),
                _ => assert!(
                    matches!(got, Err(AbiError::Truncated { .. })),
                    "{argsz}: {got:?}"
                ),
            }
            if let Err(e) = got {
                assert_eq!(e.errno(), libc::EINVAL);
            }
        }
    }
}

#[test]
fn vfio_v2_response_needs_argsz_covering_its_private_data() {
    let data = [0x0102_0304_0506_0708, 0x1112_1314_1516_1718];
    let r = response(Some(data));
    for argsz in SIZES {
        let full = vfio_bytes(&r, argsz);
        for buf in buffers(&full, argsz) {
            let got = VfioIommuPageResponse::read(buf);
            match argsz {
                _ if buf.len() < 4 => assert!(matches!(got, Err(AbiError::BadSize { .. }))),
                0 | 27 => assert!(matches!(got, Err(AbiError::ArgszTooSmall { .. }))),
                // The private data is cut short: PRIV_DATA promises bytes that were not given.
                28 | 29 | 43 => assert!(
                    matches!(got, Err(AbiError::InconsistentArgsz(_))),
                    "{argsz}: {got:?}"
                ),
                44 | 45 => assert_eq!(got.unwrap(), r, "argsz {argsz}"),
                _ => assert!(matches!(got, Err(AbiError::Truncated { .. }))),
            }
        }
    }
}

#[test]
fn a_non_zero_byte_past_the_known_size_is_e2big_and_inside_argsz_only() {
    let r = response(None);
    let mut full = vfio_bytes(&r, 45);
    full[44] = 1;
    let got = VfioIommuPageResponse::read(&full);
    assert!(matches!(got, Err(AbiError::NonZeroTail { offset: 44, .. })));
    assert_eq!(got.unwrap_err().errno(), libc::E2BIG);
    // The same byte past argsz is not the peer's: ignored.
    let mut full = vfio_bytes(&r, 44);
    full[44] = 1;
    full[63] = 0xff;
    assert_eq!(VfioIommuPageResponse::read(&full).unwrap(), r);
    // A v1 response with a stray private-data byte inside argsz and no PRIV_DATA flag.
    let mut full = vfio_bytes(&r, 29);
    full[28] = 7;
    assert!(matches!(
        VfioIommuPageResponse::read(&full),
        Err(AbiError::NonZeroReserved { .. })
    ));
}

#[test]
fn the_inner_argsz_is_never_trusted_past_the_outer_one() {
    let r = response(None);
    for (outer, inner) in [(28, 25), (28, 40), (44, 41), (44, u32::MAX)] {
        let mut full = vfio_bytes(&r, outer);
        full[4..8].copy_from_slice(&inner.to_ne_bytes());
        assert!(
            matches!(
                VfioIommuPageResponse::read(&full),
                Err(AbiError::InconsistentArgsz(_))
            ),
            "outer {outer}, inner {inner}"
        );
    }
}

#[test]
fn bare_response_and_generic_reader_at_every_edge_size() {
    let r = response(None);
    for argsz in [0u32, 3, 23, 24, 25, 39, 40, 41, u32::MAX] {
        let mut raw = r.encode();
        raw.argsz = argsz;
        let mut full = [0u8; 64];
        full[..IOMMU_PAGE_RESPONSE_V2_SIZE].copy_from_slice(raw.as_bytes());
        for buf in buffers(&full, argsz) {
            let got = IommuPageResponse::read(buf);
            match argsz {
                24..=41 => assert_eq!(got.unwrap(), r, "argsz {argsz}"),
                _ if buf.len() < 4 => assert!(matches!(got, Err(AbiError::BadSize { .. }))),
                0..=23 => assert!(matches!(got, Err(AbiError::ArgszTooSmall { .. }))),
                _ => assert!(matches!(got, Err(AbiError::Truncated { .. }))),
            }
        }
    }
    // The generic reader, on every buffer length up to past the struct.
    let full = vfio_bytes(&r, VFIO_PAGE_RESPONSE_V2_SIZE as u32);
    for len in 0..full.len() {
        let got =
            read_struct::<VfioIommuPageResponse>("vfio", &full[..len], VFIO_PAGE_RESPONSE_V1_SIZE);
        assert_eq!(got.is_ok(), len >= VFIO_PAGE_RESPONSE_V2_SIZE, "len {len}");
    }
    // copy_struct never writes past the reader's layout, whatever the peer gives.
    let mut known = [0xaau8; 8];
    assert!(copy_struct("x", &mut known[..4], &[1, 2, 3, 4, 0, 0, 0], 4).is_ok());
    assert_eq!(known, [1, 2, 3, 4, 0xaa, 0xaa, 0xaa, 0xaa]);
    assert!(copy_struct("x", &mut known[..4], &[1, 2], 4).is_err());
}

#[test]
fn cookie_responses_take_exactly_eight_bytes_and_two_codes() {
    let ok = IommufdResponse {
        cookie: 0xffff_ffff,
        code: ResponseCode::Invalid,
    };
    let raw = ok.encode();
    let bytes = raw.as_bytes();
    for len in 0..16 {
        let mut buf = [0u8; 16];
        buf[..8].copy_from_slice(bytes);
        let got = IommufdResponse::from_bytes(&buf[..len]);
        assert_eq!(got.is_ok(), len == 8, "len {len}");
    }
    for code in [2u32, 3, u32::MAX] {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(bytes);
        buf[4..].copy_from_slice(&code.to_ne_bytes());
        assert!(IommufdResponse::from_bytes(&buf).is_err(), "code {code}");
    }
}

#[test]
fn a_writer_never_sends_a_peer_what_it_cannot_read() {
    // Private data whose bytes past a short peer's size happen to be zero (or all zero) must
    // still not go out flagged PRIV_DATA in a response too short to carry it.
    for data in [[1, 2], [0, 0], [u64::MAX, 1]] {
        writer_at_every_peer_size(data);
    }
}

fn writer_at_every_peer_size(data: [u64; 2]) {
    let with = response(Some(data));
    let without = response(None);
    for peer in [0usize, 27, 28, 29, 43, 44, 45, 64] {
        let (mut out_a, mut out_b) = ([0u8; 64], [0u8; 64]);
        let a = with.write_vfio(peer, &mut out_a);
        let b = without.write_vfio(peer, &mut out_b);
        match peer {
            // Below v1, or larger than the struct this writer knows: an error, not a guess.
            0..=27 | 45.. => assert!(a.is_err() && b.is_err(), "peer {peer}"),
            28..=43 => {
                assert!(
                    a.is_err(),
                    "private data {data:?} to a peer of {peer} bytes: {a:?}"
                );
                assert_eq!(b.unwrap(), peer);
                assert_eq!(
                    VfioIommuPageResponse::read(&out_b[..peer]).unwrap(),
                    without
                );
            }
            _ => {
                assert_eq!(a.unwrap(), VFIO_PAGE_RESPONSE_V2_SIZE);
                assert_eq!(VfioIommuPageResponse::read(&out_a[..peer]).unwrap(), with);
            }
        }
    }
}
