//! `iopf decode` as a user runs it: records in, readable text or JSON out, and on bad input a
//! message that says what is wrong, with exit status 2.

use assert_cmd::Command;
use iopf_abi::fault::{IommuFault, IOMMU_FAULT_PAGE_REQ};
use iopf_abi::*;
use predicates::str::contains;
use zerocopy::IntoBytes;

fn iopf() -> Command {
    Command::cargo_bin("iopf").expect("cargo builds the iopf binary for its integration tests")
}

fn request() -> Fault {
    Fault::PageRequest(PageRequest {
        flags: PageRequestFlags::PASID_VALID | PageRequestFlags::LAST_PAGE,
        pasid: 7,
        grpid: 42,
        perm: Perm::READ | Perm::WRITE,
        addr: 0xdead_b000,
        private_data: [0; 2],
    })
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn decodes_a_page_request_as_text() {
    let hex = hex_of(request().encode().as_bytes());
    iopf()
        .args(["decode", &hex])
        .assert()
        .success()
        .stdout(contains("page request grpid 42 pasid 7 addr 0xdeadb000"));
}

#[test]
fn json_output_is_the_decoded_record() {
    let two = [request().encode(), request().encode()];
    let out = iopf()
        .args(["decode", "--json", &hex_of(two.as_bytes())])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["type"], "page_request");
    assert_eq!(v[0]["grpid"], 42);
    assert_eq!(
        v[0]["flags"],
        serde_json::json!(["PASID_VALID", "LAST_PAGE"])
    );
    assert_eq!(v[1]["perm"], serde_json::json!(["READ", "WRITE"]));
}

#[test]
fn reads_hex_from_stdin_and_binary_files() {
    let rec = PgFault {
        flags: iopf_abi::iommufd::PgfaultFlags::LAST_PAGE,
        dev_id: 1,
        pasid: 0,
        grpid: 3,
        perm: Perm::READ,
        addr: 0x1000,
        length: 0,
        cookie: 9,
        reserved: 0,
    }
    .encode();
    iopf()
        .args(["decode", "--format", "pgfault"])
        .write_stdin(format!("0x{}\n", hex_of(rec.as_bytes())))
        .assert()
        .success()
        .stdout(contains("cookie 9"));
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), rec.as_bytes()).unwrap();
    iopf()
        .args(["decode", "--format", "pgfault", "--file"])
        .arg(file.path())
        .assert()
        .success()
        .stdout(contains("grpid 3"));
}

#[test]
fn responses_of_both_versions() {
    let mut buf = [0u8; 44];
    let r = PageResponse {
        version: 2,
        pasid: Some(1),
        grpid: 5,
        code: ResponseCode::Success,
        private_data: Some([0xaa, 0xbb]),
    };
    let n = r.write_vfio(44, &mut buf).unwrap();
    let v1 = PageResponse {
        version: 1,
        private_data: None,
        code: ResponseCode::Invalid,
        ..r
    };
    let mut buf1 = [0u8; 28];
    let n1 = v1.write_vfio(28, &mut buf1).unwrap();
    let both = [&buf[..n], &buf1[..n1]].concat();
    iopf()
        .args(["decode", "--format", "vfio-response", &hex_of(&both)])
        .assert()
        .success()
        .stdout(contains(
            "record 0: page response v2 grpid 5 pasid 1 code Success private_data [0xaa, 0xbb]",
        ))
        .stdout(contains(
            "record 1: page response v1 grpid 5 pasid 1 code Invalid",
        ));
}

#[test]
fn wrong_size_is_named() {
    iopf()
        .args(["decode", &"00".repeat(63)])
        .assert()
        .code(2)
        .stderr(contains(
            "63 bytes is not a whole number of 64-byte iommu_fault records",
        ));
}

#[test]
fn unknown_type_reserved_bytes_and_flags_are_named() {
    let mut rec = request().encode();
    rec.type_ = 9;
    iopf()
        .args(["decode", &hex_of(rec.as_bytes())])
        .assert()
        .code(2)
        .stderr(contains("record 0: unknown fault type 9"));

    let mut rec = request().encode();
    rec.padding = 1;
    iopf()
        .args(["decode", &hex_of(rec.as_bytes())])
        .assert()
        .code(2)
        .stderr(contains("iommu_fault.padding is reserved and must be zero"));

    let mut rec = request().encode();
    rec.payload[55] = 1;
    iopf()
        .args(["decode", &hex_of(rec.as_bytes())])
        .assert()
        .code(2)
        .stderr(contains("iommu_fault.padding2 is reserved"));

    let mut rec = IommuFault {
        type_: IOMMU_FAULT_PAGE_REQ,
        padding: 0,
        payload: [0; 56],
    };
    rec.payload[0] = 0x30; // flags: bits 4 and 5, unknown
    iopf()
        .args(["decode", &hex_of(rec.as_bytes())])
        .assert()
        .code(2)
        .stderr(contains(
            "iommu_fault_page_request.flags has unknown bits 0x30",
        ));
}

/// Liberal in what kernels emit: a record as Linux ≥ 6.11 writes it for a VT-d or AMD request,
/// with the kernel's internal RESPONSE_NEEDS_PASID (bit 2) in `flags`, decodes, and the bit is
/// shown (in words and in JSON), not refused.
#[test]
fn a_kernel_records_unnamed_flag_bits_are_shown_not_refused() {
    let mut rec = PgFault {
        flags: iopf_abi::iommufd::PgfaultFlags::PASID_VALID
            | iopf_abi::iommufd::PgfaultFlags::LAST_PAGE,
        dev_id: 1,
        pasid: 5,
        grpid: 3,
        perm: Perm::READ,
        addr: 0x1000,
        length: 0,
        cookie: 9,
        reserved: 0,
    }
    .encode();
    rec.flags |= iopf_abi::KERNEL_RESPONSE_NEEDS_PASID;
    iopf()
        .args(["decode", "--format", "pgfault", &hex_of(rec.as_bytes())])
        .assert()
        .success()
        .stdout(contains("cookie 9"))
        .stdout(contains(
            "outside the uAPI, kept: flag bits 0x4 (bit 2: the kernel's IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID)",
        ));
    let out = iopf()
        .args([
            "decode",
            "--json",
            "--format",
            "pgfault",
            &hex_of(rec.as_bytes()),
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v[0]["unnamed"]["flags"], 4);
    assert_eq!(v[0]["cookie"], 9);
    // A record with nothing outside the uAPI has no "unnamed" at all.
    rec.flags &= !iopf_abi::KERNEL_RESPONSE_NEEDS_PASID;
    let out = iopf()
        .args([
            "decode",
            "--json",
            "--format",
            "pgfault",
            &hex_of(rec.as_bytes()),
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(v[0].get("unnamed").is_none());
}

#[test]
fn bad_hex_and_no_input() {
    iopf()
        .args(["decode", "zz"])
        .assert()
        .code(2)
        .stderr(contains("'z' at hex digit 0 is not a hex digit"));
    iopf()
        .args(["decode"])
        .write_stdin("")
        .assert()
        .code(2)
        .stderr(contains("no input"));
    iopf()
        .args(["decode", "--format", "hwpt-response", "0100000002000000"])
        .assert()
        .code(2)
        .stderr(contains("response code 2 is not accepted here"));
}
