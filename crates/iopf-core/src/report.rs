//! The report path: one fault from a device's page request queue, through grouping and
//! admission, to its handler or to an answer at once (`iommu_report_device_fault()`).

use std::collections::hash_map::Entry;

use iopf_abi::fault::UnrecoverableFlags;
use iopf_abi::{Fault, PageRequest, PageRequestFlags, ResponseCode};

use crate::core::{device_mut, send, DeviceState};
use crate::counters::AutoReason;
use crate::device::StormLimit;
use crate::handler::{Group, GroupHandler};
use crate::response::{DeviceResponse, ResponseSink};
use crate::table::{HAS_PASID, NIL, PRIV_DATA};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The device's storm limit was reached in this interval.
    Storm,
    /// The device already has its Outstanding Page Request Allocation in flight.
    OverAllocation,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct StormState {
    pub limit: StormLimit,
    window_start: Nanos,
    count: u32,
    started: bool,
}

impl StormState {
    pub(crate) fn new(limit: StormLimit) -> StormState {
        StormState {
            limit,
            window_start: 0,
            count: 0,
            started: false,
        }
    }

    /// Whether one more request is admitted at `now` (fixed windows).
    fn admit(&mut self, now: Nanos) -> bool {
        if !self.started || now.saturating_sub(self.window_start) >= self.limit.interval {
            self.started = true;
            self.window_start = now;
            self.count = 0;
        }
        if self.count >= self.limit.max_requests {
            false
        } else {
            self.count += 1;
            true
        }
    }
}

fn request_private_data(req: &PageRequest) -> Option<[u64; 2]> {
    req.flags
        .contains(PageRequestFlags::PRIV_DATA)
        .then_some(req.private_data)
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
    ///   handler of its PASID, else of the device. No handler: INVALID at once
    ///   (`iopf_error_response()`). The handler refuses: FAILURE at once (`err_abort`), INVALID
    ///   where FAILURE is not allowed. Storm limit or allocation exceeded, or no slot left:
    ///   answered at once.
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
            Fault::Unrecoverable(u) => {
                dev.counters.unrecoverable += 1;
                let pasid = u
                    .flags
                    .contains(UnrecoverableFlags::PASID_VALID)
                    .then_some(u.pasid);
                let h = dev.route(pasid);
                if h == NIL {
                    return Ok(Reported::Unrecoverable { passed_on: false });
                }
                dev.counters.unrecoverable_passed += 1;
                if let Some(hs) = self.handlers[h as usize].state.as_mut() {
                    hs.handler.unrecoverable(device, u);
                }
                return Ok(Reported::Unrecoverable { passed_on: true });
            }
        };
        dev.counters.reported += 1;
        if req.is_stop_marker() {
            dev.counters.stop_markers += 1;
            return Ok(Reported::StopMarker);
        }
        let mut req = *req;
        let pasid = req.pasid();
        req.flags.set(
            PageRequestFlags::RESPONSE_NEEDS_PASID,
            dev.caps.pasid_required && pasid.is_some(),
        );
        let storm_excess = match dev.storm.as_mut() {
            Some(s) => !s.admit(now),
            None => false,
        };
        let over_allocation = dev.in_flight >= dev.caps.outstanding_allocation;

        if !req.is_last() {
            if storm_excess || over_allocation {
                dev.counters.dropped_partials += 1;
                return Ok(Reported::Dropped(if storm_excess {
                    DropReason::Storm
                } else {
                    DropReason::OverAllocation
                }));
            }
            match dev.partials.entry(req.grpid) {
                Entry::Occupied(mut e) => self.partials.push(e.get_mut(), req),
                Entry::Vacant(v) => {
                    v.insert(self.partials.start(req, now));
                }
            }
            dev.in_flight += 1;
            dev.held_partials += 1;
            return Ok(Reported::Held);
        }

        dev.counters.groups += 1;
        let chain = if dev.held_partials == 0 {
            None
        } else {
            dev.partials.remove(&req.grpid)
        };
        let private_data = request_private_data(&req);
        let early = if let (true, Some(s)) = (storm_excess, dev.storm.as_ref()) {
            Some((AutoReason::Storm, s.limit.code))
        } else if over_allocation {
            Some((AutoReason::OverAllocation, ResponseCode::Invalid))
        } else {
            None
        };
        if let Some((reason, code)) = early {
            if let Some(chain) = chain {
                let n = self.partials.drop_chain(chain);
                dev.in_flight -= n;
                dev.held_partials -= n;
                dev.counters.discarded_partials += u64::from(n);
            }
            let sent = send(
                &mut self.sink,
                device,
                dev,
                pasid,
                req.grpid,
                private_data,
                code,
            );
            dev.counters.auto[reason as usize] += 1;
            return Ok(Reported::Answered { reason, sent });
        }

        // Gather the group: held partials of this PRG index, oldest first, then LAST_PAGE. A
        // group of one request is passed as it is, without copying it into the scratch buffer.
        let (first_at, gathered) = match chain {
            Some(chain) => {
                self.scratch.clear();
                dev.in_flight -= chain.count;
                dev.held_partials -= chain.count;
                self.partials.take_into(chain, &mut self.scratch);
                for p in &self.scratch {
                    if p.pasid() != pasid {
                        dev.counters.pasid_mismatches += 1;
                    }
                }
                self.scratch.push(req);
                (chain.first_at, true)
            }
            None => (now, false),
        };
        let requests: &[PageRequest] = if gathered {
            &self.scratch
        } else {
            core::slice::from_ref(&req)
        };
        let nreq = requests.len() as u32;

        let h = dev.route(pasid);
        let auto = |reason: AutoReason,
                    code: ResponseCode,
                    sink: &mut S,
                    dev: &mut DeviceState|
         -> Reported {
            let sent = send(sink, device, dev, pasid, req.grpid, private_data, code);
            dev.counters.auto[reason as usize] += 1;
            Reported::Answered { reason, sent }
        };
        if h == NIL {
            return Ok(auto(
                AutoReason::NoHandler,
                ResponseCode::Invalid,
                &mut self.sink,
                dev,
            ));
        }
        let Some(idx) = self.groups.alloc() else {
            return Ok(auto(
                AutoReason::CoreFull,
                ResponseCode::Invalid,
                &mut self.sink,
                dev,
            ));
        };
        let cookie = self.groups.cookie(idx);
        let hslot = &mut self.handlers[h as usize];
        let handler_id = HandlerId::new(h, hslot.gen);
        let Some(hs) = hslot.state.as_mut() else {
            // Routing only ever names attached handlers; answer rather than strand the group.
            self.groups.free(idx);
            return Ok(auto(
                AutoReason::NoHandler,
                ResponseCode::Invalid,
                &mut self.sink,
                dev,
            ));
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
            dev.counters.refusals[refusal as usize] += 1;
            self.groups.free(idx);
            return Ok(auto(
                AutoReason::Refused,
                ResponseCode::Failure,
                &mut self.sink,
                dev,
            ));
        }
        {
            let s = self.groups.get_mut(idx);
            s.private_data = req.private_data;
            s.first_at = first_at;
            s.completed_at = now;
            s.pasid = req.pasid;
            s.grpid = req.grpid;
            s.device = device;
            s.handler = h;
            s.requests = nreq;
            if pasid.is_some() {
                s.flags |= HAS_PASID;
            }
            if private_data.is_some() {
                s.flags |= PRIV_DATA;
            }
        }
        self.groups.push_back(&mut hs.list, idx);
        if hs.age_cursor == NIL {
            hs.age_cursor = idx;
        }
        let head = dev.by_grpid.get(req.grpid);
        if head == NIL {
            dev.by_grpid.set(req.grpid, idx);
        } else {
            dev.counters.grpid_reuses += 1;
            let mut cur = head;
            loop {
                let next = self.groups.get(cur).next_same_grpid;
                if next == NIL {
                    break;
                }
                cur = next;
            }
            self.groups.get_mut(cur).next_same_grpid = idx;
        }
        dev.in_flight += nreq;
        dev.outstanding += 1;
        dev.counters.delivered += 1;
        Ok(Reported::Delivered {
            handler: handler_id,
            cookie,
        })
    }
}
