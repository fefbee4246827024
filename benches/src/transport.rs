//! The contender abstraction of `busbench`.
//!
//! A *contender* is one IPC transport under test (a pipe, a Unix socket, the
//! shmbus ring in busy-poll mode, ...). The harness never talks to a transport
//! directly: for every measured run it
//!
//! 1. builds a [`RunSpec`] (scenario, payload size, number of senders and
//!    receivers, and a [`Rendezvous`] that is unique to this run),
//! 2. asks [`Contender::supports`] whether the run makes sense for the
//!    contender (a [`Support::Skip`] reason is reported in the results instead
//!    of a failure),
//! 3. calls [`Contender::prepare`] **in the coordinator process** to create
//!    whatever must exist before the participants start (named resources,
//!    listening sockets, pipes or memfds to inherit),
//! 4. starts one fresh process per [`Role`] (`busbench --role child ...`, an
//!    exec of the same binary), pinned to its own CPU where possible; in each
//!    of them it calls [`Contender::connect`] to obtain an [`Endpoint`],
//! 5. drives the endpoints with the scenario's loop (the harness writes and
//!    checks the payload and does all the timing), and
//! 6. drops the [`Prepared`] value in the coordinator once every participant
//!    has exited, which runs the registered cleanups (unlink names) even when
//!    the run failed or timed out.
//!
//! # Adding a contender
//!
//! 1. Create a module (for shmbus: `benches/src/shmbus.rs`, or one module per
//!    mode) with a unit struct implementing [`Contender`]:
//!    * [`name`](Contender::name): a short, unique, stable identifier
//!      (`shmbus_busy`, `shmbus_blocking`, `shmbus_loan`, `shmbus_copy`,
//!      `iceoryx2`); `--filter` matches substrings of it, and the JSON rows
//!      carry it as `transport`.
//!    * [`supports`](Contender::supports): return [`Support::Skip`] for
//!      combinations that do not apply, e.g. a busy-polling contender should
//!      skip [`Scenario::Wakeup`] (its receiver never sleeps), a contender
//!      whose slots are smaller than the payload should skip that size.
//!    * [`prepare`](Contender::prepare): optional. Create the shared segment
//!      (or start a daemon) here if it must exist before both sides start,
//!      and register its removal with [`Prepared::on_cleanup`]. Names must be
//!      derived from [`Rendezvous::tag`] (which contains `shmbus` and is
//!      unique per run) or live inside [`Rendezvous::dir`] (removed by the
//!      harness after the run).
//!    * [`connect`](Contender::connect): runs inside the participant process.
//!      Open or attach to the transport for the given [`Role`] and return an
//!      [`Endpoint`]. It may block until the peers show up (e.g. until a
//!      publisher created the segment), the harness starts timing only after
//!      every participant returned from `connect`.
//! 2. Implement [`Endpoint`]: `send` must hand the harness a writable buffer
//!    of exactly `len` bytes through the `fill` callback — for a zero-copy
//!    ("loan") contender that is the slot in shared memory, for a copying
//!    contender a private buffer that is copied afterwards. `recv` must wait
//!    for the next message (spinning for busy-poll contenders, sleeping in the
//!    kernel for blocking ones) and pass it to `inspect` *in place*.
//! 3. Add the contender to [`crate::contenders::registry`]. Nothing else has
//!    to change: the child processes look contenders up by name in the same
//!    registry, and every report format picks the new rows up.
//!
//! A skeleton (the shmbus calls are illustrative, after `bus-client`):
//!
//! ```ignore
//! pub struct ShmbusBusy;
//!
//! impl Contender for ShmbusBusy {
//!     fn name(&self) -> &'static str { "shmbus_busy" }
//!     fn description(&self) -> &'static str { "shmbus ring, busy-polling subscriber, loan" }
//!     fn supports(&self, spec: &RunSpec) -> Support {
//!         match spec.scenario {
//!             Scenario::Wakeup => Support::Skip("busy-poll receivers never sleep".into()),
//!             _ => Support::Yes,
//!         }
//!     }
//!     fn prepare(&self, spec: &RunSpec) -> io::Result<Prepared> {
//!         // One daemon per run, inside the private rendezvous directory.
//!         let mut prepared = Prepared::new();
//!         let bus = Bus::embedded_at(spec.rendezvous.dir.join("bus.sock")).map_err(io::Error::other)?;
//!         prepared.on_cleanup(move || drop(bus)); // stops the daemon after the run
//!         Ok(prepared)
//!     }
//!     fn connect(&self, spec: &RunSpec, role: Role, _ctx: &mut ChildCtx)
//!         -> io::Result<Box<dyn Endpoint>>
//!     {
//!         let bus = Bus::connect_to(spec.rendezvous.dir.join("bus.sock")).map_err(io::Error::other)?;
//!         // Ping: publish "a", subscribe "b"; Pong: the reverse;
//!         // Sender: publish "t"; Receiver: subscribe "t" (open subscribers here,
//!         // in connect: the harness sends nothing before every connect returned).
//!         Ok(Box::new(ShmbusEndpoint::open(bus, spec, role)?))
//!     }
//! }
//!
//! impl Endpoint for ShmbusEndpoint {
//!     fn send(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
//!         let mut slot = self.publisher.loan().map_err(io::Error::other)?; // zero-copy
//!         slot.set_len(len).map_err(io::Error::other)?;
//!         fill(&mut slot);                                                  // written in place
//!         slot.send();
//!         Ok(())
//!     }
//!     fn recv(&mut self, inspect: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<usize> {
//!         let sample = self.subscriber.recv().map_err(io::Error::other)?;  // spins or sleeps
//!         inspect(sample.bytes())?;                                        // read in place
//!         Ok(sample.bytes().len())
//!     }
//! }
//! ```
//!
//! A copying variant fills a private `Vec` and `publish`es it; a blocking
//! variant only differs in the subscriber's wait strategy (and does not skip
//! `wakeup`). If a transport may drop messages (lossy ring), the receivers
//! count the sequence gaps and the report notes them instead of failing.
//!
//! Roles per scenario (see [`RunSpec::roles`]):
//!
//! | scenario     | topology                    | roles                                   |
//! |--------------|-----------------------------|-----------------------------------------|
//! | `pingpong`   | [`Topology::Pair`]          | one [`Role::Ping`], one [`Role::Pong`]  |
//! | `throughput` | one-to-many, 1 receiver     | `Sender{0}`, `Receiver{0}`              |
//! | `fanout`     | one-to-many, N receivers    | `Sender{0}`, `Receiver{0..N}`           |
//! | `fanin`      | many-to-one, N senders      | `Sender{0..N}`, `Receiver{0}`           |
//! | `wakeup`     | one-to-many, 1 receiver     | `Sender{0}`, `Receiver{0}` (must block) |
//! | `asyncwake`  | one-to-many, 1 receiver     | as `wakeup`                             |
//! | `waitset8`   | one-to-many, 1 receiver     | as `wakeup`                             |
//! | `waiters`    | one-to-many, 1 receiver     | `Sender{0}`, `Receiver{0}` (idle waiters) |
//!
//! In a one-to-many run, one `send` on the sender's endpoint must deliver the
//! message to every receiver. In a many-to-one run the receiver's endpoint
//! yields the messages of all senders, in any interleaving.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What a run measures. See `busbench --help` for the exact metric of each.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Ping-pong latency; one-way = RTT / 2.
    #[value(name = "pingpong")]
    PingPong,
    /// One sender, one receiver, as fast as possible.
    Throughput,
    /// One sender, N receivers; the sender's cost per published message.
    #[value(name = "fanout")]
    FanOut,
    /// N senders, one receiver; aggregate rate at the receiver.
    #[value(name = "fanin")]
    FanIn,
    /// Paced sends to a receiver blocked in the kernel; send-to-wake latency.
    Wakeup,
    /// Issue 12: the wake-up of an async receiver (tokio current-thread and multi-thread)
    /// against tokio's `UnixStream` and the blocking receivers, same pacing as `wakeup`.
    #[value(name = "asyncwake")]
    AsyncWake,
    /// Issue 12: paced sends rotating over 8 topics to one `WaitSet`, against one topic and a
    /// blocking `recv`; send-to-wake latency.
    #[value(name = "waitset8")]
    WaitSet8,
    /// Issue 12: the publisher's cost per message with 0, 1 and 8 wake slots registered but
    /// not armed (waiters that are busy elsewhere), one contender per count.
    Waiters,
}

impl Scenario {
    /// All scenarios, in the order the harness runs them.
    pub const ALL: [Scenario; 8] = [
        Scenario::PingPong,
        Scenario::Throughput,
        Scenario::FanOut,
        Scenario::FanIn,
        Scenario::Wakeup,
        Scenario::AsyncWake,
        Scenario::WaitSet8,
        Scenario::Waiters,
    ];

    /// The scenarios every contender takes part in (the issue 12 ones only run the
    /// contenders that opt in with [`Contender::runs`]).
    pub const CLASSIC: [Scenario; 5] = [
        Scenario::PingPong,
        Scenario::Throughput,
        Scenario::FanOut,
        Scenario::FanIn,
        Scenario::Wakeup,
    ];

    /// Paced sends stamped with the send time; the receiver reports send-to-wake latency.
    pub fn is_paced(self) -> bool {
        matches!(
            self,
            Scenario::Wakeup | Scenario::AsyncWake | Scenario::WaitSet8
        )
    }

    /// The stable lower-case name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::PingPong => "pingpong",
            Scenario::Throughput => "throughput",
            Scenario::FanOut => "fanout",
            Scenario::FanIn => "fanin",
            Scenario::Wakeup => "wakeup",
            Scenario::AsyncWake => "asyncwake",
            Scenario::WaitSet8 => "waitset8",
            Scenario::Waiters => "waiters",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The shape of a run: who sends to whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// Two processes exchanging messages in both directions (ping-pong).
    Pair,
    /// One sender whose every message reaches all `receivers`.
    OneToMany {
        /// Number of receiving processes.
        receivers: usize,
    },
    /// `senders` processes sending to one receiver.
    ManyToOne {
        /// Number of sending processes.
        senders: usize,
    },
}

/// The part a participant process plays in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Ping-pong initiator: sends, then waits for the echo. Measures the RTT.
    Ping,
    /// Ping-pong echo side: waits for a message and sends it back.
    Pong,
    /// A sending process; `index` is unique among the run's senders.
    Sender {
        /// 0-based sender index.
        index: usize,
    },
    /// A receiving process; `index` is unique among the run's receivers.
    Receiver {
        /// 0-based receiver index.
        index: usize,
    },
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Ping => f.write_str("ping"),
            Role::Pong => f.write_str("pong"),
            Role::Sender { index } => write!(f, "sender{index}"),
            Role::Receiver { index } => write!(f, "receiver{index}"),
        }
    }
}

/// Names unique to one run, shared by the coordinator and all participants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendezvous {
    /// A private directory created (mode 0700) by the coordinator before
    /// [`Contender::prepare`] and removed recursively after the run. Put
    /// FIFOs, socket paths and lock files here. Its path is short enough for
    /// a Unix socket path (`sun_path`) with a file name of a few dozen bytes.
    pub dir: PathBuf,
    /// A name unique to this run and machine, containing `shmbus`
    /// (`shmbus-bench-<pid>-<run>`), for names outside the filesystem tree:
    /// POSIX message queues, `/dev/shm` segments, abstract sockets. Anything
    /// created under it must be removed by a cleanup registered in
    /// [`Prepared::on_cleanup`].
    pub tag: String,
}

/// Everything a contender needs to know about one run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// What is measured.
    pub scenario: Scenario,
    /// Size of every message in bytes (at least 8). Both sides know it, so
    /// byte-stream transports may frame messages by this fixed size.
    pub payload_bytes: usize,
    /// Number of sending processes (1 except for `fanin`; 1 for `pingpong`).
    pub senders: usize,
    /// Number of receiving processes (1 except for `fanout`; 1 for `pingpong`).
    pub receivers: usize,
    /// Names unique to this run.
    pub rendezvous: Rendezvous,
}

impl RunSpec {
    /// The run's topology, derived from the scenario and the counts.
    pub fn topology(&self) -> Topology {
        match self.scenario {
            Scenario::PingPong => Topology::Pair,
            Scenario::FanIn => Topology::ManyToOne {
                senders: self.senders,
            },
            Scenario::Throughput
            | Scenario::FanOut
            | Scenario::Wakeup
            | Scenario::AsyncWake
            | Scenario::WaitSet8
            | Scenario::Waiters => Topology::OneToMany {
                receivers: self.receivers,
            },
        }
    }

    /// Every participant of the run. The first one is the "hub" (the process
    /// that talks to all others) and is pinned to the first CPU.
    pub fn roles(&self) -> Vec<Role> {
        match self.topology() {
            Topology::Pair => vec![Role::Ping, Role::Pong],
            Topology::OneToMany { receivers } => std::iter::once(Role::Sender { index: 0 })
                .chain((0..receivers).map(|index| Role::Receiver { index }))
                .collect(),
            Topology::ManyToOne { senders } => std::iter::once(Role::Receiver { index: 0 })
                .chain((0..senders).map(|index| Role::Sender { index }))
                .collect(),
        }
    }

    /// Whether `role` is the hub of this run (see [`RunSpec::roles`]): the
    /// side that accepts connections for connection-oriented baselines.
    pub fn is_hub(&self, role: Role) -> bool {
        self.roles().first() == Some(&role)
    }

    /// True when the receiver must sleep while waiting (the paced scenarios,
    /// [`Scenario::is_paced`]); busy-polling contenders should skip such runs.
    pub fn requires_blocking_receiver(&self) -> bool {
        self.scenario.is_paced()
    }
}

/// Whether a contender can take part in a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    /// Run it.
    Yes,
    /// Do not run it; the reason is shown in the report (not a failure).
    Skip(String),
}

/// Resources a contender created in the coordinator for one run.
///
/// Dropping it runs the registered cleanups in reverse order of
/// registration. The coordinator keeps it alive until every participant of
/// the run has been reaped, also when the run failed.
#[derive(Default)]
pub struct Prepared {
    fds: Vec<OwnedFd>,
    info: String,
    cleanups: Vec<Box<dyn FnOnce()>>,
}

impl Prepared {
    /// Nothing prepared.
    pub fn new() -> Self {
        Self::default()
    }

    /// Passes `fd` to every participant process of the run (under the same
    /// descriptor number; create it with `FD_CLOEXEC`, the harness clears
    /// the flag only in the participants) and returns its index for
    /// [`ChildCtx::take_fd`]. The coordinator closes its copy once all
    /// participants have been started.
    pub fn add_fd(&mut self, fd: OwnedFd) -> usize {
        self.fds.push(fd);
        self.fds.len() - 1
    }

    /// Free-form text handed to every participant (e.g. a TCP port).
    pub fn set_info(&mut self, info: impl Into<String>) {
        self.info = info.into();
    }

    /// Registers a cleanup (unlink a name, stop a helper) run when the run
    /// is over. Register it right after creating the resource, so a later
    /// failure in `prepare` still cleans it up.
    pub fn on_cleanup(&mut self, f: impl FnOnce() + 'static) {
        self.cleanups.push(Box::new(f));
    }

    /// The descriptor numbers to hand to participants.
    pub(crate) fn raw_fds(&self) -> Vec<RawFd> {
        self.fds.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Closes the coordinator's copies of the inherited descriptors.
    pub(crate) fn close_fds(&mut self) {
        self.fds.clear();
    }

    /// The info string set by [`Prepared::set_info`].
    pub(crate) fn info(&self) -> &str {
        &self.info
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        self.fds.clear();
        while let Some(cleanup) = self.cleanups.pop() {
            cleanup();
        }
    }
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("fds", &self.fds)
            .field("info", &self.info)
            .field("cleanups", &self.cleanups.len())
            .finish()
    }
}

/// What a participant process received from [`Contender::prepare`].
///
/// Descriptors that [`Contender::connect`] does not take are closed right
/// after `connect` returns, so that e.g. a pipe's unused write end does not
/// keep the pipe open.
#[derive(Debug, Default)]
pub struct ChildCtx {
    fds: Vec<Option<OwnedFd>>,
    info: String,
}

impl ChildCtx {
    /// A context holding `fds` (indexed as in [`Prepared::add_fd`]).
    pub fn new(fds: Vec<OwnedFd>, info: String) -> Self {
        Self {
            fds: fds.into_iter().map(Some).collect(),
            info,
        }
    }

    /// Adopts descriptors inherited from the coordinator.
    ///
    /// # Safety
    ///
    /// Every number in `raw` must be an open descriptor of this process that
    /// nothing else in the process owns or will close (the coordinator passes
    /// exactly the descriptors it cleared `FD_CLOEXEC` on).
    pub(crate) unsafe fn from_inherited(raw: &[RawFd], info: String) -> io::Result<Self> {
        let mut fds = Vec::with_capacity(raw.len());
        for (i, &fd) in raw.iter().enumerate() {
            if raw[..i].contains(&fd) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("inherited descriptor {fd} is listed twice"),
                ));
            }
            if fd <= 2 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("inherited descriptor {fd} would be a stdio descriptor"),
                ));
            }
            // Refuse numbers that are not open instead of adopting garbage.
            // SAFETY: F_GETFD only reads the descriptor flags; on a number
            // that is not open it fails with EBADF and has no other effect.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(
                    e.kind(),
                    format!("inherited descriptor {fd} is not open: {e}"),
                ));
            }
            // SAFETY: the caller guarantees `fd` is open and unowned; it was
            // just checked to be open, and it is adopted exactly once.
            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        Ok(Self::new(fds, info))
    }

    /// Takes ownership of the descriptor registered at `index` by
    /// [`Prepared::add_fd`]. Fails if the index is unknown or already taken.
    pub fn take_fd(&mut self, index: usize) -> io::Result<OwnedFd> {
        self.fds
            .get_mut(index)
            .and_then(Option::take)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("inherited descriptor #{index} is missing or already taken"),
                )
            })
    }

    /// The text set by [`Prepared::set_info`].
    pub fn info(&self) -> &str {
        &self.info
    }
}

/// One participant's handle on the transport.
///
/// The harness calls it from a single thread; implementations need not be
/// `Send`. Errors end the run (the run is reported as failed).
pub trait Endpoint {
    /// Sends one message of exactly `len` bytes.
    ///
    /// The implementation provides the buffer the message is built in and
    /// calls `fill` exactly once with it (`buf.len() == len`); `fill`
    /// overwrites the payload completely. In a one-to-many run, one call
    /// delivers the message to all receivers. Blocks while the transport is
    /// full (back-pressure) — or, for a lossy transport, overwrites.
    fn send(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()>;

    /// Waits for the next message and calls `inspect` exactly once with its
    /// bytes; returns the message length. An error from `inspect` (a payload
    /// check failed) must be returned unchanged.
    fn recv(&mut self, inspect: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<usize>;

    /// When the message last passed to `inspect` was received (`CLOCK_MONOTONIC` ns), for an
    /// endpoint that receives on another thread (a tokio worker) and hands the message over:
    /// the paced scenarios then use this instead of the time `inspect` ran. Default: `None`.
    fn rx_time_ns(&self) -> Option<u64> {
        None
    }
}

/// A transport under test. See the [module documentation](self) for how to
/// add one.
pub trait Contender {
    /// Short unique identifier (`[a-z0-9_]`), used by `--filter`, in the
    /// table and as `transport` in JSON.
    fn name(&self) -> &'static str;

    /// One line for `busbench --list`.
    fn description(&self) -> &'static str;

    /// Whether this run applies; called in the coordinator before
    /// [`Contender::prepare`].
    fn supports(&self, spec: &RunSpec) -> Support;

    /// Creates resources before the participants start; runs in the
    /// coordinator. The default prepares nothing.
    fn prepare(&self, spec: &RunSpec) -> io::Result<Prepared> {
        let _ = spec;
        Ok(Prepared::new())
    }

    /// Whether the contender takes part in `scenario` at all; rows are listed only for those.
    /// Default: the [classic](Scenario::CLASSIC) scenarios (the issue 12 ones are opt-in).
    fn runs(&self, scenario: Scenario) -> bool {
        Scenario::CLASSIC.contains(&scenario)
    }

    /// Opens the transport for `role` inside a participant process.
    fn connect(
        &self,
        spec: &RunSpec,
        role: Role,
        ctx: &mut ChildCtx,
    ) -> io::Result<Box<dyn Endpoint>>;
}
