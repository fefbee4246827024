//! Presence: how many peers a port has (subscribers for a publisher, publishers for a
//! subscriber), and waiting for that number.
//!
//! Counts are read from the topic's shared memory (bus-core's `Ring::subscriber_count` and
//! `Ring::publisher_count`), never asked of the daemon: a few loads, cheap enough to ask per
//! message. Waiting sleeps on the topic's presence bell, which the daemon rings after every
//! attach, release and eviction (a process killed with `kill -9` too: the daemon releases its
//! entries when its connection closes). A [`crate::WaitSet`] watches a count with
//! [`crate::WaitSet::attach_presence`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bus_proto::segment::ShmRing;

use crate::port::PortView;
use crate::{Payload, Publisher, RawPublisher, RawSubscriber, Subscriber};

/// Why waiting for peers ended without enough of them.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use bus_client::{Bus, PresenceError};
/// let bus = Bus::embedded()?;
/// let publisher = bus.publisher::<u64>("doc/presence-error").create()?;
/// let err = publisher.wait_for_subscribers(1, Some(Duration::from_millis(1))).unwrap_err();
/// assert_eq!(err, PresenceError::Timeout { count: 0 });
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceError {
    /// The timeout passed with fewer peers than asked for.
    #[error("timed out waiting for peers: {count} attached")]
    Timeout {
        /// The peers attached when it gave up.
        count: usize,
    },
    /// The topic was closed (deleted, or the daemon stopped) while waiting.
    #[error("the topic is closed")]
    Closed,
}

/// Which count a port waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peers {
    /// A publisher's peers.
    Subscribers,
    /// A subscriber's peers.
    Publishers,
}

impl Peers {
    /// The count, read from the tables.
    pub(crate) fn count(self, ring: &ShmRing) -> usize {
        match self {
            Peers::Subscribers => ring.subscriber_count(),
            Peers::Publishers => ring.publisher_count(),
        }
    }
}

/// Wait until `ring` has at least `n` peers of the kind `peers`, `timeout` passes (forever
/// with `None`) or the topic closes. Read the bell's word, count, sleep on the word.
pub(crate) fn wait_for(
    ring: &ShmRing,
    peers: Peers,
    n: usize,
    timeout: Option<Duration>,
) -> Result<usize, PresenceError> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let seq = ring.presence_seq();
        let count = peers.count(ring);
        if count >= n {
            return Ok(count);
        }
        if ring.is_closed() {
            return Err(PresenceError::Closed);
        }
        let left = match deadline {
            None => None,
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return Err(PresenceError::Timeout { count }),
            },
        };
        ring.wait_presence(seq, left);
    }
}

/// A port's peer count, apart from the port: it may be kept and used from any thread while the
/// port is busy (holding a sample or a loan, or waiting), and follows the port when it
/// attaches afresh (a restarted daemon). Made by [`PresencePort::presence`].
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use bus_client::{Bus, PresencePort};
/// let bus = Bus::embedded()?;
/// let publisher = bus.publisher::<u64>("doc/presence").create()?;
/// let listeners = publisher.presence();
/// let waiter = std::thread::spawn(move || listeners.wait_for(1, Some(Duration::from_secs(10))));
/// let _subscriber = bus.subscriber::<u64>("doc/presence").open()?;
/// assert_eq!(waiter.join().unwrap()?, 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Presence {
    view: Arc<PortView>,
    peers: Peers,
}

impl Presence {
    /// The peers attached now (see [`PresencePort::peer_count`]).
    pub fn count(&self) -> usize {
        self.peers.count(&self.view.get().ring)
    }

    /// Wait until at least `n` peers are attached (forever with `None`); returns how many are.
    pub fn wait_for(&self, n: usize, timeout: Option<Duration>) -> Result<usize, PresenceError> {
        wait_for(&self.view.get().ring, self.peers, n, timeout)
    }
}

/// A port whose peers can be counted and watched by a [`crate::WaitSet`]
/// ([`crate::WaitSet::attach_presence`]): [`Publisher`], [`RawPublisher`] (peers are
/// subscribers), [`Subscriber`], [`RawSubscriber`] (peers are publishers).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, PresencePort};
/// let bus = Bus::embedded()?;
/// let publisher = bus.publisher::<u64>("doc/presence-port").create()?;
/// assert_eq!(publisher.peer_count(), 0);
/// let _subscriber = bus.subscriber::<u64>("doc/presence-port").open()?;
/// assert_eq!(publisher.peer_count(), 1);
/// # Ok(()) }
/// ```
pub trait PresencePort: sealed::Sealed {
    /// The peers attached now: subscribers for a publisher, publishers for a subscriber.
    fn peer_count(&self) -> usize;

    /// A handle on the peer count that does not borrow the port.
    fn presence(&self) -> Presence {
        let parts = self.presence_parts();
        Presence {
            view: parts.view.clone(),
            peers: parts.peers,
        }
    }
}

pub(crate) mod sealed {
    use std::sync::Arc;

    use bus_proto::protocol::Role;

    use super::Peers;
    use crate::conn::Conn;
    use crate::port::PortView;

    /// What a wait set needs of a port to watch its peers.
    pub struct Parts<'a> {
        pub(crate) view: &'a Arc<PortView>,
        pub(crate) role: Role,
        pub(crate) conn: &'a Arc<Conn>,
        pub(crate) topic: &'a str,
        pub(crate) peers: Peers,
    }

    /// Only this crate's ports are presence ports.
    pub trait Sealed {
        #[doc(hidden)]
        fn presence_parts(&self) -> Parts<'_>;
    }
}

macro_rules! presence_port {
    ([$($g:tt)*] $t:ty, $peers:expr) => {
        impl<$($g)*> sealed::Sealed for $t {
            fn presence_parts(&self) -> sealed::Parts<'_> {
                let port = self.inner.port();
                let role = match $peers {
                    Peers::Subscribers => bus_proto::protocol::Role::Publisher,
                    Peers::Publishers => bus_proto::protocol::Role::Subscriber,
                };
                sealed::Parts {
                    view: port.view(),
                    role,
                    conn: port.conn(),
                    topic: port.topic(),
                    peers: $peers,
                }
            }
        }

        impl<$($g)*> PresencePort for $t {
            fn peer_count(&self) -> usize {
                $peers.count(self.inner.port().ring.ring())
            }
        }
    };
}

presence_port!([T: Payload + ?Sized] Publisher<T>, Peers::Subscribers);
presence_port!([] RawPublisher, Peers::Subscribers);
presence_port!([T: Payload + ?Sized] Subscriber<T>, Peers::Publishers);
presence_port!([] RawSubscriber, Peers::Publishers);

/// The presence methods of every publisher (typed or raw), over its `inner: Sender`.
macro_rules! publisher_presence {
    () => {
        /// Subscribers attached to the topic now (this process's and others'), read from
        /// shared memory: no request to the daemon, cheap enough to ask per message.
        ///
        /// ```
        /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
        /// use bus_client::Bus;
        /// let bus = Bus::embedded()?;
        /// let publisher = bus.publisher::<u64>("doc/subscriber-count").create()?;
        /// assert_eq!(publisher.subscriber_count(), 0);
        /// let subscriber = bus.subscriber::<u64>("doc/subscriber-count").open()?;
        /// assert_eq!(publisher.subscriber_count(), 1);
        /// drop(subscriber);
        /// assert_eq!(publisher.subscriber_count(), 0);
        /// # Ok(()) }
        /// ```
        pub fn subscriber_count(&self) -> usize {
            crate::presence::Peers::Subscribers.count(self.inner.port().ring.ring())
        }

        /// Wait until at least `n` subscribers are attached (forever with `None`); returns how
        /// many are. Sleeps on the topic's presence bell, which the daemon rings whenever a
        /// port attaches or goes away.
        ///
        /// ```
        /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
        /// use std::time::Duration;
        /// use bus_client::Bus;
        /// let bus = Bus::embedded()?;
        /// let publisher = bus.publisher::<u64>("doc/wait-for-subscribers").create()?;
        /// let _subscriber = bus.subscriber::<u64>("doc/wait-for-subscribers").open()?;
        /// assert_eq!(publisher.wait_for_subscribers(1, Some(Duration::from_secs(10)))?, 1);
        /// # Ok(()) }
        /// ```
        pub fn wait_for_subscribers(
            &self,
            n: usize,
            timeout: Option<std::time::Duration>,
        ) -> Result<usize, crate::PresenceError> {
            crate::presence::wait_for(
                self.inner.port().ring.ring(),
                crate::presence::Peers::Subscribers,
                n,
                timeout,
            )
        }
    };
}
pub(crate) use publisher_presence;

/// The presence methods of every subscriber (typed or raw), over its `inner: Receiver`.
macro_rules! subscriber_presence {
    () => {
        /// Publishers attached to the topic now, read from shared memory: no request to the
        /// daemon, cheap enough to ask per message.
        ///
        /// ```
        /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
        /// use bus_client::Bus;
        /// let bus = Bus::embedded()?;
        /// let subscriber = bus.subscriber::<u64>("doc/publisher-count").open_or_create()?;
        /// assert_eq!(subscriber.publisher_count(), 0);
        /// let _publisher = bus.publisher::<u64>("doc/publisher-count").open()?;
        /// assert_eq!(subscriber.publisher_count(), 1);
        /// # Ok(()) }
        /// ```
        pub fn publisher_count(&self) -> usize {
            crate::presence::Peers::Publishers.count(self.inner.port().ring.ring())
        }

        /// Wait until at least `n` publishers are attached (forever with `None`); returns how
        /// many are. See [`crate::Publisher::wait_for_subscribers`].
        pub fn wait_for_publishers(
            &self,
            n: usize,
            timeout: Option<std::time::Duration>,
        ) -> Result<usize, crate::PresenceError> {
            crate::presence::wait_for(
                self.inner.port().ring.ring(),
                crate::presence::Peers::Publishers,
                n,
                timeout,
            )
        }
    };
}
pub(crate) use subscriber_presence;
