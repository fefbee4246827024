//! What every port shares, publisher or subscriber, typed or raw: attaching (map the segment,
//! check it is what the daemon says), following a restarted daemon, attaching afresh when the
//! daemon gave the entry up, waiting in slices with a look at the daemon between them, and
//! detaching on drop. The restart logic is the subtlest code of the client; it lives here
//! once.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus_core::layout::Geometry;
use bus_core::ring::{AttachError, PublisherPort, StartAt, SubscriberPort};
use bus_core::storage::RawStorage;
use bus_core::wait::WaitStrategy;
use bus_proto::protocol::{
    describe_mismatch, ErrorCode, How, Request, Response, Role, HELD_NOTICE_EVERY,
};
use bus_proto::segment::{open_ring, Access, Mapping, SegmentFds, ShmRing};
use bus_proto::wake::WakeBell;

use crate::conn::{unexpected, Conn};
use crate::error::OpenError;
use crate::follow::{Follower, Next, PortId};

/// A publisher's handle on a mapped ring.
pub(crate) type RingPublisher = PublisherPort<RawStorage<Mapping>, WakeBell>;
/// A subscriber's handle on a mapped ring.
pub(crate) type RingSubscriber = SubscriberPort<RawStorage<Mapping>, WakeBell>;

/// The ring-side handle of a port: a [`RingPublisher`] or a [`RingSubscriber`].
pub(crate) trait RingPort: Sized {
    const ROLE: Role;
    fn new(ring: Arc<ShmRing>, index: usize, generation: u64) -> Result<Self, AttachError>;
    fn ring(&self) -> &Arc<ShmRing>;
    fn index(&self) -> usize;
    fn generation(&self) -> u64;

    /// Whether the entry is still this port's.
    fn held(&self) -> bool {
        let (index, generation) = (self.index(), self.generation());
        match Self::ROLE {
            Role::Publisher => self.ring().publisher_held(index, generation),
            Role::Subscriber => self.ring().subscriber_held(index, generation),
        }
    }

    /// Free the entry in the ring at once (the daemon is told too, see `Port`'s drop).
    fn release(&self) {
        let (index, generation) = (self.index(), self.generation());
        let _ = match Self::ROLE {
            Role::Publisher => self.ring().release_publisher(index, generation),
            Role::Subscriber => self.ring().release_subscriber(index, generation),
        };
    }
}

impl RingPort for RingPublisher {
    const ROLE: Role = Role::Publisher;
    fn new(ring: Arc<ShmRing>, index: usize, generation: u64) -> Result<Self, AttachError> {
        PublisherPort::new(ring, index, generation)
    }
    fn ring(&self) -> &Arc<ShmRing> {
        PublisherPort::ring(self)
    }
    fn index(&self) -> usize {
        PublisherPort::index(self)
    }
    fn generation(&self) -> u64 {
        PublisherPort::generation(self)
    }
}

impl RingPort for RingSubscriber {
    const ROLE: Role = Role::Subscriber;
    fn new(ring: Arc<ShmRing>, index: usize, generation: u64) -> Result<Self, AttachError> {
        SubscriberPort::new(ring, index, generation)
    }
    fn ring(&self) -> &Arc<ShmRing> {
        SubscriberPort::ring(self)
    }
    fn index(&self) -> usize {
        SubscriberPort::index(self)
    }
    fn generation(&self) -> u64 {
        SubscriberPort::generation(self)
    }
}

/// The port lost its place and could not attach anew (the topic was deleted meanwhile, or the
/// daemon is unreachable): the caller reports it as `Evicted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lost;

/// How one slice of a wait ended without a result.
pub(crate) enum Slice<E> {
    /// The slice's time ran out (not necessarily the caller's).
    TimedOut,
    /// Anything else: the wait is over.
    Failed(E),
}

/// How a sliced wait ended without a result.
pub(crate) enum Waited<E> {
    /// The caller's deadline passed.
    TimedOut,
    /// The port lost its place (see [`Lost`]).
    Lost,
    /// The step failed.
    Failed(E),
}

/// Who a port is right now (its ring and table entry), for a wait set that watches it from
/// outside. A port that attaches afresh after a daemon restart updates it.
pub(crate) struct PortView {
    state: std::sync::Mutex<ViewState>,
}

/// See [`PortView`].
#[derive(Clone)]
pub(crate) struct ViewState {
    pub(crate) ring: Arc<ShmRing>,
    pub(crate) index: usize,
    pub(crate) generation: u64,
    /// The daemon epoch the port is attached at; `None` while it is an orphan of a restarted
    /// daemon (only an operation on the port itself hands it back).
    pub(crate) epoch: Option<u32>,
}

impl std::fmt::Debug for PortView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.get();
        f.debug_struct("PortView")
            .field("index", &v.index)
            .field("generation", &v.generation)
            .finish()
    }
}

impl PortView {
    fn new<P: RingPort>(ring: &P, epoch: u32) -> Arc<PortView> {
        Arc::new(PortView {
            state: std::sync::Mutex::new(ViewState {
                ring: ring.ring().clone(),
                index: ring.index(),
                generation: ring.generation(),
                epoch: Some(epoch),
            }),
        })
    }

    fn set<P: RingPort>(&self, ring: &P, epoch: u32) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = ViewState {
            ring: ring.ring().clone(),
            index: ring.index(),
            generation: ring.generation(),
            epoch: Some(epoch),
        };
    }

    fn set_epoch(&self, epoch: Option<u32>) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).epoch = epoch;
    }

    /// The port as it is now.
    pub(crate) fn get(&self) -> ViewState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A port: its ring handle, and what it needs to follow the daemon.
pub(crate) struct Port<P: RingPort> {
    pub(crate) ring: P,
    view: Arc<PortView>,
    conn: Arc<Conn>,
    topic: String,
    /// How it was attached: attaching afresh asks the same.
    how: How,
    start: StartAt,
    spec: Geometry,
    follower: Follower,
    /// The segment's descriptors, handed back to a restarted daemon.
    fds: SegmentFds,
}

impl<P: RingPort> std::fmt::Debug for Port<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(match P::ROLE {
            Role::Publisher => "Publisher",
            Role::Subscriber => "Subscriber",
        })
        .field("topic", &self.topic)
        .field("index", &self.ring.index())
        .finish()
    }
}

/// What an attach brought: the ring handle, the descriptors, the topic's geometry.
struct Attached<P> {
    ring: P,
    fds: SegmentFds,
    spec: Geometry,
    created: bool,
}

fn attach<P: RingPort>(
    conn: &Arc<Conn>,
    topic: &str,
    how: &How,
    start: StartAt,
) -> Result<Attached<P>, OpenError> {
    let (resp, fds) = conn
        .request(&Request::Attach {
            topic: topic.to_string(),
            role: P::ROLE,
            how: how.clone(),
            start,
        })
        .map_err(|e| OpenError::from_request(topic, e))?;
    let Response::Attached {
        spec,
        index,
        generation,
        created,
        ..
    } = resp
    else {
        return Err(OpenError::Protocol {
            topic: topic.to_string(),
            source: unexpected(&resp),
        });
    };
    let entry = Entry {
        spec,
        index,
        generation,
        created,
    };
    map_entry(conn, topic, how, entry, fds)
}

/// A table entry the daemon attached for this connection: by an attach, or for a topic watch.
pub(crate) struct Entry {
    pub(crate) spec: Geometry,
    pub(crate) index: u32,
    pub(crate) generation: u64,
    pub(crate) created: bool,
}

/// Check the daemon's answer (`how` says what was asked for), map the segment from `fds` and
/// take the entry; on any failure the entry is detached.
fn map_entry<P: RingPort>(
    conn: &Arc<Conn>,
    topic: &str,
    how: &How,
    entry: Entry,
    fds: Vec<std::os::fd::OwnedFd>,
) -> Result<Attached<P>, OpenError> {
    let Entry {
        spec,
        index,
        generation,
        created,
    } = entry;
    let detach = || {
        let _ = conn.request(&Request::Detach {
            topic: topic.to_string(),
            role: P::ROLE,
            index,
            generation,
        });
    };
    // The daemon checked the type; check its answer too, so a confused daemon cannot hand a
    // typed port a topic of another type.
    let asked = match how {
        How::Open { type_info: None } => None,
        How::Open { type_info: Some(t) } => Some(t),
        How::Create { spec, .. } => Some(&spec.type_info),
    };
    if let Some(t) = asked {
        let requested = Geometry {
            type_info: t.clone(),
            ..spec.clone()
        };
        if let Some((code, message)) = describe_mismatch(topic, P::ROLE, &spec, &requested) {
            detach();
            return Err(OpenError::from_daemon(topic, code, message));
        }
    }
    let mut fds = fds.into_iter();
    let (Some(control), Some(data)) = (fds.next(), fds.next()) else {
        detach();
        return Err(OpenError::from_daemon(
            topic,
            ErrorCode::Internal,
            "the daemon did not send the segment's two descriptors".into(),
        ));
    };
    let fds = SegmentFds { control, data };
    let access = match P::ROLE {
        Role::Publisher => Access::ReadWrite,
        Role::Subscriber => Access::Subscriber,
    };
    // Its sleepers wake when the daemon hangs up (see `hangup`).
    let bell = conn.bell();
    let ring = match open_ring(fds.control.as_fd(), fds.data.as_fd(), access, bell) {
        Ok(r) => {
            conn.watch_ring(&r);
            r
        }
        Err(source) => {
            detach();
            return Err(OpenError::Map {
                topic: topic.to_string(),
                source,
            });
        }
    };
    // The header is only as trustworthy as whoever can write the segment: it must describe
    // exactly the topic the daemon says it is.
    if ring.geometry() != &spec {
        detach();
        return Err(OpenError::Tampered {
            topic: topic.to_string(),
            message: format!(
                "the segment describes {:?}, but the daemon says {spec:?}",
                ring.geometry()
            ),
        });
    }
    let ring = P::new(ring, index as usize, generation).map_err(|e| {
        detach();
        OpenError::Tampered {
            topic: topic.to_string(),
            message: format!("the daemon handed over an entry the segment does not show held: {e}"),
        }
    })?;
    Ok(Attached {
        ring,
        fds,
        spec,
        created,
    })
}

impl<P: RingPort> Port<P> {
    /// Attach a port to `topic`.
    pub(crate) fn attach(
        conn: &Arc<Conn>,
        topic: &str,
        how: How,
        start: StartAt,
    ) -> Result<Port<P>, OpenError> {
        let a = attach::<P>(conn, topic, &how, start)?;
        tracing::debug!(topic, role = %P::ROLE, created = a.created, "attached");
        let follower = Follower::new(conn);
        Ok(Port {
            view: PortView::new(&a.ring, follower.epoch()),
            ring: a.ring,
            follower,
            conn: conn.clone(),
            topic: topic.to_string(),
            how,
            start,
            spec: a.spec,
            fds: a.fds,
        })
    }

    /// A port on an entry the daemon attached for a topic watch (its descriptors came with
    /// the notice); `how` is what attaching afresh after a daemon restart asks.
    pub(crate) fn from_entry(
        conn: &Arc<Conn>,
        topic: &str,
        how: How,
        start: StartAt,
        entry: Entry,
        fds: Vec<std::os::fd::OwnedFd>,
    ) -> Result<Port<P>, OpenError> {
        let a = map_entry::<P>(conn, topic, &how, entry, fds)?;
        tracing::debug!(topic, role = %P::ROLE, "attached by a topic watch");
        let follower = Follower::new(conn);
        Ok(Port {
            view: PortView::new(&a.ring, follower.epoch()),
            ring: a.ring,
            follower,
            conn: conn.clone(),
            topic: topic.to_string(),
            how,
            start,
            spec: a.spec,
            fds: a.fds,
        })
    }

    /// The topic name.
    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    /// The connection the port was attached through.
    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// Who the port is right now, shared with wait sets.
    pub(crate) fn view(&self) -> &Arc<PortView> {
        &self.view
    }

    /// The topic's geometry and payload type, as the segment holds them.
    pub(crate) fn spec(&self) -> &Geometry {
        &self.spec
    }

    /// Before each operation: follow a restarted daemon (one load of a line nobody writes
    /// while the daemon runs, unless a restart happened).
    #[inline]
    pub(crate) fn ensure_attached(&mut self) -> Result<(), Lost> {
        if self.follower.stale() {
            self.follow()?;
        }
        Ok(())
    }

    #[cold]
    fn follow(&mut self) -> Result<(), Lost> {
        let port = PortId {
            topic: &self.topic,
            role: P::ROLE,
            index: self.ring.index(),
            generation: self.ring.generation(),
            held: self.ring.held(),
            fds: &self.fds,
        };
        if self.follower.follow(&self.conn, port) == Next::AttachAfresh {
            self.attach_afresh()?;
        }
        self.view.set_epoch(self.follower.attached_epoch());
        Ok(())
    }

    /// The restarted daemon gave this port up (it did not re-attach in time): take a new
    /// entry. A subscriber starts with the next message.
    #[cold]
    fn attach_afresh(&mut self) -> Result<(), Lost> {
        // If the old entry was evicted, the daemon reuses it only once we let go of it.
        let _ = self.conn.request(&self.detach_request());
        let start = match P::ROLE {
            Role::Publisher => self.start,
            Role::Subscriber => StartAt::Latest,
        };
        let a = attach::<P>(&self.conn, &self.topic, &self.how, start).map_err(|e| {
            tracing::warn!(topic = self.topic.as_str(), error = %e, "cannot attach anew after a daemon restart");
            Lost
        })?;
        self.ring = a.ring;
        self.fds = a.fds;
        self.spec = a.spec;
        self.follower = Follower::new(&self.conn);
        self.view.set(&self.ring, self.follower.epoch());
        match P::ROLE {
            Role::Publisher => tracing::info!(
                topic = self.topic.as_str(),
                "attached anew after a daemon restart"
            ),
            Role::Subscriber => tracing::warn!(
                topic = self.topic.as_str(),
                "attached anew after a daemon restart; messages published meanwhile were missed"
            ),
        }
        Ok(())
    }

    /// Something that tells the daemon, for this port, that its lossless topic is full (see
    /// [`HeldNotice`]).
    pub(crate) fn held_notice(&self) -> HeldNotice {
        HeldNotice {
            conn: self.conn.clone(),
            topic: self.topic.clone(),
            last: None,
        }
    }

    fn detach_request(&self) -> Request {
        Request::Detach {
            topic: self.topic.clone(),
            role: P::ROLE,
            index: self.ring.index() as u32,
            generation: self.ring.generation(),
        }
    }

    /// Wait for at most `timeout` (forever with `None`) by running `step` until it has a
    /// result, with a look at the daemon's epoch before each run: a port blocked on a quiet or
    /// full topic follows a restarted daemon too. `step` gets the time left (`None`: no
    /// deadline) and the strategy to wait with: `strategy` on the first run, and then without
    /// its spin phase (see [`resumed`]). A run ends before the deadline ([`Slice::TimedOut`])
    /// only when something asks the port to look around: the daemon hung up (the ring's
    /// doorbell is interrupted, see `hangup`), or `step`'s own reasons. While the daemon lives
    /// nothing wakes the port but its condition or its deadline.
    pub(crate) fn sliced<R, E>(
        &mut self,
        timeout: Option<Duration>,
        strategy: WaitStrategy,
        mut step: impl FnMut(&mut P, Option<Duration>, WaitStrategy) -> Result<R, Slice<E>>,
    ) -> Result<R, Waited<E>> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut strategy = strategy;
        loop {
            self.ensure_attached().map_err(|Lost| Waited::Lost)?;
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match step(&mut self.ring, left, strategy) {
                Ok(r) => return Ok(r),
                Err(Slice::TimedOut) if deadline.is_none_or(|d| Instant::now() < d) => {}
                Err(Slice::TimedOut) => return Err(Waited::TimedOut),
                Err(Slice::Failed(e)) => return Err(Waited::Failed(e)),
            }
            strategy = resumed(strategy);
        }
    }
}

/// The strategy a wait resumes with after a wake-up that was not its condition: an adaptive
/// wait spins and yields only at its start, then it blocks; the others stay as they are.
pub(crate) fn resumed(strategy: WaitStrategy) -> WaitStrategy {
    match strategy {
        WaitStrategy::Adaptive { .. } => WaitStrategy::Block,
        other => other,
    }
}

/// A publisher's notices to the daemon that it found its lossless topic full
/// ([`Request::Held`]): the daemon watches a topic for a stuck subscriber only while one of its
/// publishers is held back. At most one notice per [`HELD_NOTICE_EVERY`]: a publisher that
/// keeps finding the ring full (in `try_send`, or while a blocking send waits) keeps telling,
/// so a daemon that stopped watching (it saw room for a moment) hears again within that time.
pub(crate) struct HeldNotice {
    conn: Arc<Conn>,
    topic: String,
    last: Option<Instant>,
}

impl std::fmt::Debug for HeldNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldNotice")
            .field("topic", &self.topic)
            .field("last", &self.last)
            .finish()
    }
}

impl HeldNotice {
    /// What a try operation (`try_send`, `try_loan`, an async claim) returns when the ring
    /// refused it; a full lossless ring is told to the daemon first ([`HeldNotice::full`]).
    #[inline]
    pub(crate) fn try_failed(
        &mut self,
        e: bus_core::ring::SendError,
        index: usize,
        generation: u64,
    ) -> crate::error::TrySendError {
        if e == bus_core::ring::SendError::Full {
            self.full(index, generation);
        }
        e.into()
    }

    /// The ring was full for the publisher at `index`, `generation`.
    #[cold]
    pub(crate) fn full(&mut self, index: usize, generation: u64) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < HELD_NOTICE_EVERY)
        {
            return;
        }
        self.last = Some(now);
        self.conn.notify(&Request::Held {
            topic: self.topic.clone(),
            index: index as u32,
            generation,
        });
    }
}

impl<P: RingPort> Drop for Port<P> {
    fn drop(&mut self) {
        self.ring.release();
        let _ = self.conn.request(&self.detach_request());
    }
}
