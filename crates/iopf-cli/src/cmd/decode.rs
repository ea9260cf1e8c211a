//! `iopf decode`: read fault and response records given as hex or in a binary file, and print
//! them readably or as JSON. Bad input says exactly what is wrong and exits with status 2. An
//! `iommu_hwpt_pgfault` is read as liberally as a reader of kernel records must: bits the uAPI
//! does not name are shown, not refused.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use iopf_abi::extensible::read_argsz;
use iopf_abi::{
    Fault, IommuFault, IommuPageResponse, IommufdResponse, PgFault, Unnamed, VfioIommuPageResponse,
    KERNEL_RESPONSE_NEEDS_PASID,
};
use serde::Serialize;

use crate::display::flag_names;
use crate::error::CliError;

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
    /// Print JSON (an array of decoded records) instead of text.
    #[arg(long)]
    json: bool,
}

/// One decoded record of any kind, for printing.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Decoded {
    Fault(Fault),
    Response(iopf_abi::PageResponse),
    Pgfault(PgfaultOut),
    HwptResponse(IommufdResponse),
}

/// An `iommu_hwpt_pgfault` as read, liberally: a record from a kernel may carry bits the uAPI
/// does not name (Linux copies its internal flags through), which are shown, not refused.
#[derive(Debug, Serialize)]
struct PgfaultOut {
    #[serde(flatten)]
    fault: PgFault,
    /// What the record carries outside the uAPI (absent when nothing).
    #[serde(skip_serializing_if = "Unnamed::is_empty")]
    unnamed: Unnamed,
}

/// Runs `iopf decode`.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    let bytes = input_bytes(&args)?;
    if bytes.is_empty() {
        return Err(CliError::Input(
            "no input: give hex records, --file, or hex on stdin".into(),
        ));
    }
    let records = decode_all(&bytes, args.format)?;
    if args.json {
        let text = serde_json::to_string_pretty(&records)
            .map_err(|e| CliError::Input(format!("cannot encode JSON: {e}")))?;
        println!("{text}");
    } else {
        for (i, rec) in records.iter().enumerate() {
            println!("record {i}: {}", describe(rec));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn input_bytes(args: &Args) -> Result<Vec<u8>, CliError> {
    if let Some(path) = &args.file {
        return std::fs::read(path).map_err(|source| CliError::Io {
            path: path.display().to_string(),
            source,
        });
    }
    let text = if args.hex.is_empty() {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|source| CliError::Io {
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

fn decode_all(bytes: &[u8], format: Format) -> Result<Vec<Decoded>, CliError> {
    let fixed = match format {
        Format::Fault => Some((IommuFault::SIZE, "iommu_fault")),
        Format::Pgfault => Some((iopf_abi::HwptPgfault::SIZE, "iommu_hwpt_pgfault")),
        Format::HwptResponse => {
            Some((iopf_abi::HwptPageResponse::SIZE, "iommu_hwpt_page_response"))
        }
        Format::Response | Format::VfioResponse => None,
    };
    let mut out = Vec::new();
    if let Some((size, name)) = fixed {
        if bytes.len() % size != 0 {
            return Err(CliError::Input(format!(
                "{} bytes is not a whole number of {size}-byte {name} records ({} whole, {} bytes left over)",
                bytes.len(),
                bytes.len() / size,
                bytes.len() % size
            )));
        }
        for (index, chunk) in bytes.chunks_exact(size).enumerate() {
            let rec = match format {
                Format::Fault => Fault::from_bytes(chunk).map(Decoded::Fault),
                Format::Pgfault => PgFault::from_bytes(chunk).map(|fault| {
                    Decoded::Pgfault(PgfaultOut {
                        unnamed: fault.unnamed(),
                        fault,
                    })
                }),
                _ => IommufdResponse::from_bytes(chunk).map(Decoded::HwptResponse),
            };
            out.push(rec.map_err(|source| CliError::Record { index, source })?);
        }
        return Ok(out);
    }
    // Size-prefixed records: each one's argsz says where the next begins.
    let name = if format == Format::Response {
        "iommu_page_response"
    } else {
        "vfio_iommu_page_response"
    };
    let mut rest = bytes;
    let mut index = 0;
    while !rest.is_empty() {
        let err = |source| CliError::Record { index, source };
        let argsz = read_argsz(name, rest).map_err(err)? as usize;
        let rec = if format == Format::Response {
            IommuPageResponse::read(rest)
        } else {
            VfioIommuPageResponse::read(rest)
        }
        .map_err(err)?;
        out.push(Decoded::Response(rec));
        rest = &rest[argsz.min(rest.len())..];
        index += 1;
    }
    Ok(out)
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
            "unrecoverable fault reason {:?} pasid {} addr {:#x} fetch_addr {:#x} perm {} flags {}",
            u.reason,
            u.pasid,
            u.addr,
            u.fetch_addr,
            flag_names(&u.perm),
            flag_names(&u.flags)
        ),
        Decoded::Response(r) => format!(
            "page response v{} grpid {} pasid {} code {:?}{}",
            r.version,
            r.grpid,
            r.pasid.map_or("none".to_string(), |v| v.to_string()),
            r.code,
            r.private_data
                .map(|d| format!(" private_data [{:#x}, {:#x}]", d[0], d[1]))
                .unwrap_or_default()
        ),
        Decoded::Pgfault(PgfaultOut { fault: p, unnamed }) => format!(
            "iommufd fault cookie {} dev_id {} grpid {} pasid {} addr {:#x} length {} perm {} flags {}{}",
            p.cookie,
            p.dev_id,
            p.grpid,
            p.pasid,
            p.addr,
            p.length,
            flag_names(&p.perm),
            flag_names(&p.flags),
            describe_unnamed(unnamed)
        ),
        Decoded::HwptResponse(r) => format!("iommufd response cookie {} code {:?}", r.cookie, r.code),
    }
}
