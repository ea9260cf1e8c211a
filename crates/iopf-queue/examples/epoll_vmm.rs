//! A VMM's fault thread on an epoll loop (vmm-sys-util's `Epoll`, as cloud-hypervisor and
//! Firecracker use): one loop serves the fault queue beside the VMM's other descriptors (here a
//! "stop" eventfd), never busy-waits, and answers every group.
//!
//! The other side runs on its own thread: a fault core with one PRI function, reporting page
//! requests into a [`CoreLink`] and pumping the answers back, on an epoll loop of its own over
//! the link's descriptor.
//!
//! Run with `cargo run -p iopf-queue --example epoll_vmm`; the test suite runs it too.

use std::os::fd::{AsFd, AsRawFd};

use iopf_abi::{Fault, FaultConsumer, IommufdResponse, PageRequest, PageRequestFlags, Perm};
use iopf_abi::{Features, PgFault, RecordFormats, ResponseCode};
use iopf_core::{DeviceId, DeviceResponse, FaultCore, PriCaps, ResponseSink};
use iopf_queue::{channel, CoreLink, Offer, ProducerConfig, Readiness, Request};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

const GROUPS: u32 = 1000;
const QUEUE: u64 = 1;
const STOP: u64 = 2;

/// What reaches the device: counts SUCCESS.
#[derive(Default)]
struct Device {
    success: u32,
}
impl ResponseSink for Device {
    fn page_response(&mut self, _dev: DeviceId, r: &DeviceResponse) {
        if r.code == ResponseCode::Success {
            self.success += 1;
        }
    }
}

fn request(n: u32) -> PageRequest {
    PageRequest {
        flags: PageRequestFlags::LAST_PAGE,
        pasid: 0,
        grpid: n % 512,
        perm: Perm::READ | Perm::WRITE,
        addr: 0x10_0000 + u64::from(n) * 4096,
        private_data: [0; 2],
    }
}

/// The VMM's loop: returns the groups it answered.
fn vmm_loop(
    mut consumer: iopf_queue::Consumer,
    stop: &EventFd,
) -> Result<u32, Box<dyn std::error::Error>> {
    let epoll = Epoll::new()?;
    epoll.ctl(
        ControlOperation::Add,
        consumer.as_fd().as_raw_fd(),
        EpollEvent::new(EventSet::IN, QUEUE),
    )?;
    epoll.ctl(
        ControlOperation::Add,
        stop.as_raw_fd(),
        EpollEvent::new(EventSet::IN, STOP),
    )?;
    let mut events = vec![EpollEvent::default(); 4];
    let mut faults = [PgFault::from_bytes(&[0; 40])?; 64];
    let mut unsent: Vec<IommufdResponse> = Vec::new();
    let mut answered = 0;
    loop {
        // Arm for what this loop waits for: records, and room while responses did not fit.
        let want = if unsent.is_empty() {
            Readiness::FAULTS
        } else {
            Readiness::FAULTS | Readiness::RESPONSE_ROOM
        };
        if consumer.arm(want)?.is_empty() {
            let n = epoll.wait(-1, &mut events)?;
            if events[..n].iter().any(|e| e.data() == STOP) {
                return Ok(answered);
            }
        }
        let ready = consumer.ready();
        if ready.contains(Readiness::PEER_GONE) {
            return Ok(answered);
        }
        if !unsent.is_empty() && ready.contains(Readiness::RESPONSE_ROOM) {
            let n = consumer.respond(&unsent)?;
            unsent.drain(..n);
        }
        if unsent.is_empty() && ready.contains(Readiness::FAULTS) {
            let n = consumer.read_faults(&mut faults)?;
            // "Resolve" each group (a real VMM maps the page here), then answer it.
            unsent.extend(faults[..n].iter().map(|f| IommufdResponse {
                cookie: f.cookie,
                code: ResponseCode::Success,
            }));
            let sent = consumer.respond(&unsent)?;
            unsent.drain(..sent);
            answered += n as u32;
        }
    }
}

/// The device side: reports `GROUPS` groups within the device's allocation and pumps answers
/// on an epoll loop over the link. Returns the SUCCESS responses the device received.
fn device_side(
    mut core: FaultCore<Device>,
    dev: DeviceId,
    mut link: CoreLink,
) -> Result<u32, Box<dyn std::error::Error>> {
    let epoll = Epoll::new()?;
    epoll.ctl(
        ControlOperation::Add,
        link.as_fd().as_raw_fd(),
        EpollEvent::new(EventSet::IN, QUEUE),
    )?;
    let mut events = vec![EpollEvent::default(); 2];
    let mut sent = 0;
    while core.sink().success < GROUPS {
        while sent < GROUPS && core.outstanding(dev)? < 32 {
            core.report(dev, &Fault::PageRequest(request(sent)), 0)?;
            sent += 1;
        }
        if link
            .arm(Readiness::RESPONSES | Readiness::FAULT_ROOM)?
            .is_empty()
        {
            epoll.wait(-1, &mut events)?;
        }
        if link.pump(&mut core).detached {
            break;
        }
    }
    Ok(core.sink().success)
}

/// The whole example: returns (groups the VMM answered, SUCCESS at the device).
fn run() -> Result<(u32, u32), Box<dyn std::error::Error>> {
    let offer = Offer::current();
    let ask = Request::best_for(
        &offer,
        RecordFormats::HWPT_PGFAULT,
        Features::COOKIE_RESPONSE,
    )
    .ok_or("cookie responses not offered")?;
    let (producer, consumer) = channel(&offer, &ask, ProducerConfig::default())?;
    let mut core = FaultCore::new(Device::default());
    let dev = core.register(PriCaps {
        outstanding_allocation: 32,
        ..PriCaps::default()
    })?;
    let link = CoreLink::attach(&mut core, dev, None, producer)?;
    let stop = EventFd::new(libc::EFD_NONBLOCK)?;
    let device =
        std::thread::spawn(move || device_side(core, dev, link).map_err(|e| e.to_string()));
    let answered = std::thread::scope(|s| {
        let vmm = s.spawn(|| vmm_loop(consumer, &stop).map_err(|e| e.to_string()));
        let at_device = device.join().map_err(|_| "device thread panicked")??;
        // The device got every answer: tell the VMM loop to stop, as a VMM's shutdown would.
        stop.write(1)?;
        let answered = vmm.join().map_err(|_| "vmm thread panicked")??;
        Ok::<_, Box<dyn std::error::Error>>((answered, at_device))
    })?;
    Ok(answered)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = std::time::Instant::now();
    let (answered, at_device) = run()?;
    println!(
        "epoll VMM: {answered} groups answered, {at_device} SUCCESS at the device, in {:?}",
        started.elapsed()
    );
    Ok(())
}

#[test]
fn every_group_is_answered_through_the_epoll_loop() {
    let (answered, at_device) = run().expect("the example runs");
    assert_eq!((answered, at_device), (GROUPS, GROUPS));
}
