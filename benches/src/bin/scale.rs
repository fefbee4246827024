//! `scale`: how a daemon copes with many topics and many clients. See `scale --help`.
//!
//! It starts the `shmbusd` it is given (so the same binary measures any build's daemon: build
//! this one against each client library, see `docs/scale.md`) on a socket of its own, with a
//! rules file that raises the per-uid limits, and measures:
//!
//! * `attach`: connect, open a subscriber on an existing topic, map it; p50/p99 over
//!   `--samples` attaches, with 0, 1,000 and 10,000 topics in the daemon, and with 10,000
//!   topics while `--others` clients attach and detach in a loop meanwhile;
//! * `list`: one listing of every topic (the protocol call, and the `shmbus list` command when
//!   `--shmbus` is given), with 10,000 topics;
//! * `idle`: the daemon's CPU time (utime + stime from `/proc/<pid>/stat`) over `--idle-secs`
//!   and its RSS, with 0, 1,000 and 10,000 topics and nothing happening;
//! * `memory`: shared memory committed by 1,000 default byte topics and 1,000 default typed
//!   topics (`u64`), as the daemon reports it and as `/proc/meminfo`'s `Shmem` grows.
//!
//! "10,000" is `--topics`; a daemon holds two descriptors per topic (three in older builds), so
//! the count is capped by the open-file limit (printed when it is).
//!
//! Only the client API every build has is used here (connect, open, create, list, delete).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bus_client::Bus;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "scale",
    about = "Attach latency, listing time, idle CPU and RSS, and committed memory of a shmbusd with many topics"
)]
struct Cli {
    /// The daemon binary to measure.
    #[arg(long)]
    shmbusd: PathBuf,
    /// The `shmbus` binary, to time `shmbus list` too.
    #[arg(long)]
    shmbus: Option<PathBuf>,
    /// The large topic count.
    #[arg(long, default_value_t = 10_000)]
    topics: usize,
    /// Attaches measured per point.
    #[arg(long, default_value_t = 300)]
    samples: usize,
    /// Clients attaching in a loop during the contended point.
    #[arg(long, default_value_t = 200)]
    others: usize,
    /// Seconds of idleness measured per topic count.
    #[arg(long, default_value_t = 30)]
    idle_secs: u64,
    /// Topics per kind for the memory figures.
    #[arg(long, default_value_t = 1_000)]
    memory_topics: usize,
    /// Only these parts (attach, list, idle, memory); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// A label for the table's rows (e.g. `main` or `issue17`).
    #[arg(long, default_value = "this build")]
    label: String,
}

/// A daemon of our own, stopped (SIGTERM, then SIGKILL) on drop.
struct Daemon {
    child: Child,
    socket: PathBuf,
    dir: PathBuf,
}

impl Daemon {
    fn start(exe: &Path, tag: &str) -> Daemon {
        let dir = std::env::temp_dir().join(format!("shmbus-scale-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let rules = dir.join("rules.toml");
        std::fs::write(
            &rules,
            "[limits]\nmax_topics = 1000000\nmax_bytes_per_uid = 68719476736\nmax_clients_per_uid = 100000\n",
        )
        .expect("rules");
        std::fs::set_permissions(&rules, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let socket = dir.join("shmbusd.sock");
        let child = Command::new(exe)
            .arg("--socket")
            .arg(&socket)
            .arg("--rules")
            .arg(&rules)
            .arg("--log")
            .arg("warn")
            .env_remove("SHMBUS_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                let _ = std::fs::remove_dir_all(&dir);
                panic!("spawn {}: {e}", exe.display())
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while Bus::connect_to(&socket).is_err() {
            assert!(Instant::now() < deadline, "shmbusd did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        Daemon { child, socket, dir }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Create topics `prefix/0..n` (small typed ones: `u64`, 2 slots, 1 publisher, 1 subscriber)
/// through one connection; returns how many were made (fewer when the daemon refused).
/// Make topics `from..to` under `prefix`; the count made so far after (`from` when `to` is not
/// above it).
fn fill(bus: &Bus, prefix: &str, from: usize, to: usize) -> usize {
    for i in from..to {
        let made = bus
            .publisher::<u64>(&format!("{prefix}/{i:05}"))
            .capacity(2)
            .max_publishers(1)
            .max_subscribers(1)
            .create();
        if let Err(e) = made {
            eprintln!("scale: topic {i} refused: {e}");
            return i;
        }
    }
    from.max(to)
}

/// The topics one daemon can hold under our open-file limit (which it inherits; it may raise
/// its soft limit to the hard one), at `per_topic` descriptors each.
fn topics_that_fit(per_topic: u64) -> usize {
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap_or((1024, 1024));
    (hard.saturating_sub(600) / per_topic) as usize
}

/// Microsecond percentiles of `v`.
fn percentiles(v: &mut [Duration]) -> (f64, f64) {
    v.sort_unstable();
    let at = |q: f64| {
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        v[i].as_secs_f64() * 1e6
    };
    (at(0.50), at(0.99))
}

/// `samples` attaches: connect, open a subscriber on `topic`, map; then drop it all. The
/// first failure ends the measurement (a daemon out of descriptors refuses connections).
fn attach_latency(socket: &Path, topic: &str, samples: usize) -> Result<(f64, f64), String> {
    let mut took = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        let bus = Bus::connect_to(socket).map_err(|e| format!("connect: {e}"))?;
        let sub = bus
            .subscriber::<u64>(topic)
            .open()
            .map_err(|e| format!("open: {e}"))?;
        took.push(start.elapsed());
        drop((sub, bus));
    }
    Ok(percentiles(&mut took))
}

fn latency_figure(l: Result<(f64, f64), String>) -> String {
    match l {
        Ok((p50, p99)) => format!("p50 {p50:.0} us, p99 {p99:.0} us"),
        Err(e) => format!("fails: {e}"),
    }
}

/// `others` clients attaching and detaching in a loop until stopped; returns their attaches.
fn contend(
    socket: &Path,
    topic: &str,
    others: usize,
) -> (
    Arc<AtomicBool>,
    Vec<std::thread::JoinHandle<()>>,
    Arc<AtomicU64>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(Barrier::new(others + 1));
    let threads = (0..others)
        .map(|_| {
            let (stop, count, ready) = (stop.clone(), count.clone(), ready.clone());
            let socket = socket.to_path_buf();
            let topic = topic.to_string();
            std::thread::spawn(move || {
                let bus = Bus::connect_to(&socket);
                ready.wait();
                let Ok(bus) = bus else {
                    return;
                };
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(sub) = bus.subscriber::<u64>(&topic).open() {
                        count.fetch_add(1, Ordering::Relaxed);
                        drop(sub);
                    }
                }
            })
        })
        .collect();
    ready.wait();
    (stop, threads, count)
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) end with ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    num(11) + num(12)
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `RssShmem`...).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// `Shmem` of `/proc/meminfo`, in KiB.
fn shmem_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Shmem:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn ticks_per_sec() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

struct Report {
    label: String,
    lines: Vec<String>,
}

impl Report {
    fn row(&mut self, what: &str, value: String) {
        let line = format!("| {} | {what} | {value} |", self.label);
        println!("{line}");
        let _ = std::io::stdout().flush();
        self.lines.push(line);
    }
}

fn part(cli: &Cli, name: &str) -> bool {
    cli.only.is_empty() || cli.only.iter().any(|o| o == name)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut r = Report {
        label: cli.label.clone(),
        lines: Vec::new(),
    };
    let fit = topics_that_fit(2);
    let big = cli.topics.min(fit);
    if big < cli.topics {
        eprintln!(
            "scale: the open-file limit fits about {fit} topics at 2 descriptors each; measuring with {big}"
        );
    }
    println!("| build | what | figure |\n| --- | --- | --- |");
    if part(&cli, "attach") || part(&cli, "list") {
        let d = Daemon::start(&cli.shmbusd, "attach");
        let bus = Bus::connect_to(&d.socket).expect("connect");
        let target = "scale/target";
        // A full subscriber table: the contended point attaches `--others` subscribers at once.
        let _keep = bus
            .publisher::<u64>(target)
            .capacity(2)
            .max_publishers(1)
            .max_subscribers(256)
            .create()
            .expect("target topic");
        let mut filled = 0;
        // Labels say how many topics the daemon holds (the target topic counts too).
        let mut have = 0;
        let mut points = vec![0usize, 1_000.min(big), big];
        points.dedup();
        for n in points {
            filled = fill(&bus, "scale/t", filled, n);
            have = bus
                .status()
                .map(|s| s.totals.topics)
                .unwrap_or(filled as u64 + 1);
            if part(&cli, "attach") {
                let l = attach_latency(&d.socket, target, cli.samples);
                r.row(
                    &format!("attach (connect, open, map) with {have} topics"),
                    latency_figure(l),
                );
            }
        }
        if part(&cli, "attach") {
            let (stop, threads, count) = contend(&d.socket, target, cli.others);
            let started = Instant::now();
            let l = attach_latency(&d.socket, target, cli.samples);
            let others_rate =
                count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
            stop.store(true, Ordering::Relaxed);
            for t in threads {
                let _ = t.join();
            }
            r.row(
                &format!(
                    "attach with {have} topics while {} other clients attach in a loop",
                    cli.others
                ),
                format!("{} ({others_rate:.0} other attaches/s)", latency_figure(l)),
            );
        }
        if part(&cli, "list") {
            let mut took = Vec::new();
            let mut listed = 0;
            let mut failed = None;
            for _ in 0..5 {
                let start = Instant::now();
                match bus.list() {
                    Ok(l) => {
                        listed = l.len();
                        took.push(start.elapsed());
                    }
                    Err(e) => {
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
            match failed {
                Some(e) => r.row(
                    &format!("list with {have} topics (Bus::list)"),
                    format!("fails: {e}"),
                ),
                None => {
                    let (p50, _) = percentiles(&mut took);
                    r.row(
                        &format!("list with {have} topics (Bus::list, {listed} listed)"),
                        format!("median of 5: {:.1} ms", p50 / 1e3),
                    );
                }
            }
            if let Some(shmbus) = &cli.shmbus {
                let mut took = Vec::new();
                let mut status = None;
                for _ in 0..5 {
                    let start = Instant::now();
                    let out = Command::new(shmbus)
                        .arg("--socket")
                        .arg(&d.socket)
                        .arg("list")
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .output()
                        .expect("run shmbus list");
                    took.push(start.elapsed());
                    if !out.status.success() {
                        status = Some(String::from_utf8_lossy(&out.stderr).trim().to_string());
                        break;
                    }
                }
                match status {
                    Some(e) => r.row(
                        &format!("`shmbus list` with {have} topics"),
                        format!("fails: {e}"),
                    ),
                    None => {
                        let (p50, _) = percentiles(&mut took);
                        r.row(
                            &format!("`shmbus list` with {have} topics (the whole command)"),
                            format!("median of 5: {:.1} ms", p50 / 1e3),
                        );
                    }
                }
            }
        }
    }
    if part(&cli, "idle") {
        let tick = ticks_per_sec();
        for n in [0usize, 1_000, big] {
            let d = Daemon::start(&cli.shmbusd, &format!("idle{n}"));
            let bus = Bus::connect_to(&d.socket).expect("connect");
            // Default typed topics: lossless, as most are.
            let mut have = 0;
            for i in 0..n {
                if let Err(e) = bus.publisher::<u64>(&format!("scale/idle/{i:05}")).create() {
                    eprintln!("scale: idle topic {i} refused: {e}");
                    break;
                }
                have = i + 1;
            }
            std::thread::sleep(Duration::from_secs(1));
            let before = cpu_ticks(d.pid());
            std::thread::sleep(Duration::from_secs(cli.idle_secs));
            let used = (cpu_ticks(d.pid()) - before) as f64 / tick;
            r.row(
                &format!("idle daemon with {have} topics, over {} s", cli.idle_secs),
                format!(
                    "CPU {:.3} s ({:.2}% of a core), RSS {:.1} MiB (of it shared memory {:.1} MiB)",
                    used,
                    used / cli.idle_secs as f64 * 100.0,
                    status_kib(d.pid(), "VmRSS:") as f64 / 1024.0,
                    status_kib(d.pid(), "RssShmem:") as f64 / 1024.0
                ),
            );
        }
    }
    if part(&cli, "memory") {
        let n = cli.memory_topics;
        for kind in ["byte", "typed"] {
            let d = Daemon::start(&cli.shmbusd, &format!("mem-{kind}"));
            let bus = Bus::connect_to(&d.socket).expect("connect");
            let shmem_before = shmem_kib();
            let mut made = 0;
            for i in 0..n {
                let name = format!("scale/mem/{i:05}");
                let ok = if kind == "byte" {
                    bus.publisher::<[u8]>(&name).create().map(drop)
                } else {
                    bus.publisher::<u64>(&name).create().map(drop)
                };
                if let Err(e) = ok {
                    eprintln!("scale: {kind} topic {i} refused: {e}");
                    break;
                }
                made += 1;
            }
            let shmem = shmem_kib().saturating_sub(shmem_before) as f64 / 1024.0;
            let listed = bus.list().map(|l| {
                let total: u64 = l.iter().map(|t| t.bytes).sum();
                let one = l.first().map_or(0, |t| t.bytes);
                (
                    total,
                    one,
                    l.first()
                        .map(|t| (t.spec.capacity, t.spec.slot_size, t.spec.max_subscribers)),
                )
            });
            let figure = match listed {
                Ok((total, one, Some((capacity, slot, subs)))) => format!(
                    "{:.1} MiB committed ({:.1} KiB each: {capacity} slots of {slot} B, {subs} subscriber entries); /proc/meminfo Shmem +{shmem:.1} MiB",
                    total as f64 / 1048576.0,
                    one as f64 / 1024.0
                ),
                Ok(_) => format!("no topics; Shmem +{shmem:.1} MiB"),
                Err(e) => format!("list fails ({e}); /proc/meminfo Shmem +{shmem:.1} MiB"),
            };
            r.row(&format!("{made} default {kind} topics"), figure);
        }
    }
    let _ = r.lines;
    ExitCode::SUCCESS
}
