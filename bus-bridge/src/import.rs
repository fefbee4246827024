//! Remote topics in from Zenoh.
//!
//! Each import pattern gets two subscriptions: the data under `<prefix>/<pattern>` (declared
//! with `allowed_origin(Remote)`, so this bridge never re-imports what it exported) and the
//! exporters' liveliness tokens under `@shmbus/*/*/<prefix>/<pattern>` (with history, so tokens
//! declared before this bridge started are seen too). A token lets the local topic be created
//! before its first message, so local subscribers can open it; a sample's own type tag (its
//! encoding schema) serves when no token was seen.
//!
//! The local topic is created with the remote geometry (`create`: attach if it exists with
//! exactly that geometry). Another type or geometry is refused, logged, reported on stdout and
//! counted; the refusal is retried at most every [`RETRY`], in case the local topic goes away.
//!
//! A sample is checked (key, type tag, attachment, size) and copied once into a slot. On a
//! lossless topic the copy waits for space: the Zenoh receive path stops, and the remote
//! exporter's blocking put holds its own ring. Overlapping import patterns deliver a topic
//! through the first pattern that admits it only, so no message is imported twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus_client::{OpenError, RawPublisher, SendTimeoutError};
use serde_json::json;
use zenoh::bytes::Encoding;
use zenoh::pubsub::Subscriber;
use zenoh::sample::{Locality, Sample, SampleKind};
use zenoh::Wait;

use crate::attachment::Attachment;
use crate::bridge::{lock, Ctx};
use crate::report::{bump, ImportCounters};
use crate::type_tag::TypeTag;

/// How long a refused (topic, type) stays refused before it is tried again.
pub const RETRY: Duration = Duration::from_secs(5);

/// How long one wait for space lasts before the stop flag is looked at.
const SLICE: Duration = Duration::from_millis(100);

/// What every bridged sample's encoding starts with; the type tag follows.
const ENCODING_PREFIX: &str = "application/octet-stream;";

/// One imported topic.
struct Inbound {
    encoding: Encoding,
    tag: TypeTag,
    counters: Arc<ImportCounters>,
    own: Arc<AtomicU32>,
    port: Mutex<Port>,
}

struct Port {
    publisher: Option<RawPublisher>,
    /// The last stream counter seen from each exporter.
    streams: HashMap<[u8; 16], u64>,
}

/// The import side.
pub struct Imports {
    ctx: Arc<Ctx>,
    topics: Mutex<HashMap<String, Arc<Inbound>>>,
    /// Refused (topic, tag text), and when.
    refusals: Mutex<HashMap<(String, String), Instant>>,
    subscribers: Mutex<Vec<Subscriber<()>>>,
    /// Per data key: the first import pattern that admits it and its topic, or `None` (not a
    /// topic name, or denied).
    keys: Mutex<HashMap<String, Admit>>,
}

/// What the import side decided about a data key.
#[derive(Debug, Clone)]
enum Admit {
    /// The topic, and the first import pattern that admits it.
    Topic(Option<usize>, Arc<str>),
    /// A deny pattern refuses the topic.
    Denied,
    /// The key names no topic (outside the prefix, or not a valid name).
    BadKey,
}

/// Keys remembered before the cache starts afresh (a flood of distinct keys costs memory
/// only up to here).
const KEY_CACHE: usize = 16_384;

fn tag_of(encoding: &Encoding) -> Result<TypeTag, String> {
    let text = encoding.to_string();
    let tag = text
        .strip_prefix(ENCODING_PREFIX)
        .ok_or_else(|| format!("encoding {text:?} carries no shmbus type tag"))?;
    TypeTag::parse(tag).map_err(|e| e.to_string())
}

/// The encoding an exporter of `tag` sends with.
pub fn encoding_of(tag: &TypeTag) -> Encoding {
    Encoding::APPLICATION_OCTET_STREAM.with_schema(tag.as_str())
}

impl Imports {
    /// Declare the subscriptions of every import pattern.
    pub fn start(ctx: Arc<Ctx>) -> Result<Arc<Imports>, String> {
        let imports = Arc::new(Imports {
            ctx: ctx.clone(),
            topics: Mutex::new(HashMap::new()),
            refusals: Mutex::new(HashMap::new()),
            subscribers: Mutex::new(Vec::new()),
            keys: Mutex::new(HashMap::new()),
        });
        for (i, pattern) in ctx.settings.import.iter().enumerate() {
            let data = ctx.settings.keys.selector(pattern)?;
            let tokens = ctx.settings.keys.token_selector(pattern)?;
            let me = Arc::downgrade(&imports);
            let data_sub = ctx
                .session
                .declare_subscriber(data.clone())
                .allowed_origin(Locality::Remote)
                .callback(move |sample| {
                    if let Some(me) = me.upgrade() {
                        me.on_sample(i, &sample);
                    }
                })
                .wait()
                .map_err(|e| format!("subscribing to {data}: {e}"))?;
            let me = Arc::downgrade(&imports);
            let token_sub = ctx
                .session
                .liveliness()
                .declare_subscriber(tokens.clone())
                .history(true)
                .callback(move |sample| {
                    if let Some(me) = me.upgrade() {
                        me.on_token(i, &sample);
                    }
                })
                .wait()
                .map_err(|e| format!("subscribing to the tokens {tokens}: {e}"))?;
            tracing::info!(
                "importing {pattern} from {data}",
                pattern = pattern.as_str()
            );
            lock(&imports.subscribers).extend([data_sub, token_sub]);
        }
        Ok(imports)
    }

    /// Undeclare every subscription.
    pub fn stop(&self) {
        for s in lock(&self.subscribers).drain(..) {
            let _ = s.undeclare().wait();
        }
    }

    /// Whether pattern `i` is the one that delivers `topic` (the first that admits it, and
    /// no deny pattern refuses it).
    fn admits(&self, i: usize, topic: &str) -> bool {
        let settings = &self.ctx.settings;
        settings.first_import(topic) == Some(i) && settings.imports(topic)
    }

    /// The topic a data key names; a key that names none is counted and reported once.
    fn topic_of(&self, key: &str) -> Option<String> {
        match self.ctx.settings.keys.topic_of(key) {
            Ok(t) => Some(t),
            Err(reason) => {
                self.ctx.report.refused_key();
                self.ctx
                    .report
                    .warn_once(&format!("key {key}"), &format!("not importing: {reason}"));
                None
            }
        }
    }

    fn on_token(&self, i: usize, sample: &Sample) {
        if sample.kind() != SampleKind::Put {
            return;
        }
        let token = match self.ctx.settings.keys.parse_token(sample.key_expr()) {
            Ok(t) => t,
            Err(reason) => {
                self.ctx.report.refused_key();
                let what = format!("token {}", sample.key_expr());
                self.ctx.report.warn_once(&what, &reason);
                return;
            }
        };
        if token.zid == self.ctx.zid || !self.admits(i, &token.topic) {
            return;
        }
        match TypeTag::parse(&token.tag) {
            Ok(tag) => {
                let _ = self.inbound(&token.topic, &encoding_of(&tag), Some(tag));
            }
            Err(e) => {
                bump(&self.ctx.report.import(&token.topic).malformed);
                let what = format!("token tag {}", sample.key_expr());
                self.ctx
                    .report
                    .warn_once(&what, &format!("topic {}: {e}", token.topic));
            }
        }
    }

    fn on_sample(&self, i: usize, sample: &Sample) {
        let key = sample.key_expr().as_str();
        // The hot path: one lookup per sample instead of a name check and pattern matches.
        let known = lock(&self.keys).get(key).cloned();
        let admit = match known {
            Some(Admit::BadKey) => {
                // Reported when first seen; counted every time.
                self.ctx.report.refused_key();
                return;
            }
            Some(a) => a,
            None => {
                let a = match self.topic_of(key) {
                    None => Admit::BadKey,
                    Some(topic) if self.ctx.settings.imports(&topic) => {
                        Admit::Topic(self.ctx.settings.first_import(&topic), topic.into())
                    }
                    Some(_) => Admit::Denied,
                };
                let mut keys = lock(&self.keys);
                if keys.len() >= KEY_CACHE {
                    keys.clear();
                }
                keys.insert(key.to_string(), a.clone());
                a
            }
        };
        let Admit::Topic(first, topic) = admit else {
            return;
        };
        if first != Some(i) {
            return;
        }
        if let Some(inbound) = self.inbound(&topic, sample.encoding(), None) {
            inbound.deliver(&self.ctx, &topic, sample);
        }
    }

    /// The imported topic for samples of `encoding`, opened (and the local topic created)
    /// on first sight; `None` if the type is malformed or refused.
    fn inbound(
        &self,
        topic: &str,
        encoding: &Encoding,
        tag: Option<TypeTag>,
    ) -> Option<Arc<Inbound>> {
        let report = &self.ctx.report;
        // A sample comes without a parsed tag, a token with one; only samples are counted.
        let sample = tag.is_none();
        let refuse = |c: &ImportCounters| {
            if sample {
                bump(&c.received);
                bump(&c.refused);
            }
        };
        let mut topics = lock(&self.topics);
        if let Some(inbound) = topics.get(topic) {
            if &inbound.encoding == encoding {
                return Some(inbound.clone());
            }
        }
        let counters = report.import(topic);
        let tag = match tag.map_or_else(|| tag_of(encoding), Ok) {
            Ok(tag) => tag,
            Err(e) => {
                bump(&counters.received);
                bump(&counters.malformed);
                report.warn_once(&format!("tag {topic}"), &format!("topic {topic}: {e}"));
                return None;
            }
        };
        if let Some(inbound) = topics.get(topic) {
            refuse(&counters);
            let what = format!("refused {topic} {}", tag.as_str());
            let reason = format!(
                "remote type {tag} differs from {} already imported",
                inbound.tag
            );
            if lock(&self.refusals)
                .insert((topic.into(), tag.as_str().into()), Instant::now())
                .is_none()
            {
                report.event(
                    "refused",
                    json!({ "topic": topic, "type": tag.as_str(), "reason": reason }),
                );
            }
            report.warn_once(&what, &format!("not importing topic {topic}: {reason}"));
            return None;
        }
        let refusal = (topic.to_string(), tag.as_str().to_string());
        if let Some(at) = lock(&self.refusals).get(&refusal) {
            if at.elapsed() < RETRY {
                refuse(&counters);
                return None;
            }
        }
        let opened = self
            .ctx
            .bus
            .raw_publisher(topic)
            .wait(self.ctx.settings.wait.strategy())
            .create(tag.geometry().clone());
        match opened {
            Ok(publisher) => {
                lock(&self.refusals).remove(&refusal);
                report.unsay(&format!("refused {topic} {}", tag.as_str()));
                let own = self.ctx.own_index(topic);
                own.store(publisher.index(), Relaxed);
                let key = self
                    .ctx
                    .settings
                    .keys
                    .key_of(topic)
                    .map(|k| k.to_string())
                    .unwrap_or_default();
                tracing::info!("importing topic {topic} from {key} ({tag})");
                report.event(
                    "importing",
                    json!({ "topic": topic, "key": key, "type": tag.as_str() }),
                );
                let inbound = Arc::new(Inbound {
                    encoding: encoding.clone(),
                    tag,
                    counters,
                    own,
                    port: Mutex::new(Port {
                        publisher: Some(publisher),
                        streams: HashMap::new(),
                    }),
                });
                topics.insert(topic.to_string(), inbound.clone());
                Some(inbound)
            }
            Err(e) => {
                refuse(&counters);
                let mismatch = matches!(
                    e,
                    OpenError::TypeMismatch { .. } | OpenError::GeometryMismatch { .. }
                );
                let reason = if mismatch {
                    format!("the local topic differs from the remote {tag}: {e}")
                } else {
                    format!("cannot open the local topic for {tag}: {e}")
                };
                let what = format!("refused {topic} {}", tag.as_str());
                report.warn_once(&what, &format!("not importing topic {topic}: {reason}"));
                if lock(&self.refusals)
                    .insert(refusal, Instant::now())
                    .is_none()
                {
                    report.event(
                        "refused",
                        json!({ "topic": topic, "type": tag.as_str(), "reason": reason }),
                    );
                }
                None
            }
        }
    }
}

impl Inbound {
    /// Check one sample and write it into the local topic.
    fn deliver(&self, ctx: &Ctx, topic: &str, sample: &Sample) {
        let c = &self.counters;
        bump(&c.received);
        let attachment = sample.attachment().map(|a| a.to_bytes());
        let attachment = match Attachment::decode(attachment.as_deref()) {
            Ok(a) => a,
            Err(e) => {
                bump(&c.malformed);
                ctx.report.warn_once(
                    &format!("attachment {topic}"),
                    &format!("topic {topic}: {e}"),
                );
                return;
            }
        };
        let payload = sample.payload().to_bytes();
        let mut port = lock(&self.port);
        match port.streams.insert(attachment.origin, attachment.stream) {
            Some(last) if attachment.stream > last.saturating_add(1) => {
                c.gaps.fetch_add(attachment.stream - last - 1, Relaxed);
            }
            _ => {}
        }
        if port.publisher.is_none() {
            match ctx
                .bus
                .raw_publisher(topic)
                .wait(ctx.settings.wait.strategy())
                .create(self.tag.geometry().clone())
            {
                Ok(p) => port.publisher = Some(p),
                Err(e) => {
                    bump(&c.dropped);
                    ctx.report
                        .warn_once(&format!("reopen {topic}"), &format!("topic {topic}: {e}"));
                    return;
                }
            }
        }
        let Some(publisher) = port.publisher.as_mut() else {
            return;
        };
        self.own.store(publisher.index(), Relaxed);
        loop {
            match publisher.send_timeout(&payload, SLICE) {
                Ok(_) => {
                    bump(&c.published);
                    break;
                }
                Err(SendTimeoutError::Timeout) if !ctx.stopping() => {}
                Err(SendTimeoutError::Timeout) => {
                    bump(&c.dropped);
                    break;
                }
                Err(e @ (SendTimeoutError::WrongSize { .. } | SendTimeoutError::TooLarge(_))) => {
                    bump(&c.malformed);
                    ctx.report
                        .warn_once(&format!("size {topic}"), &format!("topic {topic}: {e}"));
                    break;
                }
                Err(e) => {
                    // Closed, evicted, repaired: open the topic afresh for the next sample.
                    bump(&c.dropped);
                    tracing::info!("topic {topic}: {e}; it is opened again for the next sample");
                    port.publisher = None;
                    return;
                }
            }
        }
        if let Some(p) = port.publisher.as_ref() {
            self.own.store(p.index(), Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_core::layout::{Geometry, Mode, TypeInfo};

    #[test]
    fn the_encoding_carries_the_tag_and_reads_back() {
        let tag = TypeTag::of(&Geometry {
            capacity: 8,
            slot_size: 8,
            mode: Mode::Lossy,
            max_publishers: 2,
            max_subscribers: 2,
            type_info: TypeInfo {
                name: "u64".into(),
                size: 8,
                align: 8,
            },
        });
        assert_eq!(tag_of(&encoding_of(&tag)).unwrap(), tag);
        for foreign in [
            Encoding::APPLICATION_OCTET_STREAM,
            Encoding::TEXT_PLAIN.with_schema(tag.as_str()),
            Encoding::APPLICATION_OCTET_STREAM.with_schema("shmbus1,garbage"),
        ] {
            assert!(tag_of(&foreign).is_err(), "{foreign}");
        }
    }
}
