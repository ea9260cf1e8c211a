//! The fault fd's byte interface, shared by the kernel's fault queue ([`crate::FaultQueue`]) and
//! iopf's compatible one ([`crate::CompatFaultQueue`]), and the [`FaultConsumer`] glue on top.
//!
//! [`FaultConsumer`]: iopf_abi::FaultConsumer

use iopf_abi::{HwptPageResponse, HwptPgfault, IommufdResponse, PgFault, ResponseCode};
use zerocopy::IntoBytes;

use crate::{Error, Result};

/// Size of one `struct iommu_hwpt_pgfault`: reads come in multiples of it.
pub const RECORD_SIZE: usize = HwptPgfault::SIZE;
/// Size of one `struct iommu_hwpt_page_response`: writes come in multiples of it.
pub const RESPONSE_SIZE: usize = HwptPageResponse::SIZE;

/// What `poll()` reports on a fault fd (`iommufd_fault_fops_poll()`): always writable, readable
/// while at least one group waits to be read (groups read but unanswered do not count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// `EPOLLIN | EPOLLRDNORM`: a group waits.
    pub readable: bool,
    /// `EPOLLOUT`: always set by Linux 6.12.
    pub writable: bool,
}

/// The byte-level `read()` / `write()` / `poll()` of an iommufd fault fd, with the kernel's rules
/// (`iommufd_fault_fops_read()`, `_write()`, `_poll()`):
///
/// * `read_bytes`: `buf.len() % 40 != 0` → [`Error::ReadSize`] (ESPIPE); whole groups only, as
///   many as fit; `Ok(0)` when nothing waits; [`Error::GroupTooLarge`] (EINVAL) when the first
///   waiting group does not fit (a 0-byte read while a group waits included) on Linux 6.12,
///   `Ok(0)` for that too on newer kernels.
/// * `write_bytes`: `buf.len() % 8 != 0` → [`Error::WriteSize`] (ESPIPE); responses applied in
///   order until the first bad one ([`Error::UnknownCode`] checked before
///   [`Error::UnknownCookie`], both EINVAL); returns the bytes applied if any, else that error.
pub trait FaultFd {
    /// `read(fd, buf, buf.len())`.
    fn read_bytes(&mut self, buf: &mut [u8]) -> Result<usize>;
    /// `write(fd, buf, buf.len())`.
    fn write_bytes(&mut self, buf: &[u8]) -> Result<usize>;
    /// `poll()` with a zero timeout.
    fn readiness(&mut self) -> Result<Readiness>;
}

/// [`iopf_abi::FaultConsumer::read_faults`] over a [`FaultFd`]: reads up to `out.len()` records
/// of whole groups through `scratch` and decodes them, as they are: a kernel's record may carry
/// flag bits the uAPI does not name (Linux copies its internal flags through), and refusing it
/// would strand its group, whose cookie nobody else learns ([`PgFault::unnamed`] shows them).
///
/// A kernel newer than 6.12 returns 0 both when nothing waits and when the first group does not
/// fit; a 0 while the fd polls readable is the second, and is [`Error::GroupTooLarge`] here as on
/// 6.12, so that the caller grows its buffer instead of waiting for a group that never fits.
pub(crate) fn read_faults<Q: FaultFd>(
    q: &mut Q,
    scratch: &mut Vec<u8>,
    out: &mut [PgFault],
) -> Result<usize> {
    scratch.clear();
    scratch.resize(out.len() * RECORD_SIZE, 0);
    let mut n = q.read_bytes(scratch)?;
    if n == 0 && q.readiness()?.readable {
        // A group may have arrived between the read and the poll: read once more.
        n = q.read_bytes(scratch)?;
        if n == 0 && q.readiness()?.readable {
            return Err(Error::GroupTooLarge {
                capacity: out.len(),
            });
        }
    }
    if n % RECORD_SIZE != 0 || n > scratch.len() {
        // A read of whole records never returns a partial one; this would be a kernel bug.
        return Err(Error::Io {
            op: "read (partial record)",
            errno: rustix::io::Errno::IO,
        });
    }
    for (slot, raw) in out.iter_mut().zip(scratch[..n].chunks_exact(RECORD_SIZE)) {
        *slot = PgFault::from_bytes(raw).map_err(Error::Record)?;
    }
    Ok(n / RECORD_SIZE)
}

/// The raw response the fault fd gets for a decoded one: FAILURE goes out as INVALID, since the
/// iommufd fault queue accepts only SUCCESS and INVALID ("Response Failure" would disable PRI on
/// the function and every VF sharing it; `iommufd_fault_iopf_enable()`).
pub fn encode_response(r: &IommufdResponse) -> HwptPageResponse {
    let code = match r.code {
        ResponseCode::Success => ResponseCode::Success,
        ResponseCode::Invalid | ResponseCode::Failure => ResponseCode::Invalid,
    };
    HwptPageResponse {
        cookie: r.cookie,
        code: code.raw(),
    }
}

/// [`iopf_abi::FaultConsumer::respond`] over a [`FaultFd`]: one `write()` of all responses;
/// returns how many were accepted.
pub(crate) fn respond<Q: FaultFd>(
    q: &mut Q,
    scratch: &mut Vec<u8>,
    responses: &[IommufdResponse],
) -> Result<usize> {
    scratch.clear();
    for r in responses {
        scratch.extend_from_slice(encode_response(r).as_bytes());
    }
    Ok(q.write_bytes(scratch)? / RESPONSE_SIZE)
}
