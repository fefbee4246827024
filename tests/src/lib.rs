//! Integration test support: the message type every party agrees on, a validator for what a
//! subscriber receives, and guards that run the real daemon and peer processes and always clean
//! up after them (kill and reap every child, remove temporary directories), even when a test
//! fails.
//!
//! The peer binary is `shmbus-peer` (src/bin/shmbus-peer.rs); integration tests find it with
//! `env!("CARGO_BIN_EXE_shmbus-peer")` and pass its path to [`Daemon::start`] and
//! [`Peer::spawn`].

pub mod bridge;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The message every test publishes: who sent it, its per-publisher sequence number, when, and
/// a check word derived from (publisher, seq) that exposes a torn or corrupted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct TestMsg {
    /// The publisher's id (`--id`).
    pub publisher: u64,
    /// The publisher's own sequence number, from `--first-seq` (default 0).
    pub seq: u64,
    /// CLOCK_REALTIME nanoseconds when it was written (informational).
    pub stamp_ns: u64,
    /// [`check_of`]`(publisher, seq)`.
    pub check: u64,
}

/// The check word of a message: a 64-bit mix (splitmix64) of its publisher and sequence.
pub fn check_of(publisher: u64, seq: u64) -> u64 {
    let mut z = publisher
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(seq)
        .wrapping_add(0x6a09_e667_f3bc_c908);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Nanoseconds since the epoch (CLOCK_REALTIME; comparable across processes).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl TestMsg {
    /// A valid message.
    pub fn new(publisher: u64, seq: u64) -> TestMsg {
        TestMsg {
            publisher,
            seq,
            stamp_ns: now_ns(),
            check: check_of(publisher, seq),
        }
    }

    /// Whether the check word matches.
    pub fn is_intact(&self) -> bool {
        self.check == check_of(self.publisher, self.seq)
    }
}

/// Validates a stream of received messages: intact, per-publisher strictly increasing (so no
/// duplicates), topic sequence strictly increasing, and — on lossless topics — no gaps within
/// a publisher's stream.
#[derive(Debug, Default)]
pub struct Checker {
    lossless: bool,
    /// Messages accepted.
    pub received: u64,
    /// Publisher id → first seq received.
    pub first: BTreeMap<u64, u64>,
    /// Publisher id → last seq received.
    pub last: BTreeMap<u64, u64>,
    /// Publisher id → messages received.
    pub count: BTreeMap<u64, u64>,
    /// First and last topic sequence numbers received.
    pub topic_seqs: Option<(u64, u64)>,
    /// The first few validation errors.
    pub errors: Vec<String>,
    /// How many validation errors in all.
    pub error_count: u64,
}

impl Checker {
    /// A checker; `lossless` also demands that no message of a publisher is missing.
    pub fn new(lossless: bool) -> Checker {
        Checker {
            lossless,
            ..Checker::default()
        }
    }

    fn error(&mut self, e: String) {
        self.error_count += 1;
        if self.errors.len() < 20 {
            self.errors.push(e);
        }
    }

    /// Check one message with its topic sequence number.
    pub fn check(&mut self, m: &TestMsg, topic_seq: u64) {
        self.received += 1;
        if !m.is_intact() {
            self.error(format!(
                "torn or corrupted message at topic seq {topic_seq}: {m:?}"
            ));
            return;
        }
        match self.topic_seqs {
            Some((_, last)) if topic_seq <= last => self.error(format!(
                "topic sequence went from {last} to {topic_seq} (duplicate or reordered)"
            )),
            _ => {}
        }
        let first = self.topic_seqs.map_or(topic_seq, |(f, _)| f);
        self.topic_seqs = Some((first, topic_seq));
        match self.last.get(&m.publisher).copied() {
            Some(last) if m.seq <= last => self.error(format!(
                "publisher {}: seq {} after {last} (duplicate or out of order)",
                m.publisher, m.seq
            )),
            Some(last) if self.lossless && m.seq != last + 1 => self.error(format!(
                "publisher {}: seq {} after {last} on a lossless topic (messages lost)",
                m.publisher, m.seq
            )),
            _ => {}
        }
        self.first.entry(m.publisher).or_insert(m.seq);
        self.last.insert(m.publisher, m.seq);
        *self.count.entry(m.publisher).or_insert(0) += 1;
    }
}

/// A topic name unique to this test process and call: `it/<tag>-<pid>-<n>`.
pub fn unique_topic(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "it/{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The part of a file name that identifies `topic` in the old named-segment scheme
/// (`-<escaped topic>-`): shmbus must never create such a file in /dev/shm now.
pub fn segment_token(topic: &str) -> String {
    format!("-{}-", topic.replace('/', "~"))
}

/// How `/proc/<pid>/fd` links and `/proc/<pid>/maps` name the segment files of `topic`.
pub fn segment_file_names(topic: &str) -> [String; 2] {
    [
        format!("/memfd:shmbus-control:{topic} (deleted)"),
        format!("/memfd:shmbus-data:{topic} (deleted)"),
    ]
}

/// Whether process `pid` holds a descriptor or a mapping of one of `names`.
fn holds(pid: u32, names: &[String]) -> bool {
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if names.iter().any(|n| link.as_os_str() == n.as_str()) {
                    return true;
                }
            }
        }
    }
    std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|maps| {
        maps.lines()
            .any(|l| names.iter().any(|n| l.ends_with(&format!(" {n}"))))
    })
}

/// The processes that hold the memory of `topic`'s segment (a descriptor or a mapping of
/// either of its files). The kernel frees the memory when this list becomes empty.
pub fn segment_holders(topic: &str) -> Vec<u32> {
    let names = segment_file_names(topic);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| holds(pid, &names))
        .collect();
    pids.sort_unstable();
    pids
}

/// The topics whose segment files process `pid` holds descriptors of.
pub fn segments_held_by(pid: u32) -> Vec<String> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut topics: Vec<String> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("/memfd:shmbus-data:")?
                .strip_suffix(" (deleted)")
                .map(str::to_string)
        })
        .collect();
    topics.sort();
    topics.dedup();
    topics
}

/// `text` without ANSI colour sequences (the daemon's log is coloured).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The entries of /dev/shm whose names contain `needle`.
pub fn shm_entries_containing(needle: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return Vec::new();
    };
    let mut v: Vec<String> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.contains(needle))
        .collect();
    v.sort();
    v
}

/// The scheduler state letter of a process (`R`, `S`, `D`, `Z`, ...) from `/proc/<pid>/stat`.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything; the state follows the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.trim_start().chars().next()
}

/// Poll `cond` every `step` until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, step: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(step);
    }
}

/// Wait for `child` to exit, at most `timeout`; `None` if it is still running.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Send `signal` to `child` (ignored if it is already gone).
pub fn signal_child(child: &Child, signal: Signal) {
    let _ = kill(Pid::from_raw(child.id() as i32), signal);
}

/// Stop `child` for good: SIGKILL and reap it.
fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        signal_child(child, Signal::SIGKILL);
    }
    // After SIGKILL the child exits promptly; `wait` cannot hang on a killed child.
    let _ = child.wait();
}

/// A fresh directory under the system temp dir, mode 0700, named `shmbus-it-...`; removed with
/// everything in it on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Create one.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "shmbus-it-{tag}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            now_ns() % 1_000_000_000
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A running `shmbus-peer daemon` (the real daemon, in its own process) on a socket in a fresh
/// temporary directory. Dropping it stops the daemon (SIGTERM, then SIGKILL if it does not exit
/// within 5 s), removes any segment it left behind and the directory.
pub struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
    dir: TempDir,
    peer: String,
}

/// Spawn `peer daemon --socket <socket> <extra...>` with stderr appended to `log`.
fn spawn_daemon(peer: &str, socket: &Path, log: &Path, extra: &[&str]) -> Child {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the daemon log");
    Command::new(peer)
        .arg("daemon")
        .arg("--socket")
        .arg(socket)
        .args(extra)
        .env_remove("SHMBUS_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("spawn the daemon")
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("socket", &self.socket)
            .field("pid", &self.child.as_ref().map(Child::id))
            .finish()
    }
}

impl Daemon {
    /// Start the daemon with `peer daemon --socket <fresh path> <extra...>` and wait (at most
    /// 10 s) until a client can connect.
    pub fn start(peer: &str, extra: &[&str]) -> Daemon {
        let dir = TempDir::new("daemon");
        let socket = dir.path().join("shmbusd.sock");
        let log = dir.path().join("shmbusd.log");
        let child = spawn_daemon(peer, &socket, &log, extra);
        let mut d = Daemon {
            child: Some(child),
            socket,
            log,
            dir,
            peer: peer.to_string(),
        };
        d.wait_ready(Duration::from_secs(10));
        d
    }

    /// Wait (at most `timeout`) until a client can connect; panics if the daemon exits first
    /// or does not accept connections in time.
    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if bus_client::Bus::connect_to(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self.child_mut().try_wait().ok().flatten() {
                panic!(
                    "the daemon exited at start-up with {status}; its log:\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "the daemon did not accept connections within {timeout:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL the daemon and reap it (a crash: it cleans nothing up). Its segments, socket
    /// file and lock file stay behind until [`Daemon::restart`] or drop.
    pub fn kill(&mut self) {
        kill_and_reap(self.child_mut());
    }

    /// Whether the current daemon process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child_mut().try_wait(), Ok(None))
    }

    /// Start a new daemon on the same socket (its stderr appended to the same log), after the
    /// previous one was killed or stopped, and wait (at most 10 s) until it accepts
    /// connections. Returns when a client can connect.
    pub fn restart(&mut self, extra: &[&str]) {
        self.spawn_again(extra);
        self.wait_ready(Duration::from_secs(10));
    }

    /// Start a new daemon on the same socket without waiting for it to accept connections.
    /// Panics if the previous daemon process still runs.
    pub fn spawn_again(&mut self, extra: &[&str]) {
        assert!(
            !self.is_running(),
            "restart: the previous daemon (pid {}) still runs",
            self.pid()
        );
        let child = spawn_daemon(&self.peer, &self.socket, &self.log, extra);
        self.child = Some(child);
    }

    /// The lock file that makes one daemon per socket (`<socket>.lock`).
    pub fn lock_path(&self) -> PathBuf {
        let mut s = self.socket.as_os_str().to_os_string();
        s.push(".lock");
        PathBuf::from(s)
    }

    /// The topics whose segments this daemon process holds (none once it has exited).
    pub fn segments(&self) -> Vec<String> {
        // A zombie or a reaped process lists no descriptors.
        self.child
            .as_ref()
            .map_or_else(Vec::new, |c| segments_held_by(c.id()))
    }

    fn child_mut(&mut self) -> &mut Child {
        match self.child.as_mut() {
            Some(c) => c,
            None => unreachable!("the child is only taken in drop"),
        }
    }

    /// The daemon's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's socket as a string, for peer command lines.
    pub fn socket_str(&self) -> &str {
        self.socket.to_str().expect("a UTF-8 temp path")
    }

    /// The daemon's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What the daemon wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Connect a client in this process.
    pub fn bus(&self) -> bus_client::Bus {
        bus_client::Bus::connect_to(&self.socket).expect("connect to the daemon")
    }

    /// Send SIGTERM (a graceful stop).
    pub fn terminate(&self) {
        if let Some(c) = &self.child {
            signal_child(c, Signal::SIGTERM);
        }
    }

    /// Wait for the daemon to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(self.child_mut(), timeout)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            signal_child(&child, Signal::SIGTERM);
            if wait_child(&mut child, Duration::from_secs(5)).is_none() {
                kill_and_reap(&mut child);
            }
        }
        let _ = child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines.len().saturating_sub(100);
            eprintln!(
                "--- daemon log ({}){} ---\n{}",
                self.socket.display(),
                if tail > 0 { ", last 100 lines" } else { "" },
                lines[tail..].join("\n")
            );
        }
    }
}

/// A child process (`shmbus-peer pub|sub|hold ...`) whose stdout is read line by line with
/// timeouts and whose stderr is collected. Dropping it kills and reaps it.
pub struct Peer {
    child: Child,
    name: String,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .finish()
    }
}

impl Peer {
    /// Spawn `exe args...`.
    pub fn spawn(exe: &str, args: &[&str]) -> Peer {
        let name = args.join(" ");
        let mut child = Command::new(exe)
            .args(args)
            .env_remove("SHMBUS_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {exe} {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let stderr_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match stderr_pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        });
        Peer {
            child,
            name,
            lines,
            stderr,
            stderr_thread: Some(stderr_thread),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The next line on stdout, waiting at most `timeout`; panics on timeout or end of output.
    pub fn line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => panic!(
                "peer `{}` wrote no line within {timeout:?}; stderr:\n{}",
                self.name,
                self.stderr()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                let status = wait_child(&mut self.child, Duration::from_secs(2));
                panic!(
                    "peer `{}` closed stdout (exit: {status:?}); stderr:\n{}",
                    self.name,
                    self.stderr()
                )
            }
        }
    }

    /// Wait (at most `timeout`) for a line equal to `expected`; panics otherwise.
    pub fn expect_line(&mut self, expected: &str, timeout: Duration) {
        let line = self.line(timeout);
        assert_eq!(
            line,
            expected,
            "peer `{}` said something else; stderr:\n{}",
            self.name,
            self.stderr()
        );
    }

    /// The next line, parsed as JSON (the peer's summary).
    pub fn json(&mut self, timeout: Duration) -> serde_json::Value {
        let line = self.line(timeout);
        serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "peer `{}` printed `{line}`, not JSON ({e}); stderr:\n{}",
                self.name,
                self.stderr()
            )
        })
    }

    /// Wait for it to exit, at most `timeout`; panics if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match wait_child(&mut self.child, timeout) {
            Some(s) => s,
            None => panic!(
                "peer `{}` did not exit within {timeout:?}; stderr:\n{}",
                self.name,
                self.stderr()
            ),
        }
    }

    /// Wait for it to exit successfully and return its JSON summary (its last stdout line).
    pub fn finish(&mut self, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        let summary = self.json(timeout);
        let status = self.wait_exit(deadline.saturating_duration_since(Instant::now()));
        assert!(
            status.success(),
            "peer `{}` exited with {status}; summary {summary}; stderr:\n{}",
            self.name,
            self.stderr()
        );
        summary
    }

    /// The full stderr once the process has exited (waits at most 2 s for the pipe to drain).
    pub fn stderr_after_exit(&mut self) -> String {
        if let Some(t) = self.stderr_thread.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        self.stderr()
    }

    /// SIGKILL it now (it is reaped on drop).
    pub fn kill(&self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
    }

    /// SIGKILL it and reap it at once (so that nothing can mistake the zombie for a live
    /// process: the daemon checks orphans' liveness by pid).
    pub fn kill_and_reap(&mut self) {
        kill_and_reap(&mut self.child);
    }

    /// Send SIGTERM (peers that run until told to stop finish cleanly on it).
    pub fn terminate(&self) {
        signal_child(&self.child, Signal::SIGTERM);
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The next line if one is already there.
    pub fn try_line(&mut self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    /// Every line still to come until stdout closes (the process exited or was killed), waiting
    /// at most `timeout` in all.
    pub fn lines_until_eof(&mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut v = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => v.push(l),
                Err(_) => return v,
            }
        }
    }

    /// The command line it was started with (for messages).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
        if std::thread::panicking() {
            eprintln!("--- peer `{}` stderr ---\n{}", self.name, self.stderr());
        }
    }
}

/// What a `shmbus-peer watch` process reported: the violations it found, its latest progress
/// and its summary (absent if it was killed before it could print one).
#[derive(Debug, Default, Clone)]
pub struct WatchReport {
    /// Every `{"violation": ...}` line, as text.
    pub violations: Vec<String>,
    /// The latest `progress` object.
    pub progress: Option<serde_json::Value>,
    /// The `summary` object.
    pub summary: Option<serde_json::Value>,
    /// Lines that were none of those.
    pub other: Vec<String>,
}

impl WatchReport {
    /// Take in one line of a watch peer's stdout.
    pub fn absorb(&mut self, line: &str) {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) if v.get("violation").is_some() => self.violations.push(v.to_string()),
            Ok(v) if v.get("progress").is_some() => self.progress = Some(v["progress"].clone()),
            Ok(v) if v.get("summary").is_some() => self.summary = Some(v["summary"].clone()),
            _ => self.other.push(line.to_string()),
        }
    }

    /// Take in every line `peer` has written so far.
    pub fn absorb_available(&mut self, peer: &mut Peer) {
        while let Some(l) = peer.try_line() {
            self.absorb(&l);
        }
    }

    /// Messages checked: from the summary, else from the latest progress.
    pub fn received(&self) -> u64 {
        self.summary
            .as_ref()
            .or(self.progress.as_ref())
            .and_then(|v| v["received"].as_u64())
            .unwrap_or(0)
    }

    /// The longest stall: from the summary, else from the latest progress.
    pub fn max_stall(&self) -> Duration {
        Duration::from_micros(
            self.summary
                .as_ref()
                .or(self.progress.as_ref())
                .and_then(|v| v["max_stall_us"].as_u64())
                .unwrap_or(0),
        )
    }
}

/// The calls column of an `strace -c` summary written to `path`, by system call, plus `total`.
/// Panics if the file has no summary.
pub fn strace_calls(path: &Path) -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(path).expect("the strace summary");
    let mut calls = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || f[0].parse::<f64>().is_err() {
            continue;
        }
        if let Ok(n) = f[3].parse::<u64>() {
            calls.insert(f[f.len() - 1].to_string(), n);
        }
    }
    assert!(calls.contains_key("total"), "no total in:\n{text}");
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checker_accepts_an_intact_in_order_stream_from_two_publishers() {
        let mut c = Checker::new(true);
        for (t, (p, s)) in [(1, 0), (2, 0), (1, 1), (2, 1)].into_iter().enumerate() {
            c.check(&TestMsg::new(p, s), t as u64);
        }
        assert_eq!(c.error_count, 0, "{:?}", c.errors);
        assert_eq!((c.received, c.last[&1], c.last[&2]), (4, 1, 1));
    }

    #[test]
    fn checker_flags_torn_duplicate_reordered_and_lost_messages() {
        let mut torn = TestMsg::new(1, 0);
        torn.seq = 1;
        let cases: [(&[(u64, u64)], bool); 3] = [
            (&[(0, 0), (1, 0)], true),  // duplicate
            (&[(0, 1), (1, 0)], false), // reordered
            (&[(0, 0), (1, 2)], true),  // a gap on a lossless topic
        ];
        for (stream, lossless) in cases {
            let mut c = Checker::new(lossless);
            for &(t, s) in stream {
                c.check(&TestMsg::new(1, s), t);
            }
            assert_eq!(c.error_count, 1, "{stream:?}: {:?}", c.errors);
        }
        let mut c = Checker::new(false);
        c.check(&torn, 0);
        assert_eq!(c.error_count, 1, "torn: {:?}", c.errors);
        c.check(&TestMsg::new(1, 4), 3);
        c.check(&TestMsg::new(2, 0), 3);
        assert_eq!(c.error_count, 2, "a repeated topic seq: {:?}", c.errors);
        let mut c = Checker::new(false);
        c.check(&TestMsg::new(1, 0), 0);
        c.check(&TestMsg::new(1, 7), 9);
        assert_eq!(c.error_count, 0, "a gap is fine on a lossy topic");
    }
}
