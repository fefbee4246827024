//! Topic creation off the event loop.
//!
//! Creating a topic reserves and zeroes its memory up front (`fallocate`, so that a shortage is
//! an error now and never a `SIGBUS` later), which takes long for a large topic: a second or
//! more for a GiB. The event loop hands each creation to a small pool of worker threads and
//! serves everyone else meanwhile; a worker sends the segment back and wakes the loop through
//! its `mio::Waker`. Workers touch nothing of the registry: they only make segments.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bus_core::layout::Layout;
use bus_proto::segment::MapError;

use crate::segment::{create_segment, Segment};

/// Worker threads: creations of large topics run side by side, up to this many at once.
const WORKERS: usize = 4;

/// A segment to make, and who asked (the loop's own bookkeeping, handed back with the result).
pub(super) struct Job<T> {
    pub(super) name: String,
    pub(super) layout: Layout,
    pub(super) tag: T,
}

/// A finished creation.
pub(super) struct Done<T> {
    pub(super) name: String,
    pub(super) made: Result<Segment, MapError>,
    pub(super) tag: T,
}

/// The pool: jobs in, results out (then the loop is woken).
pub(super) struct Creator<T> {
    jobs: Option<Sender<Job<T>>>,
    done: Receiver<Done<T>>,
    workers: Vec<JoinHandle<()>>,
    /// Set at stop: jobs still queued are dropped unmade.
    cancel: Arc<AtomicBool>,
}

impl<T: Send + 'static> Creator<T> {
    /// Start the workers; `wake` is called after each result is sent.
    pub(super) fn start(wake: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Creator<T>> {
        let (jobs, rx) = mpsc::channel::<Job<T>>();
        let (tx, done) = mpsc::channel::<Done<T>>();
        let rx = Arc::new(Mutex::new(rx));
        let cancel = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for n in 0..WORKERS {
            let rx = rx.clone();
            let cancel = cancel.clone();
            let tx = tx.clone();
            let wake = wake.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("shmbusd-create-{n}"))
                    .spawn(move || loop {
                        let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        };
                        if cancel.load(Ordering::Relaxed) {
                            return;
                        }
                        let made = create_segment(&job.name, &job.layout);
                        let done = Done {
                            name: job.name,
                            made,
                            tag: job.tag,
                        };
                        if tx.send(done).is_err() {
                            return;
                        }
                        wake();
                    })?,
            );
        }
        Ok(Creator {
            jobs: Some(jobs),
            done,
            workers,
            cancel,
        })
    }

    /// Queue a creation; a stopped pool hands the job back.
    pub(super) fn submit(&self, job: Job<T>) -> Result<(), Box<Job<T>>> {
        match &self.jobs {
            Some(jobs) => jobs.send(job).map_err(|e| Box::new(e.0)),
            None => Err(Box::new(job)),
        }
    }

    /// The creations finished so far.
    pub(super) fn finished(&self) -> impl Iterator<Item = Done<T>> + '_ {
        self.done.try_iter()
    }

    /// Stop taking jobs and wait for the workers (a creation under way finishes first; its
    /// segment is dropped, freeing its memory).
    pub(super) fn stop(mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
