//! The control connection to the daemon: one per [`Bus`](crate::Bus), kept open for the life
//! of the process's ports, so that the daemon learns at once when the process goes away.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bus_daemon::fdpass;
use bus_daemon::protocol::{self, ProtocolError, Request, Response};
use bus_daemon::DaemonHandle;

use crate::Error;

pub(crate) struct Conn {
    stream: Mutex<UnixStream>,
    socket: PathBuf,
    daemon_pid: u32,
    // Declared last: an embedded daemon stops only after this connection has closed.
    _embedded: Option<DaemonHandle>,
}

impl Conn {
    pub(crate) fn connect(socket: &Path, embedded: Option<DaemonHandle>) -> Result<Conn, Error> {
        let stream = UnixStream::connect(socket).map_err(|source| Error::Connect {
            socket: socket.to_path_buf(),
            source,
        })?;
        let name = std::env::args().next().unwrap_or_default();
        let hello = Request::Hello {
            version: protocol::PROTOCOL_VERSION,
            client_name: name.chars().take(64).collect(),
        };
        fdpass::write_frame_with_fds(&stream, &hello, &[])?;
        let (resp, _) = fdpass::read_frame_with_fds::<Response>(&stream, 0)?;
        let daemon_pid = match resp {
            Response::HelloOk { daemon_pid, .. } => daemon_pid,
            Response::Error { code, message } => return Err(Error::from_daemon(code, message)),
            other => return Err(unexpected(&other)),
        };
        Ok(Conn {
            stream: Mutex::new(stream),
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

    /// One request, one response (and the descriptors that came with it).
    pub(crate) fn request(&self, req: &Request) -> Result<(Response, Vec<OwnedFd>), Error> {
        let stream = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        // sendmsg with MSG_NOSIGNAL: a dead daemon is an error here, never a SIGPIPE.
        fdpass::write_frame_with_fds(&stream, req, &[])?;
        let (resp, fds) = fdpass::read_frame_with_fds::<Response>(&stream, 1)?;
        if let Response::Error { code, message } = resp {
            return Err(Error::from_daemon(code, message));
        }
        Ok((resp, fds))
    }
}

pub(crate) fn unexpected(resp: &Response) -> Error {
    Error::Protocol(ProtocolError::Malformed(format!(
        "unexpected answer from shmbusd: {resp:?}"
    )))
}
