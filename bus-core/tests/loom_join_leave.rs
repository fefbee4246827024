//! Loom models of subscribers joining and leaving a lossless topic while it is being
//! published: a joiner never reads a slot that a publisher may be writing, sees messages in
//! order, a leaver releases the back-pressure it was causing, and an evicted subscriber's late
//! cursor store never lands in another subscriber's entry.

#![cfg(loom)]

mod support;

use std::sync::Arc;

use bus_core::layout::Mode;
use bus_core::ring::{RecvError, StartAt, SubscriberPort};
use bus_core::wait::WaitStrategy;
use loom::sync::Mutex;
use loom::thread;

use support::{check, msg, publisher, ring, subscriber, Sub};

/// Read up to `tries` times without waiting; every message must be the publisher's message of
/// that sequence, in increasing order. Returns how many arrived.
fn read_some(s: &mut Sub, tries: usize) -> usize {
    let mut last = None;
    let mut got = 0;
    for _ in 0..tries {
        match s.try_recv() {
            Ok(sample) => {
                let seq = sample.sequence();
                assert!(last < Some(seq), "joiner saw sequence {seq} after {last:?}");
                last = Some(seq);
                assert_eq!(
                    &*sample.bytes(),
                    &msg(0, seq as u8),
                    "joiner read a wrong payload"
                );
                got += 1;
            }
            Err(RecvError::Empty) => thread::yield_now(),
            Err(e) => panic!("unexpected receive error {e:?}"),
        }
    }
    got
}

/// A subscriber joins at the newest message while three messages are being published through
/// two slots, reads what it can, and leaves. Its reads never race a write, what it reads is in
/// order, and the publisher (blocked on the full ring while the joiner lags) always finishes:
/// leaving releases the back-pressure.
#[test]
fn subscriber_joining_latest_and_leaving_during_publishing_is_safe() {
    check(3, || {
        let ring = ring(Mode::Lossless, 8, 1, 1);
        let mut p = publisher(&ring, 1);
        let t = thread::spawn(move || {
            for n in 0..3 {
                p.send(&msg(0, n), WaitStrategy::Block, None).unwrap();
            }
        });
        let mut s = subscriber(&ring, 2, StartAt::Latest);
        read_some(&mut s, 2);
        s.detach().unwrap();
        t.join().unwrap();
    });
}

/// A subscriber joins with `StartAt::Oldest` (replay what another live subscriber still
/// protects) while a steady subscriber reads the two messages the ring holds and a publisher
/// sends a third into the oldest slot. The joiner takes the lower table entry, so a publisher
/// scanning the table in order may pass the joiner's entry before the steady subscriber
/// advances. The joiner's reads must never race a write and must come in order, and its
/// leaving must not wedge anyone. (Every thread is spawned and the main thread only joins, so
/// that which thread starts first costs no preemption.)
#[test]
fn subscriber_joining_oldest_and_leaving_during_publishing_is_safe() {
    check(2, || {
        let ring = ring(Mode::Lossless, 8, 1, 2);
        let mut p = publisher(&ring, 1);
        // The steady subscriber takes entry 1, leaving entry 0 for the joiner.
        let g = ring.attach_subscriber(1, 2, StartAt::Latest).unwrap();
        let mut steady = SubscriberPort::new(ring.clone(), 1, g).unwrap();
        p.try_send(&msg(0, 0)).unwrap();
        p.try_send(&msg(0, 1)).unwrap();
        let tp = thread::spawn(move || {
            p.send(&msg(0, 2), WaitStrategy::Block, None).unwrap();
        });
        let ts = thread::spawn(move || {
            for n in 0..2u64 {
                let sample = steady.try_recv().unwrap();
                assert_eq!(sample.sequence(), n);
                assert_eq!(&*sample.bytes(), &msg(0, n as u8));
            }
        });
        let ring2 = ring.clone();
        let tj = thread::spawn(move || {
            let mut joiner = subscriber(&ring2, 3, StartAt::Oldest);
            assert_eq!(joiner.index(), 0);
            read_some(&mut joiner, 2);
            joiner.detach().unwrap();
        });
        tj.join().unwrap();
        tp.join().unwrap();
        ts.join().unwrap();
    });
}

/// The same join as above, but the joiner takes an entry *above* the subscribers' high-water
/// mark (`Flags::subscribers_high`): the steady subscriber holds entry 0, so a publisher's gate
/// scans one entry until the joiner raises the mark to two. A publisher whose gate read the old
/// mark must still never write the slot the joiner starts on: the joiner raises the mark before
/// its entry turns active, and the gate starts over when the mark it reads after its fence
/// differs.
#[test]
fn subscriber_joining_above_the_high_water_mark_never_reads_a_slot_being_written() {
    check(2, || {
        let ring = ring(Mode::Lossless, 8, 1, 2);
        let mut p = publisher(&ring, 1);
        // The steady subscriber takes entry 0: the mark is 1, and the joiner gets entry 1.
        let g = ring.attach_subscriber(0, 2, StartAt::Latest).unwrap();
        let mut steady = SubscriberPort::new(ring.clone(), 0, g).unwrap();
        p.try_send(&msg(0, 0)).unwrap();
        p.try_send(&msg(0, 1)).unwrap();
        let tp = thread::spawn(move || {
            p.send(&msg(0, 2), WaitStrategy::Block, None).unwrap();
        });
        let ts = thread::spawn(move || {
            for n in 0..2u64 {
                let sample = steady.try_recv().unwrap();
                assert_eq!(sample.sequence(), n);
                assert_eq!(&*sample.bytes(), &msg(0, n as u8));
            }
        });
        let ring2 = ring.clone();
        let tj = thread::spawn(move || {
            let mut joiner = subscriber(&ring2, 3, StartAt::Oldest);
            assert_eq!(joiner.index(), 1);
            read_some(&mut joiner, 2);
            joiner.detach().unwrap();
        });
        tj.join().unwrap();
        tp.join().unwrap();
        ts.join().unwrap();
    });
}

/// Two subscribers join with `StartAt::Oldest` one after the other (attaches are serialised,
/// as the daemon makes them), on a ring that already holds two messages and that no one else
/// reads, while a publisher (whose cached limit may predate both joins) sends a third message
/// into the oldest slot and the first joiner already reads. The second joiner may start where
/// the first one protects; neither may read a slot the publisher writes, and neither may see
/// `Lagged` on a lossless topic.
#[test]
fn subscribers_joining_oldest_back_to_back_never_read_a_slot_being_written() {
    check(2, || {
        let ring = ring(Mode::Lossless, 8, 1, 2);
        let mut p = publisher(&ring, 1);
        p.try_send(&msg(0, 0)).unwrap();
        p.try_send(&msg(0, 1)).unwrap();
        let tp = thread::spawn(move || {
            p.send(&msg(0, 2), WaitStrategy::Block, None).unwrap();
        });
        // The control plane: one attach at a time.
        let daemon = Arc::new(Mutex::new(()));
        let joiners: Vec<_> = (0..2)
            .map(|k| {
                let ring = ring.clone();
                let daemon = daemon.clone();
                thread::spawn(move || {
                    let mut s = {
                        let _one_at_a_time = daemon.lock().unwrap();
                        subscriber(&ring, 2 + k, StartAt::Oldest)
                    };
                    read_some(&mut s, 1);
                    s.detach().unwrap();
                })
            })
            .collect();
        for t in joiners {
            t.join().unwrap();
        }
        tp.join().unwrap();
    });
}

/// A supervisor evicts a subscriber (it held the full ring back) while that subscriber's port
/// still runs, a blocked publisher goes on, and a new subscriber joins. The evicted port may
/// still take and release a sample, which stores its cursor: that store must never land in the
/// new subscriber's entry, whatever the interleaving (an evicted entry is not reused until it
/// is reclaimed), and the publisher must finish.
#[test]
fn evicted_subscribers_late_release_never_moves_a_new_subscribers_cursor() {
    check(3, || {
        let ring = ring(Mode::Lossless, 8, 1, 2);
        let mut p = publisher(&ring, 1);
        let mut old = subscriber(&ring, 2, StartAt::Latest);
        let (oi, og) = (old.index(), old.generation());
        p.try_send(&msg(0, 0)).unwrap();
        p.try_send(&msg(0, 1)).unwrap();
        let tp = thread::spawn(move || {
            p.send(&msg(0, 2), WaitStrategy::Block, None).unwrap();
        });
        let to = thread::spawn(move || {
            // Only the release is modelled: the payload of a sample held across an eviction
            // may be overwritten (publishers no longer wait for the evicted cursor), which loom
            // reports as a race; `RecvError::Evicted` documents that such samples must go.
            if let Ok(sample) = old.try_recv() {
                assert_eq!(sample.sequence(), 0);
            }
        });
        ring.evict_subscriber(oi, og).unwrap();
        let new = subscriber(&ring, 3, StartAt::Latest);
        let cursor = |r: &support::ModelRing| {
            r.stats()
                .subscribers
                .iter()
                .find(|s| s.0 == new.index())
                .map(|s| s.2)
        };
        let joined_at = cursor(&ring);
        to.join().unwrap();
        assert_eq!(
            cursor(&ring),
            joined_at,
            "the evicted port moved the new cursor"
        );
        tp.join().unwrap();
        assert_eq!(cursor(&ring), joined_at);
    });
}
