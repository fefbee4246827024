//! Topic segments as both sides see them: the sealed memory files a topic lives in, and how
//! a process maps and validates them. (The daemon creates and adopts segments in
//! `bus-daemon`'s `segment` module, with the primitives here.)
//!
//! A topic lives in two sealed memory files (`memfd_create`), never in a named file:
//!
//! * the **data** file holds the header page and the slot ring;
//! * the **control** file holds the control block and the publisher and subscriber tables.
//!
//! Both are sealed against shrinking and growing ([`SEALS`]), so no process that holds a
//! descriptor can truncate the memory under another and kill it with `SIGBUS`; a process
//! refuses to map a descriptor that lacks the seals. Publishers map both files read-write.
//! Subscribers map the control file read-write and get a **read-only** descriptor of the data
//! file: they cannot map a sample writable, nor `mprotect` it writable later.
//!
//! Every mapping puts the two files side by side in one address range, in the order of the
//! layout in `bus_core::layout` (header from the data file, control and tables from the
//! control file, slots from the data file again), so the ring sees one contiguous segment:
//!
//! ```text
//!  mapping:  [ header page | control block + tables | slots ............ ]
//!  files:      data[0..4K]   control[0..]             data[4K..]
//! ```

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

use bus_core::layout::{Layout, SegmentHeader, HEADER_REGION};
use bus_core::ring::Ring;
use bus_core::storage::{RawStorage, Region};
use nix::fcntl::{fallocate, fcntl, FallocateFlags, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, mmap_anonymous, munmap, MapFlags, ProtFlags};
use nix::sys::stat::{fchmod, fstat, Mode};

use crate::wake::WakeBell;

/// A ring over a mapped segment, ringing through a [`WakeBell`] (futex and wake slots).
pub type ShmRing = Ring<RawStorage<Mapping>, WakeBell>;

/// The seals every segment file carries: no one may shrink or grow it, or change its seals.
pub const SEALS: SealFlag = SealFlag::F_SEAL_SHRINK
    .union(SealFlag::F_SEAL_GROW)
    .union(SealFlag::F_SEAL_SEAL);

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

    /// `[control, data]`, in the order they travel beside a frame.
    pub fn into_array(self) -> [OwnedFd; 2] {
        [self.control, self.data]
    }
}

/// Why a segment could not be created, mapped or validated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// A system call failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A segment file could not be made (the daemon, creating a topic).
    #[error("{0}")]
    Create(#[from] SealedFileError),
    /// The header failed validation (a corrupted or foreign segment).
    #[error("invalid segment: {0}")]
    Invalid(#[from] bus_core::layout::SegmentError),
    /// The two files do not make the segment their header describes.
    #[error("the segment files do not match their header: {0}")]
    Split(String),
    /// A descriptor is not a sealed memory file (it could be resized under the mapping).
    #[error("refusing to map a segment file: {0}")]
    NotSealed(String),
}

impl From<nix::Error> for MapError {
    fn from(e: nix::Error) -> MapError {
        MapError::Io(e.into())
    }
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
// page size, checked in `Mapping::map_files`), valid for `len` bytes until munmap in Drop; it
// never moves, and every page of it is backed by a sealed file that cannot shrink, so no access
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
        // SAFETY: `ptr`/`len` are exactly the reservation made in `map_files`; nothing borrows
        // the mapping past the life of this value (the ring that uses it owns it).
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| usize::try_from(p).ok())
        .unwrap_or(4096)
}

fn file_len(fd: BorrowedFd<'_>) -> Result<usize, MapError> {
    usize::try_from(fstat(fd)?.st_size)
        .map_err(|_| MapError::Split("a segment file has a negative size".into()))
}

/// The seals on `fd` (`F_GET_SEALS`).
pub fn seals(fd: BorrowedFd<'_>) -> io::Result<SealFlag> {
    Ok(SealFlag::from_bits_retain(fcntl(
        fd,
        FcntlArg::F_GET_SEALS,
    )?))
}

/// Refuse a descriptor that is not a sealed segment file: one that could be shrunk under the
/// mapping (and kill this process with SIGBUS) is never mapped.
pub fn check_sealed(fd: BorrowedFd<'_>, what: &str) -> Result<(), MapError> {
    match seals(fd) {
        Ok(s) if s.contains(SEALS) => Ok(()),
        Ok(s) => Err(MapError::NotSealed(format!(
            "the {what} file is not sealed against resizing (seals {:#x})",
            s.bits()
        ))),
        Err(e) => Err(MapError::NotSealed(format!(
            "the {what} descriptor is not a sealed memory file ({e})"
        ))),
    }
}

/// A step of making a sealed memory file ([`sealed_file`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealStep {
    /// `memfd_create` with `MFD_ALLOW_SEALING`.
    Create,
    /// `fchmod` to 0600.
    Chmod,
    /// `fallocate` of this many bytes.
    Reserve(u64),
    /// `fcntl(F_ADD_SEALS)`.
    Seal,
}

impl std::fmt::Display for SealStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealStep::Create => f.write_str("memfd_create(MFD_ALLOW_SEALING)"),
            SealStep::Chmod => f.write_str("fchmod 0600 of a memory file"),
            SealStep::Reserve(n) => write!(f, "fallocate of {n} bytes"),
            SealStep::Seal => f.write_str("fcntl(F_ADD_SEALS, SHRINK|GROW|SEAL)"),
        }
    }
}

/// Why a sealed memory file could not be made: the step, and the system's error (whose
/// `raw_os_error` says why, for a caller that advises the user).
#[derive(Debug, thiserror::Error)]
#[error("{step} failed ({source})")]
pub struct SealedFileError {
    /// What failed.
    pub step: SealStep,
    /// The error.
    #[source]
    pub source: io::Error,
}

/// A sealed memory file of `len` bytes named `name` (for `/proc/<pid>/maps`; it has no path),
/// mode 0600, its memory reserved up front (`fallocate`: a shortage is an error now, never a
/// `SIGBUS` later), sealed with [`SEALS`]. The daemon makes every segment file with this, and
/// `shmbus doctor` probes the machine with it.
pub fn sealed_file(name: &str, len: u64) -> Result<OwnedFd, SealedFileError> {
    let failed = |step| {
        move |e: nix::Error| SealedFileError {
            step,
            source: e.into(),
        }
    };
    let name: String = name.chars().filter(|&c| c != '\0').take(200).collect();
    let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
    // Not executable: MFD_NOEXEC_SEAL where the kernel knows it (6.3+), plain flags otherwise.
    let noexec = MFdFlags::from_bits_retain(libc::MFD_NOEXEC_SEAL);
    let fd = match memfd_create(name.as_str(), flags | noexec) {
        Err(nix::Error::EINVAL) => memfd_create(name.as_str(), flags),
        other => other,
    }
    .map_err(failed(SealStep::Create))?;
    fchmod(fd.as_fd(), Mode::from_bits_truncate(0o600)).map_err(failed(SealStep::Chmod))?;
    let reserve = SealStep::Reserve(len);
    let off = libc::off_t::try_from(len).map_err(|_| failed(reserve)(nix::Error::EFBIG))?;
    if len > 0 {
        fallocate(fd.as_fd(), FallocateFlags::empty(), 0, off).map_err(failed(reserve))?;
    }
    fcntl(fd.as_fd(), FcntlArg::F_ADD_SEALS(SEALS)).map_err(failed(SealStep::Seal))?;
    Ok(fd)
}

/// The sizes of the two files of a segment for `layout`: `(control, data)`.
pub fn file_sizes(layout: &Layout) -> (u64, u64) {
    let control = layout.slots_offset - HEADER_REGION;
    let data = HEADER_REGION + (layout.total_len - layout.slots_offset);
    (control, data)
}

impl Mapping {
    /// Map the segment made of `control` and `data` with `access`: the data file's first page
    /// (the header), then the whole control file, then the rest of the data file (the slots),
    /// in one address range. Both files must be sealed; the header must validate and describe
    /// exactly this split.
    pub fn map(
        control: BorrowedFd<'_>,
        data: BorrowedFd<'_>,
        access: Access,
    ) -> Result<Mapping, MapError> {
        let (mapping, slots_offset) = Mapping::map_files(control, data, access)?;
        let len = mapping.len;
        // SAFETY: the mapping is at least a header long and page aligned; the header is
        // plain data (any bit pattern is valid), copied out with a volatile read because
        // another process may write it.
        let header =
            unsafe { std::ptr::read_volatile(mapping.ptr.as_ptr() as *const SegmentHeader) };
        let layout = header.validate(len as u64)?;
        if layout.slots_offset != slots_offset as u64 || layout.total_len != len as u64 {
            return Err(MapError::Split(format!(
                "the header places the slots at {} of {} bytes, but the files put them at {slots_offset} of {len}",
                layout.slots_offset, layout.total_len
            )));
        }
        Ok(mapping)
    }

    /// Map the two files side by side without looking at the header (the daemon, to write a
    /// fresh segment's header); returns the mapping and where the slots start.
    pub fn map_files(
        control: BorrowedFd<'_>,
        data: BorrowedFd<'_>,
        access: Access,
    ) -> Result<(Mapping, usize), MapError> {
        let page = page_size();
        let header_len = HEADER_REGION as usize;
        if !header_len.is_multiple_of(page) {
            return Err(MapError::Split(
                "the page size does not divide the segment layout's page; unsupported platform"
                    .into(),
            ));
        }
        check_sealed(control, "control")?;
        check_sealed(data, "data")?;
        let control_len = file_len(control)?;
        let data_len = file_len(data)?;
        if data_len < header_len {
            return Err(MapError::Invalid(
                bus_core::layout::SegmentError::Truncated(data_len as u64),
            ));
        }
        if control_len == 0 || !control_len.is_multiple_of(page) || !data_len.is_multiple_of(page) {
            return Err(MapError::Split(format!(
                "segment files of {control_len} and {data_len} bytes are not whole pages"
            )));
        }
        let total = control_len
            .checked_add(data_len)
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| MapError::Split("segment too large".into()))?;
        // SAFETY: a fresh private reservation; the kernel picks the address. Nothing can be
        // read or written through it until the files are mapped over it below.
        let base = unsafe {
            mmap_anonymous(
                None,
                total,
                ProtFlags::PROT_NONE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
            )
        }?;
        // From here the reservation is unmapped on every error path by Mapping's Drop.
        let mapping = Mapping {
            ptr: base.cast(),
            len: total.get(),
        };
        let data_prot = match access {
            Access::ReadWrite => ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            Access::Subscriber => ProtFlags::PROT_READ,
        };
        let rw = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        let slots_offset = header_len + control_len;
        let pieces = [
            (0, header_len, data, 0, data_prot),
            (header_len, control_len, control, 0, rw),
            (
                slots_offset,
                data_len - header_len,
                data,
                header_len,
                data_prot,
            ),
        ];
        for (at, piece_len, fd, file_offset, prot) in pieces {
            let Some(piece_len) = NonZeroUsize::new(piece_len) else {
                continue;
            };
            let addr = NonZeroUsize::new(mapping.ptr.as_ptr() as usize + at);
            // SAFETY: [at, at + piece_len) lies inside the reservation (the pieces add up to
            // its length), page aligned at both ends; MAP_FIXED replaces only our own
            // reservation, and the file range [file_offset, file_offset + piece_len) lies
            // inside the sealed file (sizes from fstat above, which the seals keep fixed).
            unsafe {
                mmap(
                    addr,
                    piece_len,
                    prot,
                    MapFlags::MAP_SHARED | MapFlags::MAP_FIXED,
                    fd,
                    file_offset as libc::off_t,
                )
            }?;
        }
        Ok((mapping, slots_offset))
    }
}

/// Map a segment and lay a ring over it, validating every header field; it rings through
/// `bell`.
pub fn open_ring(
    control: BorrowedFd<'_>,
    data: BorrowedFd<'_>,
    access: Access,
    bell: WakeBell,
) -> Result<Arc<ShmRing>, MapError> {
    let mapping = Mapping::map(control, data, access)?;
    let storage = RawStorage::open(mapping)?;
    Ok(Arc::new(Ring::new(storage, bell)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_core::layout::{Geometry, Mode as RingMode, TypeInfo};

    fn layout() -> Layout {
        Layout::compute(&Geometry {
            capacity: 8,
            slot_size: 64,
            mode: RingMode::Lossless,
            max_publishers: 2,
            max_subscribers: 2,
            type_info: TypeInfo::bytes(),
        })
        .unwrap()
    }

    #[test]
    fn sealed_files_cannot_be_resized_and_map_as_one_segment() {
        let l = layout();
        let (c, d) = file_sizes(&l);
        let control = sealed_file("shmbus-test-control", c).unwrap();
        let data = sealed_file("shmbus-test-data", d).unwrap();
        assert!(seals(control.as_fd()).unwrap().contains(SEALS));
        assert!(nix::unistd::ftruncate(control.as_fd(), 0).is_err());
        assert!(nix::unistd::ftruncate(data.as_fd(), (d * 2) as i64).is_err());
        let (m, slots) =
            Mapping::map_files(control.as_fd(), data.as_fd(), Access::ReadWrite).unwrap();
        assert_eq!(slots as u64, l.slots_offset);
        let ring = Ring::new(RawStorage::create(m, &l).unwrap(), WakeBell::new());
        assert_eq!(ring.geometry(), &l.geometry);
        // A second mapping sees the header the first one wrote.
        let again = open_ring(
            control.as_fd(),
            data.as_fd(),
            Access::Subscriber,
            WakeBell::new(),
        )
        .unwrap();
        assert_eq!(again.geometry(), &l.geometry);
    }

    #[test]
    fn unsealed_descriptors_are_refused() {
        let plain = memfd_create("shmbus-test-plain", MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(plain.as_fd(), 8192).unwrap();
        let Err(err) = open_ring(
            plain.as_fd(),
            plain.as_fd(),
            Access::ReadWrite,
            WakeBell::new(),
        ) else {
            panic!("an unsealed file was mapped");
        };
        assert!(matches!(err, MapError::NotSealed(_)), "{err}");
    }

    #[test]
    fn zeroed_files_fail_validation_not_the_process() {
        let l = layout();
        let (c, d) = file_sizes(&l);
        let control = sealed_file("shmbus-test-zero-c", c).unwrap();
        let data = sealed_file("shmbus-test-zero-d", d).unwrap();
        let Err(err) = open_ring(
            control.as_fd(),
            data.as_fd(),
            Access::ReadWrite,
            WakeBell::new(),
        ) else {
            panic!("a zeroed segment validated");
        };
        assert!(matches!(err, MapError::Invalid(_)), "{err}");
    }
}
