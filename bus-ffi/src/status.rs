//! Status codes, the thread-local last error message, and the one wrapper every exported
//! function runs its body in (`guard`): it catches panics, so none crosses into C, and turns
//! an `Error` into a status code plus a message.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use bus_client::{
    ConnectError, OpenError, RecvError, RecvTimeoutError, SendError, TryRecvError, TrySendError,
};

/// What every function returns: `SHMBUS_OK` (0) or one of the `SHMBUS_ERR_*` codes (positive,
/// like errno values).
/// `shmbus_last_error_message()` says more.
pub type ShmbusStatus = i32;

/// Success.
pub const SHMBUS_OK: ShmbusStatus = 0;
/// A required pointer argument was NULL.
pub const SHMBUS_ERR_NULL: ShmbusStatus = 1;
/// The handle is not a live handle of the expected kind: closed already (a double close),
/// never opened, or a handle of another kind.
pub const SHMBUS_ERR_BAD_HANDLE: ShmbusStatus = 2;
/// An argument is invalid: a string that is not UTF-8, a length out of range, an unknown
/// constant, an options struct of an unknown size.
pub const SHMBUS_ERR_INVALID_ARGUMENT: ShmbusStatus = 3;
/// The call does not fit the handle's state: a second loan or sample while one is held,
/// `send` or `release` with none held, or the handle is in use by another thread right now.
pub const SHMBUS_ERR_STATE: ShmbusStatus = 4;
/// No daemon answers at the socket, or it refused the connection.
pub const SHMBUS_ERR_CONNECT: ShmbusStatus = 5;
/// The topic does not exist (`SHMBUS_OPEN` never creates one).
pub const SHMBUS_ERR_NOT_FOUND: ShmbusStatus = 6;
/// The topic carries another payload type.
pub const SHMBUS_ERR_TYPE_MISMATCH: ShmbusStatus = 7;
/// The topic exists with other options.
pub const SHMBUS_ERR_GEOMETRY_MISMATCH: ShmbusStatus = 8;
/// The daemon's access rules refuse this.
pub const SHMBUS_ERR_PERMISSION: ShmbusStatus = 9;
/// The topic could not be opened for another reason (an invalid name or options, a full
/// table, a limit, a mapping failure); the message says which.
pub const SHMBUS_ERR_OPEN: ShmbusStatus = 10;
/// `try_recv`: no message yet.
pub const SHMBUS_ERR_EMPTY: ShmbusStatus = 11;
/// `try_loan`, `try_publish`: the lossless ring is full.
pub const SHMBUS_ERR_FULL: ShmbusStatus = 12;
/// `recv_timeout`: no message came in time.
pub const SHMBUS_ERR_TIMEOUT: ShmbusStatus = 13;
/// The subscriber fell behind on a lossy topic; `sample.lagged` says how many messages were
/// lost. Call again to read on.
pub const SHMBUS_ERR_LAGGED: ShmbusStatus = 14;
/// The topic was closed (deleted, or the daemon stopped) and drained.
pub const SHMBUS_ERR_CLOSED: ShmbusStatus = 15;
/// The port was detached by the daemon (a stuck subscriber, a given-up publisher); close it
/// and open a new one.
pub const SHMBUS_ERR_EVICTED: ShmbusStatus = 16;
/// The message does not fit: longer than the slot, or not the size of the topic's type.
pub const SHMBUS_ERR_TOO_LARGE: ShmbusStatus = 17;
/// The message was dropped (the daemon repaired this publisher's claim, or the slot's
/// previous message was never finished), or the topic's shared state is corrupted.
pub const SHMBUS_ERR_DROPPED: ShmbusStatus = 18;
/// A panic inside the library was caught; the handle involved should be closed.
pub const SHMBUS_ERR_PANIC: ShmbusStatus = 19;
/// Anything else; the message says what.
pub const SHMBUS_ERR_OTHER: ShmbusStatus = 20;

/// A failure: a status code and its message.
#[derive(Debug)]
pub(crate) struct Error {
    pub(crate) code: ShmbusStatus,
    pub(crate) message: String,
}

impl Error {
    pub(crate) fn new(code: ShmbusStatus, message: impl Into<String>) -> Error {
        Error {
            code,
            // Texts from the Rust client name Rust calls; a C caller reads the C one.
            message: bus_client::error::in_language(&message.into(), "shmbus_connect_embedded()"),
        }
    }

    pub(crate) fn null(what: &str) -> Error {
        Error::new(SHMBUS_ERR_NULL, format!("{what} is NULL"))
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::new(SHMBUS_ERR_INVALID_ARGUMENT, message)
    }

    pub(crate) fn state(message: impl Into<String>) -> Error {
        Error::new(SHMBUS_ERR_STATE, message)
    }
}

impl From<ConnectError> for Error {
    fn from(e: ConnectError) -> Error {
        Error::new(SHMBUS_ERR_CONNECT, e.to_string())
    }
}

impl From<OpenError> for Error {
    fn from(e: OpenError) -> Error {
        let code = match &e {
            OpenError::NotFound { .. } => SHMBUS_ERR_NOT_FOUND,
            OpenError::TypeMismatch { .. } => SHMBUS_ERR_TYPE_MISMATCH,
            OpenError::GeometryMismatch { .. } => SHMBUS_ERR_GEOMETRY_MISMATCH,
            OpenError::PermissionDenied { .. } => SHMBUS_ERR_PERMISSION,
            OpenError::Connect { .. } => SHMBUS_ERR_CONNECT,
            _ => SHMBUS_ERR_OPEN,
        };
        Error::new(code, e.to_string())
    }
}

/// The data-path errors, by what they mean to a caller; each type's own variants (`Full`,
/// `Empty`, `Timeout`) come first. The enums are non-exhaustive: anything new is `OTHER`.
macro_rules! from_send {
    ($($t:ident { $($extra:pat => $code:expr,)* })*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                let code = match e {
                    $($extra => $code,)*
                    $t::Closed => SHMBUS_ERR_CLOSED,
                    $t::Evicted => SHMBUS_ERR_EVICTED,
                    $t::TooLarge(_) | $t::WrongSize { .. } => SHMBUS_ERR_TOO_LARGE,
                    $t::Repaired | $t::Stalled | $t::Corrupted => SHMBUS_ERR_DROPPED,
                    _ => SHMBUS_ERR_OTHER,
                };
                Error::new(code, e.to_string())
            }
        }
    )*};
}
from_send!(
    SendError {}
    TrySendError { TrySendError::Full => SHMBUS_ERR_FULL, }
);

macro_rules! from_recv {
    ($($t:ident { $($extra:pat => $code:expr,)* })*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                let code = match e {
                    $($extra => $code,)*
                    $t::Lagged(_) => SHMBUS_ERR_LAGGED,
                    $t::Closed => SHMBUS_ERR_CLOSED,
                    $t::Evicted => SHMBUS_ERR_EVICTED,
                    _ => SHMBUS_ERR_OTHER,
                };
                Error::new(code, e.to_string())
            }
        }
    )*};
}
from_recv!(
    RecvError {}
    TryRecvError { TryRecvError::Empty => SHMBUS_ERR_EMPTY, }
    RecvTimeoutError { RecvTimeoutError::Timeout => SHMBUS_ERR_TIMEOUT, }
);

thread_local! {
    /// The message of this thread's last failed call (empty before any).
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // A message never holds a NUL byte of its own; drop any so the conversion cannot fail.
    let text = CString::new(message.replace('\0', "")).unwrap_or_default();
    LAST_ERROR.with(|last| *last.borrow_mut() = text);
}

/// Run an exported function's body: its error becomes the status code and this thread's last
/// error message; a panic is caught and becomes `SHMBUS_ERR_PANIC`.
#[inline]
pub(crate) fn guard(body: impl FnOnce() -> Result<(), Error>) -> ShmbusStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => SHMBUS_OK,
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.code
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".to_string());
            set_last_error(&format!("internal error (a caught panic): {what}"));
            SHMBUS_ERR_PANIC
        }
    }
}

/// The message of the last failed call on this thread: a NUL-terminated UTF-8 string, empty if
/// no call has failed yet. It stays valid until the next failing call on the same thread;
/// copy it to keep it. Never NULL. Thread-safe (each thread has its own).
#[no_mangle]
pub extern "C" fn shmbus_last_error_message() -> *const c_char {
    // The string lives in this thread's slot until the next failure on this thread replaces
    // it, which is the lifetime documented above. `with` cannot fail here: the slot is only
    // gone while the thread is being torn down, when no C code calls in.
    LAST_ERROR
        .try_with(|last| last.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// The name of a status code (`"SHMBUS_ERR_FULL"`), or `"SHMBUS_UNKNOWN"`. A static string;
/// never NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn shmbus_status_name(status: ShmbusStatus) -> *const c_char {
    let name: &'static std::ffi::CStr = match status {
        SHMBUS_OK => c"SHMBUS_OK",
        SHMBUS_ERR_NULL => c"SHMBUS_ERR_NULL",
        SHMBUS_ERR_BAD_HANDLE => c"SHMBUS_ERR_BAD_HANDLE",
        SHMBUS_ERR_INVALID_ARGUMENT => c"SHMBUS_ERR_INVALID_ARGUMENT",
        SHMBUS_ERR_STATE => c"SHMBUS_ERR_STATE",
        SHMBUS_ERR_CONNECT => c"SHMBUS_ERR_CONNECT",
        SHMBUS_ERR_NOT_FOUND => c"SHMBUS_ERR_NOT_FOUND",
        SHMBUS_ERR_TYPE_MISMATCH => c"SHMBUS_ERR_TYPE_MISMATCH",
        SHMBUS_ERR_GEOMETRY_MISMATCH => c"SHMBUS_ERR_GEOMETRY_MISMATCH",
        SHMBUS_ERR_PERMISSION => c"SHMBUS_ERR_PERMISSION",
        SHMBUS_ERR_OPEN => c"SHMBUS_ERR_OPEN",
        SHMBUS_ERR_EMPTY => c"SHMBUS_ERR_EMPTY",
        SHMBUS_ERR_FULL => c"SHMBUS_ERR_FULL",
        SHMBUS_ERR_TIMEOUT => c"SHMBUS_ERR_TIMEOUT",
        SHMBUS_ERR_LAGGED => c"SHMBUS_ERR_LAGGED",
        SHMBUS_ERR_CLOSED => c"SHMBUS_ERR_CLOSED",
        SHMBUS_ERR_EVICTED => c"SHMBUS_ERR_EVICTED",
        SHMBUS_ERR_TOO_LARGE => c"SHMBUS_ERR_TOO_LARGE",
        SHMBUS_ERR_DROPPED => c"SHMBUS_ERR_DROPPED",
        SHMBUS_ERR_PANIC => c"SHMBUS_ERR_PANIC",
        SHMBUS_ERR_OTHER => c"SHMBUS_ERR_OTHER",
        _ => c"SHMBUS_UNKNOWN",
    };
    name.as_ptr()
}
