//! Page response codes (`enum iommu_page_response_code`, `enum iommufd_page_response_code`).

use crate::AbiError;

/// How a page request group was resolved. The values are the kernel's; the meaning is PCIe's
/// (PCIe 6.0 §10.4.2.1, PRG Response Message "Response Code").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[repr(u32)]
pub enum ResponseCode {
    /// "Success": the pages are now mapped; the device retries the translation of every request
    /// in the group. `IOMMU_PAGE_RESP_SUCCESS` / `IOMMUFD_PAGE_RESP_SUCCESS` (0).
    Success = 0,
    /// "Invalid Request": the pages cannot be mapped; the device does not retry and reports an
    /// error for the access. `IOMMU_PAGE_RESP_INVALID` / `IOMMUFD_PAGE_RESP_INVALID` (1).
    Invalid = 1,
    /// "Response Failure": a catastrophic error; the function's PRI is disabled until it is reset
    /// (and with it every function that shares that PRI, such as the VFs of an SR-IOV device,
    /// which is why Linux sends INVALID instead on those). `IOMMU_PAGE_RESP_FAILURE` (2). The
    /// iommufd fault queue does not accept it from user space.
    Failure = 2,
}

impl ResponseCode {
    /// Decodes a code of the old `iommu_page_response` ABI (0, 1 or 2).
    pub fn decode(code: u32) -> Result<ResponseCode, AbiError> {
        match code {
            0 => Ok(ResponseCode::Success),
            1 => Ok(ResponseCode::Invalid),
            2 => Ok(ResponseCode::Failure),
            other => Err(AbiError::UnknownCode(other)),
        }
    }

    /// Decodes a code of the iommufd fault queue, which accepts SUCCESS and INVALID only
    /// (`iommufd_fault_fops_write()` returns EINVAL for anything else).
    pub fn decode_iommufd(code: u32) -> Result<ResponseCode, AbiError> {
        match ResponseCode::decode(code)? {
            ResponseCode::Failure => Err(AbiError::CodeNotAllowed(code)),
            ok => Ok(ok),
        }
    }

    /// The code as the kernel writes it.
    pub fn raw(self) -> u32 {
        self as u32
    }
}
