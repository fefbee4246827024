//! The control connection to the daemon: one per [`Bus`](crate::Bus), kept open for the life
//! of the process's ports, so that the daemon learns at once when the process goes away.
//!
//! If the daemon dies, ports keep publishing and receiving on what they have mapped. A restarted
//! daemon writes its new epoch into the status page beside the socket (every client maps it,
//! read-only, from the descriptor that comes with `HelloOk`); a port that sees the epoch change
//! calls [`Conn::follow`], which reconnects (once for all ports of the connection), and then
//! re-attaches itself, handing the topic's segment files back.

use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bus_proto::fdpass;
use bus_proto::protocol::{self, ProtocolError, Request, Response};
use bus_proto::status::StatusPage;

use crate::error::{ConnectError, RequestError};

/// A daemon running inside this process, kept alive by its connections.
#[cfg(feature = "embedded")]
pub(crate) type Embedded = Option<bus_daemon::DaemonHandle>;
/// Without the `embedded` feature there is no daemon inside the process.
#[cfg(not(feature = "embedded"))]
pub(crate) type Embedded = Option<std::convert::Infallible>;

pub(crate) struct Conn {
    link: Mutex<Link>,
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
}

impl Conn {
    pub(crate) fn connect(socket: &Path, embedded: Embedded) -> Result<Conn, ConnectError> {
        let (link, daemon_pid) = handshake(socket)?;
        Ok(Conn {
            link: Mutex::new(link),
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
        *link = new;
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
        match exchange(&link.stream, req, fds) {
            Err(RequestError::Protocol(e)) if e.is_disconnect() => {
                let (new, pid) = handshake(&self.socket)?;
                tracing::info!(socket = %self.socket.display(), daemon_pid = pid, "reconnected to shmbusd");
                *link = new;
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
    let stream = UnixStream::connect(socket).map_err(|source| ConnectError::Unreachable {
        socket: socket.to_path_buf(),
        source,
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

pub(crate) fn unexpected(resp: &Response) -> ProtocolError {
    ProtocolError::Malformed(format!("unexpected answer from shmbusd: {resp:?}"))
}
