//! Register access rules every emulated unit shares: accesses are 32- or 64-bit quantities at
//! their natural alignment (VT-d, SMMUv3 and AMD all say so), a 64-bit access is two dwords
//! (low first, as a 32-bit guest's `lo_hi_writeq()` writes them), and what an access that breaks
//! the rule is called.

/// Why an MMIO access was not carried out. The VMM usually ignores it (a real unit ignores
/// such accesses); it names what the guest did.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MmioError {
    /// Not 4 bytes at a 4-byte aligned offset or 8 bytes at an 8-byte aligned one (the
    /// registers are accessed as 32- or 64-bit quantities).
    #[error("a {len}-byte access at {offset:#x} is not a 32- or 64-bit register access")]
    BadAccess {
        /// The offset.
        offset: u64,
        /// The access size.
        len: usize,
    },
    /// The offset is outside the registers the model decodes.
    #[error("offset {0:#x} is outside the page request registers")]
    OutOfRange(u64),
}

/// Checks an access's size and alignment against a register window of `end` bytes; returns
/// its number of dwords (1 or 2).
pub fn check_access(offset: u64, len: usize, end: u64) -> Result<usize, MmioError> {
    let ok = (len == 4 && offset % 4 == 0) || (len == 8 && offset % 8 == 0);
    if !ok {
        return Err(MmioError::BadAccess { offset, len });
    }
    if offset.saturating_add(len as u64) > end {
        return Err(MmioError::OutOfRange(offset));
    }
    Ok(len / 4)
}

/// The dword at `off` of a 64-bit register's value (`off & 4` picks the half).
pub fn half(value: u64, off: u64) -> u32 {
    if off & 4 == 0 {
        value as u32
    } else {
        (value >> 32) as u32
    }
}

/// A 64-bit register's value after a 32-bit write of `v` at `off` (`off & 4` picks the half).
pub fn merge_half(old: u64, off: u64, v: u32) -> u64 {
    if off & 4 == 0 {
        (old & !0xffff_ffff) | u64::from(v)
    } else {
        (old & 0xffff_ffff) | (u64::from(v) << 32)
    }
}

/// Splits a checked access into its dwords: (offset, value) pairs, low first.
pub fn dwords(offset: u64, data: &[u8]) -> impl Iterator<Item = (u64, u32)> + '_ {
    data.chunks_exact(4).enumerate().map(move |(i, c)| {
        let mut b = [0u8; 4];
        b.copy_from_slice(c);
        (offset + 4 * i as u64, u32::from_le_bytes(b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_aligned_dwords_and_qwords_inside_the_window() {
        assert_eq!(check_access(0x10, 4, 0x100), Ok(1));
        assert_eq!(check_access(0x10, 8, 0x100), Ok(2));
        assert!(check_access(0x14, 8, 0x100).is_err());
        assert!(check_access(0x11, 4, 0x100).is_err());
        assert!(check_access(0x10, 2, 0x100).is_err());
        assert_eq!(
            check_access(0xfc, 8, 0x100),
            Err(MmioError::BadAccess {
                offset: 0xfc,
                len: 8
            })
        );
        assert_eq!(
            check_access(0x100, 4, 0x100),
            Err(MmioError::OutOfRange(0x100))
        );
    }

    #[test]
    fn halves_read_and_merge() {
        assert_eq!(half(0x1122_3344_5566_7788, 0), 0x5566_7788);
        assert_eq!(half(0x1122_3344_5566_7788, 4), 0x1122_3344);
        assert_eq!(
            merge_half(0x1122_3344_5566_7788, 4, 0xaabb_ccdd),
            0xaabb_ccdd_5566_7788
        );
        assert_eq!(
            merge_half(0x1122_3344_5566_7788, 0, 0xaabb_ccdd),
            0x1122_3344_aabb_ccdd
        );
        let d: Vec<_> = dwords(8, &[1, 0, 0, 0, 2, 0, 0, 0]).collect();
        assert_eq!(d, vec![(8, 1), (12, 2)]);
    }
}
