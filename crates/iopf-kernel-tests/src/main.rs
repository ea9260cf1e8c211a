//! The in-guest tests of the kernel tier (`scripts/kernel-tier.sh`): run as `/init` of an
//! initramfs in a Linux 6.12 guest with `CONFIG_IOMMUFD_TEST`, they drive the kernel's real fault
//! queue through iopf's backend, using the selftest mock device to produce faults.
//!
//! Output protocol on the serial console (parsed by the script): `IOPF-PLAN <n>`, then one
//! `IOPF-TEST ok <name> ...` or `IOPF-TEST FAIL <name>: <why>` per test, `IOPF-INFO ...` lines for
//! measurements, and `IOPF-RESULT passed=<p> failed=<f>` last. As pid 1 it mounts devtmpfs first
//! and reboots at the end (QEMU runs with `-no-reboot`, so it exits); run elsewhere (a host with
//! `/dev/iommu` and `IOMMUFD_TEST`) it exits non-zero on failure.

mod fixture;
mod tests;

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A test's result: a detail line on success, the reason on failure.
pub type Outcome = Result<String, String>;

fn init_setup() {
    use rustix::mount::{mount, MountFlags};
    for (src, target, fs) in [("devtmpfs", "/dev", "devtmpfs"), ("proc", "/proc", "proc")] {
        match mount(src, target, fs, MountFlags::empty(), None) {
            Ok(()) | Err(rustix::io::Errno::BUSY) => {}
            Err(e) => println!("IOPF-INFO cannot mount {fs} on {target}: {e}"),
        }
    }
}

fn main() {
    let as_init = std::process::id() == 1;
    if as_init {
        init_setup();
    }
    let uname = rustix::system::uname();
    println!(
        "IOPF-INFO kernel {} {}",
        uname.release().to_string_lossy(),
        uname.version().to_string_lossy()
    );
    let all = tests::all();
    println!("IOPF-PLAN {}", all.len());
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in all {
        let _ = std::io::stdout().flush();
        let outcome = catch_unwind(AssertUnwindSafe(test))
            .unwrap_or_else(|_| Err("panicked (message above)".to_string()));
        match outcome {
            Ok(detail) => {
                passed += 1;
                println!("IOPF-TEST ok {name} {detail}");
            }
            Err(why) => {
                failed += 1;
                println!("IOPF-TEST FAIL {name}: {why}");
            }
        }
    }
    println!("IOPF-RESULT passed={passed} failed={failed}");
    let _ = std::io::stdout().flush();
    if as_init {
        rustix::fs::sync();
        // With -no-reboot, QEMU exits here. Should the reboot fail, returning from init panics
        // the kernel, and panic=-1 reboots, which ends QEMU just the same.
        if let Err(e) = rustix::system::reboot(rustix::system::RebootCommand::Restart) {
            println!("IOPF-INFO reboot failed: {e}");
        }
    }
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
