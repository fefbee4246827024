//! Loom models of the wake slots: waiters that sleep on a descriptor of their own (an eventfd
//! for async code and wait sets) instead of the bell's futex word. The model doorbell counts
//! the notifications per slot and lets a waiter block until its count moves, like a read of
//! its eventfd; a wake-up that never comes is a loom deadlock.

#![cfg(loom)]

mod support;

use bus_core::entries::wake_bell;
use bus_core::layout::Mode;
use bus_core::ring::{RecvError, StartAt};
use loom::thread;

use support::{check, msg, publisher, ring, subscriber};

/// Two publishers each publish one message while a subscriber that sleeps on a wake slot
/// waits for both: arm, re-check, sleep on the descriptor, disarm. Every message arrives (no
/// lost wake-up) and the slot is notified at most once per arming, whichever publisher rings
/// (the armed bit is taken by one ringer only).
#[test]
fn an_armed_waiter_is_woken_once_per_arming_by_one_of_two_publishers() {
    check(2, || {
        let ring = ring(Mode::Lossless, 8, 2, 1);
        let mut s = subscriber(&ring, 3, StartAt::Latest);
        let (slot, wg) = ring.attach_waker(wake_bell::DATA, 3).unwrap();
        let mut p1 = publisher(&ring, 1);
        let mut p2 = publisher(&ring, 2);
        let t1 = thread::spawn(move || p1.try_send(&msg(1, 0)).map(drop).unwrap());
        let t2 = thread::spawn(move || p2.try_send(&msg(2, 0)).map(drop).unwrap());
        let (mut got, mut armings, mut seen) = (0, 0u64, 0u64);
        while got < 2 {
            match s.try_recv() {
                Ok(sample) => {
                    assert_eq!(sample.bytes()[1], 0, "a message of the model's");
                    got += 1;
                    continue;
                }
                Err(RecvError::Empty) => {}
                Err(e) => panic!("receive: {e:?}"),
            }
            ring.arm_waker(slot, wg).unwrap();
            armings += 1;
            let (index, generation) = (s.index(), s.generation());
            if ring.subscriber_ready(index, generation) {
                if !ring.disarm_waker(slot) {
                    // A ringer took the bit: its notification is coming; take it now.
                    seen = ring.doorbell().wait_notified(slot, seen);
                }
                continue;
            }
            seen = ring.doorbell().wait_notified(slot, seen);
            // A ringer cleared the bit when it notified.
            assert!(!ring.disarm_waker(slot), "notified but still armed");
        }
        t1.join().unwrap();
        t2.join().unwrap();
        let notified = ring.doorbell().notified(slot);
        assert!(
            notified <= armings,
            "{notified} notifications for {armings} armings: a double wake-up"
        );
    });
}

/// A waiter that arms and then gives up (a cancelled future) while a publisher rings: if its
/// disarm found the bit, nobody notifies it; if a ringer took the bit first, exactly one
/// notification comes. Either way no bit is left behind, so later publishes stay on the fast
/// path.
#[test]
fn a_waiter_that_gives_up_leaves_no_armed_bit_and_at_most_one_notification() {
    check(3, || {
        let ring = ring(Mode::Lossless, 8, 1, 1);
        let s = subscriber(&ring, 2, StartAt::Latest);
        let (slot, wg) = ring.attach_waker(wake_bell::DATA, 2).unwrap();
        let mut p = publisher(&ring, 1);
        let t = thread::spawn(move || p.try_send(&msg(1, 0)).map(drop).unwrap());
        ring.arm_waker(slot, wg).unwrap();
        let _ready = ring.subscriber_ready(s.index(), s.generation());
        let still_armed = ring.disarm_waker(slot);
        t.join().unwrap();
        let notified = ring.doorbell().notified(slot);
        if still_armed {
            assert_eq!(notified, 0, "notified after disarming");
        } else {
            assert_eq!(notified, 1, "the bit was taken but nobody was notified");
        }
        assert!(!ring.disarm_waker(slot), "a bit was left behind");
    });
}

/// The supervisor releases the slot of a waiter that died armed while a publisher rings: the
/// bit is cleared, so the notification comes at most once, and later rings notify nobody.
#[test]
fn a_released_slot_of_a_dead_waiter_is_not_notified_again() {
    check(3, || {
        let ring = ring(Mode::Lossless, 8, 1, 1);
        let _s = subscriber(&ring, 2, StartAt::Latest);
        let (slot, generation) = ring.attach_waker(wake_bell::DATA, 2).unwrap();
        ring.arm_waker(slot, generation).unwrap();
        let mut p = publisher(&ring, 1);
        let r = ring.clone();
        let t = thread::spawn(move || r.release_waker(slot, generation).unwrap());
        p.try_send(&msg(1, 0)).unwrap();
        t.join().unwrap();
        assert!(ring.doorbell().notified(slot) <= 1);
        let before = ring.doorbell().notified(slot);
        p.try_send(&msg(1, 1)).unwrap();
        assert_eq!(
            ring.doorbell().notified(slot),
            before,
            "a released slot was notified"
        );
        assert!(!ring.waker_held(slot, generation));
    });
}
