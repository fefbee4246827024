//! `shmbus-peer`: the processes the integration tests run against each other.
//!
//! * `daemon`: the real daemon (the very code of `shmbusd`).
//! * `pub`: publishes `TestMsg`s and prints `{"sent": N}` (or, with `--try-send`,
//!   `{"accepted": N, "full": bool}`).
//! * `sub`: prints `ready`, receives and validates, prints one JSON summary line.
//! * `hold`: prints `ready`, receives one message and keeps it, prints `holding`, sleeps until
//!   killed (or until its parent goes away).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bus_client::{Bus, RecvError, SendError};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use shmbus_tests::{Checker, TestMsg};

#[derive(Parser)]
#[command(name = "shmbus-peer", about = "shmbus integration test peer")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct TopicArgs {
    /// The daemon's socket.
    #[arg(long)]
    socket: PathBuf,
    /// The topic.
    #[arg(long)]
    topic: String,
    /// Lossy delivery (sets the topic options explicitly).
    #[arg(long)]
    lossy: bool,
    /// Ring capacity (sets the topic options explicitly).
    #[arg(long)]
    capacity: Option<u32>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Daemon {
        #[arg(long)]
        socket: PathBuf,
        /// Passed on to the daemon (its own default when not given).
        #[arg(long)]
        stuck_timeout_ms: Option<u64>,
        /// Further `shmbusd` options, after `--`.
        #[arg(last = true)]
        extra: Vec<String>,
    },
    /// Publish messages.
    Pub {
        #[command(flatten)]
        topic: TopicArgs,
        /// How many messages.
        #[arg(long)]
        count: u64,
        /// The publisher id written into each message.
        #[arg(long, default_value_t = 1)]
        id: u64,
        /// The first sequence number written.
        #[arg(long, default_value_t = 0)]
        first_seq: u64,
        /// Use try_send and stop at the first Full.
        #[arg(long)]
        try_send: bool,
        /// Pause between messages.
        #[arg(long)]
        interval_us: Option<u64>,
    },
    /// Receive and validate messages.
    Sub {
        #[command(flatten)]
        topic: TopicArgs,
        /// Stop after this many messages.
        #[arg(long)]
        count: u64,
        /// Give up after this long.
        #[arg(long, default_value_t = 20_000)]
        timeout_ms: u64,
        /// Block on the futex at once while waiting.
        #[arg(long)]
        blocking: bool,
        /// Start with what the ring still holds.
        #[arg(long)]
        replay: bool,
    },
    /// Receive one message and hold it until killed.
    Hold {
        #[command(flatten)]
        topic: TopicArgs,
    },
}

fn fail(what: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("shmbus-peer: {what}: {e}");
    ExitCode::from(1)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Whether the process that started us is gone (we were re-parented).
fn orphaned(parent: u32) -> bool {
    std::os::unix::process::parent_id() != parent
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Daemon {
            socket,
            stuck_timeout_ms,
            extra,
        } => {
            // A safety net: if the test process dies without stopping us, stop gracefully.
            let parent = std::os::unix::process::parent_id();
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_millis(200));
                if orphaned(parent) {
                    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM);
                    return;
                }
            });
            // `DaemonArgs` comes from shmbusd's own parser, so that every option we do not set
            // keeps shmbusd's default: this is exactly what `shmbusd --socket PATH ...` runs.
            let mut argv: Vec<std::ffi::OsString> = vec!["shmbusd".into(), "--socket".into()];
            argv.push(socket.into_os_string());
            if let Some(ms) = stuck_timeout_ms {
                argv.push("--stuck-timeout-ms".into());
                argv.push(ms.to_string().into());
            }
            argv.extend(extra.into_iter().map(Into::into));
            match bus_daemon::cli::DaemonArgs::try_parse_from(argv) {
                Ok(args) => bus_daemon::cli::main_with(args),
                Err(e) => {
                    let _ = e.print();
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Pub {
            topic,
            count,
            id,
            first_seq,
            try_send,
            interval_us,
        } => publish(&topic, count, id, first_seq, try_send, interval_us),
        Cmd::Sub {
            topic,
            count,
            timeout_ms,
            blocking,
            replay,
        } => subscribe(&topic, count, timeout_ms, blocking, replay),
        Cmd::Hold { topic } => hold(&topic),
    }
}

fn publish(
    t: &TopicArgs,
    count: u64,
    id: u64,
    first_seq: u64,
    try_send: bool,
    interval_us: Option<u64>,
) -> ExitCode {
    let bus = match Bus::connect_to(&t.socket) {
        Ok(b) => b,
        Err(e) => return fail("connect", e),
    };
    let mut b = bus.publisher::<TestMsg>(&t.topic);
    if t.lossy {
        b = b.lossy();
    }
    if let Some(c) = t.capacity {
        b = b.capacity(c);
    }
    let mut publisher = match b.open() {
        Ok(p) => p,
        Err(e) => return fail("open publisher", e),
    };
    if try_send {
        let mut accepted = 0;
        let mut full = false;
        for seq in first_seq..first_seq + count {
            match publisher.try_send(&TestMsg::new(id, seq)) {
                Ok(()) => accepted += 1,
                Err(SendError::Full) => {
                    full = true;
                    break;
                }
                Err(e) => return fail("try_send", e),
            }
        }
        say(&json!({ "accepted": accepted, "full": full }).to_string());
        return ExitCode::SUCCESS;
    }
    let mut sent = 0u64;
    for seq in first_seq..first_seq + count {
        let mut sample = match publisher.loan() {
            Ok(s) => s,
            Err(e) => return fail("loan", e),
        };
        sample.publisher = id;
        sample.seq = seq;
        sample.stamp_ns = shmbus_tests::now_ns();
        sample.check = shmbus_tests::check_of(id, seq);
        sample.send();
        sent += 1;
        if let Some(us) = interval_us {
            std::thread::sleep(Duration::from_micros(us));
        }
    }
    drop(publisher);
    say(&json!({ "sent": sent }).to_string());
    ExitCode::SUCCESS
}

fn subscribe(t: &TopicArgs, count: u64, timeout_ms: u64, blocking: bool, replay: bool) -> ExitCode {
    let bus = match Bus::connect_to(&t.socket) {
        Ok(b) => b,
        Err(e) => return fail("connect", e),
    };
    let mut b = bus.subscriber::<TestMsg>(&t.topic);
    if t.lossy {
        b = b.lossy();
    }
    if let Some(c) = t.capacity {
        b = b.capacity(c);
    }
    if blocking {
        b = b.blocking();
    }
    if replay {
        b = b.replay();
    }
    let mut sub = match b.open() {
        Ok(s) => s,
        Err(e) => return fail("open subscriber", e),
    };
    say("ready");
    let mut checker = Checker::new(!t.lossy);
    let mut lagged = 0u64;
    let mut lagged_events = 0u64;
    let mut outcome = "count";
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    while checker.received < count {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            outcome = "timeout";
            break;
        }
        match sub.recv_timeout(left) {
            Ok(sample) => {
                let seq = sample.sequence();
                checker.check(&sample, seq);
            }
            Err(RecvError::Lagged(n)) => {
                lagged += n;
                lagged_events += 1;
            }
            Err(RecvError::Timeout) => {
                outcome = "timeout";
                break;
            }
            Err(RecvError::Closed) => {
                outcome = "closed";
                break;
            }
            Err(e) => {
                checker.errors.push(format!("recv: {e}"));
                checker.error_count += 1;
                outcome = "error";
                break;
            }
        }
    }
    let per_publisher: serde_json::Map<String, serde_json::Value> = checker
        .last
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let first_per_publisher: serde_json::Map<String, serde_json::Value> = checker
        .first
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let count_per_publisher: serde_json::Map<String, serde_json::Value> = checker
        .count
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let summary = json!({
        "received": checker.received,
        "per_publisher": per_publisher,
        "first_per_publisher": first_per_publisher,
        "count_per_publisher": count_per_publisher,
        "first_topic_seq": checker.topic_seqs.map(|s| s.0),
        "last_topic_seq": checker.topic_seqs.map(|s| s.1),
        "lagged": lagged,
        "lagged_events": lagged_events,
        "outcome": outcome,
        "error_count": checker.error_count,
        "errors": checker.errors,
    });
    drop(sub);
    say(&summary.to_string());
    if checker.error_count == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn hold(t: &TopicArgs) -> ExitCode {
    let parent = std::os::unix::process::parent_id();
    let bus = match Bus::connect_to(&t.socket) {
        Ok(b) => b,
        Err(e) => return fail("connect", e),
    };
    let mut b = bus.subscriber::<TestMsg>(&t.topic);
    if t.lossy {
        b = b.lossy();
    }
    if let Some(c) = t.capacity {
        b = b.capacity(c);
    }
    let mut sub = match b.open() {
        Ok(s) => s,
        Err(e) => return fail("open subscriber", e),
    };
    say("ready");
    let sample = match sub.recv_timeout(Duration::from_secs(30)) {
        Ok(s) => s,
        Err(e) => return fail("recv", e),
    };
    if !sample.is_intact() {
        return fail("recv", format!("a corrupted message: {:?}", *sample));
    }
    say("holding");
    // Keep the sample (and so its slot) until killed; give up only if the test process is gone.
    while !orphaned(parent) {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(sample);
    ExitCode::from(1)
}
