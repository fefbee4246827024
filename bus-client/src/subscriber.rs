//! [`Subscriber`]: receive samples that point straight into the slot.

use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus_core::doorbell::Futex;
use bus_core::layout::Mode as CoreMode;
use bus_core::ring::{Sample as CoreSample, SubscriberPort};
use bus_core::storage::RawStorage;
use bus_core::wait::WaitStrategy;
use bus_daemon::protocol::{Request, Role, TopicSpec};
use bus_daemon::segment::{Mapping, SegmentFds};

use crate::bus::{attach_port, Attached};
use crate::conn::Conn;
use crate::follow::{Follower, Next, PortId, CHECK_EVERY};
use crate::payload::AlignedBuf;
use crate::{Error, Payload, RecvError, StartAt, TopicOptions};

type Port = SubscriberPort<RawStorage<Mapping>, Futex>;

/// Receives `T` from one topic. Move it to any thread; it has no background thread. Dropping
/// it detaches it (on a lossless topic, publishers stop waiting for it at once).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use bus_client::{Bus, RecvError};
/// let bus = Bus::embedded()?;
/// let mut subscriber = bus.subscriber::<[u8]>("doc/bytes").open()?;
/// let mut publisher = bus.publisher::<[u8]>("doc/bytes").open()?;
/// publisher.publish(b"hello")?;
///
/// let sample = subscriber.recv()?;        // points into shared memory, no copy
/// assert_eq!(&*sample, b"hello");
/// drop(sample);                           // releases the slot
/// assert_eq!(subscriber.try_recv().err(), Some(RecvError::Empty));
/// assert_eq!(subscriber.recv_timeout(Duration::from_millis(10)).err(), Some(RecvError::Timeout));
/// # Ok(()) }
/// ```
pub struct Subscriber<T: Payload + ?Sized> {
    port: Port,
    conn: Arc<Conn>,
    topic: String,
    spec: TopicSpec,
    wait: WaitStrategy,
    /// Lossy topics are copied here (validated) before the caller sees them.
    buf: Option<AlignedBuf>,
    /// Messages skipped because they did not fit `T` (a publisher wrote a wrong length).
    malformed: u64,
    /// The options this subscriber was opened with (to attach afresh after a daemon restart).
    options: TopicOptions,
    /// Follows a restarted daemon (see `follow`).
    follower: Follower,
    /// The segment's descriptors, handed back to a restarted daemon.
    fds: SegmentFds,
    _t: PhantomData<fn() -> Box<T>>,
}

impl<T: Payload + ?Sized> std::fmt::Debug for Subscriber<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("topic", &self.topic)
            .field("index", &self.port.index())
            .finish()
    }
}

enum Got<'a> {
    InPlace(CoreSample<'a, RawStorage<Mapping>, Futex>),
    Copied { bytes: &'a [u8], sequence: u64 },
}

impl<T: Payload + ?Sized> Subscriber<T> {
    pub(crate) fn new(
        conn: Arc<Conn>,
        topic: String,
        options: TopicOptions,
        a: Attached,
        wait: WaitStrategy,
    ) -> Result<Self, Error> {
        let port = SubscriberPort::new(a.ring, a.index, a.generation).map_err(|e| {
            Error::Invalid(format!("the daemon handed over an entry not held: {e}"))
        })?;
        let buf = (port.ring().geometry().mode == CoreMode::Lossy)
            .then(|| AlignedBuf::new(a.spec.slot_size as usize));
        Ok(Subscriber {
            follower: Follower::new(&conn),
            conn,
            topic,
            spec: a.spec,
            wait,
            buf,
            malformed: 0,

            fds: a.fds,
            port,
            options,
            _t: PhantomData,
        })
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic's options as the daemon holds them.
    pub fn spec(&self) -> &TopicSpec {
        &self.spec
    }

    /// Change how `recv` waits.
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.wait = strategy;
    }

    /// Messages lost to lag so far (lossy topics).
    pub fn lagged(&self) -> u64 {
        self.port.lagged()
    }

    /// Messages skipped because they were malformed (a wrong length for `T`, or a corrupted
    /// slot).
    pub fn malformed(&self) -> u64 {
        self.malformed + self.port.corrupt()
    }

    /// Messages published that this subscriber has not read yet.
    pub fn backlog(&self) -> u64 {
        self.port.backlog()
    }

    /// Before each call, and between the slices of a wait: follow a restarted daemon (one load
    /// of a line nobody writes while the daemon runs, unless a restart happened).
    #[inline]
    fn ensure_attached(&mut self) -> Result<(), RecvError> {
        if self.follower.stale() {
            let (index, generation) = (self.port.index(), self.port.generation());
            let port = PortId {
                topic: &self.topic,
                role: Role::Subscriber,
                index,
                generation,
                held: self.port.ring().subscriber_held(index, generation),
                fds: &self.fds,
            };
            if self.follower.follow(&self.conn, port) == Next::AttachAfresh {
                self.attach_afresh()?;
            }
        }
        Ok(())
    }

    /// Wait (when `wait`) until a message that fits `T` is ready, in slices of [`CHECK_EVERY`]
    /// with a look at the daemon's epoch between them, so that a port blocked on a quiet topic
    /// follows a restarted daemon too. Messages of a wrong length are skipped and counted.
    fn wait_ready(
        &mut self,
        strategy: WaitStrategy,
        timeout: Option<Duration>,
        wait: bool,
    ) -> Result<(), RecvError> {
        let deadline = if wait {
            timeout.and_then(|t| Instant::now().checked_add(t))
        } else {
            None
        };
        loop {
            self.ensure_attached()?;
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let slice = left.map_or(CHECK_EVERY, |l| l.min(CHECK_EVERY));
            match self.port.peek(strategy, Some(slice), wait) {
                Ok(len) if T::fits(len) => return Ok(()),
                Ok(_) => self.skip_malformed()?,
                Err(RecvError::Timeout) if left.is_none_or(|l| l > slice) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Skip the ready message, whose length does not fit `T` (a misbehaving publisher).
    fn skip_malformed(&mut self) -> Result<(), RecvError> {
        self.malformed += 1;
        match &mut self.buf {
            None => drop(self.port.try_recv()?),
            Some(buf) => drop(self.port.try_recv_into(buf.bytes_mut())?),
        }
        Ok(())
    }

    fn next(
        &mut self,
        strategy: WaitStrategy,
        timeout: Option<Duration>,
        wait: bool,
    ) -> Result<Sample<'_, T>, RecvError> {
        let got = match self.buf {
            None => {
                self.wait_ready(strategy, timeout, wait)?;
                // Ready and of the right length: take it without waiting (only this port
                // moves its cursor, and a lossless slot stays put until it does).
                Got::InPlace(self.port.recv_where(strategy, None, false, T::fits)?)
            }
            Some(_) => {
                // A lossy slot can be overwritten between the wait and the copy: copy, check,
                // and wait again if what was copied does not fit.
                let (sequence, len) = loop {
                    self.wait_ready(strategy, timeout, wait)?;
                    let Some(buf) = self.buf.as_mut() else {
                        return Err(RecvError::WrongMode);
                    };
                    let (sequence, len) = self.port.try_recv_into(buf.bytes_mut())?;
                    if T::fits(len) {
                        break (sequence, len);
                    }
                    self.malformed += 1;
                };
                let Some(buf) = self.buf.as_ref() else {
                    return Err(RecvError::WrongMode);
                };
                Got::Copied {
                    bytes: &buf.bytes()[..len],
                    sequence,
                }
            }
        };
        Ok(Sample {
            got,
            _t: PhantomData,
        })
    }

    /// The restarted daemon gave this port up (it did not re-attach in time): take a new one,
    /// starting with the next message.
    #[cold]
    fn attach_afresh(&mut self) -> Result<(), RecvError> {
        // If the old entry was evicted, the daemon reuses it only once we let go of it.
        let _ = self.conn.request(&Request::Detach {
            topic: self.topic.clone(),
            role: Role::Subscriber,
            index: self.port.index() as u32,
            generation: self.port.generation(),
        });
        let a = attach_port::<T>(&self.conn, &self.topic, &self.options, Role::Subscriber, StartAt::Latest)
            .map_err(|e| {
                tracing::warn!(topic = self.topic.as_str(), error = %e, "cannot attach anew after a daemon restart");
                RecvError::Evicted
            })?;
        self.port =
            SubscriberPort::new(a.ring, a.index, a.generation).map_err(|_| RecvError::Evicted)?;
        self.fds = a.fds;
        self.follower = Follower::new(&self.conn);
        tracing::warn!(
            topic = self.topic.as_str(),
            "attached anew after a daemon restart; messages published meanwhile were missed"
        );
        Ok(())
    }

    /// Receive the next message, waiting as the wait strategy says (default: spin, then park).
    pub fn recv(&mut self) -> Result<Sample<'_, T>, RecvError> {
        self.next(self.wait, None, true)
    }

    /// Receive the next message without waiting: `Empty` if there is none.
    pub fn try_recv(&mut self) -> Result<Sample<'_, T>, RecvError> {
        self.next(self.wait, None, false)
    }

    /// Receive the next message, waiting at most `timeout`: `Timeout` if none came.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Sample<'_, T>, RecvError> {
        self.next(self.wait, Some(timeout), true)
    }

    /// An iterator of owned copies of the messages, waiting for each; it ends when the topic
    /// is closed and drained. `Lagged` and other errors are yielded as items.
    pub fn iter(&mut self) -> Iter<'_, T> {
        Iter {
            sub: self,
            done: false,
        }
    }
}

impl<T: Payload + ?Sized> Drop for Subscriber<T> {
    fn drop(&mut self) {
        let _ = self
            .port
            .ring()
            .release_subscriber(self.port.index(), self.port.generation());
        let _ = self.conn.request(&Request::Detach {
            topic: self.topic.clone(),
            role: Role::Subscriber,
            index: self.port.index() as u32,
            generation: self.port.generation(),
        });
    }
}

/// A received message. On a lossless topic it points straight into the slot, and the slot is
/// not reused until the sample is dropped; on a lossy topic it is a validated copy.
pub struct Sample<'a, T: Payload + ?Sized> {
    got: Got<'a>,
    _t: PhantomData<fn() -> Box<T>>,
}

impl<T: Payload + ?Sized> Sample<'_, T> {
    /// The message's sequence number (from 0 for the topic's first message).
    pub fn sequence(&self) -> u64 {
        match &self.got {
            Got::InPlace(s) => s.sequence(),
            Got::Copied { sequence, .. } => *sequence,
        }
    }

    /// The message bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.got {
            Got::InPlace(s) => s_bytes(s),
            Got::Copied { bytes, .. } => bytes,
        }
    }
}

fn s_bytes<'s>(s: &'s CoreSample<'_, RawStorage<Mapping>, Futex>) -> &'s [u8] {
    s.bytes()
}

impl<T: Payload + ?Sized> Deref for Sample<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match T::from_message(self.bytes()) {
            Some(v) => v,
            None => unreachable!("checked in Subscriber::next before the sample was made"),
        }
    }
}

/// Owned copies of messages; see [`Subscriber::iter`].
pub struct Iter<'a, T: Payload + ?Sized> {
    sub: &'a mut Subscriber<T>,
    done: bool,
}

impl<T: Payload + ?Sized> Iterator for Iter<'_, T> {
    type Item = Result<Box<T>, RecvError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.sub.recv() {
            Ok(s) => Some(Ok(s.to_box())),
            Err(RecvError::Closed) => {
                self.done = true;
                None
            }
            Err(e @ RecvError::Evicted) => {
                self.done = true;
                Some(Err(e))
            }
            Err(e) => Some(Err(e)),
        }
    }
}
