//! Stuck subscribers, watched only while a lossless publisher is held back.
//!
//! The daemon cannot wait on a futex, and it must not look at every topic on a timer (an idle
//! daemon with ten thousand topics would burn a core). So the publisher says when it is held
//! back: a publisher that finds its lossless topic full sends a [`Request::Held`] notice on its
//! control connection, at most every [`HELD_NOTICE_EVERY`] while it keeps finding it full (in
//! `try_send` and while a blocking send waits). The daemon then watches that topic on a timer
//! of its own ([`period`]) until the topic is no longer full: a subscriber whose cursor has
//! not moved for `stuck_timeout` while it held the ring full is evicted, as before.
//!
//! **No stall is missed.** A watch ends only when a tick sees no subscriber a whole ring
//! behind. A publisher that is still (or again) held back after that finds the ring full on
//! its next attempt and, since it repeats its notice while it keeps finding the ring full, the
//! daemon hears of it within [`HELD_NOTICE_EVERY`], however the notice and the tick interleave.
//! The eviction clock of a subscriber starts at the first tick that sees it a ring behind.
//!
//! **Entries no one was handed are not waited for.** Each tick first frees the table entries
//! that the daemon never handed out (written into the control file by a hostile party, with
//! any pid): they hold the ring for no port, so they get no timeout (`State::reclaim_unknown`).
//!
//! **A client that lies costs nothing.** A notice is checked before anything starts: the
//! connection must hold that publisher on that topic, the topic must be lossless and actually
//! full (a look at its cursors), and a topic already watched ignores it. At most one timer runs
//! per topic, at a fixed period, and only while the ring really is full; a liar can keep it
//! running only by keeping its own topic full, which is what the watch is for.
//!
//! [`Request::Held`]: bus_proto::protocol::Request::Held
//! [`HELD_NOTICE_EVERY`]: bus_proto::protocol::HELD_NOTICE_EVERY

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bus_core::layout::Mode;
use bus_proto::protocol::Role;

use super::registry::{Caller, State, Topic};

/// A topic under watch: for each subscriber a whole ring behind, (index, generation) → (its
/// cursor, since when it has not moved).
#[derive(Debug, Default)]
pub(super) struct Watch {
    behind: HashMap<(usize, u64), (u64, Instant)>,
}

/// How often a watched topic is looked at: a tenth of the stuck timeout, between 10 ms and
/// 250 ms.
pub(super) fn period(stuck_timeout: Duration) -> Duration {
    (stuck_timeout / 10).clamp(Duration::from_millis(10), Duration::from_millis(250))
}

/// Whether some active subscriber of `topic` is a whole ring behind (the topic is full for a
/// lossless publisher).
fn full(topic: &Topic) -> bool {
    let capacity = u64::from(topic.spec.capacity);
    topic
        .ring
        .stats()
        .subscribers
        .iter()
        .any(|&(_, _, _, lag, _)| lag >= capacity)
}

/// A `Held` notice from `caller`: start watching `name` if the notice checks out. Returns
/// whether a watch started (the caller schedules its first tick).
pub(super) fn held(
    state: &mut State,
    caller: &Caller,
    name: &str,
    index: u32,
    generation: u64,
) -> bool {
    let Some(topic) = state.topics.get_mut(name) else {
        return false;
    };
    let holds = topic
        .attachments
        .iter()
        .any(|a| a.client == caller.id && a.is(Role::Publisher, index, generation));
    if !holds || topic.spec.mode != Mode::Lossless || topic.watch.is_some() || !full(topic) {
        return false;
    }
    tracing::debug!(
        topic = name,
        index,
        "a publisher is held back; watching the topic"
    );
    topic.watch = Some(Watch::default());
    true
}

/// One tick of the watch on `name`: evict the subscribers that held the full ring for
/// `timeout`. Returns whether the watch goes on (the topic is still full).
pub(super) fn tick(state: &mut State, name: &str, timeout: Duration, now: Instant) -> bool {
    // Entries the daemon never handed out hold the ring for no port: freed at once.
    state.reclaim_unknown(name);
    let Some(topic) = state.topics.get_mut(name) else {
        return false;
    };
    let Some(mut watch) = topic.watch.take() else {
        return false;
    };
    let capacity = u64::from(topic.spec.capacity);
    let mut behind = HashMap::new();
    for (index, pid, cursor, lag, _) in topic.ring.stats().subscribers {
        if lag < capacity {
            continue;
        }
        let generation = topic
            .attachments
            .iter()
            .find(|a| a.role == Role::Subscriber && a.index as usize == index)
            .map(|a| a.generation);
        let Some(generation) = generation else {
            continue;
        };
        let key = (index, generation);
        let since = match watch.behind.get(&key) {
            Some(&(last, since)) if last == cursor => since,
            _ => now,
        };
        if now.saturating_duration_since(since) >= timeout {
            // Evicted, not freed: the port may still live and store its cursor once more,
            // so the entry is reused only after the port detached or its client went away.
            if topic.ring.evict_subscriber(index, generation).is_ok() {
                topic.ring.presence_changed();
                tracing::warn!(
                    topic = name,
                    pid,
                    index,
                    "evicted a subscriber that held back a full lossless topic for {timeout:?}"
                );
            }
            let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut topic.attachments)
                .into_iter()
                .partition(|a| a.is(Role::Subscriber, index as u32, generation));
            topic.attachments = kept;
            topic.evicted.extend(gone);
            continue;
        }
        behind.insert(key, (cursor, since));
    }
    if behind.is_empty() {
        tracing::debug!(topic = name, "no longer full; the watch ends");
        return false;
    }
    watch.behind = behind;
    topic.watch = Some(watch);
    true
}
