//! iopf-iommufd's compatible fault queue under an arbitrary sequence of operations: page requests
//! reported with arbitrary flags, PASIDs, permissions and a few PRG indexes (so groups collide),
//! `read()` with arbitrary buffer sizes, `write()` of arbitrary bytes (cookies handed out or not,
//! any code, any length), the `FaultConsumer` read and respond, detach and attach. Checked:
//! nothing panics; a read returns whole records of whole groups only; a write is accepted only
//! for cookies handed out by a read and not yet answered (after a detach, none); at the device,
//! every completed group is answered exactly once (never more for a PRG index than groups it
//! completed, exactly as many once the consumer is gone), never Response Failure.
#![no_main]

use std::collections::HashSet;

use iopf_abi::{
    FaultConsumer, IommufdResponse, PageRequest, PageRequestFlags, Perm, PgFault, ResponseCode,
};
use iopf_iommufd::{compat_fault_queue, FaultFd, RECORD_SIZE, RESPONSE_SIZE};
use libfuzzer_sys::fuzz_target;

const PRGS: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Ok((dev, mut q)) = compat_fault_queue(3) else {
        return;
    };
    // Groups completed per PRG index (LAST_PAGE, not a stop marker), answers per PRG index.
    let mut completed = [0u64; PRGS];
    let mut answered = [0u64; PRGS];
    // Cookies handed out by a read and not answered since.
    let mut handed: HashSet<u32> = HashSet::new();
    let mut last_cookies: Vec<u32> = Vec::new();
    let check = |answered: &mut [u64; PRGS], completed: &[u64; PRGS]| {
        for a in dev.take_answers() {
            assert_ne!(a.code, ResponseCode::Failure, "FAILURE to a device that may not get it");
            let g = a.grpid as usize;
            assert!(g < PRGS, "answer to a PRG index never used: {a:?}");
            answered[g] += 1;
            assert!(answered[g] <= completed[g], "PRG {g} answered more often than completed");
        }
    };
    let mut buf = vec![0u8; 64 * RECORD_SIZE + 64];
    for chunk in data.chunks(6) {
        let op = chunk[0];
        let arg = |i: usize| chunk.get(i).copied().unwrap_or(0);
        match op % 8 {
            0 | 1 => {
                let flags = PageRequestFlags::from_bits_truncate(u32::from(arg(1) & 0xf));
                let req = PageRequest {
                    flags,
                    pasid: u32::from(arg(2) & 3),
                    grpid: u32::from(arg(3)) % PRGS as u32,
                    perm: Perm::from_bits_truncate(u32::from(arg(4))),
                    addr: u64::from(arg(5)) << 12,
                    private_data: [u64::from(arg(5)), 1],
                };
                if req.is_last() && !req.is_stop_marker() {
                    completed[req.grpid as usize] += 1;
                }
                dev.report(req);
            }
            2 => {
                // read() with an arbitrary size (most not a multiple of a record).
                let len = (usize::from(arg(1)) | usize::from(arg(2) & 0xf) << 8).min(buf.len());
                let got = q.read_bytes(&mut buf[..len]);
                if len % RECORD_SIZE != 0 {
                    assert!(got.is_err(), "a ragged read() must be EINVAL");
                }
                if let Ok(n) = got {
                    assert!(n <= len && n % RECORD_SIZE == 0, "read {n} of {len}");
                    let recs: Vec<PgFault> = buf[..n]
                        .chunks_exact(RECORD_SIZE)
                        .map(|r| PgFault::from_bytes(r).expect("the queue's own record"))
                        .collect();
                    if let Some(last) = recs.last() {
                        assert!(last.is_last(), "a read ends inside a group");
                    }
                    for r in recs.iter().filter(|r| r.is_last()) {
                        assert!(handed.insert(r.cookie), "cookie {} handed out twice", r.cookie);
                        last_cookies.push(r.cookie);
                    }
                }
            }
            3 => {
                // write() of responses: cookie from the handed-out ones or raw, any code, and
                // sometimes a ragged length.
                let count = 1 + usize::from(arg(1) & 3);
                let mut bytes = Vec::new();
                let mut cookies = Vec::new();
                for i in 0..count {
                    let cookie = if arg(2) & (1 << i) != 0 || last_cookies.is_empty() {
                        u32::from(arg(3)).wrapping_add(i as u32)
                    } else {
                        last_cookies[(usize::from(arg(3)) + i) % last_cookies.len()]
                    };
                    let code = u32::from(arg(4) >> (2 * i) & 3);
                    bytes.extend_from_slice(&cookie.to_le_bytes());
                    bytes.extend_from_slice(&code.to_le_bytes());
                    cookies.push(cookie);
                }
                if arg(5) & 1 != 0 {
                    bytes.truncate(bytes.len() - 1 - usize::from(arg(5) >> 1) % 7);
                }
                if let Ok(n) = q.write_bytes(&bytes) {
                    assert!(n <= bytes.len() && n % RESPONSE_SIZE == 0);
                    for c in &cookies[..n / RESPONSE_SIZE] {
                        assert!(handed.remove(c), "write accepted for cookie {c} not held");
                    }
                }
            }
            4 => {
                let mut out = [PgFault::from_bytes(&[0; RECORD_SIZE]).expect("zeroes decode"); 16];
                let len = usize::from(arg(1)) % 17;
                if let Ok(n) = q.read_faults(&mut out[..len]) {
                    assert!(n <= len);
                    if n > 0 {
                        assert!(out[n - 1].is_last(), "read_faults ends inside a group");
                    }
                    for r in out[..n].iter().filter(|r| r.is_last()) {
                        assert!(handed.insert(r.cookie), "cookie {} handed out twice", r.cookie);
                        last_cookies.push(r.cookie);
                    }
                }
            }
            5 => {
                let cookie = if last_cookies.is_empty() || arg(1) & 1 != 0 {
                    u32::from(arg(2))
                } else {
                    last_cookies[usize::from(arg(2)) % last_cookies.len()]
                };
                let code = match arg(3) % 3 {
                    0 => ResponseCode::Success,
                    1 => ResponseCode::Invalid,
                    _ => ResponseCode::Failure,
                };
                if let Ok(n) = q.respond(&[IommufdResponse { cookie, code }]) {
                    if n == 1 {
                        assert!(handed.remove(&cookie), "respond accepted for cookie {cookie} not held");
                    }
                }
            }
            6 => {
                dev.detach();
                // Every group handed out was answered INVALID: none may be answered again.
                handed.clear();
                if arg(1) & 1 != 0 {
                    let _ = dev.attach();
                }
            }
            _ => {
                let _ = dev.attach();
                check(&mut answered, &completed);
            }
        }
        if last_cookies.len() > 64 {
            last_cookies.drain(..32);
        }
    }
    check(&mut answered, &completed);
    drop(q);
    check(&mut answered, &completed);
    assert_eq!(
        answered, completed,
        "after the consumer went, every completed group answered exactly once"
    );
    assert_eq!(dev.outstanding(), 0);
});
