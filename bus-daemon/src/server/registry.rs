//! What the daemon knows: its topics, its clients, the ports each client holds, the counts the
//! limits are checked against, and the one routine that lets go of the ports of whoever is
//! gone.
//!
//! Only the event loop's thread touches it, so there is no lock. Everything a request needs is
//! found without a pass over all topics: the topics a client holds ports on are indexed by
//! client, and each uid's topic count and bytes are kept as they change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus_core::layout::Geometry;
use bus_core::ring::RepairOutcome;
use bus_proto::fdpass::PeerCred;
use bus_proto::protocol::Role;
use bus_proto::segment::ShmRing;
use bus_proto::status::StatusPage;

use super::watch::Watch;
use super::Config;
use crate::acl::AccessConfig;
use crate::segment::{FileId, Segment};
use crate::state::{Journal, PortRecord, TopicRecord};

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
    /// Its uid, as the kernel said when it connected ([`UNKNOWN_UID`] for an entry found in
    /// a segment that the records do not name: no one may re-attach to it).
    pub(super) uid: u32,
}

/// The uid of an entry no one was handed (found active in a segment, not in the records).
pub(super) const UNKNOWN_UID: u32 = u32::MAX;

impl Attachment {
    pub(super) fn is(&self, role: Role, index: u32, generation: u64) -> bool {
        self.role == role && self.index == index && self.generation == generation
    }

    /// The record of this port, for the journal.
    pub(super) fn port_record(&self) -> PortRecord {
        PortRecord {
            topic: String::new(),
            role: self.role,
            index: self.index,
            generation: self.generation,
            pid: self.pid,
            uid: self.uid,
        }
    }
}

/// A waiter that sleeps on its own eventfd (a wake slot); the descriptor itself is kept in
/// the topic ring's doorbell, which writes it when the daemon rings, and duplicates it for
/// the ports that ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Waker {
    pub(super) client: ClientId,
    /// The port it waits for.
    pub(super) port: (Role, u32, u64),
    pub(super) slot: usize,
    pub(super) generation: u64,
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
    /// Set while a publisher is held back by a full lossless ring (see `watch`).
    pub(super) watch: Option<Watch>,
    /// Wake slots handed out.
    pub(super) wakers: Vec<Waker>,
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
            watch: None,
            wakers: Vec::new(),
        }
    }

    /// Give back the wake slots `gone` picks: ringers stop writing their eventfds.
    pub(super) fn release_wakers(&mut self, gone: impl Fn(&Waker) -> bool) {
        let ring = &self.ring;
        self.wakers.retain(|w| {
            if gone(w) {
                let _ = ring.release_waker(w.slot, w.generation);
                false
            } else {
                true
            }
        });
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
            ports: self
                .attachments
                .iter()
                .filter(|a| a.uid != UNKNOWN_UID)
                .map(Attachment::port_record)
                .collect(),
        }
    }
}

/// A connected client, as requests see it (its socket and buffers are the event loop's).
pub(super) struct Client {
    pub(super) cred: PeerCred,
    pub(super) name: String,
    pub(super) hello: bool,
}

/// A publisher of a departed process whose unfinished claim could not be repaired yet.
pub(super) struct PendingRepair {
    pub(super) topic: String,
    pub(super) index: usize,
    pub(super) generation: u64,
    pub(super) since: Instant,
}

/// A topic being created off the event loop: its name is taken and its bytes count against its
/// creator's limit until it is registered (or the creation fails).
pub(super) struct Creation {
    pub(super) uid: u32,
    pub(super) bytes: u64,
}

/// Topics and bytes one uid owns (creations under way included).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Owned {
    pub(super) topics: u64,
    pub(super) bytes: u64,
}

pub(super) struct State {
    pub(super) topics: BTreeMap<String, Topic>,
    pub(super) clients: HashMap<ClientId, Client>,
    /// Connections open per uid.
    pub(super) clients_per_uid: HashMap<u32, u64>,
    /// Per uid: topics owned and the bytes they commit.
    pub(super) owned: HashMap<u32, Owned>,
    /// Per client (and [`ORPHAN`]): the topics it holds ports on, evicted ones included. A
    /// superset is harmless: releasing finds nothing there.
    pub(super) holdings: HashMap<ClientId, BTreeSet<String>>,
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
    /// The topic records, for a daemon that restarts after this one dies.
    pub(super) journal: Option<Journal>,
    /// Topics removed since the event loop last told the watches (see `announce`).
    pub(super) gone: Vec<String>,
}

impl State {
    pub(super) fn new(
        acl: AccessConfig,
        pending: BTreeMap<String, TopicRecord>,
        adopt_deadline: Option<Instant>,
        journal: Option<Journal>,
    ) -> State {
        State {
            topics: BTreeMap::new(),
            clients: HashMap::new(),
            clients_per_uid: HashMap::new(),
            owned: HashMap::new(),
            holdings: HashMap::new(),
            repairs: Vec::new(),
            acl,
            stopping: false,
            creating: HashMap::new(),
            pending,
            adopt_deadline,
            journal,
            gone: Vec::new(),
        }
    }

    /// The topics `uid` owns, and the bytes they (and its creations under way) commit.
    pub(super) fn usage(&self, uid: u32) -> Owned {
        self.owned.get(&uid).copied().unwrap_or_default()
    }

    fn count(&mut self, uid: u32, bytes: u64, add: bool) {
        let o = self.owned.entry(uid).or_default();
        if add {
            o.topics += 1;
            o.bytes = o.bytes.saturating_add(bytes);
        } else {
            o.topics = o.topics.saturating_sub(1);
            o.bytes = o.bytes.saturating_sub(bytes);
        }
        if o.topics == 0 {
            self.owned.remove(&uid);
        }
    }

    /// Reserve `name` for a creation by `uid` of `bytes`.
    pub(super) fn begin_creation(&mut self, name: &str, uid: u32, bytes: u64) {
        self.creating
            .insert(name.to_string(), Creation { uid, bytes });
        self.count(uid, bytes, true);
    }

    /// The creation of `name` ended (the topic is registered next, or it failed).
    pub(super) fn end_creation(&mut self, name: &str) {
        if let Some(c) = self.creating.remove(name) {
            self.count(c.uid, c.bytes, false);
        }
    }

    /// Register a topic (created, or adopted) and record it.
    pub(super) fn insert_topic(&mut self, name: &str, topic: Topic, record: bool) {
        self.count(topic.owner_uid, topic.bytes(), true);
        for a in topic.attachments.iter().chain(&topic.evicted) {
            self.hold(a.client, name);
        }
        if record {
            let r = topic.record(name);
            self.journal_with(|j| j.add(&r));
        }
        if let Some(old) = self.topics.insert(name.to_string(), topic) {
            self.count(old.owner_uid, old.bytes(), false);
        }
    }

    /// Remove a topic and record that it is gone.
    pub(super) fn remove_topic(&mut self, name: &str) -> Option<Topic> {
        let topic = self.topics.remove(name)?;
        self.gone.push(name.to_string());
        self.count(topic.owner_uid, topic.bytes(), false);
        self.journal_with(|j| j.remove(name));
        Some(topic)
    }

    /// Forget recorded topics nobody handed back.
    pub(super) fn forget_pending(&mut self, name: &str) {
        if self.pending.remove(name).is_some() && !self.topics.contains_key(name) {
            self.journal_with(|j| j.remove(name));
        }
    }

    /// Record that `port` of `topic` was handed out.
    pub(super) fn record_port(&mut self, topic: &str, port: &Attachment) {
        let record = port.port_record();
        self.journal_with(|j| j.port(topic, &record));
    }

    fn journal_with(&mut self, change: impl FnOnce(&mut Journal) -> std::io::Result<()>) {
        let Some(journal) = &mut self.journal else {
            return;
        };
        let mut result = change(journal);
        let live = self.topics.len() + self.pending.len();
        if result.is_ok() && journal.wants_compaction(live) {
            let records: Vec<TopicRecord> = self
                .topics
                .iter()
                .map(|(n, t)| t.record(n))
                .chain(
                    self.pending
                        .iter()
                        .filter(|(n, _)| !self.topics.contains_key(*n))
                        .map(|(_, r)| r.clone()),
                )
                .collect();
            result = journal.rewrite(&records);
        }
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot write the topic records; a restarted daemon will not adopt these topics");
        }
    }

    /// Note that `client` holds (or held) a port on `topic`.
    pub(super) fn hold(&mut self, client: ClientId, topic: &str) {
        self.holdings
            .entry(client)
            .or_default()
            .insert(topic.to_string());
    }

    /// Let go of every port of `client` that `gone` picks, on every topic it holds ports on:
    /// subscribers are released (waking the publishers they held back), publishers repaired
    /// (an unfinished claim is skipped so subscribers move on), and evicted entries reclaimed
    /// for reuse. The one routine for a client whose connection closed and for orphans whose
    /// process died.
    pub(super) fn release_ports(
        &mut self,
        client: ClientId,
        why: &str,
        gone: impl Fn(&Attachment) -> bool,
    ) {
        let names = self.holdings.remove(&client).unwrap_or_default();
        let mut still = BTreeSet::new();
        for name in names {
            let Some(topic) = self.topics.get_mut(&name) else {
                continue;
            };
            // A waiter of a departed port waits no more.
            let departed: Vec<Waker> = topic
                .wakers
                .iter()
                .filter(|w| w.client == client && topic_port_gone(&topic.attachments, w, &gone))
                .copied()
                .collect();
            topic.release_wakers(|w| departed.contains(w));
            topic.evicted.retain(|a| {
                if a.client == client && gone(a) {
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
                .partition(|a| a.client == client && gone(a));
            topic.attachments = kept;
            if topic
                .attachments
                .iter()
                .chain(&topic.evicted)
                .any(|a| a.client == client)
            {
                still.insert(name.clone());
            }
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
            topic.ring.presence_changed();
        }
        if !still.is_empty() {
            self.holdings.insert(client, still);
        }
        self.run_repairs();
    }

    /// Free the entries of `name` that are active in its segment but that the daemon never
    /// handed out (no attachment, orphan or evicted port names them): a hostile party wrote
    /// them into the control file, whatever pid they claim. Subscribers are released at once,
    /// publishers repaired like those of a departed client. Run when a table looks full, and
    /// by the stuck-subscriber watch. Returns how many were freed.
    pub(super) fn reclaim_unknown(&mut self, name: &str) -> usize {
        let Some(topic) = self.topics.get(name) else {
            return 0;
        };
        let known = |role: Role, i: usize, g: u64| {
            topic
                .attachments
                .iter()
                .chain(&topic.evicted)
                .any(|a| a.is(role, i as u32, g))
        };
        let mut freed = 0;
        for (index, generation, pid) in topic.ring.active_subscribers() {
            if !known(Role::Subscriber, index, generation)
                && topic.ring.release_subscriber(index, generation).is_ok()
            {
                tracing::warn!(
                    topic = name,
                    index,
                    claimed_pid = pid,
                    "released a subscriber entry the daemon never handed out (forged)"
                );
                freed += 1;
            }
        }
        let forged: Vec<(usize, u64)> = topic
            .ring
            .active_publishers()
            .into_iter()
            .filter(|&(i, g, _)| !known(Role::Publisher, i, g))
            .map(|(i, g, _)| (i, g))
            .collect();
        for (index, generation) in forged {
            tracing::warn!(
                topic = name,
                index,
                "repairing a publisher entry the daemon never handed out (forged)"
            );
            self.repairs.push(PendingRepair {
                topic: name.to_string(),
                index,
                generation,
                since: Instant::now(),
            });
            freed += 1;
        }
        if freed > 0 {
            topic.ring.presence_changed();
            self.run_repairs();
        }
        freed
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
            let outcome = topic.ring.repair_publisher(r.index, r.generation, alive);
            if matches!(
                outcome,
                Ok(RepairOutcome::Clean | RepairOutcome::Skipped { .. })
            ) {
                // The entry is free now: one publisher fewer.
                topic.ring.presence_changed();
            }
            match outcome {
                Ok(RepairOutcome::Clean) => {}
                Ok(RepairOutcome::Skipped { sequence }) => tracing::warn!(
                    topic = r.topic.as_str(),
                    sequence,
                    "a publisher died between claim and commit; its message was skipped"
                ),
                Ok(RepairOutcome::Pending) => {
                    if r.since.elapsed() > Duration::from_secs(60) {
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

/// Whether waker `w`'s port is one that `gone` picks (or is not held at all any more).
fn topic_port_gone(
    attachments: &[Attachment],
    w: &Waker,
    gone: &impl Fn(&Attachment) -> bool,
) -> bool {
    let (role, index, generation) = w.port;
    attachments
        .iter()
        .find(|a| a.client == w.client && a.is(role, index, generation))
        .is_none_or(gone)
}

/// What never changes while the daemon runs.
pub(super) struct Ctx {
    pub(super) config: Config,
    pub(super) uid: u32,
    /// This daemon's incarnation, written into the status page (and every segment it manages).
    pub(super) epoch: u32,
    /// The status page, and a read-only descriptor of it for clients.
    pub(super) _status: StatusPage,
    pub(super) status_ro: OwnedFd,
    /// The open-file limit (soft) in force after start.
    pub(super) max_open_files: u64,
}

/// Who asks: a connection, its process's credentials, and its supplementary groups
/// (`SO_PEERGROUPS`), for rules that grant a gid.
#[derive(Debug, Clone)]
pub(super) struct Caller {
    pub(super) id: ClientId,
    pub(super) cred: PeerCred,
    pub(super) groups: Vec<u32>,
}
