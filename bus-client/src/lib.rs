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
//! let mut subscriber = bus.subscriber::<Odometry>("robot/odom").open()?;
//! let mut publisher = bus.publisher::<Odometry>("robot/odom").open()?;
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
//! * [`Publisher`]: `loan()` a slot, write it in place, `send()`; or `publish(&value)`.
//! * [`Subscriber`]: `recv()`, `try_recv()`, `recv_timeout()`, `iter()`; samples deref into
//!   the slot.
//! * [`TopicOptions`]: capacity, slot size, mode, table sizes; every default in one place.
//!
//! Ports have no background threads and can move between threads. The data path makes no
//! system call unless someone sleeps.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod bus;
mod conn;
mod error;
mod follow;
mod options;
mod payload;
mod publisher;
mod subscriber;

pub use bus::{Bus, PublisherBuilder, SubscriberBuilder};
pub use bus_core::ring::{RecvError, SendError, StartAt};
pub use bus_core::wait::WaitStrategy;
pub use bus_daemon::protocol::{TopicInfo, TopicSpec, TopicStats};
pub use error::Error;
pub use options::{Mode, TopicOptions};
pub use payload::Payload;
pub use publisher::{Publisher, SampleMut};
pub use subscriber::{Iter, Sample, Subscriber};

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
}
