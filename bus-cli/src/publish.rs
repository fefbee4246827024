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

/// How far behind its schedule the pacer may fall before it stops trying to catch up: input that
/// stalls longer (a slow producer) does not make the next messages burst for longer than this.
const MAX_BEHIND: Duration = Duration::from_millis(100);

/// Spaces messages `1 / rate` apart on an absolute schedule: message `n` is due at
/// `start + n * period`, whatever the sleeps before it overslept (a late message is followed by
/// the next ones at once until the schedule is met), so the average rate is the one asked for.
/// Behind by more than [`MAX_BEHIND`] (a rate above what the machine can do, or a stall), it
/// starts the schedule again from now: it never sleeps then, and never bursts for longer.
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

    /// Wait until the next message is due.
    fn wait(&mut self) {
        if let Some(d) = self.sleep_before_send(Instant::now()) {
            std::thread::sleep(d);
        }
    }

    /// How long to sleep at `now` before sending the next message (`None`: send at once), and
    /// the schedule moved on by one message.
    fn sleep_before_send(&mut self, now: Instant) -> Option<Duration> {
        let period = self.period?;
        let due = self.next.unwrap_or(now);
        if now.saturating_duration_since(due) > MAX_BEHIND {
            self.next = Some(now + period);
            return None;
        }
        self.next = Some(due + period);
        (due > now).then(|| due - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn pacer_keeps_an_absolute_schedule() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Some(100.0)); // due every 10 ms
        assert_eq!(p.sleep_before_send(t0), None);
        assert_eq!(p.next, Some(t0 + 10 * MS));
        // Early: sleep until due.
        assert_eq!(p.sleep_before_send(t0 + MS), Some(9 * MS));
        assert_eq!(p.next, Some(t0 + 20 * MS));
        // That sleep overslept by 5 ms: the next is still due at 20 ms, not 15 + 10.
        assert_eq!(p.sleep_before_send(t0 + 15 * MS), Some(5 * MS));
        assert_eq!(p.next, Some(t0 + 30 * MS));
        // Late by 7 ms: no sleep, and the one after is due 10 ms after the missed one.
        assert_eq!(p.sleep_before_send(t0 + 37 * MS), None);
        assert_eq!(p.next, Some(t0 + 40 * MS));
        assert_eq!(p.sleep_before_send(t0 + 38 * MS), Some(2 * MS));
        assert_eq!(p.next, Some(t0 + 50 * MS));
        // After 1000 messages at exactly their times, the schedule has not drifted.
        for n in 5..1005u32 {
            assert_eq!(p.sleep_before_send(t0 + n * 10 * MS), None);
        }
        assert_eq!(p.next, Some(t0 + 10_050 * MS));
    }

    #[test]
    fn pacer_far_behind_starts_again_from_now_without_sleeping() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Some(100.0));
        assert_eq!(p.sleep_before_send(t0), None);
        // Input stalled for a second: no burst of 100 catch-up messages, a new schedule.
        let t1 = t0 + 1000 * MS;
        assert_eq!(p.sleep_before_send(t1), None);
        assert_eq!(p.next, Some(t1 + 10 * MS));
        assert_eq!(p.sleep_before_send(t1 + MS), Some(9 * MS));

        // A rate far above what a sender can do: never a sleep.
        let mut p = Pacer::new(Some(1e9));
        for n in 0..10_000u32 {
            assert_eq!(p.sleep_before_send(t0 + n * Duration::from_micros(3)), None);
        }
        // No rate: never a sleep, no schedule.
        let mut p = Pacer::new(None);
        assert_eq!(p.sleep_before_send(t0), None);
        assert_eq!(p.next, None);
    }
}
