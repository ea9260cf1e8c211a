//! Answering a device: the one place a response to a device is built, translated for what the
//! function may receive, counted and sent (`iopf_group_response()`).

use iopf_abi::ResponseCode;

use crate::device::DeviceState;
use crate::group_table::GroupFacts;
use crate::response::{DeviceResponse, ResponseSink};
use crate::DeviceId;

/// The response the device gets for the group `facts` describes, answered `code`: with the
/// request's PASID exactly when the device needs it (`iopf_group_response()` sets
/// `IOMMU_PAGE_RESP_PASID_VALID` only for a request with a PASID that needs it), the request's
/// private data, and FAILURE sent as INVALID on a function that may not receive it (an SR-IOV VF,
/// whose Response Failure would disable PRI for its PF and every VF). Sent through `sink` and
/// counted by the code the device received.
pub(crate) fn send<S: ResponseSink>(
    sink: &mut S,
    device: DeviceId,
    dev: &mut DeviceState,
    facts: &GroupFacts,
    code: ResponseCode,
) -> DeviceResponse {
    let code = if code == ResponseCode::Failure && !dev.caps.failure_allowed {
        dev.counters.failure_as_invalid += 1;
        ResponseCode::Invalid
    } else {
        code
    };
    let resp = DeviceResponse {
        pasid: facts.response_pasid(),
        grpid: facts.grpid,
        code,
        private_data: facts.private_data,
    };
    dev.counters.responses[code as usize] += 1;
    sink.page_response(device, &resp);
    resp
}
