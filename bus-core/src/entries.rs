//! The atomics that live in shared memory: the control block, the publisher and subscriber
//! tables, and the per-slot header. Offsets are in [`crate::layout`]; the compile-time checks
//! at the bottom keep these types and those offsets in agreement.

use crate::sync::{AtomicU32, AtomicU64};

/// One 128-byte line: two cache lines, so adjacent-line prefetch cannot couple neighbours.
#[derive(Debug, Default)]
#[repr(C, align(128))]
pub struct Line<T>(pub T);

impl<T> std::ops::Deref for Line<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A doorbell. `seq` is the futex word, bumped by whoever rings while someone sleeps on it;
/// `waiters` counts the threads asleep (or about to be) on it. `armed` has one bit per wake
/// slot ([`WakeEntry`]) whose waiter sleeps on its own descriptor (an eventfd) instead: the
/// ringer that clears a bit writes that waiter's descriptor. While all three are zero a ringer
/// makes no system call and writes nothing.
#[derive(Debug, Default)]
#[repr(C)]
pub struct Bell {
    /// The futex word. Changes whenever the bell rings while someone sleeps.
    pub seq: AtomicU32,
    /// How many threads are, or are about to be, asleep on `seq`.
    pub waiters: AtomicU32,
    /// Bit `i % 64` of word `i / 64` is set while wake slot `i` waits on this bell.
    pub armed: [AtomicU64; WAKE_WORDS],
}

/// Words of a bell's `armed` bitmap.
pub const WAKE_WORDS: usize = 4;

/// Wake slots per topic: waiters that sleep on a descriptor of their own (an eventfd, for
/// async code and wait sets), as many as one bell's `armed` bits.
pub const WAKE_SLOTS: usize = WAKE_WORDS * 64;

/// Which bell a wake slot waits on.
pub mod wake_bell {
    /// The data bell: a subscriber waits for messages.
    pub const DATA: u32 = 0;
    /// The space bell: a lossless publisher waits for free slots.
    pub const SPACE: u32 = 1;
    /// The presence bell: a port waits for its peer count to change.
    pub const PRESENCE: u32 = 2;
}

/// A wake slot: a waiter that sleeps on its own descriptor. The supervisor (the daemon) hands
/// the slot out with the waiter's descriptor and gives every port of the topic that rings the
/// slot's bell a duplicate on request; the waiter arms and disarms it through the bell's
/// `armed` bit, without a system call.
#[derive(Debug, Default)]
#[repr(C)]
pub struct WakeEntry {
    /// `generation << 2 | tag` (`FREE` or `ACTIVE`, see [`entry_state`]); a new generation
    /// for every waiter, so that a ringer never writes an earlier waiter's descriptor.
    pub state: AtomicU64,
    /// Process id of the waiter (informational).
    pub pid: AtomicU32,
    /// [`wake_bell::DATA`], [`wake_bell::SPACE`] or [`wake_bell::PRESENCE`].
    pub bell: AtomicU32,
}

/// Topic-wide flags and counters.
#[derive(Debug, Default)]
#[repr(C)]
pub struct Flags {
    /// Non-zero once the topic is closed: subscribers drain, then see `Closed`.
    pub closed: AtomicU32,
    /// The incarnation of the daemon that manages the segment. A restarted daemon that adopts
    /// the segment writes its own; a client that sees it change re-attaches to the new daemon.
    /// It shares a line with `closed`, which every publish reads anyway.
    pub epoch: AtomicU32,
    /// Times a lossless publisher found the ring full (stalls).
    pub stalls: AtomicU64,
    /// Non-zero while the topic may have more than one publisher: then every publisher claims
    /// with a CAS. Zero means the one publisher may claim with a plain store (see
    /// `ring::publisher`, the solo claim and its handover). Written only by attaches, which
    /// the supervisor serialises.
    pub shared: AtomicU32,
    /// One past the highest subscriber entry ever made active (a high-water mark; it never
    /// goes down). The lossless gate scans only the entries below it, so a topic's subscriber
    /// table can be large (256 entries) without slowing publishers that use a few. Raised by
    /// attaches (which the supervisor serialises) before the entry turns active.
    pub subscribers_high: AtomicU32,
    /// The presence bell: the supervisor rings it (always bumps `seq` and wakes it, and takes
    /// the `armed` bits) after every change of the tables: an attach, a release, an eviction.
    /// A port waiting for its peer count sleeps on `seq` (see `Ring::presence_seq`); the
    /// publish and receive paths never touch it. It sits in this line because the control
    /// block has no other room; only supervisors and presence waiters write it, rarely.
    pub presence: Bell,
    /// The claim (`Control::claim`) when the last subscriber went away, or [`NOT_QUIET`]
    /// while a subscriber is attached; starts at the first sequence (no subscriber yet).
    /// Written only by the supervisor (`Ring::presence_changed`).
    pub quiet_since: AtomicU64,
    /// Messages published while no subscriber was attached, up to `quiet_since` (the current
    /// quiet stretch, `claim - quiet_since`, is added when it ends). Written only by the
    /// supervisor.
    pub unheard: AtomicU64,
}

/// `Flags::quiet_since` while at least one subscriber is attached.
pub const NOT_QUIET: u64 = u64::MAX;

/// The control block at [`crate::layout::CONTROL_OFFSET`].
///
/// ```text
///  0    claim   u64   next sequence a publisher will claim (publishers write it on every send)
///  128  data    Bell  subscribers sleep here waiting for messages
///  256  space   Bell  lossless publishers sleep here waiting for free slots
///  384  flags   Flags closed, daemon epoch, stalls, shared (more than one publisher),
///                     subscribers' high-water mark (384..408); the presence bell (408..448);
///                     quiet_since, unheard (448..464)
/// ```
#[derive(Debug, Default)]
#[repr(C)]
pub struct Control {
    /// Next sequence number to be claimed. Starts at the capacity (see `ring`).
    pub claim: Line<AtomicU64>,
    /// Doorbell for subscribers waiting for data.
    pub data: Line<Bell>,
    /// Doorbell for publishers waiting for space.
    pub space: Line<Bell>,
    /// Closed flag and counters.
    pub flags: Line<Flags>,
}

/// The state word of a table entry: `generation << 2 | tag`.
pub mod entry_state {
    /// The entry is free.
    pub const FREE: u64 = 0;
    /// The entry is in use by a live publisher or subscriber.
    pub const ACTIVE: u64 = 1;
    /// A subscriber entry a supervisor evicted while its port may still live: publishers ignore
    /// it, and it is not reused until the supervisor reclaims it (once the port is gone), so a
    /// late cursor store of the evicted port never lands in another subscriber's entry.
    pub const EVICTED: u64 = 2;
    /// Mask of the tag bits.
    pub const TAG: u64 = 3;

    /// Pack a generation and a tag.
    #[inline]
    pub const fn pack(generation: u64, tag: u64) -> u64 {
        (generation << 2) | tag
    }
    /// The generation of a state word.
    #[inline]
    pub const fn generation(state: u64) -> u64 {
        state >> 2
    }
    /// The tag of a state word.
    #[inline]
    pub const fn tag(state: u64) -> u64 {
        state & TAG
    }
}

/// A publisher's entry. `inflight` is the sequence this publisher claimed last (or is claiming),
/// [`IDLE`] before its first claim; it is not cleared at commit (a supervisor tells a finished
/// claim from its slot). A supervisor uses it to repair the claim of a publisher that died
/// (see `ring::repair`).
#[derive(Debug, Default)]
#[repr(C, align(128))]
pub struct PublisherEntry {
    /// `generation << 2 | tag`, see [`entry_state`].
    pub state: AtomicU64,
    /// The sequence claimed last or being claimed, or [`IDLE`].
    pub inflight: AtomicU64,
    /// Messages committed by this publisher.
    pub published: AtomicU64,
    /// Process id of the owner (informational).
    pub pid: AtomicU32,
    /// Reserved.
    pub reserved: AtomicU32,
}

/// `inflight` value of a publisher that holds no claim.
pub const IDLE: u64 = u64::MAX;

/// A subscriber's entry: its cursor is the next sequence it will read; every slot at or after
/// the cursor is protected from lossless publishers.
#[derive(Debug, Default)]
#[repr(C, align(128))]
pub struct SubscriberEntry {
    /// `generation << 2 | tag`, see [`entry_state`].
    pub state: AtomicU64,
    /// Next sequence this subscriber will read.
    pub cursor: AtomicU64,
    /// Messages this subscriber lost to lag (lossy mode).
    pub lagged: AtomicU64,
    /// Process id of the owner (informational).
    pub pid: AtomicU32,
    /// Reserved.
    pub reserved: AtomicU32,
}

/// The first 16 bytes of every slot.
#[derive(Debug, Default)]
#[repr(C)]
pub struct SlotHeader {
    /// `sequence << 2 | state`, see `ring::stamp`.
    pub stamp: AtomicU64,
    /// Payload length in bytes.
    pub len: AtomicU32,
    /// Index of the publisher that wrote the slot.
    pub publisher: AtomicU32,
}

#[cfg(not(loom))]
const _: () = {
    use crate::layout::{CONTROL_LEN, ENTRY_LEN, SLOT_HEADER_LEN};
    use std::mem::{align_of, size_of};
    assert!(size_of::<Control>() as u64 == CONTROL_LEN);
    assert!(size_of::<PublisherEntry>() as u64 == ENTRY_LEN);
    assert!(size_of::<SubscriberEntry>() as u64 == ENTRY_LEN);
    assert!(size_of::<SlotHeader>() as u64 == SLOT_HEADER_LEN);
    assert!(size_of::<WakeEntry>() as u64 == crate::layout::WAKE_ENTRY_LEN);
    assert!(size_of::<Bell>() <= 128);
    assert!(size_of::<Flags>() <= 128);
    assert!(std::mem::offset_of!(Flags, presence) == 24);
    assert!(std::mem::offset_of!(Flags, unheard) == 72);
    assert!(align_of::<Control>() == 128);
    assert!(align_of::<SlotHeader>() == 8);
};
