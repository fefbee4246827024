//! The executor side of an async wait: an eventfd registered with the executor's reactor, and
//! a timer when the wait is bounded (a deadline, or a look around every [`CHECK_EVERY`] while
//! the daemon is gone: its death writes the eventfd, see `hangup`; without a bound the wait
//! ends only when the eventfd is written).
//!
//! Two backends: tokio's `AsyncFd` and `Sleep` (feature `tokio`; the runtime needs its I/O and
//! time drivers, e.g. `enable_all()`, which `#[tokio::main]` turns on), or, for any other
//! executor, the `async-io` crate's reactor thread (feature `async-io`). With both features,
//! tokio's is used.

use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::follow::CHECK_EVERY;

/// What a wait can be woken by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woken {
    /// The eventfd was written (and is now drained).
    Written,
    /// The bound passed.
    TimedOut,
}

#[cfg(feature = "tokio")]
mod imp {
    use super::*;
    use std::future::Future;
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    pub(crate) struct Reactor {
        fd: AsyncFd<OwnedFd>,
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    }

    impl Reactor {
        pub(crate) fn new(fd: OwnedFd) -> io::Result<Reactor> {
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(io::Error::other(
                    "an async wait needs a tokio runtime (with its I/O and time drivers)",
                ));
            }
            // SAFETY: an `OwnedFd` is a valid open descriptor that stays open, and is always the
            // same descriptor, until the `AsyncFd` that owns it is dropped.
            let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?;
            Ok(Reactor { fd, sleep: None })
        }

        pub(crate) fn poll_woken(
            &mut self,
            cx: &mut Context<'_>,
            bound: Option<Duration>,
        ) -> Poll<Woken> {
            let mut bound = bound;
            loop {
                match self.fd.poll_read_ready(cx) {
                    Poll::Ready(Ok(mut guard)) => {
                        // Read until the counter is empty; readiness is cleared only when a
                        // read says there is nothing (no write is ever missed).
                        match guard.try_io(|fd| read_eventfd(fd.get_ref())) {
                            Ok(_) => {
                                self.sleep = None;
                                return Poll::Ready(Woken::Written);
                            }
                            Err(_would_block) => continue,
                        }
                    }
                    Poll::Ready(Err(_)) => {
                        // The descriptor cannot be waited on: look again now and then.
                        bound = Some(bound.map_or(CHECK_EVERY, |b| b.min(CHECK_EVERY)));
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            let Some(bound) = bound else {
                self.sleep = None;
                return Poll::Pending;
            };
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(bound)));
            match sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.sleep = None;
                    Poll::Ready(Woken::TimedOut)
                }
                Poll::Pending => Poll::Pending,
            }
        }
    }
}

#[cfg(all(feature = "async-io", not(feature = "tokio")))]
mod imp {
    use super::*;
    use async_io::{Async, Timer};
    use std::future::Future;

    pub(crate) struct Reactor {
        fd: Async<OwnedFd>,
        timer: Option<Pin<Box<Timer>>>,
    }

    impl Reactor {
        pub(crate) fn new(fd: OwnedFd) -> io::Result<Reactor> {
            Ok(Reactor {
                fd: Async::new(fd)?,
                timer: None,
            })
        }

        pub(crate) fn poll_woken(
            &mut self,
            cx: &mut Context<'_>,
            bound: Option<Duration>,
        ) -> Poll<Woken> {
            let mut bound = bound;
            loop {
                match self.fd.poll_readable(cx) {
                    Poll::Ready(Ok(())) => match read_eventfd(self.fd.get_ref()) {
                        Ok(_) => {
                            self.timer = None;
                            return Poll::Ready(Woken::Written);
                        }
                        // Readiness was stale: ask again (registers the waker).
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(_) => {}
                    },
                    Poll::Ready(Err(_)) => {}
                    Poll::Pending => break,
                }
                // The descriptor cannot be waited on: look again now and then.
                bound = Some(bound.map_or(CHECK_EVERY, |b| b.min(CHECK_EVERY)));
                break;
            }
            let Some(bound) = bound else {
                self.timer = None;
                return Poll::Pending;
            };
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(Timer::after(bound)));
            match timer.as_mut().poll(cx) {
                Poll::Ready(_) => {
                    self.timer = None;
                    Poll::Ready(Woken::TimedOut)
                }
                Poll::Pending => Poll::Pending,
            }
        }
    }
}

pub(crate) use imp::Reactor;

/// Drain an eventfd: `WouldBlock` when nothing was written.
fn read_eventfd(fd: &OwnedFd) -> io::Result<u64> {
    use std::os::fd::AsFd;
    let mut buf = [0u8; 8];
    match nix::unistd::read(fd.as_fd(), &mut buf) {
        Ok(8) => Ok(u64::from_ne_bytes(buf)),
        Ok(_) => Err(io::ErrorKind::UnexpectedEof.into()),
        Err(e) => Err(e.into()),
    }
}
