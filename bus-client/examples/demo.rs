//! The shmbus demo: an embedded daemon, a publisher process and subscriber processes, with
//! throughput and latency figures.
//!
//! ```text
//! cargo run --release -p bus-client --example demo [-- --messages N --subscribers K]
//! ```
//!
//! The parent starts a daemon inside itself (no daemon to start by hand), then runs the
//! publisher and the subscribers as separate processes (this same program, re-executed), each
//! pinned to a core where it can be. Phase 1 publishes as fast as the lossless ring allows and
//! reports messages per second; phase 2 paces messages and reports one-way latency
//! percentiles (publish to receive, measured with CLOCK_MONOTONIC, which all processes share).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bus_client::{Bus, WaitStrategy};
use hdrhistogram::Histogram;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

const TOPIC: &str = "demo/ticks";

/// One 64-byte message.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct Tick {
    seq: u64,
    sent_ns: u64,
    /// 1 = throughput phase, 2 = latency phase, 3 = end.
    phase: u64,
    payload: [u64; 5],
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn pin(core: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes within it; the call only
    // affects this process. Failure (fewer cores) just leaves the process unpinned.
    unsafe {
        let n = libc::sysconf(libc::_SC_NPROCESSORS_ONLN).max(1) as usize;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core % n, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

struct Args {
    role: String,
    messages: u64,
    latency_messages: u64,
    subscribers: usize,
    core: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        role: "main".into(),
        messages: 2_000_000,
        latency_messages: 20_000,
        subscribers: 1,
        core: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--role" => a.role = value()?,
            "--messages" => {
                a.messages = value()?.parse().map_err(|e| format!("--messages: {e}"))?
            }
            "--latency-messages" => {
                a.latency_messages = value()?
                    .parse()
                    .map_err(|e| format!("--latency-messages: {e}"))?
            }
            "--subscribers" => {
                a.subscribers = value()?
                    .parse()
                    .map_err(|e| format!("--subscribers: {e}"))?
            }
            "--core" => a.core = value()?.parse().map_err(|e| format!("--core: {e}"))?,
            "-h" | "--help" => {
                println!("usage: demo [--messages N] [--latency-messages N] [--subscribers K]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}; see --help")),
        }
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("demo: {e}");
            std::process::exit(2);
        }
    };
    let result = match args.role.as_str() {
        "main" => run_main(&args),
        "pub" => run_publisher(&args),
        "sub" => run_subscriber(&args),
        other => Err(format!("unknown role {other}").into()),
    };
    if let Err(e) = result {
        eprintln!("demo ({}): {e}", args.role);
        std::process::exit(1);
    }
}

struct Kids(Vec<Child>);
impl Drop for Kids {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run_main(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::embedded()?;
    let socket = bus.socket_path().to_path_buf();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("shmbus demo: embedded daemon on {}", socket.display());
    println!(
        "machine: {} cores, {}; {} subscriber process(es), 64-byte messages, lossless, busy-poll",
        cores,
        cpu_model(),
        args.subscribers
    );
    let exe = std::env::current_exe()?;
    let spawn = |role: &str, core: usize| {
        Command::new(&exe)
            .args(["--role", role, "--core", &core.to_string()])
            .args(["--messages", &args.messages.to_string()])
            .args(["--latency-messages", &args.latency_messages.to_string()])
            .env("SHMBUS_SOCKET", &socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
    };
    let mut kids = Kids(Vec::new());
    let mut readers = Vec::new();
    for i in 0..args.subscribers {
        let mut child = spawn("sub", 1 + i)?;
        let out = child.stdout.take().ok_or("no stdout")?;
        kids.0.push(child);
        let mut lines = BufReader::new(out).lines();
        match lines.next() {
            Some(Ok(l)) if l == "ready" => {}
            other => return Err(format!("subscriber did not start: {other:?}").into()),
        }
        readers.push(lines);
    }
    let mut publisher = spawn("pub", 0)?;
    let pub_out = publisher.stdout.take().ok_or("no stdout")?;
    kids.0.push(publisher);
    let mut pub_lines = BufReader::new(pub_out).lines();
    let pub_line = pub_lines
        .next()
        .ok_or("publisher ended without a report")??;
    let mut rows = Vec::new();
    for (i, lines) in readers.iter_mut().enumerate() {
        let line = lines
            .next()
            .ok_or_else(|| format!("subscriber {i} ended without a report"))??;
        rows.push(line);
    }
    println!("\npublisher: {pub_line}");
    println!(
        "\n| subscriber | received | msgs/s (phase 1) | one-way p50 | p90 | p99 | p99.9 | max |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (i, r) in rows.iter().enumerate() {
        println!("| {i} | {r} |");
    }
    for c in &mut kids.0 {
        let status = c.wait()?;
        if !status.success() {
            return Err(format!("a demo process failed: {status}").into());
        }
    }
    kids.0.clear();
    let stats = bus.stats(Some(TOPIC))?;
    if let Some(s) = stats.first() {
        println!(
            "\ndaemon stats: {} published, {} stalls (publisher waited for a subscriber)",
            s.published, s.stalls
        );
    }
    std::io::stdout().flush()?;
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn run_publisher(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    pin(args.core);
    let bus = Bus::connect()?;
    let mut publisher = bus.publisher::<Tick>(TOPIC).busy_poll().create()?;
    let start = Instant::now();
    for seq in 0..args.messages {
        let mut t = publisher.loan()?;
        t.seq = seq;
        t.sent_ns = now_ns();
        t.phase = 1;
        t.payload = [seq; 5];
        t.send();
    }
    let elapsed = start.elapsed();
    for seq in 0..args.latency_messages {
        let spin_until = Instant::now() + Duration::from_micros(20);
        while Instant::now() < spin_until {
            std::hint::spin_loop();
        }
        let mut t = publisher.loan()?;
        t.seq = seq;
        t.phase = 2;
        t.payload = [seq; 5];
        t.sent_ns = now_ns();
        t.send();
    }
    let mut t = publisher.loan()?;
    t.phase = 3;
    t.send();
    println!(
        "{} messages in {:.3} s = {:.2} M msgs/s ({:.0} MB/s of payload)",
        args.messages,
        elapsed.as_secs_f64(),
        args.messages as f64 / elapsed.as_secs_f64() / 1e6,
        args.messages as f64 * 64.0 / elapsed.as_secs_f64() / 1e6
    );
    Ok(())
}

fn run_subscriber(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    pin(args.core);
    let bus = Bus::connect()?;
    let mut sub = bus
        .subscriber::<Tick>(TOPIC)
        .wait(WaitStrategy::BusyPoll)
        .open_or_create()?;
    println!("ready");
    std::io::stdout().flush()?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let (mut received, mut first, mut last, mut expected) = (0u64, None, Instant::now(), 0u64);
    loop {
        let t = sub.recv()?;
        match t.phase {
            1 => {
                if t.seq != expected || t.payload != [t.seq; 5] {
                    return Err(format!(
                        "message {} out of order or corrupt (expected {expected})",
                        t.seq
                    )
                    .into());
                }
                expected += 1;
                received += 1;
                first.get_or_insert_with(Instant::now);
                last = Instant::now();
            }
            2 => {
                let now = now_ns();
                hist.record(now.saturating_sub(t.sent_ns).max(1))?;
                received += 1;
            }
            _ => break,
        }
    }
    let rate = match first {
        Some(f) if expected > 1 => (expected - 1) as f64 / last.duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    let q = |p: f64| hist.value_at_quantile(p);
    println!(
        "{received} | {:.2} M | {} ns | {} ns | {} ns | {} ns | {} ns",
        rate / 1e6,
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        hist.max()
    );
    Ok(())
}
