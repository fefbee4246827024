//! Presence: how many publishers and subscribers a topic has, read from its tables, the bell
//! that wakes a port waiting for that count to change, and the count of messages published
//! while no subscriber was attached.
//!
//! Everything here reads or writes the control block and the entry tables of the segment, and
//! nothing else; callers (bus-client's ports, the daemon) ask these methods and never look at
//! the tables themselves, so a change of where the tables live changes only this crate.
//!
//! # The presence bell (`Flags::presence`)
//!
//! * **Ring** (the supervisor, after every attach, release, eviction or repair it made or
//!   learnt of: [`Ring::presence_changed`]): the table change, a `SeqCst` fence, take the
//!   bell's `armed` bits, bump its word and wake it. Always: table changes are rare, so the
//!   ringer needs no waiter count.
//! * **Wait** (a port, [`Ring::presence_seq`] then [`Ring::wait_presence`]): read the word
//!   (acquire), count, and sleep on the word while it still holds the value read.
//!
//! No lost wake-up: if the count missed a table change, the word was read before the bump
//! that follows the change (had it read the bump, acquire/release would make the change
//! visible to the count), so the kernel's check of the word at sleep sees the bump, or the
//! wake-up comes after the sleeper is queued (`loom_presence.rs`). A wake slot on the
//! presence bell (a wait set) arms its bit, runs the heavy barrier and counts; the ringer's
//! fence sits between its change and its look at the bits, so one of them sees the other.
//!
//! The publish and receive paths never read or write any of this.
//!
//! # Messages nobody heard (`Flags::quiet_since`, `Flags::unheard`)
//!
//! Counted by the supervisor, not by publishers: when it finds no subscriber after a change it
//! records the claim (`quiet_since`); when it finds one again it adds the claim's advance to
//! `unheard`. So a publish costs nothing for it; the price is precision at the edges: the
//! messages published in the instant between a change and the supervisor's look at it are
//! counted with the state it finds.

use std::time::Duration;

use super::Ring;
use crate::doorbell::Doorbell;
use crate::entries::{entry_state, NOT_QUIET};
use crate::layout::MAX_TABLE;
use crate::storage::Storage;
use crate::sync::{fence, Ordering};

impl<S: Storage, D: Doorbell> Ring<S, D> {
    /// Subscribers attached now: the active entries of the subscriber table (below its
    /// high-water mark). Reads the tables: a few loads, no system call, cheap enough to ask
    /// per message. An evicted subscriber no longer counts.
    pub fn subscriber_count(&self) -> usize {
        let table = (self.geometry().max_subscribers as usize).min(MAX_TABLE as usize);
        let high = (self
            .storage
            .control()
            .flags
            .subscribers_high
            .load(Ordering::Acquire) as usize)
            .min(table);
        (0..high)
            .filter_map(|i| self.storage.subscriber(i))
            .filter(|e| entry_state::tag(e.state.load(Ordering::Acquire)) == entry_state::ACTIVE)
            .count()
    }

    /// Publishers attached now: the active entries of the publisher table. Reads the tables,
    /// like [`Ring::subscriber_count`].
    pub fn publisher_count(&self) -> usize {
        let table = (self.geometry().max_publishers as usize).min(MAX_TABLE as usize);
        (0..table)
            .filter_map(|i| self.storage.publisher(i))
            .filter(|e| entry_state::tag(e.state.load(Ordering::Acquire)) == entry_state::ACTIVE)
            .count()
    }

    /// The presence bell's word: read it *before* counting, then sleep with
    /// [`Ring::wait_presence`] on the value read if the count is not what you wait for.
    pub fn presence_seq(&self) -> u32 {
        // Acquire: pairs with the ringer's bump, made after its table change.
        self.storage
            .control()
            .flags
            .presence
            .seq
            .load(Ordering::Acquire)
    }

    /// Sleep while the presence bell's word still holds `seq` (read with
    /// [`Ring::presence_seq`] before counting): until the supervisor rings it after a table
    /// change (or the topic closes), `timeout` passes, or spuriously. Re-count after it returns.
    pub fn wait_presence(&self, seq: u32, timeout: Option<Duration>) {
        self.doorbell
            .wait(&self.storage.control().flags.presence.seq, seq, timeout);
    }

    /// The supervisor, after it changed the tables (an attach, a release, an eviction, a
    /// repair) or learnt that a port released its own entry: bring the count of unheard
    /// messages up to date and ring the presence bell. Calls are serialised by the supervisor
    /// (they write `quiet_since` and `unheard` without a CAS).
    pub fn presence_changed(&self) {
        let flags = &self.storage.control().flags;
        let claim = self.claim_counter();
        let quiet = flags.quiet_since.load(Ordering::Relaxed);
        let heard = self.subscriber_count() > 0;
        if heard && quiet != NOT_QUIET {
            // Shared memory is not trusted: a quiet mark above the claim adds nothing.
            flags
                .unheard
                .fetch_add(claim.saturating_sub(quiet), Ordering::Relaxed);
            flags.quiet_since.store(NOT_QUIET, Ordering::Relaxed);
        } else if !heard && quiet == NOT_QUIET {
            flags.quiet_since.store(claim, Ordering::Relaxed);
        }
        // The ringer's half: the table change before the look at the armed bits (a wake slot
        // that armed after counting runs the heavy barrier; one side sees the other).
        fence(Ordering::SeqCst);
        self.wake(&flags.presence, true);
    }

    /// Messages published while no subscriber was attached, since the topic was made
    /// (including the current quiet stretch, if there is no subscriber now). See the module
    /// documentation for its precision.
    pub fn unheard(&self) -> u64 {
        let flags = &self.storage.control().flags;
        let unheard = flags.unheard.load(Ordering::Relaxed);
        match flags.quiet_since.load(Ordering::Relaxed) {
            NOT_QUIET => unheard,
            since => unheard.wrapping_add(self.claim_counter().saturating_sub(since)),
        }
    }
}
