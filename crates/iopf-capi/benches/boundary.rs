//! What the C boundary adds per group: a window of one-request groups reported on the
//! compatible queue, read, answered and collected at the device, through the Rust API
//! (`CompatProducer`, `FaultConsumer`) and through the C API's functions (`iopf_compat_report`,
//! `iopf_host_read_faults`, `iopf_host_respond`, `iopf_compat_take_answers`: the panic guard,
//! the pointer checks and the record translation), in the same run.
//!
//! Before criterion's runs, `interleaved` times the two in alternation and prints the ratio
//! (C API ÷ Rust API), which stays meaningful on a loaded machine.
//!
//! Run briefly: `cargo bench -p iopf-capi --bench boundary -- --warm-up-time 1
//! --measurement-time 3`.
#![allow(missing_docs)] // criterion generates the benchmark group functions

use std::hint::black_box;
use std::ptr;
use std::time::Instant;

use criterion::{criterion_group, Criterion, Throughput};
use iopf_abi::fault::IommuFaultPageRequest;
use iopf_abi::{
    FaultConsumer, HwptPageResponse, HwptPgfault, IommufdResponse, PageRequest, PageRequestFlags,
    Perm, PgFault, ResponseCode,
};
use iopf_capi::{
    iopf_compat_device_free, iopf_compat_new, iopf_compat_report, iopf_compat_take_answers,
    iopf_host_free, iopf_host_read_faults, iopf_host_respond, IopfCompatDevice, IopfDeviceResponse,
    IopfHost,
};
use iopf_iommufd::{compat_fault_queue, CompatFaultQueue, CompatProducer};

const WINDOW: u32 = 64;

fn req(grpid: u32) -> PageRequest {
    PageRequest {
        flags: PageRequestFlags::LAST_PAGE | PageRequestFlags::PASID_VALID,
        pasid: 1,
        grpid,
        perm: Perm::READ,
        addr: 0x1000 * u64::from(grpid + 1),
        private_data: [0; 2],
    }
}

struct RustSide {
    device: CompatProducer,
    queue: CompatFaultQueue,
    buf: Vec<PgFault>,
    responses: Vec<IommufdResponse>,
}

impl RustSide {
    fn new() -> RustSide {
        let (device, queue) = compat_fault_queue(1).expect("queue");
        RustSide {
            device,
            queue,
            buf: vec![PgFault::ZEROED; WINDOW as usize],
            responses: Vec::with_capacity(WINDOW as usize),
        }
    }

    fn window(&mut self) -> usize {
        for g in 0..WINDOW {
            self.device.report(req(g));
        }
        let n = self.queue.read_faults(&mut self.buf).expect("read");
        self.responses.clear();
        self.responses
            .extend(self.buf[..n].iter().map(|f| IommufdResponse {
                cookie: f.cookie,
                code: ResponseCode::Success,
            }));
        self.queue.respond(&self.responses).expect("respond");
        let answers = self.device.take_answers();
        assert_eq!(answers.len(), WINDOW as usize);
        answers.len()
    }
}

struct CSide {
    device: *mut IopfCompatDevice,
    host: *mut IopfHost,
    requests: Vec<IommuFaultPageRequest>,
    buf: Vec<HwptPgfault>,
    responses: Vec<HwptPageResponse>,
    answers: Vec<IopfDeviceResponse>,
}

impl CSide {
    fn new() -> CSide {
        let mut device = ptr::null_mut();
        let mut host = ptr::null_mut();
        // SAFETY: both out pointers are valid locals.
        let rc = unsafe { iopf_compat_new(1, 0, &mut device, &mut host) };
        assert_eq!(rc, 0);
        CSide {
            device,
            host,
            requests: (0..WINDOW).map(|g| req(g).encode()).collect(),
            buf: vec![HwptPgfault::default(); WINDOW as usize],
            responses: Vec::with_capacity(WINDOW as usize),
            answers: vec![IopfDeviceResponse::default(); WINDOW as usize],
        }
    }

    fn window(&mut self) -> usize {
        for r in &self.requests {
            // SAFETY: a live device handle and a valid request.
            assert_eq!(unsafe { iopf_compat_report(self.device, r) }, 0);
        }
        // SAFETY: a live host handle and a buffer of buf.len() records.
        let n = unsafe { iopf_host_read_faults(self.host, self.buf.as_mut_ptr(), self.buf.len()) };
        let n = usize::try_from(n).expect("read");
        self.responses.clear();
        self.responses
            .extend(self.buf[..n].iter().map(|f| HwptPageResponse {
                cookie: f.cookie,
                code: 0,
            }));
        // SAFETY: a live host handle and responses.len() responses.
        let done =
            unsafe { iopf_host_respond(self.host, self.responses.as_ptr(), self.responses.len()) };
        assert_eq!(done, WINDOW as i32);
        // SAFETY: a live device handle and room for answers.len() answers.
        let got = unsafe {
            iopf_compat_take_answers(self.device, self.answers.as_mut_ptr(), self.answers.len())
        };
        assert_eq!(got, WINDOW as i32);
        got as usize
    }
}

impl Drop for CSide {
    fn drop(&mut self) {
        // SAFETY: handles from iopf_compat_new, freed once.
        unsafe {
            iopf_host_free(self.host);
            iopf_compat_device_free(self.device);
        }
    }
}

/// Times both sides in alternation and prints ns per group and the ratio.
fn interleaved() {
    let mut rust = RustSide::new();
    let mut c = CSide::new();
    let rounds = 2_000;
    let (mut t_rust, mut t_c) = (0u128, 0u128);
    for _ in 0..rounds {
        let t = Instant::now();
        black_box(rust.window());
        t_rust += t.elapsed().as_nanos();
        let t = Instant::now();
        black_box(c.window());
        t_c += t.elapsed().as_nanos();
    }
    let per = |t: u128| t as f64 / f64::from(rounds * WINDOW);
    println!(
        "interleaved, {rounds} windows of {WINDOW} groups: Rust API {:.0} ns/group, C API {:.0} ns/group, C/Rust {:.3}",
        per(t_rust),
        per(t_c),
        per(t_c) / per(t_rust)
    );
}

fn boundary(c: &mut Criterion) {
    interleaved();
    let mut g = c.benchmark_group("compat_window");
    g.throughput(Throughput::Elements(u64::from(WINDOW)));
    let mut rust = RustSide::new();
    g.bench_function("rust_api", |b| b.iter(|| black_box(rust.window())));
    let mut cside = CSide::new();
    g.bench_function("c_api", |b| b.iter(|| black_box(cside.window())));
    g.finish();
}

criterion_group!(benches, boundary);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
