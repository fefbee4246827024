//! The presence bell: a port waiting for its peer count to change is never left asleep.

#![cfg(loom)]

mod support;

use bus_core::entries::wake_bell;
use bus_core::layout::Mode;
use bus_core::ring::StartAt;
use loom::thread;
use support::*;

/// A publisher's port waits for a subscriber (read the word, count, sleep on the word) while
/// the supervisor attaches one and rings the presence bell. Whatever the interleaving, the
/// waiter wakes and sees the subscriber (a lost wake-up is a deadlock loom reports).
#[test]
fn waiter_for_a_subscriber_is_woken_by_the_attach() {
    check(3, || {
        let ring = ring(Mode::Lossless, 8, 1, 1);
        let waiter = {
            let ring = ring.clone();
            thread::spawn(move || loop {
                let seq = ring.presence_seq();
                if ring.subscriber_count() == 1 {
                    return;
                }
                ring.wait_presence(seq, None);
            })
        };
        let (i, _) = ring.attach_any_subscriber(2, StartAt::Latest).unwrap();
        assert_eq!(i, 0);
        ring.presence_changed();
        waiter.join().unwrap();
    });
}

/// The same for a count that falls: the supervisor releases the only subscriber while a port
/// waits for none; and for a wake slot on the presence bell (a wait set): arm, heavy barrier,
/// count; the ringer's fence is between its change and its look at the bits, so either the
/// count sees the release or the ringer takes the bit.
#[test]
fn wake_slot_on_the_presence_bell_sees_a_release_or_is_taken() {
    check(3, || {
        let ring = ring(Mode::Lossless, 8, 1, 1);
        let (si, sg) = ring.attach_any_subscriber(2, StartAt::Latest).unwrap();
        let (slot, wg) = ring.attach_waker(wake_bell::PRESENCE, 3).unwrap();
        let supervisor = {
            let ring = ring.clone();
            thread::spawn(move || {
                ring.release_subscriber(si, sg).unwrap();
                ring.presence_changed();
            })
        };
        ring.arm_waker(slot, wg).unwrap();
        if ring.subscriber_count() == 0 {
            ring.disarm_waker(slot);
        } else {
            // What the agent does: the word, then the bit; sleep on the word while the bit is
            // still set.
            loop {
                let seq = ring.waker_seq(slot).unwrap();
                if !ring.waker_armed(slot) {
                    break;
                }
                ring.sleep_waker(slot, seq, None);
            }
        }
        supervisor.join().unwrap();
        assert_eq!(ring.subscriber_count(), 0);
    });
}
