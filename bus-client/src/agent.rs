//! The wake agent: how a waiter that needs a descriptor (a `WaitSet`, an async receive, a C
//! event loop) is woken without any other process holding that descriptor.
//!
//! A waiter reads its wake slot's bell word, arms the slot in the segment (bus-core's
//! `ring::wakers`) and hands the slot to its process's agent with the value it read and its own
//! eventfd ([`watch`]). The agent is a thread that sleeps, with one `futex_waitv(2)` call, on the
//! bell words of every slot it watches (many slots of one bell share one word) and on a private
//! word of its own that [`watch`] and [`unwatch`] bump. Whenever it wakes it looks at each slot:
//! a word that no longer holds the value read before arming moved because a ringer rang the bell
//! (a message, a freed slot, a close: the waiter's condition may have changed), so it writes the
//! waiter's eventfd and forgets the slot; otherwise it sleeps again. It does not trust the armed
//! bit to tell it whether its slot was rung: a subscriber can write the bits (they live in the
//! control file), and one that set them again right after a ringer took them would hide every
//! wake-up (a test found exactly that).
//!
//! So a ringer writes only the bell's word in shared memory and makes at most one `futex` call,
//! and the eventfd never leaves its process: nobody else can read it, block on it, or change
//! its flags. The first watch starts the agent (one thread; another for every 127 distinct
//! words beyond), and it lives as long as the process. `futex_waitv` needs Linux 5.16.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bus_proto::segment::ShmRing;

use crate::error::WaitError;
use crate::wake::Efd;

/// Words one `futex_waitv` call waits on at most (`FUTEX_WAITV_MAX`): the agent's own word and
/// this many bell words.
const WORDS_PER_AGENT: usize = 127;
const FUTEX_WAITV_MAX: usize = WORDS_PER_AGENT + 1;
/// `FUTEX2_SIZE_U32`: the words are 32 bits.
const FUTEX2_SIZE_U32: u32 = 0x02;
/// `FUTEX2_PRIVATE`: the agent's own word is private to the process.
const FUTEX2_PRIVATE: u32 = 128;

/// One entry of a `futex_waitv(2)` call (`struct futex_waitv`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// A watched slot: the ring (kept mapped while watched), the bell word's value the waiter read
/// before arming, and the waiter's eventfd.
struct Watch {
    ring: Arc<ShmRing>,
    slot: usize,
    seq: u32,
    efd: Efd,
}

/// A slot is named by its ring's address and its index.
type Key = (usize, usize);

#[derive(Default)]
struct Watches {
    slots: HashMap<Key, Watch>,
    /// Distinct bell words watched, by address, and how many slots wait on each.
    words: HashMap<usize, usize>,
}

struct Agent {
    watches: Mutex<Watches>,
    /// Bumped (and woken) when the watches change, so the agent rebuilds its list.
    poke: AtomicU32,
}

impl Agent {
    fn lock(&self) -> MutexGuard<'_, Watches> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn poke(&self) {
        self.poke.fetch_add(1, Ordering::Release);
        // SAFETY: `poke` is a live, aligned 32-bit atomic of this process; FUTEX_WAKE with the
        // private flag only uses its address as a key.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.poke.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                i32::MAX,
                std::ptr::null::<libc::timespec>(),
                std::ptr::null::<u32>(),
                0u32,
            );
        }
    }
}

fn ring_key(ring: &Arc<ShmRing>, slot: usize) -> Key {
    (Arc::as_ptr(ring) as usize, slot)
}

fn agents() -> &'static Mutex<Vec<Arc<Agent>>> {
    static AGENTS: OnceLock<Mutex<Vec<Arc<Agent>>>> = OnceLock::new();
    AGENTS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Whether the kernel has `futex_waitv` (Linux 5.16): an empty call is `EINVAL` there, and
/// `ENOSYS` before.
fn futex_waitv_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        // SAFETY: a null list of zero entries; the kernel reads nothing and refuses the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_futex_waitv,
                std::ptr::null::<FutexWaitv>(),
                0u32,
                0u32,
                std::ptr::null::<libc::timespec>(),
                libc::CLOCK_MONOTONIC,
            )
        };
        !(rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS))
    })
}

/// Watch wake slot `slot` of `ring` for the waiter whose eventfd is `efd`: once the slot's bell
/// word no longer holds `seq` (read with `Ring::waker_seq` *before* arming), `efd` is written
/// once and the watch ends. Call after arming the slot; a watch of the same slot replaces the
/// previous one.
pub(crate) fn watch(
    ring: &Arc<ShmRing>,
    slot: usize,
    seq: u32,
    efd: &Efd,
) -> Result<(), WaitError> {
    if !futex_waitv_supported() {
        return Err(WaitError::Io(io::Error::new(
            io::ErrorKind::Unsupported,
            "waiting on a descriptor needs futex_waitv (Linux 5.16 or later)",
        )));
    }
    let word = ring
        .waker_futex(slot)
        .map_err(|e| WaitError::Io(io::Error::other(e.to_string())))? as *const _
        as usize;
    let key = ring_key(ring, slot);
    let mut all = agents().lock().unwrap_or_else(|p| p.into_inner());
    // The agent that already watches this slot or this word, else one with room, else a new one.
    let found = all
        .iter()
        .find(|a| {
            let w = a.lock();
            w.slots.contains_key(&key) || w.words.contains_key(&word)
        })
        .or_else(|| all.iter().find(|a| a.lock().words.len() < WORDS_PER_AGENT))
        .cloned();
    let agent = match found {
        Some(a) => a,
        None => {
            let a = Arc::new(Agent {
                watches: Mutex::new(Watches::default()),
                poke: AtomicU32::new(0),
            });
            let run = a.clone();
            crate::wake::spawn_quiet("shmbus-wake", move || agent_loop(&run))
                .map_err(WaitError::Io)?;
            all.push(a.clone());
            a
        }
    };
    drop(all);
    {
        let mut w = agent.lock();
        let new = Watch {
            ring: ring.clone(),
            slot,
            seq,
            efd: efd.clone(),
        };
        if w.slots.insert(key, new).is_none() {
            *w.words.entry(word).or_default() += 1;
        }
    }
    agent.poke();
    Ok(())
}

/// Stop watching wake slot `slot` of `ring` (its waiter disarms, or gave up). After this
/// returns the agent writes its eventfd no more for this arming. Call before disarming.
pub(crate) fn unwatch(ring: &Arc<ShmRing>, slot: usize) {
    let key = ring_key(ring, slot);
    let all = agents().lock().unwrap_or_else(|p| p.into_inner());
    for agent in all.iter() {
        let mut w = agent.lock();
        if let Some(gone) = w.slots.remove(&key) {
            forget_word(&mut w, &gone);
            drop(w);
            agent.poke();
            return;
        }
    }
}

fn forget_word(w: &mut Watches, gone: &Watch) {
    if let Ok(word) = gone.ring.waker_futex(gone.slot) {
        let addr = word as *const _ as usize;
        if let Some(n) = w.words.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                w.words.remove(&addr);
            }
        }
    }
}

fn agent_loop(agent: &Agent) {
    loop {
        let poke = agent.poke.load(Ordering::Acquire);
        let mut list = vec![FutexWaitv {
            val: u64::from(poke),
            uaddr: agent.poke.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32 | FUTEX2_PRIVATE,
            reserved: 0,
        }];
        // The rings stay mapped while the kernel may look at their words.
        let mut keep: Vec<Arc<ShmRing>> = Vec::new();
        {
            let mut w = agent.lock();
            let mut fired = Vec::new();
            for (key, watch) in w.slots.iter() {
                let Ok(word) = watch.ring.waker_futex(watch.slot) else {
                    fired.push(*key);
                    continue;
                };
                // Acquire: pairs with the ringer's bump (release), made after its change.
                let now = word.load(Ordering::Acquire);
                if now != watch.seq {
                    fired.push(*key);
                    continue;
                }
                let addr = word.as_ptr() as u64;
                if list.len() < FUTEX_WAITV_MAX && !list.iter().any(|e| e.uaddr == addr) {
                    list.push(FutexWaitv {
                        val: u64::from(now),
                        uaddr: addr,
                        flags: FUTEX2_SIZE_U32,
                        reserved: 0,
                    });
                    keep.push(watch.ring.clone());
                }
            }
            for key in fired {
                if let Some(gone) = w.slots.remove(&key) {
                    gone.efd.signal();
                    forget_word(&mut w, &gone);
                }
            }
        }
        // SAFETY: `list` is a live array of `list.len()` (at most FUTEX_WAITV_MAX) entries in the
        // kernel's layout; every address is an aligned 32-bit word that stays mapped for the
        // call (its ring is held in `keep`; the agent itself lives as long as the process). No
        // timeout (null). Any return (a wake-up, EAGAIN because a word moved, EINTR) makes the
        // loop look again.
        unsafe {
            libc::syscall(
                libc::SYS_futex_waitv,
                list.as_ptr(),
                list.len() as u32,
                0u32,
                std::ptr::null::<libc::timespec>(),
                libc::CLOCK_MONOTONIC,
            );
        }
        drop(keep);
    }
}
