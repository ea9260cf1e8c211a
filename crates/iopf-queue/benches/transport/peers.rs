//! The transport bench's peers: `rtrb` (bare, with the codec, and a hand-built exchange),
//! crossbeam's `ArrayQueue`, a socketpair, and the cache-line ping-pong floor. Also used by the
//! whole-path bench (`benches/whole_path.rs`), which includes this file.
#![allow(dead_code)] // each bench that includes this module uses part of it

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iopf_abi::{
    Fault, HwptPageResponse, IommuFault, IommuFaultWords, IommufdResponse, PageRequest,
    ResponseCode,
};

use super::harness::*;

// ---------------------------------------------------------------------------------------------
// Peers.

/// `n` values made by `make(i)` through `rtrb`, one way, `b` at a time (batch 1: `push` and
/// `pop`; otherwise write and read chunks); the consumer passes each to `take`.
pub(crate) fn rtrb_one_way<T: Copy + Send + 'static>(
    n: u64,
    b: usize,
    make: impl Fn(u64) -> T,
    take: impl Fn(&T) -> u64 + Send + 'static,
) -> Duration {
    let (mut tx, mut rx) = rtrb::RingBuffer::<T>::new(ENTRIES as usize);
    let consumer = spawn_peer(move || {
        let (mut got, mut sum) = (0u64, 0u64);
        let mut idle = Idle::default();
        while got < n {
            let before = got;
            if b == 1 {
                if let Ok(v) = rx.pop() {
                    sum = sum.wrapping_add(take(&v));
                    got += 1;
                }
            } else if let Ok(chunk) = rx.read_chunk(rx.slots().min(b)) {
                let (a, c) = chunk.as_slices();
                for v in a.iter().chain(c) {
                    sum = sum.wrapping_add(take(v));
                }
                got += (a.len() + c.len()) as u64;
                chunk.commit_all();
            }
            idle.after(got != before);
        }
        sum
    });
    let start = Instant::now();
    let mut sent = 0u64;
    let mut idle = Idle::default();
    while sent < n {
        let before = sent;
        if b == 1 {
            if tx.push(make(sent)).is_ok() {
                sent += 1;
            }
        } else {
            let k = (b as u64).min(n - sent) as usize;
            if let Ok(chunk) = tx.write_chunk_uninit(k) {
                let first = sent;
                sent += chunk.fill_from_iter((first..).map(&make)) as u64;
            }
        }
        idle.after(sent != before);
    }
    std::hint::black_box(consumer.join().unwrap());
    start.elapsed()
}

/// Bare `rtrb`: a 64-byte record, the consumer touching one byte.
pub(crate) fn rtrb_throughput(n: u64, b: usize) -> Duration {
    rtrb_one_way(n, b, |_| rec(7), |r: &Rec| u64::from(r.0[0]))
}

/// One record a line, like `Rec`.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Words(pub IommuFaultWords);

/// `rtrb` carrying the same records as the one-way row, with the same per-record codec work: the
/// producer encodes each unrecoverable fault into its `iommu_fault` words
/// (`Fault::encode_words`), the consumer decodes and validates them (`IommuFault::decode_words`,
/// the decoder this queue's consumer uses) and touches the address. What `rtrb` would cost a VMM
/// that must read the records, without the queue's sequence numbers, stamps, loss accounting or
/// sleep and wake-up.
pub(crate) fn rtrb_codec_throughput(n: u64, b: usize) -> Duration {
    rtrb_one_way(
        n,
        b,
        |i| Words(Fault::Unrecoverable(unrecoverable(i)).encode_words()),
        |w: &Words| match IommuFault::decode_words(&w.0) {
            Ok(Fault::Unrecoverable(u)) => u.addr,
            other => panic!("rtrb codec run received {other:?}"),
        },
    )
}

/// `rounds` round trips of `b` records through a pair of one-way queues, busy-polled: `send`
/// puts a record on the way (false when full), `recv` takes an answer (false when none); on the
/// other side a thread takes each record (`take`) and answers it with its first byte (`answer`,
/// false when full).
pub(crate) fn echo_latency(
    rounds: u64,
    b: usize,
    mut send: impl FnMut(Rec) -> bool,
    mut recv: impl FnMut() -> bool,
    mut take: impl FnMut() -> Option<Rec> + Send + 'static,
    mut answer: impl FnMut(u64) -> bool + Send + 'static,
) -> Vec<Duration> {
    let echo = spawn_peer(move || {
        let mut idle = Idle::polling();
        for _ in 0..rounds * b as u64 {
            let r = loop {
                if let Some(r) = take() {
                    break r;
                }
                idle.wait();
            };
            while !answer(u64::from(r.0[0])) {
                idle.wait();
            }
        }
    });
    let mut out = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let t = Instant::now();
        let mut idle = Idle::polling();
        for _ in 0..b {
            while !send(rec(1)) {
                idle.wait();
            }
        }
        for _ in 0..b {
            while !recv() {
                idle.wait();
            }
        }
        out.push(t.elapsed());
    }
    echo.join().unwrap();
    out
}

pub(crate) fn rtrb_latency(rounds: u64, b: usize) -> Vec<Duration> {
    let (mut tx, mut rx) = rtrb::RingBuffer::<Rec>::new(ENTRIES as usize);
    let (mut atx, mut arx) = rtrb::RingBuffer::<u64>::new(ENTRIES as usize);
    echo_latency(
        rounds,
        b,
        move |r| tx.push(r).is_ok(),
        move || arx.pop().is_ok(),
        move || rx.pop().ok(),
        move |a| atx.push(a).is_ok(),
    )
}

// ---------------------------------------------------------------------------------------------
// The exchange by hand on rtrb.

/// One rtrb slot of the hand-built exchange: what this queue's slot carries (sequence number,
/// cookie, device id) and the 64-byte `iommu_fault` record.
#[derive(Clone, Copy)]
pub(crate) struct ExchangeSlot {
    seq: u64,
    cookie: u32,
    dev_id: u32,
    record: IommuFault,
}

/// A group the hand-built producer waits on: tag, device, PASID, PRG index.
pub(crate) type PendingGroup = (u64, u32, u32, u32);

/// The producing end of the hand-built exchange.
pub(crate) struct RtrbExchange {
    pub(crate) tx: rtrb::Producer<ExchangeSlot>,
    pub(crate) answers: rtrb::Consumer<HwptPageResponse>,
    pub(crate) pending: HashMap<u32, PendingGroup>,
    pub(crate) next_cookie: u32,
    pub(crate) next_seq: u64,
    pub(crate) accepted: u64,
    pub(crate) rejected: u64,
}

impl RtrbExchange {
    /// Pushes one one-request group per request, all or none (one publication); returns how many.
    pub(crate) fn push(&mut self, requests: &[PageRequest]) -> usize {
        let (pending, cookie, seq) = (&mut self.pending, &mut self.next_cookie, &mut self.next_seq);
        // Assigns the next cookie and sequence number, and remembers the group.
        let mut track = |r: &PageRequest| {
            let slot = ExchangeSlot {
                seq: *seq,
                cookie: *cookie,
                dev_id: 1,
                record: Fault::PageRequest(*r).encode(),
            };
            pending.insert(slot.cookie, (0, slot.dev_id, r.pasid, r.grpid));
            *cookie = cookie.wrapping_add(1);
            *seq += 1;
            slot
        };
        if let [r] = requests {
            // Batch 1: rtrb's single push, as the rtrb row uses.
            let slot = track(r);
            if self.tx.push(slot).is_ok() {
                return 1;
            }
            // Full: the group was not sent; take it back.
            self.pending.remove(&slot.cookie);
            (self.next_cookie, self.next_seq) = (slot.cookie, slot.seq);
            return 0;
        }
        let Ok(chunk) = self.tx.write_chunk_uninit(requests.len()) else {
            return 0;
        };
        chunk.fill_from_iter(requests.iter().map(track))
    }

    /// Judges every waiting answer: decoded, its cookie taken out of the pending table (an answer
    /// naming no pending group is rejected), accepted ones appended to `out`. Returns how many
    /// answers were judged.
    pub(crate) fn drain(&mut self, out: &mut Vec<(PendingGroup, ResponseCode)>) -> usize {
        let k = self.answers.slots();
        if k == 0 {
            return 0;
        }
        for raw in self.answers.read_chunk(k).unwrap() {
            match raw
                .decode()
                .ok()
                .and_then(|a| Some((self.pending.remove(&a.cookie)?, a.code)))
            {
                Some(answer) => {
                    self.accepted += 1;
                    out.push(answer);
                }
                None => self.rejected += 1,
            }
        }
        k
    }
}

pub(crate) fn rtrb_exchange() -> (RtrbExchange, impl FnOnce(u64, u64, usize) -> u64 + Send) {
    let (tx, mut rx) = rtrb::RingBuffer::<ExchangeSlot>::new(ENTRIES as usize);
    let (mut atx, answers) = rtrb::RingBuffer::<HwptPageResponse>::new(ENTRIES as usize);
    let producer = RtrbExchange {
        tx,
        answers,
        pending: HashMap::new(),
        next_cookie: 1,
        next_seq: 0,
        accepted: 0,
        rejected: 0,
    };
    // The consumer: takes up to `b` records, decodes each (validated), answers each group; busy-
    // polls once the first `n_tput` are done, like `queue_consumer`.
    let consumer = move |n_tput: u64, n_lat: u64, b: usize| {
        let n = n_tput + n_lat;
        let mut responses: Vec<HwptPageResponse> = Vec::with_capacity(b);
        let (mut got, mut expected_seq, mut sum) = (0u64, 0u64, 0u64);
        let mut idle = Idle::default();
        while got < n {
            let k = rx.slots().min(b);
            if k == 0 {
                idle.wait();
                continue;
            }
            if got < n_tput && got + k as u64 >= n_tput {
                idle = Idle::polling();
            }
            idle.reset();
            responses.clear();
            for slot in rx.read_chunk(k).unwrap() {
                assert_eq!(slot.seq, expected_seq);
                expected_seq += 1;
                let Ok(Fault::PageRequest(r)) = slot.record.decode() else {
                    panic!("not a page request");
                };
                sum = sum.wrapping_add(u64::from(slot.dev_id) ^ r.addr);
                if r.is_last() {
                    responses.push(
                        IommufdResponse {
                            cookie: slot.cookie,
                            code: ResponseCode::Success,
                        }
                        .encode(),
                    );
                }
            }
            got += k as u64;
            let mut done = 0;
            while done < responses.len() {
                let room = atx.slots().min(responses.len() - done);
                if room == 0 {
                    idle.wait();
                    continue;
                }
                let chunk = atx.write_chunk_uninit(room).unwrap();
                done += chunk.fill_from_iter(responses[done..].iter().copied());
            }
        }
        sum
    };
    (producer, consumer)
}

/// The hand-built exchange as an [`ExchangeProducer`] of batches of `reqs`.
pub(crate) struct RtrbDriver<'a> {
    x: &'a mut RtrbExchange,
    reqs: Vec<PageRequest>,
    answers: Vec<(PendingGroup, ResponseCode)>,
}

impl<'a> RtrbDriver<'a> {
    pub(crate) fn new(x: &'a mut RtrbExchange, b: usize) -> RtrbDriver<'a> {
        RtrbDriver {
            x,
            reqs: (0..b as u64).map(page_request).collect(),
            answers: Vec::with_capacity(ENTRIES as usize),
        }
    }
}

impl ExchangeProducer for RtrbDriver<'_> {
    fn room(&mut self, k: usize) -> bool {
        self.x.pending.len() + k < ENTRIES as usize
    }
    fn push(&mut self, k: usize) -> usize {
        self.x.push(&self.reqs[..k])
    }
    fn drain(&mut self) -> usize {
        self.answers.clear();
        self.x.drain(&mut self.answers);
        self.answers.len()
    }
}

pub(crate) fn crossbeam_throughput(n: u64, b: usize) -> Duration {
    let q = Arc::new(crossbeam_queue::ArrayQueue::<Rec>::new(ENTRIES as usize));
    let q2 = q.clone();
    let consumer = spawn_peer(move || {
        let mut got = 0u64;
        let mut sum = 0u64;
        let mut idle = Idle::default();
        while got < n {
            let before = got;
            for _ in 0..b {
                if let Some(r) = q2.pop() {
                    sum = sum.wrapping_add(u64::from(r.0[0]));
                    got += 1;
                }
            }
            idle.after(got != before);
        }
        sum
    });
    let start = Instant::now();
    let mut sent = 0u64;
    let mut idle = Idle::default();
    while sent < n {
        let before = sent;
        for _ in 0..b {
            if sent < n && q.push(rec(7)).is_ok() {
                sent += 1;
            }
        }
        idle.after(sent != before);
    }
    std::hint::black_box(consumer.join().unwrap());
    start.elapsed()
}

pub(crate) fn crossbeam_latency(rounds: u64, b: usize) -> Vec<Duration> {
    let q = Arc::new(crossbeam_queue::ArrayQueue::<Rec>::new(ENTRIES as usize));
    let a = Arc::new(crossbeam_queue::ArrayQueue::<u64>::new(ENTRIES as usize));
    let (q2, a2) = (q.clone(), a.clone());
    echo_latency(
        rounds,
        b,
        move |r| q.push(r).is_ok(),
        move || a.pop().is_some(),
        move || q2.pop(),
        move |x| a2.push(x).is_ok(),
    )
}

/// Writes `n` records, one `write` per batch of `b`.
pub(crate) fn socket_writer_throughput(s: &mut UnixStream, n: u64, b: usize) -> Duration {
    let buf = vec![7u8; 64 * b];
    let start = Instant::now();
    let mut sent = 0;
    while sent < n {
        let k = (b as u64).min(n - sent) as usize;
        s.write_all(&buf[..64 * k]).unwrap();
        sent += k as u64;
    }
    // The reader's one-byte acknowledgement: everything arrived.
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).unwrap();
    start.elapsed()
}

pub(crate) fn socket_reader(s: &mut UnixStream, n: u64, b: usize, echo: bool) {
    let mut buf = vec![0u8; 64 * b];
    let answers = vec![1u8; 8 * b];
    let mut got = 0;
    while got < n {
        let k = (b as u64).min(n - got) as usize;
        s.read_exact(&mut buf[..64 * k]).unwrap();
        got += k as u64;
        if echo {
            s.write_all(&answers[..8 * k]).unwrap();
        }
    }
    if !echo {
        s.write_all(&[1]).unwrap();
    }
}

pub(crate) fn socket_writer_latency(s: &mut UnixStream, rounds: u64, b: usize) -> Vec<Duration> {
    let buf = vec![7u8; 64 * b];
    let mut answers = vec![0u8; 8 * b];
    let mut out = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let t = Instant::now();
        s.write_all(&buf).unwrap();
        s.read_exact(&mut answers).unwrap();
        out.push(t.elapsed());
    }
    out
}

#[repr(align(128))]
pub(crate) struct Line(pub AtomicU64);

pub(crate) fn ping_pong(rounds: u64) -> Vec<Duration> {
    let ping = Arc::new(Line(AtomicU64::new(0)));
    let pong = Arc::new(Line(AtomicU64::new(0)));
    let (ping2, pong2) = (ping.clone(), pong.clone());
    let other = spawn_peer(move || {
        for i in 1..=rounds {
            while ping2.0.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            pong2.0.store(i, Ordering::Release);
        }
    });
    let mut out = Vec::with_capacity(rounds as usize);
    for i in 1..=rounds {
        let t = Instant::now();
        ping.0.store(i, Ordering::Release);
        while pong.0.load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        out.push(t.elapsed());
    }
    other.join().unwrap();
    out
}
