//! Topic segments in `/dev/shm`: creating, sizing, mapping and unlinking them.
//!
//! The daemon creates each segment with `shm_open(O_CREAT | O_EXCL)`, mode 0600, reserves its
//! memory with `fallocate` (so a full `/dev/shm` is a clear error at creation, never a SIGBUS
//! on first touch), writes the header and hands the descriptor to clients over `SCM_RIGHTS`.
//! A publisher maps everything read-write. A subscriber maps the header and the slot ring
//! read-only and only the control block and tables read-write, so a stray write through a
//! sample faults instead of corrupting a message.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

use bus_core::doorbell::Futex;
use bus_core::layout::{
    Geometry, Layout, Mode, SegmentError, SegmentHeader, TypeInfo, HEADER_REGION,
};
use bus_core::ring::Ring;
use bus_core::storage::{RawStorage, Region};

use crate::protocol::{DeliveryMode, TopicSpec};

/// A ring over a mapped segment.
pub type ShmRing = Ring<RawStorage<Mapping>, Futex>;

/// How a process maps a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Everything read-write (the daemon and publishers).
    ReadWrite,
    /// Header and slots read-only, control block and tables read-write (subscribers).
    Subscriber,
}

/// One shared mapping of a segment. Unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is a plain address range; all shared access to it goes through atomics
// or the ring's protocol.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

// SAFETY: mmap returns page-aligned addresses (SEGMENT_PAGE is a multiple of the page size,
// checked in `Mapping::map`), valid for `len` bytes until munmap in Drop; the mapping never
// moves. A subscriber's mapping is read-only over the header and slots, where a subscriber
// never writes.
unsafe impl Region for Mapping {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; nothing borrows the mapping past
        // the life of this value (the ring that uses it owns it).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).unwrap_or(4096)
}

impl Mapping {
    /// Map the whole of `fd` (its size from `fstat`) with `access`. For a subscriber the
    /// header is validated first to find where the slots start.
    pub fn map(fd: BorrowedFd<'_>, access: Access) -> Result<Mapping, OpenError> {
        if !(HEADER_REGION as usize).is_multiple_of(page_size()) {
            return Err(OpenError::Io(io::Error::other(
                "the page size does not divide the segment layout's page; unsupported platform",
            )));
        }
        let len = segment_len(fd)?;
        if len < HEADER_REGION as usize {
            return Err(OpenError::Segment(SegmentError::Truncated(len as u64)));
        }
        let prot = match access {
            Access::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
            Access::Subscriber => libc::PROT_READ,
        };
        // SAFETY: a fresh shared mapping of a file we hold open; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(OpenError::Io(io::Error::last_os_error()));
        }
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| OpenError::Io(io::Error::other("mmap returned a null mapping")))?;
        let mapping = Mapping { ptr, len };
        if access == Access::Subscriber {
            // SAFETY: the mapping is at least a header long and page aligned; the header is
            // plain data, copied out with a volatile read.
            let header = unsafe { std::ptr::read_volatile(ptr.as_ptr() as *const SegmentHeader) };
            let layout = header.validate(len as u64)?;
            let start = HEADER_REGION as usize;
            let rw_len = layout.slots_offset as usize - start;
            // SAFETY: [start, slots_offset) lies inside the mapping (validated layout) and is
            // page aligned at both ends; making it writable changes no Rust-visible borrow.
            let rc = unsafe {
                libc::mprotect(
                    ptr.as_ptr().add(start).cast(),
                    rw_len,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            };
            if rc != 0 {
                return Err(OpenError::Io(io::Error::last_os_error()));
            }
        }
        Ok(mapping)
    }
}

fn segment_len(fd: BorrowedFd<'_>) -> io::Result<usize> {
    // SAFETY: `st` is written by fstat before it is read; the fd is valid for the call.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    usize::try_from(st.st_size).map_err(|_| io::Error::other("negative segment size"))
}

/// Why a segment could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A system call failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The segment failed validation.
    #[error("invalid segment: {0}")]
    Segment(#[from] SegmentError),
}

/// Map `fd` and lay a ring over it, validating every header field.
pub fn open_ring(fd: BorrowedFd<'_>, access: Access) -> Result<Arc<ShmRing>, OpenError> {
    let mapping = Mapping::map(fd, access)?;
    let storage = RawStorage::open(mapping)?;
    Ok(Arc::new(Ring::new(storage, Futex)))
}

/// A segment this daemon created: its `/dev/shm` name and descriptor.
pub struct Segment {
    /// The file name in `/dev/shm` (no leading `/`).
    pub name: String,
    /// The descriptor handed to clients.
    pub fd: OwnedFd,
    /// The ring, mapped read-write.
    pub ring: Arc<ShmRing>,
}

fn shm_path(name: &str) -> io::Result<CString> {
    CString::new(format!("/{name}")).map_err(|_| io::Error::other("segment name has a NUL byte"))
}

/// Create segment `name` for `layout`: exclusive, mode 0600, memory reserved, initialised.
pub fn create_segment(name: &str, layout: &Layout) -> Result<Segment, OpenError> {
    let path = shm_path(name)?;
    // SAFETY: `path` is a valid C string; O_EXCL never opens someone else's file.
    let raw = unsafe {
        libc::shm_open(
            path.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC,
            0o600 as libc::mode_t,
        )
    };
    if raw < 0 {
        return Err(OpenError::Io(io::Error::last_os_error()));
    }
    // SAFETY: shm_open returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let result = (|| {
        let len = layout.total_len as libc::off_t;
        // SAFETY: a valid descriptor; fallocate on tmpfs reserves the pages or fails cleanly
        // with ENOSPC (a full /dev/shm), instead of a SIGBUS on first touch later.
        let rc = unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, len) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(OpenError::Io(io::Error::new(
                e.kind(),
                format!(
                    "cannot reserve {} bytes in /dev/shm for the topic ({e}); free space there, \
                     enlarge it (containers default to 64 MiB), or make the topic smaller",
                    layout.total_len
                ),
            )));
        }
        let mapping = Mapping::map(fd.as_fd(), Access::ReadWrite)?;
        let storage = RawStorage::create(mapping, layout)?;
        Ok(Arc::new(Ring::new(storage, Futex)))
    })();
    match result {
        Ok(ring) => Ok(Segment {
            name: name.to_string(),
            fd,
            ring,
        }),
        Err(e) => {
            unlink_segment(name);
            Err(e)
        }
    }
}

/// Open an existing segment `name` read-write and validate it (a restarted daemon adopting the
/// topics of the one before it).
pub fn open_segment(name: &str) -> Result<Segment, OpenError> {
    let path = shm_path(name)?;
    // SAFETY: `path` is a valid C string; O_NOFOLLOW-free shm names cannot be links.
    let raw = unsafe { libc::shm_open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
    if raw < 0 {
        return Err(OpenError::Io(io::Error::last_os_error()));
    }
    // SAFETY: shm_open returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let ring = open_ring(fd.as_fd(), Access::ReadWrite)?;
    Ok(Segment {
        name: name.to_string(),
        fd,
        ring,
    })
}

/// Remove segment `name` from `/dev/shm` (mappings stay valid until unmapped).
pub fn unlink_segment(name: &str) {
    if let Ok(path) = shm_path(name) {
        // SAFETY: a valid C string; unlinking a name we created.
        unsafe { libc::shm_unlink(path.as_ptr()) };
    }
}

/// The ring geometry a topic spec describes.
pub fn geometry_of(spec: &TopicSpec) -> Geometry {
    Geometry {
        capacity: spec.capacity,
        slot_size: spec.slot_size,
        mode: match spec.mode {
            DeliveryMode::Lossless => Mode::Lossless,
            DeliveryMode::Lossy => Mode::Lossy,
        },
        max_publishers: spec.max_publishers,
        max_subscribers: spec.max_subscribers,
        type_info: if spec.type_size == 0 && spec.type_name.is_empty() {
            TypeInfo::bytes()
        } else {
            TypeInfo {
                name: spec.type_name.clone(),
                size: spec.type_size,
                align: spec.type_align,
            }
        },
    }
}

/// The topic spec a ring geometry describes.
pub fn spec_of(g: &Geometry) -> TopicSpec {
    TopicSpec {
        capacity: g.capacity,
        slot_size: g.slot_size,
        mode: match g.mode {
            Mode::Lossless => DeliveryMode::Lossless,
            Mode::Lossy => DeliveryMode::Lossy,
        },
        max_publishers: g.max_publishers,
        max_subscribers: g.max_subscribers,
        type_name: g.type_info.name.clone(),
        type_size: g.type_info.size,
        type_align: g.type_info.align,
    }
}
