//! Subscribers: open, receive (try, blocking, with a timeout) a sample held until released,
//! release, close.

use std::ffi::c_char;
use std::time::Duration;

use bus_client::held::{HeldError, HeldSubscriber};
use bus_client::RawSample;

use crate::bus::{self, utf8, ShmbusBus};
use crate::handle::{write_out, Exclusive, Handle, Kind};
use crate::options::{self, ShmbusTopicOptions, ShmbusType, Verb};
use crate::status::{guard, Error, ShmbusStatus, SHMBUS_ERR_LAGGED};

/// A subscriber on one topic. Opaque.
///
/// Not thread-safe, but not tied to a thread: use it from one thread at a time (it may move
/// between threads). A second thread calling in while a call runs (a blocking receive
/// included) gets `SHMBUS_ERR_STATE`.
pub struct ShmbusSubscriber {
    _opaque: [u8; 0],
}

/// A received message, as `shmbus_subscriber_recv` and friends fill it in.
#[repr(C)]
pub struct ShmbusSample {
    /// The message bytes: in the topic's slot (lossless topics) or in the subscriber's own
    /// buffer (lossy topics, a validated copy). Read-only. Valid until
    /// `shmbus_subscriber_release` or `shmbus_subscriber_close`.
    pub data: *const u8,
    /// The message length in bytes.
    pub len: usize,
    /// The message's sequence number on its topic (from 0).
    pub sequence: u64,
    /// With `SHMBUS_ERR_LAGGED`: how many messages were lost (and `data` is NULL); else 0.
    pub lagged: u64,
}

impl Kind for HeldSubscriber {
    const MAGIC: u64 = 0x5348_4d42_5553_5342; // "SHMBUSSB"
    const NAME: &'static str = "shmbus_subscriber";
}

pub(crate) fn handle(s: *mut ShmbusSubscriber) -> *mut Handle<HeldSubscriber> {
    s.cast()
}

/// The subscriber behind `s` for one data-path call (NULL and magic checks only).
///
/// # Safety
/// `s` is NULL or points to a handle's memory (see the header's notes on handles).
unsafe fn get<'a>(s: *mut ShmbusSubscriber) -> Result<Exclusive<'a, HeldSubscriber>, Error> {
    // SAFETY: forwarded contract.
    unsafe { Handle::exclusive(handle(s), "subscriber") }
}

const HELD: &str =
    "a sample is held: release it (shmbus_subscriber_release) before receiving the next";

/// Open a subscriber on `topic` with `verb`. `type`: with `SHMBUS_OPEN`, NULL accepts any
/// type (the raw bytes of each message), non-NULL must match the topic's; with the create
/// verbs, the type to create the topic with (NULL: a byte topic). `options`: the topic's
/// shape for the create verbs, NULL for the defaults. A new subscriber starts with the next
/// message published. On success `*out` is a new subscriber; close it with
/// `shmbus_subscriber_close`. `bus`, `topic`, `out`: non-NULL.
///
/// # Safety
/// As for `shmbus_publisher_open`.
#[no_mangle]
pub unsafe extern "C" fn shmbus_subscriber_open(
    bus: *mut ShmbusBus,
    topic: *const c_char,
    verb: u32,
    r#type: *const ShmbusType,
    options: *const ShmbusTopicOptions,
    out: *mut *mut ShmbusSubscriber,
) -> ShmbusStatus {
    guard(|| {
        if out.is_null() {
            return Err(Error::null("out"));
        }
        // SAFETY: forwarded contracts, argument by argument.
        let bus = unsafe { bus::get(bus) }?;
        // SAFETY: as above.
        let topic = unsafe { utf8(topic, "topic") }?;
        // SAFETY: as above.
        let type_info = unsafe { options::type_info(r#type) }?;
        let builder = bus.raw_subscriber(topic);
        let port = match (options::verb(verb)?, type_info) {
            (Verb::Open, None) => builder.open()?,
            (Verb::Open, Some(t)) => builder.open_as(t)?,
            (verb, t) => {
                let t = t.unwrap_or_else(bus_client::TypeInfo::bytes);
                // SAFETY: as above.
                let spec = unsafe { options::geometry(options, t) }?;
                match verb {
                    Verb::Create => builder.create(spec)?,
                    _ => builder.open_or_create(spec)?,
                }
            }
        };
        let ptr = Handle::into_raw(HeldSubscriber::new(port));
        // SAFETY: `out` is non-NULL (checked first) and valid by the contract.
        unsafe { write_out(out, ptr.cast(), "out") }
    })
}

/// Set how `shmbus_subscriber_recv` waits: `SHMBUS_WAIT_ADAPTIVE` (default),
/// `SHMBUS_WAIT_BUSY_POLL`, `SHMBUS_WAIT_BLOCK`. Not while a sample is held.
///
/// # Safety
/// `subscriber` is anything (checked against live handles).
#[no_mangle]
pub unsafe extern "C" fn shmbus_subscriber_set_wait(
    subscriber: *mut ShmbusSubscriber,
    wait: u32,
) -> ShmbusStatus {
    guard(|| {
        let strategy = options::wait_strategy(wait)?;
        // SAFETY: forwarded contract.
        let mut held = unsafe { Handle::exclusive_registered(handle(subscriber), "subscriber") }?;
        held.port_mut()
            .ok_or_else(|| Error::state(HELD))?
            .set_wait_strategy(strategy);
        Ok(())
    })
}

/// How a receive waits.
enum Wait {
    Not,
    Forever,
    For(Duration),
}

/// # Safety
/// `subscriber` is NULL or a handle's memory; `out` is NULL or writable.
unsafe fn receive(
    subscriber: *mut ShmbusSubscriber,
    wait: Wait,
    out: *mut ShmbusSample,
) -> Result<(), Error> {
    if out.is_null() {
        return Err(Error::null("out"));
    }
    // SAFETY: forwarded contract.
    let mut held = unsafe { get(subscriber) }?;
    let result: Result<&RawSample<'_>, Failed> = match wait {
        Wait::Not => held.try_recv().map_err(failed),
        Wait::Forever => held.recv().map_err(failed),
        Wait::For(t) => held.recv_timeout(t).map_err(failed),
    };
    let sample = match result {
        Ok(s) => ShmbusSample {
            data: s.bytes().as_ptr(),
            len: s.len(),
            sequence: s.sequence(),
            lagged: 0,
        },
        Err(e) => {
            let Failed(error, lagged) = e;
            let empty = ShmbusSample {
                data: std::ptr::null(),
                len: 0,
                sequence: 0,
                lagged,
            };
            // SAFETY: non-NULL (checked first); writable by the contract.
            unsafe { write_out(out, empty, "out") }?;
            return Err(error);
        }
    };
    // SAFETY: non-NULL (checked first); writable by the contract.
    unsafe { write_out(out, sample, "out") }
}

/// An error and, for `Lagged`, its count.
struct Failed(Error, u64);

fn failed<E>(e: HeldError<E>) -> Failed
where
    E: Into<Error> + LaggedBy,
{
    match e {
        HeldError::Busy => Failed(Error::state(HELD), 0),
        HeldError::Port(e) => {
            let n = e.lagged_by();
            let e: Error = e.into();
            debug_assert!(n == 0 || e.code == SHMBUS_ERR_LAGGED);
            Failed(e, n)
        }
    }
}

/// How many messages a receive error says were lost.
trait LaggedBy {
    fn lagged_by(&self) -> u64;
}

macro_rules! lagged_by {
    ($($t:ident),*) => {$(
        impl LaggedBy for bus_client::$t {
            fn lagged_by(&self) -> u64 {
                match self {
                    bus_client::$t::Lagged(n) => *n,
                    _ => 0,
                }
            }
        }
    )*};
}
lagged_by!(RecvError, TryRecvError, RecvTimeoutError);

/// Receive the next message, waiting as the wait strategy says, and hold it: `*out` points
/// into it until `shmbus_subscriber_release`. One sample at a time: receiving while one is
/// held is `SHMBUS_ERR_STATE`. On a lossless topic a held sample keeps its slot from being
/// reused, so release it promptly (a subscriber that holds the ring full for the daemon's
/// stuck timeout, 5 s by default, is evicted). `SHMBUS_ERR_LAGGED` (lossy topics) fills
/// `out->lagged`; call again to read on. `SHMBUS_ERR_CLOSED` once the topic is closed and
/// drained.
///
/// # Safety
/// `subscriber` is NULL or a handle's memory; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmbus_subscriber_recv(
    subscriber: *mut ShmbusSubscriber,
    out: *mut ShmbusSample,
) -> ShmbusStatus {
    // SAFETY: forwarded contract.
    guard(|| unsafe { receive(subscriber, Wait::Forever, out) })
}

/// Like `shmbus_subscriber_recv`, without waiting: `SHMBUS_ERR_EMPTY` if no message is ready.
///
/// # Safety
/// As for `shmbus_subscriber_recv`.
#[no_mangle]
pub unsafe extern "C" fn shmbus_subscriber_try_recv(
    subscriber: *mut ShmbusSubscriber,
    out: *mut ShmbusSample,
) -> ShmbusStatus {
    // SAFETY: forwarded contract.
    guard(|| unsafe { receive(subscriber, Wait::Not, out) })
}

/// Like `shmbus_subscriber_recv`, waiting at most `timeout_us` microseconds:
/// `SHMBUS_ERR_TIMEOUT` if none came.
///
/// # Safety
/// As for `shmbus_subscriber_recv`.
#[no_mangle]
pub unsafe extern "C" fn shmbus_subscriber_recv_timeout(
    subscriber: *mut ShmbusSubscriber,
    timeout_us: u64,
    out: *mut ShmbusSample,
) -> ShmbusStatus {
    let wait = Wait::For(Duration::from_micros(timeout_us));
    // SAFETY: forwarded contract.
    guard(|| unsafe { receive(subscriber, wait, out) })
}

/// Release the held sample: its `data` is invalid from now on, and (lossless topics) its slot
/// goes back to the publishers. `SHMBUS_ERR_STATE` if none is held.
///
/// # Safety
/// `subscriber` is NULL or a handle's memory.
#[no_mangle]
pub unsafe extern "C" fn shmbus_subscriber_release(
    subscriber: *mut ShmbusSubscriber,
) -> ShmbusStatus {
    guard(|| {
        // SAFETY: forwarded contract.
        let mut held = unsafe { get(subscriber) }?;
        if held.release() {
            Ok(())
        } else {
            Err(Error::state("no sample is held"))
        }
    })
}

/// Close a subscriber, releasing a held sample. NULL does nothing; a second close is detected
/// (`SHMBUS_ERR_BAD_HANDLE`), never a double free.
///
/// # Safety
/// `subscriber` is anything (checked against live handles); no other thread is inside a call
/// on it.
#[no_mangle]
pub unsafe extern "C" fn shmbus_subscriber_close(
    subscriber: *mut ShmbusSubscriber,
) -> ShmbusStatus {
    // SAFETY: forwarded contract.
    guard(|| unsafe { Handle::close(handle(subscriber)) })
}
