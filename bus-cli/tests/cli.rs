//! The `shmbus` binary against a real daemon (embedded in this test process, on a private
//! socket in a fresh temporary directory). Every wait is bounded; children are killed on
//! failure.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bus_client::Bus;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// A fresh directory whose name contains "shmbus", removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
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
struct Daemon {
    bus: Bus,
    _handle: bus_daemon::DaemonHandle,
    socket: PathBuf,
    _dir: TempDir,
}

impl Daemon {
    fn start(tag: &str) -> Daemon {
        let dir = TempDir::new(tag);
        let socket = dir.0.join("shmbusd.sock");
        let handle = bus_daemon::spawn(bus_daemon::Config::new(socket.clone())).unwrap();
        let bus = Bus::connect_to(&socket).unwrap();
        Daemon {
            bus,
            _handle: handle,
            socket,
            _dir: dir,
        }
    }

    fn shmbus(&self, args: &[&str]) -> Command {
        shmbus_at(&self.socket, args)
    }

    /// Wait until `topic` has `n` subscribers.
    fn wait_subscribers(&self, topic: &str, n: usize) {
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

fn shmbus_at(socket: &Path, args: &[&str]) -> Command {
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
struct Running {
    child: Child,
    stdout: Captured,
    stderr: Captured,
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// A pipe read to its end on a thread, into a shared buffer.
struct Captured {
    buf: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl Captured {
    fn new(pipe: Option<impl Read + Send + 'static>) -> Captured {
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

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    /// Everything, once the pipe has closed.
    fn finish(&mut self) -> String {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.text()
    }
}

impl Running {
    fn spawn(cmd: &mut Command) -> Running {
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
    fn wait_stdout(&self, what: &str, pred: impl Fn(&str) -> bool) {
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
    fn wait(mut self) -> Output {
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
    fn stop(mut self) -> Output {
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
fn run_with_input(cmd: &mut Command, input: &[u8]) -> Output {
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

fn run(cmd: &mut Command) -> Output {
    Running::spawn(cmd).wait()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        out.stdout,
        out.stderr
    );
}

#[test]
fn pipeline_pub_to_echo_delivers_every_line_in_order() {
    let d = Daemon::start("pipe");
    // The topic exists before echo attaches (echo never creates one).
    drop(d.bus.publisher::<[u8]>("pipe/t").create().unwrap());
    let echo = Running::spawn(&mut d.shmbus(&["echo", "pipe/t", "-n", "10000"]));
    d.wait_subscribers("pipe/t", 1);
    let input: String = (1..=10_000).map(|i| format!("{i}\n")).collect();
    let published = run_with_input(&mut d.shmbus(&["pub", "pipe/t"]), input.as_bytes());
    assert_ok(&published);
    let echoed = echo.wait();
    assert_ok(&echoed);
    assert!(
        echoed.stderr.contains("listening on pipe/t"),
        "{}",
        echoed.stderr
    );
    assert!(
        echoed.stdout == input,
        "echo lost, duplicated or reordered lines"
    );
}

#[test]
fn list_and_stat_show_topic_and_subscriber() {
    let d = Daemon::start("list");
    let mut sub = d
        .bus
        .subscriber::<[u8]>("robot/odom")
        .open_or_create()
        .unwrap();
    let mut publisher = d.bus.publisher::<[u8]>("robot/odom").open().unwrap();
    for i in 0..5u8 {
        publisher.publish(&[i; 8]).unwrap();
    }
    drop(sub.recv().unwrap());

    let out = run(&mut d.shmbus(&["list", "--json"]));
    assert_ok(&out);
    let topics: Value = serde_json::from_str(&out.stdout).unwrap();
    let t = topics
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "robot/odom")
        .unwrap_or_else(|| panic!("topic missing: {topics}"));
    assert_eq!(t["subscribers"], 1);
    assert_eq!(t["publishers"], 1);
    assert_eq!(t["published"], 5);
    assert_eq!(t["spec"]["mode"], "lossless");

    let out = run(&mut d.shmbus(&["list"]));
    assert_ok(&out);
    assert!(out.stdout.starts_with("TOPIC"), "{}", out.stdout);
    assert!(out.stdout.contains("robot/odom"), "{}", out.stdout);

    let out = run(&mut d.shmbus(&["stat", "robot/odom", "--json", "--interval-ms", "20"]));
    assert_ok(&out);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    let t = &report["topics"][0];
    assert_eq!(t["name"], "robot/odom");
    assert_eq!(t["published"], 5);
    let subs = t["subscribers"].as_array().unwrap();
    assert_eq!(subs.len(), 1, "{report}");
    assert_eq!(subs[0]["lag"], 4, "{report}");
    assert_eq!(t["max_lag"], 4);
    assert!(t["messages_per_sec"].is_number());

    let out = run(&mut d.shmbus(&["stat", "--interval-ms", "20"]));
    assert_ok(&out);
    assert!(out.stdout.contains("MSG/S"), "{}", out.stdout);
    assert!(out.stdout.contains("LAG"), "{}", out.stdout);

    let out = run(&mut d.shmbus(&["stat", "no/such", "--interval-ms", "20"]));
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("shmbus list"), "{}", out.stderr);
}

#[test]
fn stat_watch_refreshes_in_place() {
    const CLEAR: &str = "\x1b[H\x1b[2J";
    let d = Daemon::start("watch");
    let _sub = d
        .bus
        .subscriber::<[u8]>("watch/t")
        .open_or_create()
        .unwrap();
    let watch = Running::spawn(&mut d.shmbus(&["stat", "--watch", "--interval-ms", "20"]));
    watch.wait_stdout("two refreshes", |out| out.matches(CLEAR).count() >= 2);
    let out = watch.stop();
    let frames = out.stdout.matches(CLEAR).count();
    assert!(frames >= 2, "{frames} refreshes in {:?}", out.stdout);
    assert!(out.stdout.contains("watch/t"), "{}", out.stdout);
}

#[test]
fn doctor_passes_with_live_daemon_and_fails_with_dead_socket() {
    let d = Daemon::start("doctor");
    let out = run(&mut d.shmbus(&["doctor"]));
    assert_ok(&out);
    assert!(
        out.stdout.contains("OK    daemon: shmbusd (pid"),
        "{}",
        out.stdout
    );
    // Segments are sealed memory files: the probe must work wherever the bus works, and the
    // line must not send anyone to resize /dev/shm.
    assert!(
        out.stdout.contains(
            "OK    shared memory: sealed memory files work; segments do not use /dev/shm"
        ),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("shm-size") && !out.stdout.contains("remount"),
        "{}",
        out.stdout
    );
    let memory = out
        .stdout
        .lines()
        .find(|l| l.contains("  memory limit: "))
        .unwrap_or_else(|| panic!("no memory limit line:\n{}", out.stdout));
    assert!(
        memory.starts_with("OK  ") || memory.starts_with("WARN"),
        "{memory}"
    );
    assert!(!out.stdout.contains("FAIL"), "{}", out.stdout);

    let dead = d.socket.with_file_name("nobody-here.sock");
    let out = run(&mut shmbus_at(&dead, &["doctor"]));
    assert_eq!(out.status.code(), Some(1), "{}", out.stdout);
    assert!(
        out.stdout.contains("FAIL  daemon: none answers"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("shmbusd"), "{}", out.stdout);
}

/// A file in /dev/shm named like an older shmbus's segment, removed on drop.
struct OldSegmentFile(PathBuf);

impl Drop for OldSegmentFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The doctor's line about shmbus files in /dev/shm.
fn stale_line(stdout: &str) -> &str {
    stdout
        .lines()
        .find(|l| l.contains("  stale files: "))
        .unwrap_or_else(|| panic!("no stale files line:\n{stdout}"))
}

#[test]
fn doctor_reports_old_shm_files_unless_a_process_holds_them() {
    let d = Daemon::start("doctor-old");
    // The name an older shmbus gave a segment: shmbus-<uid>-<topic>-<instance>. The topic
    // starts with '-' so the name sorts before other files of ours and is always listed.
    let name = format!(
        "shmbus-{}--doctor-test-{}-0000000000000001",
        nix::unistd::geteuid().as_raw(),
        std::process::id()
    );
    let path = Path::new("/dev/shm").join(&name);
    if let Err(e) = std::fs::write(&path, [0u8; 4096]) {
        eprintln!("skipped: cannot make {} ({e})", path.display());
        return;
    }
    let file = OldSegmentFile(path);

    let out = run(&mut d.shmbus(&["doctor"]));
    assert_ok(&out); // a WARN, not a FAIL
    let line = stale_line(&out.stdout);
    assert!(line.starts_with("WARN"), "{line}");
    assert!(line.contains(&name), "{line}");
    assert!(line.contains("older shmbus version"), "{line}");
    assert!(line.contains("safe to remove"), "{line}");

    // Held open by a process (this one): in use, not listed as stale.
    let held = std::fs::File::open(&file.0).unwrap();
    let out = run(&mut d.shmbus(&["doctor"]));
    assert_ok(&out);
    let line = stale_line(&out.stdout);
    assert!(!line.contains(&name), "{line}");
    drop(held);
}

#[test]
fn invalid_topic_name_exits_2_naming_the_rule() {
    let d = Daemon::start("names");
    let out = run(&mut d.shmbus(&["pub", "a/../b", "x"]));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("'..' are not allowed"),
        "{}",
        out.stderr
    );

    let out = run(&mut d.shmbus(&["echo", "bad name"]));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("only ASCII letters"), "{}", out.stderr);
}

#[test]
fn no_daemon_exits_2_and_suggests_shmbusd() {
    let dir = TempDir::new("nodaemon");
    let out = run(&mut shmbus_at(&dir.0.join("shmbusd.sock"), &["list"]));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("Start the daemon with `shmbusd`"),
        "{}",
        out.stderr
    );
}

#[test]
fn pub_errors_have_distinct_exit_codes() {
    let d = Daemon::start("puberr");
    let out = run(&mut d.shmbus(&["pub", "small", "--slot-size", "4", "0123456789"]));
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("slot size"), "{}", out.stderr);

    // The topic exists with 4-byte slots: asking for others is a refusal (3).
    let out = run(&mut d.shmbus(&["pub", "small", "--slot-size", "8", "x"]));
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("slot_size"), "{}", out.stderr);

    let out = run(&mut d.shmbus(&["pub", "small", "--rate", "0", "x"]));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
}

#[test]
fn echo_replays_lossy_topic_as_json_lines() {
    let d = Daemon::start("replay");
    let out = run_with_input(
        &mut d.shmbus(&["pub", "replay/t", "--lossy"]),
        b"a\nb\n\xff",
    );
    assert_ok(&out);
    let out = run(&mut d.shmbus(&[
        "echo", "replay/t", "--replay", "-n", "3", "--format", "json",
    ]));
    assert_ok(&out);
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert_eq!(lines[0]["seq"], 0);
    assert_eq!(lines[0]["data"], "a");
    assert_eq!(lines[1]["seq"], 1);
    assert_eq!(lines[1]["data"], "b");
    assert_eq!(lines[2]["len"], 1);
    assert_eq!(lines[2]["encoding"], "hex");
    assert_eq!(lines[2]["data"], "ff");
}

#[test]
fn echo_reads_typed_topic_as_hex_and_exits_0_when_deleted() {
    let d = Daemon::start("typed");
    let mut publisher = d.bus.publisher::<u64>("typed/t").create().unwrap();
    let echo = Running::spawn(&mut d.shmbus(&["echo", "typed/t"]));
    d.wait_subscribers("typed/t", 1);
    publisher.publish(&0x0102_0304_0506_0708).unwrap();
    // The message is in the ring before the topic closes: echo drains it, then sees Closed.
    d.bus.delete("typed/t").unwrap();
    let out = echo.wait();
    assert_ok(&out);
    assert_eq!(out.stdout, "0807060504030201\n");
}

#[test]
fn echo_waits_for_a_missing_topic_and_never_creates_it() {
    let d = Daemon::start("wait");
    let echo = Running::spawn(&mut d.shmbus(&["echo", "later/t", "-n", "1"]));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        d.bus.list().unwrap().iter().all(|t| t.name != "later/t"),
        "echo created the topic it watches"
    );
    // The real publisher creates it with its own type; echo attaches and prints the message.
    let mut publisher = d.bus.publisher::<u32>("later/t").create().unwrap();
    d.wait_subscribers("later/t", 1);
    publisher.publish(&0x0a0b_0c0d).unwrap();
    let out = echo.wait();
    assert_ok(&out);
    assert!(
        out.stderr.contains("does not exist yet; waiting"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "0d0c0b0a\n");
}

#[test]
fn hz_reports_rate_and_jitter() {
    let d = Daemon::start("hz");
    drop(d.bus.publisher::<[u8]>("hz/t").create().unwrap());
    let hz = Running::spawn(&mut d.shmbus(&["hz", "hz/t", "-n", "20"]));
    d.wait_subscribers("hz/t", 1);
    let input: String = (0..20).map(|i| format!("{i}\n")).collect();
    let out = run_with_input(
        &mut d.shmbus(&["pub", "hz/t", "--rate", "200"]),
        input.as_bytes(),
    );
    assert_ok(&out);
    let out = hz.wait();
    assert_ok(&out);
    let line = out.stdout.lines().last().unwrap_or_default();
    assert!(line.starts_with("average rate: "), "{}", out.stdout);
    assert!(
        line.contains("std dev") && line.contains("window 19"),
        "{line}"
    );
    let rate: f64 = line["average rate: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        rate > 5.0 && rate < 400.0,
        "rate {rate} for a 200 Hz publisher"
    );
}

#[test]
fn help_documents_exit_codes_and_subcommands() {
    let out = run(Command::new(env!("CARGO_BIN_EXE_shmbus"))
        .arg("--help")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped()));
    assert_ok(&out);
    for needle in [
        "Exit codes",
        "list",
        "stat",
        "echo",
        "pub",
        "hz",
        "doctor",
        "SHMBUS_SOCKET",
    ] {
        assert!(
            out.stdout.contains(needle),
            "{needle} missing:\n{}",
            out.stdout
        );
    }
    for sub in ["list", "stat", "echo", "pub", "hz", "doctor"] {
        let out = run(Command::new(env!("CARGO_BIN_EXE_shmbus"))
            .args([sub, "--help"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()));
        assert_ok(&out);
        assert!(
            out.stdout.contains("Usage: shmbus"),
            "{sub}: {}",
            out.stdout
        );
    }
}
