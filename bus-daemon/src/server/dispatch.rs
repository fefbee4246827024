//! One request in, one answer out.

use std::os::fd::OwnedFd;

use bus_proto::protocol::{
    self, ErrorCode, PublisherStat, Request, Response, Role, SubscriberStat, TopicInfo, TopicStats,
};

use super::attach::{self, stopping};
use super::registry::{Caller, Shared, State, Topic, ORPHAN};
use super::{adopt, error, Answer};
use crate::acl::Action;

/// Serve one request; `fds` are the descriptors that came with it (only a `Reattach` uses
/// them). Returns the answer and the descriptors to send with it.
pub(super) fn handle(
    shared: &Shared,
    caller: &Caller,
    request: Request,
    fds: Vec<OwnedFd>,
) -> Answer {
    {
        let mut state = shared.lock();
        if state.stopping {
            return stopping();
        }
        if let Request::Hello {
            version,
            client_name,
        } = &request
        {
            return hello(shared, &mut state, caller, *version, client_name);
        }
        if !state.clients.get(&caller.id).is_some_and(|c| c.hello) {
            return error(ErrorCode::BadRequest, "send hello first");
        }
    }
    match request {
        Request::Hello { .. } => error(ErrorCode::BadRequest, "hello was already answered"),
        Request::Attach {
            topic,
            role,
            how,
            start,
        } => attach::serve(shared, caller, &topic, role, how, start),
        Request::Reattach {
            topic,
            role,
            index,
            generation,
        } => adopt::reattach(shared, caller, &topic, role, index, generation, fds),
        Request::Detach {
            topic,
            role,
            index,
            generation,
        } => detach(&mut shared.lock(), caller, &topic, role, index, generation),
        Request::List => list(shared, &shared.lock(), caller),
        Request::Stats { topic } => stats(shared, &shared.lock(), caller, topic),
        Request::Delete { topic } => delete(shared, &mut shared.lock(), caller, &topic),
        Request::Shutdown => {
            if caller.cred.uid != shared.uid {
                return error(
                    ErrorCode::PermissionDenied,
                    "only the daemon's own uid may stop it",
                );
            }
            (Response::Stopping, Vec::new())
        }
    }
}

fn hello(
    shared: &Shared,
    state: &mut State,
    caller: &Caller,
    version: u32,
    client_name: &str,
) -> Answer {
    if let Err(e) = protocol::check_version(version) {
        return (e.to_response(), Vec::new());
    }
    if let Some(c) = state.clients.get_mut(&caller.id) {
        c.hello = true;
        c.name = client_name.chars().take(64).collect();
    }
    (
        Response::HelloOk {
            version: protocol::PROTOCOL_VERSION,
            daemon_version: env!("CARGO_PKG_VERSION").to_string(),
            daemon_pid: std::process::id(),
            epoch: shared.epoch,
        },
        // The status page, read-only: how the client learns of a restarted daemon.
        shared.status_ro.try_clone().into_iter().collect(),
    )
}

fn detach(
    state: &mut State,
    caller: &Caller,
    topic: &str,
    role: Role,
    index: u32,
    generation: u64,
) -> Answer {
    let Some(t) = state.topics.get_mut(topic) else {
        return error(ErrorCode::NoSuchTopic, format!("no topic '{topic}'"));
    };
    if let Some(at) = t
        .attachments
        .iter()
        .position(|a| a.client == caller.id && a.is(role, index, generation))
    {
        t.attachments.remove(at);
        let _ = match role {
            Role::Publisher => t.ring.release_publisher(index as usize, generation),
            Role::Subscriber => t.ring.release_subscriber(index as usize, generation),
        };
        return (Response::Detached, Vec::new());
    }
    // An evicted port lets go of its entry: now it can be reused. (An evicted orphan of a
    // previous daemon is recognised by its pid.)
    let evicted = t.evicted.iter().position(|a| {
        (a.client == caller.id || (a.client == ORPHAN && a.pid == caller.cred.pid))
            && a.is(role, index, generation)
    });
    match evicted {
        Some(at) => {
            let a = t.evicted.remove(at);
            let _ = t.ring.reclaim_subscriber(a.index as usize, a.generation);
            (Response::Detached, Vec::new())
        }
        None => error(
            ErrorCode::BadRequest,
            format!(
                "this connection holds no {role} {index} (generation {generation}) on '{topic}'"
            ),
        ),
    }
}

/// Whether the caller may see `topic` at all (a topic it may not see answers like a missing
/// one: no existence leak).
fn may_see(shared: &Shared, state: &State, caller: &Caller, topic: &str) -> bool {
    [Action::Subscribe, Action::Publish].into_iter().any(|a| {
        state
            .acl
            .allows_with_groups(shared.uid, &caller.cred, &caller.groups, topic, a)
    })
}

fn list(shared: &Shared, state: &State, caller: &Caller) -> Answer {
    let topics = state
        .topics
        .iter()
        .filter(|(name, _)| may_see(shared, state, caller, name))
        .map(|(name, t)| {
            let s = t.ring.stats();
            TopicInfo {
                name: name.clone(),
                spec: t.spec.clone(),
                publishers: s.publishers.len() as u32,
                subscribers: s.subscribers.len() as u32,
                published: s.published,
                bytes: t.bytes(),
            }
        })
        .collect();
    (Response::Topics { topics }, Vec::new())
}

fn stats(shared: &Shared, state: &State, caller: &Caller, topic: Option<String>) -> Answer {
    if let Some(name) = &topic {
        if !state.topics.contains_key(name) || !may_see(shared, state, caller, name) {
            return error(ErrorCode::NoSuchTopic, format!("no topic '{name}'"));
        }
    }
    let topics = state
        .topics
        .iter()
        .filter(|(name, _)| topic.as_ref().is_none_or(|t| t == *name))
        .filter(|(name, _)| may_see(shared, state, caller, name))
        .map(|(name, t)| topic_stats(name, t))
        .collect();
    (Response::Stats { topics }, Vec::new())
}

fn topic_stats(name: &str, t: &Topic) -> TopicStats {
    let s = t.ring.stats();
    TopicStats {
        name: name.to_string(),
        spec: t.spec.clone(),
        bytes: t.bytes(),
        published: s.published,
        publishers: s
            .publishers
            .iter()
            .map(|&(index, pid, published)| PublisherStat {
                index: index as u32,
                pid,
                published,
            })
            .collect(),
        drops: s.subscribers.iter().map(|s| s.4).sum(),
        subscribers: s
            .subscribers
            .iter()
            .map(|&(index, pid, cursor, lag, lagged)| SubscriberStat {
                index: index as u32,
                pid,
                cursor: cursor.saturating_sub(u64::from(t.spec.capacity)),
                lag,
                lagged,
            })
            .collect(),
        stalls: s.stalls,
    }
}

fn delete(shared: &Shared, state: &mut State, caller: &Caller, topic: &str) -> Answer {
    let visible = may_see(shared, state, caller, topic);
    let Some(t) = state.topics.get(topic).filter(|_| visible) else {
        return error(ErrorCode::NoSuchTopic, format!("no topic '{topic}'"));
    };
    if caller.cred.uid != shared.uid && caller.cred.uid != t.owner_uid {
        return error(
            ErrorCode::PermissionDenied,
            format!(
                "only the topic's creator (uid {}) or the daemon's uid may delete '{topic}'",
                t.owner_uid
            ),
        );
    }
    if let Some(t) = state.topics.remove(topic) {
        t.ring.close();
        tracing::info!(topic, "deleted");
    }
    shared.persist(state);
    (Response::Deleted, Vec::new())
}
