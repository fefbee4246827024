//! A subscriber as a `futures_core::Stream` of owned copies of its messages.

use std::borrow::BorrowMut;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use crate::error::RecvError;
use crate::{Payload, Subscriber};

/// The messages of a subscriber as a stream of owned copies (`T` for a sized type, `Vec<u8>`
/// for bytes); see [`Subscriber::stream`] and [`Subscriber::into_stream`]. It ends when the
/// topic is closed and drained; `Lagged` comes as an item and reading goes on; `Evicted` is
/// the last item.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::pin::Pin;
/// use futures_core::Stream;
/// use bus_client::{Bus, Messages, Subscriber};
/// let bus = Bus::embedded()?;
/// let subscriber = bus.subscriber::<u64>("doc/messages").open_or_create()?;
/// let mut publisher = bus.publisher::<u64>("doc/messages").open()?;
/// publisher.publish(&1)?;
/// publisher.publish(&2)?;
/// let mut messages: Messages<Subscriber<u64>, u64> = subscriber.into_stream();
/// for expected in [1, 2] {
///     let next = std::future::poll_fn(|cx| Pin::new(&mut messages).poll_next(cx)).await;
///     assert_eq!(next.transpose()?, Some(expected));
/// }
/// # Ok(()) }
/// ```
pub struct Messages<S: BorrowMut<Subscriber<T>>, T: Payload + ?Sized> {
    /// `None` only once `into_inner` took it.
    sub: Option<S>,
    done: bool,
    _t: PhantomData<fn() -> Box<T>>,
}

impl<S: BorrowMut<Subscriber<T>>, T: Payload + ?Sized> Messages<S, T> {
    pub(crate) fn new(sub: S) -> Messages<S, T> {
        Messages {
            sub: Some(sub),
            done: false,
            _t: PhantomData,
        }
    }

    /// The subscriber back.
    pub fn into_inner(mut self) -> Option<S> {
        self.sub.take()
    }
}

impl<S: BorrowMut<Subscriber<T>> + Unpin, T: Payload + ?Sized> Stream for Messages<S, T> {
    type Item = Result<T::Owned, RecvError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(sub) = this.sub.as_mut().filter(|_| !this.done) else {
            return Poll::Ready(None);
        };
        let inner = &mut sub.borrow_mut().inner;
        let ticket = match inner.poll_ticket::<RecvError>(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(t)) => t,
            Poll::Ready(Err(RecvError::Closed)) => {
                this.done = true;
                return Poll::Ready(None);
            }
            Poll::Ready(Err(e @ RecvError::Evicted)) => {
                this.done = true;
                return Poll::Ready(Some(Err(e)));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
        };
        Poll::Ready(Some(
            inner
                .take_ticket::<RecvError>(ticket)
                .map(|got| T::to_owned_message(got.bytes())),
        ))
    }
}

impl<S: BorrowMut<Subscriber<T>>, T: Payload + ?Sized> Drop for Messages<S, T> {
    fn drop(&mut self) {
        // A stream dropped mid-wait leaves no armed wake slot behind.
        if let Some(sub) = self.sub.as_mut() {
            sub.borrow_mut().inner.disarm_async();
        }
    }
}
