//! Page responses: how the consumer puts one in a response slot, and how the producer judges a
//! slot it copied out of the ring.
//!
//! A response slot is `len | format | stamp` in its first word (the stamp set by the consumer's
//! ring writer, see [`crate::layout`]) and up to 56 bytes of response after it:
//! a `vfio_iommu_page_response` (format VFIO, read by the extensible-struct rule, so a version 1
//! caller's 28 bytes and a version 2 caller's 44 both read) or an 8-byte
//! `iommu_hwpt_page_response` (format COOKIE). The producer's judgement mirrors the kernel's:
//! `iommu_page_response()` (≤ 6.8: match by grpid, plus PASID when the request needs it) and
//! `iommufd_fault_fops_write()` (match by cookie, SUCCESS or INVALID only), and adds what the
//! seed's private-data extension needs.

use iopf_abi::features::ResponseFormats;
use iopf_abi::{IommufdResponse, PageResponse, ResponseCode, VfioIommuPageResponse};
use zerocopy::IntoBytes;

use crate::error::{RejectReason, Rejection};
use crate::layout::{
    resp_len_tag, resp_word, COOKIES_PER_SLOT, RESP_COOKIE, RESP_COOKIES, RESP_SLOT_BYTES,
    RESP_SLOT_WORDS, RESP_VFIO,
};
use crate::negotiate::Agreement;
use crate::pending::{Pending, PendingGroup};

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

/// Judges packed cookie response `i` of a slot [`packed_in`] found well-formed.
pub(crate) fn judge_packed(
    agreement: &Agreement,
    pending: &mut Pending,
    w: &[u64; RESP_SLOT_WORDS],
    i: usize,
) -> Result<Accepted, Rejection> {
    match w.get(1 + i) {
        Some(one) => judge_cookie(agreement, pending, one.as_bytes()),
        None => Err(Rejection::new(RejectReason::Malformed)),
    }
}

/// A response the producer accepted: the group it answers and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Accepted {
    pub cookie: u32,
    pub group: PendingGroup,
    pub code: ResponseCode,
}

/// Judges a one-response slot (already copied out of shared memory) against the agreement and
/// the pending groups, and on success removes the group from `pending`. A packed slot that
/// [`packed_in`] refused is malformed.
pub(crate) fn judge(
    agreement: &Agreement,
    pending: &mut Pending,
    w: &[u64; RESP_SLOT_WORDS],
) -> Result<Accepted, Rejection> {
    let (len, tag) = resp_len_tag(w[0]);
    let len = len as usize;
    if len > RESP_SLOT_BYTES {
        return Err(Rejection::new(RejectReason::Malformed));
    }
    let bytes = &w[1..].as_bytes()[..len];
    match tag {
        RESP_VFIO => judge_vfio(agreement, pending, bytes),
        RESP_COOKIE => judge_cookie(agreement, pending, bytes),
        _ => Err(Rejection::new(RejectReason::Malformed)),
    }
}

fn judge_vfio(a: &Agreement, pending: &mut Pending, bytes: &[u8]) -> Result<Accepted, Rejection> {
    if !a.vfio_responses() {
        return Err(Rejection::new(RejectReason::FormatNotAgreed));
    }
    let r: PageResponse = VfioIommuPageResponse::read(bytes).map_err(Rejection::decode)?;
    if r.version >= 2 && !a.responses.contains(ResponseFormats::VFIO_V2) {
        return Err(Rejection::new(RejectReason::FormatNotAgreed));
    }
    if r.private_data.is_some() && !a.echoes_private_data() {
        return Err(Rejection::new(RejectReason::PrivDataNotAgreed));
    }
    let cookie = pending
        .cookie_of_grpid(r.grpid)
        .ok_or_else(|| Rejection::new(RejectReason::UnknownGroup))?;
    let g = *pending
        .get(cookie)
        .ok_or_else(|| Rejection::new(RejectReason::UnknownGroup))?;
    // A PASID given must be the request's; one the device requires must be given.
    let pasid_ok = r.pasid == g.pasid || (r.pasid.is_none() && !g.needs_pasid);
    if !pasid_ok {
        return Err(Rejection::new(RejectReason::PasidMismatch));
    }
    if a.echoes_private_data() && r.private_data != g.private_data {
        return Err(Rejection::new(RejectReason::PrivDataMismatch));
    }
    let group = pending
        .remove(cookie)
        .ok_or_else(|| Rejection::new(RejectReason::UnknownGroup))?;
    Ok(Accepted {
        cookie,
        group,
        code: r.code,
    })
}

fn judge_cookie(a: &Agreement, pending: &mut Pending, bytes: &[u8]) -> Result<Accepted, Rejection> {
    if !a.cookie_responses() {
        return Err(Rejection::new(RejectReason::FormatNotAgreed));
    }
    let r = IommufdResponse::from_bytes(bytes).map_err(Rejection::decode)?;
    let group = pending
        .remove(r.cookie)
        .ok_or_else(|| Rejection::new(RejectReason::UnknownGroup))?;
    Ok(Accepted {
        cookie: r.cookie,
        group,
        code: r.code,
    })
}
