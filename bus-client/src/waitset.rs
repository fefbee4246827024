//! [`WaitSet`]: one thread waits on any number of subscribers (and publishers waiting for room
//! on a full lossless topic), deadlines and intervals, and learns which are ready.
//!
//! A wait set owns one eventfd. Attaching a port registers that eventfd as a wake slot of the
//! port's topic with the daemon; waiting arms every slot, runs one heavy barrier, checks every
//! attachment, and sleeps on the eventfd only if none is ready. A publisher that commits to an
//! armed topic (or a subscriber that frees a slot) writes the eventfd; a publish to a topic
//! nobody waits on stays free of system calls.
//!
//! **No spinning on readiness left undrained.** [`WaitSet::wait`] reports an attachment once
//! per change: a subscriber is reported again only after it read something (its cursor moved)
//! or something new was published; a publisher only after it published. So a loop that ignores
//! a ready subscriber sleeps instead of spinning, which a level-triggered wait would not do.
//!
//! **Foreign event loops.** A wait set is also a descriptor ([`AsFd`]) for `poll`, `epoll`,
//! an asyncio or a GLib loop: wait for it to be readable (at most [`WaitSet::timeout_hint`]),
//! then call [`WaitSet::try_wait`], which never blocks. It reports with the same once-per-change
//! rule, and leaves every port armed, so the descriptor becomes readable again only when
//! something changes: a loop that leaves a subscriber unread sleeps, it does not spin.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bus_core::doorbell::Doorbell;
use bus_proto::protocol::Role;
use bus_proto::segment::ShmRing;

use crate::conn::Conn;
use crate::error::WaitError;
use crate::follow::CHECK_EVERY;
use crate::port::PortView;
use crate::presence::{Peers, PresencePort};
use crate::wake::{Efd, Registration};
use crate::{Payload, Publisher, RawPublisher, RawSubscriber, Subscriber};

/// Which attachment of a [`WaitSet`] is ready: compare with [`Attachment::id`].
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::{Duration, Instant};
/// use bus_client::{AttachmentId, WaitSet};
/// let mut set = WaitSet::new()?;
/// let soon = set.attach_deadline(Instant::now());
/// let later = set.attach_deadline(Instant::now() + Duration::from_secs(3600));
/// let ready: Vec<AttachmentId> = set.wait(Some(Duration::from_secs(5)))?.to_vec();
/// assert_eq!(ready, [soon.id()]);
/// assert_ne!(soon.id(), later.id());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttachmentId {
    index: usize,
    generation: u64,
}

/// One attachment of a [`WaitSet`]. Dropping it detaches it (and gives its wake slot back).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use bus_client::{Attachment, WaitSet};
/// let mut set = WaitSet::new()?;
/// let tick: Attachment = set.attach_interval(Duration::from_millis(1));
/// assert_eq!(set.wait(Some(Duration::from_secs(5)))?, [tick.id()]);
/// drop(tick);                                  // detached: nothing is left to wake the set
/// assert!(set.wait(Some(Duration::from_millis(10)))?.is_empty());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Attachment {
    id: AttachmentId,
    set: Weak<Mutex<Entries>>,
}

impl Attachment {
    /// What [`WaitSet::wait`] reports when this attachment is ready.
    pub fn id(&self) -> AttachmentId {
        self.id
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if let Some(set) = self.set.upgrade() {
            let mut entries = set.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(slot) = entries.slots.get_mut(self.id.index) {
                if slot
                    .as_ref()
                    .is_some_and(|e| e.generation == self.id.generation)
                {
                    // Dropped outside the lock would be nicer, but the registration's drop is
                    // one request to the daemon and no one else waits on this lock then.
                    *slot = None;
                }
            }
        }
    }
}

/// A port watched by a wait set.
struct Watched {
    view: Arc<PortView>,
    role: Role,
    conn: Arc<Conn>,
    topic: String,
    /// The wake slot for the port as it was when registered (`None` until registered, or after
    /// a daemon restart or a re-attach made it stale).
    reg: Option<(Registration, usize, u64)>,
    /// Watch the port's peer count (the presence bell) instead of its messages or room.
    presence: Option<Peers>,
}

enum Kind {
    Port(Box<Watched>),
    Deadline(Instant),
    Interval { period: Duration, next: Instant },
}

struct Entry {
    generation: u64,
    kind: Kind,
    /// What the attachment looked like when it was last reported ready (see the module's
    /// "no spinning"): a port's `(cursor or claim, claim)`.
    reported: Option<(u64, u64)>,
    /// When a port that must follow a restarted daemon was last reported (see
    /// [`WaitSet::wait`]).
    stale_reported: Option<Instant>,
    /// A deadline that fired is not reported again.
    fired: bool,
}

#[derive(Default)]
struct Entries {
    slots: Vec<Option<Entry>>,
    next_generation: u64,
}

/// Waits on many subscribers, publishers, deadlines and intervals at once.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use bus_client::{Bus, WaitSet};
/// let bus = Bus::embedded()?;
/// let mut odom = bus.subscriber::<u64>("doc/ws/odom").open_or_create()?;
/// let mut scan = bus.subscriber::<u64>("doc/ws/scan").open_or_create()?;
/// let mut publisher = bus.publisher::<u64>("doc/ws/scan").open()?;
///
/// let mut set = WaitSet::new()?;
/// let odom_ready = set.attach_subscriber(&odom)?;
/// let scan_ready = set.attach_subscriber(&scan)?;
/// let tick = set.attach_interval(Duration::from_millis(100));
///
/// publisher.publish(&7)?;
/// let ready = set.wait(Some(Duration::from_secs(5)))?.to_vec();
/// assert!(ready.contains(&scan_ready.id()) && !ready.contains(&odom_ready.id()));
/// assert_eq!(*scan.try_recv()?, 7);
/// assert!(set.wait(None)?.contains(&tick.id()));  // nothing else happens: the interval fires
/// # Ok(()) }
/// ```
pub struct WaitSet {
    pub(crate) efd: Efd,
    entries: Arc<Mutex<Entries>>,
    pub(crate) ready: Vec<AttachmentId>,
    /// When [`WaitSet::try_wait`] must be called again even if the descriptor stays quiet:
    /// set by every readiness pass (its next timer, or a look around while a port's daemon is
    /// gone); `None` when nothing is due. Meaningful once `passed`.
    recheck_at: Option<Instant>,
    /// A readiness pass armed the ports (see [`WaitSet::timeout_hint`]).
    passed: bool,
    /// The executor's view of the eventfd, made at the first async wait.
    #[cfg(any(feature = "tokio", feature = "async-io"))]
    pub(crate) reactor: Option<crate::asynch::Reactor>,
}

impl std::fmt::Debug for WaitSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitSet").finish_non_exhaustive()
    }
}

impl WaitSet {
    /// An empty wait set (it holds one eventfd).
    pub fn new() -> Result<WaitSet, WaitError> {
        Ok(WaitSet {
            efd: Efd::new()?,
            entries: Arc::new(Mutex::new(Entries::default())),
            ready: Vec::new(),
            recheck_at: None,
            passed: false,
            #[cfg(any(feature = "tokio", feature = "async-io"))]
            reactor: None,
        })
    }

    fn attach(&mut self, kind: Kind) -> Attachment {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.next_generation += 1;
        let generation = entries.next_generation;
        let entry = Entry {
            generation,
            kind,
            reported: None,
            stale_reported: None,
            fired: false,
        };
        let index = match entries.slots.iter().position(Option::is_none) {
            Some(i) => {
                entries.slots[i] = Some(entry);
                i
            }
            None => {
                entries.slots.push(Some(entry));
                entries.slots.len() - 1
            }
        };
        Attachment {
            id: AttachmentId { index, generation },
            set: Arc::downgrade(&self.entries),
        }
    }

    fn attach_port(
        &mut self,
        view: &Arc<PortView>,
        role: Role,
        conn: &Arc<Conn>,
        topic: &str,
    ) -> Result<Attachment, WaitError> {
        self.watch_port(view, role, conn, topic, None)
    }

    /// Watch a port's messages or room (`presence` `None`), or its peer count.
    fn watch_port(
        &mut self,
        view: &Arc<PortView>,
        role: Role,
        conn: &Arc<Conn>,
        topic: &str,
        presence: Option<Peers>,
    ) -> Result<Attachment, WaitError> {
        let mut watched = Watched {
            view: view.clone(),
            role,
            conn: conn.clone(),
            topic: topic.to_string(),
            reg: None,
            presence,
        };
        // Register now, so that a topic without a free wake slot is an error here, not a
        // silent poll later.
        register(&mut watched)?;
        // A presence attachment reports changes from the count it starts with.
        let reported = presence.map(|p| (p.count(&view.get().ring) as u64, 0));
        let attachment = self.attach(Kind::Port(Box::new(watched)));
        if reported.is_some() {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(Some(e)) = entries.slots.get_mut(attachment.id.index) {
                e.reported = reported;
            }
        }
        Ok(attachment)
    }

    /// Watch the peer count of `port` (subscribers of a [`Publisher`] or [`RawPublisher`],
    /// publishers of a [`Subscriber`] or [`RawSubscriber`]): ready whenever the count differs
    /// from the one it had when last reported (or when attached). The daemon rings the topic's
    /// presence bell at every attach, release and eviction, so a process that exits or is
    /// killed is seen as soon as its connection closes. Read the count with
    /// [`PresencePort::peer_count`]; a change undone between two looks may go unreported.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use bus_client::{Bus, PresencePort, WaitSet};
    /// let bus = Bus::embedded()?;
    /// let publisher = bus.publisher::<u64>("doc/ws/presence").create()?;
    /// let mut set = WaitSet::new()?;
    /// let listeners = set.attach_presence(&publisher)?;
    /// let subscriber = bus.subscriber::<u64>("doc/ws/presence").open()?;
    /// assert_eq!(set.wait(Some(Duration::from_secs(10)))?, [listeners.id()]);
    /// assert_eq!(publisher.peer_count(), 1);
    /// drop(subscriber);
    /// assert_eq!(set.wait(Some(Duration::from_secs(10)))?, [listeners.id()]);
    /// assert_eq!(publisher.peer_count(), 0);
    /// # Ok(()) }
    /// ```
    pub fn attach_presence<P: PresencePort>(&mut self, port: &P) -> Result<Attachment, WaitError> {
        let parts = port.presence_parts();
        self.watch_port(
            parts.view,
            parts.role,
            parts.conn,
            parts.topic,
            Some(parts.peers),
        )
    }

    /// Watch `subscriber`: ready when it has a message to read (or an error to report: the
    /// topic closed, the subscriber evicted).
    pub fn attach_subscriber<T: Payload + ?Sized>(
        &mut self,
        subscriber: &Subscriber<T>,
    ) -> Result<Attachment, WaitError> {
        let port = subscriber.inner.port();
        self.attach_port(port.view(), Role::Subscriber, port.conn(), port.topic())
    }

    /// Watch a raw subscriber; see [`WaitSet::attach_subscriber`].
    pub fn attach_raw_subscriber(
        &mut self,
        subscriber: &RawSubscriber,
    ) -> Result<Attachment, WaitError> {
        let port = subscriber.inner.port();
        self.attach_port(port.view(), Role::Subscriber, port.conn(), port.topic())
    }

    /// Watch `publisher`: ready when a lossless topic has room again (a lossy one always has).
    pub fn attach_publisher<T: Payload + ?Sized>(
        &mut self,
        publisher: &Publisher<T>,
    ) -> Result<Attachment, WaitError> {
        let port = publisher.inner.port();
        self.attach_port(port.view(), Role::Publisher, port.conn(), port.topic())
    }

    /// Watch a raw publisher; see [`WaitSet::attach_publisher`].
    pub fn attach_raw_publisher(
        &mut self,
        publisher: &RawPublisher,
    ) -> Result<Attachment, WaitError> {
        let port = publisher.inner.port();
        self.attach_port(port.view(), Role::Publisher, port.conn(), port.topic())
    }

    /// Ready once, when `at` has passed.
    pub fn attach_deadline(&mut self, at: Instant) -> Attachment {
        self.attach(Kind::Deadline(at))
    }

    /// Ready every `period`, from one `period` from now (missed ticks are not made up).
    pub fn attach_interval(&mut self, period: Duration) -> Attachment {
        let period = period.max(Duration::from_micros(1));
        self.attach(Kind::Interval {
            period,
            next: Instant::now() + period,
        })
    }

    /// Wait until at least one attachment is ready, or `timeout` passes (forever with
    /// `None`); returns the ready ones (empty on timeout). Each is reported once per change
    /// (see the module documentation): read from a ready subscriber before waiting again, or
    /// it is reported only when something new arrives.
    ///
    /// Nothing wakes the set periodically while its ports' daemon lives. When it dies (its
    /// control connection hangs up) the set wakes, and looks every 100 ms for a restarted
    /// daemon; after a restart a port is reported (at most every 100 ms) until an operation
    /// on it (a `try_recv`, a `try_send`) has handed it back to the new daemon; that operation
    /// may well find nothing to do.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<&[AttachmentId], WaitError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let next_timer = self.check()?;
            if !self.ready.is_empty() {
                return Ok(&self.ready);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(&self.ready);
            }
            // Sleep until the eventfd is written (a ringer, or the daemon's death), the next
            // timer (which includes a look around while a daemon is gone or a port has no
            // wake slot), or the caller's deadline.
            let until = [deadline, next_timer].into_iter().flatten().min();
            self.efd
                .sleep(until.map(|t| t.saturating_duration_since(now)));
            self.efd.drain();
            self.disarm_all();
        }
    }

    /// [`WaitSet::wait`] without waiting, for a foreign event loop that polls the wait set's
    /// descriptor ([`AsFd`]): consumes the descriptor's wake-up, makes one readiness pass and
    /// returns what is ready (often nothing: a wake-up means "something may have changed").
    /// Every port is left armed, so the descriptor becomes readable at the next change; the
    /// once-per-change rule of [`WaitSet::wait`] holds, so a ready subscriber left unread is
    /// not reported again and does not keep the descriptor readable.
    ///
    /// Deadlines, intervals and the looks around while a port's daemon is gone (for a
    /// restarted one) or a port has no wake slot do not make the descriptor readable: poll
    /// with a timeout of at most [`WaitSet::timeout_hint`] and call `try_wait` when it
    /// expires. (The daemon's death does make it readable.)
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::os::fd::AsFd;
    /// use std::time::Duration;
    /// use bus_client::{Bus, WaitSet};
    /// use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    /// let bus = Bus::embedded()?;
    /// let mut subscriber = bus.subscriber::<u64>("doc/ws/fd").open_or_create()?;
    /// let mut publisher = bus.publisher::<u64>("doc/ws/fd").open()?;
    /// let mut set = WaitSet::new()?;
    /// let ready = set.attach_subscriber(&subscriber)?;
    /// assert!(set.try_wait()?.is_empty());              // arms the ports: nothing yet
    ///
    /// publisher.publish(&7)?;
    /// let hint = set.timeout_hint().unwrap_or(Duration::from_secs(1));
    /// let ms = PollTimeout::try_from(hint.as_millis() as i32 + 1)?;
    /// let mut fds = [PollFd::new(set.as_fd(), PollFlags::POLLIN)];
    /// assert_eq!(poll(&mut fds, ms)?, 1);                // readable: the publish wrote it
    /// assert_eq!(set.try_wait()?, [ready.id()]);
    /// assert_eq!(*subscriber.try_recv()?, 7);
    /// # Ok(()) }
    /// ```
    pub fn try_wait(&mut self) -> Result<&[AttachmentId], WaitError> {
        self.efd.drain();
        self.pass(false)?;
        Ok(&self.ready)
    }

    /// How long a foreign event loop may wait on the descriptor before it must call
    /// [`WaitSet::try_wait`] anyway: until the next deadline or interval tick, or the next
    /// look around (every 100 ms while a port's daemon is gone or a port has no wake slot).
    /// Zero before the first `try_wait` (which arms the ports) and when something is due;
    /// `None` when only the descriptor can make something ready (wait without a timeout), or
    /// nothing is attached.
    pub fn timeout_hint(&self) -> Option<Duration> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut at: Option<Instant> = None;
        let mut ports = false;
        for e in entries.slots.iter().flatten() {
            let due = match &e.kind {
                Kind::Port(_) => {
                    ports = true;
                    continue;
                }
                Kind::Deadline(_) if e.fired => continue,
                Kind::Deadline(d) => *d,
                Kind::Interval { next, .. } => *next,
            };
            at = Some(at.map_or(due, |t| t.min(due)));
        }
        drop(entries);
        if ports && !self.passed {
            // No pass yet: nothing is armed.
            return Some(Duration::ZERO);
        }
        let at = [at, self.recheck_at].into_iter().flatten().min();
        at.map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// One readiness pass that records when the next one is due (see
    /// [`WaitSet::timeout_hint`]); `disarm`: disarm every port when something is ready.
    fn pass(&mut self, disarm: bool) -> Result<Option<Instant>, WaitError> {
        let next_timer = self.check_with(disarm)?;
        self.recheck_at = next_timer;
        self.passed = true;
        Ok(next_timer)
    }

    /// One pass: arm every port, one barrier, check everything. Fills `self.ready`; returns
    /// the earliest pending timer, or the next look around if a port needs one (its daemon
    /// hung up, it must follow a restarted one, or it has no wake slot: `CHECK_EVERY`).
    /// Ports that are ready are disarmed before returning.
    pub(crate) fn check(&mut self) -> Result<Option<Instant>, WaitError> {
        self.pass(true)
    }

    /// [`WaitSet::check`]; `disarm`: disarm every port when something is ready (a thread
    /// about to handle it is not woken again meanwhile), or leave them armed (the descriptor
    /// of a foreign event loop).
    fn check_with(&mut self, disarm_ready: bool) -> Result<Option<Instant>, WaitError> {
        self.ready.clear();
        let entries = self.entries.clone();
        let mut entries = entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut next_timer: Option<Instant> = None;
        let mut barrier: Option<Arc<ShmRing>> = None;
        // Whether a port needs a look every CHECK_EVERY: it has no armed wake slot (nothing
        // would wake the set for it), or its daemon is gone (checked after the barrier).
        let mut look_around = false;
        for e in entries.slots.iter_mut().flatten() {
            if let Kind::Port(w) = &mut e.kind {
                let view = w.view.get();
                let epoch = w.conn.status().epoch();
                if view.epoch != Some(epoch) {
                    // An orphan of a restarted daemon: reported below until handed back.
                    continue;
                }
                let mut armed = false;
                if w.reg.as_ref().is_none_or(|(r, i, g)| {
                    *i != view.index || *g != view.generation || r.epoch != epoch
                }) {
                    // Best effort: a port whose slot cannot be had now is polled each slice.
                    let _ = register(w);
                }
                if let Some((r, _, _)) = &w.reg {
                    // The word before the bit: the agent wakes the set once it moves.
                    let seq = view.ring.waker_seq(r.slot).unwrap_or(0);
                    if view.ring.arm_waker_unfenced(r.slot, r.generation).is_ok() {
                        // The agent writes the eventfd once a ringer takes the bit; a port
                        // found ready below is disarmed (and unwatched) again.
                        if crate::agent::watch(&view.ring, r.slot, seq, &self.efd).is_err() {
                            view.ring.disarm_waker(r.slot);
                        } else {
                            armed = true;
                            barrier.get_or_insert(view.ring.clone());
                        }
                    }
                }
                look_around |= !armed;
            }
        }
        if let Some(ring) = barrier {
            ring.doorbell().heavy_barrier();
        }
        for (index, e) in entries.slots.iter_mut().enumerate() {
            let Some(e) = e else { continue };
            let id = AttachmentId {
                index,
                generation: e.generation,
            };
            match &mut e.kind {
                Kind::Port(w) => {
                    // After the barrier: the hang-up watcher sets the flag before it takes the
                    // armed bits, so either we see it here or our eventfd is written.
                    look_around |= w.conn.is_down();
                    let view = w.view.get();
                    if view.epoch != Some(w.conn.status().epoch()) {
                        // The daemon restarted: only an operation on the port hands it back
                        // to the new one (and lets its wake slot be registered there). Report
                        // it, at most once a slice, until the application did.
                        if e.stale_reported.is_none_or(|t| now >= t + CHECK_EVERY) {
                            e.stale_reported = Some(now);
                            self.ready.push(id);
                        }
                        let at = e.stale_reported.map_or(now, |t| t + CHECK_EVERY);
                        next_timer = Some(next_timer.map_or(at, |t| t.min(at)));
                        continue;
                    }
                    e.stale_reported = None;
                    let ring = &view.ring;
                    let claim = ring.claim_counter();
                    let (ready, mark) = match (w.presence, w.role) {
                        (Some(peers), _) => {
                            let count = peers.count(ring) as u64;
                            (e.reported.is_none_or(|(c, _)| c != count), (count, 0))
                        }
                        (None, Role::Subscriber) => (
                            ring.subscriber_ready(view.index, view.generation),
                            (ring.subscriber_cursor(view.index).unwrap_or(0), claim),
                        ),
                        (None, Role::Publisher) => (
                            ring.publisher_ready(view.index, view.generation),
                            (claim, claim),
                        ),
                    };
                    if ready && e.reported != Some(mark) {
                        e.reported = Some(mark);
                        self.ready.push(id);
                    }
                }
                Kind::Deadline(at) => {
                    if !e.fired {
                        if now >= *at {
                            e.fired = true;
                            self.ready.push(id);
                        } else {
                            next_timer = Some(next_timer.map_or(*at, |t| t.min(*at)));
                        }
                    }
                }
                Kind::Interval { period, next } => {
                    if now >= *next {
                        while *next <= now {
                            *next += *period;
                        }
                        self.ready.push(id);
                    }
                    next_timer = Some(next_timer.map_or(*next, |t| t.min(*next)));
                }
            }
        }
        if disarm_ready && !self.ready.is_empty() {
            disarm(&entries);
        }
        if look_around {
            let at = now + CHECK_EVERY;
            next_timer = Some(next_timer.map_or(at, |t| t.min(at)));
        }
        Ok(next_timer)
    }

    pub(crate) fn disarm_all(&self) {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        disarm(&entries);
    }
}

/// The wait set's eventfd: readable when something may be ready (see
/// [`WaitSet::try_wait`]). Read it only through `try_wait` (which drains it); register it for
/// readability (`POLLIN`, `EPOLLIN`), level- or edge-triggered.
impl AsFd for WaitSet {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.efd.as_fd()
    }
}

fn disarm(entries: &Entries) {
    for e in entries.slots.iter().flatten() {
        if let Kind::Port(w) = &e.kind {
            if let Some((r, _, _)) = &w.reg {
                let ring = &w.view.get().ring;
                crate::agent::unwatch(ring, r.slot);
                ring.disarm_waker(r.slot);
            }
        }
    }
}

/// (Re-)register a wake slot for the port as it is now.
fn register(w: &mut Watched) -> Result<(), WaitError> {
    w.reg = None;
    let view = w.view.get();
    let port = (view.index, view.generation);
    let reg = Registration::on_bell(&w.conn, &w.topic, w.role, port, w.presence.is_some())?;
    w.reg = Some((reg, view.index, view.generation));
    Ok(())
}
