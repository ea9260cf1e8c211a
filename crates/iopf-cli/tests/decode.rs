//! `iopf decode` as a user runs it: records in, readable text or JSON out, and on bad input a
//! message that says what is wrong, with exit status 2.

use assert_cmd::Command;
use iopf_abi::fault::{IommuFault, IOMMU_FAULT_PAGE_REQ};
use iopf_abi::*;
use predicates::prelude::PredicateBooleanExt;
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

/// The records of a `decode --json` document, checked to be a whole, good one.
fn records(out: &[u8]) -> serde_json::Value {
    let doc: serde_json::Value = serde_json::from_slice(out).expect("decode --json prints JSON");
    assert_eq!(doc["schema_version"], 1, "{doc}");
    assert_eq!(doc["error"], serde_json::Value::Null, "{doc}");
    doc["records"].clone()
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
    let v = records(&out);
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
            "record 0: page response v2 grpid 5 pasid 1 code SUCCESS private_data [0xaa, 0xbb]",
        ))
        .stdout(contains(
            "record 1: page response v1 grpid 5 pasid 1 code INVALID",
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
        .stderr(contains("record 0 (byte offset 0): unknown fault type 9"));

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
    let v = records(&out);
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
    let v = records(&out);
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

fn vtd_request() -> iopf_viommu::vtd::VtdPageRequest {
    iopf_viommu::vtd::VtdPageRequest {
        rid: 0x0008,
        pasid: Some(7),
        prg_index: 42,
        perm: Perm::READ | Perm::WRITE,
        addr: 0xdead_b000,
        lpig: true,
        private_data: None,
    }
}

fn vtd_hex(qw: &[u64; 4]) -> String {
    hex_of(&iopf_viommu::vtd::page_request::to_bytes(qw))
}

fn vtd_response(code: ResponseCode) -> iopf_viommu::vtd::PageGroupResponse {
    iopf_viommu::vtd::PageGroupResponse::new(0x0108, Some(7), 42, code, None)
}

#[test]
fn decodes_a_vtd_page_request_as_text_and_json() {
    use iopf_viommu::PrivateDataMode;
    let hex = vtd_hex(&vtd_request().encode(PrivateDataMode::None));
    iopf()
        .args(["decode", "--format", "vtd-page-request", &hex])
        .assert()
        .success()
        .stdout(contains(
            "record 0: VT-d page request rid 00:01.0 (0x0008) pasid 7 prg_index 42 perm READ|WRITE addr 0xdeadb000 lpig true\n",
        ));
    let no_pasid = iopf_viommu::vtd::VtdPageRequest {
        pasid: None,
        perm: Perm::READ | Perm::EXEC | Perm::PRIV,
        lpig: false,
        ..vtd_request()
    };
    let two = [
        hex.clone(),
        vtd_hex(&no_pasid.encode(PrivateDataMode::None)),
    ]
    .concat();
    let out = iopf()
        .args(["decode", "--format", "vtd-page-request", "--json", &two])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v = records(&out);
    assert_eq!(
        v[0],
        serde_json::json!({
            "type": "vtd_page_request",
            "rid": 8,
            "bdf": "00:01.0",
            "pasid": 7,
            "prg_index": 42,
            "perm": ["READ", "WRITE"],
            "addr": "0xdeadb000",
            "lpig": true,
            "private_data": null,
        })
    );
    assert_eq!(v[1]["pasid"], serde_json::Value::Null);
    assert_eq!(v[1]["perm"], serde_json::json!(["READ", "EXEC", "PRIV"]));
    assert_eq!(v[1]["lpig"], false);
    iopf()
        .args(["decode", "--format", "vtd-page-request", &two])
        .assert()
        .success()
        .stdout(contains(
            "record 1: VT-d page request rid 00:01.0 (0x0008) pasid none prg_index 42 perm READ|EXEC|PRIV addr 0xdeadb000 lpig false\n",
        ));
}

#[test]
fn decodes_vtd_page_group_responses_of_every_code() {
    use iopf_viommu::PrivateDataMode;
    let mut reserved = vtd_response(ResponseCode::Failure);
    reserved.raw_code = 2; // what a Linux 6.12 guest writes for its FAILURE
    let all: String = [
        vtd_response(ResponseCode::Success),
        vtd_response(ResponseCode::Invalid),
        vtd_response(ResponseCode::Failure),
        reserved,
    ]
    .iter()
    .map(|r| vtd_hex(&r.encode(PrivateDataMode::None)))
    .collect();
    let prefix = "VT-d page group response rid 01:01.0 (0x0108) pasid 7 prg_index 42";
    iopf()
        .args(["decode", "--format", "vtd-page-group-response", &all])
        .assert()
        .success()
        .stdout(contains(format!(
            "record 0: {prefix} code SUCCESS raw 0x0 lpig true\n"
        )))
        .stdout(contains(format!(
            "record 1: {prefix} code INVALID raw 0x1 lpig true\n"
        )))
        .stdout(contains(format!(
            "record 2: {prefix} code FAILURE raw 0xf lpig true\n"
        )))
        .stdout(contains(format!(
            "record 3: {prefix} code FAILURE raw 0x2 (reserved code, read as FAILURE) lpig true\n"
        )));
    let out = iopf()
        .args([
            "decode",
            "--format",
            "vtd-page-group-response",
            "--json",
            &all,
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v = records(&out);
    assert_eq!(v.as_array().unwrap().len(), 4);
    assert_eq!(v[0]["type"], "vtd_page_group_response");
    assert_eq!(v[0]["bdf"], "01:01.0");
    let codes: Vec<_> = (0..4)
        .map(|i| {
            (
                v[i]["code"].as_str().unwrap().to_string(),
                v[i]["raw_code"].as_u64().unwrap(),
                v[i]["raw_code_reserved"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [
            ("SUCCESS".to_string(), 0, false),
            ("INVALID".to_string(), 1, false),
            ("FAILURE".to_string(), 0xf, false),
            ("FAILURE".to_string(), 2, true),
        ]
    );
    assert_eq!(v[3]["private_data"], serde_json::Value::Null);
}

#[test]
fn vtd_reserved_bits_and_bad_length_are_named() {
    use iopf_viommu::PrivateDataMode;
    let good = vtd_hex(&vtd_request().encode(PrivateDataMode::None));
    let mut qw = vtd_request().encode(PrivateDataMode::None);
    qw[0] |= 1 << 63;
    iopf()
        .args([
            "decode",
            "--format",
            "vtd-page-request",
            &[good.clone(), vtd_hex(&qw)].concat(),
        ])
        .assert()
        .code(2)
        .stdout(contains("record 0: VT-d page request"))
        .stdout(contains("record 1").not())
        .stderr(contains(
            "record 1 (byte offset 32): reserved bits 0x8000000000000000 of qw0 are set",
        ));
    let mut qw = vtd_request().encode(PrivateDataMode::None);
    qw[3] = 0x10;
    iopf()
        .args(["decode", "--format", "vtd-page-request", &vtd_hex(&qw)])
        .assert()
        .code(2)
        .stderr(contains(
            "record 0 (byte offset 0): reserved bits 0x0000000000000010 of qw3 are set",
        ));
    let mut qw = vtd_response(ResponseCode::Success).encode(PrivateDataMode::None);
    qw[1] |= 1 << 12;
    iopf()
        .args([
            "decode",
            "--format",
            "vtd-page-group-response",
            &vtd_hex(&qw),
        ])
        .assert()
        .code(2)
        .stderr(contains(
            "record 0 (byte offset 0): reserved bits 0x0000000000001000 of qw1 are set",
        ));
    for format in ["vtd-page-request", "vtd-page-group-response"] {
        let (name, whole) = if format == "vtd-page-request" {
            ("VT-d page request", good.clone())
        } else {
            (
                "VT-d page group response",
                vtd_hex(&vtd_response(ResponseCode::Success).encode(PrivateDataMode::None)),
            )
        };
        // The whole record is printed; the 8 bytes after it are the bad record 1.
        iopf()
            .args(["decode", "--format", format, &(whole + &"00".repeat(8))])
            .assert()
            .code(2)
            .stdout(contains("record 0: "))
            .stderr(contains(format!(
                "record 1 (byte offset 32): 40 bytes is not a whole number of 32-byte {name} records (1 whole, 8 bytes left over)"
            )));
    }
    // The wrong descriptor type is named too.
    iopf()
        .args(["decode", "--format", "vtd-page-request", &"00".repeat(32)])
        .assert()
        .code(2)
        .stderr(contains(
            "record 0 (byte offset 0): descriptor type 0x0 is not a page request (1)",
        ));
}

/// VT-d 3.x: with --vtd-private-data, qw0 bit 9 (bit 5 of a response) and qw2–3 are private
/// data and round-trip; without it (VT-d 4.0) the same descriptor sets a reserved bit.
#[test]
fn vtd_private_data_mode_round_trips() {
    use iopf_viommu::PrivateDataMode;
    let req = iopf_viommu::vtd::VtdPageRequest {
        private_data: Some([0xaa, 0xbb]),
        ..vtd_request()
    };
    let hex = vtd_hex(&req.encode(PrivateDataMode::Carried));
    iopf()
        .args([
            "decode",
            "--format",
            "vtd-page-request",
            "--vtd-private-data",
            &hex,
        ])
        .assert()
        .success()
        .stdout(contains(
            "perm READ|WRITE addr 0xdeadb000 lpig true private_data [0xaa, 0xbb]\n",
        ));
    let out = iopf()
        .args([
            "decode",
            "--format",
            "vtd-page-request",
            "--vtd-private-data",
            "--json",
            &hex,
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v = records(&out);
    assert_eq!(v[0]["private_data"], serde_json::json!(["0xaa", "0xbb"]));
    iopf()
        .args(["decode", "--format", "vtd-page-request", &hex])
        .assert()
        .code(2)
        .stderr(contains(
            "record 0 (byte offset 0): reserved bits 0x0000000000000200 of qw0 are set",
        ));

    let resp = iopf_viommu::vtd::PageGroupResponse::new(
        0x0108,
        Some(7),
        42,
        ResponseCode::Success,
        Some([0xaa, 0xbb]),
    );
    let hex = vtd_hex(&resp.encode(PrivateDataMode::Carried));
    iopf()
        .args([
            "decode",
            "--format",
            "vtd-page-group-response",
            "--vtd-private-data",
            &hex,
        ])
        .assert()
        .success()
        .stdout(contains(
            "code SUCCESS raw 0x0 lpig true private_data [0xaa, 0xbb]\n",
        ));
    iopf()
        .args(["decode", "--format", "vtd-page-group-response", &hex])
        .assert()
        .code(2)
        .stderr(contains(
            "record 0 (byte offset 0): reserved bits 0x0000000000000020 of qw0 are set",
        ));
    // Without private data, a 3.x reader reads a 4.0 writer's descriptor the same.
    let plain = vtd_hex(&vtd_request().encode(PrivateDataMode::None));
    iopf()
        .args([
            "decode",
            "--format",
            "vtd-page-request",
            "--vtd-private-data",
            "--json",
            &plain,
        ])
        .assert()
        .success()
        .stdout(contains("\"private_data\": null"));
    // The flag means nothing to the other formats, and says so.
    iopf()
        .args(["decode", "--vtd-private-data", &"00".repeat(64)])
        .assert()
        .code(2)
        .stderr(contains("--vtd-private-data applies only to --format"));
}

fn decode_json(format: &str, hex: &str) -> serde_json::Value {
    let out = iopf()
        .args(["decode", "--format", format, "--json", hex])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    records(&out)
}

#[test]
fn decodes_an_smmuv3_pri_queue_entry() {
    use iopf_viommu::smmuv3::PriEntry;
    let e = PriEntry {
        sid: 0x0108,
        ssid: Some(7),
        perm: Perm::READ | Perm::WRITE,
        last: true,
        prg_index: 42,
        addr: 0xdead_b000,
    };
    let hex = hex_of(&e.to_bytes());
    iopf()
        .args(["decode", "--format", "smmuv3-pri-queue-entry", &hex])
        .assert()
        .success()
        .stdout(contains(
            "record 0: SMMUv3 PRI queue entry sid 0x108 (01:01.0) pasid 7 prg_index 42 perm READ|WRITE addr 0xdeadb000 last true\n",
        ));
    let v = decode_json("smmuv3-pri-queue-entry", &hex);
    assert_eq!(
        v[0],
        serde_json::json!({
            "type": "smmuv3_pri_queue_entry",
            "sid": 0x108,
            "bdf": "01:01.0",
            "pasid": 7,
            "prg_index": 42,
            "perm": ["READ", "WRITE"],
            "addr": "0xdeadb000",
            "last": true,
        })
    );
}

#[test]
fn decodes_smmuv3_pri_responses_and_resumes_in_smmuv3_s_own_encodings() {
    use iopf_viommu::smmuv3::Command;
    let succ = Command::PriResp {
        sid: 0x0108,
        ssid: Some(7),
        grpid: 42,
        resp: 2,
    };
    let v = decode_json("smmuv3-cmd-pri-resp", &hex_of(&succ.to_bytes()));
    assert_eq!(v[0]["code"], "SUCCESS");
    assert_eq!(
        (v[0]["raw_code"].as_u64(), v[0]["raw_code_name"].as_str()),
        (Some(2), Some("SUCC"))
    );
    let deny = Command::PriResp {
        sid: 0x0108,
        ssid: None,
        grpid: 42,
        resp: 0,
    };
    iopf()
        .args([
            "decode",
            "--format",
            "smmuv3-cmd-pri-resp",
            &hex_of(&deny.to_bytes()),
        ])
        .assert()
        .success()
        .stdout(contains(
            "pasid none prg_index 42 code INVALID raw 0x0 (DENY)",
        ));
    let abort = Command::Resume {
        sid: 0x10,
        stag: 0x1234,
        resp: 2,
    };
    let v = decode_json("smmuv3-cmd-resume", &hex_of(&abort.to_bytes()));
    assert_eq!(
        (
            v[0]["stag"].as_u64(),
            v[0]["code"].as_str(),
            v[0]["raw_code_name"].as_str()
        ),
        (Some(0x1234), Some("INVALID"), Some("ABORT"))
    );
    // A CMD_RESUME given as a CMD_PRI_RESP says so.
    iopf()
        .args([
            "decode",
            "--format",
            "smmuv3-cmd-pri-resp",
            &hex_of(&abort.to_bytes()),
        ])
        .assert()
        .code(2)
        .stderr(contains(
            "record 0 (byte offset 0): a valid command, but not the one --format names",
        ));
    // RESP = 3 is reserved: CERROR_ILL.
    let mut bad = succ.to_bytes();
    bad[9] |= 0x30;
    iopf()
        .args(["decode", "--format", "smmuv3-cmd-pri-resp", &hex_of(&bad)])
        .assert()
        .code(2)
        .stderr(contains("record 0 (byte offset 0):"));
}

#[test]
fn decodes_amd_ppr_log_entries_and_complete_ppr() {
    use iopf_viommu::amd::{PprCompletion, PprEntry};
    let e = PprEntry {
        devid: 0x0108,
        pasid: Some(7),
        prg_index: 42,
        last: true,
        perm: Perm::READ | Perm::WRITE,
        reserved_flag: false,
        entry_type: 1,
        addr: 0xdead_b000,
    };
    let v = decode_json("amd-ppr-log-entry", &hex_of(&e.to_bytes()));
    assert_eq!(
        v[0],
        serde_json::json!({
            "type": "amd_ppr_log_entry",
            "devid": 0x108,
            "bdf": "01:01.0",
            "pasid": 7,
            "prg_index": 42,
            "perm": ["READ", "WRITE"],
            "addr": "0xdeadb000",
            "last": true,
        })
    );
    // Linux's FAILURE (2) in the status field: read as Response Failure, marked reserved.
    let linux = PprCompletion::with_raw_status(0x0108, Some(7), 42, 2);
    iopf()
        .args(["decode", "--format", "amd-complete-ppr", &hex_of(&linux.to_bytes())])
        .assert()
        .success()
        .stdout(contains(
            "AMD COMPLETE_PPR_REQUEST devid 01:01.0 (0x0108) pasid 7 prg_index 42 code FAILURE raw 0x2 (reserved code, read as FAILURE)",
        ));
    // 15 bytes is not a record.
    iopf()
        .args([
            "decode",
            "--format",
            "amd-complete-ppr",
            &hex_of(&linux.to_bytes()[..15]),
        ])
        .assert()
        .code(2)
        .stderr(contains(
            "not a whole number of 16-byte AMD COMPLETE_PPR_REQUEST records",
        ));
}
