//! The iommufd records match `iommufd-bindings`, cloud-hypervisor's bindgen output of the
//! kernel's `include/uapi/linux/iommufd.h` (the machine's libc headers predate iommufd's fault
//! queue; the kernel tier checks the same records against a running 6.12 kernel).

use std::mem::{align_of, offset_of, size_of};

use iommufd_bindings::iommufd as k;
use iopf_abi::iommufd::*;
use iopf_abi::{Perm, ResponseCode};

#[test]
fn pgfault_matches_bindgen() {
    assert_eq!(size_of::<HwptPgfault>(), size_of::<k::iommu_hwpt_pgfault>());
    assert_eq!(
        align_of::<HwptPgfault>(),
        align_of::<k::iommu_hwpt_pgfault>()
    );
    macro_rules! same {
        ($ours:ident, $theirs:ident) => {
            assert_eq!(
                offset_of!(HwptPgfault, $ours),
                offset_of!(k::iommu_hwpt_pgfault, $theirs),
                stringify!($ours)
            );
        };
    }
    same!(flags, flags);
    same!(dev_id, dev_id);
    same!(pasid, pasid);
    same!(grpid, grpid);
    same!(perm, perm);
    same!(reserved, __reserved);
    same!(addr, addr);
    same!(length, length);
    same!(cookie, cookie);
}

#[test]
fn page_response_and_alloc_match_bindgen() {
    assert_eq!(
        size_of::<HwptPageResponse>(),
        size_of::<k::iommu_hwpt_page_response>()
    );
    assert_eq!(
        offset_of!(HwptPageResponse, cookie),
        offset_of!(k::iommu_hwpt_page_response, cookie)
    );
    assert_eq!(
        offset_of!(HwptPageResponse, code),
        offset_of!(k::iommu_hwpt_page_response, code)
    );
    assert_eq!(
        size_of::<IommuFaultAlloc>(),
        size_of::<k::iommu_fault_alloc>()
    );
    assert_eq!(
        offset_of!(IommuFaultAlloc, size),
        offset_of!(k::iommu_fault_alloc, size)
    );
    assert_eq!(
        offset_of!(IommuFaultAlloc, flags),
        offset_of!(k::iommu_fault_alloc, flags)
    );
    assert_eq!(
        offset_of!(IommuFaultAlloc, out_fault_id),
        offset_of!(k::iommu_fault_alloc, out_fault_id)
    );
    assert_eq!(
        offset_of!(IommuFaultAlloc, out_fault_fd),
        offset_of!(k::iommu_fault_alloc, out_fault_fd)
    );
}

#[test]
fn constants_match_bindgen() {
    assert_eq!(
        PgfaultFlags::PASID_VALID.bits(),
        k::iommu_hwpt_pgfault_flags_IOMMU_PGFAULT_FLAGS_PASID_VALID
    );
    assert_eq!(
        PgfaultFlags::LAST_PAGE.bits(),
        k::iommu_hwpt_pgfault_flags_IOMMU_PGFAULT_FLAGS_LAST_PAGE
    );
    assert_eq!(
        Perm::READ.bits(),
        k::iommu_hwpt_pgfault_perm_IOMMU_PGFAULT_PERM_READ
    );
    assert_eq!(
        Perm::WRITE.bits(),
        k::iommu_hwpt_pgfault_perm_IOMMU_PGFAULT_PERM_WRITE
    );
    assert_eq!(
        Perm::EXEC.bits(),
        k::iommu_hwpt_pgfault_perm_IOMMU_PGFAULT_PERM_EXEC
    );
    assert_eq!(
        Perm::PRIV.bits(),
        k::iommu_hwpt_pgfault_perm_IOMMU_PGFAULT_PERM_PRIV
    );
    assert_eq!(
        ResponseCode::Success.raw(),
        k::iommufd_page_response_code_IOMMUFD_PAGE_RESP_SUCCESS
    );
    assert_eq!(
        ResponseCode::Invalid.raw(),
        k::iommufd_page_response_code_IOMMUFD_PAGE_RESP_INVALID
    );
    assert_eq!(
        IOMMUFD_PAGE_RESP_SUCCESS,
        k::iommufd_page_response_code_IOMMUFD_PAGE_RESP_SUCCESS
    );
    assert_eq!(
        IOMMUFD_PAGE_RESP_INVALID,
        k::iommufd_page_response_code_IOMMUFD_PAGE_RESP_INVALID
    );
    assert_eq!(
        IOMMU_HWPT_FAULT_ID_VALID,
        k::iommufd_hwpt_alloc_flags_IOMMU_HWPT_FAULT_ID_VALID
    );
    assert_eq!(
        IOMMUFD_CMD_FAULT_QUEUE_ALLOC,
        k::IOMMUFD_CMD_FAULT_QUEUE_ALLOC
    );
}
