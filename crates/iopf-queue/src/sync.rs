//! The atomics the region's protocol is written with: the standard library's, or, when the crate
//! is built with `--cfg iopf_loom`, [loom]'s, so that the model checks in `model_check` run the
//! very code the two ends run (stamps, tails, the sleep and wake-up handshake) under every
//! interleaving and every value the memory model lets a load return.
//!
//! Everything either end does to the region's words, and the fences of [`crate::wake`], goes
//! through this module. What else changes under loom: the region's words live on the heap, one
//! set per `Region` ([`crate::shm`]: so only in-process queues, whose ends share one `Region`,
//! are modelled), a doorbell sleeps on a loom condition variable shared by the handles
//! `Doorbell::twin` makes, ignoring timeouts and the peer's socket, and a sleeper spins once
//! before it sleeps ([`crate::wake`]).
//!
//! **The `SeqCst` accesses under loom.** Loom treats `SeqCst` loads and stores as `AcqRel` (a
//! limitation its README states): a Dekker pair written with `SeqCst` accesses, correct in
//! C++20, then shows a lost wake-up that cannot happen. The loom-side [`AtomicU64`] restores the
//! part of C++20's single total order *S* the handshake relies on, and no more: after a `SeqCst`
//! store or read-modify-write, the thread's next `SeqCst` load or read-modify-write is preceded
//! by a `SeqCst` fence (a `SeqCst` fence in between clears that). So a `SeqCst` store followed by
//! a `SeqCst` load is ordered, as *S* orders them, while a `SeqCst` store followed by an
//! `Acquire` or `Relaxed` load is not (C++20 does not order those either: the sleeper's explicit
//! fence is what orders its look, and a model without it must fail). A `SeqCst` store is made
//! an exchange, as x86-64 executes it (`xchg`): loom's modification order is partial, and a
//! plain store racing a read-modify-write of the same word can otherwise be read back out of
//! coherence order (a false lost wake-up the sleep model showed). The model is therefore
//! stricter than C++20 in one place: a `Relaxed` raise of the sleeping word with the fence kept
//! is correct in C++20 and reported as a deadlock here; the code does not do that.
//!
//! [loom]: https://docs.rs/loom

#[cfg(not(iopf_loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64};

#[cfg(iopf_loom)]
pub(crate) use loom_atomics::{fence, AtomicU64};

#[cfg(iopf_loom)]
mod loom_atomics {
    use std::cell::Cell;
    use std::sync::atomic::Ordering;

    loom::thread_local! {
        /// This loom thread's last `SeqCst` write is not yet ordered before its later `SeqCst`
        /// loads (see the module doc).
        static SEQ_CST_WRITE_PENDING: Cell<bool> = Cell::new(false);
    }

    /// A `SeqCst` fence, as the code under test calls it.
    pub(crate) fn fence(order: Ordering) {
        if order == Ordering::SeqCst {
            SEQ_CST_WRITE_PENDING.with(|p| p.set(false));
        }
        loom::sync::atomic::fence(order);
    }

    /// Before a `SeqCst` load or read-modify-write: orders the thread's last `SeqCst` write
    /// before it, as *S* does.
    fn order_after_seq_cst_write(order: Ordering) {
        if order == Ordering::SeqCst && SEQ_CST_WRITE_PENDING.with(|p| p.replace(false)) {
            loom::sync::atomic::fence(Ordering::SeqCst);
        }
    }

    /// After a `SeqCst` store or read-modify-write.
    fn seq_cst_write_done(order: Ordering) {
        if order == Ordering::SeqCst {
            SEQ_CST_WRITE_PENDING.with(|p| p.set(true));
        }
    }

    /// A region word under loom (see the module doc for the `SeqCst` accesses).
    #[derive(Debug)]
    pub struct AtomicU64(loom::sync::atomic::AtomicU64);

    impl Default for AtomicU64 {
        fn default() -> AtomicU64 {
            AtomicU64::new(0)
        }
    }

    impl AtomicU64 {
        pub fn new(v: u64) -> AtomicU64 {
            AtomicU64(loom::sync::atomic::AtomicU64::new(v))
        }

        pub fn load(&self, order: Ordering) -> u64 {
            order_after_seq_cst_write(order);
            self.0.load(order)
        }

        pub fn store(&self, v: u64, order: Ordering) {
            if order == Ordering::SeqCst {
                // x86-64's `xchg`: a read-modify-write (see the module doc).
                self.0.swap(v, order);
            } else {
                self.0.store(v, order);
            }
            seq_cst_write_done(order);
        }

        pub fn swap(&self, v: u64, order: Ordering) -> u64 {
            order_after_seq_cst_write(order);
            let old = self.0.swap(v, order);
            seq_cst_write_done(order);
            old
        }

        pub fn fetch_or(&self, v: u64, order: Ordering) -> u64 {
            order_after_seq_cst_write(order);
            let old = self.0.fetch_or(v, order);
            seq_cst_write_done(order);
            old
        }
    }
}
