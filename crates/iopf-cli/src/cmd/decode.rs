//! `iopf decode`: read fault and response records given as hex or in a binary file, and print
//! them readably or as JSON. The records before a bad one are printed; the bad one is named by
//! its index and byte offset with what is wrong, and the status is 2. An
//! `iommu_hwpt_pgfault` is read as liberally as a reader of kernel records must: bits the uAPI
//! does not name are shown, not refused. The guest's VT-d descriptors (a page request, a page
//! group response), SMMUv3's (a PRI queue entry, `CMD_PRI_RESP`, `CMD_RESUME`) and AMD's (a PPR
//! log entry, `COMPLETE_PPR_REQUEST`) are read strictly, as the emulated unit reads them: a
//! reserved bit is an error.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use iopf_abi::extensible::read_argsz;
use iopf_abi::{
    Fault, IommuFault, IommuPageResponse, IommufdResponse, PgFault, Unnamed, VfioIommuPageResponse,
    KERNEL_RESPONSE_NEEDS_PASID,
};
use iopf_viommu::vtd::page_request::{from_bytes, DESCRIPTOR_BYTES};
use iopf_viommu::vtd::{PageGroupResponse, VtdPageRequest};
use iopf_viommu::PrivateDataMode;
use serde::Serialize;

use crate::display::flag_names;
use crate::error::CliError;
use crate::json::records::{FaultOut, HwptResponseOut, PageResponseOut, PgfaultOut};
use crate::json::{code_name, reason_name, ser};

/// The record layouts `decode` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `struct iommu_fault` (64 bytes each).
    Fault,
    /// `struct iommu_page_response`, v1 or v2, sized by its own argsz.
    Response,
    /// `struct vfio_iommu_page_response`, sized by its outer argsz (28 or 44 bytes).
    VfioResponse,
    /// iommufd `struct iommu_hwpt_pgfault` (40 bytes each).
    Pgfault,
    /// iommufd `struct iommu_hwpt_page_response` (8 bytes each).
    HwptResponse,
    /// VT-d page request descriptor, as the unit writes it to the guest (32 bytes each).
    VtdPageRequest,
    /// VT-d page group response descriptor, as the guest writes it (32 bytes each).
    VtdPageGroupResponse,
    /// SMMUv3 PRI queue entry, as the unit writes it to the guest (16 bytes each).
    Smmuv3PriQueueEntry,
    /// SMMUv3 `CMD_PRI_RESP` command, as the guest writes it (16 bytes each).
    Smmuv3CmdPriResp,
    /// SMMUv3 `CMD_RESUME` command, as the guest writes it (16 bytes each).
    Smmuv3CmdResume,
    /// AMD PPR log entry, as the unit writes it to the guest (16 bytes each).
    AmdPprLogEntry,
    /// AMD `COMPLETE_PPR_REQUEST` command, as the guest writes it (16 bytes each).
    AmdCompletePpr,
}

impl Format {
    fn is_vtd(self) -> bool {
        matches!(self, Format::VtdPageRequest | Format::VtdPageGroupResponse)
    }

    /// A 16-byte guest record of SMMUv3 or AMD, read strictly.
    fn is_guest16(self) -> bool {
        matches!(
            self,
            Format::Smmuv3PriQueueEntry
                | Format::Smmuv3CmdPriResp
                | Format::Smmuv3CmdResume
                | Format::AmdPprLogEntry
                | Format::AmdCompletePpr
        )
    }
}

/// Arguments of `iopf decode`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Records as hex (spaces, newlines, `:` and a leading `0x` are ignored). Without HEX and
    /// without --file, hex is read from standard input.
    hex: Vec<String>,
    /// Read raw binary records from this file instead.
    #[arg(long, short = 'f', conflicts_with = "hex")]
    file: Option<PathBuf>,
    /// The record layout.
    #[arg(long, value_enum, default_value = "fault")]
    format: Format,
    /// Print JSON (`{"schema_version": 1, "format": ..., "records": [...], "error": ...}`)
    /// instead of text.
    #[arg(long)]
    json: bool,
    /// Read VT-d descriptors as VT-d 3.x writes them: page request qw0 bit 9 and page group
    /// response qw0 bit 5 say private data follows in qw2-qw3. Without it, VT-d 4.0: those bits
    /// and quadwords are reserved.
    #[arg(long)]
    vtd_private_data: bool,
}

/// One decoded record of any kind, for printing.
#[derive(Debug)]
enum Decoded {
    Fault(Fault),
    Response(iopf_abi::PageResponse),
    Pgfault(PgFault),
    HwptResponse(IommufdResponse),
    VtdPageRequest(VtdPageRequestOut),
    VtdPageGroupResponse(VtdPageGroupResponseOut),
    Guest(GuestRecordOut),
}

impl Serialize for Decoded {
    /// The record's JSON form (`crate::json::records`): addresses in hex, codes by name.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Decoded::Fault(f) => FaultOut::from(f).serialize(s),
            Decoded::Response(r) => PageResponseOut::from(r).serialize(s),
            Decoded::Pgfault(p) => PgfaultOut::from(p).serialize(s),
            Decoded::HwptResponse(r) => HwptResponseOut::from(r).serialize(s),
            Decoded::VtdPageRequest(r) => r.serialize(s),
            Decoded::VtdPageGroupResponse(r) => r.serialize(s),
            Decoded::Guest(r) => r.serialize(s),
        }
    }
}

/// A record that did not decode: which, where, why.
#[derive(Debug, Serialize)]
struct BadRecord {
    /// Its index in the input (0-based).
    record: usize,
    /// The byte offset where it begins.
    offset: usize,
    /// What is wrong with it.
    reason: String,
}

/// `decode --json`'s document.
#[derive(Serialize)]
struct Output<'a> {
    /// The `--format` name.
    format: String,
    /// The records that decoded, up to the first bad one.
    records: &'a [Decoded],
    /// The first bad record, or null.
    error: Option<&'a BadRecord>,
}

/// An SMMUv3 or AMD guest record, for printing: its `type`, then its fields (absent ones
/// are `null`).
#[derive(Debug, Serialize)]
struct GuestRecordOut {
    /// `smmuv3_pri_queue_entry`, `smmuv3_cmd_pri_resp`, `smmuv3_cmd_resume`,
    /// `amd_ppr_log_entry` or `amd_complete_ppr`.
    #[serde(rename = "type")]
    type_: &'static str,
    /// What the text form calls it.
    #[serde(skip)]
    title: &'static str,
    /// SMMUv3 StreamID or AMD device id.
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    devid: Option<u16>,
    /// The requester id as bus:device.function.
    bdf: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pasid: Option<Option<u32>>,
    /// PRG index (or a stall's tag).
    #[serde(skip_serializing_if = "Option::is_none")]
    prg_index: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stag: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    perm: Option<iopf_abi::Perm>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser::hex_opt"
    )]
    addr: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last: Option<bool>,
    /// The code in PCIe's meaning.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser::code_opt"
    )]
    code: Option<iopf_abi::ResponseCode>,
    /// The code field as the guest wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_code: Option<u8>,
    /// The architecture's name for it (SMMUv3: DENY/FAIL/SUCC, TERM/RETRY/ABORT).
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_code_name: Option<&'static str>,
    /// Whether `raw_code` is one the architecture reserves (read as Response Failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_code_reserved: Option<bool>,
}

impl GuestRecordOut {
    fn new(type_: &'static str, title: &'static str, rid: u16) -> GuestRecordOut {
        GuestRecordOut {
            type_,
            title,
            sid: None,
            devid: None,
            bdf: bdf(rid),
            pasid: None,
            prg_index: None,
            stag: None,
            perm: None,
            addr: None,
            last: None,
            code: None,
            raw_code: None,
            raw_code_name: None,
            raw_code_reserved: None,
        }
    }

    fn describe(&self) -> String {
        let mut s = self.title.to_string();
        if let Some(sid) = self.sid {
            s += &format!(" sid {sid:#x} ({})", self.bdf);
        }
        if let Some(d) = self.devid {
            s += &format!(" devid {} ({d:#06x})", self.bdf);
        }
        if let Some(p) = self.pasid {
            s += &format!(" pasid {}", p.map_or("none".to_string(), |v| v.to_string()));
        }
        if let Some(i) = self.prg_index {
            s += &format!(" prg_index {i}");
        }
        if let Some(t) = self.stag {
            s += &format!(" stag {t:#x}");
        }
        if let Some(p) = &self.perm {
            s += &format!(" perm {}", flag_names(p));
        }
        if let Some(a) = self.addr {
            s += &format!(" addr {a:#x}");
        }
        if let Some(l) = self.last {
            s += &format!(" last {l}");
        }
        if let Some(c) = self.code {
            s += &format!(" code {}", code_name(c));
        }
        if let Some(r) = self.raw_code {
            s += &format!(" raw {r:#x}");
            if let Some(n) = self.raw_code_name {
                s += &format!(" ({n})");
            }
            if self.raw_code_reserved == Some(true) {
                s += " (reserved code, read as FAILURE)";
            }
        }
        s
    }
}

/// An SMMUv3 PRI queue entry, `CMD_PRI_RESP` or `CMD_RESUME`, strictly.
fn decode_smmuv3(bytes: &[u8; 16], format: Format) -> Result<GuestRecordOut, String> {
    use iopf_viommu::code_map::{smmu_pri_resp_to_pcie, smmu_resume_to_pcie};
    use iopf_viommu::smmuv3::{Command, PriEntry};
    if format == Format::Smmuv3PriQueueEntry {
        let e = PriEntry::from_bytes(bytes).map_err(|e| e.to_string())?;
        return Ok(GuestRecordOut {
            sid: Some(e.sid),
            pasid: Some(e.ssid),
            prg_index: Some(e.prg_index),
            perm: Some(e.perm),
            addr: Some(e.addr),
            last: Some(e.last),
            ..GuestRecordOut::new(
                "smmuv3_pri_queue_entry",
                "SMMUv3 PRI queue entry",
                e.sid as u16,
            )
        });
    }
    let cmd = Command::from_bytes(bytes).map_err(|e| e.to_string())?;
    match (format, cmd) {
        (
            Format::Smmuv3CmdPriResp,
            Command::PriResp {
                sid,
                ssid,
                grpid,
                resp,
            },
        ) => Ok(GuestRecordOut {
            sid: Some(sid),
            pasid: Some(ssid),
            prg_index: Some(grpid),
            code: smmu_pri_resp_to_pcie(resp),
            raw_code: Some(resp),
            raw_code_name: ["DENY", "FAIL", "SUCC"].get(usize::from(resp)).copied(),
            ..GuestRecordOut::new("smmuv3_cmd_pri_resp", "SMMUv3 CMD_PRI_RESP", sid as u16)
        }),
        (Format::Smmuv3CmdResume, Command::Resume { sid, stag, resp }) => Ok(GuestRecordOut {
            sid: Some(sid),
            stag: Some(stag),
            code: smmu_resume_to_pcie(resp),
            raw_code: Some(resp),
            raw_code_name: ["TERM", "RETRY", "ABORT"].get(usize::from(resp)).copied(),
            ..GuestRecordOut::new("smmuv3_cmd_resume", "SMMUv3 CMD_RESUME", sid as u16)
        }),
        (_, other) => Err(format!(
            "a valid command, but not the one --format names: {other:?}"
        )),
    }
}

/// Decodes one 16-byte SMMUv3 or AMD record strictly; the error says what is wrong (its caller
/// adds which record).
fn decode_guest16(chunk: &[u8], format: Format) -> Result<Decoded, String> {
    let bytes: &[u8; 16] = chunk
        .try_into()
        .map_err(|_| format!("{} bytes is not a 16-byte record", chunk.len()))?;
    let out = match format {
        Format::AmdPprLogEntry => {
            let e = iopf_viommu::amd::PprEntry::from_bytes(bytes).map_err(|e| e.to_string())?;
            GuestRecordOut {
                devid: Some(e.devid),
                pasid: Some(e.pasid),
                prg_index: Some(e.prg_index),
                perm: Some(e.perm),
                addr: Some(e.addr),
                last: Some(e.last),
                ..GuestRecordOut::new("amd_ppr_log_entry", "AMD PPR log entry", e.devid)
            }
        }
        Format::AmdCompletePpr => {
            let c =
                iopf_viommu::amd::PprCompletion::from_bytes(bytes).map_err(|e| e.to_string())?;
            GuestRecordOut {
                devid: Some(c.devid),
                pasid: Some(c.pasid),
                prg_index: Some(c.tag),
                code: Some(c.code),
                raw_code: Some(c.raw_status),
                raw_code_reserved: Some(c.raw_status_reserved()),
                ..GuestRecordOut::new("amd_complete_ppr", "AMD COMPLETE_PPR_REQUEST", c.devid)
            }
        }
        _ => decode_smmuv3(bytes, format)?,
    };
    Ok(Decoded::Guest(out))
}

/// A VT-d page request descriptor, for printing.
#[derive(Debug, Serialize)]
struct VtdPageRequestOut {
    /// Always `vtd_page_request`.
    #[serde(rename = "type")]
    type_: &'static str,
    rid: u16,
    /// The requester id as bus:device.function.
    bdf: String,
    pasid: Option<u32>,
    prg_index: u16,
    perm: iopf_abi::Perm,
    #[serde(serialize_with = "ser::hex")]
    addr: u64,
    lpig: bool,
    #[serde(serialize_with = "ser::hex_pair_opt")]
    private_data: Option<[u64; 2]>,
}

impl From<VtdPageRequest> for VtdPageRequestOut {
    fn from(r: VtdPageRequest) -> Self {
        VtdPageRequestOut {
            type_: "vtd_page_request",
            rid: r.rid,
            bdf: bdf(r.rid),
            pasid: r.pasid,
            prg_index: r.prg_index,
            perm: r.perm,
            addr: r.addr,
            lpig: r.lpig,
            private_data: r.private_data,
        }
    }
}

/// A VT-d page group response descriptor, for printing.
#[derive(Debug, Serialize)]
struct VtdPageGroupResponseOut {
    /// Always `vtd_page_group_response`.
    #[serde(rename = "type")]
    type_: &'static str,
    rid: u16,
    /// The requester id as bus:device.function.
    bdf: String,
    pasid: Option<u32>,
    prg_index: u16,
    /// The code in PCIe's meaning (a reserved raw code reads as `FAILURE`).
    #[serde(serialize_with = "ser::code")]
    code: iopf_abi::ResponseCode,
    /// The 4-bit code field as the guest wrote it.
    raw_code: u8,
    /// Whether `raw_code` is one the architecture reserves.
    raw_code_reserved: bool,
    lpig: bool,
    #[serde(serialize_with = "ser::hex_pair_opt")]
    private_data: Option<[u64; 2]>,
}

impl From<PageGroupResponse> for VtdPageGroupResponseOut {
    fn from(r: PageGroupResponse) -> Self {
        VtdPageGroupResponseOut {
            type_: "vtd_page_group_response",
            rid: r.rid,
            bdf: bdf(r.rid),
            pasid: r.pasid,
            prg_index: r.prg_index,
            code: r.code,
            raw_code: r.raw_code,
            raw_code_reserved: r.raw_code_reserved(),
            lpig: r.lpig,
            private_data: r.private_data,
        }
    }
}

/// A PCI requester id as bus:device.function (`00:01.0`).
fn bdf(rid: u16) -> String {
    format!("{:02x}:{:02x}.{:x}", rid >> 8, (rid >> 3) & 0x1f, rid & 7)
}

/// Runs `iopf decode`.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    if args.vtd_private_data && !args.format.is_vtd() {
        return Err(CliError::Input(
            "--vtd-private-data applies only to --format vtd-page-request and vtd-page-group-response"
                .into(),
        ));
    }
    let bytes = input_bytes(&args)?;
    if bytes.is_empty() {
        return Err(CliError::Input(
            "no input: give hex records, --file, or hex on stdin".into(),
        ));
    }
    let mode = if args.vtd_private_data {
        PrivateDataMode::Carried
    } else {
        PrivateDataMode::None
    };
    let (records, bad) = decode_all(&bytes, args.format, mode);
    if args.json {
        let doc = Output {
            format: format_name(args.format),
            records: &records,
            error: bad.as_ref(),
        };
        println!("{}", crate::json::pretty(&doc)?);
    } else {
        for (i, rec) in records.iter().enumerate() {
            println!("record {i}: {}", describe(rec));
        }
    }
    match bad {
        None => Ok(ExitCode::SUCCESS),
        Some(b) => Err(CliError::Record {
            index: b.record,
            offset: b.offset,
            reason: b.reason,
        }),
    }
}

/// The `--format` value as it is spelled on the command line.
fn format_name(format: Format) -> String {
    use clap::ValueEnum;
    format
        .to_possible_value()
        .map_or_else(|| format!("{format:?}"), |v| v.get_name().to_string())
}

fn input_bytes(args: &Args) -> Result<Vec<u8>, CliError> {
    if let Some(path) = &args.file {
        return std::fs::read(path).map_err(|source| CliError::InputFile {
            path: path.display().to_string(),
            source,
        });
    }
    let text = if args.hex.is_empty() {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|source| CliError::InputFile {
                path: "<stdin>".into(),
                source,
            })?;
        s
    } else {
        args.hex.join(" ")
    };
    parse_hex(&text)
}

/// Parses hex text, ignoring white space, `:` separators and `0x` prefixes.
fn parse_hex(text: &str) -> Result<Vec<u8>, CliError> {
    let digits: String = text
        .split_whitespace()
        .map(|w| w.strip_prefix("0x").or(w.strip_prefix("0X")).unwrap_or(w))
        .flat_map(|w| w.chars().filter(|&c| c != ':'))
        .collect();
    hex::decode(&digits).map_err(|e| match e {
        hex::FromHexError::OddLength => CliError::Input(format!(
            "hex input has an odd number of digits ({}): a byte is two digits",
            digits.len()
        )),
        hex::FromHexError::InvalidHexCharacter { c, index } => {
            CliError::Input(format!("'{c}' at hex digit {index} is not a hex digit"))
        }
        other => CliError::Input(format!("bad hex: {other}")),
    })
}

/// Decodes the records of `bytes` up to the first bad one: the good ones, and the bad one if
/// there is one (a trailing piece too short for a record is one).
fn decode_all(
    bytes: &[u8],
    format: Format,
    mode: PrivateDataMode,
) -> (Vec<Decoded>, Option<BadRecord>) {
    let fixed = match format {
        Format::Fault => Some((IommuFault::SIZE, "iommu_fault")),
        Format::Pgfault => Some((iopf_abi::HwptPgfault::SIZE, "iommu_hwpt_pgfault")),
        Format::HwptResponse => {
            Some((iopf_abi::HwptPageResponse::SIZE, "iommu_hwpt_page_response"))
        }
        Format::VtdPageRequest => Some((DESCRIPTOR_BYTES, "VT-d page request")),
        Format::VtdPageGroupResponse => Some((DESCRIPTOR_BYTES, "VT-d page group response")),
        Format::Smmuv3PriQueueEntry => Some((16, "SMMUv3 PRI queue entry")),
        Format::Smmuv3CmdPriResp => Some((16, "SMMUv3 CMD_PRI_RESP")),
        Format::Smmuv3CmdResume => Some((16, "SMMUv3 CMD_RESUME")),
        Format::AmdPprLogEntry => Some((16, "AMD PPR log entry")),
        Format::AmdCompletePpr => Some((16, "AMD COMPLETE_PPR_REQUEST")),
        Format::Response | Format::VfioResponse => None,
    };
    let mut out = Vec::new();
    if let Some((size, name)) = fixed {
        for (index, chunk) in bytes.chunks(size).enumerate() {
            let bad = |reason: String| BadRecord {
                record: index,
                offset: index * size,
                reason,
            };
            if chunk.len() < size {
                let reason = format!(
                    "{} bytes is not a whole number of {size}-byte {name} records ({} whole, {} bytes left over)",
                    bytes.len(),
                    bytes.len() / size,
                    chunk.len()
                );
                return (out, Some(bad(reason)));
            }
            let rec = if format.is_vtd() {
                decode_vtd(chunk, format, mode)
            } else if format.is_guest16() {
                decode_guest16(chunk, format)
            } else {
                match format {
                    Format::Fault => Fault::from_bytes(chunk).map(Decoded::Fault),
                    Format::Pgfault => PgFault::from_bytes(chunk).map(Decoded::Pgfault),
                    _ => IommufdResponse::from_bytes(chunk).map(Decoded::HwptResponse),
                }
                .map_err(|e| e.to_string())
            };
            match rec {
                Ok(rec) => out.push(rec),
                Err(reason) => return (out, Some(bad(reason))),
            }
        }
        return (out, None);
    }
    // Size-prefixed records: each one's argsz says where the next begins.
    let name = if format == Format::Response {
        "iommu_page_response"
    } else {
        "vfio_iommu_page_response"
    };
    let mut offset = 0;
    let mut index = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let rec = read_argsz(name, rest).and_then(|argsz| {
            if format == Format::Response {
                IommuPageResponse::read(rest)
            } else {
                VfioIommuPageResponse::read(rest)
            }
            .map(|r| (argsz as usize, r))
        });
        match rec {
            Ok((argsz, rec)) => {
                out.push(Decoded::Response(rec));
                offset += argsz.clamp(1, rest.len());
                index += 1;
            }
            Err(e) => {
                let bad = BadRecord {
                    record: index,
                    offset,
                    reason: e.to_string(),
                };
                return (out, Some(bad));
            }
        }
    }
    (out, None)
}

/// Decodes one 32-byte VT-d descriptor strictly, in `mode`; the error says what is wrong (its
/// caller adds which record).
fn decode_vtd(chunk: &[u8], format: Format, mode: PrivateDataMode) -> Result<Decoded, String> {
    let bytes: &[u8; DESCRIPTOR_BYTES] = chunk
        .try_into()
        .expect("decode_all splits VT-d input into whole descriptors");
    let qw = from_bytes(bytes);
    if format == Format::VtdPageRequest {
        VtdPageRequest::decode(&qw, mode)
            .map(|r| Decoded::VtdPageRequest(r.into()))
            .map_err(|e| e.to_string())
    } else {
        PageGroupResponse::decode(&qw, mode)
            .map(|r| Decoded::VtdPageGroupResponse(r.into()))
            .map_err(|e| e.to_string())
    }
}

/// Echoed private data in words (empty when there is none).
fn describe_private_data(pd: Option<[u64; 2]>) -> String {
    pd.map(|d| format!(" private_data [{:#x}, {:#x}]", d[0], d[1]))
        .unwrap_or_default()
}

/// What a record carries outside the uAPI, said in words (empty when nothing).
fn describe_unnamed(u: &Unnamed) -> String {
    if u.is_empty() {
        return String::new();
    }
    let mut parts = Vec::new();
    if u.flags != 0 {
        let mut p = format!("flag bits {:#x}", u.flags);
        if u.flags & KERNEL_RESPONSE_NEEDS_PASID != 0 {
            p.push_str(" (bit 2: the kernel's IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID)");
        }
        parts.push(p);
    }
    if u.perm != 0 {
        parts.push(format!("perm bits {:#x}", u.perm));
    }
    if u.reserved != 0 {
        parts.push(format!("__reserved {:#x}", u.reserved));
    }
    format!("; outside the uAPI, kept: {}", parts.join(", "))
}

fn describe(rec: &Decoded) -> String {
    match rec {
        Decoded::Fault(Fault::PageRequest(p)) => format!(
            "page request grpid {} pasid {} addr {:#x} perm {} flags {} private_data [{:#x}, {:#x}]",
            p.grpid,
            p.pasid().map_or("none".to_string(), |v| v.to_string()),
            p.addr,
            flag_names(&p.perm),
            flag_names(&p.flags),
            p.private_data[0],
            p.private_data[1]
        ),
        Decoded::Fault(Fault::Unrecoverable(u)) => format!(
            "unrecoverable fault reason {} pasid {} addr {:#x} fetch_addr {:#x} perm {} flags {}",
            reason_name(u.reason),
            u.pasid,
            u.addr,
            u.fetch_addr,
            flag_names(&u.perm),
            flag_names(&u.flags)
        ),
        Decoded::Response(r) => format!(
            "page response v{} grpid {} pasid {} code {}{}",
            r.version,
            r.grpid,
            r.pasid.map_or("none".to_string(), |v| v.to_string()),
            code_name(r.code),
            r.private_data
                .map(|d| format!(" private_data [{:#x}, {:#x}]", d[0], d[1]))
                .unwrap_or_default()
        ),
        Decoded::Pgfault(p) => format!(
            "iommufd fault cookie {} dev_id {} grpid {} pasid {} addr {:#x} length {} perm {} flags {}{}",
            p.cookie,
            p.dev_id,
            p.grpid,
            p.pasid,
            p.addr,
            p.length,
            flag_names(&p.perm),
            flag_names(&p.flags),
            describe_unnamed(&p.unnamed())
        ),
        Decoded::HwptResponse(r) => format!(
            "iommufd response cookie {} code {}",
            r.cookie,
            code_name(r.code)
        ),
        Decoded::VtdPageRequest(r) => format!(
            "VT-d page request rid {} ({:#06x}) pasid {} prg_index {} perm {} addr {:#x} lpig {}{}",
            r.bdf,
            r.rid,
            r.pasid.map_or("none".to_string(), |v| v.to_string()),
            r.prg_index,
            flag_names(&r.perm),
            r.addr,
            r.lpig,
            describe_private_data(r.private_data)
        ),
        Decoded::Guest(r) => r.describe(),
        Decoded::VtdPageGroupResponse(r) => format!(
            "VT-d page group response rid {} ({:#06x}) pasid {} prg_index {} code {} raw {:#x}{} lpig {}{}",
            r.bdf,
            r.rid,
            r.pasid.map_or("none".to_string(), |v| v.to_string()),
            r.prg_index,
            code_name(r.code),
            r.raw_code,
            if r.raw_code_reserved {
                " (reserved code, read as FAILURE)"
            } else {
                ""
            },
            r.lpig,
            describe_private_data(r.private_data)
        ),
    }
}
