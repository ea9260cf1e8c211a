//! Page responses: how the consumer puts one in a response slot, and how the producer decodes a
//! slot it copied out of the ring into the response the one judge
//! ([`iopf_core::GroupTable::judge`]) then rules on.
//!
//! A response slot is `len | format | stamp` in its first word (the stamp set by the consumer's
//! ring writer, see [`crate::layout`]) and up to 56 bytes of response after it:
//! a `vfio_iommu_page_response` (format VFIO, read by the extensible-struct rule, so a version 1
//! caller's 28 bytes and a version 2 caller's 44 both read) or an 8-byte
//! `iommu_hwpt_page_response` (format COOKIE). What a format may carry is checked here (a version 2
//! response needs version 2 agreed; a cookie response carries SUCCESS or INVALID, as
//! `iommufd_fault_fops_write()` takes, and FAILURE only with `COOKIE_FAILURE` agreed); which
//! group it answers, and whether it may, is the judge's.

use iopf_abi::features::ResponseFormats;
use iopf_abi::{Features, HwptPageResponse, PageResponse, ResponseCode, VfioIommuPageResponse};
use iopf_core::{Cookie, GroupRef, Response};
use zerocopy::IntoBytes;

use crate::error::{RejectReason, Rejection};
use crate::layout::{
    resp_len_tag, resp_word, COOKIES_PER_SLOT, RESP_COOKIE, RESP_COOKIES, RESP_SLOT_BYTES,
    RESP_SLOT_WORDS, RESP_VFIO,
};
use crate::negotiate::Agreement;

/// The layout of a raw response put in a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFormat {
    /// A `vfio_iommu_page_response`, sized by its argsz.
    Vfio,
    /// An 8-byte `iommu_hwpt_page_response`.
    Cookie,
}

impl RawFormat {
    fn tag(self) -> u32 {
        match self {
            RawFormat::Vfio => RESP_VFIO,
            RawFormat::Cookie => RESP_COOKIE,
        }
    }
}

/// Encodes up to 56 bytes of response into slot words. The caller checked the length.
pub(crate) fn encode_slot(format: RawFormat, bytes: &[u8]) -> [u64; RESP_SLOT_WORDS] {
    let mut w = [0u64; RESP_SLOT_WORDS];
    let n = bytes.len().min(RESP_SLOT_BYTES);
    w[0] = resp_word(n as u32, format.tag());
    w[1..].as_mut_bytes()[..n].copy_from_slice(&bytes[..n]);
    w
}

/// Encodes up to [`COOKIES_PER_SLOT`] cookie responses (already encoded, 8 bytes each) into one
/// packed slot. The caller passes 1 to 7 of them.
pub(crate) fn encode_cookies(responses: &[u64]) -> [u64; RESP_SLOT_WORDS] {
    let mut w = [0u64; RESP_SLOT_WORDS];
    let k = responses.len().min(COOKIES_PER_SLOT);
    w[0] = resp_word(k as u32 * 8, RESP_COOKIES);
    w[1..=k].copy_from_slice(&responses[..k]);
    w
}

/// How many packed cookie responses a slot copied out of the ring carries: `Some(k)` for a
/// well-formed packed slot of at most `max` (the ring size, so that the verdict ring can always
/// take all its rejections), `None` for any other slot, which is one response judged by
/// [`judge`] (a malformed packed slot is one malformed response).
pub(crate) fn packed_in(w: &[u64; RESP_SLOT_WORDS], max: u64) -> Option<usize> {
    let (len, tag) = resp_len_tag(w[0]);
    let k = len as usize / 8;
    (tag == RESP_COOKIES && len % 8 == 0 && (1..=COOKIES_PER_SLOT).contains(&k) && k as u64 <= max)
        .then_some(k)
}

/// Decodes packed cookie response `i` of a slot [`packed_in`] found well-formed.
pub(crate) fn decode_packed(
    agreement: &Agreement,
    w: &[u64; RESP_SLOT_WORDS],
    i: usize,
) -> Result<Response, Rejection> {
    match w.get(1 + i) {
        Some(one) => decode_cookie(agreement, one.as_bytes()),
        None => Err(Rejection::new(RejectReason::Malformed)),
    }
}

/// Decodes a one-response slot (already copied out of shared memory) under the agreement. A
/// packed slot that [`packed_in`] refused is malformed.
pub(crate) fn decode_slot(
    agreement: &Agreement,
    w: &[u64; RESP_SLOT_WORDS],
) -> Result<Response, Rejection> {
    let (len, tag) = resp_len_tag(w[0]);
    let len = len as usize;
    if len > RESP_SLOT_BYTES {
        return Err(Rejection::new(RejectReason::Malformed));
    }
    let bytes = &w[1..].as_bytes()[..len];
    match tag {
        RESP_VFIO => decode_vfio(agreement, bytes),
        RESP_COOKIE => decode_cookie(agreement, bytes),
        _ => Err(Rejection::new(RejectReason::Malformed)),
    }
}

/// A `vfio_iommu_page_response`: the group named by (PASID, grpid), as the ≤ 6.8
/// `iommu_page_response()` names it.
fn decode_vfio(a: &Agreement, bytes: &[u8]) -> Result<Response, Rejection> {
    if !a.vfio_responses() {
        return Err(Rejection::new(RejectReason::FormatNotAgreed));
    }
    let r: PageResponse = VfioIommuPageResponse::read(bytes).map_err(Rejection::decode)?;
    if r.version >= 2 && !a.responses.contains(ResponseFormats::VFIO_V2) {
        return Err(Rejection::new(RejectReason::FormatNotAgreed));
    }
    Ok(Response {
        group: GroupRef::Grpid {
            pasid: r.pasid,
            grpid: r.grpid,
        },
        code: r.code.raw(),
        private_data: r.private_data,
    })
}

/// An `iommu_hwpt_page_response`: the group named by cookie.
fn decode_cookie(a: &Agreement, bytes: &[u8]) -> Result<Response, Rejection> {
    if !a.cookie_responses() {
        return Err(Rejection::new(RejectReason::FormatNotAgreed));
    }
    let raw = HwptPageResponse::read(bytes).map_err(Rejection::decode)?;
    let code = if a.features.contains(Features::COOKIE_FAILURE) {
        ResponseCode::decode(raw.code)
    } else {
        ResponseCode::decode_iommufd(raw.code)
    }
    .map_err(Rejection::decode)?;
    Ok(Response::by_cookie(Cookie::from_raw(raw.cookie), code))
}
