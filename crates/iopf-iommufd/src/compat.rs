//! iopf's own iommufd-compatible fault queue: the records, `read()` / `write()` rules and errno of
//! Linux 6.12's fault fd (`drivers/iommu/iommufd/fault.c`), on top of iopf's fault core
//! (`iopf-core`: grouping, cookies, response validation, exactly-once answers, teardown), with no
//! `/dev/iommu` needed.
//!
//! ```text
//!  CompatProducer::report ──▶ FaultCore::report ──▶ partial list ──LAST_PAGE──▶ QueueHandler::deliver
//!                                                                              (deliver list)
//!                                                                                  │ read_bytes
//!  answers (ResponseSink) ◀── FaultCore::respond ◀── cookie handed out? ◀──────────┘ write_bytes
//!          ▲ INVALID on detach / consumer drop (FaultCore::detach)
//! ```
//!
//! The two halves share one lock: [`CompatProducer`] (the device's side: reports requests,
//! detaches and attaches the queue, collects the answers the device got) and
//! [`CompatFaultQueue`] (the consumer's side: a [`FaultFd`] and an [`iopf_abi::FaultConsumer`]).
//!
//! Cookies are the fault core's ([`iopf_core::Cookie`]: unique among outstanding groups, never
//! 0); Linux allocates its own (`xa_alloc()`, lowest free from 1), so the values differ between
//! the two queues while their uniqueness and every rule agree. As in Linux, a cookie counts only
//! once its group has been read: answering a group not yet read is EINVAL.
//!
//! One deliberate difference from Linux: dropping the consumer answers every group it still held
//! INVALID (Linux answers nothing on close), and later reports are answered INVALID at once.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use iopf_abi::{
    Fault, FaultConsumer, Features, HwptPageResponse, HwptPgfault, IommufdResponse, PageRequest,
    PgFault, ResponseCode,
};
use iopf_core::{
    Cookie, DeviceId, DeviceResponse, FaultCore, Group, GroupHandler, HandlerId, PriCaps, Refusal,
    Response, ResponseSink,
};
use zerocopy::IntoBytes;

use crate::wire::{self, FaultFd, Readiness, RECORD_SIZE, RESPONSE_SIZE};
use crate::{Error, Result};

/// The answers that reached the device, oldest first (the core's [`ResponseSink`]).
#[derive(Debug, Default)]
struct AnswerLog(Vec<DeviceResponse>);

impl ResponseSink for AnswerLog {
    fn page_response(&mut self, _device: DeviceId, response: &DeviceResponse) {
        self.0.push(*response);
    }
}

/// The fault core's handler for the queue: completed groups wait here until read
/// (`iommufd_fault_iopf_handler()` → `fault->deliver`).
#[derive(Debug, Default)]
struct QueueHandler {
    deliver: VecDeque<(Cookie, Vec<PageRequest>)>,
}

impl GroupHandler for QueueHandler {
    fn deliver(&mut self, group: &Group<'_>) -> std::result::Result<(), Refusal> {
        self.deliver
            .push_back((group.cookie, group.requests.to_vec()));
        Ok(())
    }

    fn withdraw(&mut self, cookie: Cookie) {
        self.deliver.retain(|(c, _)| *c != cookie);
    }
}

#[derive(Debug)]
struct State {
    core: FaultCore<AnswerLog, QueueHandler>,
    device: DeviceId,
    /// The queue's handler while a fault-capable HWPT is attached.
    handler: Option<HandlerId>,
    /// Cookies handed out by a read and not yet answered (`fault->response`).
    handed_out: BTreeSet<u32>,
    consumer_gone: bool,
    epoch: Instant,
}

impl State {
    fn deliver_list(&mut self) -> Option<&mut VecDeque<(Cookie, Vec<PageRequest>)>> {
        let h = self.handler?;
        self.core.handler_mut(h).map(|q| &mut q.deliver)
    }

    fn detach(&mut self) {
        if let Some(h) = self.handler.take() {
            // Answers every group the handler still owed INVALID, read or not
            // (`iommufd_auto_response_faults()`). The handler was attached, so this succeeds.
            let _ = self.core.detach(h);
        }
        self.handed_out.clear();
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    readable: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation completes under the lock without panicking paths in between, so a
        // poisoned lock still guards a consistent state.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The device's half: reports page requests, attaches and detaches the queue, and collects the
/// responses the device received.
#[derive(Debug, Clone)]
pub struct CompatProducer {
    shared: Arc<Shared>,
}

/// The consumer's half: a fault fd with Linux's rules. Dropping it answers every group it still
/// held INVALID.
#[derive(Debug)]
pub struct CompatFaultQueue {
    shared: Arc<Shared>,
    dev_id: u32,
    scratch: Vec<u8>,
}

/// A new queue for one device whose iommufd id (copied into every record) is `dev_id`, attached
/// (a fault-capable HWPT in place), with no faults.
///
/// The device has no limit on outstanding requests (Linux's fault queue has none) and may not
/// receive Response Failure (the iommufd path never sends it).
///
/// Errors: only if the fault core refuses the configuration, which it does not for this one.
pub fn compat_fault_queue(dev_id: u32) -> Result<(CompatProducer, CompatFaultQueue)> {
    let mut core = FaultCore::new(AnswerLog::default());
    let device = core
        .register(PriCaps {
            outstanding_allocation: u32::MAX,
            pasid_required: false,
            failure_allowed: false,
        })
        .map_err(core_setup)?;
    let handler = core
        .attach(
            device,
            None,
            QueueHandler::default(),
            Features::COOKIE_RESPONSE,
        )
        .map_err(core_setup)?;
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            core,
            device,
            handler: Some(handler),
            handed_out: BTreeSet::new(),
            consumer_gone: false,
            epoch: Instant::now(),
        }),
        readable: Condvar::new(),
    });
    Ok((
        CompatProducer {
            shared: shared.clone(),
        },
        CompatFaultQueue {
            shared,
            dev_id,
            scratch: Vec::new(),
        },
    ))
}

fn core_setup(e: iopf_core::CoreError) -> Error {
    Error::Core(e)
}

impl CompatProducer {
    /// Reports one page request ([`FaultCore::report`], `iommu_report_device_fault()`): a
    /// request without `LAST_PAGE` waits on the partial list; a `LAST_PAGE` request completes its
    /// group and queues it for reading; with no queue attached (detached, or the consumer gone)
    /// the group is answered INVALID at once.
    pub fn report(&self, req: PageRequest) {
        let mut st = self.shared.lock();
        let now = st.epoch.elapsed().as_nanos() as u64;
        let device = st.device;
        // The device is registered for the queue's whole life, so report cannot fail.
        let _ = st.core.report(device, &Fault::PageRequest(req), now);
        drop(st);
        self.shared.readable.notify_all();
    }

    /// Detaches the queue (replace or detach of the fault-capable HWPT,
    /// `iommufd_auto_response_faults()`): every group waiting to be read or awaiting a response is
    /// answered INVALID; later reports are answered INVALID until [`CompatProducer::attach`].
    pub fn detach(&self) {
        self.shared.lock().detach();
    }

    /// Attaches the queue again (no effect while attached or once the consumer is gone).
    pub fn attach(&self) -> Result<()> {
        let mut st = self.shared.lock();
        if st.handler.is_some() || st.consumer_gone {
            return Ok(());
        }
        let device = st.device;
        let h = st
            .core
            .attach(
                device,
                None,
                QueueHandler::default(),
                Features::COOKIE_RESPONSE,
            )
            .map_err(core_setup)?;
        st.handler = Some(h);
        Ok(())
    }

    /// Takes the responses the device received so far, oldest first.
    pub fn take_answers(&self) -> Vec<DeviceResponse> {
        std::mem::take(&mut self.shared.lock().core.sink_mut().0)
    }

    /// Groups read by the consumer and not yet answered.
    pub fn outstanding(&self) -> usize {
        self.shared.lock().handed_out.len()
    }
}

impl CompatFaultQueue {
    fn record(&self, req: &PageRequest, cookie: u32) -> HwptPgfault {
        // `iommufd_compose_fault_message()`: flags copied as reported, length always 0 in 6.12.
        HwptPgfault {
            flags: req.flags.bits(),
            dev_id: self.dev_id,
            pasid: req.pasid,
            grpid: req.grpid,
            perm: req.perm.bits(),
            reserved: 0,
            addr: req.addr,
            length: 0,
            cookie,
        }
    }
}

impl FaultFd for CompatFaultQueue {
    /// `iommufd_fault_fops_read()`.
    fn read_bytes(&mut self, buf: &mut [u8]) -> Result<usize> {
        if buf.len() % RECORD_SIZE != 0 {
            return Err(Error::ReadSize { len: buf.len() });
        }
        let shared = self.shared.clone();
        let mut st = shared.lock();
        let mut done = 0;
        let mut taken = Vec::new();
        if let Some(deliver) = st.deliver_list() {
            while let Some((cookie, requests)) = deliver.pop_front() {
                let need = requests.len() * RECORD_SIZE;
                if done >= buf.len() || need > buf.len() - done {
                    deliver.push_front((cookie, requests));
                    if done == 0 {
                        return Err(Error::GroupTooLarge {
                            capacity: buf.len() / RECORD_SIZE,
                        });
                    }
                    break;
                }
                for (req, out) in requests
                    .iter()
                    .zip(buf[done..].chunks_exact_mut(RECORD_SIZE))
                {
                    out.copy_from_slice(self.record(req, cookie.raw()).as_bytes());
                }
                done += need;
                taken.push(cookie.raw());
            }
        }
        st.handed_out.extend(taken);
        Ok(done)
    }

    /// `iommufd_fault_fops_write()`: each response's code is checked first, then its cookie
    /// must name a group handed out by a read; the fault core then judges and sends it.
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
            let unknown = Error::UnknownCookie { cookie: r.cookie };
            let Some(h) = st.handler else {
                rc = Some(unknown);
                break;
            };
            if !st.handed_out.contains(&r.cookie) {
                rc = Some(unknown);
                break;
            }
            let response = Response::by_cookie(Cookie::from_raw(r.cookie), code);
            if st.core.respond(h, &response).is_err() {
                rc = Some(unknown);
                break;
            }
            st.handed_out.remove(&r.cookie);
            done += RESPONSE_SIZE;
        }
        match rc {
            Some(e) if done == 0 => Err(e),
            _ => Ok(done),
        }
    }

    /// `iommufd_fault_fops_poll()`.
    fn readiness(&mut self) -> Result<Readiness> {
        let mut st = self.shared.lock();
        let readable = st.deliver_list().is_some_and(|d| !d.is_empty());
        Ok(Readiness {
            readable,
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
        let shared = self.shared.clone();
        let mut st = shared.lock();
        loop {
            if st.deliver_list().is_some_and(|d| !d.is_empty()) {
                return Ok(true);
            }
            let wait = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(false),
                },
            };
            st = match wait {
                None => shared
                    .readable
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(left) => {
                    shared
                        .readable
                        .wait_timeout(st, left)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

impl Drop for CompatFaultQueue {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.consumer_gone = true;
        st.detach();
    }
}
