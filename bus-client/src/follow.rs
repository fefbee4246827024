//! Following a restarted daemon, for one port.
//!
//! A restarted daemon writes its epoch into its status page. A port compares that epoch with
//! its own before each call (one load of a line nobody writes while the daemon runs), and a
//! port that waits checks it after every wake-up: the death of its daemon wakes it (see
//! `hangup`), and from then on until it re-attached it checks at least every [`CHECK_EVERY`]. When it changed, the port is an
//! *orphan* until a `Reattach` succeeds: it tries at once, handing the topic's segment files
//! back (the new daemon cannot find them otherwise), and then at most every 100 ms (the new
//! daemon may not listen yet), while its data path carries on. If the daemon answers that it
//! has no such orphan (it gave the entry up, or never got the topic back), the port attaches
//! afresh. Once re-attached, a lost entry is an ordinary eviction, reported as such.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus_proto::protocol::{Request, Role};
use bus_proto::segment::SegmentFds;
use bus_proto::status::StatusPage;

use crate::conn::Conn;
use crate::error::RequestError;

/// How often a waiting port looks at the daemon's epoch while its daemon is gone (its control
/// connection hung up, see `hangup`); never while the daemon lives.
pub(crate) const CHECK_EVERY: Duration = bus_proto::wake::INTERRUPTED_SLEEP;

/// How often an orphan retries its `Reattach`.
const RETRY: Duration = Duration::from_millis(100);

/// What the port must do after [`Follower::follow`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Carry on.
    Proceed,
    /// The daemon gave the entry up while the port was an orphan: attach afresh.
    AttachAfresh,
}

/// One port's view of the daemon: the status page it watches and the epoch it is attached at.
pub(crate) struct Follower {
    status: Arc<StatusPage>,
    epoch: u32,
    orphaned: bool,
    next_try: Option<Instant>,
}

/// The port a [`Follower`] re-attaches.
pub(crate) struct PortId<'a> {
    pub(crate) topic: &'a str,
    pub(crate) role: Role,
    pub(crate) index: usize,
    pub(crate) generation: u64,
    /// Whether the entry is still active at `generation`.
    pub(crate) held: bool,
    /// The segment's descriptors, handed back to a restarted daemon.
    pub(crate) fds: &'a SegmentFds,
}

impl Follower {
    /// A port just attached through `conn`, at the epoch its status page shows now.
    pub(crate) fn new(conn: &Conn) -> Follower {
        let status = conn.status();
        Follower {
            epoch: status.epoch(),
            status,
            orphaned: false,
            next_try: None,
        }
    }

    /// The epoch the port was last attached at.
    pub(crate) fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The epoch the port is attached at now; `None` while it is an orphan.
    pub(crate) fn attached_epoch(&self) -> Option<u32> {
        (!self.orphaned).then_some(self.epoch)
    }

    /// Whether [`Follower::follow`] has work to do: one load of a line nobody writes while the
    /// daemon runs.
    #[inline]
    pub(crate) fn stale(&self) -> bool {
        self.status.epoch() != self.epoch || self.orphaned
    }

    /// Re-attach `port` to a restarted daemon if needed.
    #[cold]
    pub(crate) fn follow(&mut self, conn: &Conn, port: PortId<'_>) -> Next {
        let epoch = self.status.epoch();
        let PortId {
            topic,
            role,
            index,
            generation,
            held,
            fds,
        } = port;
        let reattach = Request::Reattach {
            topic: topic.to_string(),
            role,
            index: index as u32,
            generation,
        };
        let fds = [fds.control.as_raw_fd(), fds.data.as_raw_fd()];
        if epoch != self.epoch {
            self.epoch = epoch;
            self.orphaned = true;
            self.next_try = None;
        }
        if !self.orphaned {
            return Next::Proceed;
        }
        if !held {
            return Next::AttachAfresh;
        }
        if self.next_try.is_some_and(|t| Instant::now() < t) {
            return Next::Proceed;
        }
        match conn
            .follow(epoch)
            .map_err(RequestError::from)
            .and_then(|_| conn.request_with_fds(&reattach, &fds))
        {
            Ok(_) => {
                self.orphaned = false;
                self.next_try = None;
            }
            // The daemon answered: it has no such orphan. Waiting will not change that.
            Err(e @ RequestError::Refused { .. }) => {
                tracing::warn!(error = %e, "the restarted daemon did not take this port back; attaching anew");
                return Next::AttachAfresh;
            }
            Err(e) => {
                if self.next_try.is_none() {
                    tracing::warn!(error = %e, "not re-attached to the restarted daemon yet; carrying on and retrying");
                }
                self.next_try = Some(Instant::now() + RETRY);
            }
        }
        Next::Proceed
    }
}
