//! `shmbus`: the command-line tool of the shmbus shared-memory bus.
//!
//! Each subcommand lives in its own module: [`list`], [`stat`], [`echo`], [`publish`] (`pub`),
//! [`hz`], [`delete`], [`doctor`], [`record`], [`play`] and [`info`] (the last three share
//! [`recording`]). [`error`] maps failures to the exit codes documented in `--help`.

mod delete;
mod doctor;
mod echo;
mod error;
mod hz;
mod info;
mod list;
mod play;
mod publish;
mod record;
mod recording;
mod signals;
mod stat;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::CliError;

const EXIT_CODES: &str = "\
Exit codes:
  0  success (echo: -n messages received, or the topic closed; pub: end of input;
     record and play: stopped by Ctrl-C or SIGTERM, or play reached the end)
  1  failure while running: a message could not be sent or received, an I/O error,
     the subscriber was evicted, `doctor` found a FAIL, a recording could not be
     written (a full disk: the file is closed at its last complete chunk) or is
     damaged or not MCAP
  2  usage: bad arguments, an invalid topic name or pattern, no daemon answering
     on the socket (start it with `shmbusd`, or point --socket / SHMBUS_SOCKET at it),
     or `delete` without --yes and without a terminal to confirm on
  3  the daemon refused: no such topic, a type or geometry mismatch, permission
     denied, a limit reached; `delete` of a topic with ports attached (without --force)

Examples:
  shmbus list
  shmbus echo robot/odom --format hex -n 10
  seq 1 100 | shmbus pub numbers --rate 10
  shmbus echo numbers | consumer
  shmbus stat --watch
  shmbus delete 'test/**' --yes
  shmbus doctor
  shmbus record 'robot/**' -o run1.mcap
  shmbus play run1.mcap --rate 2";

/// shmbus: inspect and use a shmbus shared-memory bus from the shell.
///
/// Talks to the `shmbusd` daemon on its Unix socket, lists topics and their stats, and pipes
/// byte topics to and from standard input and output.
#[derive(Debug, Parser)]
#[command(name = "shmbus", version, after_help = EXIT_CODES)]
struct Cli {
    /// The daemon's socket. Default: $XDG_RUNTIME_DIR/shmbus/shmbusd.sock, else
    /// /tmp/shmbus-$UID/shmbusd.sock.
    #[arg(long, env = "SHMBUS_SOCKET", global = true, value_name = "PATH")]
    socket: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the topics: mode, capacity, slot size, type, publishers, subscribers, published.
    List(list::ListArgs),
    /// Show message and byte rates, drops, stalls and each subscriber's lag.
    Stat(stat::StatArgs),
    /// Print the messages of a topic as they arrive, one per line.
    Echo(echo::EchoArgs),
    /// Publish a message, or each line of standard input as one message.
    Pub(publish::PubArgs),
    /// Measure a topic's message rate and the jitter of its inter-arrival times.
    Hz(hz::HzArgs),
    /// Delete topics (by name or pattern), after a confirmation.
    Delete(delete::DeleteArgs),
    /// Check the machine and the daemon: sealed shared memory, memory and file limits, socket,
    /// old /dev/shm files, files left by embedded daemons of exited processes.
    Doctor(doctor::DoctorArgs),
    /// Record topics into an MCAP file (Ctrl-C finishes it).
    Record(record::RecordArgs),
    /// Publish recorded messages again, at the recorded pace (scaled by --rate).
    Play(play::PlayArgs),
    /// Describe a recording: time span, topics, message counts, types, sizes, compression.
    Info(info::InfoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = cli
        .socket
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(bus_proto::paths::default_socket_path);
    let result = match cli.command {
        Command::List(args) => list::run(&socket, &args),
        Command::Stat(args) => stat::run(&socket, &args),
        Command::Echo(args) => echo::run(&socket, &args),
        Command::Pub(args) => publish::run(&socket, &args),
        Command::Hz(args) => hz::run(&socket, &args),
        Command::Delete(args) => delete::run(&socket, &args),
        Command::Doctor(args) => doctor::run(&socket, &args),
        Command::Record(args) => record::run(&socket, &args),
        Command::Play(args) => play::run(&socket, &args),
        Command::Info(args) => info::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError { code, message }) => {
            if !message.is_empty() {
                eprintln!("shmbus: {message}");
            }
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
