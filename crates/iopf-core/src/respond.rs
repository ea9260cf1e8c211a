//! The response path: a consumer's answer, judged against the outstanding groups of the handler
//! it came through, then sent to the device (`iopf_group_response()`, with the checks of
//! `iommufd_fault_fops_write()` for cookies and of the old `iommu_page_response()` for
//! (PASID, grpid)).

use iopf_abi::{Features, ResponseCode};

use crate::counters::RejectReason;
use crate::handler::GroupHandler;
use crate::response::{Answered, GroupRef, Response, ResponseSink};
use crate::table::{Lookup, NIL};
use crate::{CoreError, FaultCore, HandlerId};

impl<S: ResponseSink, H: GroupHandler> FaultCore<S, H> {
    /// Answers an outstanding group on behalf of the consumer behind `handler`.
    ///
    /// Checks, in this order, each failure a specific error with nothing sent and nothing
    /// outstanding disturbed (the device's rejection counter for the reason moves):
    /// 1. `handler` is attached, else [`CoreError::UnknownHandler`];
    /// 2. the code is 0, 1 or 2, else [`CoreError::UnknownCode`];
    /// 3. echoed private data needs `PRIV_DATA_ECHO` agreed, a cookie needs `COOKIE_RESPONSE`
    ///    agreed, else [`CoreError::NotAgreed`] (the old kernel rejects flags it does not know);
    /// 4. the group: by cookie (`xa_erase(&fault->response, cookie)`), it must be outstanding
    ///    ([`CoreError::UnknownGroup`], or [`CoreError::AlreadyAnswered`] for a cookie of an
    ///    answered group), on this handler's device ([`CoreError::WrongDevice`]) and delivered to
    ///    this handler ([`CoreError::WrongHandler`]); by (PASID, grpid), the oldest outstanding
    ///    group of the device with that PRG index that was delivered to this handler, whose PASID
    ///    matches when the device requires the PASID in responses (`iommu_page_response()`
    ///    before 6.9: otherwise the PASID is ignored) — else [`CoreError::WrongPasid`],
    ///    [`CoreError::WrongHandler`] or [`CoreError::UnknownGroup`];
    /// 5. echoed private data equals the request's, else [`CoreError::PrivateDataMismatch`].
    ///
    /// Then the device receives the response, with the request's private data restored by the
    /// core whether or not the consumer echoed it, and FAILURE sent as INVALID where the function
    /// may not receive FAILURE. The group is no longer outstanding: a second response is
    /// [`CoreError::AlreadyAnswered`] (Linux: "a second response to a group is a no-op").
    pub fn respond(
        &mut self,
        handler: HandlerId,
        response: &Response,
    ) -> Result<Answered, CoreError> {
        let Some(hs) = self.handler_state(handler) else {
            self.counters.unknown_handler_responses += 1;
            return Err(CoreError::UnknownHandler(handler));
        };
        let device = hs.device;
        let agreed = hs.agreed;
        match self.judge(handler, device, agreed, response) {
            Ok((idx, code)) => {
                self.unlink_from_handler(idx);
                Ok(self.retire(idx, code, None))
            }
            Err((reason, err)) => {
                if let Ok(dev) = self.device_mut(device) {
                    dev.counters.rejected[reason as usize] += 1;
                }
                Err(err)
            }
        }
    }

    /// Steps 2–5 of [`respond`](Self::respond): the slot answered and the code, or why not.
    fn judge(
        &self,
        handler: HandlerId,
        device: crate::DeviceId,
        agreed: Features,
        response: &Response,
    ) -> Result<(u32, ResponseCode), (RejectReason, CoreError)> {
        let code = ResponseCode::decode(response.code).map_err(|_| {
            (
                RejectReason::UnknownCode,
                CoreError::UnknownCode(response.code),
            )
        })?;
        if response.private_data.is_some() && !agreed.contains(Features::PRIV_DATA_ECHO) {
            return Err((
                RejectReason::NotAgreed,
                CoreError::NotAgreed(Features::PRIV_DATA_ECHO),
            ));
        }
        let h = handler.index() as u32;
        let idx = match response.group {
            GroupRef::Cookie(cookie) => {
                if !agreed.contains(Features::COOKIE_RESPONSE) {
                    return Err((
                        RejectReason::NotAgreed,
                        CoreError::NotAgreed(Features::COOKIE_RESPONSE),
                    ));
                }
                match self.groups.lookup(cookie) {
                    Lookup::Unknown => {
                        return Err((RejectReason::Unknown, CoreError::UnknownGroup))
                    }
                    Lookup::Answered => {
                        return Err((RejectReason::Duplicate, CoreError::AlreadyAnswered(cookie)))
                    }
                    Lookup::Live(idx) => {
                        let s = self.groups.get(idx);
                        if s.device != device {
                            return Err((
                                RejectReason::WrongDevice,
                                CoreError::WrongDevice {
                                    cookie,
                                    owner: s.device,
                                },
                            ));
                        }
                        if s.handler != h {
                            return Err((
                                RejectReason::WrongHandler,
                                CoreError::WrongHandler(cookie),
                            ));
                        }
                        idx
                    }
                }
            }
            GroupRef::Grpid { pasid, grpid } => {
                let dev = self
                    .device(device)
                    .map_err(|e| (RejectReason::Unknown, e))?;
                let needs_pasid = dev.caps.pasid_required;
                let mut cur = dev.by_grpid.get(grpid);
                let mut own_seen = false;
                let mut other = None;
                let mut found = None;
                while cur != NIL {
                    let s = self.groups.get(cur);
                    if s.handler == h {
                        own_seen = true;
                        let matches = match s.pasid() {
                            Some(p) if needs_pasid => pasid == Some(p),
                            _ => true,
                        };
                        if matches {
                            found = Some(cur);
                            break;
                        }
                    } else if other.is_none() {
                        other = Some(self.groups.cookie(cur));
                    }
                    cur = s.next_same_grpid;
                }
                match (found, own_seen, other) {
                    (Some(idx), _, _) => idx,
                    (None, true, _) => {
                        return Err((
                            RejectReason::WrongPasid,
                            CoreError::WrongPasid { grpid, got: pasid },
                        ))
                    }
                    (None, false, Some(c)) => {
                        return Err((RejectReason::WrongHandler, CoreError::WrongHandler(c)))
                    }
                    (None, false, None) => {
                        return Err((RejectReason::Unknown, CoreError::UnknownGroup))
                    }
                }
            }
        };
        if let Some(echoed) = response.private_data {
            let s = self.groups.get(idx);
            if s.private_data() != Some(echoed) {
                return Err((
                    RejectReason::PrivateDataMismatch,
                    CoreError::PrivateDataMismatch(self.groups.cookie(idx)),
                ));
            }
        }
        Ok((idx, code))
    }
}
