//! `shmbus echo`: print a topic's messages as they arrive, one per line.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use bus_client::{RecvError, StartAt};
use clap::{Args, ValueEnum};

use crate::error::{is_broken_pipe, CliError};
use crate::util;

#[derive(Debug, Args)]
#[command(
    long_about = "Subscribe to TOPIC and print each message as it arrives, one per line, \
flushing after each (so it works in pipelines: `shmbus echo t | consumer`).

Any topic can be echoed, whatever its type (typed topics are printed as hex by default). A topic \
that does not exist yet is waited for, never created. Only messages published after echo attached \
are printed, unless --replay is given. On a lossless topic echo holds publishers back when it falls behind (nothing is lost); on a \
lossy topic it reports lost messages on standard error.

When it is attached, echo writes `listening on TOPIC` to standard error. It exits 0 after -n \
messages or when the topic is closed (the daemon stopped or the topic was deleted)."
)]
pub struct EchoArgs {
    /// The topic, like `robot/odom`.
    topic: String,

    /// Stop after N messages.
    #[arg(short = 'n', long = "count", value_name = "N")]
    count: Option<u64>,

    /// How to print each message. text: UTF-8 (invalid bytes replaced), one message per line;
    /// hex: lowercase hex digits; json: {"seq", "len", "encoding": "utf8"|"hex", "data"}.
    /// Default: text for byte topics, hex for typed ones.
    #[arg(long, value_enum, value_name = "FORMAT")]
    format: Option<Format>,

    /// Start with older messages: on a lossy topic, what the ring still holds; on a lossless
    /// topic, what another live subscriber has not read yet (older slots may be reused).
    #[arg(long)]
    replay: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Hex,
    Json,
}

pub fn run(socket: &Path, args: &EchoArgs) -> Result<(), CliError> {
    util::check_topic(&args.topic)?;
    let bus = util::connect(socket)?;
    let start = if args.replay {
        StartAt::Oldest
    } else {
        StartAt::Latest
    };
    let mut sub = util::watch(&bus, socket, &args.topic, start)?;
    let spec = sub.spec();
    let format = args.format.unwrap_or(if spec.type_info.is_bytes() {
        Format::Text
    } else {
        Format::Hex
    });
    eprintln!(
        "listening on {} ({}, {})",
        args.topic,
        spec.mode,
        util::type_label(spec)
    );
    if args.count == Some(0) {
        return Ok(());
    }
    let mut stdout = std::io::stdout().lock();
    let mut line = Vec::with_capacity(4096);
    let mut received = 0u64;
    loop {
        match sub.recv() {
            Ok(sample) => {
                line.clear();
                format_message(format, sample.sequence(), sample.bytes(), &mut line);
                // Release the slot before a write that may block on a slow reader.
                drop(sample);
                match stdout.write_all(&line).and_then(|()| stdout.flush()) {
                    Ok(()) => {}
                    Err(e) if is_broken_pipe(&e) => return Ok(()),
                    Err(e) => return Err(CliError::io(e, "writing to standard output")),
                }
                received += 1;
                if args.count.is_some_and(|n| received >= n) {
                    return Ok(());
                }
            }
            Err(RecvError::Lagged(n)) => {
                eprintln!("shmbus echo: fell behind on a lossy topic: {n} messages were lost");
            }
            Err(RecvError::Closed) => return Ok(()),
            Err(e) => return Err(CliError::recv(e, &args.topic)),
        }
    }
}

fn format_message(format: Format, seq: u64, bytes: &[u8], out: &mut Vec<u8>) {
    match format {
        Format::Text => out.extend_from_slice(String::from_utf8_lossy(bytes).as_bytes()),
        Format::Hex => out.extend_from_slice(hex(bytes).as_bytes()),
        Format::Json => {
            let (encoding, data) = match std::str::from_utf8(bytes) {
                Ok(s) => ("utf8", s.to_string()),
                Err(_) => ("hex", hex(bytes)),
            };
            let line = JsonLine {
                seq,
                len: bytes.len(),
                encoding,
                data,
            };
            // Serializing plain numbers and strings into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, &line);
        }
    }
    out.push(b'\n');
}

/// One message with `--format json`.
#[derive(serde::Serialize)]
struct JsonLine {
    seq: u64,
    len: usize,
    encoding: &'static str,
    data: String,
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(format: Format, bytes: &[u8]) -> String {
        let mut out = Vec::new();
        format_message(format, 7, bytes, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn formats() {
        assert_eq!(fmt(Format::Text, b"hello"), "hello\n");
        assert_eq!(fmt(Format::Text, b"a\xffb"), "a\u{fffd}b\n");
        assert_eq!(fmt(Format::Hex, b"\x00\xab"), "00ab\n");
        assert_eq!(
            fmt(Format::Json, b"hi"),
            "{\"seq\":7,\"len\":2,\"encoding\":\"utf8\",\"data\":\"hi\"}\n"
        );
        assert_eq!(
            fmt(Format::Json, b"\xff"),
            "{\"seq\":7,\"len\":1,\"encoding\":\"hex\",\"data\":\"ff\"}\n"
        );
    }
}
