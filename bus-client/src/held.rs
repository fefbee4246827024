//! Raw ports that keep their current sample or loan inside themselves, for callers that cannot
//! hold a Rust borrow across calls: the C ABI (`bus-ffi`) and the Python package
//! (`bus-python`). A [`RawSample`] borrows its [`RawSubscriber`], and a loan its
//! [`RawPublisher`]; here the port is owned through a pointer to the heap and the borrow is
//! stored beside it, so a caller can receive in one call and release in a later one.
//!
//! The one invariant that makes this sound, kept by every method below: **while a sample (or
//! loan) is held, nothing else touches the port**. Every method that needs the port first
//! checks that nothing is held, and the stored borrow is dropped before the port is.
//! The `'static` lifetime of the stored borrow never leaves this module: callers only get
//! borrows tied to `&self` or `&mut self`.

use std::ptr::NonNull;
use std::time::Duration;

use crate::error::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TooLarge, TryRecvError, TrySendError,
};
use crate::publisher::SampleMut;
use crate::raw::{RawPublisher, RawSample, RawSubscriber};

/// Why a held port refused a call.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::Bus;
/// use bus_client::held::{HeldError, HeldSubscriber};
/// let bus = Bus::embedded()?;
/// let mut publisher = bus.publisher::<[u8]>("doc/held-error").create()?;
/// let mut held = HeldSubscriber::new(bus.raw_subscriber("doc/held-error").open()?);
/// publisher.publish(b"one")?;
/// publisher.publish(b"two")?;
/// held.try_recv()?;
/// // The sample of "one" is still held: the port refuses until it is released.
/// assert!(matches!(held.try_recv(), Err(HeldError::Busy)));
/// assert!(held.release());
/// assert_eq!(held.try_recv()?.bytes(), b"two");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeldError<E> {
    /// A sample (or loan) is still held: release (send or discard) it first.
    #[error("a sample or loan is still held; release it first")]
    Busy,
    /// The port's own error.
    #[error(transparent)]
    Port(E),
}

/// A [`RawSubscriber`] that holds at most one received sample between calls.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::Bus;
/// use bus_client::held::HeldSubscriber;
/// let bus = Bus::embedded()?;
/// let mut publisher = bus.publisher::<[u8]>("doc/held-sub").create()?;
/// let mut held = HeldSubscriber::new(bus.raw_subscriber("doc/held-sub").open()?);
/// publisher.publish(b"kept")?;
/// held.recv()?;                                // received in one call...
/// assert_eq!(held.sample().map(|s| s.bytes()), Some(&b"kept"[..]));
/// assert!(held.port().is_none());             // (the port is busy while a sample is held)
/// assert!(held.release());                    // ...released in a later one
/// assert!(held.port().is_some());
/// # Ok(()) }
/// ```
pub struct HeldSubscriber {
    /// Borrows `*port`. Declared (and dropped) first; see the module's invariant.
    sample: Option<RawSample<'static>>,
    /// Owned: made by `Box::leak`, freed in `Drop`.
    port: NonNull<RawSubscriber>,
}

// SAFETY: a `HeldSubscriber` is a `RawSubscriber` (Send) and a sample borrowing it (Send when
// the port is: it holds `&mut` into the port and shared references into the mapping). Both
// live on the heap or in the mapping and move together with this value, so sending the pair
// to another thread is sending the subscriber with its borrow, which Rust allows.
unsafe impl Send for HeldSubscriber {}

impl std::fmt::Debug for HeldSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldSubscriber")
            .field("holding", &self.sample.is_some())
            .finish()
    }
}

impl HeldSubscriber {
    /// Take ownership of `port`.
    pub fn new(port: RawSubscriber) -> HeldSubscriber {
        HeldSubscriber {
            sample: None,
            port: NonNull::from(Box::leak(Box::new(port))),
        }
    }

    /// The port, unless a sample is held.
    #[inline]
    pub fn port(&self) -> Option<&RawSubscriber> {
        if self.sample.is_some() {
            return None;
        }
        // SAFETY: `port` is a live, owned allocation; no sample borrows it (checked above),
        // and `&self` rules out any `&mut` made by this value meanwhile.
        Some(unsafe { self.port.as_ref() })
    }

    /// The port for changes (wait strategy), unless a sample is held.
    #[inline]
    pub fn port_mut(&mut self) -> Option<&mut RawSubscriber> {
        if self.sample.is_some() {
            return None;
        }
        // SAFETY: as in `port`; `&mut self` makes this the only reference.
        Some(unsafe { self.port.as_mut() })
    }

    /// The port for a borrow that outlives this call: only while nothing is held.
    #[inline]
    fn take_port<E>(&mut self) -> Result<&'static mut RawSubscriber, HeldError<E>> {
        if self.sample.is_some() {
            return Err(HeldError::Busy);
        }
        // SAFETY: the port is a live, owned allocation and no sample borrows it. The `'static`
        // borrow is stored in `self.sample` only (the callers below), which is dropped before
        // the port, and no other reference to the port is made while it is stored.
        Ok(unsafe { &mut *self.port.as_ptr() })
    }

    #[inline]
    fn hold<E>(
        &mut self,
        received: Result<RawSample<'static>, E>,
    ) -> Result<&RawSample<'_>, HeldError<E>> {
        let sample = received.map_err(HeldError::Port)?;
        Ok(self.sample.insert(sample))
    }

    /// Receive and hold the next message, waiting as the port's wait strategy says.
    #[inline]
    pub fn recv(&mut self) -> Result<&RawSample<'_>, HeldError<RecvError>> {
        let port = self.take_port()?;
        self.hold(port.recv())
    }

    /// Receive and hold the next message without waiting.
    #[inline]
    pub fn try_recv(&mut self) -> Result<&RawSample<'_>, HeldError<TryRecvError>> {
        let port = self.take_port()?;
        self.hold(port.try_recv())
    }

    /// Receive and hold the next message, waiting at most `timeout`.
    #[inline]
    pub fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<&RawSample<'_>, HeldError<RecvTimeoutError>> {
        let port = self.take_port()?;
        self.hold(port.recv_timeout(timeout))
    }

    /// The held sample, if any.
    #[inline]
    pub fn sample(&self) -> Option<&RawSample<'_>> {
        self.sample.as_ref()
    }

    /// Release the held sample (its slot goes back to the publishers); whether one was held.
    #[inline]
    pub fn release(&mut self) -> bool {
        self.sample.take().is_some()
    }
}

impl Drop for HeldSubscriber {
    fn drop(&mut self) {
        self.sample = None;
        // SAFETY: `port` came from `Box::leak` in `new` and is freed only here, after the
        // sample that borrowed it was dropped on the line above.
        drop(unsafe { Box::from_raw(self.port.as_ptr()) });
    }
}

/// A [`RawPublisher`] that holds at most one loaned slot between calls.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::Bus;
/// use bus_client::held::HeldPublisher;
/// let bus = Bus::embedded()?;
/// let mut held = HeldPublisher::new(bus.raw_publisher("doc/held-pub").create(
///     bus_client::TopicOptions::default().geometry_for(bus_client::TypeInfo::bytes()),
/// )?);
/// let mut subscriber = bus.subscriber::<[u8]>("doc/held-pub").open()?;
/// held.loan()?[..3].copy_from_slice(b"abc");   // loaned in one call...
/// held.set_len(3).transpose()?;
/// assert_eq!(held.send(), Some(0));             // ...sent in a later one
/// assert_eq!(&*subscriber.recv()?, b"abc");
/// # Ok(()) }
/// ```
pub struct HeldPublisher {
    /// Borrows `*port`. Declared (and dropped) first; see the module's invariant.
    loan: Option<SampleMut<'static, [u8]>>,
    /// Owned: made by `Box::leak`, freed in `Drop`.
    port: NonNull<RawPublisher>,
}

// SAFETY: as for `HeldSubscriber`: the publisher (Send) and its loan (a `&mut` into it and
// references into the mapping and the publisher's own buffer) move together.
unsafe impl Send for HeldPublisher {}

impl std::fmt::Debug for HeldPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldPublisher")
            .field("loaned", &self.loan.is_some())
            .finish()
    }
}

impl HeldPublisher {
    /// Take ownership of `port`.
    pub fn new(port: RawPublisher) -> HeldPublisher {
        HeldPublisher {
            loan: None,
            port: NonNull::from(Box::leak(Box::new(port))),
        }
    }

    /// The port, unless a slot is loaned.
    #[inline]
    pub fn port(&self) -> Option<&RawPublisher> {
        if self.loan.is_some() {
            return None;
        }
        // SAFETY: a live, owned allocation that no loan borrows (checked above).
        Some(unsafe { self.port.as_ref() })
    }

    /// The port to publish through or change, unless a slot is loaned.
    #[inline]
    pub fn port_mut(&mut self) -> Option<&mut RawPublisher> {
        if self.loan.is_some() {
            return None;
        }
        // SAFETY: as in `port`; `&mut self` makes this the only reference.
        Some(unsafe { self.port.as_mut() })
    }

    #[inline]
    fn take_port<E>(&mut self) -> Result<&'static mut RawPublisher, HeldError<E>> {
        if self.loan.is_some() {
            return Err(HeldError::Busy);
        }
        // SAFETY: as in `HeldSubscriber::take_port`: the borrow is stored only in `self.loan`,
        // dropped before the port, and nothing else touches the port while it is stored.
        Ok(unsafe { &mut *self.port.as_ptr() })
    }

    /// Loan the next slot, waiting for space as the port's wait strategy says; returns the
    /// bytes to write (the type's size, or the whole slot of a byte topic).
    #[inline]
    pub fn loan(&mut self) -> Result<&mut [u8], HeldError<SendError>> {
        let port = self.take_port()?;
        let loan = port.loan().map_err(HeldError::Port)?;
        Ok(&mut self.loan.insert(loan)[..])
    }

    /// Loan the next slot without waiting.
    #[inline]
    pub fn try_loan(&mut self) -> Result<&mut [u8], HeldError<TrySendError>> {
        let port = self.take_port()?;
        let loan = port.try_loan().map_err(HeldError::Port)?;
        Ok(&mut self.loan.insert(loan)[..])
    }

    /// Loan the next slot, waiting at most `timeout` for space.
    #[inline]
    pub fn loan_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<&mut [u8], HeldError<SendTimeoutError>> {
        let port = self.take_port()?;
        let loan = port.loan_timeout(timeout).map_err(HeldError::Port)?;
        Ok(&mut self.loan.insert(loan)[..])
    }

    /// The loaned bytes, if a slot is loaned.
    #[inline]
    pub fn loaned(&mut self) -> Option<&mut [u8]> {
        self.loan.as_mut().map(|l| &mut l[..])
    }

    /// Set how many bytes of the loaned slot to send (`None` if nothing is loaned).
    #[inline]
    pub fn set_len(&mut self, len: usize) -> Option<Result<(), TooLarge>> {
        self.loan.as_mut().map(|l| l.set_len(len))
    }

    /// Send the loaned slot; its sequence number, or `None` if nothing was loaned.
    #[inline]
    pub fn send(&mut self) -> Option<u64> {
        self.loan.take().map(SampleMut::send)
    }

    /// Give the loaned slot back unsent (subscribers skip it); whether one was loaned.
    #[inline]
    pub fn discard(&mut self) -> bool {
        self.loan.take().is_some()
    }
}

impl Drop for HeldPublisher {
    fn drop(&mut self) {
        self.loan = None;
        // SAFETY: `port` came from `Box::leak` in `new` and is freed only here, after the
        // loan that borrowed it was dropped on the line above.
        drop(unsafe { Box::from_raw(self.port.as_ptr()) });
    }
}

#[cfg(all(test, feature = "embedded"))]
mod tests {
    use super::*;
    use crate::{Bus, TypeInfo};

    #[test]
    fn a_held_sample_blocks_the_next_receive_until_released() {
        let bus = Bus::embedded().expect("embedded daemon");
        let spec = crate::TopicOptions::default().geometry_for(TypeInfo::bytes());
        let mut publisher =
            HeldPublisher::new(bus.raw_publisher("held/a").create(spec).expect("publisher"));
        let mut subscriber =
            HeldSubscriber::new(bus.raw_subscriber("held/a").open().expect("subscriber"));

        let slot = publisher.loan().expect("loan");
        slot[..3].copy_from_slice(b"abc");
        assert_eq!(publisher.set_len(3), Some(Ok(())));
        assert!(matches!(publisher.loan(), Err(HeldError::Busy)));
        assert!(publisher.port_mut().is_none());
        assert_eq!(publisher.send(), Some(0));
        assert_eq!(publisher.send(), None);
        let port = publisher.port_mut().expect("nothing loaned");
        port.publish(b"de").expect("publish");

        let first = subscriber.recv().expect("first");
        assert_eq!((first.bytes(), first.sequence()), (&b"abc"[..], 0));
        assert!(matches!(subscriber.try_recv(), Err(HeldError::Busy)));
        assert!(subscriber.port().is_none());
        assert!(subscriber.release());
        assert!(!subscriber.release());
        let second = subscriber.try_recv().expect("second");
        assert_eq!(second.bytes(), b"de");
        assert!(matches!(
            subscriber.release().then(|| subscriber.try_recv()),
            Some(Err(HeldError::Port(TryRecvError::Empty)))
        ));
    }

    #[test]
    fn dropping_a_port_with_a_held_sample_or_loan_releases_it() {
        let bus = Bus::embedded().expect("embedded daemon");
        let spec = crate::TopicOptions {
            capacity: Some(2),
            ..Default::default()
        }
        .geometry_for(TypeInfo::bytes());
        let mut publisher =
            HeldPublisher::new(bus.raw_publisher("held/b").create(spec).expect("publisher"));
        let mut subscriber =
            HeldSubscriber::new(bus.raw_subscriber("held/b").open().expect("subscriber"));
        let port = publisher.port_mut().expect("port");
        port.publish(b"1").expect("publish");
        port.publish(b"2").expect("publish");
        subscriber.recv().expect("held");
        // The ring is full and its oldest slot held: a loan cannot be had...
        assert!(matches!(
            publisher.try_loan(),
            Err(HeldError::Port(TrySendError::Full))
        ));
        drop(subscriber);
        // ...until the subscriber is gone; a loan dropped with its publisher is never sent.
        publisher
            .try_loan()
            .expect("room after the subscriber left");
        drop(publisher);
    }
}
