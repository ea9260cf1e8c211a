//! The crate's one error type: every way an iommufd call or a fault queue operation can fail,
//! each with the errno Linux returns for it.

use iopf_abi::AbiError;
use rustix::io::Errno;

/// What went wrong. [`Error::errno`] gives the errno Linux returns (or returned) for it, so a
/// caller can compare iopf's own fault queue with the kernel's errno for errno.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/dev/iommu` could not be opened (no iommufd in this kernel, or no permission).
    #[error("cannot open /dev/iommu: {0}")]
    Open(#[source] std::io::Error),
    /// An iommufd or selftest ioctl failed; `op` names it as the kernel's uAPI does.
    #[error("{op} failed: {errno}")]
    Ioctl {
        /// The ioctl, e.g. `IOMMU_FAULT_QUEUE_ALLOC`.
        op: &'static str,
        /// What the kernel returned.
        errno: Errno,
    },
    /// `read()` of a size that is not a multiple of the 40-byte `iommu_hwpt_pgfault`, or at a
    /// file offset (`iommufd_fault_fops_read()`: ESPIPE).
    #[error("a fault queue read must be a multiple of 40 bytes at offset 0, not {len} bytes")]
    ReadSize {
        /// The size asked for.
        len: usize,
    },
    /// `write()` of a size that is not a multiple of the 8-byte `iommu_hwpt_page_response`, or at
    /// a file offset (`iommufd_fault_fops_write()`: ESPIPE).
    #[error("a fault queue write must be a multiple of 8 bytes at offset 0, not {len} bytes")]
    WriteSize {
        /// The size given.
        len: usize,
    },
    /// The first waiting group has more records than the read buffer holds; nothing was taken
    /// (`iommufd_fault_fops_read()`: EINVAL, "Read count doesn't fit the first fault group").
    #[error("the first waiting fault group does not fit in a buffer of {capacity} records")]
    GroupTooLarge {
        /// Records the buffer holds.
        capacity: usize,
    },
    /// A response's code is neither SUCCESS (0) nor INVALID (1); the batch stopped there
    /// (`iommufd_fault_fops_write()`: EINVAL, checked before the cookie).
    #[error("page response code {code} is neither SUCCESS (0) nor INVALID (1)")]
    UnknownCode {
        /// The code given.
        code: u32,
    },
    /// A response names no group awaiting an answer: never handed out, already answered, or
    /// answered for the consumer on detach/replace (`iommufd_fault_fops_write()`: EINVAL).
    #[error("cookie {cookie} names no fault group awaiting a response")]
    UnknownCookie {
        /// The cookie given.
        cookie: u32,
    },
    /// A record read from the kernel is not a whole `iommu_hwpt_pgfault` (a kernel's records
    /// are otherwise read as they are, bits the uAPI does not name included).
    #[error("fault record from the kernel does not decode: {0}")]
    Record(#[source] AbiError),
    /// A fault-capable HWPT may not be attached to this SR-IOV VF (`iommufd_fault_iopf_enable()`:
    /// EINVAL; Response Failure on a VF would disable PRI for its PF and every VF).
    #[error("a fault-capable HWPT cannot be attached to an SR-IOV VF (its PRI is shared)")]
    FaultCapableVf,
    /// iopf's fault core refused an operation of the compatible queue (its configuration).
    #[error("fault core: {0}")]
    Core(#[source] iopf_core::CoreError),
    /// Any other failed system call on the fault fd (`op`: read, write, poll...).
    #[error("fault queue {op} failed: {errno}")]
    Io {
        /// The system call.
        op: &'static str,
        /// What the kernel returned.
        errno: Errno,
    },
}

impl Error {
    /// The errno Linux returns for this error (for [`Error::Open`], the one `open()` returned,
    /// EIO if none is known).
    pub fn errno(&self) -> i32 {
        match self {
            Error::Open(e) => e.raw_os_error().unwrap_or(libc_eio()),
            Error::Ioctl { errno, .. } | Error::Io { errno, .. } => errno.raw_os_error(),
            Error::ReadSize { .. } | Error::WriteSize { .. } => Errno::SPIPE.raw_os_error(),
            Error::GroupTooLarge { .. }
            | Error::FaultCapableVf
            | Error::UnknownCode { .. }
            | Error::UnknownCookie { .. } => Errno::INVAL.raw_os_error(),
            Error::Record(e) => e.errno(),
            Error::Core(e) => e.errno(),
        }
    }

    /// The error of a failed iommufd-ioctls call, keeping the kernel's errno.
    pub(crate) fn from_ioctls(op: &'static str, e: iommufd_ioctls::IommufdError) -> Error {
        use iommufd_ioctls::IommufdError as E;
        let errno = match &e {
            E::OpenIommufd(io) => {
                return Error::Open(match io.raw_os_error() {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::new(io.kind(), e),
                })
            }
            E::IommuDestroy(s)
            | E::IommuIoasAlloc(s)
            | E::IommuIoasMap(s)
            | E::IommuIoasMapFile(s)
            | E::IommuIoasUnmap(s)
            | E::IommuHwptAlloc(s)
            | E::IommuGetHwInfo(s)
            | E::IommuHwptInvalidate(s) => s.errno(),
            E::AttachHwpt(io) => io.raw_os_error().unwrap_or(libc_eio()),
            _ => libc_eio(),
        };
        Error::Ioctl {
            op,
            errno: Errno::from_raw_os_error(errno),
        }
    }
}

fn libc_eio() -> i32 {
    Errno::IO.raw_os_error()
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
