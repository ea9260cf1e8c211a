//! A VMM's fault handling as a tokio task: `AsyncFd` over the consumer's descriptor, armed
//! before each await, so the task sleeps in the runtime's reactor between faults.
//!
//! The device side (a fault core with one PRI function behind a [`CoreLink`]) runs on a plain
//! thread and pumps with the link's blocking wait, which holds no lock.
//!
//! Run with `cargo run -p iopf-queue --example tokio_vmm`; the test suite runs it too.

use std::time::Duration;

use iopf_abi::{Fault, FaultConsumer, IommufdResponse, PageRequest, PageRequestFlags, Perm};
use iopf_abi::{Features, PgFault, RecordFormats, ResponseCode};
use iopf_core::{DeviceId, DeviceResponse, FaultCore, PriCaps, ResponseSink};
use iopf_queue::{channel, Consumer, CoreLink, Offer, ProducerConfig, Readiness, Request};
use tokio::io::unix::AsyncFd;

const GROUPS: u32 = 1000;

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
        perm: Perm::READ,
        addr: 0x20_0000 + u64::from(n) * 4096,
        private_data: [0; 2],
    }
}

/// The VMM task: answers groups until `GROUPS` are done or the producer goes.
async fn vmm_task(consumer: Consumer) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    // SAFETY: tokio's contract for `register` is that the descriptor stays open, and is not
    // registered elsewhere, for as long as the `AsyncFd` lives. The `AsyncFd` owns the consumer,
    // which owns the descriptor and closes it only when dropped, after the reactor has let go.
    let mut queue = unsafe { AsyncFd::register(consumer) }
        .map_err(|_| "the reactor refused the queue's descriptor")?;
    let mut faults = [PgFault::from_bytes(&[0; 40])?; 64];
    let mut unsent: Vec<IommufdResponse> = Vec::new();
    let mut answered = 0;
    while answered < GROUPS || !unsent.is_empty() {
        let want = if unsent.is_empty() {
            Readiness::FAULTS
        } else {
            Readiness::RESPONSE_ROOM
        };
        if queue.get_mut().arm(want)?.is_empty() {
            let mut guard = queue.readable_mut().await?;
            // Edge-triggered in the reactor: forget this readiness; the next arm resets the
            // descriptor, and a new ring makes it readable again.
            guard.clear_ready();
        }
        let c = queue.get_mut();
        let ready = c.ready();
        if ready.contains(Readiness::PEER_GONE) {
            break;
        }
        if !unsent.is_empty() {
            let n = c.respond(&unsent)?;
            unsent.drain(..n);
            continue;
        }
        let n = c.read_faults(&mut faults)?;
        unsent.extend(faults[..n].iter().map(|f| IommufdResponse {
            cookie: f.cookie,
            code: ResponseCode::Success,
        }));
        let sent = c.respond(&unsent)?;
        unsent.drain(..sent);
        answered += n as u32;
    }
    Ok(answered)
}

fn device_side(
    mut core: FaultCore<Device>,
    dev: DeviceId,
    mut link: CoreLink,
) -> Result<u32, String> {
    let mut sent = 0;
    while core.sink().success < GROUPS {
        while sent < GROUPS && core.outstanding(dev).map_err(|e| e.to_string())? < 32 {
            core.report(dev, &Fault::PageRequest(request(sent)), 0)
                .map_err(|e| e.to_string())?;
            sent += 1;
        }
        link.wait(Some(Duration::from_secs(1)))
            .map_err(|e| e.to_string())?;
        if link.pump(&mut core).detached {
            break;
        }
    }
    Ok(core.sink().success)
}

fn run() -> Result<(u32, u32), Box<dyn std::error::Error + Send + Sync>> {
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
    let device = std::thread::spawn(move || device_side(core, dev, link));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let answered = runtime.block_on(vmm_task(consumer))?;
    let at_device = device.join().map_err(|_| "device thread panicked")??;
    Ok((answered, at_device))
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (answered, at_device) = run()?;
    println!("tokio VMM: {answered} groups answered, {at_device} SUCCESS at the device");
    Ok(())
}

#[test]
fn every_group_is_answered_through_the_tokio_task() {
    let (answered, at_device) = run().expect("the example runs");
    assert_eq!((answered, at_device), (GROUPS, GROUPS));
}
