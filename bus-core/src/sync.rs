//! The one switch point between `loom`'s and `std`'s concurrency primitives.
//!
//! Every algorithm in this crate imports atomics, fences, cells and spin hints from here and
//! from nowhere else, so the same code runs under `loom` (with `--cfg loom`), under Miri over
//! heap storage, and over `mmap`'d shared memory.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// The light half of an asymmetric barrier: orders this thread's earlier stores before its
/// later loads for any thread that runs the heavy half ([`crate::doorbell::Doorbell::heavy_barrier`],
/// a `membarrier(2)` that makes every registered thread pass a full barrier).
///
/// `registered` says this process is registered for that barrier: then a compiler fence is
/// enough, because the heavy half supplies the hardware barrier on our CPU whenever it is
/// needed. Unregistered (the kernel refused the registration), it is a real `SeqCst` fence.
/// Under loom it is always a `SeqCst` fence: loom cannot model a barrier issued on another
/// thread's behalf, so the models check the protocol with both halves as `SeqCst` fences,
/// which is what the asymmetric pair guarantees (either the light side's store is visible to
/// the heavy side after its barrier, or the light side's later load sees the heavy side's
/// earlier store).
#[inline]
pub(crate) fn light_barrier(registered: bool) {
    #[cfg(loom)]
    {
        let _ = registered;
        fence(Ordering::SeqCst);
    }
    #[cfg(not(loom))]
    {
        if registered {
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }
}

/// Hint that we are spinning; under loom, yield to the model scheduler instead so that a spin
/// loop cannot make the model diverge.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// Yield the CPU (the second stage of an adaptive wait).
#[inline]
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}
