//! [`FaultCore`]: the registry of devices and handlers, and the report path
//! (`iommu_report_device_fault()`).

use iopf_abi::{Features, PageRequest, ResponseCode};
use rustc_hash::FxHashMap;

use crate::counters::{AutoReason, CoreCounters, DeviceCounters};
use crate::device::{AgeLimit, PriCaps, StormLimit};
use crate::grpid::GrpidIndex;
use crate::handler::GroupHandler;
use crate::ids::next_gen;
use crate::partial::{Chain, PartialPool};
use crate::report::StormState;
use crate::response::{Answered, DeviceResponse, ResponseSink};
use crate::table::{GroupTable, List, NIL};
use crate::{Cookie, CoreError, DeviceId, HandlerId, Nanos};

/// Largest generation of device and handler ids (16 bits; 0 unused).
const ID_MAX_GEN: u16 = u16::MAX;
/// Device and handler slots per core (16-bit index).
const ID_MAX_SLOTS: usize = 1 << 16;

/// An outstanding group, as [`FaultCore::group`] describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupInfo {
    /// The device.
    pub device: DeviceId,
    /// The handler it was delivered to.
    pub handler: HandlerId,
    /// Its LAST_PAGE request's PASID.
    pub pasid: Option<u32>,
    /// Its PRG index.
    pub grpid: u32,
    /// Its page requests.
    pub requests: u32,
    /// When its first request was reported.
    pub first_at: Nanos,
    /// When it completed and was delivered.
    pub completed_at: Nanos,
    /// Whether it has outlived the device's age limit.
    pub aged: bool,
}

/// The fault state of one registered device (`struct iommu_fault_param`).
#[derive(Debug)]
pub(crate) struct DeviceState {
    pub caps: PriCaps,
    pub counters: DeviceCounters,
    pub age: Option<AgeLimit>,
    pub storm: Option<StormState>,
    /// Device-wide handler slot, or NIL.
    pub handler: u32,
    /// PASID → handler slot.
    pub pasid_handlers: FxHashMap<u32, u32>,
    /// PRG index → held partial requests.
    pub partials: FxHashMap<u32, Chain>,
    pub held_partials: u32,
    /// Page requests in flight: held partials plus the requests of outstanding groups.
    pub in_flight: u32,
    pub outstanding: u32,
    /// PRG index → oldest outstanding group with it (chained through `next_same_grpid`).
    pub by_grpid: GrpidIndex,
}

impl DeviceState {
    fn new(caps: PriCaps) -> DeviceState {
        DeviceState {
            caps,
            counters: DeviceCounters::default(),
            age: None,
            storm: None,
            handler: NIL,
            pasid_handlers: FxHashMap::default(),
            partials: FxHashMap::default(),
            held_partials: 0,
            in_flight: 0,
            outstanding: 0,
            by_grpid: GrpidIndex::default(),
        }
    }

    /// The handler slot a request with `pasid` goes to: the PASID's own handler, else the
    /// device-wide one (`find_fault_handler()`; Linux falls back to the RID's handler for
    /// PASIDs only with a user-managed PASID table, iopf always does, so a VMM can take all
    /// PASIDs of a device with one handler).
    pub fn route(&self, pasid: Option<u32>) -> u32 {
        if let Some(p) = pasid {
            if !self.pasid_handlers.is_empty() {
                if let Some(&h) = self.pasid_handlers.get(&p) {
                    return h;
                }
            }
        }
        self.handler
    }
}

#[derive(Debug)]
pub(crate) struct DeviceSlot {
    pub gen: u16,
    state: Option<DeviceState>,
}

/// An attached handler and its outstanding groups.
#[derive(Debug)]
pub(crate) struct HandlerState<H> {
    pub handler: H,
    pub device: DeviceId,
    pub pasid: Option<u32>,
    pub agreed: Features,
    /// Its outstanding groups, in delivery order.
    pub list: List,
    /// The oldest of its groups not yet counted as aged, or NIL.
    pub age_cursor: u32,
}

#[derive(Debug)]
pub(crate) struct HandlerSlot<H> {
    pub gen: u16,
    pub state: Option<HandlerState<H>>,
}

/// The fault core: every registered device's partial requests and outstanding groups, and the
/// handlers they go to. See the crate documentation for the data flow.
///
/// `S` receives every response to a device; `H` is the handler type (by default a boxed trait
/// object, so different handlers can share one core). The core is single-threaded (`&mut self`
/// everywhere); wrap it in a `Mutex` to share it, as Linux takes `iommu_fault_param.lock`.
///
/// Cost: [`report`](Self::report) and [`respond`](Self::respond) are O(1) (O(group size) for the
/// LAST_PAGE request that completes a group) and allocate nothing once the tables have grown to
/// the working set: freed group and partial slots are reused.
pub struct FaultCore<S, H = Box<dyn GroupHandler + Send>> {
    pub(crate) devices: Vec<DeviceSlot>,
    device_free: Vec<u32>,
    pub(crate) handlers: Vec<HandlerSlot<H>>,
    handler_free: Vec<u32>,
    pub(crate) groups: GroupTable,
    pub(crate) partials: PartialPool,
    pub(crate) scratch: Vec<PageRequest>,
    pub(crate) scratch_handlers: Vec<u32>,
    pub(crate) sink: S,
    pub(crate) counters: CoreCounters,
}

impl<S: core::fmt::Debug, H> core::fmt::Debug for FaultCore<S, H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FaultCore")
            .field("devices", &(self.devices.len() - self.device_free.len()))
            .field("handlers", &(self.handlers.len() - self.handler_free.len()))
            .field("sink", &self.sink)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// The response the device gets for a group whose LAST_PAGE request is `last`, with the
/// PCIe and Linux mappings applied, sent through `sink` and counted.
pub(crate) fn send<S: ResponseSink>(
    sink: &mut S,
    device: DeviceId,
    dev: &mut DeviceState,
    pasid: Option<u32>,
    grpid: u32,
    private_data: Option<[u64; 2]>,
    code: ResponseCode,
) -> DeviceResponse {
    let code = if code == ResponseCode::Failure && !dev.caps.failure_allowed {
        dev.counters.failure_as_invalid += 1;
        ResponseCode::Invalid
    } else {
        code
    };
    let resp = DeviceResponse {
        pasid: if dev.caps.pasid_required { pasid } else { None },
        grpid,
        code,
        private_data,
    };
    dev.counters.responses[code as usize] += 1;
    sink.page_response(device, &resp);
    resp
}

impl<S: ResponseSink, H: GroupHandler> FaultCore<S, H> {
    /// An empty core sending responses to `sink`.
    pub fn new(sink: S) -> FaultCore<S, H> {
        FaultCore {
            devices: Vec::new(),
            device_free: Vec::new(),
            handlers: Vec::new(),
            handler_free: Vec::new(),
            groups: GroupTable::new(),
            partials: PartialPool::new(),
            scratch: Vec::new(),
            scratch_handlers: Vec::new(),
            sink,
            counters: CoreCounters::default(),
        }
    }

    /// Registers a device with its PRI properties and returns its id
    /// (`iopf_queue_add_device()`). Errors: `outstanding_allocation` of 0
    /// ([`CoreError::BadConfig`]); 65,536 devices at once ([`CoreError::TableFull`]).
    pub fn register(&mut self, caps: PriCaps) -> Result<DeviceId, CoreError> {
        if caps.outstanding_allocation == 0 {
            return Err(CoreError::BadConfig(
                "the outstanding page request allocation must be at least 1",
            ));
        }
        let idx = match self.device_free.pop() {
            Some(i) => i,
            None => {
                if self.devices.len() >= ID_MAX_SLOTS {
                    return Err(CoreError::TableFull("device"));
                }
                self.devices.push(DeviceSlot {
                    gen: 0,
                    state: None,
                });
                (self.devices.len() - 1) as u32
            }
        };
        let slot = &mut self.devices[idx as usize];
        slot.gen = next_gen(slot.gen, ID_MAX_GEN);
        slot.state = Some(DeviceState::new(caps));
        Ok(DeviceId::new(idx, slot.gen))
    }

    pub(crate) fn device(&self, id: DeviceId) -> Result<&DeviceState, CoreError> {
        match self.devices.get(id.index()) {
            Some(DeviceSlot {
                gen,
                state: Some(s),
            }) if *gen == id.gen() => Ok(s),
            _ => Err(CoreError::UnknownDevice(id)),
        }
    }

    pub(crate) fn device_mut(&mut self, id: DeviceId) -> Result<&mut DeviceState, CoreError> {
        device_mut(&mut self.devices, id)
    }

    /// Forgets a device slot (its state must already be drained).
    pub(crate) fn free_device(&mut self, id: DeviceId) -> Option<DeviceState> {
        let slot = self.devices.get_mut(id.index())?;
        let state = slot.state.take();
        if state.is_some() {
            self.device_free.push(id.index() as u32);
        }
        state
    }

    /// Ids of every registered device, in slot order.
    pub fn devices(&self) -> impl Iterator<Item = DeviceId> + '_ {
        self.devices
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.state.as_ref().map(|_| DeviceId::new(i as u32, s.gen)))
    }

    /// The device's PRI properties.
    pub fn caps(&self, device: DeviceId) -> Result<PriCaps, CoreError> {
        Ok(self.device(device)?.caps)
    }

    /// The device's counters.
    pub fn counters(&self, device: DeviceId) -> Result<&DeviceCounters, CoreError> {
        Ok(&self.device(device)?.counters)
    }

    /// Counters that belong to no device.
    pub fn core_counters(&self) -> &CoreCounters {
        &self.counters
    }

    /// Number of the device's outstanding (delivered, unanswered) groups.
    pub fn outstanding(&self, device: DeviceId) -> Result<u32, CoreError> {
        Ok(self.device(device)?.outstanding)
    }

    /// Number of partial requests the device has held.
    pub fn held_partials(&self, device: DeviceId) -> Result<u32, CoreError> {
        Ok(self.device(device)?.held_partials)
    }

    /// The response sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The response sink, mutably (e.g. to drain a recorder).
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// Sets or clears the device's age limit (default: none, as in PCIe and Linux).
    /// Errors: unknown device; a zero limit ([`CoreError::BadConfig`]).
    pub fn set_age_limit(
        &mut self,
        device: DeviceId,
        limit: Option<AgeLimit>,
    ) -> Result<(), CoreError> {
        if matches!(limit, Some(AgeLimit { limit: 0, .. })) {
            return Err(CoreError::BadConfig("the age limit must be above zero"));
        }
        self.device_mut(device)?.age = limit;
        Ok(())
    }

    /// Sets or clears the device's storm limit (default: none). Errors: unknown device; a zero
    /// `max_requests` or `interval` ([`CoreError::BadConfig`]).
    pub fn set_storm_limit(
        &mut self,
        device: DeviceId,
        limit: Option<StormLimit>,
    ) -> Result<(), CoreError> {
        if let Some(l) = limit {
            if l.max_requests == 0 || l.interval == 0 {
                return Err(CoreError::BadConfig(
                    "a storm limit needs at least one request per non-empty interval",
                ));
            }
        }
        self.device_mut(device)?.storm = limit.map(StormState::new);
        Ok(())
    }

    /// Attaches `handler` to the device (`pasid: None`: every request without a PASID, and every
    /// PASID without a handler of its own) or to one PASID of it, with the features its consumer
    /// agreed on (which response forms [`respond`](Self::respond) accepts through it). Mirrors
    /// attaching a fault-capable domain (`iommufd_fault_domain_attach_dev()`). Errors: unknown
    /// device; the place is taken ([`CoreError::HandlerBusy`], EBUSY); no room.
    pub fn attach(
        &mut self,
        device: DeviceId,
        pasid: Option<u32>,
        handler: H,
        agreed: Features,
    ) -> Result<HandlerId, CoreError> {
        let dev = self.device(device)?;
        let taken = match pasid {
            None => dev.handler != NIL,
            Some(p) => dev.pasid_handlers.contains_key(&p),
        };
        if taken {
            return Err(CoreError::HandlerBusy { device, pasid });
        }
        let id = self.alloc_handler(HandlerState {
            handler,
            device,
            pasid,
            agreed,
            list: List::EMPTY,
            age_cursor: NIL,
        })?;
        let dev = self.device_mut(device)?;
        match pasid {
            None => dev.handler = id.index() as u32,
            Some(p) => {
                dev.pasid_handlers.insert(p, id.index() as u32);
            }
        }
        Ok(id)
    }

    fn alloc_handler(&mut self, state: HandlerState<H>) -> Result<HandlerId, CoreError> {
        let idx = match self.handler_free.pop() {
            Some(i) => i,
            None => {
                if self.handlers.len() >= ID_MAX_SLOTS {
                    return Err(CoreError::TableFull("handler"));
                }
                self.handlers.push(HandlerSlot {
                    gen: 0,
                    state: None,
                });
                (self.handlers.len() - 1) as u32
            }
        };
        let slot = &mut self.handlers[idx as usize];
        slot.gen = next_gen(slot.gen, ID_MAX_GEN);
        slot.state = Some(state);
        Ok(HandlerId::new(idx, slot.gen))
    }

    pub(crate) fn handler_state(&self, id: HandlerId) -> Option<&HandlerState<H>> {
        match self.handlers.get(id.index()) {
            Some(HandlerSlot {
                gen,
                state: Some(s),
            }) if *gen == id.gen() => Some(s),
            _ => None,
        }
    }

    /// Takes a handler out of its slot and frees the slot.
    pub(crate) fn take_handler(&mut self, idx: u32) -> Option<HandlerState<H>> {
        let state = self.handlers.get_mut(idx as usize)?.state.take();
        if state.is_some() {
            self.handler_free.push(idx);
        }
        state
    }

    pub(crate) fn handler_id(&self, idx: u32) -> HandlerId {
        HandlerId::new(idx, self.handlers[idx as usize].gen)
    }

    /// The attached handler, if `id` is attached.
    pub fn handler(&self, id: HandlerId) -> Option<&H> {
        self.handler_state(id).map(|s| &s.handler)
    }

    /// The attached handler, mutably, if `id` is attached.
    pub fn handler_mut(&mut self, id: HandlerId) -> Option<&mut H> {
        match self.handlers.get_mut(id.index()) {
            Some(HandlerSlot {
                gen,
                state: Some(s),
            }) if *gen == id.gen() => Some(&mut s.handler),
            _ => None,
        }
    }

    /// The handler attached at exactly this place (`pasid: None`: the device-wide one).
    pub fn handler_at(
        &self,
        device: DeviceId,
        pasid: Option<u32>,
    ) -> Result<Option<HandlerId>, CoreError> {
        let dev = self.device(device)?;
        let idx = match pasid {
            None => dev.handler,
            Some(p) => dev.pasid_handlers.get(&p).copied().unwrap_or(NIL),
        };
        Ok((idx != NIL).then(|| self.handler_id(idx)))
    }

    /// The features agreed for `handler`'s consumer.
    pub fn agreed(&self, handler: HandlerId) -> Result<Features, CoreError> {
        self.handler_state(handler)
            .map(|s| s.agreed)
            .ok_or(CoreError::UnknownHandler(handler))
    }

    /// Changes the features agreed for `handler`'s consumer (after a renegotiation). Affects only
    /// responses checked from now on.
    pub fn set_agreed(&mut self, handler: HandlerId, agreed: Features) -> Result<(), CoreError> {
        match self.handlers.get_mut(handler.index()) {
            Some(HandlerSlot {
                gen,
                state: Some(s),
            }) if *gen == handler.gen() => {
                s.agreed = agreed;
                Ok(())
            }
            _ => Err(CoreError::UnknownHandler(handler)),
        }
    }

    /// Describes an outstanding group.
    pub fn group(&self, cookie: Cookie) -> Option<GroupInfo> {
        match self.groups.lookup(cookie) {
            crate::table::Lookup::Live(idx) => {
                let s = self.groups.get(idx);
                Some(GroupInfo {
                    device: s.device,
                    handler: self.handler_id(s.handler),
                    pasid: s.pasid(),
                    grpid: s.grpid,
                    requests: s.requests,
                    first_at: s.first_at,
                    completed_at: s.completed_at,
                    aged: s.flags & crate::table::AGED != 0,
                })
            }
            _ => None,
        }
    }

    /// Answers the outstanding group in slot `idx` (already unlinked from its handler's list, or
    /// its handler gone) with `code`, counted under `reason` (`None`: the consumer's response),
    /// and frees it (`iopf_group_response()` + `iopf_free_group()`).
    pub(crate) fn retire(
        &mut self,
        idx: u32,
        code: ResponseCode,
        reason: Option<AutoReason>,
    ) -> Answered {
        let slot = *self.groups.get(idx);
        let cookie = self.groups.cookie(idx);
        let dev = match device_mut(&mut self.devices, slot.device) {
            Ok(d) => d,
            Err(_) => unreachable!("an outstanding group's device is registered"),
        };
        remove_grpid(&mut self.groups, dev, slot.grpid, idx);
        dev.in_flight -= slot.requests;
        dev.outstanding -= 1;
        let sent = send(
            &mut self.sink,
            slot.device,
            dev,
            slot.pasid(),
            slot.grpid,
            slot.private_data(),
            code,
        );
        match reason {
            Some(r) => dev.counters.auto[r as usize] += 1,
            None => dev.counters.consumer_responses += 1,
        }
        self.groups.free(idx);
        Answered {
            device: slot.device,
            cookie,
            sent,
            requests: slot.requests,
            first_at: slot.first_at,
            completed_at: slot.completed_at,
        }
    }

    /// Unlinks slot `idx` from its (attached) handler's list, keeping the age cursor valid.
    pub(crate) fn unlink_from_handler(&mut self, idx: u32) {
        let h = self.groups.get(idx).handler;
        if let Some(hs) = self.handlers[h as usize].state.as_mut() {
            let next = self.groups.unlink(&mut hs.list, idx);
            if hs.age_cursor == idx {
                hs.age_cursor = next;
            }
        }
    }
}

pub(crate) fn device_mut(
    devices: &mut [DeviceSlot],
    id: DeviceId,
) -> Result<&mut DeviceState, CoreError> {
    match devices.get_mut(id.index()) {
        Some(DeviceSlot {
            gen,
            state: Some(s),
        }) if *gen == id.gen() => Ok(s),
        _ => Err(CoreError::UnknownDevice(id)),
    }
}

/// Removes slot `idx` from the device's chain of groups with PRG index `grpid`.
fn remove_grpid(groups: &mut GroupTable, dev: &mut DeviceState, grpid: u32, idx: u32) {
    let head = dev.by_grpid.get(grpid);
    let after = groups.get(idx).next_same_grpid;
    if head == idx {
        dev.by_grpid.set(grpid, after);
        return;
    }
    let mut cur = head;
    while cur != NIL {
        let next = groups.get(cur).next_same_grpid;
        if next == idx {
            groups.get_mut(cur).next_same_grpid = after;
            return;
        }
        cur = next;
    }
}
