//! The daemon's side of the status page (its format, and the client's side, are in
//! `bus_proto::status`): create or reopen `<socket>.status`, write this daemon's epoch into it,
//! and open the read-only descriptor every client gets with `HelloOk`.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use bus_proto::paths::status_path_for;
use bus_proto::status::{StatusPage, STATUS_LEN};
use nix::fcntl::{open, OFlag};
use nix::sys::stat::{fchmod, fstat, Mode, SFlag};

/// Create (or reopen, after a daemon that died) the status page of `socket`, write `epoch`
/// into it, and return it with a read-only descriptor for clients.
pub fn publish(socket: &Path, uid: u32, epoch: u32) -> io::Result<(StatusPage, OwnedFd)> {
    let path = status_path_for(socket);
    let flags = OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    let fd = open(
        &path,
        flags | OFlag::O_RDWR | OFlag::O_CREAT,
        Mode::from_bits_truncate(0o600),
    )?;
    let st = fstat(fd.as_fd())?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG || st.st_uid != uid {
        return Err(io::Error::other(
            "the status page path is not a regular file of the daemon's uid",
        ));
    }
    fchmod(fd.as_fd(), Mode::from_bits_truncate(0o600))?;
    if st.st_size != STATUS_LEN as i64 {
        nix::unistd::ftruncate(fd.as_fd(), STATUS_LEN as i64)?;
    }
    let page = StatusPage::map_writable(fd.as_fd())?;
    page.publish(epoch, std::process::id());
    let ro = open(&path, flags | OFlag::O_RDONLY, Mode::empty())?;
    Ok((page, ro))
}

/// Remove the status page of `socket` (a daemon that stops cleanly).
pub fn remove(socket: &Path) {
    let _ = std::fs::remove_file(status_path_for(socket));
}
