//! Opaque handles and how a pointer from C is checked before it is used.
//!
//! A handle is a heap block: a magic word naming its kind, a "busy" flag, and the Rust value.
//! What is detected, and how:
//!
//! * NULL: always (`SHMBUS_ERR_NULL`).
//! * A double close, or closing something that is not a live handle of that kind: always.
//!   Closing looks the address up in a table of live handles before touching the memory
//!   (`SHMBUS_ERR_BAD_HANDLE`).
//! * Any call on a handle of the wrong kind, or on one already closed: by the magic word,
//!   which is checked on every call and cleared on close. On the data path (loan, send,
//!   receive, release) only the magic word is checked, to keep those calls as cheap as the
//!   Rust API; a closed handle whose memory was already reused by another allocation can
//!   therefore slip through there. Port-opening and close calls check the table too.
//! * A publisher or subscriber used from two threads at once: a call that starts while
//!   another is inside gets `SHMBUS_ERR_STATE` (the busy flag: a relaxed load and store per
//!   call; two calls entering at the very same instant can both pass).
//! * Not detectable: a pointer that is neither NULL nor ever was a handle, passed to a
//!   data-path call (reading its "magic word" may crash); closing a handle while another
//!   thread is inside a call on it (the close sees it busy and refuses, but a call that starts
//!   after the memory is freed reads freed memory).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::status::{Error, SHMBUS_ERR_BAD_HANDLE};

/// The kinds of handle: each has its own magic word and name.
pub(crate) trait Kind {
    /// Stored in the handle while it lives; cleared on close.
    const MAGIC: u64;
    /// The C type's name, for messages.
    const NAME: &'static str;
}

/// A handle as C sees it: a pointer to this.
pub(crate) struct Handle<T> {
    magic: AtomicU64,
    busy: AtomicBool,
    value: UnsafeCell<T>,
}

/// The addresses of live handles with their magic word. A vector: a program holds few
/// handles, it is searched only off the data path, and (unlike a hash table, whose pointer
/// points inside its block) valgrind sees it as plainly reachable.
static LIVE: Mutex<Vec<(usize, u64)>> = Mutex::new(Vec::new());

fn live<R>(f: impl FnOnce(&mut Vec<(usize, u64)>) -> R) -> R {
    f(&mut LIVE.lock().unwrap_or_else(PoisonError::into_inner))
}

fn position(live: &[(usize, u64)], addr: usize, magic: u64) -> Option<usize> {
    live.iter().position(|&entry| entry == (addr, magic))
}

fn bad<T: Kind>(why: &str) -> Error {
    Error::new(
        SHMBUS_ERR_BAD_HANDLE,
        format!("not a live {}: {why}", T::NAME),
    )
}

impl<T: Kind> Handle<T> {
    /// A new handle owning `value`, registered as live.
    pub(crate) fn into_raw(value: T) -> *mut Handle<T> {
        let ptr = Box::into_raw(Box::new(Handle {
            magic: AtomicU64::new(T::MAGIC),
            busy: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }));
        live(|l| l.push((ptr as usize, T::MAGIC)));
        ptr
    }

    /// Whether `ptr` is registered as a live handle of this kind.
    fn is_live(ptr: *mut Handle<T>) -> bool {
        live(|l| position(l, ptr as usize, T::MAGIC).is_some())
    }

    /// The handle behind `ptr`, after the checks every call makes: NULL, alignment, magic.
    ///
    /// # Safety
    /// `ptr` is NULL or points to readable memory at least the size of a handle (a live
    /// handle, or one closed whose memory has not been returned to the system).
    unsafe fn checked<'a>(ptr: *mut Handle<T>, what: &str) -> Result<&'a Handle<T>, Error> {
        if ptr.is_null() {
            return Err(Error::null(what));
        }
        if !ptr.is_aligned() {
            return Err(bad::<T>("misaligned pointer"));
        }
        // SAFETY: non-NULL and aligned; readable by the caller's contract. Only the atomics
        // are read before the magic word says this is a live handle of this kind.
        let handle = unsafe { &*ptr };
        if handle.magic.load(Ordering::Acquire) != T::MAGIC {
            return Err(bad::<T>("closed already, or another kind of handle"));
        }
        Ok(handle)
    }

    /// Exclusive use of the value for one call; `SHMBUS_ERR_STATE` if another thread is
    /// inside a call on this handle.
    ///
    /// # Safety
    /// As for [`Handle::checked`].
    pub(crate) unsafe fn exclusive<'a>(
        ptr: *mut Handle<T>,
        what: &str,
    ) -> Result<Exclusive<'a, T>, Error> {
        // SAFETY: forwarded contract.
        let handle = unsafe { Handle::checked(ptr, what)? };
        // A plain load and store, not an atomic swap: a locked instruction here cost about
        // 9 ns per call in the 64-byte ping-pong (it drains the store buffer, in which the
        // ring's last stores are still waiting for their cache lines). So two threads that
        // enter at the very same instant can both pass; one entering while another is inside
        // (a blocking receive, say) is always refused.
        if handle.busy.load(Ordering::Relaxed) {
            return Err(Error::state(format!(
                "this {} is in use by another thread right now; use each handle from one \
                 thread at a time",
                T::NAME
            )));
        }
        handle.busy.store(true, Ordering::Relaxed);
        Ok(Exclusive { handle })
    }

    /// Like [`Handle::exclusive`], and also checks the table of live handles (for calls off
    /// the data path).
    ///
    /// # Safety
    /// `ptr` is anything: it is looked up before it is read.
    pub(crate) unsafe fn exclusive_registered<'a>(
        ptr: *mut Handle<T>,
        what: &str,
    ) -> Result<Exclusive<'a, T>, Error> {
        if !ptr.is_null() && !Handle::is_live(ptr) {
            return Err(bad::<T>("closed already, never opened, or another kind"));
        }
        // SAFETY: NULL, or registered live: the memory is a handle of this kind.
        unsafe { Handle::exclusive(ptr, what) }
    }

    /// Shared use of the value, for kinds that are thread-safe (the bus); checks the table of
    /// live handles.
    ///
    /// # Safety
    /// `ptr` is anything: it is looked up before it is read. The value must be `Sync`, and
    /// must not be closed while this reference is used (documented for C callers).
    pub(crate) unsafe fn shared<'a>(ptr: *mut Handle<T>, what: &str) -> Result<&'a T, Error>
    where
        T: Sync,
    {
        if !ptr.is_null() && !Handle::is_live(ptr) {
            return Err(bad::<T>("closed already, never opened, or another kind"));
        }
        // SAFETY: NULL, or registered live.
        let handle = unsafe { Handle::checked(ptr, what)? };
        // SAFETY: `T: Sync`, and only shared references to a thread-safe value are made.
        Ok(unsafe { &*handle.value.get() })
    }

    /// Close the handle: checked against the table of live handles (a double close is an
    /// error, never a double free), refused while another thread is inside a call on it.
    /// NULL is accepted and does nothing, like `free(NULL)`.
    ///
    /// # Safety
    /// `ptr` is anything: it is looked up before it is read.
    pub(crate) unsafe fn close(ptr: *mut Handle<T>) -> Result<(), Error> {
        if ptr.is_null() {
            return Ok(());
        }
        let removed = live(|l| {
            position(l, ptr as usize, T::MAGIC)
                .map(|i| l.swap_remove(i))
                .is_some()
        });
        if !removed {
            return Err(bad::<T>("closed already (a double close), or never opened"));
        }
        // SAFETY: it was registered live, so it is a handle of this kind that nobody freed.
        let handle = unsafe { &*ptr };
        if handle.busy.swap(true, Ordering::Acquire) {
            live(|l| l.push((ptr as usize, T::MAGIC)));
            return Err(Error::state(format!(
                "this {} is in use by another thread; close it when that call returned",
                T::NAME
            )));
        }
        handle.magic.store(0, Ordering::Release);
        // SAFETY: made by `Box::into_raw` in `into_raw`, removed from the live table above so
        // no other close can free it again.
        drop(unsafe { Box::from_raw(ptr) });
        Ok(())
    }
}

/// One call's exclusive use of a handle's value; frees the handle for the next call on drop.
pub(crate) struct Exclusive<'a, T> {
    handle: &'a Handle<T>,
}

impl<T> std::ops::Deref for Exclusive<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the caller's contract (a port is used by one thread at a time, stated in
        // the header) keeps every other call out; the busy flag, set by this guard, turns away
        // a call that breaks it, except one entering at the very same instant.
        unsafe { &*self.handle.value.get() }
    }
}

impl<T> std::ops::DerefMut for Exclusive<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the guard's only reference.
        unsafe { &mut *self.handle.value.get() }
    }
}

impl<T> Drop for Exclusive<'_, T> {
    fn drop(&mut self) {
        self.handle.busy.store(false, Ordering::Release);
    }
}

/// Write `value` to the out-pointer `out` (checked for NULL).
///
/// # Safety
/// `out` is NULL or valid for a write of `V`.
pub(crate) unsafe fn write_out<V>(out: *mut V, value: V, what: &str) -> Result<(), Error> {
    if out.is_null() {
        return Err(Error::null(what));
    }
    if !out.is_aligned() {
        return Err(crate::status::Error::invalid(format!(
            "{what} is misaligned"
        )));
    }
    // SAFETY: non-NULL and aligned, and valid for writes by the caller's contract.
    unsafe { out.write(value) };
    Ok(())
}
