//! Unit and property tests of the ring over heap storage (`RawStorage<HeapRegion>`) and the
//! real futex doorbell. They all run under Miri too (`cargo +nightly miri test -p shmbus-core
//! --lib`; Miri emulates the futex system call), with smaller counts there.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering as StdOrdering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::doorbell::Futex;
use crate::layout::{Layout, TypeInfo};
use crate::storage::{HeapRegion, RawStorage};
use crate::wait::WaitStrategy;

type HeapRing = Ring<RawStorage<HeapRegion>, Futex>;
type Pub = PublisherPort<RawStorage<HeapRegion>, Futex>;
type Sub = SubscriberPort<RawStorage<HeapRegion>, Futex>;

/// Long enough never to fire on a healthy run, short enough to fail a wedged test.
const PATIENCE: Option<Duration> = Some(Duration::from_secs(20));

fn ring_with(
    mode: Mode,
    capacity: u32,
    slot_size: u32,
    publishers: u32,
    subscribers: u32,
) -> Arc<HeapRing> {
    let layout = Layout::compute(&Geometry {
        capacity,
        slot_size,
        mode,
        max_publishers: publishers,
        max_subscribers: subscribers,
        type_info: TypeInfo::bytes(),
    })
    .unwrap();
    let storage =
        RawStorage::create(HeapRegion::zeroed(layout.total_len as usize), &layout).unwrap();
    Arc::new(Ring::new(storage, Futex))
}

fn ring(mode: Mode, capacity: u32) -> Arc<HeapRing> {
    ring_with(mode, capacity, 16, 2, 2)
}

fn publisher(ring: &Arc<HeapRing>) -> Pub {
    let (i, g) = ring.attach_any_publisher(std::process::id()).unwrap();
    PublisherPort::new(ring.clone(), i, g).unwrap()
}

fn subscriber(ring: &Arc<HeapRing>, start: StartAt) -> Sub {
    let (i, g) = ring
        .attach_any_subscriber(std::process::id(), start)
        .unwrap();
    SubscriberPort::new(ring.clone(), i, g).unwrap()
}

/// Receive the next message in place and return `(sequence, bytes)`.
fn take(s: &mut Sub) -> Result<(u64, Vec<u8>), RecvError> {
    let sample = s.try_recv()?;
    Ok((sample.sequence(), sample.bytes().to_vec()))
}

/// Receive the next message by copy and return `(sequence, bytes)`.
fn take_copy(s: &mut Sub) -> Result<(u64, Vec<u8>), RecvError> {
    let mut buf = [0u8; 64];
    let (seq, len) = s.try_recv_into(&mut buf)?;
    Ok((seq, buf[..len].to_vec()))
}

// ---------------------------------------------------------------------------------------------
// Error paths
// ---------------------------------------------------------------------------------------------

#[test]
fn lossless_try_send_is_full_when_every_slot_is_unread_and_counts_a_stall() {
    let ring = ring(Mode::Lossless, 4);
    let mut p = publisher(&ring);
    let mut s = subscriber(&ring, StartAt::Latest);
    for n in 0..4u64 {
        assert_eq!(p.try_send(&[n as u8]), Ok(n));
    }
    assert_eq!(p.try_send(b"x"), Err(SendError::Full));
    assert!(matches!(p.try_loan(), Err(SendError::Full)));
    assert_eq!(ring.stats().stalls, 2);
    // A bounded blocking send times out rather than overwriting.
    assert_eq!(
        p.send(b"x", WaitStrategy::BusyPoll, Some(Duration::from_millis(5))),
        Err(SendError::Timeout)
    );
    // Releasing one slot makes room for exactly one more message.
    assert_eq!(take(&mut s).unwrap(), (0, vec![0]));
    assert_eq!(p.try_send(b"y"), Ok(4));
    assert_eq!(p.try_send(b"z"), Err(SendError::Full));
}

#[test]
fn lossless_without_subscribers_never_blocks_the_publisher() {
    let ring = ring(Mode::Lossless, 2);
    let mut p = publisher(&ring);
    for n in 0..10u64 {
        assert_eq!(p.try_send(b"m"), Ok(n));
    }
}

#[test]
fn message_larger_than_the_slot_is_too_large() {
    let ring = ring_with(Mode::Lossless, 2, 8, 1, 1);
    let mut p = publisher(&ring);
    let too_large = SendError::TooLarge { len: 9, max: 8 };
    assert_eq!(p.try_send(&[0; 9]), Err(too_large));
    assert_eq!(
        p.send(&[0; 9], WaitStrategy::BusyPoll, None),
        Err(too_large)
    );
    let mut loan = p.try_loan().unwrap();
    assert_eq!(loan.write(&[0; 9]), Err(too_large));
    assert_eq!(loan.set_len(9), Err(too_large));
    loan.write(&[7; 8]).unwrap();
    // The rejected sizes claimed nothing: the loan still publishes the first message.
    assert_eq!(loan.commit(), 0);
}

#[test]
fn closed_topic_refuses_publishers_and_subscribers_drain_before_closed() {
    let ring = ring(Mode::Lossless, 4);
    let mut p = publisher(&ring);
    let mut s = subscriber(&ring, StartAt::Latest);
    let mut c = subscriber(&ring, StartAt::Latest);
    p.try_send(b"a").unwrap();
    p.try_send(b"b").unwrap();
    ring.close();
    assert!(ring.is_closed());
    assert!(ring.stats().closed);
    assert_eq!(p.try_send(b"c"), Err(SendError::Closed));
    assert!(matches!(
        p.loan(WaitStrategy::Block, None),
        Err(SendError::Closed)
    ));
    assert_eq!(take(&mut s).unwrap(), (0, b"a".to_vec()));
    assert_eq!(take(&mut s).unwrap(), (1, b"b".to_vec()));
    assert!(matches!(take(&mut s), Err(RecvError::Closed)));
    assert!(matches!(
        s.recv(WaitStrategy::Block, None),
        Err(RecvError::Closed)
    ));
    assert_eq!(take_copy(&mut c).unwrap(), (0, b"a".to_vec()));
    assert_eq!(take_copy(&mut c).unwrap(), (1, b"b".to_vec()));
    assert!(matches!(take_copy(&mut c), Err(RecvError::Closed)));
}

#[test]
fn released_subscriber_is_evicted_and_stops_holding_the_ring() {
    let ring = ring(Mode::Lossless, 2);
    let mut p = publisher(&ring);
    let mut s = subscriber(&ring, StartAt::Latest);
    p.try_send(b"a").unwrap();
    p.try_send(b"b").unwrap();
    assert_eq!(p.try_send(b"c"), Err(SendError::Full));
    ring.release_subscriber(s.index(), s.generation()).unwrap();
    assert!(!ring.subscriber_held(s.index(), s.generation()));
    assert!(matches!(take(&mut s), Err(RecvError::Evicted)));
    assert!(matches!(take_copy(&mut s), Err(RecvError::Evicted)));
    assert!(matches!(
        s.recv(WaitStrategy::Block, None),
        Err(RecvError::Evicted)
    ));
    // The evicted subscriber no longer protects its slots.
    assert_eq!(p.try_send(b"c"), Ok(2));
    assert_eq!(p.try_send(b"d"), Ok(3));
    // Releasing twice, or through the stale port, is refused.
    assert_eq!(
        ring.release_subscriber(s.index(), s.generation()),
        Err(AttachError::NotHeld(s.index()))
    );
    assert_eq!(s.detach(), Err(AttachError::NotHeld(0)));
}

#[test]
fn evicted_subscriber_entry_is_not_reused_until_reclaimed() {
    let ring = ring_with(Mode::Lossless, 4, 16, 1, 2);
    let mut p = publisher(&ring);
    let mut old = subscriber(&ring, StartAt::Latest);
    for m in [b"a", b"b", b"c", b"d"] {
        p.try_send(m).unwrap();
    }
    assert_eq!(p.try_send(b"e"), Err(SendError::Full));
    let (oi, og) = (old.index(), old.generation());
    // The evicted port still holds a sample when the supervisor evicts it.
    let sample = old.try_recv().unwrap();
    ring.evict_subscriber(oi, og).unwrap();
    assert!(!ring.subscriber_held(oi, og));
    assert_eq!(ring.evicted_subscribers().len(), 1);
    // Publishers no longer wait for it.
    assert_eq!(p.try_send(b"e"), Ok(4));
    // Its entry is not reused: a new subscriber gets the other one, and a third finds none.
    let new = subscriber(&ring, StartAt::Latest);
    assert_ne!(new.index(), oi);
    assert!(ring
        .attach_any_subscriber(std::process::id(), StartAt::Latest)
        .is_err());
    let cursor_of = |index: usize| {
        ring.stats()
            .subscribers
            .iter()
            .find(|s| s.0 == index)
            .map(|s| s.2)
    };
    let before = cursor_of(new.index());
    // The evicted port's late release stores its cursor: into its own (evicted) entry only.
    drop(sample);
    assert_eq!(cursor_of(new.index()), before);
    assert!(matches!(take(&mut old), Err(RecvError::Evicted)));
    // Once the supervisor knows the port is gone, the entry is free again, once.
    ring.reclaim_subscriber(oi, og).unwrap();
    assert_eq!(
        ring.reclaim_subscriber(oi, og),
        Err(AttachError::NotHeld(oi))
    );
    assert!(ring.evicted_subscribers().is_empty());
    let (i, _) = ring
        .attach_any_subscriber(std::process::id(), StartAt::Latest)
        .unwrap();
    assert_eq!(i, oi);
    assert!(matches!(take(&mut old), Err(RecvError::Evicted)));
}

#[test]
fn released_publisher_is_evicted() {
    let ring = ring(Mode::Lossy, 2);
    let mut p = publisher(&ring);
    ring.release_publisher(p.index(), p.generation()).unwrap();
    assert_eq!(p.try_send(b"a"), Err(SendError::Evicted));
    assert!(PublisherPort::new(ring.clone(), p.index(), p.generation()).is_err());
}

#[test]
fn zero_copy_receive_on_a_lossy_topic_is_wrong_mode() {
    let ring = ring(Mode::Lossy, 2);
    let mut p = publisher(&ring);
    let mut s = subscriber(&ring, StartAt::Latest);
    let mut loan = p.try_loan().unwrap();
    assert!(
        loan.payload_mut().is_none(),
        "lossy slots are not lent as plain bytes"
    );
    loan.write(b"abc").unwrap();
    loan.commit();
    assert!(matches!(s.try_recv(), Err(RecvError::WrongMode)));
    assert!(matches!(
        s.recv(WaitStrategy::BusyPoll, None),
        Err(RecvError::WrongMode)
    ));
    // The copying receive works and the message was not consumed by the refusals.
    assert_eq!(take_copy(&mut s).unwrap(), (0, b"abc".to_vec()));
}

#[test]
fn receive_into_a_short_buffer_is_buffer_too_small_and_keeps_the_message() {
    for mode in [Mode::Lossless, Mode::Lossy] {
        let ring = ring(mode, 2);
        let mut p = publisher(&ring);
        let mut s = subscriber(&ring, StartAt::Latest);
        p.try_send(b"twelve bytes").unwrap();
        let mut small = [0u8; 4];
        assert_eq!(
            s.try_recv_into(&mut small),
            Err(RecvError::BufferTooSmall { needed: 12 })
        );
        assert_eq!(take_copy(&mut s).unwrap(), (0, b"twelve bytes".to_vec()));
    }
}

#[test]
fn attach_errors_name_the_entry() {
    let ring = ring_with(Mode::Lossless, 2, 8, 1, 1);
    let (i, g) = ring.attach_any_publisher(1).unwrap();
    assert_eq!(ring.attach_publisher(i, 1), Err(AttachError::InUse(i)));
    assert_eq!(ring.attach_any_publisher(1), Err(AttachError::TableFull));
    assert_eq!(
        ring.attach_publisher(5, 1),
        Err(AttachError::NoSuchEntry(5))
    );
    assert_eq!(
        ring.release_publisher(i, g + 1),
        Err(AttachError::NotHeld(i))
    );
    ring.release_publisher(i, g).unwrap();
    // The entry is reused with a new generation; the old port cannot be reopened.
    let (j, h) = ring.attach_any_publisher(2).unwrap();
    assert_eq!((j, h), (i, g + 1));
    assert!(PublisherPort::new(ring.clone(), i, g).is_err());

    let (si, _) = ring.attach_any_subscriber(1, StartAt::Latest).unwrap();
    assert_eq!(
        ring.attach_any_subscriber(1, StartAt::Latest),
        Err(AttachError::TableFull)
    );
    assert_eq!(
        ring.attach_subscriber(si, 1, StartAt::Oldest),
        Err(AttachError::InUse(si))
    );
}

// ---------------------------------------------------------------------------------------------
// Lossy mode: lag and replay
// ---------------------------------------------------------------------------------------------

#[test]
fn lossy_reader_that_fell_behind_gets_lagged_with_the_exact_count() {
    let ring = ring(Mode::Lossy, 4);
    let mut p = publisher(&ring);
    let mut s = subscriber(&ring, StartAt::Latest);
    for n in 0..10u8 {
        p.try_send(&[n; 16]).unwrap();
    }
    // Messages 0..6 were overwritten; 6..10 are still in the ring.
    assert_eq!(take_copy(&mut s), Err(RecvError::Lagged(6)));
    assert_eq!(s.lagged(), 6);
    for n in 6..10u8 {
        assert_eq!(take_copy(&mut s).unwrap(), (u64::from(n), vec![n; 16]));
    }
    assert_eq!(take_copy(&mut s), Err(RecvError::Empty));
    let stats = ring.stats();
    assert_eq!(stats.published, 10);
    assert_eq!(
        stats.subscribers[0].4, 6,
        "lost messages are reported in the stats"
    );
    // Falling behind again adds to the count.
    for n in 10..15u8 {
        p.try_send(&[n; 16]).unwrap();
    }
    assert_eq!(take_copy(&mut s), Err(RecvError::Lagged(1)));
    assert_eq!(s.lagged(), 7);
    assert_eq!(take_copy(&mut s).unwrap(), (11, vec![11; 16]));
}

#[test]
fn lossy_publisher_never_waits_for_readers() {
    let ring = ring(Mode::Lossy, 2);
    let mut p = publisher(&ring);
    let _s = subscriber(&ring, StartAt::Latest);
    for n in 0..100u64 {
        assert_eq!(p.try_send(b"m"), Ok(n));
    }
    assert_eq!(ring.stats().stalls, 0);
}

#[test]
fn lossy_oldest_replays_what_the_ring_still_holds() {
    let ring = ring(Mode::Lossy, 4);
    let mut p = publisher(&ring);
    for n in 0..6u8 {
        p.try_send(&[n]).unwrap();
    }
    let mut old = subscriber(&ring, StartAt::Oldest);
    let mut new = subscriber(&ring, StartAt::Latest);
    for n in 2..6u8 {
        assert_eq!(take_copy(&mut old).unwrap(), (u64::from(n), vec![n]));
    }
    assert_eq!(take_copy(&mut old), Err(RecvError::Empty));
    assert_eq!(take_copy(&mut new), Err(RecvError::Empty));
    p.try_send(&[6]).unwrap();
    assert_eq!(take_copy(&mut new).unwrap(), (6, vec![6]));
}

#[test]
fn lossy_oldest_on_a_fresh_ring_starts_at_the_first_message() {
    let ring = ring(Mode::Lossy, 4);
    let mut p = publisher(&ring);
    p.try_send(b"a").unwrap();
    let mut s = subscriber(&ring, StartAt::Oldest);
    assert_eq!(take_copy(&mut s).unwrap(), (0, b"a".to_vec()));
}

#[test]
fn lossless_oldest_replays_only_what_another_subscriber_still_protects() {
    let ring = ring_with(Mode::Lossless, 4, 16, 1, 3);
    let mut p = publisher(&ring);
    // Alone, a lossless joiner cannot replay: nothing is protected.
    p.try_send(b"a").unwrap();
    let mut alone = subscriber(&ring, StartAt::Oldest);
    assert_eq!(take(&mut alone), Err(RecvError::Empty));
    alone.detach().unwrap();

    let mut slow = subscriber(&ring, StartAt::Latest);
    for m in [b"b", b"c", b"d"] {
        p.try_send(m).unwrap();
    }
    assert_eq!(take(&mut slow).unwrap(), (1, b"b".to_vec()));
    // `slow` still protects "c" and "d": a new joiner replays them.
    let mut joiner = subscriber(&ring, StartAt::Oldest);
    assert_eq!(take(&mut joiner).unwrap(), (2, b"c".to_vec()));
    assert_eq!(take(&mut joiner).unwrap(), (3, b"d".to_vec()));
    assert_eq!(take(&mut joiner), Err(RecvError::Empty));
}

// ---------------------------------------------------------------------------------------------
// Loans, skips and repair
// ---------------------------------------------------------------------------------------------

#[test]
fn dropped_loan_is_skipped_by_subscribers() {
    for mode in [Mode::Lossless, Mode::Lossy] {
        let ring = ring(mode, 2);
        let mut p = publisher(&ring);
        let mut s = subscriber(&ring, StartAt::Latest);
        let mut loan = p.try_loan().unwrap();
        loan.write(b"never").unwrap();
        drop(loan);
        p.try_send(b"next").unwrap();
        assert_eq!(take_copy(&mut s).unwrap(), (1, b"next".to_vec()));
        assert_eq!(take_copy(&mut s), Err(RecvError::Empty));
    }
}

#[test]
fn loan_written_in_place_is_delivered_in_place() {
    let ring = ring(Mode::Lossless, 2);
    let mut p = publisher(&ring);
    let mut s = subscriber(&ring, StartAt::Latest);
    let mut loan = p.try_loan().unwrap();
    assert_eq!(loan.sequence(), 0);
    assert_eq!(loan.mode(), Mode::Lossless);
    loan.payload_mut().unwrap()[..5].copy_from_slice(b"hello");
    loan.set_len(5).unwrap();
    assert_eq!(loan.commit(), 0);
    let sample = s.try_recv().unwrap();
    assert_eq!(
        (sample.sequence(), sample.len(), sample.publisher()),
        (0, 5, 0)
    );
    assert_eq!(sample.bytes(), b"hello");
    assert!(!sample.is_empty());
}

#[test]
fn repair_of_an_idle_publisher_is_clean_and_releases_the_entry() {
    let ring = ring(Mode::Lossless, 2);
    let mut p = publisher(&ring);
    p.try_send(b"a").unwrap();
    let outcome = ring.repair_publisher(p.index(), p.generation(), |_, _| true);
    assert_eq!(outcome, Ok(RepairOutcome::Clean));
    assert!(!ring.publisher_held(p.index(), p.generation()));
    assert_eq!(
        ring.repair_publisher(p.index(), p.generation(), |_, _| true),
        Err(AttachError::NotHeld(p.index()))
    );
}

#[test]
fn repair_of_a_dead_claim_skips_it_and_subscribers_move_on() {
    let ring = ring(Mode::Lossless, 2);
    let mut dead = publisher(&ring);
    let mut live = publisher(&ring);
    let mut s = subscriber(&ring, StartAt::Latest);
    std::mem::forget(dead.try_loan().unwrap());
    live.try_send(b"after").unwrap();
    // The dead claim holds the subscriber back.
    assert_eq!(take(&mut s), Err(RecvError::Empty));
    let outcome = ring.repair_publisher(dead.index(), dead.generation(), |i, _| i == live.index());
    assert_eq!(outcome, Ok(RepairOutcome::Skipped { sequence: 0 }));
    assert!(!ring.publisher_held(dead.index(), dead.generation()));
    assert_eq!(take(&mut s).unwrap(), (1, b"after".to_vec()));
}

#[test]
fn repair_is_pending_while_a_live_publisher_records_the_same_sequence() {
    let ring = ring(Mode::Lossless, 2);
    let dead = publisher(&ring);
    let mut live = publisher(&ring);
    let mut s = subscriber(&ring, StartAt::Latest);
    let first = ring.first_sequence();
    // `dead` recorded sequence `first` and lost the claim race to `live`, which is writing it.
    let live_index = live.index();
    let mut loan = live.try_loan().unwrap();
    let dead_entry = ring.storage.publisher(dead.index()).unwrap();
    dead_entry.inflight.store(first, Ordering::Relaxed);
    let is_alive = |i: usize, _| i == live_index;
    assert_eq!(
        ring.repair_publisher(dead.index(), dead.generation(), is_alive),
        Ok(RepairOutcome::Pending)
    );
    loan.write(b"mine").unwrap();
    loan.commit();
    // The sequence is finished now: the dead publisher held nothing.
    assert_eq!(
        ring.repair_publisher(dead.index(), dead.generation(), is_alive),
        Ok(RepairOutcome::Clean)
    );
    assert_eq!(take(&mut s).unwrap(), (0, b"mine".to_vec()));
}

#[test]
fn repair_is_pending_while_the_previous_occupant_is_still_being_written() {
    // No subscriber, so a claim may run a whole lap ahead of an unfinished write.
    let ring = ring_with(Mode::Lossless, 2, 16, 3, 1);
    let mut slow = publisher(&ring);
    let mut other = publisher(&ring);
    let dead = publisher(&ring);
    let first = ring.first_sequence();
    let mut loan = slow.try_loan().unwrap(); // `first`, slot 0, being written
    other.try_send(b"b").unwrap(); // `first + 1`
                                   // `dead` claimed `first + 2` (slot 0 again) and died before writing.
    let s = first + 2;
    ring.storage
        .publisher(dead.index())
        .unwrap()
        .inflight
        .store(s, Ordering::Relaxed);
    let claim = &ring.storage.control().claim;
    assert_eq!(
        claim.compare_exchange(s, s + 1, Ordering::AcqRel, Ordering::Relaxed),
        Ok(s)
    );
    assert_eq!(
        ring.repair_publisher(dead.index(), dead.generation(), |_, _| false),
        Ok(RepairOutcome::Pending)
    );
    loan.write(b"a").unwrap();
    loan.commit();
    assert_eq!(
        ring.repair_publisher(dead.index(), dead.generation(), |_, _| false),
        Ok(RepairOutcome::Skipped { sequence: 2 })
    );
    // A subscriber attaching now starts after the repaired sequence, and later messages flow.
    let mut sub = subscriber(&ring, StartAt::Latest);
    other.try_send(b"d").unwrap();
    assert_eq!(take(&mut sub).unwrap(), (3, b"d".to_vec()));
}

#[test]
fn publisher_whose_claim_was_repaired_drops_its_message_with_repaired() {
    // A supervisor judged a slow publisher dead and skipped its claim before it began writing:
    // the publisher must notice and drop its message rather than write over the skip.
    let ring = ring(Mode::Lossless, 2);
    let mut p = publisher(&ring);
    let mut s = subscriber(&ring, StartAt::Latest);
    let first = ring.first_sequence();
    ring.storage
        .slot(0)
        .stamp
        .store(stamp::pack(first, stamp::SKIPPED), Ordering::Release);
    assert_eq!(p.try_send(b"a"), Err(SendError::Repaired));
    let entry = ring.storage.publisher(p.index()).unwrap();
    assert_eq!(entry.inflight.load(Ordering::Relaxed), IDLE);
    assert_eq!(p.try_send(b"b"), Ok(1));
    assert_eq!(take(&mut s).unwrap(), (1, b"b".to_vec()));
}

// ---------------------------------------------------------------------------------------------
// Solo claims, batches
// ---------------------------------------------------------------------------------------------

/// A publisher entry that claims to have a solo claim in flight forever (a stopped process,
/// or an entry forged in the control file) makes a publisher joining the shared topic fail
/// after [`SOLO_CLAIM_PATIENCE`] with `ClaimInFlight`, not wait forever. Once the claim is
/// gone, joining works again.
#[test]
#[cfg(not(miri))] // waits a real second
fn a_claim_in_flight_forever_fails_a_joining_publisher_instead_of_hanging_it() {
    let ring = ring(Mode::Lossless, 8);
    let stuck = publisher(&ring);
    let second = ring.attach_any_publisher(std::process::id()).unwrap();
    // The topic is shared now; the first publisher "recorded" the next claim and never made it.
    let next = ring.storage.control().claim.load(Ordering::Relaxed);
    let entry = ring.storage.publisher(stuck.index()).unwrap();
    entry.inflight.store(next, Ordering::Relaxed);
    ring.release_publisher(second.0, second.1).unwrap();
    let (i, g) = ring.attach_any_publisher(std::process::id()).unwrap();
    assert!(ring.is_shared());
    match PublisherPort::new(ring.clone(), i, g) {
        Err(AttachError::ClaimInFlight(at)) => assert_eq!(at, stuck.index()),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("joined while a claim was in flight"),
    }
    entry.inflight.store(IDLE, Ordering::Relaxed);
    assert!(PublisherPort::new(ring.clone(), i, g).is_ok());
}

#[test]
fn a_lone_publisher_claims_solo_until_a_second_one_attaches_and_again_once_alone() {
    let ring = ring(Mode::Lossless, 8);
    let mut s = subscriber(&ring, StartAt::Latest);
    let mut a = publisher(&ring);
    assert!(!ring.is_shared());
    a.try_send(b"a0").unwrap();
    let mut b = publisher(&ring);
    assert!(ring.is_shared(), "two publishers: claims by CAS");
    b.try_send(b"b0").unwrap();
    a.try_send(b"a1").unwrap();
    b.detach().unwrap();
    // A is still attached: the topic stays shared until an attach finds one alone.
    assert!(ring.is_shared());
    a.detach().unwrap();
    let mut c = publisher(&ring);
    assert!(!ring.is_shared(), "alone again: solo claims");
    c.try_send(b"c0").unwrap();
    let got: Vec<_> = (0..4).map(|_| take(&mut s).unwrap()).collect();
    assert_eq!(
        got,
        [
            (0, b"a0".to_vec()),
            (1, b"b0".to_vec()),
            (2, b"a1".to_vec()),
            (3, b"c0".to_vec())
        ]
    );
    assert_eq!(ring.stats().published, 4);
}

#[test]
fn batch_send_publishes_what_fits_and_checks_every_length_first() {
    let ring = ring(Mode::Lossless, 4);
    let mut p = publisher(&ring);
    let mut s = subscriber(&ring, StartAt::Latest);
    let too_long = [0u8; 17];
    assert_eq!(
        p.try_send_many(&[b"x", &too_long]),
        Err(SendError::TooLarge { len: 17, max: 16 })
    );
    assert_eq!(
        ring.stats().published,
        0,
        "nothing published before the check"
    );
    let msgs: Vec<&[u8]> = vec![b"0", b"1", b"2", b"3", b"4", b"5"];
    assert_eq!(p.try_send_many(&msgs), Ok(4), "four slots, four messages");
    assert_eq!(p.try_send_many(&msgs[4..]), Err(SendError::Full));
    assert_eq!(take(&mut s).unwrap(), (0, b"0".to_vec()));
    assert_eq!(p.try_send_many(&msgs[4..]), Ok(1));
    for n in 1..5u64 {
        assert_eq!(take(&mut s).unwrap(), (n, n.to_string().into_bytes()));
    }
    assert_eq!(take(&mut s), Err(RecvError::Empty));
}

#[test]
fn batch_receive_reads_in_order_and_releases_once_at_the_end() {
    let ring = ring(Mode::Lossless, 4);
    let mut p = publisher(&ring);
    let mut s = subscriber(&ring, StartAt::Latest);
    assert_eq!(
        s.try_recv_many(8, |_, _| panic!("nothing yet")),
        Err(RecvError::Empty)
    );
    for m in [b"a", b"b", b"c", b"d"] {
        p.try_send(m).unwrap();
    }
    assert_eq!(p.try_send(b"e"), Err(SendError::Full));
    let cursor = |r: &HeapRing| r.stats().subscribers[0].2;
    let before = cursor(&ring);
    let mut seen = Vec::new();
    let n = s
        .try_recv_many(3, |seq, bytes| {
            // Nothing of the batch is released while it is being read.
            assert_eq!(cursor(&ring), before);
            seen.push((seq, bytes.to_vec()));
        })
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(
        seen,
        [(0, b"a".to_vec()), (1, b"b".to_vec()), (2, b"c".to_vec())]
    );
    assert_eq!(cursor(&ring), before + 3, "one release for the batch");
    p.try_send(b"e").unwrap();
    let mut rest = Vec::new();
    assert_eq!(s.try_recv_many(8, |seq, _| rest.push(seq)), Ok(2));
    assert_eq!(rest, [3, 4]);
    let lossy = self::ring(Mode::Lossy, 4);
    let mut ls = subscriber(&lossy, StartAt::Latest);
    assert_eq!(ls.try_recv_many(1, |_, _| {}), Err(RecvError::WrongMode));
}

#[test]
fn blocked_publisher_resumes_on_a_single_freed_slot_after_holding_out_for_a_batch() {
    // Capacity 16: a blocked publisher first waits for 2 free slots (capacity / 8), then for
    // RESUME_ROUNDS rounds at most, then takes the one slot that is free.
    let ring = ring_with(Mode::Lossless, 16, 16, 1, 1);
    let mut p = publisher(&ring);
    let mut s = subscriber(&ring, StartAt::Latest);
    for n in 0..16u8 {
        p.try_send(&[n]).unwrap();
    }
    assert_eq!(p.try_send(b"x"), Err(SendError::Full));
    assert_eq!(take(&mut s).unwrap(), (0, vec![0]));
    let seq = p.send(b"x", WaitStrategy::BusyPoll, PATIENCE).unwrap();
    assert_eq!(seq, 16);
    assert_eq!(p.try_send(b"y"), Err(SendError::Full));
    // The same through `wait_space` (what the client calls before it loans).
    assert_eq!(take(&mut s).unwrap(), (1, vec![1]));
    p.wait_space(WaitStrategy::BusyPoll, PATIENCE).unwrap();
    assert_eq!(p.try_send(b"y"), Ok(17));
}

#[test]
fn sleeping_publisher_resumes_on_a_single_freed_slot() {
    // A publisher that has gone to sleep on a full ring no longer holds out for a batch: one
    // slot freed by a subscriber that then stops reading is enough.
    let ring = ring_with(Mode::Lossless, 16, 16, 1, 1);
    let mut p = publisher(&ring);
    let mut s = subscriber(&ring, StartAt::Latest);
    for n in 0..16u8 {
        p.try_send(&[n]).unwrap();
    }
    let (done, sent) = std::sync::mpsc::channel();
    let t = thread::spawn(move || {
        done.send(p.send(b"x", WaitStrategy::Block, PATIENCE))
            .unwrap();
    });
    thread::sleep(Duration::from_millis(if cfg!(miri) { 1 } else { 20 }));
    assert_eq!(take(&mut s).unwrap(), (0, vec![0]));
    let result = sent
        .recv_timeout(Duration::from_secs(10))
        .expect("the sleeping publisher resumed on the one free slot");
    assert_eq!(result, Ok(16));
    t.join().unwrap();
}

#[test]
fn lossless_slot_goes_from_its_previous_occupant_straight_to_committed() {
    let ring = ring(Mode::Lossless, 2);
    let mut p = publisher(&ring);
    let first = ring.first_sequence();
    let stamp_of = |r: &HeapRing| r.storage.slot(0).stamp.load(Ordering::Acquire);
    let mut loan = p.try_loan().unwrap();
    // Loaned, not committed: the slot still shows its previous occupant, finished.
    assert!(stamp::is_done(stamp_of(&ring), first - 2));
    loan.write(b"x").unwrap();
    loan.commit();
    assert_eq!(stamp_of(&ring), stamp::pack(first, stamp::COMMITTED));
}

// ---------------------------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------------------------

/// Payload of the stress tests: `[publisher, counter]` as two words.
fn stress_payload(publisher: u64, n: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&publisher.to_le_bytes());
    b[8..].copy_from_slice(&n.to_le_bytes());
    b
}

fn stress_decode(b: &[u8]) -> (u64, u64) {
    assert_eq!(b.len(), 16);
    (
        u64::from_le_bytes(b[..8].try_into().unwrap()),
        u64::from_le_bytes(b[8..].try_into().unwrap()),
    )
}

#[test]
fn lossless_stress_two_publishers_two_subscribers_exactly_once_in_publisher_order() {
    let per_publisher: u64 = if cfg!(miri) { 40 } else { 50_000 };
    let ring = ring_with(Mode::Lossless, 64, 16, 2, 2);
    let subs: Vec<Sub> = (0..2).map(|_| subscriber(&ring, StartAt::Latest)).collect();
    let pubs: Vec<Pub> = (0..2).map(|_| publisher(&ring)).collect();
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            thread::spawn(move || {
                let mut next = [0u64; 2];
                let mut last_seq = None;
                for _ in 0..2 * per_publisher {
                    let sample = s.recv(WaitStrategy::default(), PATIENCE).unwrap();
                    let (id, n) = stress_decode(sample.bytes());
                    assert_eq!(id, u64::from(sample.publisher()));
                    assert_eq!(
                        n, next[id as usize],
                        "publisher {id}: lost, duplicated or reordered"
                    );
                    next[id as usize] += 1;
                    assert!(last_seq < Some(sample.sequence()));
                    last_seq = Some(sample.sequence());
                }
                assert_eq!(next, [per_publisher; 2]);
                assert_eq!(s.try_recv().err(), Some(RecvError::Empty));
            })
        })
        .collect();
    let writers: Vec<_> = pubs
        .into_iter()
        .map(|mut p| {
            thread::spawn(move || {
                let id = p.index() as u64;
                for n in 0..per_publisher {
                    p.send(&stress_payload(id, n), WaitStrategy::default(), PATIENCE)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in writers.into_iter().chain(readers) {
        t.join().unwrap();
    }
    assert_eq!(ring.stats().published, 2 * per_publisher);
}

/// A 64-byte message whose last word is a checksum of the others.
fn checksummed(publisher: u64, n: u64) -> [u8; 64] {
    let mut words = [0u64; 8];
    words[0] = publisher;
    words[1] = n;
    for (k, w) in words.iter_mut().enumerate().take(7).skip(2) {
        *w = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(k as u32) ^ publisher;
    }
    words[7] = words[..7].iter().fold(0xCBF2_9CE4_8422_2325, |h, w| {
        (h ^ w).wrapping_mul(0x100_0000_01B3)
    });
    let mut b = [0u8; 64];
    for (chunk, w) in b.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    b
}

#[test]
fn lossy_stress_never_delivers_a_torn_message() {
    let per_publisher: u64 = if cfg!(miri) { 60 } else { 25_000 };
    let ring = ring_with(Mode::Lossy, 8, 64, 2, 2);
    let subs: Vec<Sub> = (0..2).map(|_| subscriber(&ring, StartAt::Latest)).collect();
    let pubs: Vec<Pub> = (0..2).map(|_| publisher(&ring)).collect();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            let done = done.clone();
            thread::spawn(move || {
                let mut buf = [0u8; 64];
                let mut last = [None::<u64>; 2];
                let mut last_seq = None;
                let (mut delivered, mut lagged) = (0u64, 0u64);
                loop {
                    // Read before trying: an `Empty` seen after the writers finished is final.
                    let finished = done.load(StdOrdering::Acquire);
                    match s.try_recv_into(&mut buf) {
                        Ok((seq, len)) => {
                            assert_eq!(len, 64);
                            let id = u64::from_le_bytes(buf[..8].try_into().unwrap());
                            let n = u64::from_le_bytes(buf[8..16].try_into().unwrap());
                            assert!(id < 2, "torn message: publisher word {id}");
                            assert_eq!(buf, checksummed(id, n), "torn message");
                            assert!(last[id as usize] < Some(n), "publisher order broken");
                            last[id as usize] = Some(n);
                            assert!(last_seq < Some(seq), "sequence went backwards");
                            last_seq = Some(seq);
                            delivered += 1;
                        }
                        Err(RecvError::Lagged(k)) => lagged += k,
                        Err(RecvError::Empty) if finished => break,
                        Err(RecvError::Empty) => thread::yield_now(),
                        Err(e) => panic!("{e:?}"),
                    }
                }
                (delivered, lagged)
            })
        })
        .collect();
    let writers: Vec<_> = pubs
        .into_iter()
        .map(|mut p| {
            thread::spawn(move || {
                let id = p.index() as u64;
                for n in 0..per_publisher {
                    p.try_send(&checksummed(id, n)).unwrap();
                }
            })
        })
        .collect();
    for t in writers {
        t.join().unwrap();
    }
    done.store(true, StdOrdering::Release);
    for t in readers {
        let (delivered, lagged) = t.join().unwrap();
        // Every sequence was either delivered or counted as lost.
        assert_eq!(delivered + lagged, 2 * per_publisher);
    }
}

#[test]
fn blocking_recv_is_woken_by_a_publish_from_another_thread() {
    let ring = ring(Mode::Lossless, 2);
    let mut p = publisher(&ring);
    let mut s = subscriber(&ring, StartAt::Latest);
    let ready = Arc::new(Barrier::new(2));
    let r = ready.clone();
    let t = thread::spawn(move || {
        r.wait();
        let sample = s.recv(WaitStrategy::Block, PATIENCE).unwrap();
        (sample.sequence(), sample.bytes().to_vec())
    });
    ready.wait();
    thread::sleep(Duration::from_millis(50));
    p.try_send(b"wake").unwrap();
    assert_eq!(t.join().unwrap(), (0, b"wake".to_vec()));
}

#[test]
fn blocking_send_is_woken_when_a_subscriber_releases_a_slot() {
    let ring = ring(Mode::Lossless, 2);
    let mut p = publisher(&ring);
    let mut s = subscriber(&ring, StartAt::Latest);
    p.try_send(b"a").unwrap();
    p.try_send(b"b").unwrap();
    let t = thread::spawn(move || p.send(b"c", WaitStrategy::Block, PATIENCE));
    thread::sleep(Duration::from_millis(50));
    assert_eq!(take(&mut s).unwrap(), (0, b"a".to_vec()));
    assert_eq!(t.join().unwrap(), Ok(2));
}

#[test]
fn blocking_recv_is_woken_by_close() {
    let ring = ring(Mode::Lossless, 2);
    let mut s = subscriber(&ring, StartAt::Latest);
    let t = thread::spawn(move || s.recv(WaitStrategy::Block, PATIENCE).err());
    thread::sleep(Duration::from_millis(50));
    ring.close();
    assert_eq!(t.join().unwrap(), Some(RecvError::Closed));
}

#[test]
fn blocking_recv_times_out_when_nothing_arrives() {
    let ring = ring(Mode::Lossless, 2);
    let mut s = subscriber(&ring, StartAt::Latest);
    assert_eq!(
        s.recv(WaitStrategy::Block, Some(Duration::from_millis(20)))
            .err(),
        Some(RecvError::Timeout)
    );
}

// ---------------------------------------------------------------------------------------------
// Property test: random single-threaded interleavings against a reference model
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Op {
    /// `try_send` from publisher 0 or 1.
    Publish(usize),
    /// A loan from publisher 0 or 1, dropped without commit: its sequence is skipped.
    Abort(usize),
    /// `try_recv` by subscriber 0 or 1, the sample dropped at once.
    Recv(usize),
    /// `try_recv_into` by subscriber 0 or 1.
    RecvInto(usize),
    /// Subscriber 0 or 1 takes the next message and keeps it (its cursor stays put).
    Hold(usize),
    /// Subscriber 0 or 1 checks and drops the sample it holds.
    Drop(usize),
    /// Subscriber 0 or 1 attaches (Latest or Oldest) if detached, else detaches.
    Toggle(usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize).prop_map(Op::Publish),
        1 => (0..2usize).prop_map(Op::Abort),
        2 => (0..2usize).prop_map(Op::Recv),
        1 => (0..2usize).prop_map(Op::RecvInto),
        1 => (0..2usize).prop_map(Op::Hold),
        1 => (0..2usize).prop_map(Op::Drop),
        1 => (0..2usize, any::<bool>()).prop_map(|(s, oldest)| Op::Toggle(s, oldest)),
    ]
}

/// What a subscriber has yet to read: one entry per sequence, `None` for a skipped one.
type Backlog = VecDeque<(u64, Option<Vec<u8>>)>;

/// The reference: per attached subscriber, its backlog in sequences, and whether it holds the
/// front message. A lossless publisher may claim while every backlog is shorter than the
/// capacity.
struct Model {
    capacity: usize,
    next_seq: u64,
    subs: [Option<(Backlog, bool)>; 2],
}

impl Model {
    fn has_room(&self) -> bool {
        self.subs
            .iter()
            .flatten()
            .all(|(b, _)| b.len() < self.capacity)
    }

    fn push(&mut self, payload: Option<Vec<u8>>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        for (b, _) in self.subs.iter_mut().flatten() {
            b.push_back((seq, payload.clone()));
        }
    }

    /// Skip leading skipped sequences; the next message, if any.
    fn front(&mut self, s: usize) -> Option<(u64, Vec<u8>)> {
        let (b, _) = self.subs[s].as_mut()?;
        while matches!(b.front(), Some((_, None))) {
            b.pop_front();
        }
        b.front()
            .map(|(seq, p)| (*seq, p.clone().unwrap_or_default()))
    }

    fn pop(&mut self, s: usize) {
        if let Some((b, _)) = self.subs[s].as_mut() {
            b.pop_front();
        }
    }
}

struct Harness {
    ring: Arc<HeapRing>,
    pubs: Vec<Pub>,
    subs: [Option<Sub>; 2],
    counters: [u8; 2],
}

fn run_ops(ops: &[Op]) -> Result<(), TestCaseError> {
    const CAPACITY: usize = 4;
    let ring = ring_with(Mode::Lossless, CAPACITY as u32, 16, 2, 2);
    let mut h = Harness {
        pubs: (0..2).map(|_| publisher(&ring)).collect(),
        subs: [None, None],
        ring,
        counters: [0; 2],
    };
    let mut m = Model {
        capacity: CAPACITY,
        next_seq: 0,
        subs: [None, None],
    };
    for &op in ops {
        match op {
            Op::Publish(p) => {
                let payload = vec![p as u8, h.counters[p], 0xEE];
                let r = h.pubs[p].try_send(&payload);
                if m.has_room() {
                    prop_assert_eq!(r, Ok(m.next_seq), "{:?}", op);
                    h.counters[p] = h.counters[p].wrapping_add(1);
                    m.push(Some(payload));
                } else {
                    prop_assert_eq!(r, Err(SendError::Full), "{:?}", op);
                }
            }
            Op::Abort(p) => match h.pubs[p].try_loan() {
                Ok(loan) => {
                    prop_assert!(m.has_room(), "loan granted on a full ring");
                    prop_assert_eq!(loan.sequence(), m.next_seq);
                    drop(loan);
                    m.push(None);
                }
                Err(e) => {
                    prop_assert!(!m.has_room());
                    prop_assert_eq!(e, SendError::Full);
                }
            },
            Op::Recv(s) | Op::RecvInto(s) | Op::Hold(s) | Op::Drop(s) => {
                let Some(port) = h.subs[s].as_mut() else {
                    continue;
                };
                let held = m.subs[s].as_ref().is_some_and(|(_, held)| *held);
                match op {
                    // A holding subscriber cannot take another sample.
                    Op::Recv(_) | Op::RecvInto(_) | Op::Hold(_) if held => continue,
                    Op::Drop(_) if !held => continue,
                    _ => {}
                }
                let expected = m.front(s);
                let got = match op {
                    // Holding: peek (the port does not advance, as while a sample lives).
                    Op::Hold(_) => port.peek(WaitStrategy::BusyPoll, None, false).map(|_| None),
                    Op::RecvInto(_) => take_copy(port).map(Some),
                    _ => take(port).map(Some),
                };
                match (got, expected) {
                    (Ok(None), Some(_)) => {
                        // Now holding the front message.
                        if let Some((_, held)) = m.subs[s].as_mut() {
                            *held = true;
                        }
                    }
                    (Ok(Some(got)), Some(expected)) => {
                        prop_assert_eq!(got, expected, "{:?}", op);
                        m.pop(s);
                        if let Some((_, held)) = m.subs[s].as_mut() {
                            *held = false;
                        }
                    }
                    (Err(RecvError::Empty), None) => {}
                    (got, expected) => {
                        prop_assert!(false, "{:?}: got {:?}, expected {:?}", op, got, expected)
                    }
                }
            }
            Op::Toggle(s, oldest) => {
                if let Some(port) = h.subs[s].take() {
                    port.detach().unwrap();
                    m.subs[s] = None;
                } else {
                    let start = if oldest {
                        StartAt::Oldest
                    } else {
                        StartAt::Latest
                    };
                    h.subs[s] = Some(subscriber(&h.ring, start));
                    // Oldest (lossless) replays what the other subscriber still protects.
                    let backlog = match (oldest, &m.subs[1 - s]) {
                        (true, Some((b, _))) => b.clone(),
                        _ => Backlog::new(),
                    };
                    m.subs[s] = Some((backlog, false));
                }
            }
        }
    }
    // Drain: every attached subscriber gets exactly its remaining backlog.
    for s in 0..2 {
        let Some(port) = h.subs[s].as_mut() else {
            continue;
        };
        while let Some(expected) = m.front(s) {
            prop_assert_eq!(take(port).unwrap(), expected);
            m.pop(s);
        }
        prop_assert_eq!(take(port).err(), Some(RecvError::Empty));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 6 } else { 512 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any single-threaded interleaving of publishes (and aborted loans) from two publishers,
    /// receives, held samples, and subscribers joining and leaving delivers, to each
    /// subscriber, exactly what the reference model says, with `Full` exactly when the slowest
    /// subscriber's backlog fills the ring.
    #[test]
    fn lossless_delivery_matches_the_reference_model(ops in proptest::collection::vec(op(), 1..80)) {
        run_ops(&ops)?;
    }
}

#[test]
fn distinct_publishers_never_share_a_sequence() {
    let ring = ring_with(Mode::Lossy, 4, 8, 2, 1);
    let per: u64 = if cfg!(miri) { 20 } else { 20_000 };
    let go = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let mut p = publisher(&ring);
            let go = go.clone();
            thread::spawn(move || {
                go.wait();
                (0..per)
                    .map(|_| p.try_send(b"x").unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all = HashSet::new();
    for t in threads {
        let seqs = t.join().unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        for s in seqs {
            assert!(all.insert(s), "sequence {s} claimed twice");
        }
    }
    assert_eq!(all.len() as u64, 2 * per);
}

// ---------------------------------------------------------------------------------------------
// Tickets: find a message, then take it, without polling twice
// ---------------------------------------------------------------------------------------------

#[test]
fn a_ticket_takes_the_message_it_names_once_and_skips_lengths_not_accepted() {
    for mode in [Mode::Lossless, Mode::Lossy] {
        let ring = ring(mode, 8);
        let mut p = publisher(&ring);
        let mut s = subscriber(&ring, StartAt::Latest);
        assert_eq!(s.next_ready(|_| true), Err(RecvError::Empty));
        p.try_send(b"xyz").unwrap();
        p.try_send(b"four").unwrap();
        // A length the caller does not take is skipped and counted, in the same pass.
        let t = s.next_ready(|len| len == 4).unwrap();
        assert_eq!((t.len(), s.corrupt()), (4, 1));
        // Asking again names the same message: nothing was consumed.
        let again = s.next_ready(|len| len == 4).unwrap();
        assert_eq!(again, t);
        let mut buf = [0u8; 16];
        match mode {
            Mode::Lossless => {
                let sample = s.take(t).unwrap();
                assert_eq!((sample.sequence(), sample.bytes()), (1, &b"four"[..]));
                drop(sample);
                // The port moved on: its other ticket for the message just taken is stale.
                assert_eq!(s.take_copy(again, &mut buf).err(), Some(RecvError::Empty));
            }
            Mode::Lossy => {
                assert_eq!(s.take(t).err(), Some(RecvError::WrongMode));
                let r = s.take_copy(again, &mut buf).unwrap();
                assert_eq!((r.sequence, &buf[..r.len]), (1, &b"four"[..]));
            }
        }
        assert_eq!(s.next_ready(|_| true), Err(RecvError::Empty));
    }
}

/// Publish `n` messages of `len` bytes on `ring` and receive them all with `s`.
fn pass_through(ring: &Arc<HeapRing>, s: &mut Sub, n: usize, len: usize) {
    let mut p = publisher(ring);
    let mut buf = vec![0u8; len];
    for i in 0..n {
        p.try_send(&vec![i as u8; len]).unwrap();
        s.try_recv_into(&mut buf).unwrap();
    }
    p.detach().unwrap();
}

#[test]
fn a_ticket_redeemed_by_another_port_is_foreign_and_reads_nothing() {
    for mode in [Mode::Lossless, Mode::Lossy] {
        // The issuer: 64 slots of 4 KiB. Its next message is sequence 103, in slot 39, and
        // 4000 bytes long.
        let big = ring_with(mode, 64, 4096, 1, 1);
        let mut issuer = subscriber(&big, StartAt::Latest);
        pass_through(&big, &mut issuer, 39, 8);
        publisher(&big).try_send(&[7u8; 4000]).unwrap();
        let ticket = issuer.next_ready(|_| true).unwrap();
        assert_eq!(ticket.len(), 4000);

        // Another ring, 2 slots of 16 bytes, whose port waits for the very same sequence: only
        // the ticket's port identity tells them apart. Slot 39 and 4000 bytes lie far outside
        // this ring.
        let small = ring_with(mode, 2, 16, 1, 2);
        let mut other = subscriber(&small, StartAt::Latest);
        pass_through(&small, &mut other, 101, 8);
        let mut twin = subscriber(&small, StartAt::Latest);
        publisher(&small).try_send(b"small").unwrap();
        let mut buf = vec![0u8; 4096];
        if mode == Mode::Lossless {
            assert_eq!(other.take(ticket).err(), Some(RecvError::ForeignTicket));
        } else {
            assert_eq!(
                other.take_copy(ticket, &mut buf).err(),
                Some(RecvError::ForeignTicket)
            );
        }

        // Another port of the same ring, at the same sequence: foreign too.
        let mine = other.next_ready(|_| true).unwrap();
        let theirs = twin.next_ready(|_| true).unwrap();
        assert_ne!(mine, theirs, "each port's ticket carries its own identity");
        assert_eq!(
            twin.take_copy(mine, &mut buf).err(),
            Some(RecvError::ForeignTicket)
        );

        // Refused tickets consumed nothing: each port still takes its own message, once.
        assert_eq!(twin.take_copy(theirs, &mut buf).unwrap().len, 5);
        assert_eq!(&buf[..5], b"small");
        let mine = other.next_ready(|_| true).unwrap();
        let r = other.take_copy(mine, &mut buf).unwrap();
        assert_eq!((r.sequence, &buf[..r.len]), (101, &b"small"[..]));
        let ticket = issuer.next_ready(|_| true).unwrap();
        let r = issuer.take_copy(ticket, &mut buf).unwrap();
        assert_eq!((r.sequence, &buf[..r.len]), (39, &[7u8; 4000][..]));
        assert_eq!(issuer.next_ready(|_| true), Err(RecvError::Empty));
    }
}

// ---------------------------------------------------------------------------------------------
// Wake slots
// ---------------------------------------------------------------------------------------------

/// A doorbell that counts its wake-ups (system calls a real one would make).
#[derive(Default)]
struct Recording {
    futex: Futex,
    wakes: std::sync::atomic::AtomicUsize,
}

impl crate::doorbell::Doorbell for Recording {
    fn wait(&self, word: &crate::sync::AtomicU32, expected: u32, timeout: Option<Duration>) {
        self.futex.wait(word, expected, timeout)
    }
    fn wake_all(&self, word: &crate::sync::AtomicU32) {
        self.wakes.fetch_add(1, Ordering::Relaxed);
        self.futex.wake_all(word)
    }
}

fn recording_ring() -> Arc<Ring<RawStorage<HeapRegion>, Recording>> {
    let layout = Layout::compute(&Geometry {
        capacity: 8,
        slot_size: 16,
        mode: Mode::Lossless,
        max_publishers: 1,
        max_subscribers: 1,
        type_info: TypeInfo::bytes(),
    })
    .unwrap();
    let storage =
        RawStorage::create(HeapRegion::zeroed(layout.total_len as usize), &layout).unwrap();
    Arc::new(Ring::new(storage, Recording::default()))
}

#[test]
fn an_armed_wake_slot_is_woken_once_then_the_fast_path_is_back() {
    use crate::entries::{wake_bell, WAKE_SLOTS};
    let ring = recording_ring();
    let (si, sg) = ring.attach_any_subscriber(1, StartAt::Latest).unwrap();
    let mut s = SubscriberPort::new(ring.clone(), si, sg).unwrap();
    let (pi, pg) = ring.attach_any_publisher(2).unwrap();
    let mut p = PublisherPort::new(ring.clone(), pi, pg).unwrap();
    let wakes = || ring.doorbell().wakes.load(Ordering::Relaxed);

    let (slot, generation) = ring.attach_waker(wake_bell::DATA, 1).unwrap();
    assert!(!ring.subscriber_ready(si, sg));
    let seq = ring.waker_seq(slot).unwrap();
    ring.arm_waker(slot, generation).unwrap();
    assert!(ring.waker_armed(slot));
    p.try_send(b"one").unwrap();
    p.try_send(b"two").unwrap();
    // The first ringer took the bit, bumped the word and woke it once; the second found
    // nothing armed and made no call.
    assert_eq!(wakes(), 1);
    assert!(!ring.waker_armed(slot));
    assert_ne!(
        ring.waker_seq(slot).unwrap(),
        seq,
        "the word moved: a sleeper wakes"
    );
    // A sleep on the value read before arming returns at once (the word moved).
    ring.sleep_waker(slot, seq, Some(Duration::from_secs(20)));
    assert!(ring.subscriber_ready(si, sg));
    assert!(!ring.disarm_waker(slot), "the ringer already took the bit");
    drop(s.try_recv().unwrap());

    // Released: never woken for again, and its next holder gets a new generation.
    ring.release_waker(slot, generation).unwrap();
    assert_eq!(
        ring.arm_waker(slot, generation),
        Err(AttachError::NotHeld(slot))
    );
    let (again, g2) = ring.attach_waker(wake_bell::DATA, 1).unwrap();
    assert_eq!((again, g2), (slot, generation + 1));
    assert_eq!(
        ring.release_waker(slot, generation),
        Err(AttachError::NotHeld(slot))
    );

    // Every slot can be taken once; then the table is full.
    let taken: Vec<_> = (1..WAKE_SLOTS)
        .map(|_| ring.attach_waker(wake_bell::SPACE, 1).unwrap())
        .collect();
    assert_eq!(
        ring.attach_waker(wake_bell::DATA, 1),
        Err(AttachError::TableFull)
    );
    assert_eq!(taken.len() + 1, WAKE_SLOTS);
    assert_eq!(ring.active_wakers().len(), WAKE_SLOTS);
    assert!(ring.attach_waker(7, 1).is_err(), "no such bell");
}

/// Armed bits that no waiter set (a hostile party wrote every bit of the bitmap) cost a ringer
/// one bump and one wake-up, however many bits there are, and are gone after it.
#[test]
fn forged_armed_bits_cost_a_ringer_one_wake_up() {
    let ring = recording_ring();
    let (pi, pg) = ring.attach_any_publisher(2).unwrap();
    let mut p = PublisherPort::new(ring.clone(), pi, pg).unwrap();
    for word in ring.storage.control().data.armed.iter() {
        word.store(u64::MAX, Ordering::Relaxed);
    }
    p.try_send(b"one").unwrap();
    assert_eq!(ring.doorbell().wakes.load(Ordering::Relaxed), 1);
    assert!(ring
        .storage
        .control()
        .data
        .armed
        .iter()
        .all(|w| w.load(Ordering::Relaxed) == 0));
    p.try_send(b"two").unwrap();
    assert_eq!(
        ring.doorbell().wakes.load(Ordering::Relaxed),
        1,
        "fast path again"
    );
}

#[test]
fn presence_counts_follow_the_tables() {
    let r = ring_with(Mode::Lossless, 4, 16, 3, 3);
    assert_eq!((r.publisher_count(), r.subscriber_count()), (0, 0));
    let p = publisher(&r);
    let s1 = subscriber(&r, StartAt::Latest);
    let s2 = subscriber(&r, StartAt::Latest);
    assert_eq!((r.publisher_count(), r.subscriber_count()), (1, 2));
    r.release_subscriber(s1.index(), s1.generation()).unwrap();
    assert_eq!(r.subscriber_count(), 1);
    r.evict_subscriber(s2.index(), s2.generation()).unwrap();
    assert_eq!(
        r.subscriber_count(),
        0,
        "an evicted subscriber does not count"
    );
    r.release_publisher(p.index(), p.generation()).unwrap();
    assert_eq!(r.publisher_count(), 0);
}

#[test]
fn presence_bell_wakes_a_waiter_when_a_subscriber_attaches() {
    let r = ring(Mode::Lossless, 4);
    let waiter = {
        let r = r.clone();
        thread::spawn(move || loop {
            let seq = r.presence_seq();
            if r.subscriber_count() >= 1 {
                return;
            }
            r.wait_presence(seq, PATIENCE);
        })
    };
    let _s = subscriber(&r, StartAt::Latest);
    r.presence_changed();
    waiter.join().unwrap();
}

#[test]
fn messages_published_with_no_subscriber_are_counted_as_unheard() {
    let r = ring(Mode::Lossy, 4);
    let mut p = publisher(&r);
    for _ in 0..3 {
        p.try_send(&[1]).unwrap();
    }
    assert_eq!(r.unheard(), 3, "nobody ever listened");
    let s = subscriber(&r, StartAt::Latest);
    r.presence_changed();
    for _ in 0..5 {
        p.try_send(&[2]).unwrap();
    }
    assert_eq!(r.unheard(), 3, "heard while a subscriber is attached");
    r.release_subscriber(s.index(), s.generation()).unwrap();
    r.presence_changed();
    p.try_send(&[3]).unwrap();
    assert_eq!(r.unheard(), 4);
    assert_eq!(r.stats().unheard, 4);
}
