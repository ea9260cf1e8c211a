//! The bridge: host fault queue → the guest's page request queue, and the guest's page
//! responses → the host. Architecture-neutral: a vIOMMU model implements [`GuestQueue`] (VT-d:
//! [`crate::vtd::VtdPri::guest_queue`]) and turns its command queue's responses into
//! [`GuestResponse`]s.
//!
//! ```text
//!  host FaultConsumer ──read whole groups──▶ staged ──post, room allowing──▶ GuestQueue
//!    (fault fd, iopf queue,                     │ endpoint: host dev_id → guest rid, PASID map
//!     compatible queue)                         ▼
//!        ▲                       GroupTable (rid, PASID, PRG index) → host cookie
//!        │                                      │ the judge (iopf-core): exactly one match
//!        └──── owed host answers ◀── code_map ◀─┴──── GuestResponse ◀── guest's command queue
//! ```
//!
//! **Exactly once.** Every host group the bridge reads is answered to the host exactly once: by
//! the guest's response (translated by [`crate::code_map::guest_to_host`]), or by the bridge
//! itself for a reason it counts ([`HostAnswer`]): a function the VMM did not configure, a PASID
//! it did not map, PRI or the queue disabled, the vIOMMU reset, the guest's queue overflowing
//! (the hardware's own answer), the opt-in age limit. A guest response that matches no
//! outstanding group (a duplicate, an unknown PRG index, the wrong PASID or requester id, a
//! private-data echo that differs) answers nothing and is counted by the judge's
//! [`RejectReason`](iopf_core::RejectReason). Dropping the bridge drops the host consumer, whose queue answers INVALID
//! every group still held (iopf's queues and, on detach, Linux).
//!
//! **Backpressure, not failure.** The bridge posts a group only when the guest's queue has room
//! for all of it, and otherwise leaves it staged (and the rest in the host queue, which holds
//! its backlog); the guest's overflow (VT-d: `PRS.PRO`) is never triggered by the bridge, except
//! by a group larger than the whole queue, which is posted into an empty queue so that the
//! hardware's overflow rule answers it. Nothing the guest does makes the bridge answer FAILURE.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use iopf_abi::{
    FaultConsumer, Features, IommufdResponse, Perm, PgFault, PgfaultFlags, ResponseCode,
};
use iopf_core::{GroupFacts, GroupRef, GroupTable, Naming, Rejected, Responder, Response};

use crate::code_map;

/// Records the bridge reads from the host beyond what the guest can take, to age them (only
/// with an age limit, while the guest's queue is full).
const HELD_BACK_LIMIT: usize = 1 << 18;

/// Whether page requests and responses carry private data: negotiated from the host path
/// ([`FaultConsumer::carries_private_data`]) and the guest (a VT-d 3.x guest echoes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PrivateDataMode {
    /// VT-d 4.0 (and every other architecture): no private data; the host restores a device's
    /// private data itself.
    #[default]
    None,
    /// VT-d 3.x: the LAST_PAGE request carries private data and the guest echoes it.
    Carried,
}

/// A page request as the bridge posts it, in the guest's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GuestPageRequest {
    /// The function's requester id in the guest.
    pub rid: u16,
    /// The PASID in the guest, if the request has one.
    pub pasid: Option<u32>,
    /// The PRG index (9 bits), or an SMMUv3 stall's `STAG` (16 bits): see [`GroupNaming`].
    pub prg_index: u16,
    /// Read, write, execute, privileged.
    pub perm: Perm,
    /// The page address.
    pub addr: u64,
    /// Last page in group.
    pub last: bool,
    /// Private data ([`PrivateDataMode::Carried`], on the last request only).
    pub private_data: Option<[u64; 2]>,
}

/// The guest's page response, decoded from its command queue, in PCIe's code meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GuestResponse {
    /// The requester id it names.
    pub rid: u16,
    /// The PASID it names, if any.
    pub pasid: Option<u32>,
    /// The PRG index, or the stall tag.
    pub prg_index: u16,
    /// The code.
    pub code: ResponseCode,
    /// Echoed private data, if the guest echoed any.
    pub private_data: Option<[u64; 2]>,
}

/// What became of one request offered to a guest queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Posted {
    /// It is in the guest's queue.
    Queued,
    /// The queue overflowed and dropped it; nothing answers it (a request that is not last).
    Dropped,
    /// The queue overflowed and the hardware answered its group itself with this code (VT-d
    /// and SMMUv3 answer a dropped last request Success: the device retries).
    AnsweredByHardware(ResponseCode),
    /// The queue's memory could not be written: the request is not in the queue.
    Unreachable,
}

/// How a guest's queue names one function's groups, and so how its responses are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupNaming {
    /// Bits of the group tag: 9 for a PRG index (PRI on every architecture), 16 for an SMMUv3
    /// stall tag (`STAG`). The bridge keeps the host grpid's low `tag_bits` bits.
    pub tag_bits: u32,
    /// Whether the guest's response names the PASID of a group that has one: VT-d and AMD do
    /// (and a response with the wrong PASID matches nothing); an SMMUv3 stream whose STE has
    /// `PPAR` = 0 does not, nor does a stall (`CMD_RESUME` carries no SubstreamID).
    pub response_names_pasid: bool,
    /// Whether the guest's queue carries one request per group (an SMMUv3 stall: one event
    /// record per stalled transaction). A host group of more records is posted as one request:
    /// its last record's address with every record's permissions.
    pub one_request_per_group: bool,
}

impl GroupNaming {
    /// PCIe PRI: a 9-bit PRG index, the response names the PASID.
    pub const PRI: GroupNaming = GroupNaming {
        tag_bits: 9,
        response_names_pasid: true,
        one_request_per_group: false,
    };
    /// PCIe PRI on an SMMUv3 stream whose STE has `PPAR` = 0: the response carries no PASID.
    pub const PRI_NO_PASID_IN_RESPONSE: GroupNaming = GroupNaming {
        tag_bits: 9,
        response_names_pasid: false,
        one_request_per_group: false,
    };
    /// An SMMUv3 stall: one transaction per group, named by its 16-bit `STAG`.
    pub const STALL: GroupNaming = GroupNaming {
        tag_bits: 16,
        response_names_pasid: false,
        one_request_per_group: true,
    };

    /// The mask of the tag's bits.
    pub fn tag_mask(self) -> u32 {
        if self.tag_bits >= 32 {
            u32::MAX
        } else {
            (1u32 << self.tag_bits) - 1
        }
    }
}

/// A guest-visible page request queue, as the bridge needs it. `rid` names the function a
/// group is for: an architecture with more than one queue (SMMUv3: the PRI queue for PRI
/// functions, the event queue for stalling ones) answers for the queue that function's
/// requests go to.
pub trait GuestQueue {
    /// Whether the guest has the queue `rid`'s requests go to on (VT-d: `PQA` programmed).
    /// While off, the bridge answers `rid`'s groups INVALID ([`HostAnswer::QueueOff`]).
    fn enabled(&self, rid: u16) -> bool;
    /// How many requests that queue takes now without overflowing (0 while an overflow waits
    /// for the guest to clear it).
    fn room(&self, rid: u16) -> usize;
    /// How many that queue holds when empty.
    fn capacity(&self, rid: u16) -> usize;
    /// How `rid`'s groups are named ([`GroupNaming::PRI`] unless the architecture says
    /// otherwise).
    fn naming(&self, rid: u16) -> GroupNaming {
        let _ = rid;
        GroupNaming::PRI
    }
    /// What the guest's descriptors carry.
    fn private_data_mode(&self) -> PrivateDataMode;
    /// Writes one request into its queue (or overflows, by the architecture's rule).
    fn post(&mut self, req: &GuestPageRequest) -> Posted;
    /// Called after a batch of posts: raises the guest's interrupts if the architecture says so.
    fn notify(&mut self);
}

/// Where a vIOMMU's command processing hands the guest's page responses: the bridge
/// ([`Bridge`] implements it). Every architecture's command queue (VT-d's invalidation queue,
/// SMMUv3's command queue, AMD's command buffer) takes one.
pub trait PageResponseSink {
    /// One page response, in queue order. Whether it matched a group is the sink's to count.
    fn page_response(&mut self, response: &GuestResponse);
    /// Whether every response handed over so far has reached the host queue; tries to send
    /// what is owed first. A completion command (VT-d wait descriptor, `CMD_SYNC`,
    /// `COMPLETION_WAIT`) waits for this.
    fn flushed(&mut self) -> bool;
    /// Whether `rid` is a function the sink serves (an SMMUv3 drops a response of the wrong
    /// kind for a function it serves; one for a function it does not serve is handed over, to
    /// be counted as unknown).
    fn serves(&self, rid: u16) -> bool;
    /// The guest terminated every outstanding group of `rid` (SMMUv3's `CMD_STALL_TERM`).
    fn terminate(&mut self, rid: u16);
}

impl<C: FaultConsumer> PageResponseSink for Bridge<C> {
    fn page_response(&mut self, response: &GuestResponse) {
        // A response that matches nothing is counted in the bridge's stats; the guest gets no
        // error for it (hardware forwards it, and the device ignores an unexpected response).
        let _ = self.judge_guest_response(response);
    }

    fn flushed(&mut self) -> bool {
        self.flush()
    }

    fn serves(&self, rid: u16) -> bool {
        self.by_rid.contains_key(&rid)
    }

    fn terminate(&mut self, rid: u16) {
        self.guest_terminate(rid);
    }
}

/// Maps host PASIDs to the guest's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PasidMap {
    /// The guest sees the host's PASIDs.
    #[default]
    Identity,
    /// (host PASID, guest PASID) pairs; a host PASID not listed is not the guest's.
    Pairs(Vec<(u32, u32)>),
}

impl PasidMap {
    /// The guest's PASID for host PASID `host`; `None` if it is not the guest's (or does not
    /// fit the 20 bits a guest descriptor carries).
    fn guest(&self, host: u32) -> Option<u32> {
        match self {
            PasidMap::Identity => (host <= 0xf_ffff).then_some(host),
            PasidMap::Pairs(p) => p.iter().find(|(h, _)| *h == host).map(|(_, g)| *g),
        }
    }
}

/// One host function passed to the guest.
///
/// New fields may be added: build one from [`Endpoint::new`] and set the fields to change.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its device id on the host queue (`iommu_hwpt_pgfault.dev_id`).
    pub host_dev_id: u32,
    /// Its requester id in the guest.
    pub guest_rid: u16,
    /// How its PASIDs appear in the guest.
    pub pasids: PasidMap,
    /// The function's PRI capability "PRG Response PASID Required" bit (PCIe 6.0 §7.8.3.3),
    /// which the VMM shows the guest unchanged. When clear, the function's page responses carry
    /// no PASID and its groups are named by (requester id, PRG index) alone, whatever the
    /// guest's command carries: Linux's AMD driver then sends `COMPLETE_PPR_REQUEST` without
    /// GN (`pri_tlp`), the virtio-iommu RFC driver without a PASID. When set, a response must
    /// name the PASID of a group that has one (where the architecture's response can: see
    /// [`GroupNaming::response_names_pasid`]).
    pub prg_response_pasid_required: bool,
}

impl Endpoint {
    /// Host device `host_dev_id` as guest requester id `guest_rid`, with the host's PASIDs and
    /// "PRG Response PASID Required" set.
    pub fn new(host_dev_id: u32, guest_rid: u16) -> Endpoint {
        Endpoint {
            host_dev_id,
            guest_rid,
            pasids: PasidMap::Identity,
            prg_response_pasid_required: true,
        }
    }
}

/// The bridge's configuration.
///
/// New fields may be added: build one from [`BridgeConfig::new`] and set the fields to change.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// The functions passed through.
    pub endpoints: Vec<Endpoint>,
    /// Opt-in: a group the guest has not answered this many nanoseconds after it was posted is
    /// answered by the bridge with [`aged_code`](Self::aged_code) ([`HostAnswer::Aged`]); so is
    /// a group held back this long after it was read, when a pump finds the guest's queue still
    /// full in front of it (and a group the guest could not take at all, INVALID as at once).
    /// With a limit the bridge reads what the host holds behind a full queue, up to 2^18
    /// records, so that it ages too, except while the host's response ring refuses answers.
    pub age_limit_ns: Option<u64>,
    /// The code for an aged group (SUCCESS by default: the device retries, as the fault core's
    /// age limit answers).
    pub aged_code: ResponseCode,
    /// Whether the VMM offers private data to the guest (a VT-d 3.x guest); used only if the
    /// host path carries it.
    pub private_data: PrivateDataMode,
    /// The largest group, in records, the bridge reads from the host (the read buffer grows to
    /// it). 65,536 by default.
    pub max_group_records: usize,
}

impl BridgeConfig {
    /// A configuration for `endpoints`, without age limit or private data.
    pub fn new(endpoints: Vec<Endpoint>) -> BridgeConfig {
        BridgeConfig {
            endpoints,
            age_limit_ns: None,
            aged_code: ResponseCode::Success,
            private_data: PrivateDataMode::None,
            max_group_records: 1 << 16,
        }
    }
}

/// Why the bridge could not be made.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Two endpoints name the same host device.
    #[error("host device {0} is configured twice")]
    DuplicateHostDevice(u32),
    /// Two endpoints name the same guest requester id (their PRG indexes would collide).
    #[error("guest requester id {0:#06x} is configured twice")]
    DuplicateRequesterId(u16),
    /// A PASID map lists a host or guest PASID twice, or one above 20 bits.
    #[error("the PASID map of host device {0} is not one-to-one within 20 bits")]
    BadPasidMap(u32),
    /// `max_group_records` is 0.
    #[error("max_group_records must be at least 1")]
    NoGroupRoom,
}

/// Why the bridge answered a host group itself, or that the guest did. The numbers index
/// [`BridgeStats::host_answers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum HostAnswer {
    /// The guest answered (its code translated).
    Guest = 0,
    /// The host device is not one the VMM passed to the guest: INVALID.
    NoEndpoint = 1,
    /// A request's PASID is not mapped into the guest: INVALID.
    PasidNotMapped = 2,
    /// The guest has PRI disabled on the function, or disabled it with the group
    /// outstanding: INVALID.
    PriDisabled = 3,
    /// The guest's page request queue is off: INVALID.
    QueueOff = 4,
    /// The guest's queue overflowed and the hardware answered (Success: retry).
    Overflow = 5,
    /// The guest's queue memory could not be written: INVALID.
    GuestMemory = 6,
    /// The bridge's table was full (2^20 groups): Success (retry).
    TableFull = 7,
    /// The vIOMMU was reset with the group outstanding: INVALID.
    Reset = 8,
    /// The opt-in age limit passed.
    Aged = 9,
}

impl HostAnswer {
    /// Number of reasons.
    pub const COUNT: usize = 10;
    /// All reasons, in counter order.
    pub const ALL: [HostAnswer; Self::COUNT] = [
        HostAnswer::Guest,
        HostAnswer::NoEndpoint,
        HostAnswer::PasidNotMapped,
        HostAnswer::PriDisabled,
        HostAnswer::QueueOff,
        HostAnswer::Overflow,
        HostAnswer::GuestMemory,
        HostAnswer::TableFull,
        HostAnswer::Reset,
        HostAnswer::Aged,
    ];

    /// The counter's name.
    pub fn name(self) -> &'static str {
        match self {
            HostAnswer::Guest => "guest",
            HostAnswer::NoEndpoint => "no_endpoint",
            HostAnswer::PasidNotMapped => "pasid_not_mapped",
            HostAnswer::PriDisabled => "pri_disabled",
            HostAnswer::QueueOff => "queue_off",
            HostAnswer::Overflow => "overflow",
            HostAnswer::GuestMemory => "guest_memory",
            HostAnswer::TableFull => "table_full",
            HostAnswer::Reset => "reset",
            HostAnswer::Aged => "aged",
        }
    }
}

/// What the bridge has done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BridgeStats {
    /// Host groups read.
    pub groups_read: u64,
    /// Host records read.
    pub records_read: u64,
    /// Groups whose every request went into the guest's queue.
    pub groups_posted: u64,
    /// Requests written into the guest's queue.
    pub records_posted: u64,
    /// Requests the guest's queue dropped (overflow or unreachable memory).
    pub records_dropped: u64,
    /// Host answers by [`HostAnswer`].
    pub host_answers: [u64; HostAnswer::COUNT],
    /// Guest answers by the guest's code (Success, Invalid, Failure).
    pub guest_codes: [u64; 3],
    /// Guest responses that matched nothing, by the judge's [`RejectReason`](iopf_core::RejectReason) number (index 0:
    /// an unknown requester id).
    pub unmatched: [u64; 12],
    /// Host answers the host queue refused (it had answered the group already: a detach).
    pub host_refused: u64,
    /// Times the host's response ring was full and answers waited.
    pub host_full: u64,
}

impl BridgeStats {
    /// Every host answer, whatever its reason.
    pub fn answered(&self) -> u64 {
        self.host_answers.iter().sum()
    }

    /// Guest responses that matched nothing.
    pub fn unmatched_total(&self) -> u64 {
        self.unmatched.iter().sum()
    }
}

/// Why a guest response answered nothing.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unmatched {
    /// The requester id is not an endpoint's.
    #[error("requester id {0:#06x} is not a passed-through function")]
    UnknownRequester(u16),
    /// The judge rejected it.
    #[error("the response matches no outstanding group: {0:?}")]
    Rejected(Rejected),
}

/// A host group the guest holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct HostGroup {
    cookie: u32,
    posted_ns: u64,
}

struct EndpointState {
    cfg: Endpoint,
    pri_enabled: bool,
}

/// The bridge from a host fault queue `C` to a guest's page request queue. See the module
/// documentation for its contract.
///
/// ```
/// use iopf_abi::{PageRequest, PageRequestFlags, Perm, ResponseCode};
/// use iopf_iommufd::compat_fault_queue;
/// use iopf_viommu::{Bridge, BridgeConfig, Endpoint, GuestResponse, PasidMap};
/// use iopf_viommu::testing::VecGuestQueue;
///
/// let (device, host) = compat_fault_queue(7)?;
/// device.report(PageRequest { flags: PageRequestFlags::LAST_PAGE, pasid: 0, grpid: 3,
///                           perm: Perm::READ, addr: 0x4000, private_data: [0; 2] });
/// let ep = Endpoint::new(7, 0x10);
/// let mut bridge = Bridge::new(host, BridgeConfig::new(vec![ep]))?;
/// let mut guest = VecGuestQueue::new(64);
/// bridge.pump(&mut guest, 0)?;
/// let posted = guest.posted.pop().expect("posted");
/// assert_eq!((posted.rid, posted.prg_index, posted.last), (0x10, 3, true));
/// bridge.guest_response(&GuestResponse { rid: 0x10, pasid: None, prg_index: 3,
///                                        code: ResponseCode::Success, private_data: None })?;
/// assert_eq!(device.take_answers()[0].code, ResponseCode::Success);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Bridge<C: FaultConsumer> {
    host: C,
    cfg: BridgeConfig,
    endpoints: Vec<EndpointState>,
    by_dev: HashMap<u32, usize>,
    by_rid: HashMap<u16, usize>,
    table: GroupTable<HostGroup>,
    staged: VecDeque<PgFault>,
    /// When each staged record was read (the caller's clock): kept only with an age limit.
    staged_read_ns: VecDeque<u64>,
    buf: Vec<PgFault>,
    owed: VecDeque<IommufdResponse>,
    mode: PrivateDataMode,
    stats: BridgeStats,
}

impl<C: FaultConsumer> Bridge<C> {
    /// A bridge that reads `host` for the functions `cfg` names. Every endpoint starts with
    /// PRI enabled ([`set_pri_enabled`](Self::set_pri_enabled) follows the guest's PRI
    /// capability). Private data is carried only if `cfg` asks and the host carries it.
    pub fn new(host: C, cfg: BridgeConfig) -> Result<Bridge<C>, ConfigError> {
        if cfg.max_group_records == 0 {
            return Err(ConfigError::NoGroupRoom);
        }
        let mut by_dev = HashMap::new();
        let mut by_rid = HashMap::new();
        for (i, ep) in cfg.endpoints.iter().enumerate() {
            if by_dev.insert(ep.host_dev_id, i).is_some() {
                return Err(ConfigError::DuplicateHostDevice(ep.host_dev_id));
            }
            if by_rid.insert(ep.guest_rid, i).is_some() {
                return Err(ConfigError::DuplicateRequesterId(ep.guest_rid));
            }
            if let PasidMap::Pairs(pairs) = &ep.pasids {
                let mut hosts: Vec<u32> = pairs.iter().map(|p| p.0).collect();
                let mut guests: Vec<u32> = pairs.iter().map(|p| p.1).collect();
                hosts.sort_unstable();
                guests.sort_unstable();
                let dup = |v: &[u32]| v.windows(2).any(|w| w[0] == w[1]);
                if dup(&hosts) || dup(&guests) || guests.iter().chain(&hosts).any(|p| *p > 0xf_ffff)
                {
                    return Err(ConfigError::BadPasidMap(ep.host_dev_id));
                }
            }
        }
        let mode = if cfg.private_data == PrivateDataMode::Carried && host.carries_private_data() {
            PrivateDataMode::Carried
        } else {
            PrivateDataMode::None
        };
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|ep| EndpointState {
                cfg: ep.clone(),
                pri_enabled: true,
            })
            .collect();
        Ok(Bridge {
            host,
            cfg,
            endpoints,
            by_dev,
            by_rid,
            table: GroupTable::new(Naming::Own)
                .with_prg_lookup()
                .with_owner_order(),
            staged: VecDeque::new(),
            staged_read_ns: VecDeque::new(),
            buf: Vec::new(),
            owed: VecDeque::new(),
            mode,
            stats: BridgeStats::default(),
        })
    }

    /// The private-data mode agreed: [`PrivateDataMode::Carried`] only when the configuration
    /// offers it and the host path carries it. The guest queue's mode should be this one.
    pub fn private_data_mode(&self) -> PrivateDataMode {
        self.mode
    }

    /// What a VMM should ask of its host queue in negotiation: `PRIV_DATA_ECHO` when the guest
    /// will echo private data. (The bridge answers by cookie, so the host restores the private
    /// data whether or not it is echoed.)
    pub fn host_features_wanted(&self) -> Features {
        match self.cfg.private_data {
            PrivateDataMode::Carried => Features::COOKIE_RESPONSE | Features::PRIV_DATA_ECHO,
            PrivateDataMode::None => Features::COOKIE_RESPONSE,
        }
    }

    /// The host queue (to poll its fd, or read its own counters).
    pub fn host(&self) -> &C {
        &self.host
    }

    /// The host queue, mutably. Reading groups from it behind the bridge's back leaves them to
    /// the reader to answer.
    pub fn host_mut(&mut self) -> &mut C {
        &mut self.host
    }

    /// The counters.
    pub fn stats(&self) -> BridgeStats {
        self.stats
    }

    /// Groups the guest holds (posted and not answered).
    pub fn outstanding(&self) -> usize {
        self.table.len()
    }

    /// Host records read and not yet posted (waiting for room in the guest's queue).
    pub fn staged_records(&self) -> usize {
        self.staged.len()
    }

    /// Host answers waiting for room in the host's response ring.
    pub fn owed_answers(&self) -> usize {
        self.owed.len()
    }

    /// Moves host groups into the guest's queue as room allows, answering those the guest
    /// cannot take; expires groups past the age limit; sends owed answers. `now_ns` is the
    /// caller's clock. Returns the number of groups posted. Errors: the host queue's, when it
    /// fails to read even with a buffer of `max_group_records`.
    pub fn pump(&mut self, guest: &mut impl GuestQueue, now_ns: u64) -> Result<usize, C::Error> {
        self.flush();
        self.expire(now_ns);
        let mut posted = 0;
        // Held-back groups aged in this pump: bounded, so that a host that produces as fast as
        // the bridge ages (an age limit of 0) cannot keep one pump going.
        let mut aged = 0;
        loop {
            if self.staged.is_empty() && !self.fill(guest, now_ns, false)? {
                break;
            }
            let n = self.front_len();
            let naming = self.front_rid().map(|rid| (rid, guest.naming(rid)));
            if let Some((rid, naming)) = naming {
                let need = if naming.one_request_per_group { 1 } else { n };
                if guest.enabled(rid) && guest.capacity(rid) > 0 {
                    let room = guest.room(rid);
                    if need > room && room < guest.capacity(rid) || room == 0 {
                        // Backpressure: the guest makes room first. (Groups behind this one wait
                        // too, even for another queue: the host's order is kept.)
                        if aged < HELD_BACK_LIMIT && self.age_held_back(guest, n, now_ns)? {
                            aged += 1;
                            continue;
                        }
                        break;
                    }
                }
            }
            if self.post_front(guest, n, naming.map(|(_, g)| g), now_ns) {
                posted += 1;
            }
        }
        if posted > 0 {
            guest.notify();
        }
        self.flush();
        Ok(posted)
    }

    /// The front group of `n` records is held back by a full guest queue. With an age limit:
    /// what the host holds behind it is read too (so that it ages here; not while the host's
    /// response ring refuses answers), and the front group, if it was read at least the limit
    /// ago, is answered: as [`admit`](Self::admit) would (INVALID for a function, PASID or
    /// state the guest cannot take), else with `aged_code`. Whether it answered the front (the
    /// caller goes on with the next group, which may be for a queue with room).
    fn age_held_back(
        &mut self,
        guest: &impl GuestQueue,
        n: usize,
        now_ns: u64,
    ) -> Result<bool, C::Error> {
        let Some(limit) = self.cfg.age_limit_ns else {
            return Ok(false);
        };
        // Not while the host's response ring refuses answers: what is aged would only wait.
        if !self.flush() {
            return Ok(false);
        }
        while self.staged.len() < HELD_BACK_LIMIT && self.fill(guest, now_ns, true)? {}
        // Before the limit has passed since the clock's start nothing is old.
        let Some(cutoff) = now_ns.checked_sub(limit) else {
            return Ok(false);
        };
        if self.staged_read_ns.front().is_none_or(|&t| t > cutoff) {
            return Ok(false);
        }
        let cookie = self.staged[0].cookie;
        let (code, why) = match self.admit(guest, n) {
            Err(why) => (ResponseCode::Invalid, why),
            Ok(_) => (self.cfg.aged_code, HostAnswer::Aged),
        };
        self.drop_front(n);
        self.answer(cookie, code, why);
        Ok(true)
    }

    /// Handles the guest's page response: the judge finds the one outstanding group it answers
    /// (by requester id, PASID and PRG index, oldest first) and the host gets the translated
    /// code. A response that matches nothing answers nothing.
    pub fn guest_response(&mut self, r: &GuestResponse) -> Result<(), Unmatched> {
        let judged = self.judge_guest_response(r);
        self.flush();
        judged
    }

    /// [`guest_response`](Self::guest_response) without sending the answer yet: it waits in
    /// [`owed_answers`](Self::owed_answers) for the next [`flush`](Self::flush), so that a
    /// batch of responses (an invalidation queue's worth) reaches the host in one write.
    pub fn judge_guest_response(&mut self, r: &GuestResponse) -> Result<(), Unmatched> {
        let Some(&ep) = self.by_rid.get(&r.rid) else {
            self.stats.unmatched[0] += 1;
            return Err(Unmatched::UnknownRequester(r.rid));
        };
        let who = Responder {
            device: u32::from(r.rid),
            owner: ep as u32,
            agreed: match self.mode {
                PrivateDataMode::Carried => Features::PRIV_DATA_ECHO,
                PrivateDataMode::None => Features::empty(),
            },
        };
        let response = Response {
            group: GroupRef::Grpid {
                pasid: r.pasid,
                grpid: u32::from(r.prg_index),
            },
            code: r.code.raw(),
            private_data: r.private_data,
        };
        match self.table.take(&who, &response) {
            Ok(taken) => {
                self.stats.guest_codes[taken.code as usize] += 1;
                self.answer(
                    taken.extra.cookie,
                    code_map::guest_to_host(taken.code),
                    HostAnswer::Guest,
                );
                Ok(())
            }
            Err(why) => {
                self.stats.unmatched[why.reason() as usize] += 1;
                Err(Unmatched::Rejected(why))
            }
        }
    }

    /// Whether every answer has reached the host queue: what a guest's wait descriptor after its
    /// responses waits for. Tries to send owed answers first.
    pub fn flush(&mut self) -> bool {
        while !self.owed.is_empty() {
            let (front, _) = self.owed.as_slices();
            match self.host.respond(front) {
                Ok(0) => {
                    self.stats.host_full += 1;
                    return false;
                }
                Ok(n) => {
                    self.owed.drain(..n.min(self.owed.len()));
                }
                Err(_) => {
                    // The host refused the first: it answered that group already.
                    self.owed.pop_front();
                    self.stats.host_refused += 1;
                }
            }
        }
        true
    }

    /// The guest turned PRI on or off on the function `rid` (its PRI capability's Enable bit).
    /// Turning it off answers its outstanding groups INVALID ([`HostAnswer::PriDisabled`]); while
    /// off, its groups are answered so at once. Returns whether `rid` is an endpoint's.
    pub fn set_pri_enabled(&mut self, rid: u16, enabled: bool) -> bool {
        let Some(&ep) = self.by_rid.get(&rid) else {
            return false;
        };
        self.endpoints[ep].pri_enabled = enabled;
        if !enabled {
            self.answer_owner(ep, ResponseCode::Invalid, HostAnswer::PriDisabled, None);
            self.flush();
        }
        true
    }

    /// The guest terminated every outstanding group of the function `rid` itself (SMMUv3's
    /// `CMD_STALL_TERM`: its stalled transactions are aborted): each is answered INVALID as the
    /// guest's answer ([`HostAnswer::Guest`], counted as a guest INVALID). Returns how many.
    pub fn guest_terminate(&mut self, rid: u16) -> usize {
        let Some(&ep) = self.by_rid.get(&rid) else {
            return 0;
        };
        let before = self.stats.host_answers[HostAnswer::Guest as usize];
        self.answer_owner(ep, ResponseCode::Invalid, HostAnswer::Guest, None);
        let n = self.stats.host_answers[HostAnswer::Guest as usize] - before;
        self.stats.guest_codes[ResponseCode::Invalid as usize] += n;
        self.flush();
        n as usize
    }

    /// The vIOMMU was reset (the VMM calls this on a guest reboot or a device reset): every
    /// outstanding and staged group is answered INVALID ([`HostAnswer::Reset`]). A guest that
    /// only turns its page request queue off (`PQA` = 0) keeps its groups: it can still answer
    /// them through its invalidation queue; new groups are answered [`HostAnswer::QueueOff`].
    pub fn reset(&mut self) {
        for ep in 0..self.endpoints.len() {
            self.answer_owner(ep, ResponseCode::Invalid, HostAnswer::Reset, None);
        }
        while let Some(f) = self.staged.front().copied() {
            let n = self.front_len();
            self.drop_front(n);
            self.answer(f.cookie, ResponseCode::Invalid, HostAnswer::Reset);
        }
        self.flush();
    }

    /// Answers groups posted more than the age limit before `now_ns` (nothing without one).
    /// Groups held back by a full guest queue are aged by [`pump`](Self::pump), which sees the
    /// queue.
    pub fn expire(&mut self, now_ns: u64) {
        let Some(limit) = self.cfg.age_limit_ns else {
            return;
        };
        let Some(cutoff) = now_ns.checked_sub(limit) else {
            return;
        };
        for ep in 0..self.endpoints.len() {
            self.answer_owner(ep, self.cfg.aged_code, HostAnswer::Aged, Some(cutoff));
        }
    }

    /// Drops the first `n` staged records.
    fn drop_front(&mut self, n: usize) {
        self.staged.drain(..n);
        let stamped = n.min(self.staged_read_ns.len());
        self.staged_read_ns.drain(..stamped);
    }

    /// Answers the outstanding groups of endpoint `ep`, oldest first; with `posted_before`, only
    /// those posted at or before it.
    fn answer_owner(
        &mut self,
        ep: usize,
        code: ResponseCode,
        why: HostAnswer,
        posted_before: Option<u64>,
    ) {
        while let Some(cookie) = self.table.first_of(ep as u32) {
            let Some((_, g)) = self.table.get(cookie) else {
                break;
            };
            if posted_before.is_some_and(|t| g.posted_ns > t) {
                break;
            }
            if let Some((_, g)) = self.table.remove(cookie) {
                self.answer(g.cookie, code, why);
            }
        }
    }

    /// Reads whole host groups into `staged`, stamped `now_ns`; whether any came. The buffer
    /// starts at the room of the roomiest guest queue (`drain`: at its capacity) and doubles,
    /// to `max_group_records`, while the host says its first group does not fit (EINVAL from
    /// Linux 6.12, or 0 with a group waiting from newer kernels).
    fn fill(
        &mut self,
        guest: &impl GuestQueue,
        now_ns: u64,
        drain: bool,
    ) -> Result<bool, C::Error> {
        let max = self.cfg.max_group_records;
        // As many as the roomiest of the guest's queues takes now: the rest stays in the host
        // queue, whose backlog holds it.
        let mut want = self
            .endpoints
            .iter()
            .map(|ep| {
                let rid = ep.cfg.guest_rid;
                if guest.enabled(rid) && !drain {
                    guest.room(rid)
                } else {
                    guest.capacity(rid)
                }
            })
            .max()
            .unwrap_or(1)
            .clamp(1, max);
        loop {
            if self.buf.len() < want {
                self.buf.resize(want, PgFault::ZEROED);
            }
            match self.host.read_faults(&mut self.buf[..want]) {
                Ok(0) if want < max && self.host.wait_readable(Some(Duration::ZERO))? => {
                    want = (want * 2).min(max)
                }
                Ok(0) => return Ok(false),
                Ok(n) => {
                    let recs = &self.buf[..n];
                    self.stats.records_read += n as u64;
                    self.stats.groups_read += recs
                        .iter()
                        .filter(|f| f.flags.contains(PgfaultFlags::LAST_PAGE))
                        .count() as u64;
                    self.staged.extend(recs.iter().copied());
                    if self.cfg.age_limit_ns.is_some() {
                        self.staged_read_ns.extend(std::iter::repeat_n(now_ns, n));
                    }
                    return Ok(true);
                }
                Err(_) if want < max => want = (want * 2).min(max),
                Err(e) => return Err(e),
            }
        }
    }

    /// Records of the staged front group.
    fn front_len(&self) -> usize {
        PgFault::first_group_len(&self.staged)
    }

    /// The guest requester id of the staged front group, if it is an endpoint's.
    fn front_rid(&self) -> Option<u16> {
        let first = self.staged.front()?;
        let &ep = self.by_dev.get(&first.dev_id)?;
        Some(self.endpoints[ep].cfg.guest_rid)
    }

    /// Posts (or answers) the front group of `n` records; whether it went to the guest whole.
    fn post_front(
        &mut self,
        guest: &mut impl GuestQueue,
        n: usize,
        naming: Option<GroupNaming>,
        now_ns: u64,
    ) -> bool {
        let first = self.staged[0];
        let cookie = first.cookie;
        let verdict = self.admit(guest, n);
        let (ep, pasids) = match verdict {
            Err(why) => {
                self.drop_front(n);
                self.answer(cookie, ResponseCode::Invalid, why);
                return false;
            }
            Ok(v) => v,
        };
        let rid = self.endpoints[ep].cfg.guest_rid;
        let naming = naming.unwrap_or_else(|| guest.naming(rid));
        let tag = self.staged[n - 1].grpid & naming.tag_mask();
        let private_data = match (self.mode, guest.private_data_mode()) {
            (PrivateDataMode::Carried, PrivateDataMode::Carried) => self.host.private_data(cookie),
            _ => None,
        };
        // In the table before the first descriptor is written: a group the table cannot take
        // is never shown to the guest (whose answer could otherwise land on an older group
        // with the same PRG index).
        let pasid = pasids[n - 1];
        let facts = GroupFacts {
            device: u32::from(rid),
            owner: ep as u32,
            pasid,
            grpid: tag,
            needs_pasid: pasid.is_some()
                && naming.response_names_pasid
                && self.endpoints[ep].cfg.prg_response_pasid_required,
            private_data,
        };
        let held = HostGroup {
            cookie,
            posted_ns: now_ns,
        };
        let Ok(local) = self.table.insert(facts, held) else {
            self.drop_front(n);
            self.answer(cookie, ResponseCode::Success, HostAnswer::TableFull);
            return false;
        };
        let mut outcome = Posted::Queued;
        // One request per group (a stall): the last record, with every record's permissions.
        let (skip, merged_perm) = if naming.one_request_per_group {
            let perm = self
                .staged
                .iter()
                .take(n)
                .fold(Perm::empty(), |p, f| p | f.perm);
            (n - 1, Some(perm))
        } else {
            (0, None)
        };
        for (i, (f, pasid)) in self
            .staged
            .iter()
            .zip(&pasids)
            .take(n)
            .enumerate()
            .skip(skip)
        {
            let last = i + 1 == n;
            let req = GuestPageRequest {
                rid,
                pasid: *pasid,
                prg_index: (f.grpid & naming.tag_mask()) as u16,
                perm: merged_perm.unwrap_or(f.perm) & Perm::all(),
                addr: f.addr & !0xfff,
                last,
                private_data: if last { private_data } else { None },
            };
            match guest.post(&req) {
                Posted::Queued => self.stats.records_posted += 1,
                other => {
                    self.stats.records_dropped += 1;
                    outcome = other;
                }
            }
        }
        self.drop_front(n);
        let (code, why) = match outcome {
            Posted::Queued => {
                self.stats.groups_posted += 1;
                return true;
            }
            Posted::AnsweredByHardware(code) => (code, HostAnswer::Overflow),
            // A request before the last was dropped: the group cannot be answered by the guest
            // as a whole; the hardware's rule answers it.
            Posted::Dropped => (ResponseCode::Success, HostAnswer::Overflow),
            Posted::Unreachable => (ResponseCode::Invalid, HostAnswer::GuestMemory),
        };
        self.table.remove(local);
        self.answer(cookie, code, why);
        false
    }

    /// Whether the front group of `n` records may go to the guest: its endpoint and the guest
    /// PASID of each record, or why it is answered instead.
    fn admit(
        &self,
        guest: &impl GuestQueue,
        n: usize,
    ) -> Result<(usize, Vec<Option<u32>>), HostAnswer> {
        let first = self.staged[0];
        let &ep = self
            .by_dev
            .get(&first.dev_id)
            .ok_or(HostAnswer::NoEndpoint)?;
        let state = &self.endpoints[ep];
        if !state.pri_enabled {
            return Err(HostAnswer::PriDisabled);
        }
        let rid = state.cfg.guest_rid;
        if !guest.enabled(rid) || guest.capacity(rid) == 0 {
            // Off, or a queue that can never hold a request.
            return Err(HostAnswer::QueueOff);
        }
        self.staged
            .iter()
            .take(n)
            .map(|f| {
                if f.flags.contains(PgfaultFlags::PASID_VALID) {
                    state
                        .cfg
                        .pasids
                        .guest(f.pasid)
                        .map(Some)
                        .ok_or(HostAnswer::PasidNotMapped)
                } else {
                    Ok(None)
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|p| (ep, p))
    }

    /// Queues the host answer and counts it.
    fn answer(&mut self, cookie: u32, code: ResponseCode, why: HostAnswer) {
        self.stats.host_answers[why as usize] += 1;
        self.owed.push_back(IommufdResponse { cookie, code });
    }
}

impl<C: FaultConsumer> Drop for Bridge<C> {
    /// Sends what answers it can; the host queue, dropped with the bridge, answers every group
    /// still held INVALID.
    fn drop(&mut self) {
        self.flush();
    }
}
