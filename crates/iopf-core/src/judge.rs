//! The judge: whether a response may answer an outstanding group, and which one. The one
//! implementation of the response-matching rules, used by the fault core
//! ([`crate::FaultCore::respond`]), the fault queue's producer and consumer, the
//! iommufd-compatible queue and the vIOMMU bridge.
//!
//! The rules, in the order they are checked (each failure one [`Rejected`], nothing answered):
//!
//! 1. the code is SUCCESS, INVALID or FAILURE (`enum iommu_page_response_code`), else
//!    [`Rejected::UnknownCode`]; which codes a *format* may carry (iommufd: not FAILURE) is
//!    the decoder's business, before the judge;
//! 2. echoed private data needs `PRIV_DATA_ECHO` agreed, a cookie needs `COOKIE_RESPONSE`
//!    agreed, else [`Rejected::NotAgreed`] (the ≤ 6.8 kernel rejects flags it does not know);
//! 3. the group:
//!    * by cookie (`iommufd_fault_fops_write()`: `xa_erase(&fault->response, cookie)`): it must
//!      name an announced outstanding group ([`Rejected::UnknownGroup`], or
//!      [`Rejected::AlreadyAnswered`] while the answered group's slot is not reused), of the
//!      responder's device ([`Rejected::WrongDevice`]) and owner ([`Rejected::ForeignGroup`]);
//!    * by (PASID, grpid) (`iommu_page_response()` before 6.9): the oldest announced group of
//!      the responder's device with that PRG index and owner whose PASID matches *when the
//!      request had one and needs it in the response*; otherwise the response's PASID is ignored
//!      (Linux clears it: "No big deal, just clear it"). None: [`Rejected::WrongPasid`] if the
//!      owner has a group with that index, [`Rejected::ForeignGroup`] if only another owner
//!      has, else [`Rejected::UnknownGroup`];
//! 4. echoed private data equals the group's (its LAST_PAGE request's), else
//!    [`Rejected::PrivateDataMismatch`]. Without an echo the group's own is what the device
//!    gets back, so an old consumer works with a device that needs it.
//!
//! A response is judged before anything is answered: the caller removes the group
//! ([`crate::GroupTable::remove`]) only once the judge accepted it.

use iopf_abi::{Features, ResponseCode};

use crate::group_table::{GroupFacts, GroupTable, Named};
use crate::response::{GroupRef, Response};
use crate::Cookie;

/// Who is answering: the device whose PRG index space a grpid-named response searches, the owner
/// whose groups it may answer, and what its consumer agreed in the negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Responder {
    /// The device (the table's device key).
    pub device: u32,
    /// The owner (the core: the handler's slot; a queue: 0).
    pub owner: u32,
    /// The features agreed for the responder's consumer.
    pub agreed: Features,
}

/// A response the judge accepted: the group it answers, with its facts, and the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judged {
    /// The group answered.
    pub cookie: Cookie,
    /// Its facts (what the device's response is built from).
    pub facts: GroupFacts,
    /// The code.
    pub code: ResponseCode,
}

/// Why the judge rejected a response. Nothing was answered.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejected {
    /// The code is not SUCCESS (0), INVALID (1) or FAILURE (2).
    UnknownCode(u32),
    /// The response uses a feature that was not agreed (`PRIV_DATA_ECHO` for an echo,
    /// `COOKIE_RESPONSE` for a cookie).
    NotAgreed(Features),
    /// No announced outstanding group matches: a cookie never handed out or reused since, a
    /// held-back group's, or a (PASID, grpid) that matches nothing.
    UnknownGroup,
    /// The cookie names a group that has already been answered.
    AlreadyAnswered(Cookie),
    /// The group is outstanding on another device.
    WrongDevice {
        /// The group named.
        cookie: Cookie,
        /// Its device key.
        device: u32,
    },
    /// The group is outstanding on the responder's device but belongs to another owner (a
    /// foreign group: the core, another handler's).
    ForeignGroup(Cookie),
    /// The owner has groups with that PRG index, but none whose needed PASID the response gives.
    WrongPasid {
        /// The PRG index.
        grpid: u32,
        /// The PASID the response gave.
        got: Option<u32>,
    },
    /// The echoed private data is not the group's (or the group has none).
    PrivateDataMismatch(Cookie),
}

impl Rejected {
    /// The reason, as counters and the fault queue's verdict ring name it.
    pub fn reason(&self) -> RejectReason {
        match self {
            Rejected::UnknownCode(_) => RejectReason::UnknownCode,
            Rejected::NotAgreed(f) if f.contains(Features::PRIV_DATA_ECHO) => {
                RejectReason::PrivDataNotAgreed
            }
            Rejected::NotAgreed(_) => RejectReason::FormatNotAgreed,
            Rejected::UnknownGroup => RejectReason::UnknownGroup,
            Rejected::AlreadyAnswered(_) => RejectReason::AlreadyAnswered,
            Rejected::WrongDevice { .. } => RejectReason::WrongDevice,
            Rejected::ForeignGroup(_) => RejectReason::ForeignGroup,
            Rejected::WrongPasid { .. } => RejectReason::PasidMismatch,
            Rejected::PrivateDataMismatch(_) => RejectReason::PrivDataMismatch,
        }
    }
}

/// Why a response was rejected, at any stage: the judge's reasons and the decoding ones of a
/// queue before it. The numbers are ABI (the fault queue's verdict ring carries them) and never
/// change; 0 is none.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum RejectReason {
    /// A queue's response slot has an impossible length or format tag.
    Malformed = 1,
    /// The response did not decode (unknown version, flags or code for its format, non-zero
    /// unknown tail).
    Decode = 2,
    /// The response uses a format or feature that was not agreed ([`Rejected::NotAgreed`]).
    FormatNotAgreed = 3,
    /// The response echoes private data, but echoing was not agreed.
    PrivDataNotAgreed = 4,
    /// [`Rejected::UnknownGroup`].
    UnknownGroup = 5,
    /// [`Rejected::WrongPasid`].
    PasidMismatch = 6,
    /// [`Rejected::PrivateDataMismatch`].
    PrivDataMismatch = 7,
    /// [`Rejected::AlreadyAnswered`].
    AlreadyAnswered = 8,
    /// [`Rejected::WrongDevice`].
    WrongDevice = 9,
    /// [`Rejected::ForeignGroup`].
    ForeignGroup = 10,
    /// [`Rejected::UnknownCode`].
    UnknownCode = 11,
}

impl RejectReason {
    /// Size of an array indexed by reason (`reason as usize`; index 0 is unused).
    pub const COUNT: usize = 12;
    /// Every reason, in number order.
    pub const ALL: [RejectReason; 11] = [
        RejectReason::Malformed,
        RejectReason::Decode,
        RejectReason::FormatNotAgreed,
        RejectReason::PrivDataNotAgreed,
        RejectReason::UnknownGroup,
        RejectReason::PasidMismatch,
        RejectReason::PrivDataMismatch,
        RejectReason::AlreadyAnswered,
        RejectReason::WrongDevice,
        RejectReason::ForeignGroup,
        RejectReason::UnknownCode,
    ];

    /// The reason with this number (as a verdict ring carries it).
    pub fn from_raw(raw: u32) -> Option<RejectReason> {
        RejectReason::ALL.into_iter().find(|r| *r as u32 == raw)
    }
}

impl core::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RejectReason::Malformed => "malformed response slot",
            RejectReason::Decode => "the response does not decode",
            RejectReason::FormatNotAgreed => "response format not agreed",
            RejectReason::PrivDataNotAgreed => "private data echo not agreed",
            RejectReason::UnknownGroup => "no outstanding group matches",
            RejectReason::PasidMismatch => "PASID missing or wrong",
            RejectReason::PrivDataMismatch => "private data missing or wrong",
            RejectReason::AlreadyAnswered => "the group has already been answered",
            RejectReason::WrongDevice => "the group belongs to another device",
            RejectReason::ForeignGroup => "the group belongs to another consumer",
            RejectReason::UnknownCode => "unknown response code",
        })
    }
}

/// A response the judge accepted, with its group taken out of the table
/// ([`GroupTable::take`]): everything the answer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken<T> {
    /// The group answered (no longer outstanding).
    pub cookie: Cookie,
    /// Its facts.
    pub facts: GroupFacts,
    /// The code.
    pub code: ResponseCode,
    /// What the stage kept with it.
    pub extra: T,
}

impl<T: Copy + Default> GroupTable<T> {
    /// Judges `response` from `who` against the outstanding groups, by the rules in this
    /// module's documentation. Changes nothing: on `Ok`, the caller answers the group and removes
    /// it (or calls [`take`](Self::take), which does both at once). Cost: O(1) by cookie; by
    /// grpid, O(groups of the device with that PRG index).
    pub fn judge(&self, who: &Responder, response: &Response) -> Result<Judged, Rejected> {
        let (idx, cookie, code) = self.judge_at(who, response)?;
        Ok(Judged {
            cookie,
            facts: self.facts_at(idx),
            code,
        })
    }

    /// Judges `response` as [`judge`](Self::judge) does and, accepted, removes its group from
    /// the table and returns it: one lookup for the common path of every stage (the core's
    /// `respond`, the producer's response slots, a consumer's own response).
    #[inline]
    pub fn take(&mut self, who: &Responder, response: &Response) -> Result<Taken<T>, Rejected> {
        let (idx, cookie, code) = self.judge_at(who, response)?;
        let (facts, extra) = self.remove_at(idx);
        Ok(Taken {
            cookie,
            facts,
            code,
            extra,
        })
    }

    /// The judge: the slot index and cookie of the group `response` answers, and its code.
    #[inline]
    pub(crate) fn judge_at(
        &self,
        who: &Responder,
        response: &Response,
    ) -> Result<(u32, Cookie, ResponseCode), Rejected> {
        let code = ResponseCode::decode(response.code)
            .map_err(|_| Rejected::UnknownCode(response.code))?;
        if response.private_data.is_some() && !who.agreed.contains(Features::PRIV_DATA_ECHO) {
            return Err(Rejected::NotAgreed(Features::PRIV_DATA_ECHO));
        }
        let (idx, cookie) = match response.group {
            GroupRef::Cookie(cookie) => (self.judge_cookie(who, cookie)?, cookie),
            GroupRef::Grpid { pasid, grpid } => self.judge_grpid(who, pasid, grpid)?,
        };
        if let Some(echoed) = response.private_data {
            if self.private_data_at(idx) != Some(echoed) {
                return Err(Rejected::PrivateDataMismatch(cookie));
            }
        }
        Ok((idx, cookie, code))
    }

    #[inline]
    fn judge_cookie(&self, who: &Responder, cookie: Cookie) -> Result<u32, Rejected> {
        if !who.agreed.contains(Features::COOKIE_RESPONSE) {
            return Err(Rejected::NotAgreed(Features::COOKIE_RESPONSE));
        }
        match self.named(cookie) {
            Named::Announced { idx, device, owner } => {
                if device != who.device {
                    Err(Rejected::WrongDevice { cookie, device })
                } else if owner != who.owner {
                    Err(Rejected::ForeignGroup(cookie))
                } else {
                    Ok(idx)
                }
            }
            Named::Answered => Err(Rejected::AlreadyAnswered(cookie)),
            // Held back (not handed out yet) or never: the responder cannot know it.
            Named::HeldBack | Named::Nothing => Err(Rejected::UnknownGroup),
        }
    }

    fn judge_grpid(
        &self,
        who: &Responder,
        pasid: Option<u32>,
        grpid: u32,
    ) -> Result<(u32, Cookie), Rejected> {
        let mut own_seen = false;
        let mut foreign = None;
        let found = self.find_in_chain(who.device, grpid, |cookie, f| {
            if f.owner != who.owner {
                foreign = foreign.or(Some(cookie));
                return false;
            }
            own_seen = true;
            match f.pasid {
                Some(p) if f.needs_pasid => pasid == Some(p),
                _ => true,
            }
        });
        match (found, own_seen, foreign) {
            (Some(hit), _, _) => Ok(hit),
            (None, true, _) => Err(Rejected::WrongPasid { grpid, got: pasid }),
            (None, false, Some(c)) => Err(Rejected::ForeignGroup(c)),
            (None, false, None) => Err(Rejected::UnknownGroup),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Naming;
    use iopf_abi::{PageRequest, PageRequestFlags, Perm};

    fn last(grpid: u32, pasid: Option<u32>, needs: bool, data: Option<[u64; 2]>) -> PageRequest {
        let mut flags = PageRequestFlags::LAST_PAGE;
        flags.set(PageRequestFlags::PASID_VALID, pasid.is_some());
        flags.set(PageRequestFlags::RESPONSE_NEEDS_PASID, needs);
        flags.set(PageRequestFlags::PRIV_DATA, data.is_some());
        PageRequest {
            flags,
            pasid: pasid.unwrap_or(0),
            grpid,
            perm: Perm::READ,
            addr: 0,
            private_data: data.unwrap_or([0; 2]),
        }
    }

    const ALL: Features = Features::COOKIE_RESPONSE.union(Features::PRIV_DATA_ECHO);

    fn who(device: u32, owner: u32) -> Responder {
        Responder {
            device,
            owner,
            agreed: ALL,
        }
    }

    fn by_grpid(pasid: Option<u32>, grpid: u32) -> Response {
        Response {
            group: GroupRef::Grpid { pasid, grpid },
            code: 0,
            private_data: None,
        }
    }

    #[test]
    fn a_pasid_the_device_does_not_need_is_ignored_as_linux_clears_it() {
        let mut t: GroupTable<()> = GroupTable::new(Naming::Own).with_prg_lookup();
        let c = t
            .insert(
                GroupFacts::of_last(0, 0, &last(4, Some(9), false, None)),
                (),
            )
            .unwrap();
        for pasid in [None, Some(9), Some(1)] {
            assert_eq!(t.judge(&who(0, 0), &by_grpid(pasid, 4)).unwrap().cookie, c);
        }
        // A request without a PASID: whatever the response gives.
        let c2 = t
            .insert(GroupFacts::of_last(0, 0, &last(5, None, true, None)), ())
            .unwrap();
        assert_eq!(
            t.judge(&who(0, 0), &by_grpid(Some(3), 5)).unwrap().cookie,
            c2
        );
    }

    #[test]
    fn a_needed_pasid_must_match_and_the_oldest_matching_group_is_answered() {
        let mut t: GroupTable<()> = GroupTable::new(Naming::Own).with_prg_lookup();
        let a = t
            .insert(GroupFacts::of_last(0, 0, &last(4, Some(1), true, None)), ())
            .unwrap();
        let b = t
            .insert(GroupFacts::of_last(0, 0, &last(4, Some(2), true, None)), ())
            .unwrap();
        assert_eq!(
            t.judge(&who(0, 0), &by_grpid(Some(2), 4)).unwrap().cookie,
            b
        );
        assert_eq!(
            t.judge(&who(0, 0), &by_grpid(Some(1), 4)).unwrap().cookie,
            a
        );
        assert_eq!(
            t.judge(&who(0, 0), &by_grpid(None, 4)),
            Err(Rejected::WrongPasid {
                grpid: 4,
                got: None
            })
        );
        assert_eq!(
            t.judge(&who(0, 1), &by_grpid(Some(1), 4)),
            Err(Rejected::ForeignGroup(a))
        );
        assert_eq!(
            t.judge(&who(1, 0), &by_grpid(Some(1), 4)),
            Err(Rejected::UnknownGroup),
            "another device's PRG index space"
        );
    }

    #[test]
    fn cookies_name_one_device_and_one_owner_and_answered_ones_are_duplicates() {
        let mut t: GroupTable<()> = GroupTable::new(Naming::Own).with_prg_lookup();
        let c = t
            .insert(GroupFacts::of_last(3, 2, &last(1, None, false, None)), ())
            .unwrap();
        let r = Response::by_cookie(c, ResponseCode::Invalid);
        assert_eq!(
            t.judge(&who(4, 2), &r),
            Err(Rejected::WrongDevice {
                cookie: c,
                device: 3
            })
        );
        assert_eq!(t.judge(&who(3, 1), &r), Err(Rejected::ForeignGroup(c)));
        let j = t.judge(&who(3, 2), &r).unwrap();
        assert_eq!(j.code, ResponseCode::Invalid);
        t.remove(c);
        assert_eq!(t.judge(&who(3, 2), &r), Err(Rejected::AlreadyAnswered(c)));
        let no_cookies = Responder {
            agreed: Features::empty(),
            ..who(3, 2)
        };
        assert_eq!(
            t.judge(&no_cookies, &r),
            Err(Rejected::NotAgreed(Features::COOKIE_RESPONSE))
        );
    }

    #[test]
    fn held_back_groups_cannot_be_answered_yet() {
        let mut t: GroupTable<()> = GroupTable::new(Naming::Own).with_prg_lookup();
        let c = t
            .insert_held_back(GroupFacts::of_last(0, 0, &last(1, None, false, None)), ())
            .unwrap();
        assert_eq!(
            t.judge(&who(0, 0), &Response::by_cookie(c, ResponseCode::Success)),
            Err(Rejected::UnknownGroup)
        );
        assert_eq!(
            t.judge(&who(0, 0), &by_grpid(None, 1)),
            Err(Rejected::UnknownGroup)
        );
        t.announce(c);
        assert!(t.judge(&who(0, 0), &by_grpid(None, 1)).is_ok());
    }

    #[test]
    fn private_data_is_the_last_requests_and_an_echo_must_equal_it() {
        let mut t: GroupTable<()> = GroupTable::new(Naming::Own).with_prg_lookup();
        let data = [7, 8];
        let c = t
            .insert(
                GroupFacts::of_last(0, 0, &last(1, None, false, Some(data))),
                (),
            )
            .unwrap();
        let mut r = Response::by_cookie(c, ResponseCode::Success);
        r.private_data = Some([7, 9]);
        assert_eq!(
            t.judge(&who(0, 0), &r),
            Err(Rejected::PrivateDataMismatch(c))
        );
        r.private_data = Some(data);
        assert_eq!(
            t.judge(&who(0, 0), &r).unwrap().facts.private_data,
            Some(data)
        );
        let no_echo = Responder {
            agreed: Features::COOKIE_RESPONSE,
            ..who(0, 0)
        };
        assert_eq!(
            t.judge(&no_echo, &r),
            Err(Rejected::NotAgreed(Features::PRIV_DATA_ECHO))
        );
        r.code = 3;
        assert_eq!(t.judge(&who(0, 0), &r), Err(Rejected::UnknownCode(3)));
    }

    #[test]
    fn reasons_have_stable_numbers() {
        for r in RejectReason::ALL {
            assert_eq!(RejectReason::from_raw(r as u32), Some(r));
        }
        assert_eq!(RejectReason::from_raw(0), None);
        assert_eq!(RejectReason::UnknownGroup as u32, 5);
        assert_eq!(RejectReason::ALL.len() + 1, RejectReason::COUNT);
    }
}
