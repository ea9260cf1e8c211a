//! A guest queue in a `Vec`, for tests of the bridge without an architecture.

use crate::bridge::{GuestPageRequest, GuestQueue, Posted, PrivateDataMode};

/// A [`GuestQueue`] that keeps what is posted in a `Vec`, with a fixed capacity and no
/// overflow rule of its own beyond "full: dropped, last answered Success".
#[derive(Debug, Clone, Default)]
pub struct VecGuestQueue {
    /// What was posted, oldest first. Remove entries to make room.
    pub posted: Vec<GuestPageRequest>,
    /// How many it holds.
    pub capacity: usize,
    /// Whether it is on.
    pub enabled: bool,
    /// Its private-data mode.
    pub mode: PrivateDataMode,
    /// Times [`GuestQueue::notify`] was called.
    pub notified: u64,
}

impl VecGuestQueue {
    /// An enabled queue of `capacity` requests.
    pub fn new(capacity: usize) -> VecGuestQueue {
        VecGuestQueue {
            capacity,
            enabled: true,
            ..VecGuestQueue::default()
        }
    }
}

impl GuestQueue for VecGuestQueue {
    /// One queue for every function.
    fn enabled(&self, _rid: u16) -> bool {
        self.enabled
    }

    fn room(&self, _rid: u16) -> usize {
        self.capacity.saturating_sub(self.posted.len())
    }

    fn capacity(&self, _rid: u16) -> usize {
        self.capacity
    }

    fn private_data_mode(&self) -> PrivateDataMode {
        self.mode
    }

    fn post(&mut self, req: &GuestPageRequest) -> Posted {
        if self.posted.len() >= self.capacity {
            return if req.last {
                Posted::AnsweredByHardware(iopf_abi::ResponseCode::Success)
            } else {
                Posted::Dropped
            };
        }
        self.posted.push(*req);
        Posted::Queued
    }

    fn notify(&mut self) {
        self.notified += 1;
    }
}
