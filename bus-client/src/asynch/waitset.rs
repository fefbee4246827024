//! An awaitable [`WaitSet`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::Reactor;
use crate::error::WaitError;
use crate::waitset::{AttachmentId, WaitSet};

impl WaitSet {
    /// [`WaitSet::wait`] without blocking the thread.
    pub fn wait_async(&mut self, timeout: Option<Duration>) -> WaitFuture<'_> {
        WaitFuture {
            deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
            set: Some(self),
        }
    }

    fn poll_wait(
        &mut self,
        cx: &mut Context<'_>,
        deadline: Option<Instant>,
    ) -> Poll<Result<(), WaitError>> {
        loop {
            let next_timer = self.check()?;
            let now = Instant::now();
            if !self.ready.is_empty() || deadline.is_some_and(|d| now >= d) {
                return Poll::Ready(Ok(()));
            }
            if self.reactor.is_none() {
                self.reactor = Some(Reactor::new(self.efd.try_clone()?)?);
            }
            // The next timer includes the looks around a port may need (see `check`).
            let until = [deadline, next_timer].into_iter().flatten().min();
            let Some(reactor) = self.reactor.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match reactor.poll_woken(cx, until.map(|t| t.saturating_duration_since(now))) {
                Poll::Ready(_) => {
                    self.efd.drain();
                    self.disarm_all();
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The future of [`WaitSet::wait_async`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use bus_client::{Bus, WaitFuture, WaitSet};
/// let bus = Bus::embedded()?;
/// let mut subscriber = bus.subscriber::<u64>("doc/wait-future").open_or_create()?;
/// let mut set = WaitSet::new()?;
/// let attached = set.attach_subscriber(&subscriber)?;
/// bus.publisher::<u64>("doc/wait-future").open()?.publish(&3)?;
/// let future: WaitFuture<'_> = set.wait_async(Some(Duration::from_secs(5)));
/// assert_eq!(future.await?, [attached.id()]);
/// assert_eq!(*subscriber.try_recv()?, 3);
/// # Ok(()) }
/// ```
pub struct WaitFuture<'a> {
    set: Option<&'a mut WaitSet>,
    deadline: Option<Instant>,
}

impl<'a> Future for WaitFuture<'a> {
    type Output = Result<&'a [AttachmentId], WaitError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let deadline = this.deadline;
        match this.set.as_mut().map(|s| s.poll_wait(cx, deadline)) {
            None => Poll::Ready(Ok(&[])),
            Some(Poll::Pending) => Poll::Pending,
            Some(Poll::Ready(Err(e))) => Poll::Ready(Err(e)),
            Some(Poll::Ready(Ok(()))) => match this.set.take() {
                Some(set) => Poll::Ready(Ok(&set.ready)),
                None => Poll::Ready(Ok(&[])),
            },
        }
    }
}

impl Drop for WaitFuture<'_> {
    fn drop(&mut self) {
        if let Some(set) = self.set.as_mut() {
            set.disarm_all();
        }
    }
}
