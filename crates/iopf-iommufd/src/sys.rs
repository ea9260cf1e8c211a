//! The ioctls iommufd-ioctls does not wrap, issued with rustix: `IOMMU_FAULT_QUEUE_ALLOC` and
//! (with the `selftest` feature) `IOMMU_TEST_CMD`. The crate's only `unsafe` lives here.
//!
//! Every iommufd ioctl is `_IO(IOMMUFD_TYPE, nr)` with the argument's own `size` field telling
//! the kernel how many bytes to copy (`iommufd_fops_ioctl()` → `copy_struct_from_user()`), so
//! each wrapper takes `&mut` of a `#[repr(C)]` struct whose layout equals the uAPI struct.

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};

use iopf_abi::iommufd::{IommuFaultAlloc, IOMMUFD_CMD_FAULT_QUEUE_ALLOC};
use rustix::ioctl::{ioctl, opcode, Opcode, Updater};

/// `IOMMUFD_TYPE` (`include/uapi/linux/iommufd.h`).
const IOMMUFD_TYPE: u8 = b';';

/// `IOMMU_FAULT_QUEUE_ALLOC` = `_IO(IOMMUFD_TYPE, IOMMUFD_CMD_FAULT_QUEUE_ALLOC)`.
const IOMMU_FAULT_QUEUE_ALLOC: Opcode =
    opcode::none(IOMMUFD_TYPE, IOMMUFD_CMD_FAULT_QUEUE_ALLOC as u8);

/// Issues `IOMMU_FAULT_QUEUE_ALLOC` on an iommufd (`iommufd_fault_alloc()`) and takes ownership
/// of the fd it installs.
pub(crate) fn fault_queue_alloc(
    iommufd: BorrowedFd<'_>,
    cmd: &mut IommuFaultAlloc,
) -> rustix::io::Result<OwnedFd> {
    cmd.size = core::mem::size_of::<IommuFaultAlloc>() as u32;
    // SAFETY: IOMMU_FAULT_QUEUE_ALLOC takes a pointer to `struct iommu_fault_alloc`.
    // `IommuFaultAlloc` is `#[repr(C)]` with the same four u32 fields (16 bytes; iopf-abi's layout
    // tests check it against the Linux header), `cmd` is a live exclusive borrow for the whole
    // call, and the kernel reads/writes at most `cmd.size`, set to 16 just above.
    unsafe {
        ioctl(
            iommufd,
            Updater::<IOMMU_FAULT_QUEUE_ALLOC, IommuFaultAlloc>::new(cmd),
        )
    }?;
    let raw = i32::try_from(cmd.out_fault_fd).map_err(|_| rustix::io::Errno::BADF)?;
    // SAFETY: on success the kernel has just installed `out_fault_fd` in this process for this
    // call alone (`fd_install()` at the end of `iommufd_fault_alloc()`); nothing else owns it, so
    // the `OwnedFd` is its one owner and closes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Borrows the fd of an `iommufd-ioctls` handle, which offers only `AsRawFd`.
pub(crate) fn borrow_iommufd(iommufd: &iommufd_ioctls::IommuFd) -> BorrowedFd<'_> {
    use std::os::fd::AsRawFd;
    // SAFETY: `IommuFd` owns the `File` of /dev/iommu and closes it only when dropped; the
    // returned borrow lives no longer than `&iommufd`, so the fd stays open for all of it.
    unsafe { BorrowedFd::borrow_raw(iommufd.as_raw_fd()) }
}

#[cfg(feature = "selftest")]
pub(crate) use selftest::{test_cmd, IommuTestCmd};

#[cfg(feature = "selftest")]
mod selftest {
    use super::*;

    /// `IOMMU_TEST_CMD` = `_IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 32)` (`iommufd_test.h`).
    const IOMMU_TEST_CMD: Opcode = opcode::none(IOMMUFD_TYPE, 0x80 + 32);

    /// `struct iommu_test_cmd` (`drivers/iommu/iommufd/iommufd_test.h`): 16 bytes of header, a
    /// 48-byte 8-aligned union of per-op payloads (the largest is `dirty`: 4 + 4 pad + 5 × 8),
    /// then `last`, padded to 72 bytes. The payload is kept as bytes; each op encodes its own.
    #[derive(Debug, Clone, Copy)]
    #[repr(C, align(8))]
    pub(crate) struct IommuTestCmd {
        /// `size`: `sizeof(struct iommu_test_cmd)`.
        pub size: u32,
        /// `op`: `IOMMU_TEST_OP_*`.
        pub op: u32,
        /// `id`: the op's object (IOAS for MOCK_DOMAIN, stdev for MOCK_DOMAIN_REPLACE).
        pub id: u32,
        /// `__reserved`.
        pub reserved: u32,
        /// The union.
        pub payload: [u8; 48],
        /// `last`.
        pub last: u32,
        /// Tail padding to the struct's 8-byte alignment.
        pub pad: u32,
    }

    const _: () = assert!(core::mem::size_of::<IommuTestCmd>() == 72);
    const _: () = assert!(core::mem::offset_of!(IommuTestCmd, last) == 64);

    /// Issues `IOMMU_TEST_CMD` (`iommufd_test()`, CONFIG_IOMMUFD_TEST).
    pub(crate) fn test_cmd(
        iommufd: BorrowedFd<'_>,
        cmd: &mut IommuTestCmd,
    ) -> rustix::io::Result<()> {
        cmd.size = core::mem::size_of::<IommuTestCmd>() as u32;
        // SAFETY: IOMMU_TEST_CMD takes a pointer to `struct iommu_test_cmd`; `IommuTestCmd` has
        // its layout (72 bytes, 8-aligned, `last` at 64: asserted above), `cmd` is a live
        // exclusive borrow for the whole call, and the kernel copies at most `cmd.size` (72, set
        // just above) bytes in and out. Payloads carry no user pointers for the ops this crate issues.
        unsafe { ioctl(iommufd, Updater::<IOMMU_TEST_CMD, IommuTestCmd>::new(cmd)) }
    }
}
