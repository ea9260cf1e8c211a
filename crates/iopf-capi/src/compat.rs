//! `iopf_compat_device`: the device's end of the compatible queue (iopf's model of the kernel
//! fault path behind a fault fd), for tests and for VMMs that emulate a PRI device themselves.

use std::collections::VecDeque;

use iopf_abi::fault::IommuFaultPageRequest;
use iopf_core::DeviceResponse;
use iopf_iommufd::{compat_fault_queue_with, CompatConfig, CompatProducer};

use crate::error::{guard, guard_void, CError};
use crate::ffi;
use crate::host::{HostQueue, IopfHost};

/// `iopf_compat_new` flag: the device's PRI capability has "PRG Response PASID Required".
pub const IOPF_COMPAT_PASID_REQUIRED: u32 = 1 << 0;

/// `iopf_device_response.flags`: `pasid` is carried.
pub const IOPF_DEVICE_RESPONSE_PASID: u32 = 1 << 0;
/// `iopf_device_response.flags`: `private_data` is carried.
pub const IOPF_DEVICE_RESPONSE_PRIV_DATA: u32 = 1 << 1;

/// The device's end of a compatible queue. Created with its host end by `iopf_compat_new`,
/// freed by `iopf_compat_device_free` (either end may be freed first).
pub struct IopfCompatDevice {
    producer: CompatProducer,
    answers: VecDeque<DeviceResponse>,
}

/// A page response as it reached the device (a PCIe PRG Response Message).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IopfDeviceResponse {
    /// `IOPF_DEVICE_RESPONSE_PASID`, `IOPF_DEVICE_RESPONSE_PRIV_DATA`.
    pub flags: u32,
    /// The PASID, with `IOPF_DEVICE_RESPONSE_PASID`.
    pub pasid: u32,
    /// The PRG index answered.
    pub grpid: u32,
    /// 0 Success, 1 Invalid Request, 2 Response Failure (PCIe's codes).
    pub code: u32,
    /// The request's private data, with `IOPF_DEVICE_RESPONSE_PRIV_DATA`.
    pub private_data: [u64; 2],
}

impl From<&DeviceResponse> for IopfDeviceResponse {
    fn from(r: &DeviceResponse) -> IopfDeviceResponse {
        let mut flags = 0;
        if r.pasid.is_some() {
            flags |= IOPF_DEVICE_RESPONSE_PASID;
        }
        if r.private_data.is_some() {
            flags |= IOPF_DEVICE_RESPONSE_PRIV_DATA;
        }
        IopfDeviceResponse {
            flags,
            pasid: r.pasid.unwrap_or(0),
            grpid: r.grpid,
            code: r.code.raw(),
            private_data: r.private_data.unwrap_or([0; 2]),
        }
    }
}

/// A compatible queue (Linux 6.12's rules) for the device whose iommufd id is `dev_id`: its
/// device end in `*device`, its host end (a fault fd in all but name) in `*host`. `flags`:
/// `IOPF_COMPAT_PASID_REQUIRED`. Errors: `-EINVAL` (unknown flags, a NULL out pointer).
///
/// # Safety
/// `device` and `host` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn iopf_compat_new(
    dev_id: u32,
    flags: u32,
    device: *mut *mut IopfCompatDevice,
    host: *mut *mut IopfHost,
) -> i32 {
    guard(|| {
        if flags & !IOPF_COMPAT_PASID_REQUIRED != 0 {
            return Err(CError::invalid(format!(
                "unknown iopf_compat_new flags {:#x}",
                flags & !IOPF_COMPAT_PASID_REQUIRED
            )));
        }
        // Both checked before either is written: a failure leaves nothing behind.
        ffi::check(device, "device")?;
        ffi::check(host, "host")?;
        let mut cfg = CompatConfig::new(dev_id);
        cfg.pasid_required = flags & IOPF_COMPAT_PASID_REQUIRED != 0;
        let (producer, queue) = compat_fault_queue_with(cfg)?;
        let dev = IopfCompatDevice {
            producer,
            answers: VecDeque::new(),
        };
        // SAFETY: both checked (not NULL, aligned) above, so neither write can fail; writable by
        // contract.
        unsafe {
            device.write(Box::into_raw(Box::new(dev)));
            host.write(Box::into_raw(Box::new(IopfHost::new(HostQueue::Compat(
                queue,
            )))));
        }
        Ok(0)
    })
}

/// Frees the device end (NULL: nothing). The host end keeps working; its groups stay.
///
/// # Safety
/// `device` is NULL or a device end not freed yet.
#[no_mangle]
pub unsafe extern "C" fn iopf_compat_device_free(device: *mut IopfCompatDevice) {
    // SAFETY: by contract.
    guard_void(|| drop(unsafe { ffi::take(device) }));
}

/// The device sends a page request (`struct iommu_fault_page_request`'s layout): a request
/// without LAST_PAGE waits for the rest of its group; LAST_PAGE completes the group and queues
/// it for the host end. With no host end (freed, or detached) the group is answered INVALID.
/// Errors: `-EINVAL` for unknown flag or permission bits (nothing is reported).
///
/// # Safety
/// `device` is NULL or live; `request` is NULL or points at a request.
#[no_mangle]
pub unsafe extern "C" fn iopf_compat_report(
    device: *mut IopfCompatDevice,
    request: *const IommuFaultPageRequest,
) -> i32 {
    guard(|| {
        // SAFETY: by contract.
        let dev = unsafe { ffi::obj_mut(device, "device") }?;
        // SAFETY: by contract.
        let req = unsafe { ffi::obj(request, "request") }?.decode()?;
        dev.producer.report(req);
        Ok(0)
    })
}

/// Moves up to `n` of the responses the device received into `out`, oldest first; returns
/// how many. Errors: `-EINVAL` (NULL `device`, or NULL `out` with `n` > 0).
///
/// # Safety
/// `device` is NULL or live; `out` is NULL or has room for `n` responses.
#[no_mangle]
pub unsafe extern "C" fn iopf_compat_take_answers(
    device: *mut IopfCompatDevice,
    out: *mut IopfDeviceResponse,
    n: usize,
) -> i32 {
    guard(|| {
        // SAFETY: by contract.
        let dev = unsafe { ffi::obj_mut(device, "device") }?;
        // SAFETY: by contract; plain integers.
        let out = unsafe { ffi::slice_mut(out, n, "out") }?;
        dev.answers.extend(dev.producer.take_answers());
        let k = out.len().min(dev.answers.len()).min(crate::host::MAX_COUNT);
        for (slot, r) in out.iter_mut().zip(dev.answers.drain(..k)) {
            *slot = IopfDeviceResponse::from(&r);
        }
        Ok(k)
    })
}

/// Groups the host end has read and not answered. Errors: `-EINVAL` (`device` NULL).
///
/// # Safety
/// `device` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn iopf_compat_outstanding(device: *const IopfCompatDevice) -> i32 {
    guard(|| {
        // SAFETY: by contract.
        let dev = unsafe { ffi::obj(device, "device") }?;
        Ok(dev.producer.outstanding())
    })
}

/// Detaches the queue (`attach = false`: every waiting and outstanding group is answered
/// INVALID, and later reports too) or attaches it again (`attach = true`).
/// Errors: `-EINVAL` (`device` NULL), the fault core's errno.
///
/// # Safety
/// `device` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn iopf_compat_set_attached(
    device: *mut IopfCompatDevice,
    attach: bool,
) -> i32 {
    guard(|| {
        // SAFETY: by contract.
        let dev = unsafe { ffi::obj_mut(device, "device") }?;
        if attach {
            dev.producer.attach()?;
        } else {
            dev.producer.detach();
        }
        Ok(0)
    })
}
