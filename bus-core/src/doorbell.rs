//! Sleeping and waking across processes.
//!
//! A [`Doorbell`] has futex semantics: [`Doorbell::wait`] sleeps only while the 32-bit word
//! still holds the expected value (checked atomically with going to sleep), and
//! [`Doorbell::wake_all`] wakes every sleeper on the word. The words live in the segment's
//! control block ([`crate::entries::Bell`]); the waiter counts beside them let the publish fast
//! path skip the system call while nobody sleeps.
//!
//! [`Futex`] is the real thing: a non-private futex (`FUTEX_WAIT`/`FUTEX_WAKE` without
//! `FUTEX_PRIVATE_FLAG`), keyed by the shared mapping's page, so it works across processes.
//! Under `--cfg loom`, `ModelDoorbell` gives the same semantics with a loom mutex and condvar,
//! so that loom can find a lost wake-up as a deadlock.

use std::time::Duration;

use crate::sync::AtomicU32;

/// Futex semantics over a 32-bit word in shared memory, and the asymmetric barrier that keeps
/// the hot paths free of hardware fences.
///
/// # The asymmetric barrier
///
/// Publishing and releasing must not pay a `SeqCst` fence per message, yet a thread about to
/// sleep (or a second publisher taking over from a solo one) must never miss a change made
/// just before. The hot side (the ringer) runs `sync::light_barrier`, a compiler
/// fence, between its store and its load; the rare side runs [`Doorbell::heavy_barrier`],
/// which makes every thread of every registered process pass a full memory barrier. Then one
/// of the two always sees the other's store, exactly as with two `SeqCst` fences. A process
/// whose registration fails uses a real fence on its hot side instead.
pub trait Doorbell: Send + Sync {
    /// Sleep while `*word == expected`, until woken, until `timeout` passes, or spuriously.
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>);
    /// Wake every thread sleeping on `word`, in any process.
    fn wake_all(&self, word: &AtomicU32);
    /// Register this process for [`Doorbell::heavy_barrier`]; `true` when it may use the light
    /// barrier (a compiler fence) on its hot paths. Called once per port; cheap after the
    /// first call.
    fn register_light(&self) -> bool {
        false
    }
    /// Make every thread of every registered process pass a full memory barrier before this
    /// returns (and be a `SeqCst` fence for the caller).
    fn heavy_barrier(&self) {
        crate::sync::fence(crate::sync::Ordering::SeqCst);
    }
    /// Whether waiters on this doorbell must go back to their caller after each sleep (a client
    /// whose supervisor died: its ports must look for a restarted one); a wait that finds it
    /// set after a sleep ends as a timeout. While it is set, [`Doorbell::wait`] must bound its
    /// sleeps, and it must read the flag after its caller read the word: whoever sets the flag
    /// and then wakes the ring ([`crate::ring::Ring::wake_all_sleepers`]) is never missed.
    fn interrupted(&self) -> bool {
        false
    }
}

/// The Linux futex, non-private: it keys on the physical page, so waiters and wakers in
/// different processes that map the same segment meet.
#[cfg(not(loom))]
#[derive(Debug, Clone, Copy, Default)]
pub struct Futex;

#[cfg(not(loom))]
impl Doorbell for Futex {
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `word` is a live, aligned 32-bit atomic for the duration of the call; the
        // kernel only reads it. `ts_ptr` is null or points to a timespec on this stack frame.
        // FUTEX_WAIT (without FUTEX_PRIVATE_FLAG) is a relative timeout wait; every error
        // (EAGAIN: the value changed, EINTR, ETIMEDOUT) is a legitimate early return for our
        // callers, who re-check their condition.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                expected,
                ts_ptr,
                std::ptr::null::<u32>(),
                0u32,
            );
        }
    }

    fn wake_all(&self, word: &AtomicU32) {
        // SAFETY: `word` is a live, aligned 32-bit atomic; FUTEX_WAKE reads no memory through it
        // beyond using its address as the key.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAKE,
                i32::MAX,
                std::ptr::null::<libc::timespec>(),
                std::ptr::null::<u32>(),
                0u32,
            );
        }
    }

    fn register_light(&self) -> bool {
        *membarrier::REGISTERED.get_or_init(membarrier::register)
    }

    fn heavy_barrier(&self) {
        membarrier::heavy();
    }
}

/// `membarrier(2)`: the heavy half of the asymmetric barrier.
///
/// Every process that runs a hot path with the light barrier registers with
/// `MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED` (once); the heavy half is
/// `MEMBARRIER_CMD_GLOBAL_EXPEDITED`, which interrupts every CPU running a registered process
/// (about 3 us on a 2-vCPU VM). If the expedited command fails, `MEMBARRIER_CMD_GLOBAL` (no
/// registration needed, but it waits for a scheduler grace period, milliseconds) does the job.
/// Under Miri there is no membarrier: registration fails, so every hot path uses a real fence,
/// and the heavy half is a plain fence.
#[cfg(not(loom))]
mod membarrier {
    use std::sync::atomic::{fence, Ordering};
    use std::sync::OnceLock;

    const CMD_GLOBAL: libc::c_int = 1;
    const CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
    const CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

    pub(super) static REGISTERED: OnceLock<bool> = OnceLock::new();

    fn call(cmd: libc::c_int) -> bool {
        if cfg!(miri) {
            return false;
        }
        // SAFETY: membarrier takes a command and two integer flags and touches no memory of
        // ours; an unknown or refused command fails with an error code.
        unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) == 0 }
    }

    pub(super) fn register() -> bool {
        call(CMD_REGISTER_GLOBAL_EXPEDITED)
    }

    pub(super) fn heavy() {
        fence(Ordering::SeqCst);
        if !call(CMD_GLOBAL_EXPEDITED) && !call(CMD_GLOBAL) {
            // No membarrier at all: then no process could register either (same kernel), so
            // every hot path runs a real fence and this fence is the pair it needs.
        }
        fence(Ordering::SeqCst);
    }
}

#[cfg(loom)]
pub use model::ModelDoorbell;

#[cfg(loom)]
mod model {
    use super::*;
    use crate::sync::Ordering;
    use loom::sync::{Condvar, Mutex};

    /// Futex semantics for loom: the check of the word and going to sleep happen under a
    /// mutex that every waker takes before notifying, so a wake-up sent after the check cannot
    /// be missed, and a wake-up that never comes is a deadlock loom reports.
    #[derive(Default)]
    pub struct ModelDoorbell {
        lock: Mutex<()>,
        cond: Condvar,
    }

    impl ModelDoorbell {
        /// A new doorbell.
        pub fn new() -> Self {
            Self::default()
        }
    }

    impl Doorbell for ModelDoorbell {
        fn wait(&self, word: &AtomicU32, expected: u32, _timeout: Option<Duration>) {
            let guard = self.lock.lock().unwrap();
            if word.load(Ordering::Relaxed) == expected {
                drop(self.cond.wait(guard).unwrap());
            }
        }

        fn wake_all(&self, _word: &AtomicU32) {
            let guard = self.lock.lock().unwrap();
            self.cond.notify_all();
            drop(guard);
        }
    }
}
