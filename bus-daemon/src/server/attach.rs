//! Attaching a port, and creating the topic when the request says so.
//!
//! Creating a topic reserves and zeroes its memory up front, which takes long for a large one;
//! so it runs **outside** the registry lock, in three steps: [`plan`] (under the lock: checks,
//! limits, the name reserved as a [`Creation`]), [`CreateJob::run`] (no lock: the segment is
//! made), and [`finish`] (under the lock: the topic is registered and the port attached).
//! Meanwhile every other request is served; an attach to the same name waits for the creation
//! to end, then attaches to what it made.

use std::os::fd::OwnedFd;
use std::time::Duration;

use bus_core::layout::{Geometry, Layout};
use bus_core::ring::StartAt;
use bus_proto::names::validate_topic_name;
use bus_proto::protocol::{describe_mismatch, ErrorCode, How, Response, Role};
use bus_proto::segment::{Access, MapError, SealStep, SealedFileError};

use super::registry::{Attachment, Caller, Creation, Shared, State, Topic};
use super::{error, Answer};
use crate::acl::Action;
use crate::segment::{create_segment, Segment};

/// What an attach needs next.
pub(super) enum Plan {
    /// Answered.
    Done(Answer),
    /// A previous daemon recorded this topic, and one of its ports may yet hand it back: ask
    /// again shortly (until the adopt grace ends).
    WaitPending,
    /// Another request is creating this topic: ask again when it is done.
    WaitCreation,
    /// The topic must be made: run the job outside the lock, then [`finish`].
    Create(CreateJob),
}

/// A topic to create, its name already reserved in [`State::creating`].
pub(super) struct CreateJob {
    name: String,
    spec: Geometry,
    layout: Layout,
    role: Role,
    start: StartAt,
}

impl CreateJob {
    /// Make the segment: slow for a large topic, and never under the registry lock.
    pub(super) fn run(&self) -> Result<Segment, MapError> {
        create_segment(&self.name, &self.layout)
    }
}

/// Serve an attach from start to end, waiting (without the lock) for a topic being handed
/// back or created.
pub(super) fn serve(
    shared: &Shared,
    caller: &Caller,
    topic: &str,
    role: Role,
    how: How,
    start: StartAt,
) -> Answer {
    loop {
        let plan = {
            let mut state = shared.lock();
            plan(shared, &mut state, caller, topic, role, &how, start)
        };
        match plan {
            Plan::Done(answer) => return answer,
            Plan::WaitPending => std::thread::sleep(Duration::from_millis(5)),
            Plan::WaitCreation => {
                let state = shared.lock();
                if state.creating.contains_key(topic) {
                    let _ = shared
                        .created
                        .wait_timeout(state, Duration::from_millis(100));
                }
            }
            Plan::Create(job) => {
                let made = job.run();
                let mut state = shared.lock();
                let answer = finish(shared, &mut state, caller, job, made);
                drop(state);
                shared.created.notify_all();
                return answer;
            }
        }
    }
}

/// Everything an attach decides under the lock.
pub(super) fn plan(
    shared: &Shared,
    state: &mut State,
    caller: &Caller,
    name: &str,
    role: Role,
    how: &How,
    start: StartAt,
) -> Plan {
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
        .allows_with_groups(shared.uid, cred, &caller.groups, name, action)
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
        state.pending.remove(name);
        shared.persist(state);
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
    let (count, bytes) = state.usage(cred.uid);
    if count >= limits.max_topics as usize {
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
    state.creating.insert(
        name.to_string(),
        Creation {
            uid: cred.uid,
            bytes: layout.total_len,
        },
    );
    Plan::Create(CreateJob {
        name: name.to_string(),
        spec: spec.clone(),
        layout,
        role,
        start,
    })
}

/// Register what [`CreateJob::run`] made and attach the port to it.
pub(super) fn finish(
    shared: &Shared,
    state: &mut State,
    caller: &Caller,
    job: CreateJob,
    made: Result<Segment, MapError>,
) -> Answer {
    state.creating.remove(&job.name);
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
    seg.ring.set_epoch(shared.epoch);
    let files = match seg.ids() {
        Ok(f) => f,
        Err(e) => {
            return error(
                ErrorCode::Internal,
                format!("cannot identify the segment files of '{name}': {e}"),
            )
        }
    };
    tracing::info!(topic = name, bytes = seg.bytes(), "topic created");
    state.topics.insert(
        name.to_string(),
        Topic::new(job.spec, seg, files, caller.cred.uid),
    );
    shared.persist(state);
    attach_port(state, caller, name, job.role, job.start, true)
}

/// Take a table entry of `name` for the caller.
fn attach_port(
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
    let attached = match role {
        Role::Publisher => topic.ring.attach_any_publisher(pid),
        Role::Subscriber => topic.ring.attach_any_subscriber(pid, start),
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
    topic.attachments.push(Attachment {
        client: caller.id,
        role,
        index: index as u32,
        generation,
        pid,
    });
    tracing::debug!(topic = name, ?role, index, generation, pid, "attached");
    (
        Response::Attached {
            topic: name.to_string(),
            spec: topic.spec.clone(),
            index: index as u32,
            generation,
            segment_len: topic.bytes(),
            created,
        },
        // Duplicates, owned by the answer: the registry lock is released before the answer is
        // written, and a concurrent delete must not close the descriptors under us.
        port_fds(topic, role),
    )
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
