//! Publishers: open, loan a slot / set its length / send (or discard), publish a buffer,
//! close.

use std::ffi::c_char;

use bus_client::held::{HeldError, HeldPublisher};
use bus_client::TypeInfo;

use crate::bus::{self, utf8, ShmbusBus};
use crate::handle::{write_out, Exclusive, Handle, Kind};
use crate::options::{self, ShmbusTopicOptions, ShmbusType, Verb};
use crate::status::{guard, Error, ShmbusStatus};

/// A publisher on one topic. Opaque.
///
/// Not thread-safe, but not tied to a thread: use it from one thread at a time (it may move
/// between threads). A second thread calling in while a call runs gets `SHMBUS_ERR_STATE`.
pub struct ShmbusPublisher {
    _opaque: [u8; 0],
}

impl Kind for HeldPublisher {
    const MAGIC: u64 = 0x5348_4d42_5553_5042; // "SHMBUSPB"
    const NAME: &'static str = "shmbus_publisher";
}

pub(crate) fn handle(p: *mut ShmbusPublisher) -> *mut Handle<HeldPublisher> {
    p.cast()
}

/// The publisher behind `p` for one data-path call (NULL and magic checks only).
///
/// # Safety
/// `p` is NULL or points to a handle's memory (see the header's notes on handles).
unsafe fn get<'a>(p: *mut ShmbusPublisher) -> Result<Exclusive<'a, HeldPublisher>, Error> {
    // SAFETY: forwarded contract.
    unsafe { Handle::exclusive(handle(p), "publisher") }
}

fn busy<E: Into<Error>>(e: HeldError<E>) -> Error {
    match e {
        HeldError::Busy => {
            Error::state("a slot is loaned: send it (shmbus_publisher_send) or discard it first")
        }
        HeldError::Port(e) => e.into(),
    }
}

fn port(held: &mut HeldPublisher) -> Result<&mut bus_client::RawPublisher, Error> {
    held.port_mut().ok_or_else(|| {
        Error::state("a slot is loaned: send it (shmbus_publisher_send) or discard it first")
    })
}

/// Open a publisher on `topic` with `verb` (`SHMBUS_OPEN`, `SHMBUS_CREATE`,
/// `SHMBUS_OPEN_OR_CREATE`). `type`: the payload type, NULL for a byte topic. `options`:
/// the topic's shape for the create verbs, NULL for the defaults. On success `*out` is a new
/// publisher; close it with `shmbus_publisher_close`.
/// `bus`, `topic`, `out`: non-NULL; `type`, `options`: may be NULL.
///
/// # Safety
/// `bus` is anything (checked against live handles); `topic` is NULL or NUL-terminated;
/// `type` is NULL or a valid `shmbus_type`; `options` is NULL or a `shmbus_topic_options`
/// filled by `shmbus_topic_options_init`; `out` is NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn shmbus_publisher_open(
    bus: *mut ShmbusBus,
    topic: *const c_char,
    verb: u32,
    r#type: *const ShmbusType,
    options: *const ShmbusTopicOptions,
    out: *mut *mut ShmbusPublisher,
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
        let type_info = unsafe { options::type_info(r#type) }?.unwrap_or_else(TypeInfo::bytes);
        let builder = bus.raw_publisher(topic);
        let port = match options::verb(verb)? {
            Verb::Open => builder.open(type_info)?,
            // SAFETY: as above.
            Verb::Create => builder.create(unsafe { options::geometry(options, type_info) }?)?,
            Verb::OpenOrCreate => {
                // SAFETY: as above.
                builder.open_or_create(unsafe { options::geometry(options, type_info) }?)?
            }
        };
        let ptr = Handle::into_raw(HeldPublisher::new(port));
        // SAFETY: `out` is non-NULL (checked first) and valid by the contract.
        unsafe { write_out(out, ptr.cast(), "out") }
    })
}

/// Set how this publisher waits for space on a lossless topic: `SHMBUS_WAIT_ADAPTIVE`
/// (default), `SHMBUS_WAIT_BUSY_POLL`, `SHMBUS_WAIT_BLOCK`.
///
/// # Safety
/// `publisher` is anything (checked against live handles).
#[no_mangle]
pub unsafe extern "C" fn shmbus_publisher_set_wait(
    publisher: *mut ShmbusPublisher,
    wait: u32,
) -> ShmbusStatus {
    guard(|| {
        let strategy = options::wait_strategy(wait)?;
        // SAFETY: forwarded contract.
        let mut held = unsafe { Handle::exclusive_registered(handle(publisher), "publisher") }?;
        port(&mut held)?.set_wait_strategy(strategy);
        Ok(())
    })
}

/// Write a fresh loan's pointer and capacity out.
///
/// # Safety
/// `data` and `capacity` are non-NULL and valid for writes (checked for NULL by the caller).
unsafe fn loan_out(
    bytes: &mut [u8],
    data: *mut *mut u8,
    capacity: *mut usize,
) -> Result<(), Error> {
    // SAFETY: forwarded contract.
    unsafe { write_out(data, bytes.as_mut_ptr(), "data") }?;
    // SAFETY: forwarded contract.
    unsafe { write_out(capacity, bytes.len(), "capacity") }
}

fn check_loan_args(data: *mut *mut u8, capacity: *mut usize) -> Result<(), Error> {
    if data.is_null() {
        return Err(Error::null("data"));
    }
    if capacity.is_null() {
        return Err(Error::null("capacity"));
    }
    Ok(())
}

/// Loan the next slot, waiting for space (lossless topics) as the wait strategy says.
/// `*data` is where to write the message, `*capacity` how many bytes may be written there
/// (the type's size on a typed topic, the slot size on a byte topic), and also the length
/// that will be sent unless `shmbus_publisher_set_len` changes it. `*data` stays valid until
/// `shmbus_publisher_send`, `shmbus_publisher_discard` or `shmbus_publisher_close`. One loan
/// at a time: a second is `SHMBUS_ERR_STATE`. On a lossy topic `*data` is a private buffer
/// copied into the ring by `send`.
///
/// # Safety
/// `publisher` is NULL or a handle's memory; `data`, `capacity` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmbus_publisher_loan(
    publisher: *mut ShmbusPublisher,
    data: *mut *mut u8,
    capacity: *mut usize,
) -> ShmbusStatus {
    guard(|| {
        check_loan_args(data, capacity)?;
        // SAFETY: forwarded contract.
        let mut held = unsafe { get(publisher) }?;
        let bytes = held.loan().map_err(busy)?;
        // SAFETY: both checked non-NULL above; writable by the contract.
        unsafe { loan_out(bytes, data, capacity) }
    })
}

/// Like `shmbus_publisher_loan`, without waiting: `SHMBUS_ERR_FULL` when a lossless ring
/// has no free slot.
///
/// # Safety
/// As for `shmbus_publisher_loan`.
#[no_mangle]
pub unsafe extern "C" fn shmbus_publisher_try_loan(
    publisher: *mut ShmbusPublisher,
    data: *mut *mut u8,
    capacity: *mut usize,
) -> ShmbusStatus {
    guard(|| {
        check_loan_args(data, capacity)?;
        // SAFETY: forwarded contract.
        let mut held = unsafe { get(publisher) }?;
        let bytes = held.try_loan().map_err(busy)?;
        // SAFETY: both checked non-NULL above; writable by the contract.
        unsafe { loan_out(bytes, data, capacity) }
    })
}

/// Set how many bytes of the loaned slot to send (byte topics: 0 to the capacity; typed
/// topics take exactly the type's size). `SHMBUS_ERR_TOO_LARGE` past the capacity,
/// `SHMBUS_ERR_STATE` with no loan.
///
/// # Safety
/// `publisher` is NULL or a handle's memory.
#[no_mangle]
pub unsafe extern "C" fn shmbus_publisher_set_len(
    publisher: *mut ShmbusPublisher,
    len: usize,
) -> ShmbusStatus {
    guard(|| {
        // SAFETY: forwarded contract.
        let mut held = unsafe { get(publisher) }?;
        match held.set_len(len) {
            Some(Ok(())) => Ok(()),
            Some(Err(too_large)) => Err(Error::new(
                crate::status::SHMBUS_ERR_TOO_LARGE,
                too_large.to_string(),
            )),
            None => Err(Error::state(
                "no slot is loaned: call shmbus_publisher_loan",
            )),
        }
    })
}

/// Send the loaned slot. `*sequence` (if `sequence` is not NULL) gets its sequence number.
/// `SHMBUS_ERR_STATE` with no loan.
///
/// # Safety
/// `publisher` is NULL or a handle's memory; `sequence` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmbus_publisher_send(
    publisher: *mut ShmbusPublisher,
    sequence: *mut u64,
) -> ShmbusStatus {
    guard(|| {
        // SAFETY: forwarded contract.
        let mut held = unsafe { get(publisher) }?;
        let seq = held
            .send()
            .ok_or_else(|| Error::state("no slot is loaned: call shmbus_publisher_loan"))?;
        if !sequence.is_null() {
            // SAFETY: non-NULL; writable by the contract.
            unsafe { write_out(sequence, seq, "sequence") }?;
        }
        Ok(())
    })
}

/// Give the loaned slot back unsent (subscribers skip it). `SHMBUS_ERR_STATE` with no loan.
///
/// # Safety
/// `publisher` is NULL or a handle's memory.
#[no_mangle]
pub unsafe extern "C" fn shmbus_publisher_discard(publisher: *mut ShmbusPublisher) -> ShmbusStatus {
    guard(|| {
        // SAFETY: forwarded contract.
        let mut held = unsafe { get(publisher) }?;
        if held.discard() {
            Ok(())
        } else {
            Err(Error::state("no slot is loaned"))
        }
    })
}

/// The message bytes from C.
///
/// # Safety
/// `data` is NULL (only with `len` 0) or readable for `len` bytes.
unsafe fn message<'a>(data: *const u8, len: usize) -> Result<&'a [u8], Error> {
    if len == 0 {
        return Ok(&[]);
    }
    if data.is_null() {
        return Err(Error::null("data"));
    }
    if len > isize::MAX as usize {
        return Err(Error::invalid(format!("len {len} is not a length")));
    }
    // SAFETY: non-NULL, `len` at most isize::MAX, readable for `len` bytes by the contract.
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

/// Copy `len` bytes from `data` into the next slot and send them, waiting for space as the
/// wait strategy says. `*sequence` (if not NULL) gets the sequence number.
/// `SHMBUS_ERR_TOO_LARGE` if `len` exceeds the slot (or is not the type's size).
///
/// # Safety
/// `publisher` is NULL or a handle's memory; `data` is readable for `len` bytes (NULL only
/// with `len` 0); `sequence` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmbus_publisher_publish(
    publisher: *mut ShmbusPublisher,
    data: *const u8,
    len: usize,
    sequence: *mut u64,
) -> ShmbusStatus {
    // SAFETY: forwarded contract.
    guard(|| unsafe { publish(publisher, data, len, sequence, false) })
}

/// Like `shmbus_publisher_publish`, without waiting: `SHMBUS_ERR_FULL` when a lossless ring
/// has no free slot.
///
/// # Safety
/// As for `shmbus_publisher_publish`.
#[no_mangle]
pub unsafe extern "C" fn shmbus_publisher_try_publish(
    publisher: *mut ShmbusPublisher,
    data: *const u8,
    len: usize,
    sequence: *mut u64,
) -> ShmbusStatus {
    // SAFETY: forwarded contract.
    guard(|| unsafe { publish(publisher, data, len, sequence, true) })
}

/// # Safety
/// As for `shmbus_publisher_publish`.
unsafe fn publish(
    publisher: *mut ShmbusPublisher,
    data: *const u8,
    len: usize,
    sequence: *mut u64,
    try_only: bool,
) -> Result<(), Error> {
    // SAFETY: forwarded contract.
    let bytes = unsafe { message(data, len) }?;
    // SAFETY: forwarded contract.
    let mut held = unsafe { get(publisher) }?;
    let port = port(&mut held)?;
    let seq = if try_only {
        port.try_send(bytes)?
    } else {
        port.publish(bytes)?
    };
    if !sequence.is_null() {
        // SAFETY: non-NULL; writable by the contract.
        unsafe { write_out(sequence, seq, "sequence") }?;
    }
    Ok(())
}

/// Close a publisher; a loaned slot is discarded unsent. NULL does nothing; a second close is
/// detected (`SHMBUS_ERR_BAD_HANDLE`), never a double free.
///
/// # Safety
/// `publisher` is anything (checked against live handles); no other thread is inside a call
/// on it.
#[no_mangle]
pub unsafe extern "C" fn shmbus_publisher_close(publisher: *mut ShmbusPublisher) -> ShmbusStatus {
    // SAFETY: forwarded contract.
    guard(|| unsafe { Handle::close(handle(publisher)) })
}
