//! Test doubles for users of the core (feature `test-utils`): a sink that records every response
//! a device receives, and a handler that behaves like a bounded fault queue
//! ([`BoundedHandler`]). VMM and backend
//! authors can drive their own code against a real [`crate::FaultCore`] with them.

use std::collections::VecDeque;

use iopf_abi::{PageRequest, Unrecoverable};

use crate::{Cookie, DeviceId, DeviceResponse, Group, GroupHandler, Nanos, Refusal, ResponseSink};

/// A [`ResponseSink`] that records every response, in order.
#[derive(Debug, Default, Clone)]
pub struct RecordingSink {
    /// Every response sent so far, with its device.
    pub sent: Vec<(DeviceId, DeviceResponse)>,
}

impl RecordingSink {
    /// Takes the responses recorded so far.
    pub fn take(&mut self) -> Vec<(DeviceId, DeviceResponse)> {
        std::mem::take(&mut self.sent)
    }
}

impl ResponseSink for RecordingSink {
    fn page_response(&mut self, device: DeviceId, response: &DeviceResponse) {
        self.sent.push((device, *response));
    }
}

/// A group as [`BoundedHandler`] keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldGroup {
    /// The device.
    pub device: DeviceId,
    /// The group's cookie.
    pub cookie: Cookie,
    /// Its requests, copied.
    pub requests: Vec<PageRequest>,
    /// When its first request was reported.
    pub first_at: Nanos,
    /// When it completed.
    pub completed_at: Nanos,
}

/// A [`GroupHandler`] that queues up to `capacity` groups and refuses more
/// ([`Refusal::QueueFull`]), or everything once `shutting_down` is set. [`GroupHandler::withdraw`]
/// removes the group from the queue.
#[derive(Debug, Clone)]
pub struct BoundedHandler {
    /// Most groups held at once.
    pub capacity: usize,
    /// Refuse everything with [`Refusal::ShuttingDown`].
    pub shutting_down: bool,
    /// Groups delivered and not yet popped or withdrawn, oldest first.
    pub queue: VecDeque<HeldGroup>,
    /// Cookies withdrawn by the core.
    pub withdrawn: Vec<Cookie>,
    /// Unrecoverable faults received.
    pub unrecoverable: Vec<(DeviceId, Unrecoverable)>,
}

impl BoundedHandler {
    /// A handler holding up to `capacity` groups.
    pub fn new(capacity: usize) -> BoundedHandler {
        BoundedHandler {
            capacity,
            shutting_down: false,
            queue: VecDeque::new(),
            withdrawn: Vec::new(),
            unrecoverable: Vec::new(),
        }
    }

    /// Takes the oldest queued group.
    pub fn pop(&mut self) -> Option<HeldGroup> {
        self.queue.pop_front()
    }
}

impl GroupHandler for BoundedHandler {
    fn deliver(&mut self, group: &Group<'_>) -> Result<(), Refusal> {
        if self.shutting_down {
            return Err(Refusal::ShuttingDown);
        }
        if self.queue.len() >= self.capacity {
            return Err(Refusal::QueueFull);
        }
        self.queue.push_back(HeldGroup {
            device: group.device,
            cookie: group.cookie,
            requests: group.requests.to_vec(),
            first_at: group.first_at,
            completed_at: group.completed_at,
        });
        Ok(())
    }

    fn withdraw(&mut self, cookie: Cookie) {
        self.withdrawn.push(cookie);
        self.queue.retain(|g| g.cookie != cookie);
    }

    fn unrecoverable(&mut self, device: DeviceId, fault: &Unrecoverable) {
        self.unrecoverable.push((device, *fault));
    }
}

/// The case count a property test runs: `PROPTEST_CASES` when set (proptest's own variable,
/// which an explicit `cases` in a test's config would otherwise override; `scripts/soak.sh`
/// raises it), else `default`. One rule for every model-based property test of the workspace.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
