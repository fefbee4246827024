//! What the daemon knows: its topics, its clients, the ports each client holds, and the one
//! routine that lets go of the ports of whoever is gone.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use bus_core::layout::Geometry;
use bus_core::ring::RepairOutcome;
use bus_proto::fdpass::PeerCred;
use bus_proto::protocol::Role;
use bus_proto::segment::ShmRing;
use bus_proto::status::StatusPage;

use super::Config;
use crate::acl::AccessConfig;
use crate::segment::{FileId, Segment};
use crate::state::TopicRecord;

/// A connection's id. [`ORPHAN`] is no connection.
pub(super) type ClientId = u64;

/// The client id of ports adopted from a previous daemon that have not re-attached yet.
pub(super) const ORPHAN: ClientId = 0;

/// A port a client holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Attachment {
    pub(super) client: ClientId,
    pub(super) role: Role,
    pub(super) index: u32,
    pub(super) generation: u64,
    /// The owning process (for orphans, whose liveness is checked by pid).
    pub(super) pid: u32,
}

impl Attachment {
    pub(super) fn is(&self, role: Role, index: u32, generation: u64) -> bool {
        self.role == role && self.index == index && self.generation == generation
    }
}

pub(super) struct Topic {
    pub(super) spec: Geometry,
    pub(super) ring: Arc<ShmRing>,
    /// The segment's files (the ring maps them).
    pub(super) seg: Segment,
    /// Their identities, as recorded for a restarted daemon.
    pub(super) files: [FileId; 2],
    pub(super) owner_uid: u32,
    pub(super) attachments: Vec<Attachment>,
    /// Subscribers evicted while their port may live: their entries are reclaimed (made free
    /// for reuse) only when the port detaches or its client goes away.
    pub(super) evicted: Vec<Attachment>,
    /// Subscriber (index, generation) → (cursor, since when it has not moved while blocking).
    pub(super) stuck: HashMap<(usize, u64), (u64, Instant)>,
}

impl Topic {
    pub(super) fn new(spec: Geometry, seg: Segment, files: [FileId; 2], owner_uid: u32) -> Topic {
        Topic {
            spec,
            ring: seg.ring.clone(),
            seg,
            files,
            owner_uid,
            attachments: Vec::new(),
            evicted: Vec::new(),
            stuck: HashMap::new(),
        }
    }

    /// Bytes of shared memory the topic commits.
    pub(super) fn bytes(&self) -> u64 {
        self.seg.bytes()
    }

    pub(super) fn record(&self, name: &str) -> TopicRecord {
        TopicRecord {
            name: name.to_string(),
            spec: self.spec.clone(),
            owner_uid: self.owner_uid,
            files: self.files,
        }
    }
}

pub(super) struct Client {
    pub(super) cred: PeerCred,
    pub(super) name: String,
    pub(super) hello: bool,
    pub(super) stream: UnixStream,
}

/// A publisher of a departed process whose unfinished claim could not be repaired yet.
pub(super) struct PendingRepair {
    pub(super) topic: String,
    pub(super) index: usize,
    pub(super) generation: u64,
    pub(super) since: Instant,
}

/// A topic being created outside the lock: its name is taken and its bytes count against its
/// creator's limit until it is registered (or the creation fails).
pub(super) struct Creation {
    pub(super) uid: u32,
    pub(super) bytes: u64,
}

pub(super) struct State {
    pub(super) topics: BTreeMap<String, Topic>,
    pub(super) clients: HashMap<ClientId, Client>,
    pub(super) repairs: Vec<PendingRepair>,
    pub(super) acl: AccessConfig,
    pub(super) stopping: bool,
    /// Topics being created right now (see [`Creation`]).
    pub(super) creating: HashMap<String, Creation>,
    /// Topics a previous daemon recorded that no port has handed back yet.
    pub(super) pending: BTreeMap<String, TopicRecord>,
    /// When orphaned ports of adopted topics are given up on, and attaches stop waiting for
    /// pending topics to be handed back.
    pub(super) adopt_deadline: Option<Instant>,
}

impl State {
    /// The topics `uid` owns, and the bytes they (and its creations under way) commit.
    pub(super) fn usage(&self, uid: u32) -> (usize, u64) {
        let mut count = 0;
        let mut bytes = 0u64;
        for t in self.topics.values().filter(|t| t.owner_uid == uid) {
            count += 1;
            bytes = bytes.saturating_add(t.bytes());
        }
        for c in self.creating.values().filter(|c| c.uid == uid) {
            count += 1;
            bytes = bytes.saturating_add(c.bytes);
        }
        (count, bytes)
    }

    /// Let go of every port `gone` picks, on every topic: subscribers are released (waking
    /// the publishers they held back), publishers repaired (an unfinished claim is skipped so
    /// subscribers move on), and evicted entries reclaimed for reuse. The one routine for a
    /// client whose connection closed and for orphans whose process died.
    pub(super) fn release_ports(&mut self, why: &str, gone: impl Fn(&Attachment) -> bool) {
        for (name, topic) in self.topics.iter_mut() {
            topic.evicted.retain(|a| {
                if gone(a) {
                    let _ = topic
                        .ring
                        .reclaim_subscriber(a.index as usize, a.generation);
                    false
                } else {
                    true
                }
            });
            let (departed, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut topic.attachments)
                .into_iter()
                .partition(|a| gone(a));
            topic.attachments = kept;
            for a in departed {
                match a.role {
                    Role::Subscriber => {
                        if topic
                            .ring
                            .release_subscriber(a.index as usize, a.generation)
                            .is_ok()
                        {
                            tracing::info!(
                                topic = name.as_str(),
                                pid = a.pid,
                                index = a.index,
                                why,
                                "released a subscriber"
                            );
                        }
                    }
                    Role::Publisher => self.repairs.push(PendingRepair {
                        topic: name.clone(),
                        index: a.index as usize,
                        generation: a.generation,
                        since: Instant::now(),
                    }),
                }
            }
        }
        self.run_repairs();
    }

    /// Run the pending repairs; keep the ones that cannot be decided yet.
    pub(super) fn run_repairs(&mut self) {
        let repairs = std::mem::take(&mut self.repairs);
        for r in repairs {
            let Some(topic) = self.topics.get(&r.topic) else {
                continue;
            };
            let alive = |i: usize, g: u64| {
                topic.attachments.iter().any(|a| {
                    a.role == Role::Publisher && a.index as usize == i && a.generation == g
                })
            };
            match topic.ring.repair_publisher(r.index, r.generation, alive) {
                Ok(RepairOutcome::Clean) => {}
                Ok(RepairOutcome::Skipped { sequence }) => tracing::warn!(
                    topic = r.topic.as_str(),
                    sequence,
                    "a publisher died between claim and commit; its message was skipped"
                ),
                Ok(RepairOutcome::Pending) => {
                    if r.since.elapsed() > std::time::Duration::from_secs(60) {
                        tracing::error!(
                            topic = r.topic.as_str(),
                            index = r.index,
                            "repair still pending after 60 s"
                        );
                    }
                    self.repairs.push(r);
                }
                Err(e) => {
                    tracing::debug!(topic = r.topic.as_str(), error = %e, "repair not needed")
                }
            }
        }
    }
}

/// Everything the daemon's threads share.
pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Signalled whenever a creation under way ends (an attach to that name waits for it).
    pub(super) created: Condvar,
    pub(super) stop: AtomicBool,
    pub(super) config: Config,
    pub(super) uid: u32,
    /// This daemon's incarnation, written into the status page (and every segment it manages).
    pub(super) epoch: u32,
    /// The status page, and a read-only descriptor of it for clients.
    pub(super) _status: StatusPage,
    pub(super) status_ro: OwnedFd,
    pub(super) next_client: AtomicU64,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in a request handler must not take the whole bus down with a poisoned lock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write the topic records (after every change to the set of topics).
    pub(super) fn persist(&self, state: &State) {
        let records = state
            .topics
            .iter()
            .map(|(name, t)| t.record(name))
            .chain(state.pending.values().cloned())
            .collect();
        if let Err(e) = crate::state::save(&self.config.socket, records) {
            tracing::error!(error = %e, "cannot write the topic records; a restarted daemon will not adopt these topics");
        }
    }
}

/// Who asks: a connection, its process's credentials, and its supplementary groups
/// (`SO_PEERGROUPS`), for rules that grant a gid.
#[derive(Debug, Clone)]
pub(super) struct Caller {
    pub(super) id: ClientId,
    pub(super) cred: PeerCred,
    pub(super) groups: Vec<u32>,
}
