//! The atomics the region's protocol is written with: the standard library's, or, when the crate
//! is built with `--cfg iopf_loom`, [loom]'s, so that the model checks in `model_check` run the
//! very code the two ends run (stamps, tails, the sleep and wake-up handshake) under every
//! interleaving and every value the memory model lets a load return.
//!
//! Everything either end does to the region's words, and the fences of [`crate::wake`], goes
//! through this module; nothing else in the crate changes under loom except where the region's
//! words live (the heap, [`crate::shm`]) and how a doorbell sleeps (a loom condition variable,
//! [`crate::wake`]).
//!
//! **One mapping under loom.** Loom treats `SeqCst` loads and stores as `AcqRel` (a limitation
//! its README states): a Dekker pair written with `SeqCst` accesses, correct in C++20, then
//! shows a lost wake-up that cannot happen. The loom-side [`AtomicU64`] therefore models a
//! `SeqCst` store as x86-64 executes it, an exchange (`xchg`: a read-modify-write and a full
//! barrier), and follows every `SeqCst` read-modify-write with a `SeqCst` fence. That is what
//! C++20's single total order gives a `SeqCst` store followed by a `SeqCst` load, and the
//! exchange also keeps loom's modification order, which is partial, from letting a plain store
//! and a concurrent read-modify-write of the same word pass each other (a false alarm the sleep
//! handshake's model showed before: the waker's swap read the sleeper's older word while the
//! sleeper then read the swap's value back after its own newer store, which coherence forbids).
//! A `SeqCst` load stays a load. What the model checks is the protocol under that mapping;
//! `Relaxed` and `Release`/`Acquire` accesses are modelled as they are.
//!
//! [loom]: https://docs.rs/loom

#[cfg(not(iopf_loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64};

#[cfg(iopf_loom)]
pub(crate) use loom_atomics::{fence, AtomicU64};

#[cfg(iopf_loom)]
mod loom_atomics {
    pub(crate) use loom::sync::atomic::fence;
    use std::sync::atomic::Ordering;

    /// A region word under loom (see the module doc for the `SeqCst` mapping).
    #[derive(Debug)]
    pub struct AtomicU64(loom::sync::atomic::AtomicU64);

    impl AtomicU64 {
        pub fn new(v: u64) -> AtomicU64 {
            AtomicU64(loom::sync::atomic::AtomicU64::new(v))
        }

        pub fn load(&self, order: Ordering) -> u64 {
            self.0.load(order)
        }

        pub fn store(&self, v: u64, order: Ordering) {
            if order == Ordering::SeqCst {
                // x86-64's `xchg`: a read-modify-write, then a full barrier.
                self.0.swap(v, order);
                seq_cst_fence(order);
            } else {
                self.0.store(v, order);
            }
        }

        pub fn swap(&self, v: u64, order: Ordering) -> u64 {
            let old = self.0.swap(v, order);
            seq_cst_fence(order);
            old
        }

        pub fn fetch_or(&self, v: u64, order: Ordering) -> u64 {
            let old = self.0.fetch_or(v, order);
            seq_cst_fence(order);
            old
        }
    }

    fn seq_cst_fence(order: Ordering) {
        if order == Ordering::SeqCst {
            fence(Ordering::SeqCst);
        }
    }
}
