//! `shmbus.Publisher` and `shmbus.Loan`: publish a bytes-like object, or write a message in
//! place through a writable memoryview of the slot (`with pub.loan() as buf:`).
//!
//! A loan is held by the publisher until sent or discarded; like a sample (see
//! `subscriber.rs`) it counts the buffers exported from it, and is never sent while one could
//! still write into the slot.

use std::sync::{Arc, Mutex};

use bus_client::held::{HeldError, HeldPublisher};
use bus_client::{
    Geometry, Mode, Presence, PresencePort, RawPublisher, SendTimeoutError, TrySendError,
};
use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;
use pyo3::types::{PyMemoryView, PyTuple};
use pyo3::{ffi, PyErr};

use crate::errors::{ClosedError, IntoPy, SampleInUseError, StateError, TooLargeError};
use crate::exports::{fill_view, BytesView, ExportState};
use crate::subscriber::{lock, SLICE};

struct Core {
    /// `None` once closed.
    held: Option<HeldPublisher>,
    /// The export state of the open loan, if any.
    current: Option<Arc<ExportState>>,
}

impl Core {
    /// The port, discarding a loan whose Python object is gone; a live loan is an error.
    fn port(&mut self) -> Result<&mut HeldPublisher, Refused> {
        if let Some(state) = &self.current {
            if !state.is_finished() {
                return Err(Refused::LoanOpen);
            }
            self.current = None;
            if let Some(held) = self.held.as_mut() {
                held.discard();
            }
        }
        self.held.as_mut().ok_or(Refused::Closed)
    }
}

enum Refused {
    LoanOpen,
    Closed,
}

impl Refused {
    fn into_py(self) -> PyErr {
        match self {
            Refused::LoanOpen => StateError::new_err(
                "a loan of this publisher is open: send or discard it (or leave its with \
                 block) first",
            ),
            Refused::Closed => ClosedError::new_err("this publisher is closed"),
        }
    }
}

struct Shared {
    /// Locked only with the GIL released: a thread waiting for space holds it.
    core: Mutex<Core>,
    topic: String,
    spec: Geometry,
    /// The number of subscribers, readable without the port.
    presence: Presence,
}

/// Publishes on one topic: `publish(bytes_like)`, or `with pub.loan() as buf:` to write in
/// place.
#[pyclass(module = "shmbus", frozen)]
pub(crate) struct Publisher {
    shared: Arc<Shared>,
}

impl Publisher {
    pub(crate) fn new(port: RawPublisher) -> Publisher {
        let (topic, spec) = (port.topic().to_string(), port.spec().clone());
        let presence = port.presence();
        Publisher {
            shared: Arc::new(Shared {
                core: Mutex::new(Core {
                    held: Some(HeldPublisher::new(port)),
                    current: None,
                }),
                topic,
                spec,
                presence,
            }),
        }
    }

    /// Publish `data`, in slices of waiting with signal checks between them.
    fn send(&self, py: Python<'_>, data: &Bound<'_, PyAny>, wait: bool) -> PyResult<u64> {
        let view = BytesView::new(data)?;
        // Room in the ring: send without releasing the GIL (`try_lock` never blocks; if
        // another thread is inside the port, the slow path below waits for it).
        if let Ok(mut core) = self.shared.core.try_lock() {
            let held = core.port().map_err(Refused::into_py)?;
            let port = held
                .port_mut()
                .ok_or(Refused::LoanOpen)
                .map_err(Refused::into_py)?;
            match port.try_send(view.bytes()) {
                Ok(seq) => return Ok(seq),
                Err(TrySendError::Full) if wait => {}
                Err(e) => return Err(e.into_py()),
            }
        }
        loop {
            let outcome = py.detach(|| {
                let mut core = lock(&self.shared.core);
                let held = core.port()?;
                let port = held.port_mut().ok_or(Refused::LoanOpen)?;
                Ok(if wait {
                    port.send_timeout(view.bytes(), SLICE)
                } else {
                    port.try_send(view.bytes()).map_err(try_to_timeout)
                })
            });
            match outcome.map_err(Refused::into_py)? {
                Ok(seq) => return Ok(seq),
                Err(SendTimeoutError::Timeout) if wait => py.check_signals()?,
                Err(SendTimeoutError::Timeout) => {
                    return Err(TrySendError::Full.into_py());
                }
                Err(e) => return Err(timeout_error_into_py(e)),
            }
        }
    }
}

fn try_to_timeout(e: TrySendError) -> SendTimeoutError {
    match e {
        TrySendError::Full => SendTimeoutError::Timeout,
        TrySendError::Closed => SendTimeoutError::Closed,
        TrySendError::Evicted => SendTimeoutError::Evicted,
        TrySendError::TooLarge(t) => SendTimeoutError::TooLarge(t),
        TrySendError::WrongSize { len, expected } => SendTimeoutError::WrongSize { len, expected },
        TrySendError::Repaired => SendTimeoutError::Repaired,
        TrySendError::Stalled => SendTimeoutError::Stalled,
        _ => SendTimeoutError::Corrupted,
    }
}

fn timeout_error_into_py(e: SendTimeoutError) -> PyErr {
    let m = e.to_string();
    match e {
        SendTimeoutError::Closed => ClosedError::new_err(m),
        SendTimeoutError::Evicted => crate::errors::EvictedError::new_err(m),
        SendTimeoutError::TooLarge(_) | SendTimeoutError::WrongSize { .. } => {
            TooLargeError::new_err(m)
        }
        _ => crate::errors::DroppedError::new_err(m),
    }
}

#[pymethods]
impl Publisher {
    /// Copy a bytes-like object (bytes, bytearray, memoryview, a contiguous numpy array)
    /// into the next slot and send it; returns its sequence number. On a lossless topic it
    /// waits (GIL released, Ctrl-C works) while the slowest subscriber holds the ring full.
    fn publish(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<u64> {
        self.send(py, data, true)
    }

    /// Like `publish`, without waiting: raises FullError when the lossless ring is full.
    fn try_publish(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<u64> {
        self.send(py, data, false)
    }

    /// Loan the next slot to write in place: `with pub.loan() as buf: buf[:n] = ...` gives a
    /// writable memoryview of `size` bytes (default: the type's size, or the whole slot of
    /// a byte topic) and sends it when the block ends without an exception (discards it on
    /// one). Or call `send()` / `discard()` on the loan. Waits for space like `publish`.
    #[pyo3(signature = (size=None))]
    fn loan(&self, py: Python<'_>, size: Option<usize>) -> PyResult<Loan> {
        loop {
            let outcome = py.detach(|| {
                let mut core = lock(&self.shared.core);
                let held = core.port()?;
                // Wait for space at most a slice, then look at signals and come back.
                let bytes = match held.loan_timeout(SLICE) {
                    Ok(bytes) => bytes,
                    Err(HeldError::Port(e)) => return Ok(Err(LoanFailed::Send(e))),
                    Err(HeldError::Busy) => return Err(Refused::LoanOpen),
                };
                let full = bytes.len();
                if let Some(size) = size {
                    if let Some(Err(too_large)) = held.set_len(size) {
                        held.discard();
                        return Ok(Err(LoanFailed::Size(too_large)));
                    }
                }
                let len = size.unwrap_or(full);
                let addr = held.loaned().map_or(0, |b| b.as_mut_ptr() as usize);
                let state = Arc::new(ExportState::default());
                core.current = Some(state.clone());
                Ok(Ok((addr, len, state)))
            });
            match outcome.map_err(Refused::into_py)? {
                Ok((addr, len, state)) => {
                    return Ok(Loan {
                        shared: self.shared.clone(),
                        state,
                        addr,
                        len,
                        view: Mutex::new(None),
                    })
                }
                Err(LoanFailed::Send(SendTimeoutError::Timeout)) => py.check_signals()?,
                Err(LoanFailed::Send(e)) => return Err(timeout_error_into_py(e)),
                Err(LoanFailed::Size(e)) => return Err(e.into_py()),
            }
        }
    }

    /// Subscribers attached to the topic now (every process's), read from shared memory:
    /// cheap enough to read per message.
    #[getter]
    fn subscriber_count(&self) -> usize {
        self.shared.presence.count()
    }

    /// Wait until at least `n` subscribers are attached (at most `timeout` seconds; None: as
    /// long as it takes, interruptible with Ctrl-C); returns how many are. Raises
    /// TimeoutError, or ClosedError if the topic closes. The GIL is released while waiting.
    #[pyo3(signature = (n, timeout=None))]
    fn wait_for_subscribers(
        &self,
        py: Python<'_>,
        n: usize,
        timeout: Option<f64>,
    ) -> PyResult<usize> {
        crate::presence::wait_for(py, &self.shared.presence, n, timeout, "subscriber(s)")
    }

    /// The topic name.
    #[getter]
    fn topic(&self) -> &str {
        &self.shared.topic
    }

    /// The largest message, in bytes.
    #[getter]
    fn slot_size(&self) -> u32 {
        self.shared.spec.slot_size
    }

    /// Slots in the ring.
    #[getter]
    fn capacity(&self) -> u32 {
        self.shared.spec.capacity
    }

    /// Whether the topic is lossy.
    #[getter]
    fn lossy(&self) -> bool {
        self.shared.spec.mode == Mode::Lossy
    }

    /// The topic's payload type as (name, size, align); size 0 for a byte topic.
    #[getter]
    fn r#type(&self) -> (String, u32, u32) {
        let t = &self.shared.spec.type_info;
        (t.name.clone(), t.size, t.align)
    }

    /// Detach from the topic; an open loan is discarded unless a buffer still views it
    /// (then StateError).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| {
            let mut core = lock(&self.shared.core);
            core.port()?;
            core.held = None;
            Ok(())
        })
        .or_else(|e| match e {
            Refused::Closed => Ok(()),
            e => Err(e.into_py()),
        })
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("shmbus.Publisher(topic={:?})", self.shared.topic)
    }
}

enum LoanFailed {
    Send(SendTimeoutError),
    Size(bus_client::TooLarge),
}

/// A loaned slot: a context manager whose `__enter__` gives a writable memoryview of the slot
/// and whose `__exit__` sends it (or discards it after an exception). It also supports the
/// buffer protocol (writable) itself.
#[pyclass(module = "shmbus", frozen)]
pub(crate) struct Loan {
    shared: Arc<Shared>,
    state: Arc<ExportState>,
    addr: usize,
    len: usize,
    /// The memoryview `__enter__` handed out, released by `__exit__`.
    view: Mutex<Option<Py<PyMemoryView>>>,
}

impl Loan {
    /// Finish the loan and send it (`true`) or discard it; its sequence number when sent.
    fn finish(&self, py: Python<'_>, send: bool) -> PyResult<Option<u64>> {
        py.detach(|| {
            let mut core = lock(&self.shared.core);
            let ours = core
                .current
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, &self.state));
            if !ours {
                return Err(None);
            }
            self.state.finish().map_err(Some)?;
            core.current = None;
            let held = core.held.as_mut().ok_or(None)?;
            Ok(if send {
                held.send()
            } else {
                held.discard();
                None
            })
        })
        .map_err(|e: Option<u64>| match e {
            Some(n) => SampleInUseError::new_err(format!(
                "{n} buffer(s) still view this loan; delete them (and leave any numpy array \
                 made from it) before it is sent"
            )),
            None => StateError::new_err("this loan was sent or discarded already"),
        })
    }
}

#[pymethods]
impl Loan {
    /// Send the message; returns its sequence number.
    fn send(&self, py: Python<'_>) -> PyResult<u64> {
        self.finish(py, true)?
            .ok_or_else(|| StateError::new_err("this loan was sent or discarded already"))
    }

    /// Give the slot back unsent (subscribers skip it).
    fn discard(&self, py: Python<'_>) -> PyResult<()> {
        self.finish(py, false).map(drop)
    }

    fn __len__(&self) -> usize {
        self.len
    }

    fn __enter__(slf: &Bound<'_, Self>) -> PyResult<Py<PyMemoryView>> {
        let view = PyMemoryView::from(slf.as_any())?.unbind();
        *lock(&slf.get().view) = Some(view.clone_ref(slf.py()));
        Ok(view)
    }

    #[pyo3(signature = (exc_type, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let view = lock(&self.view).take();
        if let Some(view) = view {
            view.bind(py).call_method0("release")?;
        }
        let failed = exc_type.is_some_and(|t| !t.is_none());
        self.finish(py, !failed)?;
        Ok(false)
    }

    /// # Safety
    /// Called by Python with its view to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: std::ffi::c_int,
    ) -> PyResult<()> {
        let this = slf.get();
        if !this.state.export() {
            return Err(PyBufferError::new_err("this loan was sent or discarded"));
        }
        // SAFETY: the export is counted, so the loan is neither sent nor discarded (and the
        // port stays alive: this object keeps it) until `__releasebuffer__` un-counts it.
        let filled = unsafe { fill_view(view, slf.as_any(), this.addr, this.len, false, flags) };
        if filled.is_err() {
            this.state.unexport();
        }
        filled
    }

    /// # Safety
    /// Called by Python once for each view `__getbuffer__` filled.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        self.state.unexport();
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        // No buffer can be exported now (each holds a reference to this object): finish it
        // unsent, unless it was sent or discarded already. The slot is discarded now if the
        // port is free, else by the publisher's next call (`Core::port`).
        if self.state.finish() != Ok(true) {
            return;
        }
        if let Ok(mut core) = self.shared.core.try_lock() {
            if core
                .current
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, &self.state))
            {
                core.current = None;
                if let Some(held) = core.held.as_mut() {
                    held.discard();
                }
            }
        }
    }
}
