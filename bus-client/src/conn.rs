//! The control connection to the daemon: one per [`Bus`](crate::Bus), kept open for the life
//! of the process's ports, so that the daemon learns at once when the process goes away.
//!
//! If the daemon dies, ports keep publishing and receiving on what they have mapped. A restarted
//! daemon adopts the topics and writes its epoch into their segments; a port that sees the
//! epoch change calls [`Conn::follow`], which reconnects (once for all ports of the connection),
//! and then re-attaches itself.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bus_daemon::fdpass;
use bus_daemon::protocol::{self, ProtocolError, Request, Response};
use bus_daemon::DaemonHandle;

use crate::Error;

pub(crate) struct Conn {
    link: Mutex<Link>,
    socket: PathBuf,
    daemon_pid: u32,
    // Declared last: an embedded daemon stops only after this connection has closed.
    _embedded: Option<DaemonHandle>,
}

/// The live stream and the epoch of the daemon behind it (learnt from the first segment).
struct Link {
    stream: UnixStream,
    epoch: Option<u32>,
}

impl Conn {
    pub(crate) fn connect(socket: &Path, embedded: Option<DaemonHandle>) -> Result<Conn, Error> {
        let (stream, daemon_pid) = handshake(socket)?;
        Ok(Conn {
            link: Mutex::new(Link {
                stream,
                epoch: None,
            }),
            socket: socket.to_path_buf(),
            daemon_pid,
            _embedded: embedded,
        })
    }

    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    pub(crate) fn daemon_pid(&self) -> u32 {
        self.daemon_pid
    }

    /// Follow a restarted daemon: if `epoch` (read from a segment) is not the epoch of the
    /// daemon this connection talks to, connect again. Returns whether it reconnected.
    pub(crate) fn follow(&self, epoch: u32) -> Result<bool, Error> {
        let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        match link.epoch {
            Some(e) if e == epoch => Ok(false),
            None => {
                link.epoch = Some(epoch);
                Ok(false)
            }
            Some(_) => {
                let (stream, pid) = handshake(&self.socket)?;
                tracing::info!(socket = %self.socket.display(), daemon_pid = pid, "reconnected to a restarted shmbusd");
                *link = Link {
                    stream,
                    epoch: Some(epoch),
                };
                Ok(true)
            }
        }
    }

    /// One request, one response (and the descriptors that came with it). If the daemon went
    /// away (and perhaps a new one took its place), connect again and retry once.
    pub(crate) fn request(&self, req: &Request) -> Result<(Response, Vec<OwnedFd>), Error> {
        let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        match exchange(&link.stream, req) {
            Err(Error::Protocol(
                ProtocolError::Io(_) | ProtocolError::Closed | ProtocolError::Truncated { .. },
            )) => {
                let (stream, pid) = handshake(&self.socket)?;
                tracing::info!(socket = %self.socket.display(), daemon_pid = pid, "reconnected to shmbusd");
                // The new daemon's epoch is learnt from the next segment a port looks at.
                *link = Link {
                    stream,
                    epoch: None,
                };
                exchange(&link.stream, req)
            }
            other => other,
        }
    }
}

fn exchange(stream: &UnixStream, req: &Request) -> Result<(Response, Vec<OwnedFd>), Error> {
    // sendmsg with MSG_NOSIGNAL: a dead daemon is an error here, never a SIGPIPE.
    fdpass::write_frame_with_fds(stream, req, &[])?;
    let (resp, fds) = fdpass::read_frame_with_fds::<Response>(stream, 1)?;
    if let Response::Error { code, message } = resp {
        return Err(Error::from_daemon(code, message));
    }
    Ok((resp, fds))
}

/// Connect and say hello; returns the stream and the daemon's pid.
fn handshake(socket: &Path) -> Result<(UnixStream, u32), Error> {
    let stream = UnixStream::connect(socket).map_err(|source| Error::Connect {
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
    let (resp, _) = match (fdpass::read_frame_with_fds::<Response>(&stream, 0), sent) {
        (Ok(answer), _) => answer,
        (Err(_), Err(e)) => return Err(e.into()),
        (Err(e), Ok(())) => return Err(e.into()),
    };
    match resp {
        Response::HelloOk { daemon_pid, .. } => Ok((stream, daemon_pid)),
        Response::Error { code, message } => Err(Error::from_daemon(code, message)),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn unexpected(resp: &Response) -> Error {
    Error::Protocol(ProtocolError::Malformed(format!(
        "unexpected answer from shmbusd: {resp:?}"
    )))
}
