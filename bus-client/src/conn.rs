//! The control connection to the daemon: one per [`Bus`](crate::Bus), kept open for the life
//! of the process's ports, so that the daemon learns at once when the process goes away.
//!
//! If the daemon dies, ports keep publishing and receiving on what they have mapped. A restarted
//! daemon writes its new epoch into the status page beside the socket (every client maps it,
//! read-only, from the descriptor that comes with `HelloOk`); a port that sees the epoch change
//! calls [`Conn::follow`], which reconnects (once for all ports of the connection), and then
//! re-attaches itself, handing the topic's segment files back.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bus_proto::fdpass;
use bus_proto::protocol::{self, ProtocolError, Request, Response};
use bus_proto::segment::ShmRing;
use bus_proto::status::StatusPage;
use bus_proto::wake::WakeBell;

use crate::error::{ConnectError, RequestError};
use crate::hangup::Liveness;

/// A daemon running inside this process, kept alive by its connections.
#[cfg(feature = "embedded")]
pub(crate) type Embedded = Option<bus_daemon::DaemonHandle>;
/// Without the `embedded` feature there is no daemon inside the process.
#[cfg(not(feature = "embedded"))]
pub(crate) type Embedded = Option<std::convert::Infallible>;

pub(crate) struct Conn {
    link: Mutex<Link>,
    /// Whether the daemon hung up, and the rings to wake when it does (see `hangup`).
    liveness: Arc<Liveness>,
    socket: PathBuf,
    daemon_pid: u32,
    // Declared last: an embedded daemon stops only after this connection has closed.
    _embedded: Embedded,
}

/// The live stream, the epoch of the daemon behind it, and its status page.
struct Link {
    stream: UnixStream,
    epoch: u32,
    status: Arc<StatusPage>,
    /// A call on it timed out: an answer may still come and would be taken for the next
    /// call's, so the next call connects anew.
    broken: bool,
}

/// The control timeout when `SHMBUS_CONTROL_TIMEOUT_MS` does not set one.
const DEFAULT_CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a call waits for the daemon (to accept, to take a request, to answer):
/// `SHMBUS_CONTROL_TIMEOUT_MS`, else 30 s. A daemon never takes that long for anything it
/// serves (topics are made off its loop); one that does is hung, and the caller gets an error
/// instead of hanging with it.
pub(crate) fn control_timeout() -> Duration {
    static TIMEOUT: OnceLock<Duration> = OnceLock::new();
    *TIMEOUT.get_or_init(|| {
        std::env::var("SHMBUS_CONTROL_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&ms| ms > 0)
            .map_or(DEFAULT_CONTROL_TIMEOUT, Duration::from_millis)
    })
}

/// Whether a protocol error is the control timeout running out.
fn timed_out(e: &ProtocolError) -> bool {
    matches!(e, ProtocolError::Io(io) if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

impl Conn {
    pub(crate) fn connect(socket: &Path, embedded: Embedded) -> Result<Conn, ConnectError> {
        let (link, daemon_pid) = handshake(socket)?;
        let liveness = Liveness::new();
        liveness.linked(&link.stream);
        Ok(Conn {
            link: Mutex::new(link),
            liveness,
            socket: socket.to_path_buf(),
            daemon_pid,
            _embedded: embedded,
        })
    }

    /// The status page of the daemon this connection talks to (ports keep a clone and read
    /// the epoch from it before each call).
    pub(crate) fn status(&self) -> Arc<StatusPage> {
        self.link
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .status
            .clone()
    }

    /// Whether the daemon hung up (and no new stream replaced the old one yet): a waiting
    /// port must look for a restarted daemon now and then (see `hangup`).
    pub(crate) fn is_down(&self) -> bool {
        self.liveness.is_down()
    }

    /// The doorbell for a ring a port of this connection maps: its sleepers are woken when
    /// the daemon hangs up (register the ring with [`Conn::watch_ring`]).
    pub(crate) fn bell(&self) -> WakeBell {
        WakeBell::interruptible(self.liveness.flag())
    }

    /// Wake the sleepers of `ring` when the daemon hangs up.
    pub(crate) fn watch_ring(&self, ring: &Arc<ShmRing>) {
        self.liveness.add_ring(ring);
    }

    /// Replace the stream (a reconnect): the new one is watched for a hang-up.
    fn relink(&self, link: &mut Link, new: Link) {
        self.liveness.linked(&new.stream);
        *link = new;
    }

    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    pub(crate) fn daemon_pid(&self) -> u32 {
        self.daemon_pid
    }

    /// Follow a restarted daemon: if `epoch` (read from the status page) is not the epoch of
    /// the daemon this connection talks to, connect again. Returns whether it reconnected.
    pub(crate) fn follow(&self, epoch: u32) -> Result<bool, ConnectError> {
        let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        if link.epoch == epoch {
            return Ok(false);
        }
        let (new, pid) = handshake(&self.socket)?;
        tracing::info!(socket = %self.socket.display(), daemon_pid = pid, "reconnected to a restarted shmbusd");
        self.relink(&mut link, new);
        Ok(true)
    }

    /// One request, one response (and the descriptors that came with it). If the daemon went
    /// away (and perhaps a new one took its place), connect again and retry once.
    pub(crate) fn request(&self, req: &Request) -> Result<(Response, Vec<OwnedFd>), RequestError> {
        self.request_with_fds(req, &[])
    }

    /// Send a notice the daemon never answers ([`Request::Held`]). Best effort: on a lost
    /// connection it is dropped (the port that sent it follows a restarted daemon by itself,
    /// and notices again while it is still held back).
    pub(crate) fn notify(&self, notice: &Request) {
        let link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = fdpass::write_frame_with_fds(&link.stream, notice, &[]) {
            tracing::debug!(error = %e, "a notice to shmbusd was not sent");
        }
    }

    /// [`Conn::request`] with descriptors sent beside the request.
    pub(crate) fn request_with_fds(
        &self,
        req: &Request,
        fds: &[RawFd],
    ) -> Result<(Response, Vec<OwnedFd>), RequestError> {
        let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        if link.broken {
            let (new, pid) = handshake(&self.socket)?;
            tracing::info!(socket = %self.socket.display(), daemon_pid = pid, "reconnected to shmbusd after a call timed out");
            self.relink(&mut link, new);
        }
        match exchange(&link.stream, req, fds) {
            Err(RequestError::Protocol(e)) if timed_out(&e) => {
                link.broken = true;
                Err(RequestError::TimedOut {
                    after: control_timeout(),
                })
            }
            Err(RequestError::Protocol(e)) if e.is_disconnect() => {
                let (new, pid) = handshake(&self.socket)?;
                tracing::info!(socket = %self.socket.display(), daemon_pid = pid, "reconnected to shmbusd");
                self.relink(&mut link, new);
                exchange(&link.stream, req, fds)
            }
            other => other,
        }
    }
}

fn exchange(
    stream: &UnixStream,
    req: &Request,
    fds: &[RawFd],
) -> Result<(Response, Vec<OwnedFd>), RequestError> {
    // sendmsg with MSG_NOSIGNAL: a dead daemon is an error here, never a SIGPIPE.
    fdpass::write_frame_with_fds(stream, req, fds)?;
    let (resp, fds) = fdpass::read_frame_with_fds::<Response>(stream, 2)?;
    if let Response::Error { code, message } = resp {
        return Err(RequestError::Refused { code, message });
    }
    Ok((resp, fds))
}

/// Connect and say hello; returns the link (stream, epoch, status page) and the daemon's pid.
fn handshake(socket: &Path) -> Result<(Link, u32), ConnectError> {
    let protocol = |source| ConnectError::Protocol {
        socket: socket.to_path_buf(),
        source,
    };
    let timeout = control_timeout();
    let timed_out_err = || ConnectError::TimedOut {
        socket: socket.to_path_buf(),
        after: timeout,
    };
    let stream = connect_within(socket, timeout).map_err(|source| {
        if source.kind() == io::ErrorKind::TimedOut {
            timed_out_err()
        } else {
            ConnectError::Unreachable {
                socket: socket.to_path_buf(),
                source,
            }
        }
    })?;
    let name = std::env::args().next().unwrap_or_default();
    let hello = Request::Hello {
        version: protocol::PROTOCOL_VERSION,
        client_name: name.chars().take(64).collect(),
    };
    let sent = fdpass::write_frame_with_fds(&stream, &hello, &[]);
    // Read even if the write failed: a daemon that refuses the connection (a limit) answers
    // and closes at once, and its answer says why, where the write error would not.
    let (resp, mut fds) = match (fdpass::read_frame_with_fds::<Response>(&stream, 1), sent) {
        (Ok(answer), _) => answer,
        (Err(e), _) if timed_out(&e) => return Err(timed_out_err()),
        (Err(_), Err(e)) | (Err(e), Ok(())) => return Err(protocol(e)),
    };
    match resp {
        Response::HelloOk {
            daemon_pid, epoch, ..
        } => {
            let fd = fds.pop().ok_or_else(|| {
                protocol(ProtocolError::Malformed(
                    "shmbusd sent no status page with its hello".into(),
                ))
            })?;
            let status = StatusPage::map(fd.as_fd()).map_err(|e| {
                protocol(ProtocolError::Malformed(format!(
                    "shmbusd's status page: {e}"
                )))
            })?;
            Ok((
                Link {
                    stream,
                    epoch,
                    status: Arc::new(status),
                    broken: false,
                },
                daemon_pid,
            ))
        }
        Response::Error { code, message } => Err(ConnectError::Refused {
            socket: socket.to_path_buf(),
            code,
            message,
        }),
        other => Err(protocol(unexpected(&other))),
    }
}

/// Connect to the daemon's socket, waiting at most `timeout` for it to accept (a daemon whose
/// listen queue is full makes a blocking `connect` wait for as long as it stays full), and set
/// the stream's read and write timeouts to `timeout`.
fn connect_within(socket: &Path, timeout: Duration) -> io::Result<UnixStream> {
    use nix::sys::socket::{self as sock, AddressFamily, SockFlag, SockType, UnixAddr};
    let addr = UnixAddr::new(socket).map_err(io::Error::from)?;
    let fd = sock::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(100);
    loop {
        match sock::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            // A full listen queue: a Unix socket says so at once instead of connecting later.
            Err(nix::errno::Errno::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(nix::errno::Errno::EAGAIN) => return Err(io::ErrorKind::TimedOut.into()),
            Err(e) => return Err(e.into()),
        }
    }
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

pub(crate) fn unexpected(resp: &Response) -> ProtocolError {
    ProtocolError::Malformed(format!("unexpected answer from shmbusd: {resp:?}"))
}
