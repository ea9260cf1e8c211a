//! `iopf_viommu`: an emulated IOMMU's page request path (VT-d, SMMUv3 or AMD-Vi) wired to a
//! host fault queue through iopf's bridge: the VMM forwards the unit's MMIO accesses and pumps
//! when the host queue is readable; the guest's answers go back to the host groups.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CString};
use std::sync::OnceLock;

use iopf_abi::ResponseCode;
use iopf_viommu::amd::{AmdBridge, AmdConfig};
use iopf_viommu::smmuv3::{SmmuBridge, SmmuConfig};
use iopf_viommu::vtd::{VtdBridge, VtdConfig};
use iopf_viommu::{
    BridgeConfig, Endpoint, HostAnswer, MsiSink, PasidMap, PassthroughUnit, PrivateDataMode,
};

use crate::error::{guard, CError};
use crate::ffi;
use crate::host::{IopfHost, IopfHostStats};
use crate::memory::IopfGuestMemory;

/// `iopf_endpoint.flags`: the function's PRI capability has "PRG Response PASID Required".
pub const IOPF_ENDPOINT_PRG_RESPONSE_PASID_REQUIRED: u32 = 1 << 0;
/// `iopf_bridge_config.flags`: offer private data to the guest (a VT-d 3.x unit), used when
/// the host queue carries it.
pub const IOPF_BRIDGE_PRIVATE_DATA: u32 = 1 << 0;
/// The number of `iopf_bridge_stats.host_answers` counters; `iopf_host_answer_name` names them.
pub const IOPF_HOST_ANSWER_KINDS: usize = 10;
const _: () = assert!(IOPF_HOST_ANSWER_KINDS == HostAnswer::COUNT);

/// An interrupt message the unit sends: the VMM injects it (`address`, `data` as the guest
/// programmed them).
pub type IopfMsiFn = Option<unsafe extern "C" fn(opaque: *mut c_void, address: u64, data: u32)>;

/// A host PASID and the guest's name for it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct IopfPasidPair {
    /// The PASID on the host queue.
    pub host: u32,
    /// The PASID the guest sees.
    pub guest: u32,
}

/// One host function passed to the guest.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IopfEndpoint {
    /// Its device id on the host queue (`iommu_hwpt_pgfault.dev_id`).
    pub host_dev_id: u32,
    /// Its requester id (bus/device/function; SMMUv3: StreamID) in the guest.
    pub guest_rid: u16,
    /// Must be 0.
    pub reserved: u16,
    /// `IOPF_ENDPOINT_PRG_RESPONSE_PASID_REQUIRED`.
    pub flags: u32,
    /// The entries of `pasid_pairs`; 0 shows the guest the host's PASIDs.
    pub n_pasid_pairs: u32,
    /// (host, guest) PASID pairs; a host PASID not listed is not the guest's. NULL with 0.
    pub pasid_pairs: *const IopfPasidPair,
}

/// The bridge's configuration.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IopfBridgeConfig {
    /// The functions passed through (at least one).
    pub endpoints: *const IopfEndpoint,
    /// The entries of `endpoints`.
    pub n_endpoints: usize,
    /// A group the guest has not answered this many nanoseconds after it was posted is
    /// answered by the bridge with `aged_code`; 0: no age limit.
    pub age_limit_ns: u64,
    /// `IOMMUFD_PAGE_RESP_SUCCESS` (0, the device retries) or `_INVALID` (1).
    pub aged_code: u32,
    /// `IOPF_BRIDGE_PRIVATE_DATA`.
    pub flags: u32,
    /// The largest group the bridge reads from the host, in records; 0: 65,536. Set it at
    /// least to the largest group the functions can send (their PRI capability's Outstanding
    /// Page Request Allocation): a larger group cannot be read (`iopf_viommu_pump` returns
    /// `-EINVAL`) and waits, with the groups behind it, until the host queue is freed.
    pub max_group_records: u32,
    /// Must be 0.
    pub reserved: u32,
}

/// What the bridge has done.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IopfBridgeStats {
    /// Groups read from the host queue.
    pub groups_read: u64,
    /// Their records.
    pub records_read: u64,
    /// Groups posted into the guest's queue.
    pub groups_posted: u64,
    /// Their records.
    pub records_posted: u64,
    /// Records the guest's queue dropped (an overflow).
    pub records_dropped: u64,
    /// Host groups answered, by who answered and why: `iopf_host_answer_name(i)` names
    /// counter `i` (0 is "guest": the guest answered).
    pub host_answers: [u64; IOPF_HOST_ANSWER_KINDS],
    /// The guest's answers by PCIe code: Success, Invalid Request, Response Failure.
    pub guest_codes: [u64; 3],
    /// Guest responses that matched no outstanding group (ignored, as hardware does).
    pub unmatched: u64,
    /// Answers the host queue refused.
    pub host_refused: u64,
    /// Times the host queue had no room for answers (they wait and are sent later).
    pub host_full: u64,
    /// Groups posted to the guest and not answered yet.
    pub outstanding: u64,
    /// Answers waiting for room in the host queue.
    pub owed_answers: u64,
}

enum Unit {
    Vtd(VtdBridge<IopfHost>),
    Smmu(SmmuBridge<IopfHost>),
    Amd(AmdBridge<IopfHost>),
}

/// Runs `$e` with `$u` bound to the unit, whichever architecture it is.
macro_rules! each_unit {
    ($unit:expr, $u:ident => $e:expr) => {
        match $unit {
            Unit::Vtd($u) => $e,
            Unit::Smmu($u) => $e,
            Unit::Amd($u) => $e,
        }
    };
}

/// The VMM's interrupt injection, as a sink.
struct CMsi {
    f: unsafe extern "C" fn(*mut c_void, u64, u32),
    opaque: *mut c_void,
}

impl MsiSink for CMsi {
    fn signal_msi(&mut self, address: u64, data: u32) {
        // SAFETY: the VMM's function, given with `opaque` at creation, called on the thread that
        // called into the vIOMMU.
        unsafe { (self.f)(self.opaque, address, data) }
    }
}

/// An emulated IOMMU's page request path and its bridge. Created by `iopf_viommu_new_vtd`,
/// `_smmuv3` or `_amd`; freed by `iopf_viommu_free`.
///
/// Its callbacks (the MSI function, guest memory's accessors) run inside a call on it; a call
/// on the same vIOMMU from within one of them (a guest that points a queue at the unit's own
/// registers, through accessors that route DMA to MMIO) is refused with `-EDEADLK` and changes
/// nothing.
pub struct IopfViommu {
    /// Borrowed for the length of each call: a nested call finds it borrowed.
    inner: RefCell<ViommuInner>,
}

struct ViommuInner {
    unit: Unit,
    msi: CMsi,
}

/// Runs `f` on the vIOMMU `p` points at, unless a call on it is already running on this
/// thread's stack (one of its callbacks called back): then `EDEADLK`.
///
/// # Safety
/// `p` is NULL or a live vIOMMU.
unsafe fn with_viommu<R>(
    p: *const IopfViommu,
    f: impl FnOnce(&mut ViommuInner) -> Result<R, CError>,
) -> Result<R, CError> {
    // SAFETY: by the caller's contract. A shared reference: a nested call may make another
    // while the outer one runs, and all mutation goes through the RefCell.
    let v = unsafe { ffi::obj(p, "viommu") }?;
    let mut inner = v.inner.try_borrow_mut().map_err(|_| {
        CError::new(
            libc::EDEADLK,
            "the vIOMMU is inside a call already: one of its callbacks (MSI or guest memory) \
             called into it, which is refused",
        )
    })?;
    f(&mut inner)
}

/// Reads the C configuration strictly.
///
/// # Safety
/// `cfg` is NULL or a configuration whose arrays hold what their counts say.
unsafe fn bridge_config(cfg: *const IopfBridgeConfig) -> Result<BridgeConfig, CError> {
    // SAFETY: by the caller's contract.
    let cfg = unsafe { ffi::obj(cfg, "config") }?;
    if cfg.flags & !IOPF_BRIDGE_PRIVATE_DATA != 0 || cfg.reserved != 0 {
        return Err(CError::invalid(format!(
            "iopf_bridge_config: unknown flags {:#x} or reserved {:#x} not 0",
            cfg.flags & !IOPF_BRIDGE_PRIVATE_DATA,
            cfg.reserved
        )));
    }
    // SAFETY: by the caller's contract.
    let eps = unsafe { ffi::slice(cfg.endpoints, cfg.n_endpoints, "config->endpoints") }?;
    if eps.is_empty() {
        return Err(CError::invalid("iopf_bridge_config: no endpoints"));
    }
    let mut endpoints = Vec::with_capacity(eps.len());
    for (i, e) in eps.iter().enumerate() {
        let known = IOPF_ENDPOINT_PRG_RESPONSE_PASID_REQUIRED;
        if e.flags & !known != 0 || e.reserved != 0 {
            return Err(CError::invalid(format!(
                "endpoint {i}: unknown flags {:#x} or reserved {:#x} not 0",
                e.flags & !known,
                e.reserved
            )));
        }
        let mut ep = Endpoint::new(e.host_dev_id, e.guest_rid);
        ep.prg_response_pasid_required = e.flags & IOPF_ENDPOINT_PRG_RESPONSE_PASID_REQUIRED != 0;
        let what = format!("endpoint {i}: pasid_pairs");
        // SAFETY: by the caller's contract.
        let pairs = unsafe { ffi::slice(e.pasid_pairs, e.n_pasid_pairs as usize, &what) }?;
        if !pairs.is_empty() {
            ep.pasids = PasidMap::Pairs(pairs.iter().map(|p| (p.host, p.guest)).collect());
        }
        endpoints.push(ep);
    }
    let mut out = BridgeConfig::new(endpoints);
    out.age_limit_ns = (cfg.age_limit_ns != 0).then_some(cfg.age_limit_ns);
    out.aged_code = ResponseCode::decode_iommufd(cfg.aged_code)?;
    if cfg.flags & IOPF_BRIDGE_PRIVATE_DATA != 0 {
        out.private_data = PrivateDataMode::Carried;
    }
    if cfg.max_group_records != 0 {
        out.max_group_records = cfg.max_group_records as usize;
    }
    Ok(out)
}

/// The common part of the three constructors: takes `host` (always, even on error), reads
/// the configuration and the MSI function, builds the unit, gives it to `*out`.
///
/// # Safety
/// As the constructors'.
unsafe fn new_viommu(
    host: *mut IopfHost,
    cfg: *const IopfBridgeConfig,
    msi: IopfMsiFn,
    opaque: *mut c_void,
    out: *mut *mut IopfViommu,
    build: impl FnOnce(IopfHost, BridgeConfig) -> Result<Unit, CError>,
) -> i32 {
    guard(|| {
        // SAFETY: by contract: a host the caller owns and hands over.
        let Some(host) = (unsafe { ffi::take(host) }) else {
            return Err(CError::invalid("host is NULL"));
        };
        // SAFETY: by contract.
        let cfg = unsafe { bridge_config(cfg) }?;
        let Some(f) = msi else {
            return Err(CError::invalid(
                "msi is NULL: the unit needs a way to interrupt",
            ));
        };
        if out.is_null() {
            return Err(CError::invalid("out is NULL"));
        }
        let v = IopfViommu {
            inner: RefCell::new(ViommuInner {
                unit: build(*host, cfg)?,
                msi: CMsi { f, opaque },
            }),
        };
        // SAFETY: checked not NULL; writable by contract.
        unsafe { ffi::give(out, v, "out") }?;
        Ok(0)
    })
}

/// An emulated Intel VT-d unit's page request path (page request queue, invalidation queue's
/// page group responses, `PECTL` interrupt) over `host`. VT-d 4.0 (no private data) unless
/// `IOPF_BRIDGE_PRIVATE_DATA` is set and the host queue carries private data (then 3.x).
///
/// Ownership: `host` is taken in every case (freed on error). Errors: `-EINVAL` for a bad
/// configuration (named), a NULL `msi` or `out`.
///
/// # Safety
/// `host` is NULL or a host the caller owns; `config` is NULL or valid with its arrays;
/// `msi` may be called with `opaque` during any call on this vIOMMU; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn iopf_viommu_new_vtd(
    host: *mut IopfHost,
    config: *const IopfBridgeConfig,
    msi: IopfMsiFn,
    opaque: *mut c_void,
    out: *mut *mut IopfViommu,
) -> i32 {
    // SAFETY: the caller's contract is new_viommu's.
    unsafe {
        new_viommu(host, config, msi, opaque, out, |host, cfg| {
            let mode = cfg.private_data;
            Ok(Unit::Vtd(VtdBridge::new(host, cfg, VtdConfig::new(mode))?))
        })
    }
}

/// An emulated Arm SMMUv3's page request path (PRI queue, stall events, `CMD_PRI_RESP`,
/// `CMD_RESUME`, `CMD_SYNC`) over `host`; the `n_stall` StreamIDs in `stall_streams` stall
/// (their faults are stall events), every other stream uses PCIe PRI.
///
/// Ownership and errors as `iopf_viommu_new_vtd`.
///
/// # Safety
/// As `iopf_viommu_new_vtd`; `stall_streams` is NULL or holds `n_stall` ids.
#[no_mangle]
pub unsafe extern "C" fn iopf_viommu_new_smmuv3(
    host: *mut IopfHost,
    config: *const IopfBridgeConfig,
    stall_streams: *const u16,
    n_stall: usize,
    msi: IopfMsiFn,
    opaque: *mut c_void,
    out: *mut *mut IopfViommu,
) -> i32 {
    // SAFETY: by contract; read before the host is taken, so a bad array frees nothing twice.
    let stall = match unsafe { ffi::slice(stall_streams, n_stall, "stall_streams") } {
        Ok(s) => s.to_vec(),
        Err(e) => {
            // SAFETY: by contract; the host is taken in every case.
            unsafe { crate::host::iopf_host_free(host) };
            return guard(|| Err(e));
        }
    };
    // SAFETY: the caller's contract is new_viommu's.
    unsafe {
        new_viommu(host, config, msi, opaque, out, |host, cfg| {
            let smmu = SmmuConfig::with_stall_streams(stall);
            Ok(Unit::Smmu(SmmuBridge::new(host, cfg, smmu)?))
        })
    }
}

/// An emulated AMD-Vi unit's page request path (PPR log, `COMPLETE_PPR_REQUEST`,
/// `COMPLETION_WAIT`) over `host`; `ext_features` is the extended feature register the guest
/// reads (PPR support is always added).
///
/// Ownership and errors as `iopf_viommu_new_vtd`.
///
/// # Safety
/// As `iopf_viommu_new_vtd`.
#[no_mangle]
pub unsafe extern "C" fn iopf_viommu_new_amd(
    host: *mut IopfHost,
    config: *const IopfBridgeConfig,
    ext_features: u64,
    msi: IopfMsiFn,
    opaque: *mut c_void,
    out: *mut *mut IopfViommu,
) -> i32 {
    // SAFETY: the caller's contract is new_viommu's.
    unsafe {
        new_viommu(host, config, msi, opaque, out, |host, cfg| {
            let mut amd = AmdConfig::default();
            amd.ext_features = ext_features;
            Ok(Unit::Amd(AmdBridge::new(host, cfg, amd)?))
        })
    }
}

/// Frees the vIOMMU and its host queue (NULL: nothing). Groups the guest held are answered
/// INVALID by the host queue's other end. From within one of the vIOMMU's callbacks it does
/// nothing (and `iopf_last_error` says so).
///
/// # Safety
/// `viommu` is NULL or a vIOMMU not freed yet.
#[no_mangle]
pub unsafe extern "C" fn iopf_viommu_free(viommu: *mut IopfViommu) {
    let _ = guard(|| {
        if viommu.is_null() {
            return Ok(0);
        }
        // SAFETY: by contract, a live vIOMMU; a shared reference, as in with_viommu.
        let busy = unsafe { ffi::obj(viommu.cast_const(), "viommu") }?
            .inner
            .try_borrow_mut()
            .is_err();
        if busy {
            // Freeing it under the running call would pull it from under that call: refused
            // (and left allocated) rather than a use after free.
            return Err(CError::new(
                libc::EDEADLK,
                "iopf_viommu_free from within one of the vIOMMU's own callbacks: refused",
            ));
        }
        // SAFETY: by contract, a pointer this library gave and the caller still owns; no call
        // on it is running (checked above).
        drop(unsafe { ffi::take(viommu) });
        Ok(0)
    });
}

/// A guest read of `len` (4 or 8) bytes at `offset` from the unit's register base, into
/// `data` (little-endian). Errors: `-EINVAL` for an access that is not a 32- or 64-bit register
/// access at its alignment, or outside the page request registers (the VMM reads such an access
/// as 0, as hardware does).
///
/// # Safety
/// `viommu` is NULL or live; `data` is NULL or has room for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn iopf_viommu_mmio_read(
    viommu: *const IopfViommu,
    offset: u64,
    data: *mut u8,
    len: usize,
) -> i32 {
    guard(|| {
        // SAFETY: by contract.
        let data = unsafe { ffi::slice_mut(data, len, "data") }?;
        // SAFETY: by contract.
        unsafe {
            with_viommu(viommu, |v| {
                Ok(each_unit!(&v.unit, u => PassthroughUnit::mmio_read(u, offset, data))?)
            })
        }?;
        Ok(0)
    })
}

/// A guest write of `len` (4 or 8) bytes from `data` at `offset`: carries out what the guest
/// asked at once (a tail moved: its commands and page responses; a queue turned on: waiting
/// host groups posted), reading and writing guest memory through `mem` and interrupting through
/// the vIOMMU's `msi`. `now_ns` is the VMM's clock (for the age limit). Errors as
/// `iopf_viommu_mmio_read` (the VMM ignores such a write, as hardware does).
///
/// # Safety
/// `viommu` and `mem` are NULL or live; `data` is NULL or holds `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn iopf_viommu_mmio_write(
    viommu: *mut IopfViommu,
    mem: *const IopfGuestMemory,
    offset: u64,
    data: *const u8,
    len: usize,
    now_ns: u64,
) -> i32 {
    guard(|| {
        // SAFETY: by contract.
        let mem = unsafe { ffi::obj(mem, "mem") }?.lease();
        let mem = &*mem;
        // SAFETY: by contract.
        let data = unsafe { ffi::bytes(data, len, "data") }?;
        // SAFETY: by contract.
        unsafe {
            with_viommu(viommu, |v| {
                let irq = &mut v.msi;
                Ok(
                    each_unit!(&mut v.unit, u => PassthroughUnit::mmio_write(u, offset, data, mem, irq, now_ns))?,
                )
            })
        }?;
        Ok(0)
    })
}

/// Moves host groups into the guest's queue (room allowing), answers aged groups, sends
/// answers that waited for host room: call it when the host fd is readable, on a timer when an
/// age limit is set, and after changing guest memory the unit reads. Returns the groups posted.
/// Errors: the host queue's read error (the groups stay in the host queue).
///
/// # Safety
/// `viommu` and `mem` are NULL or live.
#[no_mangle]
pub unsafe extern "C" fn iopf_viommu_pump(
    viommu: *mut IopfViommu,
    mem: *const IopfGuestMemory,
    now_ns: u64,
) -> i32 {
    guard(|| {
        // SAFETY: by contract.
        let mem = unsafe { ffi::obj(mem, "mem") }?.lease();
        let mem = &*mem;
        // SAFETY: by contract.
        unsafe {
            with_viommu(viommu, |v| {
                let irq = &mut v.msi;
                each_unit!(&mut v.unit, u => PassthroughUnit::pump(u, mem, irq, now_ns))
            })
        }
    })
}

/// The unit is reset (guest reboot): registers to their reset values, every group the guest
/// held answered INVALID. Errors: `-EINVAL` (`viommu` NULL).
///
/// # Safety
/// `viommu` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn iopf_viommu_reset(viommu: *mut IopfViommu) -> i32 {
    guard(|| {
        // SAFETY: by contract.
        unsafe {
            with_viommu(viommu, |v| {
                each_unit!(&mut v.unit, u => PassthroughUnit::reset(u));
                Ok(0)
            })
        }
    })
}

/// The guest set or cleared the Enable bit of the PRI capability of function `guest_rid`:
/// clearing it answers the function's outstanding groups INVALID, and its later groups at
/// once. Errors: `-ENODEV` when `guest_rid` is no endpoint's, `-EINVAL` (`viommu` NULL).
///
/// # Safety
/// `viommu` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn iopf_viommu_set_pri_enabled(
    viommu: *mut IopfViommu,
    guest_rid: u16,
    enabled: bool,
) -> i32 {
    guard(|| {
        // SAFETY: by contract.
        let known = unsafe {
            with_viommu(viommu, |v| {
                Ok(each_unit!(&mut v.unit, u => u.bridge_mut().set_pri_enabled(guest_rid, enabled)))
            })
        }?;
        if !known {
            return Err(CError::new(
                libc::ENODEV,
                format!("guest requester id {guest_rid:#06x} is no endpoint's"),
            ));
        }
        Ok(0)
    })
}

/// The guest programmed the AMD-Vi IOMMU's MSI capability, which lives in its PCI
/// configuration space (emulated by the VMM, not in the unit's registers): `address` and
/// `data` are the message, `enabled` its MSI Enable bit. Until it is enabled the unit sends no
/// interrupt (a condition that arises meanwhile is not remembered, as for a disabled MSI).
/// VT-d and SMMUv3 program their interrupts in their registers. Errors: `-EOPNOTSUPP` for a
/// unit that is not AMD-Vi, `-EINVAL` (`viommu` NULL).
///
/// # Safety
/// `viommu` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn iopf_viommu_amd_set_msi(
    viommu: *mut IopfViommu,
    address: u64,
    data: u32,
    enabled: bool,
) -> i32 {
    guard(|| {
        // SAFETY: by contract.
        unsafe {
            with_viommu(viommu, |v| match &mut v.unit {
                Unit::Amd(u) => {
                    u.set_msi(address, data, enabled);
                    Ok(0)
                }
                _ => Err(CError::new(
                    libc::EOPNOTSUPP,
                    "iopf_viommu_amd_set_msi on a unit that is not AMD-Vi",
                )),
            })
        }
    })
}

/// The host queue's descriptor, to poll in the VMM's event loop (owned by the vIOMMU).
///
/// # Safety
/// `viommu` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn iopf_viommu_host_fd(viommu: *const IopfViommu) -> i32 {
    guard(|| {
        // SAFETY: by contract.
        unsafe {
            with_viommu(viommu, |v| {
                crate::host::fd_count(each_unit!(&v.unit, u => u.bridge().host().raw_fd()))
            })
        }
    })
}

/// `iopf_host_arm` on the vIOMMU's host queue.
///
/// # Safety
/// `viommu` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn iopf_viommu_host_arm(viommu: *mut IopfViommu, want: u32) -> i32 {
    guard(|| {
        // SAFETY: by contract.
        unsafe {
            with_viommu(viommu, |v| {
                let host = each_unit!(&mut v.unit, u => u.bridge_mut().host_mut());
                Ok(host.readiness(want, true)? as usize)
            })
        }
    })
}

/// `iopf_host_stats` of the vIOMMU's host queue.
///
/// # Safety
/// `viommu` is NULL or live; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn iopf_viommu_host_stats(
    viommu: *const IopfViommu,
    out: *mut IopfHostStats,
) -> i32 {
    guard(|| {
        // SAFETY: by contract.
        let st = unsafe {
            with_viommu(viommu, |v| {
                Ok(each_unit!(&v.unit, u => u.bridge().host().stats()))
            })
        }?;
        // SAFETY: by contract.
        unsafe { ffi::put(out, st, "out") }?;
        Ok(0)
    })
}

/// Fills `*out` with the bridge's counters.
///
/// # Safety
/// `viommu` is NULL or live; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn iopf_viommu_stats(
    viommu: *const IopfViommu,
    out: *mut IopfBridgeStats,
) -> i32 {
    guard(|| {
        // SAFETY: by contract.
        let (s, outstanding, owed) = unsafe {
            with_viommu(viommu, |v| {
                Ok(each_unit!(&v.unit, u => {
                    let b = u.bridge();
                    (b.stats(), b.outstanding(), b.owed_answers())
                }))
            })
        }?;
        let st = IopfBridgeStats {
            groups_read: s.groups_read,
            records_read: s.records_read,
            groups_posted: s.groups_posted,
            records_posted: s.records_posted,
            records_dropped: s.records_dropped,
            host_answers: s.host_answers,
            guest_codes: s.guest_codes,
            unmatched: s.unmatched_total(),
            host_refused: s.host_refused,
            host_full: s.host_full,
            outstanding: outstanding as u64,
            owed_answers: owed as u64,
        };
        // SAFETY: by contract.
        unsafe { ffi::put(out, st, "out") }?;
        Ok(0)
    })
}

/// The name of `iopf_bridge_stats.host_answers[i]` ("guest", "pri_disabled", "aged", ...), a
/// static string; NULL when `i` is not below `IOPF_HOST_ANSWER_KINDS`.
#[no_mangle]
pub extern "C" fn iopf_host_answer_name(i: usize) -> *const c_char {
    static NAMES: OnceLock<Vec<CString>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        HostAnswer::ALL
            .iter()
            .map(|a| CString::new(a.name()).unwrap_or_default())
            .collect()
    });
    names.get(i).map_or(std::ptr::null(), |n| n.as_ptr())
}
