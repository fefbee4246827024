//! # bus-client
//!
//! The library applications link to publish and subscribe on shmbus topics: named rings in
//! shared memory, created by the `shmbusd` daemon, read and written with zero copies.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use bus_client::Bus;
//! use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
//!
//! #[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
//! #[repr(C)]
//! struct Odometry { x: f64, y: f64, theta: f64, stamp_ns: u64 }
//!
//! // An embedded daemon for this example; real applications use Bus::connect().
//! let bus = Bus::embedded()?;
//! let mut publisher = bus.publisher::<Odometry>("robot/odom").create()?;
//! let mut subscriber = bus.subscriber::<Odometry>("robot/odom").open()?;
//!
//! let mut odom = publisher.loan()?;      // a slot in shared memory
//! odom.x = 1.0;                          // written in place
//! odom.stamp_ns = 42;
//! odom.send();
//!
//! let received = subscriber.recv()?;     // a reference into the same slot
//! assert_eq!((received.x, received.stamp_ns), (1.0, 42));
//! # Ok(()) }
//! ```
//!
//! * [`Bus`]: the connection to the daemon ([`Bus::connect`], [`Bus::embedded`]).
//! * Ports are opened with one of three verbs: `open()` (the topic must exist and carry the
//!   port's type), `create()` (create it with these options, or find it with exactly them),
//!   `open_or_create()` (for a port that may come first).
//! * [`Publisher`]: `loan()` a slot, write it in place, `send()`; or `publish(&value)`.
//! * [`Subscriber`]: `recv()`, `try_recv()`, `recv_timeout()`, `iter()`; samples deref into
//!   the slot.
//! * [`RawSubscriber`], [`RawPublisher`]: any topic as bytes, for tools that learn a topic's
//!   type at run time.
//! * [`held`]: raw ports that keep their sample or loan between calls (for language bindings).
//! * [`TopicOptions`]: capacity, slot size, mode, table sizes; every default in one place.
//! * Errors: one type per operation (see [`error`]).
//!
//! Ports have no background threads and can move between threads. The data path makes no
//! system call unless someone sleeps.
//!
//! Features: `embedded` (default) adds [`Bus::embedded`], which runs the daemon inside the
//! process; without it the client depends on the protocol crate only.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]

mod agent;
#[cfg(any(feature = "tokio", feature = "async-io"))]
mod asynch;
mod bus;
mod conn;
pub mod error;
mod follow;
mod hangup;
pub mod held;
mod options;
mod payload;
mod port;
mod presence;
mod publisher;
mod raw;
mod subscriber;
mod topic_watch;
mod waitset;
mod wake;

#[cfg(any(feature = "tokio", feature = "async-io"))]
pub use asynch::{LoanFuture, Messages, RawRecvFuture, RecvFuture, SendFuture, WaitFuture};
pub use bus::{Bus, PublisherBuilder, SubscriberBuilder};
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, Geometry, Mode};
/// let bus = Bus::embedded()?;
/// let publisher = bus.publisher::<u32>("doc/geometry").capacity(64).create()?;
/// let spec: &Geometry = publisher.spec();        // the topic's shape, as its header holds it
/// assert_eq!((spec.capacity, spec.slot_size, spec.mode), (64, 4, Mode::Lossless));
/// assert_eq!(spec.type_info.size, 4);
/// # Ok(()) }
/// ```
pub use bus_core::layout::Geometry;
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, Mode};
/// let bus = Bus::embedded()?;
/// // Lossy: the publisher never waits; a subscriber that falls behind is told how much it lost.
/// let publisher = bus.publisher::<u64>("doc/mode").mode(Mode::Lossy).create()?;
/// assert_eq!(publisher.spec().mode, Mode::Lossy);
/// # Ok(()) }
/// ```
pub use bus_core::layout::Mode;
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, Payload, TypeInfo};
/// let bus = Bus::embedded()?;
/// bus.publisher::<u64>("doc/type-info").create()?;
/// let raw = bus.raw_subscriber("doc/type-info").open()?;
/// let info: &TypeInfo = &raw.spec().type_info;   // what the topic carries, learnt at run time
/// assert_eq!((info.size, info.align), (8, 8));
/// assert_eq!(*info, u64::type_info());
/// assert_eq!(TypeInfo::bytes().size, 0);         // a byte topic
/// # Ok(()) }
/// ```
pub use bus_core::layout::TypeInfo;
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, StartAt};
/// let bus = Bus::embedded()?;
/// let mut publisher = bus.publisher::<u8>("doc/start-at").lossy().create()?;
/// publisher.publish(&1)?;                         // before any subscriber
/// let mut latest = bus.subscriber::<u8>("doc/start-at").start_at(StartAt::Latest).open()?;
/// let mut oldest = bus.subscriber::<u8>("doc/start-at").start_at(StartAt::Oldest).open()?;
/// publisher.publish(&2)?;
/// assert_eq!(*latest.try_recv()?, 2);             // only what came after it
/// assert_eq!(*oldest.try_recv()?, 1);             // replays what the ring still holds
/// # Ok(()) }
/// ```
pub use bus_core::ring::StartAt;
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, WaitStrategy};
/// let bus = Bus::embedded()?;
/// // Spin for the lowest latency (one core per waiting port), block for the lowest CPU, or
/// // spin a little and then sleep (the default).
/// let mut subscriber = bus
///     .subscriber::<u64>("doc/wait-strategy")
///     .wait(WaitStrategy::Block)
///     .open_or_create()?;
/// subscriber.set_wait_strategy(WaitStrategy::BusyPoll);
/// # Ok(()) }
/// ```
pub use bus_core::wait::WaitStrategy;
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, ErrorCode};
/// let bus = Bus::embedded()?;
/// let refused = bus.delete("doc/error-code/missing").unwrap_err();
/// assert_eq!(refused.code(), Some(ErrorCode::NoSuchTopic));
/// # Ok(()) }
/// ```
pub use bus_proto::protocol::ErrorCode;
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, TopicInfo};
/// let bus = Bus::embedded()?;
/// let mut publisher = bus.publisher::<u64>("doc/topic-info").create()?;
/// publisher.publish(&1)?;
/// let topics: Vec<TopicInfo> = bus.list()?;
/// let info = topics.iter().find(|t| t.name == "doc/topic-info").ok_or("listed")?;
/// assert_eq!((info.publishers, info.subscribers, info.published), (1, 0, 1));
/// # Ok(()) }
/// ```
pub use bus_proto::protocol::TopicInfo;
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, DaemonStatus, LimitsInfo, Totals, Usage};
/// let bus = Bus::embedded()?;
/// bus.publisher::<u64>("doc/status").create()?;
/// let status: DaemonStatus = bus.status()?;
/// let (totals, usage, limits): (&Totals, &Usage, &LimitsInfo) =
///     (&status.totals, &status.usage, &status.limits);
/// assert!(totals.topics >= 1 && usage.topics >= 1);  // all clients; this user
/// assert!(usage.topics <= limits.max_topics);
/// # Ok(()) }
/// ```
pub use bus_proto::protocol::{DaemonStatus, LimitsInfo, Totals, Usage};
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, PublisherStat, SubscriberStat, TopicStats, WakerStat};
/// let bus = Bus::embedded()?;
/// let mut publisher = bus.publisher::<u64>("doc/stats").create()?;
/// let _subscriber = bus.subscriber::<u64>("doc/stats").open()?;
/// publisher.publish(&1)?;
/// let stats: Vec<TopicStats> = bus.stats(Some("doc/stats"))?;
/// let publishers: &[PublisherStat] = &stats[0].publishers;
/// let subscribers: &[SubscriberStat] = &stats[0].subscribers;
/// let wakers: &[WakerStat] = &stats[0].wakers;  // waiters that sleep on an eventfd
/// assert_eq!((publishers[0].published, subscribers[0].lag), (1, 1));
/// assert_eq!(publishers[0].pid, std::process::id());
/// assert!(wakers.is_empty());
/// # Ok(()) }
/// ```
pub use bus_proto::protocol::{PublisherStat, SubscriberStat, TopicStats, WakerStat};
pub use error::{
    ConnectError, OpenError, RecvError, RecvTimeoutError, RequestError, SendError,
    SendTimeoutError, TooLarge, TryRecvError, TrySendError, WaitError,
};
pub use options::TopicOptions;
pub use payload::Payload;
pub use presence::{Presence, PresenceError, PresencePort};
pub use publisher::{Publisher, SampleMut};
pub use raw::{RawPublisher, RawPublisherBuilder, RawSample, RawSubscriber, RawSubscriberBuilder};
pub use subscriber::{Iter, Sample, Subscriber};
pub use topic_watch::{TopicEvent, TopicWatch, TopicWatchBuilder, WatchError};
pub use waitset::{Attachment, AttachmentId, WaitSet};

/// Ports and the bus move between threads.
#[allow(dead_code)]
fn assert_send_sync() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Bus>();
    sync::<Bus>();
    send::<Publisher<u64>>();
    send::<Publisher<[u8]>>();
    send::<Subscriber<u64>>();
    send::<Subscriber<[u8]>>();
    send::<RawPublisher>();
    send::<RawSubscriber>();
    send::<RawSample<'static>>();
    send::<SampleMut<'static, [u8]>>();
    send::<held::HeldSubscriber>();
    send::<held::HeldPublisher>();
}
