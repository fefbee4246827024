//! Starting and stopping: the lock, the socket, the rules and the status page; the accept loop;
//! signals; a graceful stop that closes every topic and removes every file.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, SigHandler, Signal};

use super::registry::{Shared, State};
use super::{connection, housekeeping, Config, DaemonHandle, StartError};
use crate::acl::AccessConfig;
use crate::lock::{ensure_socket_dir, DaemonLock, LockError};
use crate::state::{self, TopicRecord};

static SIGNAL_STOP: AtomicBool = AtomicBool::new(false);
static SIGNAL_RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    SIGNAL_STOP.store(true, Ordering::SeqCst);
}

extern "C" fn on_reload_signal(_: libc::c_int) {
    SIGNAL_RELOAD.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    let handlers = [
        (Signal::SIGTERM, SigHandler::Handler(on_stop_signal)),
        (Signal::SIGINT, SigHandler::Handler(on_stop_signal)),
        (Signal::SIGHUP, SigHandler::Handler(on_reload_signal)),
        (Signal::SIGPIPE, SigHandler::SigIgn),
    ];
    for (sig, handler) in handlers {
        // SAFETY: the handlers only store to static atomics, which is async-signal-safe, and
        // no other handler for these signals is installed by this process.
        if let Err(e) = unsafe { signal::signal(sig, handler) } {
            tracing::warn!(signal = ?sig, error = %e, "cannot install a signal handler");
        }
    }
}

/// Prepare everything that can fail (lock, socket, rules) and return the listener.
fn prepare(config: &Config) -> Result<(Arc<Shared>, UnixListener, DaemonLock), StartError> {
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
    // Publish the new epoch only once the socket listens: a client that sees it must find
    // this daemon to re-attach to (connections wait in the backlog until `serve`).
    let epoch = new_epoch();
    let (status, status_ro) =
        crate::status::publish(&config.socket, uid, epoch).map_err(io_err(&config.socket))?;
    let pending: BTreeMap<String, TopicRecord> = state::load(&config.socket)
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    if !pending.is_empty() {
        tracing::info!(
            topics = pending.len(),
            "a daemon on this socket died; waiting for the ports of its topics to hand them back"
        );
    }
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            adopt_deadline: (!pending.is_empty()).then(|| Instant::now() + config.adopt_grace),
            topics: BTreeMap::new(),
            clients: HashMap::new(),
            repairs: Vec::new(),
            acl,
            stopping: false,
            creating: HashMap::new(),
            pending,
        }),
        created: Condvar::new(),
        stop: AtomicBool::new(false),
        config: config.clone(),
        uid,
        epoch,
        _status: status,
        status_ro,
        next_client: AtomicU64::new(1),
    });
    Ok((shared, listener, lock))
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
/// request; then stop gracefully.
pub fn run(config: Config) -> Result<(), StartError> {
    if config.handle_signals {
        install_signal_handlers();
    }
    let (shared, listener, lock) = prepare(&config)?;
    tracing::info!(socket = %config.socket.display(), pid = std::process::id(), "shmbusd serving");
    serve(shared, listener, lock);
    Ok(())
}

/// Start an embedded daemon on `config.socket` in a background thread of this process.
pub fn spawn(config: Config) -> Result<DaemonHandle, StartError> {
    let (shared, listener, lock) = prepare(&config)?;
    let s = shared.clone();
    let thread = std::thread::Builder::new()
        .name("shmbusd".into())
        .spawn(move || serve(s, listener, lock))
        .map_err(|source| StartError::Io {
            path: config.socket.clone(),
            source,
        })?;
    Ok(DaemonHandle {
        shared,
        thread: Some(thread),
    })
}

fn serve(shared: Arc<Shared>, listener: UnixListener, lock: DaemonLock) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    loop {
        if shared.stop.load(Ordering::SeqCst)
            || (shared.config.handle_signals && SIGNAL_STOP.load(Ordering::SeqCst))
        {
            break;
        }
        if shared.config.handle_signals && SIGNAL_RELOAD.swap(false, Ordering::SeqCst) {
            reload_rules(&shared);
        }
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        let ready = matches!(poll(&mut fds, PollTimeout::from(10u8)), Ok(n) if n > 0);
        if ready {
            loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Some(t) = connection::start(&shared, stream) {
                            connections.push(t);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        break;
                    }
                }
            }
        }
        housekeeping::run(&shared);
        connections.retain(|t| !t.is_finished());
    }
    shutdown(&shared, connections);
    let _ = std::fs::remove_file(&shared.config.socket);
    state::remove(&shared.config.socket);
    crate::status::remove(&shared.config.socket);
    drop(listener);
    drop(lock);
    tracing::info!("shmbusd stopped; topics closed, socket removed");
}

fn reload_rules(shared: &Shared) {
    let Some(path) = &shared.config.acl_path else {
        tracing::info!("SIGHUP: no rules file configured; nothing to reload");
        return;
    };
    match AccessConfig::load(path) {
        Ok(acl) => {
            shared.lock().acl = acl;
            tracing::info!(path = %path.display(), "access rules reloaded");
        }
        Err(e) => tracing::error!(error = %e, "access rules NOT reloaded; keeping the old rules"),
    }
}

fn shutdown(shared: &Shared, connections: Vec<JoinHandle<()>>) {
    let mut state = shared.lock();
    state.stopping = true;
    for (name, topic) in &state.topics {
        topic.ring.close();
        tracing::debug!(topic = name.as_str(), "closed");
    }
    for client in state.clients.values() {
        let _ = client.stream.shutdown(std::net::Shutdown::Both);
    }
    drop(state);
    shared.created.notify_all();
    for t in connections {
        let _ = t.join();
    }
    shared.lock().topics.clear();
}

/// Ask the daemon behind `shared` to stop, and wait for it.
pub(super) fn stop(handle: &mut DaemonHandle) {
    handle.shared.stop.store(true, Ordering::SeqCst);
    if let Some(t) = handle.thread.take() {
        let _ = t.join();
    }
}
