//! Attaching a port, and creating the topic when the request says so.
//!
//! Creating a topic reserves and zeroes its memory up front, which takes long for a large one;
//! so it runs **off the event loop**, in three steps: [`plan`] (on the loop: checks, limits,
//! the name reserved as a [`Creation`](super::registry::Creation)), the segment made by a
//! worker (`creator`), and [`finish`] (on the loop: the topic is registered and the port
//! attached). Meanwhile every other request is served; an attach to the same name waits,
//! parked, for the creation to end, then attaches to what it made.

use std::os::fd::OwnedFd;

use bus_core::layout::{Geometry, Layout};
use bus_core::ring::StartAt;
use bus_proto::names::validate_topic_name;
use bus_proto::protocol::{describe_mismatch, ErrorCode, How, Response, Role};
use bus_proto::segment::{Access, MapError, SealStep, SealedFileError};

use super::registry::{Attachment, Caller, Ctx, State, Topic};
use super::{error, Answer};
use crate::acl::Action;
use crate::segment::Segment;

/// Descriptors the daemon keeps for itself (socket, lock, status page, epoll, pipes, workers).
const FIXED_FILES: u64 = 64;
/// Descriptors kept free for connections that come later, beyond those open now.
const SPARE_FOR_CLIENTS: u64 = 256;
/// Descriptors each topic holds (its control and data files).
pub(super) const FILES_PER_TOPIC: u64 = 2;

/// What an attach needs next.
pub(super) enum Plan {
    /// Answered.
    Done(Answer),
    /// A previous daemon recorded this topic, and one of its ports may yet hand it back: ask
    /// again shortly (until the adopt grace ends).
    WaitPending,
    /// Another request is creating this topic: ask again when it is done.
    WaitCreation,
    /// The topic must be made: a worker makes the segment, then [`finish`].
    Create(CreateJob),
}

/// A topic to create, its name already reserved in [`State::creating`].
#[derive(Debug)]
pub(super) struct CreateJob {
    pub(super) name: String,
    pub(super) spec: Geometry,
    pub(super) layout: Layout,
    pub(super) role: Role,
    pub(super) start: StartAt,
}

/// An attach request, kept whole while it waits.
#[derive(Debug, Clone)]
pub(super) struct AttachRequest {
    pub(super) topic: String,
    pub(super) role: Role,
    pub(super) how: How,
    pub(super) start: StartAt,
}

/// Everything an attach decides, on the loop.
pub(super) fn plan(ctx: &Ctx, state: &mut State, caller: &Caller, req: &AttachRequest) -> Plan {
    let (name, role, how, start) = (req.topic.as_str(), req.role, &req.how, req.start);
    if state.stopping {
        return Plan::Done(stopping());
    }
    if let Err(e) = validate_topic_name(name) {
        return Plan::Done(error(
            ErrorCode::InvalidTopicName,
            format!("invalid topic name '{name}': {e}"),
        ));
    }
    let action = match role {
        Role::Publisher => Action::Publish,
        Role::Subscriber => Action::Subscribe,
    };
    let cred = &caller.cred;
    if !state
        .acl
        .allows_with_groups(ctx.uid, cred, &caller.groups, name, action)
    {
        return Plan::Done(error(
            ErrorCode::PermissionDenied,
            format!(
                "uid {} (gid {}) may not {} on '{name}': add a rule granting it to the daemon's rules file",
                cred.uid,
                cred.gid,
                match role {
                    Role::Publisher => "publish",
                    Role::Subscriber => "subscribe",
                }
            ),
        ));
    }
    if let Some(topic) = state.topics.get(name) {
        let requested = match how {
            How::Open { type_info: None } => None,
            How::Open { type_info: Some(t) } => Some(Geometry {
                type_info: t.clone(),
                ..topic.spec.clone()
            }),
            How::Create { spec, exact: true } => Some(spec.clone()),
            How::Create { spec, exact: false } => Some(Geometry {
                type_info: spec.type_info.clone(),
                ..topic.spec.clone()
            }),
        };
        if let Some((code, message)) = requested
            .as_ref()
            .and_then(|r| describe_mismatch(name, role, &topic.spec, r))
        {
            return Plan::Done(error(code, message));
        }
        return Plan::Done(attach_port(state, caller, name, role, start, false));
    }
    if state.creating.contains_key(name) {
        return Plan::WaitCreation;
    }
    if state.pending.contains_key(name) {
        if state
            .adopt_deadline
            .is_some_and(|d| std::time::Instant::now() < d)
        {
            return Plan::WaitPending;
        }
        state.forget_pending(name);
        if matches!(how, How::Create { .. }) {
            tracing::warn!(
                topic = name,
                "no port handed this topic back within the adopt grace; creating it anew"
            );
        } else {
            tracing::warn!(
                topic = name,
                "no port handed this topic back within the adopt grace; it is forgotten"
            );
        }
    }
    if matches!(how, How::Create { .. })
        && !state
            .acl
            .allows_with_groups(ctx.uid, cred, &caller.groups, name, Action::Create)
    {
        return Plan::Done(error(
            ErrorCode::PermissionDenied,
            format!(
                "uid {} (gid {}) may not create '{name}' (it may only {}): grant it `create` or `publish` on it in the daemon's rules file, or let a publisher create the topic first",
                cred.uid,
                cred.gid,
                match role {
                    Role::Publisher => "publish",
                    Role::Subscriber => "subscribe",
                }
            ),
        ));
    }
    let spec = match how {
        How::Open { .. } => {
            return Plan::Done(error(
                ErrorCode::NoSuchTopic,
                format!(
                    "no topic '{name}': check the name, or create it first (a port's create() or open_or_create())"
                ),
            ))
        }
        How::Create { spec, .. } => spec,
    };
    let layout = match Layout::compute(spec) {
        Ok(l) => l,
        Err(e) => {
            return Plan::Done(error(
                ErrorCode::InvalidOptions,
                format!("invalid options for topic '{name}': {e}"),
            ))
        }
    };
    let limits = &state.acl.limits;
    let owned = state.usage(cred.uid);
    let (count, bytes) = (owned.topics, owned.bytes);
    if count >= u64::from(limits.max_topics) {
        return Plan::Done(error(
            ErrorCode::LimitReached,
            format!(
                "cannot create topic '{name}': uid {} already owns {count} topics, its limit (limits.max_topics = {}); delete some or raise the limit",
                cred.uid, limits.max_topics
            ),
        ));
    }
    if bytes.saturating_add(layout.total_len) > limits.max_bytes_per_uid {
        return Plan::Done(error(
            ErrorCode::LimitReached,
            format!(
                "cannot create topic '{name}': it needs {} bytes of shared memory and uid {} already uses {bytes} of its {} (limits.max_bytes_per_uid); use a smaller capacity or slot size, or raise the limit",
                layout.total_len, cred.uid, limits.max_bytes_per_uid
            ),
        ));
    }
    let files = FIXED_FILES
        + SPARE_FOR_CLIENTS
        + state.clients.len() as u64
        + FILES_PER_TOPIC * (state.topics.len() + state.creating.len() + 1) as u64;
    if files > ctx.max_open_files {
        return Plan::Done(error(
            ErrorCode::LimitReached,
            format!(
                "cannot create topic '{name}': shmbusd's open-file limit (RLIMIT_NOFILE = {}) has no room for another topic ({} topics hold {FILES_PER_TOPIC} descriptors each, and {} clients one each); raise shmbusd's open-file limit (systemd: LimitNOFILE=, shell: ulimit -n) or delete topics",
                ctx.max_open_files,
                state.topics.len() + state.creating.len(),
                state.clients.len()
            ),
        ));
    }
    state.begin_creation(name, cred.uid, layout.total_len);
    Plan::Create(CreateJob {
        name: name.to_string(),
        spec: spec.clone(),
        layout,
        role,
        start,
    })
}

/// Register what a worker made for `job` and attach the caller's port to it (`caller`: `None`
/// when the asking connection closed meanwhile; the topic is registered all the same).
pub(super) fn finish(
    ctx: &Ctx,
    state: &mut State,
    caller: Option<&Caller>,
    job: CreateJob,
    made: Result<Segment, MapError>,
) -> Answer {
    state.end_creation(&job.name);
    let name = job.name.as_str();
    let seg = match made {
        Ok(seg) => seg,
        Err(e) => {
            tracing::warn!(topic = name, error = %e, "cannot create a topic");
            let (code, hint) = match &e {
                MapError::Create(SealedFileError {
                    step: SealStep::Reserve(_),
                    ..
                }) => (
                    ErrorCode::NoMemory,
                    "; free memory, raise the memory limit of shmbusd's cgroup, or make the topic smaller (capacity, slot size)",
                ),
                MapError::Create(SealedFileError {
                    step: SealStep::Create,
                    source,
                }) if matches!(source.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => (
                    ErrorCode::LimitReached,
                    "; shmbusd ran out of descriptors: raise its open-file limit (systemd: LimitNOFILE=, shell: ulimit -n)",
                ),
                _ => (ErrorCode::Internal, ""),
            };
            return error(
                code,
                format!("cannot create the shared memory of topic '{name}': {e}{hint}"),
            );
        }
    };
    if state.stopping {
        return stopping();
    }
    seg.ring.set_epoch(ctx.epoch);
    let files = match seg.ids() {
        Ok(f) => f,
        Err(e) => {
            return error(
                ErrorCode::Internal,
                format!("cannot identify the segment files of '{name}': {e}"),
            )
        }
    };
    let Some(caller) = caller else {
        tracing::info!(
            topic = name,
            bytes = seg.bytes(),
            "topic created (its creator left meanwhile)"
        );
        return error(ErrorCode::Internal, "the asking connection is gone");
    };
    tracing::info!(topic = name, bytes = seg.bytes(), "topic created");
    state.insert_topic(
        name,
        Topic::new(job.spec, seg, files, caller.cred.uid),
        true,
    );
    attach_port(state, caller, name, job.role, job.start, true)
}

/// Take a table entry of `name` for the caller.
pub(super) fn attach_port(
    state: &mut State,
    caller: &Caller,
    name: &str,
    role: Role,
    start: StartAt,
    created: bool,
) -> Answer {
    let Some(topic) = state.topics.get_mut(name) else {
        return error(ErrorCode::Internal, format!("topic '{name}' vanished"));
    };
    let pid = caller.cred.pid;
    let attach = |topic: &Topic| match role {
        Role::Publisher => topic.ring.attach_any_publisher(pid),
        Role::Subscriber => topic.ring.attach_any_subscriber(pid, start),
    };
    let mut attached = attach(topic);
    if attached.is_err() && state.reclaim_unknown(name) > 0 {
        // The table was full of entries no one was handed: freed, try once more.
        match state.topics.get_mut(name) {
            Some(t) => attached = attach(t),
            None => return error(ErrorCode::Internal, format!("topic '{name}' vanished")),
        }
    }
    let Some(topic) = state.topics.get_mut(name) else {
        return error(ErrorCode::Internal, format!("topic '{name}' vanished"));
    };
    let Ok((index, generation)) = attached else {
        let (what, max) = match role {
            Role::Publisher => ("publishers", topic.spec.max_publishers),
            Role::Subscriber => ("subscribers", topic.spec.max_subscribers),
        };
        return error(
            ErrorCode::TableFull,
            format!("topic '{name}' already has {max} {what}, its maximum; detach one or recreate the topic with a larger max_{what}"),
        );
    };
    let port = Attachment {
        client: caller.id,
        role,
        index: index as u32,
        generation,
        pid,
        uid: caller.cred.uid,
    };
    topic.attachments.push(port);
    topic.ring.presence_changed();
    tracing::debug!(topic = name, ?role, index, generation, pid, "attached");
    let answer = (
        Response::Attached {
            topic: name.to_string(),
            spec: topic.spec.clone(),
            index: index as u32,
            generation,
            segment_len: topic.bytes(),
            created,
        },
        // Duplicates, owned by the answer: it may wait in the connection's queue, and a delete
        // meanwhile must not close the descriptors under it.
        port_fds(topic, role),
    );
    state.hold(caller.id, name);
    // What a restarted daemon will trust about this port (never the control file).
    state.record_port(name, &port);
    answer
}

/// The descriptors a port of `role` gets: the control file, and the data file (read-only for a
/// subscriber).
pub(super) fn port_fds(topic: &Topic, role: Role) -> Vec<OwnedFd> {
    let access = match role {
        Role::Publisher => Access::ReadWrite,
        Role::Subscriber => Access::Subscriber,
    };
    match topic.seg.fds_for(access) {
        Ok(fds) => fds.into(),
        Err(e) => {
            tracing::error!(error = %e, "cannot duplicate the segment descriptors");
            Vec::new()
        }
    }
}

pub(super) fn stopping() -> Answer {
    error(
        ErrorCode::ShuttingDown,
        "the daemon is stopping; reconnect to a new one",
    )
}
