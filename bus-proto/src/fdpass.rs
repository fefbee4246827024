//! Passing file descriptors over the control socket (`SCM_RIGHTS`), and peer credentials.
//!
//! The daemon hands each client its topic segment as a file descriptor sent
//! beside a protocol frame. The descriptors ride on the first byte of the
//! frame: on a Unix stream socket the kernel delivers them with the first
//! `recvmsg` that reads any byte of that send, so [`read_frame_with_fds`]
//! collects them while reading the frame's length prefix.
//!
//! Receiving never leaks a descriptor: everything the kernel installs is
//! wrapped in an [`OwnedFd`] at once; descriptors beyond the caller's limit are
//! closed, and a truncated control message (`MSG_CTRUNC`) is an error after the
//! descriptors that did arrive have been closed. Received descriptors are
//! close-on-exec (`MSG_CMSG_CLOEXEC`).
//!
//! The sockets should be blocking (optionally with timeouts); a `WouldBlock`
//! in the middle of a frame is returned as an error and leaves the stream
//! unusable.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::Serialize;

use crate::frame::{self, Message, FRAME_HEADER_LEN};
use crate::protocol::ProtocolError;

/// The most descriptors Linux passes in one message (`SCM_MAX_FD`).
pub const SCM_MAX_FD: usize = 253;

/// Credentials of the process at the other end of a Unix socket, as the kernel
/// recorded them at `connect` time (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerCred {
    /// Process id (0 if the peer is in a pid namespace we cannot see).
    pub pid: u32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

/// The peer's credentials via `SO_PEERCRED`.
pub fn peer_credentials(sock: &UnixStream) -> io::Result<PeerCred> {
    let c = socket::getsockopt(sock, sockopt::PeerCredentials)?;
    Ok(PeerCred {
        pid: u32::try_from(c.pid()).unwrap_or(0),
        uid: c.uid(),
        gid: c.gid(),
    })
}

/// The peer's supplementary groups (`SO_PEERGROUPS`), as the kernel recorded them when it
/// connected. Rules that grant a gid admit members of that group by any of their groups.
pub fn peer_groups(sock: &UnixStream) -> io::Result<Vec<u32>> {
    let mut groups = vec![0u32; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<u32>()) as libc::socklen_t;
        // SAFETY: `groups` is a live buffer of `len` bytes that the kernel fills with gid_t
        // (u32) values; `len` is updated to the bytes written (or needed, with ERANGE).
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<u32>();
        if rc == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE) && n > groups.len() && n <= 65_536 {
            groups.resize(n, 0);
            continue;
        }
        return Err(err);
    }
}

/// Sends `bytes` with `fds` attached to the first byte (`SCM_RIGHTS`).
///
/// Uses `MSG_NOSIGNAL`, so a closed peer is an `EPIPE` error, not a signal. If
/// the kernel takes only part of `bytes`, the rest follows in plain sends.
/// `bytes` must not be empty when `fds` is not (a stream socket cannot carry
/// descriptors without data), and at most [`SCM_MAX_FD`] descriptors fit.
pub fn send_with_fds(sock: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if bytes.is_empty() {
        if fds.is_empty() {
            return Ok(());
        }
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "file descriptors need at least one byte of data to travel with",
        ));
    }
    if fds.len() > SCM_MAX_FD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} file descriptors exceed the {SCM_MAX_FD} that one message can carry",
                fds.len()
            ),
        ));
    }
    let fd = sock.as_raw_fd();
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let first = loop {
        match socket::sendmsg::<()>(
            fd,
            &[IoSlice::new(bytes)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => break n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if first == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    let mut rest = bytes.get(first..).unwrap_or_default();
    while !rest.is_empty() {
        match socket::send(fd, rest, MsgFlags::MSG_NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = rest.get(n..).unwrap_or_default(),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Receives up to `buf.len()` bytes and any descriptors sent with them.
///
/// Returns `(0, [])` at end of stream. At most `max_fds` descriptors are kept;
/// the rest are closed. A truncated control message is an error (the
/// descriptors that did arrive are closed). Retries on `EINTR`.
pub fn recv_with_fds(
    sock: &UnixStream,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    if buf.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "recv_with_fds needs a non-empty buffer",
        ));
    }
    let mut space = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match socket::recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raws) = cmsg {
                for raw in raws.into_iter().filter(|&r| r >= 0) {
                    // SAFETY: the kernel just installed `raw` in our table for this message;
                    // nothing else owns it, so ownership is taken exactly once, here.
                    fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
        }
        if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
            drop(fds);
            return Err(io::Error::other(
                "file descriptors were cut off (MSG_CTRUNC): the peer sent more than one message can carry",
            ));
        }
        fds.truncate(max_fds);
        return Ok((msg.bytes, fds));
    }
}

/// Writes one protocol frame with `fds` attached to its first byte.
pub fn write_frame_with_fds<T: Serialize>(
    sock: &UnixStream,
    msg: &T,
    fds: &[RawFd],
) -> Result<(), ProtocolError> {
    let frame = frame::encode_frame(msg)?;
    send_with_fds(sock, &frame, fds)?;
    Ok(())
}

/// Reads one protocol frame and the descriptors that came with it.
///
/// Reads exactly one frame (never into the next) and decodes it with the strict
/// [`Message::decode`]. Keeps at most `max_fds` descriptors in total and closes any
/// others. Error semantics match [`frame::read_frame`]: `Closed` at EOF before the
/// first byte, `Truncated` at EOF later, `FrameTooLarge`/`EmptyFrame` for a bad
/// length (checked before the body is allocated), `Malformed` for a bad body.
pub fn read_frame_with_fds<M: Message>(
    sock: &UnixStream,
    max_fds: usize,
) -> Result<(M, Vec<OwnedFd>), ProtocolError> {
    let mut fds = Vec::new();
    let mut header = [0u8; FRAME_HEADER_LEN];
    let got = recv_full(sock, &mut header, max_fds, &mut fds)?;
    if got == 0 {
        return Err(ProtocolError::Closed);
    }
    if got < FRAME_HEADER_LEN {
        return Err(ProtocolError::Truncated {
            got,
            expected: FRAME_HEADER_LEN,
        });
    }
    let len = frame::parse_frame_len(header)?;
    let mut body = vec![0u8; len];
    let got = recv_full(sock, &mut body, max_fds, &mut fds)?;
    if got < len {
        return Err(ProtocolError::Truncated { got, expected: len });
    }
    let msg = M::decode(&body)?;
    Ok((msg, fds))
}

/// Fills `buf` or stops at EOF; returns bytes read. Collects descriptors into
/// `fds` up to `max_fds` in total; extra ones are dropped (closed).
fn recv_full(
    sock: &UnixStream,
    buf: &mut [u8],
    max_fds: usize,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
        let room = max_fds.saturating_sub(fds.len());
        let (n, got) = recv_with_fds(sock, rest, room)?;
        fds.extend(got);
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Request, Response};
    use bus_core::layout::{Geometry, Mode, TypeInfo};
    use nix::sys::memfd::{memfd_create, MFdFlags};
    use std::fs::File;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::fd::AsFd;

    fn memfd(name: &str) -> File {
        File::from(memfd_create(name, MFdFlags::MFD_CLOEXEC).unwrap())
    }

    /// How many of our descriptors refer to memfds named `name` (robust to
    /// other tests opening descriptors in parallel).
    fn open_memfds_named(name: &str) -> usize {
        let needle = format!("memfd:{name} ");
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|t| t.to_string_lossy().contains(&needle))
            .count()
    }

    #[test]
    fn fds_pass_between_socketpair_ends() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut seg = memfd("shmbus-test-fdpass");
        send_with_fds(&a, b"hello", &[seg.as_raw_fd()]).unwrap();
        let mut buf = [0u8; 16];
        let (n, fds) = recv_with_fds(&b, &mut buf, 4).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 1);
        let mut received = File::from(fds.into_iter().next().unwrap());
        // Write through the original, read through the received one: same file.
        seg.write_all(b"shared bytes").unwrap();
        let mut text = String::new();
        received.seek(SeekFrom::Start(0)).unwrap();
        received.read_to_string(&mut text).unwrap();
        assert_eq!(text, "shared bytes");
        // And the other way round.
        received.write_all(b"!").unwrap();
        let mut all = String::new();
        seg.seek(SeekFrom::Start(0)).unwrap();
        seg.read_to_string(&mut all).unwrap();
        assert_eq!(all, "shared bytes!");
        let flags = nix::fcntl::fcntl(received.as_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert!(
            flags & libc::FD_CLOEXEC != 0,
            "received fd is close-on-exec"
        );
    }

    #[test]
    fn fds_beyond_max_are_closed_not_leaked() {
        let (a, b) = UnixStream::pair().unwrap();
        let name = "shmbus-test-extra";
        let files: Vec<File> = (0..5).map(|_| memfd(name)).collect();
        let raws: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        assert_eq!(open_memfds_named(name), 5);
        send_with_fds(&a, b"x", &raws).unwrap();
        let mut buf = [0u8; 1];
        let (n, fds) = recv_with_fds(&b, &mut buf, 2).unwrap();
        assert_eq!(n, 1);
        assert_eq!(fds.len(), 2);
        assert_eq!(open_memfds_named(name), 7, "the 3 extra fds were closed");
        drop(fds);
        assert_eq!(open_memfds_named(name), 5);
    }

    #[test]
    fn zero_max_fds_closes_every_received_fd() {
        let (a, b) = UnixStream::pair().unwrap();
        let name = "shmbus-test-zero";
        let f = memfd(name);
        write_frame_with_fds(&a, &Request::List, &[f.as_raw_fd()]).unwrap();
        let (req, fds) = read_frame_with_fds::<Request>(&b, 0).unwrap();
        assert_eq!(req, Request::List);
        assert!(fds.is_empty());
        assert_eq!(open_memfds_named(name), 1, "only the sender's fd is open");
    }

    #[test]
    fn frame_with_fd_round_trips_and_next_frame_is_intact() {
        let (a, b) = UnixStream::pair().unwrap();
        let f = memfd("shmbus-test-frame");
        f.set_len(4096).unwrap();
        let spec = Geometry {
            capacity: 8,
            slot_size: 64,
            mode: Mode::Lossy,
            max_publishers: 1,
            max_subscribers: 1,
            type_info: TypeInfo::bytes(),
        };
        let attached = Response::Attached {
            topic: "robot/odom".into(),
            spec,
            index: 0,
            generation: 1,
            segment_len: 4096,
            created: false,
        };
        write_frame_with_fds(&a, &attached, &[f.as_raw_fd()]).unwrap();
        write_frame_with_fds(&a, &Response::Detached, &[]).unwrap();
        let (got, fds) = read_frame_with_fds::<Response>(&b, 1).unwrap();
        assert_eq!(got, attached);
        assert_eq!(fds.len(), 1);
        let received = File::from(fds.into_iter().next().unwrap());
        assert_eq!(received.metadata().unwrap().len(), 4096);
        let (got, fds) = read_frame_with_fds::<Response>(&b, 1).unwrap();
        assert_eq!(got, Response::Detached);
        assert!(fds.is_empty());
        drop(a);
        assert!(matches!(
            read_frame_with_fds::<Response>(&b, 1),
            Err(ProtocolError::Closed)
        ));
    }

    #[test]
    fn frame_reader_rejects_oversize_length_and_truncation() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&u32::MAX.to_le_bytes()).unwrap();
        assert!(matches!(
            read_frame_with_fds::<Request>(&b, 1),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&10u32.to_le_bytes()).unwrap();
        a.write_all(b"{\"op").unwrap();
        drop(a);
        assert!(matches!(
            read_frame_with_fds::<Request>(&b, 1),
            Err(ProtocolError::Truncated {
                got: 4,
                expected: 10
            })
        ));
    }

    #[test]
    fn large_frame_with_fd_arrives_whole() {
        let (a, b) = UnixStream::pair().unwrap();
        let f = memfd("shmbus-test-large");
        let req = Request::Hello {
            version: 1,
            client_name: "n".repeat(frame::MAX_FRAME - 100),
        };
        let t = std::thread::spawn(move || {
            write_frame_with_fds(&a, &req, &[f.as_raw_fd()]).unwrap();
            req
        });
        let (got, fds) = read_frame_with_fds::<Request>(&b, 1).unwrap();
        let req = t.join().unwrap();
        assert_eq!(got, req);
        assert_eq!(fds.len(), 1);
    }

    #[test]
    fn sending_to_closed_peer_is_an_error_not_sigpipe() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let err = send_with_fds(&a, b"x", &[]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn fds_without_data_are_refused() {
        let (a, _b) = UnixStream::pair().unwrap();
        let f = memfd("shmbus-test-empty");
        assert!(send_with_fds(&a, b"", &[f.as_raw_fd()]).is_err());
        let too_many = vec![f.as_raw_fd(); SCM_MAX_FD + 1];
        assert!(send_with_fds(&a, b"x", &too_many).is_err());
    }

    #[test]
    fn peer_credentials_name_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let c = peer_credentials(&a).unwrap();
        assert_eq!(c.pid, std::process::id());
        assert_eq!(c.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(c.gid, nix::unistd::getegid().as_raw());
    }
}
