//! Loom models of the wake slots: waiters that sleep through a descriptor of their own (async
//! code, wait sets) rather than in a blocking call. In a process, a wake agent sleeps on the
//! bell's futex word for them and wakes a waiter when its armed bit was taken; the models run
//! the agent's loop (`agent_wait`) in the waiter's thread. A wake-up that never comes is a
//! loom deadlock.

#![cfg(loom)]

mod support;

use bus_core::entries::wake_bell;
use bus_core::layout::Mode;
use bus_core::ring::{RecvError, StartAt};
use loom::thread;

use support::{check, msg, publisher, ring, subscriber, ModelRing};

/// The agent's loop for one slot armed after reading `seq`: return once the word no longer
/// holds it (the bell rang), else sleep while it does.
fn agent_wait(ring: &ModelRing, slot: usize, seq: u32) {
    while ring.waker_seq(slot).unwrap() == seq {
        ring.sleep_waker(slot, seq, None);
    }
}

/// Two publishers each publish one message while a subscriber that sleeps through a wake slot
/// waits for both: read the word, arm, re-check, sleep through the agent, disarm. Every message
/// arrives (no lost wake-up), whichever publisher rings.
#[test]
fn an_armed_waiter_is_woken_by_either_of_two_publishers() {
    check(2, || {
        let ring = ring(Mode::Lossless, 8, 2, 1);
        let mut s = subscriber(&ring, 3, StartAt::Latest);
        let (slot, wg) = ring.attach_waker(wake_bell::DATA, 3).unwrap();
        let mut p1 = publisher(&ring, 1);
        let mut p2 = publisher(&ring, 2);
        let t1 = thread::spawn(move || p1.try_send(&msg(1, 0)).map(drop).unwrap());
        let t2 = thread::spawn(move || p2.try_send(&msg(2, 0)).map(drop).unwrap());
        let mut got = 0;
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
            let seq = ring.waker_seq(slot).unwrap();
            ring.arm_waker(slot, wg).unwrap();
            if ring.subscriber_ready(s.index(), s.generation()) {
                ring.disarm_waker(slot);
                continue;
            }
            agent_wait(&ring, slot, seq);
            assert!(!ring.disarm_waker(slot), "woken but still armed");
        }
        t1.join().unwrap();
        t2.join().unwrap();
    });
}

/// A waiter that arms and then gives up (a cancelled future) while a publisher rings: either
/// its disarm finds the bit or a ringer took it and bumped the word. Either way no bit is left
/// behind, so later publishes stay on the fast path (the word no longer moves).
#[test]
fn a_waiter_that_gives_up_leaves_no_armed_bit() {
    check(3, || {
        let ring = ring(Mode::Lossless, 8, 1, 1);
        let s = subscriber(&ring, 2, StartAt::Latest);
        let (slot, wg) = ring.attach_waker(wake_bell::DATA, 2).unwrap();
        let mut p = publisher(&ring, 1);
        let seq = ring.waker_seq(slot).unwrap();
        let r = ring.clone();
        let t = thread::spawn(move || {
            p.try_send(&msg(1, 0)).map(drop).unwrap();
            p
        });
        ring.arm_waker(slot, wg).unwrap();
        let _ready = ring.subscriber_ready(s.index(), s.generation());
        let still_armed = ring.disarm_waker(slot);
        let mut p = t.join().unwrap();
        let after = ring.waker_seq(slot).unwrap();
        if !still_armed {
            assert_ne!(after, seq, "the bit was taken but the word did not move");
        }
        assert!(!ring.disarm_waker(slot), "a bit was left behind");
        p.try_send(&msg(1, 1)).map(drop).unwrap();
        assert_eq!(
            r.waker_seq(slot).unwrap(),
            after,
            "a ring with nobody armed moved the word"
        );
    });
}

/// The supervisor releases the slot of a waiter that died armed while a publisher rings: the
/// bit is cleared, so the word moves at most once, and later rings leave it alone.
#[test]
fn a_released_slot_of_a_dead_waiter_costs_ringers_nothing_more() {
    check(3, || {
        let ring = ring(Mode::Lossless, 8, 1, 1);
        let _s = subscriber(&ring, 2, StartAt::Latest);
        let (slot, generation) = ring.attach_waker(wake_bell::DATA, 2).unwrap();
        let seq = ring.waker_seq(slot).unwrap();
        ring.arm_waker(slot, generation).unwrap();
        let mut p = publisher(&ring, 1);
        let r = ring.clone();
        let t = thread::spawn(move || r.release_waker(slot, generation).unwrap());
        p.try_send(&msg(1, 0)).unwrap();
        t.join().unwrap();
        let before = ring.waker_seq(slot).unwrap();
        assert!(before.wrapping_sub(seq) <= 1);
        p.try_send(&msg(1, 1)).unwrap();
        assert_eq!(
            ring.waker_seq(slot).unwrap(),
            before,
            "a released slot moved the word"
        );
        assert!(!ring.waker_held(slot, generation));
        assert!(!ring.waker_armed(slot));
    });
}
