//! Connecting: `shmbus_connect`, `shmbus_connect_to`, `shmbus_connect_embedded`, and closing.

use std::ffi::{c_char, CStr, CString};

use bus_client::Bus;

use crate::handle::{write_out, Handle, Kind};
use crate::status::{guard, Error, ShmbusStatus};

/// A connection to the daemon. Opaque.
///
/// Thread-safe: any number of threads may open ports on one bus at once. Ports keep the
/// connection alive, so the bus may be closed before them.
pub struct ShmbusBus {
    _opaque: [u8; 0],
}

pub(crate) struct BusState {
    pub(crate) bus: Bus,
    socket: CString,
}

impl Kind for BusState {
    const MAGIC: u64 = 0x5348_4d42_5553_4255; // "SHMBUSBU"
    const NAME: &'static str = "shmbus_bus";
}

pub(crate) fn handle(bus: *mut ShmbusBus) -> *mut Handle<BusState> {
    bus.cast()
}

/// The bus behind `bus`, checked.
///
/// # Safety
/// `bus` is anything: it is looked up among live handles before it is read; it must not be
/// closed by another thread during the call.
pub(crate) unsafe fn get<'a>(bus: *mut ShmbusBus) -> Result<&'a Bus, Error> {
    // SAFETY: forwarded contract.
    unsafe { Handle::shared(handle(bus), "bus") }.map(|state: &BusState| &state.bus)
}

/// A C string argument as UTF-8.
///
/// # Safety
/// `s` is NULL or a NUL-terminated string.
pub(crate) unsafe fn utf8<'a>(s: *const c_char, what: &str) -> Result<&'a str, Error> {
    if s.is_null() {
        return Err(Error::null(what));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(s) }
        .to_str()
        .map_err(|_| Error::invalid(format!("{what} is not UTF-8")))
}

fn open(bus: Bus, out: *mut *mut ShmbusBus) -> Result<(), Error> {
    let socket = CString::new(bus.socket_path().as_os_str().as_encoded_bytes())
        .map_err(|_| Error::invalid("the socket path holds a NUL byte"))?;
    let ptr = Handle::into_raw(BusState { bus, socket });
    // SAFETY: `out` was checked for NULL by the caller of `open` before connecting.
    if let Err(e) = unsafe { write_out(out, ptr.cast(), "out") } {
        // SAFETY: just made by `into_raw` and never handed out.
        let _ = unsafe { Handle::close(ptr) };
        return Err(e);
    }
    Ok(())
}

fn check_out(out: *mut *mut ShmbusBus) -> Result<(), Error> {
    if out.is_null() {
        return Err(Error::null("out"));
    }
    Ok(())
}

/// Connect to the daemon at the default socket (`$SHMBUS_SOCKET`, else
/// `$XDG_RUNTIME_DIR/shmbus/shmbusd.sock`, else `/tmp/shmbus-$UID/shmbusd.sock`).
/// On success `*out` is a new bus; close it with `shmbus_bus_close`.
/// `out`: non-NULL, writable.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn shmbus_connect(out: *mut *mut ShmbusBus) -> ShmbusStatus {
    guard(|| {
        check_out(out)?;
        open(Bus::connect()?, out)
    })
}

/// Connect to the daemon at `socket` (a NUL-terminated UTF-8 path).
/// On success `*out` is a new bus. `socket`, `out`: non-NULL.
///
/// # Safety
/// `socket` is NULL or NUL-terminated; `out` is NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn shmbus_connect_to(
    socket: *const c_char,
    out: *mut *mut ShmbusBus,
) -> ShmbusStatus {
    guard(|| {
        check_out(out)?;
        // SAFETY: forwarded contract.
        let socket = unsafe { utf8(socket, "socket") }?;
        open(Bus::connect_to(socket)?, out)
    })
}

/// Start a daemon inside this process, on a private socket, and connect to it. Other
/// processes reach it through `shmbus_bus_socket_path` (pass it as `SHMBUS_SOCKET`). The
/// daemon stops, closing every topic, when this bus and all its ports are closed.
/// `out`: non-NULL.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn shmbus_connect_embedded(out: *mut *mut ShmbusBus) -> ShmbusStatus {
    guard(|| {
        check_out(out)?;
        open(Bus::embedded()?, out)
    })
}

/// The daemon's socket path: a NUL-terminated string owned by the bus, valid until
/// `shmbus_bus_close`. NULL if `bus` is not a live bus (see `shmbus_last_error_message`).
///
/// # Safety
/// `bus` is anything (checked against the live handles); not closed during the call.
#[no_mangle]
pub unsafe extern "C" fn shmbus_bus_socket_path(bus: *mut ShmbusBus) -> *const c_char {
    let mut path = std::ptr::null();
    guard(|| {
        // SAFETY: forwarded contract.
        let state: &BusState = unsafe { Handle::shared(handle(bus), "bus") }?;
        path = state.socket.as_ptr();
        Ok(())
    });
    path
}

/// Close a bus. Ports opened on it stay usable (they keep the connection) until closed
/// themselves. NULL does nothing. A second close of the same bus is detected
/// (`SHMBUS_ERR_BAD_HANDLE`), never a double free. Not while another thread uses this bus.
///
/// # Safety
/// `bus` is anything (checked against the live handles); no other thread is inside a call on
/// it.
#[no_mangle]
pub unsafe extern "C" fn shmbus_bus_close(bus: *mut ShmbusBus) -> ShmbusStatus {
    // SAFETY: forwarded contract.
    guard(|| unsafe { Handle::close(handle(bus)) })
}
