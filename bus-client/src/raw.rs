//! Raw ports, for tools that do not know a topic's type at compile time (the `shmbus` tool,
//! bridges, recorders, language bindings): a [`RawSubscriber`] attaches to any topic and sees
//! each message's bytes, sequence and publisher, and the topic's type and geometry; a
//! [`RawPublisher`] publishes bytes into a topic whose type the caller states (name, size and
//! alignment must be the topic's).

use std::time::Duration;

use bus_core::layout::{Geometry, TypeInfo};
use bus_core::ring::StartAt;
use bus_core::wait::WaitStrategy;
use bus_proto::protocol::How;

use crate::error::{
    OpenError, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use crate::port::Port;
use crate::publisher::{sender_accessors, SampleMut, Sender};
use crate::subscriber::{receiver_accessors, Got, Receiver};
use crate::Bus;

/// Receives the messages of any topic as bytes, whatever its type.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::Bus;
/// let bus = Bus::embedded()?;
/// let mut publisher = bus.publisher::<u64>("doc/raw").create()?;
/// let mut raw = bus.raw_subscriber("doc/raw").open()?;
/// assert_eq!(raw.spec().type_info.size, 8);        // the topic's type, learnt at run time
/// publisher.publish(&7)?;
/// let sample = raw.recv()?;
/// assert_eq!(sample.bytes(), &7u64.to_ne_bytes()[..]);
/// assert_eq!(sample.sequence(), 0);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RawSubscriber {
    pub(crate) inner: Receiver,
}

impl RawSubscriber {
    receiver_accessors!();
    crate::presence::subscriber_presence!();

    /// Receive the next message, waiting as the wait strategy says.
    pub fn recv(&mut self) -> Result<RawSample<'_>, RecvError> {
        self.inner.next(None, true).map(|got| RawSample { got })
    }

    /// Receive the next message without waiting: `Empty` if there is none.
    pub fn try_recv(&mut self) -> Result<RawSample<'_>, TryRecvError> {
        self.inner.next(None, false).map(|got| RawSample { got })
    }

    /// Receive the next message, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<RawSample<'_>, RecvTimeoutError> {
        self.inner
            .next(Some(timeout), true)
            .map(|got| RawSample { got })
    }
}

/// A message of a [`RawSubscriber`]: in the slot (lossless topics, released on drop) or a
/// validated copy (lossy topics).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, RawSample};
/// let bus = Bus::embedded()?;
/// let mut publisher = bus.publisher::<u16>("doc/raw-sample").create()?;
/// let mut raw = bus.raw_subscriber("doc/raw-sample").open()?;
/// publisher.publish(&0x0102)?;
/// let sample: RawSample<'_> = raw.recv()?;
/// assert_eq!((sample.len(), sample.sequence()), (2, 0));
/// assert_eq!(sample.bytes(), &0x0102u16.to_ne_bytes()[..]);
/// # Ok(()) }
/// ```
pub struct RawSample<'a> {
    got: Got<'a>,
}

impl<'a> RawSample<'a> {
    #[cfg(any(feature = "tokio", feature = "async-io"))]
    pub(crate) fn new(got: Got<'a>) -> RawSample<'a> {
        RawSample { got }
    }
}

impl RawSample<'_> {
    /// The message bytes.
    pub fn bytes(&self) -> &[u8] {
        self.got.bytes()
    }

    /// The message's sequence number (from 0 for the topic's first message).
    pub fn sequence(&self) -> u64 {
        self.got.sequence()
    }

    /// The publisher table entry that wrote it (publishers of one topic are numbered from 0).
    pub fn publisher(&self) -> u32 {
        self.got.publisher()
    }

    /// The message length in bytes.
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }
}

/// Publishes bytes into a topic whose type the caller states. On a typed topic every message
/// must be exactly the type's size.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, TypeInfo};
/// let bus = Bus::embedded()?;
/// let mut subscriber = bus.subscriber::<u32>("doc/raw_pub").open_or_create()?;
/// let u32_type = TypeInfo { name: "u32".into(), size: 4, align: 4 };
/// let mut raw = bus.raw_publisher("doc/raw_pub").open(u32_type)?;
/// raw.publish(&5u32.to_ne_bytes())?;
/// assert_eq!(*subscriber.recv()?, 5);
/// assert!(raw.publish(&[1, 2, 3]).is_err());          // not a u32
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RawPublisher {
    pub(crate) inner: Sender,
}

impl RawPublisher {
    sender_accessors!();
    crate::presence::publisher_presence!();

    /// The publisher table entry this port writes with: what [`RawSample::publisher`] says of
    /// its messages. A bridge uses it to recognise its own messages. It can change when the
    /// port attaches anew to a restarted daemon.
    pub fn index(&self) -> u32 {
        self.inner.index()
    }

    /// Loan the next slot as bytes (the type's size on a typed topic, the whole slot on a
    /// byte topic; `set_len` to send fewer), waiting for space as the wait strategy says.
    pub fn loan(&mut self) -> Result<SampleMut<'_, [u8]>, SendError> {
        Ok(SampleMut::new(self.inner.loan::<SendError>(None)?))
    }

    /// Loan the next slot without waiting.
    pub fn try_loan(&mut self) -> Result<SampleMut<'_, [u8]>, TrySendError> {
        Ok(SampleMut::new(self.inner.try_loan()?))
    }

    /// Loan the next slot, waiting at most `timeout` for space.
    pub fn loan_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<SampleMut<'_, [u8]>, SendTimeoutError> {
        Ok(SampleMut::new(
            self.inner.loan::<SendTimeoutError>(Some(timeout))?,
        ))
    }

    /// Copy `bytes` in and send, waiting for space; returns the sequence number.
    pub fn publish(&mut self, bytes: &[u8]) -> Result<u64, SendError> {
        self.inner.send(bytes, None)
    }

    /// Copy `bytes` in and send without waiting.
    pub fn try_send(&mut self, bytes: &[u8]) -> Result<u64, TrySendError> {
        self.inner.try_send(bytes)
    }

    /// Copy `bytes` in and send, waiting at most `timeout` for space.
    pub fn send_timeout(
        &mut self,
        bytes: &[u8],
        timeout: Duration,
    ) -> Result<u64, SendTimeoutError> {
        self.inner.send(bytes, Some(timeout))
    }
}

/// Opens a [`RawSubscriber`]; see [`Bus::raw_subscriber`].
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, RawSubscriberBuilder, StartAt};
/// let bus = Bus::embedded()?;
/// bus.publisher::<u64>("doc/raw-sub-builder").create()?;
/// let builder: RawSubscriberBuilder<'_> = bus.raw_subscriber("doc/raw-sub-builder");
/// let raw = builder.start_at(StartAt::Oldest).open()?;   // whatever type the topic carries
/// assert_eq!(raw.spec().type_info.size, 8);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RawSubscriberBuilder<'b> {
    pub(crate) bus: &'b Bus,
    pub(crate) topic: String,
    pub(crate) wait: WaitStrategy,
    pub(crate) start: StartAt,
}

impl RawSubscriberBuilder<'_> {
    /// How to wait for messages.
    pub fn wait(mut self, strategy: WaitStrategy) -> Self {
        self.wait = strategy;
        self
    }

    /// Where to start: [`StartAt::Latest`] (the default) or [`StartAt::Oldest`].
    pub fn start_at(mut self, start: StartAt) -> Self {
        self.start = start;
        self
    }

    fn attach(self, how: How) -> Result<RawSubscriber, OpenError> {
        let port = Port::attach(self.bus.conn(), &self.topic, how, self.start)?;
        Ok(RawSubscriber {
            inner: Receiver::new(port, self.wait, |_| true),
        })
    }

    /// Attach to the existing topic, whatever its type.
    pub fn open(self) -> Result<RawSubscriber, OpenError> {
        self.attach(How::Open { type_info: None })
    }

    /// Attach to the existing topic, which must carry exactly `type_info` (name, size and
    /// alignment; [`TypeInfo::bytes`] for a byte topic).
    pub fn open_as(self, type_info: TypeInfo) -> Result<RawSubscriber, OpenError> {
        self.attach(How::Open {
            type_info: Some(type_info),
        })
    }

    /// Attach to the topic if it exists, whatever its type, else wait for it to be created,
    /// at most `timeout` (forever with `None`), and attach from its first message (see
    /// [`Bus::wait_for_topic`]). Never creates the topic.
    pub fn open_or_wait(self, timeout: Option<Duration>) -> Result<RawSubscriber, OpenError> {
        let how = How::Open { type_info: None };
        let port =
            crate::topic_watch::open_or_wait(self.bus, &self.topic, how, self.start, timeout)?;
        Ok(RawSubscriber {
            inner: Receiver::new(port, self.wait, |_| true),
        })
    }

    /// Create the topic with `spec`, or attach to it if it exists with exactly `spec`.
    pub fn create(self, spec: Geometry) -> Result<RawSubscriber, OpenError> {
        self.attach(How::Create { spec, exact: true })
    }

    /// Attach to the topic if it exists (it must carry `spec`'s type), or create it with
    /// `spec`: for a subscriber that may start before its publishers.
    pub fn open_or_create(self, spec: Geometry) -> Result<RawSubscriber, OpenError> {
        self.attach(How::Create { spec, exact: false })
    }
}

/// Opens a [`RawPublisher`]; see [`Bus::raw_publisher`].
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, RawPublisherBuilder, TopicOptions, TypeInfo};
/// let bus = Bus::embedded()?;
/// let spec = TopicOptions::default().geometry_for(TypeInfo::bytes());
/// let builder: RawPublisherBuilder<'_> = bus.raw_publisher("doc/raw-pub-builder");
/// let mut raw = builder.create(spec)?;
/// raw.publish(b"any length up to the slot")?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RawPublisherBuilder<'b> {
    pub(crate) bus: &'b Bus,
    pub(crate) topic: String,
    pub(crate) wait: WaitStrategy,
}

impl RawPublisherBuilder<'_> {
    /// How to wait for space.
    pub fn wait(mut self, strategy: WaitStrategy) -> Self {
        self.wait = strategy;
        self
    }

    fn attach(self, how: How) -> Result<RawPublisher, OpenError> {
        let port = Port::attach(self.bus.conn(), &self.topic, how, StartAt::Latest)?;
        Ok(RawPublisher {
            inner: Sender::new(port, self.wait),
        })
    }

    /// Attach to the existing topic, which must carry exactly `type_info` (name, size and
    /// alignment; [`TypeInfo::bytes`] for a byte topic).
    pub fn open(self, type_info: TypeInfo) -> Result<RawPublisher, OpenError> {
        self.attach(How::Open {
            type_info: Some(type_info),
        })
    }

    /// Create the topic with `spec`, or attach to it if it exists with exactly `spec`.
    pub fn create(self, spec: Geometry) -> Result<RawPublisher, OpenError> {
        self.attach(How::Create { spec, exact: true })
    }

    /// Attach to the topic if it exists (it must carry `spec`'s type), or create it with
    /// `spec`.
    pub fn open_or_create(self, spec: Geometry) -> Result<RawPublisher, OpenError> {
        self.attach(How::Create { spec, exact: false })
    }
}
