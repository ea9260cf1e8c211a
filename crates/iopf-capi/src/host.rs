//! `iopf_host`: the host fault queue a VMM reads page requests from and answers, whichever it
//! is: the Linux iommufd fault fd, iopf's shared queue (a consumer attached over a socket), or
//! the compatible queue (for tests and the simulated platform).

use std::ffi::{c_char, CStr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use iopf_abi::{
    FaultConsumer, Features, HwptPageResponse, HwptPgfault, IommufdResponse, PgFault,
    RecordFormats, ResponseCode,
};
use iopf_iommufd::{CompatFaultQueue, FaultQueue};
use iopf_queue::{Consumer, Readiness, Request, ResponseVerdict};

use crate::error::{guard, guard_void, CError};
use crate::ffi;

/// `iopf_host_arm` bit: page requests wait to be read.
pub const IOPF_READY_FAULTS: u32 = 1 << 0;
/// `iopf_host_arm` bit: a response can be written (always set for the Linux
/// fault fd and the compatible queue, which take every response at once).
pub const IOPF_READY_RESPONSE_ROOM: u32 = 1 << 1;
/// `iopf_host_arm` bit: the other end has gone (iopf's shared queue only:
/// the producer closed, died or was dropped); reported whether asked for or not.
pub const IOPF_READY_PEER_GONE: u32 = 1 << 4;

/// `iopf_host_stats.kind`: the Linux iommufd fault fd.
pub const IOPF_HOST_LINUX: u32 = 1;
/// `iopf_host_stats.kind`: iopf's shared queue, attached over a socket.
pub const IOPF_HOST_SHARED: u32 = 2;
/// `iopf_host_stats.kind`: the compatible queue.
pub const IOPF_HOST_COMPAT: u32 = 3;

/// A host fault queue. Created by `iopf_host_from_fault_fd`, `iopf_host_attach` or
/// `iopf_compat_new`; freed by `iopf_host_free`, or handed to an `iopf_viommu_new_*`, which
/// then owns it.
pub struct IopfHost {
    pub(crate) queue: HostQueue,
    records_read: u64,
    responses_sent: u64,
    /// The read buffer of `iopf_host_read_faults`, kept between calls.
    scratch: Vec<PgFault>,
}

/// The three queues, as one [`FaultConsumer`] the bridges can own.
pub(crate) enum HostQueue {
    Linux(FaultQueue),
    Shared(Box<SharedHost>),
    Compat(CompatFaultQueue),
}

/// iopf's consumer, and the verdicts it collects (kept only as counts: a C VMM learns of
/// rejections from `iopf_host_stats`).
pub(crate) struct SharedHost {
    consumer: Consumer,
    verdicts: Vec<ResponseVerdict>,
}

impl SharedHost {
    fn collect(&mut self) {
        self.consumer.take_verdicts(&mut self.verdicts);
        self.verdicts.clear();
    }
}

impl IopfHost {
    pub(crate) fn new(queue: HostQueue) -> IopfHost {
        IopfHost {
            queue,
            records_read: 0,
            responses_sent: 0,
            scratch: Vec::new(),
        }
    }
}

impl FaultConsumer for IopfHost {
    type Error = CError;

    fn read_faults(&mut self, out: &mut [PgFault]) -> Result<usize, CError> {
        let n = match &mut self.queue {
            HostQueue::Linux(q) => q.read_faults(out)?,
            HostQueue::Shared(s) => {
                s.collect();
                s.consumer.read_faults(out)?
            }
            HostQueue::Compat(q) => q.read_faults(out)?,
        };
        self.records_read += n as u64;
        Ok(n)
    }

    fn respond(&mut self, responses: &[IommufdResponse]) -> Result<usize, CError> {
        let n = match &mut self.queue {
            HostQueue::Linux(q) => q.respond(responses)?,
            HostQueue::Shared(s) => {
                let n = s.consumer.respond(responses)?;
                s.collect();
                n
            }
            HostQueue::Compat(q) => q.respond(responses)?,
        };
        self.responses_sent += n as u64;
        Ok(n)
    }

    fn wait_readable(&mut self, timeout: Option<Duration>) -> Result<bool, CError> {
        Ok(match &mut self.queue {
            HostQueue::Linux(q) => q.wait_readable(timeout)?,
            HostQueue::Shared(s) => s.consumer.wait_readable(timeout)?,
            HostQueue::Compat(q) => q.wait_readable(timeout)?,
        })
    }

    fn carries_private_data(&self) -> bool {
        match &self.queue {
            HostQueue::Linux(q) => q.carries_private_data(),
            HostQueue::Shared(s) => s.consumer.carries_private_data(),
            HostQueue::Compat(q) => q.carries_private_data(),
        }
    }

    fn private_data(&self, cookie: u32) -> Option<[u64; 2]> {
        match &self.queue {
            HostQueue::Linux(q) => q.private_data(cookie),
            HostQueue::Shared(s) => s.consumer.private_data(cookie),
            HostQueue::Compat(q) => q.private_data(cookie),
        }
    }
}

impl IopfHost {
    pub(crate) fn raw_fd(&self) -> RawFd {
        match &self.queue {
            HostQueue::Linux(q) => q.as_fd().as_raw_fd(),
            HostQueue::Shared(s) => s.consumer.as_fd().as_raw_fd(),
            HostQueue::Compat(q) => q.as_fd().as_raw_fd(),
        }
    }

    /// What is ready now; with `arm`, prepares the fd to be slept on for `want`.
    pub(crate) fn readiness(&mut self, want: u32, arm: bool) -> Result<u32, CError> {
        let known = IOPF_READY_FAULTS | IOPF_READY_RESPONSE_ROOM | IOPF_READY_PEER_GONE;
        if want & !known != 0 {
            return Err(CError::invalid(format!(
                "unknown readiness bits {:#x}",
                want & !known
            )));
        }
        match &mut self.queue {
            HostQueue::Shared(s) => {
                let want = Readiness::from_bits_truncate(want);
                let r = if arm {
                    s.consumer.arm(want)?
                } else {
                    s.consumer.ready() & (want | Readiness::PEER_GONE)
                };
                Ok(r.bits())
            }
            _ => {
                let mut r = want & IOPF_READY_RESPONSE_ROOM;
                if want & IOPF_READY_FAULTS != 0 && self.wait_readable(Some(Duration::ZERO))? {
                    r |= IOPF_READY_FAULTS;
                }
                Ok(r)
            }
        }
    }

    pub(crate) fn stats(&self) -> IopfHostStats {
        let mut st = IopfHostStats {
            kind: 0,
            peer_gone: 0,
            records_read: self.records_read,
            responses_sent: self.responses_sent,
            lost: 0,
            accepted: 0,
            rejected: 0,
            corrupt: 0,
            answered_broken: 0,
        };
        match &self.queue {
            HostQueue::Linux(_) => st.kind = IOPF_HOST_LINUX,
            HostQueue::Compat(_) => st.kind = IOPF_HOST_COMPAT,
            HostQueue::Shared(s) => {
                let c = s.consumer.stats();
                st.kind = IOPF_HOST_SHARED;
                st.peer_gone = u32::from(s.consumer.producer_gone());
                st.lost = c.lost;
                st.accepted = c.accepted;
                st.rejected = c.rejected;
                st.corrupt = c.corrupt;
                st.answered_broken = c.answered_broken;
            }
        }
        st
    }
}

/// What a host queue has done. The last five are iopf's shared queue's (0 for the others).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IopfHostStats {
    /// `IOPF_HOST_LINUX`, `IOPF_HOST_SHARED` or `IOPF_HOST_COMPAT`.
    pub kind: u32,
    /// 1 when the other end has gone (shared queue).
    pub peer_gone: u32,
    /// Page request records read.
    pub records_read: u64,
    /// Responses the queue took.
    pub responses_sent: u64,
    /// Records the producer reported lost.
    pub lost: u64,
    /// Responses the producer accepted (as far as this consumer has learnt).
    pub accepted: u64,
    /// Responses the producer rejected.
    pub rejected: u64,
    /// Slots that did not decode (a corrupted region).
    pub corrupt: u64,
    /// Groups with an unreadable record, answered INVALID by the consumer itself.
    pub answered_broken: u64,
}

/// The most records or responses one call handles: its count must fit the `int` it returns.
pub(crate) const MAX_COUNT: usize = i32::MAX as usize;

/// `timeout_ms` as a timeout: negative waits forever.
pub(crate) fn timeout_of(timeout_ms: i64) -> Option<Duration> {
    u64::try_from(timeout_ms).ok().map(Duration::from_millis)
}

/// Checks that `fd` is an open iommufd fault fd (`anon_inode:[iommufd-pgfault]`).
fn check_fault_fd(fd: RawFd) -> Result<(), CError> {
    if fd < 0 {
        return Err(CError::new(
            libc::EBADF,
            format!("fd {fd} is not a descriptor"),
        ));
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CError::new(libc::EBADF, format!("fd {fd} is not open"))
        } else {
            CError::new(
                e.raw_os_error().unwrap_or(libc::EIO),
                format!("fd {fd}: cannot tell what it is through /proc/self/fd: {e}"),
            )
        }
    })?;
    if link.as_os_str() != "anon_inode:[iommufd-pgfault]" {
        return Err(CError::invalid(format!(
            "fd {fd} is {}, not an iommufd fault fd (anon_inode:[iommufd-pgfault], from IOMMU_FAULT_QUEUE_ALLOC)",
            link.display()
        )));
    }
    Ok(())
}

/// Wraps a Linux iommufd fault fd (from `IOMMU_FAULT_QUEUE_ALLOC`) and its fault object id.
///
/// Ownership: on success the host owns `fd` and closes it when freed; on failure the caller
/// still owns it. Errors: `-EBADF` (not open), `-EINVAL` (not an iommufd fault fd, or `out`
/// NULL).
///
/// # Safety
/// `out` is NULL or points at writable storage for a pointer; `fd` is not used by the caller
/// after success.
#[no_mangle]
pub unsafe extern "C" fn iopf_host_from_fault_fd(
    fd: RawFd,
    fault_id: u32,
    out: *mut *mut IopfHost,
) -> i32 {
    guard(|| {
        // Everything that can fail is checked before the fd is owned: a failure must leave it
        // the caller's, open.
        ffi::check(out, "out")?;
        check_fault_fd(fd)?;
        // SAFETY: fd is open (checked through /proc) and the caller hands it over on success.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let host = IopfHost::new(HostQueue::Linux(FaultQueue::from_parts(fault_id, owned)));
        // SAFETY: out checked (not NULL, aligned) above, so this cannot fail; writable by
        // contract.
        unsafe { out.write(Box::into_raw(Box::new(host))) };
        Ok(0)
    })
}

/// Attaches to iopf's shared fault queue served at the UNIX socket `path` (an `iopf serve` or
/// a Rust producer's `Listener`), as a consumer of whole `iommu_fault` records (which carry
/// private data; `iommu_hwpt_pgfault` records when the producer offers no others), answering
/// by cookie; `entries` is the ring size asked for (0: the producer's choice);
/// `timeout_ms` bounds each handshake message (negative: 5 s, iopf's default).
///
/// Errors, with the message naming the path: `-ECONNREFUSED`/`-ENOENT`/`-EPROTOTYPE` (no iopf
/// producer there), `-ETIMEDOUT` (a silent peer), `-EPROTO` (not the protocol), the producer's
/// refusal's errno, `-EINVAL` (`path` or `out` NULL, or not UTF-8).
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` as in `iopf_host_from_fault_fd`.
#[no_mangle]
pub unsafe extern "C" fn iopf_host_attach(
    path: *const c_char,
    entries: u32,
    timeout_ms: i64,
    out: *mut *mut IopfHost,
) -> i32 {
    guard(|| {
        if path.is_null() {
            return Err(CError::invalid("path is NULL"));
        }
        ffi::check(out, "out")?;
        // SAFETY: not NULL (checked); NUL-terminated by contract.
        let path = unsafe { CStr::from_ptr(path) }
            .to_str()
            .map_err(|_| CError::invalid("path is not UTF-8"))?;
        let timeout = timeout_of(timeout_ms).unwrap_or(iopf_queue::DEFAULT_HANDSHAKE_TIMEOUT);
        let consumer = iopf_queue::connect_timeout(path, timeout, |offer| {
            // Whole `iommu_fault` records with the private data echo when offered: only they
            // carry private data (a VT-d 3.x guest needs it); the iommufd record otherwise.
            // Answers by cookie either way (the producer restores private data from its copy).
            let want =
                Features::LOSS_RECORDS | Features::COOKIE_RESPONSE | Features::PRIV_DATA_ECHO;
            let mut r = [RecordFormats::IOMMU_FAULT, RecordFormats::HWPT_PGFAULT]
                .into_iter()
                .find_map(|record| {
                    Request::best_for(offer, record, want)
                        .filter(|r| r.features.contains(Features::COOKIE_RESPONSE))
                })
                .unwrap_or(
                    // Not offered: ask anyway and let the producer refuse in its own words.
                    Request {
                        abi_version: offer.abi_version,
                        record: RecordFormats::HWPT_PGFAULT,
                        responses: iopf_abi::ResponseFormats::COOKIE,
                        features: Features::COOKIE_RESPONSE,
                        entries: 0,
                    },
                );
            r.entries = entries;
            r
        })?;
        let host = IopfHost::new(HostQueue::Shared(Box::new(SharedHost {
            consumer,
            verdicts: Vec::new(),
        })));
        // SAFETY: out checked not NULL above; writable by contract.
        unsafe { ffi::give(out, host, "out") }?;
        Ok(0)
    })
}

/// Frees a host queue (NULL: nothing). Groups it read and did not answer are answered INVALID
/// by the queue's other end (the kernel when the HWPT goes, iopf's producer at once).
///
/// # Safety
/// `host` is NULL or a host not freed nor handed to a vIOMMU.
#[no_mangle]
pub unsafe extern "C" fn iopf_host_free(host: *mut IopfHost) {
    // SAFETY: by contract, a pointer this library gave and the caller still owns.
    guard_void(|| drop(unsafe { ffi::take(host) }));
}

/// The descriptor to poll for the queue in the VMM's own event loop (`POLLIN`), owned by the
/// host: do not close it. For iopf's shared queue call `iopf_host_arm` before each sleep.
/// Errors: `-EINVAL` (`host` NULL).
///
/// # Safety
/// `host` is NULL or a live host.
#[no_mangle]
pub unsafe extern "C" fn iopf_host_fd(host: *const IopfHost) -> i32 {
    // SAFETY: by contract.
    guard(|| fd_count(unsafe { ffi::obj(host, "host") }?.raw_fd()))
}

/// A descriptor as the count `guard` returns (an open descriptor is never negative).
pub(crate) fn fd_count(fd: RawFd) -> Result<usize, CError> {
    usize::try_from(fd).map_err(|_| CError::new(libc::EBADF, "the queue has no descriptor"))
}

/// Prepares to sleep on `iopf_host_fd` until something in `want` (`IOPF_READY_*` bits) may be
/// ready: returns the bits ready now (do not sleep), or 0 (sleep; the fd turns readable).
/// `IOPF_READY_PEER_GONE` is always reported. Errors: `-EINVAL` (unknown bits, `host` NULL).
///
/// # Safety
/// `host` is NULL or a live host.
#[no_mangle]
pub unsafe extern "C" fn iopf_host_arm(host: *mut IopfHost, want: u32) -> i32 {
    // SAFETY: by contract.
    guard(|| Ok(unsafe { ffi::obj_mut(host, "host") }?.readiness(want, true)? as usize))
}

/// Waits up to `timeout_ms` (negative: forever) for page requests: 1 when some wait, 0 on
/// timeout (or, for the shared queue, when the producer has gone). Errors: the queue's errno.
///
/// # Safety
/// `host` is NULL or a live host.
#[no_mangle]
pub unsafe extern "C" fn iopf_host_wait(host: *mut IopfHost, timeout_ms: i64) -> i32 {
    guard(|| {
        // SAFETY: by contract.
        let host = unsafe { ffi::obj_mut(host, "host") }?;
        Ok(usize::from(host.wait_readable(timeout_of(timeout_ms))?))
    })
}

/// Reads whole groups of page requests into `out` (at most `n` records), as `read()` on the
/// fault fd does: returns the records written, 0 when none wait. Errors: `-EINVAL` when the
/// first waiting group does not fit in `n` (the kernel's rule; read with a larger buffer), or
/// the queue's errno.
///
/// # Safety
/// `host` is NULL or a live host; `out` is NULL or has room for `n` records.
#[no_mangle]
pub unsafe extern "C" fn iopf_host_read_faults(
    host: *mut IopfHost,
    out: *mut HwptPgfault,
    n: usize,
) -> i32 {
    guard(|| {
        // SAFETY: by contract.
        let host = unsafe { ffi::obj_mut(host, "host") }?;
        // SAFETY: by contract; HwptPgfault is plain integers.
        let out = unsafe { ffi::slice_mut(out, n, "out") }?;
        // The count is returned as an int: never read more than one can say.
        let out = &mut out[..n.min(MAX_COUNT)];
        let mut faults = std::mem::take(&mut host.scratch);
        let got = read_in_chunks(host, &mut faults, out);
        host.scratch = faults;
        got
    })
}

/// The records one read of the queue asks for at first: doubled while the first waiting group
/// does not fit, up to the caller's room. The read buffer grows with the groups, not with the
/// room a caller offers (a VMM may offer room for millions).
const READ_CHUNK: usize = 256;

/// Reads whole groups into `out` in chunks through `faults` (the kept scratch buffer).
/// `EINVAL` only when the first waiting group does not fit in all of `out`.
fn read_in_chunks(
    host: &mut IopfHost,
    faults: &mut Vec<PgFault>,
    out: &mut [HwptPgfault],
) -> Result<usize, CError> {
    if out.is_empty() {
        // As read() with a count of 0: EINVAL when a group waits (it does not fit), else 0.
        return host.read_faults(&mut []);
    }
    let mut total = 0;
    let mut chunk = READ_CHUNK;
    loop {
        let left = out.len() - total;
        let want = chunk.min(left);
        if want == 0 {
            return Ok(total);
        }
        faults.clear();
        faults.resize(want, PgFault::ZEROED);
        match host.read_faults(faults) {
            Ok(0) => return Ok(total),
            Ok(k) => {
                for (slot, f) in out[total..].iter_mut().zip(&faults[..k]) {
                    *slot = f.encode();
                }
                total += k;
            }
            // The first waiting group does not fit in this chunk, and there is more room.
            Err(e) if e.errno == libc::EINVAL && want < left => chunk = chunk.saturating_mul(2),
            // Records were read: they are returned; what failed comes back on the next call.
            Err(_) if total > 0 => return Ok(total),
            Err(e) => return Err(e),
        }
    }
}

/// Answers groups by cookie, in order, as `write()` on the fault fd does: returns how many
/// responses were taken (fewer than `n` when the queue has no room for more: write the rest
/// later, after `iopf_host_arm(host, IOPF_READY_RESPONSE_ROOM)`). A code other than
/// `IOMMUFD_PAGE_RESP_SUCCESS` (0) or `IOMMUFD_PAGE_RESP_INVALID` (1), or an unknown cookie,
/// stops there: the responses before it are taken and counted (the call returns how many),
/// and if it is the first the call returns `-EINVAL` (the kernel's rule). A return of 0 with
/// `n` > 0 means the queue had no room: nothing was judged, write them again later.
///
/// # Safety
/// `host` is NULL or a live host; `responses` is NULL or holds `n` responses.
#[no_mangle]
pub unsafe extern "C" fn iopf_host_respond(
    host: *mut IopfHost,
    responses: *const HwptPageResponse,
    n: usize,
) -> i32 {
    guard(|| {
        // SAFETY: by contract.
        let host = unsafe { ffi::obj_mut(host, "host") }?;
        // SAFETY: by contract.
        let raw = unsafe { ffi::slice(responses, n, "responses") }?;
        let raw = &raw[..n.min(MAX_COUNT)];
        let mut decoded = Vec::with_capacity(raw.len());
        let mut bad = None;
        for r in raw {
            match r.decode() {
                Ok(d) => decoded.push(d),
                Err(e) => {
                    bad = Some(CError::from(e));
                    break;
                }
            }
        }
        // Only a bad *first* response is an error: a bad one later waits for the call that
        // reaches it, even when the queue had no room for the good ones before it (0 taken).
        match bad {
            Some(e) if decoded.is_empty() => Err(e),
            _ => Ok(host.respond(&decoded)?),
        }
    })
}

/// Fills `*out` with the queue's counters. Errors: `-EINVAL` (a NULL argument).
///
/// # Safety
/// `host` is NULL or a live host; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn iopf_host_stats(host: *const IopfHost, out: *mut IopfHostStats) -> i32 {
    guard(|| {
        // SAFETY: by contract.
        let st = unsafe { ffi::obj(host, "host") }?.stats();
        // SAFETY: by contract.
        unsafe { ffi::put(out, st, "out") }?;
        Ok(0)
    })
}

/// Compile-time check that the C record names keep Linux's meaning.
const _: () = {
    assert!(std::mem::size_of::<HwptPgfault>() == 40);
    assert!(std::mem::size_of::<HwptPageResponse>() == 8);
    assert!(ResponseCode::Success as u32 == iopf_abi::iommufd::IOMMUFD_PAGE_RESP_SUCCESS);
};

/// `iopf_hwpt_pgfault.flags` (`IOMMU_PGFAULT_FLAGS_PASID_VALID`): `pasid` is meaningful.
pub const IOPF_PGFAULT_FLAGS_PASID_VALID: u32 = 1 << 0;
/// `iopf_hwpt_pgfault.flags` (`IOMMU_PGFAULT_FLAGS_LAST_PAGE`): the last record of its group.
pub const IOPF_PGFAULT_FLAGS_LAST_PAGE: u32 = 1 << 1;
/// `perm` bit (`IOMMU_PGFAULT_PERM_READ`, `IOMMU_FAULT_PERM_READ`).
pub const IOPF_PERM_READ: u32 = 1 << 0;
/// `perm` bit: write.
pub const IOPF_PERM_WRITE: u32 = 1 << 1;
/// `perm` bit: execute.
pub const IOPF_PERM_EXEC: u32 = 1 << 2;
/// `perm` bit: privileged.
pub const IOPF_PERM_PRIV: u32 = 1 << 3;
/// `iopf_hwpt_page_response.code` (`IOMMUFD_PAGE_RESP_SUCCESS`): the pages are mapped; the
/// device retries.
pub const IOPF_PAGE_RESP_SUCCESS: u32 = 0;
/// `iopf_hwpt_page_response.code` (`IOMMUFD_PAGE_RESP_INVALID`): they cannot be; the device
/// does not retry.
pub const IOPF_PAGE_RESP_INVALID: u32 = 1;
/// `iopf_fault_page_request.flags` (`IOMMU_FAULT_PAGE_REQUEST_PASID_VALID`).
pub const IOPF_FAULT_PAGE_REQUEST_PASID_VALID: u32 = 1 << 0;
/// `iopf_fault_page_request.flags` (`IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE`): ends its group.
pub const IOPF_FAULT_PAGE_REQUEST_LAST_PAGE: u32 = 1 << 1;
/// `iopf_fault_page_request.flags` (`IOMMU_FAULT_PAGE_REQUEST_PRIV_DATA`): `private_data`
/// is meaningful and comes back with the response.
pub const IOPF_FAULT_PAGE_REQUEST_PRIV_DATA: u32 = 1 << 2;

/// The C names keep the uAPI's values: one meaning, checked where the names are made.
const _: () = {
    use iopf_abi::{PageRequestFlags as Req, Perm, PgfaultFlags as Pg};
    assert!(IOPF_PGFAULT_FLAGS_PASID_VALID == Pg::PASID_VALID.bits());
    assert!(IOPF_PGFAULT_FLAGS_LAST_PAGE == Pg::LAST_PAGE.bits());
    assert!(IOPF_PERM_READ == Perm::READ.bits());
    assert!(IOPF_PERM_WRITE == Perm::WRITE.bits());
    assert!(IOPF_PERM_EXEC == Perm::EXEC.bits());
    assert!(IOPF_PERM_PRIV == Perm::PRIV.bits());
    assert!(IOPF_PAGE_RESP_SUCCESS == iopf_abi::iommufd::IOMMUFD_PAGE_RESP_SUCCESS);
    assert!(IOPF_PAGE_RESP_INVALID == iopf_abi::iommufd::IOMMUFD_PAGE_RESP_INVALID);
    assert!(IOPF_FAULT_PAGE_REQUEST_PASID_VALID == Req::PASID_VALID.bits());
    assert!(IOPF_FAULT_PAGE_REQUEST_LAST_PAGE == Req::LAST_PAGE.bits());
    assert!(IOPF_FAULT_PAGE_REQUEST_PRIV_DATA == Req::PRIV_DATA.bits());
};

#[cfg(test)]
mod tests {
    use super::*;
    use iopf_abi::{PageRequest, PageRequestFlags, Perm};
    use iopf_iommufd::{compat_fault_queue_with, CompatConfig, KernelModel};

    /// A group of more records than the first chunk reads is read whole into a caller's room
    /// that fits it, under both kernels' rules for a read too small for the first group
    /// (6.12: EINVAL; newer: 0 with the group still waiting, which iopf-iommufd's wire layer
    /// reports as EINVAL too); into a room that does not fit it, EINVAL, the group left
    /// waiting.
    #[test]
    fn a_group_larger_than_a_chunk_is_read_whole_under_both_kernels() {
        let big = READ_CHUNK + 44;
        for kernel in [KernelModel::Linux6_12, KernelModel::Newest] {
            let mut cfg = CompatConfig::new(1);
            cfg.kernel = kernel;
            let (device, queue) = compat_fault_queue_with(cfg).expect("queue");
            for i in 0..big {
                let mut flags = PageRequestFlags::PASID_VALID;
                flags.set(PageRequestFlags::LAST_PAGE, i + 1 == big);
                device.report(PageRequest {
                    flags,
                    pasid: 1,
                    grpid: 3,
                    perm: Perm::READ,
                    addr: (i as u64) << 12,
                    private_data: [0; 2],
                });
            }
            let mut host = IopfHost::new(HostQueue::Compat(queue));
            let mut scratch = Vec::new();
            let mut small = vec![HwptPgfault::default(); big - 1];
            let e = read_in_chunks(&mut host, &mut scratch, &mut small).expect_err("too small");
            assert_eq!(e.errno, libc::EINVAL, "{kernel:?}");
            let mut room = vec![HwptPgfault::default(); 4 * big];
            let n = read_in_chunks(&mut host, &mut scratch, &mut room).expect("read");
            assert_eq!(n, big, "{kernel:?}");
            assert!(room[big - 1].flags & IOPF_PGFAULT_FLAGS_LAST_PAGE != 0);
            assert!(
                scratch.capacity() < 4 * big,
                "the scratch grew with the group, not the room"
            );
        }
    }
}
