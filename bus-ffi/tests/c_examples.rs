//! The C and C++ examples, compiled here with the system's gcc and g++ against the library
//! just built, run as two separate processes (a subscriber and a publisher) against a real
//! daemon (the daemon runs in this test process, reached through `SHMBUS_SOCKET`); the
//! subscriber's output is checked message by message. `valgrind_finds_no_error_in_the_c_and_cpp_examples`
//! runs the same pairs, C and C++, under valgrind (ignored by default; `.ci/run` runs it). `poll.c` is a
//! `poll()` loop on a wait set's descriptor over two topics fed by two more processes; it
//! runs plainly and under valgrind too.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use bus_client::Bus;

/// `target/<profile>/deps`: where `cargo test` builds libshmbus.so and libshmbus.a for this
/// run (they are copied up to `target/<profile>` only by `cargo build`).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().expect("target/<profile>/deps").to_path_buf()
}

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Compile an example once per test process; `cpp` links the static library, C the shared
/// one. Tests run on parallel threads and several use the same example: each must get a
/// finished executable, never one that another test's linker is still writing (exec fails
/// with ETXTBSY on such a file), so compiles are cached under one lock.
fn compile(example: &str, cpp: bool) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, exe)) = built.iter().find(|(name, _)| name == example) {
        return exe.clone();
    }
    let exe = compile_now(example, cpp);
    built.push((example.to_string(), exe.clone()));
    exe
}

fn compile_now(example: &str, cpp: bool) -> PathBuf {
    let lib = lib_dir();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{}-{}",
        example.replace('.', "_"),
        std::process::id()
    ));
    let source = crate_dir().join("examples").join(example);
    let include = crate_dir().join("include");
    let mut cmd = if cpp {
        let mut c = Command::new("g++");
        c.args(["-std=c++17", "-Wall", "-Wextra", "-Werror", "-g", "-I"])
            .arg(&include)
            .arg(&source)
            .arg(lib.join("libshmbus.a"))
            .args(["-lpthread", "-ldl", "-lm", "-o"])
            .arg(&out);
        c
    } else {
        let mut c = Command::new("gcc");
        c.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-I"])
            .arg(&include)
            .arg(&source)
            .arg("-L")
            .arg(&lib)
            .arg("-lshmbus")
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .arg("-o")
            .arg(&out);
        c
    };
    let status = cmd.status().expect("run the compiler");
    assert!(status.success(), "compiling {example} failed: {status}");
    out
}

/// A child process, killed and reaped if the test ends before it does.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(program: &[&Path], args: &[&str], socket: &Path) -> Proc {
        let mut cmd = Command::new(program[0]);
        // The library this run built, whatever `cargo test` put first on the search path (a
        // `target/<profile>/libshmbus.so` left by an earlier `cargo build` would otherwise be
        // found before the rpath).
        cmd.env("LD_LIBRARY_PATH", lib_dir());
        cmd.args(&program[1..])
            .args(args)
            .env("SHMBUS_SOCKET", socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn the example");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines }
    }

    /// Wait for the line `want`, returning the lines before it.
    fn wait_for(&self, want: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == want => return seen,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no line {want:?} within {timeout:?}; saw {seen:?}"),
            }
        }
    }

    /// Wait for the process to exit; all of its remaining output.
    fn finish(mut self, timeout: Duration) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the example did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        // The reader thread ends at end of file; collect everything it read.
        let lines = self.lines.iter().collect();
        (status, lines)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

const COUNT: u64 = 100;

/// Run a subscriber and a publisher process (each `wrapper` + `exe`) on `topic`.
fn run_pair(
    wrapper: &[&Path],
    exe: &Path,
    topic: &str,
    timeout: Duration,
) -> (Vec<String>, Vec<String>) {
    let bus = Bus::embedded().expect("a daemon for the examples");
    let socket = bus.socket_path().to_path_buf();
    let program: Vec<&Path> = wrapper.iter().copied().chain([exe]).collect();
    let count = COUNT.to_string();
    let sub = Proc::spawn(&program, &["sub", topic, &count], &socket);
    sub.wait_for("ready", timeout);
    let publisher = Proc::spawn(&program, &["pub", topic, &count], &socket);
    let (pub_status, pub_lines) = publisher.finish(timeout);
    assert!(
        pub_status.success(),
        "publisher: {pub_status}, {pub_lines:?}"
    );
    let (sub_status, sub_lines) = sub.finish(timeout);
    assert!(
        sub_status.success(),
        "subscriber: {sub_status}, {sub_lines:?}"
    );
    drop(bus);
    (pub_lines, sub_lines)
}

fn assert_readings(pub_lines: &[String], sub_lines: &[String]) {
    assert_eq!(pub_lines, [format!("sent {COUNT}")]);
    let expected: Vec<String> = (0..COUNT)
        .map(|i| format!("seq={i} value={:.1} text=reading {i}", i as f64 * 1.5))
        .chain([format!("received {COUNT}, 0 wrong")])
        .collect();
    assert_eq!(sub_lines, expected);
}

/// Run `poll.c`'s subscriber on two topics and one publisher process per topic; check what
/// it received and that its loop slept through 300 ms of quiet.
fn run_poll(wrapper: &[&Path], exe: &Path, tag: &str, timeout: Duration) {
    let bus = Bus::embedded().expect("a daemon for the examples");
    let socket = bus.socket_path().to_path_buf();
    let program: Vec<&Path> = wrapper.iter().copied().chain([exe]).collect();
    let (a, b) = (format!("ffi/{tag}/a"), format!("ffi/{tag}/b"));
    let count = COUNT.to_string();
    let sub = Proc::spawn(&program, &["sub", &a, &b, &count], &socket);
    sub.wait_for("ready", timeout);
    let pubs = [
        Proc::spawn(&program, &["pub", &a, &count], &socket),
        Proc::spawn(&program, &["pub", &b, &count], &socket),
    ];
    for p in pubs {
        let (status, lines) = p.finish(timeout);
        assert!(status.success(), "publisher: {status}, {lines:?}");
        assert_eq!(lines, [format!("sent {COUNT}")]);
    }
    let (status, lines) = sub.finish(timeout);
    assert!(status.success(), "subscriber: {status}, {lines:?}");
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], format!("{a}: received {COUNT}, 0 wrong"));
    assert_eq!(lines[1], format!("{b}: received {COUNT}, 0 wrong"));
    // "quiet 300 ms: turns=T readable=R reported=K": a loop that spun would turn thousands
    // of times; this one wakes at the hint (about every 100 ms), and at most once more for a
    // wake-up left over from the last messages. (Under valgrind a turn takes longer, so
    // fewer fit.)
    let field = |name: &str| -> u32 {
        lines[2]
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {:?}", lines[2]))
    };
    assert!(lines[2].starts_with("quiet 300 ms:"), "{lines:?}");
    let (turns, readable, reported) = (field("turns="), field("readable="), field("reported="));
    assert!(
        turns <= 7 && readable <= 1 && reported == 0,
        "the loop did not sleep when quiet: {}",
        lines[2]
    );
    drop(bus);
}

#[test]
fn c_poll_example_waits_on_two_topics_fed_by_two_processes() {
    let exe = compile("poll.c", false);
    run_poll(&[], &exe, "poll", Duration::from_secs(30));
}

#[test]
fn c_example_delivers_every_reading_between_two_processes() {
    let exe = compile("pubsub.c", false);
    let (pub_lines, sub_lines) = run_pair(&[], &exe, "ffi/c/readings", Duration::from_secs(30));
    assert_readings(&pub_lines, &sub_lines);
}

#[test]
fn cpp_example_delivers_every_message_between_two_processes() {
    let exe = compile("pubsub.cpp", true);
    let (pub_lines, sub_lines) = run_pair(&[], &exe, "ffi/cpp/text", Duration::from_secs(30));
    assert_eq!(pub_lines, [format!("sent {COUNT}")]);
    let expected: Vec<String> = (0..COUNT)
        .map(|i| format!("{i} message {i}"))
        .chain([format!("received {COUNT}")])
        .collect();
    assert_eq!(sub_lines, expected);
}

/// `presence.c`: a C publisher process waits for two C subscriber processes, then its wait
/// set reports the count falling as each is killed with SIGKILL (the daemon releases a killed
/// process's entry when its connection closes); the Rust side reads the same counts.
#[test]
fn c_presence_example_counts_subscribers_and_sees_them_killed() {
    let timeout = Duration::from_secs(60);
    let exe = compile("presence.c", false);
    let bus = Bus::embedded().expect("a daemon for the examples");
    let socket = bus.socket_path().to_path_buf();
    let topic = "ffi/presence";
    let publisher = Proc::spawn(&[&exe], &["pub", topic, "2"], &socket);
    publisher.wait_for("ready", timeout);
    let mut subs: Vec<Proc> = (0..2)
        .map(|_| Proc::spawn(&[&exe], &["sub", topic], &socket))
        .collect();
    for s in &subs {
        assert_eq!(s.wait_for("ready", timeout), ["publishers 1"]);
    }
    assert_eq!(publisher.wait_for("watching", timeout), ["subscribers 2"]);
    let stats = || bus.stats(Some(topic)).expect("stats").remove(0);
    assert_eq!(
        (stats().publishers.len(), stats().subscribers.len()),
        (1, 2)
    );
    for left in [1, 0] {
        let mut killed = subs.pop().expect("a subscriber");
        killed.child.kill().expect("SIGKILL");
        killed.child.wait().expect("reap");
        let line = format!("subscribers {left}");
        assert_eq!(publisher.wait_for(&line, timeout), Vec::<String>::new());
        assert_eq!(stats().subscribers.len(), left);
    }
    let (status, rest) = publisher.finish(timeout);
    assert!(status.success(), "publisher: {status}, {rest:?}");
    drop(bus);
}

#[test]
fn c_example_alone_runs_its_own_embedded_daemon() {
    let exe = compile("pubsub.c", false);
    let out = Command::new(&exe)
        .env("LD_LIBRARY_PATH", lib_dir())
        .output()
        .expect("run the example");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "got reading 7 (value 10.5) at sequence 0\n"
    );
}

#[test]
#[ignore = "needs valgrind; .ci/run runs it"]
fn valgrind_finds_no_error_in_the_c_and_cpp_examples() {
    let exe = compile("pubsub.c", false);
    let valgrind = Path::new("valgrind");
    let flags = [
        "--error-exitcode=97",
        "--leak-check=full",
        "--errors-for-leak-kinds=definite",
        "--quiet",
    ];
    let wrapper: Vec<&Path> = [valgrind]
        .into_iter()
        .chain(flags.iter().map(Path::new))
        .collect();
    let (pub_lines, sub_lines) = run_pair(
        &wrapper,
        &exe,
        "ffi/valgrind/readings",
        Duration::from_secs(300),
    );
    assert_readings(&pub_lines, &sub_lines);
    // The C++ pair (RAII wrappers over the same ABI).
    let cpp = compile("pubsub.cpp", true);
    let (pub_lines, sub_lines) =
        run_pair(&wrapper, &cpp, "ffi/valgrind/cpp", Duration::from_secs(300));
    assert_eq!(pub_lines, [format!("sent {COUNT}")]);
    let expected: Vec<String> = (0..COUNT)
        .map(|i| format!("{i} message {i}"))
        .chain([format!("received {COUNT}")])
        .collect();
    assert_eq!(sub_lines, expected);
    // The poll loop over a wait set's descriptor: three processes under valgrind.
    let poll = compile("poll.c", false);
    run_poll(&wrapper, &poll, "valgrind-poll", Duration::from_secs(300));
    // The demo too: an embedded daemon, its threads, and its shutdown.
    let out = Command::new(valgrind)
        .env("LD_LIBRARY_PATH", lib_dir())
        .args(flags)
        .arg(&exe)
        .output()
        .expect("run valgrind");
    assert!(
        out.status.success(),
        "valgrind: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
