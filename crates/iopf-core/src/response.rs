//! Responses: what a consumer sends ([`Response`]), what reaches the device ([`DeviceResponse`])
//! through the caller's [`ResponseSink`], and the record of an answered group ([`Answered`]).

use iopf_abi::ResponseCode;

use crate::{Cookie, DeviceId, Nanos};

/// A PRG Response as it reaches the device (the `struct iommu_page_response` a Linux IOMMU driver's
/// `ops->page_response()` turns into a PCIe PRG Response Message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceResponse {
    /// The PASID, present exactly when the device requires it in responses ("PRG Response PASID
    /// Required") and the group's LAST_PAGE request carried one.
    pub pasid: Option<u32>,
    /// The PRG index answered.
    pub grpid: u32,
    /// The code; never FAILURE on a function that may not receive it.
    pub code: ResponseCode,
    /// The page request's private data, present exactly when the LAST_PAGE request carried
    /// `PRIV_DATA`. Always the core's stored copy, never the consumer's echo.
    pub private_data: Option<[u64; 2]>,
}

/// Where responses to devices go: the simulated IOMMU, a real backend, a test recorder.
///
/// The core calls [`page_response`](ResponseSink::page_response) exactly once per completed group
/// (invariant 1 of DESIGN.md), and never for anything else.
pub trait ResponseSink {
    /// Sends `response` to `device`. Must not fail: the core has already forgotten the group.
    fn page_response(&mut self, device: DeviceId, response: &DeviceResponse);
}

impl<T: ResponseSink + ?Sized> ResponseSink for Box<T> {
    fn page_response(&mut self, device: DeviceId, response: &DeviceResponse) {
        (**self).page_response(device, response)
    }
}

impl<T: ResponseSink + ?Sized> ResponseSink for &mut T {
    fn page_response(&mut self, device: DeviceId, response: &DeviceResponse) {
        (**self).page_response(device, response)
    }
}

/// How a response names its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupRef {
    /// By cookie, as the iommufd `struct iommu_hwpt_page_response` does
    /// (`iommufd_fault_fops_write()` → `xa_erase(&fault->response, cookie)`). Needs
    /// [`iopf_abi::Features::COOKIE_RESPONSE`] agreed.
    Cookie(Cookie),
    /// By PRG index and PASID, as the old `iommu_page_response()` (Linux ≤ 6.8) does: the
    /// handler's device's outstanding group with this `grpid`; the PASID must match when the
    /// device requires it in responses, and is ignored otherwise.
    Grpid {
        /// The PASID (`IOMMU_PAGE_RESP_PASID_VALID` set), or `None`.
        pasid: Option<u32>,
        /// The PRG index.
        grpid: u32,
    },
}

/// A consumer's response, as decoded from its queue but not yet judged: the core checks every
/// field against the outstanding group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Response {
    /// The group answered.
    pub group: GroupRef,
    /// The raw code (0 SUCCESS, 1 INVALID, 2 FAILURE); anything else is rejected.
    pub code: u32,
    /// Echoed private data (`IOMMU_PAGE_RESP_PRIV_DATA`, the seed's version 2). Needs
    /// [`iopf_abi::Features::PRIV_DATA_ECHO`] agreed and must equal the request's. `None` is always
    /// fine: the core restores the stored private data itself.
    pub private_data: Option<[u64; 2]>,
}

impl Response {
    /// A response by cookie, without private data.
    pub fn by_cookie(cookie: Cookie, code: ResponseCode) -> Response {
        Response {
            group: GroupRef::Cookie(cookie),
            code: code.raw(),
            private_data: None,
        }
    }
}

/// What became of an answered group: returned by [`crate::FaultCore::respond`], with its
/// timestamps for latency accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// The device.
    pub device: DeviceId,
    /// The group's cookie (now answered).
    pub cookie: Cookie,
    /// Exactly what reached the device.
    pub sent: DeviceResponse,
    /// Number of page requests in the group.
    pub requests: u32,
    /// When the group's first request was reported.
    pub first_at: Nanos,
    /// When the group completed and was delivered.
    pub completed_at: Nanos,
}
