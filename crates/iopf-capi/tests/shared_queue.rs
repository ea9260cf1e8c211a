//! The C API's shared queue (`iopf_host_attach`) against a real iopf producer, driven through
//! the C entry points from Rust: a full response ring, a producer that leaves. (Written by the
//! review of the C API; the first test failed before the fix.)
#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is a failed test

use std::ffi::{CStr, CString};
use std::time::Duration;

use iopf_abi::fault::PageRequestFlags;
use iopf_abi::{HwptPageResponse, HwptPgfault, PageRequest, Perm};
use iopf_capi::*;
use iopf_queue::{Listener, Producer, ServeConfig, TaggedGroup};

fn last() -> String {
    // SAFETY: live handles from iopf_host_attach and buffers of the counts given.
    unsafe { CStr::from_ptr(iopf_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn one(grpid: u32) -> PageRequest {
    PageRequest {
        flags: PageRequestFlags::LAST_PAGE | PageRequestFlags::PASID_VALID,
        pasid: 5,
        grpid,
        perm: Perm::READ,
        addr: 0x1000,
        private_data: [0, 0],
    }
}

/// A listener at a fresh path and a C host attached to it with `entries`.
fn attach(name: &str, entries: u32) -> (Listener, Producer, *mut IopfHost, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!("iopf-capi-{name}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = Listener::bind(&path, ServeConfig::default()).unwrap();
    let cpath = CString::new(path.to_str().unwrap()).unwrap();
    let t = std::thread::spawn(move || {
        let mut h: *mut IopfHost = std::ptr::null_mut();
        // SAFETY: live handles from iopf_host_attach and buffers of the counts given.
        let rc = unsafe { iopf_host_attach(cpath.as_ptr(), entries, 5000, &mut h) };
        assert_eq!(rc, 0, "attach: {}", last());
        h as usize
    });
    let p = listener.accept().unwrap();
    let h = t.join().unwrap() as *mut IopfHost;
    (listener, p, h, path)
}

fn read_one(p: &mut Producer, h: *mut IopfHost, grpid: u32) -> u32 {
    p.push_group(&TaggedGroup {
        tag: u64::from(grpid),
        dev_id: 1,
        requests: &[one(grpid)],
    })
    .unwrap();
    let mut rec = [HwptPgfault::default(); 4];
    let mut n = 0;
    for _ in 0..1000 {
        p.flush_backlog();
        // SAFETY: live handles from iopf_host_attach and buffers of the counts given.
        n = unsafe { iopf_host_read_faults(h, rec.as_mut_ptr(), 4) };
        if n != 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(n, 1, "read: {}", last());
    rec[0].cookie
}

/// Regression (review): with the response ring full, [valid, bad code] returned -EINVAL, which
/// the header says means the *first* response was bad: a VMM believing it would drop a valid
/// answer. Now 0 (no room: write them again later).
#[test]
fn a_full_response_ring_is_not_reported_as_a_bad_first_response() {
    let (_l, mut p, h, path) = attach("full", 2);
    let c: Vec<u32> = (1..=3).map(|g| read_one(&mut p, h, g)).collect();
    // Fill the response ring (2 slots) without the producer draining it.
    let mut taken = 0;
    for &cookie in &c[..2] {
        let r = [HwptPageResponse { cookie, code: 0 }];
        // SAFETY: live handles from iopf_host_attach and buffers of the counts given.
        taken += unsafe { iopf_host_respond(h, r.as_ptr(), 1) };
    }
    assert_eq!(taken, 2, "two responses fit the ring: {}", last());
    let only_good = [HwptPageResponse {
        cookie: c[2],
        code: 0,
    }];
    // SAFETY: live handles from iopf_host_attach and buffers of the counts given.
    let full = unsafe { iopf_host_respond(h, only_good.as_ptr(), 1) };
    assert_eq!(full, 0, "the ring is full: 0 taken (control)");
    let batch = [
        HwptPageResponse {
            cookie: c[2],
            code: 0,
        },
        HwptPageResponse {
            cookie: c[2],
            code: 7,
        },
    ];
    // SAFETY: live handles from iopf_host_attach and buffers of the counts given.
    let rc = unsafe { iopf_host_respond(h, batch.as_ptr(), 2) };
    let msg = last();
    // SAFETY: live handles from iopf_host_attach and buffers of the counts given.
    unsafe { iopf_host_free(h) };
    drop(p);
    let _ = std::fs::remove_file(path);
    assert_eq!(
        rc, 0,
        "full ring, [valid, bad code]: got {rc} ({msg}); the first response is valid and only \
         lacked room"
    );
}

/// A producer that leaves after the consumer read a group: the C side sees PEER_GONE, the
/// waits end, answers are refused with an errno (not a panic), and freeing is clean.
#[test]
fn a_producer_that_leaves() {
    let (l, mut p, h, path) = attach("gone", 8);
    let cookie = read_one(&mut p, h, 4);
    drop(p);
    drop(l);
    // SAFETY: live handles from iopf_host_attach and buffers of the counts given.
    let r = unsafe { iopf_host_arm(h, IOPF_READY_FAULTS) };
    assert!(
        r > 0 && (r as u32) & IOPF_READY_PEER_GONE != 0,
        "arm: {r} ({})",
        last()
    );
    // SAFETY: a live handle from iopf_host_attach.
    let waited = unsafe { iopf_host_wait(h, 1000) };
    assert_eq!(waited, 0, "wait ends: {}", last());
    let mut st = IopfHostStats::default();
    // SAFETY: live handles from iopf_host_attach and buffers of the counts given.
    assert_eq!(unsafe { iopf_host_stats(h, &mut st) }, 0);
    assert_eq!(
        (st.kind, st.peer_gone, st.records_read),
        (IOPF_HOST_SHARED, 1, 1)
    );
    let rs = [HwptPageResponse { cookie, code: 0 }];
    // SAFETY: live handles from iopf_host_attach and buffers of the counts given.
    let rc = unsafe { iopf_host_respond(h, rs.as_ptr(), 1) };
    assert!(
        rc == 1 || rc == 0 || rc == -libc::EPIPE,
        "respond after the producer left: {rc} ({})",
        last()
    );
    assert!(!last().contains("internal error"));
    let mut rec = [HwptPgfault::default(); 4];
    // SAFETY: live handles from iopf_host_attach and buffers of the counts given.
    let rc = unsafe { iopf_host_read_faults(h, rec.as_mut_ptr(), 4) };
    assert!(
        rc == 0 || rc == -libc::EPIPE,
        "read after the producer left: {rc} ({})",
        last()
    );
    // SAFETY: live handles from iopf_host_attach and buffers of the counts given.
    unsafe { iopf_host_free(h) };
    let _ = std::fs::remove_file(path);
}
