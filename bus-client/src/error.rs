//! Errors of the control plane (connecting, opening topics). The data path has its own:
//! [`SendError`](crate::SendError) and [`RecvError`](crate::RecvError).

use std::io;
use std::path::PathBuf;

use bus_daemon::protocol::{ErrorCode, ProtocolError};

/// Why connecting to the daemon or opening a topic failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No daemon answers at the socket.
    #[error("cannot connect to shmbusd at {socket}: {source}. Is the daemon running? Start `shmbusd` (or `shmbusd --socket {socket}`), or use Bus::embedded() to run one inside this process")]
    Connect {
        /// The socket tried.
        socket: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The topic exists with another payload type.
    #[error("{0}")]
    TypeMismatch(String),
    /// The topic exists with another geometry or delivery mode.
    #[error("{0}")]
    GeometryMismatch(String),
    /// The daemon's access rules refuse this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The topic does not exist (and no options were given to create it).
    #[error("{0}")]
    NoSuchTopic(String),
    /// The daemon refused the request for another reason.
    #[error("shmbusd refused ({code:?}): {message}")]
    Refused {
        /// The daemon's error code.
        code: ErrorCode,
        /// What went wrong and what to do.
        message: String,
    },
    /// The conversation with the daemon failed (it stopped, or sent something unexpected).
    #[error("talking to shmbusd: {0}")]
    Protocol(#[from] ProtocolError),
    /// The topic's segment could not be mapped or failed validation.
    #[error("mapping the topic's shared memory: {0}")]
    Segment(#[from] bus_daemon::segment::OpenError),
    /// The embedded daemon could not start.
    #[error("starting the embedded daemon: {0}")]
    Embedded(#[from] bus_daemon::StartError),
    /// An argument is invalid.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn from_daemon(code: ErrorCode, message: String) -> Error {
        match code {
            ErrorCode::TypeMismatch => Error::TypeMismatch(message),
            ErrorCode::GeometryMismatch => Error::GeometryMismatch(message),
            ErrorCode::PermissionDenied => Error::PermissionDenied(message),
            ErrorCode::NoSuchTopic => Error::NoSuchTopic(message),
            code => Error::Refused { code, message },
        }
    }
}
