//! The one switch point between `loom`'s and `std`'s concurrency primitives.
//!
//! Every algorithm in this crate imports atomics, fences, cells and spin hints from here and
//! from nowhere else, so the same code runs under `loom` (with `--cfg loom`), under Miri over
//! heap storage, and over `mmap`'d shared memory.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

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
