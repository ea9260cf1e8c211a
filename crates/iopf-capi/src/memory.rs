//! `iopf_guest_memory`: the guest's memory as the vIOMMU models read and write it, given by
//! the VMM either as host-virtual regions it has mapped (through `vm-memory`) or as read and
//! write callbacks over its own accessors (QEMU's `address_space_rw`).

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};

use iopf_viommu::{GuestRam, Unreachable};
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

use crate::error::{guard, CError};
use crate::ffi;

/// One region of guest RAM mapped in the VMM: guest-physical `guest_addr..guest_addr+size`
/// at host-virtual `host_addr`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IopfGuestRegion {
    /// The region's first guest-physical address.
    pub guest_addr: u64,
    /// Its size in bytes: more than 0 (a multiple of the page size is not required), at most
    /// `PTRDIFF_MAX`, and `guest_addr + size` fits in 64 bits.
    pub size: u64,
    /// Where the VMM has it mapped, readable and writable: page-aligned.
    pub host_addr: *mut c_void,
}

/// Reads `len` bytes of guest-physical memory at `gpa` into `buf`: 0, or a negative errno when
/// the range is not (all) guest RAM.
pub type IopfGuestReadFn = Option<
    unsafe extern "C" fn(opaque: *mut c_void, gpa: u64, buf: *mut c_void, len: usize) -> i32,
>;
/// Writes `len` bytes from `buf` to guest-physical `gpa`: 0, or a negative errno.
pub type IopfGuestWriteFn = Option<
    unsafe extern "C" fn(opaque: *mut c_void, gpa: u64, buf: *const c_void, len: usize) -> i32,
>;
/// Whether `len` bytes at `gpa` are guest RAM (not a device): an SMMUv3 `CMD_SYNC` writes its
/// completion into RAM and signals an MSI otherwise.
pub type IopfGuestIsRamFn =
    Option<unsafe extern "C" fn(opaque: *mut c_void, gpa: u64, len: usize) -> bool>;

/// A VMM's guest memory accessors. `read` and `write` are required; `is_ram` may be NULL
/// (every address is RAM: writes go through `write`, which reaches a device's MMIO in a VMM
/// whose accessors route them, as real hardware's writes do).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IopfGuestMemoryOps {
    /// Reads guest memory.
    pub read: IopfGuestReadFn,
    /// Writes guest memory.
    pub write: IopfGuestWriteFn,
    /// Tells RAM from devices, or NULL.
    pub is_ram: IopfGuestIsRamFn,
}

/// The guest's memory. Created by `iopf_guest_memory_from_regions` or
/// `iopf_guest_memory_from_callbacks`, freed by `iopf_guest_memory_free`; passed to each
/// vIOMMU call that may touch guest memory (it is only borrowed for the call).
pub struct IopfGuestMemory {
    backing: Backing,
    /// vIOMMU calls using it right now (one memory may serve vIOMMUs on several threads): a
    /// free while any runs (from one of their callbacks, or another thread) is refused.
    leases: AtomicUsize,
}

/// A vIOMMU call's use of guest memory, from its start to its end.
pub(crate) struct Lease<'a>(&'a IopfGuestMemory);

impl IopfGuestMemory {
    /// Marks the memory in use until the lease is dropped.
    pub(crate) fn lease(&self) -> Lease<'_> {
        self.leases.fetch_add(1, Ordering::SeqCst);
        Lease(self)
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.0.leases.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::ops::Deref for Lease<'_> {
    type Target = IopfGuestMemory;

    fn deref(&self) -> &IopfGuestMemory {
        self.0
    }
}

enum Backing {
    Regions(GuestMemoryMmap<()>),
    Callbacks {
        read: unsafe extern "C" fn(*mut c_void, u64, *mut c_void, usize) -> i32,
        write: unsafe extern "C" fn(*mut c_void, u64, *const c_void, usize) -> i32,
        is_ram: IopfGuestIsRamFn,
        opaque: *mut c_void,
    },
}

impl GuestRam for IopfGuestMemory {
    fn read_guest(&self, buf: &mut [u8], addr: GuestAddress) -> Result<(), Unreachable> {
        match &self.backing {
            Backing::Regions(m) => m.read_guest(buf, addr),
            Backing::Callbacks { read, opaque, .. } => {
                // SAFETY: `read` is the VMM's function, given for this memory with `opaque`;
                // `buf` is valid for `buf.len()` writable bytes for the call.
                let rc = unsafe { read(*opaque, addr.0, buf.as_mut_ptr().cast(), buf.len()) };
                unreachable_unless(rc == 0, addr, buf.len())
            }
        }
    }

    fn write_guest(&self, buf: &[u8], addr: GuestAddress) -> Result<(), Unreachable> {
        match &self.backing {
            Backing::Regions(m) => m.write_guest(buf, addr),
            Backing::Callbacks { write, opaque, .. } => {
                // SAFETY: as read_guest's; `buf` is valid for `buf.len()` bytes for the call.
                let rc = unsafe { write(*opaque, addr.0, buf.as_ptr().cast(), buf.len()) };
                unreachable_unless(rc == 0, addr, buf.len())
            }
        }
    }

    fn is_ram(&self, addr: GuestAddress, len: usize) -> bool {
        match &self.backing {
            Backing::Regions(m) => m.is_ram(addr, len),
            Backing::Callbacks {
                is_ram: Some(f),
                opaque,
                ..
            } => {
                // SAFETY: the VMM's function, given for this memory with `opaque`.
                unsafe { f(*opaque, addr.0, len) }
            }
            Backing::Callbacks { is_ram: None, .. } => true,
        }
    }
}

fn unreachable_unless(ok: bool, addr: GuestAddress, len: usize) -> Result<(), Unreachable> {
    if ok {
        Ok(())
    } else {
        Err(Unreachable { addr: addr.0, len })
    }
}

/// Guest memory made of `n` regions the VMM has mapped. The library does not copy, map or
/// unmap them: they must stay mapped, readable and writable, until the memory is freed.
/// Regions may come in any order. Errors: `-EINVAL` with the region named (its index in
/// `regions`): a NULL or unaligned `host_addr` (page-aligned, as `mmap` returns), a size of 0
/// or above `PTRDIFF_MAX`, `guest_addr + size` beyond 64 bits, a host range that wraps,
/// regions that overlap; no regions.
///
/// # Safety
/// `regions` is NULL or holds `n` regions, each of which describes host memory the VMM has
/// mapped for `size` bytes at `host_addr` and keeps mapped while the memory lives; `out` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn iopf_guest_memory_from_regions(
    regions: *const IopfGuestRegion,
    n: usize,
    out: *mut *mut IopfGuestMemory,
) -> i32 {
    guard(|| {
        // SAFETY: by contract.
        let regions = unsafe { ffi::slice(regions, n, "regions") }?;
        if regions.is_empty() {
            return Err(CError::invalid("no guest memory regions"));
        }
        // Checked, in guest-address order, before any is built: sizes that fit the guest's and
        // the host's address spaces, no overlap (named by the caller's indices).
        let mut order: Vec<usize> = (0..regions.len()).collect();
        order.sort_by_key(|&i| regions[i].guest_addr);
        let mut prev: Option<(usize, u64)> = None;
        for &i in &order {
            let r = &regions[i];
            let size = usize::try_from(r.size)
                .ok()
                .filter(|&s| s > 0 && s <= isize::MAX as usize)
                .ok_or_else(|| {
                    CError::invalid(format!("region {i}: size {:#x} is 0 or too large", r.size))
                })?;
            let end = r.guest_addr.checked_add(r.size).ok_or_else(|| {
                CError::invalid(format!(
                    "region {i}: {:#x}+{:#x} does not fit in 64 bits",
                    r.guest_addr, r.size
                ))
            })?;
            if r.host_addr.is_null() {
                return Err(CError::invalid(format!("region {i}: host_addr is NULL")));
            }
            if (r.host_addr as usize).checked_add(size).is_none() {
                return Err(CError::invalid(format!(
                    "region {i}: host_addr {:p} + {size:#x} wraps the address space",
                    r.host_addr
                )));
            }
            if let Some((j, prev_end)) = prev {
                if r.guest_addr < prev_end {
                    return Err(CError::invalid(format!(
                        "regions {j} and {i} overlap (guest-physical {:#x})",
                        r.guest_addr
                    )));
                }
            }
            prev = Some((i, end));
        }
        let mut mapped = Vec::with_capacity(regions.len());
        for &i in &order {
            let r = &regions[i];
            // Checked above: fits usize.
            let size = r.size as usize;
            // SAFETY: the caller guarantees host_addr..+size is a live mapping of its own, kept
            // while this memory lives (its size checked to fit the address space above); the
            // region is not owned, so dropping it unmaps nothing.
            let region = unsafe {
                MmapRegion::<()>::build_raw(
                    r.host_addr.cast(),
                    size,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                )
            }
            .map_err(|e| {
                CError::invalid(format!(
                    "region {i}: host_addr {:p}: {e} (it must be page-aligned)",
                    r.host_addr
                ))
            })?;
            let region =
                GuestRegionMmap::new(region, GuestAddress(r.guest_addr)).ok_or_else(|| {
                    CError::invalid(format!("region {i}: runs past the guest address space"))
                })?;
            mapped.push(region);
        }
        let mem = GuestMemoryMmap::from_regions(mapped)
            .map_err(|e| CError::invalid(format!("guest memory regions: {e}")))?;
        let mem = IopfGuestMemory {
            backing: Backing::Regions(mem),
            leases: AtomicUsize::new(0),
        };
        // SAFETY: by contract.
        unsafe { ffi::give(out, mem, "out") }?;
        Ok(0)
    })
}

/// Guest memory reached through the VMM's accessors: `ops->read` and `ops->write` (required),
/// `ops->is_ram` (may be NULL), each called with `opaque`, on the thread that calls the vIOMMU,
/// only during a vIOMMU call. `ops` is copied. Errors: `-EINVAL` (a NULL argument or callback).
///
/// # Safety
/// `ops` is NULL or points at ops whose functions may be called with `opaque` until the
/// memory is freed; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn iopf_guest_memory_from_callbacks(
    ops: *const IopfGuestMemoryOps,
    opaque: *mut c_void,
    out: *mut *mut IopfGuestMemory,
) -> i32 {
    guard(|| {
        // SAFETY: by contract.
        let ops = unsafe { ffi::obj(ops, "ops") }?;
        let (Some(read), Some(write)) = (ops.read, ops.write) else {
            return Err(CError::invalid("ops->read and ops->write are required"));
        };
        let mem = IopfGuestMemory {
            backing: Backing::Callbacks {
                read,
                write,
                is_ram: ops.is_ram,
                opaque,
            },
            leases: AtomicUsize::new(0),
        };
        // SAFETY: by contract.
        unsafe { ffi::give(out, mem, "out") }?;
        Ok(0)
    })
}

/// Frees guest memory (NULL: nothing). The VMM's mappings are left as they are. From within a
/// callback of a vIOMMU call that uses it, it does nothing (and `iopf_last_error` says so).
///
/// # Safety
/// `mem` is NULL or a memory not freed yet (a free while a vIOMMU call uses it, from one of
/// its callbacks or another thread, is refused).
#[no_mangle]
pub unsafe extern "C" fn iopf_guest_memory_free(mem: *mut IopfGuestMemory) {
    let _ = guard(|| {
        if mem.is_null() {
            return Ok(0);
        }
        // SAFETY: by contract, a live memory; a shared reference, as a running call holds.
        if unsafe { ffi::obj(mem.cast_const(), "mem") }?
            .leases
            .load(Ordering::SeqCst)
            > 0
        {
            return Err(CError::new(
                libc::EDEADLK,
                "iopf_guest_memory_free while a vIOMMU call uses it (from one of its callbacks): \
                 refused",
            ));
        }
        // SAFETY: by contract, a pointer this library gave and not freed; no call uses it.
        drop(unsafe { ffi::take(mem) });
        Ok(0)
    });
}
