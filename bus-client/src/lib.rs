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
#![warn(missing_docs)]

#[cfg(any(feature = "tokio", feature = "async-io"))]
mod asynch;
mod bus;
mod conn;
pub mod error;
mod follow;
pub mod held;
mod options;
mod payload;
mod port;
mod publisher;
mod raw;
mod subscriber;
mod topic_watch;
mod waitset;
mod wake;

#[cfg(any(feature = "tokio", feature = "async-io"))]
pub use asynch::{LoanFuture, Messages, RawRecvFuture, RecvFuture, SendFuture, WaitFuture};
pub use bus::{Bus, PublisherBuilder, SubscriberBuilder};
pub use bus_core::layout::{Geometry, Mode, TypeInfo};
pub use bus_core::ring::StartAt;
pub use bus_core::wait::WaitStrategy;
pub use bus_proto::protocol::{
    DaemonStatus, ErrorCode, LimitsInfo, PublisherStat, SubscriberStat, TopicInfo, TopicStats,
    Totals, Usage, WakerStat,
};
pub use error::{
    ConnectError, OpenError, RecvError, RecvTimeoutError, RequestError, SendError,
    SendTimeoutError, TooLarge, TryRecvError, TrySendError, WaitError,
};
pub use options::TopicOptions;
pub use payload::Payload;
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
