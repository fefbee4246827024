//! Waiting for topics: [`Bus::watch_topics`] (created and deleted topics matching a pattern)
//! and the `open_or_wait` verbs of the subscriber builders (one topic by name).
//!
//! The daemon is told, never polled. A watch hands the daemon one end of a socket pair, the
//! *channel*; when a matching topic is created, the daemon attaches a subscriber for this
//! process **before it answers the topic's creator**, and writes a notice with the segment's
//! descriptors to the channel. The watcher therefore starts at the topic's first message: on a
//! lossless topic the creator's publishers wait for it (nothing is lost, even a burst larger
//! than the ring), on a lossy one it starts at the first message like every subscriber.
//!
//! The channel is separate from the control connection (whose requests each have the control
//! timeout): a watch may wait for hours, and its liveness is the socket itself. If the daemon
//! stops or dies, the channel ends and [`TopicWatch::recv`] says [`WatchError::Closed`]. The
//! subscribers belong to the bus's control connection like any other port.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bus_core::ring::StartAt;
use bus_core::wait::WaitStrategy;
use bus_proto::fdpass;
use bus_proto::pattern::TopicPattern;
use bus_proto::protocol::{How, ProtocolError, Request, Response, Role};

use crate::conn::{control_timeout, unexpected};
use crate::error::OpenError;
use crate::port::{Entry, Port};
use crate::raw::RawSubscriber;
use crate::subscriber::Receiver;
use crate::Bus;

/// Why a [`TopicWatch`] gave no event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// Nothing happened within the timeout.
    #[error("no topic was created or deleted within the timeout")]
    TimedOut,
    /// The daemon ended the watch: it stopped or died, or this watcher left too many notices
    /// unread. Watch again (a restarted daemon serves a new watch).
    #[error("shmbusd ended the topic watch (it stopped, or the watcher fell too far behind); watch again")]
    Closed,
    /// The channel carried something that is not a watch notice.
    #[error("topic watch: {0}")]
    Protocol(#[from] ProtocolError),
    /// A created topic's subscriber could not be set up (its segment did not map, or it
    /// carries another type than the one waited for).
    #[error(transparent)]
    Open(#[from] OpenError),
}

/// What a [`TopicWatch`] saw.
#[derive(Debug)]
#[non_exhaustive]
pub enum TopicEvent {
    /// A topic matching the pattern was created (or existed when the watch started, if
    /// [`TopicWatchBuilder::existing`] asked for those): a subscriber already attached, from
    /// the topic's first message for a created topic.
    Created(Box<RawSubscriber>),
    /// A topic announced on this watch was deleted.
    Deleted(String),
}

/// Starts a [`TopicWatch`]; see [`Bus::watch_topics`].
#[derive(Debug)]
pub struct TopicWatchBuilder<'b> {
    pub(crate) bus: &'b Bus,
    pub(crate) pattern: String,
    pub(crate) existing: Option<StartAt>,
    pub(crate) wait: WaitStrategy,
}

impl TopicWatchBuilder<'_> {
    /// Announce the matching topics that exist already too, with their subscribers attached at
    /// `start` ([`StartAt::Latest`]: messages from now on). Without it only topics created
    /// from now on are announced.
    pub fn existing(mut self, start: StartAt) -> Self {
        self.existing = Some(start);
        self
    }

    /// How the announced subscribers wait for messages.
    pub fn wait(mut self, strategy: WaitStrategy) -> Self {
        self.wait = strategy;
        self
    }

    /// Start watching.
    pub fn open(self) -> Result<TopicWatch, OpenError> {
        TopicWatch::start(self.bus, &self.pattern, self.existing, self.wait)
    }
}

/// Topics matching a pattern, as they are created and deleted, each created one with a
/// subscriber already attached. A descriptor ([`AsFd`]) that is readable when an event waits,
/// for `poll`/`epoll` loops.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, TopicEvent};
/// use std::time::Duration;
/// let bus = Bus::embedded()?;
/// let mut watch = bus.watch_topics("doc/watch/**").open()?;
/// let mut publisher = bus.publisher::<u64>("doc/watch/a").create()?;
/// publisher.publish(&7)?;                      // before the watcher looked: not lost
/// let Ok(TopicEvent::Created(mut sub)) = watch.recv_timeout(Duration::from_secs(30)) else {
///     panic!("no topic");
/// };
/// assert_eq!(sub.topic(), "doc/watch/a");
/// assert_eq!(sub.recv()?.bytes(), &7u64.to_ne_bytes()[..]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TopicWatch {
    bus: Bus,
    channel: UnixStream,
    pattern: String,
    existing: u32,
    start: StartAt,
    wait: WaitStrategy,
    /// The daemon closed the channel.
    ended: bool,
}

impl TopicWatch {
    fn start(
        bus: &Bus,
        pattern: &str,
        existing: Option<StartAt>,
        wait: WaitStrategy,
    ) -> Result<TopicWatch, OpenError> {
        let invalid = |message: String| OpenError::InvalidName {
            topic: pattern.to_string(),
            message,
        };
        TopicPattern::new(pattern).map_err(invalid)?;
        let io = |e: std::io::Error| OpenError::Protocol {
            topic: pattern.to_string(),
            source: ProtocolError::Io(e),
        };
        let (ours, theirs) = UnixStream::pair().map_err(io)?;
        let request = Request::Watch {
            pattern: pattern.to_string(),
            existing,
        };
        let (resp, _) = bus
            .conn()
            .request_with_fds(&request, &[theirs.as_raw_fd()])
            .map_err(|e| OpenError::from_request(pattern, e))?;
        drop(theirs);
        let Response::Watching { existing: n } = resp else {
            return Err(OpenError::Protocol {
                topic: pattern.to_string(),
                source: unexpected(&resp),
            });
        };
        // A notice is short and written whole as the socket drains: once its first byte is
        // here, the rest follows at once. A daemon that stops mid-notice is hung.
        ours.set_read_timeout(Some(control_timeout())).map_err(io)?;
        Ok(TopicWatch {
            bus: bus.clone(),
            channel: ours,
            pattern: pattern.to_string(),
            existing: n,
            start: existing.unwrap_or(StartAt::Latest),
            wait,
            ended: false,
        })
    }

    /// The pattern watched.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// How many topics that existed when the watch started it announces (0 unless
    /// [`TopicWatchBuilder::existing`] asked for them): a tool waiting for one topic by name
    /// knows from it whether it waits.
    pub fn existing(&self) -> u32 {
        self.existing
    }

    /// The next event, waiting for as long as it takes.
    pub fn recv(&mut self) -> Result<TopicEvent, WatchError> {
        self.next_within(None)
    }

    /// The next event, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<TopicEvent, WatchError> {
        self.next_within(Some(timeout))
    }

    /// The next event if one waits.
    pub fn try_recv(&mut self) -> Result<Option<TopicEvent>, WatchError> {
        match self.next_within(Some(Duration::ZERO)) {
            Ok(e) => Ok(Some(e)),
            Err(WatchError::TimedOut) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn next_within(&mut self, timeout: Option<Duration>) -> Result<TopicEvent, WatchError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        if self.ended {
            return Err(WatchError::Closed);
        }
        if !readable(self.channel.as_fd(), deadline)? {
            return Err(WatchError::TimedOut);
        }
        let (resp, fds) = match fdpass::read_frame_with_fds::<Response>(&self.channel, 2) {
            Ok(r) => r,
            Err(ProtocolError::Closed) => {
                self.ended = true;
                return Err(WatchError::Closed);
            }
            Err(e) => {
                self.ended = true;
                return Err(e.into());
            }
        };
        match resp {
            Response::TopicCreated {
                topic,
                spec,
                index,
                generation,
                existing,
                ..
            } => {
                let entry = Entry {
                    spec,
                    index,
                    generation,
                    created: false,
                };
                let start = if existing {
                    self.start
                } else {
                    StartAt::Oldest
                };
                let sub = raw_subscriber(&self.bus, &topic, start, self.wait, entry, fds)?;
                Ok(TopicEvent::Created(Box::new(sub)))
            }
            Response::TopicDeleted { topic } => Ok(TopicEvent::Deleted(topic)),
            other => {
                self.ended = true;
                Err(WatchError::Protocol(unexpected(&other)))
            }
        }
    }
}

impl AsFd for TopicWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.channel.as_fd()
    }
}

impl AsRawFd for TopicWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.channel.as_raw_fd()
    }
}

impl Drop for TopicWatch {
    /// Ends the watch and detaches the subscribers of notices not read yet: the daemon sees the
    /// channel shut and closes its end; what it wrote before comes in first.
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let _ = self.channel.shutdown(std::net::Shutdown::Write);
        while let Ok((resp, fds)) = fdpass::read_frame_with_fds::<Response>(&self.channel, 2) {
            drop(fds);
            if let Response::TopicCreated {
                topic,
                index,
                generation,
                ..
            } = resp
            {
                let _ = self.bus.conn().request(&Request::Detach {
                    topic,
                    role: Role::Subscriber,
                    index,
                    generation,
                });
            }
        }
    }
}

/// A raw subscriber on an entry a watch announced.
fn raw_subscriber(
    bus: &Bus,
    topic: &str,
    start: StartAt,
    wait: WaitStrategy,
    entry: Entry,
    fds: Vec<OwnedFd>,
) -> Result<RawSubscriber, OpenError> {
    let how = How::Open { type_info: None };
    let port = Port::from_entry(bus.conn(), topic, how, start, entry, fds)?;
    Ok(RawSubscriber {
        inner: Receiver::new(port, wait, |_| true),
    })
}

/// A port on `topic` for `how`, attached now if the topic exists, else as soon as it is
/// created (from its first message), waiting at most `timeout` (forever with `None`).
pub(crate) fn open_or_wait(
    bus: &Bus,
    topic: &str,
    how: How,
    start: StartAt,
    timeout: Option<Duration>,
) -> Result<Port<crate::port::RingSubscriber>, OpenError> {
    bus_proto::names::validate_topic_name(topic).map_err(|e| OpenError::InvalidName {
        topic: topic.to_string(),
        message: format!("invalid topic name '{topic}': {e}"),
    })?;
    let watch = TopicWatch::start(bus, topic, Some(start), WaitStrategy::default())?;
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        if !readable(watch.channel.as_fd(), deadline).map_err(|e| watch_failed(topic, e))? {
            return Err(OpenError::NotFound {
                topic: topic.to_string(),
                message: format!(
                    "no topic '{topic}' was created within {:?}",
                    timeout.unwrap_or_default()
                ),
            });
        }
        let (resp, fds) = fdpass::read_frame_with_fds::<Response>(&watch.channel, 2)
            .map_err(|e| watch_failed(topic, e.into()))?;
        if let Response::TopicCreated {
            spec,
            index,
            generation,
            existing,
            ..
        } = resp
        {
            let entry = Entry {
                spec,
                index,
                generation,
                created: false,
            };
            let start = if existing { start } else { StartAt::Oldest };
            return Port::from_entry(bus.conn(), topic, how, start, entry, fds);
        }
    }
}

fn watch_failed(topic: &str, e: WatchError) -> OpenError {
    match e {
        WatchError::Open(e) => e,
        WatchError::Protocol(source) => OpenError::Protocol {
            topic: topic.to_string(),
            source,
        },
        other => OpenError::Protocol {
            topic: topic.to_string(),
            source: ProtocolError::Io(std::io::Error::other(other.to_string())),
        },
    }
}

/// Wait until `fd` is readable (or hung up), at most until `deadline`; false when it passed.
fn readable(fd: BorrowedFd<'_>, deadline: Option<Instant>) -> Result<bool, WatchError> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Rounded up: a wait never ends before its deadline.
                let ms = left.as_nanos().div_ceil(1_000_000);
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(false);
                }
            }
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(ProtocolError::Io(e.into()).into()),
        }
    }
}
