//! The broadcast ring: many publishers, many subscribers, every subscriber sees every message,
//! and a publish costs O(1) in the number of subscribers.
//!
//! # Sequences and stamps
//!
//! Messages are numbered by a 64-bit sequence. `Control::claim` is the next sequence to be
//! claimed; it starts at `capacity` (so that sequence `s - capacity` always exists as the
//! slot's previous occupant). Message `s` lives in slot `s & (capacity - 1)`. Every slot carries
//! a stamp, `s << 2 | state`, that says which message the slot holds and in which state:
//!
//! | state       | meaning                                                        |
//! |-------------|----------------------------------------------------------------|
//! | `WRITING`   | the claimant of `s` is writing the payload (lossy topics only) |
//! | `COMMITTED` | message `s` is complete and may be read                        |
//! | `SKIPPED`   | `s` carries nothing: aborted, repaired, or never written       |
//!
//! At start slot `i` holds `i << 2 | SKIPPED`.
//!
//! # Publishing: claim, write, commit
//!
//! 1. **Claim.** A publisher records the sequence it is about to claim in its entry's
//!    `inflight`, then takes `claim` from `s` to `s + 1`: with a plain release store while it
//!    is the topic's only publisher (`Flags::shared` is zero), with a CAS otherwise (the solo
//!    claim and its handover to a second publisher are in `publisher`). In lossless mode it
//!    first checks `s < limit`, where `limit = min(claim, every active subscriber's cursor) +
//!    capacity` is cached and rescanned only when reached (O(1) per publish, O(subscribers)
//!    per lap).
//! 2. **Write.** It waits until the slot's stamp says the previous occupant `s - capacity` is
//!    `COMMITTED` or `SKIPPED` (so two publishers never write one slot at once, even when one
//!    laps another), and writes the payload. On a lossy topic it first stamps `WRITING` (the
//!    seqlock's odd state for concurrent readers); a lossless reader never looks at a slot that
//!    is not committed, so a lossless slot's stamp goes straight from the previous occupant to
//!    the new one: one stamp store per message.
//! 3. **Commit.** It stores the length, stamps `COMMITTED` (release), and rings the data
//!    doorbell only if a subscriber sleeps. `inflight` keeps `s` (a supervisor tells a finished
//!    claim by its slot); the per-publisher count is a plain store to the publisher's own
//!    entry. Nothing but the slot is written on another process's cache lines.
//!
//! [`PublisherPort::try_send_many`] and [`SubscriberPort::try_recv_many`] do the same for a
//! batch, with one doorbell check or one cursor release for the whole batch.
//!
//! # Invariants
//!
//! * **No overwrite of an unreleased slot (lossless).** A subscriber's cursor is the next
//!   sequence it will read; it advances (release) only after the subscriber is done with the
//!   slot. A publisher writes message `s` only after observing (acquire) every active cursor
//!   above `s - capacity`.
//! * **A joining subscriber is safe from stale limits.** It publishes a protective cursor, then
//!   (after a SeqCst fence) reads `claim` and starts at or above it, or, for `StartAt::Oldest`
//!   in lossless mode, at the lowest cursor of the other active subscribers (never below
//!   `claim - capacity`). A publisher whose scan missed the joiner read `claim` and every cursor
//!   its limit is made of before its own fence, so the joiner reads them at least as new, and
//!   the publisher's limit is at most the joiner's start plus the capacity (see `Ring::gate`
//!   and [`Ring::attach_subscriber`]).
//! * **Per-slot writer exclusion.** The write step waits for the exact predecessor, so the
//!   writers of one slot are serialised in sequence order.
//! * **One claimant per sequence.** Several publishers claim with a CAS. A solo publisher
//!   stores; a second publisher is attached only after `shared` is set, and its port runs the
//!   heavy barrier and waits out a solo claim in flight before it claims anything.
//! * **No lost wake-up, no fence per message.** Ringer (every commit, every release): change
//!   the condition, *light* barrier (a compiler fence), read the waiter count. Sleeper: raise
//!   the waiter count, *heavy* barrier (`membarrier(2)`: every thread of every registered
//!   process passes a full barrier), read the futex word, re-check the condition, sleep on the
//!   word. One of them sees the other, as with two `SeqCst` fences, but the fence is paid once
//!   per sleep instead of once per message (see [`crate::doorbell::Doorbell`]). Rare ringers
//!   (close, release, eviction, repair) use a real `SeqCst` fence.
//!
//! The lossy mode's readers and writers, the repair of dead publishers and the doorbells are in
//! the submodules: `publisher`, `subscriber`, `words`, `repair`, `wakers`.
//!
//! (This file runs past the ~700 lines we aim for: its first 70 lines are the algorithm's
//! specification above, and the entry tables' attach, release and eviction stay beside the
//! invariants they must keep.)

mod presence;
mod publisher;
mod repair;
mod subscriber;
mod wakers;
mod words;

pub use publisher::{Claim, Loan, PublisherPort, SendError};
pub use repair::RepairOutcome;
pub use subscriber::{Ready, Received, RecvError, Sample, SubscriberPort};

use std::time::Duration;

use thiserror::Error;

use crate::doorbell::Doorbell;
use crate::entries::{entry_state, Bell, IDLE};
use crate::layout::{Geometry, Mode, MAX_TABLE};
use crate::storage::Storage;
use crate::sync::{fence, AtomicU64, Ordering};

/// The stamp encoding, see the module documentation.
pub mod stamp {
    /// The claimant is writing the payload.
    pub const WRITING: u64 = 1;
    /// The message is complete.
    pub const COMMITTED: u64 = 2;
    /// The sequence carries no message.
    pub const SKIPPED: u64 = 3;

    /// Sequences must stay below this (stamps hold `sequence << 2`); a claim or cursor at or
    /// above it is corrupted shared state.
    pub const MAX_SEQUENCE: u64 = 1 << 62;

    /// Pack a sequence and a state.
    #[inline]
    pub const fn pack(seq: u64, state: u64) -> u64 {
        (seq << 2) | state
    }
    /// The sequence of a stamp.
    #[inline]
    pub const fn seq(stamp: u64) -> u64 {
        stamp >> 2
    }
    /// The state of a stamp.
    #[inline]
    pub const fn state(stamp: u64) -> u64 {
        stamp & 3
    }
    /// Whether `stamp` says message `seq` is finished (committed or skipped), so the slot may
    /// be written by `seq + capacity`.
    #[inline]
    pub const fn is_done(stamp: u64, seq: u64) -> bool {
        stamp == pack(seq, COMMITTED) || stamp == pack(seq, SKIPPED)
    }
}

/// Where a new subscriber starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum StartAt {
    /// With the next message published after it attaches.
    #[default]
    Latest,
    /// With the oldest message the ring still holds (lossy), or that another live subscriber
    /// still protects (lossless).
    Oldest,
}

/// Why a table entry could not be taken or used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AttachError {
    /// The index is outside the table.
    #[error("entry {0} is outside the table")]
    NoSuchEntry(usize),
    /// The entry is in use.
    #[error("entry {0} is already in use")]
    InUse(usize),
    /// Every entry of the table is in use.
    #[error("the table is full: raise max_publishers or max_subscribers for this topic")]
    TableFull,
    /// The entry no longer belongs to this holder (it was released or evicted).
    #[error("entry {0} is no longer held by this port (released or evicted)")]
    NotHeld(usize),
    /// Another publisher's claim has been in flight past [`SOLO_CLAIM_PATIENCE`]: its process
    /// is stopped mid-claim, or the entry was forged. A new publisher of a shared topic waits
    /// for such claims to finish and gives up rather than wait forever.
    #[error("publisher entry {0} has had a claim in flight for over a second (a stopped process, or a forged entry); try again")]
    ClaimInFlight(usize),
}

/// How long a publisher joining a shared topic waits for another publisher's claim in flight
/// ([`AttachError::ClaimInFlight`]). A live claim lasts instructions.
pub const SOLO_CLAIM_PATIENCE: Duration = Duration::from_secs(1);

/// A snapshot of one ring's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Sequences claimed since creation.
    pub published: u64,
    /// Times a lossless publisher found the ring full.
    pub stalls: u64,
    /// Whether the topic is closed.
    pub closed: bool,
    /// Active publishers: (index, pid, messages committed).
    pub publishers: Vec<(usize, u32, u64)>,
    /// Active subscribers: (index, pid, cursor, lag in messages, messages lost to lag).
    pub subscribers: Vec<(usize, u32, u64, u64, u64)>,
    /// Messages published while no subscriber was attached (see [`Ring::unheard`]).
    pub unheard: u64,
}

/// One topic's ring over a [`Storage`], with a [`Doorbell`] for sleeping.
pub struct Ring<S, D> {
    storage: S,
    doorbell: D,
    capacity: u64,
    mask: u64,
    slot_size: usize,
    mode: Mode,
}

/// Move table entry `index` from tag `from` to tag `to` at `generation`, if it is in `from`.
fn retag_entry(
    state: &AtomicU64,
    index: usize,
    generation: u64,
    from: u64,
    to: u64,
) -> Result<(), AttachError> {
    state
        .compare_exchange(
            entry_state::pack(generation, from),
            entry_state::pack(generation, to),
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .map(drop)
        .map_err(|_| AttachError::NotHeld(index))
}

/// Free a table entry held at `generation`: `ACTIVE(generation)` becomes `FREE(generation)`.
fn free_entry(state: &AtomicU64, index: usize, generation: u64) -> Result<(), AttachError> {
    retag_entry(
        state,
        index,
        generation,
        entry_state::ACTIVE,
        entry_state::FREE,
    )
}

/// Write the initial state into fresh, zeroed storage: `claim = capacity`, every slot
/// `SKIPPED` for the sequence below it, every publisher idle.
pub(crate) fn initialize<S: Storage>(storage: &S) {
    let g = &storage.layout().geometry;
    let capacity = u64::from(g.capacity);
    storage.control().claim.store(capacity, Ordering::Relaxed);
    // No subscriber yet: every message from the first is unheard until one attaches.
    storage
        .control()
        .flags
        .quiet_since
        .store(capacity, Ordering::Relaxed);
    for i in 0..g.capacity as usize {
        storage
            .slot(i)
            .stamp
            .store(stamp::pack(i as u64, stamp::SKIPPED), Ordering::Relaxed);
    }
    for i in 0..g.max_publishers as usize {
        if let Some(p) = storage.publisher(i) {
            p.inflight.store(IDLE, Ordering::Relaxed);
        }
    }
    fence(Ordering::Release);
}

impl<S: Storage, D: Doorbell> Ring<S, D> {
    /// A ring over `storage` (already created or validated) waking through `doorbell`.
    pub fn new(storage: S, doorbell: D) -> Self {
        let g = &storage.layout().geometry;
        let capacity = u64::from(g.capacity);
        let slot_size = g.slot_size as usize;
        let mode = g.mode;
        Ring {
            storage,
            doorbell,
            capacity,
            mask: capacity - 1,
            slot_size,
            mode,
        }
    }

    /// The storage underneath.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The doorbell the ring sleeps and wakes through.
    pub fn doorbell(&self) -> &D {
        &self.doorbell
    }

    /// The segment's layout (offsets and total length).
    pub fn layout(&self) -> &crate::layout::Layout {
        self.storage.layout()
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.storage.layout().geometry
    }

    /// The first sequence number a message can carry.
    #[inline]
    pub fn first_sequence(&self) -> u64 {
        self.capacity
    }

    #[inline]
    fn slot_index(&self, seq: u64) -> usize {
        (seq & self.mask) as usize
    }

    /// Close the topic: publishers get `Closed`, subscribers drain and then get `Closed`.
    pub fn close(&self) {
        let c = self.storage.control();
        c.flags.closed.store(1, Ordering::Release);
        fence(Ordering::SeqCst);
        self.wake(&c.data, true);
        self.wake(&c.space, true);
        self.wake(&c.flags.presence, true);
    }

    /// Wake everyone who waits on this ring, in any process: the futex sleepers of both bells
    /// and every armed wake slot. Nothing changed in the ring; each re-checks its condition
    /// (and its doorbell's [`Doorbell::interrupted`]). For a client whose supervisor died, so
    /// that its sleeping ports look for a restarted one: rare, and spurious for everyone else.
    pub fn wake_all_sleepers(&self) {
        let c = self.storage.control();
        fence(Ordering::SeqCst);
        self.wake(&c.data, true);
        self.wake(&c.space, true);
    }

    /// The epoch of the daemon that manages this segment (see `Flags::epoch`).
    #[inline]
    pub fn epoch(&self) -> u32 {
        self.storage.control().flags.epoch.load(Ordering::Relaxed)
    }

    /// Record the managing daemon's epoch (the daemon, at creation and at adoption).
    pub fn set_epoch(&self, epoch: u32) {
        self.storage
            .control()
            .flags
            .epoch
            .store(epoch, Ordering::Release);
    }

    /// Whether the topic is closed.
    pub fn is_closed(&self) -> bool {
        self.storage.control().flags.closed.load(Ordering::Acquire) != 0
    }

    /// After changing a condition someone may sleep on: wake `bell`'s sleepers, making a system
    /// call only if there are any. The caller's change must precede this call. For the rare
    /// paths (close, release, eviction, repair), which may run in a process that never
    /// registered for the asymmetric barrier: a real `SeqCst` fence.
    #[inline]
    fn ring_bell(&self, bell: &Bell) {
        // Dekker with `sleep_on` and `arm`: our change, fence, read waiters and armed bits |
        // their waiters++ or armed bit, fence, re-check. At least one side sees the other.
        fence(Ordering::SeqCst);
        self.wake_if_waited(bell);
    }

    /// `ring_bell` for the hot paths (every commit, every release) of a port: the light half of
    /// the asymmetric barrier (`registered`: see [`crate::sync::light_barrier`]) instead of a
    /// fence. A sleeper's `heavy_barrier` in `sleep_on` (or `arm`) pairs with it.
    #[inline]
    fn ring_bell_light(&self, bell: &Bell, registered: bool) {
        crate::sync::light_barrier(registered);
        self.wake_if_waited(bell);
    }

    /// The loads of the bell's line that decide whether anybody waits (the waiter count and the
    /// four armed words, one line written only by waiters): nothing else happens while nobody
    /// does.
    #[inline]
    fn wake_if_waited(&self, bell: &Bell) {
        let sleepers = bell.waiters.load(Ordering::Relaxed);
        let armed = bell
            .armed
            .iter()
            .fold(0, |any, w| any | w.load(Ordering::Relaxed));
        if sleepers != 0 || armed != 0 {
            self.wake(bell, sleepers != 0);
        }
    }

    /// Wake everyone who waits on `bell`: its futex sleepers, and the waiters of its armed wake
    /// slots, who wait on the same word (through their process's wake agent, see `wakers`).
    /// The armed bits are taken with one swap per word, so each arming is answered by exactly
    /// one ringer; then one bump of the word and one system call, however many bits were set
    /// (so bits written by a hostile party cost a ringer at most that one call).
    #[cold]
    fn wake(&self, bell: &Bell, sleepers: bool) {
        let mut taken = false;
        for word in bell.armed.iter() {
            // AcqRel: ordered before the bump below, which a waiter's agent acquires.
            if word.load(Ordering::Relaxed) != 0 && word.swap(0, Ordering::AcqRel) != 0 {
                taken = true;
            }
        }
        if sleepers || taken {
            bell.seq.fetch_add(1, Ordering::Release);
            self.doorbell.wake_all(&bell.seq);
        }
    }

    /// Sleep on `bell` unless `ready()` turns true; returns after a wake-up, a timeout or a
    /// spurious return. `ready` must read the condition the ringer changes before ringing.
    fn sleep_on(&self, bell: &Bell, timeout: Option<Duration>, ready: impl FnOnce() -> bool) {
        bell.waiters.fetch_add(1, Ordering::Relaxed);
        // The heavy half of the asymmetric barrier: every ringer either already made its change
        // visible to our check below, or sees our `waiters` on its next load.
        self.doorbell.heavy_barrier();
        // The doorbell reads its `interrupted` flag after this load (and bounds its sleep while
        // it is set): a `wake_all_sleepers` after setting it is never missed.
        let word = bell.seq.load(Ordering::Acquire);
        if !ready() {
            self.doorbell.wait(&bell.seq, word, timeout);
        }
        bell.waiters.fetch_sub(1, Ordering::Relaxed);
    }

    /// The lossless gate: `min(claim, every active subscriber's cursor) + capacity`. A publisher
    /// may claim sequence `s` only if `s` is below it.
    ///
    /// Two passes around a SeqCst fence, which pairs with the fence in
    /// [`Ring::attach_subscriber`]. The first pass reads `claim`, every entry's state and the
    /// cursor of every active entry; the second re-reads the states after the fence, and the
    /// scan starts over if any changed. So every value the limit is made of was read before our
    /// fence, and every entry it ignores was still free after it. A joiner whose entry we saw
    /// free activates it after our read, so its fence follows ours and its reads of `claim` and
    /// of the other cursors return values at least as new as ours: the start it derives from
    /// them is at least our limit minus the capacity. (A cursor read after the fence could be
    /// newer than the one a concurrent `StartAt::Oldest` joiner read, and let us overwrite the
    /// slot the joiner starts on.)
    ///
    /// Only the entries below the subscribers' high-water mark (`Flags::subscribers_high`) are
    /// scanned: a joiner raises the mark before its entry turns active, and the scan starts over
    /// if the mark read after the fence differs. An entry at or above the mark we read after
    /// the fence was therefore still free after our fence, as in the argument above.
    fn gate(&self) -> u64 {
        let control = self.storage.control();
        let table = (self.geometry().max_subscribers as usize).min(MAX_TABLE as usize);
        let high = || (control.flags.subscribers_high.load(Ordering::Acquire) as usize).min(table);
        let mut states = [0u64; MAX_TABLE as usize];
        loop {
            let max = high();
            let claim = control.claim.load(Ordering::Relaxed);
            let mut low = claim;
            for (i, seen) in states.iter_mut().enumerate().take(max) {
                let Some(e) = self.storage.subscriber(i) else {
                    break;
                };
                *seen = e.state.load(Ordering::Acquire);
                if entry_state::tag(*seen) == entry_state::ACTIVE {
                    // Acquire: the subscriber's reads of every slot below its cursor happen
                    // before our writes to them.
                    low = low.min(e.cursor.load(Ordering::Acquire));
                }
            }
            fence(Ordering::SeqCst);
            let stable = high() == max
                && states.iter().enumerate().take(max).all(|(i, &seen)| {
                    self.storage
                        .subscriber(i)
                        .is_none_or(|e| e.state.load(Ordering::Relaxed) == seen)
                });
            if stable {
                return low.saturating_add(self.capacity);
            }
        }
    }

    /// Take publisher entry `index` for a new publisher owned by `pid`; returns its generation.
    /// Not concurrently with another attach to this ring (see [`Ring::attach_subscriber`]).
    ///
    /// If another publisher is active, the topic becomes *shared* (`Flags::shared`): every
    /// publisher claims with a CAS from then on. A solo publisher that is mid-claim is waited
    /// for by the new port ([`PublisherPort::new`]). If no other publisher is active, the
    /// topic goes back to solo claims (released publishers can no longer claim).
    pub fn attach_publisher(&self, index: usize, pid: u32) -> Result<u64, AttachError> {
        let e = self
            .storage
            .publisher(index)
            .ok_or(AttachError::NoSuchEntry(index))?;
        let state = e.state.load(Ordering::Acquire);
        if entry_state::tag(state) != entry_state::FREE {
            return Err(AttachError::InUse(index));
        }
        let generation = entry_state::generation(state) + 1;
        e.inflight.store(IDLE, Ordering::Relaxed);
        e.published.store(0, Ordering::Relaxed);
        e.pid.store(pid, Ordering::Relaxed);
        e.state
            .compare_exchange(
                state,
                entry_state::pack(generation, entry_state::ACTIVE),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .map_err(|_| AttachError::InUse(index))?;
        let others = (0..self.geometry().max_publishers as usize)
            .filter(|&i| i != index)
            .filter_map(|i| self.storage.publisher(i))
            .any(|o| entry_state::tag(o.state.load(Ordering::Acquire)) == entry_state::ACTIVE);
        // Release: a port that sees the flag (after its heavy barrier) also sees the entries.
        self.storage
            .control()
            .flags
            .shared
            .store(u32::from(others), Ordering::Release);
        Ok(generation)
    }

    /// Wait until no publisher other than `except` is between recording a claim and making
    /// it (`inflight == claim`): after `shared` was set and the heavy barrier ran, no solo
    /// claim can start, and this waits out one that started before. A publisher whose entry
    /// is released (it died and was repaired) is not waited for. One that stays in flight for
    /// [`SOLO_CLAIM_PATIENCE`] (a stopped process, a forged entry) is an error, not a hang.
    fn wait_for_solo_claims(&self, except: usize) -> Result<(), AttachError> {
        let control = self.storage.control();
        for i in (0..self.geometry().max_publishers as usize).filter(|&i| i != except) {
            let Some(e) = self.storage.publisher(i) else {
                break;
            };
            let mut backoff = crate::wait::Backoff::new();
            #[cfg(not(loom))]
            let mut give_up = None;
            loop {
                if entry_state::tag(e.state.load(Ordering::Acquire)) != entry_state::ACTIVE {
                    break;
                }
                let s = e.inflight.load(Ordering::Acquire);
                // Acquire: pairs with the solo claim's release store.
                if s == IDLE || control.claim.load(Ordering::Acquire) > s {
                    break;
                }
                #[cfg(not(loom))]
                if backoff.is_sleeping() {
                    let now = std::time::Instant::now();
                    if now >= *give_up.get_or_insert(now + SOLO_CLAIM_PATIENCE) {
                        return Err(AttachError::ClaimInFlight(i));
                    }
                }
                backoff.snooze();
            }
        }
        Ok(())
    }

    /// Whether the topic may have more than one publisher (they claim with a CAS).
    pub fn is_shared(&self) -> bool {
        self.storage.control().flags.shared.load(Ordering::Acquire) != 0
    }

    /// Take the first free publisher entry; returns `(index, generation)`.
    pub fn attach_any_publisher(&self, pid: u32) -> Result<(usize, u64), AttachError> {
        (0..self.geometry().max_publishers as usize)
            .find_map(|i| self.attach_publisher(i, pid).ok().map(|g| (i, g)))
            .ok_or(AttachError::TableFull)
    }

    /// Release publisher entry `index` held at `generation`. The publisher must hold no claim
    /// (a dead publisher's claim is repaired with [`Ring::repair_publisher`], which also
    /// releases the entry).
    pub fn release_publisher(&self, index: usize, generation: u64) -> Result<(), AttachError> {
        let e = self
            .storage
            .publisher(index)
            .ok_or(AttachError::NoSuchEntry(index))?;
        free_entry(&e.state, index, generation)
    }

    /// Take subscriber entry `index` for a new subscriber owned by `pid`, starting at `start`;
    /// returns its generation.
    ///
    /// The join protocol: publish a protective cursor no later than where we will start, mark
    /// the entry active, SeqCst fence, then read `claim` (and, for `StartAt::Oldest` in lossless
    /// mode, the other active cursors) and choose the start, which only moves the cursor
    /// forward. A publisher whose `Ring::gate` scan missed this entry read `claim` and the
    /// cursors it used before its fence, which precedes ours, so its limit is at most our
    /// `claim`, and at most any cursor as we read it, plus the capacity: it cannot overwrite
    /// anything at or after where we start.
    ///
    /// Attaches to one ring must not run concurrently with each other (the daemon makes them
    /// all, one at a time): the entry's fields are written before the state CAS that decides
    /// which attacher wins, and a lossless `StartAt::Oldest` joiner trusts the other active
    /// cursors to be final, not another joiner's provisional one. Releases may run at any time.
    pub fn attach_subscriber(
        &self,
        index: usize,
        pid: u32,
        start: StartAt,
    ) -> Result<u64, AttachError> {
        let e = self
            .storage
            .subscriber(index)
            .ok_or(AttachError::NoSuchEntry(index))?;
        let state = e.state.load(Ordering::Acquire);
        if entry_state::tag(state) != entry_state::FREE {
            return Err(AttachError::InUse(index));
        }
        let generation = entry_state::generation(state) + 1;
        let control = self.storage.control();
        let first = self.first_sequence();
        let c0 = control.claim.load(Ordering::Relaxed);
        let protective = match start {
            StartAt::Latest => c0,
            StartAt::Oldest => c0.saturating_sub(self.capacity).max(first),
        };
        e.cursor.store(protective, Ordering::Relaxed);
        e.lagged.store(0, Ordering::Relaxed);
        e.pid.store(pid, Ordering::Relaxed);
        // Before the entry turns active: a publisher that scans only up to the mark it reads
        // after its fence cannot miss us (see `Ring::gate`).
        control
            .flags
            .subscribers_high
            .fetch_max(index as u32 + 1, Ordering::SeqCst);
        e.state
            .compare_exchange(
                state,
                entry_state::pack(generation, entry_state::ACTIVE),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .map_err(|_| AttachError::InUse(index))?;
        fence(Ordering::SeqCst);
        let c1 = control.claim.load(Ordering::Relaxed);
        let begin = match (start, self.mode) {
            (StartAt::Latest, _) => c1,
            // Lossy reads are validated copies: anything still in the ring may be replayed.
            (StartAt::Oldest, Mode::Lossy) => c1.saturating_sub(self.capacity).max(first),
            // Lossless: only what another live subscriber still protects is safe from a
            // publisher's stale limit, so start no earlier than the slowest of them.
            (StartAt::Oldest, Mode::Lossless) => {
                let mut low = c1;
                for i in (0..self.geometry().max_subscribers as usize).filter(|&i| i != index) {
                    let Some(o) = self.storage.subscriber(i) else {
                        break;
                    };
                    if entry_state::tag(o.state.load(Ordering::Acquire)) == entry_state::ACTIVE {
                        low = low.min(o.cursor.load(Ordering::Acquire));
                    }
                }
                low.max(c1.saturating_sub(self.capacity)).max(first)
            }
        };
        e.cursor.store(begin.max(protective), Ordering::Release);
        Ok(generation)
    }

    /// Take the first free subscriber entry; returns `(index, generation)`.
    pub fn attach_any_subscriber(
        &self,
        pid: u32,
        start: StartAt,
    ) -> Result<(usize, u64), AttachError> {
        (0..self.geometry().max_subscribers as usize)
            .find_map(|i| self.attach_subscriber(i, pid, start).ok().map(|g| (i, g)))
            .ok_or(AttachError::TableFull)
    }

    /// Release subscriber entry `index` held at `generation`: its cursor stops protecting
    /// slots and waiting publishers are woken. Used when a subscriber leaves, when its process
    /// died, and to evict a stuck one (which then gets `Evicted` on its next call).
    pub fn release_subscriber(&self, index: usize, generation: u64) -> Result<(), AttachError> {
        let e = self
            .storage
            .subscriber(index)
            .ok_or(AttachError::NoSuchEntry(index))?;
        free_entry(&e.state, index, generation)?;
        self.ring_bell(&self.storage.control().space);
        Ok(())
    }

    /// Evict subscriber `index` held at `generation` (a supervisor's decision: it held a
    /// lossless ring back too long): `ACTIVE(generation)` becomes `EVICTED(generation)`.
    /// Publishers stop waiting for it at once and its port's next call reports `Evicted`. The
    /// entry is not reused until [`Ring::reclaim_subscriber`], which the supervisor calls once
    /// the port can no longer touch it (it detached, or its process is gone).
    pub fn evict_subscriber(&self, index: usize, generation: u64) -> Result<(), AttachError> {
        let e = self
            .storage
            .subscriber(index)
            .ok_or(AttachError::NoSuchEntry(index))?;
        retag_entry(
            &e.state,
            index,
            generation,
            entry_state::ACTIVE,
            entry_state::EVICTED,
        )?;
        // Publishers stop waiting for it; the port itself, if it sleeps for a message, wakes
        // to see `Evicted` (sleepers do not look around periodically).
        self.ring_bell(&self.storage.control().space);
        self.ring_bell(&self.storage.control().data);
        Ok(())
    }

    /// Make an evicted subscriber entry free for reuse: `EVICTED(generation)` becomes
    /// `FREE(generation)`. Only once the evicted port is gone (see
    /// [`Ring::evict_subscriber`]).
    pub fn reclaim_subscriber(&self, index: usize, generation: u64) -> Result<(), AttachError> {
        let e = self
            .storage
            .subscriber(index)
            .ok_or(AttachError::NoSuchEntry(index))?;
        retag_entry(
            &e.state,
            index,
            generation,
            entry_state::EVICTED,
            entry_state::FREE,
        )
    }

    /// A snapshot of the counters, for stats.
    pub fn stats(&self) -> RingStats {
        let c = self.storage.control();
        let claim = c.claim.load(Ordering::Acquire);
        let g = self.geometry();
        let publishers = (0..g.max_publishers as usize)
            .filter_map(|i| {
                let e = self.storage.publisher(i)?;
                (entry_state::tag(e.state.load(Ordering::Acquire)) == entry_state::ACTIVE).then(
                    || {
                        (
                            i,
                            e.pid.load(Ordering::Relaxed),
                            e.published.load(Ordering::Relaxed),
                        )
                    },
                )
            })
            .collect();
        let subscribers = (0..g.max_subscribers as usize)
            .filter_map(|i| {
                let e = self.storage.subscriber(i)?;
                (entry_state::tag(e.state.load(Ordering::Acquire)) == entry_state::ACTIVE).then(
                    || {
                        let cursor = e.cursor.load(Ordering::Relaxed);
                        (
                            i,
                            e.pid.load(Ordering::Relaxed),
                            cursor,
                            claim.saturating_sub(cursor),
                            e.lagged.load(Ordering::Relaxed),
                        )
                    },
                )
            })
            .collect();
        RingStats {
            published: claim.saturating_sub(self.first_sequence()),
            stalls: c.flags.stalls.load(Ordering::Relaxed),
            closed: c.flags.closed.load(Ordering::Relaxed) != 0,
            publishers,
            subscribers,
            unheard: self.unheard(),
        }
    }

    /// Active publisher entries: `(index, generation, pid)`.
    pub fn active_publishers(&self) -> Vec<(usize, u64, u32)> {
        (0..self.geometry().max_publishers as usize)
            .filter_map(|i| {
                let e = self.storage.publisher(i)?;
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

    /// Active subscriber entries: `(index, generation, pid)`.
    pub fn active_subscribers(&self) -> Vec<(usize, u64, u32)> {
        self.subscribers_tagged(entry_state::ACTIVE)
    }

    /// `(index, generation, pid)` of every evicted subscriber entry not reclaimed yet.
    pub fn evicted_subscribers(&self) -> Vec<(usize, u64, u32)> {
        self.subscribers_tagged(entry_state::EVICTED)
    }

    fn subscribers_tagged(&self, tag: u64) -> Vec<(usize, u64, u32)> {
        (0..self.geometry().max_subscribers as usize)
            .filter_map(|i| {
                let e = self.storage.subscriber(i)?;
                let state = e.state.load(Ordering::Acquire);
                (entry_state::tag(state) == tag).then(|| {
                    (
                        i,
                        entry_state::generation(state),
                        e.pid.load(Ordering::Relaxed),
                    )
                })
            })
            .collect()
    }

    /// Whether subscriber entry `index` is active at `generation`.
    pub fn subscriber_held(&self, index: usize, generation: u64) -> bool {
        self.storage.subscriber(index).is_some_and(|e| {
            e.state.load(Ordering::Acquire) == entry_state::pack(generation, entry_state::ACTIVE)
        })
    }

    /// Whether publisher entry `index` is active at `generation`.
    pub fn publisher_held(&self, index: usize, generation: u64) -> bool {
        self.storage.publisher(index).is_some_and(|e| {
            e.state.load(Ordering::Acquire) == entry_state::pack(generation, entry_state::ACTIVE)
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
