//! What the guest side adds per group: a window of page request groups carried host queue →
//! bridge → VT-d page request queue in guest memory → guest driver model → page group response
//! in the invalidation queue → host answer, against the host-only exchange (the VMM reads the
//! same host queue and answers it itself), in the same run.
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
use iopf_viommu::guest::{IdentityResolver, VtdGuestDriver};
use iopf_viommu::vtd::{VtdBridge, VtdConfig};
use iopf_viommu::{BridgeConfig, Endpoint, PasidMap, PrivateDataMode, RecordedMsis};
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

struct Bridged {
    device: CompatProducer,
    mem: GuestMemoryMmap,
    vtd: VtdBridge<CompatFaultQueue>,
    irq: RecordedMsis,
    guest: VtdGuestDriver,
}

impl Bridged {
    fn new() -> Bridged {
        let (device, queue) = compat_fault_queue(1).expect("queue");
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).expect("memory");
        let ep = Endpoint {
            host_dev_id: 1,
            guest_rid: 8,
            pasids: PasidMap::Identity,
        };
        let mut vtd = VtdBridge::new(
            queue,
            BridgeConfig::new(vec![ep]),
            VtdConfig::new(PrivateDataMode::None),
        )
        .expect("bridge");
        let mut irq = RecordedMsis::default();
        let mut guest = VtdGuestDriver::new(0x10000, 0x40000);
        guest.init(&mut vtd, &mem, &mut irq, 0).expect("init");
        Bridged {
            device,
            mem,
            vtd,
            irq,
            guest,
        }
    }

    fn window(&mut self) -> usize {
        for g in 0..WINDOW {
            self.device.report(req(g));
        }
        self.vtd.pump(&self.mem, &mut self.irq, 0).expect("pump");
        self.guest
            .handle_event(
                &mut self.vtd,
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

fn interleaved() {
    let (mut host, mut bridged) = (HostOnly::new(), Bridged::new());
    assert_eq!(host.window(), WINDOW as usize);
    assert_eq!(
        bridged.window(),
        WINDOW as usize,
        "every group answered through the guest"
    );
    let rounds = 2_000;
    let (mut t_host, mut t_bridged) = (0u128, 0u128);
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..rounds / 5 {
            black_box(host.window());
        }
        t_host += t.elapsed().as_nanos();
        let t = Instant::now();
        for _ in 0..rounds / 5 {
            black_box(bridged.window());
        }
        t_bridged += t.elapsed().as_nanos();
    }
    let groups = (rounds * WINDOW) as f64;
    let (h, b) = (t_host as f64 / groups, t_bridged as f64 / groups);
    println!(
        "interleaved: host-only {h:.0} ns/group, bridged {b:.0} ns/group: the guest side adds {:.0} ns ({:.2}x)",
        b - h,
        b / h
    );
}

fn bench(c: &mut Criterion) {
    interleaved();
    let mut g = c.benchmark_group("bridge");
    g.throughput(Throughput::Elements(u64::from(WINDOW)));
    let mut host = HostOnly::new();
    g.bench_function("host_only", |b| b.iter(|| black_box(host.window())));
    let mut bridged = Bridged::new();
    g.bench_function("vtd_bridged", |b| b.iter(|| black_box(bridged.window())));
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
