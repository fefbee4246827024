//! Following a restarted daemon, for one port.
//!
//! A restarted daemon writes its epoch into its status page. A port compares that epoch with
//! its own before each call (one load of a line nobody writes while the daemon runs), and a
//! port that waits checks it at least every [`CHECK_EVERY`]. When it changed, the port is an
//! *orphan* until a `Reattach` succeeds: it tries at once, handing the topic's segment files
//! back (the new daemon cannot find them otherwise), and then at most every 100 ms (the new
//! daemon may not listen yet), while its data path carries on. If the daemon answers that it
//! has no such orphan (it gave the entry up, or never got the topic back), the port attaches
//! afresh. Once re-attached, a lost entry is an ordinary eviction, reported as such.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use bus_daemon::protocol::Request;

use crate::conn::Conn;
use crate::Error;

/// How often a waiting port looks at the daemon's epoch.
pub(crate) const CHECK_EVERY: Duration = Duration::from_millis(100);

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

pub(crate) struct Follower {
    epoch: u32,
    orphaned: bool,
    next_try: Option<Instant>,
}

impl Follower {
    pub(crate) fn new(epoch: u32) -> Follower {
        Follower {
            epoch,
            orphaned: false,
            next_try: None,
        }
    }

    /// Whether [`Follower::follow`] has work to do.
    #[inline]
    pub(crate) fn stale(&self, epoch: u32) -> bool {
        epoch != self.epoch || self.orphaned
    }

    /// Re-attach to the daemon of `epoch` if needed. `held` says whether the port's entry is
    /// still active at its generation; `reattach` is the request that takes it back, sent with
    /// the segment descriptors `fds`.
    #[cold]
    pub(crate) fn follow(
        &mut self,
        conn: &Conn,
        epoch: u32,
        held: bool,
        reattach: &Request,
        fds: &[RawFd],
    ) -> Next {
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
            .and_then(|_| conn.request_with_fds(reattach, fds))
        {
            Ok(_) => {
                self.orphaned = false;
                self.next_try = None;
            }
            // The daemon answered: it has no such orphan. Waiting will not change that.
            Err(e @ (Error::NoSuchTopic(_) | Error::Refused { .. })) => {
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
