//! The daemon's deadlines. Nothing runs on a fixed tick: each kind of work the daemon does on
//! its own has a deadline here only while there is such work, so an idle daemon sleeps in
//! `epoll_wait` with no timeout at all.
//!
//! | timer | armed while |
//! | --- | --- |
//! | `Repairs` | a dead publisher's claim could not be repaired yet (retried every 10 ms) |
//! | `Adopt` | after a restart: the adopt grace, then the time recorded topics are kept |
//! | `Orphans` | after the adopt grace, ports of a previous daemon whose processes live on |
//! | `Watch(topic)` | a publisher of that topic is held back (see `watch`) |
//! | `Accept` | `accept` failed for want of descriptors; try again shortly |

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::time::{Duration, Instant};

/// What a deadline is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Timer {
    Repairs,
    Adopt,
    Orphans,
    Watch(String),
    Accept,
}

/// Deadlines, earliest first; at most one armed per [`Timer`].
#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
    armed: HashSet<Timer>,
}

impl Timers {
    /// Arm `timer` for `at`, unless it is armed already.
    pub(super) fn arm(&mut self, timer: Timer, at: Instant) {
        if self.armed.insert(timer.clone()) {
            self.heap.push(Reverse((at, timer)));
        }
    }

    /// How long until the earliest deadline (`None`: nothing is armed).
    pub(super) fn timeout(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((at, _))| at.saturating_duration_since(now))
    }

    /// The next timer that is due at `now`, disarmed.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => {
                let Reverse((_, timer)) = self.heap.pop()?;
                self.armed.remove(&timer);
                Some(timer)
            }
            _ => None,
        }
    }

    /// How many timers are armed.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_order_once_each() {
        let mut t = Timers::default();
        let now = Instant::now();
        assert_eq!(t.timeout(now), None);
        t.arm(Timer::Watch("b".into()), now + Duration::from_millis(20));
        t.arm(Timer::Repairs, now + Duration::from_millis(10));
        t.arm(Timer::Repairs, now + Duration::from_millis(1));
        assert_eq!(t.len(), 2, "a timer armed twice is armed once");
        assert_eq!(t.timeout(now), Some(Duration::from_millis(10)));
        assert_eq!(t.pop_due(now), None);
        let later = now + Duration::from_millis(30);
        assert_eq!(t.pop_due(later), Some(Timer::Repairs));
        assert_eq!(t.pop_due(later), Some(Timer::Watch("b".into())));
        assert_eq!(t.pop_due(later), None);
        t.arm(Timer::Repairs, later);
        assert_eq!(t.pop_due(later), Some(Timer::Repairs));
    }
}
