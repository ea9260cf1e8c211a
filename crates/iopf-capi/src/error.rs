//! The boundary's one error rule: a failing call returns a negative errno and leaves its
//! message for [`iopf_last_error`]; a panic never crosses into C.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Why a call failed: the errno Linux (or the architecture) gives for the same mistake, and
/// the message the caller reads with [`iopf_last_error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CError {
    /// A positive errno; the call returns its negation.
    pub errno: i32,
    /// What went wrong, in words.
    pub message: String,
}

impl CError {
    /// An error with `errno` and `message`.
    pub fn new(errno: i32, message: impl Into<String>) -> CError {
        CError {
            errno,
            message: message.into(),
        }
    }

    /// `EINVAL`: the caller passed something this API does not accept.
    pub fn invalid(message: impl Into<String>) -> CError {
        CError::new(libc::EINVAL, message)
    }
}

impl std::fmt::Display for CError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CError {}

impl From<iopf_iommufd::Error> for CError {
    fn from(e: iopf_iommufd::Error) -> CError {
        CError::new(e.errno(), e.to_string())
    }
}

impl From<iopf_queue::QueueError> for CError {
    fn from(e: iopf_queue::QueueError) -> CError {
        CError::new(e.errno(), e.to_string())
    }
}

impl From<iopf_viommu::ConfigError> for CError {
    fn from(e: iopf_viommu::ConfigError) -> CError {
        CError::invalid(e.to_string())
    }
}

impl From<iopf_viommu::MmioError> for CError {
    fn from(e: iopf_viommu::MmioError) -> CError {
        CError::invalid(e.to_string())
    }
}

impl From<iopf_abi::AbiError> for CError {
    fn from(e: iopf_abi::AbiError) -> CError {
        CError::new(e.errno(), e.to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // A message with a NUL in it (it may quote a guest's or a peer's bytes) is cut there.
    let cut = message.split('\0').next().unwrap_or_default();
    let text = CString::new(cut).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

/// Runs one C entry point: its error becomes `-errno` and the thread's last error message, a
/// panic becomes `-EIO` ("internal error"). Successful results must fit an `int`'s positive
/// half; a count that does not is clamped (no call returns one that large).
pub(crate) fn guard(f: impl FnOnce() -> Result<usize, CError>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(n)) => i32::try_from(n).unwrap_or(i32::MAX),
        Ok(Err(e)) => {
            set_last_error(&e.message);
            // An errno is 1 to 4095 (the kernel's MAX_ERRNO); anything else is iopf's bug or a
            // peer's number that slipped through: EIO, never an overflow.
            if (1..=4095).contains(&e.errno) {
                -e.errno
            } else {
                -libc::EIO
            }
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            set_last_error(&format!(
                "internal error in iopf: {what} (the handle may be inconsistent: free it)"
            ));
            -libc::EIO
        }
    }
}

/// Runs an entry point that cannot fail (a free, a getter): a panic is swallowed and leaves
/// its message for [`iopf_last_error`].
pub(crate) fn guard_void(f: impl FnOnce()) {
    let _ = guard(|| {
        f();
        Ok(0)
    });
}

/// The message of the last call that failed on this thread, as a NUL-terminated UTF-8
/// string; `""` if none has. Owned by the library and valid until the next failing call on
/// this thread: read it right after the call that failed (not in the same expression as a
/// later call) and copy it to keep it.
#[no_mangle]
pub extern "C" fn iopf_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        // SAFETY: iopf_last_error returns this thread's CString, alive until the next failure.
        unsafe { CStr::from_ptr(iopf_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn an_error_is_a_negative_errno_and_a_message() {
        assert_eq!(
            guard(|| Err(CError::new(libc::EAGAIN, "full"))),
            -libc::EAGAIN
        );
        assert_eq!(last(), "full");
        assert_eq!(guard(|| Ok(3)), 3);
        assert_eq!(last(), "full", "a success leaves the last error alone");
    }

    #[test]
    fn a_panic_does_not_cross_and_is_named() {
        assert_eq!(guard(|| panic!("boom")), -libc::EIO);
        assert!(last().contains("boom"), "{}", last());
    }

    /// Regression (review): `-errno.abs()` of i32::MIN overflowed outside the unwind guard.
    #[test]
    fn an_errno_out_of_range_is_eio() {
        for errno in [0, -5, 4096, i32::MAX, i32::MIN] {
            assert_eq!(
                guard(|| Err(CError::new(errno, "odd"))),
                -libc::EIO,
                "{errno}"
            );
        }
        assert_eq!(guard(|| Err(CError::new(4095, "max"))), -4095);
    }

    #[test]
    fn a_message_with_a_nul_is_cut_there() {
        guard(|| Err(CError::invalid("before\0after")));
        assert_eq!(last(), "before");
    }
}
