//! SMMUv3 circular queue pointers (SMMUv3 spec §3.5, "Command and Event queues"; Linux's
//! `Q_IDX`, `Q_WRP`, `Q_OVF`).
//!
//! A queue of `2^log2size` entries at `BASE.ADDR` (aligned by the SMMU to its size). `PROD` and
//! `CONS` each hold an index (`log2size` bits), a wrap bit just above it, and bit 31 (`PROD.OVFLG`
//! / `CONS.OVACKFLG` on output queues; `CMDQ_CONS` has `ERR` in \[30:24\] instead). Equal index
//! and wrap is empty, equal index with different wrap is full: every slot is usable.
//! Bits between the wrap bit and bit 31 are RES0 and ignored.

use super::regs::{Q_BASE_ADDR_MASK, Q_BASE_LOG2SIZE};

/// The overflow flag, bit 31 (`Q_OVERFLOW_FLAG`).
pub const Q_OVF: u32 = 1 << 31;

/// The index of pointer `p` in a queue of `2^shift` entries (`Q_IDX`).
pub fn q_idx(p: u32, shift: u32) -> u32 {
    p & ((1u32 << shift) - 1)
}

/// The wrap bit of `p`, in place (`Q_WRP`).
pub fn q_wrp(p: u32, shift: u32) -> u32 {
    p & (1u32 << shift)
}

/// The overflow flag of `p`, in place (`Q_OVF`).
pub fn q_ovf(p: u32) -> u32 {
    p & Q_OVF
}

/// One queue's `BASE`, `PROD` and `CONS`, and the size limit its `IDR1` field advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ring {
    /// The `BASE` register as written (RWA, ADDR, LOG2SIZE).
    pub base: u64,
    /// `PROD` (index, wrap, bit 31).
    pub prod: u32,
    /// `CONS` (index, wrap, bit 31 or `ERR`).
    pub cons: u32,
    /// The largest `LOG2SIZE` the unit honours (`IDR1.xQS`); a larger value is taken as it.
    pub max_shift: u32,
    /// Bytes per entry (16 or 32).
    pub entry_bytes: u64,
}

impl Ring {
    /// An empty ring with these limits.
    pub fn new(max_shift: u32, entry_bytes: u64) -> Ring {
        Ring {
            max_shift: max_shift.min(19),
            entry_bytes,
            ..Ring::default()
        }
    }

    /// The effective `LOG2SIZE`.
    pub fn shift(&self) -> u32 {
        ((self.base & Q_BASE_LOG2SIZE) as u32).min(self.max_shift)
    }

    /// Entries the queue holds.
    pub fn entries(&self) -> u64 {
        1 << self.shift()
    }

    /// The guest-physical base, aligned to the queue's size.
    pub fn base_addr(&self) -> u64 {
        let size = self.entries() * self.entry_bytes;
        self.base & Q_BASE_ADDR_MASK & !(size - 1)
    }

    /// The index-and-wrap bits of a pointer.
    pub fn ptr_mask(&self) -> u32 {
        (1u32 << (self.shift() + 1)) - 1
    }

    /// Entries between `CONS` and `PROD` (a pair of pointers software left inconsistent reads
    /// as full).
    pub fn used(&self) -> u64 {
        let m = self.ptr_mask();
        let d = u64::from((self.prod & m).wrapping_sub(self.cons & m) & m);
        d.min(self.entries())
    }

    /// Free entries.
    pub fn room(&self) -> u64 {
        self.entries() - self.used()
    }

    /// `PROD == CONS` in index and wrap.
    pub fn is_empty(&self) -> bool {
        self.used() == 0
    }

    /// The guest-physical address of the entry at pointer `p`.
    pub fn slot(&self, p: u32) -> u64 {
        self.base_addr()
            .wrapping_add(u64::from(q_idx(p, self.shift())) * self.entry_bytes)
    }

    /// `p` moved on by one entry, its bit 31 kept (`queue_inc_prod_n`).
    pub fn inc(&self, p: u32) -> u32 {
        let m = self.ptr_mask();
        q_ovf(p) | ((p & m).wrapping_add(1) & m)
    }

    /// Whether an overflow condition is present (`PROD.OVFLG != CONS.OVACKFLG`).
    pub fn overflowed(&self) -> bool {
        q_ovf(self.prod) != q_ovf(self.cons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_bit_tells_full_from_empty() {
        let mut r = Ring::new(19, 16);
        r.base = 0x1_0000 | 2; // 4 entries
        assert!(r.is_empty());
        r.prod = 4; // index 0, wrap set
        assert_eq!((r.used(), r.room()), (4, 0));
        r.cons = 4;
        assert!(r.is_empty());
        assert_eq!(r.inc(7), 0);
        assert_eq!(r.inc(Q_OVF | 3), Q_OVF | 4);
        assert_eq!(r.slot(5), 0x1_0010);
    }

    #[test]
    fn oversized_log2size_is_the_limit_and_the_base_is_aligned() {
        let mut r = Ring::new(3, 32);
        r.base = 0x1234_5678 | 0x1f;
        assert_eq!(r.entries(), 8);
        assert_eq!(r.base_addr(), 0x1234_5600);
    }
}
