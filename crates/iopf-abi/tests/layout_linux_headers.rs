//! The records are byte-identical to Linux: a C program compiled against this machine's own
//! `<linux/iommu.h>` and `<linux/vfio.h>` prints `sizeof`, `offsetof` of every field and every
//! constant, and each must equal the Rust definition.
//!
//! `struct vfio_iommu_page_response` and the version 2 extension were never merged, so the C
//! program declares them exactly as the seed agrees on (with `private_data` as four `__u32`, see
//! `iopf_abi::response`), wrapping the header's own `struct iommu_page_response` for version 1.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::process::Command;

use iopf_abi::fault::*;
use iopf_abi::response::*;
use iopf_abi::*;

const C_PROGRAM: &str = r#"
#include <stddef.h>
#include <stdio.h>
#include <linux/types.h>
#include <linux/iommu.h>
#include <linux/vfio.h>

/* The seed's extension: version 2 appends the request's private data. */
#define IOMMU_PAGE_RESP_VERSION_2 2
#define IOMMU_PAGE_RESP_PRIV_DATA (1 << 1)
struct iommu_page_response_v2 {
	struct iommu_page_response v1;
	__u32 private_data[4];
};
struct vfio_iommu_page_response_v1 { __u32 argsz; struct iommu_page_response pr; };
struct vfio_iommu_page_response { __u32 argsz; struct iommu_page_response_v2 pr; };

#define S(t) printf("sizeof %s %zu\n", #t, sizeof(struct t)); \
             printf("alignof %s %zu\n", #t, _Alignof(struct t));
#define O(t, f) printf("offsetof %s.%s %zu\n", #t, #f, offsetof(struct t, f));
#define C(c) printf("const %s %lld\n", #c, (long long)(c));

int main(void) {
	S(iommu_fault) O(iommu_fault, type) O(iommu_fault, padding)
	O(iommu_fault, event) O(iommu_fault, prm) O(iommu_fault, padding2)
	S(iommu_fault_unrecoverable)
	O(iommu_fault_unrecoverable, reason) O(iommu_fault_unrecoverable, flags)
	O(iommu_fault_unrecoverable, pasid) O(iommu_fault_unrecoverable, perm)
	O(iommu_fault_unrecoverable, addr) O(iommu_fault_unrecoverable, fetch_addr)
	S(iommu_fault_page_request)
	O(iommu_fault_page_request, flags) O(iommu_fault_page_request, pasid)
	O(iommu_fault_page_request, grpid) O(iommu_fault_page_request, perm)
	O(iommu_fault_page_request, addr) O(iommu_fault_page_request, private_data)
	S(iommu_page_response)
	O(iommu_page_response, argsz) O(iommu_page_response, version)
	O(iommu_page_response, flags) O(iommu_page_response, pasid)
	O(iommu_page_response, grpid) O(iommu_page_response, code)
	S(iommu_page_response_v2) O(iommu_page_response_v2, private_data)
	S(vfio_iommu_page_response_v1) O(vfio_iommu_page_response_v1, pr)
	S(vfio_iommu_page_response) O(vfio_iommu_page_response, pr)
	C(IOMMU_FAULT_PERM_READ) C(IOMMU_FAULT_PERM_WRITE) C(IOMMU_FAULT_PERM_EXEC) C(IOMMU_FAULT_PERM_PRIV)
	C(IOMMU_FAULT_DMA_UNRECOV) C(IOMMU_FAULT_PAGE_REQ)
	C(IOMMU_FAULT_REASON_UNKNOWN) C(IOMMU_FAULT_REASON_PASID_FETCH)
	C(IOMMU_FAULT_REASON_BAD_PASID_ENTRY) C(IOMMU_FAULT_REASON_PASID_INVALID)
	C(IOMMU_FAULT_REASON_WALK_EABT) C(IOMMU_FAULT_REASON_PTE_FETCH)
	C(IOMMU_FAULT_REASON_PERMISSION) C(IOMMU_FAULT_REASON_ACCESS)
	C(IOMMU_FAULT_REASON_OOR_ADDRESS)
	C(IOMMU_FAULT_UNRECOV_PASID_VALID) C(IOMMU_FAULT_UNRECOV_ADDR_VALID)
	C(IOMMU_FAULT_UNRECOV_FETCH_ADDR_VALID)
	C(IOMMU_FAULT_PAGE_REQUEST_PASID_VALID) C(IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE)
	C(IOMMU_FAULT_PAGE_REQUEST_PRIV_DATA) C(IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID)
	C(IOMMU_PAGE_RESP_SUCCESS) C(IOMMU_PAGE_RESP_INVALID) C(IOMMU_PAGE_RESP_FAILURE)
	C(IOMMU_PAGE_RESP_VERSION_1) C(IOMMU_PAGE_RESP_VERSION_2)
	C(IOMMU_PAGE_RESP_PASID_VALID) C(IOMMU_PAGE_RESP_PRIV_DATA)
	return 0;
}
"#;

/// What the Rust definitions say, keyed like the C program's lines.
fn rust_layout() -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: usize| m.insert(k.to_string(), v as i64);
    put("sizeof iommu_fault", size_of::<IommuFault>());
    put("alignof iommu_fault", std::mem::align_of::<IommuFault>());
    put("offsetof iommu_fault.type", offset_of!(IommuFault, type_));
    put(
        "offsetof iommu_fault.padding",
        offset_of!(IommuFault, padding),
    );
    for member in ["event", "prm", "padding2"] {
        put(
            &format!("offsetof iommu_fault.{member}"),
            offset_of!(IommuFault, payload),
        );
    }
    type U = IommuFaultUnrecoverable;
    put("sizeof iommu_fault_unrecoverable", size_of::<U>());
    put(
        "alignof iommu_fault_unrecoverable",
        std::mem::align_of::<U>(),
    );
    put(
        "offsetof iommu_fault_unrecoverable.reason",
        offset_of!(U, reason),
    );
    put(
        "offsetof iommu_fault_unrecoverable.flags",
        offset_of!(U, flags),
    );
    put(
        "offsetof iommu_fault_unrecoverable.pasid",
        offset_of!(U, pasid),
    );
    put(
        "offsetof iommu_fault_unrecoverable.perm",
        offset_of!(U, perm),
    );
    put(
        "offsetof iommu_fault_unrecoverable.addr",
        offset_of!(U, addr),
    );
    put(
        "offsetof iommu_fault_unrecoverable.fetch_addr",
        offset_of!(U, fetch_addr),
    );
    type P = IommuFaultPageRequest;
    put("sizeof iommu_fault_page_request", size_of::<P>());
    put(
        "alignof iommu_fault_page_request",
        std::mem::align_of::<P>(),
    );
    put(
        "offsetof iommu_fault_page_request.flags",
        offset_of!(P, flags),
    );
    put(
        "offsetof iommu_fault_page_request.pasid",
        offset_of!(P, pasid),
    );
    put(
        "offsetof iommu_fault_page_request.grpid",
        offset_of!(P, grpid),
    );
    put(
        "offsetof iommu_fault_page_request.perm",
        offset_of!(P, perm),
    );
    put(
        "offsetof iommu_fault_page_request.addr",
        offset_of!(P, addr),
    );
    put(
        "offsetof iommu_fault_page_request.private_data",
        offset_of!(P, private_data),
    );
    type R1 = IommuPageResponseV1;
    put("sizeof iommu_page_response", size_of::<R1>());
    put("alignof iommu_page_response", std::mem::align_of::<R1>());
    put("offsetof iommu_page_response.argsz", offset_of!(R1, argsz));
    put(
        "offsetof iommu_page_response.version",
        offset_of!(R1, version),
    );
    put("offsetof iommu_page_response.flags", offset_of!(R1, flags));
    put("offsetof iommu_page_response.pasid", offset_of!(R1, pasid));
    put("offsetof iommu_page_response.grpid", offset_of!(R1, grpid));
    put("offsetof iommu_page_response.code", offset_of!(R1, code));
    type R2 = IommuPageResponse;
    put("sizeof iommu_page_response_v2", size_of::<R2>());
    put("alignof iommu_page_response_v2", std::mem::align_of::<R2>());
    put(
        "offsetof iommu_page_response_v2.private_data",
        offset_of!(R2, private_data),
    );
    put(
        "sizeof vfio_iommu_page_response_v1",
        VFIO_PAGE_RESPONSE_V1_SIZE,
    );
    put(
        "alignof vfio_iommu_page_response_v1",
        std::mem::align_of::<VfioIommuPageResponse>(),
    );
    put(
        "offsetof vfio_iommu_page_response_v1.pr",
        offset_of!(VfioIommuPageResponse, pr),
    );
    put(
        "sizeof vfio_iommu_page_response",
        size_of::<VfioIommuPageResponse>(),
    );
    put(
        "alignof vfio_iommu_page_response",
        std::mem::align_of::<VfioIommuPageResponse>(),
    );
    put(
        "offsetof vfio_iommu_page_response.pr",
        offset_of!(VfioIommuPageResponse, pr),
    );

    let mut c = |k: &str, v: u32| m.insert(format!("const {k}"), i64::from(v));
    c("IOMMU_FAULT_PERM_READ", Perm::READ.bits());
    c("IOMMU_FAULT_PERM_WRITE", Perm::WRITE.bits());
    c("IOMMU_FAULT_PERM_EXEC", Perm::EXEC.bits());
    c("IOMMU_FAULT_PERM_PRIV", Perm::PRIV.bits());
    c("IOMMU_FAULT_DMA_UNRECOV", IOMMU_FAULT_DMA_UNRECOV);
    c("IOMMU_FAULT_PAGE_REQ", IOMMU_FAULT_PAGE_REQ);
    let reasons = [
        ("UNKNOWN", FaultReason::Unknown),
        ("PASID_FETCH", FaultReason::PasidFetch),
        ("BAD_PASID_ENTRY", FaultReason::BadPasidEntry),
        ("PASID_INVALID", FaultReason::PasidInvalid),
        ("WALK_EABT", FaultReason::WalkEabt),
        ("PTE_FETCH", FaultReason::PteFetch),
        ("PERMISSION", FaultReason::Permission),
        ("ACCESS", FaultReason::Access),
        ("OOR_ADDRESS", FaultReason::OorAddress),
    ];
    for (name, r) in reasons {
        c(&format!("IOMMU_FAULT_REASON_{name}"), r as u32);
    }
    c(
        "IOMMU_FAULT_UNRECOV_PASID_VALID",
        UnrecoverableFlags::PASID_VALID.bits(),
    );
    c(
        "IOMMU_FAULT_UNRECOV_ADDR_VALID",
        UnrecoverableFlags::ADDR_VALID.bits(),
    );
    c(
        "IOMMU_FAULT_UNRECOV_FETCH_ADDR_VALID",
        UnrecoverableFlags::FETCH_ADDR_VALID.bits(),
    );
    c(
        "IOMMU_FAULT_PAGE_REQUEST_PASID_VALID",
        PageRequestFlags::PASID_VALID.bits(),
    );
    c(
        "IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE",
        PageRequestFlags::LAST_PAGE.bits(),
    );
    c(
        "IOMMU_FAULT_PAGE_REQUEST_PRIV_DATA",
        PageRequestFlags::PRIV_DATA.bits(),
    );
    c(
        "IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID",
        PageRequestFlags::RESPONSE_NEEDS_PASID.bits(),
    );
    c("IOMMU_PAGE_RESP_SUCCESS", ResponseCode::Success.raw());
    c("IOMMU_PAGE_RESP_INVALID", ResponseCode::Invalid.raw());
    c("IOMMU_PAGE_RESP_FAILURE", ResponseCode::Failure.raw());
    c("IOMMU_PAGE_RESP_VERSION_1", IOMMU_PAGE_RESP_VERSION_1);
    c("IOMMU_PAGE_RESP_VERSION_2", IOMMU_PAGE_RESP_VERSION_2);
    c(
        "IOMMU_PAGE_RESP_PASID_VALID",
        ResponseFlags::PASID_VALID.bits(),
    );
    c("IOMMU_PAGE_RESP_PRIV_DATA", ResponseFlags::PRIV_DATA.bits());
    m
}

#[test]
fn records_match_the_linux_uapi_headers() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("iopf-abi-layout");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("layout.c");
    let bin = dir.join("layout");
    std::fs::write(&src, C_PROGRAM).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=gnu11", "-Wall", "-Werror", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cc} (scripts/install-deps.sh installs gcc): {e}"));
    assert!(status.success(), "the C layout program did not compile");
    let out = Command::new(&bin).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let c: BTreeMap<String, i64> = text
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();
    let rust = rust_layout();
    let mismatches: Vec<String> = c
        .iter()
        .filter(|(k, v)| rust.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: C {v}, Rust {:?}", rust.get(k)))
        .collect();
    assert!(
        mismatches.is_empty(),
        "layout differs from Linux: {mismatches:#?}"
    );
    let unchecked: Vec<&String> = rust.keys().filter(|k| !c.contains_key(*k)).collect();
    assert!(
        unchecked.is_empty(),
        "Rust facts the C program does not check: {unchecked:?}"
    );
}
