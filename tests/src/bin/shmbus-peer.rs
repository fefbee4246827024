//! `shmbus-peer`: the processes the integration tests run against each other.
//!
//! * `daemon`: the real daemon (the very code of `shmbusd`).
//! * `bridge`: the real bridge (the very code of `shmbus-bridge`).
//! * `pub`: publishes `TestMsg`s and prints `{"sent": N}` (or, with `--try-send`,
//!   `{"accepted": N, "full": bool}`).
//! * `sub`: prints `ready`, receives and validates, prints one JSON summary line.
//! * `hold`: prints `ready`, receives one message and keeps it, prints `holding`, sleeps until
//!   killed (or until its parent goes away).
//! * `watch`: prints `ready`, then receives and validates until SIGTERM or its deadline. It
//!   reports as it goes, one JSON object per line, so that what it checked is known even when it
//!   is SIGKILLed: `{"violation": ...}` at once for every message that is torn, duplicated,
//!   reordered, missing on a lossless topic, or any unexpected receive error; `{"progress": ...}`
//!   every `--progress-ms`; `{"summary": ...}` when it stops. It also measures stalls: the
//!   longest time between two consecutive messages.
//!
//! * `member`: one of a ring of N processes (the scale tests): publishes on `<prefix>/<i>`,
//!   subscribes to `<prefix>/<i+1 mod N>`, prints `ready`, waits for a go file, sends and
//!   receives `--count` messages, prints one JSON summary line, then exits (or, with
//!   `--linger`, waits to be killed).
//!
//! `pub --die-mid-send K` publishes K messages and then dies between claim and commit;
//! `pub --die-on-usr1` does so when sent SIGUSR1. `pub` and `watch` stop cleanly on SIGTERM
//! (`pub` then prints its `{"sent": N}`). Every client peer exits by itself when the test
//! process that started it is gone (`hold`, `pub`, `watch`), and logs the bus client's
//! warnings to stderr (`SHMBUS_LOG` sets the filter, default `warn`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bus_client::{Bus, OpenError, RecvTimeoutError, RequestError, TrySendError};
use bus_tests::{now_ns, Checker, TestMsg};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

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
    /// Security test: subscribe (lossless), receive one message, print `received`, then write
    /// through the sample into the read-only slot mapping. The process must die by SIGSEGV;
    /// printing `wrote` means the mapping was writable.
    WriteThroughSample {
        #[command(flatten)]
        topic: TopicArgs,
    },
    /// Security test: drop to `--uid`/`--gid` (setgroups, setgid, setuid; needs root), connect,
    /// try to subscribe to each `--try-topic` and print one JSON line: `{"connect": "ok"}` or
    /// `{"connect_errno": N, ...}`, and `"topics": {name: "ok" | "<error code>: <message>"}`.
    /// With `--recv`, then wait (10 s) for one message on the first topic that opened and
    /// print `{"received_seq": N}` or `{"recv_error": "..."}`.
    ProbeAs {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        uid: u32,
        #[arg(long)]
        gid: u32,
        #[arg(long = "try-topic")]
        topics: Vec<String>,
        #[arg(long)]
        recv: bool,
        /// Also ask for each topic's stats and try to delete it; adds `"stats"` and `"delete"`
        /// maps (`"ok..."`, or the error code).
        #[arg(long)]
        stats_delete: bool,
        /// Supplementary groups to keep (default: none).
        #[arg(long = "extra-gid")]
        extra_gids: Vec<u32>,
    },
    /// Security test: as `--uid`, subscribe, forge a publisher entry in the control file, and
    /// after a daemon restart ask to re-attach as that publisher; see `peer_attack`.
    ForgePublisher {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        uid: u32,
        #[arg(long)]
        gid: u32,
    },
    /// Security test: as `--uid`, subscribe and fill the subscriber table with forged entries
    /// (pid 1, cursors at the oldest message), then exit; see `peer_attack`.
    ForgeSubscribers {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        uid: u32,
        #[arg(long)]
        gid: u32,
    },
    /// Security test: as `--uid`, subscribe and keep setting every armed bit of the topic's
    /// bells for `--seconds`; see `peer_attack`.
    StormWakeBits {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        uid: u32,
        #[arg(long)]
        gid: u32,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Security test: as `--uid`, watch `--pattern` and print every event until `--seconds`
    /// pass with none; see `peer_attack`.
    WatchAs {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        pattern: String,
        #[arg(long)]
        uid: u32,
        #[arg(long)]
        gid: u32,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Run the bridge: exactly what `shmbus-bridge ARGS...` runs (its own parser and entry
    /// point). Stops by itself (as on SIGTERM) when the test process is gone.
    Bridge {
        /// `shmbus-bridge` arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
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
        /// Print `ready` once the publisher is attached.
        #[arg(long)]
        ready: bool,
        /// Publish K good messages, then loan a slot, write garbage into half of it, print
        /// `{"sent": K, "dying_ns": <CLOCK_REALTIME>}` and SIGKILL itself without sending:
        /// a publisher that dies between claim and commit. Overrides `--count`.
        #[arg(long, value_name = "K")]
        die_mid_send: Option<u64>,
        /// On SIGUSR1, die like `--die-mid-send` at the next message.
        #[arg(long)]
        die_on_usr1: bool,
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
    /// One of a ring of processes: publish on `<prefix>/<index>`, receive from the next one's
    /// topic (see the module docs).
    Member {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        index: u64,
        #[arg(long)]
        size: u64,
        /// Messages to send and to receive.
        #[arg(long)]
        count: u64,
        /// Start sending once this file exists.
        #[arg(long)]
        go_file: PathBuf,
        /// After the summary, keep the ports until killed (or the parent goes away).
        #[arg(long)]
        linger: bool,
    },
    /// Wait for peers, then report every change of their count; see
    /// `peer_presence::presence`.
    Presence {
        #[command(flatten)]
        topic: TopicArgs,
        /// Be a subscriber (waiting for publishers) instead of a publisher.
        #[arg(long)]
        subscriber: bool,
        /// How many peers to wait for.
        #[arg(long)]
        wait: usize,
    },
    /// Wait on several topics with one `WaitSet` in one thread; see `peer_wait::waitset`.
    Waitset {
        /// The daemon's socket.
        #[arg(long)]
        socket: PathBuf,
        /// A topic (repeat for several).
        #[arg(long = "topic", required = true)]
        topics: Vec<String>,
        /// Stop when every topic delivered this many messages.
        #[arg(long)]
        count: u64,
        /// Give up after this long.
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
    },
    /// `select!` over `recv_async` on three topics in tokio; see `peer_wait::tokio_select`.
    TokioSelect {
        /// The daemon's socket.
        #[arg(long)]
        socket: PathBuf,
        /// Exactly three topics.
        #[arg(long = "topic", required = true)]
        topics: Vec<String>,
        /// Stop when every topic delivered this many messages.
        #[arg(long)]
        count: u64,
        /// Give up after this long.
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
        /// Also cancel all three receives this often.
        #[arg(long)]
        cancel_ms: Option<u64>,
    },
    /// Wait on a topic's wake slot without reading; see `peer_wait::arm`.
    Arm {
        /// The daemon's socket.
        #[arg(long)]
        socket: PathBuf,
        /// The topic.
        #[arg(long)]
        topic: String,
        /// Arm once and never again.
        #[arg(long)]
        once: bool,
        /// Register the wake slot, never arm it.
        #[arg(long)]
        register_only: bool,
    },
    /// Make wait sets under a low open-file limit until one fails; see `peer_wait::fd_limit`.
    FdLimit {
        /// The daemon's socket.
        #[arg(long)]
        socket: PathBuf,
        /// The topic.
        #[arg(long)]
        topic: String,
        /// Descriptors to allow beyond those open at the start.
        #[arg(long, default_value_t = 16)]
        spare: u64,
    },
    /// Start an embedded daemon (in the directory of `$SHMBUS_SOCKET`), give a publisher of
    /// topic `embedded/t` to a thread that never ends, print the socket's path and the files
    /// in its directory, then return from `main` (or, with `--wait`, sleep until killed).
    EmbeddedExit {
        /// Sleep until killed instead of returning.
        #[arg(long)]
        wait: bool,
    },
    /// Receive one message and hold it until killed.
    Hold {
        #[command(flatten)]
        topic: TopicArgs,
    },
    /// Receive and validate until SIGTERM or the deadline, reporting as it goes.
    Watch {
        #[command(flatten)]
        topic: TopicArgs,
        /// Stop by itself after this long.
        #[arg(long, default_value_t = 120_000)]
        deadline_ms: u64,
        /// Print a progress line this often.
        #[arg(long, default_value_t = 250)]
        progress_ms: u64,
        /// Stalls at least this long are listed in the summary.
        #[arg(long, default_value_t = 100)]
        report_stall_ms: u64,
        /// Block on the futex at once while waiting.
        #[arg(long)]
        blocking: bool,
    },
}

/// The name of the `daemon` peer's own thread that watches for its parent's death (not the
/// daemon's: the idle test leaves it out).
const PARENT_WATCH: &str = "peer-watch";

/// Set by SIGTERM (in `pub` and `watch`): stop cleanly.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Set by SIGUSR1 (in `pub --die-on-usr1`): die between claim and commit.
static DIE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigusr1(_: libc::c_int) {
    DIE.store(true, Ordering::SeqCst);
}

/// SIGUSR1 sets [`DIE`].
fn die_on_sigusr1() {
    let handler = on_sigusr1 as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to a static atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGUSR1, handler);
    }
}

/// SIGTERM sets [`STOP`] instead of killing the process.
fn stop_on_sigterm() {
    let handler = on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to a static atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, handler);
    }
}

fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// A safety net: when the test process that started us is gone, stop (SIGTERM ourselves;
/// where SIGTERM is handled, the main loop then stops cleanly, and after 2 s we make sure).
fn exit_with_parent() {
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(200));
        if orphaned(parent) {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM);
            std::thread::sleep(Duration::from_secs(2));
            std::process::exit(1);
        }
    });
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

/// Client-side warnings (e.g. "could not re-attach to the restarted daemon") go to stderr,
/// which the tests collect. `SHMBUS_LOG` sets the filter (default `warn`).
fn client_log() {
    let filter = std::env::var("SHMBUS_LOG").unwrap_or_else(|_| "warn".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

#[path = "peer/wait.rs"]
mod peer_wait;

#[path = "peer/attack.rs"]
mod peer_attack;

#[path = "peer/presence.rs"]
mod peer_presence;

fn embedded_exit(wait: bool) -> ExitCode {
    let bus = match Bus::embedded() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("embedded: {e}");
            return ExitCode::FAILURE;
        }
    };
    let socket = bus.socket_path().to_path_buf();
    let publisher = bus
        .publisher::<[u8]>("embedded/t")
        .create()
        .expect("publisher");
    // The port, and with it the daemon, outlives `main`.
    std::thread::spawn(move || {
        let _keep = (bus, publisher);
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    });
    let dir = socket.parent().expect("socket directory");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list the socket directory")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    println!("socket {}", socket.display());
    println!("files {}", names.join(" "));
    if wait {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Daemon { .. } | Cmd::Bridge { .. }) {
        client_log();
    }
    match cli.cmd {
        Cmd::WriteThroughSample { topic } => write_through_sample(&topic),
        Cmd::EmbeddedExit { wait } => embedded_exit(wait),
        Cmd::ProbeAs {
            socket,
            uid,
            gid,
            topics,
            recv,
            stats_delete,
            extra_gids,
        } => probe_as(
            &socket,
            (uid, gid, &extra_gids),
            &topics,
            recv,
            stats_delete,
        ),
        Cmd::ForgePublisher {
            socket,
            topic,
            uid,
            gid,
        } => peer_attack::forge_publisher(&socket, &topic, (uid, gid)),
        Cmd::ForgeSubscribers {
            socket,
            topic,
            uid,
            gid,
        } => peer_attack::forge_subscribers(&socket, &topic, (uid, gid)),
        Cmd::StormWakeBits {
            socket,
            topic,
            uid,
            gid,
            seconds,
        } => peer_attack::storm_wake_bits(&socket, &topic, (uid, gid), seconds),
        Cmd::WatchAs {
            socket,
            pattern,
            uid,
            gid,
            seconds,
        } => peer_attack::watch_as(&socket, &pattern, (uid, gid), seconds),
        Cmd::Bridge { args } => {
            // The bridge takes SIGTERM with sigwait, so the signal must reach the process,
            // not one thread: kill(getpid()), not raise().
            let parent = std::os::unix::process::parent_id();
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_millis(200));
                if orphaned(parent) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::this(),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                    return;
                }
            });
            match bus_bridge::cli::BridgeArgs::try_parse_from(
                std::iter::once("shmbus-bridge".to_string()).chain(args),
            ) {
                Ok(args) => bus_bridge::cli::main_with(args),
                Err(e) => {
                    let _ = e.print();
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Daemon {
            socket,
            stuck_timeout_ms,
            extra,
        } => {
            // A safety net: if the test process dies without stopping us, stop gracefully. The
            // thread is named, so that tests counting the daemon's wake-ups can leave it out.
            let parent = std::os::unix::process::parent_id();
            let _ = std::thread::Builder::new()
                .name(PARENT_WATCH.into())
                .spawn(move || loop {
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
            ready,
            die_mid_send,
            die_on_usr1,
        } => {
            stop_on_sigterm();
            if die_on_usr1 {
                die_on_sigusr1();
            }
            exit_with_parent();
            let opts = PubOpts {
                count: die_mid_send.unwrap_or(count),
                id,
                first_seq,
                try_send,
                interval_us,
                ready,
                die_mid_send: die_mid_send.is_some(),
            };
            publish(&topic, &opts)
        }
        Cmd::Sub {
            topic,
            count,
            timeout_ms,
            blocking,
            replay,
        } => subscribe(&topic, count, timeout_ms, blocking, replay),
        Cmd::Hold { topic } => hold(&topic),
        Cmd::Presence {
            topic,
            subscriber,
            wait,
        } => {
            exit_with_parent();
            peer_presence::presence(&topic, subscriber, wait)
        }
        Cmd::Member {
            socket,
            prefix,
            index,
            size,
            count,
            go_file,
            linger,
        } => {
            exit_with_parent();
            member(&socket, &prefix, (index, size), count, &go_file, linger)
        }
        Cmd::Waitset {
            socket,
            topics,
            count,
            timeout_ms,
        } => {
            stop_on_sigterm();
            exit_with_parent();
            peer_wait::waitset(&socket, &topics, count, timeout_ms)
        }
        Cmd::TokioSelect {
            socket,
            topics,
            count,
            timeout_ms,
            cancel_ms,
        } => {
            stop_on_sigterm();
            exit_with_parent();
            peer_wait::tokio_select(&socket, &topics, count, timeout_ms, cancel_ms)
        }
        Cmd::Arm {
            socket,
            topic,
            once,
            register_only,
        } => {
            stop_on_sigterm();
            exit_with_parent();
            peer_wait::arm(&socket, &topic, once, register_only)
        }
        Cmd::FdLimit {
            socket,
            topic,
            spare,
        } => {
            stop_on_sigterm();
            exit_with_parent();
            peer_wait::fd_limit(&socket, &topic, spare)
        }
        Cmd::Watch {
            topic,
            deadline_ms,
            progress_ms,
            report_stall_ms,
            blocking,
        } => {
            stop_on_sigterm();
            exit_with_parent();
            watch(
                &topic,
                Duration::from_millis(deadline_ms),
                Duration::from_millis(progress_ms),
                Duration::from_millis(report_stall_ms),
                blocking,
            )
        }
    }
}

struct PubOpts {
    count: u64,
    id: u64,
    first_seq: u64,
    try_send: bool,
    interval_us: Option<u64>,
    ready: bool,
    die_mid_send: bool,
}

fn publish(t: &TopicArgs, o: &PubOpts) -> ExitCode {
    let (count, id, first_seq) = (o.count, o.id, o.first_seq);
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
    let mut publisher = match b.open_or_create() {
        Ok(p) => p,
        Err(e) => return fail("open publisher", e),
    };
    if o.ready {
        say("ready");
    }
    if o.try_send {
        let mut accepted = 0;
        let mut full = false;
        for seq in first_seq..first_seq + count {
            match publisher.try_send(&TestMsg::new(id, seq)) {
                Ok(_) => accepted += 1,
                Err(TrySendError::Full) => {
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
        if stopping() {
            break;
        }
        if DIE.load(Ordering::SeqCst) {
            die_mid_send(&mut publisher, id, seq, sent);
        }
        let mut sample = match publisher.loan() {
            Ok(s) => s,
            Err(e) => return fail("loan", e),
        };
        sample.publisher = id;
        sample.seq = seq;
        sample.stamp_ns = now_ns();
        sample.check = bus_tests::check_of(id, seq);
        sample.send();
        sent += 1;
        if let Some(us) = o.interval_us {
            std::thread::sleep(Duration::from_micros(us));
        }
    }
    if o.die_mid_send {
        die_mid_send(&mut publisher, id, first_seq + count, sent);
    }
    drop(publisher);
    say(&json!({ "sent": sent }).to_string());
    ExitCode::SUCCESS
}

/// Claim the next slot, write garbage into half of it (a torn message, if it were ever
/// delivered), announce the moment, and die by SIGKILL without committing.
fn die_mid_send(publisher: &mut bus_client::Publisher<TestMsg>, id: u64, seq: u64, sent: u64) -> ! {
    use zerocopy::IntoBytes;
    match publisher.loan() {
        Ok(mut sample) => {
            sample.publisher = id;
            sample.seq = seq;
            let bytes = sample.as_mut_bytes();
            let half = bytes.len() / 2;
            bytes[..half].fill(0xAB);
            let sequence = sample.sequence();
            say(&json!({ "sent": sent, "claimed": sequence, "dying_ns": now_ns() }).to_string());
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            // SIGKILL cannot be caught; never let the loan be dropped (that would skip it
            // cleanly).
            std::mem::forget(sample);
        }
        Err(e) => {
            eprintln!("shmbus-peer: loan before dying: {e}");
        }
    }
    std::process::abort()
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
    let mut sub = match b.open_or_create() {
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
            Err(RecvTimeoutError::Lagged(n)) => {
                lagged += n;
                lagged_events += 1;
            }
            Err(RecvTimeoutError::Timeout) => {
                outcome = "timeout";
                break;
            }
            Err(RecvTimeoutError::Closed) => {
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
    let mut sub = match b.open_or_create() {
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

fn summary_maps(c: &Checker) -> serde_json::Value {
    let map =
        |m: &std::collections::BTreeMap<u64, u64>| -> serde_json::Map<String, serde_json::Value> {
            m.iter().map(|(k, v)| (k.to_string(), json!(v))).collect()
        };
    json!({
        "received": c.received,
        "per_publisher": map(&c.last),
        "first_per_publisher": map(&c.first),
        "count_per_publisher": map(&c.count),
        "first_topic_seq": c.topic_seqs.map(|s| s.0),
        "last_topic_seq": c.topic_seqs.map(|s| s.1),
        "error_count": c.error_count,
    })
}

/// Receive and validate until SIGTERM, the deadline, `Closed` or the parent's death; report
/// violations at once, progress regularly, a summary at the end. Never panics on bad data.
fn watch(
    t: &TopicArgs,
    deadline: Duration,
    progress_every: Duration,
    report_stall: Duration,
    blocking: bool,
) -> ExitCode {
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
    let mut sub = match b.open_or_create() {
        Ok(s) => s,
        Err(e) => return fail("open subscriber", e),
    };
    say("ready");
    let started = Instant::now();
    let mut checker = Checker::new(!t.lossy);
    let mut violations = 0u64;
    let violation = |what: String, violations: &mut u64| {
        *violations += 1;
        say(&json!({ "violation": what, "at_ns": now_ns() }).to_string());
    };
    let mut last_msg: Option<(Instant, u64)> = None;
    let mut max_stall = Duration::ZERO;
    let mut max_stall_end_ns = 0u64;
    let mut stalls: Vec<serde_json::Value> = Vec::new();
    let mut lagged = 0u64;
    let mut recv_errors: std::collections::BTreeMap<String, u64> = Default::default();
    let mut next_progress = Instant::now() + progress_every;
    let mut outcome = "deadline";
    let progress = |c: &Checker, max_stall: Duration, violations: u64| {
        say(&json!({ "progress": {
            "received": c.received,
            "violations": violations,
            "max_stall_us": max_stall.as_micros() as u64,
        }})
        .to_string());
    };
    loop {
        if stopping() {
            outcome = "sigterm";
            break;
        }
        if started.elapsed() >= deadline {
            break;
        }
        if Instant::now() >= next_progress {
            progress(&checker, max_stall, violations);
            next_progress = Instant::now() + progress_every;
        }
        match sub.recv_timeout(Duration::from_millis(20)) {
            Ok(sample) => {
                let now = Instant::now();
                let seq = sample.sequence();
                let msg: TestMsg = *sample;
                drop(sample);
                checker.check(&msg, seq);
                if let Some((prev, prev_ns)) = last_msg {
                    let gap = now - prev;
                    if gap > max_stall {
                        max_stall = gap;
                        max_stall_end_ns = now_ns();
                    }
                    if gap >= report_stall && stalls.len() < 50 {
                        stalls.push(json!({
                            "from_ns": prev_ns,
                            "ms": gap.as_secs_f64() * 1e3,
                            "topic_seq": seq,
                        }));
                    }
                }
                last_msg = Some((now, now_ns()));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Closed) => {
                outcome = "closed";
                break;
            }
            Err(RecvTimeoutError::Lagged(n)) => {
                lagged += n;
                if !t.lossy {
                    violation(format!("Lagged({n}) on a lossless topic"), &mut violations);
                }
            }
            Err(e) => {
                *recv_errors.entry(format!("{e:?}")).or_insert(0) += 1;
                violation(format!("recv: {e:?}"), &mut violations);
                if matches!(e, RecvTimeoutError::Evicted) {
                    outcome = "evicted";
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // The checker lists at most a few errors: take each one out as it appears.
        for e in std::mem::take(&mut checker.errors) {
            violation(e, &mut violations);
        }
    }
    let malformed = sub.malformed();
    drop(sub);
    let mut summary = summary_maps(&checker);
    summary["violations"] = json!(violations);
    summary["max_stall_us"] = json!(max_stall.as_micros() as u64);
    summary["max_stall_end_ns"] = json!(max_stall_end_ns);
    summary["stalls"] = json!(stalls);
    summary["lagged"] = json!(lagged);
    summary["recv_errors"] = json!(recv_errors);
    summary["outcome"] = json!(outcome);
    summary["last_recv_ns"] = json!(last_msg.map(|m| m.1));
    summary["malformed"] = json!(malformed);
    say(&json!({ "summary": summary }).to_string());
    if violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `write-through-sample`: see [`Cmd::WriteThroughSample`].
fn write_through_sample(t: &TopicArgs) -> ExitCode {
    let bus = match Bus::connect_to(&t.socket) {
        Ok(b) => b,
        Err(e) => return fail("connect", e),
    };
    let mut sub = match bus.subscriber::<TestMsg>(&t.topic).open_or_create() {
        Ok(s) => s,
        Err(e) => return fail("open subscriber", e),
    };
    say("ready");
    let sample = match sub.recv_timeout(Duration::from_secs(30)) {
        Ok(s) => s,
        Err(e) => return fail("recv", e),
    };
    say("received");
    let target = sample.bytes().as_ptr() as *mut u8;
    // SAFETY: none — this is deliberately unsound. `target` comes from a shared borrow of a
    // message in the subscriber's read-only slot mapping, and writing through it violates both
    // Rust's aliasing rules and the ring's protocol. The test runs this in a throw-away child
    // process to prove that the kernel stops the write (SIGSEGV) before it can corrupt the slot.
    unsafe { std::ptr::write_volatile(target, 0xEE) };
    say("wrote");
    drop(sample);
    ExitCode::from(1)
}

/// `probe-as`: see [`Cmd::ProbeAs`].
fn probe_as(
    socket: &std::path::Path,
    (uid, gid, extra_gids): (u32, u32, &[u32]),
    topics: &[String],
    recv: bool,
    stats_delete: bool,
) -> ExitCode {
    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
    // Single-threaded here: nothing has been started yet.
    let groups: Vec<Gid> = extra_gids.iter().map(|g| Gid::from_raw(*g)).collect();
    if let Err(e) = setgroups(&groups)
        .and_then(|_| setgid(Gid::from_raw(gid)))
        .and_then(|_| setuid(Uid::from_raw(uid)))
    {
        return fail("drop privileges", e);
    }
    let bus = match Bus::connect_to(socket) {
        Ok(b) => b,
        Err(e) => {
            let errno = match &e {
                bus_client::ConnectError::Unreachable { source, .. } => source.raw_os_error(),
                _ => None,
            };
            say(
                &json!({ "uid": uid, "connect_errno": errno, "connect_error": e.to_string() })
                    .to_string(),
            );
            return ExitCode::SUCCESS;
        }
    };
    let mut results = serde_json::Map::new();
    let mut opened = None;
    for topic in topics {
        let r = match bus.subscriber::<TestMsg>(topic).open_or_create() {
            Ok(s) => {
                if opened.is_none() {
                    opened = Some(s);
                }
                "ok".to_string()
            }
            Err(OpenError::PermissionDenied { message, .. }) => {
                format!("permission_denied: {message}")
            }
            Err(OpenError::Refused { code, message, .. }) => format!("{code:?}: {message}"),
            Err(e) => format!("error: {e}"),
        };
        results.insert(topic.clone(), json!(r));
    }
    let code = |e: &RequestError| match e.code() {
        Some(bus_client::ErrorCode::PermissionDenied) => "permission_denied".to_string(),
        Some(bus_client::ErrorCode::NoSuchTopic) => "no_such_topic".to_string(),
        Some(code) => format!("{code:?}"),
        None => format!("error: {e}"),
    };
    let mut stats = serde_json::Map::new();
    let mut deletes = serde_json::Map::new();
    if stats_delete {
        for topic in topics {
            let st = match bus.stats(Some(topic)) {
                Ok(v) => format!("ok: {} topics", v.len()),
                Err(e) => code(&e),
            };
            stats.insert(topic.clone(), json!(st));
            let del = match bus.delete(topic) {
                Ok(()) => "ok".to_string(),
                Err(e) => code(&e),
            };
            deletes.insert(topic.clone(), json!(del));
        }
    }
    say(&json!({
        "uid": uid,
        "connect": "ok",
        "topics": results,
        "stats": stats,
        "delete": deletes,
    })
    .to_string());
    if recv {
        match opened
            .as_mut()
            .map(|s| s.recv_timeout(Duration::from_secs(10)))
        {
            Some(Ok(sample)) => say(&json!({ "received_seq": sample.seq }).to_string()),
            Some(Err(e)) => say(&json!({ "recv_error": e.to_string() }).to_string()),
            None => say(&json!({ "recv_error": "no topic opened" }).to_string()),
        }
    }
    ExitCode::SUCCESS
}

/// One member of a ring of processes (see the module docs). Topics are typed, lossless, with a
/// ring that holds every message (so a member never waits for a slow neighbour to send).
fn member(
    socket: &std::path::Path,
    prefix: &str,
    (index, size): (u64, u64),
    count: u64,
    go_file: &std::path::Path,
    linger: bool,
) -> ExitCode {
    let parent = std::os::unix::process::parent_id();
    let capacity = (count.max(2)).next_power_of_two() as u32;
    let bus = match Bus::connect_to(socket) {
        Ok(b) => b,
        Err(e) => return fail("connect", e),
    };
    let mine = format!("{prefix}/{index}");
    let next = format!("{prefix}/{}", (index + 1) % size.max(1));
    let mut publisher = match bus
        .publisher::<TestMsg>(&mine)
        .capacity(capacity)
        .max_publishers(1)
        .max_subscribers(1)
        .open_or_create()
    {
        Ok(p) => p,
        Err(e) => return fail("publisher", e),
    };
    let mut subscriber = match bus
        .subscriber::<TestMsg>(&next)
        .capacity(capacity)
        .max_publishers(1)
        .max_subscribers(1)
        .open_or_create()
    {
        Ok(s) => s,
        Err(e) => return fail("subscriber", e),
    };
    say("ready");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !go_file.exists() {
        if Instant::now() > deadline || orphaned(parent) {
            return fail("go", "no go file");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for seq in 0..count {
        if let Err(e) = publisher.send_timeout(&TestMsg::new(index, seq), Duration::from_secs(30)) {
            return fail("send", e);
        }
    }
    let mut checker = Checker::new(true);
    let mut received = 0;
    while received < count {
        match subscriber.recv_timeout(Duration::from_secs(60)) {
            Ok(m) => {
                checker.check(&m, m.sequence());
                received += 1;
            }
            Err(e) => return fail("recv", e),
        }
    }
    say(&json!({"sent": count, "received": received, "errors": checker.error_count}).to_string());
    if linger {
        while !orphaned(parent) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    drop((publisher, subscriber, bus));
    ExitCode::SUCCESS
}
