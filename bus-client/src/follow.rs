//! Following a restarted daemon, for one port.
//!
//! A restarted daemon writes its epoch into the segments it adopts. A port compares that epoch
//! with its own before each call (one load, from a line the call reads anyway). When it
//! changed, the port is an *orphan* until a `Reattach` succeeds: it tries at once and then at
//! most every 100 ms (the new daemon may not listen yet), while its data path carries on. If the
//! daemon gives the orphan's entry up meanwhile, the port attaches afresh. Once re-attached, a
//! lost entry is an ordinary eviction, reported as such.

use std::time::{Duration, Instant};

use bus_daemon::protocol::Request;

use crate::conn::Conn;

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
    pub(crate) fn stale(&self, ring_epoch: u32) -> bool {
        ring_epoch != self.epoch || self.orphaned
    }

    /// Re-attach to the daemon of `ring_epoch` if needed. `held` says whether the port's entry
    /// is still active at its generation; `reattach` is the request that takes it back.
    #[cold]
    pub(crate) fn follow(
        &mut self,
        conn: &Conn,
        ring_epoch: u32,
        held: bool,
        reattach: &Request,
    ) -> Next {
        if ring_epoch != self.epoch {
            self.epoch = ring_epoch;
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
        match conn.follow(ring_epoch).and_then(|_| conn.request(reattach)) {
            Ok(_) => {
                self.orphaned = false;
                self.next_try = None;
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
