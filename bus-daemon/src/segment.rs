//! Topic segments: creating, sealing, checking and mapping them.
//!
//! A topic lives in two sealed memory files (`memfd_create`), never in a named file:
//!
//! * the **data** file holds the header page and the slot ring;
//! * the **control** file holds the control block and the publisher and subscriber tables.
//!
//! Both are sealed against shrinking and growing (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`),
//! so no process that holds a descriptor can truncate the memory under another and kill it
//! with `SIGBUS`. Both are mode 0600 and owned by the daemon's uid. Publishers get both files
//! read-write. Subscribers get the control file read-write and a **read-only** descriptor of
//! the data file: they cannot map a sample writable, nor `mprotect` it writable later, nor
//! reopen the descriptor read-write through `/proc` (the file is 0600 and not theirs).
//!
//! Every mapping puts the two files side by side in one address range, in the order of the
//! layout in `bus_core::layout` (header from the data file, control and tables from the control
//! file, slots from the data file again), so the ring sees one contiguous segment.
//!
//! Nothing is ever left in `/dev/shm`: the memory is freed when the last process holding a
//! descriptor or a mapping goes away. A restarted daemon gets a topic's files back from the
//! ports that re-attach (see `server`).

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
use serde::{Deserialize, Serialize};

use crate::protocol::{DeliveryMode, TopicSpec};

/// A ring over a mapped segment.
pub type ShmRing = Ring<RawStorage<Mapping>, Futex>;

/// The seals every segment file carries.
pub const SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// How a process maps a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Everything read-write (the daemon and publishers).
    ReadWrite,
    /// Header and slots read-only, control block and tables read-write (subscribers).
    Subscriber,
}

/// The two descriptors of a segment.
#[derive(Debug)]
pub struct SegmentFds {
    /// Control block and tables.
    pub control: OwnedFd,
    /// Header and slots (read-only for subscribers).
    pub data: OwnedFd,
}

impl SegmentFds {
    /// Duplicates of both descriptors.
    pub fn try_clone(&self) -> io::Result<SegmentFds> {
        Ok(SegmentFds {
            control: self.control.try_clone()?,
            data: self.data.try_clone()?,
        })
    }
}

/// Which file a descriptor refers to: device and inode, stable while the file lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
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

// SAFETY: the range is one mmap reservation, page aligned (SEGMENT_PAGE is a multiple of the
// page size, checked in `Mapping::map`), valid for `len` bytes until munmap in Drop; it never
// moves, and every page of it is backed by a sealed file that cannot shrink, so no access
// inside it can fault with SIGBUS. A subscriber's mapping is read-only over the header and the
// slots, where a subscriber never writes.
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
        // SAFETY: `ptr`/`len` are exactly the reservation made in `map`; nothing borrows the
        // mapping past the life of this value (the ring that uses it owns it).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).unwrap_or(4096)
}

fn stat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: `st` is written by fstat before it is read; the fd is valid for the call.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn file_len(fd: BorrowedFd<'_>) -> io::Result<usize> {
    usize::try_from(stat(fd)?.st_size).map_err(|_| io::Error::other("negative segment size"))
}

/// The seals on `fd` (`F_GET_SEALS`).
pub fn seals(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: F_GET_SEALS only reads the seals of a valid descriptor.
    let s = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(s)
}

/// The file `fd` refers to.
pub fn file_id(fd: BorrowedFd<'_>) -> io::Result<FileId> {
    let st = stat(fd)?;
    Ok(FileId {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// Refuse a descriptor that is not a sealed segment file: one that could be shrunk under the
/// mapping (and kill this process with SIGBUS) is never mapped.
fn check_sealed(fd: BorrowedFd<'_>, what: &str) -> Result<(), OpenError> {
    match seals(fd) {
        Ok(s) if s & SEALS == SEALS => Ok(()),
        Ok(s) => Err(OpenError::Unsealed(format!(
            "the {what} file is not sealed against resizing (seals {s:#x})"
        ))),
        Err(e) => Err(OpenError::Unsealed(format!(
            "the {what} descriptor is not a sealed memory file ({e})"
        ))),
    }
}

/// Check that `fd` is a segment file this daemon made: owned by `uid`, mode 0600, sealed.
/// A descriptor handed in by a client (see `Reattach`) must pass this before it is trusted.
pub fn check_owned(fd: BorrowedFd<'_>, uid: u32) -> Result<FileId, OpenError> {
    let st = stat(fd)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(OpenError::Unsealed("not a regular file".into()));
    }
    if st.st_uid != uid {
        return Err(OpenError::Unsealed(format!(
            "owned by uid {}, not the daemon's uid {uid}",
            st.st_uid
        )));
    }
    if st.st_mode & 0o7777 != 0o600 {
        return Err(OpenError::Unsealed(format!(
            "mode {:o}, not 600",
            st.st_mode & 0o7777
        )));
    }
    check_sealed(fd, "segment")?;
    Ok(FileId {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// A new descriptor for the file `fd` refers to, opened with `flags` through `/proc/self/fd`
/// (permission is checked against the file's owner and mode, so only the daemon's uid can
/// reopen a segment file read-write).
pub fn reopen(fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<OwnedFd> {
    let path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|_| io::Error::other("NUL in a /proc path"))?;
    // SAFETY: a valid C string; open returns a fresh descriptor or -1.
    let raw = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

impl Mapping {
    /// Map the segment made of `control` and `data` with `access`: the data file's first page
    /// (the header), then the whole control file, then the rest of the data file (the slots),
    /// in one address range. Both files must be sealed; the header must describe exactly this
    /// split.
    pub fn map(
        control: BorrowedFd<'_>,
        data: BorrowedFd<'_>,
        access: Access,
    ) -> Result<Mapping, OpenError> {
        let (mapping, slots_offset) = Mapping::map_files(control, data, access)?;
        let len = mapping.len;
        // SAFETY: the mapping is at least a header long and page aligned; the header is
        // plain data, copied out with a volatile read (another process may write it).
        let header =
            unsafe { std::ptr::read_volatile(mapping.ptr.as_ptr() as *const SegmentHeader) };
        let layout = header.validate(len as u64)?;
        if layout.slots_offset != slots_offset as u64 || layout.total_len != len as u64 {
            return Err(OpenError::Io(io::Error::other(format!(
                "the header places the slots at {} of {} bytes, but the files put them at {slots_offset} of {len}",
                layout.slots_offset, layout.total_len
            ))));
        }
        Ok(mapping)
    }

    /// Map the two files side by side without looking at the header; returns the mapping and
    /// where the slots start.
    fn map_files(
        control: BorrowedFd<'_>,
        data: BorrowedFd<'_>,
        access: Access,
    ) -> Result<(Mapping, usize), OpenError> {
        let page = page_size();
        let header_len = HEADER_REGION as usize;
        if !header_len.is_multiple_of(page) {
            return Err(OpenError::Io(io::Error::other(
                "the page size does not divide the segment layout's page; unsupported platform",
            )));
        }
        check_sealed(control, "control")?;
        check_sealed(data, "data")?;
        let control_len = file_len(control)?;
        let data_len = file_len(data)?;
        if data_len < header_len {
            return Err(OpenError::Segment(SegmentError::Truncated(data_len as u64)));
        }
        if control_len == 0 || !control_len.is_multiple_of(page) || !data_len.is_multiple_of(page) {
            return Err(OpenError::Io(io::Error::other(format!(
                "segment files of {control_len} and {data_len} bytes are not whole pages"
            ))));
        }
        let len = control_len
            .checked_add(data_len)
            .ok_or_else(|| OpenError::Io(io::Error::other("segment too large")))?;
        // SAFETY: a fresh private reservation; the kernel picks the address. Nothing can be
        // read or written through it until the files are mapped over it below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(OpenError::Io(io::Error::last_os_error()));
        }
        let ptr = NonNull::new(base.cast::<u8>())
            .ok_or_else(|| OpenError::Io(io::Error::other("mmap returned a null mapping")))?;
        // From here the reservation is unmapped on every error path by Mapping's Drop.
        let mapping = Mapping { ptr, len };
        let data_prot = match access {
            Access::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
            Access::Subscriber => libc::PROT_READ,
        };
        let slots_offset = header_len + control_len;
        let pieces = [
            (0, header_len, data, 0, data_prot),
            (
                header_len,
                control_len,
                control,
                0,
                libc::PROT_READ | libc::PROT_WRITE,
            ),
            (
                slots_offset,
                data_len - header_len,
                data,
                header_len,
                data_prot,
            ),
        ];
        for (at, piece_len, fd, file_offset, prot) in pieces {
            if piece_len == 0 {
                continue;
            }
            // SAFETY: [at, at + piece_len) lies inside the reservation (the pieces add up to
            // `len`), page aligned at both ends; MAP_FIXED replaces only our own reservation,
            // and the file range [file_offset, file_offset + piece_len) lies inside the sealed
            // file (sizes from fstat above, which the seals keep fixed).
            let got = unsafe {
                libc::mmap(
                    ptr.as_ptr().add(at).cast(),
                    piece_len,
                    prot,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd.as_raw_fd(),
                    file_offset as libc::off_t,
                )
            };
            if got == libc::MAP_FAILED {
                return Err(OpenError::Io(io::Error::last_os_error()));
            }
        }
        Ok((mapping, slots_offset))
    }
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
    /// A descriptor is not a sealed segment file (it could be resized under the mapping).
    #[error("refusing to map a segment file: {0}")]
    Unsealed(String),
}

/// Map a segment and lay a ring over it, validating every header field.
pub fn open_ring(
    control: BorrowedFd<'_>,
    data: BorrowedFd<'_>,
    access: Access,
) -> Result<Arc<ShmRing>, OpenError> {
    let mapping = Mapping::map(control, data, access)?;
    let storage = RawStorage::open(mapping)?;
    Ok(Arc::new(Ring::new(storage, Futex)))
}

/// A segment this daemon manages: its files and its ring.
pub struct Segment {
    /// Both files, read-write (publishers get duplicates).
    pub fds: SegmentFds,
    /// A read-only descriptor of the data file (subscribers get duplicates).
    pub data_ro: OwnedFd,
    /// The ring, mapped read-write.
    pub ring: Arc<ShmRing>,
}

impl Segment {
    /// The descriptors a port of `role` gets: `[control, data]`, the data file read-only for
    /// a subscriber.
    pub fn fds_for(&self, access: Access) -> io::Result<[OwnedFd; 2]> {
        let data = match access {
            Access::ReadWrite => self.fds.data.try_clone()?,
            Access::Subscriber => self.data_ro.try_clone()?,
        };
        Ok([self.fds.control.try_clone()?, data])
    }

    /// The files' identities, to recognise them when a client hands them back.
    pub fn ids(&self) -> io::Result<[FileId; 2]> {
        Ok([
            file_id(self.fds.control.as_fd())?,
            file_id(self.fds.data.as_fd())?,
        ])
    }
}

/// A sealed memory file of `len` bytes, mode 0600, its memory reserved.
fn sealed_file(name: &str, len: u64) -> Result<OwnedFd, OpenError> {
    let cname: String = name.chars().filter(|&c| c != '\0').take(200).collect();
    let cname = CString::new(cname).map_err(|_| io::Error::other("NUL in a segment name"))?;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: a valid C string; memfd_create returns a fresh descriptor or -1. Not executable:
    // MFD_NOEXEC_SEAL where the kernel knows it (6.3+), plain flags otherwise.
    let mut raw = unsafe { libc::memfd_create(cname.as_ptr(), flags | libc::MFD_NOEXEC_SEAL) };
    if raw < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // SAFETY: as above.
        raw = unsafe { libc::memfd_create(cname.as_ptr(), flags) };
    }
    if raw < 0 {
        return Err(OpenError::Io(io::Error::last_os_error()));
    }
    // SAFETY: memfd_create returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: a valid descriptor we own.
    if unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) } != 0 {
        return Err(OpenError::Io(io::Error::last_os_error()));
    }
    let off = libc::off_t::try_from(len).map_err(|_| io::Error::other("segment too large"))?;
    // SAFETY: a valid descriptor; fallocate reserves the pages or fails cleanly with ENOSPC or
    // ENOMEM, instead of a SIGBUS on first touch later.
    if unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, off) } != 0 {
        let e = io::Error::last_os_error();
        return Err(OpenError::Io(io::Error::new(
            e.kind(),
            format!(
                "cannot reserve {len} bytes of shared memory for the topic ({e}); free memory, \
                 raise the memory limit of this cgroup, or make the topic smaller"
            ),
        )));
    }
    // SAFETY: F_ADD_SEALS on a descriptor we own, made with MFD_ALLOW_SEALING.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
        return Err(OpenError::Io(io::Error::last_os_error()));
    }
    Ok(fd)
}

/// Create the segment of topic `topic` for `layout`: two sealed files, initialised.
pub fn create_segment(topic: &str, layout: &Layout) -> Result<Segment, OpenError> {
    let data_len = HEADER_REGION + (layout.total_len - layout.slots_offset);
    let control_len = layout.slots_offset - HEADER_REGION;
    let control = sealed_file(&format!("shmbus-control:{topic}"), control_len)?;
    let data = sealed_file(&format!("shmbus-data:{topic}"), data_len)?;
    // The files are all zeros, which no header validates: map them as they are, and
    // `RawStorage::create` writes the header for `layout` (whose split the sizes follow).
    let (mapping, _) = Mapping::map_files(control.as_fd(), data.as_fd(), Access::ReadWrite)?;
    let storage = RawStorage::create(mapping, layout)?;
    let data_ro = reopen(data.as_fd(), libc::O_RDONLY)?;
    Ok(Segment {
        fds: SegmentFds { control, data },
        data_ro,
        ring: Arc::new(Ring::new(storage, Futex)),
    })
}

/// Take back a segment a client handed in after a daemon restart: both files must be this
/// daemon's (`uid`, 0600, sealed), be the files `expected` names, and validate.
pub fn adopt_segment(
    fds: SegmentFds,
    uid: u32,
    expected: [FileId; 2],
) -> Result<Segment, OpenError> {
    let control = check_owned(fds.control.as_fd(), uid)?;
    let data = check_owned(fds.data.as_fd(), uid)?;
    if [control, data] != expected {
        return Err(OpenError::Unsealed(
            "these are not the files of this topic".into(),
        ));
    }
    // The client may have handed in a read-only data descriptor; the daemon reopens both.
    let control = reopen(fds.control.as_fd(), libc::O_RDWR)?;
    let data = reopen(fds.data.as_fd(), libc::O_RDWR)?;
    let data_ro = reopen(data.as_fd(), libc::O_RDONLY)?;
    let ring = open_ring(control.as_fd(), data.as_fd(), Access::ReadWrite)?;
    Ok(Segment {
        fds: SegmentFds { control, data },
        data_ro,
        ring,
    })
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
