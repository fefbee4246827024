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
//! [`read_frame_with_fds`] and [`send_with_fds`] are for blocking sockets (optionally with
//! timeouts); a `WouldBlock` in the middle of a frame is returned as an error and leaves the
//! stream unusable. The daemon's event loop reads non-blocking sockets with a [`FrameReader`]
//! (the same strict decoder, descriptors collected across partial reads) and writes them with
//! [`send_some_with_fds`].

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
#[cfg(test)]
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::Serialize;

use crate::frame::{self, FrameBuf, Message, FRAME_HEADER_LEN, MAX_FRAME};
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
pub fn peer_credentials<S: AsFd>(sock: &S) -> io::Result<PeerCred> {
    let c = socket::getsockopt(sock, sockopt::PeerCredentials)?;
    Ok(PeerCred {
        pid: u32::try_from(c.pid()).unwrap_or(0),
        uid: c.uid(),
        gid: c.gid(),
    })
}

/// The peer's supplementary groups (`SO_PEERGROUPS`), as the kernel recorded them when it
/// connected. Rules that grant a gid admit members of that group by any of their groups.
pub fn peer_groups<S: AsFd>(sock: &S) -> io::Result<Vec<u32>> {
    let mut groups = vec![0u32; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<u32>()) as libc::socklen_t;
        // SAFETY: `groups` is a live buffer of `len` bytes that the kernel fills with gid_t
        // (u32) values; `len` is updated to the bytes written (or needed, with ERANGE).
        let rc = unsafe {
            libc::getsockopt(
                sock.as_fd().as_raw_fd(),
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

/// At most [`SCM_MAX_FD`] descriptors travel in one message.
fn check_fd_count(fds: &[RawFd]) -> io::Result<()> {
    if fds.len() > SCM_MAX_FD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} file descriptors exceed the {SCM_MAX_FD} that one message can carry",
                fds.len()
            ),
        ));
    }
    Ok(())
}

/// Sends `bytes` with `fds` attached to the first byte (`SCM_RIGHTS`).
///
/// Uses `MSG_NOSIGNAL`, so a closed peer is an `EPIPE` error, not a signal. If
/// the kernel takes only part of `bytes`, the rest follows in plain sends.
/// `bytes` must not be empty when `fds` is not (a stream socket cannot carry
/// descriptors without data), and at most [`SCM_MAX_FD`] descriptors fit.
pub fn send_with_fds<S: AsFd>(sock: &S, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if bytes.is_empty() {
        if fds.is_empty() {
            return Ok(());
        }
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "file descriptors need at least one byte of data to travel with",
        ));
    }
    check_fd_count(fds)?;
    let fd = sock.as_fd().as_raw_fd();
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
///
/// Closing a descriptor a peer sent can block (a TCP socket with `SO_LINGER`, a file on a
/// FUSE mount): code that must never block on a peer (the daemon) uses
/// [`recv_with_all_fds`] and decides where the extra descriptors are closed.
pub fn recv_with_fds<S: AsFd>(
    sock: &S,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let got = recv_with_all_fds(sock, buf)?;
    let mut fds = got.fds;
    fds.truncate(max_fds);
    if got.truncated {
        return Err(io::Error::other(
            "file descriptors were cut off (MSG_CTRUNC): the peer sent more than one message can carry",
        ));
    }
    Ok((got.bytes, fds))
}

/// What one [`recv_with_all_fds`] got.
#[derive(Debug)]
pub struct Got {
    /// Bytes read into the buffer (0: end of stream).
    pub bytes: usize,
    /// Every descriptor the kernel installed with them, in order.
    pub fds: Vec<OwnedFd>,
    /// The kernel cut the control message (`MSG_CTRUNC`): some descriptors did not arrive.
    pub truncated: bool,
}

/// Receives up to `buf.len()` bytes and *every* descriptor sent with them, closing none: the
/// caller decides which to keep and where to close the others. The control buffer holds
/// [`SCM_MAX_FD`] descriptors, as many as one message can carry, so the kernel never has to
/// drop (and so close) one on this thread; only a full descriptor table can cut the message
/// (`truncated`). Retries on `EINTR`.
pub fn recv_with_all_fds<S: AsFd>(sock: &S, buf: &mut [u8]) -> io::Result<Got> {
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
            sock.as_fd().as_raw_fd(),
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
        return Ok(Got {
            bytes: msg.bytes,
            fds,
            truncated: msg.flags.contains(MsgFlags::MSG_CTRUNC),
        });
    }
}

/// Writes one protocol frame with `fds` attached to its first byte.
pub fn write_frame_with_fds<T: Serialize>(
    sock: &impl AsFd,
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
    sock: &impl AsFd,
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
fn recv_full<S: AsFd>(
    sock: &S,
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

/// One `sendmsg` on a non-blocking socket: up to all of `bytes`, with `fds` attached to the
/// first byte (give them only with a frame's first byte). Returns how many bytes went; a full
/// socket buffer is a `WouldBlock` error, a closed peer `EPIPE` (never a signal). Retries on
/// `EINTR`.
pub fn send_some_with_fds<S: AsFd>(sock: &S, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    if bytes.is_empty() {
        return Ok(0);
    }
    check_fd_count(fds)?;
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    loop {
        match socket::sendmsg::<()>(
            sock.as_fd().as_raw_fd(),
            &[IoSlice::new(bytes)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(n) => return Ok(n),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// What one [`FrameReader::read`] got.
#[derive(Debug)]
pub enum Received<M> {
    /// A whole frame, decoded, and the descriptors that came with it.
    Frame(M, Vec<OwnedFd>),
    /// The socket has nothing more for now; the part of a frame received so far is kept.
    WouldBlock,
    /// The peer closed the connection between frames.
    Closed,
}

/// Reads frames from a non-blocking stream socket, one at a time, with the descriptors that
/// come with each: the daemon's event loop keeps one per connection.
///
/// It never asks the socket for more than the rest of the current frame
/// ([`FrameBuf::wanted`]): the length prefix first, then exactly the body. So a frame may
/// arrive in any number of reads, and the descriptors the kernel hands over with any of them
/// (they ride on the first byte of the sender's `sendmsg`) are collected for this frame, up to
/// `max_fds`; more are set aside for the owner to close ([`FrameReader::take_discarded`]). Bodies are decoded by the one strict decoder
/// ([`Message::decode`], through [`FrameBuf::pop`]). A bad length prefix is an error before
/// anything is allocated for the body.
#[derive(Debug)]
pub struct FrameReader {
    frame: FrameBuf,
    fds: Vec<OwnedFd>,
    /// Descriptors beyond `max_fds`: never closed here (a close can block on what a peer
    /// controls); the owner takes them with [`FrameReader::take_discarded`].
    discarded: Vec<OwnedFd>,
    max_fds: usize,
    scratch: Vec<u8>,
}

impl FrameReader {
    /// A reader that keeps at most `max_fds` descriptors per frame.
    pub fn new(max_fds: usize) -> FrameReader {
        FrameReader {
            frame: FrameBuf::new(),
            fds: Vec::new(),
            discarded: Vec::new(),
            max_fds,
            scratch: Vec::new(),
        }
    }

    /// The descriptors that came beyond `max_fds` per frame, for the caller to close where a
    /// close that blocks harms no one else. Until taken they stay open.
    pub fn take_discarded(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.discarded)
    }

    /// Descriptors held: those of the frame being read and the discarded ones not taken yet.
    pub fn held_fds(&self) -> usize {
        self.fds.len() + self.discarded.len()
    }

    /// Every descriptor held, the unfinished frame's and the discarded ones, for a connection
    /// that is going away.
    pub fn take_all_fds(&mut self) -> Vec<OwnedFd> {
        let mut all = std::mem::take(&mut self.fds);
        all.append(&mut self.discarded);
        all
    }

    /// Bytes of an unfinished frame held.
    pub fn pending(&self) -> usize {
        self.frame.pending()
    }

    /// Read until one frame is whole, the socket would block, or the peer closed. EOF inside a
    /// frame is [`ProtocolError::Truncated`]; a bad length or body is the decoder's error
    /// (after which the stream is out of step: drop it).
    pub fn read<M: Message>(&mut self, sock: &impl AsFd) -> Result<Received<M>, ProtocolError> {
        loop {
            let want = self.frame.wanted()?;
            if want == 0 {
                let fds = std::mem::take(&mut self.fds);
                return match self.frame.pop::<M>()? {
                    Some(msg) => Ok(Received::Frame(msg, fds)),
                    // `wanted` said the frame is whole; `pop` agrees by construction.
                    None => Err(ProtocolError::Malformed("frame bookkeeping".into())),
                };
            }
            let want = want.min(FRAME_HEADER_LEN + MAX_FRAME);
            self.scratch.resize(want, 0);
            let got = match recv_with_all_fds(sock, &mut self.scratch[..want]) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Received::WouldBlock),
                Err(e) => return Err(e.into()),
            };
            let n = got.bytes;
            for fd in got.fds {
                if self.fds.len() < self.max_fds {
                    self.fds.push(fd);
                } else {
                    self.discarded.push(fd);
                }
            }
            if got.truncated {
                return Err(ProtocolError::Io(io::Error::other(
                    "file descriptors were cut off (MSG_CTRUNC): the peer sent more than one message can carry",
                )));
            }
            if n == 0 {
                // As the blocking reader counts: bytes of the current part (header or body).
                let pending = self.frame.pending();
                let got = match pending {
                    0 => return Ok(Received::Closed),
                    p if p < FRAME_HEADER_LEN => p,
                    p => p - FRAME_HEADER_LEN,
                };
                return Err(ProtocolError::Truncated {
                    got,
                    expected: got + want,
                });
            }
            self.frame.push(&self.scratch[..n]);
        }
    }
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

    /// Reads with a `FrameReader` until a frame comes (or the test gives up).
    fn read_one(reader: &mut FrameReader, sock: &UnixStream) -> Received<Request> {
        for _ in 0..1000 {
            match reader.read::<Request>(sock).unwrap() {
                Received::WouldBlock => std::thread::sleep(std::time::Duration::from_millis(1)),
                other => return other,
            }
        }
        panic!("no frame came");
    }

    #[test]
    fn frame_reader_collects_fds_across_partial_reads_and_caps_them_per_frame() {
        let (a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let name = "shmbus-test-reader";
        let files: Vec<File> = (0..3).map(|_| memfd(name)).collect();
        let raws: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        let frame = frame::encode_frame(&Request::List).unwrap();
        // The first two bytes carry three descriptors; the rest of the frame comes later.
        send_with_fds(&a, &frame[..2], &raws).unwrap();
        let mut reader = FrameReader::new(2);
        assert!(matches!(
            reader.read::<Request>(&b).unwrap(),
            Received::WouldBlock
        ));
        assert_eq!(reader.pending(), 2);
        assert_eq!(
            reader.held_fds(),
            3,
            "the third descriptor is set aside, not closed"
        );
        let discarded = reader.take_discarded();
        assert_eq!(discarded.len(), 1);
        drop(discarded);
        assert_eq!(
            open_memfds_named(name),
            5,
            "the third descriptor was closed by its taker"
        );
        send_with_fds(&a, &frame[2..], &[]).unwrap();
        // A second frame, sent at once, with one descriptor of its own: it must not be taken
        // for the first frame's.
        write_frame_with_fds(&a, &Request::Status, &[raws[0]]).unwrap();
        match read_one(&mut reader, &b) {
            Received::Frame(Request::List, fds) => assert_eq!(fds.len(), 2),
            other => panic!("{other:?}"),
        }
        match read_one(&mut reader, &b) {
            Received::Frame(Request::Status, fds) => assert_eq!(fds.len(), 1),
            other => panic!("{other:?}"),
        }
        drop(a);
        assert!(matches!(read_one(&mut reader, &b), Received::Closed));
    }

    #[test]
    fn frame_reader_refuses_a_bad_length_and_a_cut_frame() {
        let (mut a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        a.write_all(&u32::MAX.to_le_bytes()).unwrap();
        let mut reader = FrameReader::new(0);
        assert!(matches!(
            reader.read::<Request>(&b),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        let (mut a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        a.write_all(&10u32.to_le_bytes()).unwrap();
        a.write_all(b"{\"op").unwrap();
        drop(a);
        let mut reader = FrameReader::new(0);
        assert!(matches!(
            reader.read::<Request>(&b),
            Err(ProtocolError::Truncated {
                got: 4,
                expected: 10
            })
        ));
    }

    #[test]
    fn send_some_reports_how_much_went_and_would_block_when_full() {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let chunk = vec![7u8; 1 << 16];
        let mut total = 0usize;
        let full = loop {
            match send_some_with_fds(&a, &chunk, &[]) {
                Ok(n) => {
                    assert!(n > 0);
                    total += n;
                    assert!(total < 1 << 30, "the socket buffer never filled");
                }
                Err(e) => break e,
            }
        };
        assert_eq!(full.kind(), io::ErrorKind::WouldBlock);
        let mut buf = vec![0u8; 1 << 16];
        let (n, _) = recv_with_fds(&b, &mut buf, 0).unwrap();
        assert!(n > 0 && buf[..n].iter().all(|&x| x == 7));
    }
}
