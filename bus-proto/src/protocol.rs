//! The control protocol's messages: what a client asks ([`Request`]) and what the daemon
//! answers ([`Response`]). How they travel (a length prefix, a JSON body, descriptors beside
//! it) is in [`crate::frame`] and [`crate::fdpass`].
//!
//! The first request on a connection is [`Request::Hello`]; versions must match exactly
//! ([`check_version`]). Topic options travel as `bus_core`'s [`Geometry`] (with its
//! [`TypeInfo`], `Mode`) and subscribers' starting points as its [`StartAt`]: the protocol,
//! the daemon and the client share one vocabulary and one validator
//! ([`Geometry::validate`]).
//!
//! | request | answer | descriptors beside the answer |
//! | --- | --- | --- |
//! | `hello` | `hello_ok` | the status page, read-only |
//! | `attach` (open, or create) | `attached` | control file, data file (read-only for a subscriber) |
//! | `detach` | `detached` | |
//! | `list`, then `list_after` while `next` is set | `topics` (one page) | |
//! | `stats`, then `stats_after` while `next` is set | `stats` (one page) | |
//! | `status` | `status`: the daemon's totals, the caller's usage and every limit | |
//! | `delete` | `deleted` | |
//! | `shutdown` | `stopping` | |
//! | `add_waker` | `waker_added` | |
//! | `remove_waker` | `waker_removed` | |
//! | `reattach` (with the two segment files beside it) | `attached` | as `attach` |
//! | `held` | **no answer**: a notice that a publisher found its lossless topic full | |
//! | `watch` (a Unix stream socket beside it: the watch channel) | `watching` | |
//!
//! **Watches.** A `watch` names a topic pattern and hands the daemon one end of a socket pair,
//! the *watch channel*. From then on the daemon writes notices to that channel, never to the
//! control connection: `topic_created` when a matching topic the caller may subscribe to is
//! created (with a subscriber of the caller's already attached, from the topic's first message,
//! and the two segment descriptors beside it, as `attached`), or exists when the watch starts
//! (when asked for, attached at `start`), and `topic_deleted` when an announced topic is
//! deleted. The subscriber belongs to the control connection that asked (detach it there);
//! the daemon attaches it before it answers the topic's creator, so the creator publishes
//! nothing before it. The channel is read-only for the client; closing it ends the watch. A
//! channel that leaves more than a bounded number of notices unread is closed by the daemon
//! (the subscribers of the notices it did not send are released).
//!
//! Any request but `held` may be answered with `error` (an [`ErrorCode`] and a sentence).
//!
//! **Pages.** A listing of thousands of topics does not fit one frame ([`crate::frame::MAX_FRAME`]):
//! `topics` and `stats` answers carry as many topics as fit, in name order, and `next`, the
//! name to ask `list_after` or `stats_after` for when more follow. Topics created or deleted
//! between pages may or may not show; none shows twice.

use std::fmt;
use std::io;

use bus_core::layout::{Geometry, Mismatch, TypeInfo};
use bus_core::ring::StartAt;
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks. Client and daemon must agree exactly.
///
/// Version 4: paged `list` and `stats` (`list_after`, `stats_after`, `next`), `status`, and the
/// `held` notice. Version 5: wake slots (`add_waker`, `remove_waker`, `waker_fd`). Version 6:
/// no descriptor travels for a wake slot (`add_waker` carries none, `waker_fd` is gone): a
/// waiter's own process wakes it.
/// Version 7: topic watches (`watch`, `watching`, and the `topic_created` and `topic_deleted`
/// notices). Version 8: presence (`add_waker` may ask for the presence bell, `stats` counts the
/// messages published while no subscriber was attached).
pub const PROTOCOL_VERSION: u32 = 8;

/// Errors from encoding or decoding messages, and from the socket under them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The peer closed the connection cleanly, before the first byte of a frame.
    #[error("the peer closed the connection")]
    Closed,
    /// The connection ended in the middle of a frame.
    #[error("the connection ended in the middle of a frame ({got} of {expected} bytes); the peer died or sent a partial frame")]
    Truncated {
        /// Bytes of the current part (header or body) received.
        got: usize,
        /// Bytes of the current part expected.
        expected: usize,
    },
    /// The length prefix was above [`crate::frame::MAX_FRAME`].
    #[error("frame of {len} bytes exceeds the {max}-byte limit; the peer is not a shmbus peer or is broken")]
    FrameTooLarge {
        /// The length the frame claimed (or the size of the message to send).
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The length prefix was zero.
    #[error("empty frame (length 0); every frame must carry one JSON message")]
    EmptyFrame,
    /// The body was not valid UTF-8 JSON of the expected message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The client and the daemon speak different protocol versions.
    #[error("protocol version mismatch: the client speaks v{client} but this shmbusd speaks v{daemon}; use a client library and daemon from the same release")]
    VersionMismatch {
        /// The client's version.
        client: u32,
        /// The daemon's version, [`PROTOCOL_VERSION`].
        daemon: u32,
    },
    /// An I/O error on the socket.
    #[error("control socket I/O error: {0}")]
    Io(#[from] io::Error),
}

impl ProtocolError {
    /// The [`ErrorCode`] a daemon answers with when a request fails this way.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::VersionMismatch { .. } => ErrorCode::VersionMismatch,
            ProtocolError::Io(_) => ErrorCode::Internal,
            _ => ErrorCode::BadRequest,
        }
    }

    /// The [`Response::Error`] a daemon sends back for this error.
    pub fn to_response(&self) -> Response {
        Response::error(self.code(), self.to_string())
    }

    /// Whether the connection itself is gone (closed, cut, or an I/O error), as opposed to a
    /// message that could not be understood.
    pub fn is_disconnect(&self) -> bool {
        matches!(
            self,
            ProtocolError::Closed | ProtocolError::Truncated { .. } | ProtocolError::Io(_)
        )
    }
}

/// Checks a client's protocol version against [`PROTOCOL_VERSION`].
pub fn check_version(client: u32) -> Result<(), ProtocolError> {
    if client == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(ProtocolError::VersionMismatch {
            client,
            daemon: PROTOCOL_VERSION,
        })
    }
}

/// The role of a port on a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Writes messages.
    Publisher,
    /// Reads messages.
    Subscriber,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Publisher => "publisher",
            Role::Subscriber => "subscriber",
        })
    }
}

/// How an [`Request::Attach`] treats the topic's existence and options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum How {
    /// The topic must exist. With a type, the topic must carry exactly that type (name, size
    /// and alignment); without one (a tool that reads any topic as bytes), any type is taken.
    Open {
        /// The payload type the port reads or writes.
        type_info: Option<TypeInfo>,
    },
    /// Create the topic with `spec` if it does not exist. If it exists: with `exact`, it must
    /// have exactly `spec`; without, it must carry `spec`'s type, and its other options are
    /// taken as they are.
    Create {
        /// The geometry to create with.
        spec: Geometry,
        /// Whether an existing topic must match `spec` in full (the caller chose options).
        exact: bool,
    },
}

/// A request from a client to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The first request on every connection.
    Hello {
        /// The client's [`PROTOCOL_VERSION`].
        version: u32,
        /// A free-form name for logs and stats.
        client_name: String,
    },
    /// Attach a publisher or a subscriber to a topic.
    Attach {
        /// The topic name.
        topic: String,
        /// Publisher or subscriber.
        role: Role,
        /// Open an existing topic, or create it.
        how: How,
        /// Where a subscriber starts reading; [`StartAt::Latest`] when omitted.
        #[serde(default)]
        start: StartAt,
    },
    /// Release a port.
    Detach {
        /// The topic name.
        topic: String,
        /// Publisher or subscriber.
        role: Role,
        /// The table index from [`Response::Attached`].
        index: u32,
        /// The generation from [`Response::Attached`].
        generation: u64,
    },
    /// List topics: the first page ([`Response::Topics`]).
    List,
    /// The next page of a listing: the topics whose names sort after `after` (the `next` of the
    /// previous page).
    ListAfter {
        /// Where the previous page ended.
        after: String,
    },
    /// Stats for one topic, or the first page of every topic's when `None`.
    Stats {
        /// The topic, or `None` for every topic.
        topic: Option<String>,
    },
    /// The next page of every topic's stats: the topics whose names sort after `after`.
    StatsAfter {
        /// Where the previous page ended.
        after: String,
    },
    /// The daemon's totals, the caller's usage and every limit ([`Response::Status`]).
    Status,
    /// Delete a topic.
    Delete {
        /// The topic name.
        topic: String,
    },
    /// Stop the daemon (accepted only from the daemon's own uid).
    Shutdown,
    /// Add a waiter that sleeps on a descriptor of its own (woken by its own process, which
    /// watches the slot; no descriptor travels) for one of this connection's ports: a
    /// subscriber waits for messages, a publisher for free slots. The answer names the wake
    /// slot the waiter arms.
    AddWaker {
        /// The topic name.
        topic: String,
        /// The port's role.
        role: Role,
        /// The port's table index.
        index: u32,
        /// The port's generation.
        generation: u64,
        /// Wait for the topic's peer count to change (the presence bell) instead of messages
        /// or free slots.
        #[serde(default)]
        presence: bool,
    },
    /// Give a wake slot back (the waiter is done).
    RemoveWaker {
        /// The topic name.
        topic: String,
        /// The wake slot.
        slot: u32,
        /// Its generation.
        generation: u64,
    },
    /// Take back a port this process held under a previous daemon (which died). The port's two
    /// segment descriptors (control, data) travel beside this frame: the restarted daemon
    /// adopts the topic from the first port that hands them back, if they are the files it
    /// recorded, and waits a grace period for the other ports to come back.
    Reattach {
        /// The topic name.
        topic: String,
        /// Publisher or subscriber.
        role: Role,
        /// The port's table index.
        index: u32,
        /// The port's generation.
        generation: u64,
    },
    /// A notice, **never answered**: publisher `index` (at `generation`) of `topic`, held by
    /// this connection, found the lossless topic full. The daemon then watches the topic for a
    /// stuck subscriber until it is no longer full (a publisher sends it at most every
    /// [`HELD_NOTICE_EVERY`] while it keeps finding the topic full). A daemon that cannot make
    /// sense of it ignores it.
    Held {
        /// The topic name.
        topic: String,
        /// The publisher's table index.
        index: u32,
        /// The publisher's generation.
        generation: u64,
    },
    /// Watch for topics matching `pattern` (a [`crate::pattern::TopicPattern`]): one end of a
    /// Unix stream socket pair travels beside this frame, and the daemon writes
    /// [`Response::TopicCreated`] and [`Response::TopicDeleted`] notices to it (see the module
    /// docs). Answered with [`Response::Watching`].
    Watch {
        /// The topic pattern; a name without wildcards watches that one topic.
        pattern: String,
        /// Announce the matching topics that exist already, with a subscriber attached at this
        /// starting point; `None`: only topics created from now on.
        #[serde(default)]
        existing: Option<StartAt>,
    },
}

/// How often, at most, one publisher sends [`Request::Held`] while it keeps finding its topic
/// full. A daemon that stops watching a topic (it saw room) hears again within this time if the
/// publisher is still held back.
pub const HELD_NOTICE_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

impl Request {
    /// The topic this request names, if any.
    pub fn topic(&self) -> Option<&str> {
        match self {
            Request::Attach { topic, .. }
            | Request::Detach { topic, .. }
            | Request::Reattach { topic, .. }
            | Request::Held { topic, .. }
            | Request::AddWaker { topic, .. }
            | Request::RemoveWaker { topic, .. }
            | Request::Delete { topic } => Some(topic),
            Request::Stats { topic } => topic.as_deref(),
            Request::Hello { .. }
            | Request::List
            | Request::ListAfter { .. }
            | Request::StatsAfter { .. }
            | Request::Status
            | Request::Watch { .. }
            | Request::Shutdown => None,
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Client and daemon protocol versions differ.
    VersionMismatch,
    /// The request was malformed or not allowed in this state.
    BadRequest,
    /// The topic options are invalid (out of range, inconsistent).
    InvalidOptions,
    /// The topic name breaks the naming rules.
    InvalidTopicName,
    /// The topic does not exist.
    NoSuchTopic,
    /// The topic exists with another capacity, slot size, mode or table size.
    GeometryMismatch,
    /// The topic exists with another payload type.
    TypeMismatch,
    /// The access rules do not allow this peer to do this.
    PermissionDenied,
    /// A per-uid limit (topics, bytes, clients) was reached.
    LimitReached,
    /// The topic's publisher or subscriber table is full.
    TableFull,
    /// The machine, or the daemon's cgroup, has no memory left for the topic.
    NoMemory,
    /// The daemon failed internally.
    Internal,
    /// The daemon is stopping.
    ShuttingDown,
}

/// The error a daemon answers when an existing topic does not have what a port asked for;
/// `None` when it does. `requested` is compared in full: callers that check only the type
/// compare a geometry made of the topic's shape and the requested type.
pub fn describe_mismatch(
    topic: &str,
    role: Role,
    existing: &Geometry,
    requested: &Geometry,
) -> Option<(ErrorCode, String)> {
    match existing.mismatch(requested)? {
        Mismatch::Type { existing, requested } => Some((
            ErrorCode::TypeMismatch,
            format!(
                "topic '{topic}' carries {existing} but this {role} asked for {requested}; open it with the type the topic was created with, or use another topic name"
            ),
        )),
        Mismatch::Shape(fields) => {
            let ours: Vec<String> = fields.iter().map(|(f, a, _)| format!("{f} {a}")).collect();
            let theirs: Vec<String> = fields.iter().map(|(f, _, b)| format!("{f} {b}")).collect();
            Some((
                ErrorCode::GeometryMismatch,
                format!(
                    "topic '{topic}' exists with {} but this {role} asked for {}; open it without options to accept the existing ones, delete the topic when no one uses it (`shmbus delete {topic}`), or use another topic name",
                    ours.join(", "),
                    theirs.join(", ")
                ),
            ))
        }
    }
}

/// One topic in a [`Response::Topics`] listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicInfo {
    /// The topic name.
    pub name: String,
    /// Its geometry and payload type.
    pub spec: Geometry,
    /// Publishers attached.
    pub publishers: u32,
    /// Subscribers attached.
    pub subscribers: u32,
    /// Messages published so far.
    pub published: u64,
    /// Bytes of shared memory the topic's segment commits.
    pub bytes: u64,
}

/// Stats of one publisher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherStat {
    /// Publisher table index.
    pub index: u32,
    /// The owning process.
    pub pid: u32,
    /// Messages it published.
    pub published: u64,
}

/// Stats of one subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriberStat {
    /// Subscriber table index.
    pub index: u32,
    /// The owning process.
    pub pid: u32,
    /// Its read cursor (sequence number of the next message it reads).
    pub cursor: u64,
    /// Messages published but not yet read.
    pub lag: u64,
    /// Messages it lost to lag (lossy topics).
    pub lagged: u64,
}

/// Stats of one wake slot: a waiter that sleeps on a descriptor of its own (a `WaitSet` or an
/// async receive or publish).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WakerStat {
    /// The wake slot.
    pub slot: u32,
    /// The waiting process.
    pub pid: u32,
    /// Whether it waits for a subscriber (for messages) or a publisher (for room).
    pub role: Role,
    /// The port's table index.
    pub index: u32,
    /// Whether it is armed now: its waiter sleeps, or is about to, and the next ringer writes
    /// its descriptor.
    pub armed: bool,
}

/// Stats of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicStats {
    /// The topic name.
    pub name: String,
    /// Its geometry and payload type.
    pub spec: Geometry,
    /// Bytes of shared memory the topic's segment commits.
    pub bytes: u64,
    /// Messages published so far.
    pub published: u64,
    /// Each publisher.
    pub publishers: Vec<PublisherStat>,
    /// Each subscriber.
    pub subscribers: Vec<SubscriberStat>,
    /// Messages overwritten before every subscriber read them (lossy).
    pub drops: u64,
    /// Times a publisher found the ring full (lossless).
    pub stalls: u64,
    /// Messages published while no subscriber was attached.
    #[serde(default)]
    pub unheard: u64,
    /// Each wake slot in use.
    pub wakers: Vec<WakerStat>,
}

/// Everything a daemon counts and every limit it enforces ([`Response::Status`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonStatus {
    /// The daemon's process id.
    pub daemon_pid: u32,
    /// The daemon's crate version.
    pub daemon_version: String,
    /// Daemon-wide totals, every uid together.
    pub totals: Totals,
    /// The asking connection's uid.
    pub uid: u32,
    /// What that uid uses, counted against its limits.
    pub usage: Usage,
    /// The limits in force.
    pub limits: LimitsInfo,
}

/// Daemon-wide totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    /// Topics (and creations under way).
    pub topics: u64,
    /// Bytes of shared memory the topics commit.
    pub bytes: u64,
    /// Control connections open.
    pub clients: u64,
    /// Topics watched for a stuck subscriber right now (a publisher is held back).
    pub watched: u64,
    /// Descriptors the daemon holds open.
    pub open_files: u64,
}

/// What one uid uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// Topics it owns (and creations under way).
    pub topics: u64,
    /// Bytes of shared memory they commit.
    pub bytes: u64,
    /// Control connections it holds open.
    pub clients: u64,
}

/// Every limit a daemon enforces, named as in its rules file or where it comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsInfo {
    /// `limits.max_topics`: topics one uid may own.
    pub max_topics: u64,
    /// `limits.max_bytes_per_uid`: shared-memory bytes one uid's topics may commit.
    pub max_bytes_per_uid: u64,
    /// `limits.max_clients_per_uid`: control connections one uid may hold open.
    pub max_clients_per_uid: u64,
    /// The largest publisher table a topic can have (`max_publishers`).
    pub max_publishers_per_topic: u64,
    /// The largest subscriber table a topic can have (`max_subscribers`).
    pub max_subscribers_per_topic: u64,
    /// The daemon's open-file limit (`RLIMIT_NOFILE`, soft): each topic holds two descriptors
    /// and each client one.
    pub max_open_files: u64,
    /// The largest control frame, in bytes.
    pub max_frame: u64,
}

/// A response from the daemon to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// Answer to [`Request::Hello`]. A read-only descriptor of the daemon's status page
    /// travels beside it (SCM_RIGHTS; see [`crate::status`]).
    HelloOk {
        /// The daemon's [`PROTOCOL_VERSION`].
        version: u32,
        /// The daemon's crate version.
        daemon_version: String,
        /// The daemon's process id.
        daemon_pid: u32,
        /// The daemon's epoch (as on its status page).
        epoch: u32,
    },
    /// A port was attached. Two descriptors travel beside this frame (SCM_RIGHTS): the
    /// segment's control file and its data file (read-only for a subscriber).
    Attached {
        /// The topic name.
        topic: String,
        /// The topic's geometry and payload type.
        spec: Geometry,
        /// The port's table index.
        index: u32,
        /// The port's generation (for [`Request::Detach`]).
        generation: u64,
        /// The segment's length in bytes, to map.
        segment_len: u64,
        /// Whether this request created the topic.
        created: bool,
    },
    /// A port was detached.
    Detached,
    /// Answer to [`Request::AddWaker`]: the wake slot the waiter arms.
    WakerAdded {
        /// The wake slot.
        slot: u32,
        /// Its generation.
        generation: u64,
    },
    /// Answer to [`Request::RemoveWaker`].
    WakerRemoved,
    /// A topic was deleted.
    Deleted,
    /// Answer to [`Request::Shutdown`]: the daemon stops once this is sent.
    Stopping,
    /// Answer to [`Request::List`] and [`Request::ListAfter`]: one page.
    Topics {
        /// The topics of this page, in name order.
        topics: Vec<TopicInfo>,
        /// When more topics follow: the name to ask [`Request::ListAfter`] for.
        #[serde(default)]
        next: Option<String>,
    },
    /// Answer to [`Request::Stats`] and [`Request::StatsAfter`]: one page.
    Stats {
        /// The requested topics of this page, in name order.
        topics: Vec<TopicStats>,
        /// When more topics follow: the name to ask [`Request::StatsAfter`] for.
        #[serde(default)]
        next: Option<String>,
    },
    /// Answer to [`Request::Status`].
    Status {
        /// Totals, usage and limits.
        status: DaemonStatus,
    },
    /// Answer to [`Request::Watch`]: the watch is registered.
    Watching {
        /// How many existing topics will be announced on the channel first (0 when they were
        /// not asked for): the notices for them are written to the channel before this answer.
        existing: u32,
    },
    /// A notice on a watch channel, never an answer: `topic` matches the watch and a
    /// subscriber of the watching connection is attached to it. The segment's two descriptors
    /// (control, data read-only) travel beside it, as beside [`Response::Attached`].
    TopicCreated {
        /// The topic name.
        topic: String,
        /// The topic's geometry and payload type.
        spec: Geometry,
        /// The subscriber's table index.
        index: u32,
        /// The subscriber's generation (detach it on the control connection).
        generation: u64,
        /// The segment's length in bytes, to map.
        segment_len: u64,
        /// Whether the topic existed when the watch started (the subscriber starts where the
        /// watch asked), rather than being created since (it starts at the first message).
        existing: bool,
    },
    /// A notice on a watch channel: a topic announced on it was deleted.
    TopicDeleted {
        /// The topic name.
        topic: String,
    },
    /// The request failed.
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// What went wrong and what to do.
        message: String,
    },
}

impl Response {
    /// Builds a [`Response::Error`].
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Error {
            code,
            message: message.into(),
        }
    }
}
