//! Scale and size: 1,024 devices × 512 outstanding groups (a full 9-bit PRG index space on every
//! function), every group answered exactly once; the memory per outstanding group measured by a
//! counting global allocator; and no allocation at all per fault once the tables have grown.
//!
//! The allocator counts only the test thread's allocations (thread-local counters), so the test
//! harness cannot disturb the figures. Run `cargo test -p iopf-core --test scale -- --nocapture`
//! to see them.
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use iopf_abi::{Fault, Features, PageRequest, PageRequestFlags, Perm, ResponseCode};
use iopf_core::*;

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn note(delta: isize, alloc: bool) {
    // try_with: the thread's locals may already be gone while it exits.
    let _ = LIVE.try_with(|l| l.set(l.get() + delta));
    if alloc {
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees hold; the bookkeeping touches only const-initialised thread-locals, which never
// allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize, true);
        // SAFETY: forwarded as received; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize), false);
        // SAFETY: `ptr` came from `System.alloc` with this layout (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as isize - layout.size() as isize, true);
        // SAFETY: as for `dealloc`; `new_size` is the caller's, checked by the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.with(|l| l.get())
}
fn allocs() -> u64 {
    ALLOCS.with(|a| a.get())
}

const DEVICES: usize = 1024;
const GROUPS: u32 = 512;

/// Checks every response: one per (device, grpid) per round, nothing else.
struct Ledger {
    seen: Vec<u64>,
    count: u64,
    bad: u64,
}

impl ResponseSink for Ledger {
    fn page_response(&mut self, device: DeviceId, r: &DeviceResponse) {
        let slot = (device.raw() & 0xffff) as usize * GROUPS as usize + r.grpid as usize;
        let (w, b) = (slot / 64, slot % 64);
        if self.seen[w] & (1 << b) != 0 || r.code != ResponseCode::Success || r.pasid != Some(3) {
            self.bad += 1;
        }
        self.seen[w] |= 1 << b;
        self.count += 1;
    }
}

/// Accepts every group and keeps nothing: the memory measured is the core's alone.
struct Accept;
impl GroupHandler for Accept {
    fn deliver(&mut self, _: &Group<'_>) -> Result<(), Refusal> {
        Ok(())
    }
}

fn last(grpid: u32) -> Fault {
    Fault::PageRequest(PageRequest {
        flags: PageRequestFlags::PASID_VALID | PageRequestFlags::LAST_PAGE,
        pasid: 3,
        grpid,
        perm: Perm::READ,
        addr: u64::from(grpid) << 12,
        private_data: [0; 2],
    })
}

/// Reports one LAST_PAGE request per (device, grpid), returning the cookies.
fn fill(
    core: &mut FaultCore<Ledger, Accept>,
    devs: &[DeviceId],
    cookies: &mut Vec<(HandlerId, Cookie)>,
    now: u64,
) {
    cookies.clear();
    for g in 0..GROUPS {
        for &d in devs {
            match core.report(d, &last(g), now).unwrap() {
                Reported::Delivered { handler, cookie } => cookies.push((handler, cookie)),
                other => panic!("not delivered: {other:?}"),
            }
        }
    }
}

fn drain(core: &mut FaultCore<Ledger, Accept>, cookies: &[(HandlerId, Cookie)]) {
    for &(h, c) in cookies {
        core.respond(h, &Response::by_cookie(c, ResponseCode::Success))
            .unwrap();
    }
}

#[test]
fn thousand_devices_with_full_prg_index_space() {
    let total = DEVICES * GROUPS as usize;
    let mut cookies = Vec::with_capacity(total);
    let ledger = Ledger {
        seen: vec![0; total / 64],
        count: 0,
        bad: 0,
    };
    let mut core: FaultCore<Ledger, Accept> = FaultCore::new(ledger);
    let caps = PriCaps {
        outstanding_allocation: GROUPS,
        pasid_required: true,
        failure_allowed: true,
    };
    let devs: Vec<DeviceId> = (0..DEVICES).map(|_| core.register(caps).unwrap()).collect();
    for &d in &devs {
        core.attach(d, None, Accept, Features::COOKIE_RESPONSE)
            .unwrap();
    }

    // Round 1: from empty tables to 524,288 outstanding groups.
    let before = live();
    fill(&mut core, &devs, &mut cookies, 1);
    let grown = live() - before;
    for &d in &devs {
        assert_eq!(core.outstanding(d).unwrap(), GROUPS);
    }
    drain(&mut core, &cookies);
    assert_eq!((core.sink().count, core.sink().bad), (total as u64, 0));
    assert!(
        core.sink().seen.iter().all(|w| *w == u64::MAX),
        "every group answered"
    );

    // Round 2: the same load again. The table keeps answered slots free until 1,024 are free
    // (so cookie values come back late), so it may still add a chunk of slots here.
    let reset = |core: &mut FaultCore<Ledger, Accept>| {
        core.sink_mut().seen.iter_mut().for_each(|w| *w = 0);
        core.sink_mut().count = 0;
    };
    reset(&mut core);
    fill(&mut core, &devs, &mut cookies, 2);
    drain(&mut core, &cookies);
    assert_eq!((core.sink().count, core.sink().bad), (total as u64, 0));

    // Round 3, steady state: no allocation at all, nothing leaks.
    reset(&mut core);
    let (allocs_before, base) = (allocs(), live());
    fill(&mut core, &devs, &mut cookies, 3);
    let steady = live() - before; // everything the core holds beyond its empty state
    drain(&mut core, &cookies);
    let allocations = allocs() - allocs_before;
    assert_eq!(live(), base, "nothing leaks from a full cycle");
    assert_eq!((core.sink().count, core.sink().bad), (total as u64, 0));
    assert!(
        core.sink().seen.iter().all(|w| *w == u64::MAX),
        "every group answered"
    );
    for &d in &devs {
        let c = core.counters(d).unwrap();
        assert_eq!(
            (c.groups, c.delivered, c.consumer_responses),
            (3 * 512, 3 * 512, 3 * 512)
        );
        assert_eq!(core.outstanding(d).unwrap(), 0);
    }

    let per_group_grown = grown as f64 / total as f64;
    let per_group_steady = steady as f64 / total as f64;
    println!(
        "{DEVICES} devices x {GROUPS} groups = {total} outstanding: {grown} B when grown from empty \
         ({per_group_grown:.1} B/group), {steady} B in steady state ({per_group_steady:.1} B/group, \
         reuse reserve included); allocations during a full steady-state cycle: {allocations}"
    );
    assert_eq!(allocations, 0, "no allocation per fault in steady state");
    assert!(
        per_group_grown <= 128.0,
        "{per_group_grown} B per outstanding group"
    );
    assert!(
        per_group_steady <= 128.0,
        "{per_group_steady} B per outstanding group"
    );
}
