//! One thread per recorded topic: takes its messages off the ring as soon as they arrive,
//! stamps each with its receive time, and hands them to the writer in batches.
//!
//! A batch is sent when it is full or when the ring is empty, so a message waits at most the
//! time it takes to fill a batch. While the topic is quiet the reader still reports its clock
//! every [`PROGRESS`], which is what lets the writer put messages of all topics in time order
//! without waiting for a quiet topic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bus_client::{Bus, RawSample, RawSubscriber, RecvTimeoutError, StartAt, TryRecvError};

use super::queue::{Batch, Entry, Item, Overflow, Queue};
use crate::recording::Clock;
use crate::signals::StopFlag;

/// A batch is sent once it holds this many payload bytes...
const BATCH_BYTES: usize = 256 * 1024;
/// ...or this many messages.
const BATCH_MESSAGES: usize = 4096;
/// How often a quiet reader tells the writer its clock.
pub const PROGRESS: Duration = Duration::from_millis(20);

/// Reads one topic for the writer.
pub struct Reader {
    sub: RawSubscriber,
    out: Out,
}

/// Everything but the subscriber, so that a sample (which borrows the subscriber) can be
/// added while the rest is borrowed mutably.
struct Out {
    source: usize,
    topic: String,
    bus: Arc<Bus>,
    queue: Arc<Queue>,
    clock: Clock,
    overflow: Overflow,
    stop: StopFlag,
    batch: Batch,
    next_sequence: Option<u64>,
    last_sent: Instant,
}

/// What a receive that brought no message means.
enum Next {
    Nothing,
    Closed,
    Evicted,
    Failed(String),
}

/// Why a reader stops.
enum Stop {
    /// The recording is stopping.
    Asked,
    /// The topic was closed (deleted, or the daemon stopped).
    Closed,
    /// The reader cannot go on; the sentence says why.
    Failed(String),
}

impl Reader {
    /// A reader for `sub`, the `source`-th topic of the recording.
    pub fn new(
        source: usize,
        sub: RawSubscriber,
        bus: Arc<Bus>,
        queue: Arc<Queue>,
        clock: Clock,
        overflow: Overflow,
        stop: StopFlag,
    ) -> Reader {
        Reader {
            out: Out {
                source,
                topic: sub.topic().to_string(),
                bus,
                queue,
                clock,
                overflow,
                stop,
                batch: Batch {
                    source,
                    ..Batch::default()
                },
                next_sequence: None,
                last_sent: Instant::now(),
            },
            sub,
        }
    }

    /// Read until the recording stops or the topic goes away, then tell the writer.
    pub fn run(mut self) {
        let end = self.read();
        match end {
            Stop::Asked => {}
            Stop::Closed => eprintln!("shmbus record: topic '{}' closed", self.out.topic),
            Stop::Failed(why) => eprintln!("shmbus record: topic '{}': {why}", self.out.topic),
        }
        let now = self.out.clock.now_ns();
        self.out.send(now);
        let source = self.out.source;
        // An End carries no payload: always admitted.
        let _ = self.out.queue.push(Item::End { source }, Overflow::Block);
    }

    fn read(&mut self) -> Stop {
        loop {
            if self.out.stop.is_set() {
                self.drain();
                return Stop::Asked;
            }
            // Take everything the ring holds.
            loop {
                let next = match self.sub.try_recv() {
                    Ok(sample) => {
                        self.out.add(&sample);
                        continue;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Lagged(_)) => Next::Nothing, // counted from the sequence
                    Err(TryRecvError::Closed) => Next::Closed,
                    Err(TryRecvError::Evicted) => Next::Evicted,
                    Err(e) => Next::Failed(e.to_string()),
                };
                if let Some(stop) = self.handle(next) {
                    return stop;
                }
            }
            let now = self.out.clock.now_ns();
            if !self.out.batch.entries.is_empty() || self.out.last_sent.elapsed() >= PROGRESS {
                self.out.send(now);
            }
            // Then wait for the next message.
            let next = match self.sub.recv_timeout(PROGRESS) {
                Ok(sample) => {
                    self.out.add(&sample);
                    Next::Nothing
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Lagged(_)) => Next::Nothing,
                Err(RecvTimeoutError::Closed) => Next::Closed,
                Err(RecvTimeoutError::Evicted) => Next::Evicted,
                Err(e) => Next::Failed(e.to_string()),
            };
            if let Some(stop) = self.handle(next) {
                return stop;
            }
        }
    }

    /// On stop: take what the ring held when the stop came (at most a ring's worth, so that a
    /// publisher that keeps publishing cannot hold the recorder open).
    fn drain(&mut self) {
        for _ in 0..self.sub.spec().capacity {
            match self.sub.try_recv() {
                Ok(sample) => self.out.add(&sample),
                Err(TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
    }

    fn handle(&mut self, next: Next) -> Option<Stop> {
        match next {
            Next::Nothing => None,
            Next::Closed => Some(Stop::Closed),
            Next::Evicted => self.reattach().err().map(Stop::Failed),
            Next::Failed(why) => Some(Stop::Failed(why)),
        }
    }

    /// The daemon detached this subscriber (it held a lossless topic back too long): attach
    /// anew at the newest message; the sequence numbers count what was missed.
    fn reattach(&mut self) -> Result<(), String> {
        eprintln!(
            "shmbus record: topic '{}': evicted for holding the lossless topic back too long (the disk is slower than the publishers); attaching again, the missed messages are counted as lost",
            self.out.topic
        );
        let sub = self
            .out
            .bus
            .raw_subscriber(&self.out.topic)
            .start_at(StartAt::Latest)
            .open()
            .map_err(|e| format!("attaching again after an eviction: {e}"))?;
        if sub.spec() != self.sub.spec() {
            return Err("the topic was created anew with another geometry".into());
        }
        self.sub = sub;
        Ok(())
    }
}

impl Out {
    fn add(&mut self, sample: &RawSample<'_>) {
        let log_time = self.clock.now_ns();
        let sequence = sample.sequence();
        if let Some(expected) = self.next_sequence {
            self.batch.lost += sequence.saturating_sub(expected);
        }
        self.next_sequence = Some(sequence.wrapping_add(1));
        let bytes = sample.bytes();
        self.batch.data.extend_from_slice(bytes);
        self.batch.entries.push(Entry {
            log_time,
            sequence,
            // A slot is at most 1 GiB.
            len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
        });
        if self.batch.data.len() >= BATCH_BYTES || self.batch.entries.len() >= BATCH_MESSAGES {
            // Later messages are stamped at or after this one.
            self.send(log_time);
        }
    }

    /// Send the batch (possibly empty: progress only), stating that every later message is
    /// received at or after `upto`.
    fn send(&mut self, upto: u64) {
        let capacity = BATCH_BYTES.min(self.batch.data.capacity());
        let mut batch = std::mem::replace(
            &mut self.batch,
            Batch {
                source: self.source,
                data: Vec::with_capacity(capacity),
                ..Batch::default()
            },
        );
        batch.upto = upto;
        self.last_sent = Instant::now();
        if let Err(Item::Batch(mut refused)) = self.queue.push(Item::Batch(batch), self.overflow) {
            // The queue is full and the recorder drops rather than wait: count the messages
            // and still report progress (a batch without messages is always admitted).
            refused.dropped += refused.entries.len() as u64;
            refused.entries.clear();
            refused.data.clear();
            let _ = self.queue.push(Item::Batch(refused), self.overflow);
        }
    }
}
