//! `shmbus stat`: rates from two samples of the daemon's counters, drops, stalls, lag.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use bus_client::{Bus, TopicStats};
use bus_client::{PublisherStat, SubscriberStat, WakerStat};
use clap::Args;
use serde::Serialize;

use crate::error::{is_broken_pipe, CliError};
use crate::util::{self, Table};

#[derive(Debug, Args)]
#[command(
    long_about = "Show each topic's message rate and byte rate, drops (lossy topics), stalls \
(lossless topics), messages published while no subscriber was attached (UNHEARD), the shared memory each topic commits, each subscriber's lag and the waiters \
that sleep on descriptors of their own (WaitSets and async code; `--json` says which port each \
waits for and whether it is armed).

Rates come from two samples of the topic's published counter, --interval-ms apart. The byte rate is \
exact for typed topics; for byte topics (variable-length messages) it counts whole slots, so it is \
an upper bound (shown as `<=`). Lag is the number of messages published that a subscriber has not \
read yet."
)]
pub struct StatArgs {
    /// One topic (default: every topic).
    topic: Option<String>,

    /// Refresh in place like `top` until Ctrl-C (into a pipe or file: one report after
    /// another, without terminal codes; with --json: one JSON document per line).
    #[arg(long)]
    watch: bool,

    /// Time between the two samples (and between refreshes with --watch), in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    interval_ms: u64,

    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One topic's stats and rates, as printed with `--json`.
#[derive(Debug, Serialize)]
struct TopicRates {
    name: String,
    mode: String,
    type_name: String,
    capacity: u32,
    slot_size: u32,
    /// Bytes of shared memory the topic commits (`bytes`, as in `list --json`).
    bytes: u64,
    published: u64,
    /// Messages per second over the interval; `null` for a topic that appeared meanwhile.
    messages_per_sec: Option<f64>,
    /// Bytes per second over the interval (an upper bound when `bytes_per_sec_exact` is false).
    bytes_per_sec: Option<f64>,
    bytes_per_sec_exact: bool,
    drops: u64,
    stalls: u64,
    /// Messages published while no subscriber was attached.
    unheard: u64,
    max_lag: u64,
    publishers: Vec<PublisherStat>,
    subscribers: Vec<SubscriberStat>,
    /// Waiters sleeping on descriptors of their own (a `WaitSet`, async code).
    wakers: Vec<WakerStat>,
}

#[derive(Debug, Serialize)]
struct Report {
    socket: String,
    interval_ms: u64,
    topics: Vec<TopicRates>,
}

pub fn run(socket: &Path, args: &StatArgs) -> Result<(), CliError> {
    if let Some(t) = &args.topic {
        util::check_topic(t)?;
    }
    let bus = util::connect(socket)?;
    let interval = Duration::from_millis(args.interval_ms);
    let mut before = sample(&bus, socket, args.topic.as_deref())?;
    let mut stdout = std::io::stdout().lock();
    let on_terminal = stdout.is_terminal();
    loop {
        std::thread::sleep(interval);
        let after = sample(&bus, socket, args.topic.as_deref())?;
        let report = rates(socket, &before, &after);
        let mut text = if args.json {
            let json = if args.watch {
                serde_json::to_string(&report)
            } else {
                serde_json::to_string_pretty(&report)
            };
            json.map_err(|e| CliError::failure(format!("encoding JSON: {e}")))?
        } else {
            render(&report, args.watch)
        };
        text.push('\n');
        if args.watch && !args.json {
            if on_terminal {
                // Clear the screen and go home, like `top`.
                text.insert_str(0, "\x1b[H\x1b[2J");
            } else {
                // Into a file or a pipe: one report after another, a blank line between.
                text.push('\n');
            }
        }
        match stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Ok(()) => {}
            Err(e) if is_broken_pipe(&e) => return Ok(()),
            Err(e) => return Err(CliError::io(e, "writing to standard output")),
        }
        if !args.watch {
            return Ok(());
        }
        before = after;
    }
}

struct Sample {
    at: Instant,
    topics: Vec<TopicStats>,
}

fn sample(bus: &Bus, socket: &Path, topic: Option<&str>) -> Result<Sample, CliError> {
    let no_such = |name: &str| {
        CliError::refused(format!(
            "no topic '{name}' on {} (or access to it is denied); `shmbus list` shows the topics",
            socket.display()
        ))
    };
    let topics = match (bus.stats(topic), topic) {
        (Err(e), Some(name)) if e.code() == Some(bus_client::ErrorCode::NoSuchTopic) => {
            return Err(no_such(name))
        }
        (Err(e), _) => return Err(CliError::request(e, socket)),
        (Ok(t), Some(name)) if t.is_empty() => return Err(no_such(name)),
        (Ok(t), _) => t,
    };
    Ok(Sample {
        at: Instant::now(),
        topics,
    })
}

fn rates(socket: &Path, before: &Sample, after: &Sample) -> Report {
    let secs = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
    let topics = after
        .topics
        .iter()
        .map(|t| {
            let per_message = if t.spec.type_info.is_bytes() {
                t.spec.slot_size
            } else {
                t.spec.type_info.size
            };
            let messages_per_sec = before
                .topics
                .iter()
                .find(|b| b.name == t.name && b.published <= t.published)
                .map(|b| (t.published - b.published) as f64 / secs);
            TopicRates {
                name: t.name.clone(),
                mode: t.spec.mode.to_string(),
                type_name: util::type_label(&t.spec),
                capacity: t.spec.capacity,
                slot_size: t.spec.slot_size,
                bytes: t.bytes,
                published: t.published,
                messages_per_sec,
                bytes_per_sec: messages_per_sec.map(|r| r * f64::from(per_message)),
                bytes_per_sec_exact: !t.spec.type_info.is_bytes(),
                drops: t.drops,
                stalls: t.stalls,
                unheard: t.unheard,
                max_lag: t.subscribers.iter().map(|s| s.lag).max().unwrap_or(0),
                publishers: t.publishers.clone(),
                subscribers: t.subscribers.clone(),
                wakers: t.wakers.clone(),
            }
        })
        .collect();
    Report {
        socket: socket.display().to_string(),
        interval_ms: (secs * 1000.0).round() as u64,
        topics,
    }
}

fn render(report: &Report, watch: bool) -> String {
    let mut out = String::new();
    if watch {
        out.push_str(&format!(
            "shmbus stat: {} every {} ms (Ctrl-C to quit)\n\n",
            report.socket, report.interval_ms
        ));
    }
    if report.topics.is_empty() {
        out.push_str("no topics\n");
        return out;
    }
    let mut t = Table::new(&[
        ("TOPIC", false),
        ("MODE", false),
        ("MEMORY", true),
        ("MSG/S", true),
        ("BYTES/S", true),
        ("PUBLISHED", true),
        ("DROPS", true),
        ("STALLS", true),
        ("UNHEARD", true),
        ("PUBS", true),
        ("SUBS", true),
        ("WAITERS", true),
        ("MAX LAG", true),
    ]);
    let mut subs = Table::new(&[
        ("TOPIC", false),
        ("SUBSCRIBER", true),
        ("PID", true),
        ("CURSOR", true),
        ("LAG", true),
        ("LOST", true),
    ]);
    for r in &report.topics {
        let bytes = match r.bytes_per_sec {
            Some(b) if r.bytes_per_sec_exact || b == 0.0 => format!("{}/s", util::human_bytes(b)),
            Some(b) => format!("<={}/s", util::human_bytes(b)),
            None => "-".to_string(),
        };
        t.row(vec![
            r.name.clone(),
            r.mode.clone(),
            util::human_bytes(r.bytes as f64),
            r.messages_per_sec
                .map_or_else(|| "-".to_string(), util::human_rate),
            bytes,
            r.published.to_string(),
            r.drops.to_string(),
            r.stalls.to_string(),
            r.unheard.to_string(),
            r.publishers.len().to_string(),
            r.subscribers.len().to_string(),
            r.wakers.len().to_string(),
            r.max_lag.to_string(),
        ]);
        for s in &r.subscribers {
            subs.row(vec![
                r.name.clone(),
                s.index.to_string(),
                s.pid.to_string(),
                s.cursor.to_string(),
                s.lag.to_string(),
                s.lagged.to_string(),
            ]);
        }
    }
    out.push_str(&t.render());
    if report.topics.iter().any(|r| !r.subscribers.is_empty()) {
        out.push('\n');
        out.push_str(&subs.render());
    }
    out
}
