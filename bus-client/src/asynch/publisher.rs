//! Async publishing: wait for room on a full lossless topic without blocking the thread.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bus_core::ring::SendError as CoreSend;
use bus_proto::protocol::Role;

use super::AsyncWaiter;
use crate::error::{FromSend, SendError, TrySendError};
use crate::port::ViewState;
use crate::publisher::{RingClaim, SampleMut, Sender};
use crate::{Payload, Publisher};

impl Sender {
    fn async_waiter(&mut self) -> Option<&mut AsyncWaiter> {
        if self.waiter.is_none() {
            match AsyncWaiter::new() {
                Ok(w) => self.waiter = Some(w),
                Err(e) => {
                    tracing::warn!(topic = self.topic(), error = %e, "no eventfd for an async wait");
                    return None;
                }
            }
        }
        self.waiter.as_mut()
    }

    /// Poll until a claim goes ahead: `Ready` with it (nothing is lent out yet), or an error.
    fn poll_claim(&mut self, cx: &mut Context<'_>) -> Poll<Result<RingClaim, SendError>> {
        loop {
            if self.has_room() {
                match self.try_claim() {
                    Ok(c) => return Poll::Ready(Ok(c)),
                    // Another publisher took the last slot: wait again.
                    Err(TrySendError::Full) => {}
                    Err(e) => return Poll::Ready(Err(to_send_error(e))),
                }
            }
            let port = self.port();
            let (view, conn, topic) = (
                port.view().clone(),
                port.conn().clone(),
                port.topic().to_string(),
            );
            let Some(waiter) = self.async_waiter() else {
                return Poll::Ready(Err(SendError::from_send(CoreSend::Evicted)));
            };
            let ready = |v: &ViewState| v.ring.publisher_ready(v.index, v.generation);
            match waiter.poll_wait(cx, (&view, &conn, &topic, Role::Publisher), ready) {
                Poll::Ready(()) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn disarm_async(&mut self) {
        if let Some(w) = self.waiter.as_mut() {
            w.disarm();
        }
    }
}

fn to_send_error(e: TrySendError) -> SendError {
    match e {
        TrySendError::Closed => SendError::Closed,
        TrySendError::TooLarge(t) => SendError::TooLarge(t),
        TrySendError::WrongSize { len, expected } => SendError::WrongSize { len, expected },
        TrySendError::Repaired => SendError::Repaired,
        TrySendError::Stalled => SendError::Stalled,
        TrySendError::Corrupted => SendError::Corrupted,
        _ => SendError::Evicted,
    }
}

impl<T: Payload + ?Sized> Publisher<T> {
    /// Loan the next slot, waiting for room on a full lossless topic without blocking the
    /// thread. Cancel-safe: nothing is claimed until the future resolves.
    pub fn loan_async(&mut self) -> LoanFuture<'_, T> {
        LoanFuture {
            publisher: Some(self),
        }
    }

    /// Copy `value` into the next slot and send it, waiting for room without blocking the
    /// thread; returns its sequence number. Cancel-safe.
    pub fn send_async<'a>(&'a mut self, value: &'a T) -> SendFuture<'a, T> {
        SendFuture {
            publisher: self,
            value,
        }
    }
}

/// The future of [`Publisher::loan_async`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, LoanFuture};
/// let bus = Bus::embedded()?;
/// let mut publisher = bus.publisher::<u64>("doc/loan-future").create()?;
/// let mut subscriber = bus.subscriber::<u64>("doc/loan-future").open()?;
/// let future: LoanFuture<'_, u64> = publisher.loan_async();
/// let mut slot = future.await?;         // waits only while every slot is unread
/// *slot = 11;
/// slot.send();
/// assert_eq!(*subscriber.try_recv()?, 11);
/// # Ok(()) }
/// ```
pub struct LoanFuture<'a, T: Payload + ?Sized> {
    publisher: Option<&'a mut Publisher<T>>,
}

impl<'a, T: Payload + ?Sized> Future for LoanFuture<'a, T> {
    type Output = Result<SampleMut<'a, T>, SendError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let claim = {
            let Some(p) = this.publisher.as_mut() else {
                return Poll::Ready(Err(SendError::Closed));
            };
            match p.inner.poll_claim(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(c)) => c,
            }
        };
        let Some(p) = this.publisher.take() else {
            return Poll::Ready(Err(SendError::Closed));
        };
        Poll::Ready(Ok(SampleMut::new(p.inner.loan_claim(claim))))
    }
}

impl<T: Payload + ?Sized> Drop for LoanFuture<'_, T> {
    fn drop(&mut self) {
        if let Some(p) = self.publisher.as_mut() {
            p.inner.disarm_async();
        }
    }
}

/// The future of [`Publisher::send_async`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, SendFuture};
/// let bus = Bus::embedded()?;
/// let mut publisher = bus.publisher::<u64>("doc/send-future").create()?;
/// let mut subscriber = bus.subscriber::<u64>("doc/send-future").open()?;
/// let future: SendFuture<'_, u64> = publisher.send_async(&12);
/// assert_eq!(future.await?, 0);         // the message's sequence number
/// assert_eq!(*subscriber.try_recv()?, 12);
/// # Ok(()) }
/// ```
pub struct SendFuture<'a, T: Payload + ?Sized> {
    publisher: &'a mut Publisher<T>,
    value: &'a T,
}

impl<T: Payload + ?Sized> Future for SendFuture<'_, T> {
    type Output = Result<u64, SendError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let bytes = this.value.as_bytes();
        if let Err(e) = this.publisher.inner.check_size::<SendError>(bytes) {
            return Poll::Ready(Err(e));
        }
        match this.publisher.inner.poll_claim(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(claim)) => {
                let mut loan = this.publisher.inner.loan_claim(claim);
                if let Err(e) = loan.set_len(bytes.len()) {
                    return Poll::Ready(Err(SendError::TooLarge(e)));
                }
                loan.bytes_mut().copy_from_slice(bytes);
                Poll::Ready(Ok(loan.send()))
            }
        }
    }
}

impl<T: Payload + ?Sized> Drop for SendFuture<'_, T> {
    fn drop(&mut self) {
        self.publisher.inner.disarm_async();
    }
}
