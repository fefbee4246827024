//! `shmbus pub`: publish a message, or each line of standard input as one message.

use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::time::{Duration, Instant};

use bus_client::{Bus, ErrorCode, Mode, Publisher};
use clap::Args;

use crate::error::CliError;
use crate::util;

#[derive(Debug, Args)]
#[command(
    long_about = "Publish MESSAGE once on the byte topic TOPIC; without MESSAGE, publish each \
line of standard input (without its trailing newline) as one message, until end of input. So \
`producer | shmbus pub t` feeds a pipeline into the bus.

Sends block while a lossless topic is full (back-pressure: nothing is lost); on a lossy topic they \
never wait. A topic that does not exist yet is created as a byte topic (lossless, 4096-byte slots \
unless --slot-size / --lossy say otherwise); an existing topic is used with its own options, and \
--slot-size / --lossy must then match it. Subscribers see only messages published after they \
attached (unless they replay), so start `shmbus echo` first."
)]
pub struct PubArgs {
    /// The topic, like `robot/cmd`.
    topic: String,

    /// The message to publish once (default: each line of standard input).
    message: Option<String>,

    /// Publish at most HZ messages per second (default: as fast as subscribers allow).
    #[arg(long, value_name = "HZ", value_parser = parse_rate)]
    rate: Option<f64>,

    /// The topic's slot size (largest message) in bytes, when creating it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=(1 << 30)))]
    slot_size: Option<u32>,

    /// Create the topic lossy: publishers never wait, slow subscribers lose messages.
    #[arg(long)]
    lossy: bool,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate: give messages per second as a positive number, like 10 or 0.5"
        )),
    }
}

pub fn run(socket: &Path, args: &PubArgs) -> Result<(), CliError> {
    util::check_topic(&args.topic)?;
    let bus = util::connect(socket)?;
    let mut builder = bus.publisher::<[u8]>(&args.topic);
    // An existing topic is checked against the options given here, and only those: a default
    // the user never gave (like the capacity that follows from --slot-size) is not compared,
    // nor named in the error.
    if !topic_has_options(&bus, socket, args)? {
        if let Some(n) = args.slot_size {
            builder = builder.slot_size(n);
        }
        if args.lossy {
            builder = builder.lossy();
        }
    }
    let mut publisher = builder
        .open_or_create()
        .map_err(|e| CliError::open(e, socket))?;
    let mut pacer = Pacer::new(args.rate);
    if let Some(message) = &args.message {
        return send(&mut publisher, message.as_bytes(), &args.topic);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!(
            "shmbus pub: publishing each line on '{}'; end with Ctrl-D",
            args.topic
        );
    }
    let mut input = stdin.lock();
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| CliError::io(e, "reading standard input"))?;
        if n == 0 {
            return Ok(());
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        pacer.wait();
        send(&mut publisher, &line, &args.topic)?;
    }
}

/// Whether `args.topic` exists and has the options given on the command line (then it is opened
/// as it is); `false` when it does not exist (it is created with them). An existing topic with
/// other options is an error naming only the options given.
fn topic_has_options(bus: &Bus, socket: &Path, args: &PubArgs) -> Result<bool, CliError> {
    if args.slot_size.is_none() && !args.lossy {
        return Ok(false);
    }
    let existing = match bus.stats(Some(&args.topic)) {
        Ok(t) => t.into_iter().next(),
        Err(e) if e.code() == Some(ErrorCode::NoSuchTopic) => None,
        Err(e) => return Err(CliError::request(e, socket)),
    };
    let Some(existing) = existing else {
        return Ok(false);
    };
    let spec = &existing.spec;
    let mut theirs = Vec::new();
    let mut ours = Vec::new();
    if let Some(n) = args.slot_size.filter(|&n| n != spec.slot_size) {
        theirs.push(format!("slot size {}", spec.slot_size));
        ours.push(format!("--slot-size {n}"));
    }
    if args.lossy && spec.mode != Mode::Lossy {
        theirs.push(format!("mode {}", spec.mode));
        ours.push("--lossy".to_string());
    }
    if ours.is_empty() {
        return Ok(true);
    }
    let topic = &args.topic;
    Err(CliError::refused(format!(
        "topic '{topic}' exists with {} but this command asked for {}; leave out {} to use the topic as it is, delete it first with `shmbus delete {topic}` (when no one uses it), or use another topic name",
        theirs.join(", "),
        ours.join(" "),
        if ours.len() == 1 { "that option" } else { "those options" }
    )))
}

fn send(publisher: &mut Publisher<[u8]>, bytes: &[u8], topic: &str) -> Result<(), CliError> {
    publisher
        .publish(bytes)
        .map(drop)
        .map_err(|e| CliError::send(e, topic))
}

/// Spaces messages `1 / rate` apart on an absolute schedule (no drift).
struct Pacer {
    period: Option<Duration>,
    next: Option<Instant>,
}

impl Pacer {
    fn new(rate: Option<f64>) -> Pacer {
        Pacer {
            period: rate.map(|r| Duration::from_secs_f64((1.0 / r).min(3600.0))),
            next: None,
        }
    }

    fn wait(&mut self) {
        let Some(period) = self.period else { return };
        let now = Instant::now();
        let due = self.next.unwrap_or(now);
        if due > now {
            std::thread::sleep(due - now);
        }
        // After a long stall (slow input), do not burst to catch up.
        self.next = Some(due.max(now) + period);
    }
}
