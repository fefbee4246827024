//! [`Publisher`]: loan a slot, write in place, send. The machinery is shared with the raw
//! publisher ([`crate::RawPublisher`]) in [`Sender`].

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use bus_core::layout::{Geometry, Mode};
use bus_core::ring::{Loan, SendError as CoreSend};
use bus_core::storage::RawStorage;
use bus_core::wait::WaitStrategy;
use bus_proto::protocol::HELD_NOTICE_EVERY;
use bus_proto::segment::Mapping;
use bus_proto::wake::WakeBell;

use crate::error::{FromSend, SendError, SendTimeoutError, TooLarge, TrySendError};
use crate::payload::AlignedBuf;
use crate::port::{HeldNotice, Lost, Port, RingPublisher, Slice, Waited};
use crate::Payload;

/// Publishes `T` on one topic. Move it to any thread; it has no background thread. Dropping it
/// detaches it.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::Bus;
/// let bus = Bus::embedded()?;
/// let mut publisher = bus.publisher::<u64>("doc/publisher").create()?;
/// let mut subscriber = bus.subscriber::<u64>("doc/publisher").open()?;
///
/// let mut sample = publisher.loan()?; // a slot in shared memory
/// *sample = 42;                       // written in place
/// sample.send();
///
/// publisher.publish(&43)?;            // or copy a value in
/// assert_eq!(*subscriber.recv()?, 42);
/// assert_eq!(*subscriber.recv()?, 43);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Publisher<T: Payload + ?Sized> {
    pub(crate) inner: Sender,
    _t: PhantomData<fn(&T)>,
}

/// What every publisher is made of: the port, how it waits for space, and (lossy topics) the
/// private buffer a loan is written into before it is copied in atomically.
#[derive(Debug)]
pub(crate) struct Sender {
    port: Port<RingPublisher>,
    wait: WaitStrategy,
    /// Lossy topics are written from here with atomic word stores.
    scratch: Option<AlignedBuf>,
    /// The length every message must have (typed topics), or `None` (byte topics).
    exact: Option<usize>,
    /// Tells the daemon when the lossless topic is full.
    held: HeldNotice,
    /// The async waiter, made at the first async wait.
    #[cfg(any(feature = "tokio", feature = "async-io"))]
    pub(crate) waiter: Option<crate::asynch::AsyncWaiter>,
}

/// A claimed sequence of a mapped ring.
#[cfg(any(feature = "tokio", feature = "async-io"))]
pub(crate) type RingClaim = bus_core::ring::Claim<RawStorage<Mapping>, WakeBell>;

impl Sender {
    pub(crate) fn new(port: Port<RingPublisher>, wait: WaitStrategy) -> Sender {
        let spec = port.spec();
        let scratch = (spec.mode == Mode::Lossy).then(|| AlignedBuf::new(spec.slot_size as usize));
        let exact = (!spec.type_info.is_bytes()).then_some(spec.type_info.size as usize);
        let held = port.held_notice();
        Sender {
            port,
            wait,
            scratch,
            exact,
            held,
            #[cfg(any(feature = "tokio", feature = "async-io"))]
            waiter: None,
        }
    }

    pub(crate) fn topic(&self) -> &str {
        self.port.topic()
    }

    pub(crate) fn port(&self) -> &Port<RingPublisher> {
        &self.port
    }

    pub(crate) fn spec(&self) -> &Geometry {
        self.port.spec()
    }

    pub(crate) fn index(&self) -> u32 {
        u32::try_from(self.port.ring.index()).unwrap_or(u32::MAX)
    }

    pub(crate) fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.wait = strategy;
    }

    /// Wait as the wait strategy says, for at most `timeout`, until a lossless topic has room.
    /// The common case, room at once, costs one look at the cached gate and nothing else.
    /// While it waits, it tells the daemon it is held back (after each [`HELD_NOTICE_EVERY`] of
    /// waiting, at most that often).
    #[inline]
    fn wait_space<E: FromSend>(&mut self, timeout: Option<Duration>) -> Result<(), E> {
        self.port
            .ensure_attached()
            .map_err(|Lost| E::from_send(CoreSend::Evicted))?;
        if self.port.ring.has_room() {
            return Ok(());
        }
        self.wait_space_slowly(timeout)
    }

    #[cold]
    fn wait_space_slowly<E: FromSend>(&mut self, timeout: Option<Duration>) -> Result<(), E> {
        let held = &mut self.held;
        self.port
            .sliced(timeout, self.wait, |ring, left, strategy| {
                // At most HELD_NOTICE_EVERY at a time: a held-back publisher keeps telling the
                // daemon, which watches the topic for a stuck subscriber only meanwhile.
                let part = left.map_or(HELD_NOTICE_EVERY, |l| l.min(HELD_NOTICE_EVERY));
                match ring.wait_space(strategy, Some(part)) {
                    Ok(()) => Ok(()),
                    Err(CoreSend::Timeout) => {
                        held.full(ring.index(), ring.generation());
                        Err(Slice::TimedOut)
                    }
                    Err(e) => Err(Slice::Failed(e)),
                }
            })
            .map_err(|w| {
                E::from_send(match w {
                    Waited::TimedOut => CoreSend::Timeout,
                    Waited::Lost => CoreSend::Evicted,
                    Waited::Failed(e) => e,
                })
            })
    }

    /// A loan, waiting for space for at most `timeout` (`Some(ZERO)`-like behaviour comes from
    /// [`Sender::try_loan`]).
    pub(crate) fn loan<E: FromSend>(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<BytesLoan<'_>, E> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        self.wait_space::<E>(timeout)?;
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let loan = self.port.ring.loan(self.wait, left).map_err(E::from_send)?;
        Ok(BytesLoan::new(loan, self.scratch.as_mut(), self.exact))
    }

    /// Claim the next sequence without lending the port out (see bus-core's `try_claim`). A
    /// full lossless ring is told to the daemon, as by [`Sender::try_send`].
    #[cfg(any(feature = "tokio", feature = "async-io"))]
    pub(crate) fn try_claim(&mut self) -> Result<RingClaim, TrySendError> {
        self.port
            .ensure_attached()
            .map_err(|Lost| TrySendError::Evicted)?;
        self.port.ring.try_claim().map_err(|e| {
            let ring = &self.port.ring;
            self.held.try_failed(e, ring.index(), ring.generation())
        })
    }

    /// The loan of a sequence [`Sender::try_claim`] claimed.
    #[cfg(any(feature = "tokio", feature = "async-io"))]
    pub(crate) fn loan_claim(&mut self, claim: RingClaim) -> BytesLoan<'_> {
        let loan = self.port.ring.loan_claim(claim);
        BytesLoan::new(loan, self.scratch.as_mut(), self.exact)
    }

    /// Whether a claim would go ahead at once (room, or nothing to wait for).
    #[cfg(any(feature = "tokio", feature = "async-io"))]
    pub(crate) fn has_room(&mut self) -> bool {
        self.port.ring.has_room()
    }

    pub(crate) fn try_loan(&mut self) -> Result<BytesLoan<'_>, TrySendError> {
        self.port
            .ensure_attached()
            .map_err(|Lost| TrySendError::Evicted)?;
        let (index, generation) = (self.port.ring.index(), self.port.ring.generation());
        let loan = self
            .port
            .ring
            .try_loan()
            .map_err(|e| self.held.try_failed(e, index, generation))?;
        Ok(BytesLoan::new(loan, self.scratch.as_mut(), self.exact))
    }

    /// Copy `bytes` in and send, waiting for space for at most `timeout`.
    pub(crate) fn send<E: FromSend + From<WrongSize>>(
        &mut self,
        bytes: &[u8],
        timeout: Option<Duration>,
    ) -> Result<u64, E> {
        self.check_size(bytes)?;
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        self.wait_space::<E>(timeout)?;
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        self.port
            .ring
            .send(bytes, self.wait, left)
            .map_err(E::from_send)
    }

    pub(crate) fn try_send(&mut self, bytes: &[u8]) -> Result<u64, TrySendError> {
        self.check_size::<TrySendError>(bytes)?;
        self.port
            .ensure_attached()
            .map_err(|Lost| TrySendError::Evicted)?;
        self.port.ring.try_send(bytes).map_err(|e| {
            let ring = &self.port.ring;
            self.held.try_failed(e, ring.index(), ring.generation())
        })
    }

    /// A typed topic takes messages of exactly its type's size.
    pub(crate) fn check_size<E: From<WrongSize>>(&self, bytes: &[u8]) -> Result<(), E> {
        match self.exact {
            Some(expected) if bytes.len() != expected => Err(E::from(WrongSize {
                len: bytes.len(),
                expected,
            })),
            _ => Ok(()),
        }
    }
}

/// The accessors every publisher (typed or raw) has, over its `inner: Sender`.
macro_rules! sender_accessors {
    () => {
        /// The topic name.
        pub fn topic(&self) -> &str {
            self.inner.topic()
        }

        /// The topic's geometry and payload type, as the topic holds them.
        pub fn spec(&self) -> &bus_core::layout::Geometry {
            self.inner.spec()
        }

        /// Change how this publisher waits for space (lossless topics).
        pub fn set_wait_strategy(&mut self, strategy: bus_core::wait::WaitStrategy) {
            self.inner.set_wait_strategy(strategy);
        }
    };
}
pub(crate) use sender_accessors;

/// A message whose length is not the topic's type size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WrongSize {
    pub(crate) len: usize,
    pub(crate) expected: usize,
}

macro_rules! from_wrong_size {
    ($($t:ident),*) => {$(
        impl From<WrongSize> for $t {
            fn from(w: WrongSize) -> $t {
                $t::WrongSize { len: w.len, expected: w.expected }
            }
        }
    )*};
}
from_wrong_size!(SendError, TrySendError, SendTimeoutError);

impl<T: Payload + ?Sized> Publisher<T> {
    pub(crate) fn new(inner: Sender) -> Publisher<T> {
        Publisher {
            inner,
            _t: PhantomData,
        }
    }

    sender_accessors!();
    crate::presence::publisher_presence!();

    /// Loan the next slot to write in place, waiting for space (lossless topics) as the wait
    /// strategy says. Lossy topics never wait.
    pub fn loan(&mut self) -> Result<SampleMut<'_, T>, SendError> {
        Ok(SampleMut::new(self.inner.loan::<SendError>(None)?))
    }

    /// Loan the next slot without waiting: `Full` when a lossless topic has no free slot.
    pub fn try_loan(&mut self) -> Result<SampleMut<'_, T>, TrySendError> {
        Ok(SampleMut::new(self.inner.try_loan()?))
    }

    /// Loan the next slot, waiting at most `timeout` for space.
    pub fn loan_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<SampleMut<'_, T>, SendTimeoutError> {
        Ok(SampleMut::new(
            self.inner.loan::<SendTimeoutError>(Some(timeout))?,
        ))
    }

    /// Copy `value` into the next slot and send it, waiting for space as `loan` does; returns
    /// its sequence number.
    pub fn publish(&mut self, value: &T) -> Result<u64, SendError> {
        self.inner.send(value.as_bytes(), None)
    }

    /// Copy `value` into the next slot and send it without waiting: `Full` when a lossless
    /// topic has no free slot.
    pub fn try_send(&mut self, value: &T) -> Result<u64, TrySendError> {
        self.inner.try_send(value.as_bytes())
    }

    /// Copy `value` in and send it, waiting at most `timeout` for space.
    pub fn send_timeout(&mut self, value: &T, timeout: Duration) -> Result<u64, SendTimeoutError> {
        self.inner.send(value.as_bytes(), Some(timeout))
    }
}

/// A loaned slot as bytes: the ring's loan, and (lossy topics) the private buffer it is
/// written into before `send` copies it in atomically.
pub(crate) struct BytesLoan<'a> {
    loan: Loan<'a, RawStorage<Mapping>, WakeBell>,
    scratch: Option<&'a mut AlignedBuf>,
    exact: Option<usize>,
}

impl<'a> BytesLoan<'a> {
    fn new(
        mut loan: Loan<'a, RawStorage<Mapping>, WakeBell>,
        scratch: Option<&'a mut AlignedBuf>,
        exact: Option<usize>,
    ) -> BytesLoan<'a> {
        let len = exact.unwrap_or(loan.slot_size()).min(loan.slot_size());
        // `len` is at most the slot size, which `set_len` accepts.
        let _ = loan.set_len(len);
        BytesLoan {
            loan,
            scratch,
            exact,
        }
    }

    pub(crate) fn send(mut self) -> u64 {
        if let Some(buf) = self.scratch.take() {
            let len = self.loan.len();
            // The loan's length was checked against the slot size, which is the buffer's size.
            let written = self.loan.write(&buf.bytes()[..len]);
            debug_assert!(written.is_ok());
        }
        self.loan.commit()
    }

    pub(crate) fn sequence(&self) -> u64 {
        self.loan.sequence()
    }

    pub(crate) fn set_len(&mut self, len: usize) -> Result<(), TooLarge> {
        let max = self.exact.unwrap_or(self.loan.slot_size());
        if len > max || self.exact.is_some_and(|e| e != len) {
            return Err(TooLarge { len, max });
        }
        self.loan.set_len(len).map_err(|_| TooLarge { len, max })
    }

    /// The bytes to send (the loan's length).
    pub(crate) fn bytes(&self) -> &[u8] {
        let len = self.loan.len();
        match (&self.scratch, self.loan.payload()) {
            (Some(buf), _) => &buf.bytes()[..len],
            (None, Some(slot)) => &slot[..len],
            // A lossless loan always has a payload; a lossy one always has a buffer.
            (None, None) => &[],
        }
    }

    /// The bytes to send, to write.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.loan.len();
        match &mut self.scratch {
            Some(buf) => &mut buf.bytes_mut()[..len],
            None => match self.loan.payload_mut() {
                Some(slot) => &mut slot[..len],
                None => &mut [],
            },
        }
    }
}

/// A loaned slot: dereferences to the `T` in shared memory (lossless topics) or to a private
/// buffer copied in atomically at send (lossy topics). [`SampleMut::send`] publishes it;
/// dropping it unsent publishes nothing (subscribers skip it).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, SampleMut};
/// let bus = Bus::embedded()?;
/// let mut publisher = bus.publisher::<[u8]>("doc/sample-mut").slot_size(64).create()?;
/// let mut subscriber = bus.subscriber::<[u8]>("doc/sample-mut").open()?;
/// let mut slot: SampleMut<'_, [u8]> = publisher.loan()?;  // the whole slot, in shared memory
/// slot[..5].copy_from_slice(b"hello");
/// slot.set_len(5)?;
/// assert_eq!(slot.send(), 0);
/// assert_eq!(&*subscriber.recv()?, b"hello");
/// drop(publisher.loan()?);                                // dropped unsent: nothing published
/// assert!(subscriber.try_recv().is_err());
/// # Ok(()) }
/// ```
pub struct SampleMut<'a, T: Payload + ?Sized> {
    loan: BytesLoan<'a>,
    _t: PhantomData<fn(&T)>,
}

impl<'a, T: Payload + ?Sized> SampleMut<'a, T> {
    pub(crate) fn new(loan: BytesLoan<'a>) -> SampleMut<'a, T> {
        SampleMut {
            loan,
            _t: PhantomData,
        }
    }

    /// Publish the message; returns its sequence number (from 0).
    pub fn send(self) -> u64 {
        self.loan.send()
    }

    /// The sequence number this message will carry.
    pub fn sequence(&self) -> u64 {
        self.loan.sequence()
    }
}

impl SampleMut<'_, [u8]> {
    /// Set how many bytes of the slot to send (byte topics; the default is the whole slot).
    pub fn set_len(&mut self, len: usize) -> Result<(), TooLarge> {
        self.loan.set_len(len)
    }
}

impl<T: Payload + ?Sized> Deref for SampleMut<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        crate::payload::view(self.loan.bytes())
    }
}

impl<T: Payload + ?Sized> DerefMut for SampleMut<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        crate::payload::view_mut(self.loan.bytes_mut())
    }
}
