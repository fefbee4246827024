//! Loom models of the doorbells: a sleeper is always woken by the change it waits for. A lost
//! wake-up leaves a thread asleep forever, which loom reports as a deadlock.

#![cfg(loom)]

mod support;

use bus_core::layout::Mode;
use bus_core::ring::StartAt;
use bus_core::wait::WaitStrategy;
use loom::thread;

use support::{check, msg, publisher, ring, subscriber};

/// A subscriber blocks (parks on the data bell) while a publisher publishes one message: the
/// subscriber always wakes and receives it.
#[test]
fn doorbell_has_no_lost_wakeup() {
    check(3, || {
        let ring = ring(Mode::Lossless, 8, 1, 1);
        let mut p = publisher(&ring, 1);
        let mut s = subscriber(&ring, 2, StartAt::Latest);
        let t = thread::spawn(move || {
            p.try_send(&msg(0, 0)).unwrap();
        });
        let sample = s.recv(WaitStrategy::Block, None).unwrap();
        assert_eq!(&*sample.bytes(), &msg(0, 0));
        drop(sample);
        t.join().unwrap();
    });
}

/// A lossless publisher blocks (parks on the space bell) on a full ring; the subscriber then
/// releases the oldest slot. The publisher always wakes and publishes.
#[test]
fn space_bell_has_no_lost_wakeup_when_a_subscriber_releases() {
    check(3, || {
        let ring = ring(Mode::Lossless, 8, 1, 1);
        let mut p = publisher(&ring, 1);
        let mut s = subscriber(&ring, 2, StartAt::Latest);
        p.try_send(&msg(0, 0)).unwrap();
        p.try_send(&msg(0, 1)).unwrap();
        let t = thread::spawn(move || {
            p.send(&msg(0, 2), WaitStrategy::Block, None).unwrap();
        });
        let sample = s.try_recv().unwrap();
        assert_eq!(sample.sequence(), 0);
        drop(sample);
        t.join().unwrap();
    });
}

/// A lossless publisher blocks on a ring filled by a subscriber that then leaves: leaving
/// rings the space bell, and the publisher always wakes.
#[test]
fn space_bell_has_no_lost_wakeup_when_a_subscriber_leaves() {
    check(3, || {
        let ring = ring(Mode::Lossless, 8, 1, 1);
        let mut p = publisher(&ring, 1);
        let s = subscriber(&ring, 2, StartAt::Latest);
        p.try_send(&msg(0, 0)).unwrap();
        p.try_send(&msg(0, 1)).unwrap();
        let t = thread::spawn(move || {
            p.send(&msg(0, 2), WaitStrategy::Block, None).unwrap();
        });
        s.detach().unwrap();
        t.join().unwrap();
    });
}
