//! Loom models of several publishers on one ring: claims never collide, each publisher's
//! messages keep their order, and two writers never touch one slot at once.

#![cfg(loom)]

mod support;

use bus_core::layout::Mode;
use bus_core::ring::{RecvError, StartAt};
use bus_core::wait::WaitStrategy;
use loom::thread;

use support::{check, msg, publisher, ring, subscriber};

/// Two publisher threads send two messages each through two slots while one subscriber reads:
/// every message arrives exactly once, with the bytes its publisher wrote, and each publisher's
/// messages arrive in the order it sent them.
#[test]
fn two_publishers_one_subscriber_each_message_once_per_publisher_order() {
    check(2, || {
        let ring = ring(Mode::Lossless, 8, 2, 1);
        let mut s = subscriber(&ring, 9, StartAt::Latest);
        let senders: Vec<_> = (0..2u8)
            .map(|id| {
                let mut p = publisher(&ring, u32::from(id) + 1);
                assert_eq!(p.index(), usize::from(id));
                thread::spawn(move || {
                    for n in 0..2 {
                        p.send(&msg(id, n), WaitStrategy::Block, None).unwrap();
                    }
                })
            })
            .collect();
        let mut next = [0u8; 2];
        let mut last_seq = None;
        for _ in 0..4 {
            let sample = s.recv(WaitStrategy::Block, None).unwrap();
            let id = sample.publisher() as usize;
            assert!(id < 2, "unknown publisher {id}");
            assert_eq!(
                &*sample.bytes(),
                &msg(id as u8, next[id]),
                "publisher {id}'s messages out of order, duplicated or corrupted"
            );
            next[id] += 1;
            assert!(
                last_seq < Some(sample.sequence()),
                "sequence went backwards"
            );
            last_seq = Some(sample.sequence());
        }
        assert_eq!(next, [2, 2]);
        for t in senders {
            t.join().unwrap();
        }
        assert!(matches!(s.try_recv(), Err(RecvError::Empty)));
    });
}

/// With no subscriber to hold it back, a lossless publisher may claim a whole lap ahead of a
/// slower one. The lapping publisher must wait for the slot's previous occupant to be
/// committed before writing it: loom reports any overlap of the two writes.
#[test]
fn publisher_lapping_another_waits_for_the_previous_occupant() {
    check(3, || {
        let ring = ring(Mode::Lossless, 8, 2, 1);
        let mut a = publisher(&ring, 1);
        let mut b = publisher(&ring, 2);
        let t = thread::spawn(move || a.try_send(&msg(0, 0)).unwrap());
        // Two claims: one of them lands on the slot `a` may still be writing.
        let mine = [
            b.try_send(&msg(1, 0)).unwrap(),
            b.try_send(&msg(1, 1)).unwrap(),
        ];
        assert!(mine[0] < mine[1], "a publisher's claims went backwards");
        let theirs = t.join().unwrap();
        let mut all = vec![theirs, mine[0], mine[1]];
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2], "two claims got the same sequence");
    });
}
