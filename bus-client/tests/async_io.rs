//! The executor-agnostic async backend (feature `async-io` without `tokio`): futures woken by
//! async-io's reactor thread, driven here by `async_io::block_on` rather than a tokio runtime.
//!
//! With both features the client uses tokio's reactor, and `cargo test --workspace` turns
//! `tokio` on for every crate, so this file compiles only in a build of this crate alone:
//!
//! ```text
//! cargo test -p bus-client --no-default-features --features async-io,embedded --test async_io
//! ```
//!
//! (`.ci/run` runs it.) The embedded daemon is a real shmbusd in a thread; the publishers are
//! other threads of this process, so every wake-up crosses the segment's wake slots and an
//! eventfd exactly as between processes.

#![cfg(all(feature = "async-io", feature = "embedded", not(feature = "tokio")))]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::Duration;

use bus_client::Bus;

const N: u64 = 2_000;

#[test]
fn recv_async_on_async_io_receives_everything_in_order_and_a_dropped_future_loses_nothing() {
    let bus = Bus::embedded().unwrap();
    let mut publisher = bus.publisher::<u64>("aio/t").capacity(8).create().unwrap();
    let mut subscriber = bus.subscriber::<u64>("aio/t").open().unwrap();

    // A future polled once with nothing published is pending; dropping it takes nothing.
    {
        let mut first = pin!(subscriber.recv_async());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(first.as_mut().poll(&mut cx).is_pending());
    }

    let sender = thread::spawn(move || {
        for i in 0..N {
            publisher.publish(&i).unwrap();
            if i % 100 == 0 {
                // Pauses, so that the receiver really goes to sleep on its eventfd.
                thread::sleep(Duration::from_millis(2));
            }
        }
    });
    async_io::block_on(async {
        for i in 0..N {
            let m = subscriber.recv_async().await.unwrap();
            assert_eq!(*m, i, "message {i} out of order");
        }
    });
    sender.join().unwrap();
}

#[test]
fn send_async_on_async_io_waits_for_room_and_loses_nothing() {
    let bus = Bus::embedded().unwrap();
    let mut publisher = bus
        .publisher::<u64>("aio/full")
        .capacity(8)
        .create()
        .unwrap();
    let mut subscriber = bus.subscriber::<u64>("aio/full").open().unwrap();

    // A slow reader: the 8-slot ring is full most of the time, so `send_async` must wait.
    let reader = thread::spawn(move || {
        for i in 0..200u64 {
            if i % 20 == 0 {
                thread::sleep(Duration::from_millis(5));
            }
            let m = subscriber.recv().unwrap();
            assert_eq!(*m, i, "message {i} out of order");
        }
    });
    async_io::block_on(async {
        for i in 0..200u64 {
            publisher.send_async(&i).await.unwrap();
        }
    });
    reader.join().unwrap();
}

#[test]
fn a_pending_receive_is_woken_by_a_publish_not_by_polling() {
    let bus = Bus::embedded().unwrap();
    let mut publisher = bus.publisher::<u64>("aio/wake").create().unwrap();
    let mut subscriber = bus.subscriber::<u64>("aio/wake").open().unwrap();

    // Count how often the executor polls the future while nothing is published for 300 ms:
    // it must sleep on the reactor, not spin (the 100 ms restart check may poll a few times).
    struct Counting<F> {
        inner: F,
        polls: u32,
    }
    impl<F: Future + Unpin> Future for Counting<F> {
        type Output = (F::Output, u32);
        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            self.polls += 1;
            let polls = self.polls;
            match std::pin::Pin::new(&mut self.inner).poll(cx) {
                Poll::Ready(v) => Poll::Ready((v, polls)),
                Poll::Pending => Poll::Pending,
            }
        }
    }
    let sender = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        publisher.publish(&7).unwrap();
    });
    let (m, polls) = async_io::block_on(Counting {
        inner: Box::pin(subscriber.recv_async()),
        polls: 0,
    });
    assert_eq!(*m.unwrap(), 7);
    assert!(polls <= 10, "the future was polled {polls} times in 300 ms");
    sender.join().unwrap();
}
