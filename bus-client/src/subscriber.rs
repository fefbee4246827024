//! [`Subscriber`]: receive samples that point straight into the slot. The machinery is shared
//! with the raw subscriber ([`crate::RawSubscriber`]) in [`Receiver`].

use std::marker::PhantomData;
use std::ops::Deref;
use std::time::{Duration, Instant};

use bus_core::layout::{Geometry, Mode};
use bus_core::ring::{Ready, RecvError as CoreRecv, Sample as CoreSample};
use bus_core::storage::RawStorage;
use bus_core::wait::WaitStrategy;
use bus_proto::segment::Mapping;
use bus_proto::wake::WakeBell;

use crate::error::{FromRecv, RecvError, RecvTimeoutError, TryRecvError};
use crate::payload::AlignedBuf;
use crate::port::{Lost, Port, RingSubscriber, Slice, Waited};
use crate::Payload;

/// Receives `T` from one topic. Move it to any thread; it has no background thread. Dropping
/// it detaches it (on a lossless topic, publishers stop waiting for it at once).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use bus_client::{Bus, RecvTimeoutError, TryRecvError};
/// let bus = Bus::embedded()?;
/// let mut publisher = bus.publisher::<[u8]>("doc/bytes").create()?;
/// let mut subscriber = bus.subscriber::<[u8]>("doc/bytes").open()?;
/// publisher.publish(b"hello")?;
///
/// let sample = subscriber.recv()?;        // points into shared memory, no copy
/// assert_eq!(&*sample, b"hello");
/// drop(sample);                           // releases the slot
/// assert_eq!(subscriber.try_recv().err(), Some(TryRecvError::Empty));
/// let waited = subscriber.recv_timeout(Duration::from_millis(10));
/// assert_eq!(waited.err(), Some(RecvTimeoutError::Timeout));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Subscriber<T: Payload + ?Sized> {
    pub(crate) inner: Receiver,
    _t: PhantomData<fn() -> Box<T>>,
}

/// What every subscriber is made of: the port, how it waits, and (lossy topics) the buffer a
/// validated copy lands in.
#[derive(Debug)]
pub(crate) struct Receiver {
    port: Port<RingSubscriber>,
    wait: WaitStrategy,
    /// Lossy topics are copied here (validated) before the caller sees them.
    buf: Option<AlignedBuf>,
    /// Which message lengths the caller's type accepts (others are skipped and counted).
    fits: fn(usize) -> bool,
    /// The async waiter, made at the first async wait.
    #[cfg(any(feature = "tokio", feature = "async-io"))]
    pub(crate) waiter: Option<crate::asynch::AsyncWaiter>,
}

/// A received message, as bytes: in place (lossless) or copied (lossy).
pub(crate) enum Got<'a> {
    InPlace(CoreSample<'a, RawStorage<Mapping>, WakeBell>),
    Copied {
        bytes: &'a [u8],
        sequence: u64,
        publisher: u32,
    },
}

impl Got<'_> {
    pub(crate) fn sequence(&self) -> u64 {
        match self {
            Got::InPlace(s) => s.sequence(),
            Got::Copied { sequence, .. } => *sequence,
        }
    }

    pub(crate) fn publisher(&self) -> u32 {
        match self {
            Got::InPlace(s) => s.publisher(),
            Got::Copied { publisher, .. } => *publisher,
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Got::InPlace(s) => in_place(s),
            Got::Copied { bytes, .. } => bytes,
        }
    }
}

fn in_place<'s>(s: &'s CoreSample<'_, RawStorage<Mapping>, WakeBell>) -> &'s [u8] {
    s.bytes()
}

fn waited(w: Waited<CoreRecv>) -> CoreRecv {
    match w {
        Waited::TimedOut => CoreRecv::Timeout,
        Waited::Lost => CoreRecv::Evicted,
        Waited::Failed(e) => e,
    }
}

impl Receiver {
    pub(crate) fn new(
        port: Port<RingSubscriber>,
        wait: WaitStrategy,
        fits: fn(usize) -> bool,
    ) -> Receiver {
        let spec = port.spec();
        let buf = (spec.mode == Mode::Lossy).then(|| AlignedBuf::new(spec.slot_size as usize));
        Receiver {
            port,
            wait,
            buf,
            fits,
            #[cfg(any(feature = "tokio", feature = "async-io"))]
            waiter: None,
        }
    }

    pub(crate) fn topic(&self) -> &str {
        self.port.topic()
    }

    pub(crate) fn port(&self) -> &Port<RingSubscriber> {
        &self.port
    }

    pub(crate) fn spec(&self) -> &Geometry {
        self.port.spec()
    }

    pub(crate) fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.wait = strategy;
    }

    pub(crate) fn lagged(&self) -> u64 {
        self.port.ring.lagged()
    }

    pub(crate) fn malformed(&self) -> u64 {
        self.port.ring.corrupt()
    }

    pub(crate) fn backlog(&self) -> u64 {
        self.port.ring.backlog()
    }

    /// Wait until a message may be ready, or `deadline` passes, with a look at the daemon
    /// after each wake-up (a port blocked on a quiet topic follows a restarted daemon too:
    /// the daemon's death wakes it, see `hangup`).
    fn wait_ready(&mut self, deadline: Option<Instant>) -> Result<(), CoreRecv> {
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        self.port
            .sliced(timeout, self.wait, |ring, left, strategy| {
                match ring.peek(strategy, left, true) {
                    Ok(_) => Ok(()),
                    Err(CoreRecv::Timeout) => Err(Slice::TimedOut),
                    Err(e) => Err(Slice::Failed(e)),
                }
            })
            .map_err(waited)
    }

    /// A ticket for the next message that fits, without taking it and without waiting
    /// (`None`: nothing yet). Messages of a length the port's type does not take are skipped
    /// and counted on the way.
    pub(crate) fn ticket<E: FromRecv>(&mut self) -> Result<Option<Ready>, E> {
        self.port
            .ensure_attached()
            .map_err(|Lost| E::from_recv(CoreRecv::Evicted))?;
        match self.port.ring.next_ready(self.fits) {
            Ok(t) => Ok(Some(t)),
            Err(CoreRecv::Empty) => Ok(None),
            Err(e) => Err(E::from_recv(e)),
        }
    }

    /// Take the message `ticket` names: in place (lossless), or a validated copy (lossy; a slot
    /// overwritten meanwhile is `Lagged`).
    pub(crate) fn take_ticket<E: FromRecv>(&mut self, ticket: Ready) -> Result<Got<'_>, E> {
        let ring = &mut self.port.ring;
        match &mut self.buf {
            None => ring.take(ticket).map(Got::InPlace).map_err(E::from_recv),
            Some(buf) => {
                let r = ring
                    .take_copy(ticket, buf.bytes_mut())
                    .map_err(E::from_recv)?;
                Ok(Got::Copied {
                    bytes: &buf.bytes()[..r.len],
                    sequence: r.sequence,
                    publisher: r.publisher,
                })
            }
        }
    }

    /// The next message that fits, waiting when `wait` for at most `timeout`. A message that is
    /// already there costs one look at the ring: its ticket is taken as it was found.
    pub(crate) fn next<E: FromRecv>(
        &mut self,
        timeout: Option<Duration>,
        wait: bool,
    ) -> Result<Got<'_>, E> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            match self.ticket::<E>()? {
                Some(ticket) => return self.take_ticket(ticket),
                None if wait => self.wait_ready(deadline).map_err(E::from_recv)?,
                None => return Err(E::from_recv(CoreRecv::Empty)),
            }
        }
    }
}

/// The accessors every subscriber (typed or raw) has, over its `inner: Receiver`.
macro_rules! receiver_accessors {
    () => {
        /// The topic name.
        pub fn topic(&self) -> &str {
            self.inner.topic()
        }

        /// The topic's geometry and payload type (name, size, alignment), as the topic holds
        /// them.
        pub fn spec(&self) -> &bus_core::layout::Geometry {
            self.inner.spec()
        }

        /// Change how receiving waits.
        pub fn set_wait_strategy(&mut self, strategy: bus_core::wait::WaitStrategy) {
            self.inner.set_wait_strategy(strategy);
        }

        /// Messages lost to lag so far (lossy topics).
        pub fn lagged(&self) -> u64 {
            self.inner.lagged()
        }

        /// Messages skipped because they were malformed (a length the port's type does not
        /// take, or a corrupted slot).
        pub fn malformed(&self) -> u64 {
            self.inner.malformed()
        }

        /// Messages published that this subscriber has not read yet.
        pub fn backlog(&self) -> u64 {
            self.inner.backlog()
        }
    };
}
pub(crate) use receiver_accessors;

impl<T: Payload + ?Sized> Subscriber<T> {
    pub(crate) fn new(inner: Receiver) -> Subscriber<T> {
        Subscriber {
            inner,
            _t: PhantomData,
        }
    }

    receiver_accessors!();
    crate::presence::subscriber_presence!();

    /// Receive the next message, waiting as the wait strategy says (default: spin, then park).
    pub fn recv(&mut self) -> Result<Sample<'_, T>, RecvError> {
        self.inner.next(None, true).map(Sample::new)
    }

    /// Receive the next message without waiting: `Empty` if there is none.
    pub fn try_recv(&mut self) -> Result<Sample<'_, T>, TryRecvError> {
        self.inner.next(None, false).map(Sample::new)
    }

    /// Receive the next message, waiting at most `timeout`: `Timeout` if none came.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Sample<'_, T>, RecvTimeoutError> {
        self.inner.next(Some(timeout), true).map(Sample::new)
    }

    /// The messages as they come, waiting for each, without copying or allocating: a lending
    /// iterator, since each sample borrows the subscriber until it is dropped. It ends when the
    /// topic is closed and drained, or the subscriber is evicted (that error is its last item);
    /// `Lagged` comes as an item and reading goes on.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let bus = bus_client::Bus::embedded()?;
    /// # let mut publisher = bus.publisher::<u64>("doc/iter").create()?;
    /// let mut subscriber = bus.subscriber::<u64>("doc/iter").open()?;
    /// # publisher.publish(&1)?; publisher.publish(&2)?; bus.delete("doc/iter")?;
    /// let mut sum = 0;
    /// let mut messages = subscriber.iter();
    /// while let Some(sample) = messages.next() {
    ///     sum += *sample?;
    /// }
    /// # assert_eq!(sum, 3);
    /// # Ok(()) }
    /// ```
    pub fn iter(&mut self) -> Iter<'_, T> {
        Iter {
            sub: self,
            done: false,
        }
    }
}

/// A received message. On a lossless topic it points straight into the slot, and the slot is
/// not reused until the sample is dropped; on a lossy topic it is a validated copy.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, Sample};
/// let bus = Bus::embedded()?;
/// let mut publisher = bus.publisher::<[u32; 2]>("doc/sample").create()?;
/// let mut subscriber = bus.subscriber::<[u32; 2]>("doc/sample").open()?;
/// publisher.publish(&[3, 4])?;
/// let sample: Sample<'_, [u32; 2]> = subscriber.recv()?;
/// assert_eq!((*sample, sample.sequence(), sample.bytes().len()), ([3, 4], 0, 8));
/// drop(sample);                                // the slot goes back to the publishers
/// # Ok(()) }
/// ```
pub struct Sample<'a, T: Payload + ?Sized> {
    got: Got<'a>,
    _t: PhantomData<fn() -> Box<T>>,
}

impl<'a, T: Payload + ?Sized> Sample<'a, T> {
    pub(crate) fn new(got: Got<'a>) -> Sample<'a, T> {
        Sample {
            got,
            _t: PhantomData,
        }
    }

    /// The message's sequence number (from 0 for the topic's first message).
    pub fn sequence(&self) -> u64 {
        self.got.sequence()
    }

    /// The message bytes.
    pub fn bytes(&self) -> &[u8] {
        self.got.bytes()
    }
}

impl<T: Payload + ?Sized> Deref for Sample<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        crate::payload::view(self.bytes())
    }
}

/// The messages of a [`Subscriber`], one sample at a time; see [`Subscriber::iter`].
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, Iter};
/// let bus = Bus::embedded()?;
/// let mut subscriber = bus.subscriber::<u8>("doc/iter").open_or_create()?;
/// let mut publisher = bus.publisher::<u8>("doc/iter").open()?;
/// for n in 1..=3 {
///     publisher.publish(&n)?;
/// }
/// let mut iter: Iter<'_, u8> = subscriber.iter();
/// let mut sum = 0;
/// while let Some(sample) = iter.next() {       // blocks for each next message
///     sum += *sample?;
///     if sum == 6 {
///         break;
///     }
/// }
/// assert_eq!(sum, 6);
/// # Ok(()) }
/// ```
pub struct Iter<'a, T: Payload + ?Sized> {
    sub: &'a mut Subscriber<T>,
    done: bool,
}

impl<T: Payload + ?Sized> Iter<'_, T> {
    /// The next message, waiting for it; `None` once the topic is closed and drained, or after
    /// the subscriber was evicted.
    #[allow(clippy::should_implement_trait)] // a lending iterator: samples borrow `self`
    pub fn next(&mut self) -> Option<Result<Sample<'_, T>, RecvError>> {
        if self.done {
            return None;
        }
        match self.sub.recv() {
            Ok(s) => Some(Ok(s)),
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
