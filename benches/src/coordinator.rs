//! The coordinator side of one run: create the rendezvous, let the contender
//! prepare, start one process per role, synchronise their start, collect
//! their results, and always clean up — participants are killed and reaped,
//! prepared resources released and the rendezvous directory removed, on
//! success, failure, timeout or Ctrl-C alike.

use std::fs::DirBuilder;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::error::{other, Context};
use crate::protocol::{ChildSpec, RoleReport, Timing};
use crate::transport::{Contender, Rendezvous, Role, RunSpec, Scenario};
use crate::util::{allowed_cpus, cpu_plan};

/// Prefix of every name a run creates (directories, queues, ...).
pub const NAME_PREFIX: &str = "shmbus-bench-";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Run numbers, unique within this process (several coordinators may exist,
/// e.g. in tests), so that rendezvous names never collide.
static NEXT_RUN: AtomicU64 = AtomicU64::new(1);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT/SIGTERM set a flag (checked between and during runs)
/// instead of killing the coordinator, so it can still clean up.
pub fn install_interrupt_handler() -> io::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an AtomicBool, which is
        // async-signal-safe; no other code in this program installs a
        // handler for these signals.
        unsafe { sigaction(sig, &action) }.with_context(|| format!("installing {sig} handler"))?;
    }
    Ok(())
}

/// True once SIGINT or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The error returned when a run was cut short by SIGINT/SIGTERM.
pub fn interrupted_error() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "interrupted")
}

/// Fixed settings of a coordinator.
#[derive(Clone, Debug)]
pub struct Config {
    /// The `busbench` executable to start participants from.
    pub exe: PathBuf,
    /// Measurement lengths.
    pub timing: Timing,
    /// Pin participants to CPUs.
    pub pin: bool,
    /// Wall-time limit of one run (start-up included).
    pub timeout: Duration,
}

/// One scenario point: what a run measures, independent of the contender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    /// The scenario.
    pub scenario: Scenario,
    /// Message size.
    pub payload_bytes: usize,
    /// Sending processes.
    pub senders: usize,
    /// Receiving processes.
    pub receivers: usize,
}

/// Starts runs.
pub struct Coordinator {
    cfg: Config,
    cpus: Vec<usize>,
    base: PathBuf,
    pid: u32,
}

impl Coordinator {
    /// A coordinator for this process.
    pub fn new(cfg: Config) -> io::Result<Self> {
        let cpus = if cfg.pin { allowed_cpus()? } else { Vec::new() };
        // Unix socket paths are limited to 107 bytes; keep the rendezvous
        // short even if TMPDIR is long.
        let tmp = std::env::temp_dir();
        let base = if tmp.as_os_str().len() > 60 {
            PathBuf::from("/tmp")
        } else {
            tmp
        };
        Ok(Self {
            cfg,
            cpus,
            base,
            pid: std::process::id(),
        })
    }

    /// The CPUs participants are pinned to (empty: no pinning).
    pub fn pinned_cpus(&self) -> &[usize] {
        if self.cpus.len() >= 2 {
            &self.cpus
        } else {
            &[]
        }
    }

    /// A fresh spec (with names unique to the run) for `cell`.
    pub fn spec(&self, cell: &Cell) -> RunSpec {
        let run = NEXT_RUN.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{NAME_PREFIX}{}-{run}", self.pid);
        RunSpec {
            scenario: cell.scenario,
            payload_bytes: cell.payload_bytes,
            senders: cell.senders,
            receivers: cell.receivers,
            rendezvous: Rendezvous {
                dir: self.base.join(&tag),
                tag,
            },
        }
    }

    /// Runs `contender` once for `spec` and returns every participant's
    /// report. Everything the run created is gone when this returns.
    pub fn run(
        &self,
        contender: &dyn Contender,
        spec: &RunSpec,
    ) -> io::Result<Vec<(Role, RoleReport)>> {
        if interrupted() {
            return Err(interrupted_error());
        }
        // Drop order (reverse of declaration) matters: participants are
        // reaped first, then prepared resources released, then the
        // directory removed.
        let _dir = RunDir::create(&spec.rendezvous.dir)?;
        let mut prepared = contender.prepare(spec).context("prepare")?;
        let mut group = Group::default();

        let inherit = prepared.raw_fds();
        if inherit.iter().any(|&fd| fd <= 2) {
            return Err(other(
                "a prepared descriptor landed on 0..2: start busbench with stdin/stdout/stderr open",
            ));
        }
        let roles = spec.roles();
        let cpus = cpu_plan(&self.cpus, roles.len());
        for (&role, cpu) in roles.iter().zip(cpus) {
            let child_spec = ChildSpec {
                contender: contender.name().to_string(),
                run: spec.clone(),
                role,
                cpu,
                fds: inherit.clone(),
                info: prepared.info().to_string(),
                timing: self.cfg.timing,
                parent_pid: i32::try_from(self.pid).map_err(|_| other("pid out of range"))?,
            };
            let json = serde_json::to_string(&child_spec)
                .map_err(|e| other(format!("encoding the child spec: {e}")))?;
            group.spawn(&self.cfg.exe, role, &json, &inherit)?;
        }
        // The participants hold their copies now; ours must go, or e.g. a
        // pipe would never see EOF. (They keep FD_CLOEXEC in this process
        // all along, so processes started concurrently by other threads
        // never inherit them.)
        prepared.close_fds();

        let deadline = Instant::now() + self.cfg.timeout;
        group.wait_for(deadline, "every participant to connect", |k| k.ready)?;
        group.go()?;
        group.wait_for(deadline, "every participant to finish", |k| k.finished())?;
        group.reports()
    }
}

/// The run's private directory, removed (recursively) on drop.
struct RunDir {
    path: PathBuf,
}

impl RunDir {
    fn create(path: &Path) -> io::Result<Self> {
        DirBuilder::new()
            .mode(0o700)
            .create(path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                eprintln!("busbench: removing {}: {e}", self.path.display());
            }
        }
    }
}

/// One participant process.
struct Kid {
    role: Role,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    pending: Vec<u8>,
    ready: bool,
    result: Option<RoleReport>,
    error: Option<String>,
    status: Option<ExitStatus>,
}

impl Kid {
    fn finished(&self) -> bool {
        self.status.is_some_and(|s| s.success()) && self.result.is_some()
    }

    fn handle_line(&mut self, line: &str) {
        if line == "READY" {
            self.ready = true;
        } else if let Some(json) = line.strip_prefix("RESULT ") {
            match serde_json::from_str(json) {
                Ok(r) => self.result = Some(r),
                Err(e) => self.error = Some(format!("unreadable result: {e}")),
            }
        } else if let Some(msg) = line.strip_prefix("ERROR ") {
            self.error = Some(msg.to_string());
        } else if !line.is_empty() {
            eprintln!("busbench: {}: {line}", self.role);
        }
    }

    /// Reads what is available on stdout; reaps the process at EOF.
    fn read_output(&mut self) -> io::Result<()> {
        let Some(out) = self.stdout.as_mut() else {
            return Ok(());
        };
        let mut buf = [0u8; 8192];
        match out.read(&mut buf) {
            Ok(0) => {
                self.stdout = None;
                let status = self
                    .child
                    .wait()
                    .with_context(|| format!("waiting for {}", self.role))?;
                self.status = Some(status);
                let rest = std::mem::take(&mut self.pending);
                self.handle_line(String::from_utf8_lossy(&rest).trim());
            }
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                while let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = self.pending.drain(..=pos).collect();
                    self.handle_line(String::from_utf8_lossy(&line).trim());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("reading from {}", self.role)),
        }
        Ok(())
    }

    fn failure(&self) -> io::Error {
        let status = match self.status {
            Some(s) => s.to_string(),
            None => "still running".to_string(),
        };
        match &self.error {
            Some(msg) => other(format!("{}: {msg}", self.role)),
            None => other(format!("{} exited without a result ({status})", self.role)),
        }
    }
}

/// The participants of one run; kills and reaps whatever is left on drop.
#[derive(Default)]
struct Group {
    kids: Vec<Kid>,
}

impl Group {
    /// Starts a participant; `inherit` are descriptors (all > 2, open, with
    /// `FD_CLOEXEC` in this process) that the participant gets to keep.
    fn spawn(
        &mut self,
        exe: &Path,
        role: Role,
        spec_json: &str,
        inherit: &[RawFd],
    ) -> io::Result<()> {
        let mut cmd = Command::new(exe);
        cmd.arg("--role")
            .arg("child")
            .arg("--child-spec")
            .arg(spec_json)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let inherit = inherit.to_vec();
        // SAFETY: the closure runs in the forked child before exec, where
        // only async-signal-safe operations are allowed: it reads a Vec
        // allocated before the fork (no allocation, no locks) and calls
        // fcntl(2). The descriptors are open in the parent, hence in the
        // child, and above the stdio descriptors std has just set up.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &inherit {
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} ({})", exe.display(), role))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        self.kids.push(Kid {
            role,
            child,
            stdin,
            stdout,
            pending: Vec::new(),
            ready: false,
            result: None,
            error: None,
            status: None,
        });
        Ok(())
    }

    /// Waits until `done` holds for every participant. Fails as soon as one
    /// exits without satisfying it, at the deadline, or on SIGINT/SIGTERM.
    fn wait_for(
        &mut self,
        deadline: Instant,
        what: &str,
        done: impl Fn(&Kid) -> bool,
    ) -> io::Result<()> {
        loop {
            if let Some(k) = self.kids.iter().find(|k| k.status.is_some() && !done(k)) {
                return Err(k.failure());
            }
            if self.kids.iter().all(&done) {
                return Ok(());
            }
            if interrupted() {
                return Err(interrupted_error());
            }
            let now = Instant::now();
            if now >= deadline {
                let late: Vec<String> = self
                    .kids
                    .iter()
                    .filter(|k| !done(k))
                    .map(|k| k.role.to_string())
                    .collect();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "timed out waiting for {what} (still waiting for {}); killed",
                        late.join(", ")
                    ),
                ));
            }
            self.pump(deadline - now)?;
        }
    }

    /// Waits up to `max_wait` for output from any participant and reads it.
    fn pump(&mut self, max_wait: Duration) -> io::Result<()> {
        let ready: Vec<usize> = {
            let (idx, mut fds): (Vec<usize>, Vec<PollFd<'_>>) = self
                .kids
                .iter()
                .enumerate()
                .filter_map(|(i, k)| {
                    k.stdout
                        .as_ref()
                        .map(|out| (i, PollFd::new(out.as_fd(), PollFlags::POLLIN)))
                })
                .unzip();
            if fds.is_empty() {
                return Ok(());
            }
            let timeout = PollTimeout::try_from(max_wait.min(Duration::from_secs(1)))
                .unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => return Ok(()),
                Err(e) => return Err(e).context("poll on participant output"),
            }
            idx.into_iter()
                .zip(&fds)
                .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
                .map(|(i, _)| i)
                .collect()
        };
        for i in ready {
            self.kids[i].read_output()?;
        }
        Ok(())
    }

    /// Tells every participant to start; closes their stdin.
    fn go(&mut self) -> io::Result<()> {
        for k in &mut self.kids {
            if let Some(mut stdin) = k.stdin.take() {
                stdin
                    .write_all(b"GO\n")
                    .with_context(|| format!("starting {}", k.role))?;
            }
        }
        Ok(())
    }

    fn reports(&self) -> io::Result<Vec<(Role, RoleReport)>> {
        self.kids
            .iter()
            .map(|k| match &k.result {
                Some(r) => Ok((k.role, r.clone())),
                None => Err(k.failure()),
            })
            .collect()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for k in &mut self.kids {
            if k.status.is_none() {
                // Already-exited children make kill fail with ESRCH-like
                // errors, which is fine: wait() reaps them either way.
                let _ = k.child.kill();
                if let Err(e) = k.child.wait() {
                    eprintln!("busbench: reaping {}: {e}", k.role);
                }
            }
        }
    }
}

/// Removes what earlier busbench processes that died without cleaning up
/// (SIGKILL, power loss) left behind: `shmbus-bench-<pid>-*` directories in
/// the temp dir and message queues in `/dev/mqueue`, for pids that no longer
/// exist. Returns how many entries were removed.
pub fn cleanup_stale() -> usize {
    fn dead_owner(name: &str) -> bool {
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
            return false;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            return false;
        };
        pid > 0
            && pid as u32 != std::process::id()
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) == Err(Errno::ESRCH)
    }
    let mut removed = 0;
    let mut dirs = vec![std::env::temp_dir()];
    if dirs[0] != Path::new("/tmp") {
        dirs.push(PathBuf::from("/tmp"));
    }
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if dead_owner(&name.to_string_lossy()) && std::fs::remove_dir_all(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/dev/mqueue") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if dead_owner(&name) && nix::mqueue::mq_unlink(format!("/{name}").as_str()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}
