//! `busbench`: cross-process IPC benchmark harness. See `busbench --help`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use bus_benches::child::child_main;
use bus_benches::contenders::registry;
use bus_benches::coordinator::{self, Config, Coordinator};
use bus_benches::protocol::Timing;
use bus_benches::report::{self, Status};
use bus_benches::suite;
use bus_benches::svg::latency_svg;
use bus_benches::sysinfo::machine_line;
use bus_benches::transport::Scenario;

const LONG_ABOUT: &str = "\
Measures IPC transports between real, separate processes.

Every run starts one fresh process per participant (an exec of this binary
with a hidden `--role child` argument), pinned to its own CPU when there are
at least two (the hub on the first CPU, the peers on the others). Each run
warms up before measuring. For every scenario point the contenders run in
interleaved rounds (A B C, B C A, ...) and each contender's rounds are merged
into one HDR histogram (ns, 3 significant digits), so drift of the machine
hits all contenders alike.

Scenarios:
  pingpong    one-way latency = RTT/2 for 8 B, 64 B, 1 KiB, 64 KiB, 1 MiB and
              4 MiB. Every send writes the payload (a header word in every
              64-byte line), every receive checks the first and last word.
  throughput  one sender, one receiver, back to back; msgs/s and MB/s at the
              receiver, for 64 B and 1 KiB.
  fanout      one sender, 1/2/4/8 receivers, 64 B; percentiles are the
              sender's wall time per published message (fill + delivery to all
              N, i.e. N writes for the kernel baselines), msgs/s = publishes/s;
              the note gives the sender's CPU time per message.
  fanin       3 senders, one receiver, 64 B; aggregate rate at the receiver.
  wakeup      the sender sleeps 1 ms (--wake-interval-us) before each send, so the receiver is
              blocked in the kernel; send-to-wake latency from a
              CLOCK_MONOTONIC stamp in the message.

Issue 12 scenarios (waiting on many topics and async; only the contenders
that opt in run them, 64 B, same pacing as wakeup):
  asyncwake   the receiver awaits recv_async in a tokio current-thread
              runtime (shmbus_async_ct) or in a task of a multi-thread one
              (shmbus_async_mt), against tokio's UnixStream read the same two
              ways (tokio_unix_ct, tokio_unix_mt), unix_stream and the futex
              recv of shmbus_block; send-to-wake latency.
  waitset8    the sender rotates over 8 topics, the receiver waits on a
              WaitSet of all 8 (shmbus_waitset8; shmbus_waitset1: one topic in
              a WaitSet), against shmbus_block's recv; send-to-wake latency.
  waiters     back-to-back publishes on a lossy topic with 8 idle subscribers
              of which 0, 1 or 8 hold a registered wake slot that is never
              armed (shmbus_waiters0/1/8, interleaved); ns per publish timed
              in batches of 100, the median per round and over rounds.
  The report then adds a section with the ratios and a verdict per goal.

Output: a markdown table on stdout (with a machine header line), progress on
stderr, the plot of ping-pong p50 latency against payload size as SVG, and
optionally JSON Lines (--json FILE). Combinations a transport cannot do
(e.g. mqueue above msgsize_max, seqpacket above its message limit) are listed
as skipped. Exit status: 0 all ran, 1 setup error, 2 some run failed,
130 interrupted (everything started is still cleaned up).";

#[derive(Parser, Debug)]
#[command(name = "busbench", version, about = "Cross-process IPC benchmark harness for shmbus", long_about = LONG_ABOUT)]
struct Cli {
    /// Short run (< 60 s on 2 cores for all contenders and scenarios): 3
    /// rounds of 100 ms per contender and scenario point, 15 ms warm-up.
    /// Without it (full run, under 15 min on 2 cores): 3 rounds of 400 ms, 100 ms warm-up.
    #[arg(long)]
    quick: bool,

    /// Only run contenders whose name contains SUBSTRING (see --list).
    #[arg(long, value_name = "SUBSTRING")]
    filter: Option<String>,

    /// Only run this scenario; repeat the flag for several. Default: all.
    #[arg(long, value_name = "NAME", value_enum)]
    scenario: Vec<Scenario>,

    /// Also write the results to FILE as JSON Lines: one object per
    /// contender and scenario point with transport, scenario, payload_bytes,
    /// senders, receivers, status (ok/skipped/failed), metric, p50_ns,
    /// p90_ns, p99_ns, p999_ns, max_ns, msgs_per_s, bytes_per_s, samples,
    /// rounds, sender_cpu_ns_per_msg and note (null where not applicable).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Where to write the latency plot. Default:
    /// `<workspace>/target/bench-report/latency.svg` (the workspace this
    /// binary was built from, else ./target/bench-report/latency.svg).
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,

    /// Interleaved rounds per contender and scenario point (overrides the
    /// mode's default: 3 with --quick, 5 otherwise).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    rounds: Option<u32>,

    /// Measured time per run in milliseconds (overrides the mode's default).
    #[arg(long, value_name = "MS")]
    measure_ms: Option<u64>,

    /// Warm-up time per run in milliseconds (overrides the mode's default).
    #[arg(long, value_name = "MS")]
    warmup_ms: Option<u64>,

    /// Pause before each send of the paced scenarios (wakeup, asyncwake,
    /// waitset8) in microseconds (default 1000). Short pauses let a VM's idle
    /// vCPU poll instead of halting, which shows the software path alone.
    #[arg(long, value_name = "US", value_parser = clap::value_parser!(u64).range(1..))]
    wake_interval_us: Option<u64>,

    /// Do not pin participant processes to CPUs.
    #[arg(long)]
    no_pin: bool,

    /// Abort (kill and clean up) a single run after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    timeout_s: u64,

    /// List the contenders and scenarios, then exit.
    #[arg(long)]
    list: bool,

    /// No per-run progress lines on stderr.
    #[arg(short, long)]
    quiet: bool,

    /// Internal: run as a participant process (used by the harness itself).
    #[arg(long, hide = true, value_name = "ROLE")]
    role: Option<String>,

    /// Internal: the participant's run description (JSON).
    #[arg(long, hide = true, value_name = "JSON", requires = "role")]
    child_spec: Option<String>,
}

fn default_svg_path() -> PathBuf {
    // This crate lives in <workspace>/benches.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .filter(|ws| ws.join("Cargo.toml").is_file())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    root.join("target").join("bench-report").join("latency.svg")
}

fn write_file(path: &Path, contents: &str) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())))?;
    }
    std::fs::write(path, contents)
        .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(role) = cli.role.as_deref() {
        if role != "child" {
            eprintln!("busbench: unknown --role {role:?}");
            return ExitCode::from(1);
        }
        let Some(spec) = cli.child_spec.as_deref() else {
            eprintln!("busbench: --role child needs --child-spec");
            return ExitCode::from(1);
        };
        return child_main(spec);
    }
    match coordinate(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("busbench: {e}");
            ExitCode::from(1)
        }
    }
}

fn coordinate(cli: &Cli) -> io::Result<ExitCode> {
    let contenders: Vec<_> = registry()
        .into_iter()
        .filter(|c| match cli.filter.as_deref() {
            Some(f) => c.name().contains(f),
            None => true,
        })
        .collect();
    if cli.list {
        println!("contenders:");
        for c in registry() {
            println!("  {:<16} {}", c.name(), c.description());
        }
        println!(
            "scenarios: {}",
            Scenario::ALL.map(Scenario::name).join(", ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    if contenders.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "no contender matches --filter {:?} (see --list)",
                cli.filter.as_deref().unwrap_or("")
            ),
        ));
    }
    let scenarios: Vec<Scenario> = if cli.scenario.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        cli.scenario.clone()
    };

    let mut timing = if cli.quick {
        Timing::QUICK
    } else {
        Timing::FULL
    };
    if let Some(ms) = cli.measure_ms {
        timing.measure_ms = ms;
    }
    if let Some(ms) = cli.warmup_ms {
        timing.warmup_ms = ms;
    }
    if let Some(us) = cli.wake_interval_us {
        timing.wake_interval_us = us;
    }
    let rounds = cli.rounds.unwrap_or(3);

    coordinator::install_interrupt_handler()?;
    let stale = coordinator::cleanup_stale();
    if stale > 0 {
        eprintln!("busbench: removed {stale} leftovers of earlier, killed busbench runs");
    }
    let exe = std::env::current_exe()
        .map_err(|e| io::Error::new(e.kind(), format!("locating the busbench executable: {e}")))?;
    let coord = Coordinator::new(Config {
        exe,
        timing,
        pin: !cli.no_pin,
        timeout: Duration::from_secs(cli.timeout_s.max(1)),
    })?;

    let pinning = match coord.pinned_cpus() {
        [] => "no pinning".to_string(),
        cpus => format!("pinned to CPUs {cpus:?}"),
    };
    let header = format!(
        "# busbench — {} — {} mode: {} rounds × {} ms, warm-up {} ms, paced sends every {} us, {}",
        machine_line(),
        if cli.quick { "quick" } else { "full" },
        rounds,
        timing.measure_ms,
        timing.warmup_ms,
        timing.wake_interval_us,
        pinning
    );

    let cells = suite::plan(&scenarios);
    let started = Instant::now();
    let quiet = cli.quiet;
    let mut progress = |done: usize, total: usize, line: &str| {
        if !quiet {
            eprintln!("[{done:>4}/{total}] {line}");
        }
    };
    let rows = suite::run(&coord, &contenders, &cells, rounds, &mut progress);

    let mut out = io::stdout().lock();
    writeln!(out, "{}", report::markdown(&header, &rows))?;
    writeln!(
        out,
        "Total wall time: {:.1} s",
        started.elapsed().as_secs_f64()
    )?;
    out.flush()?;

    if let Some(path) = &cli.json {
        write_file(path, &report::json_lines(&rows))?;
        eprintln!("busbench: wrote {}", path.display());
    }
    let svg_path = cli.svg.clone().unwrap_or_else(default_svg_path);
    if let Some(svg) = latency_svg(&rows, &machine_line()) {
        write_file(&svg_path, &svg)?;
        eprintln!("busbench: wrote {}", svg_path.display());
    }

    if coordinator::interrupted() {
        eprintln!("busbench: interrupted; results above are partial");
        return Ok(ExitCode::from(130));
    }
    if rows.iter().any(|r| r.status == Status::Failed) {
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
