//! Loom model of the repair of a publisher that died between claim and commit.

#![cfg(loom)]

mod support;

use bus_core::layout::Mode;
use bus_core::ring::{RecvError, RepairOutcome, SendError, StartAt};
use bus_core::wait::WaitStrategy;
use loom::thread;

use support::{check, msg, publisher, ring, subscriber};

/// Publisher A claims a slot and dies (its loan is forgotten: never committed, never dropped)
/// while publisher B sends two messages through the two slots and a subscriber waits for them.
/// After A's death a supervisor repairs A's entry, retrying while the outcome is `Pending`. The
/// subscriber receives both of B's messages, in order, never anything of A's, and never wedges
/// on A's dead claim (a wedge, or a lost wake-up after the repair, shows as a loom deadlock).
///
/// A runs on the supervisor's thread, just before the repair: that orders A's death before the
/// repair exactly as joining A's thread would, and saves loom a thread.
#[test]
fn repair_of_dead_publisher_claim_unblocks_subscriber() {
    check(2, || {
        let ring = ring(Mode::Lossless, 8, 2, 1);
        let mut a = publisher(&ring, 1);
        let mut b = publisher(&ring, 2);
        let (ai, ag) = (a.index(), a.generation());
        let bi = b.index();
        let mut s = subscriber(&ring, 3, StartAt::Latest);

        let tb = thread::spawn(move || {
            for n in 0..2 {
                b.send(&msg(1, n), WaitStrategy::Block, None).unwrap();
            }
        });
        let supervisor = {
            let ring = ring.clone();
            thread::spawn(move || {
                // Publisher A: claim, then die without committing or dropping the loan.
                let claimed = match a.try_loan() {
                    Ok(loan) => {
                        std::mem::forget(loan);
                        true
                    }
                    // B filled the ring first; A dies holding nothing.
                    Err(SendError::Full) => false,
                    Err(e) => panic!("unexpected loan error {e:?}"),
                };
                drop(a);
                // The supervisor, after A's death: repair, retrying while undecidable.
                let outcome = loop {
                    match ring.repair_publisher(ai, ag, |i, _| i == bi).unwrap() {
                        RepairOutcome::Pending => thread::yield_now(),
                        done => break done,
                    }
                };
                if claimed {
                    assert!(
                        matches!(outcome, RepairOutcome::Skipped { .. }),
                        "{outcome:?}"
                    );
                } else {
                    assert_eq!(outcome, RepairOutcome::Clean);
                }
                assert!(
                    !ring.publisher_held(ai, ag),
                    "repair must release the dead entry"
                );
            })
        };

        for n in 0..2u8 {
            let sample = s.recv(WaitStrategy::Block, None).unwrap();
            assert_eq!(
                sample.publisher() as usize,
                bi,
                "received the dead publisher's claim"
            );
            assert_eq!(&*sample.bytes(), &msg(1, n));
        }
        supervisor.join().unwrap();
        tb.join().unwrap();
        // A's sequence was skipped: nothing else is left to read.
        assert!(matches!(s.try_recv(), Err(RecvError::Empty)));
    });
}
