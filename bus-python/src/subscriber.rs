//! `shmbus.Subscriber` and `shmbus.Sample`: receive messages that Python reads in place.
//!
//! **Sample lifetime.** A subscriber holds at most one sample: the Rust port lends one slot at
//! a time. The sample is a Python object exporting the slot through the buffer protocol
//! (`memoryview(sample)`, `numpy.frombuffer(sample, ...)` read the slot itself), and it counts
//! those exported buffers ([`ExportState`]). The next receive releases the previous sample
//! first, if nothing views it any more; if a buffer still does, the receive raises
//! `SampleInUseError` instead, so a live numpy array never sees its slot reused. Releasing
//! explicitly (`sample.release()`, `with sub.recv() as sample:`) or dropping the last
//! reference (garbage collection) gives the slot back at once. A sample keeps its subscriber's
//! Rust port (and so the mapping) alive, so it can never outlive the memory it points to.
//!
//! **asyncio.** `await sub.recv_async()` and `async for sample in sub` are written in Python
//! (`shmbus/_aio.py`) over two private methods here: `_wait_fd` (the descriptor of a wait set
//! watching this subscriber alone, made at the first asynchronous receive) and `_wait_poll`
//! (consume its wake-up and re-arm it, without blocking). The event loop watches the
//! descriptor with `add_reader`: no thread, no polling loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bus_client::held::{HeldError, HeldSubscriber};
use std::os::fd::{AsFd, AsRawFd};

use bus_client::{
    Attachment, Geometry, Mode, Presence, PresencePort, RawSubscriber, RecvTimeoutError,
    TryRecvError, WaitSet,
};
use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::{ffi, PyErr};

use crate::errors::{ClosedError, IntoPy, SampleInUseError, StateError};
use crate::exports::{fill_view, ExportState};

/// Longest wait without a look at Python's signals (so Ctrl-C interrupts a blocking receive).
pub(crate) const SLICE: Duration = Duration::from_millis(100);

/// How long a receive polls with the GIL held before it releases the GIL to wait.
const GIL_SPIN: Duration = Duration::from_micros(5);

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Core {
    /// `None` once closed.
    held: Option<HeldSubscriber>,
    /// The export state of the sample the port holds, if it holds one.
    current: Option<Arc<ExportState>>,
}

impl Core {
    /// Release the held sample if nothing views it; `Err(n)` if `n` buffers still do.
    fn settle(&mut self) -> Result<(), u64> {
        if let Some(state) = &self.current {
            state.finish()?;
            self.current = None;
            if let Some(held) = self.held.as_mut() {
                held.release();
            }
        }
        Ok(())
    }
}

/// The wait set of asynchronous receives: this subscriber alone.
struct AsyncWait {
    /// Dropped (giving its wake slot back) before the set.
    _attachment: Attachment,
    set: WaitSet,
}

struct Shared {
    /// Locked only with the GIL released: a thread blocked in a receive holds it.
    core: Mutex<Core>,
    /// Made at the first asynchronous receive; dropped on close. Locked with the GIL
    /// released, never while `core` is held by the same thread (it is taken first).
    waiter: Mutex<Option<AsyncWait>>,
    topic: String,
    spec: Geometry,
    lagged: AtomicU64,
    /// The number of publishers, readable without the port.
    presence: Presence,
}

fn in_use(n: u64) -> PyErr {
    SampleInUseError::new_err(format!(
        "{n} buffer(s) (a memoryview or numpy array) still view the previous sample; delete \
         them (or copy what you need, e.g. bytes(sample) or array.copy()) before the next \
         receive"
    ))
}

/// Receives the messages of one topic. Iterate over it, or call `recv`.
#[pyclass(module = "shmbus", frozen)]
pub(crate) struct Subscriber {
    shared: Arc<Shared>,
    /// Whether a receive may poll briefly with the GIL held (not with wait="block").
    spin: bool,
}

/// What one attempt at receiving came to (computed without the GIL).
enum Got {
    Sample(usize, usize, u64, Arc<ExportState>),
    TimedOut,
    Empty,
    InUse(u64),
    Closed,
    Failed(RecvTimeoutError),
}

impl Subscriber {
    pub(crate) fn new(port: RawSubscriber, spin: bool) -> Subscriber {
        let (topic, spec) = (port.topic().to_string(), port.spec().clone());
        let presence = port.presence();
        Subscriber {
            shared: Arc::new(Shared {
                core: Mutex::new(Core {
                    held: Some(HeldSubscriber::new(port)),
                    current: None,
                }),
                waiter: Mutex::new(None),
                topic,
                spec,
                lagged: AtomicU64::new(0),
                presence,
            }),
            spin,
        }
    }

    /// One attempt, with the port locked: `None` = don't wait, else wait at most that long.
    fn attempt(&self, core: &mut Core, wait: Option<Duration>) -> Got {
        if let Err(n) = core.settle() {
            return Got::InUse(n);
        }
        let Some(held) = core.held.as_mut() else {
            return Got::Closed;
        };
        let received = match wait {
            Some(t) => held.recv_timeout(t),
            None => held.try_recv().map_err(|e| match e {
                HeldError::Port(TryRecvError::Empty) => HeldError::Port(RecvTimeoutError::Timeout),
                HeldError::Port(TryRecvError::Lagged(n)) => {
                    HeldError::Port(RecvTimeoutError::Lagged(n))
                }
                HeldError::Port(TryRecvError::Evicted) => {
                    HeldError::Port(RecvTimeoutError::Evicted)
                }
                HeldError::Port(_) => HeldError::Port(RecvTimeoutError::Closed),
                HeldError::Busy => HeldError::Busy,
            }),
        };
        match received {
            Ok(s) => {
                let got = (s.bytes().as_ptr() as usize, s.len(), s.sequence());
                let state = Arc::new(ExportState::default());
                core.current = Some(state.clone());
                Got::Sample(got.0, got.1, got.2, state)
            }
            Err(HeldError::Port(RecvTimeoutError::Timeout)) if wait.is_none() => Got::Empty,
            Err(HeldError::Port(RecvTimeoutError::Timeout)) => Got::TimedOut,
            Err(HeldError::Port(e)) => {
                if let RecvTimeoutError::Lagged(n) = e {
                    self.shared.lagged.fetch_add(n, Ordering::Relaxed);
                }
                Got::Failed(e)
            }
            // `settle` above left nothing held.
            Err(HeldError::Busy) => Got::InUse(0),
        }
    }

    /// What an attempt means to the caller: an answer, or `None` to wait again.
    fn answer(&self, got: Got) -> Option<PyResult<Option<Sample>>> {
        Some(match got {
            Got::Sample(addr, len, sequence, state) => Ok(Some(Sample {
                shared: self.shared.clone(),
                state,
                addr,
                len,
                sequence,
            })),
            Got::TimedOut => return None,
            Got::Empty => Ok(None),
            Got::InUse(n) => Err(in_use(n)),
            Got::Closed => Err(ClosedError::new_err("this subscriber is closed")),
            Got::Failed(e) => Err(e.into_py()),
        })
    }

    /// Receive, waiting at most `timeout` (`None`: forever; `Some(ZERO)`: not at all), in
    /// slices with the GIL released, looking at signals between them. `Ok(None)`: nothing.
    fn receive(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<Option<Sample>> {
        let no_wait = timeout == Some(Duration::ZERO);
        // A message that is ready is taken without releasing the GIL: `try_lock` never blocks
        // (if another thread is inside the port, the slow path below waits for it).
        // A message due within microseconds (a ping-pong) is also awaited with the GIL held,
        // for at most `GIL_SPIN`, unless the subscriber was opened with wait="block": giving
        // the GIL up and taking it back costs more than that wait. Other threads of this
        // process wait at most that long (Python itself switches threads every 5 ms).
        if let Ok(mut core) = self.shared.core.try_lock() {
            let spin_until = (!no_wait && self.spin).then(|| Instant::now() + GIL_SPIN);
            loop {
                match self.attempt(&mut core, None) {
                    Got::Empty if spin_until.is_some_and(|t| Instant::now() < t) => {
                        std::hint::spin_loop();
                    }
                    Got::Empty if !no_wait => break,
                    got => {
                        drop(core);
                        if let Some(answer) = self.answer(got) {
                            return answer;
                        }
                        break;
                    }
                }
            }
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let wait = match deadline {
                _ if no_wait => None,
                Some(d) => Some(d.saturating_duration_since(Instant::now()).min(SLICE)),
                None => Some(SLICE),
            };
            let got = py.detach(|| self.attempt(&mut lock(&self.shared.core), wait));
            if let Some(answer) = self.answer(got) {
                return answer;
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }
}

#[pymethods]
impl Subscriber {
    /// The next message, waiting for it (at most `timeout` seconds; None: as long as it
    /// takes, interruptible with Ctrl-C). Raises TimeoutError, LaggedError (lossy topics;
    /// `lost` says how many; the next call reads on), ClosedError once the topic is closed
    /// and drained, SampleInUseError if a buffer still views the previous sample. The GIL is
    /// released while waiting.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Sample> {
        let timeout = match timeout {
            Some(t) if t.is_finite() && t >= 0.0 => Some(Duration::from_secs_f64(t)),
            Some(t) => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "timeout {t} is not a number of seconds >= 0"
                )))
            }
            None => None,
        };
        match self.receive(py, timeout)? {
            Some(sample) => Ok(sample),
            None => Err(pyo3::exceptions::PyTimeoutError::new_err(format!(
                "no message on '{}' within {:?} s",
                self.shared.topic,
                timeout.map(|t| t.as_secs_f64()).unwrap_or(0.0)
            ))),
        }
    }

    /// The next message if one is ready, else None (never waits).
    fn try_recv(&self, py: Python<'_>) -> PyResult<Option<Sample>> {
        self.receive(py, Some(Duration::ZERO))
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The next message, awaited in asyncio without blocking the event loop (and without a
    /// thread): the loop watches a descriptor that the publisher's commit makes readable.
    /// Cancelling it loses no message (none is taken until it returns). Raises as `recv`.
    /// One task at a time receives from a subscriber (a second concurrent `recv_async` raises
    /// StateError).
    fn recv_async<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let aio = slf.py().import("shmbus._aio")?;
        aio.getattr("recv_async")?.call1((slf,))
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The next message for `async for`; the iteration ends when the topic is closed and
    /// drained. Lagged messages (lossy topics) are skipped and counted in `lagged`.
    fn __anext__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let aio = slf.py().import("shmbus._aio")?;
        aio.getattr("anext")?.call1((slf,))
    }

    /// Private (for `shmbus._aio`): the descriptor that becomes readable when a message may
    /// have arrived, made (with its wake slot on the topic) at the first call. Releases a held
    /// sample first, as a receive does.
    fn _wait_fd(&self, py: Python<'_>) -> PyResult<i32> {
        py.detach(|| {
            let mut waiter = lock(&self.shared.waiter);
            if waiter.is_none() {
                let mut core = lock(&self.shared.core);
                core.settle().map_err(in_use)?;
                let held = core
                    .held
                    .as_ref()
                    .ok_or_else(|| ClosedError::new_err("this subscriber is closed"))?;
                let port = held
                    .port()
                    .ok_or_else(|| StateError::new_err("a sample is still held"))?;
                let mut set = WaitSet::new().map_err(IntoPy::into_py)?;
                let attachment = set.attach_raw_subscriber(port).map_err(IntoPy::into_py)?;
                // The first pass arms the wake slot.
                set.try_wait().map_err(IntoPy::into_py)?;
                *waiter = Some(AsyncWait {
                    _attachment: attachment,
                    set,
                });
            }
            match waiter.as_ref() {
                Some(w) => Ok(w.set.as_fd().as_raw_fd()),
                None => Err(ClosedError::new_err("this subscriber is closed")),
            }
        })
    }

    /// Private (for `shmbus._aio`): consume the descriptor's wake-up and re-arm it, without
    /// blocking; returns how many seconds the event loop may wait for the descriptor before
    /// calling again (the wait set's periodic check, which follows a restarted daemon).
    fn _wait_poll(&self, py: Python<'_>) -> PyResult<f64> {
        py.detach(|| {
            let mut waiter = lock(&self.shared.waiter);
            let Some(w) = waiter.as_mut() else {
                return Ok(0.0);
            };
            w.set.try_wait().map_err(IntoPy::into_py)?;
            Ok(w.set.timeout_hint().map_or(0.1, |d| d.as_secs_f64()))
        })
    }

    /// The next message; the iteration ends when the topic is closed and drained. Lagged
    /// messages (lossy topics) are skipped and counted in `lagged`.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Sample>> {
        loop {
            match self.receive(py, None) {
                Ok(sample) => return Ok(sample),
                Err(e) if e.is_instance_of::<crate::errors::LaggedError>(py) => continue,
                Err(e) if e.is_instance_of::<ClosedError>(py) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// Publishers attached to the topic now, read from shared memory: cheap enough to read
    /// per message.
    #[getter]
    fn publisher_count(&self) -> usize {
        self.shared.presence.count()
    }

    /// Wait until at least `n` publishers are attached (at most `timeout` seconds; None: as
    /// long as it takes, interruptible with Ctrl-C); returns how many are. Raises
    /// TimeoutError, or ClosedError if the topic closes. The GIL is released while waiting.
    #[pyo3(signature = (n, timeout=None))]
    fn wait_for_publishers(
        &self,
        py: Python<'_>,
        n: usize,
        timeout: Option<f64>,
    ) -> PyResult<usize> {
        crate::presence::wait_for(py, &self.shared.presence, n, timeout, "publisher(s)")
    }

    /// Messages lost to lag so far (lossy topics).
    #[getter]
    fn lagged(&self) -> u64 {
        self.shared.lagged.load(Ordering::Relaxed)
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

    /// Detach from the topic (releasing a held sample). Raises SampleInUseError if a buffer
    /// still views the held sample.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| {
            *lock(&self.shared.waiter) = None;
            let mut core = lock(&self.shared.core);
            core.settle()?;
            core.held = None;
            Ok(())
        })
        .map_err(in_use)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("shmbus.Subscriber(topic={:?})", self.shared.topic)
    }
}

/// A received message. It supports the buffer protocol, read-only and without a copy:
/// `memoryview(sample)`, `numpy.frombuffer(sample, dtype)` and `bytes(sample)` read the slot
/// in shared memory. It holds the slot until released: `sample.release()`, the end of a
/// `with` block, garbage collection, or the subscriber's next receive (which refuses, with
/// SampleInUseError, while a buffer still views it).
#[pyclass(module = "shmbus", frozen)]
pub(crate) struct Sample {
    shared: Arc<Shared>,
    state: Arc<ExportState>,
    addr: usize,
    len: usize,
    sequence: u64,
}

#[pymethods]
impl Sample {
    /// The message's sequence number on its topic (from 0).
    #[getter]
    fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Whether the sample was released (its bytes can no longer be read).
    #[getter]
    fn released(&self) -> bool {
        self.state.is_finished()
    }

    /// The address of the message in this process (for checking zero copy).
    #[getter]
    fn address(&self) -> usize {
        self.addr
    }

    fn __len__(&self) -> usize {
        self.len
    }

    /// A copy of the bytes.
    fn __bytes__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        if !self.state.export() {
            return Err(released());
        }
        // SAFETY: counted as exported, the sample cannot be released until `unexport`; the
        // slot holds `len` bytes at `addr`.
        let bytes = PyBytes::new(py, unsafe {
            std::slice::from_raw_parts(self.addr as *const u8, self.len)
        });
        self.state.unexport();
        Ok(bytes)
    }

    /// Give the slot back now. Raises SampleInUseError if a buffer still views it.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        if self.state.is_finished() {
            // Released already: no need to wait for a thread that may be blocked in the port.
            return Ok(());
        }
        py.detach(|| {
            let mut core = lock(&self.shared.core);
            match &core.current {
                Some(current) if Arc::ptr_eq(current, &self.state) => core.settle(),
                // Released already (by a later receive or an earlier release).
                _ => Ok(()),
            }
        })
        .map_err(in_use)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.release(py)?;
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
            return Err(released());
        }
        // SAFETY: the export is counted, so the slot stays held (and the port mapped: this
        // object keeps it) until `__releasebuffer__` un-counts it.
        let filled = unsafe { fill_view(view, slf.as_any(), this.addr, this.len, true, flags) };
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

    fn __repr__(&self) -> String {
        format!(
            "shmbus.Sample(topic={:?}, sequence={}, len={}{})",
            self.shared.topic,
            self.sequence,
            self.len,
            if self.state.is_finished() {
                ", released"
            } else {
                ""
            }
        )
    }
}

fn released() -> PyErr {
    PyBufferError::new_err(
        "this sample was released (by release(), the end of its with block, or the \
         subscriber's next receive); copy what you need before that",
    )
}

impl Drop for Sample {
    fn drop(&mut self) {
        // No buffer can be exported now: each holds a reference to this object. So this
        // finishes the sample unless it was finished already.
        if self.state.finish() != Ok(true) {
            return;
        }
        // Give the slot back now if the port is free; otherwise the thread inside the port
        // (a receive, a close) settles it on its next look: `settle` sees it finished.
        if let Ok(mut core) = self.shared.core.try_lock() {
            if core
                .current
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, &self.state))
            {
                let _ = core.settle();
            }
        }
    }
}
