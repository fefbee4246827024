//! What the security tests share: the uid they drop to, a raw protocol client, children that
//! run as another uid, connections made as another uid, segments made with the daemon's code,
//! and small system-call probes. Each `security*.rs` file is one threat; this is their kit.

#![allow(dead_code)]

use bus_client::OpenError;
use bus_core::layout::{Geometry, Layout, Mode, TypeInfo};
use bus_daemon::segment::{self as daemon_segment, Segment};
use bus_proto::fdpass;
use bus_proto::protocol::{
    ErrorCode, How, ProtocolError, Request, Response, Role, PROTOCOL_VERSION,
};
use bus_proto::segment::{self, Access, MapError, Mapping, SegmentFds, ShmRing, SEALS};
use bus_tests::{
    check_of, proc_state, segment_file_names, segment_token, shm_entries_containing, wait_until,
    Daemon, Peer,
};
use serde_json::Value;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const PEER: &str = env!("CARGO_BIN_EXE_shmbus-peer");
/// For a peer to start and open its port.
pub const START: Duration = Duration::from_secs(10);
/// For a whole transfer (a loaded 2-core machine, debug builds).
pub const TRANSFER: Duration = Duration::from_secs(60);
/// How long one call on a corrupted ring may take before it counts as a hang.
pub const CALL_BOUND: Duration = Duration::from_secs(3);
/// The unprivileged uid and gid the cross-user tests drop to.
pub const NOBODY: u32 = 65534;

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Prints why a test that needs root did nothing, and returns true when not root.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("NOTICE: {test} needs root (to setuid to uid {NOBODY}); skipped");
    true
}

/// A deterministic pseudo-random stream (splitmix64 over a counter).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        check_of(0x5eed, self.0)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A segment made directly with the daemon's own code (no daemon): two sealed memory files
/// named after a topic no daemon uses (`sectest/...`). Freed by the kernel when the last
/// descriptor and mapping of it go; nothing to clean up.
pub struct TestSegment {
    pub seg: Segment,
    /// The read-only data descriptor a subscriber gets.
    pub data_ro: OwnedFd,
}

impl TestSegment {
    pub fn create(tag: &str, geometry: &Geometry) -> TestSegment {
        static N: AtomicU64 = AtomicU64::new(0);
        let topic = format!(
            "sectest/{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let layout = Layout::compute(geometry).expect("a valid test geometry");
        let seg = daemon_segment::create_segment(&topic, &layout)
            .unwrap_or_else(|e| panic!("create segment {topic}: {e}"));
        let [_, data_ro] = seg
            .fds_for(Access::Subscriber)
            .expect("a read-only data descriptor");
        TestSegment { seg, data_ro }
    }

    /// The creator's read-write ring (used to corrupt the shared state).
    pub fn ring(&self) -> &Arc<ShmRing> {
        &self.seg.ring
    }

    /// The descriptors a port of `access` maps: the read-only data descriptor for subscribers.
    pub fn fds(&self, access: Access) -> (BorrowedFd<'_>, BorrowedFd<'_>) {
        let data = match access {
            Access::ReadWrite => self.seg.fds.data.as_fd(),
            Access::Subscriber => self.data_ro.as_fd(),
        };
        (self.seg.fds.control.as_fd(), data)
    }

    pub fn open(&self, access: Access) -> Result<Arc<ShmRing>, MapError> {
        let (control, data) = self.fds(access);
        segment::open_ring(control, data, access, bus_proto::wake::WakeBell::new())
    }

    /// A second, independent read-write mapping (to corrupt the header through).
    pub fn map_rw(&self) -> Mapping {
        let (control, data) = self.fds(Access::ReadWrite);
        Mapping::map(control, data, Access::ReadWrite).expect("map rw")
    }
}

/// The errno of the last failed system call of this thread.
pub fn errno() -> i32 {
    // SAFETY: reads this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// 0 if `rc` is 0, else the errno.
pub fn rc_errno(rc: libc::c_int) -> i32 {
    if rc == 0 {
        0
    } else {
        errno()
    }
}

pub fn ftruncate_errno(fd: BorrowedFd<'_>, len: libc::off_t) -> i32 {
    // SAFETY: a valid descriptor; truncating it is what the tests try.
    rc_errno(unsafe { libc::ftruncate(fd.as_raw_fd(), len) })
}

pub fn add_seals_errno(fd: BorrowedFd<'_>, seals: libc::c_int) -> i32 {
    // SAFETY: F_ADD_SEALS on a valid descriptor.
    rc_errno(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) })
}

/// `fstat` of a descriptor.
pub fn fstat(fd: BorrowedFd<'_>) -> libc::stat {
    // SAFETY: `st` is written by fstat before it is read; the fd is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    assert_eq!(rc, 0, "fstat: {}", std::io::Error::last_os_error());
    st
}

pub fn file_size(fd: BorrowedFd<'_>) -> usize {
    fstat(fd).st_size as usize
}

/// The access mode (`O_RDONLY`, `O_WRONLY`, `O_RDWR`) a descriptor was opened with.
pub fn access_mode(fd: BorrowedFd<'_>) -> libc::c_int {
    // SAFETY: F_GETFL on a valid descriptor.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    assert!(flags >= 0, "F_GETFL: {}", std::io::Error::last_os_error());
    flags & libc::O_ACCMODE
}

/// The whole content of the file `fd` refers to (`pread`, so the offset does not matter and a
/// read-only descriptor will do).
pub fn file_bytes(fd: BorrowedFd<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; file_size(fd)];
    let mut at = 0;
    while at < buf.len() {
        // SAFETY: writes at most `buf.len() - at` bytes into `buf` from `at`.
        let n = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf[at..].as_mut_ptr().cast(),
                buf.len() - at,
                at as libc::off_t,
            )
        };
        assert!(n > 0, "pread: {}", std::io::Error::last_os_error());
        at += n as usize;
    }
    buf
}

/// Writes all of `bytes` at offset 0 of `fd`.
pub fn write_all_at(fd: BorrowedFd<'_>, bytes: &[u8]) {
    let mut at = 0;
    while at < bytes.len() {
        // SAFETY: reads at most `bytes.len() - at` bytes of `bytes` from `at`.
        let n = unsafe {
            libc::pwrite(
                fd.as_raw_fd(),
                bytes[at..].as_ptr().cast(),
                bytes.len() - at,
                at as libc::off_t,
            )
        };
        assert!(n > 0, "pwrite: {}", std::io::Error::last_os_error());
        at += n as usize;
    }
}

/// How a test memory file is sealed.
#[derive(Debug, Clone, Copy)]
pub enum Sealing {
    /// Made without `MFD_ALLOW_SEALING` (the kernel reports `F_SEAL_SEAL` only).
    NotSealable,
    /// Made with `MFD_ALLOW_SEALING`, then sealed with these seals (0: none).
    With(libc::c_int),
}

/// A memory file named `name` (as the daemon names segment files, if wanted), `len` bytes
/// long, starting with `bytes` (cut to `len`), mode 0600, sealed as `sealing` says.
pub fn memfd_with(name: &str, bytes: &[u8], len: usize, sealing: Sealing) -> OwnedFd {
    let cname = CString::new(name).expect("no NUL");
    let flags = match sealing {
        Sealing::NotSealable => libc::MFD_CLOEXEC,
        Sealing::With(_) => libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
    };
    // SAFETY: a valid C string; memfd_create returns a fresh descriptor or -1.
    let raw = unsafe { libc::memfd_create(cname.as_ptr(), flags) };
    assert!(
        raw >= 0,
        "memfd_create: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    assert_eq!(
        ftruncate_errno(fd.as_fd(), len as libc::off_t),
        0,
        "size the memfd"
    );
    write_all_at(fd.as_fd(), &bytes[..bytes.len().min(len)]);
    // SAFETY: a valid descriptor we own.
    assert_eq!(unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) }, 0);
    if let Sealing::With(seals) = sealing {
        if seals != 0 {
            assert_eq!(add_seals_errno(fd.as_fd(), seals), 0, "seal the memfd");
        }
    }
    fd
}

/// A sealed copy (the daemon's seals) of the file `fd`, cut or zero-extended to `len` bytes.
pub fn sealed_copy(name: &str, fd: BorrowedFd<'_>, len: usize) -> OwnedFd {
    memfd_with(name, &file_bytes(fd), len, Sealing::With(SEALS.bits()))
}

/// A regular file in `dir` holding a copy of the file `fd`, mode 0600, opened read-write.
pub fn regular_copy(dir: &Path, name: &str, fd: BorrowedFd<'_>) -> OwnedFd {
    let path = dir.join(name);
    std::fs::write(&path, file_bytes(fd)).expect("write a regular copy");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open the regular copy");
    OwnedFd::from(f)
}

/// The descriptors process `pid` holds of `topic`'s segment files, as `(/proc/<pid>/fd/<n>,
/// link)`, the link being one of [`segment_file_names`]. Needs the right to read the
/// process's descriptors (root, or its own uid).
pub fn segment_fd_paths(pid: u32, topic: &str) -> Vec<(PathBuf, String)> {
    let names = segment_file_names(topic);
    let mut v: Vec<(PathBuf, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .flatten()
        .filter_map(|e| {
            let link = std::fs::read_link(e.path()).ok()?;
            let link = link.to_str()?.to_string();
            names.contains(&link).then(|| (e.path(), link))
        })
        .collect();
    v.sort();
    v
}

/// Like [`segment_fd_paths`], checking that both files are there: `(control, data)` paths.
pub fn segment_fd_pair(pid: u32, topic: &str) -> (PathBuf, PathBuf) {
    let [control_name, data_name] = segment_file_names(topic);
    let fds = segment_fd_paths(pid, topic);
    let find = |name: &str| {
        fds.iter()
            .find(|(_, l)| l == name)
            .map(|(p, _)| p.clone())
            .unwrap_or_else(|| panic!("process {pid} holds no `{name}`: {fds:?}"))
    };
    (find(&control_name), find(&data_name))
}

/// Opens `path` (a `/proc/<pid>/fd/<n>` link) with `flags`.
pub fn open_path(path: &Path, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
    // SAFETY: a valid C string; open returns a fresh descriptor or -1.
    let raw = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

pub fn geometry(capacity: u32, slot_size: u32, mode: Mode) -> Geometry {
    Geometry {
        capacity,
        slot_size,
        mode,
        max_publishers: 4,
        max_subscribers: 4,
        type_info: TypeInfo::bytes(),
    }
}

/// What happened to a call run under a watchdog.
pub enum Outcome<T> {
    Done(T),
    Panicked(String),
    Hung,
}

/// Runs `f` in a thread and waits at most `limit`. On `Hung` the thread is still running; the
/// caller unwedges it and joins the returned handle.
pub fn bounded<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> (Outcome<T>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let r = catch_unwind(AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    let outcome = match rx.recv_timeout(limit) {
        Ok(Ok(v)) => Outcome::Done(v),
        Ok(Err(p)) => Outcome::Panicked(
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into()),
        ),
        Err(_) => Outcome::Hung,
    };
    (outcome, handle)
}

/// Joins a watchdog thread that was unwedged, at most `limit`.
pub fn join_within(handle: JoinHandle<()>, limit: Duration) -> bool {
    let ok = wait_until(limit, Duration::from_millis(5), || handle.is_finished());
    if ok {
        let _ = handle.join();
    }
    ok
}

/// A control-protocol client that speaks the raw wire format (for garbage, and for a hostile
/// client that receives the segment descriptors without the client library).
pub struct RawClient {
    pub stream: UnixStream,
    /// The read-only status page descriptor that came with `HelloOk`.
    pub status: Option<OwnedFd>,
}

impl RawClient {
    pub fn connect(socket: &Path) -> RawClient {
        let stream = UnixStream::connect(socket).expect("connect to the daemon");
        RawClient::from_stream(stream)
    }

    /// A client on a stream connected elsewhere (e.g. by another uid, see [`connect_as`]).
    pub fn from_stream(stream: UnixStream) -> RawClient {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .expect("write timeout");
        RawClient {
            stream,
            status: None,
        }
    }

    pub fn hello(socket: &Path) -> RawClient {
        RawClient::connect(socket).say_hello()
    }

    pub fn say_hello(mut self) -> RawClient {
        match self.request(&Request::Hello {
            version: PROTOCOL_VERSION,
            client_name: "security-test".into(),
        }) {
            Ok((Response::HelloOk { .. }, mut fds)) if fds.len() == 1 => {
                self.status = fds.pop();
                self
            }
            other => panic!("hello failed: {other:?}"),
        }
    }

    pub fn request(&self, req: &Request) -> Result<(Response, Vec<OwnedFd>), ProtocolError> {
        self.request_with_fds(req, &[])
    }

    pub fn request_with_fds(
        &self,
        req: &Request,
        fds: &[RawFd],
    ) -> Result<(Response, Vec<OwnedFd>), ProtocolError> {
        fdpass::write_frame_with_fds(&self.stream, req, fds)?;
        fdpass::read_frame_with_fds(&self.stream, 4)
    }

    /// Sends raw bytes, closes the writing side, and reads everything the daemon answers until
    /// it closes (bounded by the read timeout). Returns the answer and whether EOF was reached.
    pub fn garbage(mut self, bytes: &[u8]) -> (Vec<u8>, bool) {
        let _ = self.stream.write_all(bytes);
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        // A close with our bytes still unread in its queue reaches us as ECONNRESET, after
        // whatever it answered: that is a close too.
        let eof = match self.stream.read_to_end(&mut out) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        (out, eof)
    }

    /// Attaches a port through the raw protocol; returns the segment's two descriptors and the
    /// port's (index, generation).
    pub fn attach_port(
        &self,
        topic: &str,
        spec: Option<Geometry>,
        publisher: bool,
    ) -> (SegmentFds, (u32, u64)) {
        let req = Request::Attach {
            topic: topic.into(),
            role: if publisher {
                Role::Publisher
            } else {
                Role::Subscriber
            },
            how: match spec {
                None => How::Open { type_info: None },
                Some(spec) => How::Create { spec, exact: true },
            },
            start: Default::default(),
        };
        match self.request(&req) {
            Ok((
                Response::Attached {
                    index, generation, ..
                },
                fds,
            )) if fds.len() == 2 => {
                let mut fds = fds.into_iter();
                let (Some(control), Some(data)) = (fds.next(), fds.next()) else {
                    unreachable!("two descriptors")
                };
                (SegmentFds { control, data }, (index, generation))
            }
            other => panic!("attach {topic}: {other:?}"),
        }
    }

    /// Attaches a port through the raw protocol; returns the segment's two descriptors.
    pub fn attach(&self, topic: &str, spec: Option<Geometry>, publisher: bool) -> SegmentFds {
        self.attach_port(topic, spec, publisher).0
    }
}

/// Decodes the daemon's answers in `bytes` (frames back to back).
pub fn decode_frames(bytes: &[u8]) -> Vec<Response> {
    let mut cur = std::io::Cursor::new(bytes);
    let mut out = Vec::new();
    while let Ok(r) = bus_proto::frame::read_frame::<_, Response>(&mut cur) {
        out.push(r);
    }
    out
}

pub fn frame(len: u32, body: &[u8]) -> Vec<u8> {
    let mut v = len.to_le_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

pub fn bytes_spec(capacity: u32, slot_size: u32, mode: Mode) -> Geometry {
    Geometry {
        capacity,
        slot_size,
        mode,
        max_publishers: 4,
        max_subscribers: 4,
        type_info: TypeInfo::bytes(),
    }
}

pub fn daemon_alive(d: &Daemon) -> bool {
    proc_state(d.pid()).is_some_and(|s| s != 'Z' && s != 'X')
}

pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

pub fn thread_count(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The daemon's error code behind a client error, if the daemon refused.
pub trait Refused {
    fn refused_code(&self) -> Option<ErrorCode>;
}

impl Refused for OpenError {
    fn refused_code(&self) -> Option<ErrorCode> {
        Some(match self {
            OpenError::Refused { code, .. } => *code,
            OpenError::PermissionDenied { .. } => ErrorCode::PermissionDenied,
            OpenError::NotFound { .. } => ErrorCode::NoSuchTopic,
            OpenError::TypeMismatch { .. } => ErrorCode::TypeMismatch,
            OpenError::GeometryMismatch { .. } => ErrorCode::GeometryMismatch,
            OpenError::InvalidName { .. } => ErrorCode::InvalidTopicName,
            OpenError::InvalidOptions { .. } => ErrorCode::InvalidOptions,
            OpenError::TableFull { .. } => ErrorCode::TableFull,
            OpenError::LimitReached { .. } => ErrorCode::LimitReached,
            _ => return None,
        })
    }
}

impl Refused for bus_client::ConnectError {
    fn refused_code(&self) -> Option<ErrorCode> {
        match self {
            bus_client::ConnectError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub fn refused_code(e: &impl Refused) -> Option<ErrorCode> {
    e.refused_code()
}

/// Writes `rules` (TOML) to `dir/rules.toml`, mode 0600, replacing it atomically (rename), so a
/// reload never reads a half-written file.
pub fn write_rules(dir: &Path, rules: &str) -> PathBuf {
    let path = dir.join("rules.toml");
    let tmp = dir.join("rules.toml.tmp");
    std::fs::write(&tmp, rules).expect("write rules");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod rules");
    std::fs::rename(&tmp, &path).expect("rename rules");
    path
}

/// Runs `shmbus-peer probe-as` as uid/gid nobody; returns its JSON lines.
pub fn probe_as_nobody(d: &Daemon, topics: &[&str], recv: bool) -> (Value, Peer) {
    let uid = NOBODY.to_string();
    let mut args = vec![
        "probe-as",
        "--socket",
        d.socket_str(),
        "--uid",
        &uid,
        "--gid",
        &uid,
    ];
    for t in topics {
        args.push("--try-topic");
        args.push(t);
    }
    if recv {
        args.push("--recv");
    }
    let mut p = Peer::spawn(PEER, &args);
    let v = p.json(START);
    (v, p)
}

pub fn topic_result(v: &Value, topic: &str) -> String {
    v["topics"][topic]
        .as_str()
        .unwrap_or_else(|| panic!("no result for {topic} in {v}"))
        .to_string()
}

/// In a forked child: drop to `uid`/`gid`, run `probe` (only async-signal-safe system calls),
/// and exit with its result (an errno, or 0). Returns that exit code.
pub fn in_child_as(uid: u32, gid: u32, probe: &dyn Fn() -> i32) -> i32 {
    // SAFETY: the child calls only async-signal-safe functions (setgroups, setgid, setuid,
    // and in the probes plain system calls on pre-built or stack data, _exit) and never returns into
    // Rust code of the parent; the parent waits for it with waitpid below.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: see above; `probe` allocates nothing (its inputs were built before fork).
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                libc::_exit(200);
            }
            libc::_exit(probe());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if Instant::now() >= deadline {
            // SAFETY: our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("the probe child did not finish within 10 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(libc::WIFEXITED(status), "probe child died: status {status}");
    libc::WEXITSTATUS(status)
}

/// The `sockaddr_un` of a socket path.
pub fn sockaddr_of(path: &Path) -> libc::sockaddr_un {
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_encoded_bytes();
    assert!(bytes.len() < addr.sun_path.len(), "socket path too long");
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    addr
}

/// A probe that connects a Unix stream socket to `path`: 0 or the errno.
pub fn connect_probe(path: &Path) -> impl Fn() -> i32 {
    let addr = sockaddr_of(path);
    move || {
        // SAFETY: plain system calls on a stack copy of a valid sockaddr_un.
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd < 0 {
                return 100;
            }
            let r = libc::connect(
                fd,
                &addr as *const libc::sockaddr_un as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            );
            let e = if r == 0 { 0 } else { errno() };
            libc::close(fd);
            e
        }
    }
}

/// A probe that opens `path` with `flags` (and closes it): 0 or the errno.
pub fn open_probe(path: &str, flags: libc::c_int) -> impl Fn() -> i32 {
    let path = CString::new(path).expect("no NUL");
    move || {
        // SAFETY: a valid C string; open and close are async-signal-safe.
        unsafe {
            let fd = libc::open(path.as_ptr(), flags | libc::O_CLOEXEC);
            if fd < 0 {
                return errno();
            }
            libc::close(fd);
            0
        }
    }
}

/// A probe that lists directory `dir` (open + getdents64, into a stack buffer): 0 if no entry's
/// name contains `needle`, 1 if one does, 100 or 101 if the directory cannot be read.
pub fn dir_probe(dir: &str, needle: &str) -> impl Fn() -> i32 {
    let dir = CString::new(dir).expect("no NUL");
    let needle = needle.as_bytes().to_vec();
    assert!(!needle.is_empty());
    move || {
        // SAFETY: a valid C string; open, getdents64 (into a stack buffer of its true length)
        // and close are plain system calls; nothing below allocates.
        unsafe {
            let fd = libc::open(
                dir.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            );
            if fd < 0 {
                return 100;
            }
            let mut buf = [0u8; 8192];
            let mut found = 0;
            loop {
                let n = libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len());
                if n < 0 {
                    found = 101;
                    break;
                }
                if n == 0 {
                    break;
                }
                // struct linux_dirent64: u64 d_ino, i64 d_off, u16 d_reclen, u8 d_type, name.
                let mut at = 0usize;
                while at + 19 < n as usize {
                    let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
                    if reclen == 0 || at + reclen > n as usize {
                        break;
                    }
                    let name = &buf[at + 19..at + reclen];
                    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                    if name[..end]
                        .windows(needle.len())
                        .any(|w| w == needle.as_slice())
                    {
                        found = 1;
                    }
                    at += reclen;
                }
            }
            libc::close(fd);
            found
        }
    }
}

/// A Unix stream connected to `socket` by a forked child running as `uid`/`gid`, passed back
/// to this process (`SCM_RIGHTS` over a socket pair): the daemon took its credentials
/// (`SO_PEERCRED`) at connect time, so it serves whoever speaks on it as `uid`.
pub fn connect_as(uid: u32, gid: u32, socket: &Path) -> UnixStream {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let addr = sockaddr_of(socket);
    let via = theirs.as_raw_fd();
    let probe = move || {
        // SAFETY: plain system calls on stack data: a copy of a valid sockaddr_un, one byte,
        // and a control buffer (u64 words, aligned for cmsghdr) longer than CMSG_SPACE of one
        // descriptor; the cmsg macros only compute addresses inside it.
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd < 0 {
                return 100;
            }
            if libc::connect(
                fd,
                &addr as *const libc::sockaddr_un as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            ) != 0
            {
                return errno();
            }
            let mut byte = [b'!'; 1];
            let mut iov = libc::iovec {
                iov_base: byte.as_mut_ptr().cast(),
                iov_len: 1,
            };
            let mut control = [0u64; 8];
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            if cmsg.is_null() {
                return 101;
            }
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::c_int, fd);
            if libc::sendmsg(via, &msg, 0) != 1 {
                return 102;
            }
            0
        }
    };
    let rc = in_child_as(uid, gid, &probe);
    assert_eq!(rc, 0, "connecting as uid {uid} failed (errno or step {rc})");
    drop(theirs);
    let mut byte = [0u8; 1];
    let (n, mut fds) = fdpass::recv_with_fds(&ours, &mut byte, 1).expect("receive the socket");
    assert_eq!(
        (n, fds.len()),
        (1, 1),
        "the connected socket did not arrive"
    );
    UnixStream::from(fds.pop().expect("one descriptor"))
}

/// Removes a file on drop.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Segments are never files in /dev/shm: neither this process's listing nor uid nobody's
/// (in a child) finds an entry named after `topic` (in any spelling: its last component is
/// unique). The nobody probe is shown to work by a file named like that, found while it exists.
pub fn assert_no_dev_shm_entry_for(topic: &str) {
    let needle = topic.rsplit('/').next().expect("a topic name");
    for n in [segment_token(topic).as_str(), needle] {
        let found = shm_entries_containing(n);
        assert!(found.is_empty(), "{topic}: /dev/shm holds {found:?}");
    }
    if !is_root() {
        return;
    }
    let probe = dir_probe("/dev/shm", needle);
    assert_eq!(
        in_child_as(NOBODY, NOBODY, &probe),
        0,
        "uid {NOBODY} finds an entry for {topic} in /dev/shm"
    );
    let canary = RemoveOnDrop(Path::new("/dev/shm").join(format!("sectest-canary-{needle}")));
    std::fs::write(&canary.0, b"").expect("create the canary");
    std::fs::set_permissions(&canary.0, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert_eq!(
        in_child_as(NOBODY, NOBODY, &probe),
        1,
        "the /dev/shm probe did not see {}",
        canary.0.display()
    );
}

/// Uid nobody cannot open the daemon's descriptors of `topic`'s segment files through
/// `/proc/<daemon>/fd/<n>`, read-only or read-write (`EACCES`); the same probes succeed as root,
/// so they do reach the files. Two walls stand there: `/proc` lets no other uid look through
/// the daemon's descriptors, and the files are 0600 (that one alone:
/// `a_subscribers_data_descriptor_is_read_only` and `file_modes_are_never_world_writable`).
pub fn assert_nobody_cannot_open_daemon_segment_files(d: &Daemon, topic: &str) {
    segment_fd_pair(d.pid(), topic);
    for (path, link) in segment_fd_paths(d.pid(), topic) {
        let path = path.to_str().expect("a UTF-8 /proc path");
        for flags in [libc::O_RDONLY, libc::O_RDWR] {
            let open = open_probe(path, flags);
            assert_eq!(
                in_child_as(NOBODY, NOBODY, &open),
                libc::EACCES,
                "uid {NOBODY} opened {path} -> {link} (flags {flags:#o})"
            );
            assert_eq!(
                open(),
                0,
                "root cannot open {path} -> {link} (flags {flags:#o})"
            );
        }
    }
}
