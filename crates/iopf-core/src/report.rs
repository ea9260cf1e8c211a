//! The report path, shaped as Linux shapes it: [`FaultCore::report`] is
//! `iommu_report_device_fault()` (admit the fault, hold a partial request, or complete a group)
//! and hands a completed group to `handle_group`, the counterpart of `iommu_handle_iopf()`
//! (route it, answer it at once, or deliver it to its handler).

use std::collections::hash_map::Entry;

use iopf_abi::fault::UnrecoverableFlags;
use iopf_abi::{Fault, PageRequest, PageRequestFlags, ResponseCode, Unrecoverable};

use crate::answer::send;
use crate::core::{device_mut, registered, CoreGroup};
use crate::counters::AutoReason;
use crate::device::DeviceState;
use crate::group_table::GroupFacts;
use crate::handler::{Group, GroupHandler, MissedGroup, Refusal};
use crate::prg_index::NIL;
use crate::response::{DeviceResponse, ResponseSink};
use crate::{Cookie, CoreError, DeviceId, FaultCore, HandlerId, Nanos};

/// What [`FaultCore::report`] did with a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// A request without LAST_PAGE, now held on the device's partial list.
    Held,
    /// The group completed and its handler accepted it: it is outstanding under `cookie`.
    Delivered {
        /// The handler it went to.
        handler: HandlerId,
        /// Its cookie.
        cookie: Cookie,
    },
    /// The group completed and the core answered it at once, for `reason`.
    Answered {
        /// Why.
        reason: AutoReason,
        /// What reached the device.
        sent: DeviceResponse,
    },
    /// A request without LAST_PAGE that was not held (counted in
    /// [`crate::DeviceCounters::dropped_partials`]).
    Dropped(DropReason),
    /// A PCIe stop marker, dropped: it needs no response (Linux's IOMMU drivers discard them before
    /// `iommu_report_device_fault()`).
    StopMarker,
    /// An unrecoverable fault; `passed_on` says whether a handler received it.
    Unrecoverable {
        /// Whether a handler was attached for it.
        passed_on: bool,
    },
}

/// Why a partial request was not held.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The device's storm limit was reached in this interval.
    Storm,
    /// The device already has its Outstanding Page Request Allocation in flight.
    OverAllocation,
}

/// The admission decision for one page request: past the storm limit, past the allocation, or
/// admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Admitted,
    Storm(ResponseCode),
    OverAllocation,
}

impl DeviceState {
    /// Admits one page request at `now`: the storm limit first (it counts the request), then the
    /// allocation (held partials plus outstanding groups' requests).
    fn admit(&mut self, now: Nanos) -> Admission {
        let storm_excess = match self.storm.as_mut() {
            Some(s) => !s.admit(now),
            None => false,
        };
        match self.storm {
            Some(s) if storm_excess => Admission::Storm(s.limit.code),
            _ if self.in_flight >= self.caps.outstanding_allocation => Admission::OverAllocation,
            _ => Admission::Admitted,
        }
    }
}

impl<S: ResponseSink, H: GroupHandler> FaultCore<S, H> {
    /// Reports one fault from `device` at time `now` (`iommu_report_device_fault()`).
    ///
    /// * An unrecoverable fault goes to the handler of its PASID (or the device) for information.
    /// * A stop marker is dropped.
    /// * A page request without LAST_PAGE is held on the device's partial list
    ///   (`report_partial_fault()`), unless the storm limit or the outstanding allocation is
    ///   reached ([`Reported::Dropped`]).
    /// * A LAST_PAGE request completes the group with every held partial of the same PRG index,
    ///   whatever their PASID (`iopf_group_alloc()`: PRG indexes are per function; a differing
    ///   PASID is counted in [`crate::DeviceCounters::pasid_mismatches`]), and the group goes to the
    ///   handler of its PASID, else of the device ([`Reported::Delivered`]). No handler: INVALID
    ///   at once (`iopf_error_response()`). Past the storm limit: the limit's code. Past the
    ///   allocation or with the group table full: the device's [`crate::OverflowPolicy`] (by
    ///   default SUCCESS, so the device retries). The handler refuses: the overflow policy for a
    ///   full queue, INVALID for a consumer that has gone. Never Response Failure: the core sends
    ///   FAILURE only when a consumer answers it (and the function may receive it).
    ///
    /// Linux differs in one point: with no handler it answers even a request without LAST_PAGE,
    /// which answers a group before its end; iopf holds partials regardless of handlers and
    /// answers each group once, when it completes.
    ///
    /// Errors: only [`CoreError::UnknownDevice`] (the device is not registered, so its PRI is off:
    /// nothing is sent, and [`crate::CoreCounters::unknown_device_reports`] counts it).
    pub fn report(
        &mut self,
        device: DeviceId,
        fault: &Fault,
        now: Nanos,
    ) -> Result<Reported, CoreError> {
        let dev = match device_mut(&mut self.devices, device) {
            Ok(d) => d,
            Err(e) => {
                self.counters.unknown_device_reports += 1;
                return Err(e);
            }
        };
        let req = match fault {
            Fault::PageRequest(req) => req,
            Fault::Unrecoverable(u) => return Ok(self.report_unrecoverable(device, u)),
        };
        dev.counters.reported += 1;
        if req.is_stop_marker() {
            dev.counters.stop_markers += 1;
            return Ok(Reported::StopMarker);
        }
        let mut req = *req;
        req.flags.set(
            PageRequestFlags::RESPONSE_NEEDS_PASID,
            dev.caps.pasid_required && req.pasid().is_some(),
        );
        let admission = dev.admit(now);
        if !req.is_last() {
            return Ok(self.hold_partial(device, req, admission, now));
        }
        Ok(self.handle_group(device, req, admission, now))
    }

    /// An unrecoverable fault, for information, to the handler of its PASID or device.
    fn report_unrecoverable(&mut self, device: DeviceId, u: &Unrecoverable) -> Reported {
        let dev = registered(&mut self.devices, device);
        dev.counters.unrecoverable += 1;
        let pasid = u
            .flags
            .contains(UnrecoverableFlags::PASID_VALID)
            .then_some(u.pasid);
        let h = dev.route(pasid);
        if h == NIL {
            return Reported::Unrecoverable { passed_on: false };
        }
        dev.counters.unrecoverable_passed += 1;
        if let Some(hs) = self.handlers[h as usize].state.as_mut() {
            hs.handler.unrecoverable(device, u);
        }
        Reported::Unrecoverable { passed_on: true }
    }

    /// A request without LAST_PAGE: held on the device's partial list under its PRG index
    /// (`report_partial_fault()`), unless it was not admitted.
    fn hold_partial(
        &mut self,
        device: DeviceId,
        req: PageRequest,
        admission: Admission,
        now: Nanos,
    ) -> Reported {
        let dev = registered(&mut self.devices, device);
        match admission {
            Admission::Admitted => {}
            Admission::Storm(_) => {
                dev.counters.dropped_partials += 1;
                return Reported::Dropped(DropReason::Storm);
            }
            Admission::OverAllocation => {
                dev.counters.dropped_partials += 1;
                return Reported::Dropped(DropReason::OverAllocation);
            }
        }
        match dev.partials.entry(req.grpid) {
            Entry::Occupied(mut e) => self.partials.push(e.get_mut(), req),
            Entry::Vacant(v) => {
                v.insert(self.partials.start(req, now));
            }
        }
        dev.in_flight += 1;
        dev.held_partials += 1;
        Reported::Held
    }

    /// A completed group (`iommu_handle_iopf()`): its held partials gathered, routed to the
    /// handler of its PASID or device, then answered at once or delivered.
    fn handle_group(
        &mut self,
        device: DeviceId,
        last: PageRequest,
        admission: Admission,
        now: Nanos,
    ) -> Reported {
        let dev = registered(&mut self.devices, device);
        dev.counters.groups += 1;
        let chain = if dev.held_partials == 0 {
            None
        } else {
            dev.partials.remove(&last.grpid)
        };
        let h = dev.route(last.pasid());
        let owner = if h == NIL { 0 } else { h };
        let facts = GroupFacts::of_last(device.index() as u32, owner, &last);
        let early = match admission {
            Admission::Admitted => None,
            Admission::Storm(code) => Some((AutoReason::Storm, code)),
            Admission::OverAllocation => Some((AutoReason::OverAllocation, dev.overflow.answer)),
        };
        if let Some((reason, code)) = early {
            let mut requests = 1;
            if let Some(chain) = chain {
                let n = self.partials.drop_chain(chain);
                dev.in_flight -= n;
                dev.held_partials -= n;
                dev.counters.discarded_partials += u64::from(n);
                requests += n;
            }
            return self.answer_at_once(device, h, &facts, requests, reason, code);
        }

        // Gather the group: held partials of this PRG index, oldest first, then LAST_PAGE. A
        // group of one request is passed as it is, without copying it into the scratch buffer.
        let first_at = match chain {
            Some(chain) => {
                self.scratch.clear();
                dev.in_flight -= chain.count;
                dev.held_partials -= chain.count;
                self.partials.take_into(chain, &mut self.scratch);
                let pasid = last.pasid();
                let mismatched = self.scratch.iter().filter(|p| p.pasid() != pasid).count();
                dev.counters.pasid_mismatches += mismatched as u64;
                self.scratch.push(last);
                chain.first_at
            }
            None => {
                self.scratch.clear();
                now
            }
        };
        if h == NIL {
            let requests = self.scratch.len().max(1) as u32;
            return self.answer_at_once(
                device,
                NIL,
                &facts,
                requests,
                AutoReason::NoHandler,
                ResponseCode::Invalid,
            );
        }
        self.deliver_group(device, h, facts, last, first_at, now)
    }

    /// Delivers a gathered group (in `scratch`, or `last` alone when it is empty) to handler slot
    /// `h`: outstanding under a new cookie if the handler takes it, answered at once otherwise.
    fn deliver_group(
        &mut self,
        device: DeviceId,
        h: u32,
        facts: GroupFacts,
        last: PageRequest,
        first_at: Nanos,
        now: Nanos,
    ) -> Reported {
        let nreq = self.scratch.len().max(1) as u32;
        let extra = CoreGroup {
            first_at,
            completed_at: now,
            requests: nreq,
            aged: false,
        };
        let cookie = match self.groups.insert(facts, extra) {
            Ok(c) => c,
            Err(_) => {
                let code = registered(&mut self.devices, device).overflow.answer;
                return self.answer_at_once(device, h, &facts, nreq, AutoReason::CoreFull, code);
            }
        };
        let hslot = &mut self.handlers[h as usize];
        let handler_id = HandlerId::new(h, hslot.gen);
        let Some(hs) = hslot.state.as_mut() else {
            // Routing only ever names attached handlers; answer rather than strand the group.
            self.groups.remove(cookie);
            return self.answer_at_once(
                device,
                NIL,
                &facts,
                nreq,
                AutoReason::NoHandler,
                ResponseCode::Invalid,
            );
        };
        let requests: &[PageRequest] = if self.scratch.is_empty() {
            core::slice::from_ref(&last)
        } else {
            &self.scratch
        };
        let group = Group {
            device,
            handler: handler_id,
            cookie,
            requests,
            first_at,
            completed_at: now,
        };
        if let Err(refusal) = hs.handler.deliver(&group) {
            self.groups.remove(cookie);
            let dev = registered(&mut self.devices, device);
            dev.counters.refusals[refusal as usize] += 1;
            let (reason, code) = match refusal {
                Refusal::QueueFull => (AutoReason::NoRoom, dev.overflow.answer),
                Refusal::ShuttingDown => (AutoReason::ConsumerGone, ResponseCode::Invalid),
                Refusal::TooLarge => (AutoReason::TooLarge, ResponseCode::Invalid),
            };
            // The handler refused it, so it knows: no `missed` call.
            return self.answer_at_once(device, NIL, &facts, nreq, reason, code);
        }
        let dev = registered(&mut self.devices, device);
        // The age cursor is kept only under an age policy (`set_age_limit` places it).
        if dev.age.is_some() && hs.age_cursor.is_none() {
            hs.age_cursor = Some(cookie);
        }
        if self.groups.has_older_same_grpid(cookie) {
            dev.counters.grpid_reuses += 1;
        }
        dev.in_flight += nreq;
        dev.outstanding += 1;
        dev.counters.delivered += 1;
        Reported::Delivered {
            handler: handler_id,
            cookie,
        }
    }

    /// Answers a group the core does not deliver with `code`, counted under `reason`; the
    /// handler in slot `h` (routed to it, or NIL) is told through [`GroupHandler::missed`].
    fn answer_at_once(
        &mut self,
        device: DeviceId,
        h: u32,
        facts: &GroupFacts,
        requests: u32,
        reason: AutoReason,
        code: ResponseCode,
    ) -> Reported {
        let dev = registered(&mut self.devices, device);
        let sent = send(&mut self.sink, device, dev, facts, code);
        dev.counters.auto[reason as usize] += 1;
        if let Some(hs) = self
            .handlers
            .get_mut(h as usize)
            .and_then(|s| s.state.as_mut())
        {
            hs.handler.missed(&MissedGroup {
                device,
                requests,
                reason,
                sent,
            });
        }
        Reported::Answered { reason, sent }
    }
}
