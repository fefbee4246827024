//! Loom models of the lossless data path: delivery through wrap-around, and the back-pressure
//! that keeps a publisher off a slot a subscriber still reads.

#![cfg(loom)]

mod support;

use std::sync::Arc;

use bus_core::layout::Mode;
use bus_core::ring::{RecvError, SendError, StartAt};
use bus_core::wait::WaitStrategy;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;

use support::{check, msg, publisher, ring, subscriber};

/// One publisher, one subscriber, three messages through two slots (the third reuses slot 0):
/// every message arrives once, in order, with its own bytes; loom checks that no read of a
/// payload races its write.
#[test]
fn lossless_spsc_wraparound_delivers_every_message_once_in_order() {
    check(3, || {
        let ring = ring(Mode::Lossless, 8, 1, 1);
        let mut p = publisher(&ring, 1);
        let mut s = subscriber(&ring, 2, StartAt::Latest);
        let t = thread::spawn(move || {
            for n in 0..3 {
                let seq = p.send(&msg(0, n), WaitStrategy::Block, None).unwrap();
                assert_eq!(seq, u64::from(n));
            }
        });
        for n in 0..3u8 {
            let sample = s.recv(WaitStrategy::Block, None).unwrap();
            assert_eq!(
                sample.sequence(),
                u64::from(n),
                "out of order or duplicated"
            );
            assert_eq!(sample.publisher(), 0);
            assert_eq!(
                &*sample.bytes(),
                &msg(0, n),
                "wrong payload for message {n}"
            );
        }
        t.join().unwrap();
        assert!(matches!(s.try_recv(), Err(RecvError::Empty)));
    });
}

/// The subscriber holds message 0 in place while the publisher keeps trying to publish into its
/// slot. `try_send` is `Full` until the sample is dropped, succeeds only after the release, and
/// the held bytes never change (loom also reports any write that races the held view).
#[test]
fn lossless_publisher_never_overwrites_an_unreleased_slot() {
    check(3, || {
        let ring = ring(Mode::Lossless, 8, 1, 1);
        let mut p = publisher(&ring, 1);
        let mut s = subscriber(&ring, 2, StartAt::Latest);
        p.try_send(&msg(0, 0)).unwrap();
        p.try_send(&msg(0, 1)).unwrap();
        // Both slots hold unread messages: the ring is full.
        assert_eq!(p.try_send(&msg(0, 2)), Err(SendError::Full));

        let released = Arc::new(AtomicBool::new(false));
        let seen_release = released.clone();
        let t = thread::spawn(move || loop {
            match p.try_send(&msg(0, 2)) {
                Ok(seq) => {
                    assert_eq!(seq, 2);
                    // Relaxed: the flag is stored before the cursor's release store, which our
                    // gate acquired; no other synchronisation is added.
                    assert!(
                        seen_release.load(Ordering::Relaxed),
                        "published into a slot whose sample is still held"
                    );
                    break;
                }
                Err(SendError::Full) => thread::yield_now(),
                Err(e) => panic!("unexpected send error {e:?}"),
            }
        });

        {
            let sample = s.try_recv().unwrap();
            assert_eq!(sample.sequence(), 0);
            let view = sample.bytes();
            assert_eq!(&*view, &msg(0, 0));
            // Hold the view while the publisher tries.
            thread::yield_now();
            assert_eq!(&*view, &msg(0, 0), "held payload changed under the sample");
            drop(view);
            released.store(true, Ordering::Relaxed);
        }
        for n in 1..3u8 {
            let sample = s.recv(WaitStrategy::Block, None).unwrap();
            assert_eq!(sample.sequence(), u64::from(n));
            assert_eq!(&*sample.bytes(), &msg(0, n));
        }
        t.join().unwrap();
    });
}
