//! Starting and stopping: the lock, the socket, the rules, the status page and the topic
//! records; the open-file limit; signals; and, after the event loop returns, removing every
//! file.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::{self, SigHandler, Signal};

use super::event_loop::{self, Server, SIGNAL_RELOAD, SIGNAL_STOP};
use super::registry::{Ctx, State};
use super::{Config, DaemonHandle, StartError};
use crate::acl::AccessConfig;
use crate::lock::{ensure_socket_dir, DaemonLock, LockError};
use crate::state::{self, Journal};

extern "C" fn on_stop_signal(_: libc::c_int) {
    event_loop::on_signal(&SIGNAL_STOP);
}

extern "C" fn on_reload_signal(_: libc::c_int) {
    event_loop::on_signal(&SIGNAL_RELOAD);
}

fn install_signal_handlers() {
    let handlers = [
        (Signal::SIGTERM, SigHandler::Handler(on_stop_signal)),
        (Signal::SIGINT, SigHandler::Handler(on_stop_signal)),
        (Signal::SIGHUP, SigHandler::Handler(on_reload_signal)),
        (Signal::SIGPIPE, SigHandler::SigIgn),
    ];
    for (sig, handler) in handlers {
        // SAFETY: the handlers only store to static atomics and `write(2)` one byte to a
        // socket, both async-signal-safe, and no other handler for these signals is installed
        // by this process.
        if let Err(e) = unsafe { signal::signal(sig, handler) } {
            tracing::warn!(signal = ?sig, error = %e, "cannot install a signal handler");
        }
    }
}

/// The most descriptors the kernel lets a process have (`fs.nr_open`), or a common default.
fn nr_open() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1 << 20)
}

/// Raise the open-file limit as far as allowed: the hard limit too when this process may
/// (`CAP_SYS_RESOURCE`), else the soft limit to the hard one. Each topic holds two descriptors
/// and each client one, so the default soft limit (often 1,024) would cap a daemon near 500
/// topics. Returns the soft limit in force.
fn raise_open_file_limit() -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    let want = nr_open().min(1 << 20);
    if hard < want && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        tracing::info!(from = soft, to = want, "raised the open-file limit");
        return want;
    }
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::info!(
                    from = soft,
                    to = hard,
                    "raised the open-file limit to its hard limit"
                );
                return hard;
            }
            Err(e) => tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit"),
        }
    }
    soft
}

/// The open-file limit in force (soft).
fn open_file_limit() -> u64 {
    getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft)
}

/// Prepare everything that can fail (lock, socket, rules, records) and make the server.
fn prepare(config: &Config, max_open_files: u64) -> Result<(Server, DaemonLock), StartError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StartError::Io { path, source }
    };
    ensure_socket_dir(&config.socket).map_err(io_err(&config.socket))?;
    let lock = DaemonLock::acquire(&config.socket).map_err(|e| match e {
        LockError::AlreadyRunning { pid } => StartError::AlreadyRunning {
            pid,
            socket: config.socket.clone(),
        },
        LockError::Io { path, source } => StartError::Io { path, source },
    })?;
    let acl = match &config.acl_path {
        Some(p) => AccessConfig::load(p)?,
        None => AccessConfig::default(),
    };
    lock.remove_stale_socket().map_err(io_err(&config.socket))?;
    let uid = nix::unistd::geteuid().as_raw();
    let listener = UnixListener::bind(&config.socket).map_err(io_err(&config.socket))?;
    match config.socket_group {
        None => std::fs::set_permissions(&config.socket, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(&config.socket))?,
        Some(gid) => open_to_group(&config.socket, gid).map_err(io_err(&config.socket))?,
    }
    listener
        .set_nonblocking(true)
        .map_err(io_err(&config.socket))?;
    let pending = state::load(&config.socket);
    if !pending.is_empty() {
        tracing::info!(
            topics = pending.len(),
            "a daemon on this socket died; waiting for the ports of its topics to hand them back"
        );
    }
    let journal = Journal::create(&config.socket, pending.values())
        .map_err(io_err(&bus_proto::paths::topics_path_for(&config.socket)))?;
    // Publish the new epoch only once the socket listens: a client that sees it must find
    // this daemon to re-attach to (connections wait in the backlog until the loop runs).
    let epoch = new_epoch();
    let (status, status_ro) =
        crate::status::publish(&config.socket, uid, epoch).map_err(io_err(&config.socket))?;
    let adopt_deadline = (!pending.is_empty()).then(|| Instant::now() + config.adopt_grace);
    let ctx = Ctx {
        config: config.clone(),
        uid,
        epoch,
        _status: status,
        status_ro,
        max_open_files,
    };
    let state = State::new(acl, pending, adopt_deadline, Some(journal));
    let server = Server::new(ctx, state, listener).map_err(io_err(&config.socket))?;
    Ok((server, lock))
}

/// Let members of group `gid` reach the socket: socket `0660`, its directory `0710`, both owned
/// by the group (the directory was checked to be ours by `ensure_socket_dir`).
fn open_to_group(socket: &Path, gid: u32) -> io::Result<()> {
    let dir = socket
        .parent()
        .ok_or_else(|| io::Error::other("the socket path has no directory"))?;
    std::os::unix::fs::chown(socket, None, Some(gid))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
    std::os::unix::fs::chown(dir, None, Some(gid))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o710))?;
    tracing::info!(gid, "socket open to group members (0660, directory 0710)");
    Ok(())
}

fn new_epoch() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (std::process::id().rotate_left(16) ^ nanos).max(1)
}

/// Run the daemon in this thread until SIGTERM/SIGINT (with `handle_signals`) or a `Shutdown`
/// request; then stop gracefully. The standalone daemon: it raises its open-file limit.
pub fn run(config: Config) -> Result<(), StartError> {
    if config.handle_signals {
        install_signal_handlers();
    }
    let max_open_files = raise_open_file_limit();
    let (server, lock) = prepare(&config, max_open_files)?;
    tracing::info!(socket = %config.socket.display(), pid = std::process::id(), max_open_files, "shmbusd serving");
    serve(server, lock, &config);
    Ok(())
}

/// Start an embedded daemon on `config.socket` in a background thread of this process. It
/// leaves the process's open-file limit as it is (the process is not the daemon's own).
pub fn spawn(config: Config) -> Result<DaemonHandle, StartError> {
    let (server, lock) = prepare(&config, open_file_limit())?;
    let control = server.control();
    let c = config.clone();
    let thread = std::thread::Builder::new()
        .name("shmbusd".into())
        .spawn(move || serve(server, lock, &c))
        .map_err(|source| StartError::Io {
            path: config.socket.clone(),
            source,
        })?;
    Ok(DaemonHandle {
        control,
        socket: config.socket,
        thread: Some(thread),
    })
}

fn serve(server: Server, lock: DaemonLock, config: &Config) {
    server.run();
    let _ = std::fs::remove_file(&config.socket);
    state::remove(&config.socket);
    crate::status::remove(&config.socket);
    drop(lock);
    tracing::info!("shmbusd stopped; topics closed, socket removed");
}

/// Ask the daemon behind `handle` to stop, and wait for it.
pub(super) fn stop(handle: &mut DaemonHandle) {
    handle.control.stop.store(true, Ordering::SeqCst);
    let _ = handle.control.waker.wake();
    if let Some(t) = handle.thread.take() {
        let _ = t.join();
    }
}
