//! The daemon: accepts clients on the Unix socket, serves the control protocol, owns the topic
//! registry and the segments, and cleans up after clients that go away. It is never on the
//! data path.
//!
//! | file | concern |
//! | --- | --- |
//! | `lifecycle.rs` | start (lock, socket, rules, status page, records, open-file limit), signals, removing files at the end |
//! | `event_loop.rs` | one thread on `epoll`: accept, read and answer every connection fairly, park what must wait, timers |
//! | `connection.rs` | one client's connection: frames in (the strict decoder, descriptors), answers out (bounded) |
//! | `dispatch.rs` | one request in, one outcome out |
//! | `disposal.rs` | closing what clients sent (descriptors, connections) without blocking the loop |
//! | `attach.rs` | attach a port; plan a topic's creation and register it |
//! | `creator.rs` | worker threads that make segments off the loop |
//! | `adopt.rs` | after a restart: take topics back, re-attach ports, give up dead orphans |
//! | `watch.rs` | stuck subscribers, watched only while a publisher is held back |
//! | `timers.rs` | the deadlines, armed only while there is work on a clock |
//! | `registry.rs` | the state, and the one routine that releases a departed process's ports |
//! | `wakers.rs` | wake slots: waiters on eventfds, and their descriptors for the ringers |
//! | `announce.rs` | topic watches: created and deleted topics told to watchers, with a subscriber attached before the creator is answered |
//!
//! A connection that closes (the process exited or was killed) releases that client's
//! subscribers and repairs its publishers' unfinished claims at once. Nothing runs on a fixed
//! tick: an idle daemon sleeps, however many topics it holds (see `docs/scale.md`).

mod adopt;
mod announce;
mod attach;
mod connection;
mod creator;
mod dispatch;
mod disposal;
mod event_loop;
mod lifecycle;
mod registry;
mod timers;
mod wakers;
mod watch;

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bus_proto::protocol::{ErrorCode, Response};

pub use lifecycle::{run, spawn};

/// An answer and the descriptors that travel beside it.
type Answer = (Response, Vec<OwnedFd>);

fn error(code: ErrorCode, message: impl Into<String>) -> Answer {
    (Response::error(code, message), Vec::new())
}

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Unix socket to listen on.
    pub socket: PathBuf,
    /// Access rules (TOML); `None`: only the daemon's own uid may use the bus.
    pub acl_path: Option<PathBuf>,
    /// A live subscriber that holds back a full lossless topic for this long is evicted.
    pub stuck_timeout: Duration,
    /// Install SIGTERM/SIGINT/SIGHUP handlers (the `shmbusd` binary; not an embedded daemon).
    pub handle_signals: bool,
    /// After a restart, how long attaches to a recorded topic wait for a port to hand it back,
    /// and how long adopted topics wait for their other ports to re-attach before the ports
    /// whose processes are gone are released (subscribers) or repaired (publishers).
    pub adopt_grace: Duration,
    /// A group whose members may connect: the socket becomes 0660 and its directory 0710, both
    /// owned by this group. Without it only the daemon's uid can reach the socket (0600 in a
    /// 0700 directory), whatever the rules say. Never world-accessible either way.
    pub socket_group: Option<u32>,
}

impl Config {
    /// The defaults: no rules file, a 5 s stuck timeout, a 3 s adopt grace.
    pub fn new(socket: PathBuf) -> Config {
        Config {
            socket,
            acl_path: None,
            stuck_timeout: Duration::from_secs(5),
            handle_signals: false,
            adopt_grace: Duration::from_secs(3),
            socket_group: None,
        }
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Another daemon serves this socket.
    #[error("another shmbusd (pid {}) already serves {socket}; stop it first, or pass another --socket", pid.map_or("unknown".to_string(), |p| p.to_string()))]
    AlreadyRunning {
        /// Its pid, if known.
        pid: Option<u32>,
        /// The socket.
        socket: PathBuf,
    },
    /// The socket directory, lock or socket could not be set up.
    #[error("cannot set up {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The access rules file is invalid.
    #[error("access rules: {0}")]
    Acl(#[from] crate::acl::AclError),
}

/// A running daemon inside this process (the embedded daemon). Dropping it stops the daemon
/// gracefully: topics are closed, the socket and the files beside it removed.
pub struct DaemonHandle {
    control: Arc<event_loop::Control>,
    socket: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl DaemonHandle {
    /// The socket clients connect to.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Stop the daemon and wait for it.
    pub fn stop(mut self) {
        lifecycle::stop(&mut self);
    }
}

impl Drop for DaemonHandle {
    fn drop(&mut self) {
        lifecycle::stop(self);
    }
}
