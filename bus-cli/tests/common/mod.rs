//! What the `shmbus` binary's tests share: a real daemon embedded in the test process on a
//! private socket in a fresh temporary directory, and child processes whose output is read on
//! threads. Every wait is bounded; children are killed on failure.

#![allow(dead_code)] // each test file uses its own part

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bus_client::Bus;

pub const WAIT: Duration = Duration::from_secs(20);

/// A fresh directory whose name contains "shmbus", removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "bus-cli-test-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A real daemon in this process, and a client of it. Fields drop in order: client, daemon,
/// directory.
pub struct Daemon {
    pub bus: Bus,
    _handle: bus_daemon::DaemonHandle,
    pub socket: PathBuf,
    pub dir: TempDir,
}

impl Daemon {
    pub fn start(tag: &str) -> Daemon {
        let dir = TempDir::new(tag);
        let socket = dir.0.join("shmbusd.sock");
        let handle = bus_daemon::spawn(bus_daemon::Config::new(socket.clone())).unwrap();
        let bus = Bus::connect_to(&socket).unwrap();
        Daemon {
            bus,
            _handle: handle,
            socket,
            dir,
        }
    }

    pub fn shmbus(&self, args: &[&str]) -> Command {
        shmbus_at(&self.socket, args)
    }

    /// Wait until `topic` has `n` subscribers.
    pub fn wait_subscribers(&self, topic: &str, n: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            // The topic may not exist yet: the child creates it.
            let stats = self.bus.stats(Some(topic));
            if let Ok(Some(t)) = stats.as_ref().map(|s| s.first()) {
                if t.subscribers.len() == n {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} subscriber(s) on {topic}: {stats:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

pub fn shmbus_at(socket: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shmbus"));
    c.arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("SHMBUS_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// A running child, killed and reaped on drop unless it was waited for. Its output is read on
/// threads (so that a full pipe never blocks it) into buffers the test can look at meanwhile.
pub struct Running {
    pub child: Child,
    pub stdout: Captured,
    pub stderr: Captured,
}

pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A pipe read to its end on a thread, into a shared buffer.
pub struct Captured {
    buf: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl Captured {
    pub fn new(pipe: Option<impl Read + Send + 'static>) -> Captured {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let thread = pipe.map(|mut p| {
            let buf = buf.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = p.read(&mut chunk) {
                    buf.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            })
        });
        Captured { buf, thread }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    /// Everything, once the pipe has closed.
    pub fn finish(&mut self) -> String {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.text()
    }
}

impl Running {
    pub fn spawn(cmd: &mut Command) -> Running {
        let mut child = cmd.spawn().expect("spawn shmbus");
        let stdout = Captured::new(child.stdout.take());
        let stderr = Captured::new(child.stderr.take());
        Running {
            child,
            stdout,
            stderr,
        }
    }

    /// Wait at most `WAIT` until standard output satisfies `pred`.
    pub fn wait_stdout(&self, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !pred(&self.stdout.text()) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; stdout: {:?}; stderr: {}",
                self.stdout.text(),
                self.stderr.text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait at most `WAIT` for the child to exit, then collect its output.
    pub fn wait(mut self) -> Output {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "shmbus did not exit within {WAIT:?}; stderr: {}",
                    self.stderr.finish()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Output {
            status,
            stdout: self.stdout.finish(),
            stderr: self.stderr.finish(),
        }
    }

    /// Kill the child (it runs until stopped) and collect its output.
    pub fn stop(mut self) -> Output {
        let _ = self.child.kill();
        self.wait()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run to completion with `input` on standard input.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> Output {
    cmd.stdin(Stdio::piped());
    let mut running = Running::spawn(cmd);
    let mut stdin = running.child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
        // Dropping stdin closes it: end of input.
    });
    let out = running.wait();
    writer.join().unwrap();
    out
}

pub fn run(cmd: &mut Command) -> Output {
    Running::spawn(cmd).wait()
}

pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        out.stdout,
        out.stderr
    );
}
