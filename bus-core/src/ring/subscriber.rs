//! The subscriber side: find the next message, read it in place (lossless) or as a validated
//! copy (lossy), release it.

use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use super::{stamp, AttachError, Ring};
use crate::doorbell::Doorbell;
use crate::entries::{entry_state, SubscriberEntry};
use crate::layout::Mode;
use crate::storage::Storage;
use crate::sync::{fence, Ordering};
use crate::wait::{Step, WaitStrategy, Waiter};

/// Why no message was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RecvError {
    /// Nothing new yet.
    #[error("no message yet")]
    Empty,
    /// Nothing arrived before the timeout.
    #[error("timed out waiting for a message")]
    Timeout,
    /// Lossy topic: this subscriber fell behind and `n` messages were overwritten before it
    /// read them. The next receive returns the oldest message still present.
    #[error("fell behind: {0} messages were overwritten before they were read")]
    Lagged(u64),
    /// The topic is closed and every message has been read.
    #[error("the topic is closed and drained")]
    Closed,
    /// This subscriber was detached (it stalled a lossless topic for too long, or the topic
    /// was deleted). Attach again to resume at the newest message.
    #[error("this subscriber was evicted from the topic; attach a new one")]
    Evicted,
    /// The caller's buffer is smaller than the message.
    #[error("the message is {needed} bytes, larger than the buffer")]
    BufferTooSmall {
        /// The message length.
        needed: usize,
    },
    /// Zero-copy samples are for lossless topics; use `try_recv_into` on lossy ones.
    #[error("zero-copy samples are only available on lossless topics; copy with recv_into")]
    WrongMode,
    /// The [`Ready`] ticket was issued by another port (of this ring or another one): a ticket
    /// can only be redeemed by the port whose [`SubscriberPort::next_ready`] issued it.
    #[error("this ticket was issued by another subscriber port")]
    ForeignTicket,
}

/// A message copied out of the ring (see [`SubscriberPort::try_recv_copy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The message's sequence (counted from 0 for the topic's first message).
    pub sequence: u64,
    /// Its length in bytes.
    pub len: usize,
    /// The publisher entry that wrote it.
    pub publisher: u32,
}

// SAFETY: `entry` points into the storage owned by `ring` (an `Arc` of a `Send + Sync` ring)
// and is only used to reach atomics; the port is otherwise made of `Send` data.
unsafe impl<S: Storage, D: Doorbell> Send for SubscriberPort<S, D> {}
// SAFETY: as above; `&self` methods only read atomics through `entry`.
unsafe impl<S: Storage, D: Doorbell> Sync for SubscriberPort<S, D> {}

/// A message ready to be read: found by [`SubscriberPort::next_ready`], read by
/// [`SubscriberPort::take`] (in place) or [`SubscriberPort::take_copy`], which consume it. It
/// borrows nothing, so a caller can look for a message, wait, look again, and take the one it
/// found without polling the ring twice.
///
/// A ticket is good only for the port that issued it, and only until that port moves on. This
/// is checked when it is redeemed, not by the borrow checker: a ticket that borrowed its port
/// could not be found in one branch of a loop and redeemed for the port's whole lifetime in
/// another (the async futures and the client's receive loop do exactly that). The ticket
/// therefore carries its port's identity (a number no other port of the process shares) and
/// names its message by sequence only: the slot is recomputed from the sequence by this
/// ring's mask and the length checked against this ring's slot size, so no ticket can point
/// outside the ring that redeems it. Another port's ticket is [`RecvError::ForeignTicket`].
///
/// It is neither `Copy` nor `Clone`: redeeming it uses it up.
#[derive(Debug, PartialEq, Eq)]
pub struct Ready {
    seq: u64,
    len: usize,
    publisher: u32,
    /// The [`SubscriberPort::id`] of the port that issued the ticket.
    port: u64,
}

impl Ready {
    /// The message's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Port identities for tickets: every [`SubscriberPort`] of the process takes the next one.
/// (A plain std atomic, also under loom: it only hands out distinct numbers and orders
/// nothing.)
static NEXT_PORT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A subscriber's handle on a ring. It can move between threads.
pub struct SubscriberPort<S, D> {
    ring: Arc<Ring<S, D>>,
    /// This port's identity, unique in the process: the tickets it issues carry it.
    id: u64,
    index: usize,
    generation: u64,
    /// Our entry in the subscriber table (inside `ring`'s storage, which `ring` keeps alive
    /// and never moves).
    entry: NonNull<SubscriberEntry>,
    /// This process registered for the heavy barrier: releases need only the light one.
    light: bool,
    /// Next sequence to read (the shared cursor holds the same value once released).
    next: u64,
    lagged: u64,
    corrupt: u64,
}

impl<S: Storage, D: Doorbell> SubscriberPort<S, D> {
    /// A port on subscriber entry `index`, which must be active at `generation` (taken with
    /// [`Ring::attach_subscriber`], usually by the daemon).
    pub fn new(ring: Arc<Ring<S, D>>, index: usize, generation: u64) -> Result<Self, AttachError> {
        let entry = ring
            .storage
            .subscriber(index)
            .ok_or(AttachError::NoSuchEntry(index))?;
        if !ring.subscriber_held(index, generation) {
            return Err(AttachError::NotHeld(index));
        }
        let next = entry.cursor.load(Ordering::Acquire);
        let entry = NonNull::from(entry);
        let light = ring.doorbell.register_light();
        let id = NEXT_PORT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(SubscriberPort {
            ring,
            id,
            index,
            generation,
            entry,
            light,
            next,
            lagged: 0,
            corrupt: 0,
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

    /// Messages lost to lag so far.
    pub fn lagged(&self) -> u64 {
        self.lagged
    }

    /// Messages skipped because their length was corrupted or not accepted (see
    /// [`SubscriberPort::recv_where`]).
    pub fn corrupt(&self) -> u64 {
        self.corrupt
    }

    /// Messages published that this subscriber has not read yet.
    pub fn backlog(&self) -> u64 {
        let claim = self.ring.storage.control().claim.load(Ordering::Relaxed);
        claim.saturating_sub(self.next)
    }

    #[inline]
    fn entry(&self) -> &SubscriberEntry {
        // SAFETY: `entry` came from the storage of the ring we hold (index checked in `new`),
        // which keeps it valid and in place for as long as the ring lives.
        unsafe { self.entry.as_ref() }
    }

    fn held(&self) -> bool {
        self.entry().state.load(Ordering::Acquire)
            == entry_state::pack(self.generation, entry_state::ACTIVE)
    }

    /// Move the cursor to `next`, releasing every slot below it. A plain release store and,
    /// on lossless topics, the light bell (no fence): a publisher asleep on a full ring ran
    /// the heavy barrier before its last look at the cursors.
    #[inline]
    fn advance(&mut self, next: u64) {
        self.next = next;
        // Release: our reads of the slots below `next` happen before a publisher's writes.
        self.entry().cursor.store(next, Ordering::Release);
        if self.ring.mode == Mode::Lossless {
            self.ring
                .ring_bell_light(&self.ring.storage.control().space, self.light);
        }
    }

    /// We fell behind at `s`: skip to the oldest message that may still be present.
    fn lag(&mut self, s: u64) -> RecvError {
        let claim = self.ring.storage.control().claim.load(Ordering::Acquire);
        let next = claim
            .saturating_sub(self.ring.capacity)
            .max(s.saturating_add(1));
        let n = next - s;
        self.lagged = self.lagged.saturating_add(n);
        self.entry().lagged.store(self.lagged, Ordering::Relaxed);
        self.advance(next);
        RecvError::Lagged(n)
    }

    /// Find the next readable message, skipping skipped and corrupted slots.
    fn poll(&mut self) -> Result<Ready, RecvError> {
        loop {
            if !self.held() {
                return Err(RecvError::Evicted);
            }
            let ring = &*self.ring;
            let s = self.next;
            if s >= stamp::MAX_SEQUENCE {
                // Only a corrupted claim counter leads here; no message can carry `s`.
                return Err(RecvError::Empty);
            }
            let slot_index = ring.slot_index(s);
            let slot = ring.storage.slot(slot_index);
            // Acquire: the payload and length written before the commit are visible.
            let st = slot.stamp.load(Ordering::Acquire);
            if st == stamp::pack(s, stamp::COMMITTED) {
                let len = slot.len.load(Ordering::Relaxed) as usize;
                let publisher = slot.publisher.load(Ordering::Relaxed);
                if len > ring.slot_size {
                    if slot.stamp.load(Ordering::Acquire) != st {
                        return Err(self.lag(s));
                    }
                    self.corrupt = self.corrupt.saturating_add(1);
                    self.advance(s.saturating_add(1));
                    continue;
                }
                return Ok(Ready {
                    seq: s,
                    len,
                    publisher,
                    port: self.id,
                });
            }
            if st == stamp::pack(s, stamp::SKIPPED) {
                self.advance(s.saturating_add(1));
                continue;
            }
            if stamp::seq(st) > s {
                return Err(self.lag(s));
            }
            if ring.is_closed() {
                // Re-check once: a commit may have landed just before the close.
                if slot.stamp.load(Ordering::Acquire) == st {
                    return Err(RecvError::Closed);
                }
                continue;
            }
            return Err(RecvError::Empty);
        }
    }

    /// Whether `s` has moved on (committed, skipped, lapped) or waiting is pointless.
    fn can_proceed(&self) -> bool {
        let ring = &*self.ring;
        let s = self.next;
        let st = ring
            .storage
            .slot(ring.slot_index(s))
            .stamp
            .load(Ordering::Acquire);
        stamp::seq(st) > s
            || st == stamp::pack(s, stamp::COMMITTED)
            || st == stamp::pack(s, stamp::SKIPPED)
            || ring.is_closed()
            || !self.held()
    }

    /// Wait with `waiter` until the next message may be ready; `false` on timeout.
    fn wait(&mut self, waiter: &mut Waiter) -> bool {
        match waiter.step() {
            None => false,
            Some(Step::Spin) => {
                crate::sync::spin_hint();
                true
            }
            Some(Step::Yield) => {
                crate::sync::yield_now();
                true
            }
            Some(Step::Park) => {
                let timeout = waiter.park_timeout();
                let ring = &*self.ring;
                ring.sleep_on(&ring.storage.control().data, timeout, || self.can_proceed());
                // The doorbell's owner wants the waiter back (see `Doorbell::interrupted`).
                !ring.doorbell.interrupted()
            }
        }
    }

    /// Receive the next message in place, without waiting (lossless topics).
    pub fn try_recv(&mut self) -> Result<Sample<'_, S, D>, RecvError> {
        self.recv_where(WaitStrategy::BusyPoll, None, false, |_| true)
    }

    /// Receive the next message in place, waiting as `strategy` says for at most `timeout`
    /// (lossless topics).
    pub fn recv(
        &mut self,
        strategy: WaitStrategy,
        timeout: Option<Duration>,
    ) -> Result<Sample<'_, S, D>, RecvError> {
        self.recv_where(strategy, timeout, true, |_| true)
    }

    /// Receive the next message in place whose length `accept`s (lossless topics), waiting as
    /// `strategy` says when `wait` is true. A message of another length (a misbehaving
    /// publisher, for a typed topic) is skipped and counted in [`SubscriberPort::corrupt`], in
    /// the same pass over the ring.
    pub fn recv_where(
        &mut self,
        strategy: WaitStrategy,
        timeout: Option<Duration>,
        wait: bool,
        accept: impl Fn(usize) -> bool,
    ) -> Result<Sample<'_, S, D>, RecvError> {
        if self.ring.mode != Mode::Lossless {
            return Err(RecvError::WrongMode);
        }
        let mut waiter = Waiter::new(strategy, timeout);
        loop {
            match self.poll() {
                Ok(r) if accept(r.len) => {
                    return Ok(Sample {
                        port: self,
                        ready: r,
                    })
                }
                Ok(r) => {
                    self.corrupt = self.corrupt.saturating_add(1);
                    self.advance(r.seq.saturating_add(1));
                }
                Err(RecvError::Empty) if wait => {
                    if !self.wait(&mut waiter) {
                        return Err(RecvError::Timeout);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Read every message that is ready, up to `max`, in place and in order, without waiting
    /// (lossless topics): `f(sequence, bytes)` sees each one, and the whole batch is released
    /// with one cursor store when the call returns. Returns how many `f` saw; `Empty` (or
    /// `Closed`, `Evicted`) when it saw none. Skipped and corrupted slots are passed over as
    /// in `try_recv`.
    pub fn try_recv_many(
        &mut self,
        max: usize,
        mut f: impl FnMut(u64, &[u8]),
    ) -> Result<usize, RecvError> {
        if self.ring.mode != Mode::Lossless {
            return Err(RecvError::WrongMode);
        }
        let first = self.ring.first_sequence();
        let start = self.next;
        let mut seen = 0;
        let result = loop {
            if seen == max {
                break Ok(seen);
            }
            match self.poll() {
                Ok(r) => {
                    let ring = &*self.ring;
                    // SAFETY: lossless mode; message `r.seq` is committed (acquire in `poll`)
                    // and the shared cursor, at most `r.seq` until the store below, keeps every
                    // publisher off the slot. The view ends before that store.
                    let payload = unsafe { ring.storage.payload(ring.slot_index(r.seq), r.len) };
                    f(r.seq.saturating_sub(first), &payload);
                    drop(payload);
                    // Released (stored) once, below.
                    self.next = r.seq.saturating_add(1);
                    seen += 1;
                }
                Err(e) if seen == 0 => break Err(e),
                Err(_) => break Ok(seen),
            }
        };
        if self.next != start {
            self.advance(self.next);
        }
        result
    }

    /// The next message whose length `accept`s, without taking it and without waiting: a
    /// [`Ready`] ticket for [`SubscriberPort::take`] or [`SubscriberPort::take_copy`]. Messages
    /// of another length are skipped and counted in [`SubscriberPort::corrupt`].
    pub fn next_ready(&mut self, accept: impl Fn(usize) -> bool) -> Result<Ready, RecvError> {
        loop {
            let r = self.poll()?;
            if accept(r.len) {
                return Ok(r);
            }
            self.corrupt = self.corrupt.saturating_add(1);
            self.advance(r.seq.saturating_add(1));
        }
    }

    /// This port's identity: a number no other subscriber port of the process has, carried
    /// by the [`Ready`] tickets it issues.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Check that `ready` is this port's ticket for its next message: `ForeignTicket` if
    /// another port issued it, `Empty` if this port moved on since.
    fn redeemable(&self, ready: &Ready) -> Result<(), RecvError> {
        if ready.port != self.id {
            return Err(RecvError::ForeignTicket);
        }
        if ready.seq != self.next {
            return Err(RecvError::Empty);
        }
        // `poll` only issues lengths up to the slot size; checked again so that a ticket can
        // never name more than this ring's slots hold, whatever its history.
        if ready.len > self.ring.slot_size {
            return Err(RecvError::ForeignTicket);
        }
        Ok(())
    }

    /// Take the message `ready` names, in place (lossless topics): `Empty` if the ticket is not
    /// for this port's next message (the port moved on since it was issued), `ForeignTicket`
    /// if another port issued it.
    pub fn take(&mut self, ready: Ready) -> Result<Sample<'_, S, D>, RecvError> {
        if self.ring.mode != Mode::Lossless {
            return Err(RecvError::WrongMode);
        }
        self.redeemable(&ready)?;
        // The ticket was issued by this port's `poll` for `self.next`, which only this port
        // moves (and only forward): the message is committed and our cursor still protects it.
        Ok(Sample { port: self, ready })
    }

    /// Copy the message `ready` names into `buf` (both modes; validated on lossy topics):
    /// `Empty` if the port moved on since it issued the ticket, `ForeignTicket` if another port
    /// issued it.
    pub fn take_copy(&mut self, ready: Ready, buf: &mut [u8]) -> Result<Received, RecvError> {
        self.redeemable(&ready)?;
        let publisher = ready.publisher;
        self.copy_out(ready, buf).map(|(sequence, len)| Received {
            sequence,
            len,
            publisher,
        })
    }

    /// Wait as `recv` does (or not at all, with `wait == false`) until a message is ready,
    /// without consuming it; returns its length.
    pub fn peek(
        &mut self,
        strategy: WaitStrategy,
        timeout: Option<Duration>,
        wait: bool,
    ) -> Result<usize, RecvError> {
        let mut waiter = Waiter::new(strategy, timeout);
        loop {
            match self.poll() {
                Ok(r) => return Ok(r.len),
                Err(RecvError::Empty) if wait => {
                    if !self.wait(&mut waiter) {
                        return Err(RecvError::Timeout);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Copy the next message into `buf` without waiting (both modes); returns its
    /// `(sequence, length)`.
    pub fn try_recv_into(&mut self, buf: &mut [u8]) -> Result<(u64, usize), RecvError> {
        self.try_recv_copy(buf).map(|r| (r.sequence, r.len))
    }

    /// [`SubscriberPort::try_recv_into`], also telling which publisher entry wrote the message.
    pub fn try_recv_copy(&mut self, buf: &mut [u8]) -> Result<Received, RecvError> {
        let r = self.poll()?;
        let publisher = r.publisher;
        self.copy_out(r, buf).map(|(sequence, len)| Received {
            sequence,
            len,
            publisher,
        })
    }

    /// Copy the next message into `buf`, waiting as `strategy` says (both modes).
    pub fn recv_into(
        &mut self,
        buf: &mut [u8],
        strategy: WaitStrategy,
        timeout: Option<Duration>,
    ) -> Result<(u64, usize), RecvError> {
        let mut waiter = Waiter::new(strategy, timeout);
        loop {
            match self.poll() {
                Ok(r) => return self.copy_out(r, buf),
                Err(RecvError::Empty) => {
                    if !self.wait(&mut waiter) {
                        return Err(RecvError::Timeout);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn copy_out(&mut self, r: Ready, buf: &mut [u8]) -> Result<(u64, usize), RecvError> {
        if buf.len() < r.len {
            return Err(RecvError::BufferTooSmall { needed: r.len });
        }
        let ring = &*self.ring;
        let first = ring.first_sequence();
        let slot = ring.slot_index(r.seq);
        match ring.mode {
            Mode::Lossless => {
                // SAFETY: lossless mode; message `r.seq` is committed (acquire in `poll`) and
                // our cursor, still at `r.seq`, keeps every publisher off the slot until
                // `advance` below.
                let payload = unsafe { ring.storage.payload(slot, r.len) };
                buf[..r.len].copy_from_slice(&payload);
                drop(payload);
            }
            Mode::Lossy => {
                // SAFETY: lossy mode, which reads and writes payloads only through atomic
                // words and never makes a plain view of a payload.
                let words = unsafe { ring.storage.payload_words(slot) };
                super::words::load(words, &mut buf[..r.len]);
                // Seqlock reader: our payload loads happen before the re-check below; if any of
                // them saw a newer writer's store, the re-check sees its WRITING stamp.
                fence(Ordering::Acquire);
                let now = ring.storage.slot(slot).stamp.load(Ordering::Relaxed);
                if now != stamp::pack(r.seq, stamp::COMMITTED) {
                    return Err(self.lag(r.seq));
                }
            }
        }
        self.advance(r.seq.saturating_add(1));
        // A cursor below the first sequence comes only from a corrupted claim counter.
        Ok((r.seq.saturating_sub(first), r.len))
    }

    /// Release the entry: the cursor stops protecting slots.
    pub fn detach(self) -> Result<(), AttachError> {
        self.ring.release_subscriber(self.index, self.generation)
    }
}

/// A message read in place, straight from the slot (lossless topics). The publishers cannot
/// overwrite the slot while the sample lives; dropping it releases the slot.
pub struct Sample<'a, S: Storage, D: Doorbell> {
    port: &'a mut SubscriberPort<S, D>,
    ready: Ready,
}

impl<S: Storage, D: Doorbell> Sample<'_, S, D> {
    /// The message's sequence (counted from 0 for the topic's first message).
    pub fn sequence(&self) -> u64 {
        self.ready
            .seq
            .saturating_sub(self.port.ring.first_sequence())
    }

    /// The message length in bytes.
    pub fn len(&self) -> usize {
        self.ready.len
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.ready.len == 0
    }

    /// The publisher entry that wrote the message.
    pub fn publisher(&self) -> u32 {
        self.ready.publisher
    }

    /// The payload, in place.
    pub fn bytes(&self) -> S::Payload<'_> {
        let ring = &*self.port.ring;
        // SAFETY: lossless mode (checked when the sample was made); the message is committed
        // (acquire in `poll`) and our cursor stays at its sequence until the sample drops, so
        // no publisher writes the slot while this view (tied to `&self`) lives.
        unsafe {
            ring.storage
                .payload(ring.slot_index(self.ready.seq), self.ready.len)
        }
    }
}

impl<S: Storage, D: Doorbell> Drop for Sample<'_, S, D> {
    fn drop(&mut self) {
        let next = self.ready.seq.saturating_add(1);
        self.port.advance(next);
    }
}
