//! The extensible-struct rule of Linux's `copy_struct_from_user()`, and its writer side.
//!
//! A size-prefixed struct grows by appending fields. A reader that knows `K` bytes of it and
//! receives `argsz` bytes from a peer:
//!
//! | argsz | result |
//! |---|---|
//! | below the oldest version's size | [`AbiError::ArgszTooSmall`] (EINVAL) |
//! | ≤ K (an older peer) | the bytes given, the missing tail read as zero |
//! | > K (a newer peer) | accepted only if every byte past K is zero, else [`AbiError::NonZeroTail`] (E2BIG) |
//!
//! A writer talking to an older peer that knows `P < K` bytes sends the first `P` bytes, and only
//! if nothing it means to say lies past them ([`write_struct`]).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::AbiError;

/// Reads the leading `u32 argsz` of a size-prefixed struct.
pub fn read_argsz(record: &'static str, bytes: &[u8]) -> Result<u32, AbiError> {
    let (argsz, _) = u32::read_from_prefix(bytes).map_err(|_| AbiError::BadSize {
        record,
        expected: 4,
        got: bytes.len(),
    })?;
    Ok(argsz)
}

/// Copies a peer's `argsz` bytes (`given`, exactly argsz long) into `known`, the reader's own
/// layout, following the table above. `min` is the size of the oldest version.
pub fn copy_struct(
    record: &'static str,
    known: &mut [u8],
    given: &[u8],
    min: usize,
) -> Result<(), AbiError> {
    if given.len() < min {
        return Err(AbiError::ArgszTooSmall {
            record,
            argsz: u32::try_from(given.len()).unwrap_or(u32::MAX),
            min,
        });
    }
    let k = known.len();
    if given.len() > k {
        if let Some(pos) = given[k..].iter().position(|&b| b != 0) {
            return Err(AbiError::NonZeroTail {
                record,
                known: k,
                offset: k + pos,
            });
        }
    }
    let n = given.len().min(k);
    known[..n].copy_from_slice(&given[..n]);
    known[n..].fill(0);
    Ok(())
}

/// Reads a `T` from a peer's bytes whose first `u32` is its argsz: checks that the buffer holds
/// argsz bytes, then applies [`copy_struct`]. Bytes in `buf` past argsz are not looked at.
pub fn read_struct<T>(record: &'static str, buf: &[u8], min: usize) -> Result<T, AbiError>
where
    T: FromBytes + IntoBytes + KnownLayout + Immutable,
{
    let argsz = read_argsz(record, buf)?;
    let len = usize::try_from(argsz).unwrap_or(usize::MAX);
    if len < min {
        return Err(AbiError::ArgszTooSmall { record, argsz, min });
    }
    let given = buf.get(..len).ok_or(AbiError::Truncated {
        record,
        argsz,
        got: buf.len(),
    })?;
    let mut value = T::new_zeroed();
    copy_struct(record, value.as_mut_bytes(), given, min)?;
    Ok(value)
}

/// Writes `value` for a peer that knows the first `peer_size` bytes of `T` into `out`, returning
/// the bytes written. Errors: `peer_size` larger than `T` or than `out` ([`AbiError::BadSize`]),
/// or a non-zero byte of `value` past `peer_size`, which that peer could not receive
/// ([`AbiError::NonZeroTail`]). The caller sets the argsz field to `peer_size` first.
pub fn write_struct<T>(
    record: &'static str,
    value: &T,
    peer_size: usize,
    out: &mut [u8],
) -> Result<usize, AbiError>
where
    T: IntoBytes + Immutable,
{
    let bytes = value.as_bytes();
    if peer_size > bytes.len() || peer_size > out.len() {
        return Err(AbiError::BadSize {
            record,
            expected: bytes.len().min(out.len()),
            got: peer_size,
        });
    }
    if let Some(pos) = bytes[peer_size..].iter().position(|&b| b != 0) {
        return Err(AbiError::NonZeroTail {
            record,
            known: peer_size,
            offset: peer_size + pos,
        });
    }
    out[..peer_size].copy_from_slice(&bytes[..peer_size]);
    Ok(peer_size)
}
