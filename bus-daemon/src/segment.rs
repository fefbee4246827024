//! The daemon's side of topic segments: creating them, and taking back the ones a client hands
//! in after a daemon restart. What a segment is, how it is sealed and how any process maps it
//! is in `bus_proto::segment`.
//!
//! Every segment file is the daemon's: mode 0600, owned by its uid, sealed. Publishers get
//! duplicates of both files read-write; subscribers get the control file and a **read-only**
//! descriptor of the data file, reopened through `/proc/self/fd` (permission is checked against
//! the file's owner and mode, so only the daemon's uid could reopen it read-write). The daemon
//! keeps two descriptors per topic and reopens the read-only one for each subscriber that
//! attaches: with ten thousand topics, a third descriptor each would cost ten thousand more.
//!
//! Nothing is ever left in `/dev/shm`: the memory is freed when the last process holding a
//! descriptor or a mapping goes away. A restarted daemon gets a topic's files back from the
//! ports that re-attach (see `server::adopt`).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use bus_core::layout::Layout;
use bus_core::ring::Ring;
use bus_core::storage::RawStorage;
use bus_proto::segment::{
    check_sealed, file_sizes, open_ring, sealed_file, Access, MapError, Mapping, SegmentFds,
    ShmRing,
};
use bus_proto::wake::WakeBell;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, Mode, SFlag};
use serde::{Deserialize, Serialize};

/// Which file a descriptor refers to: device and inode, stable while the file lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

/// The file `fd` refers to.
pub fn file_id(fd: BorrowedFd<'_>) -> io::Result<FileId> {
    let st = fstat(fd)?;
    Ok(FileId {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// Why a descriptor handed in by a client was not taken back.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// A system call failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The descriptor is not a file this daemon made (wrong type, owner or mode).
    #[error("not a segment file of this daemon: {0}")]
    NotOurs(String),
    /// The descriptors are this daemon's files, but not the ones recorded for the topic.
    #[error("these are not the files recorded for this topic")]
    OtherFiles,
    /// The files could not be mapped or their header did not validate.
    #[error(transparent)]
    Map(#[from] MapError),
}

/// Check that `fd` is a segment file this daemon made: a regular file owned by `uid`, mode
/// 0600, sealed. A descriptor handed in by a client (see `Reattach`) must pass this before it
/// is trusted.
pub fn check_owned(fd: BorrowedFd<'_>, uid: u32) -> Result<FileId, AdoptError> {
    let st = fstat(fd).map_err(io::Error::from)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(AdoptError::NotOurs("not a regular file".into()));
    }
    if st.st_uid != uid {
        return Err(AdoptError::NotOurs(format!(
            "owned by uid {}, not the daemon's uid {uid}",
            st.st_uid
        )));
    }
    if st.st_mode & 0o7777 != 0o600 {
        return Err(AdoptError::NotOurs(format!(
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
pub fn reopen(fd: BorrowedFd<'_>, flags: OFlag) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(nix::fcntl::open(
        path.as_str(),
        flags | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// A segment this daemon manages: its files and its ring.
pub struct Segment {
    /// Both files, read-write (publishers get duplicates; subscribers a duplicate of the control
    /// file and a read-only reopening of the data file).
    pub fds: SegmentFds,
    /// The ring, mapped read-write.
    pub ring: Arc<ShmRing>,
}

impl Segment {
    /// The descriptors a port with `access` gets: `[control, data]`, the data file read-only
    /// for a subscriber.
    pub fn fds_for(&self, access: Access) -> io::Result<[OwnedFd; 2]> {
        let data = match access {
            Access::ReadWrite => self.fds.data.try_clone()?,
            Access::Subscriber => reopen(self.fds.data.as_fd(), OFlag::O_RDONLY)?,
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

    /// Bytes of shared memory the segment commits.
    pub fn bytes(&self) -> u64 {
        self.ring.layout().total_len
    }
}

/// Create the segment of topic `topic` for `layout`: two sealed files, initialised. Slow for a
/// large topic (the memory is reserved and zeroed up front): the server runs it outside its
/// lock.
pub fn create_segment(topic: &str, layout: &Layout) -> Result<Segment, MapError> {
    let (control_len, data_len) = file_sizes(layout);
    let control = sealed_file(&format!("shmbus-control:{topic}"), control_len)?;
    let data = sealed_file(&format!("shmbus-data:{topic}"), data_len)?;
    // The files are all zeros, which no header validates: map them as they are, and
    // `RawStorage::create` writes the header for `layout` (whose split the sizes follow).
    let (mapping, _) = Mapping::map_files(control.as_fd(), data.as_fd(), Access::ReadWrite)?;
    let storage = RawStorage::create(mapping, layout)?;
    Ok(Segment {
        fds: SegmentFds { control, data },
        ring: Arc::new(Ring::new(storage, WakeBell::new())),
    })
}

/// Take back a segment a client handed in after a daemon restart: both files must be this
/// daemon's (`uid`, 0600, sealed), be the files `expected` names, and validate.
pub fn adopt_segment(
    fds: SegmentFds,
    uid: u32,
    expected: [FileId; 2],
) -> Result<Segment, AdoptError> {
    let control = check_owned(fds.control.as_fd(), uid)?;
    let data = check_owned(fds.data.as_fd(), uid)?;
    if [control, data] != expected {
        return Err(AdoptError::OtherFiles);
    }
    // The client may have handed in a read-only data descriptor; the daemon reopens both.
    let control = reopen(fds.control.as_fd(), OFlag::O_RDWR)?;
    let data = reopen(fds.data.as_fd(), OFlag::O_RDWR)?;
    let ring = open_ring(
        control.as_fd(),
        data.as_fd(),
        Access::ReadWrite,
        WakeBell::new(),
    )?;
    Ok(Segment {
        fds: SegmentFds { control, data },
        ring,
    })
}
