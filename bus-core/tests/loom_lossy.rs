//! Loom models of the lossy data path: the seqlock-validated copy never delivers a torn or
//! stale message, and a reader that falls behind is told how far.

#![cfg(loom)]

mod support;

use bus_core::layout::Mode;
use bus_core::ring::{RecvError, StartAt};
use loom::thread;

use support::{check, decode_words, publisher, ring, subscriber, words};

/// A publisher writes three 16-byte messages (both words equal to the message number) through
/// two slots while a reader copies them out. Every delivered message is whole (both words
/// agree), is the message its sequence says, and comes exactly at the next expected sequence;
/// `Lagged(n)` moves the expectation forward by `n`. Sequences never go backwards.
#[test]
fn lossy_lagging_reader_gets_lagged_never_torn_or_stale() {
    check(3, || {
        let ring = ring(Mode::Lossy, 16, 1, 1);
        let mut p = publisher(&ring, 1);
        let mut s = subscriber(&ring, 2, StartAt::Latest);
        let t = thread::spawn(move || {
            for n in 0..3 {
                assert_eq!(p.try_send(&words(n)).unwrap(), n);
            }
        });
        let mut next = 0;
        let mut delivered = 0;
        let mut buf = [0u8; 16];
        loop {
            match s.try_recv_into(&mut buf) {
                Ok((seq, len)) => {
                    assert_eq!(len, 16);
                    assert_eq!(seq, next, "sequence skipped or went backwards");
                    assert_eq!(decode_words(&buf), seq, "stale payload for sequence {seq}");
                    next = seq + 1;
                    delivered += 1;
                    if seq == 2 {
                        break;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    assert!(n > 0);
                    next += n;
                    assert!(next <= 2, "lagged past the last message");
                }
                Err(RecvError::Empty) => thread::yield_now(),
                Err(e) => panic!("unexpected receive error {e:?}"),
            }
        }
        // Every message was either delivered or counted as lost.
        assert_eq!(delivered + s.lagged(), 3);
        t.join().unwrap();
    });
}
