//! Closing what clients sent without ever blocking the event loop.
//!
//! A `close` can block for as long as a peer likes: the last close of a TCP socket with
//! `SO_LINGER` waits for its unsent data (up to the linger time), a file on a FUSE mount waits
//! for the FUSE server's flush, and closing a Unix socket releases every descriptor still queued
//! in it, with the same hazards. A descriptor a client sent is therefore closed on the loop only
//! if its kind cannot block ([`closes_at_once`]: memory files on tmpfs or hugetlbfs, which is
//! what segments are, anonymous inodes such as eventfds, and pipes). Every other one goes to its
//! uid's *lane*, a thread that closes that uid's descriptors one by one (turning off a socket's
//! linger first): a close that hangs there holds up only that uid's later closes.
//!
//! A client's connection is shut down and drained before it is closed, so that closing it
//! releases nothing that was still queued in it; what the drain brings in is sorted like any
//! other descriptor.
//!
//! The descriptors waiting in a lane are counted per uid ([`Disposer::backlog`]); past
//! [`MAX_BACKLOG_PER_UID`] the event loop drops that uid's connections and refuses new ones
//! until its lane catches up, so no uid can fill the daemon's descriptor table this way.
//! Test: `tests/tests/security_daemon.rs`
//! (`a_lingering_socket_sent_with_hello_does_not_freeze_the_daemon`).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use bus_proto::fdpass;

/// Descriptors of one uid that may wait in its lane before its connections are dropped and new
/// ones refused.
pub(super) const MAX_BACKLOG_PER_UID: usize = 64;

/// Reads a connection's queue is drained with at most, before it is closed (after
/// `shutdown(2)` nothing more can arrive, so the queue is finite; this bounds the work anyway).
const MAX_DRAIN_READS: usize = 1024;

/// File system magic numbers (`statfs(2)`) whose files close without waiting on anyone.
const TMPFS_MAGIC: i64 = 0x0102_1994;
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;
const ANON_INODE_FS_MAGIC: i64 = 0x0904_1934;
const PIPEFS_MAGIC: i64 = 0x5049_5045;

/// Whether closing `fd` can never block on another process: a memory file (tmpfs, hugetlbfs:
/// memfds), an anonymous inode (eventfd, epoll, timerfd, pidfd) or a pipe. Sockets are not:
/// one may linger, or carry descriptors in its queue.
pub(super) fn closes_at_once(fd: &impl AsFd) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `fd` is a live descriptor borrowed for the call; `st` is a writable buffer of
    // the size `fstatfs(2)` fills, read only after it reports success.
    let rc = unsafe { libc::fstatfs(fd.as_fd().as_raw_fd(), st.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: `fstatfs` returned 0, so it initialised the whole struct.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // f_type is i64 on x86_64, another width elsewhere
    let kind = st.f_type as i64;
    matches!(
        kind,
        TMPFS_MAGIC | HUGETLBFS_MAGIC | ANON_INODE_FS_MAGIC | PIPEFS_MAGIC
    )
}

/// One uid's closer thread and the count of descriptors waiting for it.
struct Lane {
    tx: mpsc::Sender<OwnedFd>,
    waiting: Arc<AtomicUsize>,
}

/// Closes what clients sent, never on the loop when the close could block (see the module).
#[derive(Default)]
pub(super) struct Disposer {
    lanes: HashMap<u32, Lane>,
}

impl Disposer {
    /// Descriptors of `uid` waiting in its lane.
    pub(super) fn backlog(&self, uid: u32) -> usize {
        self.lanes
            .get(&uid)
            .map_or(0, |l| l.waiting.load(Ordering::Acquire))
    }

    /// Whether `uid` has more descriptors waiting to be closed than it may.
    pub(super) fn over(&self, uid: u32) -> bool {
        self.backlog(uid) > MAX_BACKLOG_PER_UID
    }

    /// Close `fds`, which `uid` sent: at once where that cannot block, else in its lane.
    pub(super) fn fds(&mut self, uid: u32, fds: impl IntoIterator<Item = OwnedFd>) {
        for fd in fds {
            if closes_at_once(&fd) {
                drop(fd);
            } else {
                self.send_to_lane(uid, fd);
            }
        }
    }

    /// Close a connection of `uid`: shut it down (its peer can send nothing more), take in
    /// what is queued in it and dispose of the descriptors that came with it, then close it:
    /// its queue is empty, so the close releases nothing.
    pub(super) fn socket(&mut self, uid: u32, sock: OwnedFd) {
        // SAFETY: `sock` is a live socket descriptor owned here; shutdown(2) takes no memory.
        let shut = unsafe { libc::shutdown(sock.as_raw_fd(), libc::SHUT_RDWR) };
        if shut != 0 {
            // Not a connected socket any more (or not a socket): let the lane close it.
            return self.send_to_lane(uid, sock);
        }
        let mut buf = [0u8; 4096];
        for _ in 0..MAX_DRAIN_READS {
            match fdpass::recv_with_all_fds(&sock, &mut buf) {
                Ok(got) => {
                    let done = got.bytes == 0 && got.fds.is_empty();
                    self.fds(uid, got.fds);
                    if done {
                        return drop(sock);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return drop(sock),
                // An error (reset): nothing more to read, and the queue is gone with it.
                Err(_) => return drop(sock),
            }
        }
        // Still data after the bound: something is off; the lane closes it.
        self.send_to_lane(uid, sock);
    }

    fn send_to_lane(&mut self, uid: u32, fd: OwnedFd) {
        let lane = match self.lanes.get(&uid) {
            Some(l) => l,
            None => match start_lane(uid) {
                Some(l) => self.lanes.entry(uid).or_insert(l),
                None => {
                    // No thread to be had: closing here is the only way left.
                    tracing::warn!(
                        uid,
                        "no closer thread could be started; closing on the loop"
                    );
                    return drop(fd);
                }
            },
        };
        lane.waiting.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::SendError(fd)) = lane.tx.send(fd) {
            // The lane's thread is gone (it never exits while its sender lives; defensive).
            lane.waiting.fetch_sub(1, Ordering::AcqRel);
            self.lanes.remove(&uid);
            drop(fd);
        }
    }
}

fn start_lane(uid: u32) -> Option<Lane> {
    let (tx, rx) = mpsc::channel::<OwnedFd>();
    let waiting = Arc::new(AtomicUsize::new(0));
    let w = waiting.clone();
    std::thread::Builder::new()
        .name(format!("shmbusd-close-{uid}"))
        .spawn(move || {
            while let Ok(fd) = rx.recv() {
                unlinger(&fd);
                drop(fd);
                w.fetch_sub(1, Ordering::AcqRel);
            }
        })
        .ok()?;
    tracing::debug!(uid, "closer lane started");
    Some(Lane { tx, waiting })
}

/// Turn a socket's linger into an abortive close (`l_onoff = 1, l_linger = 0`), so that its
/// last close does not wait for unsent data. Not a socket: nothing to do.
fn unlinger(fd: &OwnedFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is a live descriptor; the option value is a `linger` on this stack, of the
    // size given. On anything but a socket the call fails with ENOTSOCK, which is ignored.
    let _ = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn memfd() -> OwnedFd {
        nix::sys::memfd::memfd_create(
            c"shmbus-test-disposal",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .unwrap()
    }

    #[test]
    fn memory_files_eventfds_and_pipes_close_at_once_sockets_do_not() {
        assert!(closes_at_once(&memfd()));
        let efd = nix::sys::eventfd::EventFd::new().unwrap();
        assert!(closes_at_once(&efd));
        let (r, w) = nix::unistd::pipe().unwrap();
        assert!(closes_at_once(&r) && closes_at_once(&w));
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(
            !closes_at_once(&a),
            "a socket may carry descriptors or linger"
        );
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(!closes_at_once(&tcp));
    }

    #[test]
    fn a_socket_goes_to_its_uids_lane_and_is_closed_there() {
        let mut d = Disposer::default();
        let (a, b) = UnixStream::pair().unwrap();
        d.fds(4242, [OwnedFd::from(a)]);
        // The lane closes it: the other end sees EOF.
        use std::io::Read;
        let mut buf = [0u8; 1];
        assert_eq!((&b).read(&mut buf).unwrap(), 0);
        // The count falls back to zero once the close is done.
        for _ in 0..1000 {
            if d.backlog(4242) == 0 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("the lane never counted its close");
    }

    #[test]
    fn a_connection_is_drained_and_the_descriptors_queued_in_it_are_disposed() {
        let mut d = Disposer::default();
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let (inner, inner_peer) = UnixStream::pair().unwrap();
        fdpass::send_with_fds(&theirs, b"x", &[inner.as_raw_fd()]).unwrap();
        drop(inner);
        d.socket(7, OwnedFd::from(ours));
        // The socket that was queued went to uid 7's lane and was closed there.
        use std::io::Read;
        let mut buf = [0u8; 1];
        assert_eq!((&inner_peer).read(&mut buf).unwrap(), 0);
        assert!(d.lanes.contains_key(&7));
    }
}
