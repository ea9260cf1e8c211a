//! Response codes across the guest side: the one place they are translated.
//!
//! | from | to | table |
//! |---|---|---|
//! | a 4-bit PCIe PRG Response code field (VT-d page group response, AMD `COMPLETE_PPR_REQUEST` status) | PCIe's meaning ([`ResponseCode`]) | [`pcie_field_to_code`] ([`vtd_to_pcie`], [`amd_to_pcie`]) |
//! | PCIe's meaning | that 4-bit field | [`code_to_pcie_field`] ([`pcie_to_vtd`], [`pcie_to_amd`]) |
//! | SMMUv3 `CMD_PRI_RESP.Resp` (DENY 0, FAIL 1, SUCC 2) | PCIe's meaning | [`smmu_pri_resp_to_pcie`] |
//! | PCIe's meaning | `CMD_PRI_RESP.Resp` | [`pcie_to_smmu_pri_resp`] |
//! | SMMUv3 `CMD_RESUME.Resp` (TERM 0, RETRY 1, ABORT 2) | PCIe's meaning | [`smmu_resume_to_pcie`] |
//! | PCIe's meaning | `CMD_RESUME.Resp` | [`pcie_to_smmu_resume`] |
//! | virtio-iommu RFC `PAGE_RESP.code` (0, 1, 2) | PCIe's meaning | [`virtio_to_pcie`] |
//! | PCIe's meaning | `PAGE_RESP.code` | [`pcie_to_virtio`] |
//! | the guest's answer | what the host fault queue takes | [`guest_to_host`] |
//!
//! VT-d and AMD use PCIe's PRG Response codes (Success 0h, Invalid Request 1h, Response Failure
//! Fh; 2h–Eh reserved, read as Response Failure: see [`pcie_field_to_code`]). SMMUv3 has its own
//! 2-bit encodings, one for PRI responses and one for stalls; their reserved value 3 is not a
//! code (`None`: the command is illegal, `CERROR_ILL`). The host side is a
//! [`iopf_abi::FaultConsumer`], the iommufd form, which takes SUCCESS and INVALID only: Linux's
//! fault fd rejects anything else with EINVAL and leaves the cookie pending. So the guest's
//! Response Failure becomes INVALID, which is also what Linux sends a function whose PRI is
//! shared (a VF) in place of FAILURE: a guest's catastrophic answer must not disable PRI on a
//! host function that other guests or functions share.

use iopf_abi::ResponseCode;

/// A 4-bit PCIe PRG Response code field → PCIe's meaning. A reserved code (2h–Eh) is Response
/// Failure: Linux 6.12's `intel_iommu_page_response()` and `amd_iommu_page_response()` write
/// its own `IOMMU_PAGE_RESP_FAILURE` (2) into the field unchanged, so a real guest's failure
/// arrives as 2, and QEMU reads every VT-d code but 0 and 1 as failure too. (The failure goes
/// no further: [`guest_to_host`] makes it INVALID.)
pub fn pcie_field_to_code(raw: u8) -> ResponseCode {
    match raw & 0xf {
        0x0 => ResponseCode::Success,
        0x1 => ResponseCode::Invalid,
        _ => ResponseCode::Failure,
    }
}

/// Whether a 4-bit PCIe code field holds a code the architecture defines (0h, 1h, Fh).
pub fn pcie_field_defined(raw: u8) -> bool {
    matches!(raw, 0x0 | 0x1 | 0xf)
}

/// PCIe's meaning → the 4-bit PCIe code field.
pub fn code_to_pcie_field(code: ResponseCode) -> u8 {
    match code {
        ResponseCode::Success => 0x0,
        ResponseCode::Invalid => 0x1,
        ResponseCode::Failure => 0xf,
    }
}

/// The VT-d page group response's code field → PCIe's meaning ([`pcie_field_to_code`]).
pub fn vtd_to_pcie(raw: u8) -> ResponseCode {
    pcie_field_to_code(raw)
}

/// Whether the VT-d code field holds a code the architecture defines (0h, 1h, Fh).
pub fn vtd_code_defined(raw: u8) -> bool {
    pcie_field_defined(raw)
}

/// PCIe's meaning → the VT-d response code field.
pub fn pcie_to_vtd(code: ResponseCode) -> u8 {
    code_to_pcie_field(code)
}

/// AMD `COMPLETE_PPR_REQUEST`'s status field (4 bits, PCIe's codes) → PCIe's meaning
/// ([`pcie_field_to_code`]: Linux's FAILURE 2 is read as Response Failure).
pub fn amd_to_pcie(raw: u8) -> ResponseCode {
    pcie_field_to_code(raw)
}

/// PCIe's meaning → AMD `COMPLETE_PPR_REQUEST`'s status field.
pub fn pcie_to_amd(code: ResponseCode) -> u8 {
    code_to_pcie_field(code)
}

/// SMMUv3 `CMD_PRI_RESP`'s `Resp` field → PCIe's meaning: DENY (0) is Invalid Request, FAIL
/// (1) Response Failure, SUCC (2) Success; 3 is reserved (`None`: `CERROR_ILL`).
pub fn smmu_pri_resp_to_pcie(raw: u8) -> Option<ResponseCode> {
    match raw {
        0 => Some(ResponseCode::Invalid),
        1 => Some(ResponseCode::Failure),
        2 => Some(ResponseCode::Success),
        _ => None,
    }
}

/// PCIe's meaning → SMMUv3 `CMD_PRI_RESP`'s `Resp` field.
pub fn pcie_to_smmu_pri_resp(code: ResponseCode) -> u8 {
    match code {
        ResponseCode::Invalid => 0,
        ResponseCode::Failure => 1,
        ResponseCode::Success => 2,
    }
}

/// SMMUv3 `CMD_RESUME`'s `Resp` field → PCIe's meaning: RETRY (1) is Success (the transaction
/// is retried), ABORT (2) and TERM (0) are Invalid Request (the transaction ends in an abort the
/// device sees; nothing is disabled); 3 is reserved (`None`: `CERROR_ILL`).
pub fn smmu_resume_to_pcie(raw: u8) -> Option<ResponseCode> {
    match raw {
        0 => Some(ResponseCode::Invalid),
        1 => Some(ResponseCode::Success),
        2 => Some(ResponseCode::Invalid),
        _ => None,
    }
}

/// PCIe's meaning → SMMUv3 `CMD_RESUME`'s `Resp` field, as Linux's `arm_smmu_page_response()`
/// maps it: Success → RETRY, Invalid and Failure → ABORT.
pub fn pcie_to_smmu_resume(code: ResponseCode) -> u8 {
    match code {
        ResponseCode::Success => 1,
        ResponseCode::Invalid | ResponseCode::Failure => 2,
    }
}

/// PCIe's meaning → the virtio-iommu RFC's `PAGE_RESP` code (Linux's values: Success 0,
/// Invalid 1, Failure 2).
pub fn pcie_to_virtio(code: ResponseCode) -> u16 {
    code.raw() as u16
}

/// The virtio-iommu RFC's `PAGE_RESP` code (Linux's `enum iommu_page_response_code`: 0, 1, 2) →
/// PCIe's meaning; anything else is not a code (`None`: the request is refused with
/// `VIRTIO_IOMMU_S_INVAL`).
pub fn virtio_to_pcie(raw: u16) -> Option<ResponseCode> {
    ResponseCode::decode(u32::from(raw)).ok()
}

/// The guest's answer → the code sent to the host fault queue (SUCCESS or INVALID).
pub fn guest_to_host(code: ResponseCode) -> ResponseCode {
    match code {
        ResponseCode::Success => ResponseCode::Success,
        ResponseCode::Invalid => ResponseCode::Invalid,
        ResponseCode::Failure => ResponseCode::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vtd_success() {
        assert_eq!(vtd_to_pcie(0), ResponseCode::Success);
        assert_eq!(pcie_to_vtd(ResponseCode::Success), 0);
    }

    #[test]
    fn vtd_invalid() {
        assert_eq!(vtd_to_pcie(1), ResponseCode::Invalid);
        assert_eq!(pcie_to_vtd(ResponseCode::Invalid), 1);
    }

    #[test]
    fn vtd_failure_is_0xf_not_linux_2() {
        assert_eq!(vtd_to_pcie(0xf), ResponseCode::Failure);
        assert!(vtd_code_defined(0xf));
        assert_eq!(pcie_to_vtd(ResponseCode::Failure), 0xf);
    }

    #[test]
    fn vtd_reserved_codes_are_failure() {
        // Linux's `IOMMU_PAGE_RESP_FAILURE` is 2: reserved on the VT-d wire, read as failure.
        for raw in 2..=0xe {
            assert_eq!(vtd_to_pcie(raw), ResponseCode::Failure, "{raw:#x}");
            assert!(!vtd_code_defined(raw));
        }
    }

    #[test]
    fn guest_success_to_host() {
        assert_eq!(guest_to_host(ResponseCode::Success), ResponseCode::Success);
    }

    #[test]
    fn guest_invalid_to_host() {
        assert_eq!(guest_to_host(ResponseCode::Invalid), ResponseCode::Invalid);
    }

    #[test]
    fn guest_failure_to_host_is_invalid() {
        assert_eq!(guest_to_host(ResponseCode::Failure), ResponseCode::Invalid);
    }
    #[test]
    fn amd_uses_the_pcie_field_and_reads_linux_2_as_failure() {
        assert_eq!(amd_to_pcie(0), ResponseCode::Success);
        assert_eq!(amd_to_pcie(1), ResponseCode::Invalid);
        assert_eq!(amd_to_pcie(0xf), ResponseCode::Failure);
        assert_eq!(amd_to_pcie(2), ResponseCode::Failure);
        assert_eq!(pcie_to_amd(ResponseCode::Success), 0);
        assert_eq!(pcie_to_amd(ResponseCode::Invalid), 1);
        assert_eq!(pcie_to_amd(ResponseCode::Failure), 0xf);
    }

    #[test]
    fn smmu_pri_deny_is_invalid() {
        assert_eq!(smmu_pri_resp_to_pcie(0), Some(ResponseCode::Invalid));
        assert_eq!(pcie_to_smmu_pri_resp(ResponseCode::Invalid), 0);
    }

    #[test]
    fn smmu_pri_fail_is_failure() {
        assert_eq!(smmu_pri_resp_to_pcie(1), Some(ResponseCode::Failure));
        assert_eq!(pcie_to_smmu_pri_resp(ResponseCode::Failure), 1);
    }

    #[test]
    fn smmu_pri_succ_is_success() {
        assert_eq!(smmu_pri_resp_to_pcie(2), Some(ResponseCode::Success));
        assert_eq!(pcie_to_smmu_pri_resp(ResponseCode::Success), 2);
    }

    #[test]
    fn smmu_pri_resp_3_is_not_a_code() {
        assert_eq!(smmu_pri_resp_to_pcie(3), None);
    }

    #[test]
    fn smmu_resume_retry_is_success() {
        assert_eq!(smmu_resume_to_pcie(1), Some(ResponseCode::Success));
        assert_eq!(pcie_to_smmu_resume(ResponseCode::Success), 1);
    }

    #[test]
    fn smmu_resume_abort_and_term_are_invalid() {
        assert_eq!(smmu_resume_to_pcie(2), Some(ResponseCode::Invalid));
        assert_eq!(smmu_resume_to_pcie(0), Some(ResponseCode::Invalid));
        assert_eq!(pcie_to_smmu_resume(ResponseCode::Invalid), 2);
        assert_eq!(pcie_to_smmu_resume(ResponseCode::Failure), 2);
    }

    #[test]
    fn smmu_resume_3_is_not_a_code() {
        assert_eq!(smmu_resume_to_pcie(3), None);
    }

    #[test]
    fn virtio_codes_are_linux_s() {
        assert_eq!(virtio_to_pcie(0), Some(ResponseCode::Success));
        assert_eq!(virtio_to_pcie(1), Some(ResponseCode::Invalid));
        assert_eq!(virtio_to_pcie(2), Some(ResponseCode::Failure));
        assert_eq!(virtio_to_pcie(3), None);
        for code in [
            ResponseCode::Success,
            ResponseCode::Invalid,
            ResponseCode::Failure,
        ] {
            assert_eq!(virtio_to_pcie(pcie_to_virtio(code)), Some(code));
        }
        assert_eq!(pcie_to_virtio(ResponseCode::Failure), 2);
        assert_eq!(virtio_to_pcie(0xf), None);
    }

    #[test]
    fn every_guest_code_of_every_architecture_reaches_the_host_as_success_or_invalid() {
        let all = (0..=0xfu8)
            .map(pcie_field_to_code)
            .chain((0..4).filter_map(smmu_pri_resp_to_pcie))
            .chain((0..4).filter_map(smmu_resume_to_pcie))
            .chain((0..4u16).filter_map(virtio_to_pcie));
        for code in all {
            assert_ne!(guest_to_host(code), ResponseCode::Failure);
        }
    }
}
