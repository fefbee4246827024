//! Kernel IPC baselines, the shared-memory floors (`raw_floor`, `spsc_floor`) and the
//! shared-memory baselines with semaphores and signals, each a [`Contender`], and tokio's
//! `UnixStream` (the async reference of `asyncwake`).
//!
//! All of them run as real separate processes. The byte-stream baselines
//! (pipe, FIFO, Unix stream, TCP) frame messages by the run's fixed payload
//! size — the most favourable framing for them (one `read_exact` per message,
//! no length header) — and handle partial reads and writes.

pub mod fifo;
pub mod mqueue;
pub mod pipe;
pub mod raw_floor;
pub(crate) mod shm;
pub mod shm_sem;
pub mod signal;
pub mod spsc_floor;
pub mod tcp;
pub mod tokio_unix;
pub mod unix_seqpacket;
pub mod unix_stream;
pub(crate) mod wire;

use crate::transport::Contender;

/// Every baseline, in report order.
pub fn all() -> Vec<Box<dyn Contender>> {
    let [tokio_unix_ct, tokio_unix_mt] = tokio_unix::contenders();
    vec![
        Box::new(raw_floor::RawFloor),
        Box::new(spsc_floor::SpscFloor),
        Box::new(pipe::Pipe),
        Box::new(fifo::Fifo),
        Box::new(unix_stream::UnixStreamSocket),
        Box::new(tokio_unix_ct),
        Box::new(tokio_unix_mt),
        Box::new(unix_seqpacket::UnixSeqpacket),
        Box::new(mqueue::MessageQueue),
        Box::new(tcp::TcpLoopback),
        Box::new(shm_sem::ShmSemaphore),
        Box::new(signal::Signals),
    ]
}
