//! `shmbus record`: record topics into MCAP files.
//!
//! Threads: this one finds the topics to record (it watches the selected patterns: the daemon
//! announces each matching topic, those that exist and those created later, with a subscriber
//! already attached, so a new topic is recorded from its first message), one [`reader`] per
//! topic takes its
//! messages off the ring, and the [`writer`] merges them in receive-time order into
//! [`file`]s. The [`queue`] between readers and writer is bounded; `--overflow` says what a
//! reader does when it is full.

mod file;
mod queue;
mod reader;
mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bus_client::{Bus, RawSubscriber, StartAt, TopicEvent, TopicWatch, WatchError};
use bus_proto::pattern::TopicPattern;
use clap::{Args, ValueEnum};

use self::file::WriteFailure;
use self::queue::{Item, Overflow, Queue};
use self::reader::Reader;
use self::writer::{Config, MergeWriter};
use crate::error::CliError;
use crate::recording::{self, Clock};
use crate::signals;
use crate::util;

#[derive(Debug, Args)]
#[command(
    long_about = "Record topics into an MCAP file: one channel per topic, with the topic's \
geometry and type in the channel metadata; every message with its receive time (log_time) and \
bus sequence number. Any topic can be recorded, whatever its type.

Topics are named or matched by patterns (`*` is one part of a name, `**` any number of parts: \
`robot/**`). Topics that match and are created while recording are picked up. Only messages \
published after the recorder attached are recorded. A topic that does not exist yet is waited \
for, never created.

Ctrl-C or SIGTERM finishes the file (index and summary) and exits 0. A recorder killed with -9 \
leaves a file that MCAP readers read up to its last complete chunk (chunks close at least once a \
second). If the disk fills up, the file is closed at its last complete chunk and the recorder \
exits 1.

On a lossless topic, a recorder that cannot keep up holds the publishers back by default, like \
any lossless subscriber (--overflow block); with --overflow drop it keeps releasing slots and \
counts what it had to drop instead. See docs/recording.md.",
    after_help = "Examples:
  shmbus record robot/odom robot/cmd -o run1.mcap
  shmbus record --all --exclude 'debug/**' --compression lz4
  shmbus record 'md/**' --split-size 1000000000 -o md.mcap      # md_0.mcap, md_1.mcap, ..."
)]
pub struct RecordArgs {
    /// Topics or patterns to record (`robot/odom`, `robot/*`, `md/**`).
    #[arg(value_name = "TOPIC|PATTERN")]
    topics: Vec<String>,

    /// Record every topic (the pattern `**`).
    #[arg(long, short = 'a')]
    all: bool,

    /// Do not record topics matching PATTERN (may be repeated).
    #[arg(long, short = 'x', value_name = "PATTERN")]
    exclude: Vec<String>,

    /// The file to write. Default: shmbus_YYYYMMDD-HHMMSS.mcap (UTC). With a split, the parts
    /// are FILE's name with _0, _1, ... before the extension.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,

    /// Start a new file once this one holds BYTES bytes (checked when a chunk closes).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(4096..))]
    split_size: Option<u64>,

    /// Start a new file once this one spans SECS seconds of receive time.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    split_duration: Option<f64>,

    /// Chunk compression.
    #[arg(long, value_enum, default_value = "zstd")]
    compression: CompressionArg,

    /// Target uncompressed chunk size in bytes (a chunk also closes once a second).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20,
          value_parser = clap::value_parser!(u64).range(1024..=(1 << 30)))]
    chunk_size: u64,

    /// What a topic's reader does when the writer falls behind (the disk is slower than the
    /// publishers) and the queue is full. block: wait, so nothing is lost and a lossless
    /// topic's publishers wait for the recorder (if it waits longer than the daemon's stuck
    /// timeout it is evicted, and what it missed is counted as lost). drop: keep reading,
    /// drop what does not fit and count it; publishers never wait for the disk.
    #[arg(long, value_enum, default_value = "block")]
    overflow: Overflow,

    /// Bytes of messages the recorder holds in memory before --overflow applies.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20,
          value_parser = clap::value_parser!(u64).range(1 << 20..=(1 << 40)))]
    queue_size: u64,

    /// Ignored, kept so that older command lines still work: new topics are announced by the
    /// daemon, never polled for.
    #[arg(long, value_name = "MS", hide = true)]
    poll_ms: Option<u64>,
}

/// `--compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CompressionArg {
    None,
    Lz4,
    Zstd,
}

impl CompressionArg {
    fn mcap(self) -> Option<mcap::Compression> {
        match self {
            CompressionArg::None => None,
            CompressionArg::Lz4 => Some(mcap::Compression::Lz4),
            CompressionArg::Zstd => Some(mcap::Compression::Zstd),
        }
    }
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a duration: give seconds, like 60 or 0.5"
        )),
    }
}

/// Which topics to record.
struct Selection {
    include: Vec<TopicPattern>,
    exclude: Vec<TopicPattern>,
}

impl Selection {
    fn new(args: &RecordArgs) -> Result<Selection, CliError> {
        let parse = |p: &String| TopicPattern::new(p).map_err(CliError::usage);
        let mut include: Vec<TopicPattern> =
            args.topics.iter().map(parse).collect::<Result<_, _>>()?;
        if args.all {
            include.push(parse(&"**".to_string())?);
        }
        if include.is_empty() {
            return Err(CliError::usage(
                "name the topics to record (or patterns like 'robot/**'), or give --all",
            ));
        }
        let exclude = args.exclude.iter().map(parse).collect::<Result<_, _>>()?;
        Ok(Selection { include, exclude })
    }

    fn wants(&self, topic: &str) -> bool {
        self.include.iter().any(|p| p.matches(topic))
            && !self.exclude.iter().any(|p| p.matches(topic))
    }
}

pub fn run(socket: &Path, args: &RecordArgs) -> Result<(), CliError> {
    let selection = Selection::new(args)?;
    let clock = Clock::start();
    let path = args
        .output
        .clone()
        .unwrap_or_else(|| recording::default_file_name(clock.start_ns()));
    writer::check_directory(&path).map_err(CliError::usage)?;
    let bus = Arc::new(util::connect(socket)?);
    // Before any thread starts: the signals go to the signal thread only.
    let stop = signals::on_stop("finishing the recording")?;

    let memory = usize::try_from(args.queue_size / 2).unwrap_or(usize::MAX);
    let queue = Arc::new(Queue::new(memory));
    let config = Config {
        path,
        split_size: args.split_size,
        split_ns: args.split_duration.map(|s| (s * 1e9) as u64),
        compression: args.compression.mcap(),
        chunk_size: args
            .split_size
            .map_or(args.chunk_size, |s| args.chunk_size.min((s / 2).max(1024))),
        memory,
        overflow: args.overflow,
    };
    let merge = MergeWriter::new(config, queue.clone(), stop.clone());
    let writer = std::thread::Builder::new()
        .name("writer".into())
        .spawn(move || merge.run())
        .map_err(|e| CliError::failure(format!("starting the writer: {e}")))?;

    let mut finder = Finder {
        bus,
        socket,
        selection,
        queue: queue.clone(),
        clock,
        overflow: args.overflow,
        stop: stop.clone(),
        readers: BTreeMap::new(),
        sources: 0,
        refused: BTreeSet::new(),
    };
    let started = Instant::now();
    let found = finder.run();
    for (_, handle) in std::mem::take(&mut finder.readers) {
        let _ = handle.join();
    }
    let _ = queue.push(Item::Done, Overflow::Block);
    let (report, written) = writer
        .join()
        .map_err(|_| CliError::failure("the writer thread panicked"))?;
    print_report(&report, &written, started.elapsed());
    found?;
    written.map_err(|f| CliError::failure(f.message()))
}

fn print_report(report: &writer::Report, written: &Result<(), WriteFailure>, took: Duration) {
    let mut total = recording::Counts::default();
    for (topic, c) in &report.topics {
        total.add(c);
        let mut line = format!(
            "shmbus record: {topic}: {} messages, {}",
            c.messages,
            util::human_bytes(c.bytes as f64)
        );
        if c.lost > 0 {
            line.push_str(&format!(", {} lost (never seen: lag or eviction)", c.lost));
        }
        if c.dropped > 0 {
            line.push_str(&format!(", {} dropped (queue full)", c.dropped));
        }
        eprintln!("{line}");
    }
    let mut files: Vec<String> = report
        .files
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    // A failed file is named too, as what it is; the failure's own line says what it keeps.
    if let Err(f) = written {
        if f.file_left {
            files.push(format!("{} (cut short; see below)", f.path.display()));
        }
    }
    eprintln!(
        "shmbus record: {} messages on {} topics in {:.1} s into {}",
        total.messages,
        report.topics.len(),
        took.as_secs_f64(),
        if files.is_empty() {
            "no file".to_string()
        } else {
            files.join(", ")
        }
    );
}

/// Watches at most this many patterns one by one; more are watched as `**` and filtered here.
const MAX_PATTERN_WATCHES: usize = 8;

/// How often the finder looks at the stop flag while no topic comes.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// Finds the topics to record and starts a reader for each.
struct Finder<'a> {
    bus: Arc<Bus>,
    socket: &'a Path,
    selection: Selection,
    queue: Arc<Queue>,
    clock: Clock,
    overflow: Overflow,
    stop: signals::StopFlag,
    readers: BTreeMap<String, JoinHandle<()>>,
    sources: usize,
    refused: BTreeSet<String>,
}

impl Finder<'_> {
    /// The patterns to watch: the included ones, or `**` when there are many.
    fn patterns(&self) -> Vec<String> {
        if self.selection.include.len() <= MAX_PATTERN_WATCHES {
            self.selection
                .include
                .iter()
                .map(|p| p.as_str().to_string())
                .collect()
        } else {
            vec!["**".to_string()]
        }
    }

    fn watch(&self) -> Result<Vec<TopicWatch>, CliError> {
        self.patterns()
            .iter()
            .map(|p| {
                self.bus
                    .watch_topics(p)
                    .existing(StartAt::Latest)
                    .open()
                    .map_err(|e| CliError::open(e, self.socket))
            })
            .collect()
    }

    fn run(&mut self) -> Result<(), CliError> {
        let mut watches = self.watch()?;
        // From here on no matching topic is missed (tests wait for this line).
        eprintln!("shmbus record: watching {}", self.patterns().join(", "));
        let missing: Vec<&str> = self
            .selection
            .include
            .iter()
            .zip(&watches)
            .filter(|(p, w)| p.is_exact() && w.existing() == 0)
            .map(|(p, _)| p.as_str())
            .collect();
        if !missing.is_empty() && watches.len() == self.selection.include.len() {
            eprintln!(
                "shmbus record: waiting for {} to be created (Ctrl-C to stop)",
                missing.join(", ")
            );
        }
        while !self.stop.is_set() {
            let ready = readable(&watches, STOP_CHECK);
            let mut ended = false;
            for w in watches
                .iter_mut()
                .zip(&ready)
                .filter(|(_, r)| **r)
                .map(|(w, _)| w)
            {
                loop {
                    match w.try_recv() {
                        Ok(Some(TopicEvent::Created(sub))) => self.start(*sub)?,
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(WatchError::Open(e)) => {
                            eprintln!("shmbus record: not recording '{}': {e}", e.topic());
                            self.refused.insert(e.topic().to_string());
                        }
                        Err(e) => {
                            eprintln!("shmbus record: {e}");
                            ended = true;
                            break;
                        }
                    }
                }
            }
            // Readers that ended (their topic closed) may start again if it comes back.
            self.readers.retain(|_, h| !h.is_finished());
            if ended {
                // The daemon stopped or restarted: watch again once it answers.
                drop(std::mem::take(&mut watches));
                while !self.stop.is_set() {
                    match self.watch() {
                        Ok(w) => {
                            watches = w;
                            break;
                        }
                        Err(e) => {
                            eprintln!("shmbus record: {}; retrying", e.message);
                            std::thread::sleep(Duration::from_millis(500));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Record `sub`'s topic, unless it is recorded already or not selected.
    fn start(&mut self, sub: RawSubscriber) -> Result<(), CliError> {
        let name = sub.topic().to_string();
        if self.readers.contains_key(&name)
            || self.refused.contains(&name)
            || !self.selection.wants(&name)
        {
            return Ok(());
        }
        let source = self.sources;
        self.sources += 1;
        eprintln!(
            "shmbus record: recording {name} ({}, {})",
            sub.spec().mode,
            util::type_label(sub.spec())
        );
        let _ = self.queue.push(
            Item::Start {
                source,
                topic: name.clone(),
                spec: sub.spec().clone(),
                upto: self.clock.now_ns(),
            },
            Overflow::Block,
        );
        let reader = Reader::new(
            source,
            sub,
            self.bus.clone(),
            self.queue.clone(),
            self.clock,
            self.overflow,
            self.stop.clone(),
        );
        let handle = std::thread::Builder::new()
            .name(format!("read {name}"))
            .spawn(move || reader.run())
            .map_err(|e| CliError::failure(format!("starting a reader thread: {e}")))?;
        self.readers.insert(name, handle);
        Ok(())
    }
}

/// Which of `watches` have something to read, waiting at most `timeout`.
fn readable(watches: &[TopicWatch], timeout: Duration) -> Vec<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds: Vec<PollFd<'_>> = watches
        .iter()
        .map(|w| PollFd::new(w.as_fd(), PollFlags::POLLIN))
        .collect();
    let ms =
        PollTimeout::try_from(timeout.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, ms) {
        Ok(n) if n > 0 => fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect(),
        _ => vec![false; watches.len()],
    }
}
