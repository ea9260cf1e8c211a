//! The VT-d page request descriptor: 32 bytes the remapping hardware writes into the guest's page
//! request queue, laid out as Linux's guest driver reads it (`struct page_req_dsc` in
//! `drivers/iommu/intel/prq.c`, Linux 6.12):
//!
//! ```text
//! qw0  type[7:0]=1  pasid_present[8]  priv_data_present[9] (before VT-d 4.0)  rid[31:16]
//!      pasid[51:32]  exe_req[52]  pm_req[53]
//! qw1  rd_req[0]  wr_req[1]  lpig[2]  prg_index[11:3]  addr[63:12]
//! qw2, qw3  private data (before VT-d 4.0, when priv_data_present; else reserved, zero)
//! ```
//!
//! Bit 9 and qw2–3 are private data only in [`PrivateDataMode::Carried`], the seed-era mode
//! (VT-d 3.x scalable mode); VT-d 4.0 made them reserved and Linux removed them in 2024.

use iopf_abi::Perm;

use crate::bridge::PrivateDataMode;

/// The descriptor type of a page request (`qw0[7:0]`).
pub const PAGE_REQUEST_TYPE: u64 = 1;
/// A descriptor's size in bytes.
pub const DESCRIPTOR_BYTES: usize = 32;

const PASID_PRESENT: u64 = 1 << 8;
const PRIV_DATA_PRESENT: u64 = 1 << 9;
const EXE_REQ: u64 = 1 << 52;
const PM_REQ: u64 = 1 << 53;
const RD_REQ: u64 = 1 << 0;
const WR_REQ: u64 = 1 << 1;
const LPIG: u64 = 1 << 2;

/// Bits of qw0 that name a field, by mode (the rest are reserved).
const QW0_FIELDS: u64 = 0xff | PASID_PRESENT | (0xffff << 16) | (0xf_ffff << 32) | EXE_REQ | PM_REQ;

/// A decoded page request descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VtdPageRequest {
    /// The requester id (bus/device/function) of the function in the guest.
    pub rid: u16,
    /// The PASID, when `pasid_present`.
    pub pasid: Option<u32>,
    /// The PRG index (9 bits).
    pub prg_index: u16,
    /// Read, write, execute (`exe_req`) and privileged (`pm_req`) requested.
    pub perm: Perm,
    /// The page address (bits 63:12; the low 12 bits are zero).
    pub addr: u64,
    /// Last page in group.
    pub lpig: bool,
    /// The private data, when `priv_data_present` ([`PrivateDataMode::Carried`] only).
    pub private_data: Option<[u64; 2]>,
}

/// Why 32 bytes are not a page request descriptor of the mode asked for.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum PageRequestError {
    /// `qw0[7:0]` is not 1.
    #[error("descriptor type {0:#x} is not a page request (1)")]
    NotAPageRequest(u64),
    /// A reserved bit is set.
    #[error("reserved bits {mask:#018x} of qw{qw} are set")]
    ReservedBits {
        /// Which quadword.
        qw: usize,
        /// The reserved bits that are set.
        mask: u64,
    },
    /// `pasid_present` is clear but the PASID field is not zero.
    #[error("the PASID field is {0:#x} without pasid_present")]
    PasidWithoutPresent(u32),
}

impl VtdPageRequest {
    /// Encodes the descriptor as the hardware writes it, in `mode`. The PRG index is masked to 9
    /// bits, the PASID to 20 and the address to its page; private data is written only in
    /// [`PrivateDataMode::Carried`].
    pub fn encode(&self, mode: PrivateDataMode) -> [u64; 4] {
        let mut qw0 = PAGE_REQUEST_TYPE | (u64::from(self.rid) << 16);
        if let Some(pasid) = self.pasid {
            qw0 |= PASID_PRESENT | (u64::from(pasid & 0xf_ffff) << 32);
        }
        if self.perm.contains(Perm::EXEC) {
            qw0 |= EXE_REQ;
        }
        if self.perm.contains(Perm::PRIV) {
            qw0 |= PM_REQ;
        }
        let mut qw1 = (u64::from(self.prg_index & 0x1ff) << 3) | (self.addr & !0xfff);
        if self.perm.contains(Perm::READ) {
            qw1 |= RD_REQ;
        }
        if self.perm.contains(Perm::WRITE) {
            qw1 |= WR_REQ;
        }
        if self.lpig {
            qw1 |= LPIG;
        }
        let mut qw = [qw0, qw1, 0, 0];
        if let (PrivateDataMode::Carried, Some(pd)) = (mode, self.private_data) {
            qw[0] |= PRIV_DATA_PRESENT;
            qw[2] = pd[0];
            qw[3] = pd[1];
        }
        qw
    }

    /// Decodes strictly for `mode`: type 1, no reserved bit set, no PASID without
    /// `pasid_present`.
    pub fn decode(
        qw: &[u64; 4],
        mode: PrivateDataMode,
    ) -> Result<VtdPageRequest, PageRequestError> {
        let ty = qw[0] & 0xff;
        if ty != PAGE_REQUEST_TYPE {
            return Err(PageRequestError::NotAPageRequest(ty));
        }
        let carried = mode == PrivateDataMode::Carried;
        let fields0 = if carried {
            QW0_FIELDS | PRIV_DATA_PRESENT
        } else {
            QW0_FIELDS
        };
        if qw[0] & !fields0 != 0 {
            return Err(PageRequestError::ReservedBits {
                qw: 0,
                mask: qw[0] & !fields0,
            });
        }
        let req = Self::fields(qw, mode);
        if req.pasid.is_none() {
            let pasid = ((qw[0] >> 32) & 0xf_ffff) as u32;
            if pasid != 0 {
                return Err(PageRequestError::PasidWithoutPresent(pasid));
            }
        }
        let pd_present = carried && qw[0] & PRIV_DATA_PRESENT != 0;
        if !pd_present {
            if let Some(i) = (2..4).find(|&i| qw[i] != 0) {
                return Err(PageRequestError::ReservedBits { qw: i, mask: qw[i] });
            }
        }
        Ok(req)
    }

    /// Reads the fields as Linux's guest driver does, ignoring reserved bits (liberal: what a
    /// driver model reads from "hardware").
    pub fn fields(qw: &[u64; 4], mode: PrivateDataMode) -> VtdPageRequest {
        let mut perm = Perm::empty();
        perm.set(Perm::READ, qw[1] & RD_REQ != 0);
        perm.set(Perm::WRITE, qw[1] & WR_REQ != 0);
        perm.set(Perm::EXEC, qw[0] & EXE_REQ != 0);
        perm.set(Perm::PRIV, qw[0] & PM_REQ != 0);
        let pd_present = mode == PrivateDataMode::Carried && qw[0] & PRIV_DATA_PRESENT != 0;
        VtdPageRequest {
            rid: (qw[0] >> 16) as u16,
            pasid: (qw[0] & PASID_PRESENT != 0).then_some(((qw[0] >> 32) & 0xf_ffff) as u32),
            prg_index: ((qw[1] >> 3) & 0x1ff) as u16,
            perm,
            addr: qw[1] & !0xfff,
            lpig: qw[1] & LPIG != 0,
            private_data: pd_present.then_some([qw[2], qw[3]]),
        }
    }

    /// A stop marker: last in group with neither read nor write (no response is sent for it).
    pub fn is_stop_marker(&self) -> bool {
        self.lpig && !self.perm.intersects(Perm::READ | Perm::WRITE)
    }

    /// Whether the request needs a page group response: the last of its group, or (VT-d 3.x)
    /// one that carries private data, as `prq_event_thread()` of Linux ≤ 6.9 decided.
    pub fn needs_response(&self) -> bool {
        (self.lpig && !self.is_stop_marker()) || self.private_data.is_some()
    }
}

/// The descriptor's bytes, little endian, as they sit in guest memory.
pub fn to_bytes(qw: &[u64; 4]) -> [u8; DESCRIPTOR_BYTES] {
    let mut b = [0u8; DESCRIPTOR_BYTES];
    for (i, q) in qw.iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&q.to_le_bytes());
    }
    b
}

/// The four quadwords of 32 little-endian bytes.
pub fn from_bytes(b: &[u8; DESCRIPTOR_BYTES]) -> [u64; 4] {
    let mut qw = [0u64; 4];
    for (i, q) in qw.iter_mut().enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i * 8..i * 8 + 8]);
        *q = u64::from_le_bytes(w);
    }
    qw
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> VtdPageRequest {
        VtdPageRequest {
            rid: 0x0108,
            pasid: Some(0x12345),
            prg_index: 0x1ab,
            perm: Perm::READ | Perm::WRITE,
            addr: 0x7fff_1234_5000,
            lpig: true,
            private_data: None,
        }
    }

    #[test]
    fn round_trips_in_both_modes() {
        let r = req();
        for mode in [PrivateDataMode::None, PrivateDataMode::Carried] {
            assert_eq!(VtdPageRequest::decode(&r.encode(mode), mode), Ok(r));
        }
        let with_pd = VtdPageRequest {
            private_data: Some([1, 2]),
            ..r
        };
        let qw = with_pd.encode(PrivateDataMode::Carried);
        assert_eq!(qw[0] & PRIV_DATA_PRESENT, PRIV_DATA_PRESENT);
        assert_eq!(
            VtdPageRequest::decode(&qw, PrivateDataMode::Carried),
            Ok(with_pd)
        );
        // A 4.0 reader refuses what a 3.x writer wrote: bit 9 is reserved there.
        assert_eq!(
            VtdPageRequest::decode(&qw, PrivateDataMode::None),
            Err(PageRequestError::ReservedBits {
                qw: 0,
                mask: PRIV_DATA_PRESENT
            })
        );
        // And a 4.0 writer never writes private data.
        assert_eq!(with_pd.encode(PrivateDataMode::None)[2..], [0, 0]);
    }

    #[test]
    fn strict_decode_names_the_bad_bits() {
        let mut qw = req().encode(PrivateDataMode::None);
        qw[0] = (qw[0] & !0xff) | 9;
        assert_eq!(
            VtdPageRequest::decode(&qw, PrivateDataMode::None),
            Err(PageRequestError::NotAPageRequest(9))
        );
        let mut qw = req().encode(PrivateDataMode::None);
        qw[0] |= 1 << 63;
        assert_eq!(
            VtdPageRequest::decode(&qw, PrivateDataMode::None),
            Err(PageRequestError::ReservedBits {
                qw: 0,
                mask: 1 << 63
            })
        );
        let mut qw = VtdPageRequest {
            pasid: None,
            ..req()
        }
        .encode(PrivateDataMode::None);
        qw[0] |= 5 << 32;
        assert_eq!(
            VtdPageRequest::decode(&qw, PrivateDataMode::None),
            Err(PageRequestError::PasidWithoutPresent(5))
        );
        let mut qw = req().encode(PrivateDataMode::Carried);
        qw[3] = 1;
        assert_eq!(
            VtdPageRequest::decode(&qw, PrivateDataMode::Carried),
            Err(PageRequestError::ReservedBits { qw: 3, mask: 1 })
        );
    }

    #[test]
    fn stop_markers_and_responses() {
        let stop = VtdPageRequest {
            perm: Perm::empty(),
            ..req()
        };
        assert!(stop.is_stop_marker() && !stop.needs_response());
        let partial = VtdPageRequest {
            lpig: false,
            ..req()
        };
        assert!(!partial.needs_response());
        assert!(VtdPageRequest {
            private_data: Some([0; 2]),
            ..partial
        }
        .needs_response());
    }

    #[test]
    fn bytes_are_little_endian_quadwords() {
        let qw = req().encode(PrivateDataMode::None);
        let b = to_bytes(&qw);
        assert_eq!(b[0], 1);
        assert_eq!(from_bytes(&b), qw);
    }
}
