//! The run's clock: `CLOCK_MONOTONIC` in nanoseconds, the same in every thread and in both
//! processes of a split run, so timestamps taken on either side compare directly.

/// Nanoseconds of `CLOCK_MONOTONIC`.
pub fn now_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    // tv_sec and tv_nsec of CLOCK_MONOTONIC are never negative.
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// Busy-waits for `ns` nanoseconds: how a resolver's service time is spent. Sleeping would cost
/// tens of microseconds of wake-up on these machines, more than the times being simulated.
pub fn spin_for(ns: u64) {
    if ns == 0 {
        return;
    }
    let end = now_ns().saturating_add(ns);
    while now_ns() < end {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_spins_at_least_as_asked() {
        let a = now_ns();
        spin_for(200_000);
        let b = now_ns();
        assert!(b - a >= 200_000);
    }
}
