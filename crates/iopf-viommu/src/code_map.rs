//! Response codes across the guest side: the one place they are translated.
//!
//! | from | to | table |
//! |---|---|---|
//! | a VT-d page group response's 4-bit code | PCIe's meaning ([`ResponseCode`]) | [`vtd_to_pcie`] |
//! | PCIe's meaning | the VT-d field | [`pcie_to_vtd`] |
//! | the guest's answer | what the host fault queue takes | [`guest_to_host`] |
//!
//! VT-d uses PCIe's PRG Response codes (Success 0h, Invalid Request 1h, Response Failure Fh;
//! 2h–Eh reserved, read as Response Failure: see [`vtd_to_pcie`]). The host side is a [`iopf_abi::FaultConsumer`], the
//! iommufd form, which takes SUCCESS and INVALID only: Linux's fault fd rejects anything else
//! with EINVAL and leaves the cookie pending. So the guest's Response Failure becomes INVALID,
//! which is also what Linux sends a function whose PRI is shared (a VF) in place of FAILURE: a
//! guest's catastrophic answer must not disable PRI on a host function that other guests or
//! functions share.

use iopf_abi::ResponseCode;

/// The VT-d response code field → PCIe's meaning. A reserved code (2h–Eh) is Response Failure:
/// Linux 6.12's `intel_iommu_page_response()` writes its own `IOMMU_PAGE_RESP_FAILURE` (2)
/// into the field unchanged, so a real guest's failure arrives as 2, and QEMU reads every code
/// but 0 and 1 as failure too. (The failure goes no further: [`guest_to_host`] makes it INVALID.)
pub fn vtd_to_pcie(raw: u8) -> ResponseCode {
    match raw & 0xf {
        0x0 => ResponseCode::Success,
        0x1 => ResponseCode::Invalid,
        _ => ResponseCode::Failure,
    }
}

/// Whether the VT-d code field holds a code the architecture defines (0h, 1h, Fh).
pub fn vtd_code_defined(raw: u8) -> bool {
    matches!(raw, 0x0 | 0x1 | 0xf)
}

/// PCIe's meaning → the VT-d response code field.
pub fn pcie_to_vtd(code: ResponseCode) -> u8 {
    match code {
        ResponseCode::Success => 0x0,
        ResponseCode::Invalid => 0x1,
        ResponseCode::Failure => 0xf,
    }
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
}
