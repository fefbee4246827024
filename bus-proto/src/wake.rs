//! The doorbell every mapped ring rings through: the futex, non-private, on the bells' words in
//! the segment's control block. Blocking waiters sleep on a word in a system call; waiters that
//! need a descriptor (async code, wait sets, C event loops) are woken by their own process's
//! wake agent (bus-client's `agent`), which sleeps on the same words. No descriptor of one
//! process ever reaches another for waking: a ringer writes nothing but the word, and makes at
//! most one system call per ring (see `bus_core::ring`'s `wakers` module).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bus_core::doorbell::{Doorbell, Futex};

/// The futex doorbell of a mapped ring. A client's rings share their connection's *down* flag
/// ([`WakeBell::interruptible`]): while it is set (the daemon hung up), a waiter goes back to
/// its caller instead of sleeping, to look for a restarted daemon.
#[derive(Debug, Default, Clone)]
pub struct WakeBell {
    futex: Futex,
    down: Option<Arc<AtomicBool>>,
}

impl WakeBell {
    /// A doorbell.
    pub fn new() -> WakeBell {
        WakeBell::default()
    }

    /// A doorbell whose waiters go back to their caller while `down` is set (see
    /// [`Doorbell::interrupted`]); whoever sets it wakes the ring afterwards
    /// (`Ring::wake_all_sleepers`).
    pub fn interruptible(down: Arc<AtomicBool>) -> WakeBell {
        WakeBell {
            futex: Futex,
            down: Some(down),
        }
    }
}

/// How long a sleep of an interrupted doorbell lasts at most: a port whose daemon hung up looks
/// for a restarted one this often.
pub const INTERRUPTED_SLEEP: Duration = Duration::from_millis(100);

impl Doorbell for WakeBell {
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        // The flag is read after the caller read `word`: set before the word's bump, so either
        // we see it here or the futex call returns at the bump.
        let timeout = if self.interrupted() {
            Some(timeout.map_or(INTERRUPTED_SLEEP, |t| t.min(INTERRUPTED_SLEEP)))
        } else {
            timeout
        };
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

    fn interrupted(&self) -> bool {
        // Acquire: read after the bell's word, which the setter bumps after setting the flag.
        self.down
            .as_ref()
            .is_some_and(|d| d.load(Ordering::Acquire))
    }
}
