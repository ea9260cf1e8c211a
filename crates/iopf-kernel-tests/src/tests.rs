//! The tests, each on a fresh [`Fixture`] (its own iommufd, mock device and fault queue).

use std::time::{Duration, Instant};

use iopf_abi::iommufd::PgfaultFlags;
use iopf_abi::{
    FaultConsumer, HwptPgfault, IommufdResponse, PageRequest, PageRequestFlags, Perm, PgFault,
    ResponseCode,
};
use iopf_iommufd::differential::{self, CompatTarget, Op};
use iopf_iommufd::{compat_fault_queue, Error, FaultFd, HwptAlloc, IOMMU_HWPT_ALLOC_NEST_PARENT};
use rustix::io::Errno;

use crate::fixture::{Ctx, Fixture};
use crate::Outcome;

/// A named test.
pub type Test = (&'static str, fn() -> Outcome);

/// Every test, in the order they run.
pub fn all() -> Vec<Test> {
    vec![
        ("layout", layout),
        ("consumer_round_trip", consumer_round_trip),
        ("batch_reads", batch_reads),
        ("whole_group_rule", whole_group_rule),
        ("espipe_bad_sizes", espipe_bad_sizes),
        ("einval_unknown_cookie", einval_unknown_cookie),
        ("einval_unknown_code", einval_unknown_code),
        ("poll_readiness", poll_readiness),
        (
            "replace_with_faults_outstanding",
            replace_with_faults_outstanding,
        ),
        ("hwpt_alloc_errors", hwpt_alloc_errors),
        ("cookie_zero", cookie_zero),
        ("many_faults", many_faults),
        ("differential_standard", differential_standard),
        ("differential_random", differential_random),
        ("viommu_bridge", viommu_bridge),
        ("viommu_bridge_after_replace", viommu_bridge_after_replace),
        ("viommu_bridge_smmuv3", viommu_bridge_smmuv3),
        ("viommu_bridge_amd", viommu_bridge_amd),
    ]
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

macro_rules! ensure_eq {
    ($left:expr, $right:expr, $what:expr) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            return Err(format!("{}: got {:?}, expected {:?}", $what, l, r));
        }
    }};
}

fn errno_of<T: std::fmt::Debug>(r: iopf_iommufd::Result<T>, what: &str) -> Result<Error, String> {
    match r {
        Ok(v) => Err(format!("{what}: succeeded ({v:?}), an error was expected")),
        Err(e) => Ok(e),
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_ne_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(a)
}

fn read_one(f: &mut Fixture) -> Result<Vec<u8>, String> {
    let mut buf = [0u8; 40];
    let n = f.fq.read_bytes(&mut buf).ctx("read 40")?;
    ensure_eq!(n, 40, "bytes read");
    Ok(buf.to_vec())
}

/// Every field of `struct iommu_hwpt_pgfault` lands at the offset iopf-abi expects, with the
/// value the mock reported (`iommufd_compose_fault_message()`).
fn layout() -> Outcome {
    let mut f = Fixture::new()?;
    let cases = [
        (1u32, 2u32, Perm::READ | Perm::WRITE, 0xdead_beafu64),
        (0, 511, Perm::all(), 0xffff_ffff_ffff_f000),
        (0xf_ffff, 0, Perm::EXEC, 0x1000),
    ];
    for (pasid, grpid, perm, addr) in cases {
        f.trigger(pasid, grpid, perm, addr)?;
        let b = read_one(&mut f)?;
        let want_flags = if pasid != 0 {
            PgfaultFlags::LAST_PAGE | PgfaultFlags::PASID_VALID
        } else {
            PgfaultFlags::LAST_PAGE
        };
        ensure_eq!(u32_at(&b, 0), want_flags.bits(), "flags @0");
        ensure_eq!(u32_at(&b, 4), f.mock.dev_id, "dev_id @4");
        ensure_eq!(u32_at(&b, 8), pasid, "pasid @8");
        ensure_eq!(u32_at(&b, 12), grpid, "grpid @12");
        ensure_eq!(u32_at(&b, 16), perm.bits(), "perm @16");
        ensure_eq!(u32_at(&b, 20), 0, "__reserved @20");
        ensure_eq!(u64_at(&b, 24), addr, "addr @24");
        ensure_eq!(u32_at(&b, 32), 0, "length @32");
        let cookie = u32_at(&b, 36);
        ensure!(
            cookie != 0,
            "cookie @36 is 0 (xa_alloc with ALLOC1 starts at 1)"
        );
        let rec = HwptPgfault::read(&b).ctx("HwptPgfault::read")?;
        // The mock device's requests carry no kernel-internal flag: strict and liberal agree.
        rec.check().ctx("check")?;
        let dec = rec.decode();
        ensure!(dec.unnamed().is_empty(), "nothing outside the uAPI");
        ensure_eq!(
            (dec.flags, dec.dev_id, dec.pasid, dec.grpid, dec.perm, dec.addr, dec.cookie),
            (want_flags, f.mock.dev_id, pasid, grpid, perm, addr, cookie),
            "decoded record"
        );
        let n =
            f.fq.respond(&[IommufdResponse {
                cookie,
                code: ResponseCode::Success,
            }])
            .ctx("respond")?;
        ensure_eq!(n, 1, "responses accepted");
    }
    Ok(format!("3 records, dev_id {}", f.mock.dev_id))
}

/// The read → answer round trip through the consumer interface, generic so the same code runs on
/// the kernel's queue and on iopf's compatible one.
fn round_trip<C: FaultConsumer<Error = Error>>(
    c: &mut C,
    trigger: &mut dyn FnMut(u32) -> Result<(), String>,
) -> Result<(), String> {
    ensure!(
        !c.wait_readable(Some(Duration::ZERO)).ctx("wait 0")?,
        "readable before any fault"
    );
    for g in 0..5 {
        trigger(100 + g)?;
    }
    ensure!(
        c.wait_readable(Some(Duration::from_millis(1000)))
            .ctx("wait")?,
        "not readable after 5 faults"
    );
    let mut out = [PgFault::from_bytes(&[0; 40]).ctx("zero record")?; 16];
    let n = c.read_faults(&mut out).ctx("read_faults")?;
    ensure_eq!(n, 5, "records read");
    let mut responses = Vec::new();
    for (i, r) in out[..n].iter().enumerate() {
        ensure_eq!(r.grpid, 100 + i as u32, "grpid in arrival order");
        ensure!(r.is_last(), "record {i} lacks LAST_PAGE");
        let code = match i {
            0 => ResponseCode::Failure, // goes out as INVALID
            1 => ResponseCode::Invalid,
            _ => ResponseCode::Success,
        };
        responses.push(IommufdResponse {
            cookie: r.cookie,
            code,
        });
    }
    ensure_eq!(
        c.respond(&responses).ctx("respond")?,
        5,
        "responses accepted"
    );
    ensure_eq!(
        c.read_faults(&mut out).ctx("read again")?,
        0,
        "records after answering"
    );
    let again = errno_of(c.respond(&responses[..1]), "second answer")?;
    ensure!(
        matches!(again, Error::UnknownCookie { .. })
            && again.errno() == Errno::INVAL.raw_os_error(),
        "second answer to a group: {again:?}"
    );
    Ok(())
}

/// A one-request group without PASID, as the mock's trigger makes them.
fn page_request(grpid: u32, addr: u64) -> PageRequest {
    PageRequest {
        flags: PageRequestFlags::LAST_PAGE,
        pasid: 0,
        grpid,
        perm: Perm::READ,
        addr,
        private_data: [0; 2],
    }
}

fn consumer_round_trip() -> Outcome {
    let mut f = Fixture::new()?;
    let mock = f.mock.clone();
    round_trip(&mut f.fq, &mut |g| {
        mock.trigger_iopf(&iopf_iommufd::selftest::TriggerIopf {
            pasid: 0,
            grpid: g,
            perm: Perm::READ,
            addr: 0x10_0000,
        })
        .ctx("trigger")
    })
    .map_err(|e| format!("kernel: {e}"))?;
    let (producer, mut queue) = compat_fault_queue(f.mock.dev_id).ctx("compat queue")?;
    round_trip(&mut queue, &mut |g| {
        producer.report(page_request(g, 0x10_0000));
        Ok(())
    })
    .map_err(|e| format!("compat: {e}"))?;
    Ok("same consumer code on the kernel queue and iopf's".into())
}

/// Reads of k records take k whole groups, in order, with distinct cookies.
fn batch_reads() -> Outcome {
    let mut f = Fixture::new()?;
    for g in 0..10 {
        f.trigger(1, g, Perm::READ, 0x2000 + u64::from(g))?;
    }
    let mut cookies = Vec::new();
    let mut grpids = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let mut buf = [0u8; 160];
        let n = f.fq.read_bytes(&mut buf).ctx("read 160")?;
        sizes.push(n);
        if n == 0 {
            break;
        }
        for rec in buf[..n].chunks_exact(40) {
            grpids.push(u32_at(rec, 12));
            cookies.push(u32_at(rec, 36));
        }
    }
    ensure_eq!(sizes, vec![160, 160, 80, 0], "read sizes");
    ensure_eq!(grpids, (0..10).collect::<Vec<u32>>(), "grpids");
    let mut distinct = cookies.clone();
    distinct.sort_unstable();
    distinct.dedup();
    ensure_eq!(distinct.len(), 10, "distinct cookies");
    let mut answer = Vec::new();
    for c in &cookies {
        answer.extend_from_slice(&c.to_ne_bytes());
        answer.extend_from_slice(&0u32.to_ne_bytes());
    }
    ensure_eq!(
        f.fq.write_bytes(&answer).ctx("write 80")?,
        80,
        "bytes written"
    );
    Ok(format!("reads of {sizes:?} bytes"))
}

/// A read never splits a group: the first group must fit (else EINVAL, nothing taken). The mock
/// only makes one-request groups; multi-request groups are tested on iopf's queue (host tests).
fn whole_group_rule() -> Outcome {
    let mut f = Fixture::new()?;
    f.trigger(0, 3, Perm::READ, 0x3000)?;
    let e = errno_of(
        f.fq.read_bytes(&mut []),
        "read of 0 bytes with a group waiting",
    )?;
    ensure!(
        matches!(e, Error::GroupTooLarge { capacity: 0 }),
        "read 0: {e:?}"
    );
    ensure_eq!(e.errno(), Errno::INVAL.raw_os_error(), "errno");
    let e = errno_of(f.fq.read_faults(&mut []), "read_faults into no room")?;
    ensure!(
        matches!(e, Error::GroupTooLarge { .. }),
        "read_faults: {e:?}"
    );
    ensure!(
        f.fq.readiness().ctx("poll")?.readable,
        "the group was consumed by a failed read"
    );
    f.trigger(0, 4, Perm::READ, 0x4000)?;
    f.trigger(0, 5, Perm::READ, 0x5000)?;
    let mut buf = [0u8; 200];
    let n = f.fq.read_bytes(&mut buf).ctx("read 200")?;
    ensure_eq!(n, 120, "bytes for 3 one-request groups");
    for rec in buf[..n].chunks_exact(40) {
        ensure!(
            u32_at(rec, 0) & PgfaultFlags::LAST_PAGE.bits() != 0,
            "record lacks LAST_PAGE"
        );
    }
    Ok("EINVAL when the first group does not fit; nothing consumed".into())
}

/// Sizes that are not whole records: ESPIPE, nothing consumed; pread at an offset too.
fn espipe_bad_sizes() -> Outcome {
    let mut f = Fixture::new()?;
    f.trigger(0, 6, Perm::READ, 0x6000)?;
    for len in [1usize, 39, 41, 79, 4001] {
        let mut buf = vec![0u8; len];
        let e = errno_of(f.fq.read_bytes(&mut buf), &format!("read {len}"))?;
        ensure!(matches!(e, Error::ReadSize { .. }), "read {len}: {e:?}");
        ensure_eq!(
            e.errno(),
            Errno::SPIPE.raw_os_error(),
            format!("read {len} errno")
        );
    }
    for len in [1usize, 7, 9, 12, 15] {
        let e = errno_of(f.fq.write_bytes(&vec![0u8; len]), &format!("write {len}"))?;
        ensure!(matches!(e, Error::WriteSize { .. }), "write {len}: {e:?}");
        ensure_eq!(
            e.errno(),
            Errno::SPIPE.raw_os_error(),
            format!("write {len} errno")
        );
    }
    let mut buf = [0u8; 40];
    let pread = rustix::io::pread(&f.fq, &mut buf, 40);
    ensure_eq!(pread.err(), Some(Errno::SPIPE), "pread at offset 40");
    let b = read_one(&mut f)?;
    ensure_eq!(u32_at(&b, 12), 6, "the group survived the bad reads");
    Ok("reads 1,39,41,79,4001 / writes 1,7,9,12,15 / pread: ESPIPE".into())
}

fn response(cookie: u32, code: u32) -> Vec<u8> {
    let mut v = cookie.to_ne_bytes().to_vec();
    v.extend_from_slice(&code.to_ne_bytes());
    v
}

/// Unknown cookies: EINVAL, with partial success returning the bytes done.
fn einval_unknown_cookie() -> Outcome {
    let mut f = Fixture::new()?;
    f.trigger(0, 7, Perm::READ, 0x7000)?;
    f.trigger(0, 8, Perm::READ, 0x8000)?;
    let mut buf = [0u8; 80];
    ensure_eq!(f.fq.read_bytes(&mut buf).ctx("read")?, 80, "bytes read");
    let (c0, c1) = (u32_at(&buf, 36), u32_at(&buf[40..], 36));
    for bogus in [0u32, c0.max(c1) + 1000, u32::MAX] {
        let e = errno_of(
            f.fq.write_bytes(&response(bogus, 0)),
            &format!("cookie {bogus}"),
        )?;
        ensure!(
            matches!(e, Error::UnknownCookie { cookie } if cookie == bogus),
            "cookie {bogus}: {e:?}"
        );
        ensure_eq!(e.errno(), Errno::INVAL.raw_os_error(), "errno");
    }
    // [valid, bogus]: the kernel applies the first and returns 8.
    let mut two = response(c0, 0);
    two.extend(response(0xbad, 0));
    ensure_eq!(
        f.fq.write_bytes(&two).ctx("valid + bogus")?,
        8,
        "partial write"
    );
    let e = errno_of(f.fq.write_bytes(&response(c0, 0)), "answer twice")?;
    ensure!(
        matches!(e, Error::UnknownCookie { .. }),
        "double answer: {e:?}"
    );
    ensure_eq!(
        f.fq.write_bytes(&response(c1, 1)).ctx("answer c1")?,
        8,
        "second group"
    );
    Ok("unknown, double and zero cookies: EINVAL; partial write returns 8".into())
}

/// Codes other than SUCCESS and INVALID: EINVAL and the group stays pending; FAILURE through
/// the consumer interface goes out as INVALID and is accepted.
fn einval_unknown_code() -> Outcome {
    let mut f = Fixture::new()?;
    f.trigger(0, 9, Perm::READ, 0x9000)?;
    f.trigger(0, 10, Perm::READ, 0xa000)?;
    let mut buf = [0u8; 80];
    ensure_eq!(f.fq.read_bytes(&mut buf).ctx("read")?, 80, "bytes read");
    let (c0, c1) = (u32_at(&buf, 36), u32_at(&buf[40..], 36));
    for code in [2u32, 3, 0xffff_ffff] {
        let e = errno_of(
            f.fq.write_bytes(&response(c0, code)),
            &format!("code {code}"),
        )?;
        ensure!(
            matches!(e, Error::UnknownCode { code: c } if c == code),
            "code {code}: {e:?}"
        );
        ensure_eq!(e.errno(), Errno::INVAL.raw_os_error(), "errno");
    }
    ensure_eq!(
        f.fq.write_bytes(&response(c0, 1)).ctx("INVALID")?,
        8,
        "group still pending"
    );
    let n =
        f.fq.respond(&[IommufdResponse {
            cookie: c1,
            code: ResponseCode::Failure,
        }])
        .ctx("respond FAILURE")?;
    ensure_eq!(n, 1, "FAILURE mapped to INVALID and accepted");
    Ok("codes 2, 3, 0xffffffff: EINVAL; FAILURE via FaultConsumer sent as INVALID".into())
}

/// POLLOUT always; POLLIN exactly while a group waits to be read; a blocked waiter wakes.
fn poll_readiness() -> Outcome {
    let mut f = Fixture::new()?;
    let r = f.fq.readiness().ctx("poll")?;
    ensure!(!r.readable && r.writable, "before faults: {r:?}");
    ensure!(
        !f.fq
            .wait_readable(Some(Duration::from_millis(30)))
            .ctx("wait 30ms")?,
        "readable with no fault"
    );
    f.trigger(0, 11, Perm::READ, 0xb000)?;
    let r = f.fq.readiness().ctx("poll")?;
    ensure!(r.readable && r.writable, "after a fault: {r:?}");
    let b = read_one(&mut f)?;
    let r = f.fq.readiness().ctx("poll")?;
    ensure!(
        !r.readable && r.writable,
        "after reading (group unanswered): {r:?}"
    );
    // epoll, as a VMM's event loop would use it.
    let ep = rustix::event::epoll::create(rustix::event::epoll::CreateFlags::CLOEXEC)
        .ctx("epoll_create")?;
    rustix::event::epoll::add(
        &ep,
        &f.fq,
        rustix::event::epoll::EventData::new_u64(7),
        rustix::event::epoll::EventFlags::IN,
    )
    .ctx("epoll add")?;
    let mut events = Vec::with_capacity(4);
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    rustix::event::epoll::wait(
        &ep,
        rustix::buffer::spare_capacity(&mut events),
        Some(&zero),
    )
    .ctx("epoll_wait")?;
    ensure_eq!(events.len(), 0, "epoll events before a new fault");
    // A waiter blocked without limit is woken by a fault from another thread.
    let mock = f.mock.clone();
    let t0 = Instant::now();
    let th = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        mock.trigger_iopf(&iopf_iommufd::selftest::TriggerIopf {
            pasid: 0,
            grpid: 12,
            perm: Perm::READ,
            addr: 0xc000,
        })
    });
    let woke = f.fq.wait_readable(None).ctx("blocking wait")?;
    let waited = t0.elapsed();
    th.join()
        .map_err(|_| "trigger thread panicked".to_string())?
        .ctx("trigger from thread")?;
    ensure!(woke, "blocking wait returned without a group");
    let one_sec = rustix::event::Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    rustix::event::epoll::wait(
        &ep,
        rustix::buffer::spare_capacity(&mut events),
        Some(&one_sec),
    )
    .ctx("epoll_wait")?;
    ensure_eq!(events.len(), 1, "epoll events after a fault");
    ensure_eq!(events[0].data.u64(), 7, "epoll data");
    let _ = b;
    Ok(format!(
        "blocked waiter woke after {} ms",
        waited.as_millis()
    ))
}

/// Replacing the fault-capable HWPT with groups read-but-unanswered and groups unread: no hang,
/// later reads are empty, the old cookies are gone, new faults go nowhere until reattached.
fn replace_with_faults_outstanding() -> Outcome {
    let mut f = Fixture::new()?;
    for g in 0..6 {
        f.trigger(1, 20 + g, Perm::WRITE, 0xd000)?;
    }
    let mut buf = [0u8; 120];
    ensure_eq!(f.fq.read_bytes(&mut buf).ctx("read 3")?, 120, "bytes read");
    let cookies: Vec<u32> = buf.chunks_exact(40).map(|r| u32_at(r, 36)).collect();
    let t0 = Instant::now();
    let now = f
        .mock
        .replace(f.parent)
        .ctx("replace with faults outstanding")?;
    let took = t0.elapsed();
    ensure_eq!(now, f.parent, "HWPT attached after replace");
    let r = f.fq.readiness().ctx("poll")?;
    ensure!(!r.readable, "readable after replace: {r:?}");
    let mut big = [0u8; 400];
    ensure_eq!(
        f.fq.read_bytes(&mut big).ctx("read after replace")?,
        0,
        "bytes after replace"
    );
    for c in &cookies {
        let e = errno_of(f.fq.write_bytes(&response(*c, 0)), "answer after replace")?;
        ensure!(
            matches!(e, Error::UnknownCookie { .. }),
            "old cookie {c}: {e:?}"
        );
    }
    f.trigger(1, 30, Perm::WRITE, 0xe000)?;
    ensure_eq!(
        f.fq.read_bytes(&mut big).ctx("read detached")?,
        0,
        "fault while detached"
    );
    f.mock.replace(f.iopf_hwpt).ctx("reattach")?;
    f.trigger(1, 31, Perm::WRITE, 0xf000)?;
    let b = read_one(&mut f)?;
    ensure_eq!(u32_at(&b, 12), 31, "grpid after reattach");
    ensure_eq!(
        f.fq.write_bytes(&response(u32_at(&b, 36), 0))
            .ctx("answer")?,
        8,
        "answer"
    );
    Ok(format!("replace took {} us", took.as_micros()))
}

/// The HWPT helpers surface the kernel's specific errno.
fn hwpt_alloc_errors() -> Outcome {
    let f = Fixture::new()?;
    let e = errno_of(
        f.iommufd.alloc_hwpt(&HwptAlloc {
            dev_id: f.mock.dev_id,
            pt_id: f.ioas,
            flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
            data_type: 0,
            data: &[],
            fault_id: Some(f.fq.id()),
        }),
        "fault queue on a NEST_PARENT HWPT",
    )?;
    ensure_eq!(
        e.errno(),
        Errno::OPNOTSUPP.raw_os_error(),
        format!("NEST_PARENT + fault: {e}")
    );
    let e = errno_of(
        f.iommufd.alloc_hwpt(&HwptAlloc {
            dev_id: f.mock.dev_id,
            pt_id: f.parent,
            flags: 0,
            data_type: iopf_iommufd::selftest::IOMMU_HWPT_DATA_SELFTEST,
            data: &iopf_iommufd::selftest::selftest_hwpt_data(),
            fault_id: Some(u32::MAX),
        }),
        "unknown fault queue id",
    )?;
    ensure_eq!(
        e.errno(),
        Errno::NOENT.raw_os_error(),
        format!("bogus fault_id: {e}")
    );
    Ok("EOPNOTSUPP, ENOENT".into())
}

/// Linux 6.12 quirk: while the response table holds a group, a response naming cookie 0 is
/// refused (EINVAL) but its `xa_erase()` removes the placeholder that `XA_FLAGS_ALLOC1` keeps at
/// index 0, so the next group read gets cookie 0. iopf's backend must treat 0 as an ordinary
/// cookie: the round trip works through it.
fn cookie_zero() -> Outcome {
    let mut f = Fixture::new()?;
    let mut out = [PgFault::from_bytes(&[0; 40]).ctx("zero record")?; 2];
    f.trigger(0, 50, Perm::READ, 0x5_0000)?;
    ensure_eq!(f.fq.read_faults(&mut out).ctx("read_faults")?, 1, "records");
    let first = out[0].cookie;
    ensure!(first != 0, "the first cookie of a fresh queue is 0");
    let e = errno_of(f.fq.write_bytes(&response(0, 0)), "cookie 0")?;
    ensure!(
        matches!(e, Error::UnknownCookie { cookie: 0 }),
        "cookie 0: {e:?}"
    );
    f.trigger(0, 51, Perm::READ, 0x5_1000)?;
    ensure_eq!(f.fq.read_faults(&mut out).ctx("read_faults")?, 1, "records");
    ensure_eq!(out[0].cookie, 0, "cookie after a refused cookie-0 response");
    let answers = [
        IommufdResponse {
            cookie: 0,
            code: ResponseCode::Success,
        },
        IommufdResponse {
            cookie: first,
            code: ResponseCode::Success,
        },
    ];
    ensure_eq!(
        f.fq.respond(&answers).ctx("answer cookies 0 and first")?,
        2,
        "accepted"
    );
    Ok(format!(
        "Linux issued cookie {first}, then 0 after a refused cookie-0 response"
    ))
}

/// Many faults through the consumer interface, in batches of 64; every group once. The rate is
/// reported, not asserted, next to iopf's own queue doing the same in the same run.
fn many_faults() -> Outcome {
    const TOTAL: u32 = 20_480;
    const BATCH: u32 = 64;
    let mut f = Fixture::new()?;
    let mut out = [PgFault::from_bytes(&[0; 40]).ctx("zero record")?; BATCH as usize];
    let mut responses = Vec::with_capacity(BATCH as usize);
    let t0 = Instant::now();
    let mut seen = 0u32;
    for base in (0..TOTAL).step_by(BATCH as usize) {
        for g in 0..BATCH {
            f.trigger(0, (base + g) % 512, Perm::READ, u64::from(base + g) << 12)?;
        }
        let n = f.fq.read_faults(&mut out).ctx("read_faults")?;
        ensure_eq!(n, BATCH as usize, "records per batch");
        responses.clear();
        for (g, r) in out.iter().enumerate() {
            ensure_eq!(r.addr, u64::from(base + g as u32) << 12, "record order");
            responses.push(IommufdResponse {
                cookie: r.cookie,
                code: ResponseCode::Success,
            });
        }
        ensure_eq!(f.fq.respond(&responses).ctx("respond")?, n, "accepted");
        seen += n as u32;
    }
    let kernel = t0.elapsed();
    ensure_eq!(seen, TOTAL, "groups round-tripped");
    ensure_eq!(
        f.fq.read_bytes(&mut [0u8; 40]).ctx("final read")?,
        0,
        "left over"
    );

    let (producer, mut queue) = compat_fault_queue(f.mock.dev_id).ctx("compat queue")?;
    let t1 = Instant::now();
    for base in (0..TOTAL).step_by(BATCH as usize) {
        for g in 0..BATCH {
            producer.report(page_request((base + g) % 512, u64::from(base + g) << 12));
        }
        let n = queue.read_faults(&mut out).ctx("compat read_faults")?;
        responses.clear();
        responses.extend(out[..n].iter().map(|r| IommufdResponse {
            cookie: r.cookie,
            code: ResponseCode::Success,
        }));
        queue.respond(&responses).ctx("compat respond")?;
    }
    let compat = t1.elapsed();
    let rate = |d: std::time::Duration| f64::from(TOTAL) / d.as_secs_f64();
    println!(
        "IOPF-INFO fault rate kernel: {:.0} groups/s ({TOTAL} faults, trigger+read+answer, batches of {BATCH}, {:.3} s)",
        rate(kernel),
        kernel.as_secs_f64()
    );
    println!(
        "IOPF-INFO fault rate iopf compat queue, same loop in the guest: {:.0} groups/s ({:.3} s)",
        rate(compat),
        compat.as_secs_f64()
    );
    Ok(format!("{TOTAL} faults, {:.0}/s", rate(kernel)))
}

fn differential(script: &[Op]) -> Result<usize, String> {
    let mut kernel = Fixture::new()?;
    let mut compat = CompatTarget::new(kernel.mock.dev_id).ctx("compat queue")?;
    let k = differential::run(&mut kernel, script);
    let c = differential::run(&mut compat, script);
    if let Err(e) = differential::compare(script, "kernel", &k, "iopf", &c) {
        let zero = k.cookies.iter().position(|&c| c == 0);
        let tail: Vec<u32> = k.cookies.iter().rev().take(24).rev().copied().collect();
        return Err(format!(
            "{e} [kernel cookie 0 first at record {zero:?} of {}; last kernel cookies {tail:?}]",
            k.cookies.len()
        ));
    }
    Ok(k.outcomes.len())
}

/// The hand-written script on the kernel and on iopf's queue: identical outcomes.
fn differential_standard() -> Outcome {
    let n = differential(&differential::standard_script())?;
    Ok(format!("{n} ops identical"))
}

/// Random scripts on the kernel and on iopf's queue: identical outcomes.
fn differential_random() -> Outcome {
    let mut total = 0;
    for seed in [1u64, 2, 3, 0x1badb002, 0xfeed] {
        total += differential(&differential::random_script(seed, 400))
            .map_err(|e| format!("seed {seed}: {e}"))?;
    }
    Ok(format!("5 seeds, {total} ops identical"))
}

/// The guest side over the real fault fd: the mock's groups carried into an emulated VT-d page
/// request queue, answered by the guest driver model through the invalidation queue, and the
/// answers written to the kernel (Success, Invalid, and the guest's Failure as INVALID, the only
/// codes the fault fd takes).
struct Guest {
    mem: vm_memory::GuestMemoryMmap,
    vtd: iopf_viommu::vtd::VtdBridge<iopf_iommufd::FaultQueue>,
    irq: iopf_viommu::RecordedMsis,
    driver: iopf_viommu::guest::VtdGuestDriver,
}

fn guest_over(fq: iopf_iommufd::FaultQueue, dev_id: u32) -> Result<Guest, String> {
    use iopf_viommu::{BridgeConfig, Endpoint, PrivateDataMode};
    let mem =
        vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(vm_memory::GuestAddress(0), 1 << 20)])
            .ctx("guest memory")?;
    let ep = Endpoint::new(dev_id, 0x08);
    let mut vtd = iopf_viommu::vtd::VtdBridge::new(
        fq,
        BridgeConfig::new(vec![ep]),
        iopf_viommu::vtd::VtdConfig::new(PrivateDataMode::None),
    )
    .ctx("bridge")?;
    let mut irq = iopf_viommu::RecordedMsis::default();
    let mut driver = iopf_viommu::guest::VtdGuestDriver::new(0x10000, 0x40000);
    driver.init(&mut vtd, &mem, &mut irq, 0).ctx("guest init")?;
    Ok(Guest {
        mem,
        vtd,
        irq,
        driver,
    })
}

/// The guest answers `(PRG index, raw VT-d code)` pairs through its invalidation queue, as a
/// driver that writes its own page group responses does (the mock's requests carry no PASID).
fn raw_answers(g: &mut Guest, answers: &[(u16, u8)]) -> Result<(), String> {
    use iopf_viommu::vtd::regs::IQT;
    use iopf_viommu::vtd::{page_request::to_bytes, PageGroupResponse};
    use vm_memory::{Bytes, GuestAddress};
    let mut b = [0u8; 8];
    g.vtd.mmio_read(IQT, &mut b).ctx("read IQT")?;
    let mut iqt = u64::from_le_bytes(b);
    for &(prg, raw) in answers {
        let mut d = PageGroupResponse::new(0x08, None, prg, ResponseCode::Success, None)
            .encode(iopf_viommu::PrivateDataMode::None);
        d[0] |= u64::from(raw) << 12;
        g.mem
            .write_slice(&to_bytes(&d), GuestAddress(0x40000 + iqt))
            .ctx("write descriptor")?;
        iqt = (iqt + 32) % 8192;
    }
    g.vtd
        .mmio_write(IQT, &iqt.to_le_bytes(), &g.mem, &mut g.irq, 3)
        .ctx("write IQT")?;
    Ok(())
}

fn viommu_bridge() -> Outcome {
    use iopf_viommu::HostAnswer;
    let f = Fixture::new()?;
    // The mock reports without PASID (pasid 0): Linux's guest driver answers those INVALID.
    for g in 1..=3u32 {
        f.trigger(0, g, Perm::READ, u64::from(g) << 12)?;
    }
    let Fixture {
        iommufd, mock, fq, ..
    } = f;
    let mut g = guest_over(fq, mock.dev_id)?;
    // The groups waited for the guest's queue; its set-up (the PQA write) posted them.
    g.vtd.pump(&g.mem, &mut g.irq, 1).ctx("pump")?;
    let posted = g.vtd.bridge().stats().groups_posted;
    ensure_eq!(
        posted,
        3,
        format!(
            "groups posted into the guest's queue ({:?})",
            g.vtd.bridge().stats()
        )
    );
    ensure!(!g.irq.messages.is_empty(), "no page request interrupt");
    let h = g
        .driver
        .handle_event(
            &mut g.vtd,
            &g.mem,
            &mut g.irq,
            &mut iopf_viommu::guest::IdentityResolver,
            2,
        )
        .ctx("guest")?;
    ensure_eq!(
        (h.descriptors, h.bad, h.waits_done),
        (3, 3, true),
        "guest handled"
    );
    // Three more, answered Success, Response Failure (0xf) and Linux 6.12's FAILURE (2).
    for g in 4..=6u32 {
        mock.trigger_iopf(&iopf_iommufd::selftest::TriggerIopf {
            pasid: 0,
            grpid: g,
            perm: Perm::READ,
            addr: 0x1000,
        })
        .ctx("trigger")?;
    }
    ensure_eq!(
        g.vtd.pump(&g.mem, &mut g.irq, 3).ctx("pump")?,
        3,
        "second groups posted"
    );
    raw_answers(&mut g, &[(4, 0x0), (5, 0xf), (6, 0x2)])?;
    let s = g.vtd.bridge().stats();
    ensure_eq!(
        s.host_answers[HostAnswer::Guest as usize],
        6,
        "answered by the guest"
    );
    ensure_eq!(s.host_refused, 0, "the kernel refused an answer");
    ensure_eq!(
        s.guest_codes,
        [1, 3, 2],
        "guest codes Success, Invalid, Failure"
    );
    ensure_eq!(g.vtd.bridge().owed_answers(), 0, "answers owed");
    ensure!(
        !g.vtd
            .bridge_mut()
            .host_mut()
            .wait_readable(Some(Duration::ZERO))
            .ctx("poll")?,
        "groups left"
    );
    drop(g);
    drop(mock);
    drop(iommufd);
    Ok(
        "6 groups through the VT-d bridge; the kernel took Success, Invalid and Failure as INVALID"
            .into(),
    )
}

/// The kernel answers INVALID itself when the HWPT is replaced with groups in the guest: the
/// bridge's later answers are refused (EINVAL) and counted, nothing is answered twice.
fn viommu_bridge_after_replace() -> Outcome {
    let f = Fixture::new()?;
    f.trigger(0, 7, Perm::READ, 0x1000)?;
    let Fixture {
        iommufd,
        mock,
        fq,
        parent,
        ..
    } = f;
    let mut g = guest_over(fq, mock.dev_id)?;
    g.vtd.pump(&g.mem, &mut g.irq, 1).ctx("pump")?;
    ensure_eq!(g.vtd.bridge().outstanding(), 1, "outstanding in the guest");
    mock.replace(parent).ctx("replace")?;
    g.vtd.reset();
    let s = g.vtd.bridge().stats();
    ensure_eq!(s.host_refused, 1, "the kernel had answered it already");
    ensure_eq!(g.vtd.bridge().outstanding(), 0, "outstanding after reset");
    drop(g);
    drop(mock);
    drop(iommufd);
    Ok("kernel auto-answered on replace; the bridge's answer refused, not doubled".into())
}

/// Three of the mock's groups through `unit` and its guest driver model over the real fault fd:
/// every one answered by the guest, none refused by the kernel, none left. Returns the guest's
/// codes (Success, Invalid, Failure).
fn through_guest<U, D>(
    fq_unit: impl FnOnce(iopf_iommufd::FaultQueue, iopf_viommu::BridgeConfig) -> Result<(U, D), String>,
) -> Result<[u64; 3], String>
where
    U: iopf_viommu::PassthroughUnit<Host = iopf_iommufd::FaultQueue>,
    D: iopf_viommu::guest::GuestDriverModel<U>,
{
    use iopf_viommu::{BridgeConfig, Endpoint, HostAnswer};
    let f = Fixture::new()?;
    for g in 1..=3u32 {
        f.trigger(0, g, Perm::READ, u64::from(g) << 12)?;
    }
    let Fixture {
        iommufd, mock, fq, ..
    } = f;
    let mem =
        vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(vm_memory::GuestAddress(0), 4 << 20)])
            .ctx("guest memory")?;
    let ep = Endpoint::new(mock.dev_id, 0x08);
    let (mut unit, mut driver) = fq_unit(fq, BridgeConfig::new(vec![ep]))?;
    let mut irq = iopf_viommu::RecordedMsis::default();
    driver
        .init(&mut unit, &mem, &mut irq, 0)
        .ctx("guest init")?;
    unit.pump(&mem, &mut irq, 1).ctx("pump")?;
    ensure_eq!(unit.bridge().stats().groups_posted, 3, "groups posted");
    ensure!(!irq.messages.is_empty(), "no page request interrupt");
    let h = driver
        .handle_event(
            &mut unit,
            &mem,
            &mut irq,
            &mut iopf_viommu::guest::IdentityResolver,
            2,
        )
        .ctx("guest")?;
    ensure!(h.waits_done, "the completion did not complete");
    let s = unit.bridge().stats();
    ensure_eq!(
        s.host_answers[HostAnswer::Guest as usize],
        3,
        "answered by the guest"
    );
    ensure_eq!(s.host_refused, 0, "the kernel refused an answer");
    ensure!(
        !unit
            .bridge_mut()
            .host_mut()
            .wait_readable(Some(Duration::ZERO))
            .ctx("poll")?,
        "groups left"
    );
    drop(unit);
    drop(mock);
    drop(iommufd);
    Ok(s.guest_codes)
}

/// The SMMUv3 guest side over the real fault fd: PRI queue, CMD_PRI_RESP + CMD_SYNC.
fn viommu_bridge_smmuv3() -> Outcome {
    let codes = through_guest(|fq, cfg| {
        let unit =
            iopf_viommu::smmuv3::SmmuBridge::new(fq, cfg, Default::default()).ctx("bridge")?;
        Ok((
            unit,
            iopf_viommu::guest::SmmuGuestDriver::new(0x10000).with_streams(&[0x08]),
        ))
    })?;
    ensure_eq!(codes, [3, 0, 0], "guest codes");
    Ok("3 groups through the SMMUv3 bridge (PRI queue, CMD_PRI_RESP, CMD_SYNC); the kernel took them".into())
}

/// The AMD guest side over the real fault fd: PPR log, COMPLETE_PPR_REQUEST + COMPLETION_WAIT.
/// The mock's requests carry no PASID: Linux's ppr.c answers those FAILURE (2), which reaches
/// the kernel as INVALID.
fn viommu_bridge_amd() -> Outcome {
    let codes = through_guest(|fq, cfg| {
        let unit = iopf_viommu::amd::AmdBridge::new(fq, cfg, Default::default()).ctx("bridge")?;
        Ok((unit, iopf_viommu::guest::AmdGuestDriver::new(0x10000)))
    })?;
    ensure_eq!(
        codes,
        [0, 0, 3],
        "guest codes: Linux's FAILURE for no PASID"
    );
    Ok("3 groups through the AMD bridge (PPR log, COMPLETE_PPR_REQUEST 2 as INVALID, COMPLETION_WAIT); the kernel took them".into())
}
