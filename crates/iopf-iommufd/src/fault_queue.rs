//! The kernel's fault queue: the fd `IOMMU_FAULT_QUEUE_ALLOC` returns (`drivers/iommu/iommufd/
//! fault.c`), read and answered with the kernel's rules, as an [`iopf_abi::FaultConsumer`].

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use iopf_abi::{FaultConsumer, IommufdResponse, PgFault};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;

use crate::wire::{self, FaultFd, Readiness, RECORD_SIZE, RESPONSE_SIZE};
use crate::{Error, Result};

/// A Linux iommufd fault queue: the object id (for `IOMMU_HWPT_ALLOC.fault_id`) and its fd.
///
/// Owns the fd; dropping the queue closes it, which in Linux answers nothing by itself: groups
/// still outstanding are answered INVALID when the HWPT is detached, replaced or destroyed
/// (`iommufd_auto_response_faults()`, `iommufd_fault_destroy()`).
#[derive(Debug)]
pub struct FaultQueue {
    fd: OwnedFd,
    id: u32,
    scratch: Vec<u8>,
}

impl FaultQueue {
    /// Wraps a fault object id and its fd, as returned by `IOMMU_FAULT_QUEUE_ALLOC`.
    pub fn from_parts(id: u32, fd: OwnedFd) -> FaultQueue {
        FaultQueue {
            fd,
            id,
            scratch: Vec::new(),
        }
    }

    /// The fault object's id, to pass as `fault_id` with `IOMMU_HWPT_FAULT_ID_VALID`.
    pub fn id(&self) -> u32 {
        self.id
    }

    fn syscall_error(op: &'static str, errno: Errno) -> Error {
        Error::Io { op, errno }
    }
}

impl AsFd for FaultQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl FaultFd for FaultQueue {
    /// One `read()` on the fault fd. ESPIPE → [`Error::ReadSize`], EINVAL → [`Error::GroupTooLarge`]
    /// (the only EINVAL `iommufd_fault_fops_read()` returns), anything else → [`Error::Io`].
    fn read_bytes(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            match rustix::io::read(&self.fd, &mut *buf) {
                Ok(n) => return Ok(n),
                Err(Errno::INTR) => continue,
                Err(Errno::SPIPE) => return Err(Error::ReadSize { len: buf.len() }),
                Err(Errno::INVAL) => {
                    return Err(Error::GroupTooLarge {
                        capacity: buf.len() / RECORD_SIZE,
                    })
                }
                Err(e) => return Err(Self::syscall_error("read", e)),
            }
        }
    }

    /// One `write()` on the fault fd. ESPIPE → [`Error::WriteSize`]; EINVAL is attributed the way
    /// `iommufd_fault_fops_write()` decides it: the first response (none was applied) has a code
    /// other than 0 or 1 → [`Error::UnknownCode`], else its cookie → [`Error::UnknownCookie`].
    fn write_bytes(&mut self, buf: &[u8]) -> Result<usize> {
        loop {
            match rustix::io::write(&self.fd, buf) {
                Ok(n) => return Ok(n),
                Err(Errno::INTR) => continue,
                Err(Errno::SPIPE) => return Err(Error::WriteSize { len: buf.len() }),
                Err(Errno::INVAL) if buf.len() >= RESPONSE_SIZE => {
                    let first = iopf_abi::HwptPageResponse::read(&buf[..RESPONSE_SIZE])
                        .map_err(Error::Record)?;
                    return Err(match first.code {
                        0 | 1 => Error::UnknownCookie {
                            cookie: first.cookie,
                        },
                        code => Error::UnknownCode { code },
                    });
                }
                Err(e) => return Err(Self::syscall_error("write", e)),
            }
        }
    }

    fn readiness(&mut self) -> Result<Readiness> {
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN | PollFlags::OUT)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        poll_retrying(&mut fds, Some(&zero))?;
        let r = fds[0].revents();
        Ok(Readiness {
            readable: r.contains(PollFlags::IN),
            writable: r.contains(PollFlags::OUT),
        })
    }
}

fn poll_retrying(fds: &mut [PollFd<'_>], timeout: Option<&Timespec>) -> Result<usize> {
    loop {
        match poll(fds, timeout) {
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(errno) => return Err(Error::Io { op: "poll", errno }),
        }
    }
}

impl FaultConsumer for FaultQueue {
    type Error = Error;

    /// Reads up to `out.len()` records of whole groups: one `read()` of `out.len() * 40` bytes.
    fn read_faults(&mut self, out: &mut [PgFault]) -> Result<usize> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = wire::read_faults(self, &mut scratch, out);
        self.scratch = scratch;
        r
    }

    /// Answers groups with one `write()` of 8-byte `{cookie, code}` records; FAILURE is sent as
    /// INVALID. Returns the number the kernel accepted.
    fn respond(&mut self, responses: &[IommufdResponse]) -> Result<usize> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = wire::respond(self, &mut scratch, responses);
        self.scratch = scratch;
        r
    }

    /// `poll(POLLIN)` on the fault fd with the timeout.
    fn wait_readable(&mut self, timeout: Option<std::time::Duration>) -> Result<bool> {
        let ts = timeout.map(|t| Timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        poll_retrying(&mut fds, ts.as_ref())?;
        Ok(fds[0].revents().contains(PollFlags::IN))
    }
}
