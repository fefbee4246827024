//! `shmbusd`, the shmbus daemon. See `shmbusd --help`.

fn main() -> std::process::ExitCode {
    bus_daemon::cli::main()
}
