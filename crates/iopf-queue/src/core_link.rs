//! The glue between the fault core (`iopf-core`) and a fault queue: the queue's [`Producer`] as
//! the core's [`GroupHandler`], and the pump that carries validated responses back into
//! [`FaultCore::respond`].
//!
//! ```text
//!  FaultCore::report ──deliver(Group)──▶ QueueHandler ──push_group──▶ fault ring ──▶ consumer
//!        ▲   (Lost: Refusal → core answers at once)                                    │
//!        └── FaultCore::respond(handler, cookie) ◀── CoreLink::pump ◀── drain_responses ◀┘
//!            consumer gone: CoreLink::pump detaches the handler → core answers INVALID
//!  FaultCore::report(unrecoverable) ──unrecoverable()──▶ QueueHandler ──push_unrecoverable──▶ …
//! ```
//!
//! The queue's tag for a group is the core's cookie, so an answer names the core's group
//! directly; the core judges it once more (its own exactly-once rule) and restores private data
//! from its own copy. A group the queue could not deliver (full ring, too many pending, consumer
//! gone) is refused, and the core answers it at once (`iommu_report_device_fault()`'s path for a
//! failing `iopf_handler()`), so nothing waits on a record that was never delivered. Unrecoverable
//! faults are passed on as records when the consumer agreed
//! [`Features::UNRECOVERABLE`](iopf_abi::Features::UNRECOVERABLE), and dropped otherwise.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use iopf_abi::Unrecoverable;
use iopf_core::{
    Cookie, CoreError, DeviceId, FaultCore, GroupHandler, GroupRef, HandlerId, Refusal, Response,
    ResponseSink,
};

use crate::error::LossReason;
use crate::producer::{Answer, AnsweredBy, Group, Producer};
use crate::QueueError;

/// A producer shared between the core (which owns the handler) and its [`CoreLink`].
type Shared = Arc<Mutex<Producer>>;

fn lock(p: &Shared) -> MutexGuard<'_, Producer> {
    // A panic while the lock was held cannot leave the producer half-updated in a way that
    // matters more than losing the queue; keep serving.
    p.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The fault core's handler for one queue: delivers each group into the fault ring.
#[derive(Debug)]
pub struct QueueHandler {
    producer: Shared,
}

impl GroupHandler for QueueHandler {
    /// Pushes the group's records (tag = the core's cookie, dev_id = the core's device id). A
    /// group that cannot be delivered is counted lost by the queue, announced to the consumer,
    /// and refused here so the core answers it at once.
    fn deliver(&mut self, group: &iopf_core::Group<'_>) -> Result<(), Refusal> {
        let mut p = lock(&self.producer);
        let g = Group {
            tag: u64::from(group.cookie.raw()),
            dev_id: group.device.raw(),
            requests: group.requests,
        };
        match p.push_group(&g) {
            Ok(_) => Ok(()),
            Err(QueueError::Lost(LossReason::ConsumerGone)) => Err(Refusal::ShuttingDown),
            Err(_) => Err(Refusal::QueueFull),
        }
    }

    /// The core answered the group itself: the queue forgets it, and a later response from the
    /// consumer is rejected with a verdict.
    fn withdraw(&mut self, cookie: Cookie) {
        lock(&self.producer).withdraw(u64::from(cookie.raw()));
    }

    /// Pushes the fault as an unrecoverable fault record (dev_id = the core's device id). It
    /// needs no answer, so every outcome is final here: not agreed by the consumer, it is
    /// dropped; lost (full ring, consumer gone), the queue counts and announces it.
    fn unrecoverable(&mut self, device: DeviceId, fault: &Unrecoverable) {
        let _ = lock(&self.producer).push_unrecoverable(device.raw(), fault);
    }
}

/// What one [`CoreLink::pump`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pumped {
    /// Responses the core accepted and sent to the device.
    pub answered: usize,
    /// Responses the queue accepted but the core refused (the group was answered meanwhile).
    pub refused_by_core: usize,
    /// The consumer is gone: the handler was detached, and the core answered INVALID every
    /// group it still owed.
    pub detached: bool,
}

/// One queue attached to the fault core: owns the link's half of the producer.
#[derive(Debug)]
pub struct CoreLink {
    producer: Shared,
    handler: HandlerId,
    detached: bool,
    answers: Vec<Answer>,
}

impl CoreLink {
    /// Attaches `producer` to `core` as the handler of `device` (`pasid: None`: device-wide).
    /// The consumer's agreement is enforced by the queue; towards the core the link always names
    /// groups by the core's cookie (the queue's tag), so the handler is attached with the
    /// consumer's features plus `COOKIE_RESPONSE`. Errors: the core's
    /// ([`CoreError::HandlerBusy`], unknown device, ...).
    pub fn attach<S: ResponseSink>(
        core: &mut FaultCore<S>,
        device: DeviceId,
        pasid: Option<u32>,
        producer: Producer,
    ) -> Result<CoreLink, CoreError> {
        let agreed = producer.agreement().features | iopf_abi::Features::COOKIE_RESPONSE;
        let producer = Arc::new(Mutex::new(producer));
        let handler = core.attach(
            device,
            pasid,
            Box::new(QueueHandler {
                producer: producer.clone(),
            }),
            agreed,
        )?;
        Ok(CoreLink {
            producer,
            handler,
            detached: false,
            answers: Vec::new(),
        })
    }

    /// The core's id of this queue's handler.
    pub fn handler(&self) -> HandlerId {
        self.handler
    }

    /// Runs `f` on the producer (statistics, agreement).
    pub fn with_producer<T>(&self, f: impl FnOnce(&mut Producer) -> T) -> T {
        f(&mut lock(&self.producer))
    }

    /// Waits until responses are waiting, the consumer is gone, or `timeout` passes.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool, QueueError> {
        if self.detached {
            return Ok(false);
        }
        lock(&self.producer).wait_responses(timeout)
    }

    /// Judges the responses waiting in the queue (at most the producer's `max_per_wake`) and
    /// hands the accepted ones to [`FaultCore::respond`]. When the consumer is gone it takes the
    /// responses it had already written, then detaches the handler: the core answers every
    /// group still outstanding with it INVALID (`iommufd_auto_response_faults()`). After that,
    /// pumping does nothing.
    pub fn pump<S: ResponseSink>(&mut self, core: &mut FaultCore<S>) -> Pumped {
        let mut done = Pumped::default();
        if self.detached {
            return done;
        }
        let gone = {
            let mut p = lock(&self.producer);
            p.drain_responses(&mut self.answers);
            let gone = p.consumer_gone();
            if gone {
                p.close(&mut self.answers);
            }
            gone
        };
        for a in self.answers.drain(..) {
            if a.by == AnsweredBy::ConsumerGone {
                continue; // the core's detach answers these, below
            }
            let r = Response {
                group: GroupRef::Cookie(Cookie::from_raw(a.tag as u32)),
                code: a.code.raw(),
                private_data: None,
            };
            match core.respond(self.handler, &r) {
                Ok(_) => done.answered += 1,
                Err(_) => done.refused_by_core += 1,
            }
        }
        if gone {
            // Detach answers INVALID for every group the core still holds for this handler.
            let _ = core.detach(self.handler);
            self.detached = true;
            done.detached = true;
        }
        done
    }
}
