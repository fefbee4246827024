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
//! A ring over heap memory, one publisher and one subscriber (the full example, which runs as
//! a test, is `bus-core/tests/heap_ring_example.rs`; it is not a doctest because doctests
//! cannot follow the `--cfg loom` build):
//!
//! ```text
//! let ring = Arc::new(Ring::new(RawStorage::create(HeapRegion::zeroed(len), &layout)?, Futex));
//! let (pi, pg) = ring.attach_any_publisher(pid)?;
//! let (si, sg) = ring.attach_any_subscriber(pid, StartAt::Latest)?;
//! let mut publisher = PublisherPort::new(ring.clone(), pi, pg)?;
//! let mut subscriber = SubscriberPort::new(ring.clone(), si, sg)?;
//! let mut loan = publisher.try_loan()?;
//! loan.write(b"hello")?;
//! loan.commit();
//! assert_eq!(&*subscriber.recv(WaitStrategy::BusyPoll, None)?.bytes(), b"hello");
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
