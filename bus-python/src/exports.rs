//! Buffers shared with Python without a copy: how a sample or a loan counts the buffers
//! exported from it (memoryviews, numpy arrays), so that its slot is never released or sent
//! while one of them can still read or write it; and the read-only view of a bytes-like
//! argument.

use std::ffi::c_int;
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;
use pyo3::{ffi, PyErr};

/// Set once the sample or loan is finished (released, sent, discarded); its memory is then
/// no longer this object's to hand out.
const FINISHED: u64 = 1 << 63;

/// The life of one sample or loan: live with `n` buffers exported, or finished. One atomic
/// word, so that "no buffer is exported" and "finish" are decided together: a buffer can
/// never be exported after the check that let the slot go.
#[derive(Debug, Default)]
pub(crate) struct ExportState {
    word: AtomicU64,
}

impl ExportState {
    /// Count one more exported buffer; `false` once finished.
    pub(crate) fn export(&self) -> bool {
        let mut now = self.word.load(Ordering::Acquire);
        loop {
            if now & FINISHED != 0 {
                return false;
            }
            match self
                .word
                .compare_exchange(now, now + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(seen) => now = seen,
            }
        }
    }

    /// One exported buffer was released.
    pub(crate) fn unexport(&self) {
        self.word.fetch_sub(1, Ordering::AcqRel);
    }

    /// Finish, if no buffer is exported: `Ok(true)` if this call finished it, `Ok(false)` if
    /// it was finished already, `Err(n)` with the number of buffers still exported.
    pub(crate) fn finish(&self) -> Result<bool, u64> {
        match self
            .word
            .compare_exchange(0, FINISHED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(true),
            Err(now) if now & FINISHED != 0 => Ok(false),
            Err(n) => Err(n),
        }
    }

    /// Whether it is finished.
    pub(crate) fn is_finished(&self) -> bool {
        self.word.load(Ordering::Acquire) & FINISHED != 0
    }
}

/// Fill `view` for a buffer of `len` bytes at `addr`, owned by `owner`.
///
/// # Safety
/// `view` is the pointer Python passed to `__getbuffer__`; the memory at `addr` stays valid
/// (and, if `!readonly`, writable) until `__releasebuffer__` is called for this view, which
/// the caller guarantees by counting the export in an [`ExportState`] first.
pub(crate) unsafe fn fill_view(
    view: *mut ffi::Py_buffer,
    owner: &Bound<'_, PyAny>,
    addr: usize,
    len: usize,
    readonly: bool,
    flags: c_int,
) -> PyResult<()> {
    if view.is_null() {
        return Err(PyBufferError::new_err("no view to fill"));
    }
    let len = isize::try_from(len).map_err(|_| PyBufferError::new_err("buffer too large"))?;
    // SAFETY: `view` is Python's, non-NULL; `addr` is valid for `len` bytes by the contract.
    // PyBuffer_FillInfo takes its own reference to `owner` (released with the view), and
    // refuses a writable request on a read-only buffer.
    let rc = unsafe {
        ffi::PyBuffer_FillInfo(
            view,
            owner.as_ptr(),
            addr as *mut std::ffi::c_void,
            len,
            c_int::from(readonly),
            flags,
        )
    };
    if rc != 0 {
        return Err(PyErr::fetch(owner.py()));
    }
    Ok(())
}

/// A bytes-like argument (bytes, bytearray, memoryview, a contiguous numpy array) seen as
/// bytes, without a copy; released on drop.
pub(crate) struct BytesView {
    view: ffi::Py_buffer,
}

// SAFETY: the view only describes memory that its exporter keeps alive (and unresized) until
// `PyBuffer_Release`, which runs in `Drop` with the GIL held; in between, the bytes may be
// read from any thread (like `bytes` passed to a `write` that released the GIL).
unsafe impl Send for BytesView {}
// SAFETY: shared access only reads the bytes; see `Send`.
unsafe impl Sync for BytesView {}

impl BytesView {
    /// A C-contiguous byte view of `obj`.
    pub(crate) fn new(obj: &Bound<'_, PyAny>) -> PyResult<BytesView> {
        let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
        // SAFETY: `view` is written by PyObject_GetBuffer before it returns 0; PyBUF_SIMPLE
        // asks for one C-contiguous block of bytes.
        let rc =
            unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), ffi::PyBUF_SIMPLE) };
        if rc != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(BytesView {
            // SAFETY: filled by the successful call above.
            view: unsafe { view.assume_init() },
        })
    }

    /// The bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        if self.view.len <= 0 || self.view.buf.is_null() {
            return &[];
        }
        // SAFETY: a simple buffer is `len` contiguous bytes at `buf`, kept alive until the
        // view is released in `Drop`, which cannot happen while `&self` is borrowed.
        unsafe { std::slice::from_raw_parts(self.view.buf as *const u8, self.view.len as usize) }
    }
}

impl Drop for BytesView {
    fn drop(&mut self) {
        Python::attach(|_| {
            // SAFETY: the view was filled by PyObject_GetBuffer and is released once, here,
            // with the GIL held.
            unsafe { ffi::PyBuffer_Release(&mut self.view) }
        });
    }
}
