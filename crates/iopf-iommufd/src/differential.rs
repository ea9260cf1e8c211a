//! One script of fault-queue operations, run against any fault queue, so that the Linux kernel's
//! (in the guest of `scripts/kernel-tier.sh`) and iopf's [`CompatFaultQueue`] can be required to
//! give identical observable results: the bytes every read returns, every write's count, every
//! errno, every poll.
//!
//! Cookie values are each implementation's own (Linux: lowest free from 1; iopf's fault core:
//! slot and generation), so in the recorded bytes a cookie is replaced by the ordinal of the group
//! it names in the run (`0` for the first group read, `1` for the next...): two queues agree when
//! they hand out the same groups in the same order. Bogus cookies in scripts are values neither
//! issues (`0x30_0000 + k`: Linux would need three million groups outstanding, and iopf's cookies
//! all have a non-zero generation at bit 22). Not 0: Linux 6.12 does issue cookie 0 once a
//! response naming cookie 0 was written while a group was outstanding (its `xa_erase()` removes
//! the placeholder `XA_FLAGS_ALLOC1` keeps at index 0), so 0 is bogus on Linux only until then.
//!
//! While running, [`run`] also checks on each queue what must hold whatever the implementation:
//! a read returns whole groups (every record of a group carries its cookie, the last one has
//! `LAST_PAGE`) and no cookie handed out is one still awaiting an answer.
//!
//! [`CompatFaultQueue`]: crate::CompatFaultQueue

use std::collections::BTreeSet;

use iopf_abi::iommufd::PgfaultFlags;
use iopf_abi::{HwptPgfault, PageRequest, PageRequestFlags, Perm};

use crate::{
    compat_fault_queue, CompatFaultQueue, CompatProducer, FaultFd, Readiness, Result, RECORD_SIZE,
    RESPONSE_SIZE,
};

/// A cookie to answer: one read earlier in the same run, or a literal (for bogus cookies).
///
/// Linux reuses a cookie value as soon as its group is answered (lowest free), while iopf's fault
/// core gives each group a fresh generation; so a stale cookie may name a *new* group on Linux and
/// none on iopf. Scripts meant to agree refer to stale cookies only before any later read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieRef {
    /// The cookie of the n-th record read so far in this run (modulo the number read; a
    /// never-issued cookie when nothing was read yet). May be stale.
    Read(usize),
    /// The n-th (modulo their number) of the groups handed out and not yet answered, in the
    /// order they were read; a never-issued cookie when there is none.
    Outstanding(usize),
    /// This exact value.
    Literal(u32),
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The device reports one page request with `LAST_PAGE` (a one-request group, the shape the
    /// kernel's selftest mock produces), with `PASID_VALID` unless `pasid` is 0.
    Trigger {
        /// PASID (0: none).
        pasid: u32,
        /// PRG index.
        grpid: u32,
        /// `IOMMU_PGFAULT_PERM_*` bits.
        perm: u32,
        /// Fault address.
        addr: u64,
    },
    /// `read()` of `len` bytes.
    Read {
        /// Bytes asked for.
        len: usize,
    },
    /// `write()` of these `{cookie, code}` responses.
    Write(Vec<(CookieRef, u32)>),
    /// `write()` of raw bytes (sizes that are not multiples of 8).
    WriteRaw(Vec<u8>),
    /// `poll()` with a zero timeout.
    Poll,
    /// Replace the fault-capable HWPT with one that is not (outstanding groups get INVALID).
    Detach,
    /// Attach the fault-capable HWPT again.
    Attach,
}

/// What an operation observably did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A trigger, detach or attach that succeeded.
    Done,
    /// A read's bytes.
    Bytes(Vec<u8>),
    /// A write's byte count.
    Written(usize),
    /// The errno of a failed operation.
    Errno(i32),
    /// A poll.
    Ready(Readiness),
}

/// A queue under test and the means to make faults arrive.
pub trait Target {
    /// The fault fd.
    fn fd(&mut self) -> &mut dyn FaultFd;
    /// The device reports one `LAST_PAGE` page request.
    fn trigger(&mut self, pasid: u32, grpid: u32, perm: u32, addr: u64) -> Result<()>;
    /// Replace the fault-capable HWPT by a non-fault one.
    fn detach(&mut self) -> Result<()>;
    /// Attach the fault-capable HWPT again.
    fn attach(&mut self) -> Result<()>;
}

/// A run's outcomes, one per operation, and any broken invariant seen along the way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transcript {
    /// One per operation, in order.
    pub outcomes: Vec<Outcome>,
    /// Whole-group or cookie-uniqueness violations, in words.
    pub violations: Vec<String>,
    /// The raw cookie of every record read, in order (for diagnosis: values differ between
    /// implementations).
    pub cookies: Vec<u32>,
}

#[derive(Default)]
struct Tracker {
    /// Raw cookies of every record read, in order (what [`CookieRef::Read`] indexes).
    seen: Vec<u32>,
    /// Raw cookies handed out and not answered.
    outstanding: BTreeSet<u32>,
    /// The same, in the order they were read.
    outstanding_in_order: Vec<u32>,
    /// Groups read so far: the next group's ordinal.
    groups: u32,
    violations: Vec<String>,
}

/// A cookie the queues never issue, for references to records not read.
const NEVER_ISSUED: u32 = 0x30_0000;

impl Tracker {
    fn cookie(&self, r: CookieRef) -> u32 {
        match r {
            CookieRef::Literal(c) => c,
            CookieRef::Read(n) if self.seen.is_empty() => NEVER_ISSUED | (n as u32 & 0xffff),
            CookieRef::Read(n) => self.seen[n % self.seen.len()],
            CookieRef::Outstanding(n) if self.outstanding_in_order.is_empty() => {
                NEVER_ISSUED | (n as u32 & 0xffff)
            }
            CookieRef::Outstanding(n) => {
                self.outstanding_in_order[n % self.outstanding_in_order.len()]
            }
        }
    }

    /// Checks a read's records and replaces each cookie by its group's ordinal.
    fn on_read(&mut self, op: usize, bytes: &mut [u8]) {
        if bytes.len() % RECORD_SIZE != 0 {
            self.violations
                .push(format!("op {op}: read returned {} bytes", bytes.len()));
            return;
        }
        let mut group_cookie: Option<u32> = None;
        for raw in bytes.chunks_exact_mut(RECORD_SIZE) {
            let rec = match HwptPgfault::read(&*raw) {
                Ok(r) => r,
                Err(e) => {
                    self.violations.push(format!("op {op}: {e}"));
                    return;
                }
            };
            self.seen.push(rec.cookie);
            match group_cookie {
                None => {
                    self.groups += 1;
                    self.outstanding_in_order.push(rec.cookie);
                    if !self.outstanding.insert(rec.cookie) {
                        self.violations.push(format!(
                            "op {op}: cookie {} handed out while still outstanding",
                            rec.cookie
                        ));
                    }
                }
                Some(c) if c != rec.cookie => self.violations.push(format!(
                    "op {op}: records of one group carry cookies {c} and {}",
                    rec.cookie
                )),
                Some(_) => {}
            }
            raw[36..40].copy_from_slice(&(self.groups - 1).to_ne_bytes());
            group_cookie = if rec.flags & PgfaultFlags::LAST_PAGE.bits() != 0 {
                None
            } else {
                Some(rec.cookie)
            };
        }
        if group_cookie.is_some() {
            self.violations
                .push(format!("op {op}: read ended inside a group (no LAST_PAGE)"));
        }
    }
}

/// Runs `script` against `target`, recording every outcome.
pub fn run(target: &mut dyn Target, script: &[Op]) -> Transcript {
    let mut t = Tracker::default();
    let mut outcomes = Vec::with_capacity(script.len());
    for (i, op) in script.iter().enumerate() {
        let outcome = match op {
            Op::Trigger {
                pasid,
                grpid,
                perm,
                addr,
            } => done(target.trigger(*pasid, *grpid, *perm, *addr)),
            Op::Read { len } => {
                let mut buf = vec![0u8; *len];
                match target.fd().read_bytes(&mut buf) {
                    Ok(n) => {
                        buf.truncate(n);
                        t.on_read(i, &mut buf);
                        Outcome::Bytes(buf)
                    }
                    Err(e) => Outcome::Errno(e.errno()),
                }
            }
            Op::Write(responses) => {
                let cookies: Vec<u32> = responses.iter().map(|(r, _)| t.cookie(*r)).collect();
                let mut bytes = Vec::with_capacity(responses.len() * RESPONSE_SIZE);
                for (cookie, (_, code)) in cookies.iter().zip(responses) {
                    bytes.extend_from_slice(&cookie.to_ne_bytes());
                    bytes.extend_from_slice(&code.to_ne_bytes());
                }
                match target.fd().write_bytes(&bytes) {
                    Ok(n) => {
                        for c in &cookies[..n / RESPONSE_SIZE] {
                            t.outstanding.remove(c);
                            t.outstanding_in_order.retain(|o| o != c);
                        }
                        Outcome::Written(n)
                    }
                    Err(e) => Outcome::Errno(e.errno()),
                }
            }
            Op::WriteRaw(bytes) => match target.fd().write_bytes(bytes) {
                Ok(n) => Outcome::Written(n),
                Err(e) => Outcome::Errno(e.errno()),
            },
            Op::Poll => match target.fd().readiness() {
                Ok(r) => Outcome::Ready(r),
                Err(e) => Outcome::Errno(e.errno()),
            },
            Op::Detach => {
                let o = done(target.detach());
                t.outstanding.clear();
                t.outstanding_in_order.clear();
                o
            }
            Op::Attach => done(target.attach()),
        };
        outcomes.push(outcome);
    }
    Transcript {
        outcomes,
        violations: t.violations,
        cookies: t.seen,
    }
}

fn done(r: Result<()>) -> Outcome {
    match r {
        Ok(()) => Outcome::Done,
        Err(e) => Outcome::Errno(e.errno()),
    }
}

/// Compares two runs of `script`: `Ok` when every outcome is identical and neither run broke an
/// invariant, else the first difference in words.
pub fn compare(
    script: &[Op],
    left_name: &str,
    left: &Transcript,
    right_name: &str,
    right: &Transcript,
) -> std::result::Result<(), String> {
    for (name, t) in [(left_name, left), (right_name, right)] {
        if let Some(v) = t.violations.first() {
            return Err(format!("{name}: {v}"));
        }
        if t.outcomes.len() != script.len() {
            return Err(format!(
                "{name}: {} outcomes for {} ops",
                t.outcomes.len(),
                script.len()
            ));
        }
    }
    for (i, ((a, b), op)) in left
        .outcomes
        .iter()
        .zip(&right.outcomes)
        .zip(script)
        .enumerate()
    {
        if a != b {
            return Err(format!(
                "op {i} {op:?}: {left_name} gave {a:?}, {right_name} gave {b:?}"
            ));
        }
    }
    Ok(())
}

/// The hand-written script: each rule of the fault fd in turn (empty reads, ESPIPE sizes, the
/// first-group-does-not-fit EINVAL, batch reads, unknown cookie and code, FAILURE refused, double
/// answers, partial writes, poll before and after, replace with faults outstanding, reattach).
pub fn standard_script() -> Vec<Op> {
    use CookieRef::{Literal, Outstanding as Out, Read as R};
    let rw = (Perm::READ | Perm::WRITE).bits();
    let trig = |pasid: u32, grpid: u32, perm: u32, addr: u64| Op::Trigger {
        pasid,
        grpid,
        perm,
        addr,
    };
    let mut s = vec![
        Op::Poll,
        Op::Read { len: 0 },
        Op::Read { len: 40 },
        Op::Read { len: 39 },
        Op::WriteRaw(vec![0; 7]),
        Op::Write(vec![(Literal(1), 0)]),
        Op::Write(vec![(Literal(0), 1)]),
        trig(1, 2, rw, 0xdead_beaf),
        Op::Poll,
        Op::Read { len: 0 },
        Op::Read { len: 41 },
        Op::Read { len: 400 },
        Op::Poll,
        Op::Write(vec![(R(0), 2)]),
        Op::Write(vec![(R(0), 7)]),
        Op::Write(vec![(R(0), 0)]),
        Op::Write(vec![(R(0), 0)]),
    ];
    for g in 0..6u32 {
        s.push(trig(
            0,
            10 + g,
            Perm::all().bits(),
            0x1000 * u64::from(g + 1),
        ));
    }
    s.extend([
        Op::Read { len: 80 },
        Op::Read { len: 120 },
        Op::Write(vec![(R(2), 1), (Literal(NEVER_ISSUED + 7), 0), (R(3), 0)]),
        Op::Write(vec![(R(1), 0)]),
        Op::Read { len: 400 },
        Op::Read { len: 400 },
        trig(5, 30, Perm::READ.bits(), !0xfff_u64),
        trig(5, 31, Perm::WRITE.bits(), 0),
        Op::Read { len: 40 },
        Op::Poll,
        Op::Detach,
        Op::Poll,
        Op::Read { len: 400 },
        Op::Write(vec![(R(7), 0)]),
        Op::Write(vec![(R(6), 1)]),
        trig(1, 40, rw, 0x4000),
        Op::Read { len: 400 },
        Op::Attach,
        trig(1, 41, rw, 0x5000),
        trig(0, 42, rw, 0x6000),
        Op::Poll,
        Op::Read { len: 400 },
        Op::Write(vec![(R(8), 0), (R(9), 1)]),
        Op::Write(vec![(R(8), 0)]),
        trig(0, 43, rw, 0x7000),
        trig(0, 44, rw, 0x8000),
        Op::Read { len: 80 },
        Op::Write(vec![(Out(1), 0), (Out(1), 0), (Out(0), 0)]),
        Op::Write(vec![(Out(0), 1)]),
        Op::Poll,
        Op::Poll,
    ]);
    s
}

/// A pseudo-random script of `len` operations from `seed` (xorshift64*; the same seed gives
/// the same script on every machine). Detach and attach alternate, as a VMM would issue them.
pub fn random_script(seed: u64, len: usize) -> Vec<Op> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut attached = true;
    let mut ops = Vec::with_capacity(len);
    while ops.len() < len {
        let roll = next() % 100;
        let op = match roll {
            0..=34 => Op::Trigger {
                pasid: [0, 1, 7, 0xf_ffff][(next() % 4) as usize],
                grpid: (next() % 512) as u32,
                perm: [1, 2, 3, 0xf][(next() % 4) as usize],
                addr: next(),
            },
            35..=54 => Op::Read {
                len: [0, 40, 80, 120, 400, 4000, 17, 41][(next() % 8) as usize],
            },
            55..=79 => {
                let n = 1 + next() % 3;
                Op::Write(
                    (0..n)
                        .map(|_| {
                            let cookie = if next() % 8 == 0 {
                                CookieRef::Literal(NEVER_ISSUED + (next() % 64) as u32)
                            } else {
                                CookieRef::Outstanding(next() as usize)
                            };
                            (cookie, [0, 0, 0, 1, 1, 2, 7][(next() % 7) as usize])
                        })
                        .collect(),
                )
            }
            80..=84 => Op::WriteRaw(vec![0; [1, 7, 9, 12, 15][(next() % 5) as usize]]),
            85..=94 => Op::Poll,
            _ => {
                attached = !attached;
                if attached {
                    Op::Attach
                } else {
                    Op::Detach
                }
            }
        };
        ops.push(op);
    }
    ops
}

/// [`CompatFaultQueue`] as a [`Target`], its records carrying `dev_id`.
#[derive(Debug)]
pub struct CompatTarget {
    /// The producer half.
    pub producer: CompatProducer,
    /// The consumer half.
    pub queue: CompatFaultQueue,
    /// The device id its records carry (the kernel mock's, to compare byte for byte).
    pub dev_id: u32,
}

impl CompatTarget {
    /// A fresh, attached queue for a device with iommufd id `dev_id`.
    pub fn new(dev_id: u32) -> Result<CompatTarget> {
        let (producer, queue) = compat_fault_queue(dev_id)?;
        Ok(CompatTarget {
            producer,
            queue,
            dev_id,
        })
    }
}

impl Target for CompatTarget {
    fn fd(&mut self) -> &mut dyn FaultFd {
        &mut self.queue
    }

    fn trigger(&mut self, pasid: u32, grpid: u32, perm: u32, addr: u64) -> Result<()> {
        let mut flags = PageRequestFlags::LAST_PAGE;
        if pasid != 0 {
            flags |= PageRequestFlags::PASID_VALID;
        }
        self.producer.report(PageRequest {
            flags,
            pasid,
            grpid,
            perm: Perm::from_bits_retain(perm),
            addr,
            private_data: [0; 2],
        });
        Ok(())
    }

    fn detach(&mut self) -> Result<()> {
        self.producer.detach();
        Ok(())
    }

    fn attach(&mut self) -> Result<()> {
        self.producer.attach()
    }
}
