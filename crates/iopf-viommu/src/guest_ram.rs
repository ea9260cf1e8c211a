//! [`GuestRam`]: the guest memory the emulated units and the guest driver models read and
//! write, as bounds-checked copies.
//!
//! Every `vm-memory` [`GuestMemory`] is one (a blanket implementation), so a Rust VMM passes its
//! `GuestMemoryMmap` as it is. A VMM whose memory is not mapped in its own address space (a C
//! VMM that reads guest memory through its own accessors, as QEMU's `address_space_read`)
//! implements the trait over its accessors instead: that is what the C API's callback memory
//! does.

use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

/// A guest-physical range that cannot be read or written: not RAM, or not all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("guest-physical {addr:#x}+{len:#x} is not guest RAM")]
pub struct Unreachable {
    /// The first address of the access.
    pub addr: u64,
    /// Its length in bytes.
    pub len: usize,
}

/// Guest memory as the units use it: whole copies in and out, or an error and nothing
/// half-done that the unit relies on.
///
/// Contract: [`read_guest`](Self::read_guest) fills all of `buf` or fails;
/// [`write_guest`](Self::write_guest) writes all of `buf` or fails (a failed write may have
/// written a prefix: the units treat the target as unreachable and do not read it back);
/// [`is_ram`](Self::is_ram) says whether a write of `len` bytes at `addr` would reach memory
/// rather than a device (an SMMUv3 `CMD_SYNC` writes its MSI into RAM, or signals it).
/// Nothing a guest puts in a register makes an implementation panic: addresses come from the
/// guest.
pub trait GuestRam {
    /// Copies `buf.len()` bytes from guest-physical `addr` into `buf`.
    fn read_guest(&self, buf: &mut [u8], addr: GuestAddress) -> Result<(), Unreachable>;

    /// Copies `buf` to guest-physical `addr`.
    fn write_guest(&self, buf: &[u8], addr: GuestAddress) -> Result<(), Unreachable>;

    /// Whether `len` bytes at `addr` are guest RAM that can be written.
    fn is_ram(&self, addr: GuestAddress, len: usize) -> bool;
}

impl<M: GuestMemory + ?Sized> GuestRam for M {
    fn read_guest(&self, buf: &mut [u8], addr: GuestAddress) -> Result<(), Unreachable> {
        self.read_slice(buf, addr).map_err(|_| Unreachable {
            addr: addr.0,
            len: buf.len(),
        })
    }

    fn write_guest(&self, buf: &[u8], addr: GuestAddress) -> Result<(), Unreachable> {
        self.write_slice(buf, addr).map_err(|_| Unreachable {
            addr: addr.0,
            len: buf.len(),
        })
    }

    fn is_ram(&self, addr: GuestAddress, len: usize) -> bool {
        self.check_range(addr, len, Permissions::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn vm_memory_is_guest_ram_with_its_bounds() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x1000), 0x1000)])
            .expect("guest memory");
        mem.write_guest(&[1, 2, 3, 4], GuestAddress(0x1ffc))
            .expect("the last four bytes are RAM");
        let mut b = [0u8; 4];
        mem.read_guest(&mut b, GuestAddress(0x1ffc))
            .expect("read back");
        assert_eq!(b, [1, 2, 3, 4]);
        assert_eq!(
            mem.write_guest(&[0; 8], GuestAddress(0x1ffc)),
            Err(Unreachable {
                addr: 0x1ffc,
                len: 8
            })
        );
        assert!(mem.read_guest(&mut b, GuestAddress(0)).is_err());
        assert!(mem.is_ram(GuestAddress(0x1000), 4));
        assert!(!mem.is_ram(GuestAddress(0x1ffe), 4));
    }
}
