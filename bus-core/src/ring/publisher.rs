//! The publisher side: claim a sequence, write the slot in place, commit.

use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use super::{stamp, AttachError, Ring};
use crate::doorbell::Doorbell;
use crate::entries::{entry_state, PublisherEntry, IDLE};
use crate::layout::Mode;
use crate::storage::Storage;
use crate::sync::{fence, Ordering};
use crate::wait::{Backoff, Step, WaitStrategy, Waiter};

/// Why a message could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SendError {
    /// Lossless topic: every slot is held by a subscriber that has not caught up.
    #[error("the ring is full: a subscriber has not released the oldest slot (try again, or use a blocking send)")]
    Full,
    /// No slot freed up before the timeout.
    #[error("timed out waiting for a free slot")]
    Timeout,
    /// The topic was closed (the daemon is stopping or the topic was deleted).
    #[error("the topic is closed")]
    Closed,
    /// This publisher's entry was taken away (the topic was deleted or the daemon evicted it).
    #[error("this publisher was detached from the topic; attach a new one")]
    Evicted,
    /// The message does not fit the slot.
    #[error("message of {len} bytes does not fit the topic's slot size of {max} bytes")]
    TooLarge {
        /// Bytes offered.
        len: usize,
        /// The slot size.
        max: usize,
    },
    /// A supervisor repaired this publisher's claim (it believed the publisher dead); the
    /// message was dropped.
    #[error("this publisher's claim was repaired by the daemon; the message was dropped")]
    Repaired,
    /// The shared state is corrupted (a claim counter outside the valid range).
    #[error("the topic's shared state is corrupted")]
    Corrupted,
    /// The slot's previous message was never finished within a second (its publisher hung,
    /// or died with no daemon to repair it, or the shared state is corrupted). This message
    /// was dropped and its sequence skipped, so the topic moves on.
    #[error("the slot's previous message was never finished; this message was dropped so the topic can move on")]
    Stalled,
}

/// How long a writer waits for the slot's previous occupant to finish before it gives up.
#[cfg(not(loom))]
const PREDECESSOR_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// A publisher's handle on a ring. Not `Clone`: one entry, one writer. It can move between
/// threads.
///
/// # The solo claim and its handover
///
/// While a topic has one publisher (`Flags::shared` is zero), that publisher claims with a
/// plain store instead of a CAS: record `inflight = s`, light barrier, check `shared`, store
/// `claim = s + 1` (release). A second publisher's attach sets `shared`; its port, before its
/// first claim, runs the heavy barrier and then waits until no other publisher is between
/// recording a claim and storing it (`inflight == claim`). The barrier pair guarantees that a
/// solo claim either saw `shared` (and went on with a CAS) or had recorded its `inflight`
/// where the new port sees it; so the two never claim the same sequence, and the solo
/// publisher learns of the second one without a system call.
pub struct PublisherPort<S, D> {
    ring: Arc<Ring<S, D>>,
    index: usize,
    generation: u64,
    /// Our entry in the publisher table (inside `ring`'s storage, which `ring` keeps alive
    /// and never moves).
    entry: NonNull<PublisherEntry>,
    /// Cached lossless gate: claims below it need no scan.
    limit: u64,
    /// This process registered for the heavy barrier: the hot path needs only the light one.
    light: bool,
    /// Messages committed through this port (mirrored into the entry for stats).
    published: u64,
    /// Free slots a blocked publisher waits for before it resumes (see `room_or_done`).
    resume: u64,
}

/// Spinning rounds during which a blocked publisher holds out for [`PublisherPort`]'s
/// `resume` free slots rather than one.
const RESUME_ROUNDS: u32 = 1024;

/// The state of one wait for room.
#[derive(Debug, Default)]
struct Stalled {
    /// Rounds waited so far.
    rounds: u32,
    /// The wait has yielded or slept: it no longer holds out for a batch.
    spun_out: bool,
}

impl Stalled {
    fn holding_out(&self) -> bool {
        self.rounds > 0 && self.rounds < RESUME_ROUNDS && !self.spun_out
    }
}

// SAFETY: `entry` points into the storage owned by `ring` (an `Arc` of a `Send + Sync` ring)
// and is only used to reach atomics; the port is otherwise made of `Send` data.
unsafe impl<S: Storage, D: Doorbell> Send for PublisherPort<S, D> {}
// SAFETY: as above; `&self` methods only read atomics through `entry`.
unsafe impl<S: Storage, D: Doorbell> Sync for PublisherPort<S, D> {}

impl<S: Storage, D: Doorbell> PublisherPort<S, D> {
    /// A port on publisher entry `index`, which must be active at `generation` (taken with
    /// [`Ring::attach_publisher`], usually by the daemon). On a shared topic it first waits
    /// until no solo claim of another publisher is in flight (see the type's documentation):
    /// a few instructions' time, unless that publisher's process is stopped mid-claim.
    pub fn new(ring: Arc<Ring<S, D>>, index: usize, generation: u64) -> Result<Self, AttachError> {
        if !ring.publisher_held(index, generation) {
            return Err(AttachError::NotHeld(index));
        }
        let entry = NonNull::from(entry_of(&ring, index));
        let light = ring.doorbell.register_light();
        if ring.is_shared() {
            ring.doorbell.heavy_barrier();
            ring.wait_for_solo_claims(index)?;
        }
        let published = entry_of(&ring, index).published.load(Ordering::Relaxed);
        let resume = (ring.capacity / 8).clamp(1, 64);
        Ok(PublisherPort {
            ring,
            index,
            generation,
            entry,
            limit: 0,
            light,
            published,
            resume,
        })
    }

    /// The ring.
    pub fn ring(&self) -> &Arc<Ring<S, D>> {
        &self.ring
    }

    /// The entry index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The entry generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    #[inline]
    fn entry(&self) -> &PublisherEntry {
        // SAFETY: `entry` came from `entry_of` on the ring we hold; the storage keeps it valid
        // and in place for as long as the ring lives.
        unsafe { self.entry.as_ref() }
    }

    /// Claim the next sequence without waiting.
    #[inline]
    fn claim(&mut self) -> Result<u64, SendError> {
        let ring = &*self.ring;
        let control = ring.storage.control();
        // SAFETY: as in `entry`; a copy of the reference that does not borrow `self`.
        let entry = unsafe { self.entry.as_ref() };
        if entry.state.load(Ordering::Relaxed)
            != entry_state::pack(self.generation, entry_state::ACTIVE)
        {
            return Err(SendError::Evicted);
        }
        if control.flags.closed.load(Ordering::Relaxed) != 0 {
            return Err(SendError::Closed);
        }
        loop {
            let s = control.claim.load(Ordering::Relaxed);
            // Stamps hold `sequence << 2`: a claim outside [first, 2^62) is a corrupted counter.
            if s < ring.first_sequence() || s >= stamp::MAX_SEQUENCE {
                return Err(SendError::Corrupted);
            }
            if ring.mode == Mode::Lossless && s >= self.limit {
                self.limit = ring.gate();
                if s >= self.limit {
                    return Err(SendError::Full);
                }
            }
            // Record the claim before making it, so that a supervisor that sees `claim` past
            // `s` (acquire, pairing with the release below) also sees this record.
            entry.inflight.store(s, Ordering::Relaxed);
            // The solo claim: the light barrier pairs with the heavy one a joining publisher
            // runs after `shared` is set (see the type's documentation).
            crate::sync::light_barrier(self.light);
            if control.flags.shared.load(Ordering::Relaxed) == 0 {
                control.claim.store(s + 1, Ordering::Release);
                return Ok(s);
            }
            if control
                .claim
                .compare_exchange_weak(s, s + 1, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(s);
            }
        }
    }

    /// Wait until the slot's previous occupant is finished; on a lossy topic, then mark it
    /// `WRITING` (the seqlock's odd state). Lossless readers never look at a slot that is not
    /// committed, so a lossless writer goes straight from the previous occupant's stamp to
    /// its own commit: one store to the slot's stamp per message.
    #[inline]
    fn begin_write(&self, s: u64) -> Result<(), SendError> {
        let ring = &*self.ring;
        let slot = ring.storage.slot(ring.slot_index(s));
        // Acquire: the previous writer's payload writes happen before ours.
        let st = slot.stamp.load(Ordering::Acquire);
        if !stamp::is_done(st, s - ring.capacity) {
            self.wait_for_predecessor(s)?;
        }
        if ring.mode == Mode::Lossy {
            slot.stamp
                .store(stamp::pack(s, stamp::WRITING), Ordering::Relaxed);
            // Seqlock writer: the WRITING stamp is ordered before every payload store, so a
            // lossy reader that sees any of our payload stores sees the stamp change on its
            // re-check.
            fence(Ordering::Release);
        }
        Ok(())
    }

    /// The slow part of `begin_write`: the slot's previous occupant is still being written
    /// (by a publisher that lapped, or one that died and awaits repair).
    #[cold]
    fn wait_for_predecessor(&self, s: u64) -> Result<(), SendError> {
        let ring = &*self.ring;
        let slot = ring.storage.slot(ring.slot_index(s));
        let previous = s - ring.capacity;
        let mut backoff = Backoff::new();
        #[cfg(not(loom))]
        let mut give_up = None;
        loop {
            // Acquire: the previous writer's payload writes happen before ours.
            let st = slot.stamp.load(Ordering::Acquire);
            if stamp::is_done(st, previous) {
                return Ok(());
            }
            if stamp::seq(st) >= s {
                // A supervisor skipped our claim, believing us dead.
                self.entry().inflight.store(IDLE, Ordering::Release);
                return Err(SendError::Repaired);
            }
            // A live writer finishes within microseconds and a dead one is repaired by the
            // daemon within milliseconds; a slot still unfinished after a second holds a
            // corrupted stamp (or a writer that hangs, or died with no daemon). Skip our own
            // sequence over it, so that neither we nor the subscribers wait forever.
            #[cfg(not(loom))]
            if backoff.is_sleeping() {
                let now = std::time::Instant::now();
                if now >= *give_up.get_or_insert(now + PREDECESSOR_PATIENCE) {
                    let skipped = stamp::pack(s, stamp::SKIPPED);
                    if slot
                        .stamp
                        .compare_exchange(st, skipped, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        self.entry().inflight.store(IDLE, Ordering::Release);
                        ring.ring_bell(&ring.storage.control().data);
                        return Err(SendError::Stalled);
                    }
                    continue;
                }
            }
            backoff.snooze();
        }
    }

    /// Claim the next sequence without waiting and make its slot ready to write; a lossless
    /// ring with no free slot counts a stall and is `Full`. The start of both
    /// [`PublisherPort::try_loan`] and [`PublisherPort::try_claim`].
    #[inline]
    fn claim_now(&mut self) -> Result<u64, SendError> {
        let s = match self.claim() {
            Err(SendError::Full) => {
                let flags = &self.ring.storage.control().flags;
                flags.stalls.fetch_add(1, Ordering::Relaxed);
                return Err(SendError::Full);
            }
            other => other?,
        };
        self.begin_write(s)?;
        Ok(s)
    }

    /// Loan the next slot without waiting: `Full` when a lossless ring has no free slot.
    pub fn try_loan(&mut self) -> Result<Loan<'_, S, D>, SendError> {
        let s = self.claim_now()?;
        Ok(Loan {
            port: self,
            seq: s,
            len: 0,
            done: false,
        })
    }

    /// Claim the next sequence without waiting and make its slot ready to write, without
    /// borrowing the port: a [`Claim`] that [`PublisherPort::loan_claim`] turns into a loan.
    /// For callers that must decide whether they got a slot before they lend the port out
    /// (an async loan); `Full` as [`PublisherPort::try_loan`].
    pub fn try_claim(&mut self) -> Result<Claim<S, D>, SendError> {
        let s = self.claim_now()?;
        Ok(Claim {
            ring: self.ring.clone(),
            seq: s,
            publisher: self.index as u32,
            pending: true,
        })
    }

    /// The loan of a sequence this port claimed with [`PublisherPort::try_claim`].
    pub fn loan_claim(&mut self, mut claim: Claim<S, D>) -> Loan<'_, S, D> {
        debug_assert_eq!(
            claim.publisher, self.index as u32,
            "a claim of another port"
        );
        claim.pending = false;
        Loan {
            port: self,
            seq: claim.seq,
            len: 0,
            done: false,
        }
    }

    /// Whether a claim would go ahead without waiting: always on a lossy ring; on a lossless
    /// one when the cached gate (refreshed once it is reached) leaves room, or when the port
    /// can no longer claim at all (closed, evicted: the claim reports it). Claims nothing.
    /// Lets a caller skip its waiting machinery on the common path.
    #[inline]
    pub fn has_room(&mut self) -> bool {
        if self.ring.mode != Mode::Lossless {
            return true;
        }
        let s = self.ring.storage.control().claim.load(Ordering::Relaxed);
        s < self.limit || self.room_or_done(&Stalled::default())
    }

    /// Wait with `strategy`, for at most `timeout`, until a lossless ring has room for a claim
    /// (or the port can no longer claim: closed, evicted); `Ok` at once on a lossy ring. It
    /// claims nothing: loan next. Lets a caller wait in slices and look at other things (a
    /// restarted daemon) between them.
    pub fn wait_space(
        &mut self,
        strategy: WaitStrategy,
        timeout: Option<Duration>,
    ) -> Result<(), SendError> {
        if self.ring.mode != Mode::Lossless {
            return Ok(());
        }
        let mut waiter = Waiter::new(strategy, timeout);
        let mut stalled = Stalled::default();
        loop {
            let s = self.ring.storage.control().claim.load(Ordering::Relaxed);
            if (stalled.rounds == 0 && s < self.limit) || self.room_or_done(&stalled) {
                return Ok(());
            }
            if stalled.rounds == 0 {
                let flags = &self.ring.storage.control().flags;
                flags.stalls.fetch_add(1, Ordering::Relaxed);
            }
            self.pause(&mut waiter, &mut stalled)?;
        }
    }

    /// Whether a publisher waiting for room (`stalled`) may go on: the topic is closed or the
    /// port evicted (the claim reports it), or the gate shows room. While the wait is still
    /// spinning, and for at most [`RESUME_ROUNDS`] rounds, "room" means `resume` free slots,
    /// not one: resuming on the first slot a subscriber frees makes the two run in lockstep,
    /// each message a round trip of cache lines between their cores, where waiting for a
    /// batch lets both stream. After that, or once the wait yields or sleeps, one free slot is
    /// enough, so a slow or stopped subscriber never keeps a freed slot from a publisher.
    fn room_or_done(&mut self, stalled: &Stalled) -> bool {
        let ring = &*self.ring;
        let control = ring.storage.control();
        if control.flags.closed.load(Ordering::Relaxed) != 0
            || !ring.publisher_held(self.index, self.generation)
        {
            return true;
        }
        let s = control.claim.load(Ordering::Relaxed);
        self.limit = ring.gate();
        let want = if stalled.holding_out() {
            self.resume
        } else {
            1
        };
        self.limit.saturating_sub(s) >= want
    }

    /// One round of waiting for room with `waiter`; `Timeout` when it is over.
    fn pause(&self, waiter: &mut Waiter, stalled: &mut Stalled) -> Result<(), SendError> {
        stalled.rounds = stalled.rounds.saturating_add(1);
        match waiter.step() {
            None => return Err(SendError::Timeout),
            Some(Step::Spin) => crate::sync::spin_hint(),
            Some(Step::Yield) => {
                stalled.spun_out = true;
                crate::sync::yield_now();
            }
            Some(Step::Park) => {
                stalled.spun_out = true;
                let ring = &*self.ring;
                let control = ring.storage.control();
                let timeout = waiter.park_timeout();
                ring.sleep_on(&control.space, timeout, || {
                    control.claim.load(Ordering::Relaxed) < ring.gate()
                        || control.flags.closed.load(Ordering::Relaxed) != 0
                });
                // The doorbell's owner wants the waiter back (see `Doorbell::interrupted`).
                if ring.doorbell.interrupted() {
                    return Err(SendError::Timeout);
                }
            }
        }
        Ok(())
    }

    /// Loan the next slot, waiting for space with `strategy` for at most `timeout`.
    pub fn loan(
        &mut self,
        strategy: WaitStrategy,
        timeout: Option<Duration>,
    ) -> Result<Loan<'_, S, D>, SendError> {
        let mut waiter = Waiter::new(strategy, timeout);
        let mut stalled = Stalled::default();
        let s = loop {
            if stalled.rounds == 0 || self.room_or_done(&stalled) {
                match self.claim() {
                    Ok(s) => break s,
                    Err(SendError::Full) => {
                        if stalled.rounds == 0 {
                            let flags = &self.ring.storage.control().flags;
                            flags.stalls.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            self.pause(&mut waiter, &mut stalled)?;
        };
        self.begin_write(s)?;
        Ok(Loan {
            port: self,
            seq: s,
            len: 0,
            done: false,
        })
    }

    /// Copy `bytes` into the next slot and commit, without waiting.
    pub fn try_send(&mut self, bytes: &[u8]) -> Result<u64, SendError> {
        self.check_len(bytes.len())?;
        let mut loan = self.try_loan()?;
        loan.write(bytes)?;
        Ok(loan.commit())
    }

    /// Copy `bytes` into the next slot and commit, waiting for space as `strategy` says.
    pub fn send(
        &mut self,
        bytes: &[u8],
        strategy: WaitStrategy,
        timeout: Option<Duration>,
    ) -> Result<u64, SendError> {
        self.check_len(bytes.len())?;
        let mut loan = self.loan(strategy, timeout)?;
        loan.write(bytes)?;
        Ok(loan.commit())
    }

    fn check_len(&self, len: usize) -> Result<(), SendError> {
        if len > self.ring.slot_size {
            return Err(SendError::TooLarge {
                len,
                max: self.ring.slot_size,
            });
        }
        Ok(())
    }

    /// Copy each message of `msgs` into the next slot and commit it, without waiting, and
    /// wake sleeping subscribers once for the whole batch. Returns how many were published:
    /// all of them, or fewer when a lossless ring fills up (then the rest can be sent later).
    /// Every length is checked before anything is published (`TooLarge` publishes nothing);
    /// an error on the first message is returned as such.
    pub fn try_send_many(&mut self, msgs: &[&[u8]]) -> Result<usize, SendError> {
        for m in msgs {
            self.check_len(m.len())?;
        }
        let mut sent = 0;
        for m in msgs {
            let claimed = match self.claim() {
                Err(SendError::Full) => {
                    let flags = &self.ring.storage.control().flags;
                    flags.stalls.fetch_add(1, Ordering::Relaxed);
                    Err(SendError::Full)
                }
                other => other,
            }
            .and_then(|s| self.begin_write(s).map(|()| s));
            let s = match claimed {
                Ok(s) => s,
                Err(e) if sent == 0 => return Err(e),
                Err(_) => break,
            };
            self.write_slot(s, m);
            self.commit_slot(s, m.len(), stamp::COMMITTED);
            sent += 1;
        }
        if sent > 0 {
            let ring = &*self.ring;
            ring.ring_bell_light(&ring.storage.control().data, self.light);
        }
        Ok(sent)
    }

    /// Copy `bytes` (checked against the slot size) into the slot of `s`, which we own.
    fn write_slot(&mut self, s: u64, bytes: &[u8]) {
        let ring = &*self.ring;
        let index = ring.slot_index(s);
        if ring.mode == Mode::Lossy {
            // SAFETY: lossy mode, which reads and writes payloads only through atomic words
            // (`payload_mut` and `payload` refuse lossy topics).
            let words = unsafe { ring.storage.payload_words(index) };
            super::words::store(words, bytes);
        } else {
            // SAFETY: lossless mode, and we own the claim on `s` (see `Loan::payload_mut`); the
            // view ends within this call.
            let mut slot = unsafe { ring.storage.payload_mut(index) };
            slot[..bytes.len()].copy_from_slice(bytes);
        }
    }

    #[inline]
    fn finish(&mut self, s: u64, len: usize, state: u64) {
        self.commit_slot(s, len, state);
        let ring = &*self.ring;
        ring.ring_bell_light(&ring.storage.control().data, self.light);
    }

    /// Finish sequence `s` in state `state` (committed or skipped) without waking anyone; the
    /// caller rings the data bell afterwards.
    ///
    /// The entry's `inflight` keeps `s` (a supervisor tells a finished claim by its slot), and
    /// the commit count is a plain store of the port's own count: no read-modify-write of
    /// shared memory besides the slot.
    #[inline]
    fn commit_slot(&mut self, s: u64, len: usize, state: u64) {
        let ring = &*self.ring;
        let slot = ring.storage.slot(ring.slot_index(s));
        slot.len.store(len as u32, Ordering::Relaxed);
        slot.publisher.store(self.index as u32, Ordering::Relaxed);
        // Release: the payload and the length happen before any read that sees the stamp.
        slot.stamp.store(stamp::pack(s, state), Ordering::Release);
        if state == stamp::COMMITTED {
            self.published = self.published.wrapping_add(1);
            self.entry()
                .published
                .store(self.published, Ordering::Relaxed);
        }
    }

    /// Release the entry (the port must hold no loan, which the borrow checker ensures).
    pub fn detach(self) -> Result<(), AttachError> {
        self.ring.release_publisher(self.index, self.generation)
    }
}

fn entry_of<S: Storage, D: Doorbell>(ring: &Ring<S, D>, index: usize) -> &PublisherEntry {
    // `PublisherPort::new` checked that the index is inside the table; tables never shrink.
    match ring.storage.publisher(index) {
        Some(e) => e,
        None => unreachable!("publisher index checked in PublisherPort::new"),
    }
}

/// A sequence claimed by [`PublisherPort::try_claim`], its slot ready to be written; turn it
/// into a [`Loan`] with [`PublisherPort::loan_claim`]. Dropped instead, it marks the sequence
/// skipped (as an unsent loan does), so subscribers never wait for it.
#[must_use = "a claim holds a sequence: loan it, or dropping it skips the sequence"]
pub struct Claim<S: Storage, D: Doorbell> {
    ring: Arc<Ring<S, D>>,
    seq: u64,
    publisher: u32,
    pending: bool,
}

impl<S: Storage, D: Doorbell> Drop for Claim<S, D> {
    fn drop(&mut self) {
        if self.pending {
            let ring = &*self.ring;
            let slot = ring.storage.slot(ring.slot_index(self.seq));
            slot.len.store(0, Ordering::Relaxed);
            slot.publisher.store(self.publisher, Ordering::Relaxed);
            slot.stamp
                .store(stamp::pack(self.seq, stamp::SKIPPED), Ordering::Release);
            ring.ring_bell(&ring.storage.control().data);
        }
    }
}

/// A claimed slot being written in place. [`Loan::commit`] publishes it; dropping it without
/// committing marks the sequence skipped, so subscribers never wait for it.
pub struct Loan<'a, S: Storage, D: Doorbell> {
    port: &'a mut PublisherPort<S, D>,
    seq: u64,
    len: usize,
    done: bool,
}

impl<S: Storage, D: Doorbell> Loan<'_, S, D> {
    /// The sequence this loan will publish as (counted from 0 for the first message).
    pub fn sequence(&self) -> u64 {
        self.seq.saturating_sub(self.port.ring.first_sequence())
    }

    /// The topic's delivery mode.
    pub fn mode(&self) -> Mode {
        self.port.ring.mode
    }

    /// The whole slot to write in place (lossless topics only: lossy topics can be read while
    /// being written, so they are written with [`Loan::write`], word by word, atomically).
    pub fn payload_mut(&mut self) -> Option<S::PayloadMut<'_>> {
        if self.port.ring.mode != Mode::Lossless {
            return None;
        }
        let ring = &*self.port.ring;
        // SAFETY: lossless mode. We own the claim on `seq`; `begin_write` saw the previous
        // occupant finished (acquire), and the gate saw every active cursor past it (acquire),
        // so no one reads or writes this payload until we commit. The view is tied to `&mut
        // self`, so it cannot outlive the loan.
        Some(unsafe { ring.storage.payload_mut(ring.slot_index(self.seq)) })
    }

    /// A shared view of the whole slot (lossless topics only), for reading back what was
    /// written.
    pub fn payload(&self) -> Option<S::Payload<'_>> {
        if self.port.ring.mode != Mode::Lossless {
            return None;
        }
        let ring = &*self.port.ring;
        // SAFETY: as in `payload_mut`: we own the slot until commit; this view is tied to
        // `&self`, so no exclusive view can coexist with it.
        Some(unsafe {
            ring.storage
                .payload(ring.slot_index(self.seq), ring.slot_size)
        })
    }

    /// The topic's slot size: the largest message.
    pub fn slot_size(&self) -> usize {
        self.port.ring.slot_size
    }

    /// The message length that `commit` will publish.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the message length is zero.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Set the length of the message to commit (after writing through `payload_mut`).
    pub fn set_len(&mut self, len: usize) -> Result<(), SendError> {
        if len > self.port.ring.slot_size {
            return Err(SendError::TooLarge {
                len,
                max: self.port.ring.slot_size,
            });
        }
        self.len = len;
        Ok(())
    }

    /// Copy `bytes` into the slot and set the length (works in both modes; in lossy mode the
    /// copy is made of atomic word stores).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.set_len(bytes.len())?;
        self.port.write_slot(self.seq, bytes);
        Ok(())
    }

    /// Publish the message; returns its sequence (counted from 0).
    pub fn commit(mut self) -> u64 {
        self.done = true;
        let seq = self.sequence();
        self.port.finish(self.seq, self.len, stamp::COMMITTED);
        seq
    }
}

impl<S: Storage, D: Doorbell> Drop for Loan<'_, S, D> {
    fn drop(&mut self) {
        if !self.done {
            self.port.finish(self.seq, 0, stamp::SKIPPED);
        }
    }
}
