//! iopf's own iommufd-compatible fault queue: the records, `read()` / `write()` rules, cookies and
//! errno of Linux 6.12's fault fd (`drivers/iommu/iommufd/fault.c`), fed by the grouping of
//! `iommu_report_device_fault()` (`drivers/iommu/io-pgfault.c`), with no `/dev/iommu` needed.
//!
//! ```text
//!  CompatProducer::report ──▶ partial list (per device, by grpid) ──LAST_PAGE──▶ deliver queue
//!                                                                                  │ read_bytes
//!  answers ◀── INVALID on detach / consumer drop ◀── response table (cookie) ◀─────┘ write_bytes
//! ```
//!
//! The two halves share one lock: [`CompatProducer`] (the fault core's side: reports requests,
//! detaches, collects the answers) and [`CompatFaultQueue`] (the consumer's side: a [`FaultFd`]
//! and an [`iopf_abi::FaultConsumer`]). Cookies are allocated when a group is read, lowest free
//! first starting at 1, exactly as `xa_alloc()` on the kernel's `XA_FLAGS_ALLOC1` xarray does, so
//! the same operations give byte-identical records on both queues.
//!
//! Self-contained: the iopf fault core (crates/iopf-core) had no committed API when this was
//! written; this module carries its own small group table.
//!
//! Differences from Linux, both deliberate: dropping the consumer answers every group it still
//! held INVALID (Linux answers nothing on close), and later reports are answered INVALID at once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use iopf_abi::iommufd::PgfaultFlags;
use iopf_abi::{
    FaultConsumer, HwptPageResponse, HwptPgfault, IommufdResponse, Perm, PgFault, ResponseCode,
};
use zerocopy::IntoBytes;

use crate::wire::{self, FaultFd, Readiness, RECORD_SIZE, RESPONSE_SIZE};
use crate::{Error, Result};

/// One page request as the IOMMU driver reports it (`struct iommu_fault_page_request`, with the
/// device it came from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// The device's iommufd id, copied into every record (`iommu_hwpt_pgfault.dev_id`).
    pub dev_id: u32,
    /// `PASID_VALID` and `LAST_PAGE`.
    pub flags: PgfaultFlags,
    /// The PASID (meaningful with `PASID_VALID`).
    pub pasid: u32,
    /// The PRG index.
    pub grpid: u32,
    /// The access.
    pub perm: Perm,
    /// The faulting address.
    pub addr: u64,
}

/// Who answered a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnsweredBy {
    /// The consumer, through `write()`.
    Consumer,
    /// The queue on detach/replace, for a group still outstanding (`iommufd_auto_response_faults()`).
    Detach,
    /// The queue, because no fault-capable HWPT was attached when the request arrived
    /// (`iommu_report_device_fault()`'s `err_bad_iopf`).
    NoHandler,
    /// The queue, because the consumer was dropped with the group outstanding.
    ConsumerGone,
}

/// A page (group) response that went back to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The device.
    pub dev_id: u32,
    /// The group's PRG index.
    pub grpid: u32,
    /// The PASID of the group's last request.
    pub pasid: u32,
    /// SUCCESS or INVALID.
    pub code: ResponseCode,
    /// Who answered.
    pub by: AnsweredBy,
}

#[derive(Debug, Clone)]
struct Group {
    /// Partials in arrival order, then the LAST_PAGE request.
    requests: Vec<PageRequest>,
}

impl Group {
    fn last(&self) -> &PageRequest {
        // A group is built around its LAST_PAGE request, so it is never empty.
        &self.requests[self.requests.len() - 1]
    }

    fn answer(&self, code: ResponseCode, by: AnsweredBy) -> Answer {
        let last = self.last();
        Answer {
            dev_id: last.dev_id,
            grpid: last.grpid,
            pasid: last.pasid,
            code,
            by,
        }
    }
}

/// Lowest-free cookie allocation from 1, as `xa_alloc()` with `XA_FLAGS_ALLOC1`.
#[derive(Debug)]
struct Cookies {
    /// Every cookie below `next` is in use unless it is in `free`.
    next: u64,
    free: BTreeSet<u32>,
}

impl Cookies {
    fn new() -> Cookies {
        Cookies {
            next: 1,
            free: BTreeSet::new(),
        }
    }

    fn alloc(&mut self) -> Option<u32> {
        if let Some(c) = self.free.pop_first() {
            return Some(c);
        }
        let c = u32::try_from(self.next).ok()?;
        self.next += 1;
        Some(c)
    }

    fn release(&mut self, c: u32) {
        if u64::from(c) + 1 == self.next {
            self.next -= 1;
            while let Some(&top) = self.free.last() {
                if u64::from(top) + 1 != self.next {
                    break;
                }
                self.free.pop_last();
                self.next -= 1;
            }
        } else {
            self.free.insert(c);
        }
    }
}

#[derive(Debug)]
struct State {
    attached: bool,
    consumer_gone: bool,
    partial: Vec<PageRequest>,
    deliver: VecDeque<Group>,
    response: BTreeMap<u32, Group>,
    cookies: Cookies,
    answers: Vec<Answer>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    readable: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent (every mutation is a single
        // push/pop/insert), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The producer's half: reports page requests, attaches and detaches, collects answers.
#[derive(Debug, Clone)]
pub struct CompatProducer {
    shared: Arc<Shared>,
}

/// The consumer's half: a fault fd with Linux's rules. Dropping it answers every group it still
/// held INVALID.
#[derive(Debug)]
pub struct CompatFaultQueue {
    shared: Arc<Shared>,
    scratch: Vec<u8>,
}

/// A new queue, attached (a fault-capable HWPT in place), with no faults.
pub fn compat_fault_queue() -> (CompatProducer, CompatFaultQueue) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            attached: true,
            consumer_gone: false,
            partial: Vec::new(),
            deliver: VecDeque::new(),
            response: BTreeMap::new(),
            cookies: Cookies::new(),
            answers: Vec::new(),
        }),
        readable: Condvar::new(),
    });
    (
        CompatProducer {
            shared: shared.clone(),
        },
        CompatFaultQueue {
            shared,
            scratch: Vec::new(),
        },
    )
}

impl CompatProducer {
    /// Reports one page request (`iommu_report_device_fault()`): without a handler (detached,
    /// or the consumer gone) it is answered INVALID at once; a request without `LAST_PAGE` waits
    /// on the partial list; a `LAST_PAGE` request completes its group with the partials of the
    /// same device and grpid (in arrival order) and queues the group for reading.
    pub fn report(&self, req: PageRequest) {
        let mut st = self.shared.lock();
        if !st.attached || st.consumer_gone {
            let by = if st.consumer_gone {
                AnsweredBy::ConsumerGone
            } else {
                AnsweredBy::NoHandler
            };
            st.answers.push(Answer {
                dev_id: req.dev_id,
                grpid: req.grpid,
                pasid: req.pasid,
                code: ResponseCode::Invalid,
                by,
            });
            return;
        }
        if !req.flags.contains(PgfaultFlags::LAST_PAGE) {
            st.partial.push(req);
            return;
        }
        let mut requests = Vec::new();
        st.partial.retain(|p| {
            let same = p.dev_id == req.dev_id && p.grpid == req.grpid;
            if same {
                requests.push(*p);
            }
            !same
        });
        requests.push(req);
        st.deliver.push_back(Group { requests });
        drop(st);
        self.shared.readable.notify_all();
    }

    /// Detaches the fault-capable HWPT (detach or replace, `iommufd_auto_response_faults()`):
    /// every group waiting to be read or awaiting a response is answered INVALID and its cookie
    /// freed; later reports are answered INVALID until [`CompatProducer::attach`].
    pub fn detach(&self) {
        let mut st = self.shared.lock();
        st.attached = false;
        answer_all(&mut st, AnsweredBy::Detach);
    }

    /// Attaches a fault-capable HWPT again.
    pub fn attach(&self) {
        self.shared.lock().attached = true;
    }

    /// Takes the answers given so far, oldest first.
    pub fn take_answers(&self) -> Vec<Answer> {
        std::mem::take(&mut self.shared.lock().answers)
    }

    /// Groups read and not yet answered.
    pub fn outstanding(&self) -> usize {
        self.shared.lock().response.len()
    }
}

fn answer_all(st: &mut State, by: AnsweredBy) {
    let waiting: Vec<Group> = st.deliver.drain(..).collect();
    for g in &waiting {
        let a = g.answer(ResponseCode::Invalid, by);
        st.answers.push(a);
    }
    let held = std::mem::take(&mut st.response);
    for (cookie, g) in held {
        st.answers.push(g.answer(ResponseCode::Invalid, by));
        st.cookies.release(cookie);
    }
}

fn record(req: &PageRequest, cookie: u32) -> HwptPgfault {
    // `iommufd_compose_fault_message()`: length is always 0 in Linux 6.12.
    HwptPgfault {
        flags: req.flags.bits(),
        dev_id: req.dev_id,
        pasid: req.pasid,
        grpid: req.grpid,
        perm: req.perm.bits(),
        reserved: 0,
        addr: req.addr,
        length: 0,
        cookie,
    }
}

impl FaultFd for CompatFaultQueue {
    /// `iommufd_fault_fops_read()`.
    fn read_bytes(&mut self, buf: &mut [u8]) -> Result<usize> {
        if buf.len() % RECORD_SIZE != 0 {
            return Err(Error::ReadSize { len: buf.len() });
        }
        let mut st = self.shared.lock();
        let mut done = 0;
        while let Some(group) = st.deliver.pop_front() {
            let need = group.requests.len() * RECORD_SIZE;
            if done >= buf.len() || need > buf.len() - done {
                st.deliver.push_front(group);
                if done == 0 {
                    return Err(Error::GroupTooLarge {
                        capacity: buf.len() / RECORD_SIZE,
                    });
                }
                break;
            }
            let Some(cookie) = st.cookies.alloc() else {
                st.deliver.push_front(group);
                if done == 0 {
                    return Err(Error::Io {
                        op: "read (cookies exhausted)",
                        errno: rustix::io::Errno::BUSY,
                    });
                }
                break;
            };
            for (req, out) in group
                .requests
                .iter()
                .zip(buf[done..].chunks_exact_mut(RECORD_SIZE))
            {
                out.copy_from_slice(record(req, cookie).as_bytes());
            }
            done += need;
            st.response.insert(cookie, group);
        }
        Ok(done)
    }

    /// `iommufd_fault_fops_write()`.
    fn write_bytes(&mut self, buf: &[u8]) -> Result<usize> {
        if buf.len() % RESPONSE_SIZE != 0 {
            return Err(Error::WriteSize { len: buf.len() });
        }
        let mut st = self.shared.lock();
        let mut done = 0;
        let mut rc = None;
        for raw in buf.chunks_exact(RESPONSE_SIZE) {
            let r = match HwptPageResponse::read(raw) {
                Ok(r) => r,
                Err(e) => {
                    rc = Some(Error::Record(e));
                    break;
                }
            };
            let code = match ResponseCode::decode_iommufd(r.code) {
                Ok(code) => code,
                Err(_) => {
                    rc = Some(Error::UnknownCode { code: r.code });
                    break;
                }
            };
            let Some(group) = st.response.remove(&r.cookie) else {
                rc = Some(Error::UnknownCookie { cookie: r.cookie });
                break;
            };
            st.cookies.release(r.cookie);
            let a = group.answer(code, AnsweredBy::Consumer);
            st.answers.push(a);
            done += RESPONSE_SIZE;
        }
        match rc {
            Some(e) if done == 0 => Err(e),
            _ => Ok(done),
        }
    }

    /// `iommufd_fault_fops_poll()`.
    fn readiness(&mut self) -> Result<Readiness> {
        Ok(Readiness {
            readable: !self.shared.lock().deliver.is_empty(),
            writable: true,
        })
    }
}

impl FaultConsumer for CompatFaultQueue {
    type Error = Error;

    fn read_faults(&mut self, out: &mut [PgFault]) -> Result<usize> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = wire::read_faults(self, &mut scratch, out);
        self.scratch = scratch;
        r
    }

    fn respond(&mut self, responses: &[IommufdResponse]) -> Result<usize> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = wire::respond(self, &mut scratch, responses);
        self.scratch = scratch;
        r
    }

    /// Blocks on the queue's condition variable until a group waits or the timeout passes.
    fn wait_readable(&mut self, timeout_ms: Option<u32>) -> Result<bool> {
        let deadline = timeout_ms.map(|ms| Instant::now() + Duration::from_millis(u64::from(ms)));
        let mut st = self.shared.lock();
        loop {
            if !st.deliver.is_empty() {
                return Ok(true);
            }
            match deadline {
                None => {
                    st = self
                        .shared
                        .readable
                        .wait(st)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(false);
                    }
                    st = self
                        .shared
                        .readable
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
            }
        }
    }
}

impl Drop for CompatFaultQueue {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.consumer_gone = true;
        answer_all(&mut st, AnsweredBy::ConsumerGone);
    }
}
