//! How the program writes JSON: one language for every command.
//!
//! * Every document (`run --json`'s report, `decode --json`'s records, each line of `serve
//!   --json` and `attach --json`) is an object whose first key is `"schema_version":`
//!   [`SCHEMA_VERSION`]. The number grows when a key changes meaning or goes away; new keys may
//!   appear without it.
//! * Keys are snake case.
//! * Addresses and other 64-bit words a person reads in hex (`addr`, `fetch_addr`,
//!   `private_data`) are hex strings, `"0x7000"`: JSON numbers past 2^53 lose bits in many
//!   readers.
//! * Response codes are the kernel's names, `"SUCCESS"`, `"INVALID"`, `"FAILURE"`, as in the
//!   text output; flags and permissions are lists of the uAPI's flag names; fault reasons are the
//!   uAPI's `IOMMU_FAULT_REASON_*` names without the prefix (`"PERMISSION"`).

use iopf_abi::fault::FaultReason;
use iopf_abi::ResponseCode;
use serde::Serialize;

use crate::error::CliError;

/// The version of every JSON document the program prints.
pub const SCHEMA_VERSION: u32 = 1;

/// A JSON document: `schema_version`, then the body's own keys.
#[derive(Serialize)]
struct Document<'a, T: Serialize> {
    schema_version: u32,
    #[serde(flatten)]
    body: &'a T,
}

/// `body` as one line of JSON, `schema_version` first.
pub fn line<T: Serialize>(body: &T) -> Result<String, CliError> {
    serde_json::to_string(&Document {
        schema_version: SCHEMA_VERSION,
        body,
    })
    .map_err(|e| CliError::Run(format!("cannot write JSON: {e}")))
}

/// `body` as indented JSON, `schema_version` first.
pub fn pretty<T: Serialize>(body: &T) -> Result<String, CliError> {
    serde_json::to_string_pretty(&Document {
        schema_version: SCHEMA_VERSION,
        body,
    })
    .map_err(|e| CliError::Run(format!("cannot write JSON: {e}")))
}

/// The kernel's name of a response code (`IOMMU_PAGE_RESP_SUCCESS` → `SUCCESS`), as every
/// command writes it, in text and in JSON.
pub fn code_name(code: ResponseCode) -> &'static str {
    match code {
        ResponseCode::Success => "SUCCESS",
        ResponseCode::Invalid => "INVALID",
        ResponseCode::Failure => "FAILURE",
    }
}

/// The uAPI's name of a fault reason without its `IOMMU_FAULT_REASON_` prefix.
pub fn reason_name(reason: FaultReason) -> &'static str {
    match reason {
        FaultReason::Unknown => "UNKNOWN",
        FaultReason::PasidFetch => "PASID_FETCH",
        FaultReason::BadPasidEntry => "BAD_PASID_ENTRY",
        FaultReason::PasidInvalid => "PASID_INVALID",
        FaultReason::WalkEabt => "WALK_EABT",
        FaultReason::PteFetch => "PTE_FETCH",
        FaultReason::Permission => "PERMISSION",
        FaultReason::Access => "ACCESS",
        FaultReason::OorAddress => "OOR_ADDRESS",
    }
}

/// A Rust variant name in snake case (`BacklogFull` → `backlog_full`), for keys named after
/// enum variants.
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A 64-bit word as a hex string, `0x7000`.
pub fn hex(v: u64) -> String {
    format!("{v:#x}")
}

/// Serde helpers for `#[serde(serialize_with = ...)]`.
pub mod ser {
    use iopf_abi::fault::FaultReason;
    use iopf_abi::ResponseCode;
    use serde::Serializer;

    /// A `u64` as a hex string.
    pub fn hex<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex(*v))
    }

    /// An optional `u64` as a hex string or null.
    pub fn hex_opt<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => hex(v, s),
            None => s.serialize_none(),
        }
    }

    /// Two words (private data) as two hex strings.
    pub fn hex_pair<S: Serializer>(v: &[u64; 2], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|w| super::hex(*w)))
    }

    /// Optional private data as two hex strings or null.
    pub fn hex_pair_opt<S: Serializer>(v: &Option<[u64; 2]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => hex_pair(v, s),
            None => s.serialize_none(),
        }
    }

    /// A response code by its kernel name.
    pub fn code<S: Serializer>(c: &ResponseCode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(super::code_name(*c))
    }

    /// An optional response code by its kernel name, or null.
    pub fn code_opt<S: Serializer>(c: &Option<ResponseCode>, s: S) -> Result<S::Ok, S::Error> {
        match c {
            Some(c) => code(c, s),
            None => s.serialize_none(),
        }
    }

    /// A fault reason by its uAPI name.
    pub fn reason<S: Serializer>(r: &FaultReason, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(super::reason_name(*r))
    }
}

/// The JSON form of the records iopf reads and writes (`iopf_abi`'s types, with addresses in hex
/// and codes by name).
pub mod records {
    use iopf_abi::fault::UnrecoverableFlags;
    use iopf_abi::{
        Fault, FaultReason, PageRequest, PageRequestFlags, PageResponse, Perm, PgFault,
        PgfaultFlags, ResponseCode, Unnamed, Unrecoverable,
    };
    use serde::Serialize;

    use super::ser;

    /// A decoded `struct iommu_fault`.
    #[derive(Debug, Serialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub enum FaultOut {
        /// `IOMMU_FAULT_DMA_UNRECOV`.
        Unrecoverable(UnrecoverableOut),
        /// `IOMMU_FAULT_PAGE_REQ`.
        PageRequest(PageRequestOut),
    }

    impl From<&Fault> for FaultOut {
        fn from(f: &Fault) -> FaultOut {
            match f {
                Fault::Unrecoverable(u) => FaultOut::Unrecoverable(u.into()),
                Fault::PageRequest(p) => FaultOut::PageRequest(p.into()),
            }
        }
    }

    /// An unrecoverable fault.
    #[derive(Debug, Serialize)]
    pub struct UnrecoverableOut {
        #[serde(serialize_with = "ser::reason")]
        reason: FaultReason,
        flags: UnrecoverableFlags,
        pasid: u32,
        perm: Perm,
        #[serde(serialize_with = "ser::hex")]
        addr: u64,
        #[serde(serialize_with = "ser::hex")]
        fetch_addr: u64,
    }

    impl From<&Unrecoverable> for UnrecoverableOut {
        fn from(u: &Unrecoverable) -> UnrecoverableOut {
            UnrecoverableOut {
                reason: u.reason,
                flags: u.flags,
                pasid: u.pasid,
                perm: u.perm,
                addr: u.addr,
                fetch_addr: u.fetch_addr,
            }
        }
    }

    /// A page request.
    #[derive(Debug, Serialize)]
    pub struct PageRequestOut {
        flags: PageRequestFlags,
        pasid: u32,
        grpid: u32,
        perm: Perm,
        #[serde(serialize_with = "ser::hex")]
        addr: u64,
        #[serde(serialize_with = "ser::hex_pair")]
        private_data: [u64; 2],
    }

    impl From<&PageRequest> for PageRequestOut {
        fn from(p: &PageRequest) -> PageRequestOut {
            PageRequestOut {
                flags: p.flags,
                pasid: p.pasid,
                grpid: p.grpid,
                perm: p.perm,
                addr: p.addr,
                private_data: p.private_data,
            }
        }
    }

    /// A page response (`iommu_page_response` or VFIO's).
    #[derive(Debug, Serialize)]
    pub struct PageResponseOut {
        version: u32,
        pasid: Option<u32>,
        grpid: u32,
        #[serde(serialize_with = "ser::code")]
        code: ResponseCode,
        #[serde(serialize_with = "ser::hex_pair_opt")]
        private_data: Option<[u64; 2]>,
    }

    impl From<&PageResponse> for PageResponseOut {
        fn from(r: &PageResponse) -> PageResponseOut {
            PageResponseOut {
                version: r.version,
                pasid: r.pasid,
                grpid: r.grpid,
                code: r.code,
                private_data: r.private_data,
            }
        }
    }

    /// An `iommu_hwpt_pgfault`, with what it carries outside the uAPI.
    #[derive(Debug, Serialize)]
    pub struct PgfaultOut {
        flags: PgfaultFlags,
        dev_id: u32,
        pasid: u32,
        grpid: u32,
        perm: Perm,
        #[serde(serialize_with = "ser::hex")]
        addr: u64,
        length: u32,
        cookie: u32,
        reserved: u32,
        /// What the record carries outside the uAPI (absent when nothing).
        #[serde(skip_serializing_if = "Unnamed::is_empty")]
        unnamed: Unnamed,
    }

    impl From<&PgFault> for PgfaultOut {
        fn from(p: &PgFault) -> PgfaultOut {
            PgfaultOut {
                flags: p.flags,
                dev_id: p.dev_id,
                pasid: p.pasid,
                grpid: p.grpid,
                perm: p.perm,
                addr: p.addr,
                length: p.length,
                cookie: p.cookie,
                reserved: p.reserved,
                unnamed: p.unnamed(),
            }
        }
    }

    /// An `iommu_hwpt_page_response`.
    #[derive(Debug, Serialize)]
    pub struct HwptResponseOut {
        cookie: u32,
        #[serde(serialize_with = "ser::code")]
        code: ResponseCode,
    }

    impl From<&iopf_abi::IommufdResponse> for HwptResponseOut {
        fn from(r: &iopf_abi::IommufdResponse) -> HwptResponseOut {
            HwptResponseOut {
                cookie: r.cookie,
                code: r.code,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_names_become_snake_case() {
        assert_eq!(snake_case("BacklogFull"), "backlog_full");
        assert_eq!(snake_case("Storm"), "storm");
        assert_eq!(snake_case("already_snake"), "already_snake");
    }

    #[test]
    fn a_document_starts_with_its_schema_version() {
        #[derive(Serialize)]
        struct Body {
            a: u32,
        }
        let text = line(&Body { a: 7 }).expect("serialisable");
        assert_eq!(text, r#"{"schema_version":1,"a":7}"#);
    }
}
