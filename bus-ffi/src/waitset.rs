//! Wait sets: wait on many subscribers, publishers and intervals in one thread, blocking
//! (`shmbus_waitset_wait`) or from a C event loop that polls the set's descriptor
//! (`shmbus_waitset_fd`, `shmbus_waitset_try_wait`, `shmbus_waitset_timeout_hint_ms`).

use std::collections::VecDeque;
use std::ffi::c_int;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use bus_client::{Attachment, AttachmentId, PresencePort, WaitError, WaitSet};

use crate::handle::{write_out, Handle, Kind};
use crate::publisher::{self, ShmbusPublisher};
use crate::status::{guard, Error, ShmbusStatus, SHMBUS_ERR_OTHER};
use crate::subscriber::{self, ShmbusSubscriber};

/// A wait set: subscribers, publishers and intervals watched together. Opaque.
///
/// Not thread-safe, but not tied to a thread: use it from one thread at a time (a second
/// thread calling in while a call runs, a blocking wait included, gets `SHMBUS_ERR_STATE`).
/// The ports it watches stay usable from any thread while it waits.
pub struct ShmbusWaitset {
    _opaque: [u8; 0],
}

pub(crate) struct WaitsetState {
    /// Attachments by the id C sees (from 1); dropped before the set.
    attached: Vec<(u64, Attachment)>,
    /// Ready ids not handed out yet (more than the caller's array held).
    pending: VecDeque<u64>,
    next_id: u64,
    set: WaitSet,
}

impl Kind for WaitsetState {
    const MAGIC: u64 = 0x5348_4d42_5553_5753; // "SHMBUSWS"
    const NAME: &'static str = "shmbus_waitset";
}

fn handle(ws: *mut ShmbusWaitset) -> *mut Handle<WaitsetState> {
    ws.cast()
}

impl From<WaitError> for Error {
    fn from(e: WaitError) -> Error {
        Error::new(SHMBUS_ERR_OTHER, e.to_string())
    }
}

impl WaitsetState {
    fn add(&mut self, attachment: Attachment) -> u64 {
        self.next_id += 1;
        self.attached.push((self.next_id, attachment));
        self.next_id
    }

    /// Watch `port`'s peer count; returns the id C sees.
    fn add_presence(&mut self, port: &impl PresencePort) -> Result<u64, Error> {
        let attachment = self.set.attach_presence(port)?;
        Ok(self.add(attachment))
    }

    /// Queue the ids of what the set just reported.
    fn take_ready(&mut self, ready: &[AttachmentId]) {
        for r in ready {
            if let Some((id, _)) = self.attached.iter().find(|(_, a)| a.id() == *r) {
                if !self.pending.contains(id) {
                    self.pending.push_back(*id);
                }
            }
        }
    }
}

/// Attach `port`'s peer count to `waitset` (see `crate::presence`); returns the new id.
///
/// # Safety
/// `waitset` is anything (checked against live handles).
pub(crate) unsafe fn attach_presence(
    waitset: *mut ShmbusWaitset,
    port: &impl PresencePort,
) -> Result<u64, Error> {
    // SAFETY: forwarded contract.
    let mut ws = unsafe { Handle::exclusive_registered(handle(waitset), "waitset") }?;
    ws.add_presence(port)
}

/// Make a new, empty wait set (it holds one eventfd). On success `*out` is the set; free it
/// with `shmbus_waitset_free`. `out`: non-NULL.
///
/// # Safety
/// `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmbus_waitset_new(out: *mut *mut ShmbusWaitset) -> ShmbusStatus {
    guard(|| {
        if out.is_null() {
            return Err(Error::null("out"));
        }
        let state = WaitsetState {
            attached: Vec::new(),
            pending: VecDeque::new(),
            next_id: 0,
            set: WaitSet::new()?,
        };
        let ptr = Handle::into_raw(state);
        // SAFETY: `out` is non-NULL (checked first) and writable by the contract.
        unsafe { write_out(out, ptr.cast(), "out") }
    })
}

/// Watch `subscriber`: ready when it has a message to read (or an error to report: the topic
/// closed, the subscriber evicted). `*id_out` is the attachment's id (never 0), what the
/// waits report. Refused with `SHMBUS_ERR_STATE` while the subscriber holds a sample: release
/// it first. Detach (or free the set) before closing the subscriber. `SHMBUS_ERR_OTHER` if
/// the topic has no free wake slot or the process is out of descriptors (the message says).
///
/// # Safety
/// `waitset` and `subscriber` are anything (checked against live handles); `id_out` is NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn shmbus_waitset_attach_subscriber(
    waitset: *mut ShmbusWaitset,
    subscriber: *mut ShmbusSubscriber,
    id_out: *mut u64,
) -> ShmbusStatus {
    guard(|| {
        if id_out.is_null() {
            return Err(Error::null("id_out"));
        }
        // SAFETY: forwarded contract.
        let mut ws = unsafe { Handle::exclusive_registered(handle(waitset), "waitset") }?;
        // SAFETY: forwarded contract.
        let held =
            unsafe { Handle::exclusive_registered(subscriber::handle(subscriber), "subscriber") }?;
        let port = held.port().ok_or_else(|| {
            Error::state(
                "the subscriber holds a sample: release it (shmbus_subscriber_release) \
                 before attaching it",
            )
        })?;
        let attachment = ws.set.attach_raw_subscriber(port)?;
        let id = ws.add(attachment);
        // SAFETY: non-NULL (checked first) and writable by the contract.
        unsafe { write_out(id_out, id, "id_out") }
    })
}

/// Watch `publisher`: ready when its lossless topic has room again (a lossy topic always
/// has). Like `shmbus_waitset_attach_subscriber`; refused while a loan is held.
///
/// # Safety
/// As for `shmbus_waitset_attach_subscriber`.
#[no_mangle]
pub unsafe extern "C" fn shmbus_waitset_attach_publisher(
    waitset: *mut ShmbusWaitset,
    publisher: *mut ShmbusPublisher,
    id_out: *mut u64,
) -> ShmbusStatus {
    guard(|| {
        if id_out.is_null() {
            return Err(Error::null("id_out"));
        }
        // SAFETY: forwarded contract.
        let mut ws = unsafe { Handle::exclusive_registered(handle(waitset), "waitset") }?;
        // SAFETY: forwarded contract.
        let held =
            unsafe { Handle::exclusive_registered(publisher::handle(publisher), "publisher") }?;
        let port = held.port().ok_or_else(|| {
            Error::state("the publisher holds a loan: send or discard it before attaching it")
        })?;
        let attachment = ws.set.attach_raw_publisher(port)?;
        let id = ws.add(attachment);
        // SAFETY: non-NULL (checked first) and writable by the contract.
        unsafe { write_out(id_out, id, "id_out") }
    })
}

/// Ready every `period_us` microseconds (at least 1), from one period from now; missed ticks
/// are not made up. `*id_out` is the attachment's id.
///
/// # Safety
/// `waitset` is anything (checked against live handles); `id_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmbus_waitset_attach_interval(
    waitset: *mut ShmbusWaitset,
    period_us: u64,
    id_out: *mut u64,
) -> ShmbusStatus {
    guard(|| {
        if id_out.is_null() {
            return Err(Error::null("id_out"));
        }
        // SAFETY: forwarded contract.
        let mut ws = unsafe { Handle::exclusive_registered(handle(waitset), "waitset") }?;
        let attachment = ws.set.attach_interval(Duration::from_micros(period_us));
        let id = ws.add(attachment);
        // SAFETY: non-NULL (checked first) and writable by the contract.
        unsafe { write_out(id_out, id, "id_out") }
    })
}

/// Stop watching attachment `id` (its wake slot goes back to the topic).
/// `SHMBUS_ERR_INVALID_ARGUMENT` if `id` is not attached to this set.
///
/// # Safety
/// `waitset` is anything (checked against live handles).
#[no_mangle]
pub unsafe extern "C" fn shmbus_waitset_detach(
    waitset: *mut ShmbusWaitset,
    id: u64,
) -> ShmbusStatus {
    guard(|| {
        // SAFETY: forwarded contract.
        let mut ws = unsafe { Handle::exclusive_registered(handle(waitset), "waitset") }?;
        let i = ws
            .attached
            .iter()
            .position(|(x, _)| *x == id)
            .ok_or_else(|| Error::invalid(format!("attachment {id} is not in this wait set")))?;
        ws.attached.swap_remove(i);
        ws.pending.retain(|x| *x != id);
        Ok(())
    })
}

/// The wait set's descriptor, for poll, select or epoll (readable: `POLLIN`, `EPOLLIN`,
/// level- or edge-triggered). Readable means "something may be ready": call
/// `shmbus_waitset_try_wait`, which consumes it. Never read, write or close it yourself; it
/// lives as long as the set. Intervals and the set's periodic check do not make it readable:
/// poll with a timeout of `shmbus_waitset_timeout_hint_ms`.
///
/// # Safety
/// `waitset` is anything (checked against live handles); `fd_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmbus_waitset_fd(
    waitset: *mut ShmbusWaitset,
    fd_out: *mut c_int,
) -> ShmbusStatus {
    guard(|| {
        // SAFETY: forwarded contract.
        let ws = unsafe { Handle::exclusive_registered(handle(waitset), "waitset") }?;
        let fd = ws.set.as_fd().as_raw_fd();
        // SAFETY: `write_out` checks NULL; writable by the contract.
        unsafe { write_out(fd_out, fd, "fd_out") }
    })
}

/// Hand out up to `cap` queued ids.
///
/// # Safety
/// `ids_out` is NULL or writable for `cap` ids; `n_out` is NULL or writable.
unsafe fn hand_out(
    ws: &mut WaitsetState,
    ids_out: *mut u64,
    cap: usize,
    n_out: *mut usize,
) -> Result<(), Error> {
    let n = ws.pending.len().min(cap);
    for (i, id) in ws.pending.drain(..n).enumerate() {
        // SAFETY: `i < cap`, `ids_out` non-NULL when `cap > 0` (checked by `check_out`) and
        // writable for `cap` ids by the contract.
        unsafe { ids_out.add(i).write(id) };
    }
    // SAFETY: forwarded contract (`write_out` checks NULL).
    unsafe { write_out(n_out, n, "n_out") }
}

fn check_out(ids_out: *mut u64, cap: usize, n_out: *mut usize) -> Result<(), Error> {
    if n_out.is_null() {
        return Err(Error::null("n_out"));
    }
    if cap > 0 && ids_out.is_null() {
        return Err(Error::null("ids_out"));
    }
    if !ids_out.is_aligned() {
        return Err(Error::invalid("ids_out is misaligned"));
    }
    Ok(())
}

/// Wait until at least one attachment is ready or `timeout_ms` passes (negative: forever;
/// 0: do not wait). Writes up to `cap` ready ids to `ids_out` and their number to `*n_out`
/// (0 on timeout: not an error). Ids that did not fit are returned first by the next wait.
/// Each attachment is reported once per change: read a ready subscriber (until
/// `SHMBUS_ERR_EMPTY`) before waiting again, or it is reported only when something new
/// arrives. After a daemon restart a port is also reported (at most every 100 ms) until a
/// receive or send on it has followed the new daemon.
///
/// # Safety
/// `waitset` is anything (checked against live handles); `ids_out` is NULL (only with `cap`
/// 0) or writable for `cap` ids; `n_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmbus_waitset_wait(
    waitset: *mut ShmbusWaitset,
    timeout_ms: i64,
    ids_out: *mut u64,
    cap: usize,
    n_out: *mut usize,
) -> ShmbusStatus {
    guard(|| {
        check_out(ids_out, cap, n_out)?;
        // SAFETY: forwarded contract.
        let mut ws = unsafe { Handle::exclusive_registered(handle(waitset), "waitset") }?;
        if ws.pending.is_empty() {
            let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
            let state = &mut *ws;
            let ready = state.set.wait(timeout)?.to_vec();
            state.take_ready(&ready);
        }
        // SAFETY: forwarded contract; the pointers were checked by `check_out`.
        unsafe { hand_out(&mut ws, ids_out, cap, n_out) }
    })
}

/// `shmbus_waitset_wait` without waiting, for an event loop that polls `shmbus_waitset_fd`:
/// consumes the descriptor's wake-up, looks once, and leaves every port armed so that the
/// descriptor becomes readable at the next change. `*n_out` is often 0 (a wake-up means
/// "something may have changed"). Once per change, as for `shmbus_waitset_wait`: a ready
/// subscriber left unread does not keep the descriptor readable, so the loop does not spin.
///
/// # Safety
/// As for `shmbus_waitset_wait`.
#[no_mangle]
pub unsafe extern "C" fn shmbus_waitset_try_wait(
    waitset: *mut ShmbusWaitset,
    ids_out: *mut u64,
    cap: usize,
    n_out: *mut usize,
) -> ShmbusStatus {
    guard(|| {
        check_out(ids_out, cap, n_out)?;
        // SAFETY: forwarded contract.
        let mut ws = unsafe { Handle::exclusive_registered(handle(waitset), "waitset") }?;
        let state = &mut *ws;
        let ready = state.set.try_wait()?.to_vec();
        state.take_ready(&ready);
        // SAFETY: forwarded contract; the pointers were checked by `check_out`.
        unsafe { hand_out(&mut ws, ids_out, cap, n_out) }
    })
}

/// How long (milliseconds, rounded up) an event loop may poll `shmbus_waitset_fd` before it
/// must call `shmbus_waitset_try_wait` anyway: the next interval tick, or the set's next
/// look around (every 100 ms while a port's daemon is gone or a port has no wake slot). 0
/// before the first try_wait (which arms the ports), when something is due, or when ids are
/// queued; -1 when only the descriptor can make something ready, or nothing is attached (poll
/// forever).
///
/// # Safety
/// `waitset` is anything (checked against live handles); `ms_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmbus_waitset_timeout_hint_ms(
    waitset: *mut ShmbusWaitset,
    ms_out: *mut i64,
) -> ShmbusStatus {
    guard(|| {
        // SAFETY: forwarded contract.
        let ws = unsafe { Handle::exclusive_registered(handle(waitset), "waitset") }?;
        let ms = if ws.pending.is_empty() {
            ws.set.timeout_hint().map_or(-1, |d| {
                i64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(i64::MAX)
            })
        } else {
            0
        };
        // SAFETY: `write_out` checks NULL; writable by the contract.
        unsafe { write_out(ms_out, ms, "ms_out") }
    })
}

/// Free a wait set and its attachments (the ports stay open). NULL does nothing; a second
/// free is detected (`SHMBUS_ERR_BAD_HANDLE`), never a double free.
///
/// # Safety
/// `waitset` is anything (checked against live handles); no other thread is inside a call on
/// it.
#[no_mangle]
pub unsafe extern "C" fn shmbus_waitset_free(waitset: *mut ShmbusWaitset) -> ShmbusStatus {
    // SAFETY: forwarded contract.
    guard(|| unsafe { Handle::close(handle(waitset)) })
}
