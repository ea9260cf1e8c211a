//! What the guest side adds per group, one row per architecture: a window of page request
//! groups carried host queue → bridge → the guest's page request queue in guest memory (VT-d
//! PRQ, SMMUv3 PRI queue, AMD PPR log) → guest driver model → page response in the guest's
//! command queue (page group response, `CMD_PRI_RESP` + `CMD_SYNC`, `COMPLETE_PPR_REQUEST` +
//! `COMPLETION_WAIT`) → host answer, against the host-only exchange (the VMM reads the same
//! host queue and answers it itself), in the same run.
//!
//! Both sides use iopf's iommufd-compatible queue as the host fault queue and answer every group
//! Success; each iteration reports `WINDOW` one-request groups and answers them all. Before
//! criterion's runs, `interleaved` times the two in alternation and prints the ratio (bridged ÷
//! host-only), which stays meaningful on a loaded machine.
//!
//! Run briefly: `cargo bench -p iopf-viommu --bench bridge -- --warm-up-time 1
//! --measurement-time 3`.
#![allow(missing_docs)] // criterion generates the benchmark group functions

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, Criterion, Throughput};
use iopf_abi::{
    FaultConsumer, IommufdResponse, PageRequest, PageRequestFlags, Perm, PgFault, ResponseCode,
};
use iopf_iommufd::{compat_fault_queue, CompatFaultQueue, CompatProducer};
use iopf_viommu::amd::{AmdBridge, AmdConfig};
use iopf_viommu::guest::{
    AmdGuestDriver, GuestDriverModel, IdentityResolver, SmmuGuestDriver, VtdGuestDriver,
};
use iopf_viommu::smmuv3::{SmmuBridge, SmmuConfig};
use iopf_viommu::vtd::{VtdBridge, VtdConfig};
use iopf_viommu::{BridgeConfig, Endpoint, PassthroughUnit, PrivateDataMode, RecordedMsis};
use vm_memory::{GuestAddress, GuestMemoryMmap};

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

struct HostOnly {
    device: CompatProducer,
    queue: CompatFaultQueue,
    buf: Vec<PgFault>,
    responses: Vec<IommufdResponse>,
}

impl HostOnly {
    fn new() -> HostOnly {
        let (device, queue) = compat_fault_queue(1).expect("queue");
        HostOnly {
            device,
            queue,
            buf: vec![PgFault::ZEROED; WINDOW as usize],
            responses: Vec::new(),
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
        self.device.take_answers().len()
    }
}

/// One architecture's whole guest path: its unit bridged to the host queue and its guest
/// driver model.
struct Bridged<U, D> {
    name: &'static str,
    device: CompatProducer,
    mem: GuestMemoryMmap,
    unit: U,
    irq: RecordedMsis,
    guest: D,
}

impl<U, D> Bridged<U, D>
where
    U: PassthroughUnit<Host = CompatFaultQueue>,
    D: GuestDriverModel<U>,
{
    fn new(
        name: &'static str,
        build: impl FnOnce(CompatFaultQueue, BridgeConfig) -> (U, D),
    ) -> Self {
        let (device, queue) = compat_fault_queue(1).expect("queue");
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).expect("memory");
        let ep = Endpoint::new(1, 8);
        let (mut unit, mut guest) = build(queue, BridgeConfig::new(vec![ep]));
        let mut irq = RecordedMsis::default();
        guest.init(&mut unit, &mem, &mut irq, 0).expect("init");
        Bridged {
            name,
            device,
            mem,
            unit,
            irq,
            guest,
        }
    }

    fn window(&mut self) -> usize {
        for g in 0..WINDOW {
            self.device.report(req(g));
        }
        self.unit.pump(&self.mem, &mut self.irq, 0).expect("pump");
        self.guest
            .handle_event(
                &mut self.unit,
                &self.mem,
                &mut self.irq,
                &mut IdentityResolver,
                0,
            )
            .expect("guest");
        self.irq.messages.clear();
        self.device.take_answers().len()
    }
}

/// A bridged path, whatever its architecture.
trait Window {
    fn name(&self) -> &'static str;
    fn window(&mut self) -> usize;
}

impl<U, D> Window for Bridged<U, D>
where
    U: PassthroughUnit<Host = CompatFaultQueue>,
    D: GuestDriverModel<U>,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn window(&mut self) -> usize {
        Bridged::window(self)
    }
}

/// Every architecture's bridged path.
fn architectures() -> Vec<Box<dyn Window>> {
    vec![
        Box::new(Bridged::new("vtd", |q, cfg| {
            let unit =
                VtdBridge::new(q, cfg, VtdConfig::new(PrivateDataMode::None)).expect("bridge");
            (unit, VtdGuestDriver::new(0x10000, 0x40000))
        })),
        Box::new(Bridged::new("smmuv3", |q, cfg| {
            let unit = SmmuBridge::new(q, cfg, SmmuConfig::default()).expect("bridge");
            (unit, SmmuGuestDriver::new(0x10000).with_streams(&[8]))
        })),
        Box::new(Bridged::new("amd", |q, cfg| {
            let unit = AmdBridge::new(q, cfg, AmdConfig::default()).expect("bridge");
            (unit, AmdGuestDriver::new(0x10000))
        })),
    ]
}

/// Host-only and each architecture timed in alternation, one row per architecture.
fn interleaved() {
    let mut host = HostOnly::new();
    assert_eq!(host.window(), WINDOW as usize);
    let mut archs = architectures();
    for a in archs.iter_mut() {
        assert_eq!(
            a.window(),
            WINDOW as usize,
            "{}: every group answered through the guest",
            a.name()
        );
    }
    let rounds = 2_000;
    let mut t_host = 0u128;
    let mut t_arch = vec![0u128; archs.len()];
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..rounds / 5 {
            black_box(host.window());
        }
        t_host += t.elapsed().as_nanos();
        for (a, total) in archs.iter_mut().zip(t_arch.iter_mut()) {
            let t = Instant::now();
            for _ in 0..rounds / 5 {
                black_box(a.window());
            }
            *total += t.elapsed().as_nanos();
        }
    }
    let groups = (rounds * WINDOW) as f64;
    let h = t_host as f64 / groups;
    println!("interleaved: host-only {h:.0} ns/group");
    for (a, total) in archs.iter().zip(&t_arch) {
        let b = *total as f64 / groups;
        println!(
            "interleaved: {:<7} bridged {b:.0} ns/group: the guest side adds {:.0} ns ({:.2}x)",
            a.name(),
            b - h,
            b / h
        );
    }
}

fn bench(c: &mut Criterion) {
    interleaved();
    let mut g = c.benchmark_group("bridge");
    g.throughput(Throughput::Elements(u64::from(WINDOW)));
    let mut host = HostOnly::new();
    g.bench_function("host_only", |b| b.iter(|| black_box(host.window())));
    for mut a in architectures() {
        let name = format!("{}_bridged", a.name());
        g.bench_function(name, |b| b.iter(|| black_box(a.window())));
    }
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
