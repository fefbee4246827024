//! The bridge benchmark: 64 B and 1 KiB ping-pong and throughput, in one run, over
//!
//! * `bridge`: shmbus through two bridges: A's process publishes into daemon A, bridge A
//!   exports to Zenoh, bridge B imports into daemon B, B's process reads (and back);
//! * `zenoh`: raw Zenoh pub/sub between the two processes, configured like the bridges
//!   (peer mode, TCP on loopback, scouting off, blocking congestion control);
//! * `unix`: a Unix stream socket between the two processes.
//!
//! ```sh
//! cargo bench -p bus-bridge --bench bridge            # full
//! cargo bench -p bus-bridge --bench bridge -- --quick # a smoke run
//! ```
//!
//! Every process is a fresh exec of this binary (`--role ...`) or of `shmbus-bridge`; the
//! coordinator kills and reaps them all and removes its temporary directory, even on failure.

mod roles;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BRIDGE: &str = env!("CARGO_BIN_EXE_shmbus-bridge");

/// `--wait block|adaptive|busy_poll|spin:N:M`: how the bridges and the shmbus ends wait
/// (children read it from `BRIDGEBENCH_WAIT`). Default: block, the bridge's default; raw
/// Zenoh's receivers block on a channel too.
fn wait_name() -> String {
    std::env::var("BRIDGEBENCH_WAIT").unwrap_or_else(|_| "block".into())
}

/// The bridge config's `wait` value for [`wait_name`].
fn wait_toml() -> String {
    let w = wait_name();
    match w.strip_prefix("spin:").and_then(|r| r.split_once(':')) {
        Some((spins, yields)) => format!("{{ spins = {spins}, yields = {yields} }}"),
        None => format!("\"{w}\""),
    }
}

/// `--express`: Zenoh's express flag on both the bridges and raw Zenoh (`BRIDGEBENCH_EXPRESS`).
fn express() -> bool {
    std::env::var_os("BRIDGEBENCH_EXPRESS").is_some()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The Zenoh configuration of both raw ends, as the bridges build theirs.
fn zenoh_config(listen: u16, connect: Option<u16>) -> zenoh::Config {
    let mut c = zenoh::Config::default();
    let set = |c: &mut zenoh::Config, k: &str, v: String| {
        c.insert_json5(k, &v).expect("a zenoh setting");
    };
    set(
        &mut c,
        "listen/endpoints",
        format!("[\"tcp/127.0.0.1:{listen}\"]"),
    );
    if let Some(p) = connect {
        set(
            &mut c,
            "connect/endpoints",
            format!("[\"tcp/127.0.0.1:{p}\"]"),
        );
    }
    set(&mut c, "scouting/multicast/enabled", "false".into());
    set(
        &mut c,
        "connect/retry",
        r#"{"period_init_ms": 250, "period_max_ms": 1000, "period_increase_factor": 2}"#.into(),
    );
    c
}

/// Children killed and reaped on drop; the temporary directory removed.
struct Run {
    dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Run {
    fn new(tag: &str) -> Run {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "shmbus-bridgebench-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Run {
            dir,
            children: Vec::new(),
        }
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::File::create(self.dir.join(format!("{name}.log"))).expect("log file")
    }

    fn spawn(&mut self, name: &str, exe: &str, args: &[String], stdout: bool) -> usize {
        let child = Command::new(exe)
            .args(args)
            .env("SHMBUS_LOG", "warn")
            .env_remove("SHMBUS_SOCKET")
            .stdin(Stdio::null())
            .stdout(if stdout {
                Stdio::piped()
            } else {
                Stdio::from(self.log(&format!("{name}.out")))
            })
            .stderr(self.log(name))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        self.children.push((name.to_string(), child));
        self.children.len() - 1
    }

    fn role(&mut self, name: &str, args: &[&str]) -> usize {
        let me = std::env::current_exe().expect("this binary");
        let mut all = vec!["--role".to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        self.spawn(name, me.to_str().expect("UTF-8 path"), &all, true)
    }

    /// Start a daemon on `socket` and wait until it answers.
    fn daemon(&mut self, name: &str, socket: &Path) {
        self.role(name, &["daemon", socket.to_str().expect("UTF-8")]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while bus_client::Bus::connect_to(socket).is_err() {
            assert!(Instant::now() < deadline, "daemon {name} did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The JSON line child `i` prints, then its exit.
    fn result(&mut self, i: usize, timeout: Duration) -> Value {
        let (name, child) = &mut self.children[i];
        let mut out = String::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                use std::io::Read;
                if let Some(mut o) = child.stdout.take() {
                    let _ = o.read_to_string(&mut out);
                }
                assert!(
                    status.success(),
                    "{name} failed: {status}; log in {:?}",
                    self.dir
                );
                break;
            }
            assert!(Instant::now() < deadline, "{name} did not finish");
            std::thread::sleep(Duration::from_millis(20));
        }
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{name} printed {out:?}: {e}"))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Bridge,
    Zenoh,
    Unix,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Bridge => "bridge",
            Via::Zenoh => "zenoh",
            Via::Unix => "unix",
        }
    }
}

/// One measurement: `mode` is `pingpong` (A's JSON) or `throughput` (B's JSON).
fn measure(via: Via, mode: &str, size: usize, amount: u64) -> Value {
    let mut run = Run::new(via.name());
    let (size_s, amount_s) = (size.to_string(), amount.to_string());
    let (pa, pb) = (free_port(), free_port());
    let ends: [Vec<String>; 2] = match via {
        Via::Bridge => {
            let (sa, sb) = (run.dir.join("a.sock"), run.dir.join("b.sock"));
            run.daemon("daemon-a", &sa);
            run.daemon("daemon-b", &sb);
            let config = run.dir.join("bridge.toml");
            let mut text = format!("stats_interval_ms = 0\nwait = {}\n", wait_toml());
            if express() {
                text.push_str("[[qos]]\ntopics = \"**\"\nexpress = true\n");
            }
            std::fs::write(&config, text).expect("config");
            let config = config.to_str().expect("UTF-8").to_string();
            let bridge = |socket: &Path, port: u16, connect: Option<u16>, out: &str, inn: &str| {
                let mut v: Vec<String> = [
                    "--socket",
                    socket.to_str().expect("UTF-8"),
                    "--listen",
                    &format!("tcp/127.0.0.1:{port}"),
                    "--export",
                    out,
                    "--import",
                    inn,
                    "--config",
                    &config,
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                if let Some(p) = connect {
                    v.extend(["--connect".to_string(), format!("tcp/127.0.0.1:{p}")]);
                }
                v
            };
            let args_a = bridge(&sa, pa, None, "bench/ping", "bench/pong");
            let args_b = bridge(&sb, pb, Some(pa), "bench/pong", "bench/ping");
            run.spawn("bridge-a", BRIDGE, &args_a, false);
            run.spawn("bridge-b", BRIDGE, &args_b, false);
            let shm = |s: &Path| vec!["shm".to_string(), s.to_str().expect("UTF-8").to_string()];
            [shm(&sa), shm(&sb)]
        }
        Via::Zenoh => [
            vec!["zenoh".into(), pa.to_string()],
            vec!["zenoh".into(), pb.to_string(), pa.to_string()],
        ],
        Via::Unix => {
            let p = run
                .dir
                .join("unix.sock")
                .to_str()
                .expect("UTF-8")
                .to_string();
            [vec!["unix".into(), p.clone()], vec!["unix".into(), p]]
        }
    };
    let arg = |side: &str, end: &[String]| -> Vec<String> {
        let mut v = vec![
            side.to_string(),
            mode.to_string(),
            size_s.clone(),
            amount_s.clone(),
        ];
        v.extend(end.iter().cloned());
        v
    };
    let a = arg("a", &ends[0]);
    let b = arg("b", &ends[1]);
    let ib = run.role("b", &b.iter().map(String::as_str).collect::<Vec<_>>());
    let ia = run.role("a", &a.iter().map(String::as_str).collect::<Vec<_>>());
    let timeout = Duration::from_secs(300);
    if mode == "pingpong" {
        run.result(ia, timeout)
    } else {
        run.result(ib, timeout)
    }
}

/// `--role ...` in a child process.
fn role(args: &[String]) {
    let get = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    if get(0) == "daemon" {
        let _bus = bus_client::Bus::embedded_at(PathBuf::from(get(1))).expect("daemon");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let (side, mode) = (get(0), get(1));
    let size: usize = get(2).parse().expect("size");
    let amount: u64 = get(3).parse().expect("amount");
    let a = side == "a";
    let mut link: Box<dyn roles::Link> = match get(4) {
        "shm" => {
            let (out, inn) = if a {
                ("bench/ping", "bench/pong")
            } else {
                ("bench/pong", "bench/ping")
            };
            Box::new(roles::Shm::open(Path::new(get(5)), out, inn, size))
        }
        "zenoh" => {
            let listen: u16 = get(5).parse().expect("port");
            let connect = get(6).parse().ok();
            let (out, inn) = if a {
                ("raw/ping", "raw/pong")
            } else {
                ("raw/pong", "raw/ping")
            };
            Box::new(roles::Raw::open(zenoh_config(listen, connect), out, inn))
        }
        "unix" => Box::new(roles::Unix::open(Path::new(get(5)), !a, size)),
        other => panic!("unknown link {other}"),
    };
    match (a, mode) {
        (true, "pingpong") => roles::ping(link.as_mut(), size, amount as usize),
        (true, _) => roles::send_all(link.as_mut(), size, amount),
        (false, "pingpong") => roles::pong(link.as_mut(), size, None),
        (false, _) => roles::pong(link.as_mut(), size, Some(amount)),
    }
}

fn us(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN) / 1000.0
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpus} CPUs, {cpu}")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--role") {
        role(&args[1..]);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    // Children inherit the coordinator's environment.
    if let Some(w) = value("--wait") {
        std::env::set_var("BRIDGEBENCH_WAIT", w);
    }
    if args.iter().any(|a| a == "--express") {
        std::env::set_var("BRIDGEBENCH_EXPRESS", "1");
    }
    let only = value("--only");
    let (iters, count) = if quick {
        (300, 5_000)
    } else {
        (5_000, 100_000)
    };
    println!(
        "# shmbus-bridge benchmark ({}; wait {}{})",
        machine(),
        wait_name(),
        if express() { ", express" } else { "" }
    );
    println!("ping-pong: {iters} round trips after warm-up; throughput: {count} messages, lossless, every payload checked");
    println!();
    println!("| size | via | RTT p50 | one-way p50 | RTT p90 | RTT p99 | throughput |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for size in [64usize, 1024] {
        let mut rows = Vec::new();
        for via in [Via::Bridge, Via::Zenoh, Via::Unix] {
            if only.as_deref().is_some_and(|o| o != via.name()) {
                continue;
            }
            let lat = measure(via, "pingpong", size, iters);
            let thr = measure(via, "throughput", size, count);
            assert_eq!(thr["errors"], 0, "{} {size}: payload errors", via.name());
            let rate = thr["rate"].as_f64().unwrap_or(f64::NAN);
            println!(
                "| {size} B | {} | {:.1} us | {:.1} us | {:.1} us | {:.1} us | {:.0} k msgs/s |",
                via.name(),
                us(&lat["p50"]),
                us(&lat["p50"]) / 2.0,
                us(&lat["p90"]),
                us(&lat["p99"]),
                rate / 1000.0
            );
            rows.push((us(&lat["p50"]) / 2.0, rate));
        }
        if rows.len() < 2 {
            continue;
        }
        let (bridge, zenoh) = (rows[0], rows[1]);
        println!(
            "| {size} B | bridge vs zenoh | | {:+.1} us one-way | | | {:.2}x |",
            bridge.0 - zenoh.0,
            bridge.1 / zenoh.1
        );
    }
}
