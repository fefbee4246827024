//! `shmbus-bridge`: shmbus topics to and from Zenoh. See `bus_bridge` and docs/bridge.md.

fn main() -> std::process::ExitCode {
    bus_bridge::cli::main()
}
