//! The command line of `shmbus-bridge`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::bridge::{run, BridgeError};
use crate::config::Settings;

/// Carries shmbus topics between the local shmbusd and Zenoh, both ways.
#[derive(Debug, Parser)]
#[command(
    name = "shmbus-bridge",
    version,
    long_about = "Carries shmbus topics between the local shmbusd and Zenoh, both ways, so that a \
process on another machine sees `robot/odom` as if it were local. Nothing is bridged unless an \
--export or --import pattern admits it; --deny wins over both. Patterns use `*` for one part and \
`**` for any number. Events and counters go to stdout as JSON lines, logs to stderr \
(SHMBUS_LOG sets the filter). See docs/bridge.md."
)]
pub struct BridgeArgs {
    /// The local daemon's socket. Default: $XDG_RUNTIME_DIR/shmbus/shmbusd.sock, else
    /// /tmp/shmbus-$UID/shmbusd.sock.
    #[arg(long, env = "SHMBUS_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// A Zenoh endpoint to listen on, like tcp/0.0.0.0:7447 (repeatable).
    #[arg(long, value_name = "ENDPOINT")]
    pub listen: Vec<String>,
    /// A Zenoh endpoint to connect to, like tcp/192.0.2.7:7447 (repeatable).
    #[arg(long, value_name = "ENDPOINT")]
    pub connect: Vec<String>,
    /// Multicast scouting even with explicit endpoints (without any, it is on anyway).
    #[arg(long)]
    pub scout: bool,
    /// Local topics that go out (repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub export: Vec<String>,
    /// Remote topics that come in (repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub import: Vec<String>,
    /// Topics never bridged, whatever --export and --import say (repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub deny: Vec<String>,
    /// A Zenoh key prefix (a site or robot name): topic robot/odom is key `<KEY>/robot/odom`;
    /// stripped on import.
    #[arg(long, value_name = "KEY")]
    pub prefix: Option<String>,
    /// A TOML file with all of the above, per-topic QoS and a [zenoh] section passed to
    /// Zenoh unchanged.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHMBUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,bus_bridge=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Run the bridge with parsed arguments. Exit codes: 0 after a signal, 1 on a runtime
/// failure, 2 for bad settings or no daemon.
pub fn main_with(args: BridgeArgs) -> ExitCode {
    init_logging();
    let settings = match Settings::resolve(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shmbus-bridge: {e}");
            return ExitCode::from(2);
        }
    };
    match run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmbus-bridge: {e}");
            match e {
                BridgeError::Config(_) | BridgeError::Daemon(_) => ExitCode::from(2),
                BridgeError::Zenoh(_) => ExitCode::from(1),
            }
        }
    }
}

/// Parse the process's arguments and run.
pub fn main() -> ExitCode {
    main_with(BridgeArgs::parse())
}
