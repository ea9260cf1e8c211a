//! The crate's one error type. Every error leaves the core exactly as it was: nothing reaches a
//! device and nothing outstanding is disturbed (only the rejection counters move).

use iopf_abi::Features;

use crate::judge::Rejected;
use crate::{Cookie, DeviceId, HandlerId};

/// Why the core refused a call. [`CoreError::errno`] gives the errno Linux returns for the same
/// mistake.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// The device is not registered (never was, or was removed).
    #[error("{0} is not registered")]
    UnknownDevice(DeviceId),
    /// PRI properties or a policy that cannot be used.
    #[error("bad configuration: {0}")]
    BadConfig(&'static str),
    /// No room for another device (65,535 at once) or handler.
    #[error("no room for another {0}")]
    TableFull(&'static str),
    /// A handler is already attached at this place (the device, or this PASID of it).
    #[error("a handler is already attached to {device} for {}", pasid_name(*.pasid))]
    HandlerBusy {
        /// The device.
        device: DeviceId,
        /// The PASID, or `None` for the device-wide handler.
        pasid: Option<u32>,
    },
    /// The handler is not attached (never was, or was detached or replaced).
    #[error("{0} is not attached")]
    UnknownHandler(HandlerId),
    /// The response names no group outstanding anywhere: a cookie never handed out, one whose
    /// slot has been reused since, or a (PASID, grpid) that matches nothing.
    #[error("the response names no outstanding page request group")]
    UnknownGroup,
    /// The response names a group that has already been answered (a duplicate or late answer).
    #[error("{0} names a group that has already been answered")]
    AlreadyAnswered(Cookie),
    /// The group is outstanding, but on another device than the responding handler's.
    #[error("{cookie} belongs to {owner}, not to the responding handler's device")]
    WrongDevice {
        /// The group named.
        cookie: Cookie,
        /// The device it belongs to.
        owner: DeviceId,
    },
    /// The group is outstanding on the handler's device but was delivered to another handler
    /// (a foreign group).
    #[error("{0} was delivered to another handler of the same device")]
    WrongHandler(Cookie),
    /// The device requires the PASID in responses ("PRG Response PASID Required") and the
    /// response's PASID is missing or is not the request's.
    #[error("grpid {grpid}: the device needs the request's PASID in the response, got {}", pasid_name(*.got))]
    WrongPasid {
        /// The PRG index.
        grpid: u32,
        /// The PASID the response carried.
        got: Option<u32>,
    },
    /// The response code is not SUCCESS (0), INVALID (1) or FAILURE (2).
    #[error("unknown page response code {0}")]
    UnknownCode(u32),
    /// The response uses something the handler's consumer did not agree on in the negotiation
    /// (echoed private data without `PRIV_DATA_ECHO`, a cookie without `COOKIE_RESPONSE`).
    #[error("the response uses {0:?}, which was not agreed")]
    NotAgreed(Features),
    /// The response echoes private data that is not the page request's (or the request had none).
    #[error("{0}: the echoed private data is not the page request's")]
    PrivateDataMismatch(Cookie),
    /// The PASID has no handler of its own on this device.
    #[error("{device} has no handler for PASID {pasid}")]
    NoPasidHandler {
        /// The device.
        device: DeviceId,
        /// The PASID.
        pasid: u32,
    },
}

fn pasid_name(p: Option<u32>) -> String {
    match p {
        Some(p) => format!("PASID {p}"),
        None => "no PASID".to_string(),
    }
}

impl CoreError {
    /// The core's error for the judge's rejection (`device_of` names a device key, a device slot
    /// index, as the id of the device registered there).
    pub(crate) fn rejected(r: Rejected, device_of: impl Fn(u32) -> DeviceId) -> CoreError {
        match r {
            Rejected::UnknownCode(code) => CoreError::UnknownCode(code),
            Rejected::NotAgreed(f) => CoreError::NotAgreed(f),
            Rejected::UnknownGroup => CoreError::UnknownGroup,
            Rejected::AlreadyAnswered(c) => CoreError::AlreadyAnswered(c),
            Rejected::WrongDevice { cookie, device } => CoreError::WrongDevice {
                cookie,
                owner: device_of(device),
            },
            Rejected::ForeignGroup(c) => CoreError::WrongHandler(c),
            Rejected::WrongPasid { grpid, got } => CoreError::WrongPasid { grpid, got },
            Rejected::PrivateDataMismatch(c) => CoreError::PrivateDataMismatch(c),
        }
    }

    /// The errno Linux returns for the same mistake: `ENODEV` for an unknown device (as
    /// `iopf_queue_flush_dev()`), `EBUSY` for a second attach (as `iopf_queue_add_device()`),
    /// `ENOSPC` for a full table, `ENOENT` for an unknown handler (an iommufd object id that
    /// names nothing), `EINVAL` for every rejected response (as `iommu_page_response()` and
    /// `iommufd_fault_fops_write()`) and bad properties.
    pub fn errno(&self) -> i32 {
        match self {
            CoreError::UnknownDevice(_) => libc::ENODEV,
            CoreError::HandlerBusy { .. } => libc::EBUSY,
            CoreError::TableFull(_) => libc::ENOSPC,
            CoreError::UnknownHandler(_) | CoreError::NoPasidHandler { .. } => libc::ENOENT,
            _ => libc::EINVAL,
        }
    }
}
