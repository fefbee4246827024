//! One bridge: the local bus, the Zenoh session, the import subscriptions, the scanner that
//! starts exporters, and an orderly stop on SIGTERM or SIGINT.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bus_client::{Bus, StartAt, TopicEvent, TopicWatch, WatchError};
use nix::sys::signal::{SigSet, Signal};
use serde_json::json;
use zenoh::{Session, Wait};

use crate::config::Settings;
use crate::export::Exports;
use crate::import::Imports;
use crate::report::Report;
use crate::zconfig::zenoh_config;

/// No importer publisher on a topic (an index no publisher table has).
pub const NO_PUBLISHER: u32 = u32::MAX;

/// Why the bridge could not run.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The settings or Zenoh's configuration are wrong.
    #[error("{0}")]
    Config(String),
    /// The local daemon cannot be reached.
    #[error(transparent)]
    Daemon(#[from] bus_client::ConnectError),
    /// Zenoh would not start, or a subscription could not be declared.
    #[error("zenoh: {0}")]
    Zenoh(String),
}

/// What every part of the bridge shares.
pub struct Ctx {
    /// The settings.
    pub settings: Settings,
    /// The local daemon.
    pub bus: Bus,
    /// The Zenoh session.
    pub session: Session,
    /// This bridge's Zenoh id, as text (in its tokens) and as bytes (in its attachments).
    pub zid: String,
    /// The same, as bytes.
    pub zid_bytes: [u8; 16],
    /// Counters and stdout.
    pub report: Report,
    stop: AtomicBool,
    /// Per topic: the publisher entry this bridge imports with, the local side's origin tag.
    own: Mutex<HashMap<String, Arc<AtomicU32>>>,
}

/// Lock a mutex, ignoring poisoning (a panicking thread leaves consistent counters behind).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ctx {
    /// Whether the bridge is stopping.
    pub fn stopping(&self) -> bool {
        self.stop.load(Relaxed)
    }

    /// The publisher entry this bridge imports into `topic` with ([`NO_PUBLISHER`] if none).
    pub fn own_index(&self, topic: &str) -> Arc<AtomicU32> {
        lock(&self.own)
            .entry(topic.to_string())
            .or_insert_with(|| Arc::new(AtomicU32::new(NO_PUBLISHER)))
            .clone()
    }
}

/// The signals that stop the bridge.
fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set
}

/// Run until SIGTERM or SIGINT.
pub fn run(settings: Settings) -> Result<(), BridgeError> {
    // Every thread (ours and Zenoh's) inherits this mask; only `wait` below takes the signals.
    let signals = stop_signals();
    signals
        .thread_block()
        .map_err(|e| BridgeError::Config(format!("blocking SIGTERM and SIGINT: {e}")))?;
    let bus = Bus::connect_to(&settings.socket)?;
    let config = zenoh_config(&settings).map_err(BridgeError::Config)?;
    let session = zenoh::open(config)
        .wait()
        .map_err(|e| BridgeError::Zenoh(format!("opening the session: {e}")))?;
    let zid = session.zid();
    let ctx = Arc::new(Ctx {
        zid: zid.to_string(),
        zid_bytes: zid.to_le_bytes(),
        settings,
        bus,
        session,
        report: Report::default(),
        stop: AtomicBool::new(false),
        own: Mutex::new(HashMap::new()),
    });
    ctx.report.event(
        "started",
        json!({
            "zid": ctx.zid,
            "pid": std::process::id(),
            "socket": ctx.settings.socket.display().to_string(),
            "prefix": ctx.settings.keys.prefix(),
        }),
    );
    tracing::info!(
        "bridge {} on {} started",
        ctx.zid,
        ctx.settings.socket.display()
    );
    let imports = Imports::start(ctx.clone()).map_err(BridgeError::Zenoh)?;
    let exports = Arc::new(Exports::new(ctx.clone()));
    let scanner = {
        let (ctx, exports) = (ctx.clone(), exports.clone());
        std::thread::Builder::new()
            .name("scan".into())
            .spawn(move || scan(&ctx, &exports))
            .map_err(|e| BridgeError::Config(format!("starting the scanner thread: {e}")))?
    };
    let signal = signals.wait();
    tracing::info!("stopping on {signal:?}");
    ctx.stop.store(true, Relaxed);
    let _ = scanner.join();
    imports.stop();
    exports.join(Duration::from_secs(2));
    ctx.report.stats();
    ctx.report.event("stopped", json!({}));
    ctx.report.flush(Duration::from_secs(2));
    if let Err(e) = ctx.session.close().wait() {
        tracing::warn!("closing the Zenoh session: {e}");
    }
    Ok(())
}

/// Watches at most this many export patterns one by one; more are watched as `**` and
/// filtered by the exporter.
const MAX_PATTERN_WATCHES: usize = 8;

/// How often the scanner looks at the stop flag while nothing happens.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// The export patterns as watches: each matching local topic, those that exist and those
/// created later, is announced with a subscriber attached (from its first message for a new
/// one: the daemon attaches it before the creator may publish).
fn watch_exports(ctx: &Ctx) -> Result<Vec<TopicWatch>, String> {
    let export = &ctx.settings.export;
    let patterns: Vec<&str> = if export.len() <= MAX_PATTERN_WATCHES {
        export.iter().map(|p| p.as_str()).collect()
    } else {
        vec!["**"]
    };
    patterns
        .into_iter()
        .map(|p| {
            ctx.bus
                .watch_topics(p)
                .existing(StartAt::Latest)
                .wait(ctx.settings.wait.strategy())
                .open()
                .map_err(|e| format!("watching local topics {p}: {e}"))
        })
        .collect()
}

/// The scanner: start an exporter for each local topic the export patterns' watches announce,
/// print the counters every `stats_interval`, until the bridge stops. Nothing is polled: the
/// daemon announces the topics.
fn scan(ctx: &Ctx, exports: &Exports) {
    let mut last_stats = Instant::now();
    let mut watches: Vec<TopicWatch> = Vec::new();
    let mut failing = false;
    while !ctx.stopping() {
        if watches.is_empty() && !ctx.settings.export.is_empty() {
            match watch_exports(ctx) {
                Ok(w) => {
                    if failing {
                        tracing::info!("the daemon answers again");
                        failing = false;
                    }
                    watches = w;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!("{e}; trying again");
                        failing = true;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                    continue;
                }
            }
        }
        let wait = match ctx.settings.stats_interval {
            Some(every) => every.saturating_sub(last_stats.elapsed()).min(STOP_CHECK),
            None => STOP_CHECK,
        };
        let ready = readable(&watches, wait);
        let mut ended = false;
        for (w, _) in watches.iter_mut().zip(&ready).filter(|(_, r)| **r) {
            loop {
                match w.try_recv() {
                    Ok(Some(TopicEvent::Created(sub))) => exports.offer(*sub),
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(WatchError::Open(e)) => exports.refuse(e.topic(), &e.to_string()),
                    Err(e) => {
                        tracing::warn!("{e}");
                        ended = true;
                        break;
                    }
                }
            }
        }
        if ended {
            // The daemon stopped or restarted: watch again.
            watches.clear();
        }
        if let Some(every) = ctx.settings.stats_interval {
            if last_stats.elapsed() >= every {
                ctx.report.stats();
                last_stats = Instant::now();
            }
        }
    }
}

/// Which of `watches` have something to read, waiting at most `timeout`.
fn readable(watches: &[TopicWatch], timeout: Duration) -> Vec<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    if watches.is_empty() {
        std::thread::sleep(timeout);
        return Vec::new();
    }
    let mut fds: Vec<PollFd<'_>> = watches
        .iter()
        .map(|w| PollFd::new(w.as_fd(), PollFlags::POLLIN))
        .collect();
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    match poll(
        &mut fds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    ) {
        Ok(n) if n > 0 => fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect(),
        _ => vec![false; watches.len()],
    }
}
