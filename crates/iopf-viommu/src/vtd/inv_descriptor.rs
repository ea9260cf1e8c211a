//! The invalidation-queue descriptors the page request path needs: the page group response
//! (type 0x9) and the invalidation wait (type 0x5), decoded strictly, as Linux's guest driver
//! builds them (`QI_PGRP_*` and `QI_IWD_*` in `drivers/iommu/intel/iommu.h`, Linux 6.12):
//!
//! ```text
//! page group response   qw0  type[3:0]=9  PASID_P[4]  PDP[5] (before 4.0)  code[15:12]
//!                            rid[31:16]  PASID[51:32]  type[11:9]=0
//!                       qw1  LPIG[2]  PRG index[11:3]
//!                       qw2, qw3  private data (before 4.0, with PDP; else reserved)
//! invalidation wait     qw0  type[3:0]=5  IF[4]  SW[5]  FN[6]  PD[7]  status data[63:32]
//!                       qw1  status address[63:2]
//! ```
//!
//! A descriptor that sets a reserved bit is an invalid descriptor: the queue reports an
//! invalidation queue error (`FSTS.IQE`) and stops at it ([`super::invalidation_queue`]). A
//! reserved response code is not: it is kept visible and read as Response Failure
//! ([`code_map::vtd_to_pcie`]), because Linux 6.12 guests write one. LPIG (qw1 bit 2) is
//! accepted either way and ignored: VT-d 4.0 made it reserved-and-ignored, and 6.12 guests
//! still set it.

use iopf_abi::ResponseCode;

use crate::bridge::{GuestResponse, PrivateDataMode};
use crate::code_map;

/// Type of the invalidation wait descriptor.
pub const WAIT_TYPE: u8 = 0x5;
/// Type of the page group response descriptor (`QI_PGRP_RESP_TYPE`).
pub const PAGE_GROUP_RESPONSE_TYPE: u8 = 0x9;
/// The highest descriptor type VT-d 3.x defines (0x1 context cache … 0x9 page group response).
pub const LAST_DEFINED_TYPE: u8 = 0x9;

const PASID_P: u64 = 1 << 4;
const PDP: u64 = 1 << 5;
const WAIT_IF: u64 = 1 << 4;
const WAIT_SW: u64 = 1 << 5;
const WAIT_FN: u64 = 1 << 6;
const WAIT_PD: u64 = 1 << 7;
/// Bits of a page group response's qw0 that name a field (type[3:0] and [11:9], PASID_P,
/// code, rid, PASID).
const PGRP_QW0_FIELDS: u64 =
    0xf | (0x7 << 9) | PASID_P | (0xf << 12) | (0xffff << 16) | (0xf_ffff << 32);
const PGRP_QW1_FIELDS: u64 = (1 << 2) | (0x1ff << 3);
const WAIT_QW0_FIELDS: u64 =
    0xf | (0x7 << 9) | WAIT_IF | WAIT_SW | WAIT_FN | WAIT_PD | (0xffff_ffff << 32);

/// The descriptor type: `qw0[3:0]` with `qw0[11:9]` as bits 6:4 (VT-d 3.0's 7-bit type).
pub fn descriptor_type(qw0: u64) -> u8 {
    ((qw0 & 0xf) | ((qw0 >> 5) & 0x70)) as u8
}

/// A decoded page group response: the guest driver's answer to a page request group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageGroupResponse {
    /// The requester id of the function answered.
    pub rid: u16,
    /// The PASID, when `PASID_P`.
    pub pasid: Option<u32>,
    /// The PRG index.
    pub prg_index: u16,
    /// The response code, in PCIe's meaning (VT-d: Success 0, Invalid Request 1, Response
    /// Failure 0xf; a reserved code is taken as Response Failure, see [`code_map::vtd_to_pcie`]).
    pub code: ResponseCode,
    /// The code field as the guest wrote it.
    pub raw_code: u8,
    /// Last page in group, as the guest set it (Linux sets the request's `lpig`).
    pub lpig: bool,
    /// The echoed private data, when `PDP` ([`PrivateDataMode::Carried`] only).
    pub private_data: Option<[u64; 2]>,
}

/// Why a descriptor is invalid: each one an invalidation queue error.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DescriptorError {
    /// The type is not the one expected, or not one VT-d defines.
    #[error("descriptor type {0:#x} is not valid here")]
    BadType(u8),
    /// A reserved bit is set.
    #[error("reserved bits {mask:#018x} of qw{qw} are set")]
    ReservedBits {
        /// Which quadword.
        qw: usize,
        /// The reserved bits that are set.
        mask: u64,
    },
    /// `PASID_P` is clear but the PASID field is not zero.
    #[error("the PASID field is {0:#x} without PASID_P")]
    PasidWithoutPresent(u32),
    /// A wait descriptor's status write needs a 4-byte aligned address (`qw1[1:0]` are reserved).
    #[error("the wait descriptor's status address {0:#x} is not 4-byte aligned")]
    UnalignedStatusAddress(u64),
}

impl PageGroupResponse {
    /// Decodes a page group response strictly for `mode`.
    pub fn decode(
        qw: &[u64; 4],
        mode: PrivateDataMode,
    ) -> Result<PageGroupResponse, DescriptorError> {
        let ty = descriptor_type(qw[0]);
        if ty != PAGE_GROUP_RESPONSE_TYPE {
            return Err(DescriptorError::BadType(ty));
        }
        let carried = mode == PrivateDataMode::Carried;
        let fields0 = if carried {
            PGRP_QW0_FIELDS | PDP
        } else {
            PGRP_QW0_FIELDS
        };
        reserved(qw[0], fields0, 0)?;
        reserved(qw[1], PGRP_QW1_FIELDS, 1)?;
        let pdp = carried && qw[0] & PDP != 0;
        if !pdp {
            reserved(qw[2], 0, 2)?;
            reserved(qw[3], 0, 3)?;
        }
        let raw_code = ((qw[0] >> 12) & 0xf) as u8;
        let code = code_map::vtd_to_pcie(raw_code);
        let pasid_field = ((qw[0] >> 32) & 0xf_ffff) as u32;
        let pasid = if qw[0] & PASID_P != 0 {
            Some(pasid_field)
        } else if pasid_field != 0 {
            return Err(DescriptorError::PasidWithoutPresent(pasid_field));
        } else {
            None
        };
        Ok(PageGroupResponse {
            rid: (qw[0] >> 16) as u16,
            pasid,
            prg_index: ((qw[1] >> 3) & 0x1ff) as u16,
            code,
            raw_code,
            lpig: qw[1] & (1 << 2) != 0,
            private_data: pdp.then_some([qw[2], qw[3]]),
        })
    }

    /// A response with `code` in its VT-d encoding, LPIG set (as Linux 6.12 sends it).
    pub fn new(
        rid: u16,
        pasid: Option<u32>,
        prg_index: u16,
        code: ResponseCode,
        private_data: Option<[u64; 2]>,
    ) -> PageGroupResponse {
        PageGroupResponse {
            rid,
            pasid,
            prg_index,
            code,
            raw_code: code_map::pcie_to_vtd(code),
            lpig: true,
            private_data,
        }
    }

    /// Whether the guest wrote a code the architecture reserves.
    pub fn raw_code_reserved(&self) -> bool {
        !code_map::vtd_code_defined(self.raw_code)
    }

    /// The response in the bridge's terms.
    pub fn to_guest(&self) -> GuestResponse {
        GuestResponse {
            rid: self.rid,
            pasid: self.pasid,
            prg_index: self.prg_index,
            code: self.code,
            private_data: self.private_data,
        }
    }

    /// Encodes the descriptor as a guest driver writes it (`intel_iommu_page_response()`);
    /// private data only in [`PrivateDataMode::Carried`].
    pub fn encode(&self, mode: PrivateDataMode) -> [u64; 4] {
        let mut qw0 = u64::from(PAGE_GROUP_RESPONSE_TYPE)
            | (u64::from(self.raw_code & 0xf) << 12)
            | (u64::from(self.rid) << 16);
        if let Some(p) = self.pasid {
            qw0 |= PASID_P | (u64::from(p & 0xf_ffff) << 32);
        }
        let qw1 = (u64::from(self.prg_index & 0x1ff) << 3) | (u64::from(self.lpig) << 2);
        match (mode, self.private_data) {
            (PrivateDataMode::Carried, Some(pd)) => [qw0 | PDP, qw1, pd[0], pd[1]],
            _ => [qw0, qw1, 0, 0],
        }
    }
}

/// A decoded invalidation wait descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct WaitDescriptor {
    /// IF: raise the invalidation completion event (`ICS.IWC`).
    pub interrupt: bool,
    /// SW: write `status_data` to `status_address`.
    pub status_write: bool,
    /// FN: fence (later descriptors wait for this one).
    pub fence: bool,
    /// PD: page request drain.
    pub drain: bool,
    /// The 32-bit status written.
    pub status_data: u32,
    /// Where it is written (4-byte aligned).
    pub status_address: u64,
}

impl WaitDescriptor {
    /// Decodes a wait descriptor strictly (`qw2`, `qw3` reserved in 256-bit mode).
    pub fn decode(qw: &[u64; 4]) -> Result<WaitDescriptor, DescriptorError> {
        let ty = descriptor_type(qw[0]);
        if ty != WAIT_TYPE {
            return Err(DescriptorError::BadType(ty));
        }
        reserved(qw[0], WAIT_QW0_FIELDS, 0)?;
        reserved(qw[2], 0, 2)?;
        reserved(qw[3], 0, 3)?;
        let sw = qw[0] & WAIT_SW != 0;
        if sw && qw[1] & 3 != 0 {
            return Err(DescriptorError::UnalignedStatusAddress(qw[1]));
        }
        Ok(WaitDescriptor {
            interrupt: qw[0] & WAIT_IF != 0,
            status_write: sw,
            fence: qw[0] & WAIT_FN != 0,
            drain: qw[0] & WAIT_PD != 0,
            status_data: (qw[0] >> 32) as u32,
            status_address: qw[1] & !3,
        })
    }

    /// Encodes the descriptor as Linux's `qi_submit_sync()` builds it.
    pub fn encode(&self) -> [u64; 4] {
        let mut qw0 = u64::from(WAIT_TYPE) | (u64::from(self.status_data) << 32);
        for (set, bit) in [
            (self.interrupt, WAIT_IF),
            (self.status_write, WAIT_SW),
            (self.fence, WAIT_FN),
            (self.drain, WAIT_PD),
        ] {
            if set {
                qw0 |= bit;
            }
        }
        [qw0, self.status_address & !3, 0, 0]
    }
}

fn reserved(value: u64, fields: u64, qw: usize) -> Result<(), DescriptorError> {
    match value & !fields {
        0 => Ok(()),
        mask => Err(DescriptorError::ReservedBits { qw, mask }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp() -> PageGroupResponse {
        PageGroupResponse {
            rid: 0x0210,
            pasid: Some(0xabcde),
            prg_index: 0x1ff,
            code: ResponseCode::Invalid,
            raw_code: 1,
            lpig: true,
            private_data: None,
        }
    }

    #[test]
    fn page_group_response_round_trips_and_is_strict() {
        for mode in [PrivateDataMode::None, PrivateDataMode::Carried] {
            assert_eq!(
                PageGroupResponse::decode(&resp().encode(mode), mode),
                Ok(resp())
            );
        }
        let pd = PageGroupResponse {
            private_data: Some([7, 8]),
            ..resp()
        };
        let qw = pd.encode(PrivateDataMode::Carried);
        assert_eq!(
            PageGroupResponse::decode(&qw, PrivateDataMode::Carried),
            Ok(pd)
        );
        assert_eq!(
            PageGroupResponse::decode(&qw, PrivateDataMode::None),
            Err(DescriptorError::ReservedBits { qw: 0, mask: PDP })
        );
        // A reserved code is read as Response Failure and kept visible (Linux 6.12 guests send
        // their FAILURE, 2, unchanged).
        let mut qw = resp().encode(PrivateDataMode::None);
        qw[0] = (qw[0] & !(0xf << 12)) | (0x2 << 12);
        let r = PageGroupResponse::decode(&qw, PrivateDataMode::None).expect("decodes");
        assert_eq!(
            (r.code, r.raw_code, r.raw_code_reserved()),
            (ResponseCode::Failure, 2, true)
        );
        let mut qw = resp().encode(PrivateDataMode::None);
        qw[1] |= 1 << 12;
        assert_eq!(
            PageGroupResponse::decode(&qw, PrivateDataMode::None),
            Err(DescriptorError::ReservedBits {
                qw: 1,
                mask: 1 << 12
            })
        );
        let mut qw = resp().encode(PrivateDataMode::None);
        qw[0] |= 1 << 9; // type bits 6:4 = 1: type 0x19
        assert_eq!(
            PageGroupResponse::decode(&qw, PrivateDataMode::None),
            Err(DescriptorError::BadType(0x19))
        );
    }

    #[test]
    fn failure_is_0xf_on_the_wire() {
        let r = PageGroupResponse::new(0x10, None, 1, ResponseCode::Failure, None);
        assert_eq!((r.encode(PrivateDataMode::None)[0] >> 12) & 0xf, 0xf);
    }

    #[test]
    fn wait_descriptor_round_trips_and_is_strict() {
        let w = WaitDescriptor {
            interrupt: true,
            status_write: true,
            fence: true,
            drain: false,
            status_data: 0xdead_beef,
            status_address: 0x1000,
        };
        assert_eq!(WaitDescriptor::decode(&w.encode()), Ok(w));
        let mut qw = w.encode();
        qw[1] |= 2;
        assert_eq!(
            WaitDescriptor::decode(&qw),
            Err(DescriptorError::UnalignedStatusAddress(0x1002))
        );
        let mut qw = w.encode();
        qw[0] |= 1 << 8;
        assert_eq!(
            WaitDescriptor::decode(&qw),
            Err(DescriptorError::ReservedBits {
                qw: 0,
                mask: 1 << 8
            })
        );
    }
}
