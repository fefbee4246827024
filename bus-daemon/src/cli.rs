//! The `shmbusd` command line. A library function so that any binary (the `shmbusd` binary,
//! test harnesses) runs the very same daemon.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::server::{self, Config, StartError};

/// shmbusd: the shmbus daemon. It creates topics (named shared-memory rings), hands them to
/// clients, watches client liveness and cleans up. It is never on the data path: publishers
/// and subscribers exchange messages through shared memory directly.
#[derive(Debug, Parser)]
#[command(name = "shmbusd", version)]
pub struct DaemonArgs {
    /// The Unix socket to listen on. Default: $XDG_RUNTIME_DIR/shmbus/shmbusd.sock, else
    /// /tmp/shmbus-$UID/shmbusd.sock. Only one daemon may serve a socket.
    #[arg(long, env = "SHMBUS_SOCKET")]
    pub socket: Option<PathBuf>,

    /// Access rules (TOML): which uids and gids may publish or subscribe on which topics, and
    /// per-uid limits. Without it only the daemon's own uid may use the bus. SIGHUP reloads it.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,

    /// Evict a live subscriber that holds back a full lossless topic for this many
    /// milliseconds; it gets an `Evicted` error on its next call.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub stuck_timeout_ms: u64,

    /// After a restart, how long the topics of the daemon that died wait for their processes
    /// to hand them back and re-attach, in milliseconds; then an attach to a topic nobody handed
    /// back creates it anew, and ports whose processes are gone are released.
    #[arg(long, default_value_t = 3000, value_name = "MS")]
    pub adopt_grace_ms: u64,

    /// Let members of this group (a numeric gid) connect: the socket becomes 0660 and its
    /// directory 0710, owned by the group. Rules still decide what each uid and gid may do.
    /// Without it only the daemon's own uid can reach the socket.
    #[arg(long, value_name = "GID")]
    pub socket_group: Option<u32>,

    /// Log filter (tracing's env-filter syntax), e.g. `info`, `debug`, `bus_daemon=trace`.
    /// The SHMBUS_LOG environment variable is used when this is not given.
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
}

/// Run the daemon with `args` until SIGTERM or SIGINT; the exit code says how it went.
pub fn main_with(args: DaemonArgs) -> ExitCode {
    let filter = args
        .log
        .clone()
        .or_else(|| std::env::var("SHMBUS_LOG").ok())
        .unwrap_or_else(|| "info".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(bus_proto::paths::default_socket_path);
    let config = Config {
        socket,
        acl_path: args.rules.clone(),
        stuck_timeout: Duration::from_millis(args.stuck_timeout_ms),
        handle_signals: true,
        adopt_grace: Duration::from_millis(args.adopt_grace_ms),
        socket_group: args.socket_group,
    };
    match server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ StartError::AlreadyRunning { .. }) => {
            eprintln!("shmbusd: {e}");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("shmbusd: {e}");
            ExitCode::from(2)
        }
    }
}

/// `shmbusd`'s `main`: parse the process arguments and run.
pub fn main() -> ExitCode {
    main_with(DaemonArgs::parse())
}
