//! Pointers from C turned into Rust references, slices and boxes: the crate's unsafe lives
//! here (and in the guest memory module, for the VMM's own mappings and callbacks).
//!
//! Each helper checks what can be checked (NULL, alignment, a length that fits the address
//! space) and returns `EINVAL` naming the argument; what cannot be checked (that a non-NULL
//! pointer points at a live object of the right type) is the C caller's side of the contract,
//! stated in each function's documentation in the header.

use crate::error::CError;

/// Whether `p` is a usable pointer to a `T`: not NULL, aligned. Callers that must not fail
/// after taking ownership of something check their out pointers with it first.
pub(crate) fn check<T>(p: *const T, what: &str) -> Result<(), CError> {
    if p.is_null() {
        return Err(CError::invalid(format!("{what} is NULL")));
    }
    if !p.is_aligned() {
        return Err(CError::invalid(format!(
            "{what} ({p:p}) is not aligned to {} bytes",
            std::mem::align_of::<T>()
        )));
    }
    Ok(())
}

/// A shared reference to the object `p` points at.
///
/// # Safety
/// `p` is NULL or points at a live, initialised `T` that nothing mutates for `'a`.
pub(crate) unsafe fn obj<'a, T>(p: *const T, what: &str) -> Result<&'a T, CError> {
    check(p, what)?;
    // SAFETY: not NULL and aligned (checked); live and unaliased by the caller's contract.
    Ok(unsafe { &*p })
}

/// An exclusive reference to the object `p` points at.
///
/// # Safety
/// `p` is NULL or points at a live, initialised `T` that nothing else uses for `'a`.
pub(crate) unsafe fn obj_mut<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T, CError> {
    check(p, what)?;
    // SAFETY: not NULL and aligned (checked); live and exclusive by the caller's contract.
    Ok(unsafe { &mut *p })
}

fn check_len<T>(n: usize, what: &str) -> Result<(), CError> {
    let fits = n
        .checked_mul(std::mem::size_of::<T>().max(1))
        .is_some_and(|b| b <= isize::MAX as usize);
    if !fits {
        return Err(CError::invalid(format!(
            "{what}: {n} elements do not fit in memory"
        )));
    }
    Ok(())
}

/// `n` elements at `p` (any `p`, even NULL, when `n` is 0).
///
/// # Safety
/// When `n > 0`, `p` is NULL or points at `n` live, initialised `T`s not mutated for `'a`.
pub(crate) unsafe fn slice<'a, T>(p: *const T, n: usize, what: &str) -> Result<&'a [T], CError> {
    if n == 0 {
        return Ok(&[]);
    }
    check(p, what)?;
    check_len::<T>(n, what)?;
    // SAFETY: not NULL, aligned, a length that fits (checked); n live elements by contract.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// `n` writable elements at `p` (any `p`, even NULL, when `n` is 0). `T` is plain data: every
/// bit pattern the C side may have left there is a valid `T`.
///
/// # Safety
/// When `n > 0`, `p` is NULL or points at `n` writable `T`s that nothing else uses for `'a`.
pub(crate) unsafe fn slice_mut<'a, T: Copy>(
    p: *mut T,
    n: usize,
    what: &str,
) -> Result<&'a mut [T], CError> {
    if n == 0 {
        return Ok(&mut []);
    }
    check(p, what)?;
    check_len::<T>(n, what)?;
    // SAFETY: not NULL, aligned, a length that fits (checked); exclusive by contract, and T
    // is plain data (only Copy structs of integers are passed here).
    Ok(unsafe { std::slice::from_raw_parts_mut(p, n) })
}

/// The bytes `p..p+n` (any `p` when `n` is 0).
///
/// # Safety
/// As [`slice`].
pub(crate) unsafe fn bytes<'a>(p: *const u8, n: usize, what: &str) -> Result<&'a [u8], CError> {
    // SAFETY: the caller's contract is slice's.
    unsafe { slice(p, n, what) }
}

/// Writes `value` to `*out`.
///
/// # Safety
/// `out` is NULL or points at a writable `T` (its old value is overwritten, not dropped).
pub(crate) unsafe fn put<T>(out: *mut T, value: T, what: &str) -> Result<(), CError> {
    check(out, what)?;
    // SAFETY: not NULL and aligned (checked); writable by contract; write does not drop the
    // old value, which C owns (a pointer or an integer).
    unsafe { out.write(value) };
    Ok(())
}

/// Moves `value` to the heap and gives C its pointer in `*out`. Checks `out` first, so that
/// `value` is dropped (not leaked) when `out` is NULL.
///
/// # Safety
/// As [`put`].
pub(crate) unsafe fn give<T>(out: *mut *mut T, value: T, what: &str) -> Result<(), CError> {
    check(out, what)?;
    // SAFETY: as put's; checked above, so this cannot fail and leak the box.
    unsafe { put(out, Box::into_raw(Box::new(value)), what) }
}

/// Takes back a handle given by [`give`]: NULL gives `None`.
///
/// # Safety
/// `p` is NULL or a pointer [`give`] returned for a `T` and not taken back since.
pub(crate) unsafe fn take<T>(p: *mut T) -> Option<Box<T>> {
    if p.is_null() {
        return None;
    }
    // SAFETY: from Box::into_raw in give, not freed since, by the caller's contract.
    Some(unsafe { Box::from_raw(p) })
}
