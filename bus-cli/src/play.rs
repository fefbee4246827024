//! `shmbus play`: publish recorded messages again, in receive-time order, at the recorded pace.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bus_client::{Bus, RawPublisher, SendTimeoutError};
use bus_proto::pattern::TopicPattern;
use clap::Args;
use mcap::io::MessageReader;
use mcap::{McapError, Message};

use crate::error::CliError;
use crate::recording::{self, geometry_from_metadata};
use crate::signals::{self, StopFlag};
use crate::util;

#[derive(Debug, Args)]
#[command(
    long_about = "Publish the messages of recordings again: in receive-time (log_time) order \
across all FILEs, with the recorded gaps between them divided by --rate. Each topic is created \
with its recorded geometry and type if it does not exist; an existing topic must carry the \
recorded type. Subscribers see only what is published after they attached, so start them first.

On a lossless topic a publish waits for slow subscribers, as any publisher does; the schedule \
then slips and catches up without bursting past the recorded order. Ctrl-C stops at once and \
exits 0. A file that was not finished (its recorder was killed) is played up to its last \
complete chunk.",
    after_help = "Examples:
  shmbus play run1.mcap
  shmbus play md_0.mcap md_1.mcap --rate 10
  shmbus play run1.mcap --topics 'robot/**' --remap robot/odom:=sim/odom --loop"
)]
pub struct PlayArgs {
    /// The recordings (several are merged in receive-time order).
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,

    /// Playback speed: 2 plays twice as fast, 0.5 at half speed.
    #[arg(long, short = 'r', value_name = "R", default_value_t = 1.0, value_parser = parse_rate)]
    rate: f64,

    /// Start again from the beginning when the end is reached (until Ctrl-C).
    #[arg(long, short = 'l')]
    r#loop: bool,

    /// Skip the first SECS seconds of the recording.
    #[arg(long, value_name = "SECS", default_value_t = 0.0, value_parser = parse_offset)]
    start_offset: f64,

    /// Play only the recorded topics matching PATTERN (may be repeated; default: all).
    #[arg(long, value_name = "PATTERN")]
    topics: Vec<String>,

    /// Publish the recorded topic FROM as TO (may be repeated).
    #[arg(long, value_name = "FROM:=TO", value_parser = parse_remap)]
    remap: Vec<(String, String)>,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate: give a positive factor, like 2 or 0.5"
        )),
    }
}

fn parse_offset(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not an offset: give seconds, like 10 or 2.5"
        )),
    }
}

fn parse_remap(s: &str) -> Result<(String, String), String> {
    let (from, to) = s.split_once(":=").ok_or_else(|| {
        format!("{s:?} is not a remap: write FROM:=TO, like robot/odom:=sim/odom")
    })?;
    for name in [from, to] {
        bus_proto::names::validate_topic_name(name)
            .map_err(|e| format!("in remap {s:?}: invalid topic name {name:?}: {e}"))?;
    }
    Ok((from.to_string(), to.to_string()))
}

/// One file's messages, with the next one read ahead.
struct Stream {
    path: PathBuf,
    reader: MessageReader<BufReader<File>>,
    finished: bool,
    read: u64,
    /// An error or a panic ended it: the reader is not asked again.
    broken: bool,
}

/// How a stream ended early.
struct Damage {
    path: PathBuf,
    after: u64,
    error: String,
    /// The reader found no MCAP magic at the start.
    not_mcap: bool,
    finished: bool,
}

impl Stream {
    fn open(path: &Path) -> Result<Stream, CliError> {
        let failed =
            |e: std::io::Error| CliError::failure(format!("cannot read {}: {e}", path.display()));
        Ok(Stream {
            path: path.to_path_buf(),
            finished: recording::is_finished(path).map_err(failed)?,
            reader: recording::read_messages(path).map_err(failed)?,
            read: 0,
            broken: false,
        })
    }

    /// The next message, `None` at the end; an error ends the stream.
    fn next(&mut self) -> Result<Option<Message<'static>>, Damage> {
        if self.broken {
            return Ok(None);
        }
        let (error, not_mcap) = match recording::guarded(|| self.reader.next()) {
            Ok(None) => return Ok(None),
            Ok(Some(Ok(m))) => {
                self.read += 1;
                return Ok(Some(m));
            }
            Ok(Some(Err(e))) => (e.to_string(), matches!(e, McapError::BadMagic)),
            Err(panicked) => (panicked, false),
        };
        self.broken = true;
        Err(Damage {
            path: self.path.clone(),
            after: self.read,
            error,
            not_mcap,
            finished: self.finished,
        })
    }
}

/// Where each recorded channel goes.
struct Router<'b> {
    bus: &'b Bus,
    socket: &'b Path,
    filters: Vec<TopicPattern>,
    remap: BTreeMap<String, String>,
    /// By (file, channel id): the publisher's topic, or `None` for a skipped channel.
    channels: BTreeMap<(usize, u16), Option<String>>,
    publishers: BTreeMap<String, RawPublisher>,
    counts: BTreeMap<String, u64>,
    skipped_too_large: BTreeMap<String, u64>,
}

impl Router<'_> {
    /// The publisher for a message of file `file`, opening it at its channel's first message.
    fn route(
        &mut self,
        file: usize,
        message: &Message<'_>,
    ) -> Result<Option<&mut RawPublisher>, CliError> {
        let channel = &message.channel;
        let key = (file, channel.id);
        if !self.channels.contains_key(&key) {
            let target = self.open(channel)?;
            self.channels.insert(key, target);
        }
        Ok(match self.channels.get(&key) {
            Some(Some(topic)) => self.publishers.get_mut(topic),
            _ => None,
        })
    }

    fn open(&mut self, channel: &mcap::Channel<'_>) -> Result<Option<String>, CliError> {
        let recorded = &channel.topic;
        if !self.filters.is_empty() && !self.filters.iter().any(|p| p.matches(recorded)) {
            return Ok(None);
        }
        let topic = self.remap.get(recorded).unwrap_or(recorded).clone();
        if self.publishers.contains_key(&topic) {
            return Ok(Some(topic));
        }
        if let Err(e) = bus_proto::names::validate_topic_name(&topic) {
            eprintln!("shmbus play: skipping recorded topic {recorded:?}: not a valid topic name ({e}); --remap it");
            return Ok(None);
        }
        let spec = match geometry_from_metadata(&channel.metadata) {
            Ok(spec) => spec,
            Err(why) => {
                eprintln!("shmbus play: skipping recorded topic '{recorded}': {why} (not recorded by shmbus record?)");
                return Ok(None);
            }
        };
        let publisher = self
            .bus
            .raw_publisher(&topic)
            .open_or_create(spec)
            .map_err(|e| CliError::open(e, self.socket))?;
        eprintln!(
            "shmbus play: publishing {topic}{} ({}, {})",
            if topic == *recorded {
                String::new()
            } else {
                format!(" (recorded as {recorded})")
            },
            publisher.spec().mode,
            util::type_label(publisher.spec())
        );
        self.publishers.insert(topic.clone(), publisher);
        Ok(Some(topic))
    }
}

pub fn run(socket: &Path, args: &PlayArgs) -> Result<(), CliError> {
    let filters = args
        .topics
        .iter()
        .map(|p| TopicPattern::new(p).map_err(CliError::usage))
        .collect::<Result<Vec<_>, _>>()?;
    // Every file must open and begin like an MCAP file before anything is published.
    for path in &args.files {
        let mut stream = Stream::open(path)?;
        if let Err(d) = stream.next() {
            // A killed recorder's file may hold no complete chunk yet: empty, not damaged.
            if d.finished || d.not_mcap {
                return Err(CliError::failure(format!(
                    "{} is not a readable MCAP file: {}",
                    path.display(),
                    d.error
                )));
            }
        }
    }
    let bus = util::connect(socket)?;
    recording::quiet_reader_panics();
    let stop = signals::on_stop("stopping playback")?;
    let mut router = Router {
        bus: &bus,
        socket,
        filters,
        remap: args.remap.iter().cloned().collect(),
        channels: BTreeMap::new(),
        publishers: BTreeMap::new(),
        counts: BTreeMap::new(),
        skipped_too_large: BTreeMap::new(),
    };
    let started = Instant::now();
    let mut damaged = Vec::new();
    loop {
        router.channels.clear();
        damaged.clear();
        play_once(args, &mut router, &stop, &mut damaged)?;
        if !args.r#loop || stop.is_set() {
            break;
        }
    }
    let total: u64 = router.counts.values().sum();
    for (topic, n) in &router.skipped_too_large {
        eprintln!("shmbus play: {topic}: {n} messages did not fit the topic and were skipped");
    }
    eprintln!(
        "shmbus play: published {total} messages on {} topics in {:.3} s{}",
        router.counts.len(),
        started.elapsed().as_secs_f64(),
        if stop.is_set() { " (stopped)" } else { "" }
    );
    let mut corrupt = None;
    for d in &damaged {
        if d.finished {
            eprintln!(
                "shmbus play: {} is damaged after {} messages: {}",
                d.path.display(),
                d.after,
                d.error
            );
            corrupt.get_or_insert_with(|| d.path.display().to_string());
        } else {
            eprintln!(
                "shmbus play: {} was not finished (its recorder was killed): played its {} messages up to the last complete chunk",
                d.path.display(),
                d.after
            );
        }
    }
    match corrupt {
        Some(path) => Err(CliError::failure(format!(
            "{path} is damaged; the messages before the damage were played"
        ))),
        None => Ok(()),
    }
}

/// One pass over all files.
fn play_once(
    args: &PlayArgs,
    router: &mut Router<'_>,
    stop: &StopFlag,
    damaged: &mut Vec<Damage>,
) -> Result<(), CliError> {
    let mut streams = Vec::new();
    let mut heads: Vec<Option<Message<'static>>> = Vec::new();
    let mut order = BinaryHeap::new();
    for path in &args.files {
        let mut s = Stream::open(path)?;
        let head = s.next().unwrap_or_else(|d| {
            damaged.push(d);
            None
        });
        if let Some(m) = &head {
            order.push(Reverse((m.log_time, streams.len())));
        }
        heads.push(head);
        streams.push(s);
    }
    let Some(&Reverse((first, _))) = order.peek() else {
        return Ok(());
    };
    let offset_ns = (args.start_offset * 1e9) as u64;
    let from = first.saturating_add(offset_ns);
    let mut clock: Option<(Instant, u64)> = None;
    while let Some(Reverse((_, i))) = order.pop() {
        if stop.is_set() {
            return Ok(());
        }
        let Some(message) = heads.get_mut(i).and_then(Option::take) else {
            continue;
        };
        if let Some(s) = streams.get_mut(i) {
            match s.next() {
                Ok(Some(m)) => {
                    order.push(Reverse((m.log_time, i)));
                    heads[i] = Some(m);
                }
                Ok(None) => {}
                Err(d) => damaged.push(d),
            }
        }
        if message.log_time < from {
            continue;
        }
        let (start, base) = *clock.get_or_insert((Instant::now(), message.log_time));
        let offset = message.log_time.saturating_sub(base) as f64 / 1e9 / args.rate;
        // Past what an Instant can hold (centuries): wait until stopped.
        let due = Duration::try_from_secs_f64(offset)
            .ok()
            .and_then(|d| start.checked_add(d));
        if !sleep_until(due, stop) {
            return Ok(());
        }
        publish(router, i, &message, stop)?;
    }
    Ok(())
}

/// Sleep until `due` (`None`: forever), in slices that watch `stop`; false if stopped.
fn sleep_until(due: Option<Instant>, stop: &StopFlag) -> bool {
    loop {
        if stop.is_set() {
            return false;
        }
        let now = Instant::now();
        let left = match due {
            Some(due) if now >= due => return true,
            Some(due) => due - now,
            None => Duration::MAX,
        };
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

fn publish(
    router: &mut Router<'_>,
    file: usize,
    message: &Message<'_>,
    stop: &StopFlag,
) -> Result<(), CliError> {
    let Some(publisher) = router.route(file, message)? else {
        return Ok(());
    };
    let topic = publisher.topic().to_string();
    loop {
        match publisher.send_timeout(&message.data, Duration::from_millis(50)) {
            Ok(_) => break,
            Err(SendTimeoutError::Timeout) => {
                if stop.is_set() {
                    return Ok(());
                }
            }
            Err(SendTimeoutError::TooLarge(_) | SendTimeoutError::WrongSize { .. }) => {
                *router.skipped_too_large.entry(topic).or_default() += 1;
                return Ok(());
            }
            Err(SendTimeoutError::Closed) => {
                return Err(CliError::failure(format!(
                    "topic '{topic}' was closed (the daemon stopped or the topic was deleted)"
                )))
            }
            Err(e) => return Err(CliError::failure(format!("publishing on '{topic}': {e}"))),
        }
    }
    *router.counts.entry(topic).or_default() += 1;
    Ok(())
}
