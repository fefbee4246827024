//! shmbus benchmarks: the `busbench` cross-process IPC harness.
//!
//! * [`transport`] — the [`Contender`](transport::Contender) trait every
//!   transport under test implements (start here to add shmbus contenders);
//! * [`contenders`] — the registry of contenders;
//! * [`baselines`] — pipe, FIFO, Unix stream/seqpacket sockets, POSIX message
//!   queues, TCP loopback and the shared-cache-line floor;
//! * [`coordinator`] — starts one process per role for a run and cleans up;
//! * [`suite`] — the plan and the interleaved rounds;
//! * [`roles`] — the measuring loops run inside the participants;
//! * [`waiting`] — the issue 12 contenders (async receive, WaitSet, idle waiters);
//! * [`report`], [`svg`], [`sysinfo`] — output.

pub mod baselines;
pub mod child;
pub mod contenders;
pub mod coordinator;
pub mod error;
#[cfg(feature = "iceoryx2")]
pub mod iceoryx2;
pub mod payload;
pub mod protocol;
pub mod report;
pub mod roles;
pub mod shmbus;
pub mod stats;
pub mod suite;
pub mod svg;
pub mod sysinfo;
pub mod transport;
pub mod util;
pub mod waiting;
