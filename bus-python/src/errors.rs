//! Python exceptions, one per kind of failure, all under `shmbus.ShmbusError`; and how each
//! Rust error of `bus-client` becomes one. Timeouts raise the built-in `TimeoutError`.

use bus_client as bc;
use bus_client::held::HeldError;
use bus_client::{RecvError, RecvTimeoutError, SendError, TooLarge, TryRecvError, TrySendError};
use pyo3::exceptions::{PyException, PyTimeoutError};
use pyo3::prelude::*;
use pyo3::{create_exception, PyErr};

create_exception!(
    shmbus,
    ShmbusError,
    PyException,
    "Base of every shmbus error."
);
create_exception!(
    shmbus,
    ConnectError,
    ShmbusError,
    "No daemon answers, or it refused."
);
create_exception!(
    shmbus,
    NotFoundError,
    ShmbusError,
    "The topic does not exist."
);
create_exception!(
    shmbus,
    TypeMismatchError,
    ShmbusError,
    "The topic carries another type."
);
create_exception!(
    shmbus,
    GeometryMismatchError,
    ShmbusError,
    "The topic exists with other options."
);
create_exception!(
    shmbus,
    PermissionDeniedError,
    ShmbusError,
    "The daemon's access rules refuse this."
);
create_exception!(
    shmbus,
    OpenError,
    ShmbusError,
    "The topic could not be opened (name, options, limits)."
);
create_exception!(
    shmbus,
    FullError,
    ShmbusError,
    "try_publish: the lossless ring is full."
);
create_exception!(
    shmbus,
    LaggedError,
    ShmbusError,
    "The subscriber fell behind on a lossy topic; `lost` messages were overwritten."
);
create_exception!(
    shmbus,
    ClosedError,
    ShmbusError,
    "The topic (or this port) is closed."
);
create_exception!(
    shmbus,
    EvictedError,
    ShmbusError,
    "The daemon detached this port; open a new one."
);
create_exception!(
    shmbus,
    TooLargeError,
    ShmbusError,
    "The message does not fit the slot (or is not the topic type's size)."
);
create_exception!(
    shmbus,
    DroppedError,
    ShmbusError,
    "The message was dropped (a repaired claim, a stalled slot, corruption)."
);
create_exception!(
    shmbus,
    SampleInUseError,
    ShmbusError,
    "A buffer (memoryview, numpy array) still views this sample or loan."
);
create_exception!(
    shmbus,
    StateError,
    ShmbusError,
    "The call does not fit the port's state (a loan is open, the port is closed)."
);

/// A `bus-client` error as a Python exception.
pub(crate) trait IntoPy {
    fn into_py(self) -> PyErr;
}

/// A Rust error's text as a Python caller should read it: the calls it suggests are Python's.
fn text(e: &impl std::fmt::Display) -> String {
    bc::error::in_language(&e.to_string(), "shmbus.Bus.embedded()")
}

impl IntoPy for bc::ConnectError {
    fn into_py(self) -> PyErr {
        ConnectError::new_err(text(&self))
    }
}

impl IntoPy for bc::WaitError {
    fn into_py(self) -> PyErr {
        ShmbusError::new_err(self.to_string())
    }
}

impl IntoPy for bc::RequestError {
    fn into_py(self) -> PyErr {
        let m = text(&self);
        match self {
            bc::RequestError::Refused {
                code: bc::ErrorCode::NoSuchTopic,
                ..
            } => NotFoundError::new_err(m),
            bc::RequestError::Refused {
                code: bc::ErrorCode::PermissionDenied,
                ..
            } => PermissionDeniedError::new_err(m),
            bc::RequestError::Connect(_) => ConnectError::new_err(m),
            _ => ShmbusError::new_err(m),
        }
    }
}

impl IntoPy for bc::OpenError {
    fn into_py(self) -> PyErr {
        let m = text(&self);
        match self {
            bc::OpenError::NotFound { .. } => NotFoundError::new_err(m),
            bc::OpenError::TypeMismatch { .. } => TypeMismatchError::new_err(m),
            bc::OpenError::GeometryMismatch { .. } => GeometryMismatchError::new_err(m),
            bc::OpenError::PermissionDenied { .. } => PermissionDeniedError::new_err(m),
            bc::OpenError::Connect { .. } => ConnectError::new_err(m),
            _ => OpenError::new_err(m),
        }
    }
}

impl IntoPy for TooLarge {
    fn into_py(self) -> PyErr {
        TooLargeError::new_err(self.to_string())
    }
}

macro_rules! send_into_py {
    ($($t:ident { $($extra:pat => $exc:ident,)* })*) => {$(
        impl IntoPy for $t {
            fn into_py(self) -> PyErr {
                let m = self.to_string();
                match self {
                    $($extra => $exc::new_err(m),)*
                    $t::Closed => ClosedError::new_err(m),
                    $t::Evicted => EvictedError::new_err(m),
                    $t::TooLarge(_) | $t::WrongSize { .. } => TooLargeError::new_err(m),
                    _ => DroppedError::new_err(m),
                }
            }
        }
    )*};
}
send_into_py!(
    SendError {}
    TrySendError { TrySendError::Full => FullError, }
);

/// A lagged error carries its count as `lost`.
fn lagged(n: u64, message: String) -> PyErr {
    Python::attach(|py| {
        let err = LaggedError::new_err(message);
        let _ = err.value(py).setattr("lost", n);
        err
    })
}

macro_rules! recv_into_py {
    ($($t:ident { $($extra:pat => $exc:ident,)* })*) => {$(
        impl IntoPy for $t {
            fn into_py(self) -> PyErr {
                let m = self.to_string();
                match self {
                    $($extra => $exc::new_err(m),)*
                    $t::Lagged(n) => lagged(n, m),
                    $t::Evicted => EvictedError::new_err(m),
                    _ => ClosedError::new_err(m),
                }
            }
        }
    )*};
}
recv_into_py!(
    RecvError {}
    TryRecvError {}
    RecvTimeoutError { RecvTimeoutError::Timeout => PyTimeoutError, }
);

impl<E: IntoPy> IntoPy for HeldError<E> {
    fn into_py(self) -> PyErr {
        match self {
            HeldError::Busy => StateError::new_err("a sample or loan of this port is still held"),
            HeldError::Port(e) => e.into_py(),
        }
    }
}

/// Register the exceptions in the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ShmbusError", py.get_type::<ShmbusError>())?;
    m.add("ConnectError", py.get_type::<ConnectError>())?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("TypeMismatchError", py.get_type::<TypeMismatchError>())?;
    m.add(
        "GeometryMismatchError",
        py.get_type::<GeometryMismatchError>(),
    )?;
    m.add(
        "PermissionDeniedError",
        py.get_type::<PermissionDeniedError>(),
    )?;
    m.add("OpenError", py.get_type::<OpenError>())?;
    m.add("FullError", py.get_type::<FullError>())?;
    m.add("LaggedError", py.get_type::<LaggedError>())?;
    m.add("ClosedError", py.get_type::<ClosedError>())?;
    m.add("EvictedError", py.get_type::<EvictedError>())?;
    m.add("TooLargeError", py.get_type::<TooLargeError>())?;
    m.add("DroppedError", py.get_type::<DroppedError>())?;
    m.add("SampleInUseError", py.get_type::<SampleInUseError>())?;
    m.add("StateError", py.get_type::<StateError>())?;
    Ok(())
}
