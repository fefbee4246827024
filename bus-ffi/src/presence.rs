//! Presence: count a port's peers (subscribers of a publisher, publishers of a subscriber),
//! wait for enough of them, and watch their number with a wait set. Counts are read from the
//! topic's shared memory, not asked of the daemon.

use std::time::Duration;

use bus_client::PresenceError;

use crate::handle::{write_out, Handle};
use crate::publisher::{self, ShmbusPublisher};
use crate::status::{guard, Error, ShmbusStatus, SHMBUS_ERR_CLOSED, SHMBUS_ERR_TIMEOUT};
use crate::subscriber::{self, ShmbusSubscriber};
use crate::waitset::{self, ShmbusWaitset};

/// A negative timeout waits forever.
fn timeout(timeout_ms: i64) -> Option<Duration> {
    u64::try_from(timeout_ms).ok().map(Duration::from_millis)
}

/// The outcome of a wait: the count to write, and the status.
fn waited(result: Result<usize, PresenceError>) -> (usize, Result<(), Error>) {
    match result {
        Ok(n) => (n, Ok(())),
        Err(PresenceError::Timeout { count }) => (
            count,
            Err(Error::new(
                SHMBUS_ERR_TIMEOUT,
                "timed out waiting for peers",
            )),
        ),
        Err(e) => (0, Err(Error::new(SHMBUS_ERR_CLOSED, e.to_string()))),
    }
}

fn loaned() -> Error {
    Error::state("a slot is loaned: send it (shmbus_publisher_send) or discard it first")
}

fn holding() -> Error {
    Error::state("a sample is held: release it (shmbus_subscriber_release) first")
}

/// `*count_out` = the subscribers attached to the publisher's topic now (every process's),
/// read from shared memory: cheap enough to call per message. `SHMBUS_ERR_STATE` while a
/// slot is loaned.
///
/// # Safety
/// `publisher` is anything (checked against live handles); `count_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmbus_publisher_subscriber_count(
    publisher: *mut ShmbusPublisher,
    count_out: *mut usize,
) -> ShmbusStatus {
    guard(|| {
        if count_out.is_null() {
            return Err(Error::null("count_out"));
        }
        // SAFETY: forwarded contract.
        let held =
            unsafe { Handle::exclusive_registered(publisher::handle(publisher), "publisher") }?;
        let n = held.port().ok_or_else(loaned)?.subscriber_count();
        // SAFETY: non-NULL (checked first) and writable by the contract.
        unsafe { write_out(count_out, n, "count_out") }
    })
}

/// Wait until at least `n` subscribers are attached, or `timeout_ms` passes (negative:
/// forever): `SHMBUS_OK`, or `SHMBUS_ERR_TIMEOUT`, or `SHMBUS_ERR_CLOSED` if the topic
/// closed. `*count_out` is the count seen last (also on a timeout). Sleeps on the topic's
/// presence bell, which the daemon rings at every attach and departure.
///
/// # Safety
/// As for `shmbus_publisher_subscriber_count`.
#[no_mangle]
pub unsafe extern "C" fn shmbus_publisher_wait_for_subscribers(
    publisher: *mut ShmbusPublisher,
    n: usize,
    timeout_ms: i64,
    count_out: *mut usize,
) -> ShmbusStatus {
    guard(|| {
        if count_out.is_null() {
            return Err(Error::null("count_out"));
        }
        // SAFETY: forwarded contract.
        let held =
            unsafe { Handle::exclusive_registered(publisher::handle(publisher), "publisher") }?;
        let port = held.port().ok_or_else(loaned)?;
        let (count, status) = waited(port.wait_for_subscribers(n, timeout(timeout_ms)));
        // SAFETY: non-NULL (checked first) and writable by the contract.
        unsafe { write_out(count_out, count, "count_out") }?;
        status
    })
}

/// `*count_out` = the publishers attached to the subscriber's topic now, read from shared
/// memory. `SHMBUS_ERR_STATE` while a sample is held.
///
/// # Safety
/// `subscriber` is anything (checked against live handles); `count_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmbus_subscriber_publisher_count(
    subscriber: *mut ShmbusSubscriber,
    count_out: *mut usize,
) -> ShmbusStatus {
    guard(|| {
        if count_out.is_null() {
            return Err(Error::null("count_out"));
        }
        // SAFETY: forwarded contract.
        let held =
            unsafe { Handle::exclusive_registered(subscriber::handle(subscriber), "subscriber") }?;
        let n = held.port().ok_or_else(holding)?.publisher_count();
        // SAFETY: non-NULL (checked first) and writable by the contract.
        unsafe { write_out(count_out, n, "count_out") }
    })
}

/// Wait until at least `n` publishers are attached; see
/// `shmbus_publisher_wait_for_subscribers`.
///
/// # Safety
/// As for `shmbus_subscriber_publisher_count`.
#[no_mangle]
pub unsafe extern "C" fn shmbus_subscriber_wait_for_publishers(
    subscriber: *mut ShmbusSubscriber,
    n: usize,
    timeout_ms: i64,
    count_out: *mut usize,
) -> ShmbusStatus {
    guard(|| {
        if count_out.is_null() {
            return Err(Error::null("count_out"));
        }
        // SAFETY: forwarded contract.
        let held =
            unsafe { Handle::exclusive_registered(subscriber::handle(subscriber), "subscriber") }?;
        let port = held.port().ok_or_else(holding)?;
        let (count, status) = waited(port.wait_for_publishers(n, timeout(timeout_ms)));
        // SAFETY: non-NULL (checked first) and writable by the contract.
        unsafe { write_out(count_out, count, "count_out") }?;
        status
    })
}

/// Watch the number of subscribers of `publisher`'s topic: ready whenever it differs from the
/// number when last reported (or when attached); read it with
/// `shmbus_publisher_subscriber_count`. `*id_out` is the attachment's id. Refused with
/// `SHMBUS_ERR_STATE` while a slot is loaned; detach before closing the publisher.
///
/// # Safety
/// `waitset` and `publisher` are anything (checked against live handles); `id_out` is NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn shmbus_waitset_attach_publisher_presence(
    waitset: *mut ShmbusWaitset,
    publisher: *mut ShmbusPublisher,
    id_out: *mut u64,
) -> ShmbusStatus {
    guard(|| {
        if id_out.is_null() {
            return Err(Error::null("id_out"));
        }
        // SAFETY: forwarded contract.
        let held =
            unsafe { Handle::exclusive_registered(publisher::handle(publisher), "publisher") }?;
        let port = held.port().ok_or_else(loaned)?;
        // SAFETY: forwarded contract.
        let id = unsafe { waitset::attach_presence(waitset, port) }?;
        // SAFETY: non-NULL (checked first) and writable by the contract.
        unsafe { write_out(id_out, id, "id_out") }
    })
}

/// Watch the number of publishers of `subscriber`'s topic; see
/// `shmbus_waitset_attach_publisher_presence`.
///
/// # Safety
/// As for `shmbus_waitset_attach_publisher_presence`.
#[no_mangle]
pub unsafe extern "C" fn shmbus_waitset_attach_subscriber_presence(
    waitset: *mut ShmbusWaitset,
    subscriber: *mut ShmbusSubscriber,
    id_out: *mut u64,
) -> ShmbusStatus {
    guard(|| {
        if id_out.is_null() {
            return Err(Error::null("id_out"));
        }
        // SAFETY: forwarded contract.
        let held =
            unsafe { Handle::exclusive_registered(subscriber::handle(subscriber), "subscriber") }?;
        let port = held.port().ok_or_else(holding)?;
        // SAFETY: forwarded contract.
        let id = unsafe { waitset::attach_presence(waitset, port) }?;
        // SAFETY: non-NULL (checked first) and writable by the contract.
        unsafe { write_out(id_out, id, "id_out") }
    })
}
