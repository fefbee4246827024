//! Repair of a publisher that died between claim and commit.
//!
//! A publisher records the sequence it claims in its entry (`inflight`) before it makes the
//! claim (a CAS, or a plain store while it is the topic's only publisher), and leaves it there
//! after the commit (a finished claim shows in its slot, case 3 below). When a supervisor (the
//! daemon) learns that a publisher's process is gone, it runs [`Ring::repair_publisher`]:
//!
//! 1. `inflight` idle: nothing was claimed. Release the entry.
//! 2. `claim <= inflight`: the claim CAS never happened. Release the entry.
//! 3. The slot already shows the sequence finished, or a later one: someone committed it.
//! 4. Otherwise the sequence was claimed and is unfinished. If another publisher that is still
//!    alive records the same sequence, it may be the owner (its CAS won, ours lost): try again
//!    later. If the slot's previous occupant is still being written, try again later (marking
//!    now would be overwritten by that writer's commit). Otherwise the dead publisher owns it:
//!    CAS the stamp to `SKIPPED` and ring the data bell; subscribers skip it and go on.
//!
//! Why an alive owner always shows: it stores `inflight = s` before its claim (release), and
//! keeps it until after its commit (until its next claim). We saw `claim > s` (acquire) and an unfinished slot, so the
//! owner's record is visible and still in place when we scan.

use super::{stamp, AttachError, Ring};
use crate::doorbell::Doorbell;
use crate::entries::{entry_state, IDLE};
use crate::storage::Storage;
use crate::sync::Ordering;

/// What [`Ring::repair_publisher`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairOutcome {
    /// The publisher held no unfinished claim; its entry was released.
    Clean,
    /// The publisher's unfinished message (sequence counted from 0) was marked skipped and the
    /// entry released.
    Skipped {
        /// The repaired sequence, counted from 0.
        sequence: u64,
    },
    /// Not decidable yet (a live publisher records the same sequence, or the slot's previous
    /// occupant is still being written). Run the repair again shortly.
    Pending,
}

impl<S: Storage, D: Doorbell> Ring<S, D> {
    /// Repair publisher entry `index` at `generation`, whose process is dead. `is_alive(i, g)`
    /// tells whether another publisher entry belongs to a live process; entries of dead
    /// processes are not waited for (their own repair handles them).
    pub fn repair_publisher(
        &self,
        index: usize,
        generation: u64,
        is_alive: impl Fn(usize, u64) -> bool,
    ) -> Result<RepairOutcome, AttachError> {
        let entry = self
            .storage
            .publisher(index)
            .ok_or(AttachError::NoSuchEntry(index))?;
        if entry.state.load(Ordering::Acquire) != entry_state::pack(generation, entry_state::ACTIVE)
        {
            return Err(AttachError::NotHeld(index));
        }
        let s = entry.inflight.load(Ordering::Acquire);
        let claim = self.storage.control().claim.load(Ordering::Acquire);
        if s == IDLE || claim <= s || s < self.first_sequence() {
            entry.inflight.store(IDLE, Ordering::Relaxed);
            self.release_publisher(index, generation)?;
            return Ok(RepairOutcome::Clean);
        }
        let slot = self.storage.slot(self.slot_index(s));
        loop {
            let st = slot.stamp.load(Ordering::Acquire);
            if stamp::seq(st) > s || stamp::is_done(st, s) {
                entry.inflight.store(IDLE, Ordering::Relaxed);
                self.release_publisher(index, generation)?;
                return Ok(RepairOutcome::Clean);
            }
            let previous_done = stamp::is_done(st, s - self.capacity);
            if !(previous_done || st == stamp::pack(s, stamp::WRITING)) {
                return Ok(RepairOutcome::Pending);
            }
            let g = self.geometry();
            for i in (0..g.max_publishers as usize).filter(|&i| i != index) {
                let Some(other) = self.storage.publisher(i) else {
                    break;
                };
                let state = other.state.load(Ordering::Acquire);
                if entry_state::tag(state) == entry_state::ACTIVE
                    && other.inflight.load(Ordering::Acquire) == s
                    && is_alive(i, entry_state::generation(state))
                {
                    return Ok(RepairOutcome::Pending);
                }
            }
            if slot
                .stamp
                .compare_exchange(
                    st,
                    stamp::pack(s, stamp::SKIPPED),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                break;
            }
        }
        entry.inflight.store(IDLE, Ordering::Relaxed);
        self.release_publisher(index, generation)?;
        self.ring_bell(&self.storage.control().data);
        Ok(RepairOutcome::Skipped {
            sequence: s - self.first_sequence(),
        })
    }
}
