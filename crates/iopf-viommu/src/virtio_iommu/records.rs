//! The two wire formats of virtio-iommu page requests (experimental): the fault record the
//! device writes into an event buffer ([`VirtioIommuFault`], 48 bytes) and the `PAGE_RESP`
//! request the driver sends on the request queue ([`PageRespRequest`], 40 bytes with its tail).
//! Where each field comes from is in the [module documentation](super).
//!
//! Both are little-endian, as every virtio-iommu structure. `to_bytes` writes exactly what the
//! layout says (reserved bytes zero); `from_bytes` reads any bytes without judging them (for a
//! decoder), and [`PageRespRequest::decode`] is the strict reading a device applies.

use iopf_abi::{Perm, ResponseCode};

use crate::bridge::{GuestPageRequest, GuestResponse};
use crate::code_map;

/// `VIRTIO_IOMMU_S_OK` (Linux 6.12 `include/uapi/linux/virtio_iommu.h`).
pub const VIRTIO_IOMMU_S_OK: u8 = 0x00;
/// `VIRTIO_IOMMU_S_IOERR`.
pub const VIRTIO_IOMMU_S_IOERR: u8 = 0x01;
/// `VIRTIO_IOMMU_S_UNSUPP`: the request type is not supported.
pub const VIRTIO_IOMMU_S_UNSUPP: u8 = 0x02;
/// `VIRTIO_IOMMU_S_DEVERR`.
pub const VIRTIO_IOMMU_S_DEVERR: u8 = 0x03;
/// `VIRTIO_IOMMU_S_INVAL`: a malformed request (too short, a reserved field or flag set, a
/// code that is not one).
pub const VIRTIO_IOMMU_S_INVAL: u8 = 0x04;
/// `VIRTIO_IOMMU_S_RANGE`.
pub const VIRTIO_IOMMU_S_RANGE: u8 = 0x05;
/// `VIRTIO_IOMMU_S_NOENT`: the endpoint does not exist.
pub const VIRTIO_IOMMU_S_NOENT: u8 = 0x06;
/// `VIRTIO_IOMMU_S_FAULT`.
pub const VIRTIO_IOMMU_S_FAULT: u8 = 0x07;
/// `VIRTIO_IOMMU_S_NOMEM`.
pub const VIRTIO_IOMMU_S_NOMEM: u8 = 0x08;

/// `VIRTIO_IOMMU_FAULT_R_MAPPING` (Linux 6.12): the reason this model writes in a page
/// request's record (the page is not mapped; the RFC does not say which reason a page request
/// carries).
pub const VIRTIO_IOMMU_FAULT_R_MAPPING: u8 = 2;

/// `VIRTIO_IOMMU_FAULT_F_READ` (Linux 6.12).
pub const VIRTIO_IOMMU_FAULT_F_READ: u32 = 1 << 0;
/// `VIRTIO_IOMMU_FAULT_F_WRITE` (Linux 6.12).
pub const VIRTIO_IOMMU_FAULT_F_WRITE: u32 = 1 << 1;
/// `VIRTIO_IOMMU_FAULT_F_EXEC` (Linux 6.12).
pub const VIRTIO_IOMMU_FAULT_F_EXEC: u32 = 1 << 2;
/// `VIRTIO_IOMMU_FAULT_F_PRIVILEGED` (RFC, as revised in review; v1 called it `F_PRIV`).
pub const VIRTIO_IOMMU_FAULT_F_PRIVILEGED: u32 = 1 << 3;
/// `VIRTIO_IOMMU_FAULT_F_LAST`: last request of its group (RFC, as revised in review).
pub const VIRTIO_IOMMU_FAULT_F_LAST: u32 = 1 << 4;
/// `VIRTIO_IOMMU_FAULT_F_PAGE_REQ`: a recoverable page request, which needs a `PAGE_RESP`
/// (RFC, as revised in review).
pub const VIRTIO_IOMMU_FAULT_F_PAGE_REQ: u32 = 1 << 5;
/// `VIRTIO_IOMMU_FAULT_F_ADDRESS`: `address` is valid (Linux 6.12).
pub const VIRTIO_IOMMU_FAULT_F_ADDRESS: u32 = 1 << 8;
/// `VIRTIO_IOMMU_FAULT_F_PASID`: `pasid` is valid (RFC, as revised in review).
pub const VIRTIO_IOMMU_FAULT_F_PASID: u32 = 1 << 9;
/// `VIRTIO_IOMMU_FAULT_F_GROUP_ID`: `group_id` is valid (RFC, as revised in review).
pub const VIRTIO_IOMMU_FAULT_F_GROUP_ID: u32 = 1 << 10;
/// `VIRTIO_IOMMU_FAULT_F_PRIV_DATA`: `private_data` is valid (RFC, as revised in review; this
/// model never sets it: `PAGE_RESP` cannot echo private data).
pub const VIRTIO_IOMMU_FAULT_F_PRIV_DATA: u32 = 1 << 11;

/// Bytes of the extended fault record; an event buffer must hold all of them.
pub const FAULT_RECORD_BYTES: usize = 48;
/// Bytes of Linux 6.12's `struct virtio_iommu_fault` (the record without the extension).
pub const BASE_FAULT_RECORD_BYTES: usize = 24;

/// `VIRTIO_IOMMU_T_PAGE_RESP` (RFC v1 patch 10/11).
pub const VIRTIO_IOMMU_T_PAGE_RESP: u8 = 0x08;
/// `VIRTIO_IOMMU_PAGE_RESP_F_PASID_VALID`: the `pasid` field is valid (RFC v1's
/// `VIRTIO_IOMMU_PAGE_RESP_PASID_VALID`, named as the review asked).
pub const VIRTIO_IOMMU_PAGE_RESP_F_PASID_VALID: u32 = 1 << 0;
/// Bytes the driver writes of a `PAGE_RESP` request: head and body, the device-readable part.
pub const PAGE_RESP_DRIVER_BYTES: usize = 36;
/// Bytes of the whole `struct virtio_iommu_req_page_resp`, its 4-byte tail included.
pub const PAGE_RESP_BYTES: usize = 40;

fn le16(b: &[u8], at: usize) -> u16 {
    let mut w = [0u8; 2];
    w.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(w)
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The 4-byte `struct virtio_iommu_req_tail` carrying `status` (reserved bytes zero), for the
/// VMM to write into the request's device-writable part.
pub fn tail(status: u8) -> [u8; 4] {
    [status, 0, 0, 0]
}

/// Why bytes are not a record.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than the record.
    #[error("a fault record is {FAULT_RECORD_BYTES} bytes; got {0}")]
    TooShort(usize),
}

/// The extended `struct virtio_iommu_fault`, 48 bytes:
///
/// | offset | field | from |
/// |---|---|---|
/// | 0 | `u8 reason`, `u8 reserved[3]` | Linux 6.12 |
/// | 4 | `le32 flags` | Linux 6.12; bits 3, 4, 5, 9, 10, 11 from the review |
/// | 8 | `le32 endpoint` | Linux 6.12 |
/// | 12 | `le32 pasid` | the review (Linux 6.12: `reserved2[4]`) |
/// | 16 | `le64 address` | Linux 6.12 |
/// | 24 | `le16 group_id`, `u8 reserved1[6]` | the review |
/// | 32 | `le64 private_data[2]` | the review |
///
/// `from_bytes` keeps every flag bit as read, named or not (a decoder shows what is there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VirtioIommuFault {
    /// `reason` (`VIRTIO_IOMMU_FAULT_R_*`).
    pub reason: u8,
    /// `flags` (`VIRTIO_IOMMU_FAULT_F_*`).
    pub flags: u32,
    /// `endpoint`: the endpoint ID (this model: the guest requester id).
    pub endpoint: u32,
    /// `pasid`, meaningful with [`VIRTIO_IOMMU_FAULT_F_PASID`].
    pub pasid: u32,
    /// `address`, meaningful with [`VIRTIO_IOMMU_FAULT_F_ADDRESS`].
    pub address: u64,
    /// `group_id`, meaningful with [`VIRTIO_IOMMU_FAULT_F_GROUP_ID`].
    pub group_id: u16,
    /// `private_data`, meaningful with [`VIRTIO_IOMMU_FAULT_F_PRIV_DATA`].
    pub private_data: [u64; 2],
}

impl VirtioIommuFault {
    /// The record of a page request the bridge posts: reason `R_MAPPING`; flags `PAGE_REQ`,
    /// `ADDRESS`, `GROUP_ID`, `LAST` for the last request, `PASID` with a PASID, and the
    /// permissions; endpoint = `req.rid`. Private data is never carried (see
    /// [`VIRTIO_IOMMU_FAULT_F_PRIV_DATA`]).
    pub fn page_request(req: &GuestPageRequest) -> VirtioIommuFault {
        let mut flags = VIRTIO_IOMMU_FAULT_F_PAGE_REQ
            | VIRTIO_IOMMU_FAULT_F_ADDRESS
            | VIRTIO_IOMMU_FAULT_F_GROUP_ID;
        for (perm, bit) in [
            (Perm::READ, VIRTIO_IOMMU_FAULT_F_READ),
            (Perm::WRITE, VIRTIO_IOMMU_FAULT_F_WRITE),
            (Perm::EXEC, VIRTIO_IOMMU_FAULT_F_EXEC),
            (Perm::PRIV, VIRTIO_IOMMU_FAULT_F_PRIVILEGED),
        ] {
            if req.perm.contains(perm) {
                flags |= bit;
            }
        }
        if req.last {
            flags |= VIRTIO_IOMMU_FAULT_F_LAST;
        }
        if req.pasid.is_some() {
            flags |= VIRTIO_IOMMU_FAULT_F_PASID;
        }
        VirtioIommuFault {
            reason: VIRTIO_IOMMU_FAULT_R_MAPPING,
            flags,
            endpoint: u32::from(req.rid),
            pasid: req.pasid.unwrap_or(0),
            address: req.addr,
            group_id: req.prg_index,
            private_data: [0; 2],
        }
    }

    /// Whether this is a page request (`F_PAGE_REQ`): one that needs a `PAGE_RESP`.
    pub fn is_page_request(&self) -> bool {
        self.flags & VIRTIO_IOMMU_FAULT_F_PAGE_REQ != 0
    }

    /// Whether it is the last request of its group (`F_LAST`).
    pub fn last(&self) -> bool {
        self.flags & VIRTIO_IOMMU_FAULT_F_LAST != 0
    }

    /// The PASID, if `F_PASID` says it is valid.
    pub fn pasid(&self) -> Option<u32> {
        (self.flags & VIRTIO_IOMMU_FAULT_F_PASID != 0).then_some(self.pasid)
    }

    /// The group ID, if `F_GROUP_ID` says it is valid.
    pub fn group_id(&self) -> Option<u16> {
        (self.flags & VIRTIO_IOMMU_FAULT_F_GROUP_ID != 0).then_some(self.group_id)
    }

    /// The address, if `F_ADDRESS` says it is valid.
    pub fn address(&self) -> Option<u64> {
        (self.flags & VIRTIO_IOMMU_FAULT_F_ADDRESS != 0).then_some(self.address)
    }

    /// The access the request asks for (`F_READ`, `F_WRITE`, `F_EXEC`, `F_PRIVILEGED`).
    pub fn perm(&self) -> Perm {
        let mut perm = Perm::empty();
        for (bit, p) in [
            (VIRTIO_IOMMU_FAULT_F_READ, Perm::READ),
            (VIRTIO_IOMMU_FAULT_F_WRITE, Perm::WRITE),
            (VIRTIO_IOMMU_FAULT_F_EXEC, Perm::EXEC),
            (VIRTIO_IOMMU_FAULT_F_PRIVILEGED, Perm::PRIV),
        ] {
            if self.flags & bit != 0 {
                perm |= p;
            }
        }
        perm
    }

    /// The 48 bytes of the record, reserved bytes zero.
    pub fn to_bytes(&self) -> [u8; FAULT_RECORD_BYTES] {
        let mut b = [0u8; FAULT_RECORD_BYTES];
        b[0] = self.reason;
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.endpoint.to_le_bytes());
        b[12..16].copy_from_slice(&self.pasid.to_le_bytes());
        b[16..24].copy_from_slice(&self.address.to_le_bytes());
        b[24..26].copy_from_slice(&self.group_id.to_le_bytes());
        b[32..40].copy_from_slice(&self.private_data[0].to_le_bytes());
        b[40..48].copy_from_slice(&self.private_data[1].to_le_bytes());
        b
    }

    /// Reads a record from the first 48 bytes of `b` (reserved bytes are not kept). Errors:
    /// fewer than 48 bytes.
    pub fn from_bytes(b: &[u8]) -> Result<VirtioIommuFault, RecordError> {
        if b.len() < FAULT_RECORD_BYTES {
            return Err(RecordError::TooShort(b.len()));
        }
        Ok(VirtioIommuFault {
            reason: b[0],
            flags: le32(b, 4),
            endpoint: le32(b, 8),
            pasid: le32(b, 12),
            address: le64(b, 16),
            group_id: le16(b, 24),
            private_data: [le64(b, 32), le64(b, 40)],
        })
    }
}

/// Why a `PAGE_RESP` request is refused; [`status`](Self::status) is the tail's status.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PageRespError {
    /// The head's type is not `VIRTIO_IOMMU_T_PAGE_RESP` (`S_UNSUPP`).
    #[error("request type {0:#04x} is not PAGE_RESP")]
    NotPageResp(u8),
    /// Fewer than [`PAGE_RESP_DRIVER_BYTES`] device-readable bytes (`S_INVAL`).
    #[error("a PAGE_RESP request has {PAGE_RESP_DRIVER_BYTES} device-readable bytes; got {0}")]
    TooShort(usize),
    /// A flag other than `F_PASID_VALID` (`S_INVAL`).
    #[error("unknown PAGE_RESP flags {0:#x}")]
    UnknownFlags(u32),
    /// `pasid_valid` is neither 0 nor 1, or is 1 without `F_PASID_VALID` (`S_INVAL`).
    #[error("pasid_valid {pasid_valid} disagrees with flags {flags:#x}")]
    PasidValidByte {
        /// The byte.
        pasid_valid: u8,
        /// The flags.
        flags: u32,
    },
    /// A reserved byte is not zero (`S_INVAL`).
    #[error("reserved bytes are not zero")]
    Reserved,
    /// `resp_code` is not 0, 1 or 2 (`S_INVAL`).
    #[error("response code {0} is not one")]
    BadCode(u16),
    /// `grpid` does not fit the fault record's 16-bit `group_id` (`S_INVAL`).
    #[error("group id {0:#x} does not fit 16 bits")]
    BadGroupId(u32),
    /// A valid `pasid` above 20 bits (`S_INVAL`).
    #[error("PASID {0:#x} does not fit 20 bits")]
    BadPasid(u32),
    /// `endpoint` cannot be one of this device's (above 16 bits) (`S_NOENT`).
    #[error("endpoint {0:#x} does not exist")]
    NoEndpoint(u32),
}

impl PageRespError {
    /// The `VIRTIO_IOMMU_S_*` status the device answers this request with.
    pub fn status(&self) -> u8 {
        match self {
            PageRespError::NotPageResp(_) => VIRTIO_IOMMU_S_UNSUPP,
            PageRespError::NoEndpoint(_) => VIRTIO_IOMMU_S_NOENT,
            _ => VIRTIO_IOMMU_S_INVAL,
        }
    }
}

/// `struct virtio_iommu_req_page_resp` of RFC v1 (patch 10/11), as the driver writes it (the
/// tail is the device's):
///
/// | offset | field |
/// |---|---|
/// | 0 | head: `u8 type` (8), `u8 reserved[3]` |
/// | 4 | `le32 domain` |
/// | 8 | `le32 endpoint` |
/// | 12 | `le32 flags` (`F_PASID_VALID` bit 0) |
/// | 16 | `le32 pasid` |
/// | 20 | `le32 grpid` |
/// | 24 | `le16 resp_code` (0 success, 1 invalid, 2 failure) |
/// | 26 | `u8 pasid_valid` |
/// | 27 | `u8 reserved[9]` |
/// | 36 | tail: `u8 status`, `u8 reserved[3]` |
///
/// Every field as on the wire: `from_bytes` judges nothing but the length, so that a decoder
/// can show a request a device refuses; [`decode`](Self::decode) is the device's reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PageRespRequest {
    /// `head.type`.
    pub head_type: u8,
    /// `head.reserved` (ignored by the device, as QEMU's virtio-iommu reads only `type`).
    pub head_reserved: [u8; 3],
    /// `domain` (not checked: see the module documentation).
    pub domain: u32,
    /// `endpoint`.
    pub endpoint: u32,
    /// `flags`.
    pub flags: u32,
    /// `pasid` (meaningful with `F_PASID_VALID`: the RFC driver fills it in either way).
    pub pasid: u32,
    /// `grpid`.
    pub grpid: u32,
    /// `resp_code`.
    pub resp_code: u16,
    /// `pasid_valid` (the RFC v1 byte the review found redundant with the flag).
    pub pasid_valid: u8,
    /// `reserved[9]`.
    pub reserved: [u8; 9],
}

impl PageRespRequest {
    /// A request as the RFC v1 driver's `viommu_page_response()` builds it: type 8, the PASID
    /// flag and the `pasid_valid` byte set together, reserved bytes zero. `resp_code` is the
    /// wire code as the driver chose it.
    pub fn new(
        domain: u32,
        endpoint: u32,
        pasid: Option<u32>,
        grpid: u32,
        resp_code: u16,
    ) -> PageRespRequest {
        PageRespRequest {
            head_type: VIRTIO_IOMMU_T_PAGE_RESP,
            domain,
            endpoint,
            flags: if pasid.is_some() {
                VIRTIO_IOMMU_PAGE_RESP_F_PASID_VALID
            } else {
                0
            },
            pasid: pasid.unwrap_or(0),
            grpid,
            resp_code,
            pasid_valid: u8::from(pasid.is_some()),
            ..PageRespRequest::default()
        }
    }

    /// The 36 bytes the driver writes (head and body).
    pub fn to_bytes(&self) -> [u8; PAGE_RESP_DRIVER_BYTES] {
        let mut b = [0u8; PAGE_RESP_DRIVER_BYTES];
        b[0] = self.head_type;
        b[1..4].copy_from_slice(&self.head_reserved);
        b[4..8].copy_from_slice(&self.domain.to_le_bytes());
        b[8..12].copy_from_slice(&self.endpoint.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..20].copy_from_slice(&self.pasid.to_le_bytes());
        b[20..24].copy_from_slice(&self.grpid.to_le_bytes());
        b[24..26].copy_from_slice(&self.resp_code.to_le_bytes());
        b[26] = self.pasid_valid;
        b[27..36].copy_from_slice(&self.reserved);
        b
    }

    /// Reads the first 36 bytes of `b`, the request's device-readable part; bytes past them are
    /// not read (QEMU's `virtio_iommu_iov_to_req()` also copies only the size it expects).
    /// Errors: fewer than 36 bytes ([`PageRespError::TooShort`]).
    pub fn from_bytes(b: &[u8]) -> Result<PageRespRequest, PageRespError> {
        if b.len() < PAGE_RESP_DRIVER_BYTES {
            return Err(PageRespError::TooShort(b.len()));
        }
        let mut head_reserved = [0u8; 3];
        head_reserved.copy_from_slice(&b[1..4]);
        let mut reserved = [0u8; 9];
        reserved.copy_from_slice(&b[27..36]);
        Ok(PageRespRequest {
            head_type: b[0],
            head_reserved,
            domain: le32(b, 4),
            endpoint: le32(b, 8),
            flags: le32(b, 12),
            pasid: le32(b, 16),
            grpid: le32(b, 20),
            resp_code: le16(b, 24),
            pasid_valid: b[26],
            reserved,
        })
    }

    /// The device's strict reading: the response in the bridge's terms (requester id =
    /// endpoint, the PASID only with `F_PASID_VALID`, the code through
    /// [`code_map::virtio_to_pcie`]), or why the request is refused. Checked in this order:
    /// type, flags, `pasid_valid`, reserved bytes, code, group id, PASID, endpoint. `domain`
    /// and `head.reserved` are not checked.
    pub fn decode(&self) -> Result<GuestResponse, PageRespError> {
        if self.head_type != VIRTIO_IOMMU_T_PAGE_RESP {
            return Err(PageRespError::NotPageResp(self.head_type));
        }
        if self.flags & !VIRTIO_IOMMU_PAGE_RESP_F_PASID_VALID != 0 {
            return Err(PageRespError::UnknownFlags(self.flags));
        }
        let pasid_flag = self.flags & VIRTIO_IOMMU_PAGE_RESP_F_PASID_VALID != 0;
        // 0 is what a driver that follows the review (the byte dropped, so reserved) writes; 1
        // is what the v1 driver writes beside the flag.
        if self.pasid_valid > 1 || (self.pasid_valid == 1 && !pasid_flag) {
            return Err(PageRespError::PasidValidByte {
                pasid_valid: self.pasid_valid,
                flags: self.flags,
            });
        }
        if self.reserved != [0; 9] {
            return Err(PageRespError::Reserved);
        }
        let code: ResponseCode = code_map::virtio_to_pcie(self.resp_code)
            .ok_or(PageRespError::BadCode(self.resp_code))?;
        let prg_index =
            u16::try_from(self.grpid).map_err(|_| PageRespError::BadGroupId(self.grpid))?;
        let pasid = if pasid_flag {
            if self.pasid > 0xf_ffff {
                return Err(PageRespError::BadPasid(self.pasid));
            }
            Some(self.pasid)
        } else {
            None
        };
        let rid =
            u16::try_from(self.endpoint).map_err(|_| PageRespError::NoEndpoint(self.endpoint))?;
        Ok(GuestResponse {
            rid,
            pasid,
            prg_index,
            code,
            private_data: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extension_keeps_linux_6_12_s_base_layout() {
        let req = GuestPageRequest {
            rid: 0x0102,
            pasid: Some(0x12345),
            prg_index: 0x1ab,
            perm: Perm::READ | Perm::WRITE | Perm::EXEC | Perm::PRIV,
            addr: 0xdead_b000,
            last: true,
            private_data: None,
        };
        let b = VirtioIommuFault::page_request(&req).to_bytes();
        // Linux 6.12: reason at 0, flags at 4, endpoint at 8, address at 16.
        assert_eq!(b[0], VIRTIO_IOMMU_FAULT_R_MAPPING);
        assert_eq!(&b[1..4], &[0; 3]);
        assert_eq!(le32(&b, 4), 0x73f);
        assert_eq!(le32(&b, 8), 0x0102);
        assert_eq!(le32(&b, 12), 0x12345);
        assert_eq!(le64(&b, 16), 0xdead_b000);
        assert_eq!(le16(&b, 24), 0x1ab);
        assert_eq!(&b[26..48], &[0; 22]);
        let back = VirtioIommuFault::from_bytes(&b).expect("48 bytes");
        assert_eq!(
            (back.pasid(), back.group_id(), back.last()),
            (Some(0x12345), Some(0x1ab), true)
        );
        assert_eq!(back.perm(), req.perm);
        assert!(back.is_page_request());
    }

    #[test]
    fn a_request_without_pasid_has_no_pasid_flag() {
        let req = GuestPageRequest {
            rid: 1,
            pasid: None,
            prg_index: 3,
            perm: Perm::READ,
            addr: 0x1000,
            last: false,
            private_data: None,
        };
        let rec = VirtioIommuFault::page_request(&req);
        assert_eq!(rec.pasid(), None);
        assert!(!rec.last());
        assert_eq!(rec.flags & VIRTIO_IOMMU_FAULT_F_PRIV_DATA, 0);
    }

    #[test]
    fn page_resp_layout_is_rfc_v1_s() {
        let r = PageRespRequest::new(7, 0x10, Some(5), 9, 1);
        let b = r.to_bytes();
        assert_eq!(b[0], 8);
        assert_eq!(le32(&b, 4), 7);
        assert_eq!(le32(&b, 8), 0x10);
        assert_eq!(le32(&b, 12), 1);
        assert_eq!(le32(&b, 16), 5);
        assert_eq!(le32(&b, 20), 9);
        assert_eq!(le16(&b, 24), 1);
        assert_eq!(b[26], 1);
        assert_eq!(PageRespRequest::from_bytes(&b), Ok(r));
        let g = r.decode().expect("valid");
        assert_eq!(
            (g.rid, g.pasid, g.prg_index, g.code),
            (0x10, Some(5), 9, ResponseCode::Invalid)
        );
    }

    #[test]
    fn the_pasid_field_without_the_flag_is_ignored() {
        let mut r = PageRespRequest::new(0, 1, None, 2, 0);
        r.pasid = 77; // the RFC driver fills it in whether or not the flag is set
        assert_eq!(r.decode().map(|g| g.pasid), Ok(None));
    }

    #[test]
    fn strict_fields_refuse_with_inval() {
        let ok = PageRespRequest::new(0, 1, Some(3), 2, 0);
        let cases: [(PageRespRequest, u8); 8] = [
            (PageRespRequest { resp_code: 3, ..ok }, VIRTIO_IOMMU_S_INVAL),
            (PageRespRequest { flags: 3, ..ok }, VIRTIO_IOMMU_S_INVAL),
            (
                PageRespRequest {
                    pasid_valid: 2,
                    ..ok
                },
                VIRTIO_IOMMU_S_INVAL,
            ),
            (PageRespRequest { flags: 0, ..ok }, VIRTIO_IOMMU_S_INVAL),
            (
                PageRespRequest {
                    reserved: [0, 0, 0, 0, 1, 0, 0, 0, 0],
                    ..ok
                },
                VIRTIO_IOMMU_S_INVAL,
            ),
            (
                PageRespRequest {
                    grpid: 0x1_0000,
                    ..ok
                },
                VIRTIO_IOMMU_S_INVAL,
            ),
            (
                PageRespRequest {
                    endpoint: 0x1_0000,
                    ..ok
                },
                VIRTIO_IOMMU_S_NOENT,
            ),
            (
                PageRespRequest { head_type: 3, ..ok },
                VIRTIO_IOMMU_S_UNSUPP,
            ),
        ];
        for (r, status) in cases {
            assert_eq!(r.decode().map_err(|e| e.status()), Err(status), "{r:?}");
        }
        // A driver that follows the review leaves pasid_valid 0 beside the flag.
        assert!(PageRespRequest {
            pasid_valid: 0,
            ..ok
        }
        .decode()
        .is_ok());
    }

    #[test]
    fn short_bytes_are_too_short() {
        for n in 0..PAGE_RESP_DRIVER_BYTES {
            assert_eq!(
                PageRespRequest::from_bytes(&vec![8; n]),
                Err(PageRespError::TooShort(n))
            );
        }
        assert_eq!(
            VirtioIommuFault::from_bytes(&[0; 47]),
            Err(RecordError::TooShort(47))
        );
    }
}
