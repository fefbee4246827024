//! The daemon's status page: one shared page beside the socket, `<socket>.status`, holding the
//! epoch of the daemon that serves it.
//!
//! Clients get a read-only descriptor of it with `HelloOk` and map it. Every port reads the
//! epoch before each call (one load from a line that is never written while the daemon runs).
//! A restarted daemon reopens the same file and writes its new epoch, and so every port of
//! every client learns of the restart at its next call, re-connects and hands the topic's
//! segment files back (`Reattach`). The file is the daemon's (mode 0600, in the daemon's own
//! socket directory); a client's read-only descriptor can neither write nor resize it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Appended to the socket path to name the status page.
pub const STATUS_SUFFIX: &str = ".status";

/// The size of the status page.
pub const STATUS_LEN: usize = 4096;

const MAGIC: u64 = u64::from_le_bytes(*b"SHMBUSST");

#[repr(C)]
struct Page {
    magic: AtomicU64,
    epoch: AtomicU32,
    pid: AtomicU32,
}

/// The status page path for a socket path.
pub fn status_path_for(socket: &Path) -> PathBuf {
    let mut s = socket.as_os_str().to_os_string();
    s.push(STATUS_SUFFIX);
    PathBuf::from(s)
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
        // SAFETY: exactly the mapping made in `map_fd`, not used after this.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), STATUS_LEN) };
    }
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other("NUL in a path"))
}

fn open(path: &CString, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    // SAFETY: a valid C string; open returns a fresh descriptor or -1.
    let raw = unsafe {
        libc::open(
            path.as_ptr(),
            flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            libc::c_uint::from(mode),
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

impl StatusPage {
    /// The daemon: create (or reopen, after a daemon that died) the status page of `socket`,
    /// write `epoch` into it, and return it with a read-only descriptor for clients.
    pub fn publish(socket: &Path, uid: u32, epoch: u32) -> io::Result<(StatusPage, OwnedFd)> {
        let path = cpath(&status_path_for(socket))?;
        let fd = open(&path, libc::O_RDWR | libc::O_CREAT, 0o600)?;
        // SAFETY: `st` is written by fstat before it is read.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_uid != uid {
            return Err(io::Error::other(
                "the status page path is not a regular file of the daemon's uid",
            ));
        }
        // SAFETY: a valid descriptor of our own file.
        if unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if st.st_size != STATUS_LEN as libc::off_t {
            // SAFETY: a valid descriptor of our own file; only the daemon's uid can resize it.
            if unsafe { libc::ftruncate(fd.as_raw_fd(), STATUS_LEN as libc::off_t) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let page = StatusPage::map_fd(fd.as_fd(), libc::PROT_READ | libc::PROT_WRITE)?;
        let p = page.page();
        p.pid.store(std::process::id(), Ordering::Relaxed);
        p.magic.store(MAGIC, Ordering::Relaxed);
        // Release: the magic and pid are visible to whoever sees the new epoch.
        p.epoch.store(epoch, Ordering::Release);
        let ro = open(&path, libc::O_RDONLY, 0)?;
        Ok((page, ro))
    }

    /// A client: map the page the daemon handed over (read-only) and check it is one.
    pub fn map(fd: BorrowedFd<'_>) -> io::Result<StatusPage> {
        // SAFETY: `st` is written by fstat before it is read.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if st.st_size < STATUS_LEN as libc::off_t {
            return Err(io::Error::other("the daemon's status page is too short"));
        }
        let page = StatusPage::map_fd(fd, libc::PROT_READ)?;
        if page.page().magic.load(Ordering::Acquire) != MAGIC {
            return Err(io::Error::other("the daemon's status page is not one"));
        }
        Ok(page)
    }

    fn map_fd(fd: BorrowedFd<'_>, prot: libc::c_int) -> io::Result<StatusPage> {
        // SAFETY: a fresh shared mapping of one page of a file at least that long (checked by
        // the callers); the kernel picks the address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                STATUS_LEN,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<Page>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(StatusPage { ptr })
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

    /// Remove the status page of `socket` (a daemon that stops cleanly).
    pub fn remove(socket: &Path) {
        let _ = std::fs::remove_file(status_path_for(socket));
    }
}
