//! 64-byte ping-pong through the Rust API (raw ports), busy-polling: the twin of
//! `pingpong.c`, step for step. Run with a path to the compiled C twin to compare both in one
//! run against one embedded daemon (see pingpong.c for the commands):
//!
//! ```text
//! cargo run --release -p bus-ffi --example pingpong -- target/release/pingpong-c [ROUNDS] [REPEATS]
//! ```
//!
//! With `ping ROUNDS` or `pong ROUNDS` it plays one side, like the C program; `calls ROUNDS`
//! times the calls alone in one process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use bus_client::{Bus, TopicOptions, TypeInfo, WaitStrategy};

const SIZE: usize = 64;
const WARMUP: u64 = 10_000;

/// The cost of the calls alone, as `pingpong-c calls`: one process publishes and receives.
fn calls(rounds: u64) -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::connect()?;
    let mut options = TopicOptions::default();
    options.slot_size = Some(SIZE as u32);
    options.capacity = Some(16);
    let spec = options.geometry_for(TypeInfo::bytes());
    let mut publisher = bus.raw_publisher("bench/ffi/calls").open_or_create(spec)?;
    let mut subscriber = bus.raw_subscriber("bench/ffi/calls").open()?;
    let (mut t0, mut sum) = (Instant::now(), 0u64);
    for i in 0..rounds + WARMUP {
        if i == WARMUP {
            t0 = Instant::now();
        }
        let mut loan = publisher.loan()?;
        loan[..8].copy_from_slice(&i.to_ne_bytes());
        loan.set_len(SIZE)?;
        loan.send();
        let sample = subscriber.try_recv()?;
        sum += u64::from(sample.bytes()[0]);
    }
    let ns = t0.elapsed().as_nanos() as f64 / rounds as f64;
    println!("ns_per_round={ns:.1} (sum {sum})");
    Ok(())
}

fn play(ping: bool, rounds: u64) -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::connect()?;
    let mut options = TopicOptions::default();
    options.slot_size = Some(SIZE as u32);
    options.capacity = Some(16);
    let spec = options.geometry_for(TypeInfo::bytes());
    let (out, inp) = if ping {
        ("bench/ffi/ping", "bench/ffi/pong")
    } else {
        ("bench/ffi/pong", "bench/ffi/ping")
    };
    let mut publisher = bus
        .raw_publisher(out)
        .wait(WaitStrategy::BusyPoll)
        .open_or_create(spec.clone())?;
    let mut subscriber = bus
        .raw_subscriber(inp)
        .wait(WaitStrategy::BusyPoll)
        .open_or_create(spec)?;
    if !ping {
        println!("ready");
    }
    let mut rtt = Vec::with_capacity(rounds as usize);
    for i in 0..rounds + WARMUP {
        if ping {
            let t0 = Instant::now();
            let mut loan = publisher.loan()?;
            loan.fill(0);
            loan[..8].copy_from_slice(&i.to_ne_bytes());
            loan.set_len(SIZE)?;
            loan.send();
            let sample = subscriber.recv()?;
            let echoed = u64::from_ne_bytes(sample.bytes()[..8].try_into()?);
            let len = sample.len();
            drop(sample);
            if echoed != i || len != SIZE {
                return Err(format!("echo {echoed} for {i}").into());
            }
            if i >= WARMUP {
                rtt.push(t0.elapsed().as_nanos() as u64);
            }
        } else {
            let sample = subscriber.recv()?;
            let mut loan = publisher.loan()?;
            loan[..sample.len()].copy_from_slice(sample.bytes());
            loan.set_len(sample.len())?;
            drop(sample);
            loan.send();
        }
    }
    if ping {
        rtt.sort_unstable();
        println!(
            "p50_ns={} p99_ns={}",
            rtt[rtt.len() / 2],
            rtt[rtt.len() * 99 / 100]
        );
    }
    Ok(())
}

/// One ping-pong of `program` (C) or of this example (Rust); the ping's output line.
fn pair(program: &[String], socket: &std::path::Path, rounds: u64) -> String {
    let spawn = |role: &str| {
        Command::new(&program[0])
            .args(&program[1..])
            .args([role, &rounds.to_string()])
            .env("SHMBUS_SOCKET", socket)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let mut pong = spawn("pong");
    let mut lines = BufReader::new(pong.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
    let ping = spawn("ping").wait_with_output().expect("ping");
    assert!(ping.status.success());
    assert!(pong.wait().expect("pong").success());
    String::from_utf8_lossy(&ping.stdout).trim().to_string()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("calls") => {
            let rounds = args
                .get(1)
                .and_then(|r| r.parse().ok())
                .unwrap_or(1_000_000);
            return calls(rounds);
        }
        Some(role @ ("ping" | "pong")) => {
            let rounds = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(100_000);
            return play(role == "ping", rounds);
        }
        Some(c_program) => {
            let rounds = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(200_000);
            let repeats = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(3);
            let bus = Bus::embedded()?;
            let this = std::env::current_exe()?.to_string_lossy().into_owned();
            println!("64 B ping-pong, busy-poll, {rounds} round trips, one daemon; RTT in ns");
            for repeat in 0..repeats {
                // Alternate which goes first, so neither always runs on a warmer machine.
                let rust = || pair(std::slice::from_ref(&this), bus.socket_path(), rounds);
                let c = || pair(&[c_program.to_string()], bus.socket_path(), rounds);
                let (rust, c) = if repeat % 2 == 0 {
                    let r = rust();
                    (r, c())
                } else {
                    let c = c();
                    (rust(), c)
                };
                println!("run {repeat}: Rust API {rust} | C API {c}");
            }
            let one = |program: &[String]| {
                let out = Command::new(&program[0])
                    .args(&program[1..])
                    .args(["calls", "2000000"])
                    .env("SHMBUS_SOCKET", bus.socket_path())
                    .output()
                    .expect("calls");
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            };
            println!("one process, loan + set_len + send + try_recv + release, 2M rounds:");
            for repeat in 0..repeats {
                let rust = one(std::slice::from_ref(&this));
                let c = one(&[c_program.to_string()]);
                println!("run {repeat}: Rust API {rust} | C API {c}");
            }
        }
        None => {
            eprintln!("usage: pingpong PATH-TO-pingpong-c [ROUNDS] [REPEATS] | ping|pong ROUNDS")
        }
    }
    Ok(())
}
