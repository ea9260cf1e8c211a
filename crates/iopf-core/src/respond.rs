//! The response path: a consumer's answer, judged by the one judge (`judge.rs`) against the
//! outstanding groups of the handler it came through, then sent to the device
//! (`iopf_group_response()`).

use crate::handler::GroupHandler;
use crate::judge::Responder;
use crate::response::{Answered, Response, ResponseSink};
use crate::{CoreError, FaultCore, HandlerId};

impl<S: ResponseSink, H: GroupHandler> FaultCore<S, H> {
    /// Answers an outstanding group on behalf of the consumer behind `handler`.
    ///
    /// `handler` must be attached, else [`CoreError::UnknownHandler`] (ENOENT). The response is
    /// then judged by [`crate::GroupTable::judge`]'s rules, the handler's device and slot being
    /// the responder and its agreed features what may be used: an unknown code, an unagreed
    /// echo or cookie, a group that is unknown, answered, another device's, another handler's
    /// (of this device), a missing needed PASID, or echoed private data that is not the
    /// request's are each a specific [`CoreError`] (EINVAL), with nothing sent and nothing
    /// outstanding disturbed (the device's rejection counter for the reason moves).
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
        let who = Responder {
            device: device.index() as u32,
            owner: handler.index() as u32,
            agreed: hs.agreed,
        };
        match self.groups.judge_at(&who, response) {
            Ok((idx, cookie, code)) => Ok(self.retire_at(idx, who.owner, cookie, code, None)),
            Err(rejected) => {
                if let Ok(dev) = self.device_mut(device) {
                    dev.counters.rejected[rejected.reason() as usize] += 1;
                }
                Err(CoreError::rejected(rejected, |idx| self.device_at(idx)))
            }
        }
    }
}
