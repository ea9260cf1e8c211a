//! iopf's own iommufd-compatible fault queue: the records, `read()` / `write()` rules and errno of
//! Linux's fault fd (`drivers/iommu/iommufd/fault.c` in 6.12, `eventq.c` since), on top of iopf's
//! fault core (`iopf-core`: grouping, cookies, response validation, exactly-once answers,
//! teardown), with no `/dev/iommu` needed.
//!
//! ```text
//!  CompatProducer::report ──▶ FaultCore::report ──▶ partial list ──LAST_PAGE──▶ DeliverList::deliver
//!                                                                              (fault->deliver)
//!                                                                                  │ read_bytes
//!  answers (ResponseSink) ◀── FaultCore::respond ◀── handed out? (GroupTable) ◀────┘ write_bytes
//!          ▲ INVALID on detach / consumer drop (FaultCore::detach)                 (fault->response)
//! ```
//!
//! The two halves share one lock: [`CompatProducer`] (the device's side: reports requests,
//! detaches and attaches the queue, collects the answers the device got) and
//! [`CompatFaultQueue`] (the consumer's side: a [`FaultFd`] and an [`iopf_abi::FaultConsumer`]).
//!
//! Cookies are the fault core's ([`iopf_core::Cookie`]: unique among outstanding groups, never
//! 0); Linux allocates its own (`xa_alloc()`, lowest free from 1), so the values differ between
//! the two queues while their uniqueness and every rule agree. As in Linux, a cookie counts only
//! once its group has been read: the groups handed out are kept in the fault core's
//! [`GroupTable`] under their cookies (the kernel's `fault->response` xarray), and answering a
//! group not yet read is EINVAL.
//!
//! The records carry the kernel's internal flags as Linux copies them
//! (`iommufd_compose_fault_message()`): `PASID_VALID`, `LAST_PAGE`, and, for a device that needs
//! the PASID in its responses, the kernel-internal `RESPONSE_NEEDS_PASID` (bit 2), which the uAPI
//! does not name ([`iopf_abi::KERNEL_RESPONSE_NEEDS_PASID`]). Where the kernel's rules changed
//! after 6.12 the queue follows the [`KernelModel`] it was made with:
//!
//! | rule | [`KernelModel::Linux6_12`] | [`KernelModel::Newest`] |
//! |---|---|---|
//! | `read()` when the first waiting group does not fit | EINVAL | 0 (as when nothing waits) |
//! | a fault-capable HWPT on an SR-IOV VF | refused (EINVAL) | refused only if the VF supports PRI |
//!
//! Both restore a group whose `copy_to_user()` fails to the head of the deliver list and answer
//! INVALID, on destroy, the groups read and unanswered (Debian's 6.12.117 has both fixes); a read
//! into a Rust slice cannot fault, so the first never arises here.
//!
//! One deliberate difference from Linux: dropping the consumer answers every group it still held
//! INVALID (Linux answers nothing on close), and later reports are answered INVALID at once.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use iopf_abi::{
    Fault, FaultConsumer, Features, HwptPageResponse, HwptPgfault, IommufdResponse, PageRequest,
    PgFault, ResponseCode,
};
use iopf_core::{
    Cookie, DeviceId, DeviceResponse, FaultCore, Group, GroupFacts, GroupHandler, GroupTable,
    HandlerId, Naming, PriCaps, Refusal, Response, ResponseSink,
};
use zerocopy::IntoBytes;

use crate::wire::{self, FaultFd, Readiness, RECORD_SIZE, RESPONSE_SIZE};
use crate::{Error, Result};

/// Which kernel's fault-fd rules a [`CompatFaultQueue`] follows where they changed after 6.12.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KernelModel {
    /// Linux 6.12 (`drivers/iommu/iommufd/fault.c`): the kernel tier's differential holds the
    /// queue to it.
    #[default]
    Linux6_12,
    /// The newest Linux read for iopf (`drivers/iommu/iommufd/eventq.c`, torvalds/linux
    /// 0507f337): `read()` returns 0 when the first group does not fit, and only a VF that
    /// supports PRI is refused a fault-capable HWPT.
    Newest,
}

/// How a compatible queue is made: the device's iommufd id, the kernel model, and what the
/// device is.
///
/// New fields may be added: build one from [`CompatConfig::new`] and set the fields to change.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CompatConfig {
    /// The device's iommufd object id, copied into every record.
    pub dev_id: u32,
    /// Whose rules.
    pub kernel: KernelModel,
    /// "PRG Response PASID Required": records of requests with a PASID carry the kernel's
    /// internal `RESPONSE_NEEDS_PASID` flag, as VT-d's and AMD's do.
    pub pasid_required: bool,
    /// The device is an SR-IOV virtual function.
    pub virtual_function: bool,
    /// The device supports PRI (matters for a VF under [`KernelModel::Newest`]).
    pub pri: bool,
}

impl CompatConfig {
    /// A PRI-capable physical function with iommufd id `dev_id`, Linux 6.12's rules.
    pub fn new(dev_id: u32) -> CompatConfig {
        CompatConfig {
            dev_id,
            kernel: KernelModel::Linux6_12,
            pasid_required: false,
            virtual_function: false,
            pri: true,
        }
    }
}

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
struct DeliverList {
    deliver: VecDeque<(Cookie, Vec<PageRequest>)>,
}

impl GroupHandler for DeliverList {
    fn deliver(&mut self, group: &Group<'_>) -> std::result::Result<(), Refusal> {
        self.deliver
            .push_back((group.cookie, group.requests.to_vec()));
        Ok(())
    }

    /// The core answered a group itself (flush, age limit, detach): off the list, so no read
    /// hands it out and its cookie, if the core reuses it, names only the new group. Teardown
    /// withdraws oldest first, so the search usually stops at the front.
    fn withdraw(&mut self, cookie: Cookie) {
        if let Some(i) = self.deliver.iter().position(|(c, _)| *c == cookie) {
            self.deliver.remove(i);
        }
    }
}

#[derive(Debug)]
struct State {
    core: FaultCore<AnswerLog, DeliverList>,
    device: DeviceId,
    config: CompatConfig,
    /// The queue's handler while a fault-capable HWPT is attached.
    handler: Option<HandlerId>,
    /// Groups handed out by a read and not yet answered (`fault->response`), under their cookies.
    handed_out: GroupTable<()>,
    consumer_gone: bool,
    epoch: Instant,
    /// The eventfd's counter is non-zero ([`Shared::sync_readable`]).
    signalled: bool,
}

impl State {
    /// The deliver list, with groups the core has answered meanwhile (withdrawn) dropped from
    /// its head, so that what is first is really waiting.
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
        self.handed_out = GroupTable::new(Naming::Upstream);
    }

    /// Attaches a fresh deliver list, as a fault-capable HWPT attach does
    /// (`iommufd_fault_domain_attach_dev()`), refusing a VF as the kernel model does.
    fn attach(&mut self) -> Result<()> {
        let c = self.config;
        let refused = c.virtual_function
            && match c.kernel {
                KernelModel::Linux6_12 => true,
                KernelModel::Newest => c.pri,
            };
        if refused {
            return Err(Error::FaultCapableVf);
        }
        let h = self
            .core
            .attach(
                self.device,
                None,
                DeliverList::default(),
                Features::COOKIE_RESPONSE,
            )
            .map_err(core_setup)?;
        self.handler = Some(h);
        Ok(())
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    readable: Condvar,
    /// Readable exactly while a group waits to be read, as the kernel's fault fd polls: an
    /// eventfd whose counter is kept non-zero then and zero otherwise, under the lock.
    poll_fd: OwnedFd,
}

impl Shared {
    /// Brings the eventfd's level in line with the deliver list, after anything that may have
    /// changed it (a report, a read, a detach or attach); wakes the condition variable's
    /// waiters when a group waits.
    fn sync_readable(&self, st: &mut State) {
        let readable = st.deliver_list().is_some_and(|d| !d.is_empty());
        if readable != st.signalled {
            if readable {
                let _ = rustix::io::write(&self.poll_fd, &1u64.to_ne_bytes());
            } else {
                let mut buf = [0u8; 8];
                let _ = rustix::io::read(&self.poll_fd, &mut buf);
            }
            st.signalled = readable;
        }
        if readable {
            self.readable.notify_all();
        }
    }

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
/// (a fault-capable HWPT in place), with no faults, following Linux 6.12's rules: see
/// [`compat_fault_queue_with`].
///
/// Errors: only if the fault core refuses the configuration, which it does not for this one.
pub fn compat_fault_queue(dev_id: u32) -> Result<(CompatProducer, CompatFaultQueue)> {
    compat_fault_queue_with(CompatConfig::new(dev_id))
}

/// A new queue as `config` says, attached (a fault-capable HWPT in place), with no faults.
///
/// The device has no limit on outstanding requests (Linux's fault queue has none) and may not
/// receive Response Failure (the iommufd path never sends it).
///
/// Errors: [`Error::FaultCapableVf`] (EINVAL) for a VF the kernel model refuses a fault-capable
/// HWPT; otherwise only if the fault core refuses the configuration, which it does not.
pub fn compat_fault_queue_with(config: CompatConfig) -> Result<(CompatProducer, CompatFaultQueue)> {
    let mut core = FaultCore::new(AnswerLog::default());
    let device = core
        .register(PriCaps {
            outstanding_allocation: u32::MAX,
            pasid_required: config.pasid_required,
            failure_allowed: false,
        })
        .map_err(core_setup)?;
    let mut state = State {
        core,
        device,
        config,
        handler: None,
        handed_out: GroupTable::new(Naming::Upstream),
        consumer_gone: false,
        epoch: Instant::now(),
        signalled: false,
    };
    state.attach()?;
    let poll_fd = rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )
    .map_err(|errno| Error::Io {
        op: "eventfd",
        errno,
    })?;
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        readable: Condvar::new(),
        poll_fd,
    });
    Ok((
        CompatProducer {
            shared: shared.clone(),
        },
        CompatFaultQueue {
            shared,
            dev_id: config.dev_id,
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
        self.shared.sync_readable(&mut st);
    }

    /// Detaches the queue (replace or detach of the fault-capable HWPT,
    /// `iommufd_auto_response_faults()`): every group waiting to be read or awaiting a response is
    /// answered INVALID; later reports are answered INVALID until [`CompatProducer::attach`].
    pub fn detach(&self) {
        let mut st = self.shared.lock();
        st.detach();
        self.shared.sync_readable(&mut st);
    }

    /// Attaches the queue again (no effect while attached or once the consumer is gone).
    pub fn attach(&self) -> Result<()> {
        let mut st = self.shared.lock();
        if st.handler.is_some() || st.consumer_gone {
            return Ok(());
        }
        let r = st.attach();
        self.shared.sync_readable(&mut st);
        r
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
        // `iommufd_compose_fault_message()`: the internal flags copied as reported, length
        // always 0.
        PgFault::composed(self.dev_id, cookie, req).encode()
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
        let kernel = st.config.kernel;
        let mut done = 0;
        let mut taken = Vec::new();
        if let Some(deliver) = st.deliver_list() {
            while let Some((cookie, requests)) = deliver.pop_front() {
                let need = requests.len() * RECORD_SIZE;
                if done >= buf.len() || need > buf.len() - done {
                    deliver.push_front((cookie, requests));
                    if done == 0 && kernel == KernelModel::Linux6_12 {
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
                if let Some(last) = requests.last() {
                    taken.push((cookie, GroupFacts::of_last(0, 0, last)));
                }
            }
        }
        for (cookie, facts) in taken {
            // The core never hands out a live cookie twice.
            let _ = st.handed_out.insert_named(cookie, facts, ());
        }
        shared.sync_readable(&mut st);
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
            // `xa_erase(&fault->response, cookie)`: only a group handed out by a read.
            let cookie = Cookie::from_raw(r.cookie);
            if st.handed_out.get(cookie).is_none() {
                rc = Some(unknown);
                break;
            }
            if st
                .core
                .respond(h, &Response::by_cookie(cookie, code))
                .is_err()
            {
                rc = Some(unknown);
                break;
            }
            st.handed_out.remove(cookie);
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
    fn wait_readable(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
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
        self.shared.sync_readable(&mut st);
    }
}

impl AsFd for CompatFaultQueue {
    /// Readable exactly while a group waits to be read, as the kernel's fault fd polls
    /// (`iommufd_fault_fops_poll()`): an epoll, mio or tokio loop sleeps on it and calls
    /// [`FaultConsumer::read_faults`] when it is. Level-triggered; nothing needs arming.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.shared.poll_fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group the core answers itself leaves the deliver list wherever it is on it, not only
    /// at the front: no read hands it out after.
    #[test]
    fn a_withdrawn_group_leaves_the_deliver_list_wherever_it_is() {
        let mut list = DeliverList::default();
        let cookies = [0x10_0001, 0x10_0002, 0x10_0003].map(Cookie::from_raw);
        for c in cookies {
            list.deliver.push_back((c, Vec::new()));
        }
        list.withdraw(cookies[1]);
        list.withdraw(Cookie::from_raw(0x20_0001)); // not on the list: nothing changes
        let left: Vec<Cookie> = list.deliver.iter().map(|(c, _)| *c).collect();
        assert_eq!(left, [cookies[0], cookies[2]]);
    }
}
