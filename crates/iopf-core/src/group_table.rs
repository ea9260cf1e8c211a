//! The group table: every outstanding page request group of one stage of the fault path, named
//! by its [`Cookie`], with what its response is matched against and built from ([`GroupFacts`]).
//!
//! One table type for every stage, so that a group's bookkeeping and its response rules are
//! written once (DESIGN.md, "one rule, one place"):
//!
//! * the fault core keeps its delivered groups here (Linux: `iommufd/fault.c`'s
//!   `fault->response` xarray, cookie → group, and `iommu_fault_param.faults`);
//! * iopf's fault queue producer keeps the groups it pushed, under the core's cookie
//!   ([`Naming::Upstream`]) or its own;
//! * the queue's consumer, the iommufd-compatible queue and the vIOMMU bridge keep the groups
//!   they have handed out, under the cookie they were given.
//!
//! A response is judged by [`GroupTable::judge`] (`judge.rs`), the one implementation of the
//! matching rules.
//!
//! **Cookies.** A cookie is a slot index (low 20 bits) and the slot's generation (high 12 bits,
//! never 0, so a zeroed cookie is never live). A table that names its own groups
//! ([`Naming::Own`]) reuses freed slots oldest first and only once [`REUSE_DISTANCE`] are free,
//! so a cookie's value comes back only after `REUSE_DISTANCE × 4095` (over a million) later
//! groups: a very late response reads as answered or unknown, never as a new group's
//! (iommufd's `xa_alloc()` hands the lowest free cookie out again at once). A table that mirrors
//! another stage's names ([`Naming::Upstream`]) puts each group in the slot its cookie names.
//!
//! **Order and owners.** Each group has an *owner* (the core: the handler it was delivered to;
//! a queue: 0) and the table keeps every owner's groups in insertion order, so that detaching an
//! owner or expiring its oldest groups costs what it withdraws. Each group is also on the chain
//! of its (device, PRG index), oldest first (`prg_index.rs`), when the table was made with the
//! PRG-index lookup.
//!
//! **Announcement.** A group can be held back ([`GroupTable::insert_held_back`]): its cookie is
//! not yet known to whoever answers it (the producer's backlog, the kernel's `fault->deliver`
//! list before `read()`). A held-back group is outstanding but no response can name it until
//! [`GroupTable::announce`].
//!
//! Cost: insert, lookup, announce and remove are O(1); a table that names its own groups grows
//! its slot vector by a quarter (at least 1,024 slots) at a time and reuses freed slots, so it
//! stops allocating once grown to its working set.
//!
//! ```
//! use iopf_abi::{PageRequest, PageRequestFlags, Perm, ResponseCode};
//! use iopf_core::{GroupFacts, GroupRef, GroupTable, Naming, Responder, Response};
//!
//! let last = PageRequest { flags: PageRequestFlags::LAST_PAGE, pasid: 0, grpid: 7,
//!                          perm: Perm::READ, addr: 0x1000, private_data: [0; 2] };
//! let mut table: GroupTable<&str> = GroupTable::new(Naming::Own).with_prg_lookup().with_owner_order();
//! let cookie = table.insert(GroupFacts::of_last(0, 0, &last), "first group")?;
//! let who = Responder { device: 0, owner: 0, agreed: iopf_abi::Features::COOKIE_RESPONSE };
//! // By PRG index, as the old `iommu_page_response()` matched:
//! let by_grpid = Response { group: GroupRef::Grpid { pasid: None, grpid: 7 }, code: 0,
//!                           private_data: None };
//! let judged = table.judge(&who, &by_grpid).expect("outstanding");
//! assert_eq!((judged.cookie, judged.code), (cookie, ResponseCode::Success));
//! let (facts, extra) = table.remove(cookie).expect("outstanding");
//! assert_eq!((facts.grpid, extra), (7, "first group"));
//! // `take` judges and removes at once, the common path of every stage.
//! // Answered: a second response is a duplicate.
//! assert!(table.judge(&who, &Response::by_cookie(cookie, ResponseCode::Success)).is_err());
//! # Ok::<(), iopf_core::TableError>(())
//! ```

use iopf_abi::{PageRequest, PageRequestFlags};

use crate::ids::next_gen;
use std::cell::Cell;

use crate::prg_index::{PrgIndex, NIL};
use crate::Cookie;

/// What a group's response is matched against and built from: where it came from, who may
/// answer it, and its LAST_PAGE request's PASID, PRG index and private data
/// (`iopf_group.last_fault`, whose `prm` `iopf_group_response()` answers with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupFacts {
    /// The device whose PRG index space the group is in (the core: the device's slot; a queue,
    /// whose grpid-named responses carry no device: 0). Below 65,536 for the flat lookup.
    pub device: u32,
    /// Who may answer it (the core: the handler it was delivered to; a queue: 0).
    pub owner: u32,
    /// The LAST_PAGE request's PASID, if it had one.
    pub pasid: Option<u32>,
    /// The PRG index.
    pub grpid: u32,
    /// "PRG Response PASID Required" (`IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID` on the request):
    /// a grpid-named response must then give the request's PASID, and the device's response
    /// carries it.
    pub needs_pasid: bool,
    /// The LAST_PAGE request's private data, if it carried `PRIV_DATA`: what the device gets
    /// back, whatever a consumer echoes (Linux's VT-d driver answers with the stored request's
    /// `prm.private_data`).
    pub private_data: Option<[u64; 2]>,
}

impl GroupFacts {
    /// The facts of a group whose LAST_PAGE request is `last`: its PASID, PRG index,
    /// `RESPONSE_NEEDS_PASID` and private data (the LAST_PAGE request's, as Linux keeps
    /// `last_fault`; earlier requests' private data does not count).
    pub fn of_last(device: u32, owner: u32, last: &PageRequest) -> GroupFacts {
        GroupFacts {
            device,
            owner,
            pasid: last.pasid(),
            grpid: last.grpid,
            needs_pasid: last.flags.contains(PageRequestFlags::RESPONSE_NEEDS_PASID),
            private_data: last
                .flags
                .contains(PageRequestFlags::PRIV_DATA)
                .then_some(last.private_data),
        }
    }

    /// The PASID the device's response carries: the request's, when it had one and the device
    /// needs it (`iopf_group_response()` sets `IOMMU_PAGE_RESP_PASID_VALID` only then).
    pub fn response_pasid(&self) -> Option<u32> {
        if self.needs_pasid {
            self.pasid
        } else {
            None
        }
    }
}

/// Who names a table's groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Naming {
    /// The table hands out its own cookies ([`GroupTable::insert`]).
    Own,
    /// The table keeps groups under cookies another stage handed out (the core's, the
    /// producer's, the kernel's), in the slot each cookie names ([`GroupTable::insert_named`]).
    /// The slot vector grows to the highest slot named, at most [`Cookie::MAX_SLOTS`].
    Upstream,
}

/// Why a group could not be put in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// All [`Cookie::MAX_SLOTS`] slots are outstanding.
    #[error("the group table is full ({} groups outstanding)", Cookie::MAX_SLOTS)]
    Full,
    /// The call does not fit the table's [`Naming`] (`insert` on a mirror, `insert_named` on a
    /// table that names its own groups).
    #[error("the group table's groups are named {0:?}")]
    Naming(Naming),
    /// The cookie given names a slot that is outstanding, or has generation 0 (never a cookie).
    #[error("{0} cannot be taken: its slot is outstanding or it is not a cookie")]
    Taken(Cookie),
}

/// What a cookie names in a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// An outstanding group.
    Outstanding,
    /// A group that was answered; its slot has not been reused since.
    Answered,
    /// Nothing: never handed out, or its slot has been reused.
    Unknown,
}

/// What a cookie names, as the judge needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Named {
    Announced { idx: u32, device: u32, owner: u32 },
    HeldBack,
    Answered,
    Nothing,
}

/// Free slots are reused oldest-first, and only once at least this many are free.
pub const REUSE_DISTANCE: u32 = 256;

/// The slot vector grows by a quarter of its length, at least this many slots at a time, with
/// `reserve_exact`, rather than doubling: at most a quarter more slots are reserved than are in
/// use, and growth stays amortised O(1) per slot.
const GROWTH_MIN: usize = 1024;

const LIVE: u8 = 1;
const HAS_PASID: u8 = 2;
const NEEDS_PASID: u8 = 4;
const PRIV_DATA: u8 = 8;
const HELD_BACK: u8 = 16;

/// One slot: a group's facts packed (56 bytes) and the stage's own `extra`.
#[derive(Debug, Clone, Copy)]
struct Slot<T> {
    private_data: [u64; 2],
    pasid: u32,
    grpid: u32,
    device: u32,
    owner: u32,
    /// The same (device, PRG index) chain.
    prg_prev: u32,
    prg_next: u32,
    /// The owner's list; `next` also links the free list.
    prev: u32,
    next: u32,
    gen: u16,
    flags: u8,
    extra: T,
}

impl<T> Slot<T> {
    #[inline]
    fn live(&self) -> bool {
        self.flags & LIVE != 0
    }

    #[inline]
    fn facts(&self) -> GroupFacts {
        GroupFacts {
            device: self.device,
            owner: self.owner,
            pasid: (self.flags & HAS_PASID != 0).then_some(self.pasid),
            grpid: self.grpid,
            needs_pasid: self.flags & NEEDS_PASID != 0,
            private_data: (self.flags & PRIV_DATA != 0).then_some(self.private_data),
        }
    }

    /// Writes `facts` and marks the slot live (held back or not); links are the caller's.
    // Forced inline kept on measurement: docs/PERFORMANCE.md, "Forced inlining".
    #[inline(always)]
    fn fill(&mut self, facts: &GroupFacts, held_back: bool) {
        // A field its flag says is absent is never read: left as it was.
        let mut flags = LIVE;
        if let Some(p) = facts.pasid {
            flags |= HAS_PASID;
            self.pasid = p;
        }
        if facts.needs_pasid {
            flags |= NEEDS_PASID;
        }
        if let Some(d) = facts.private_data {
            flags |= PRIV_DATA;
            self.private_data = d;
        }
        if held_back {
            flags |= HELD_BACK;
        }
        self.grpid = facts.grpid;
        self.device = facts.device;
        self.owner = facts.owner;
        self.flags = flags;
    }
}

/// The head, tail and length of one owner's groups, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OwnerList {
    head: u32,
    tail: u32,
    len: u32,
}

impl OwnerList {
    const EMPTY: OwnerList = OwnerList {
        head: NIL,
        tail: NIL,
        len: 0,
    };
}

/// Every outstanding group of one stage, by cookie; see the module documentation. `T` is what
/// the stage keeps with each group besides its [`GroupFacts`] (the core: timestamps; the
/// producer: its owner's tag). Single-threaded (`&mut self` to change it), `Send` when `T` is.
#[derive(Debug)]
pub struct GroupTable<T> {
    slots: Vec<Slot<T>>,
    naming: Naming,
    /// Free slots, oldest first, linked through `next` (own naming only).
    free_head: u32,
    free_tail: u32,
    free_len: u32,
    /// Each owner's groups, indexed by owner (grown on demand), when `ordered`.
    owners: Vec<OwnerList>,
    ordered: bool,
    prg: Option<PrgIndex>,
    live: u32,
    walked: Cell<u64>,
}

impl<T: Copy + Default> GroupTable<T> {
    /// An empty table naming its groups as `naming` says, with neither the PRG-index lookup nor
    /// owner order (see [`with_prg_lookup`](Self::with_prg_lookup) and
    /// [`with_owner_order`](Self::with_owner_order)): what a table answered by cookie only needs.
    pub fn new(naming: Naming) -> GroupTable<T> {
        GroupTable {
            slots: Vec::new(),
            naming,
            free_head: NIL,
            free_tail: NIL,
            free_len: 0,
            owners: Vec::new(),
            ordered: false,
            prg: None,
            live: 0,
            walked: Cell::new(0),
        }
    }

    /// This table with the PRG-index lookup: [`GroupTable::judge`] by (PASID, grpid),
    /// [`GroupTable::oldest_with_grpid`], [`GroupTable::announced_with_grpid`]. Costs a chain
    /// link on every insert and removal.
    pub fn with_prg_lookup(mut self) -> GroupTable<T> {
        self.prg = Some(PrgIndex::default());
        self
    }

    /// This table keeping each owner's groups in insertion order: [`first_of`](Self::first_of),
    /// [`next_of_owner`](Self::next_of_owner), [`owner_len`](Self::owner_len), and
    /// [`cookies_of`](Self::cookies_of) without a scan. Costs a list link on every insert and
    /// removal.
    pub fn with_owner_order(mut self) -> GroupTable<T> {
        self.ordered = true;
        self
    }

    /// How the table names its groups.
    pub fn naming(&self) -> Naming {
        self.naming
    }

    /// Whether the table has the PRG-index lookup.
    pub fn has_prg_lookup(&self) -> bool {
        self.prg.is_some()
    }

    /// Outstanding groups (held back or announced).
    pub fn len(&self) -> usize {
        self.live as usize
    }

    /// Whether no group is outstanding.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Outstanding groups of `owner` (0 on a table without owner order).
    pub fn owner_len(&self, owner: u32) -> usize {
        self.owners
            .get(owner as usize)
            .map_or(0, |l| l.len as usize)
    }

    /// Chain and list links followed so far by lookups that walk (grpid matching, teardown
    /// scans): a measure of work that tests can bound without timing anything.
    pub fn links_walked(&self) -> u64 {
        self.walked.get()
    }

    /// Puts an announced group in a table that names its own groups and returns its new cookie.
    /// Errors: [`TableError::Full`], [`TableError::Naming`] on an [`Naming::Upstream`] table.
    #[inline]
    pub fn insert(&mut self, facts: GroupFacts, extra: T) -> Result<Cookie, TableError> {
        self.insert_own(facts, extra, false)
    }

    /// [`GroupTable::insert`] for a group held back until [`GroupTable::announce`].
    pub fn insert_held_back(&mut self, facts: GroupFacts, extra: T) -> Result<Cookie, TableError> {
        self.insert_own(facts, extra, true)
    }

    // Forced inline kept on measurement: docs/PERFORMANCE.md, "Forced inlining".
    #[inline(always)]
    fn insert_own(
        &mut self,
        facts: GroupFacts,
        extra: T,
        held_back: bool,
    ) -> Result<Cookie, TableError> {
        if self.naming != Naming::Own {
            return Err(TableError::Naming(self.naming));
        }
        let idx = self.alloc()?;
        let s = &mut self.slots[idx as usize];
        s.gen = next_gen(s.gen, Cookie::MAX_GEN);
        let cookie = Cookie::new(idx, s.gen);
        s.fill(&facts, held_back);
        s.extra = extra;
        self.link(idx);
        Ok(cookie)
    }

    /// Puts an announced group in a mirror table ([`Naming::Upstream`]) under the cookie another
    /// stage gave it. A slot still holding a group under an *older* generation is taken over:
    /// the upstream only reuses a slot once its group was answered, so that entry is a group this
    /// table was never told had gone (a consumer is not told of the core's withdrawals), and the
    /// new group must not be refused for it. Errors: [`TableError::Naming`] on a table that names
    /// its own groups, [`TableError::Taken`] when an outstanding group already has this very
    /// cookie or the cookie has generation 0 (nothing changes then).
    #[inline]
    pub fn insert_named(
        &mut self,
        cookie: Cookie,
        facts: GroupFacts,
        extra: T,
    ) -> Result<(), TableError> {
        self.insert_upstream(cookie, facts, extra, false)
    }

    /// In a mirror, the outstanding group that `cookie`'s slot holds under another generation
    /// (one [`insert_named`](Self::insert_named) would take over), if any.
    pub fn stale_for(&self, cookie: Cookie) -> Option<Cookie> {
        let s = self.slots.get(cookie.index())?;
        (s.live() && s.gen != cookie.gen()).then(|| Cookie::new(cookie.index() as u32, s.gen))
    }

    /// [`GroupTable::insert_named`] for a group held back until [`GroupTable::announce`].
    pub fn insert_named_held_back(
        &mut self,
        cookie: Cookie,
        facts: GroupFacts,
        extra: T,
    ) -> Result<(), TableError> {
        self.insert_upstream(cookie, facts, extra, true)
    }

    // Forced inline kept on measurement: docs/PERFORMANCE.md, "Forced inlining".
    #[inline(always)]
    fn insert_upstream(
        &mut self,
        cookie: Cookie,
        facts: GroupFacts,
        extra: T,
        held_back: bool,
    ) -> Result<(), TableError> {
        if self.naming != Naming::Upstream {
            return Err(TableError::Naming(self.naming));
        }
        let idx = cookie.index();
        if cookie.gen() == 0 {
            return Err(TableError::Taken(cookie));
        }
        match self.slots.get(idx) {
            Some(s) if s.live() && s.gen == cookie.gen() => return Err(TableError::Taken(cookie)),
            // A stale group under an older generation: it has gone upstream.
            Some(s) if s.live() => {
                self.remove_at(idx as u32);
            }
            _ => {}
        }
        while self.slots.len() <= idx {
            self.grow_one();
        }
        let s = &mut self.slots[idx];
        s.gen = cookie.gen();
        s.fill(&facts, held_back);
        s.extra = extra;
        self.link(idx as u32);
        Ok(())
    }

    /// What `cookie` names.
    #[inline]
    pub fn lookup(&self, cookie: Cookie) -> Lookup {
        match self.slots.get(cookie.index()) {
            Some(s) if s.gen == cookie.gen() && cookie.gen() != 0 => {
                if s.live() {
                    Lookup::Outstanding
                } else {
                    Lookup::Answered
                }
            }
            _ => Lookup::Unknown,
        }
    }

    /// The outstanding group `cookie` names, if any: its facts and extra.
    #[inline]
    pub fn get(&self, cookie: Cookie) -> Option<(GroupFacts, &T)> {
        let s = self.live_slot(cookie)?;
        Some((s.facts(), &s.extra))
    }

    /// The extra of the outstanding group `cookie` names, mutably.
    #[inline]
    pub fn extra_mut(&mut self, cookie: Cookie) -> Option<&mut T> {
        let idx = self.live_index(cookie)?;
        Some(&mut self.slots[idx].extra)
    }

    /// Whether the outstanding group `cookie` names is held back (`None`: not outstanding).
    pub fn is_held_back(&self, cookie: Cookie) -> Option<bool> {
        self.live_slot(cookie).map(|s| s.flags & HELD_BACK != 0)
    }

    /// Announces a held-back group: responses may name it from now on. Returns whether `cookie`
    /// named an outstanding group (announcing an announced one changes nothing).
    #[inline]
    pub fn announce(&mut self, cookie: Cookie) -> bool {
        match self.live_index(cookie) {
            Some(idx) => {
                self.slots[idx].flags &= !HELD_BACK;
                true
            }
            None => false,
        }
    }

    /// Removes the outstanding group `cookie` names (from its owner's list and its PRG-index
    /// chain too) and returns its facts and extra. Its slot keeps the generation, so the cookie
    /// reads [`Lookup::Answered`] until the slot is reused.
    #[inline]
    pub fn remove(&mut self, cookie: Cookie) -> Option<(GroupFacts, T)> {
        let idx = self.live_index(cookie)? as u32;
        Some(self.remove_at(idx))
    }

    /// Removes the live slot `idx`.
    // Forced inline kept on measurement: docs/PERFORMANCE.md, "Forced inlining".
    #[inline(always)]
    pub(crate) fn remove_at(&mut self, idx: u32) -> (GroupFacts, T) {
        self.unlink(idx);
        let s = &mut self.slots[idx as usize];
        let out = (s.facts(), s.extra);
        s.flags = 0;
        self.live -= 1;
        if self.naming == Naming::Own {
            self.release(idx);
        }
        out
    }

    /// The oldest outstanding group of `owner` (`None` on a table without owner order).
    pub fn first_of(&self, owner: u32) -> Option<Cookie> {
        let l = self.owners.get(owner as usize)?;
        (l.head != NIL).then(|| self.cookie_at(l.head))
    }

    /// The outstanding group after `cookie` in its owner's insertion order (a step counted in
    /// [`links_walked`](Self::links_walked); `None` on a table without owner order).
    #[inline]
    pub fn next_of_owner(&self, cookie: Cookie) -> Option<Cookie> {
        let s = self.live_slot(cookie)?;
        self.count_walk(1);
        (s.next != NIL).then(|| self.cookie_at(s.next))
    }

    /// The cookies of `owner`'s outstanding groups, oldest first (collected, so the caller may
    /// remove them as it goes). Without owner order, a scan of every slot, in slot order.
    pub fn cookies_of(&self, owner: u32, out: &mut Vec<Cookie>) {
        if !self.ordered {
            self.scan(out, |s| s.owner == owner);
            return;
        }
        let mut cur = self.owners.get(owner as usize).map_or(NIL, |l| l.head);
        while cur != NIL {
            out.push(self.cookie_at(cur));
            cur = self.slots[cur as usize].next;
            self.count_walk(1);
        }
    }

    /// The cookies of every outstanding group: owner by owner, each owner's oldest first, or,
    /// without owner order, in slot order.
    pub fn cookies(&self, out: &mut Vec<Cookie>) {
        if !self.ordered {
            self.scan(out, |_| true);
            return;
        }
        for owner in 0..self.owners.len() as u32 {
            self.cookies_of(owner, out);
        }
    }

    /// The cookies of the outstanding slots `keep` takes, in slot order (every slot a step).
    fn scan(&self, out: &mut Vec<Cookie>, keep: impl Fn(&Slot<T>) -> bool) {
        for (i, s) in self.slots.iter().enumerate() {
            if s.live() && keep(s) {
                out.push(Cookie::new(i as u32, s.gen));
            }
        }
        self.count_walk(self.slots.len() as u64);
    }

    /// The oldest outstanding group of (`device`, `grpid`), held back or not. `None` also when
    /// the table has no PRG-index lookup.
    pub fn oldest_with_grpid(&self, device: u32, grpid: u32) -> Option<Cookie> {
        let head = self.prg.as_ref()?.get(device, grpid).head;
        (head != NIL).then(|| self.cookie_at(head))
    }

    /// Whether an older group with the same (device, PRG index) as `cookie`'s is outstanding (a
    /// device reusing an index before its response). O(1); `false` without the PRG lookup.
    #[inline]
    pub fn has_older_same_grpid(&self, cookie: Cookie) -> bool {
        self.prg.is_some() && self.live_slot(cookie).is_some_and(|s| s.prg_prev != NIL)
    }

    /// Whether an announced group of (`device`, `grpid`) is outstanding (one a grpid-named
    /// response could answer). Walks the chain past held-back groups.
    #[inline]
    pub fn announced_with_grpid(&self, device: u32, grpid: u32) -> bool {
        let Some(prg) = self.prg.as_ref() else {
            return false;
        };
        let mut cur = prg.get(device, grpid).head;
        while cur != NIL {
            let s = &self.slots[cur as usize];
            if s.flags & HELD_BACK == 0 {
                return true;
            }
            cur = s.prg_next;
            self.count_walk(1);
        }
        false
    }

    // ---- for the judge (judge.rs) ----

    /// The outstanding slot `cookie` names.
    #[inline]
    fn live_slot(&self, cookie: Cookie) -> Option<&Slot<T>> {
        self.slots
            .get(cookie.index())
            .filter(|s| s.live() && s.gen == cookie.gen())
    }

    #[inline]
    fn live_index(&self, cookie: Cookie) -> Option<usize> {
        self.live_slot(cookie).map(|_| cookie.index())
    }

    #[inline]
    fn cookie_at(&self, idx: u32) -> Cookie {
        Cookie::new(idx, self.slots[idx as usize].gen)
    }

    /// What `cookie` names, for the judge: the slot index of an announced outstanding group
    /// with its device and owner, or how it is not one.
    #[inline]
    pub(crate) fn named(&self, cookie: Cookie) -> Named {
        match self.slots.get(cookie.index()) {
            Some(s) if s.gen == cookie.gen() && cookie.gen() != 0 => {
                if !s.live() {
                    Named::Answered
                } else if s.flags & HELD_BACK != 0 {
                    Named::HeldBack
                } else {
                    Named::Announced {
                        idx: cookie.index() as u32,
                        device: s.device,
                        owner: s.owner,
                    }
                }
            }
            _ => Named::Nothing,
        }
    }

    /// The private data of the live slot `idx`, if it has any.
    #[inline]
    pub(crate) fn private_data_at(&self, idx: u32) -> Option<[u64; 2]> {
        let s = &self.slots[idx as usize];
        (s.flags & PRIV_DATA != 0).then_some(s.private_data)
    }

    /// The facts of the live slot `idx`.
    #[inline]
    pub(crate) fn facts_at(&self, idx: u32) -> GroupFacts {
        self.slots[idx as usize].facts()
    }

    /// Walks the (device, grpid) chain oldest first, calling `visit` with each announced group
    /// (its cookie and facts) until it returns `true`; returns that group's slot index and cookie.
    #[inline]
    pub(crate) fn find_in_chain(
        &self,
        device: u32,
        grpid: u32,
        mut visit: impl FnMut(Cookie, &GroupFacts) -> bool,
    ) -> Option<(u32, Cookie)> {
        let prg = self.prg.as_ref()?;
        let mut cur = prg.get(device, grpid).head;
        while cur != NIL {
            let s = &self.slots[cur as usize];
            if s.flags & HELD_BACK == 0 {
                let cookie = Cookie::new(cur, s.gen);
                if visit(cookie, &s.facts()) {
                    return Some((cur, cookie));
                }
            }
            cur = s.prg_next;
            self.count_walk(1);
        }
        None
    }

    #[inline]
    fn count_walk(&self, steps: u64) {
        self.walked.set(self.walked.get() + steps);
    }

    // ---- slots, lists and chains ----

    /// A free slot: the oldest free one once [`REUSE_DISTANCE`] are free (or no new slot can be
    /// made), else a new one.
    // Forced inline kept on measurement: docs/PERFORMANCE.md, "Forced inlining".
    #[inline(always)]
    fn alloc(&mut self) -> Result<u32, TableError> {
        let full = self.slots.len() >= Cookie::MAX_SLOTS;
        if self.free_len >= REUSE_DISTANCE || (full && self.free_len > 0) {
            let idx = self.free_head;
            self.free_head = self.slots[idx as usize].next;
            if self.free_head == NIL {
                self.free_tail = NIL;
            }
            self.free_len -= 1;
            Ok(idx)
        } else if full {
            Err(TableError::Full)
        } else {
            Ok(self.grow_one())
        }
    }

    /// Makes one more slot (empty, generation 0); returns its index.
    fn grow_one(&mut self) -> u32 {
        if self.slots.len() == self.slots.capacity() {
            let grow = (self.slots.len() / 4).max(GROWTH_MIN);
            self.slots.reserve_exact(grow);
        }
        self.slots.push(Slot {
            private_data: [0; 2],
            pasid: 0,
            grpid: 0,
            device: 0,
            owner: 0,
            prg_prev: NIL,
            prg_next: NIL,
            prev: NIL,
            next: NIL,
            gen: 0,
            flags: 0,
            extra: T::default(),
        });
        (self.slots.len() - 1) as u32
    }

    /// Returns a freed slot to the end of the free list.
    // Forced inline kept on measurement: docs/PERFORMANCE.md, "Forced inlining".
    #[inline(always)]
    fn release(&mut self, idx: u32) {
        self.slots[idx as usize].next = NIL;
        if self.free_tail == NIL {
            self.free_head = idx;
        } else {
            self.slots[self.free_tail as usize].next = idx;
        }
        self.free_tail = idx;
        self.free_len += 1;
    }

    /// Appends the newly filled slot `idx` to its owner's list and its PRG-index chain.
    // Forced inline kept on measurement: docs/PERFORMANCE.md, "Forced inlining".
    #[inline(always)]
    fn link(&mut self, idx: u32) {
        self.live += 1;
        let (owner, device, grpid) = {
            let s = &self.slots[idx as usize];
            (s.owner as usize, s.device, s.grpid)
        };
        if self.ordered {
            if owner >= self.owners.len() {
                self.owners.resize(owner + 1, OwnerList::EMPTY);
            }
            let list = &mut self.owners[owner];
            let tail = list.tail;
            if tail == NIL {
                list.head = idx;
            }
            list.tail = idx;
            list.len += 1;
            if tail != NIL {
                self.slots[tail as usize].next = idx;
            }
            let s = &mut self.slots[idx as usize];
            s.prev = tail;
            s.next = NIL;
        }
        let Some(prg) = self.prg.as_mut() else {
            return;
        };
        let mut tail = NIL;
        prg.update(device, grpid, |chain| {
            tail = chain.tail;
            chain.tail = idx;
            if tail == NIL {
                chain.head = idx;
            }
        });
        let s = &mut self.slots[idx as usize];
        s.prg_prev = tail;
        s.prg_next = NIL;
        if tail != NIL {
            self.slots[tail as usize].prg_next = idx;
        }
    }

    /// Takes the live slot `idx` out of its owner's list and its PRG-index chain.
    // Forced inline kept on measurement: docs/PERFORMANCE.md, "Forced inlining".
    #[inline(always)]
    fn unlink(&mut self, idx: u32) {
        if self.ordered {
            let (prev, next, owner) = {
                let s = &self.slots[idx as usize];
                (s.prev, s.next, s.owner as usize)
            };
            if let Some(list) = self.owners.get_mut(owner) {
                if prev == NIL {
                    list.head = next;
                }
                if next == NIL {
                    list.tail = prev;
                }
                list.len -= 1;
            }
            if prev != NIL {
                self.slots[prev as usize].next = next;
            }
            if next != NIL {
                self.slots[next as usize].prev = prev;
            }
        }
        let Some(prg) = self.prg.as_mut() else {
            return;
        };
        let (pprev, pnext, device, grpid) = {
            let s = &self.slots[idx as usize];
            (s.prg_prev, s.prg_next, s.device, s.grpid)
        };
        if pprev == NIL || pnext == NIL {
            prg.update(device, grpid, |chain| {
                if pprev == NIL {
                    chain.head = pnext;
                }
                if pnext == NIL {
                    chain.tail = pprev;
                }
            });
        }
        if pprev != NIL {
            self.slots[pprev as usize].prg_next = pnext;
        }
        if pnext != NIL {
            self.slots[pnext as usize].prg_prev = pprev;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iopf_abi::Perm;

    fn last(grpid: u32, pasid: Option<u32>) -> PageRequest {
        let mut flags = PageRequestFlags::LAST_PAGE;
        flags.set(PageRequestFlags::PASID_VALID, pasid.is_some());
        PageRequest {
            flags,
            pasid: pasid.unwrap_or(0),
            grpid,
            perm: Perm::READ,
            addr: 0,
            private_data: [0; 2],
        }
    }

    fn facts(owner: u32, grpid: u32) -> GroupFacts {
        GroupFacts::of_last(0, owner, &last(grpid, None))
    }

    #[test]
    fn a_slot_with_the_cores_extra_is_80_bytes() {
        #[derive(Clone, Copy, Default)]
        #[allow(dead_code)]
        struct CoreExtra {
            first_at: u64,
            completed_at: u64,
            requests: u32,
            aged: bool,
        }
        assert_eq!(core::mem::size_of::<Slot<CoreExtra>>(), 80);
        assert_eq!(core::mem::size_of::<Slot<()>>(), 56);
    }

    #[test]
    fn cookie_of_answered_group_reads_answered_until_reuse() {
        let mut t: GroupTable<()> = GroupTable::new(Naming::Own);
        let ca = t.insert(facts(0, 1), ()).unwrap();
        assert_eq!(t.lookup(ca), Lookup::Outstanding);
        t.remove(ca).unwrap();
        assert_eq!(t.lookup(ca), Lookup::Answered);
        for _ in 1..REUSE_DISTANCE {
            let c = t.insert(facts(0, 1), ()).unwrap();
            assert_ne!(c.index(), ca.index());
            t.remove(c).unwrap();
        }
        assert_eq!(t.lookup(ca), Lookup::Answered);
        let cb = t.insert(facts(0, 1), ()).unwrap();
        assert_eq!(
            cb.index(),
            ca.index(),
            "the oldest free slot is reused first"
        );
        assert_ne!(cb, ca, "a reused slot gets a new cookie");
        assert_eq!(t.lookup(ca), Lookup::Unknown);
        assert_eq!(t.lookup(Cookie::from_raw(0)), Lookup::Unknown);
    }

    #[test]
    fn a_cookie_value_recurs_only_after_a_million_groups() {
        let mut t: GroupTable<()> = GroupTable::new(Naming::Own);
        let c0 = t.insert(facts(0, 1), ()).unwrap();
        t.remove(c0).unwrap();
        let distance = REUSE_DISTANCE as usize * Cookie::MAX_GEN as usize;
        for n in 1..=distance {
            let c = t.insert(facts(0, 1), ()).unwrap();
            t.remove(c).unwrap();
            if c == c0 {
                assert_eq!(n, distance, "cookie came back after {n} groups");
                return;
            }
        }
        panic!("the cookie never came back within {distance} groups plus one");
    }

    #[test]
    fn owners_keep_insertion_order_through_removals() {
        let mut t: GroupTable<u32> = GroupTable::new(Naming::Own)
            .with_prg_lookup()
            .with_owner_order();
        let c: Vec<Cookie> = (0..6)
            .map(|i| t.insert(facts(i % 2, i), i).unwrap())
            .collect();
        t.remove(c[2]).unwrap();
        let mut out = Vec::new();
        t.cookies_of(0, &mut out);
        assert_eq!(out, vec![c[0], c[4]]);
        assert_eq!(t.first_of(1), Some(c[1]));
        assert_eq!(t.next_of_owner(c[1]), Some(c[3]));
        assert_eq!((t.owner_len(0), t.owner_len(1), t.len()), (2, 3, 5));
    }

    #[test]
    fn a_prg_index_reused_many_times_joins_and_leaves_its_chain_in_constant_time() {
        let mut t: GroupTable<()> = GroupTable::new(Naming::Own)
            .with_prg_lookup()
            .with_owner_order();
        let n = 10_000;
        let cookies: Vec<Cookie> = (0..n).map(|_| t.insert(facts(0, 5), ()).unwrap()).collect();
        assert_eq!(t.oldest_with_grpid(0, 5), Some(cookies[0]));
        // Leave from the middle, the end and the front, in a scattered order.
        for i in (0..n).step_by(7).chain((0..n).rev()) {
            t.remove(cookies[i]);
        }
        assert!(t.is_empty());
        assert_eq!(t.oldest_with_grpid(0, 5), None);
        assert_eq!(t.links_walked(), 0, "no chain was walked");
    }

    #[test]
    fn held_back_groups_are_outstanding_but_not_announced() {
        let mut t: GroupTable<()> = GroupTable::new(Naming::Own)
            .with_prg_lookup()
            .with_owner_order();
        let c = t.insert_held_back(facts(0, 9), ()).unwrap();
        assert_eq!(t.is_held_back(c), Some(true));
        assert!(!t.announced_with_grpid(0, 9));
        assert_eq!(t.oldest_with_grpid(0, 9), Some(c));
        assert!(t.announce(c));
        assert!(t.announced_with_grpid(0, 9));
        assert_eq!(t.is_held_back(c), Some(false));
    }

    #[test]
    fn a_mirror_takes_the_names_it_is_given() {
        let mut up: GroupTable<()> = GroupTable::new(Naming::Own);
        let mut mirror: GroupTable<()> = GroupTable::new(Naming::Upstream);
        let c = up.insert(facts(0, 3), ()).unwrap();
        mirror.insert_named(c, facts(0, 3), ()).unwrap();
        assert_eq!(
            mirror.insert_named(c, facts(0, 3), ()),
            Err(TableError::Taken(c))
        );
        assert_eq!(
            mirror.insert(facts(0, 3), ()),
            Err(TableError::Naming(Naming::Upstream))
        );
        assert_eq!(
            mirror.insert_named(Cookie::from_raw(5), facts(0, 3), ()),
            Err(TableError::Taken(Cookie::from_raw(5))),
            "generation 0 is never a cookie"
        );
        mirror.remove(c).unwrap();
        assert_eq!(mirror.lookup(c), Lookup::Answered);
        // The upstream answered a group this mirror was not told of, and reuses its slot under a
        // new generation: the new group takes the slot, the stale one is gone.
        let stale = up.insert(facts(0, 5), ()).unwrap();
        mirror.insert_named(stale, facts(0, 5), ()).unwrap();
        up.remove(stale).unwrap();
        let newer = Cookie::new(stale.index() as u32, stale.gen() + 1);
        mirror.insert_named(newer, facts(0, 6), ()).unwrap();
        assert_eq!(mirror.lookup(stale), Lookup::Unknown);
        assert_eq!(mirror.get(newer).map(|(f, _)| f.grpid), Some(6));
        assert_eq!(mirror.len(), 1);
        mirror.remove(newer).unwrap();
        // The upstream reuses the slot under a new generation: the mirror follows.
        let far = Cookie::new(40_000, 3);
        mirror.insert_named(far, facts(0, 4), ()).unwrap();
        assert_eq!(mirror.lookup(far), Lookup::Outstanding);
        assert_eq!(mirror.len(), 1);
    }
}
