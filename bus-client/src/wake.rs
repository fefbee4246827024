//! Waiting on a descriptor: the eventfds wait sets and async code sleep on, the wake slots
//! the daemon hands out for them, and the open-file limit they count against. The protocol in
//! shared memory is bus-core's (`ring::wakers`); this process's wake agent (`agent`) writes
//! the eventfds. No eventfd ever leaves its process.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Once, Weak};
use std::time::Duration;

use bus_proto::protocol::{ErrorCode, Request, Response, Role};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::conn::Conn;
use crate::error::{RequestError, WaitError};

/// Raise the soft open-file limit to the hard one, once per process: every waiter holds an
/// eventfd, and every port two segment descriptors.
fn raise_nofile_limit() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
            if soft < hard {
                let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
            }
        }
    });
}

/// `EMFILE` and `ENFILE` as [`WaitError::TooManyFiles`], with the limit; others as they are.
pub(crate) fn too_many_files(e: io::Error) -> WaitError {
    match e.raw_os_error() {
        Some(libc_errno)
            if libc_errno == nix::Error::EMFILE as i32
                || libc_errno == nix::Error::ENFILE as i32 =>
        {
            let limit = getrlimit(Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft);
            WaitError::TooManyFiles { limit }
        }
        _ => WaitError::Io(e),
    }
}

/// A non-blocking eventfd a waiter sleeps on; clones share it (the agent keeps one to write).
#[derive(Debug, Clone)]
pub(crate) struct Efd(Arc<EventFd>);

impl Efd {
    /// A new eventfd. At the open-file limit (after raising the soft limit to the hard one): a
    /// clear error, and nothing made.
    pub(crate) fn new() -> Result<Efd, WaitError> {
        raise_nofile_limit();
        let flags = EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK;
        match EventFd::from_value_and_flags(0, flags) {
            Ok(fd) => Ok(Efd(Arc::new(fd))),
            Err(e) => Err(too_many_files(e.into())),
        }
    }

    /// Make it readable (the agent's wake-up). Non-blocking: a counter at its maximum is
    /// readable already.
    pub(crate) fn signal(&self) {
        let _ = nix::unistd::write(self.0.as_fd(), &1u64.to_ne_bytes());
    }

    /// Consume what was written (a non-blocking read; nothing there is fine).
    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 8];
        let _ = nix::unistd::read(self.0.as_fd(), &mut buf);
    }

    /// Sleep until the eventfd is readable or `timeout` passes (forever with `None`). A
    /// signal or an error returns early; callers re-check their condition.
    pub(crate) fn sleep(&self, timeout: Option<Duration>) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let ms = timeout.map_or(PollTimeout::NONE, |t| {
            // Round up: a 0.4 ms timeout must not become a busy 0.
            let ms = t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        });
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, ms);
    }

    /// A duplicate, for an async reactor to poll.
    #[cfg(any(feature = "tokio", feature = "async-io"))]
    pub(crate) fn try_clone(&self) -> Result<std::os::fd::OwnedFd, WaitError> {
        self.0.as_fd().try_clone_to_owned().map_err(too_many_files)
    }
}

impl AsFd for Efd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// A wake slot held for one port, on one daemon: given back when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    conn: Weak<Conn>,
    topic: String,
    /// The slot.
    pub(crate) slot: usize,
    /// Its generation.
    pub(crate) generation: u64,
    /// The daemon epoch it was made at (a restarted daemon knows no slot of an earlier one).
    pub(crate) epoch: u32,
}

impl Registration {
    /// A wake slot for a waiter of the port `(role, index, port_generation)` on `topic`.
    #[cfg(any(feature = "tokio", feature = "async-io"))]
    pub(crate) fn new(
        conn: &Arc<Conn>,
        topic: &str,
        role: Role,
        port: (usize, u64),
    ) -> Result<Registration, WaitError> {
        Registration::on_bell(conn, topic, role, port, false)
    }

    /// A wake slot for the port `(role, index, port_generation)` on `topic` that waits for
    /// messages or room (`presence` false), or for the topic's peer count to change.
    pub(crate) fn on_bell(
        conn: &Arc<Conn>,
        topic: &str,
        role: Role,
        (index, port_generation): (usize, u64),
        presence: bool,
    ) -> Result<Registration, WaitError> {
        let epoch = conn.status().epoch();
        let request = Request::AddWaker {
            topic: topic.to_string(),
            role,
            index: u32::try_from(index).unwrap_or(u32::MAX),
            generation: port_generation,
            presence,
        };
        let answer = conn.request(&request);
        match answer {
            Ok((Response::WakerAdded { slot, generation }, _)) => Ok(Registration {
                conn: Arc::downgrade(conn),
                topic: topic.to_string(),
                slot: slot as usize,
                generation,
                epoch,
            }),
            Ok((other, _)) => Err(WaitError::Request(RequestError::Protocol(
                crate::conn::unexpected(&other),
            ))),
            Err(RequestError::Refused {
                code: ErrorCode::TableFull,
                message,
            }) => Err(WaitError::SlotsFull {
                topic: topic.to_string(),
                message,
            }),
            Err(e) => Err(WaitError::Request(e)),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.upgrade() {
            // Only the daemon that handed the slot out knows it.
            if conn.status().epoch() == self.epoch {
                let _ = conn.request(&Request::RemoveWaker {
                    topic: self.topic.clone(),
                    slot: self.slot as u32,
                    generation: self.generation,
                });
            }
        }
    }
}

/// Start one of the library's own threads (the wake agent, the hang-up watcher) with every
/// signal blocked, so that a signal sent to the process is never delivered to it: an
/// application that blocks SIGINT in its threads and takes it with `sigwait` (as `shmbus
/// record` does) must not have its signals land in a thread it does not know about, where
/// their default action would kill the process.
pub(crate) fn spawn_quiet<F>(name: &str, f: F) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
    let mut old = SigSet::empty();
    let all = SigSet::all();
    // The new thread inherits the mask in force when it is created; ours is restored at once.
    let blocked = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&all), Some(&mut old)).is_ok();
    let spawned = std::thread::Builder::new().name(name.into()).spawn(f);
    if blocked {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
    spawned
}
