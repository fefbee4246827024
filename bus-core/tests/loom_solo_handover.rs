//! Loom models of the solo claim (a topic's only publisher claims with a plain store instead of
//! a CAS) and its handover when a second publisher attaches: the two never claim one sequence,
//! whatever the interleaving of the solo claim with the attach.

#![cfg(loom)]

mod support;

use bus_core::layout::Mode;
use bus_core::ring::{PublisherPort, RecvError, StartAt};
use bus_core::wait::WaitStrategy;
use loom::thread;

use support::{check, msg, publisher, ring, subscriber};

/// Publisher A is alone on the topic and publishes (solo claims) while publisher B attaches
/// and publishes once. Each message arrives exactly once, with its publisher's bytes, and no
/// two writes of one slot overlap (loom reports that as a race). A lost handover (B and A both
/// claiming the first sequence) shows as a race on the slot, a duplicated sequence, or a
/// subscriber waiting forever.
#[test]
fn second_publisher_attaching_during_solo_claims_never_shares_a_sequence() {
    check(3, || {
        let ring = ring(Mode::Lossless, 8, 2, 1);
        let mut s = subscriber(&ring, 9, StartAt::Latest);
        let mut a = publisher(&ring, 1);
        assert!(!ring.is_shared(), "a lone publisher claims solo");
        let ta = thread::spawn(move || {
            a.try_send(&msg(0, 0)).unwrap();
        });
        // The supervisor attaches B (attaches are serialised; here the only one), then B's
        // port takes over from A's solo claims and publishes.
        let (bi, bg) = ring.attach_any_publisher(2).unwrap();
        assert!(
            ring.is_shared(),
            "a second publisher makes the topic shared"
        );
        let mut b = PublisherPort::new(ring.clone(), bi, bg).unwrap();
        b.try_send(&msg(1, 0)).unwrap();
        let mut seen = [false; 2];
        for n in 0..2u64 {
            let sample = s.recv(WaitStrategy::Block, None).unwrap();
            assert_eq!(sample.sequence(), n, "sequences must be dense and unique");
            let id = sample.publisher() as usize;
            assert!(!seen[id], "publisher {id} delivered twice");
            seen[id] = true;
            assert_eq!(&*sample.bytes(), &msg(id as u8, 0), "mixed payload");
        }
        ta.join().unwrap();
        assert!(matches!(s.try_recv(), Err(RecvError::Empty)));
    });
}

/// When the second publisher has left, the next lone publisher claims solo again, and its
/// messages follow the shared ones without a gap or a duplicate.
#[test]
fn topic_returns_to_solo_claims_when_a_publisher_attaches_alone() {
    check(3, || {
        let ring = ring(Mode::Lossless, 8, 2, 1);
        let mut s = subscriber(&ring, 9, StartAt::Latest);
        let mut a = publisher(&ring, 1);
        let mut b = publisher(&ring, 2);
        assert!(ring.is_shared());
        let tb = thread::spawn(move || {
            b.try_send(&msg(1, 0)).unwrap();
            b.detach().unwrap();
        });
        a.try_send(&msg(0, 0)).unwrap();
        a.detach().unwrap();
        let mut got = Vec::new();
        for n in 0..2u64 {
            let sample = s.recv(WaitStrategy::Block, None).unwrap();
            assert_eq!(sample.sequence(), n);
            got.push(sample.bytes()[0]);
        }
        tb.join().unwrap();
        let mut c = publisher(&ring, 3);
        assert!(!ring.is_shared(), "alone again: solo claims");
        c.try_send(&msg(2, 0)).unwrap();
        let sample = s.recv(WaitStrategy::Block, None).unwrap();
        assert_eq!(
            sample.sequence(),
            2,
            "the solo claim follows the shared ones"
        );
        assert_eq!(&*sample.bytes(), &msg(2, 0));
        got.sort_unstable();
        assert_eq!(got, [0, 1]);
    });
}
