//! [`Publisher`]: loan a slot, write in place, send.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus_core::doorbell::Futex;
use bus_core::layout::Mode as CoreMode;
use bus_core::ring::{Loan, PublisherPort};
use bus_core::storage::RawStorage;
use bus_core::wait::WaitStrategy;
use bus_daemon::protocol::{Request, Role, TopicSpec};
use bus_daemon::segment::{Mapping, SegmentFds};

use crate::bus::{attach_port, Attached};
use crate::conn::Conn;
use crate::follow::{Follower, Next, PortId, CHECK_EVERY};
use crate::payload::AlignedBuf;
use crate::{Error, Payload, SendError, StartAt, TopicOptions};

type Port = PublisherPort<RawStorage<Mapping>, Futex>;

/// Publishes `T` on one topic. Move it to any thread; it has no background thread. Dropping it
/// detaches it.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::Bus;
/// let bus = Bus::embedded()?;
/// let mut publisher = bus.publisher::<u64>("doc/publisher").open()?;
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
pub struct Publisher<T: Payload + ?Sized> {
    port: Port,
    conn: Arc<Conn>,
    topic: String,
    spec: TopicSpec,
    wait: WaitStrategy,
    /// Lossy topics are written from here with atomic word stores.
    scratch: Option<AlignedBuf>,
    /// The options this publisher was opened with (to attach afresh after a daemon restart).
    options: TopicOptions,
    /// Follows a restarted daemon (see `follow`).
    follower: Follower,
    /// The segment's descriptors, handed back to a restarted daemon.
    fds: SegmentFds,
    _t: PhantomData<fn(&T)>,
}

impl<T: Payload + ?Sized> std::fmt::Debug for Publisher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topic", &self.topic)
            .field("index", &self.port.index())
            .finish()
    }
}

impl<T: Payload + ?Sized> Publisher<T> {
    pub(crate) fn new(
        conn: Arc<Conn>,
        topic: String,
        options: TopicOptions,
        a: Attached,
        wait: WaitStrategy,
    ) -> Result<Self, Error> {
        let port = PublisherPort::new(a.ring, a.index, a.generation).map_err(|e| {
            Error::Invalid(format!("the daemon handed over an entry not held: {e}"))
        })?;
        let slot_size = a.spec.slot_size as usize;
        let scratch =
            (port.ring().geometry().mode == CoreMode::Lossy).then(|| AlignedBuf::new(slot_size));
        let follower = Follower::new(&conn);
        Ok(Publisher {
            port,
            conn,
            topic,
            spec: a.spec,
            wait,
            scratch,
            options,
            follower,
            fds: a.fds,
            _t: PhantomData,
        })
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic's options as the daemon holds them.
    pub fn spec(&self) -> &TopicSpec {
        &self.spec
    }

    /// Change how this publisher waits for space (lossless topics).
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.wait = strategy;
    }

    /// Before each operation: follow a restarted daemon (one load of a line nobody writes
    /// while the daemon runs, unless a restart happened).
    #[inline]
    fn ensure_attached(&mut self) -> Result<(), SendError> {
        if self.follower.stale() {
            let (index, generation) = (self.port.index(), self.port.generation());
            let port = PortId {
                topic: &self.topic,
                role: Role::Publisher,
                index,
                generation,
                held: self.port.ring().publisher_held(index, generation),
                fds: &self.fds,
            };
            if self.follower.follow(&self.conn, port) == Next::AttachAfresh {
                self.attach_afresh()?;
            }
        }
        Ok(())
    }

    /// Wait for space as the wait strategy says, for at most `timeout`, in slices of
    /// [`CHECK_EVERY`] with a look at the daemon's epoch between them (a port blocked on a full
    /// topic follows a restarted daemon too). Returns the time left.
    fn wait_space(&mut self, timeout: Option<Duration>) -> Result<Option<Duration>, SendError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            self.ensure_attached()?;
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let slice = left.map_or(CHECK_EVERY, |l| l.min(CHECK_EVERY));
            match self.port.wait_space(self.wait, Some(slice)) {
                Ok(()) => return Ok(left),
                Err(SendError::Timeout) if left.is_none_or(|l| l > slice) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    #[cold]
    fn attach_afresh(&mut self) -> Result<(), SendError> {
        let a = attach_port::<T>(&self.conn, &self.topic, &self.options, Role::Publisher, StartAt::Latest)
            .map_err(|e| {
                tracing::warn!(topic = self.topic.as_str(), error = %e, "cannot attach anew after a daemon restart");
                SendError::Evicted
            })?;
        self.port =
            PublisherPort::new(a.ring, a.index, a.generation).map_err(|_| SendError::Evicted)?;
        self.fds = a.fds;
        self.follower = Follower::new(&self.conn);
        tracing::info!(
            topic = self.topic.as_str(),
            "attached anew after a daemon restart"
        );
        Ok(())
    }

    /// Loan the next slot to write in place, waiting for space (lossless topics) as the wait
    /// strategy says. Lossy topics never wait.
    pub fn loan(&mut self) -> Result<SampleMut<'_, T>, SendError> {
        let left = self.wait_space(None)?;
        let loan = self.port.loan(self.wait, left);
        sample(loan, self.scratch.as_mut())
    }

    /// Loan the next slot without waiting: `Full` when a lossless topic has no free slot.
    pub fn try_loan(&mut self) -> Result<SampleMut<'_, T>, SendError> {
        self.ensure_attached()?;
        let loan = self.port.try_loan();
        sample(loan, self.scratch.as_mut())
    }

    /// Loan the next slot, waiting at most `timeout` for space.
    pub fn loan_timeout(&mut self, timeout: Duration) -> Result<SampleMut<'_, T>, SendError> {
        let left = self.wait_space(Some(timeout))?;
        let loan = self.port.loan(self.wait, left);
        sample(loan, self.scratch.as_mut())
    }

    /// Copy `value` into the next slot and send it, waiting for space as `loan` does.
    pub fn publish(&mut self, value: &T) -> Result<(), SendError> {
        let left = self.wait_space(None)?;
        self.port.send(value.as_bytes(), self.wait, left).map(drop)
    }

    /// Copy `value` into the next slot and send it without waiting: `Full` when a lossless
    /// topic has no free slot.
    pub fn try_send(&mut self, value: &T) -> Result<(), SendError> {
        self.ensure_attached()?;
        self.port.try_send(value.as_bytes()).map(drop)
    }

    /// Copy `value` in and send it, waiting at most `timeout` for space.
    pub fn send_timeout(&mut self, value: &T, timeout: Duration) -> Result<(), SendError> {
        let left = self.wait_space(Some(timeout))?;
        self.port.send(value.as_bytes(), self.wait, left).map(drop)
    }
}

impl<T: Payload + ?Sized> Drop for Publisher<T> {
    fn drop(&mut self) {
        let ring = self.port.ring();
        let _ = ring.release_publisher(self.port.index(), self.port.generation());
        let _ = self.conn.request(&Request::Detach {
            topic: self.topic.clone(),
            role: Role::Publisher,
            index: self.port.index() as u32,
            generation: self.port.generation(),
        });
    }
}

fn sample<'a, T: Payload + ?Sized>(
    loan: Result<Loan<'a, RawStorage<Mapping>, Futex>, SendError>,
    scratch: Option<&'a mut AlignedBuf>,
) -> Result<SampleMut<'a, T>, SendError> {
    let mut loan = loan?;
    let slot_size = loan.slot_size();
    loan.set_len(T::loan_len(slot_size))?;
    Ok(SampleMut {
        loan,
        scratch,
        _t: PhantomData,
    })
}

/// A loaned slot: dereferences to the `T` in shared memory (lossless topics) or to a private
/// buffer copied in atomically at send (lossy topics). [`SampleMut::send`] publishes it;
/// dropping it unsent publishes nothing (subscribers skip it).
pub struct SampleMut<'a, T: Payload + ?Sized> {
    loan: Loan<'a, RawStorage<Mapping>, Futex>,
    scratch: Option<&'a mut AlignedBuf>,
    _t: PhantomData<fn(&T)>,
}

impl<T: Payload + ?Sized> SampleMut<'_, T> {
    /// Publish the message; returns its sequence number (from 0).
    pub fn send(mut self) -> u64 {
        if let Some(buf) = self.scratch.take() {
            let len = self.loan.len();
            // The loan's length was checked against the slot size, which is the buffer's size.
            if self.loan.write(&buf.bytes()[..len]).is_err() {
                unreachable!("loan length exceeds the slot size");
            }
        }
        self.loan.commit()
    }

    /// The sequence number this message will carry.
    pub fn sequence(&self) -> u64 {
        self.loan.sequence()
    }
}

impl SampleMut<'_, [u8]> {
    /// Set how many bytes of the slot to send (byte topics; the default is the whole slot).
    pub fn set_len(&mut self, len: usize) -> Result<(), SendError> {
        self.loan.set_len(len)
    }
}

impl<T: Payload + ?Sized> Deref for SampleMut<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        let len = self.loan.len();
        let bytes: &[u8] = match (&self.scratch, self.loan.payload()) {
            (Some(buf), _) => buf.bytes(),
            (None, Some(slot)) => slot,
            (None, None) => unreachable!("a lossless loan always has a payload"),
        };
        match T::from_message(&bytes[..len]) {
            Some(v) => v,
            None => unreachable!("slot sized and aligned for T by the topic's validated layout"),
        }
    }
}

impl<T: Payload + ?Sized> DerefMut for SampleMut<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        let len = self.loan.len();
        let bytes: &mut [u8] = match &mut self.scratch {
            Some(buf) => buf.bytes_mut(),
            None => match self.loan.payload_mut() {
                Some(slot) => slot,
                None => unreachable!("a lossless loan always has a payload"),
            },
        };
        match T::from_slot_mut(&mut bytes[..len]) {
            Some(v) => v,
            None => unreachable!("slot sized and aligned for T by the topic's validated layout"),
        }
    }
}
