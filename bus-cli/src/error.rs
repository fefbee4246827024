//! Failures and their exit codes (see `EXIT_CODES` in `main.rs`).

use std::io;
use std::path::Path;

use bus_client::error::{ConnectError, OpenError, RequestError};
use bus_client::{ErrorCode, RecvError, SendError};
use bus_proto::protocol::ProtocolError;

/// Exit code: a failure while running.
pub const FAILURE: u8 = 1;
/// Exit code: bad usage, an invalid topic name, or no daemon.
pub const USAGE: u8 = 2;
/// Exit code: the daemon refused the request.
pub const REFUSED: u8 = 3;

/// A failure: the exit code and a message for the shell user (empty: already reported).
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn failure(message: impl Into<String>) -> CliError {
        CliError {
            code: FAILURE,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            code: USAGE,
            message: message.into(),
        }
    }

    pub fn refused(message: impl Into<String>) -> CliError {
        CliError {
            code: REFUSED,
            message: message.into(),
        }
    }

    /// A failure connecting to the daemon at `socket`.
    pub fn connect(err: ConnectError, socket: &Path) -> CliError {
        match err {
            ConnectError::Unreachable { source, .. } => CliError::usage(format!(
                "no shmbusd answers at {} ({source}).\n  Start the daemon with `shmbusd` (or `shmbusd --socket {}`), or point --socket / SHMBUS_SOCKET at the socket of a running one.",
                socket.display(),
                socket.display()
            )),
            e @ (ConnectError::Refused { .. }
            | ConnectError::Protocol {
                source: ProtocolError::VersionMismatch { .. },
                ..
            }) => CliError::refused(e.to_string()),
            e => CliError::failure(e.to_string()),
        }
    }

    /// A request (list, stats, delete) the daemon at `socket` did not answer as asked.
    pub fn request(err: RequestError, socket: &Path) -> CliError {
        match err {
            RequestError::Refused {
                code: ErrorCode::ShuttingDown,
                message,
            } => CliError::failure(format!("shmbusd is stopping: {message}")),
            RequestError::Refused {
                code: ErrorCode::InvalidTopicName,
                message,
            } => CliError::usage(message),
            e @ RequestError::Refused { .. } => CliError::refused(e.to_string()),
            RequestError::Protocol(e) if e.is_disconnect() => CliError::failure(format!(
                "shmbusd at {} closed the connection (it stopped or crashed); restart it with `shmbusd`",
                socket.display()
            )),
            RequestError::Connect(e) => CliError::connect(e, socket),
            e => CliError::failure(e.to_string()),
        }
    }

    /// A publisher or subscriber that could not be opened.
    pub fn open(err: OpenError, socket: &Path) -> CliError {
        match err {
            e @ OpenError::InvalidName { .. } => CliError::usage(e.to_string()),
            OpenError::Refused {
                code: ErrorCode::ShuttingDown,
                message,
                ..
            } => CliError::failure(format!("shmbusd is stopping: {message}")),
            OpenError::Protocol { source, .. } if source.is_disconnect() => {
                CliError::failure(format!(
                    "shmbusd at {} closed the connection (it stopped or crashed); restart it with `shmbusd`",
                    socket.display()
                ))
            }
            OpenError::Connect { source, .. } => CliError::connect(*source, socket),
            e @ (OpenError::NotFound { .. }
            | OpenError::TypeMismatch { .. }
            | OpenError::GeometryMismatch { .. }
            | OpenError::InvalidOptions { .. }
            | OpenError::PermissionDenied { .. }
            | OpenError::TableFull { .. }
            | OpenError::LimitReached { .. }
            | OpenError::Refused { .. }) => CliError::refused(e.to_string()),
            e => CliError::failure(e.to_string()),
        }
    }

    /// A failure receiving from `topic`.
    pub fn recv(err: RecvError, topic: &str) -> CliError {
        match err {
            RecvError::Evicted => CliError::failure(format!(
                "this subscriber was evicted from '{topic}': it held back the lossless topic for longer than the daemon's --stuck-timeout-ms (or the topic was deleted); read faster, or use a lossy topic"
            )),
            e => CliError::failure(format!("receiving from '{topic}': {e}")),
        }
    }

    /// A failure sending on `topic`.
    pub fn send(err: SendError, topic: &str) -> CliError {
        match err {
            SendError::TooLarge(bus_client::TooLarge { len, max }) => CliError::failure(format!(
                "a message of {len} bytes does not fit the slot size of '{topic}' ({max} bytes); create the topic with a larger --slot-size (before anyone uses it), or send shorter messages"
            )),
            SendError::Closed => CliError::failure(format!(
                "topic '{topic}' was closed (the daemon stopped or the topic was deleted)"
            )),
            e => CliError::failure(format!("sending on '{topic}': {e}")),
        }
    }

    /// A failure writing to standard output or reading standard input.
    pub fn io(err: io::Error, what: &str) -> CliError {
        CliError::failure(format!("{what}: {err}"))
    }
}

/// Whether `err` means the reader of our standard output went away (e.g. `| head`).
pub fn is_broken_pipe(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::BrokenPipe
}
