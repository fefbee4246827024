//! The daemon's status page: one shared page beside the socket, `<socket>.status`, holding the
//! epoch of the daemon that serves it.
//!
//! ```text
//!  0   magic   u64   "SHMBUSST"
//!  8   epoch   u32   the serving daemon's incarnation (never 0)
//!  12  pid     u32   the serving daemon's process id
//!  ... zero up to 4096
//! ```
//!
//! Clients get a read-only descriptor of it with `HelloOk` and map it ([`StatusPage::map`]).
//! Every port reads the epoch before each call (one load from a line that is never written
//! while the daemon runs). A restarted daemon reopens the same file and writes its new epoch,
//! and so every port of every client learns of the restart at its next call, re-connects and
//! hands the topic's segment files back (`Reattach`). The file is the daemon's (mode 0600, in
//! its own socket directory); a client's read-only descriptor can neither write nor resize it.
//! The daemon creates the file (`bus-daemon`'s `status` module) and writes it with
//! [`StatusPage::map_writable`] and [`StatusPage::publish`].

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

/// The size of the status page.
pub const STATUS_LEN: usize = 4096;

const MAGIC: u64 = u64::from_le_bytes(*b"SHMBUSST");

#[repr(C)]
struct Page {
    magic: AtomicU64,
    epoch: AtomicU32,
    pid: AtomicU32,
}

/// A mapping of the status page (read-write in the daemon, read-only in clients).
#[derive(Debug)]
pub struct StatusPage {
    ptr: NonNull<Page>,
}

// SAFETY: the page is only accessed through atomics.
unsafe impl Send for StatusPage {}
// SAFETY: as above.
unsafe impl Sync for StatusPage {}

impl Drop for StatusPage {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `map_fd`, not used after this (nothing borrows
        // the page beyond `&self`).
        let _ = unsafe { munmap(self.ptr.cast(), STATUS_LEN) };
    }
}

impl StatusPage {
    /// A client: map the page the daemon handed over (read-only) and check it is one.
    pub fn map(fd: BorrowedFd<'_>) -> io::Result<StatusPage> {
        let page = StatusPage::map_fd(fd, ProtFlags::PROT_READ)?;
        if page.page().magic.load(Ordering::Acquire) != MAGIC {
            return Err(io::Error::other("the daemon's status page is not one"));
        }
        Ok(page)
    }

    /// The daemon: map its own status file read-write (the file must be [`STATUS_LEN`] long).
    pub fn map_writable(fd: BorrowedFd<'_>) -> io::Result<StatusPage> {
        StatusPage::map_fd(fd, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE)
    }

    /// The daemon: announce itself as the one serving the socket. Clients that see the epoch
    /// change follow the new daemon.
    pub fn publish(&self, epoch: u32, pid: u32) {
        let p = self.page();
        p.pid.store(pid, Ordering::Relaxed);
        p.magic.store(MAGIC, Ordering::Relaxed);
        // Release: the magic and pid are visible to whoever sees the new epoch.
        p.epoch.store(epoch, Ordering::Release);
    }

    fn map_fd(fd: BorrowedFd<'_>, prot: ProtFlags) -> io::Result<StatusPage> {
        let st = nix::sys::stat::fstat(fd)?;
        if st.st_size < STATUS_LEN as i64 {
            return Err(io::Error::other("the daemon's status page is too short"));
        }
        let len = NonZeroUsize::new(STATUS_LEN).ok_or_else(|| io::Error::other("empty page"))?;
        // SAFETY: a fresh shared mapping of the first page of a file at least that long
        // (checked above); the kernel picks the address, so nothing else is replaced.
        let p = unsafe { mmap(None, len, prot, MapFlags::MAP_SHARED, fd, 0) }?;
        Ok(StatusPage { ptr: p.cast() })
    }

    fn page(&self) -> &Page {
        // SAFETY: the mapping is a page long, page aligned, and lives as long as `self`;
        // `Page` is atomics only, valid for any bit pattern.
        unsafe { self.ptr.as_ref() }
    }

    /// The epoch of the daemon serving the socket (or of the last one, if it died).
    #[inline]
    pub fn epoch(&self) -> u32 {
        self.page().epoch.load(Ordering::Acquire)
    }

    /// The pid of that daemon.
    pub fn pid(&self) -> u32 {
        self.page().pid.load(Ordering::Relaxed)
    }
}
