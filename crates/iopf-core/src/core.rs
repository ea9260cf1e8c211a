//! [`FaultCore`]: the registry of devices and handlers, and where an outstanding group is
//! answered ([`FaultCore::retire`]). The report path is `report.rs`, the response path
//! `respond.rs`, teardown `teardown.rs`.

use iopf_abi::Features;

use crate::answer::send;
use crate::counters::{AutoReason, CoreCounters, DeviceCounters};
use crate::device::{
    policy_code, AgeLimit, DeviceState, OverflowPolicy, PriCaps, StormLimit, StormState,
};
use crate::group_table::{GroupTable, Named, Naming};
use crate::handler::GroupHandler;
use crate::ids::next_gen;
use crate::partial::PartialPool;
use crate::prg_index::NIL;
use crate::response::{Answered, ResponseSink};
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

/// What the core keeps with each outstanding group besides its [`crate::GroupFacts`] (whose
/// device is the device's slot index and whose owner is the handler's slot index).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CoreGroup {
    pub first_at: Nanos,
    pub completed_at: Nanos,
    pub requests: u32,
    pub aged: bool,
}

#[derive(Debug)]
pub(crate) struct DeviceSlot {
    pub gen: u16,
    state: Option<DeviceState>,
}

/// An attached handler. Its outstanding groups are the group table's groups of its slot.
#[derive(Debug)]
pub(crate) struct HandlerState<H> {
    pub handler: H,
    pub device: DeviceId,
    pub pasid: Option<u32>,
    pub agreed: Features,
    /// The oldest of its groups not yet counted as aged, while its device has an age policy
    /// (`None` otherwise).
    pub age_cursor: Option<Cookie>,
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
    /// Outstanding groups: device = device slot index, owner = handler slot index.
    pub(crate) groups: GroupTable<CoreGroup>,
    pub(crate) partials: PartialPool,
    pub(crate) scratch: Vec<iopf_abi::PageRequest>,
    pub(crate) scratch_cookies: Vec<Cookie>,
    pub(crate) sink: S,
    pub(crate) counters: CoreCounters,
}

impl<S: core::fmt::Debug, H> core::fmt::Debug for FaultCore<S, H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FaultCore")
            .field("devices", &(self.devices.len() - self.device_free.len()))
            .field("handlers", &(self.handlers.len() - self.handler_free.len()))
            .field("outstanding", &self.groups.len())
            .field("sink", &self.sink)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl<S: ResponseSink, H: GroupHandler> FaultCore<S, H> {
    /// An empty core sending responses to `sink`.
    pub fn new(sink: S) -> FaultCore<S, H> {
        FaultCore {
            devices: Vec::new(),
            device_free: Vec::new(),
            handlers: Vec::new(),
            handler_free: Vec::new(),
            groups: GroupTable::new(Naming::Own)
                .with_prg_lookup()
                .with_owner_order(),
            partials: PartialPool::new(),
            scratch: Vec::new(),
            scratch_cookies: Vec::new(),
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

    /// The id of the device registered in slot `idx` (a group's device key).
    pub(crate) fn device_at(&self, idx: u32) -> DeviceId {
        DeviceId::new(idx, self.devices.get(idx as usize).map_or(0, |s| s.gen))
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

    /// Links of the group table's lists and chains followed so far (teardown walking a
    /// handler's groups, grpid matching walking a chain): a measure of work, for tests and
    /// benches that bound a cost without timing it.
    pub fn links_walked(&self) -> u64 {
        self.groups.links_walked()
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
    /// Errors: unknown device; a zero limit or a FAILURE answer ([`CoreError::BadConfig`]).
    pub fn set_age_limit(
        &mut self,
        device: DeviceId,
        limit: Option<AgeLimit>,
    ) -> Result<(), CoreError> {
        if let Some(l) = limit {
            if l.limit == 0 {
                return Err(CoreError::BadConfig("the age limit must be above zero"));
            }
            if let Some(code) = l.answer {
                policy_code(code, "an aged group is never answered FAILURE")?;
            }
        }
        let dev = self.device_mut(device)?;
        dev.age = limit;
        // The age cursor (the oldest group not yet counted as aged) is kept only under a policy:
        // it starts at each handler's oldest group (groups counted before are skipped).
        let slots: Vec<u32> = dev.handler_slots().map(|(h, _)| h).collect();
        for h in slots {
            let first = limit.and_then(|_| self.groups.first_of(h));
            if let Some(hs) = self.handlers[h as usize].state.as_mut() {
                hs.age_cursor = first;
            }
        }
        Ok(())
    }

    /// Sets or clears the device's storm limit (default: none). Errors: unknown device; a zero
    /// `max_requests` or `interval`, or a FAILURE code ([`CoreError::BadConfig`]).
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
            policy_code(l.code, "a storm is never answered FAILURE")?;
        }
        self.device_mut(device)?.storm = limit.map(StormState::new);
        Ok(())
    }

    /// Sets what the device's groups that the core cannot take on are answered with (default
    /// [`OverflowPolicy::RETRY`]). Errors: unknown device; a FAILURE answer
    /// ([`CoreError::BadConfig`]).
    pub fn set_overflow_policy(
        &mut self,
        device: DeviceId,
        policy: OverflowPolicy,
    ) -> Result<(), CoreError> {
        policy_code(policy.answer, "an overflow is never answered FAILURE")?;
        self.device_mut(device)?.overflow = policy;
        Ok(())
    }

    /// The device's overflow policy.
    pub fn overflow_policy(&self, device: DeviceId) -> Result<OverflowPolicy, CoreError> {
        Ok(self.device(device)?.overflow)
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
            age_cursor: None,
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

    /// Takes a handler out of its slot and frees the slot. Its groups must be answered first.
    pub(crate) fn take_handler(&mut self, idx: u32) -> Option<HandlerState<H>> {
        let state = self.handlers.get_mut(idx as usize)?.state.take();
        if state.is_some() {
            self.handler_free.push(idx);
        }
        state
    }

    pub(crate) fn handler_id(&self, idx: u32) -> HandlerId {
        HandlerId::new(idx, self.handlers.get(idx as usize).map_or(0, |s| s.gen))
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
        let (facts, g) = self.groups.get(cookie)?;
        Some(GroupInfo {
            device: self.device_at(facts.device),
            handler: self.handler_id(facts.owner),
            pasid: facts.pasid,
            grpid: facts.grpid,
            requests: g.requests,
            first_at: g.first_at,
            completed_at: g.completed_at,
            aged: g.aged,
        })
    }

    /// Answers the outstanding group `cookie` with `code`, counted under `reason` (`None`: the
    /// consumer's response), and forgets it (`iopf_group_response()` + `iopf_free_group()`). The
    /// group's handler, if still attached, has its age cursor moved past it; telling the
    /// handler ([`GroupHandler::withdraw`]) is the caller's business.
    pub(crate) fn retire(
        &mut self,
        cookie: Cookie,
        code: iopf_abi::ResponseCode,
        reason: Option<AutoReason>,
    ) -> Option<Answered> {
        // The core never holds a group back: every outstanding one is announced.
        let Named::Announced { idx, owner, .. } = self.groups.named(cookie) else {
            return None;
        };
        Some(self.retire_at(idx, owner, cookie, code, reason))
    }

    /// [`retire`](Self::retire) of the live group in slot `idx` (owner `owner`), as the judge
    /// found it.
    pub(crate) fn retire_at(
        &mut self,
        idx: u32,
        owner: u32,
        cookie: Cookie,
        code: iopf_abi::ResponseCode,
        reason: Option<AutoReason>,
    ) -> Answered {
        if let Some(hs) = self
            .handlers
            .get_mut(owner as usize)
            .and_then(|h| h.state.as_mut())
        {
            if hs.age_cursor == Some(cookie) {
                hs.age_cursor = self.groups.next_of_owner(cookie);
            }
        }
        let (facts, g) = self.groups.remove_at(idx);
        let device = self.device_at(facts.device);
        // An outstanding group's device is registered: removal answers its groups first.
        let dev = registered(&mut self.devices, device);
        dev.in_flight -= g.requests;
        dev.outstanding -= 1;
        let sent = send(&mut self.sink, device, dev, &facts, code);
        match reason {
            Some(r) => dev.counters.auto[r as usize] += 1,
            None => dev.counters.consumer_responses += 1,
        }
        Answered {
            device,
            cookie,
            sent,
            requests: g.requests,
            first_at: g.first_at,
            completed_at: g.completed_at,
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

/// The state of a device whose id the current call has already checked (nothing in between can
/// remove it: the core is `&mut self` throughout). Only a bug in the core could make it fail.
// Forced inline kept on measurement: docs/PERFORMANCE.md, "Forced inlining".
#[inline(always)]
pub(crate) fn registered(devices: &mut [DeviceSlot], id: DeviceId) -> &mut DeviceState {
    match devices.get_mut(id.index()) {
        Some(DeviceSlot {
            gen,
            state: Some(s),
        }) if *gen == id.gen() => s,
        _ => unregistered(id),
    }
}

#[cold]
#[inline(never)]
fn unregistered(id: DeviceId) -> ! {
    unreachable!("{id} was checked at the start of this call")
}
