//! [`VirtioIommuPri`]: the page request side of an emulated virtio-iommu (experimental). The VMM
//! owns the virtqueues; this holds the event buffers it hands over, writes fault records into
//! them, gives them back used, and reads the driver's `PAGE_RESP` requests.

use std::collections::VecDeque;

use crate::guest_ram::GuestRam;
use iopf_abi::{FaultConsumer, ResponseCode};
use vm_memory::GuestAddress;

use super::records::{
    PageRespRequest, VirtioIommuFault, FAULT_RECORD_BYTES, VIRTIO_IOMMU_S_NOENT, VIRTIO_IOMMU_S_OK,
};
use crate::bridge::{
    Bridge, GroupNaming, GuestPageRequest, GuestQueue, Posted, PrivateDataMode, Unmatched,
};

/// What the emulated device is: its event virtqueue's size and how each endpoint's groups are
/// named.
///
/// New fields may be added: build one from [`VirtioIommuConfig::new`] and set the fields to change.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioIommuConfig {
    /// The event virtqueue's size (`queue_size` as the driver set it): the most event buffers
    /// the device can hold, and so the largest group it can ever deliver whole.
    pub event_queue_size: u16,
    /// How groups are named for an endpoint not in [`naming_overrides`](Self::naming_overrides):
    /// [`GroupNaming::PRI`] by default.
    pub naming: GroupNaming,
    /// Per-endpoint naming: an endpoint whose PCIe PRI capability has "PRG Response PASID
    /// Required" clear needs [`GroupNaming::PRI_NO_PASID_IN_RESPONSE`], because the RFC driver
    /// (as revised in review) sets `F_PASID_VALID` only when that bit is set.
    pub naming_overrides: Vec<(u16, GroupNaming)>,
}

impl VirtioIommuConfig {
    /// An event queue of `event_queue_size` buffers, every endpoint named [`GroupNaming::PRI`].
    pub fn new(event_queue_size: u16) -> VirtioIommuConfig {
        VirtioIommuConfig {
            event_queue_size,
            naming: GroupNaming::PRI,
            naming_overrides: Vec::new(),
        }
    }

    /// This configuration with endpoint `rid`'s groups named `naming`.
    pub fn with_naming(mut self, rid: u16, naming: GroupNaming) -> VirtioIommuConfig {
        self.naming_overrides.retain(|(r, _)| *r != rid);
        self.naming_overrides.push((rid, naming));
        self
    }

    fn naming_of(&self, rid: u16) -> GroupNaming {
        self.naming_overrides
            .iter()
            .find(|(r, _)| *r == rid)
            .map_or(self.naming, |(_, n)| *n)
    }
}

/// Why an event buffer was not taken.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EventBufferError {
    /// The device already holds `event_queue_size` buffers: the VMM handed over one its
    /// virtqueue cannot have. The buffer stays the VMM's (give it back used, length 0).
    #[error("the event queue holds {0} buffers already, its size")]
    QueueFull(u16),
}

/// What the device has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtioPriStats {
    /// Fault records written into event buffers.
    pub records_written: u64,
    /// Event buffers given back unwritten because they were smaller than a record.
    pub buffers_too_small: u64,
    /// Event buffers given back unwritten because their memory could not be written.
    pub buffers_unreachable: u64,
    /// Requests that found no event buffer (a group larger than the queue).
    pub no_buffer: u64,
    /// Requests of a group after one of its requests failed, not written.
    pub rest_of_failed_group: u64,
    /// `PAGE_RESP` requests by the status answered (index: `VIRTIO_IOMMU_S_*`).
    pub requests: [u64; 9],
}

/// How the current group failed, so that its remaining requests fail the same way without
/// using buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupFailure {
    /// A buffer was too small or out of guest memory.
    Unreachable,
    /// No buffer was left.
    NoBuffer,
}

/// The page request side of one emulated virtio-iommu: the event buffers the VMM has handed
/// over (popped from the event virtqueue's available ring), in order, and the used ones to give
/// back.
///
/// * **Room** is the number of buffers held: no buffer, no room, and the bridge keeps the
///   group (backpressure; nothing is dropped). Each request takes one buffer.
/// * **Order.** Buffers are used in the order they were added, so a VMM can keep a FIFO of its
///   descriptor heads beside this one and pair them with [`take_used`](Self::take_used).
/// * **A buffer that cannot hold a record** (shorter than [`FAULT_RECORD_BYTES`], e.g. a Linux
///   6.12 driver's 24-byte buffer, or outside guest memory) is given back used with length 0
///   (the virtio rule: the driver must not assume anything past the used length) and the
///   request is [`Posted::Unreachable`]: the bridge answers its group INVALID
///   ([`crate::HostAnswer::GuestMemory`]). The group's remaining requests are not written
///   (they use no buffer), so the guest never sees them; requests of the group already
///   written stay with the guest, and its answer, lacking the last request, never comes or
///   matches nothing.
/// * **A group larger than the queue** is posted when every buffer is back; the requests
///   that find none are dropped and the last is answered Success by the device, as SMMUv3
///   hardware answers a PRI queue overflow ([`Posted::AnsweredByHardware`]).
#[derive(Debug, Clone)]
pub struct VirtioIommuPri {
    cfg: VirtioIommuConfig,
    driver_ok: bool,
    available: VecDeque<(GuestAddress, u32)>,
    used: Vec<(GuestAddress, u32)>,
    failing: Option<GroupFailure>,
    stats: VirtioPriStats,
}

impl VirtioIommuPri {
    /// A device in its reset state: no buffers, the driver not ready.
    pub fn new(cfg: VirtioIommuConfig) -> VirtioIommuPri {
        VirtioIommuPri {
            cfg,
            driver_ok: false,
            available: VecDeque::new(),
            used: Vec::new(),
            failing: None,
            stats: VirtioPriStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &VirtioIommuConfig {
        &self.cfg
    }

    /// The counters.
    pub fn stats(&self) -> VirtioPriStats {
        self.stats
    }

    /// The driver set (`true`) or the device lost (`false`) `DRIVER_OK` in the device status.
    /// Without it the event queue is off: the bridge answers new groups INVALID
    /// ([`crate::HostAnswer::QueueOff`]); groups already posted stay the guest's to answer.
    pub fn set_driver_ok(&mut self, ok: bool) {
        self.driver_ok = ok;
    }

    /// Whether the driver is ready (`DRIVER_OK`).
    pub fn driver_ok(&self) -> bool {
        self.driver_ok
    }

    /// Takes one device-writable event buffer of `len` bytes at `addr` (a Linux driver's
    /// buffers are one descriptor each; a VMM whose guest chains descriptors passes the first).
    /// The caller pumps the bridge afterwards: room has appeared. Errors: the device holds
    /// `event_queue_size` buffers already.
    pub fn add_event_buffer(
        &mut self,
        addr: GuestAddress,
        len: u32,
    ) -> Result<(), EventBufferError> {
        if self.available.len() >= usize::from(self.cfg.event_queue_size) {
            return Err(EventBufferError::QueueFull(self.cfg.event_queue_size));
        }
        self.available.push_back((addr, len));
        Ok(())
    }

    /// Event buffers held (the room for requests).
    pub fn available(&self) -> usize {
        self.available.len()
    }

    /// The buffers used since the last call, oldest first, each with the bytes written
    /// ([`FAULT_RECORD_BYTES`], or 0 for one that could not hold a record): the VMM puts them in
    /// the event virtqueue's used ring and notifies the driver.
    pub fn take_used(&mut self) -> Vec<(GuestAddress, u32)> {
        std::mem::take(&mut self.used)
    }

    /// Back to the reset state: buffers forgotten (a virtqueue reset discards them, used or
    /// not), the driver not ready; the counters are kept. The bridge's groups are the caller's: [`Bridge::reset`]
    /// answers them ([`super::VirtioIommuBridge::reset`] does both).
    pub fn reset(&mut self) {
        let stats = self.stats;
        *self = VirtioIommuPri::new(self.cfg.clone());
        self.stats = stats;
    }

    /// The event queue as the bridge posts into it, writing through `mem`.
    pub fn guest_queue<'a, M: GuestRam>(&'a mut self, mem: &'a M) -> VirtioEventQueue<'a, M> {
        VirtioEventQueue { pri: self, mem }
    }

    /// Handles one `PAGE_RESP` request: `bytes` is its device-readable part (head and body,
    /// [`super::PAGE_RESP_DRIVER_BYTES`]; more is not read). Decodes it strictly
    /// ([`PageRespRequest::decode`]) and hands the response to `bridge`. Returns the status for
    /// the request's tail ([`super::tail`]):
    ///
    /// * `S_UNSUPP`: not a `PAGE_RESP` (the VMM routes only type 8 here);
    /// * `S_INVAL`: too short, a reserved byte or unknown flag set, a code other than 0, 1, 2,
    ///   a group id above 16 bits, a PASID above 20 bits; nothing is answered;
    /// * `S_NOENT`: the endpoint is not a passed-through function's;
    /// * `S_OK` otherwise, whether or not it matched an outstanding group: a response that
    ///   matches none (a second answer, the wrong PASID, an unknown group) answers nothing and
    ///   is counted in the bridge's stats, as a PCIe device discards a response it did not ask
    ///   for (and as the VT-d model gives the guest no error for it).
    pub fn handle_request<C: FaultConsumer>(&mut self, bytes: &[u8], bridge: &mut Bridge<C>) -> u8 {
        let status = match PageRespRequest::from_bytes(bytes).and_then(|r| r.decode()) {
            Err(e) => e.status(),
            Ok(response) => match bridge.guest_response(&response) {
                Err(Unmatched::UnknownRequester(_)) => VIRTIO_IOMMU_S_NOENT,
                Ok(()) | Err(Unmatched::Rejected(_)) => VIRTIO_IOMMU_S_OK,
            },
        };
        if let Some(n) = self.stats.requests.get_mut(usize::from(status)) {
            *n += 1;
        }
        status
    }

    /// Writes `req` into the next buffer, or fails by the rules on [`VirtioIommuPri`].
    fn post<M: GuestRam>(&mut self, mem: &M, req: &GuestPageRequest) -> Posted {
        if let Some(failure) = self.failing {
            self.stats.rest_of_failed_group += 1;
            if req.last {
                self.failing = None;
            }
            return Self::failed(failure, req.last);
        }
        let outcome = self.write_next(mem, req);
        let failure = match outcome {
            Posted::Queued => None,
            Posted::Unreachable => Some(GroupFailure::Unreachable),
            _ => Some(GroupFailure::NoBuffer),
        };
        if !req.last {
            self.failing = failure;
        }
        outcome
    }

    fn write_next<M: GuestRam>(&mut self, mem: &M, req: &GuestPageRequest) -> Posted {
        let Some((addr, len)) = self.available.pop_front() else {
            self.stats.no_buffer += 1;
            return Self::failed(GroupFailure::NoBuffer, req.last);
        };
        if (len as usize) < FAULT_RECORD_BYTES {
            self.stats.buffers_too_small += 1;
            self.used.push((addr, 0));
            return Posted::Unreachable;
        }
        let record = VirtioIommuFault::page_request(req).to_bytes();
        if mem.write_guest(&record, addr).is_err() {
            self.stats.buffers_unreachable += 1;
            self.used.push((addr, 0));
            return Posted::Unreachable;
        }
        self.stats.records_written += 1;
        self.used.push((addr, FAULT_RECORD_BYTES as u32));
        Posted::Queued
    }

    fn failed(failure: GroupFailure, last: bool) -> Posted {
        match failure {
            GroupFailure::Unreachable => Posted::Unreachable,
            GroupFailure::NoBuffer if last => Posted::AnsweredByHardware(ResponseCode::Success),
            GroupFailure::NoBuffer => Posted::Dropped,
        }
    }
}

/// The event queue of a [`VirtioIommuPri`] with the memory it writes through: what
/// [`Bridge::pump`] posts into.
pub struct VirtioEventQueue<'a, M: GuestRam> {
    pri: &'a mut VirtioIommuPri,
    mem: &'a M,
}

impl<M: GuestRam> GuestQueue for VirtioEventQueue<'_, M> {
    /// One event queue for every endpoint, on while the driver is ready.
    fn enabled(&self, _rid: u16) -> bool {
        self.pri.driver_ok
    }

    fn room(&self, _rid: u16) -> usize {
        self.pri.available.len()
    }

    fn capacity(&self, _rid: u16) -> usize {
        usize::from(self.pri.cfg.event_queue_size)
    }

    fn naming(&self, rid: u16) -> GroupNaming {
        self.pri.cfg.naming_of(rid)
    }

    /// Never carried: `PAGE_RESP` has no field to echo private data in.
    fn private_data_mode(&self) -> PrivateDataMode {
        PrivateDataMode::None
    }

    fn post(&mut self, req: &GuestPageRequest) -> Posted {
        self.pri.post(self.mem, req)
    }

    /// The VMM notifies the driver when it puts [`VirtioIommuPri::take_used`]'s buffers in the
    /// used ring: nothing to do here.
    fn notify(&mut self) {}
}
