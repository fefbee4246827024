//! One request in, one outcome out: an answer, nothing (a notice), or work the event loop
//! carries on with (an attach that waits, a topic to create, a watch to start, a stop).

use std::ops::Bound;
use std::os::fd::OwnedFd;

use bus_core::layout::MAX_TABLE;
use bus_core::ring::StartAt;
use bus_proto::frame::MAX_FRAME;
use bus_proto::pattern::TopicPattern;
use bus_proto::protocol::{
    self, DaemonStatus, ErrorCode, LimitsInfo, PublisherStat, Request, Response, Role,
    SubscriberStat, TopicInfo, TopicStats, Totals, Usage, WakerStat,
};
use serde::Serialize;

use super::adopt;
use super::attach::{self, stopping, AttachRequest, CreateJob, Plan};
use super::registry::{Caller, Ctx, State, Topic, ORPHAN};
use super::wakers;
use super::watch;
use super::{error, Answer};
use crate::acl::Action;

/// What became of a request.
pub(super) enum Outcome {
    /// Send this.
    Answer(Answer),
    /// A notice: nothing goes back.
    Silent,
    /// A `Held` notice started a watch of this topic: its first tick is due.
    Watch(String),
    /// An attach that must wait (the topic is being created, or may yet be handed back after a
    /// restart): ask again when that is settled.
    Park(AttachRequest),
    /// A topic to make off the loop; its creator is answered when it is done.
    Create(CreateJob),
    /// A topic was handed back after a restart: send this, and let attaches parked on the name
    /// go on.
    Adopted(String, Answer),
    /// Send this, then stop the daemon.
    Stop(Answer),
    /// Start a topic watch over this channel (see `announce`).
    TopicWatch {
        pattern: TopicPattern,
        existing: Option<StartAt>,
        channel: OwnedFd,
    },
}

/// Serve one request; `fds` are the descriptors that came with it (only a `Reattach` uses
/// them; the event loop passes none with any other request).
pub(super) fn handle(
    ctx: &Ctx,
    state: &mut State,
    caller: &Caller,
    request: Request,
    fds: Vec<OwnedFd>,
) -> Outcome {
    if let Request::Held {
        topic,
        index,
        generation,
    } = &request
    {
        // Never answered, whatever becomes of it.
        let hello = state.clients.get(&caller.id).is_some_and(|c| c.hello);
        if hello && !state.stopping && watch::held(state, caller, topic, *index, *generation) {
            return Outcome::Watch(topic.clone());
        }
        return Outcome::Silent;
    }
    if state.stopping {
        return Outcome::Answer(stopping());
    }
    if let Request::Hello {
        version,
        client_name,
    } = &request
    {
        return Outcome::Answer(hello(ctx, state, caller, *version, client_name));
    }
    if !state.clients.get(&caller.id).is_some_and(|c| c.hello) {
        return Outcome::Answer(error(ErrorCode::BadRequest, "send hello first"));
    }
    // A request about a topic the caller may not see is answered exactly as for a missing
    // topic, before anything else is looked at: no answer tells it whether the topic exists.
    if let Some(topic) = port_request_topic(&request) {
        if !may_see(ctx, state, caller, topic) {
            let answer = match request {
                Request::Reattach { .. } => adopt::no_topic(topic),
                _ => no_topic(topic),
            };
            return Outcome::Answer(answer);
        }
    }
    let answer = match request {
        Request::Hello { .. } => error(ErrorCode::BadRequest, "hello was already answered"),
        Request::Held { .. } => return Outcome::Silent,
        Request::Attach {
            topic,
            role,
            how,
            start,
        } => {
            let req = AttachRequest {
                topic,
                role,
                how,
                start,
            };
            return attach_outcome(ctx, state, caller, req);
        }
        Request::Reattach {
            topic,
            role,
            index,
            generation,
        } => {
            let (answer, adopted) = adopt::reattach(
                ctx,
                state,
                caller,
                &topic,
                adopt::PortId {
                    role,
                    index,
                    generation,
                },
                fds,
            );
            if adopted {
                return Outcome::Adopted(topic, answer);
            }
            answer
        }
        Request::Detach {
            topic,
            role,
            index,
            generation,
        } => detach(state, caller, &topic, role, index, generation),
        Request::AddWaker {
            topic,
            role,
            index,
            generation,
            presence,
        } => wakers::add(state, caller, &topic, (role, index, generation), presence),
        Request::RemoveWaker {
            topic,
            slot,
            generation,
        } => wakers::remove(state, caller, &topic, slot, generation),
        Request::List => list(ctx, state, caller, None),
        Request::ListAfter { after } => list(ctx, state, caller, Some(&after)),
        Request::Stats { topic: Some(name) } => stats_of(ctx, state, caller, &name),
        Request::Stats { topic: None } => stats(ctx, state, caller, None),
        Request::StatsAfter { after } => stats(ctx, state, caller, Some(&after)),
        Request::Status => status(ctx, state, caller),
        Request::Watch { pattern, existing } => {
            let pattern = match TopicPattern::new(&pattern) {
                Ok(p) => p,
                Err(e) => return Outcome::Answer(error(ErrorCode::BadRequest, e)),
            };
            let mut fds = fds.into_iter();
            match (fds.next(), fds.next()) {
                (Some(channel), None) => {
                    return Outcome::TopicWatch {
                        pattern,
                        existing,
                        channel,
                    }
                }
                _ => error(
                    ErrorCode::BadRequest,
                    "a watch needs exactly one descriptor beside it: a Unix stream socket, the watch channel",
                ),
            }
        }
        Request::Delete { topic } => delete(ctx, state, caller, &topic),
        Request::Shutdown => {
            if caller.cred.uid != ctx.uid {
                error(
                    ErrorCode::PermissionDenied,
                    "only the daemon's own uid may stop it",
                )
            } else {
                return Outcome::Stop((Response::Stopping, Vec::new()));
            }
        }
    };
    Outcome::Answer(answer)
}

/// Plan an attach (first asked, or asked again after it waited).
pub(super) fn attach_outcome(
    ctx: &Ctx,
    state: &mut State,
    caller: &Caller,
    req: AttachRequest,
) -> Outcome {
    match attach::plan(ctx, state, caller, &req) {
        Plan::Done(answer) => Outcome::Answer(answer),
        Plan::WaitPending | Plan::WaitCreation => Outcome::Park(req),
        Plan::Create(job) => Outcome::Create(job),
    }
}

fn hello(ctx: &Ctx, state: &mut State, caller: &Caller, version: u32, client_name: &str) -> Answer {
    if let Err(e) = protocol::check_version(version) {
        return (e.to_response(), Vec::new());
    }
    match state.clients.get_mut(&caller.id) {
        // Answered once per connection: each answer carries a descriptor, and a peer that
        // repeats hello must not be able to pile them up (`MAX_OUTBOUND` counts bytes).
        Some(c) if c.hello => {
            return error(
                ErrorCode::BadRequest,
                "hello was already answered on this connection",
            )
        }
        Some(c) => {
            c.hello = true;
            c.name = client_name.chars().take(64).collect();
        }
        None => {}
    }
    (
        Response::HelloOk {
            version: protocol::PROTOCOL_VERSION,
            daemon_version: env!("CARGO_PKG_VERSION").to_string(),
            daemon_pid: std::process::id(),
            epoch: ctx.epoch,
        },
        // The status page, read-only: how the client learns of a restarted daemon.
        ctx.status_ro.try_clone().into_iter().collect(),
    )
}

pub(super) fn detach(
    state: &mut State,
    caller: &Caller,
    topic: &str,
    role: Role,
    index: u32,
    generation: u64,
) -> Answer {
    let Some(t) = state.topics.get_mut(topic) else {
        return no_topic(topic);
    };
    if let Some(at) = t
        .attachments
        .iter()
        .position(|a| a.client == caller.id && a.is(role, index, generation))
    {
        t.attachments.remove(at);
        let port = (role, index, generation);
        t.release_wakers(|w| w.client == caller.id && w.port == port);
        let _ = match role {
            Role::Publisher => t.ring.release_publisher(index as usize, generation),
            Role::Subscriber => t.ring.release_subscriber(index as usize, generation),
        };
        // The port released its entry itself; the daemon rings for it.
        t.ring.presence_changed();
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

/// The topic a request about one of the caller's ports names (`Attach` is checked against
/// the rules by the planner, and `Stats`/`Delete` by their own handlers).
fn port_request_topic(request: &Request) -> Option<&str> {
    match request {
        Request::Reattach { topic, .. }
        | Request::Detach { topic, .. }
        | Request::AddWaker { topic, .. }
        | Request::RemoveWaker { topic, .. } => Some(topic),
        _ => None,
    }
}

/// The answer for a topic that does not exist, or that the caller may not see.
pub(super) fn no_topic(topic: &str) -> Answer {
    error(ErrorCode::NoSuchTopic, format!("no topic '{topic}'"))
}

/// Whether the caller may see `topic` at all (a topic it may not see answers like a missing
/// one: no existence leak).
fn may_see(ctx: &Ctx, state: &State, caller: &Caller, topic: &str) -> bool {
    [Action::Subscribe, Action::Publish].into_iter().any(|a| {
        state
            .acl
            .allows_with_groups(ctx.uid, &caller.cred, &caller.groups, topic, a)
    })
}

/// Room for a page's items in one frame, leaving some for the envelope and `next`.
const PAGE_BUDGET: usize = MAX_FRAME - 2048;

/// The topics after `after` (all of them without), visible to the caller, in name order.
fn visible<'a>(
    ctx: &'a Ctx,
    state: &'a State,
    caller: &'a Caller,
    after: Option<&'a str>,
) -> impl Iterator<Item = (&'a String, &'a Topic)> + 'a {
    let from = match after {
        Some(a) => Bound::Excluded(a),
        None => Bound::Unbounded,
    };
    state
        .topics
        .range::<str, _>((from, Bound::Unbounded))
        .filter(move |(name, _)| may_see(ctx, state, caller, name))
}

/// As many items as fit a frame; `next` names the last one when more follow.
fn page<'a, T: Serialize>(
    items: impl Iterator<Item = (&'a String, T)>,
) -> (Vec<T>, Option<String>) {
    let mut out = Vec::new();
    let mut used = 0usize;
    let mut last: Option<&String> = None;
    for (name, item) in items {
        let len = serde_json::to_vec(&item).map_or(PAGE_BUDGET, |b| b.len() + 1);
        if !out.is_empty() && used + len > PAGE_BUDGET {
            return (out, last.cloned());
        }
        used += len;
        last = Some(name);
        out.push(item);
    }
    (out, None)
}

fn list(ctx: &Ctx, state: &State, caller: &Caller, after: Option<&str>) -> Answer {
    let items = visible(ctx, state, caller, after).map(|(name, t)| {
        let s = t.ring.stats();
        let info = TopicInfo {
            name: name.clone(),
            spec: t.spec.clone(),
            publishers: s.publishers.len() as u32,
            subscribers: s.subscribers.len() as u32,
            published: s.published,
            bytes: t.bytes(),
        };
        (name, info)
    });
    let (topics, next) = page(items);
    (Response::Topics { topics, next }, Vec::new())
}

fn stats_of(ctx: &Ctx, state: &State, caller: &Caller, name: &str) -> Answer {
    match state.topics.get(name) {
        Some(t) if may_see(ctx, state, caller, name) => (
            Response::Stats {
                topics: vec![topic_stats(name, t)],
                next: None,
            },
            Vec::new(),
        ),
        _ => no_topic(name),
    }
}

fn stats(ctx: &Ctx, state: &State, caller: &Caller, after: Option<&str>) -> Answer {
    let items = visible(ctx, state, caller, after).map(|(name, t)| (name, topic_stats(name, t)));
    let (topics, next) = page(items);
    (Response::Stats { topics, next }, Vec::new())
}

fn topic_stats(name: &str, t: &Topic) -> TopicStats {
    let s = t.ring.stats();
    // Only a topic with wake slots in use pays for a look at its wake table.
    let active = if t.wakers.is_empty() {
        Vec::new()
    } else {
        t.ring.active_wakers()
    };
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
        unheard: s.unheard,
        wakers: t
            .wakers
            .iter()
            .map(|w| WakerStat {
                slot: w.slot as u32,
                pid: active.iter().find(|a| a.0 == w.slot).map_or(0, |a| a.2),
                role: w.port.0,
                index: w.port.1,
                armed: t.ring.waker_armed(w.slot),
            })
            .collect(),
    }
}

/// Descriptors this process has open (`/proc/self/fd`).
fn open_files() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

fn status(ctx: &Ctx, state: &State, caller: &Caller) -> Answer {
    let uid = caller.cred.uid;
    let owned = state.usage(uid);
    let limits = &state.acl.limits;
    let status = DaemonStatus {
        daemon_pid: std::process::id(),
        daemon_version: env!("CARGO_PKG_VERSION").to_string(),
        totals: Totals {
            topics: (state.topics.len() + state.creating.len()) as u64,
            bytes: state.owned.values().map(|o| o.bytes).sum(),
            clients: state.clients.len() as u64,
            watched: state.topics.values().filter(|t| t.watch.is_some()).count() as u64,
            open_files: open_files(),
        },
        uid,
        usage: Usage {
            topics: owned.topics,
            bytes: owned.bytes,
            clients: state.clients_per_uid.get(&uid).copied().unwrap_or(0),
        },
        limits: LimitsInfo {
            max_topics: u64::from(limits.max_topics),
            max_bytes_per_uid: limits.max_bytes_per_uid,
            max_clients_per_uid: u64::from(limits.max_clients_per_uid),
            max_publishers_per_topic: u64::from(MAX_TABLE),
            max_subscribers_per_topic: u64::from(MAX_TABLE),
            max_open_files: ctx.max_open_files,
            max_frame: MAX_FRAME as u64,
        },
    };
    (Response::Status { status }, Vec::new())
}

fn delete(ctx: &Ctx, state: &mut State, caller: &Caller, topic: &str) -> Answer {
    let visible = may_see(ctx, state, caller, topic);
    let Some(t) = state.topics.get(topic).filter(|_| visible) else {
        return no_topic(topic);
    };
    if caller.cred.uid != ctx.uid && caller.cred.uid != t.owner_uid {
        return error(
            ErrorCode::PermissionDenied,
            format!(
                "only the topic's creator (uid {}) or the daemon's uid may delete '{topic}'",
                t.owner_uid
            ),
        );
    }
    if let Some(t) = state.remove_topic(topic) {
        t.ring.close();
        tracing::info!(topic, "deleted");
    }
    (Response::Deleted, Vec::new())
}
