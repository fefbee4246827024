//! The doorbell every mapped ring rings through: the futex, non-private, on the bells' words in
//! the segment's control block. Blocking waiters sleep on a word in a system call; waiters that
//! need a descriptor (async code, wait sets, C event loops) are woken by their own process's
//! wake agent (bus-client's `agent`), which sleeps on the same words. No descriptor of one
//! process ever reaches another for waking: a ringer writes nothing but the word, and makes at
//! most one system call per ring (see `bus_core::ring`'s `wakers` module).

use std::time::Duration;

use bus_core::doorbell::{Doorbell, Futex};
use std::sync::atomic::AtomicU32;

/// The futex doorbell of a mapped ring.
#[derive(Debug, Default, Clone, Copy)]
pub struct WakeBell {
    futex: Futex,
}

impl WakeBell {
    /// A doorbell.
    pub fn new() -> WakeBell {
        WakeBell::default()
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
}
