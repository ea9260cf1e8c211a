//! iopf-abi defines its own errno values so that it needs no libc on a bare `no_std` target; on a
//! `std` host they must be the platform's.

use iopf_abi::error::errno;

#[test]
fn errno_values_are_libcs() {
    assert_eq!(errno::E2BIG, libc::E2BIG, "E2BIG");
    assert_eq!(errno::EINVAL, libc::EINVAL, "EINVAL");
}

#[test]
fn abi_errors_map_to_the_named_errno() {
    let tail = iopf_abi::AbiError::NonZeroTail {
        record: "r",
        known: 8,
        offset: 9,
    };
    assert_eq!(tail.errno(), libc::E2BIG);
    let size = iopf_abi::AbiError::BadSize {
        record: "r",
        expected: 8,
        got: 7,
    };
    assert_eq!(size.errno(), libc::EINVAL);
}
