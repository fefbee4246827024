//! How a port waits: busy-poll, block, or spin-then-park.

use std::time::{Duration, Instant};

/// How `recv` and a blocking `send` wait for their condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Spin on the shared memory: the lowest latency, a whole core while waiting (it yields
    /// the CPU once every 16384 rounds, so that a peer sharing the CPU can run).
    BusyPoll,
    /// Sleep on the futex at once: the lowest CPU, a wake-up costs a system call.
    Block,
    /// Spin `spins` times, then yield `yields` times, then sleep on the futex.
    Adaptive {
        /// Busy iterations before yielding.
        spins: u32,
        /// Yields before sleeping.
        yields: u32,
    },
}

impl Default for WaitStrategy {
    /// Spin for a few microseconds, yield a little, then park.
    fn default() -> Self {
        WaitStrategy::Adaptive {
            spins: 2_000,
            yields: 20,
        }
    }
}

/// A spinning waiter looks at the clock once every this many rounds.
const CLOCK_EVERY: u32 = 64;
/// A busy-polling waiter yields the CPU once every this many rounds (tens of microseconds).
const YIELD_EVERY: u32 = 1 << 14;

/// What a waiter does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Spin,
    Yield,
    Park,
}

/// The state of one wait. The clock is read only once the wait really waits (the first
/// `step`), so a call that finds its condition at once costs no clock read.
#[derive(Debug)]
pub(crate) struct Waiter {
    strategy: WaitStrategy,
    rounds: u32,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
}

impl Waiter {
    pub(crate) fn new(strategy: WaitStrategy, timeout: Option<Duration>) -> Waiter {
        Waiter {
            strategy,
            rounds: 0,
            timeout,
            deadline: None,
        }
    }

    /// The next step, or `None` once the deadline has passed. While spinning, the clock is
    /// read only every [`CLOCK_EVERY`] rounds: a clock read costs as much as several polls of
    /// the shared memory, and a spinning waiter must notice a message as soon as it lands.
    pub(crate) fn step(&mut self) -> Option<Step> {
        if self.rounds == 0 {
            self.deadline = self.timeout.and_then(|t| Instant::now().checked_add(t));
        }
        let step = match self.strategy {
            // A busy poller still yields once in a long while, as the floors it is measured
            // against do: on an oversubscribed CPU a spinner that never yields burns its whole
            // time slice while the peer it waits for cannot run.
            WaitStrategy::BusyPoll if self.rounds % YIELD_EVERY == YIELD_EVERY - 1 => Step::Yield,
            WaitStrategy::BusyPoll => Step::Spin,
            WaitStrategy::Block => Step::Park,
            WaitStrategy::Adaptive { spins, yields } => {
                if self.rounds < spins {
                    Step::Spin
                } else if self.rounds < spins.saturating_add(yields) {
                    Step::Yield
                } else {
                    Step::Park
                }
            }
        };
        let look = step != Step::Spin || self.rounds.is_multiple_of(CLOCK_EVERY);
        if look && self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        self.rounds = self.rounds.saturating_add(1);
        Some(step)
    }

    /// How long a park may last: until the deadline, or without bound. A sleeper needs no
    /// periodic look around: every change it waits for rings its bell (a message, room, a
    /// close, an eviction, a repair), and so does its client when the supervisor dies (see
    /// [`crate::doorbell::Doorbell::interrupted`]).
    pub(crate) fn park_timeout(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// A short wait for another publisher to finish writing a slot: spin, then yield, then sleep
/// briefly. Used only where the wait is bounded by someone else's copy (or a repair).
pub(crate) struct Backoff {
    n: u32,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff { n: 0 }
    }

    /// Whether the back-off has reached its sleeping stage (where checking a clock is cheap
    /// next to the sleep).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn is_sleeping(&self) -> bool {
        self.n >= 128
    }

    pub(crate) fn snooze(&mut self) {
        self.n = self.n.saturating_add(1);
        #[cfg(loom)]
        crate::sync::yield_now();
        #[cfg(not(loom))]
        {
            if self.n < 64 {
                crate::sync::spin_hint();
            } else if self.n < 128 {
                crate::sync::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn adaptive_waiter_spins_then_yields_then_parks() {
        let mut w = Waiter::new(
            WaitStrategy::Adaptive {
                spins: 3,
                yields: 2,
            },
            None,
        );
        let steps: Vec<_> = (0..7).map(|_| w.step().unwrap()).collect();
        use Step::*;
        assert_eq!(steps, [Spin, Spin, Spin, Yield, Yield, Park, Park]);
    }

    #[test]
    fn busy_poller_yields_once_every_yield_every_rounds() {
        let mut w = Waiter::new(WaitStrategy::BusyPoll, None);
        let yields: Vec<u32> = (0..3 * YIELD_EVERY)
            .filter(|_| w.step() == Some(Step::Yield))
            .collect();
        assert_eq!(yields.len(), 3);
    }

    #[test]
    fn spinning_waiter_times_out_though_it_reads_the_clock_rarely() {
        let mut w = Waiter::new(WaitStrategy::BusyPoll, Some(Duration::from_millis(2)));
        let start = Instant::now();
        let mut rounds = 0u64;
        while w.step().is_some() {
            rounds += 1;
            std::hint::spin_loop();
        }
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(2), "{waited:?}");
        assert!(
            waited < Duration::from_secs(5),
            "{waited:?} for {rounds} rounds"
        );
        // A zero timeout gives up at the first step.
        assert!(Waiter::new(WaitStrategy::BusyPoll, Some(Duration::ZERO))
            .step()
            .is_none());
    }
}
