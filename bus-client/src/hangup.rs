//! Noticing the daemon's death without looking periodically.
//!
//! A port asleep in `recv` (or a blocking `send`, a [`WaitSet`](crate::WaitSet), an async
//! wait) sleeps until a message, its deadline, or the death of its daemon, and nothing else
//! wakes it: no periodic look at the daemon. The daemon's death is visible on the control
//! connection, which hangs up. So each connection has a [`Liveness`]: the rings of its ports
//! and a *down* flag, which the doorbells of those rings share
//! ([`WakeBell::interruptible`](bus_proto::wake::WakeBell::interruptible)).
//!
//! One watcher thread per process (started with the first connection) sleeps in `epoll_wait`
//! on every live control stream, for a hang-up only (`EPOLLRDHUP`, one-shot: the stream's
//! answers are read by the caller of each request, never by the watcher). When a stream hangs
//! up, the watcher sets its connection's flag and then wakes every sleeper of the connection's
//! rings ([`Ring::wake_all_sleepers`](bus_core::ring::Ring::wake_all_sleepers): the futex
//! sleepers and the armed wake slots, whose agent writes the eventfds of wait sets and async
//! waiters). The order makes it race-free: a sleeper reads its bell's word and then the flag
//! (in the doorbell, just before the futex call), so it either sees the flag or sleeps on a
//! word the watcher bumps afterwards. A waiter that starts after the hang-up sees the flag.
//!
//! While the flag is set, waits are bounded (the doorbell caps each sleep at
//! [`CHECK_EVERY`](crate::follow::CHECK_EVERY)) and return to the port after each, which looks
//! at the status page for a restarted daemon and follows it (see `follow`). A new stream
//! (reconnected to the restarted daemon) clears the flag and is watched in turn. If the
//! watcher cannot run (no epoll, no thread), the flag stays set: ports look every
//! `CHECK_EVERY`, as before this watcher existed.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bus_proto::segment::ShmRing;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

/// One control connection's liveness: whether its daemon hung up, and the rings to wake then.
#[derive(Debug)]
pub(crate) struct Liveness {
    /// Set from the hang-up of the current stream until a new stream replaces it.
    down: Arc<AtomicBool>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The watcher's key of the current stream (0: none watched).
    key: u64,
    /// The rings of the connection's ports (dead ones are pruned as new ones come).
    rings: Vec<Weak<ShmRing>>,
}

impl Liveness {
    pub(crate) fn new() -> Arc<Liveness> {
        Arc::new(Liveness {
            down: Arc::new(AtomicBool::new(false)),
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the daemon hung up and no new stream replaced it: waits must be bounded.
    /// SeqCst: a wait set arms its slots, runs a barrier and then reads this; the watcher sets
    /// it and then (after a fence) takes the armed bits. One of them sees the other.
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// The flag, for the doorbells of this connection's rings.
    pub(crate) fn flag(&self) -> Arc<AtomicBool> {
        self.down.clone()
    }

    /// A port of this connection mapped `ring`: wake its sleepers when the daemon hangs up.
    pub(crate) fn add_ring(&self, ring: &Arc<ShmRing>) {
        let mut state = self.lock();
        state.rings.retain(|r| r.strong_count() > 0);
        if !state.rings.iter().any(|r| r.as_ptr() == Arc::as_ptr(ring)) {
            state.rings.push(Arc::downgrade(ring));
        }
    }

    /// The connection has a new stream (`stream`): watch it for a hang-up, and clear the flag
    /// (the old stream, if any, is closed by the caller and leaves the watcher by itself).
    pub(crate) fn linked(self: &Arc<Self>, stream: &impl AsFd) {
        let mut state = self.lock();
        let old = std::mem::take(&mut state.key);
        match watcher() {
            Some(w) => {
                w.forget(old);
                match w.add(self, stream) {
                    Some(key) => {
                        state.key = key;
                        self.down.store(false, Ordering::SeqCst);
                    }
                    None => self.down.store(true, Ordering::SeqCst),
                }
            }
            // Nobody can tell us of a hang-up: look periodically, as ports did before.
            None => self.down.store(true, Ordering::SeqCst),
        }
    }

    /// The stream the watcher knows as `key` hung up.
    fn hung_up(&self, key: u64) {
        let rings: Vec<Arc<ShmRing>> = {
            let mut state = self.lock();
            if state.key != key {
                // A stream replaced meanwhile: its successor is watched on its own.
                return;
            }
            state.key = 0;
            self.down.store(true, Ordering::SeqCst);
            state.rings.retain(|r| r.strong_count() > 0);
            state.rings.iter().filter_map(Weak::upgrade).collect()
        };
        tracing::info!(
            rings = rings.len(),
            "shmbusd hung up; waking this connection's sleeping ports"
        );
        for ring in rings {
            ring.wake_all_sleepers();
        }
    }
}

impl Drop for Liveness {
    fn drop(&mut self) {
        let key = self.lock().key;
        if let Some(w) = WATCHER.get().and_then(Option::as_ref) {
            w.forget(key);
        }
    }
}

/// The process's hang-up watcher: an epoll set of control streams and who each belongs to.
struct Watcher {
    epoll: Epoll,
    next: AtomicU64,
    conns: Mutex<HashMap<u64, Weak<Liveness>>>,
}

static WATCHER: OnceLock<Option<Watcher>> = OnceLock::new();

/// The watcher, started on first use; `None` if it cannot run.
fn watcher() -> Option<&'static Watcher> {
    WATCHER
        .get_or_init(|| {
            let epoll = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "no epoll for the hang-up watcher; waiting ports look for a restarted shmbusd every 100 ms");
                    return None;
                }
            };
            Some(Watcher {
                epoll,
                next: AtomicU64::new(1),
                conns: Mutex::new(HashMap::new()),
            })
        })
        .as_ref()
        .filter(|_| started())
}

/// Start the watcher's thread once; whether it runs.
fn started() -> bool {
    static STARTED: OnceLock<bool> = OnceLock::new();
    *STARTED.get_or_init(|| {
        let spawned = crate::wake::spawn_quiet("shmbus-hangup", || {
            if let Some(Some(w)) = WATCHER.get() {
                w.run();
            }
        });
        if let Err(e) = &spawned {
            tracing::warn!(error = %e, "cannot start the hang-up watcher; waiting ports look for a restarted shmbusd every 100 ms");
        }
        spawned.is_ok()
    })
}

impl Watcher {
    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<Liveness>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watch `stream` for `liveness`; its key, or `None` if epoll refused it.
    fn add(&self, liveness: &Arc<Liveness>, stream: &impl AsFd) -> Option<u64> {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.conns().insert(key, Arc::downgrade(liveness));
        let event = EpollEvent::new(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLONESHOT, key);
        match self.epoll.add(stream, event) {
            Ok(()) => Some(key),
            Err(e) => {
                self.conns().remove(&key);
                tracing::warn!(error = %e, "cannot watch the control connection for a hang-up; waiting ports look for a restarted shmbusd every 100 ms");
                None
            }
        }
    }

    /// Forget `key` (its stream is about to close, which takes it out of the epoll set).
    fn forget(&self, key: u64) {
        if key != 0 {
            self.conns().remove(&key);
        }
    }

    fn run(&self) {
        let mut events = [EpollEvent::empty(); 16];
        loop {
            let n = match self.epoll.wait(&mut events, EpollTimeout::NONE) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "the hang-up watcher stopped");
                    return;
                }
            };
            for event in &events[..n] {
                let key = event.data();
                let owner = self.conns().remove(&key).and_then(|w| w.upgrade());
                if let Some(liveness) = owner {
                    liveness.hung_up(key);
                }
            }
        }
    }
}
