//! iopf's iommufd-compatible fault queue against the rules of Linux 6.12's fault fd
//! (`iommufd_fault_fops_read()` / `_write()` / `_poll()`, `iommufd_auto_response_faults()`),
//! including what the kernel's selftest mock cannot produce: multi-request groups.

use std::time::Duration;

use iopf_abi::{
    FaultConsumer, IommufdResponse, PageRequest, PageRequestFlags, Perm, PgFault, ResponseCode,
};
use iopf_iommufd::differential::{self, CompatTarget, Op, Outcome};
use iopf_iommufd::{compat_fault_queue, Error, FaultFd, Readiness};

const DEV: u32 = 3;

fn req(grpid: u32, last: bool, addr: u64) -> PageRequest {
    let mut flags = PageRequestFlags::PASID_VALID;
    if last {
        flags |= PageRequestFlags::LAST_PAGE;
    }
    PageRequest {
        flags,
        pasid: 9,
        grpid,
        perm: Perm::READ | Perm::WRITE,
        addr,
        private_data: [0; 2],
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn resp(cookie: u32, code: u32) -> Vec<u8> {
    let mut v = cookie.to_ne_bytes().to_vec();
    v.extend_from_slice(&code.to_ne_bytes());
    v
}

#[test]
fn a_group_is_read_whole_or_not_at_all() {
    let (p, mut q) = compat_fault_queue(DEV).unwrap();
    // Two groups interleaved on the wire: grpid 5 has three requests, grpid 6 two.
    p.report(req(5, false, 0x1000));
    p.report(req(6, false, 0x9000));
    p.report(req(5, false, 0x2000));
    p.report(req(6, true, 0xa000));
    p.report(req(5, true, 0x3000));
    // grpid 6 completed first, so it is first to read: 80 bytes.
    let e = q.read_bytes(&mut [0u8; 40]).unwrap_err();
    assert!(matches!(e, Error::GroupTooLarge { capacity: 1 }), "{e:?}");
    assert_eq!(e.errno(), libc_einval());
    let mut buf = [0u8; 160];
    assert_eq!(
        q.read_bytes(&mut buf).unwrap(),
        80,
        "only grpid 6 fits beside nothing else"
    );
    assert_eq!((u32_at(&buf, 12), u32_at(&buf[40..], 12)), (6, 6));
    assert_eq!(
        u32_at(&buf, 36),
        u32_at(&buf[40..], 36),
        "one cookie per group"
    );
    assert_eq!(u32_at(&buf, 0) & 2, 0, "only the last record has LAST_PAGE");
    assert_eq!(u32_at(&buf[40..], 0) & 2, 2);
    // grpid 5: arrival order of its partials, then the LAST_PAGE request.
    assert_eq!(q.read_bytes(&mut buf).unwrap(), 120);
    let addrs: Vec<u64> = buf[..120]
        .chunks_exact(40)
        .map(|r| u64::from_ne_bytes(r[24..32].try_into().unwrap()))
        .collect();
    assert_eq!(addrs, vec![0x1000, 0x2000, 0x3000]);
    for r in buf[..120].chunks_exact(40) {
        assert_eq!(u32_at(r, 4), DEV, "dev_id");
        assert_eq!(u32_at(r, 8), 9, "pasid");
        assert_eq!(u32_at(r, 16), 3, "perm");
        assert_eq!(u32_at(r, 20), 0, "reserved");
        assert_eq!(u32_at(r, 32), 0, "length");
    }
}

fn libc_einval() -> i32 {
    rustix::io::Errno::INVAL.raw_os_error()
}

fn libc_espipe() -> i32 {
    rustix::io::Errno::SPIPE.raw_os_error()
}

#[test]
fn sizes_that_are_not_whole_records_are_espipe_and_consume_nothing() {
    let (p, mut q) = compat_fault_queue(DEV).unwrap();
    p.report(req(1, true, 0));
    for len in [1usize, 39, 41, 79] {
        let e = q.read_bytes(&mut vec![0; len]).unwrap_err();
        assert!(matches!(e, Error::ReadSize { .. }));
        assert_eq!(e.errno(), libc_espipe());
    }
    for len in [1usize, 7, 9, 15] {
        let e = q.write_bytes(&vec![0; len]).unwrap_err();
        assert!(matches!(e, Error::WriteSize { .. }));
        assert_eq!(e.errno(), libc_espipe());
    }
    assert_eq!(q.read_bytes(&mut [0u8; 40]).unwrap(), 40);
}

#[test]
fn unknown_cookie_and_code_are_einval_and_a_partial_write_counts_what_was_done() {
    let (p, mut q) = compat_fault_queue(DEV).unwrap();
    p.report(req(1, true, 0));
    p.report(req(2, true, 0));
    let mut buf = [0u8; 80];
    assert_eq!(q.read_bytes(&mut buf).unwrap(), 80);
    let (c0, c1) = (u32_at(&buf, 36), u32_at(&buf[40..], 36));
    assert_ne!(c0, c1);
    assert_ne!(c0, 0);
    for code in [2u32, 3, u32::MAX] {
        let e = q.write_bytes(&resp(c0, code)).unwrap_err();
        assert!(
            matches!(e, Error::UnknownCode { code: c } if c == code),
            "{e:?}"
        );
        assert_eq!(e.errno(), libc_einval());
    }
    // The code is checked before the cookie, as Linux does.
    assert!(matches!(
        q.write_bytes(&resp(0, 9)).unwrap_err(),
        Error::UnknownCode { .. }
    ));
    let e = q.write_bytes(&resp(0, 0)).unwrap_err();
    assert!(matches!(e, Error::UnknownCookie { cookie: 0 }));
    let mut two = resp(c0, 0);
    two.extend(resp(0x30_0000, 0));
    assert_eq!(q.write_bytes(&two).unwrap(), 8);
    assert!(matches!(
        q.write_bytes(&resp(c0, 0)).unwrap_err(),
        Error::UnknownCookie { .. }
    ));
    assert_eq!(q.write_bytes(&resp(c1, 1)).unwrap(), 8);
    let sent = p.take_answers();
    assert_eq!(sent.len(), 2, "each group answered once: {sent:?}");
    assert_eq!(sent[0].code, ResponseCode::Success);
    assert_eq!(sent[1].code, ResponseCode::Invalid);
}

#[test]
fn a_cookie_counts_only_once_its_group_was_read() {
    let (p, mut q) = compat_fault_queue(DEV).unwrap();
    p.report(req(1, true, 0));
    p.report(req(2, true, 0));
    let mut buf = [0u8; 40];
    assert_eq!(q.read_bytes(&mut buf).unwrap(), 40);
    let c0 = u32_at(&buf, 36);
    // The second group exists in the fault core but was not read: its cookie is not the
    // consumer's to use yet. Try the cookies next to the one read.
    for guess in [c0.wrapping_add(1), c0.wrapping_sub(1)] {
        assert!(
            q.write_bytes(&resp(guess, 0)).is_err(),
            "cookie {guess:#x} accepted unread"
        );
    }
    assert_eq!(p.take_answers().len(), 0);
}

#[test]
fn failure_through_the_consumer_interface_reaches_the_device_as_invalid() {
    let (p, mut q) = compat_fault_queue(DEV).unwrap();
    p.report(req(4, true, 0x4000));
    let mut out = [PgFault::from_bytes(&[0; 40]).unwrap(); 4];
    assert_eq!(q.read_faults(&mut out).unwrap(), 1);
    let n = q
        .respond(&[IommufdResponse {
            cookie: out[0].cookie,
            code: ResponseCode::Failure,
        }])
        .unwrap();
    assert_eq!(n, 1);
    let sent = p.take_answers();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].grpid, sent[0].code), (4, ResponseCode::Invalid));
}

#[test]
fn poll_is_readable_exactly_while_a_group_waits_and_a_waiter_wakes() {
    let (p, mut q) = compat_fault_queue(DEV).unwrap();
    let idle = Readiness {
        readable: false,
        writable: true,
    };
    assert_eq!(q.readiness().unwrap(), idle);
    assert!(!q.wait_readable(Some(Duration::from_millis(10))).unwrap());
    p.report(req(1, false, 0));
    assert_eq!(
        q.readiness().unwrap(),
        idle,
        "a partial group is not readable"
    );
    p.report(req(1, true, 0));
    assert!(q.readiness().unwrap().readable);
    assert_eq!(q.read_bytes(&mut [0u8; 400]).unwrap(), 80);
    assert_eq!(
        q.readiness().unwrap(),
        idle,
        "read but unanswered is not readable"
    );
    let p2 = p.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        p2.report(req(2, true, 0));
    });
    assert!(q.wait_readable(None).unwrap());
    t.join().unwrap();
}

#[test]
fn detach_answers_read_and_unread_groups_invalid_and_later_faults_go_nowhere() {
    let (p, mut q) = compat_fault_queue(DEV).unwrap();
    for g in 0..6 {
        p.report(req(g, true, 0));
    }
    let mut buf = [0u8; 120];
    assert_eq!(q.read_bytes(&mut buf).unwrap(), 120);
    p.detach();
    let sent = p.take_answers();
    assert_eq!(sent.len(), 6);
    assert!(sent.iter().all(|s| s.code == ResponseCode::Invalid));
    assert_eq!(q.read_bytes(&mut [0u8; 400]).unwrap(), 0);
    assert!(!q.readiness().unwrap().readable);
    let e = q.write_bytes(&resp(u32_at(&buf, 36), 0)).unwrap_err();
    assert!(matches!(e, Error::UnknownCookie { .. }));
    p.report(req(7, true, 0));
    assert_eq!(q.read_bytes(&mut [0u8; 400]).unwrap(), 0);
    assert_eq!(
        p.take_answers().len(),
        1,
        "a fault with nothing attached is answered at once"
    );
    p.attach().unwrap();
    p.report(req(8, true, 0));
    assert_eq!(q.read_bytes(&mut [0u8; 400]).unwrap(), 40);
}

#[test]
fn dropping_the_consumer_answers_what_it_held() {
    let (p, mut q) = compat_fault_queue(DEV).unwrap();
    for g in 0..4 {
        p.report(req(g, true, 0));
    }
    assert_eq!(q.read_bytes(&mut [0u8; 80]).unwrap(), 80);
    drop(q);
    let sent = p.take_answers();
    assert_eq!(sent.len(), 4, "two read and two unread groups");
    p.report(req(9, true, 0));
    assert_eq!(p.take_answers().len(), 1);
}

/// Random scripts: the whole-group and cookie-uniqueness checks hold, and once the queue is
/// detached every group reported has had exactly one answer.
#[test]
fn random_scripts_answer_every_group_exactly_once() {
    for seed in 1..=40u64 {
        let script = differential::random_script(seed, 300);
        let mut t = CompatTarget::new(DEV).unwrap();
        let run = differential::run(&mut t, &script);
        assert!(
            run.violations.is_empty(),
            "seed {seed}: {:?}",
            run.violations
        );
        t.producer.detach();
        let groups = script
            .iter()
            .filter(|op| matches!(op, Op::Trigger { .. }))
            .count();
        assert_eq!(t.producer.take_answers().len(), groups, "seed {seed}");
    }
}

#[test]
fn the_standard_script_starts_as_linux_does() {
    let script = differential::standard_script();
    let mut t = CompatTarget::new(DEV).unwrap();
    let run = differential::run(&mut t, &script);
    assert!(run.violations.is_empty(), "{:?}", run.violations);
    let idle = Outcome::Ready(Readiness {
        readable: false,
        writable: true,
    });
    assert_eq!(run.outcomes[0], idle);
    assert_eq!(
        run.outcomes[1],
        Outcome::Bytes(vec![]),
        "read 0 with nothing waiting"
    );
    assert_eq!(run.outcomes[2], Outcome::Bytes(vec![]));
    assert_eq!(run.outcomes[3], Outcome::Errno(libc_espipe()));
    // Comparing a run with itself is the identity; with a different device id it is not.
    let again = differential::run(&mut CompatTarget::new(DEV).unwrap(), &script);
    assert_eq!(
        differential::compare(&script, "a", &run, "b", &again),
        Ok(())
    );
    let other = differential::run(&mut CompatTarget::new(DEV + 1).unwrap(), &script);
    assert!(differential::compare(&script, "a", &run, "b", &other).is_err());
}

#[test]
fn failure_is_encoded_as_invalid_for_the_fault_fd() {
    let r = iopf_iommufd::encode_response(&IommufdResponse {
        cookie: 77,
        code: ResponseCode::Failure,
    });
    assert_eq!((r.cookie, r.code), (77, 1));
    let r = iopf_iommufd::encode_response(&IommufdResponse {
        cookie: 78,
        code: ResponseCode::Success,
    });
    assert_eq!((r.cookie, r.code), (78, 0));
}

/// Opening `/dev/iommu` where there is none is [`Error::Open`] with open()'s own errno.
#[test]
fn opening_a_missing_dev_iommu_reports_open_errno() {
    match (
        iopf_iommufd::Iommufd::open(),
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/iommu"),
    ) {
        (Ok(_), Ok(_)) => {}
        (Err(e), Err(std_err)) => {
            assert!(matches!(e, Error::Open(_)), "{e:?}");
            assert_eq!(Some(e.errno()), std_err.raw_os_error());
        }
        (a, b) => panic!("iopf and std disagree on opening /dev/iommu: {a:?} vs {b:?}"),
    }
}

/// Liberal in what kernels emit: the compatible queue writes the kernel's internal flags as Linux
/// copies them (bit 2, RESPONSE_NEEDS_PASID, for a device that needs the PASID, as VT-d sets it
/// on every request), and a reader keeps the unnamed bit visible and hands the group out. Before,
/// the record was refused and every group of that read was stranded: nobody learnt the cookies.
#[test]
fn records_with_flag_bits_the_uapi_does_not_name_are_read_and_answered() {
    let mut config = iopf_iommufd::CompatConfig::new(DEV);
    config.pasid_required = true;
    let (p, mut q) = iopf_iommufd::compat_fault_queue_with(config).unwrap();
    p.report(req(5, false, 0x1000));
    p.report(req(5, true, 0x2000));
    p.report(req(6, true, 0x3000));
    let mut raw = [0u8; 120];
    assert_eq!(q.read_bytes(&mut raw).unwrap(), 120);
    for rec in raw.chunks_exact(40) {
        assert_eq!(
            u32_at(rec, 0) & iopf_abi::KERNEL_RESPONSE_NEEDS_PASID,
            iopf_abi::KERNEL_RESPONSE_NEEDS_PASID,
            "the kernel's internal flag, as Linux copies it"
        );
    }
    // The same through the consumer interface, on a second queue: every record decodes, with
    // the unnamed bit kept.
    let (p, mut q) = iopf_iommufd::compat_fault_queue_with(config).unwrap();
    p.report(req(7, false, 0x1000));
    p.report(req(7, true, 0x2000));
    let mut out = [PgFault::from_bytes(&[0; 40]).unwrap(); 4];
    assert_eq!(q.read_faults(&mut out).unwrap(), 2);
    assert!(out[..2]
        .iter()
        .all(|f| f.unnamed().flags == iopf_abi::KERNEL_RESPONSE_NEEDS_PASID));
    assert!(out[1].is_last());
    assert_eq!(
        q.respond(&[IommufdResponse {
            cookie: out[1].cookie,
            code: ResponseCode::Success,
        }])
        .unwrap(),
        1
    );
    let answers = p.take_answers();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].pasid, Some(9), "the device needs its PASID back");
}

/// The newest kernel's read: 0 when the first group does not fit (6.12: EINVAL). The consumer
/// interface still says the group is too large rather than waiting for it forever.
#[test]
fn the_newest_kernel_reads_nothing_when_the_first_group_does_not_fit() {
    let mut config = iopf_iommufd::CompatConfig::new(DEV);
    config.kernel = iopf_iommufd::KernelModel::Newest;
    let (p, mut q) = iopf_iommufd::compat_fault_queue_with(config).unwrap();
    p.report(req(5, false, 0x1000));
    p.report(req(5, true, 0x2000));
    assert_eq!(q.read_bytes(&mut [0u8; 40]).unwrap(), 0);
    assert!(q.readiness().unwrap().readable);
    let mut one = [PgFault::from_bytes(&[0; 40]).unwrap(); 1];
    assert!(matches!(
        q.read_faults(&mut one),
        Err(Error::GroupTooLarge { capacity: 1 })
    ));
    let mut two = [PgFault::from_bytes(&[0; 40]).unwrap(); 2];
    assert_eq!(q.read_faults(&mut two).unwrap(), 2);
    // Linux 6.12 says EINVAL for the same read.
    let (p, mut q) = compat_fault_queue(DEV).unwrap();
    p.report(req(5, false, 0x1000));
    p.report(req(5, true, 0x2000));
    assert!(matches!(
        q.read_bytes(&mut [0u8; 40]),
        Err(Error::GroupTooLarge { .. })
    ));
}

/// A fault-capable HWPT on an SR-IOV VF: 6.12 refuses every VF, the newest kernel only one that
/// supports PRI.
#[test]
fn virtual_functions_are_refused_as_each_kernel_refuses_them() {
    use iopf_iommufd::{compat_fault_queue_with, CompatConfig, KernelModel};
    let vf = |kernel, pri| {
        let mut config = CompatConfig::new(DEV);
        config.kernel = kernel;
        config.virtual_function = true;
        config.pri = pri;
        config
    };
    for (kernel, pri, refused) in [
        (KernelModel::Linux6_12, true, true),
        (KernelModel::Linux6_12, false, true),
        (KernelModel::Newest, true, true),
        (KernelModel::Newest, false, false),
    ] {
        let r = compat_fault_queue_with(vf(kernel, pri));
        assert_eq!(r.is_err(), refused, "{kernel:?}, PRI {pri}");
        if let Err(e) = r {
            assert!(matches!(e, Error::FaultCapableVf));
            assert_eq!(e.errno(), libc_einval());
        }
    }
}
