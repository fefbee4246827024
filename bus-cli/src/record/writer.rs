//! The writer thread: merges the readers' batches into one stream in receive-time order and
//! writes it into MCAP files, starting a new file when a split limit is reached.
//!
//! Order: each reader's messages come in receive order, and each batch says that the reader's
//! later messages are received at or after its `upto`. So every buffered message received at or
//! before the smallest `upto` of the live readers (the watermark) can be written, smallest
//! receive time first, and no later batch can put one before it. A quiet reader still reports
//! its clock every few milliseconds, so the watermark keeps moving.
//!
//! Memory: the writer takes batches off the queue while it holds less than its limit, or when
//! it cannot write anything it holds (the watermark waits for a batch still in the queue).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bus_client::Geometry;
use mcap::{Compression, McapError};

use super::file::{File, WriteFailure};
use super::queue::{Batch, Item, Overflow, Queue};
use crate::recording::{self, Counts, TopicCounts, LIBRARY};
use crate::signals::StopFlag;

/// A chunk is closed at least this often, so that a killed recorder loses at most this much.
const CHUNK_AGE: Duration = Duration::from_secs(1);

/// Where and how to write.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file, or the base name of the parts of a split recording.
    pub path: PathBuf,
    /// Start a new file past this many bytes.
    pub split_size: Option<u64>,
    /// Start a new file past this much receive time.
    pub split_ns: Option<u64>,
    /// Chunk compression.
    pub compression: Option<Compression>,
    /// Target uncompressed chunk size.
    pub chunk_size: u64,
    /// Payload bytes the writer holds at most while it can write.
    pub memory: usize,
    /// What readers do when the queue is full (recorded in each file's metadata).
    pub overflow: Overflow,
}

impl Config {
    fn split(&self) -> bool {
        self.split_size.is_some() || self.split_ns.is_some()
    }

    fn file_name(&self, part: u32) -> PathBuf {
        if self.split() {
            recording::split_file_name(&self.path, part)
        } else {
            self.path.clone()
        }
    }
}

/// One topic's reader, as the writer sees it.
struct Source {
    topic: String,
    spec: Geometry,
    batches: VecDeque<Batch>,
    /// The next entry of the front batch, and where its payload starts.
    next: usize,
    offset: usize,
    upto: u64,
    ended: bool,
    /// Its channel in the current file.
    channel: Option<u16>,
    file: Counts,
}

impl Source {
    fn head_time(&self) -> Option<u64> {
        let b = self.batches.front()?;
        b.entries.get(self.next).map(|e| e.log_time)
    }
}

/// What the recording made.
#[derive(Debug, Default)]
pub struct Report {
    /// The files, in order.
    pub files: Vec<PathBuf>,
    /// Counts per topic, over all files.
    pub topics: BTreeMap<String, Counts>,
}

/// A failure inside the writer: an error of the open file (still to be salvaged), or a file
/// already salvaged.
enum Fail {
    Mcap(McapError),
    Salvaged(WriteFailure),
}

impl From<McapError> for Fail {
    fn from(e: McapError) -> Fail {
        Fail::Mcap(e)
    }
}

impl From<WriteFailure> for Fail {
    fn from(f: WriteFailure) -> Fail {
        Fail::Salvaged(f)
    }
}

/// Merges and writes; see the module docs.
pub struct MergeWriter {
    config: Config,
    queue: Arc<Queue>,
    stop: StopFlag,
    sources: Vec<Option<Source>>,
    /// Sources with buffered messages, by their next message's receive time.
    heads: BinaryHeap<Reverse<(u64, usize)>>,
    buffered: usize,
    watermark: u64,
    done: bool,
    file: Option<File>,
    part: u32,
    report: Report,
}

impl MergeWriter {
    /// A writer that takes items from `queue` and writes as `config` says.
    pub fn new(config: Config, queue: Arc<Queue>, stop: StopFlag) -> MergeWriter {
        MergeWriter {
            config,
            queue,
            stop,
            sources: Vec::new(),
            heads: BinaryHeap::new(),
            buffered: 0,
            watermark: u64::MAX,
            done: false,
            file: None,
            part: 0,
            report: Report::default(),
        }
    }

    /// Write until the queue says [`Item::Done`] and every reader has ended. On a failure the
    /// recording is asked to stop, the queue is drained, and the failure comes back with what
    /// was written before it.
    pub fn run(mut self) -> (Report, Result<(), WriteFailure>) {
        let result = self.write_all();
        if result.is_err() {
            self.stop.set();
            while !self.done {
                if let Some(Item::Done) = self.queue.pop(Duration::from_millis(50)) {
                    self.done = true;
                }
            }
        }
        for s in self.sources.iter().flatten() {
            let total = self.report.topics.entry(s.topic.clone()).or_default();
            total.add(&s.file);
        }
        (self.report, result)
    }

    fn write_all(&mut self) -> Result<(), WriteFailure> {
        self.open(0).map_err(|f| self.fail(f.into()))?;
        loop {
            let writable = self.writable();
            if self.buffered < self.config.memory || !writable {
                let wait = if writable {
                    Duration::ZERO
                } else {
                    Duration::from_millis(20)
                };
                let mut next = self.queue.pop(wait);
                let mut taken = 0;
                while let Some(item) = next {
                    self.take(item).map_err(|e| self.fail(e))?;
                    taken += 1;
                    if taken >= 256 || self.buffered >= self.config.memory {
                        break;
                    }
                    next = self.queue.pop(Duration::ZERO);
                }
            }
            self.write_ready().map_err(|e| self.fail(e))?;
            let stale = self
                .file
                .as_ref()
                .and_then(File::chunk_opened)
                .is_some_and(|t| t.elapsed() >= CHUNK_AGE);
            if stale {
                self.close_chunk().map_err(|e| self.fail(e))?;
            }
            if self.done && self.heads.is_empty() && self.sources.iter().flatten().all(|s| s.ended)
            {
                return self.finish_file().map_err(|f| self.fail(f.into()));
            }
        }
    }

    /// Turn a failure into one whose file was salvaged.
    fn fail(&mut self, fail: Fail) -> WriteFailure {
        match fail {
            Fail::Salvaged(f) => f,
            Fail::Mcap(error) => match self.file.take() {
                Some(file) => file.salvage(error),
                None => WriteFailure {
                    path: self.config.file_name(self.part),
                    error,
                    kept: "no file was open".into(),
                    file_left: false,
                },
            },
        }
    }

    fn take(&mut self, item: Item) -> Result<(), Fail> {
        match item {
            Item::Start {
                source,
                topic,
                spec,
                upto,
            } => {
                if self.sources.len() <= source {
                    self.sources.resize_with(source + 1, || None);
                }
                let channel = match self.file.as_mut() {
                    Some(f) => Some(f.add_channel(&topic, &spec)?),
                    None => None,
                };
                self.sources[source] = Some(Source {
                    topic,
                    spec,
                    batches: VecDeque::new(),
                    next: 0,
                    offset: 0,
                    upto,
                    ended: false,
                    channel,
                    file: Counts::default(),
                });
            }
            Item::Batch(batch) => {
                let Some(Some(s)) = self.sources.get_mut(batch.source) else {
                    return Ok(());
                };
                s.file.lost += batch.lost;
                s.file.dropped += batch.dropped;
                s.upto = s.upto.max(batch.upto);
                if !batch.entries.is_empty() {
                    let index = batch.source;
                    let was_idle = s.head_time().is_none();
                    self.buffered += batch.data.len();
                    s.batches.push_back(batch);
                    if was_idle {
                        if let Some(t) = s.head_time() {
                            self.heads.push(Reverse((t, index)));
                        }
                    }
                }
            }
            Item::End { source } => {
                if let Some(Some(s)) = self.sources.get_mut(source) {
                    s.ended = true;
                }
            }
            Item::Done => self.done = true,
        }
        self.watermark = self
            .sources
            .iter()
            .flatten()
            .filter(|s| !s.ended)
            .map(|s| s.upto)
            .min()
            .unwrap_or(u64::MAX);
        Ok(())
    }

    fn writable(&self) -> bool {
        self.heads
            .peek()
            .is_some_and(|Reverse((t, _))| *t <= self.watermark)
    }

    /// Write every buffered message received at or before the watermark, oldest first.
    fn write_ready(&mut self) -> Result<(), Fail> {
        while let Some(&Reverse((t, index))) = self.heads.peek() {
            if t > self.watermark {
                break;
            }
            self.heads.pop();
            if let Some(split_ns) = self.config.split_ns {
                let first = self.file.as_ref().and_then(|f| f.first_log_time);
                if first.is_some_and(|first| t.saturating_sub(first) >= split_ns) {
                    self.next_file()?;
                }
            }
            let closed = self.write_head(index)?;
            if let Some(Some(s)) = self.sources.get(index) {
                if let Some(t) = s.head_time() {
                    self.heads.push(Reverse((t, index)));
                }
            }
            if closed {
                self.after_chunk()?;
            }
        }
        Ok(())
    }

    /// Write the next message of source `index`; returns whether a chunk was closed.
    fn write_head(&mut self, index: usize) -> Result<bool, McapError> {
        let (Some(Some(s)), Some(file)) = (self.sources.get_mut(index), self.file.as_mut()) else {
            return Ok(false);
        };
        let channel = match s.channel {
            Some(c) => c,
            None => {
                let c = file.add_channel(&s.topic, &s.spec)?;
                s.channel = Some(c);
                c
            }
        };
        let Some(batch) = s.batches.front() else {
            return Ok(false);
        };
        let Some(entry) = batch.entries.get(s.next).copied() else {
            return Ok(false);
        };
        let end = s.offset + entry.len as usize;
        let payload = batch.data.get(s.offset..end).unwrap_or_default();
        let closed = file.write(
            channel,
            entry.sequence,
            entry.log_time,
            payload,
            self.config.chunk_size,
        )?;
        s.file.messages += 1;
        s.file.bytes += u64::from(entry.len);
        s.next += 1;
        s.offset = end;
        if s.next >= batch.entries.len() {
            let data = batch.data.len();
            s.batches.pop_front();
            s.next = 0;
            s.offset = 0;
            self.buffered = self.buffered.saturating_sub(data);
        }
        Ok(closed)
    }

    fn close_chunk(&mut self) -> Result<(), Fail> {
        if let Some(f) = self.file.as_mut() {
            f.close_chunk()?;
        }
        self.after_chunk()
    }

    /// After a chunk closed: start the next file if this one reached the split size.
    fn after_chunk(&mut self) -> Result<(), Fail> {
        let full = match (self.config.split_size, self.file.as_ref()) {
            (Some(limit), Some(f)) => f.size() >= limit,
            _ => false,
        };
        if full {
            self.next_file()?;
        }
        Ok(())
    }

    fn next_file(&mut self) -> Result<(), Fail> {
        self.finish_file()?;
        self.part += 1;
        Ok(self.open(self.part)?)
    }

    fn open(&mut self, part: u32) -> Result<(), WriteFailure> {
        let path = self.config.file_name(part);
        let mut file = File::create(&path, self.config.compression)?;
        eprintln!("shmbus record: writing {}", path.display());
        for s in self.sources.iter_mut().flatten() {
            s.channel = None;
            if !s.ended {
                match file.add_channel(&s.topic, &s.spec) {
                    Ok(c) => s.channel = Some(c),
                    Err(e) => return Err(file.salvage(e)),
                }
            }
        }
        self.file = Some(file);
        Ok(())
    }

    /// Close the current file with the recorder's counts, its summary and footer.
    fn finish_file(&mut self) -> Result<(), WriteFailure> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let mut topics = Vec::new();
        for s in self.sources.iter_mut().flatten() {
            if s.channel.is_some() || s.file != Counts::default() {
                topics.push(TopicCounts {
                    topic: s.topic.clone(),
                    counts: s.file,
                });
            }
            let total = self.report.topics.entry(s.topic.clone()).or_default();
            total.add(&s.file);
            s.file = Counts::default();
        }
        let metadata = BTreeMap::from([
            ("recorder".to_string(), LIBRARY.to_string()),
            (
                "overflow".to_string(),
                match self.config.overflow {
                    Overflow::Block => "block",
                    Overflow::Drop => "drop",
                }
                .to_string(),
            ),
            (
                "topics".to_string(),
                serde_json::to_string(&topics).unwrap_or_default(),
            ),
        ]);
        let path = file.finish(metadata)?;
        self.report.files.push(path);
        Ok(())
    }
}

/// Whether `path`'s directory exists (a clearer error than the writer's).
pub fn check_directory(path: &Path) -> Result<(), String> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => Err(format!(
            "cannot write {}: directory {} does not exist",
            path.display(),
            dir.display()
        )),
        _ => Ok(()),
    }
}
