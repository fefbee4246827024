//! The doorbell every mapped ring rings through: the futex for threads that sleep on the
//! bell's word, and the descriptors (eventfds) of the wake slots for waiters that sleep on a
//! descriptor of their own (async code, wait sets, C event loops). See `bus_core::ring`'s
//! `wakers` module for the protocol in shared memory.
//!
//! A ringer learns which slots to wake from the segment (their armed bits, index and
//! generation) and needs each one's descriptor: the daemon, which hands the slots out, keeps
//! them ([`WakeBell::insert`]); a client asks the daemon for one the first time it must write
//! it ([`WakeBell::with_fetch`]), on the slow path that already runs because someone sleeps,
//! and keeps it until the slot's generation changes. Writing an eventfd never blocks short of
//! 2^64 wake-ups, and a descriptor that is not an eventfd is never kept (a client could hand
//! the daemon a pipe, whose writer blocks when it is full).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus_core::doorbell::{Doorbell, Futex};
use std::sync::atomic::AtomicU32;

/// Asks the daemon for the descriptor of wake slot `(index, generation)`.
pub type Fetch = Box<dyn Fn(usize, u64) -> Option<OwnedFd> + Send + Sync>;

/// How long a ringer waits before asking again for a descriptor it could not get.
const RETRY_FETCH: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Slots {
    /// Slot index → (generation, its waiter's eventfd).
    fds: HashMap<usize, (u64, Arc<OwnedFd>)>,
    /// Slots whose descriptor could not be had, and when to ask again.
    missing: HashMap<(usize, u64), Instant>,
}

/// A futex doorbell that also writes the eventfds of armed wake slots.
#[derive(Default)]
pub struct WakeBell {
    futex: Futex,
    slots: Mutex<Slots>,
    fetch: Option<Fetch>,
}

impl std::fmt::Debug for WakeBell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeBell").finish_non_exhaustive()
    }
}

/// Whether `fd` is an eventfd (what a wake slot's descriptor must be).
pub fn is_eventfd(fd: BorrowedFd<'_>) -> bool {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    std::fs::read_link(link).is_ok_and(|target| target.as_os_str() == "anon_inode:[eventfd]")
}

impl WakeBell {
    /// A doorbell whose wake-slot descriptors are all given with [`WakeBell::insert`] (the
    /// daemon's).
    pub fn new() -> WakeBell {
        WakeBell::default()
    }

    /// A doorbell that asks `fetch` for a wake slot's descriptor the first time it must write
    /// it (a client's).
    pub fn with_fetch(fetch: Fetch) -> WakeBell {
        WakeBell {
            fetch: Some(fetch),
            ..WakeBell::default()
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep `fd` as the descriptor of wake slot `index` at `generation`. Refused (returned)
    /// unless it is an eventfd.
    pub fn insert(&self, index: usize, generation: u64, fd: OwnedFd) -> Result<(), OwnedFd> {
        if !is_eventfd(fd.as_fd()) {
            return Err(fd);
        }
        let mut slots = self.slots();
        slots.missing.remove(&(index, generation));
        slots.fds.insert(index, (generation, Arc::new(fd)));
        Ok(())
    }

    /// Forget the descriptor of wake slot `index` (its waiter is gone).
    pub fn remove(&self, index: usize) {
        self.slots().fds.remove(&index);
    }

    /// A duplicate of the descriptor of wake slot `index` at `generation`, if known.
    pub fn get(&self, index: usize, generation: u64) -> Option<OwnedFd> {
        let slots = self.slots();
        match slots.fds.get(&index) {
            Some((g, fd)) if *g == generation => fd.try_clone().ok(),
            _ => None,
        }
    }

    fn descriptor(&self, index: usize, generation: u64) -> Option<Arc<OwnedFd>> {
        {
            let mut slots = self.slots();
            if let Some((g, fd)) = slots.fds.get(&index) {
                if *g == generation {
                    return Some(fd.clone());
                }
            }
            if slots
                .missing
                .get(&(index, generation))
                .is_some_and(|&t| Instant::now() < t)
            {
                return None;
            }
            // Asked below, without the lock (it is a request to the daemon).
            slots
                .missing
                .insert((index, generation), Instant::now() + RETRY_FETCH);
        }
        let fetched = self.fetch.as_ref()?(index, generation)?;
        // Not an eventfd: never written (the waiter then wakes on its own timeout).
        if !is_eventfd(fetched.as_fd()) {
            return None;
        }
        let fd = Arc::new(fetched);
        let mut slots = self.slots();
        slots.missing.remove(&(index, generation));
        slots.fds.insert(index, (generation, fd.clone()));
        Some(fd)
    }
}

impl Doorbell for WakeBell {
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        self.futex.wait(word, expected, timeout)
    }

    fn wake_all(&self, word: &AtomicU32) {
        self.futex.wake_all(word)
    }

    fn register_light(&self) -> bool {
        self.futex.register_light()
    }

    fn heavy_barrier(&self) {
        self.futex.heavy_barrier()
    }

    fn notify(&self, index: usize, generation: u64) {
        if let Some(fd) = self.descriptor(index, generation) {
            // An eventfd adds the value to its counter and becomes readable; a waiter that
            // already went away makes this a harmless write.
            let _ = nix::unistd::write(fd.as_fd(), &1u64.to_ne_bytes());
        }
    }
}
