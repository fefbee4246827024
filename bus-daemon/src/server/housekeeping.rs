//! Work the daemon does on its own, between requests: repairs that could not be decided at
//! once, orphans to give up after a restart, and subscribers that hold a lossless topic back
//! for too long.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bus_core::layout::Mode;
use bus_proto::protocol::Role;

use super::adopt::give_up_orphans;
use super::registry::Shared;

/// How long after the adopt grace a recorded topic that no port handed back is kept: a port
/// that comes back later than that (its process made no call and did not wait) attaches anew.
const PENDING_KEEP: Duration = Duration::from_secs(60);

/// One pass.
pub(super) fn run(shared: &Shared) {
    let mut state = shared.lock();
    // After the grace, on every pass: a topic handed back late has its dead orphans given up
    // at once.
    if state.adopt_deadline.is_some_and(|d| Instant::now() >= d) {
        give_up_orphans(shared, &mut state, PENDING_KEEP);
    }
    if !state.repairs.is_empty() {
        state.run_repairs();
    }
    let timeout = shared.config.stuck_timeout;
    for (name, topic) in state.topics.iter_mut() {
        if topic.spec.mode != Mode::Lossless {
            continue;
        }
        let stats = topic.ring.stats();
        let capacity = u64::from(topic.spec.capacity);
        let mut seen = HashMap::new();
        for (index, pid, cursor, lag, _) in stats.subscribers {
            let generation = topic
                .attachments
                .iter()
                .find(|a| a.role == Role::Subscriber && a.index as usize == index)
                .map(|a| a.generation);
            let Some(generation) = generation else {
                continue;
            };
            let key = (index, generation);
            if lag < capacity {
                continue;
            }
            let (last, since) = topic
                .stuck
                .get(&key)
                .copied()
                .unwrap_or((cursor, Instant::now()));
            let since = if last == cursor {
                since
            } else {
                Instant::now()
            };
            if since.elapsed() >= timeout {
                // Evicted, not freed: the port may still live and store its cursor once more,
                // so the entry is reused only after the port detached or its client went away.
                if topic.ring.evict_subscriber(index, generation).is_ok() {
                    tracing::warn!(
                        topic = name.as_str(),
                        pid,
                        index,
                        "evicted a subscriber that held back a full lossless topic for {timeout:?}"
                    );
                }
                let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut topic.attachments)
                    .into_iter()
                    .partition(|a| {
                        a.role == Role::Subscriber
                            && a.index as usize == index
                            && a.generation == generation
                    });
                topic.attachments = kept;
                topic.evicted.extend(gone);
                continue;
            }
            seen.insert(key, (cursor, since));
        }
        topic.stuck = seen;
    }
}
