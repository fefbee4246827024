//! The queue between the topic readers and the file writer: items in order, bounded in bytes.
//!
//! A reader either waits for room ([`Overflow::Block`]: a lossless topic then holds its
//! publishers back, as a slow lossless subscriber does) or drops its batch when the queue is
//! full ([`Overflow::Drop`]: the reader keeps releasing slots, so publishers never wait on the
//! disk, and the dropped messages are counted). Items that carry no payload (a topic starting
//! or ending, a reader's clock) are always admitted, so that the writer always learns how far
//! each reader has got.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use bus_client::Geometry;

/// What a reader does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Overflow {
    /// Wait for the writer: nothing is lost; a lossless topic's publishers wait too.
    Block,
    /// Drop the batch and count it: publishers never wait for the disk.
    Drop,
}

/// One message in a [`Batch`]: its payload is the next `len` bytes of the batch's data.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Receive time, nanoseconds since the epoch.
    pub log_time: u64,
    /// The bus sequence number.
    pub sequence: u64,
    /// Payload length.
    pub len: u32,
}

/// Messages of one topic in receive order, with the reader's progress.
#[derive(Debug, Default)]
pub struct Batch {
    /// The reader.
    pub source: usize,
    /// Every later message of this reader is received at or after this time.
    pub upto: u64,
    /// The payloads, one after the other.
    pub data: Vec<u8>,
    /// The messages.
    pub entries: Vec<Entry>,
    /// Messages the reader missed since its last batch (sequence gaps: lag on a lossy topic,
    /// an eviction).
    pub lost: u64,
    /// Messages the reader dropped since its last batch because the queue was full.
    pub dropped: u64,
}

/// What travels from the readers (and the topic finder) to the writer.
#[derive(Debug)]
pub enum Item {
    /// A reader starts on `topic`; its messages are received at or after `upto`.
    Start {
        /// The reader.
        source: usize,
        /// The topic.
        topic: String,
        /// Its geometry and type.
        spec: Geometry,
        /// The time before the reader attached.
        upto: u64,
    },
    /// Messages, or only progress (no entries).
    Batch(Batch),
    /// A reader is done; nothing more comes from it.
    End {
        /// The reader.
        source: usize,
    },
    /// No reader will start any more: finish once every reader has ended.
    Done,
}

impl Item {
    fn bytes(&self) -> usize {
        match self {
            Item::Batch(b) => b.data.len() + b.entries.len() * std::mem::size_of::<Entry>(),
            _ => 0,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Item>,
    bytes: usize,
}

/// A FIFO of [`Item`]s bounded in payload bytes.
#[derive(Debug)]
pub struct Queue {
    state: Mutex<State>,
    filled: Condvar,
    drained: Condvar,
    limit: usize,
}

impl Queue {
    /// A queue that holds at most `limit` bytes of batches (one batch is always admitted).
    pub fn new(limit: usize) -> Queue {
        Queue {
            state: Mutex::new(State::default()),
            filled: Condvar::new(),
            drained: Condvar::new(),
            limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A thread that panicked while holding the lock left the queue consistent (every
        // change is one push or pop): carry on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add `item`. A batch that does not fit waits for room (`Block`) or comes back
    /// (`Drop`).
    pub fn push(&self, item: Item, overflow: Overflow) -> Result<(), Item> {
        let n = item.bytes();
        let mut s = self.lock();
        while n > 0 && s.bytes > 0 && s.bytes + n > self.limit {
            if overflow == Overflow::Drop {
                return Err(item);
            }
            s = self.drained.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.bytes += n;
        s.items.push_back(item);
        drop(s);
        self.filled.notify_one();
        Ok(())
    }

    /// Take the oldest item, waiting at most `timeout` for one.
    pub fn pop(&self, timeout: Duration) -> Option<Item> {
        let mut s = self.lock();
        if s.items.is_empty() {
            s = self
                .filled
                .wait_timeout(s, timeout)
                .map(|(s, _)| s)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        let item = s.items.pop_front()?;
        s.bytes -= item.bytes();
        drop(s);
        self.drained.notify_all();
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(bytes: usize) -> Item {
        Item::Batch(Batch {
            data: vec![0; bytes],
            ..Batch::default()
        })
    }

    #[test]
    fn drop_mode_hands_back_a_batch_that_does_not_fit_but_admits_progress() {
        let q = Queue::new(100);
        q.push(batch(80), Overflow::Drop).unwrap();
        assert!(q.push(batch(80), Overflow::Drop).is_err());
        q.push(batch(0), Overflow::Drop).unwrap();
        q.push(Item::End { source: 0 }, Overflow::Drop).unwrap();
        assert!(matches!(q.pop(Duration::ZERO), Some(Item::Batch(_))));
        q.push(batch(80), Overflow::Drop).unwrap();
    }

    #[test]
    fn block_mode_waits_for_room() {
        let q = std::sync::Arc::new(Queue::new(100));
        q.push(batch(80), Overflow::Block).unwrap();
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.push(batch(80), Overflow::Block).is_ok());
        std::thread::sleep(Duration::from_millis(50));
        assert!(!t.is_finished(), "a full queue must hold the pusher back");
        assert!(q.pop(Duration::from_secs(1)).is_some());
        assert!(t.join().unwrap());
        assert!(q.pop(Duration::from_secs(1)).is_some());
        assert!(q.pop(Duration::from_millis(1)).is_none());
    }

    #[test]
    fn one_batch_larger_than_the_limit_is_admitted_into_an_empty_queue() {
        let q = Queue::new(10);
        q.push(batch(1000), Overflow::Drop).unwrap();
    }
}
