//! Wake slots: waiters that sleep through a descriptor of their own (an eventfd that an event
//! loop, an async executor or a wait set over many topics can wait for) rather than in a
//! blocking call on the bell's futex word. No descriptor is ever shared between processes: a
//! waiter's eventfd stays in its process, and a *wake agent* there (bus-client's `agent`)
//! sleeps on the bell's futex word for it and writes the eventfd when the waiter's bit is taken.
//!
//! # The protocol
//!
//! A supervisor (the daemon) hands out a slot ([`Ring::attach_waker`]): an index and a
//! generation, and the bell it waits on. Nothing else: no descriptor travels.
//!
//! * **Arm** (the waiter, before it sleeps): read the bell's word ([`Ring::waker_seq`]), set
//!   the slot's bit in the bell's `armed` bitmap, then the heavy half of the asymmetric
//!   barrier, then re-check the condition. If it holds, disarm and go on; otherwise hand the
//!   slot and the word's value read *before* arming to the agent, which sleeps on the word
//!   while it still holds that value ([`Ring::waker_futex`]) and wakes the waiter (writes its
//!   eventfd) once it no longer does: the bell rang, so the waiter's condition may have changed.
//!   The agent does not look at the bit for that: whoever can write the control file can set a
//!   bit again right after a ringer took it.
//! * **Ring** (a publisher's commit, a subscriber's release): change the condition, light
//!   barrier, load the bell's `waiters` and `armed` words. All zero: done, no system call, no
//!   write. Otherwise swap each non-zero `armed` word to zero, bump the bell's word and wake
//!   it once (`Ring::wake`). The swap makes every arming answered by exactly one ringer,
//!   however many ring at once; the one bump and wake make the cost of a ring the same however
//!   many bits were set, by waiters or by a hostile party.
//! * **Disarm** (the waiter, after waking or when it gives up, e.g. a cancelled future): clear
//!   the bit. If a ringer took it first, its bump came or is coming.
//!
//! No lost wake-up: the waiter's bit store and the ringer's condition store are each followed
//! by a barrier pair before the other side's load (as with `waiters` for the futex), so either
//! the waiter's re-check sees the change or the ringer sees the bit. The waiter reads the word
//! before it arms, and a ringer that sees the bit bumps the word after: the agent then finds
//! the word moved, or sleeps on the old value, which the kernel compares atomically with going
//! to sleep. A waiter that dies with its bit set makes ringers bump the word only until
//! the supervisor releases the slot ([`Ring::release_waker`] clears the bit), which it does
//! when the waiter's process goes away.

use std::time::Duration;

use super::{AttachError, Ring};
use crate::doorbell::Doorbell;
use crate::entries::{entry_state, wake_bell, Bell, WAKE_SLOTS};
use crate::layout::Mode;
use crate::storage::Storage;
use crate::sync::Ordering;

/// `(word, mask)` of wake slot `index` in a bell's `armed` bitmap.
fn bit(index: usize) -> (usize, u64) {
    (index / 64, 1u64 << (index % 64))
}

impl<S: Storage, D: Doorbell> Ring<S, D> {
    fn waker_bell(&self, index: usize) -> Result<&Bell, AttachError> {
        let e = self
            .storage
            .waker(index)
            .ok_or(AttachError::NoSuchEntry(index))?;
        let control = self.storage.control();
        match e.bell.load(Ordering::Relaxed) {
            wake_bell::DATA => Ok(&control.data),
            wake_bell::SPACE => Ok(&control.space),
            wake_bell::PRESENCE => Ok(&control.flags.presence),
            _ => Err(AttachError::NotHeld(index)),
        }
    }

    /// The bells a wake slot may wait on.
    fn wake_bells(&self) -> [&Bell; 3] {
        let control = self.storage.control();
        [&control.data, &control.space, &control.flags.presence]
    }

    /// Take a free wake slot for a waiter of process `pid` on `bell` ([`wake_bell::DATA`],
    /// [`wake_bell::SPACE`] or [`wake_bell::PRESENCE`]); returns `(index, generation)`. A
    /// supervisor's call, serialised with its other attaches.
    pub fn attach_waker(&self, bell: u32, pid: u32) -> Result<(usize, u64), AttachError> {
        if ![wake_bell::DATA, wake_bell::SPACE, wake_bell::PRESENCE].contains(&bell) {
            return Err(AttachError::NoSuchEntry(bell as usize));
        }
        for index in 0..WAKE_SLOTS {
            let Some(e) = self.storage.waker(index) else {
                break;
            };
            let state = e.state.load(Ordering::Acquire);
            if entry_state::tag(state) != entry_state::FREE {
                continue;
            }
            let generation = entry_state::generation(state) + 1;
            e.pid.store(pid, Ordering::Relaxed);
            e.bell.store(bell, Ordering::Relaxed);
            // Release: a ringer that takes this slot's bit (acquire) sees the new generation
            // and bell.
            if e.state
                .compare_exchange(
                    state,
                    entry_state::pack(generation, entry_state::ACTIVE),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return Ok((index, generation));
            }
        }
        Err(AttachError::TableFull)
    }

    /// Free wake slot `index` held at `generation`: its bit is cleared in every bell (ringers
    /// stop waking for it) and its next waiter gets a new generation. A supervisor's
    /// call, when the waiter is done or its process is gone.
    pub fn release_waker(&self, index: usize, generation: u64) -> Result<(), AttachError> {
        let e = self
            .storage
            .waker(index)
            .ok_or(AttachError::NoSuchEntry(index))?;
        super::free_entry(&e.state, index, generation)?;
        let (w, mask) = bit(index);
        for bell in self.wake_bells() {
            if let Some(word) = bell.armed.get(w) {
                word.fetch_and(!mask, Ordering::AcqRel);
            }
        }
        Ok(())
    }

    /// Whether wake slot `index` is held at `generation`.
    pub fn waker_held(&self, index: usize, generation: u64) -> bool {
        self.storage.waker(index).is_some_and(|e| {
            e.state.load(Ordering::Acquire) == entry_state::pack(generation, entry_state::ACTIVE)
        })
    }

    /// Whether wake slot `index`'s bit is set in any bell: its waiter armed it and no ringer
    /// has taken it since (the agent's test after each wake-up; the answer may be stale at
    /// once). Acquire: a bit a ringer took is seen with everything before its swap.
    pub fn waker_armed(&self, index: usize) -> bool {
        let (w, mask) = bit(index);
        self.wake_bells().iter().any(|bell| {
            bell.armed
                .get(w)
                .is_some_and(|word| word.load(Ordering::Acquire) & mask != 0)
        })
    }

    /// The futex word the waiter of wake slot `index` sleeps on: its bell's word, which every
    /// ringer that takes an armed bit of the bell bumps and wakes.
    pub fn waker_futex(&self, index: usize) -> Result<&crate::sync::AtomicU32, AttachError> {
        Ok(&self.waker_bell(index)?.seq)
    }

    /// The value of wake slot `index`'s futex word: read it before arming, and sleep on the
    /// word while it still holds this value.
    pub fn waker_seq(&self, index: usize) -> Result<u32, AttachError> {
        // Acquire: pairs with a ringer's bump (release), made after it took the bits.
        Ok(self.waker_futex(index)?.load(Ordering::Acquire))
    }

    /// Sleep on wake slot `index`'s word while it holds `seq` (until a ringer bumps it, the
    /// timeout, or spuriously), in this thread: what the agent does for many slots at once,
    /// for one. Returns at once for a slot that is not there.
    pub fn sleep_waker(&self, index: usize, seq: u32, timeout: Option<Duration>) {
        if let Ok(word) = self.waker_futex(index) {
            self.doorbell.wait(word, seq, timeout);
        }
    }

    /// Active wake slots: `(index, generation, pid)`.
    pub fn active_wakers(&self) -> Vec<(usize, u64, u32)> {
        (0..WAKE_SLOTS)
            .filter_map(|i| {
                let e = self.storage.waker(i)?;
                let state = e.state.load(Ordering::Acquire);
                (entry_state::tag(state) == entry_state::ACTIVE).then(|| {
                    (
                        i,
                        entry_state::generation(state),
                        e.pid.load(Ordering::Relaxed),
                    )
                })
            })
            .collect()
    }

    /// Arm wake slot `index`, held at `generation` (its waiter, before it sleeps, having read
    /// [`Ring::waker_seq`]): set the slot's bit, then the heavy barrier. The caller then
    /// re-checks its condition, and either sleeps (on the word, through its agent) or
    /// [`Ring::disarm_waker`]s. A slot the
    /// supervisor released (its holder's process went away, or the slot was given up) is
    /// `NotHeld`; a release racing with this arming leaves at most one spurious wake-up.
    pub fn arm_waker(&self, index: usize, generation: u64) -> Result<(), AttachError> {
        self.arm_waker_unfenced(index, generation)?;
        // The heavy half of the asymmetric barrier: every ringer either made its change visible
        // to the caller's re-check, or sees this bit on its next load.
        self.doorbell.heavy_barrier();
        Ok(())
    }

    /// [`Ring::arm_waker`] without its barrier, for a waiter that arms several slots (a wait
    /// set over many topics): it must run the heavy barrier once
    /// (`doorbell().heavy_barrier()`) after arming them all and before it re-checks any.
    pub fn arm_waker_unfenced(&self, index: usize, generation: u64) -> Result<(), AttachError> {
        if !self.waker_held(index, generation) {
            return Err(AttachError::NotHeld(index));
        }
        let bell = self.waker_bell(index)?;
        let (w, mask) = bit(index);
        let word = bell.armed.get(w).ok_or(AttachError::NoSuchEntry(index))?;
        // Release: pairs with the ringer's swap (acquire side of its AcqRel).
        word.fetch_or(mask, Ordering::Release);
        Ok(())
    }

    /// Disarm wake slot `index`. `true` when it was still armed (no ringer took it); `false`
    /// when a ringer took the bit first, so its bump of the word came or is coming.
    pub fn disarm_waker(&self, index: usize) -> bool {
        let Ok(bell) = self.waker_bell(index) else {
            return false;
        };
        let (w, mask) = bit(index);
        bell.armed
            .get(w)
            .is_some_and(|word| word.fetch_and(!mask, Ordering::AcqRel) & mask != 0)
    }

    /// The next sequence a publisher will claim: it moves with every message published.
    pub fn claim_counter(&self) -> u64 {
        self.storage.control().claim.load(Ordering::Acquire)
    }

    /// The released cursor of subscriber entry `index`: it moves as the subscriber reads.
    pub fn subscriber_cursor(&self, index: usize) -> Option<u64> {
        Some(
            self.storage
                .subscriber(index)?
                .cursor
                .load(Ordering::Acquire),
        )
    }

    /// Whether subscriber `index` at `generation` would not wait: a message (or a skipped or
    /// overwritten one) at its released cursor, or the topic closed, or the entry no longer
    /// its own. What a waiter re-checks after arming.
    pub fn subscriber_ready(&self, index: usize, generation: u64) -> bool {
        let Some(e) = self.storage.subscriber(index) else {
            return true;
        };
        if e.state.load(Ordering::Acquire) != entry_state::pack(generation, entry_state::ACTIVE) {
            return true;
        }
        let s = e.cursor.load(Ordering::Acquire);
        let st = self
            .storage
            .slot(self.slot_index(s))
            .stamp
            .load(Ordering::Acquire);
        super::stamp::is_done(st, s) || super::stamp::seq(st) > s || self.is_closed()
    }

    /// Whether publisher `index` at `generation` could claim without waiting: always on a lossy
    /// topic; on a lossless one when the gate leaves room, or the topic is closed, or the entry
    /// is no longer its own.
    pub fn publisher_ready(&self, index: usize, generation: u64) -> bool {
        if self.mode != Mode::Lossless || !self.publisher_held(index, generation) {
            return true;
        }
        let claim = self.storage.control().claim.load(Ordering::Relaxed);
        claim < self.gate() || self.is_closed()
    }
}
