//! The ring shape the command buffer, the event log and the PPR log share: a base register
//! (base address \[51:12\], length \[59:56\] as log2 of the 16-byte entries), a head and a tail
//! register holding byte offsets (bits 18:4). One entry is always left empty: `head == tail`
//! is empty and the ring is full when `tail + 16 == head` (modulo its size).
//!
//! A length field of 0–7 is reserved (AMD 48882: 256 entries at least): such a ring is
//! *unusable*, and the unit neither reads nor writes it, so a guest that programs one loses only
//! its own entries and the unit never touches memory the guest did not size. A head or tail
//! written beyond the ring is taken modulo its size.

use super::regs::{ENTRY_BYTES, LEN_MAX, LEN_MIN, LEN_SHIFT};

/// The bits of a base register that are fields: base 51:12 and length 59:56.
pub const BASE_MASK: u64 = 0x000f_ffff_ffff_f000 | (0xf << LEN_SHIFT);
/// The bits of a head or tail register that are fields: 18:4.
pub const OFFSET_MASK: u64 = 0x7_fff0;

/// One ring's registers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ring {
    base: u64,
    head: u64,
    tail: u64,
}

impl Ring {
    /// The base register as software reads it.
    pub fn base_reg(&self) -> u64 {
        self.base
    }

    /// Software writes the base register (fields kept, the rest read as zero).
    pub fn write_base(&mut self, v: u64) {
        self.base = v & BASE_MASK;
    }

    /// The head register.
    pub fn head_reg(&self) -> u64 {
        self.head
    }

    /// The tail register.
    pub fn tail_reg(&self) -> u64 {
        self.tail
    }

    /// Writes the head register (bits 18:4 kept).
    pub fn write_head(&mut self, v: u64) {
        self.head = v & OFFSET_MASK;
    }

    /// Writes the tail register (bits 18:4 kept).
    pub fn write_tail(&mut self, v: u64) {
        self.tail = v & OFFSET_MASK;
    }

    /// The guest-physical base.
    pub fn base(&self) -> u64 {
        self.base & 0x000f_ffff_ffff_f000
    }

    /// The length field.
    pub fn len_field(&self) -> u64 {
        (self.base >> LEN_SHIFT) & 0xf
    }

    /// Whether the length field is one the architecture defines (8 to 15).
    pub fn usable(&self) -> bool {
        (LEN_MIN..=LEN_MAX).contains(&self.len_field())
    }

    /// Entries the ring holds (0 when unusable).
    pub fn entries(&self) -> u64 {
        if self.usable() {
            1 << self.len_field()
        } else {
            0
        }
    }

    /// The ring's size in bytes (0 when unusable).
    pub fn size_bytes(&self) -> u64 {
        self.entries() * ENTRY_BYTES
    }

    /// The head, inside the ring.
    pub fn head(&self) -> u64 {
        self.head.checked_rem(self.size_bytes()).unwrap_or(0)
    }

    /// The tail, inside the ring.
    pub fn tail(&self) -> u64 {
        self.tail.checked_rem(self.size_bytes()).unwrap_or(0)
    }

    /// Entries between head and tail.
    pub fn used(&self) -> u64 {
        let size = self.size_bytes();
        if size == 0 {
            return 0;
        }
        (self.tail() + size - self.head()) % size / ENTRY_BYTES
    }

    /// Entries that fit before the ring is full (one slot stays empty).
    pub fn free(&self) -> u64 {
        self.entries().saturating_sub(1).saturating_sub(self.used())
    }

    /// The guest-physical address of the entry at byte offset `off`.
    pub fn addr(&self, off: u64) -> u64 {
        self.base().wrapping_add(off)
    }

    /// Moves the tail one entry on (the producer wrote at `tail()`).
    pub fn advance_tail(&mut self) {
        if let Some(t) = (self.tail() + ENTRY_BYTES).checked_rem(self.size_bytes()) {
            self.tail = t;
        }
    }

    /// Moves the head one entry on (the consumer took the entry at `head()`).
    pub fn advance_head(&mut self) {
        if let Some(h) = (self.head() + ENTRY_BYTES).checked_rem(self.size_bytes()) {
            self.head = h;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_offsets_and_room() {
        let mut r = Ring::default();
        assert!(!r.usable());
        assert_eq!((r.entries(), r.free(), r.head(), r.used()), (0, 0, 0, 0));
        r.write_base(0x1234_5000 | (9 << LEN_SHIFT) | 0xfff);
        assert_eq!(r.base_reg(), 0x1234_5000 | (9 << LEN_SHIFT));
        assert_eq!((r.entries(), r.size_bytes(), r.free()), (512, 8192, 511));
        r.write_tail(0x1ff0);
        assert_eq!((r.used(), r.free()), (511, 0));
        r.advance_tail();
        assert_eq!(r.tail(), 0);
        r.write_head(0x7_fff0);
        assert_eq!(r.head(), 0x7_fff0 % 8192);
        r.write_base(7 << LEN_SHIFT);
        assert!(!r.usable());
    }
}
