//! Async receive and send (features `tokio` or `async-io`): futures and streams that wait on a
//! wake slot's eventfd through the executor's reactor instead of blocking a thread.
//!
//! * [`Subscriber::recv_async`], [`RawSubscriber::recv_async`]: cancel-safe; dropping the
//!   future before it resolves loses nothing (a message is taken only when the future
//!   resolves with it).
//! * [`Subscriber::stream`], [`Subscriber::into_stream`]: a `futures_core::Stream` of owned
//!   copies of the messages.
//! * [`Publisher::loan_async`], [`Publisher::send_async`]: wait for room on a full lossless
//!   topic.
//! * [`WaitSet::wait_async`](crate::WaitSet::wait_async).
//!
//! A port's first async wait makes an eventfd and registers it with the daemon as a wake slot
//! of the port's topic; a publisher (or a subscriber freeing room) writes it only when it finds
//! the slot armed, on the slow path that already runs when someone waits. If no slot can be had
//! (the topic's wake table is full, the open-file limit is reached), the wait falls back to
//! looking every millisecond and says so once in the log; [`Subscriber::prepare_async`] reports
//! such an error up front instead.

mod reactor;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bus_core::ring::{Ready, RecvError as CoreRecv};
use bus_proto::protocol::Role;
use bus_proto::segment::ShmRing;

use crate::conn::Conn;
use crate::error::{FromRecv, RecvError, WaitError};
use crate::follow::CHECK_EVERY;
use crate::port::{PortView, ViewState};
use crate::subscriber::{Receiver, Sample};
use crate::wake::{Efd, Registration};
use crate::{Payload, RawSample, RawSubscriber, Subscriber};

pub(crate) use reactor::Reactor;

/// How often a port without a wake slot looks again.
const POLL_WITHOUT_SLOT: Duration = Duration::from_millis(1);

/// A port's async waiter: its eventfd (registered as a wake slot) and the reactor that waits
/// for it.
pub(crate) struct AsyncWaiter {
    efd: Efd,
    reactor: Reactor,
    /// The slot, and the port identity it was registered for.
    reg: Option<(Registration, usize, u64)>,
    /// The ring and slot armed by the last poll, to disarm.
    armed: Option<(Arc<ShmRing>, usize)>,
    warned: bool,
}

impl std::fmt::Debug for AsyncWaiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncWaiter")
            .field("slot", &self.reg.as_ref().map(|(r, _, _)| r.slot))
            .finish()
    }
}

impl AsyncWaiter {
    pub(crate) fn new() -> Result<AsyncWaiter, WaitError> {
        let efd = Efd::new()?;
        let reactor = Reactor::new(efd.try_clone()?)?;
        Ok(AsyncWaiter {
            efd,
            reactor,
            reg: None,
            armed: None,
            warned: false,
        })
    }

    /// Make sure a wake slot is registered for the port as it is now.
    pub(crate) fn register(
        &mut self,
        view: &ViewState,
        conn: &Arc<Conn>,
        topic: &str,
        role: Role,
    ) -> Result<(), WaitError> {
        let stale = self.reg.as_ref().is_none_or(|(r, i, g)| {
            *i != view.index || *g != view.generation || r.epoch != conn.status().epoch()
        });
        if stale {
            self.disarm();
            self.reg = None;
            let reg = Registration::new(conn, topic, role, (view.index, view.generation))?;
            self.reg = Some((reg, view.index, view.generation));
        }
        Ok(())
    }

    /// One poll of a wait for `ready`: arm the slot, re-check, and park on the reactor until
    /// the eventfd is written (or, while the daemon is gone or without a slot, a slice passes).
    /// `Ready(())` means "look again".
    pub(crate) fn poll_wait(
        &mut self,
        cx: &mut Context<'_>,
        port: (&Arc<PortView>, &Arc<Conn>, &str, Role),
        ready: impl Fn(&ViewState) -> bool,
    ) -> Poll<()> {
        let (view, conn, topic, role) = port;
        let view = view.get();
        if let Err(e) = self.register(&view, conn, topic, role) {
            if !self.warned {
                self.warned = true;
                tracing::warn!(topic, error = %e, "no wake slot for an async wait; looking every millisecond instead");
            }
        }
        if let Some((reg, _, _)) = &self.reg {
            // The word before the bit: the agent wakes this waiter once it moves.
            let seq = view.ring.waker_seq(reg.slot).unwrap_or(0);
            if view.ring.arm_waker(reg.slot, reg.generation).is_ok() {
                if crate::agent::watch(&view.ring, reg.slot, seq, &self.efd).is_ok() {
                    self.armed = Some((view.ring.clone(), reg.slot));
                } else {
                    view.ring.disarm_waker(reg.slot);
                }
            }
        }
        if ready(&view) {
            self.disarm();
            return Poll::Ready(());
        }
        // Armed: only the eventfd wakes us (a ringer, or the daemon's death: the hang-up
        // watcher sets the flag read here and then takes the armed bits, and `arm_waker`
        // fenced), and while the daemon is gone we look for a restarted one now and then.
        let bound = if self.armed.is_none() {
            Some(POLL_WITHOUT_SLOT)
        } else if conn.is_down() {
            Some(CHECK_EVERY)
        } else {
            None
        };
        match self.reactor.poll_woken(cx, bound) {
            Poll::Ready(_) => {
                self.disarm();
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Clear the armed bit (a future dropped mid-wait, or a wait that is over).
    pub(crate) fn disarm(&mut self) {
        if let Some((ring, slot)) = self.armed.take() {
            crate::agent::unwatch(&ring, slot);
            ring.disarm_waker(slot);
        }
    }
}

impl Drop for AsyncWaiter {
    fn drop(&mut self) {
        self.disarm();
    }
}

impl Receiver {
    fn async_waiter(&mut self) -> Result<&mut AsyncWaiter, WaitError> {
        if self.waiter.is_none() {
            self.waiter = Some(AsyncWaiter::new()?);
        }
        self.waiter
            .as_mut()
            .ok_or(WaitError::TooManyFiles { limit: 0 })
    }

    /// Register the async waiter now (see [`Subscriber::prepare_async`]).
    pub(crate) fn prepare_async(&mut self) -> Result<(), WaitError> {
        let port = self.port();
        let (view, conn, topic) = (
            port.view().get(),
            port.conn().clone(),
            port.topic().to_string(),
        );
        self.async_waiter()?
            .register(&view, &conn, &topic, Role::Subscriber)
    }

    /// Poll for the next message that fits: `Ready` with its ticket (nothing is taken yet), or
    /// with an error.
    pub(crate) fn poll_ticket<E: FromRecv>(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Ready, E>> {
        loop {
            match self.ticket::<E>() {
                Ok(Some(t)) => return Poll::Ready(Ok(t)),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            let port = self.port();
            let (view, conn, topic) = (
                port.view().clone(),
                port.conn().clone(),
                port.topic().to_string(),
            );
            let waiter = match self.async_waiter() {
                Ok(w) => w,
                // Without an eventfd there is nothing to wait on: say so as a closed topic
                // would, after logging why (`prepare_async` reports it as an error).
                Err(e) => {
                    tracing::warn!(topic, error = %e, "no eventfd for an async wait");
                    return Poll::Ready(Err(E::from_recv(CoreRecv::Closed)));
                }
            };
            let ready = |v: &ViewState| v.ring.subscriber_ready(v.index, v.generation);
            match waiter.poll_wait(cx, (&view, &conn, &topic, Role::Subscriber), ready) {
                Poll::Ready(()) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    pub(crate) fn disarm_async(&mut self) {
        if let Some(w) = self.waiter.as_mut() {
            w.disarm();
        }
    }
}

/// The future of [`Subscriber::recv_async`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, RecvFuture};
/// let bus = Bus::embedded()?;
/// let mut subscriber = bus.subscriber::<u32>("doc/recv-future").open_or_create()?;
/// bus.publisher::<u32>("doc/recv-future").open()?.publish(&5)?;
/// let future: RecvFuture<'_, u32> = subscriber.recv_async();
/// assert_eq!(*future.await?, 5);
/// # Ok(()) }
/// ```
pub struct RecvFuture<'a, T: Payload + ?Sized> {
    sub: Option<&'a mut Subscriber<T>>,
}

impl<'a, T: Payload + ?Sized> Future for RecvFuture<'a, T> {
    type Output = Result<Sample<'a, T>, RecvError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let ticket = {
            let Some(sub) = this.sub.as_mut() else {
                return Poll::Ready(Err(RecvError::Closed));
            };
            match sub.inner.poll_ticket::<RecvError>(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(t)) => t,
            }
        };
        // Found and not taken yet: take it with the subscriber's full borrow.
        let Some(sub) = this.sub.take() else {
            return Poll::Ready(Err(RecvError::Closed));
        };
        Poll::Ready(sub.inner.take_ticket(ticket).map(Sample::new))
    }
}

impl<T: Payload + ?Sized> Drop for RecvFuture<'_, T> {
    fn drop(&mut self) {
        if let Some(sub) = self.sub.as_mut() {
            sub.inner.disarm_async();
        }
    }
}

mod publisher;
mod stream;
mod waitset;

pub use publisher::{LoanFuture, SendFuture};
pub use stream::Messages;
pub use waitset::WaitFuture;

impl<T: Payload + ?Sized> Subscriber<T> {
    /// Receive the next message, waiting without blocking the thread. Cancel-safe: dropping
    /// the future before it resolves loses nothing.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let bus = bus_client::Bus::embedded()?;
    /// let mut subscriber = bus.subscriber::<u64>("doc/async").open_or_create()?;
    /// let mut publisher = bus.publisher::<u64>("doc/async").open()?;
    /// let send = tokio::task::spawn_blocking(move || publisher.publish(&9));
    /// let sample = subscriber.recv_async().await?;
    /// assert_eq!(*sample, 9);
    /// # send.await??; Ok(()) }
    /// ```
    pub fn recv_async(&mut self) -> RecvFuture<'_, T> {
        RecvFuture { sub: Some(self) }
    }

    /// Make the eventfd of this subscriber's async waits and register it with the daemon now,
    /// so that a problem (the open-file limit, a topic whose wake slots are all taken) is an
    /// error here rather than a fallback to polling later.
    pub fn prepare_async(&mut self) -> Result<(), WaitError> {
        self.inner.prepare_async()
    }

    /// The messages as a `futures_core::Stream` of owned copies, borrowing the subscriber.
    pub fn stream(&mut self) -> Messages<&mut Subscriber<T>, T> {
        Messages::new(self)
    }

    /// The messages as a `futures_core::Stream` of owned copies, owning the subscriber.
    pub fn into_stream(self) -> Messages<Subscriber<T>, T> {
        Messages::new(self)
    }
}

impl RawSubscriber {
    /// Receive the next message, waiting without blocking the thread; cancel-safe (see
    /// [`Subscriber::recv_async`]).
    pub fn recv_async(&mut self) -> RawRecvFuture<'_> {
        RawRecvFuture { sub: Some(self) }
    }
}

/// The future of [`RawSubscriber::recv_async`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, RawRecvFuture};
/// let bus = Bus::embedded()?;
/// let mut publisher = bus.publisher::<[u8]>("doc/raw-recv-future").create()?;
/// let mut subscriber = bus.raw_subscriber("doc/raw-recv-future").open()?;
/// publisher.publish(b"hi")?;
/// let future: RawRecvFuture<'_> = subscriber.recv_async();
/// assert_eq!(future.await?.bytes(), b"hi");
/// # Ok(()) }
/// ```
pub struct RawRecvFuture<'a> {
    sub: Option<&'a mut RawSubscriber>,
}

impl<'a> Future for RawRecvFuture<'a> {
    type Output = Result<RawSample<'a>, RecvError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let ticket = {
            let Some(sub) = this.sub.as_mut() else {
                return Poll::Ready(Err(RecvError::Closed));
            };
            match sub.inner.poll_ticket::<RecvError>(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(t)) => t,
            }
        };
        let Some(sub) = this.sub.take() else {
            return Poll::Ready(Err(RecvError::Closed));
        };
        Poll::Ready(sub.inner.take_ticket(ticket).map(RawSample::new))
    }
}

impl Drop for RawRecvFuture<'_> {
    fn drop(&mut self) {
        if let Some(sub) = self.sub.as_mut() {
            sub.inner.disarm_async();
        }
    }
}
