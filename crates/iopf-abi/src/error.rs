//! The crate's one error type.

/// What was wrong with a record, a size or a value. Each variant maps to the errno Linux returns
/// for the same mistake ([`AbiError::errno`]). New checks may add variants, so a `match` needs a
/// `_` arm.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AbiError {
    /// The buffer does not hold exactly one record of this kind.
    #[error("{record} must be {expected} bytes, got {got}")]
    BadSize {
        /// The record being decoded.
        record: &'static str,
        /// Its size.
        expected: usize,
        /// The bytes that were given.
        got: usize,
    },
    /// A size-prefixed struct claims fewer bytes than its oldest version has.
    #[error("argsz {argsz} is below {min}, the size of the oldest version of {record}")]
    ArgszTooSmall {
        /// The record being read.
        record: &'static str,
        /// The size it claimed.
        argsz: u32,
        /// The size of its first version.
        min: usize,
    },
    /// A size-prefixed struct claims more bytes than the buffer holds.
    #[error("argsz {argsz} of {record} is larger than the {got} bytes given")]
    Truncated {
        /// The record being read.
        record: &'static str,
        /// The size it claimed.
        argsz: u32,
        /// The bytes that were given.
        got: usize,
    },
    /// A newer peer's struct carries a non-zero byte in a tail this side does not know.
    #[error("{record}: byte {offset} lies past the {known} bytes this side knows and is not zero")]
    NonZeroTail {
        /// The record being read.
        record: &'static str,
        /// The size this side knows.
        known: usize,
        /// The first non-zero byte past it.
        offset: usize,
    },
    /// `iommu_fault.type` is neither DMA_UNRECOV (1) nor PAGE_REQ (2).
    #[error("unknown fault type {0}")]
    UnknownFaultType(u32),
    /// `iommu_fault_unrecoverable.reason` is not an `enum iommu_fault_reason` value.
    #[error("unknown unrecoverable fault reason {0}")]
    UnknownReason(u32),
    /// A flags field has bits this ABI does not define.
    #[error("{field} has unknown bits {bits:#x}")]
    UnknownFlags {
        /// The field, as `struct.member`.
        field: &'static str,
        /// The unknown bits alone.
        bits: u32,
    },
    /// A field that must be zero is not.
    #[error("{field} is reserved and must be zero")]
    NonZeroReserved {
        /// The field, as `struct.member`.
        field: &'static str,
    },
    /// A response code outside the codes this ABI defines.
    #[error("unknown page response code {0}")]
    UnknownCode(u32),
    /// A response code that exists but is not accepted on this path (FAILURE through iommufd).
    #[error("response code {0} is not accepted here")]
    CodeNotAllowed(u32),
    /// `iommu_page_response.version` is not one this side knows.
    #[error("unknown page response version {0}")]
    UnknownVersion(u32),
    /// The two argsz of a VFIO page response disagree with each other or with the version.
    #[error("inconsistent argsz: {0}")]
    InconsistentArgsz(&'static str),
}

impl AbiError {
    /// The errno Linux returns for this mistake: `E2BIG` for a non-zero unknown tail (as
    /// `copy_struct_from_user()`), `EINVAL` for everything else (as `iommu_page_response()` and
    /// `iommufd_fault_fops_write()`).
    pub fn errno(&self) -> i32 {
        match self {
            AbiError::NonZeroTail { .. } => errno::E2BIG,
            _ => errno::EINVAL,
        }
    }
}

/// The Linux errno values [`AbiError::errno`] returns, defined here so the crate needs no libc (a
/// bare `no_std` target has no errno of its own). They are the values of Linux's
/// `include/uapi/asm-generic/errno-base.h`, which every Linux architecture shares; a test on a
/// `std` host asserts them equal to `libc`'s.
pub mod errno {
    /// `E2BIG`, "Argument list too long": what `copy_struct_from_user()` returns for a non-zero
    /// byte past the size the kernel knows.
    pub const E2BIG: i32 = 7;
    /// `EINVAL`, "Invalid argument": every other malformed record or value.
    pub const EINVAL: i32 = 22;
}
