//! The daemon: accepts clients on the Unix socket, serves the control protocol, owns the topic
//! registry and the segments, and cleans up after clients that go away.
//!
//! One thread accepts connections and does housekeeping every few milliseconds (pending
//! repairs, eviction of stuck subscribers, signals); each client connection has a thread that
//! reads its requests. A connection that closes (the process exited or was killed) releases
//! that client's subscribers and repairs its publishers' unfinished claims at once.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bus_core::layout::{Layout, Mode};
use bus_core::ring::{RepairOutcome, StartAt as CoreStart};
use bus_core::storage::Storage;

use crate::acl::{AccessConfig, Action};
use crate::fdpass::{self, PeerCred};
use crate::names;
use crate::paths::{self, DaemonLock, LockError};
use crate::protocol::{
    self, ErrorCode, ProtocolError, PublisherStat, Request, Response, Role, StartAt,
    SubscriberStat, TopicInfo, TopicSpec, TopicStats,
};
use crate::segment::{self, geometry_of, Access, FileId, Segment, SegmentFds, ShmRing};
use crate::state::{self, TopicRecord};
use crate::status::StatusPage;

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
    /// The defaults: the default socket path, no rules file, a 5 s stuck timeout.
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

struct Attachment {
    client: u64,
    role: Role,
    index: u32,
    generation: u64,
    /// The owning process (for orphans, whose liveness is checked by pid).
    pid: u32,
}

struct Topic {
    spec: TopicSpec,
    ring: Arc<ShmRing>,
    /// The segment's files (the ring maps them).
    seg: Segment,
    /// Their identities, as recorded for a restarted daemon.
    files: [FileId; 2],
    len: u64,
    owner_uid: u32,
    attachments: Vec<Attachment>,
    /// Subscribers evicted while their port may live: their entries are reclaimed (made free
    /// for reuse) only when the port detaches or its client goes away.
    evicted: Vec<Attachment>,
    /// Subscriber (index, generation) → (cursor, since when it has not moved while blocking).
    stuck: HashMap<(usize, u64), (u64, Instant)>,
}

/// The client id of ports adopted from a previous daemon that have not re-attached yet.
const ORPHAN: u64 = 0;

/// How long after the adopt grace a recorded topic that no port handed back is kept: a port
/// that comes back later than that (its process made no call and did not wait) attaches anew.
const PENDING_KEEP: Duration = Duration::from_secs(60);

struct Client {
    cred: PeerCred,
    /// Supplementary groups (`SO_PEERGROUPS`), for rules that grant a gid.
    groups: Vec<u32>,
    name: String,
    hello: bool,
    stream: UnixStream,
}

struct PendingRepair {
    topic: String,
    index: usize,
    generation: u64,
    since: Instant,
}

struct State {
    topics: BTreeMap<String, Topic>,
    clients: HashMap<u64, Client>,
    repairs: Vec<PendingRepair>,
    acl: AccessConfig,
    stopping: bool,
    /// Topics a previous daemon recorded that no port has handed back yet.
    pending: BTreeMap<String, TopicRecord>,
    /// When orphaned ports of adopted topics are given up on, and attaches stop waiting for
    /// pending topics to be handed back.
    adopt_deadline: Option<Instant>,
}

struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
    config: Config,
    uid: u32,
    /// This daemon's incarnation, written into the status page (and every segment it manages).
    epoch: u32,
    /// The status page, and a read-only descriptor of it for clients.
    _status: StatusPage,
    status_ro: OwnedFd,
    next_client: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in a request handler must not take the whole bus down with a poisoned lock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running daemon inside this process (the embedded daemon). Dropping it stops the daemon
/// gracefully: topics are closed, segments unlinked, the socket removed.
pub struct DaemonHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl DaemonHandle {
    /// The socket clients connect to.
    pub fn socket_path(&self) -> &Path {
        &self.shared.config.socket
    }

    /// Stop the daemon and wait for it.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DaemonHandle {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

static SIGNAL_STOP: AtomicBool = AtomicBool::new(false);
static SIGNAL_RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    SIGNAL_STOP.store(true, Ordering::SeqCst);
}

extern "C" fn on_reload_signal(_: libc::c_int) {
    SIGNAL_RELOAD.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    let stop = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    let reload = on_reload_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handlers only store to static atomics, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, stop);
        libc::signal(libc::SIGINT, stop);
        libc::signal(libc::SIGHUP, reload);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Prepare everything that can fail (lock, socket, rules) and return the listener.
fn prepare(config: &Config) -> Result<(Arc<Shared>, UnixListener, DaemonLock), StartError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StartError::Io { path, source }
    };
    paths::ensure_socket_dir(&config.socket).map_err(io_err(&config.socket))?;
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
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
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
        StatusPage::publish(&config.socket, uid, epoch).map_err(io_err(&config.socket))?;
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
            pending,
        }),
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

/// A port handed back the files of `name`, a topic a previous daemon recorded: take them if
/// they are exactly the recorded files, this daemon's and sealed, and the segment validates
/// and is open. Its active ports become orphans, waiting for their processes to re-attach.
fn adopt(record: &TopicRecord, fds: SegmentFds, uid: u32, epoch: u32) -> Result<Topic, String> {
    let seg = segment::adopt_segment(fds, uid, record.files).map_err(|e| e.to_string())?;
    if seg.ring.is_closed() {
        return Err("the topic was closed".into());
    }
    let spec = segment::spec_of(seg.ring.geometry());
    if spec != record.spec {
        return Err(format!(
            "the segment describes {spec:?}, but the topic was recorded as {:?}",
            record.spec
        ));
    }
    let orphan = |role, (index, generation, pid): (usize, u64, u32)| Attachment {
        client: ORPHAN,
        role,
        index: index as u32,
        generation,
        pid,
    };
    let mut attachments: Vec<Attachment> = seg
        .ring
        .active_publishers()
        .into_iter()
        .map(|e| orphan(Role::Publisher, e))
        .collect();
    attachments.extend(
        seg.ring
            .active_subscribers()
            .into_iter()
            .map(|e| orphan(Role::Subscriber, e)),
    );
    let evicted = seg
        .ring
        .evicted_subscribers()
        .into_iter()
        .map(|e| orphan(Role::Subscriber, e))
        .collect();
    seg.ring.set_epoch(epoch);
    let len = seg.ring.storage().layout().total_len;
    Ok(Topic {
        spec,
        ring: seg.ring.clone(),
        seg,
        files: record.files,
        len,
        owner_uid: record.owner_uid,
        attachments,
        evicted,
        stuck: HashMap::new(),
    })
}

/// Write the topic records (after every change to the set of topics).
fn persist(shared: &Shared, state: &State) {
    let records = state
        .topics
        .iter()
        .map(|(name, t)| TopicRecord {
            name: name.clone(),
            spec: t.spec.clone(),
            owner_uid: t.owner_uid,
            files: t.files,
        })
        .chain(state.pending.values().cloned())
        .collect();
    if let Err(e) = state::save(&shared.config.socket, records) {
        tracing::error!(error = %e, "cannot write the topic records; a restarted daemon will not adopt these topics");
    }
}

/// Whether process `pid` exists (orphans have no connection to watch, so their liveness is
/// checked by pid; a blocked subscriber that has not noticed the restart yet must keep its
/// place, while a process that died meanwhile must not hold the ring).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 performs only the existence and permission check.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// After the grace period for adopted topics: release the orphaned subscribers and repair the
/// orphaned publishers whose processes are gone. (An adopted topic always has the port that
/// handed it back; once that port leaves, the topic stays like any other.)
/// Orphans whose process lives on keep their place until it re-attaches or dies.
fn give_up_orphans(state: &mut State) {
    let mut repairs = Vec::new();
    for (name, topic) in state.topics.iter_mut() {
        let (orphans, live): (Vec<_>, Vec<_>) = std::mem::take(&mut topic.attachments)
            .into_iter()
            .partition(|a| a.client == ORPHAN && !process_alive(a.pid));
        topic.attachments = live;
        topic.evicted.retain(|a| {
            let gone = a.client == ORPHAN && !process_alive(a.pid);
            if gone {
                let _ = topic
                    .ring
                    .reclaim_subscriber(a.index as usize, a.generation);
            }
            !gone
        });
        for a in orphans {
            match a.role {
                Role::Subscriber => {
                    let _ = topic
                        .ring
                        .release_subscriber(a.index as usize, a.generation);
                }
                Role::Publisher => repairs.push(PendingRepair {
                    topic: name.clone(),
                    index: a.index as usize,
                    generation: a.generation,
                    since: Instant::now(),
                }),
            }
        }
    }
    state.repairs.extend(repairs);
    run_repairs(state);
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
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        if shared.stop.load(Ordering::SeqCst)
            || (shared.config.handle_signals && SIGNAL_STOP.load(Ordering::SeqCst))
        {
            break;
        }
        if shared.config.handle_signals && SIGNAL_RELOAD.swap(false, Ordering::SeqCst) {
            reload_rules(&shared);
        }
        // SAFETY: one valid pollfd for the listener, which outlives the call.
        let n = unsafe { libc::poll(&mut pfd, 1, 10) };
        if n > 0 {
            loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Some(t) = start_connection(&shared, stream) {
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
        housekeeping(&shared);
        connections.retain(|t| !t.is_finished());
    }
    shutdown(&shared, connections);
    let _ = std::fs::remove_file(&shared.config.socket);
    state::remove(&shared.config.socket);
    StatusPage::remove(&shared.config.socket);
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
    for t in connections {
        let _ = t.join();
    }
    shared.lock().topics.clear();
}

fn start_connection(shared: &Arc<Shared>, stream: UnixStream) -> Option<JoinHandle<()>> {
    if let Err(e) = stream.set_nonblocking(false) {
        tracing::warn!(error = %e, "cannot configure a client connection");
        return None;
    }
    let cred = match fdpass::peer_credentials(&stream) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no peer credentials; dropping the connection");
            return None;
        }
    };
    // Supplementary groups: rules that grant a gid admit members by any of their groups.
    let groups = fdpass::peer_groups(&stream).unwrap_or_else(|e| {
        tracing::debug!(error = %e, "no supplementary groups for a client; using its primary gid only");
        Vec::new()
    });
    let id = shared.next_client.fetch_add(1, Ordering::Relaxed);
    {
        let mut state = shared.lock();
        let per_uid = state
            .clients
            .values()
            .filter(|c| c.cred.uid == cred.uid)
            .count();
        if per_uid >= state.acl.limits.max_clients_per_uid as usize {
            let resp = Response::error(
                ErrorCode::LimitReached,
                format!(
                    "uid {} already has {per_uid} connections open, the limit; close some or raise limits.max_clients_per_uid",
                    cred.uid
                ),
            );
            let _ = fdpass::write_frame_with_fds(&stream, &resp, &[]);
            return None;
        }
        let Ok(clone) = stream.try_clone() else {
            return None;
        };
        state.clients.insert(
            id,
            Client {
                cred,
                groups,
                name: String::new(),
                hello: false,
                stream: clone,
            },
        );
    }
    let shared = shared.clone();
    std::thread::Builder::new()
        .name(format!("shmbusd-client-{id}"))
        .spawn(move || connection(shared, id, stream, cred))
        .map_err(|e| tracing::warn!(error = %e, "cannot start a connection thread"))
        .ok()
}

fn connection(shared: Arc<Shared>, id: u64, stream: UnixStream, cred: PeerCred) {
    tracing::debug!(
        client = id,
        pid = cred.pid,
        uid = cred.uid,
        "client connected"
    );
    loop {
        // Up to two descriptors come with a `Reattach` (the topic's files, handed back); any
        // others are closed at once.
        let (request, fds): (Request, Vec<OwnedFd>) = match fdpass::read_frame_with_fds(&stream, 2)
        {
            Ok(r) => r,
            Err(ProtocolError::Closed) => break,
            Err(e @ (ProtocolError::Io(_) | ProtocolError::Truncated { .. })) => {
                tracing::debug!(client = id, error = %e, "connection lost");
                break;
            }
            Err(e) => {
                // A malformed frame: answer with an error and drop the connection, since the
                // stream may be out of step.
                tracing::warn!(client = id, pid = cred.pid, error = %e, "malformed request");
                let _ = fdpass::write_frame_with_fds(&stream, &e.to_response(), &[]);
                break;
            }
        };
        let hello = shared.lock().clients.get(&id).is_some_and(|c| c.hello);
        let stop_after = matches!(request, Request::Shutdown) && hello && cred.uid == shared.uid;
        if let Request::AttachPublisher { topic, .. } | Request::AttachSubscriber { topic, .. } =
            &request
        {
            wait_while_pending(&shared, topic);
        }
        let (response, out) = handle(&shared, id, &cred, request, fds);
        let out: Vec<i32> = out.iter().map(|f| f.as_raw_fd()).collect();
        if let Err(e) = fdpass::write_frame_with_fds(&stream, &response, &out) {
            tracing::debug!(client = id, error = %e, "cannot answer; dropping the connection");
            break;
        }
        if stop_after {
            shared.stop.store(true, Ordering::SeqCst);
        }
    }
    client_gone(&shared, id);
}

/// A topic a previous daemon recorded may yet be handed back by one of its ports (which learn
/// of the restart at their next call): an attach waits for that, until the adopt grace ends,
/// rather than create a second topic of the same name.
fn wait_while_pending(shared: &Shared, topic: &str) {
    loop {
        {
            let state = shared.lock();
            let waiting = state.pending.contains_key(topic)
                && state.adopt_deadline.is_some_and(|d| Instant::now() < d)
                && !state.stopping;
            if !waiting {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The client's connection closed: free its subscribers, repair its publishers.
fn client_gone(shared: &Shared, id: u64) {
    let mut state = shared.lock();
    let Some(client) = state.clients.remove(&id) else {
        return;
    };
    if state.stopping {
        return;
    }
    let mut repairs = Vec::new();
    for (name, topic) in state.topics.iter_mut() {
        topic.evicted.retain(|a| {
            if a.client == id {
                let _ = topic
                    .ring
                    .reclaim_subscriber(a.index as usize, a.generation);
            }
            a.client != id
        });
        let mine: Vec<Attachment> = {
            let (mine, rest) = std::mem::take(&mut topic.attachments)
                .into_iter()
                .partition(|a| a.client == id);
            topic.attachments = rest;
            mine
        };
        for a in mine {
            match a.role {
                Role::Subscriber => {
                    if topic
                        .ring
                        .release_subscriber(a.index as usize, a.generation)
                        .is_ok()
                    {
                        tracing::info!(
                            topic = name.as_str(),
                            pid = client.cred.pid,
                            index = a.index,
                            "released the subscriber of a client that went away"
                        );
                    }
                }
                Role::Publisher => repairs.push(PendingRepair {
                    topic: name.clone(),
                    index: a.index as usize,
                    generation: a.generation,
                    since: Instant::now(),
                }),
            }
        }
    }
    state.repairs.extend(repairs);
    run_repairs(&mut state);
    tracing::debug!(client = id, name = client.name.as_str(), "client gone");
}

fn run_repairs(state: &mut State) {
    let repairs = std::mem::take(&mut state.repairs);
    for r in repairs {
        let Some(topic) = state.topics.get(&r.topic) else {
            continue;
        };
        let alive = |i: usize, g: u64| {
            topic
                .attachments
                .iter()
                .any(|a| a.role == Role::Publisher && a.index as usize == i && a.generation == g)
        };
        match topic.ring.repair_publisher(r.index, r.generation, alive) {
            Ok(RepairOutcome::Clean) => {}
            Ok(RepairOutcome::Skipped { sequence }) => tracing::warn!(
                topic = r.topic.as_str(),
                sequence,
                "a publisher died between claim and commit; its message was skipped"
            ),
            Ok(RepairOutcome::Pending) => {
                if r.since.elapsed() > Duration::from_secs(60) {
                    tracing::error!(
                        topic = r.topic.as_str(),
                        index = r.index,
                        "repair still pending after 60 s"
                    );
                }
                state.repairs.push(r);
            }
            Err(e) => tracing::debug!(topic = r.topic.as_str(), error = %e, "repair not needed"),
        }
    }
}

fn housekeeping(shared: &Shared) {
    let mut state = shared.lock();
    // After the grace, on every pass: a topic handed back late has its dead orphans given up
    // at once.
    if state.adopt_deadline.is_some_and(|d| Instant::now() >= d) {
        give_up_orphans(&mut state);
        if !state.pending.is_empty()
            && state
                .adopt_deadline
                .is_some_and(|d| Instant::now() >= d + PENDING_KEEP)
        {
            let names: Vec<String> = std::mem::take(&mut state.pending).into_keys().collect();
            tracing::info!(
                ?names,
                "forgot recorded topics that no port handed back; their ports attach anew"
            );
            persist(shared, &state);
        }
    }
    if !state.repairs.is_empty() {
        run_repairs(&mut state);
    }
    let timeout = shared.config.stuck_timeout;
    for (name, topic) in state.topics.iter_mut() {
        if topic.ring.geometry().mode != Mode::Lossless {
            continue;
        }
        let stats = topic.ring.stats();
        let capacity = u64::from(topic.spec.capacity);
        let mut seen = HashMap::new();
        for (index, pid, cursor, lag, _) in stats.subscribers {
            let generation = topic
                .attachments
                .iter()
                .find(|a| a.role == Role::Subscriber && a.index as usize == index)
                .map(|a| a.generation);
            let Some(generation) = generation else {
                continue;
            };
            let key = (index, generation);
            if lag < capacity {
                continue;
            }
            let (last, since) = topic
                .stuck
                .get(&key)
                .copied()
                .unwrap_or((cursor, Instant::now()));
            let since = if last == cursor {
                since
            } else {
                Instant::now()
            };
            if since.elapsed() >= timeout {
                // Evicted, not freed: the port may still live and store its cursor once more,
                // so the entry is reused only after the port detached or its client went away.
                if topic.ring.evict_subscriber(index, generation).is_ok() {
                    tracing::warn!(
                        topic = name.as_str(),
                        pid,
                        index,
                        "evicted a subscriber that held back a full lossless topic for {timeout:?}"
                    );
                }
                let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut topic.attachments)
                    .into_iter()
                    .partition(|a| {
                        a.role == Role::Subscriber
                            && a.index as usize == index
                            && a.generation == generation
                    });
                topic.attachments = kept;
                topic.evicted.extend(gone);
                continue;
            }
            seen.insert(key, (cursor, since));
        }
        topic.stuck = seen;
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> (Response, Vec<OwnedFd>) {
    (Response::error(code, message), Vec::new())
}

/// Serve one request; `fds` are the descriptors that came with it (only a `Reattach` uses
/// them). Returns the answer and the descriptors to send with it.
fn handle(
    shared: &Shared,
    id: u64,
    cred: &PeerCred,
    request: Request,
    fds: Vec<OwnedFd>,
) -> (Response, Vec<OwnedFd>) {
    let mut state = shared.lock();
    let state = &mut *state;
    let hello = state.clients.get(&id).is_some_and(|c| c.hello);
    let groups = state
        .clients
        .get(&id)
        .map(|c| c.groups.clone())
        .unwrap_or_default();
    if state.stopping {
        return error(
            ErrorCode::ShuttingDown,
            "the daemon is stopping; reconnect to a new one",
        );
    }
    match request {
        Request::Hello {
            version,
            client_name,
        } => {
            if let Err(e) = protocol::check_version(version) {
                return (e.to_response(), Vec::new());
            }
            if let Some(c) = state.clients.get_mut(&id) {
                c.hello = true;
                c.name = client_name.chars().take(64).collect();
            }
            (
                Response::HelloOk {
                    version: protocol::PROTOCOL_VERSION,
                    daemon_version: env!("CARGO_PKG_VERSION").to_string(),
                    daemon_pid: std::process::id(),
                    epoch: shared.epoch,
                },
                // The status page, read-only: how the client learns of a restarted daemon.
                shared.status_ro.try_clone().into_iter().collect(),
            )
        }
        _ if !hello => error(ErrorCode::BadRequest, "send hello first"),
        Request::AttachPublisher { topic, spec } => attach(
            shared,
            state,
            id,
            cred,
            &topic,
            spec,
            Role::Publisher,
            StartAt::Latest,
        ),
        Request::AttachSubscriber { topic, spec, start } => attach(
            shared,
            state,
            id,
            cred,
            &topic,
            spec,
            Role::Subscriber,
            start,
        ),
        Request::Detach {
            topic,
            role,
            index,
            generation,
        } => {
            let Some(t) = state.topics.get_mut(&topic) else {
                return error(ErrorCode::NoSuchTopic, format!("no topic '{topic}'"));
            };
            let before = t.attachments.len();
            t.attachments.retain(|a| {
                !(a.client == id
                    && a.role == role
                    && a.index == index
                    && a.generation == generation)
            });
            if t.attachments.len() == before {
                // An evicted port lets go of its entry: now it can be reused. (An evicted
                // orphan of a previous daemon is recognised by its pid.)
                let at = t.evicted.iter().position(|a| {
                    (a.client == id || (a.client == ORPHAN && a.pid == cred.pid))
                        && a.role == role
                        && a.index == index
                        && a.generation == generation
                });
                let Some(at) = at else {
                    return error(ErrorCode::BadRequest, "this connection holds no such port");
                };
                let a = t.evicted.remove(at);
                let _ = t.ring.reclaim_subscriber(a.index as usize, a.generation);
                return (Response::Detached, Vec::new());
            }
            let _ = match role {
                Role::Publisher => t.ring.release_publisher(index as usize, generation),
                Role::Subscriber => t.ring.release_subscriber(index as usize, generation),
            };
            (Response::Detached, Vec::new())
        }
        Request::List => {
            let topics = state
                .topics
                .iter()
                .filter(|(name, _)| may_see(shared, &state.acl, cred, &groups, name))
                .map(|(name, t)| {
                    let s = t.ring.stats();
                    TopicInfo {
                        name: name.clone(),
                        spec: t.spec.clone(),
                        publishers: s.publishers.len() as u32,
                        subscribers: s.subscribers.len() as u32,
                        published: s.published,
                    }
                })
                .collect();
            (Response::Topics { topics }, Vec::new())
        }
        Request::Stats { topic } => {
            if let Some(name) = &topic {
                // A topic the caller may not see answers like a missing one: no existence leak.
                if !state.topics.contains_key(name)
                    || !may_see(shared, &state.acl, cred, &groups, name)
                {
                    return error(ErrorCode::NoSuchTopic, format!("no topic '{name}'"));
                }
            }
            let topics = state
                .topics
                .iter()
                .filter(|(name, _)| topic.as_ref().is_none_or(|t| t == *name))
                .filter(|(name, _)| may_see(shared, &state.acl, cred, &groups, name))
                .map(|(name, t)| topic_stats(name, t))
                .collect();
            (Response::Stats { topics }, Vec::new())
        }
        Request::Delete { topic } => {
            let visible = may_see(shared, &state.acl, cred, &groups, &topic);
            let Some(t) = state.topics.get(&topic).filter(|_| visible) else {
                return error(ErrorCode::NoSuchTopic, format!("no topic '{topic}'"));
            };
            if cred.uid != shared.uid && cred.uid != t.owner_uid {
                return error(
                    ErrorCode::PermissionDenied,
                    format!("only the topic's creator (uid {}) or the daemon's uid may delete '{topic}'", t.owner_uid),
                );
            }
            if let Some(t) = state.topics.remove(&topic) {
                t.ring.close();
                tracing::info!(topic = topic.as_str(), "deleted");
            }
            persist(shared, state);
            (Response::Deleted, Vec::new())
        }
        Request::Reattach {
            topic,
            role,
            index,
            generation,
        } => reattach(
            shared, state, id, cred, &topic, role, index, generation, fds,
        ),
        Request::Shutdown => {
            if cred.uid != shared.uid {
                return error(
                    ErrorCode::PermissionDenied,
                    "only the daemon's own uid may stop it",
                );
            }
            (Response::Detached, Vec::new())
        }
    }
}

fn may_see(
    shared: &Shared,
    acl: &AccessConfig,
    cred: &PeerCred,
    groups: &[u32],
    topic: &str,
) -> bool {
    acl.allows_with_groups(shared.uid, cred, groups, topic, Action::Subscribe)
        || acl.allows_with_groups(shared.uid, cred, groups, topic, Action::Publish)
}

fn topic_stats(name: &str, t: &Topic) -> TopicStats {
    let s = t.ring.stats();
    TopicStats {
        name: name.to_string(),
        spec: t.spec.clone(),
        published: s.published,
        publishers: s
            .publishers
            .iter()
            .map(|&(index, pid, published)| PublisherStat {
                index: index as u32,
                pid,
                published,
            })
            .collect(),
        drops: s.subscribers.iter().map(|s| s.4).sum(),
        subscribers: s
            .subscribers
            .iter()
            .map(|&(index, pid, cursor, lag, lagged)| SubscriberStat {
                index: index as u32,
                pid,
                cursor: cursor.saturating_sub(u64::from(t.spec.capacity)),
                lag,
                lagged,
            })
            .collect(),
        stalls: s.stalls,
    }
}

#[allow(clippy::too_many_arguments)]
fn attach(
    shared: &Shared,
    state: &mut State,
    id: u64,
    cred: &PeerCred,
    name: &str,
    spec: Option<TopicSpec>,
    role: Role,
    start: StartAt,
) -> (Response, Vec<OwnedFd>) {
    if let Err(e) = names::validate_topic_name(name) {
        return error(
            ErrorCode::InvalidTopicName,
            format!("invalid topic name '{name}': {e}"),
        );
    }
    let action = match role {
        Role::Publisher => Action::Publish,
        Role::Subscriber => Action::Subscribe,
    };
    let groups = state
        .clients
        .get(&id)
        .map(|c| c.groups.clone())
        .unwrap_or_default();
    if !state
        .acl
        .allows_with_groups(shared.uid, cred, &groups, name, action)
    {
        return error(
            ErrorCode::PermissionDenied,
            format!(
                "uid {} (gid {}) may not {} on '{name}': add a rule granting it to the daemon's rules file",
                cred.uid,
                cred.gid,
                match role {
                    Role::Publisher => "publish",
                    Role::Subscriber => "subscribe",
                }
            ),
        );
    }
    if !state.topics.contains_key(name) {
        if state.pending.remove(name).is_some() {
            tracing::warn!(
                topic = name,
                "no port handed this topic back within the adopt grace; creating it anew"
            );
        }
        let Some(spec) = spec else {
            return error(
                ErrorCode::NoSuchTopic,
                format!("no topic '{name}' yet: open it with options (a spec) to create it, or start its publisher first"),
            );
        };
        if let Err((code, msg)) = create_topic(shared, state, cred, name, spec) {
            return error(code, msg);
        }
    } else if let Some(spec) = &spec {
        if let Some(m) = state.topics[name].spec.describe_mismatch(name, role, spec) {
            return error(m.code, m.message);
        }
    }
    let Some(topic) = state.topics.get_mut(name) else {
        return error(ErrorCode::Internal, "topic vanished");
    };
    let attached = match role {
        Role::Publisher => topic.ring.attach_any_publisher(cred.pid),
        Role::Subscriber => topic.ring.attach_any_subscriber(
            cred.pid,
            match start {
                StartAt::Latest => CoreStart::Latest,
                StartAt::Oldest => CoreStart::Oldest,
            },
        ),
    };
    let (index, generation) = match attached {
        Ok(x) => x,
        Err(_) => {
            let (what, max) = match role {
                Role::Publisher => ("publishers", topic.spec.max_publishers),
                Role::Subscriber => ("subscribers", topic.spec.max_subscribers),
            };
            return error(
                ErrorCode::TableFull,
                format!("topic '{name}' already has {max} {what}, its maximum; detach one or recreate the topic with a larger max_{what}"),
            );
        }
    };
    topic.attachments.push(Attachment {
        pid: cred.pid,
        client: id,
        role,
        index: index as u32,
        generation,
    });
    tracing::debug!(
        topic = name,
        ?role,
        index,
        generation,
        pid = cred.pid,
        "attached"
    );
    (
        Response::Attached {
            topic: name.to_string(),
            spec: topic.spec.clone(),
            index: index as u32,
            generation,
            segment_len: topic.len,
        },
        // Duplicates, owned by the answer: the registry lock is released before the answer is
        // written, and a concurrent delete must not close the descriptors under us.
        port_fds(topic, role),
    )
}

fn create_topic(
    shared: &Shared,
    state: &mut State,
    cred: &PeerCred,
    name: &str,
    spec: TopicSpec,
) -> Result<(), (ErrorCode, String)> {
    spec.validate()
        .map_err(|e| (ErrorCode::BadRequest, format!("invalid topic options: {e}")))?;
    let layout = Layout::compute(&geometry_of(&spec))
        .map_err(|e| (ErrorCode::BadRequest, format!("invalid topic options: {e}")))?;
    let limits = &state.acl.limits;
    let mine: Vec<&Topic> = state
        .topics
        .values()
        .filter(|t| t.owner_uid == cred.uid)
        .collect();
    if mine.len() >= limits.max_topics as usize {
        return Err((
            ErrorCode::LimitReached,
            format!(
                "uid {} already owns {} topics, the limit; delete some or raise limits.max_topics",
                cred.uid,
                mine.len()
            ),
        ));
    }
    let bytes: u64 = mine.iter().map(|t| t.len).sum();
    if bytes.saturating_add(layout.total_len) > limits.max_bytes_per_uid {
        return Err((
            ErrorCode::LimitReached,
            format!(
                "topic '{name}' needs {} bytes of shared memory; uid {} already uses {bytes} of its {} limit. Use a smaller capacity or slot size, or raise limits.max_bytes_per_uid",
                layout.total_len, cred.uid, limits.max_bytes_per_uid
            ),
        ));
    }
    let seg = segment::create_segment(name, &layout).map_err(|e| {
        (
            ErrorCode::Internal,
            format!("cannot create the segment for '{name}': {e}"),
        )
    })?;
    seg.ring.set_epoch(shared.epoch);
    let files = seg.ids().map_err(|e| {
        (
            ErrorCode::Internal,
            format!("cannot identify the segment files of '{name}': {e}"),
        )
    })?;
    tracing::info!(topic = name, bytes = layout.total_len, "topic created");
    state.topics.insert(
        name.to_string(),
        Topic {
            spec,
            ring: seg.ring.clone(),
            seg,
            files,
            len: layout.total_len,
            owner_uid: cred.uid,
            attachments: Vec::new(),
            evicted: Vec::new(),
            stuck: HashMap::new(),
        },
    );
    persist(shared, state);
    Ok(())
}

/// The descriptors a port of `role` gets: the control file, and the data file (read-only for a
/// subscriber).
fn port_fds(topic: &Topic, role: Role) -> Vec<OwnedFd> {
    let access = match role {
        Role::Publisher => Access::ReadWrite,
        Role::Subscriber => Access::Subscriber,
    };
    match topic.seg.fds_for(access) {
        Ok(fds) => fds.into(),
        Err(e) => {
            tracing::error!(error = %e, "cannot duplicate the segment descriptors");
            Vec::new()
        }
    }
}

/// A process that held a port under the previous daemon takes it back. The first port of a
/// topic to come back hands the topic's files back with the request (`fds`): the daemon adopts
/// the topic from them if they are the recorded files. Then the port must be an orphan of the
/// adopted topic, active at that generation, and owned by the asking process.
#[allow(clippy::too_many_arguments)]
fn reattach(
    shared: &Shared,
    state: &mut State,
    id: u64,
    cred: &PeerCred,
    topic: &str,
    role: Role,
    index: u32,
    generation: u64,
    fds: Vec<OwnedFd>,
) -> (Response, Vec<OwnedFd>) {
    if !state.topics.contains_key(topic) && state.pending.contains_key(topic) {
        let mut fds = fds.into_iter();
        let (Some(control), Some(data)) = (fds.next(), fds.next()) else {
            return error(
                ErrorCode::BadRequest,
                format!("re-attaching to '{topic}' after a daemon restart needs its two segment descriptors"),
            );
        };
        let record = &state.pending[topic];
        match adopt(
            record,
            SegmentFds { control, data },
            shared.uid,
            shared.epoch,
        ) {
            Ok(t) => {
                tracing::info!(
                    topic,
                    ports = t.attachments.len(),
                    pid = cred.pid,
                    "adopted a topic handed back after a daemon restart"
                );
                state.pending.remove(topic);
                state.topics.insert(topic.to_string(), t);
            }
            Err(why) => {
                tracing::warn!(
                    topic,
                    pid = cred.pid,
                    uid = cred.uid,
                    why = why.as_str(),
                    "refused segment files handed back"
                );
                return error(
                    ErrorCode::BadRequest,
                    format!("the files handed back are not the segment of '{topic}': {why}; attach anew"),
                );
            }
        }
    }
    let Some(t) = state.topics.get_mut(topic) else {
        return error(
            ErrorCode::NoSuchTopic,
            format!("no topic '{topic}' to re-attach to; attach anew"),
        );
    };
    let owner_pid = match role {
        Role::Publisher => t.ring.active_publishers(),
        Role::Subscriber => t.ring.active_subscribers(),
    }
    .into_iter()
    .find(|&(i, g, _)| i == index as usize && g == generation)
    .map(|(_, _, pid)| pid);
    let orphan = t.attachments.iter_mut().find(|a| {
        a.client == ORPHAN && a.role == role && a.index == index && a.generation == generation
    });
    match (orphan, owner_pid) {
        (Some(a), Some(pid)) if pid == cred.pid => {
            a.client = id;
            tracing::info!(topic, ?role, index, pid, "port re-attached after a daemon restart");
            let answer = Response::Attached {
                topic: topic.to_string(),
                spec: t.spec.clone(),
                index,
                generation,
                segment_len: t.len,
            };
            (answer, port_fds(t, role))
        }
        _ => error(
            ErrorCode::BadRequest,
            format!(
                "no orphaned {role} {index} (generation {generation}) of process {} on '{topic}'; attach anew",
                cred.pid
            ),
        ),
    }
}
