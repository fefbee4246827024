//! After a daemon restart: taking topics back from the ports that hand them in, letting those
//! ports re-attach, and giving up on the ports whose processes died meanwhile.
//!
//! A restarted daemon knows the topics of the one that died only from its records
//! (`crate::state`): segments are anonymous files, so it cannot open them itself. The first
//! port of a topic to come back (`Reattach`) hands the topic's two files in; the daemon adopts
//! the topic if they are exactly the recorded files, its own (uid, 0600) and sealed, and the
//! header validates. The ports the records name (`crate::state::PortRecord`: role, entry,
//! generation, process and uid, written when the port was handed out) whose entries are still
//! active become *orphans*; each `Reattach` must name an orphan recorded for the asking process
//! and uid, in the role recorded, and the rules must grant that uid that role now. Nothing the
//! control file says decides who comes back or as what: its subscribers can write it. Entries
//! active in the segment that the records do not name (forged, or never handed out) are orphans
//! no one may claim, and are released at the end of the grace.
//!
//! After the adopt grace, orphans whose process is gone are released like the ports of any
//! departed client; orphans whose processes live on keep their place, and are looked at again
//! every [`ORPHAN_CHECK`] until they re-attach or die.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use bus_proto::protocol::{ErrorCode, Response, Role};
use bus_proto::segment::SegmentFds;

use super::attach::port_fds;
use super::registry::{Attachment, Caller, Ctx, State, Topic, ORPHAN, UNKNOWN_UID};
use super::{error, Answer};
use crate::acl::Action;
use crate::segment::adopt_segment;
use crate::state::TopicRecord;

/// Take the segment handed back for `record` if it is exactly the recorded one; its active
/// ports become orphans, waiting for their processes to re-attach.
fn adopt(record: &TopicRecord, fds: SegmentFds, uid: u32, epoch: u32) -> Result<Topic, String> {
    let seg = adopt_segment(fds, uid, record.files).map_err(|e| e.to_string())?;
    if seg.ring.is_closed() {
        return Err("the topic was closed".into());
    }
    let spec = seg.ring.geometry().clone();
    if spec != record.spec {
        return Err(format!(
            "the segment describes {spec:?}, but the topic was recorded as {:?}",
            record.spec
        ));
    }
    let mut topic = Topic::new(spec, seg, record.files, record.owner_uid);
    let ring = topic.ring.clone();
    // The entries active in the segment, as (role, index, generation): only to narrow the
    // recorded ports to those still there. Whatever else is active was never handed out (or
    // was forged): an orphan with no process and no uid, released at the end of the grace.
    let active: Vec<(Role, u32, u64)> = ring
        .active_publishers()
        .into_iter()
        .map(|(i, g, _)| (Role::Publisher, i as u32, g))
        .chain(
            ring.active_subscribers()
                .into_iter()
                .map(|(i, g, _)| (Role::Subscriber, i as u32, g)),
        )
        .collect();
    topic.attachments = active
        .iter()
        .map(|&(role, index, generation)| {
            let recorded = record
                .ports
                .iter()
                .rev()
                .find(|p| p.role == role && p.index == index && p.generation == generation);
            Attachment {
                client: ORPHAN,
                role,
                index,
                generation,
                pid: recorded.map_or(0, |p| p.pid),
                uid: recorded.map_or(UNKNOWN_UID, |p| p.uid),
            }
        })
        .collect();
    // Evicted entries let their own port detach; they grant nothing (no re-attach).
    topic.evicted = ring
        .evicted_subscribers()
        .into_iter()
        .map(|(index, generation, pid)| Attachment {
            client: ORPHAN,
            role: Role::Subscriber,
            index: index as u32,
            generation,
            pid,
            uid: UNKNOWN_UID,
        })
        .collect();
    // The waiters on descriptors registered with the daemon that died: this one has none of
    // their eventfds. Their ports see the new epoch and register again.
    for (slot, generation, _) in ring.active_wakers() {
        let _ = ring.release_waker(slot, generation);
    }
    ring.set_epoch(epoch);
    Ok(topic)
}

/// How often, after the adopt grace, the daemon checks whether the processes of orphans that
/// have not re-attached are still alive (only while there are such orphans).
pub(super) const ORPHAN_CHECK: Duration = Duration::from_millis(250);

/// A port as a `Reattach` names it: its role, entry and the entry's generation.
#[derive(Debug, Clone, Copy)]
pub(super) struct PortId {
    pub role: Role,
    pub index: u32,
    pub generation: u64,
}

/// A process that held a port under the previous daemon takes it back. The first port of a
/// topic to come back hands the topic's files in (`fds`): the daemon adopts the topic from them
/// if they are the recorded files. Then the port must be an orphan of the adopted topic, active
/// at that generation, and owned by the asking process. Returns the answer, and whether the
/// topic was adopted just now.
pub(super) fn reattach(
    ctx: &Ctx,
    state: &mut State,
    caller: &Caller,
    topic: &str,
    port: PortId,
    fds: Vec<OwnedFd>,
) -> (Answer, bool) {
    let PortId {
        role,
        index,
        generation,
    } = port;
    let mut adopted = false;
    if !state.topics.contains_key(topic) {
        if let Some(record) = state.pending.get(topic) {
            let mut fds = fds.into_iter();
            let (Some(control), Some(data)) = (fds.next(), fds.next()) else {
                return (
                    error(
                        ErrorCode::BadRequest,
                        format!("re-attaching to '{topic}' after a daemon restart needs its two segment descriptors"),
                    ),
                    false,
                );
            };
            match adopt(record, SegmentFds { control, data }, ctx.uid, ctx.epoch) {
                Ok(t) => {
                    tracing::info!(
                        topic,
                        ports = t.attachments.len(),
                        pid = caller.cred.pid,
                        "adopted a topic handed back after a daemon restart"
                    );
                    state.pending.remove(topic);
                    state.insert_topic(topic, t, false);
                    adopted = true;
                    // Handed back after the grace: its dead orphans are given up at once.
                    if state.adopt_deadline.is_some_and(|d| Instant::now() >= d) {
                        give_up_orphans(state);
                    }
                }
                Err(why) => {
                    tracing::warn!(
                        topic,
                        pid = caller.cred.pid,
                        uid = caller.cred.uid,
                        why = why.as_str(),
                        "refused segment files handed back"
                    );
                    return (
                        error(
                            ErrorCode::BadRequest,
                            format!("the files handed back are not the segment of '{topic}': {why}; attach anew"),
                        ),
                        false,
                    );
                }
            }
        }
    }
    let action = match role {
        Role::Publisher => Action::Publish,
        Role::Subscriber => Action::Subscribe,
    };
    // The rules decide the role now, whatever the port was before.
    let granted =
        state
            .acl
            .allows_with_groups(ctx.uid, &caller.cred, &caller.groups, topic, action);
    let Some(t) = state.topics.get_mut(topic) else {
        return (no_topic(topic), adopted);
    };
    // The orphan as the records name it: this process, this uid, this role and entry.
    let orphan = t.attachments.iter_mut().find(|a| {
        a.client == ORPHAN
            && a.is(role, index, generation)
            && a.uid != UNKNOWN_UID
            && a.uid == caller.cred.uid
            && a.pid != 0
            && a.pid == caller.cred.pid
    });
    let answer = match orphan {
        Some(a) if granted => {
            a.client = caller.id;
            let pid = a.pid;
            tracing::info!(topic, ?role, index, pid, "port re-attached after a daemon restart");
            let answer = Response::Attached {
                topic: topic.to_string(),
                spec: t.spec.clone(),
                index,
                generation,
                segment_len: t.bytes(),
                created: false,
            };
            let fds = port_fds(t, role);
            state.hold(caller.id, topic);
            (answer, fds)
        }
        _ => error(
            ErrorCode::BadRequest,
            format!(
                "no orphaned {role} {index} (generation {generation}) of process {} on '{topic}'; attach anew",
                caller.cred.pid
            ),
        ),
    };
    (answer, adopted)
}

/// The answer to a `Reattach` for a topic that does not exist (or that the caller may not see:
/// the same answer, so that it learns nothing).
pub(super) fn no_topic(topic: &str) -> Answer {
    error(
        ErrorCode::NoSuchTopic,
        format!("no topic '{topic}' to re-attach to; attach anew"),
    )
}

/// Whether process `pid` exists (orphans have no connection to watch, so their liveness is
/// checked by pid; a blocked subscriber that has not noticed the restart yet must keep its
/// place, while a process that died meanwhile must not hold the ring).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Ok(()) | Err(nix::Error::EPERM)
    )
}

/// After the grace period for adopted topics: let go of the orphans whose processes are gone.
/// Orphans whose process lives on keep their place until it re-attaches or dies. Returns
/// whether such orphans remain (then the daemon looks again after [`ORPHAN_CHECK`]).
pub(super) fn give_up_orphans(state: &mut State) -> bool {
    state.release_ports(ORPHAN, "its process died while the daemon restarted", |a| {
        !process_alive(a.pid)
    });
    state.holdings.contains_key(&ORPHAN)
}

/// Forget the records that no port handed back within the grace and the time kept after it:
/// their ports attach anew.
pub(super) fn forget_pending(state: &mut State) {
    if state.pending.is_empty() {
        return;
    }
    let names: Vec<String> = state.pending.keys().cloned().collect();
    for name in &names {
        state.forget_pending(name);
    }
    tracing::info!(
        ?names,
        "forgot recorded topics that no port handed back; their ports attach anew"
    );
}
