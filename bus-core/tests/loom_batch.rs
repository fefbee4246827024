//! Loom models of the batch calls: `try_send_many` (one wake-up for the batch) and
//! `try_recv_many` (one cursor release for the batch).

#![cfg(loom)]

mod support;

use bus_core::layout::Mode;
use bus_core::ring::{RecvError, StartAt};
use bus_core::wait::WaitStrategy;
use loom::thread;

use support::{check, msg, publisher, ring, subscriber};

/// A publisher sends two messages with one `try_send_many` (filling both slots) and then a
/// third with a blocking send, while the subscriber drains with `try_recv_many` and sleeps
/// when nothing is ready. Every message arrives once, in order, with its bytes; the batch's
/// single release wakes the publisher blocked on the full ring, and the batch's single data
/// bell wakes the subscriber (a lost wake-up is a loom deadlock); no read races a write.
#[test]
fn batch_send_and_batch_receive_deliver_every_message_once_and_wake_both_sides() {
    check(3, || {
        let ring = ring(Mode::Lossless, 8, 1, 1);
        let mut p = publisher(&ring, 1);
        let mut s = subscriber(&ring, 2, StartAt::Latest);
        let t = thread::spawn(move || {
            let batch = [&msg(0, 0)[..], &msg(0, 1)[..]];
            assert_eq!(p.try_send_many(&batch), Ok(2));
            p.send(&msg(0, 2), WaitStrategy::Block, None).unwrap();
        });
        let mut next = 0u64;
        while next < 3 {
            match s.try_recv_many(2, |seq, bytes| {
                assert_eq!(seq, next, "out of order or duplicated");
                assert_eq!(bytes, &msg(0, seq as u8), "wrong payload for {seq}");
                next += 1;
            }) {
                Ok(n) => assert!(n > 0),
                Err(RecvError::Empty) => {
                    // Sleep until something is ready (the data bell), without consuming it.
                    s.peek(WaitStrategy::Block, None, true).unwrap();
                }
                Err(e) => panic!("unexpected receive error {e:?}"),
            }
        }
        t.join().unwrap();
        assert!(matches!(
            s.try_recv_many(2, |_, _| {}),
            Err(RecvError::Empty)
        ));
    });
}
