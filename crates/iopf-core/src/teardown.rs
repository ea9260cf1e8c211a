//! Teardown and expiry: no group is ever stranded. Detach, replace, device removal and PASID
//! flush answer every outstanding group they take away, telling its handler
//! ([`GroupHandler::withdraw`]) so that a queue in between forgets it too; hardware queue
//! overflow discards the partial lists; the opt-in age limit answers groups that waited too long.
//!
//! Cost: each walks only the groups it answers (a handler's groups are kept in delivery order in
//! the group table), except a PASID flush, which walks the outstanding groups of the handlers
//! the PASID routes to.

use iopf_abi::{Features, ResponseCode};

use crate::core::device_mut;
use crate::counters::{AutoReason, DeviceCounters};
use crate::handler::GroupHandler;
use crate::prg_index::NIL;
use crate::response::ResponseSink;
use crate::{Cookie, CoreError, DeviceId, FaultCore, HandlerId, Nanos};

/// What [`FaultCore::remove_device`] hands back.
#[derive(Debug)]
pub struct RemovedDevice<H> {
    /// The handlers that were attached, with where they were (`None`: device-wide).
    pub handlers: Vec<(HandlerId, Option<u32>, H)>,
    /// Groups answered INVALID by the removal.
    pub answered: u32,
    /// Partial requests discarded by the removal.
    pub discarded_partials: u32,
    /// The device's final counters.
    pub counters: DeviceCounters,
}

impl<S: ResponseSink, H: GroupHandler> FaultCore<S, H> {
    /// Answers INVALID for every group of the (already unrouted) handler in slot `h`, counted under
    /// `reason`, telling the handler of each, and returns the handler. Its groups are the ones
    /// `iommufd_auto_response_faults()` finds both on `fault->deliver` (not yet read) and in
    /// `fault->response` (read, unanswered): in iopf the handler holds the first kind and the core
    /// tracks both as outstanding.
    fn drain_handler(&mut self, h: u32, reason: AutoReason) -> Option<(H, u32)> {
        let mut cookies = std::mem::take(&mut self.scratch_cookies);
        cookies.clear();
        self.groups.cookies_of(h, &mut cookies);
        let mut answered = 0;
        for &cookie in &cookies {
            self.withdraw_from(h, cookie);
            if self
                .retire(cookie, ResponseCode::Invalid, Some(reason))
                .is_some()
            {
                answered += 1;
            }
        }
        self.scratch_cookies = cookies;
        let hs = self.take_handler(h)?;
        Some((hs.handler, answered))
    }

    /// Tells the handler in slot `h` that the core answers `cookie` itself.
    fn withdraw_from(&mut self, h: u32, cookie: Cookie) {
        if let Some(hs) = self
            .handlers
            .get_mut(h as usize)
            .and_then(|s| s.state.as_mut())
        {
            hs.handler.withdraw(cookie);
        }
    }

    /// Detaches a handler and hands it back; every group it still owed is answered INVALID
    /// ([`AutoReason::Detached`]). New requests stop going to it first, then its groups are
    /// answered: the order of `iommufd_fault_domain_detach_dev()` (detach the handle, then
    /// `iommufd_auto_response_faults()`). Errors: [`CoreError::UnknownHandler`].
    pub fn detach(&mut self, handler: HandlerId) -> Result<H, CoreError> {
        let hs = self
            .handler_state(handler)
            .ok_or(CoreError::UnknownHandler(handler))?;
        let (device, pasid) = (hs.device, hs.pasid);
        let dev = self.device_mut(device)?;
        match pasid {
            None => dev.handler = NIL,
            Some(p) => {
                dev.pasid_handlers.remove(&p);
            }
        }
        let (h, _) = self
            .drain_handler(handler.index() as u32, AutoReason::Detached)
            .ok_or(CoreError::UnknownHandler(handler))?;
        Ok(h)
    }

    /// Puts `new` in the place of `old` (same device, same PASID or device-wide) and hands `old`
    /// back; every group `old` still owed is answered INVALID ([`AutoReason::Replaced`]) after
    /// the new handler is in place, as `__fault_domain_replace_dev()` does. Returns the new
    /// handler's id. Errors: [`CoreError::UnknownHandler`] (then `new` is dropped), no room.
    pub fn replace(
        &mut self,
        old: HandlerId,
        new: H,
        agreed: Features,
    ) -> Result<(HandlerId, H), CoreError> {
        let hs = self
            .handler_state(old)
            .ok_or(CoreError::UnknownHandler(old))?;
        let (device, pasid) = (hs.device, hs.pasid);
        // Route to nothing while the new handler is put in, then to it.
        {
            let dev = self.device_mut(device)?;
            match pasid {
                None => dev.handler = NIL,
                Some(p) => {
                    dev.pasid_handlers.remove(&p);
                }
            }
        }
        let new_id = match self.attach(device, pasid, new, agreed) {
            Ok(id) => id,
            Err(e) => {
                // Put the old one back where it was: nothing changed.
                let dev = self.device_mut(device)?;
                match pasid {
                    None => dev.handler = old.index() as u32,
                    Some(p) => {
                        dev.pasid_handlers.insert(p, old.index() as u32);
                    }
                }
                return Err(e);
            }
        };
        let (h, _) = self
            .drain_handler(old.index() as u32, AutoReason::Replaced)
            .ok_or(CoreError::UnknownHandler(old))?;
        Ok((new_id, h))
    }

    /// Removes a device, in the order `iopf_queue_remove_device()` documents: reception stops
    /// first (once this returns, [`report`](Self::report) refuses the id; the caller must have
    /// stopped its hardware queue for the device, and with `&mut self` no report can interleave),
    /// then the partial list is discarded and every outstanding group answered INVALID
    /// ([`AutoReason::Removed`]), then the device is forgotten. The handlers come back to the
    /// caller. Errors: [`CoreError::UnknownDevice`].
    pub fn remove_device(&mut self, device: DeviceId) -> Result<RemovedDevice<H>, CoreError> {
        let discarded_partials = self.discard_device_partials(device)?;
        let dev = self.device(device)?;
        let places: Vec<(u32, Option<u32>)> = dev.handler_slots().collect();
        {
            let dev = self.device_mut(device)?;
            dev.handler = NIL;
            dev.pasid_handlers.clear();
        }
        let mut handlers = Vec::with_capacity(places.len());
        let mut answered = 0;
        for (h, pasid) in places {
            let id = self.handler_id(h);
            if let Some((handler, n)) = self.drain_handler(h, AutoReason::Removed) {
                answered += n;
                handlers.push((id, pasid, handler));
            }
        }
        let state = self
            .free_device(device)
            .ok_or(CoreError::UnknownDevice(device))?;
        Ok(RemovedDevice {
            handlers,
            answered,
            discarded_partials,
            counters: state.counters,
        })
    }

    /// Answers INVALID every outstanding group of `pasid` on the device ([`AutoReason::Flushed`],
    /// each handler told through [`GroupHandler::withdraw`]) and discards the PASID's held partial
    /// requests, so the PASID can be reused without a stale answer reaching its next user: what
    /// `iopf_queue_flush_dev()` guarantees before a PASID is freed. Handlers stay attached.
    /// Returns the number of groups answered. Errors: [`CoreError::UnknownDevice`].
    pub fn flush_pasid(&mut self, device: DeviceId, pasid: u32) -> Result<u32, CoreError> {
        let dev = device_mut(&mut self.devices, device)?;
        let mut discarded = 0;
        let grpids: Vec<u32> = dev.partials.keys().copied().collect();
        for grpid in grpids {
            if let Some(chain) = dev.partials.remove(&grpid) {
                let (n, kept) = self
                    .partials
                    .drop_where(chain, |r| r.pasid() == Some(pasid));
                discarded += n;
                if let Some(kept) = kept {
                    dev.partials.insert(grpid, kept);
                }
            }
        }
        dev.in_flight -= discarded;
        dev.held_partials -= discarded;
        dev.counters.discarded_partials += u64::from(discarded);

        let mut places = Vec::with_capacity(2);
        if let Some(&h) = dev.pasid_handlers.get(&pasid) {
            places.push(h);
        }
        if dev.handler != NIL {
            places.push(dev.handler);
        }
        let mut answered = 0;
        let mut cookies = std::mem::take(&mut self.scratch_cookies);
        for h in places {
            cookies.clear();
            self.groups.cookies_of(h, &mut cookies);
            for &cookie in &cookies {
                if self
                    .groups
                    .get(cookie)
                    .is_some_and(|(f, _)| f.pasid == Some(pasid))
                {
                    self.withdraw_from(h, cookie);
                    self.retire(cookie, ResponseCode::Invalid, Some(AutoReason::Flushed));
                    answered += 1;
                }
            }
        }
        self.scratch_cookies = cookies;
        Ok(answered)
    }

    /// Discards the device's held partial requests, after its hardware page request queue
    /// overflowed (their LAST_PAGE request may have been lost). Returns how many. Errors:
    /// [`CoreError::UnknownDevice`].
    pub fn discard_device_partials(&mut self, device: DeviceId) -> Result<u32, CoreError> {
        let dev = device_mut(&mut self.devices, device)?;
        let mut n = 0;
        for (_, chain) in dev.partials.drain() {
            n += self.partials.drop_chain(chain);
        }
        dev.in_flight -= n;
        dev.held_partials -= n;
        dev.counters.discarded_partials += u64::from(n);
        Ok(n)
    }

    /// Discards every device's held partial requests (`iopf_queue_discard_partial()`: the IOMMU
    /// driver calls it when its page request queue overflowed). Returns how many.
    pub fn discard_partials(&mut self) -> u64 {
        let ids: Vec<DeviceId> = self.devices().collect();
        ids.into_iter()
            .map(|d| u64::from(self.discard_device_partials(d).unwrap_or(0)))
            .sum()
    }

    /// Applies every device's age limit at time `now`: each delivered group that completed at
    /// least `limit` ago is counted once in [`crate::DeviceCounters::aged`], and, if the policy
    /// says so, answered with its code ([`AutoReason::Aged`], the handler told through
    /// [`GroupHandler::withdraw`]). Devices without a policy are untouched. Returns the number of
    /// groups answered. Cost: O(devices with a policy + groups that aged), since each handler's
    /// groups are kept in delivery order.
    pub fn expire(&mut self, now: Nanos) -> u32 {
        let mut answered = 0;
        let mut places = Vec::new();
        for slot in 0..self.devices.len() {
            let device = self.device_at(slot as u32);
            let Ok(dev) = self.device(device) else {
                continue;
            };
            let Some(policy) = dev.age else {
                continue;
            };
            places.clear();
            places.extend(dev.handler_slots().map(|(h, _)| h));
            for &h in &places {
                // Counting resumes after the groups already counted; answering starts at the
                // oldest, since groups counted under an earlier count-only policy are still
                // outstanding.
                let mut cur = match self.handlers[h as usize].state.as_ref() {
                    Some(_) if policy.answer.is_some() => self.groups.first_of(h),
                    Some(hs) => hs.age_cursor,
                    None => None,
                };
                while let Some(cookie) = cur {
                    let Some((_, g)) = self.groups.get(cookie) else {
                        break;
                    };
                    if now.saturating_sub(g.completed_at) < policy.limit {
                        break;
                    }
                    let next = self.groups.next_of_owner(cookie);
                    if !g.aged {
                        if let Some(g) = self.groups.extra_mut(cookie) {
                            g.aged = true;
                        }
                        if let Ok(dev) = self.device_mut(device) {
                            dev.counters.aged += 1;
                        }
                    }
                    if let Some(code) = policy.answer {
                        self.withdraw_from(h, cookie);
                        self.retire(cookie, code, Some(AutoReason::Aged));
                        answered += 1;
                    }
                    cur = next;
                }
                if let Some(hs) = self.handlers[h as usize].state.as_mut() {
                    hs.age_cursor = cur;
                }
            }
        }
        answered
    }
}
