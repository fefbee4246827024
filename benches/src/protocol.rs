//! What the coordinator and its participant processes exchange.
//!
//! A participant is started as `busbench --role child --child-spec <JSON>`
//! with a piped stdin and stdout. It talks line by line on stdout:
//!
//! * `READY` once [`Contender::connect`](crate::transport::Contender::connect)
//!   returned; it then waits for a `GO` line on stdin (sent when every
//!   participant of the run is ready), so that no one starts measuring while
//!   its peers are still starting up;
//! * `RESULT <JSON RoleReport>` when its loop is done, then it exits 0;
//! * `ERROR <message>` on failure, then it exits 1.

use serde::{Deserialize, Serialize};

use crate::transport::{Role, RunSpec};

/// How long and how often a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// Warm-up before measuring (ping side / senders), in ms. The wake-up
    /// sender instead sends `max(3, min_warmup)` paced warm-up messages.
    pub warmup_ms: u64,
    /// Measured time per run, in ms (stops earlier at `max_iters`).
    pub measure_ms: u64,
    /// Minimum warm-up iterations, whatever the time.
    pub min_warmup: u64,
    /// Minimum measured iterations, whatever the time.
    pub min_iters: u64,
    /// Maximum measured iterations per run.
    pub max_iters: u64,
    /// Pause between sends in the wake-up scenario, in µs.
    pub wake_interval_us: u64,
}

impl Timing {
    /// `--quick`: short runs, enough for a smoke test of every combination.
    pub const QUICK: Timing = Timing {
        warmup_ms: 15,
        measure_ms: 100,
        min_warmup: 10,
        min_iters: 5,
        max_iters: 200_000,
        wake_interval_us: 1_000,
    };

    /// The default, full run.
    pub const FULL: Timing = Timing {
        warmup_ms: 100,
        measure_ms: 400,
        min_warmup: 20,
        min_iters: 20,
        max_iters: 2_000_000,
        wake_interval_us: 1_000,
    };
}

/// Everything a participant process needs, passed as `--child-spec`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChildSpec {
    /// [`Contender::name`](crate::transport::Contender::name).
    pub contender: String,
    /// The run.
    pub run: RunSpec,
    /// This participant's part.
    pub role: Role,
    /// CPU to pin to, if any.
    pub cpu: Option<usize>,
    /// Inherited descriptor numbers, in `Prepared::add_fd` order.
    pub fds: Vec<i32>,
    /// `Prepared::set_info` text.
    pub info: String,
    /// Measurement lengths.
    pub timing: Timing,
    /// The coordinator's pid; the participant exits if its parent differs.
    pub parent_pid: i32,
}

/// What a participant measured. Which fields matter depends on the role and
/// scenario; see [`crate::suite`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleReport {
    /// Latency histogram as `(ns, count)` pairs (ping: one-way = RTT/2;
    /// sender: wall time per publish; wake-up receiver: send-to-wake).
    pub hist: Vec<(u64, u64)>,
    /// Measured messages (sent by a sender, received by a receiver after the
    /// measurement started, round trips for ping).
    pub measured: u64,
    /// Length of the measured window in ns.
    pub window_ns: u64,
    /// CPU time of the process during the measured window (senders), ns.
    pub cpu_ns: u64,
    /// All data messages sent or received, warm-up included, stop excluded.
    pub total: u64,
    /// Sequence gaps seen by a receiver (messages that never arrived).
    pub lost: u64,
}
