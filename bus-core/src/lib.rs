//! # bus-core
//!
//! The shared-memory layout and the lock-free broadcast ring of shmbus. No sockets, no
//! processes: the daemon and the client crates build on this.
//!
//! * [`layout`]: the segment layout, its offsets, and the validation of a mapped segment.
//! * [`entries`]: the atomics that live in the segment (control block, tables, slot headers).
//! * [`ring`]: the ring algorithm (claim, write, commit; read, release; lag; repair).
//! * [`storage`]: where a ring's memory lives: a mapped segment, a heap buffer, or loom objects.
//! * [`doorbell`]: futex waiting and waking across processes.
//! * [`wait`]: busy-poll, block, or spin-then-park.
//!
//! The algorithm is generic over its [`storage::Storage`] and its [`doorbell::Doorbell`], and
//! imports its atomics from one switch point (`sync`), so the very same code runs under loom
//! (`RUSTFLAGS="--cfg loom"`), under Miri over heap storage, and over shared memory.
//!
//! ```
//! use std::sync::Arc;
//! use bus_core::doorbell::Futex;
//! use bus_core::layout::{Geometry, Layout, Mode, TypeInfo};
//! use bus_core::ring::{PublisherPort, Ring, StartAt, SubscriberPort};
//! use bus_core::storage::{HeapRegion, RawStorage};
//! use bus_core::wait::WaitStrategy;
//!
//! let geometry = Geometry {
//!     capacity: 8, slot_size: 64, mode: Mode::Lossless,
//!     max_publishers: 1, max_subscribers: 1, type_info: TypeInfo::bytes(),
//! };
//! let layout = Layout::compute(&geometry)?;
//! let storage = RawStorage::create(HeapRegion::zeroed(layout.total_len as usize), &layout)?;
//! let ring = Arc::new(Ring::new(storage, Futex));
//!
//! let (pi, pg) = ring.attach_any_publisher(1)?;
//! let (si, sg) = ring.attach_any_subscriber(1, StartAt::Latest)?;
//! let mut publisher = PublisherPort::new(ring.clone(), pi, pg)?;
//! let mut subscriber = SubscriberPort::new(ring.clone(), si, sg)?;
//!
//! let mut loan = publisher.try_loan()?;
//! loan.write(b"hello")?;
//! loan.commit();
//!
//! let sample = subscriber.recv(WaitStrategy::BusyPoll, None)?;
//! assert_eq!(&*sample.bytes(), b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod doorbell;
pub mod entries;
pub mod layout;
pub mod ring;
pub mod storage;
pub(crate) mod sync;
pub mod wait;
