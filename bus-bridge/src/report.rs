//! What the bridge tells the world: one JSON object per line on stdout (events as they happen,
//! and the counters every `stats_interval_ms` and at exit), and human sentences on stderr
//! through `tracing`.
//!
//! ```text
//! {"event":"started","zid":"5f1e...","socket":"/run/...","prefix":"site1"}
//! {"event":"exporting","topic":"robot/odom","key":"site1/robot/odom","type":"shmbus1,..."}
//! {"event":"matched","topic":"robot/odom","matched":true}
//! {"event":"importing","topic":"base/cmd","key":"site1/base/cmd","type":"shmbus1,..."}
//! {"event":"refused","topic":"base/cmd","reason":"..."}
//! {"stats":{"exports":{"robot/odom":{"sent":10000,...}},"imports":{...},"refused_keys":0}}
//! ```

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Counters of one exported topic.
#[derive(Debug, Default)]
pub struct ExportCounters {
    /// Messages put into Zenoh.
    pub sent: AtomicU64,
    /// Messages this bridge itself imported into the topic, not sent back.
    pub skipped_own: AtomicU64,
    /// Messages lost to lag on a lossy topic before the exporter read them.
    pub lagged: AtomicU64,
    /// Puts Zenoh refused.
    pub errors: AtomicU64,
}

/// Counters of one imported topic.
#[derive(Debug, Default)]
pub struct ImportCounters {
    /// Samples that arrived for the topic.
    pub received: AtomicU64,
    /// Messages written into the local topic.
    pub published: AtomicU64,
    /// Messages missing from an exporter's stream (lost on the way).
    pub gaps: AtomicU64,
    /// Samples refused as malformed: no or a bad type tag or attachment, a payload of the
    /// wrong size.
    pub malformed: AtomicU64,
    /// Samples refused because the local topic has another type or geometry.
    pub refused: AtomicU64,
    /// Samples dropped because the local topic could not take them (closed, stopping).
    pub dropped: AtomicU64,
}

fn add(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

impl ExportCounters {
    fn json(&self) -> Value {
        json!({
            "sent": self.sent.load(Relaxed),
            "skipped_own": self.skipped_own.load(Relaxed),
            "lagged": self.lagged.load(Relaxed),
            "errors": self.errors.load(Relaxed),
        })
    }
}

impl ImportCounters {
    fn json(&self) -> Value {
        json!({
            "received": self.received.load(Relaxed),
            "published": self.published.load(Relaxed),
            "gaps": self.gaps.load(Relaxed),
            "malformed": self.malformed.load(Relaxed),
            "refused": self.refused.load(Relaxed),
            "dropped": self.dropped.load(Relaxed),
        })
    }
}

/// Counters, and the JSON lines on stdout.
#[derive(Debug, Default)]
pub struct Report {
    exports: Mutex<BTreeMap<String, Arc<ExportCounters>>>,
    imports: Mutex<BTreeMap<String, Arc<ImportCounters>>>,
    refused_keys: AtomicU64,
    out: Mutex<Option<Writer>>,
    /// Lines dropped because stdout did not take them.
    lost_lines: AtomicU64,
    /// What [`Report::warn_once`] already said.
    said: Mutex<HashSet<String>>,
}

/// The thread that writes stdout, so that nobody else ever waits for it: a Zenoh callback
/// that reports an event must not stall because nobody reads the pipe.
#[derive(Debug)]
struct Writer {
    lines: SyncSender<String>,
    thread: JoinHandle<()>,
}

/// Lines queued for stdout before new ones are dropped (and counted).
const QUEUED_LINES: usize = 4096;

/// At most this many distinct things are said once; later ones are only counted.
const SAY_ONCE_MAX: usize = 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Report {
    /// The counters of an exported topic (kept across restarts of its exporter).
    pub fn export(&self, topic: &str) -> Arc<ExportCounters> {
        lock(&self.exports).entry(topic.into()).or_default().clone()
    }

    /// The counters of an imported topic.
    pub fn import(&self, topic: &str) -> Arc<ImportCounters> {
        lock(&self.imports).entry(topic.into()).or_default().clone()
    }

    /// Count a key that was not bridged because it names no valid topic.
    pub fn refused_key(&self) {
        add(&self.refused_keys);
    }

    /// Log a warning the first time `what` happens (bad input from the network would flood
    /// the log otherwise; the counters count every time).
    pub fn warn_once(&self, what: &str, message: &str) {
        let mut said = lock(&self.said);
        if said.len() < SAY_ONCE_MAX && said.insert(what.to_string()) {
            tracing::warn!("{message} (said once; the counters count every time)");
        }
    }

    /// Forget that `what` was said, so that it is said again when it happens again.
    pub fn unsay(&self, what: &str) {
        lock(&self.said).remove(what);
    }

    /// Print one JSON line (queued; a line stdout does not take in time is dropped and
    /// counted, never waited for).
    pub fn line(&self, value: &Value) {
        let mut out = lock(&self.out);
        if out.is_none() {
            let (lines, rx) = sync_channel::<String>(QUEUED_LINES);
            let thread = std::thread::Builder::new()
                .name("stdout".into())
                .spawn(move || {
                    let stdout = std::io::stdout();
                    for line in rx {
                        let mut o = stdout.lock();
                        // Nobody reading stdout is no reason to stop bridging.
                        let _ = writeln!(o, "{line}").and_then(|()| o.flush());
                    }
                });
            match thread {
                Ok(thread) => *out = Some(Writer { lines, thread }),
                Err(_) => return,
            }
        }
        if let Some(w) = out.as_ref() {
            match w.lines.try_send(value.to_string()) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(_)) => add(&self.lost_lines),
            }
        }
    }

    /// Write out what is queued (waiting at most `timeout`) and stop the writer.
    pub fn flush(&self, timeout: Duration) {
        let Some(w) = lock(&self.out).take() else {
            return;
        };
        drop(w.lines);
        let deadline = Instant::now() + timeout;
        while !w.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if w.thread.is_finished() {
            let _ = w.thread.join();
        }
    }

    /// Print an event.
    pub fn event(&self, event: &str, mut fields: Value) {
        if let Some(map) = fields.as_object_mut() {
            map.insert("event".into(), event.into());
        }
        self.line(&fields);
    }

    /// The counters, as printed.
    pub fn snapshot(&self) -> Value {
        let exports: serde_json::Map<String, Value> = lock(&self.exports)
            .iter()
            .map(|(t, c)| (t.clone(), c.json()))
            .collect();
        let imports: serde_json::Map<String, Value> = lock(&self.imports)
            .iter()
            .map(|(t, c)| (t.clone(), c.json()))
            .collect();
        json!({
            "exports": exports,
            "imports": imports,
            "refused_keys": self.refused_keys.load(Relaxed),
            "lost_lines": self.lost_lines.load(Relaxed),
        })
    }

    /// Print the counters.
    pub fn stats(&self) {
        self.line(&json!({ "stats": self.snapshot() }));
    }
}

/// Count one.
pub fn bump(c: &AtomicU64) {
    add(c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_lists_every_topic_with_its_counters() {
        let r = Report::default();
        bump(&r.export("a").sent);
        bump(&r.export("a").sent);
        bump(&r.import("b").gaps);
        r.refused_key();
        let s = r.snapshot();
        assert_eq!(s["exports"]["a"]["sent"], 2);
        assert_eq!(s["exports"]["a"]["skipped_own"], 0);
        assert_eq!(s["imports"]["b"]["gaps"], 1);
        assert_eq!(s["refused_keys"], 1);
    }
}
