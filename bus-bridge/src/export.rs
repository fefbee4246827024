//! Local topics out to Zenoh.
//!
//! The scanner watches the export patterns (`Bus::watch_topics`): the daemon announces each
//! matching local topic with a subscriber already attached, from its first message for a topic
//! created while the bridge runs (attached before its creator may publish). Each topic that an
//! export pattern admits (and no deny pattern refuses) gets an exporter: that raw subscriber on
//! the topic, a Zenoh publisher on its key with the topic's QoS, a liveliness token that
//! carries its type tag, and a thread that moves messages from one to the other.
//!
//! The exporter reads each message in place, copies it once into the buffer Zenoh sends from,
//! releases the slot and puts. On a lossless topic the put blocks while Zenoh cannot send, and
//! the next message is not read until it returns: the back-pressure reaches the local
//! publisher through the ring. Messages this bridge itself imported into the topic (its own
//! publisher entry, the origin tag of the local side) are skipped, so nothing it imported goes
//! back out. The publisher is declared with `allowed_destination(Remote)`, so this bridge's own
//! import subscriptions never see what it exports either.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bus_client::{RawSubscriber, RecvTimeoutError};
use serde_json::json;
use zenoh::bytes::{Encoding, ZBytes};
use zenoh::liveliness::LivelinessToken;
use zenoh::pubsub::Publisher;
use zenoh::sample::Locality;
use zenoh::Wait;

use crate::attachment::Attachment;
use crate::bridge::{lock, Ctx};
use crate::qos::qos_for;
use crate::report::{bump, ExportCounters};
use crate::type_tag::TypeTag;

/// How long an exporter waits for a message before it looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

struct Exporter {
    thread: JoinHandle<()>,
    done: Arc<AtomicBool>,
}

/// The running exporters, by topic.
pub struct Exports {
    ctx: Arc<Ctx>,
    running: Mutex<HashMap<String, Exporter>>,
    /// Topics refused (their names are not valid keys, or the port could not be opened) and
    /// already reported.
    refused: Mutex<HashSet<String>>,
}

/// Everything one exporter thread owns.
struct Lane {
    ctx: Arc<Ctx>,
    subscriber: RawSubscriber,
    publisher: Publisher<'static>,
    _token: LivelinessToken,
    counters: Arc<ExportCounters>,
    own: Arc<AtomicU32>,
    done: Arc<AtomicBool>,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Exports {
    /// No exporters yet.
    pub fn new(ctx: Arc<Ctx>) -> Exports {
        Exports {
            ctx,
            running: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashSet::new()),
        }
    }

    /// A local topic announced with its subscriber: export it unless it is exported already
    /// or not admitted (the subscriber is dropped then). Exporters that stopped are forgotten
    /// first (a deleted and re-created topic is announced again).
    pub fn offer(&self, subscriber: RawSubscriber) {
        lock(&self.running).retain(|_, e| !e.done.load(Relaxed));
        let topic = subscriber.topic().to_string();
        if !self.ctx.settings.exports(&topic) || lock(&self.running).contains_key(&topic) {
            return;
        }
        match self.start(&topic, subscriber) {
            Ok(exporter) => {
                lock(&self.running).insert(topic.clone(), exporter);
                lock(&self.refused).remove(&topic);
            }
            Err(reason) => self.refuse(&topic, &reason),
        }
    }

    /// `topic` cannot be exported: say so once.
    pub fn refuse(&self, topic: &str, reason: &str) {
        if lock(&self.refused).insert(topic.to_string()) {
            tracing::warn!("not exporting topic {topic}: {reason}");
            self.ctx
                .report
                .event("refused", json!({ "topic": topic, "reason": reason }));
        }
    }

    fn start(&self, topic: &str, subscriber: RawSubscriber) -> Result<Exporter, String> {
        let ctx = &self.ctx;
        let key = ctx.settings.keys.key_of(topic)?;
        let tag = TypeTag::of(subscriber.spec());
        let qos = qos_for(&ctx.settings.qos, topic, subscriber.spec().mode);
        let publisher = ctx
            .session
            .declare_publisher(key.clone())
            .encoding(Encoding::APPLICATION_OCTET_STREAM.with_schema(tag.as_str()))
            .congestion_control(qos.congestion)
            .priority(qos.priority)
            .express(qos.express)
            .allowed_destination(Locality::Remote)
            .wait()
            .map_err(|e| format!("declaring the Zenoh publisher on {key}: {e}"))?;
        let token_key = ctx.settings.keys.token(&ctx.zid, &tag, topic)?;
        let token = ctx
            .session
            .liveliness()
            .declare_token(token_key)
            .wait()
            .map_err(|e| format!("declaring the liveliness token of {key}: {e}"))?;
        let (report, name) = (ctx.clone(), topic.to_string());
        publisher
            .matching_listener()
            .callback(move |status| {
                report.report.event(
                    "matched",
                    json!({ "topic": name, "matched": status.matching() }),
                );
            })
            .background()
            .wait()
            .map_err(|e| format!("watching the subscribers of {key}: {e}"))?;
        tracing::info!("exporting topic {topic} as {key} ({tag}, {qos:?})");
        ctx.report.event(
            "exporting",
            json!({ "topic": topic, "key": key.as_str(), "type": tag.as_str() }),
        );
        let done = Arc::new(AtomicBool::new(false));
        let lane = Lane {
            ctx: ctx.clone(),
            subscriber,
            publisher,
            _token: token,
            counters: ctx.report.export(topic),
            own: ctx.own_index(topic),
            done: done.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("export {topic}"))
            .spawn(move || lane.run())
            .map_err(|e| format!("starting the exporter thread: {e}"))?;
        Ok(Exporter { thread, done })
    }

    /// Wait (at most `timeout`) for every exporter to see the stop flag and finish.
    pub fn join(&self, timeout: Duration) {
        let exporters: Vec<Exporter> = lock(&self.running).drain().map(|(_, e)| e).collect();
        let deadline = std::time::Instant::now() + timeout;
        for e in exporters {
            while !e.thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if e.thread.is_finished() {
                let _ = e.thread.join();
            }
        }
    }
}

impl Lane {
    fn run(mut self) {
        let topic = self.subscriber.topic().to_string();
        let mut stream = 0u64;
        while !self.ctx.stopping() {
            let sample = match self.subscriber.recv_timeout(POLL) {
                Ok(sample) => sample,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Lagged(n)) => {
                    self.counters.lagged.fetch_add(n, Relaxed);
                    continue;
                }
                Err(e) => {
                    // Closed (deleted, or the daemon stopped) or evicted: the next scan opens
                    // the topic afresh if it is still there.
                    tracing::info!("stopped exporting topic {topic}: {e}");
                    break;
                }
            };
            if sample.publisher() == self.own.load(Relaxed) {
                bump(&self.counters.skipped_own);
                continue;
            }
            let attachment = Attachment {
                publisher: sample.publisher(),
                sequence: sample.sequence(),
                stream,
                time_ns: now_ns(),
                origin: self.ctx.zid_bytes,
            };
            // The one copy: out of the slot into the buffer Zenoh sends from. The slot is free
            // again before the put, which may block.
            let payload = ZBytes::from(sample.bytes());
            drop(sample);
            stream += 1;
            match self
                .publisher
                .put(payload)
                .attachment(attachment.encode())
                .wait()
            {
                Ok(()) => bump(&self.counters.sent),
                Err(e) => {
                    bump(&self.counters.errors);
                    self.ctx.report.warn_once(
                        &format!("put {topic}"),
                        &format!("sending topic {topic}: {e}"),
                    );
                }
            }
        }
        self.ctx
            .report
            .event("export_stopped", json!({ "topic": topic }));
        self.done.store(true, Relaxed);
    }
}
