//! The control protocol between `shmbusd` and its clients.
//!
//! # Framing
//!
//! ```text
//! +--------------------+----------------------------------------+
//! | len: u32 LE (4 B)  | body: `len` bytes of UTF-8 JSON         |
//! +--------------------+----------------------------------------+
//!   1 <= len <= MAX_FRAME
//! ```
//!
//! Every frame carries one [`Request`] (client to daemon) or one [`Response`]
//! (daemon to client). A length of 0 or above [`MAX_FRAME`] is rejected before
//! anything is allocated, so a hostile peer cannot make the daemon reserve the
//! size it claims. File descriptors (the segment of an [`Response::Attached`])
//! travel beside a frame as `SCM_RIGHTS` ancillary data; see `fdpass`.
//!
//! The first request on a connection is [`Request::Hello`]; versions must match
//! exactly ([`check_version`]). Nothing in this module panics on any input: every
//! decode error is a typed [`ProtocolError`].

use std::fmt;
use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks. Client and daemon must agree exactly.
pub const PROTOCOL_VERSION: u32 = 2;

/// The largest frame body accepted or sent, in bytes.
pub const MAX_FRAME: usize = 64 * 1024;

/// Size of the length prefix in bytes.
pub const FRAME_HEADER_LEN: usize = 4;

/// Largest ring capacity (slots) a topic may have.
pub const MAX_CAPACITY: u32 = 1 << 20;
/// Largest slot size in bytes (1 GiB).
pub const MAX_SLOT_SIZE: u32 = 1 << 30;
/// Largest number of publishers or subscribers per topic.
pub const MAX_PORTS: u32 = 256;
/// Longest type name in bytes.
pub const MAX_TYPE_NAME: usize = 128;
/// Largest type alignment in bytes.
pub const MAX_TYPE_ALIGN: u32 = 64;

/// Errors from encoding or decoding frames.
#[derive(Debug, thiserror::Error)]
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
    /// The length prefix was above [`MAX_FRAME`].
    #[error("frame of {len} bytes exceeds the {max}-byte limit; the peer is not a shmbus peer or is broken")]
    FrameTooLarge {
        /// The length the frame claimed (or the size of the message to send).
        len: u64,
        /// The limit, [`MAX_FRAME`].
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

/// How a topic treats a subscriber that falls behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// Publishers wait (or get `Full`) rather than overwrite an unread slot.
    Lossless,
    /// Publishers never wait; a slow subscriber gets `Lagged(n)`.
    Lossy,
}

impl fmt::Display for DeliveryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeliveryMode::Lossless => "lossless",
            DeliveryMode::Lossy => "lossy",
        })
    }
}

/// Where a new subscriber starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// Only messages published after attaching (the default).
    #[default]
    Latest,
    /// Replay what the ring still holds, oldest first.
    Oldest,
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

/// A topic's geometry, delivery mode and payload type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Number of slots in the ring; a power of two in `2..=2^20`.
    pub capacity: u32,
    /// Bytes per slot (the largest message); `1..=2^30`.
    pub slot_size: u32,
    /// Lossless or lossy delivery.
    pub mode: DeliveryMode,
    /// Publisher table size; `1..=256`.
    pub max_publishers: u32,
    /// Subscriber table size; `1..=256`.
    pub max_subscribers: u32,
    /// The payload type's name (e.g. `my_crate::Odom`); printable ASCII, at most 128 bytes.
    pub type_name: String,
    /// The payload type's size; 0 means a bytes topic (variable-length `[u8]`).
    pub type_size: u32,
    /// The payload type's alignment; a power of two, at most 64.
    pub type_align: u32,
}

/// Why an existing topic's spec and a requested one differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecMismatch {
    /// [`ErrorCode::TypeMismatch`] or [`ErrorCode::GeometryMismatch`].
    pub code: ErrorCode,
    /// A sentence saying what differs and what to do.
    pub message: String,
}

impl TopicSpec {
    /// Checks every field against the limits in this module's constants.
    ///
    /// The error names the field, the value and the allowed range.
    pub fn validate(&self) -> Result<(), String> {
        if !self.capacity.is_power_of_two() || !(2..=MAX_CAPACITY).contains(&self.capacity) {
            return Err(format!(
                "capacity {} is invalid: it must be a power of two from 2 to {MAX_CAPACITY}",
                self.capacity
            ));
        }
        if !(1..=MAX_SLOT_SIZE).contains(&self.slot_size) {
            return Err(format!(
                "slot_size {} is invalid: it must be from 1 to {MAX_SLOT_SIZE} bytes (1 GiB)",
                self.slot_size
            ));
        }
        if !(1..=MAX_PORTS).contains(&self.max_publishers) {
            return Err(format!(
                "max_publishers {} is invalid: it must be from 1 to {MAX_PORTS}",
                self.max_publishers
            ));
        }
        if !(1..=MAX_PORTS).contains(&self.max_subscribers) {
            return Err(format!(
                "max_subscribers {} is invalid: it must be from 1 to {MAX_PORTS}",
                self.max_subscribers
            ));
        }
        if self.type_name.len() > MAX_TYPE_NAME {
            return Err(format!(
                "type_name is {} bytes long: at most {MAX_TYPE_NAME} are allowed",
                self.type_name.len()
            ));
        }
        if let Some((at, ch)) = self
            .type_name
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_graphic() || *c == ' '))
        {
            return Err(format!(
                "type_name has {ch:?} at byte {at}: only printable ASCII is allowed"
            ));
        }
        if !self.type_align.is_power_of_two() || self.type_align > MAX_TYPE_ALIGN {
            return Err(format!(
                "type_align {} is invalid: it must be a power of two from 1 to {MAX_TYPE_ALIGN}",
                self.type_align
            ));
        }
        if self.type_size > self.slot_size {
            return Err(format!(
                "type_size {} does not fit in slot_size {}: make the slot at least as large as the type",
                self.type_size, self.slot_size
            ));
        }
        if !self.type_size.is_multiple_of(self.type_align) {
            return Err(format!(
                "type_size {} is not a multiple of type_align {}: no Rust type has that layout",
                self.type_size, self.type_align
            ));
        }
        Ok(())
    }

    /// True for a bytes topic (variable-length `[u8]` up to the slot size).
    pub fn is_bytes(&self) -> bool {
        self.type_size == 0
    }

    /// Bytes of message storage the ring needs (`capacity * slot_size`), without headers.
    pub fn ring_bytes(&self) -> u64 {
        u64::from(self.capacity) * u64::from(self.slot_size)
    }

    /// Compares this spec (the existing topic's) with one a client asked for.
    ///
    /// Returns `None` when they are identical. A payload type difference wins
    /// over a geometry difference ([`ErrorCode::TypeMismatch`] first), since it
    /// is the more likely root cause. `role` names the client in the sentence.
    pub fn describe_mismatch(
        &self,
        topic: &str,
        role: Role,
        requested: &TopicSpec,
    ) -> Option<SpecMismatch> {
        if self.type_name != requested.type_name
            || self.type_size != requested.type_size
            || self.type_align != requested.type_align
        {
            return Some(SpecMismatch {
                code: ErrorCode::TypeMismatch,
                message: format!(
                    "topic '{topic}' carries {} but this {role} asked for {}; open it with the type the topic was created with, or use another topic name",
                    self.describe_type(),
                    requested.describe_type()
                ),
            });
        }
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        let mut diff = |name: &str, a: String, b: String| {
            if a != b {
                ours.push(format!("{name} {a}"));
                theirs.push(format!("{name} {b}"));
            }
        };
        diff(
            "capacity",
            self.capacity.to_string(),
            requested.capacity.to_string(),
        );
        diff(
            "slot_size",
            self.slot_size.to_string(),
            requested.slot_size.to_string(),
        );
        diff("mode", self.mode.to_string(), requested.mode.to_string());
        diff(
            "max_publishers",
            self.max_publishers.to_string(),
            requested.max_publishers.to_string(),
        );
        diff(
            "max_subscribers",
            self.max_subscribers.to_string(),
            requested.max_subscribers.to_string(),
        );
        if ours.is_empty() {
            return None;
        }
        Some(SpecMismatch {
            code: ErrorCode::GeometryMismatch,
            message: format!(
                "topic '{topic}' exists with {} but this {role} asked for {}; attach without a spec to accept the existing settings, or delete the topic (when no one uses it) or use another topic name",
                ours.join(", "),
                theirs.join(", ")
            ),
        })
    }

    fn describe_type(&self) -> String {
        if self.is_bytes() {
            let name = if self.type_name.is_empty() {
                String::new()
            } else {
                format!(" `{}`", self.type_name)
            };
            format!(
                "variable-length bytes{name} (size 0, align {})",
                self.type_align
            )
        } else {
            format!(
                "`{}` (size {}, align {})",
                self.type_name, self.type_size, self.type_align
            )
        }
    }
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
    /// Attach a publisher. With a spec, the topic is created if absent; if it
    /// exists, the spec must match it.
    AttachPublisher {
        /// The topic name.
        topic: String,
        /// The spec to create with or to check against.
        spec: Option<TopicSpec>,
    },
    /// Attach a subscriber. With a spec, the topic is created if absent; if it
    /// exists, the spec must match it.
    AttachSubscriber {
        /// The topic name.
        topic: String,
        /// The spec to create with or to check against.
        spec: Option<TopicSpec>,
        /// Where to start reading; [`StartAt::Latest`] when omitted.
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
    /// List every topic.
    List,
    /// Stats for one topic, or all when `None`.
    Stats {
        /// The topic, or `None` for every topic.
        topic: Option<String>,
    },
    /// Delete a topic.
    Delete {
        /// The topic name.
        topic: String,
    },
    /// Stop the daemon (accepted only from the daemon's own uid).
    Shutdown,
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
}

impl Request {
    /// The topic this request names, if any.
    pub fn topic(&self) -> Option<&str> {
        match self {
            Request::AttachPublisher { topic, .. }
            | Request::AttachSubscriber { topic, .. }
            | Request::Detach { topic, .. }
            | Request::Reattach { topic, .. }
            | Request::Delete { topic } => Some(topic),
            Request::Stats { topic } => topic.as_deref(),
            Request::Hello { .. } | Request::List | Request::Shutdown => None,
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
    /// The topic name breaks the naming rules.
    InvalidTopicName,
    /// The topic does not exist (and no spec was given to create it).
    NoSuchTopic,
    /// The topic already exists.
    TopicExists,
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
    /// The topic is in use.
    Busy,
    /// The daemon failed internally.
    Internal,
    /// The daemon is stopping.
    ShuttingDown,
}

/// One topic in a [`Response::Topics`] listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicInfo {
    /// The topic name.
    pub name: String,
    /// Its spec.
    pub spec: TopicSpec,
    /// Publishers attached.
    pub publishers: u32,
    /// Subscribers attached.
    pub subscribers: u32,
    /// Messages published so far.
    pub published: u64,
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

/// Stats of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicStats {
    /// The topic name.
    pub name: String,
    /// Its spec.
    pub spec: TopicSpec,
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
}

/// A response from the daemon to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// Answer to [`Request::Hello`]. A read-only descriptor of the daemon's status page
    /// travels beside it (SCM_RIGHTS; see `status`).
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
        /// The topic's spec.
        spec: TopicSpec,
        /// The port's table index.
        index: u32,
        /// The port's generation (for [`Request::Detach`]).
        generation: u64,
        /// The segment's length in bytes, to map.
        segment_len: u64,
    },
    /// A port was detached.
    Detached,
    /// A topic was deleted.
    Deleted,
    /// Answer to [`Request::List`].
    Topics {
        /// Every topic.
        topics: Vec<TopicInfo>,
    },
    /// Answer to [`Request::Stats`].
    Stats {
        /// The requested topics.
        topics: Vec<TopicStats>,
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

/// Serializes one message into a frame body (JSON, no length prefix).
///
/// Fails with [`ProtocolError::FrameTooLarge`] if the body exceeds [`MAX_FRAME`].
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtocolError> {
    let body = serde_json::to_vec(msg).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    check_len(body.len())?;
    Ok(body)
}

/// Serializes one message into a complete frame: length prefix and body.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtocolError> {
    let body = encode(msg)?;
    let len = u32::try_from(body.len()).map_err(|_| ProtocolError::FrameTooLarge {
        len: body.len() as u64,
        max: MAX_FRAME,
    })?;
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Decodes a length prefix, checking it is in `1..=MAX_FRAME`.
pub fn parse_frame_len(header: [u8; FRAME_HEADER_LEN]) -> Result<usize, ProtocolError> {
    let len = u32::from_le_bytes(header);
    let len = usize::try_from(len).map_err(|_| ProtocolError::FrameTooLarge {
        len: u64::from(len),
        max: MAX_FRAME,
    })?;
    check_len(len)?;
    Ok(len)
}

fn check_len(len: usize) -> Result<(), ProtocolError> {
    if len == 0 {
        Err(ProtocolError::EmptyFrame)
    } else if len > MAX_FRAME {
        Err(ProtocolError::FrameTooLarge {
            len: len as u64,
            max: MAX_FRAME,
        })
    } else {
        Ok(())
    }
}

/// Decodes one frame body into a message.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtocolError> {
    check_len(body.len())?;
    serde_json::from_slice(body).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

/// Decodes one frame body into a [`Request`]. Never panics, whatever the bytes.
///
/// Unknown fields are errors for every request, including the field-less ones.
pub fn decode_request(body: &[u8]) -> Result<Request, ProtocolError> {
    let req: Request = decode(body)?;
    if matches!(req, Request::List | Request::Shutdown) {
        only_tag(body)?;
    }
    Ok(req)
}

/// Decodes one frame body into a [`Response`]. Never panics, whatever the bytes.
///
/// Unknown fields are errors for every response, including the field-less ones.
pub fn decode_response(body: &[u8]) -> Result<Response, ProtocolError> {
    let resp: Response = decode(body)?;
    if matches!(resp, Response::Detached | Response::Deleted) {
        only_tag(body)?;
    }
    Ok(resp)
}

/// serde ignores unknown fields of unit variants in internally tagged enums;
/// this check rejects them, so field-less messages are as strict as the rest.
fn only_tag(body: &[u8]) -> Result<(), ProtocolError> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    match map.len() {
        1 => Ok(()),
        _ => Err(ProtocolError::Malformed(format!(
            "unexpected fields {:?}: this message has none",
            map.keys()
                .filter(|k| *k != "op" && *k != "kind")
                .collect::<Vec<_>>()
        ))),
    }
}

/// Writes one message as a frame.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), ProtocolError> {
    let frame = encode_frame(msg)?;
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame and decodes it.
///
/// EOF before the first length byte is [`ProtocolError::Closed`]; EOF later is
/// [`ProtocolError::Truncated`]. The body buffer is allocated only after the
/// length has been checked against [`MAX_FRAME`].
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<T, ProtocolError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    match read_full(r, &mut header)? {
        0 => return Err(ProtocolError::Closed),
        n if n < FRAME_HEADER_LEN => {
            return Err(ProtocolError::Truncated {
                got: n,
                expected: FRAME_HEADER_LEN,
            })
        }
        _ => {}
    }
    let len = parse_frame_len(header)?;
    let mut body = vec![0u8; len];
    let got = read_full(r, &mut body)?;
    if got < len {
        return Err(ProtocolError::Truncated { got, expected: len });
    }
    decode(&body)
}

/// Reads until `buf` is full or EOF; returns the bytes read. Retries on EINTR.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = buf.get_mut(filled..).unwrap_or_default();
        match r.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    fn odom_spec() -> TopicSpec {
        TopicSpec {
            capacity: 1024,
            slot_size: 64,
            mode: DeliveryMode::Lossless,
            max_publishers: 4,
            max_subscribers: 8,
            type_name: "my_crate::Odom".into(),
            type_size: 48,
            type_align: 8,
        }
    }

    fn frame_with_len(len: u32, body: &[u8]) -> Vec<u8> {
        let mut v = len.to_le_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    /// A reader that reports its size as huge but fails if asked for more than
    /// a few bytes: proves no body buffer is allocated for a rejected length.
    struct CountingReader {
        data: Vec<u8>,
        pos: usize,
        max_request: usize,
    }

    impl Read for CountingReader {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.max_request = self.max_request.max(buf.len());
            let rest = &self.data[self.pos..];
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn frame_round_trips_every_request_kind() {
        let reqs = vec![
            Request::Hello {
                version: PROTOCOL_VERSION,
                client_name: "test".into(),
            },
            Request::AttachPublisher {
                topic: "robot/odom".into(),
                spec: Some(odom_spec()),
            },
            Request::AttachSubscriber {
                topic: "robot/odom".into(),
                spec: None,
                start: StartAt::Oldest,
            },
            Request::Detach {
                topic: "robot/odom".into(),
                role: Role::Subscriber,
                index: 3,
                generation: u64::MAX,
            },
            Request::List,
            Request::Stats { topic: None },
            Request::Delete { topic: "a".into() },
            Request::Shutdown,
        ];
        let mut buf = Vec::new();
        for r in &reqs {
            write_frame(&mut buf, r).unwrap();
        }
        let mut cur = Cursor::new(buf);
        for r in &reqs {
            let got: Request = read_frame(&mut cur).unwrap();
            assert_eq!(&got, r);
        }
        assert!(matches!(
            read_frame::<_, Request>(&mut cur),
            Err(ProtocolError::Closed)
        ));
    }

    #[test]
    fn frame_round_trips_responses() {
        let resps = vec![
            Response::HelloOk {
                version: 1,
                daemon_version: "0.1.0".into(),
                daemon_pid: 42,
                epoch: 7,
            },
            Response::Attached {
                topic: "t".into(),
                spec: odom_spec(),
                index: 0,
                generation: 1,
                segment_len: 1 << 20,
            },
            Response::Detached,
            Response::Deleted,
            Response::Topics {
                topics: vec![TopicInfo {
                    name: "t".into(),
                    spec: odom_spec(),
                    publishers: 1,
                    subscribers: 2,
                    published: 3,
                }],
            },
            Response::Stats {
                topics: vec![TopicStats {
                    name: "t".into(),
                    spec: odom_spec(),
                    published: 10,
                    publishers: vec![PublisherStat {
                        index: 0,
                        pid: 1,
                        published: 10,
                    }],
                    subscribers: vec![SubscriberStat {
                        index: 0,
                        pid: 2,
                        cursor: 8,
                        lag: 2,
                        lagged: 0,
                    }],
                    drops: 0,
                    stalls: 1,
                }],
            },
            Response::error(ErrorCode::NoSuchTopic, "no topic 't'; create it"),
        ];
        for r in &resps {
            let body = encode(r).unwrap();
            assert_eq!(&decode_response(&body).unwrap(), r);
        }
    }

    #[test]
    fn wire_format_uses_op_tag_and_snake_case() {
        let body = encode(&Request::AttachSubscriber {
            topic: "x".into(),
            spec: None,
            start: StartAt::Latest,
        })
        .unwrap();
        let text = String::from_utf8(body).unwrap();
        assert_eq!(
            text,
            r#"{"op":"attach_subscriber","topic":"x","spec":null,"start":"latest"}"#
        );
        let body = encode(&Response::error(ErrorCode::TableFull, "m")).unwrap();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"kind":"error","code":"table_full","message":"m"}"#
        );
    }

    #[test]
    fn subscriber_start_defaults_to_latest_when_omitted() {
        let r = decode_request(br#"{"op":"attach_subscriber","topic":"x","spec":null}"#).unwrap();
        assert_eq!(
            r,
            Request::AttachSubscriber {
                topic: "x".into(),
                spec: None,
                start: StartAt::Latest
            }
        );
    }

    #[test]
    fn decoder_rejects_unknown_fields_and_ops() {
        assert!(matches!(
            decode_request(br#"{"op":"list","extra":1}"#),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode_request(br#"{"op":"delete","topic":"x","extra":1}"#),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode_response(br#"{"kind":"detached","x":1}"#),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode_request(br#"{"op":"format_disk"}"#),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode_request(br#"{"topic":"x"}"#),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn decoder_rejects_oversize_length_without_allocating() {
        for len in [MAX_FRAME as u32 + 1, u32::MAX] {
            let mut r = CountingReader {
                data: frame_with_len(len, b"{}"),
                pos: 0,
                max_request: 0,
            };
            let err = read_frame::<_, Request>(&mut r).unwrap_err();
            assert!(
                matches!(err, ProtocolError::FrameTooLarge { len: l, .. } if l == u64::from(len))
            );
            assert_eq!(r.max_request, FRAME_HEADER_LEN, "only the header was read");
        }
    }

    #[test]
    fn decoder_rejects_zero_length_frame() {
        let mut cur = Cursor::new(frame_with_len(0, b""));
        assert!(matches!(
            read_frame::<_, Request>(&mut cur),
            Err(ProtocolError::EmptyFrame)
        ));
        assert!(matches!(
            decode_request(b""),
            Err(ProtocolError::EmptyFrame)
        ));
    }

    #[test]
    fn eof_inside_header_or_body_is_truncated() {
        let mut cur = Cursor::new(vec![5u8, 0]);
        assert!(matches!(
            read_frame::<_, Request>(&mut cur),
            Err(ProtocolError::Truncated {
                got: 2,
                expected: 4
            })
        ));
        let mut cur = Cursor::new(frame_with_len(20, br#"{"op":"#));
        assert!(matches!(
            read_frame::<_, Request>(&mut cur),
            Err(ProtocolError::Truncated {
                got: 6,
                expected: 20
            })
        ));
    }

    #[test]
    fn invalid_utf8_and_bad_json_are_malformed() {
        let mut cur = Cursor::new(frame_with_len(3, &[0xff, 0xfe, 0xfd]));
        assert!(matches!(
            read_frame::<_, Request>(&mut cur),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode_request(b"{\"op\":\"delete\",\"topic\":\"\xff\"}"),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode_request(
                br#"{"op":"detach","topic":"x","role":"publisher","index":-1,"generation":0}"#
            ),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn deeply_nested_json_is_rejected_not_stack_overflow() {
        let mut body = vec![b'['; 30_000];
        body.extend(vec![b']'; 30_000]);
        assert!(matches!(
            decode_request(&body),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn encoder_refuses_message_above_max_frame() {
        let r = Request::Hello {
            version: 1,
            client_name: "x".repeat(MAX_FRAME),
        };
        assert!(matches!(
            encode_frame(&r),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        let mut sink = Vec::new();
        assert!(write_frame(&mut sink, &r).is_err());
        assert!(sink.is_empty(), "nothing is written for a refused frame");
    }

    #[test]
    fn version_check_accepts_only_equal_version() {
        assert!(check_version(PROTOCOL_VERSION).is_ok());
        let err = check_version(PROTOCOL_VERSION + 1).unwrap_err();
        assert_eq!(err.code(), ErrorCode::VersionMismatch);
        let msg = err.to_string();
        let (client, daemon) = (
            format!("v{}", PROTOCOL_VERSION + 1),
            format!("v{PROTOCOL_VERSION}"),
        );
        assert!(msg.contains(&client) && msg.contains(&daemon), "{msg}");
        match err.to_response() {
            Response::Error { code, message } => {
                assert_eq!(code, ErrorCode::VersionMismatch);
                assert_eq!(message, msg);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn spec_validation_accepts_typical_specs() {
        odom_spec().validate().unwrap();
        let bytes = TopicSpec {
            type_name: String::new(),
            type_size: 0,
            type_align: 1,
            slot_size: 1 << 30,
            capacity: 2,
            ..odom_spec()
        };
        bytes.validate().unwrap();
        assert!(bytes.is_bytes());
        assert_eq!(bytes.ring_bytes(), 2 << 30);
    }

    #[test]
    fn spec_validation_rejects_each_bad_field() {
        let cases: Vec<(TopicSpec, &str)> = vec![
            (
                TopicSpec {
                    capacity: 1000,
                    ..odom_spec()
                },
                "capacity",
            ),
            (
                TopicSpec {
                    capacity: 1,
                    ..odom_spec()
                },
                "capacity",
            ),
            (
                TopicSpec {
                    capacity: 1 << 21,
                    ..odom_spec()
                },
                "capacity",
            ),
            (
                TopicSpec {
                    slot_size: 0,
                    type_size: 0,
                    ..odom_spec()
                },
                "slot_size",
            ),
            (
                TopicSpec {
                    slot_size: (1 << 30) + 1,
                    ..odom_spec()
                },
                "slot_size",
            ),
            (
                TopicSpec {
                    max_publishers: 0,
                    ..odom_spec()
                },
                "max_publishers",
            ),
            (
                TopicSpec {
                    max_subscribers: 257,
                    ..odom_spec()
                },
                "max_subscribers",
            ),
            (
                TopicSpec {
                    type_name: "x".repeat(129),
                    ..odom_spec()
                },
                "type_name",
            ),
            (
                TopicSpec {
                    type_name: "bad\nname".into(),
                    ..odom_spec()
                },
                "type_name",
            ),
            (
                TopicSpec {
                    type_name: "Odöm".into(),
                    ..odom_spec()
                },
                "type_name",
            ),
            (
                TopicSpec {
                    type_align: 3,
                    ..odom_spec()
                },
                "type_align",
            ),
            (
                TopicSpec {
                    type_align: 128,
                    type_size: 128,
                    slot_size: 128,
                    ..odom_spec()
                },
                "type_align",
            ),
            (
                TopicSpec {
                    type_align: 0,
                    ..odom_spec()
                },
                "type_align",
            ),
            (
                TopicSpec {
                    type_size: 65,
                    type_align: 1,
                    ..odom_spec()
                },
                "type_size",
            ),
            (
                TopicSpec {
                    type_size: 12,
                    type_align: 8,
                    ..odom_spec()
                },
                "type_size",
            ),
        ];
        for (spec, field) in cases {
            let err = spec.validate().unwrap_err();
            assert!(err.starts_with(field), "{field}: {err}");
        }
    }

    #[test]
    fn mismatch_of_type_names_both_types_and_the_fix() {
        let topic = odom_spec();
        let asked = TopicSpec {
            type_name: "other::Odom".into(),
            type_size: 40,
            ..odom_spec()
        };
        let m = topic
            .describe_mismatch("robot/odom", Role::Subscriber, &asked)
            .unwrap();
        assert_eq!(m.code, ErrorCode::TypeMismatch);
        assert_eq!(
            m.message,
            "topic 'robot/odom' carries `my_crate::Odom` (size 48, align 8) but this subscriber \
             asked for `other::Odom` (size 40, align 8); open it with the type the topic was \
             created with, or use another topic name"
        );
    }

    #[test]
    fn mismatch_of_geometry_lists_only_differing_fields() {
        let topic = odom_spec();
        let asked = TopicSpec {
            capacity: 512,
            mode: DeliveryMode::Lossy,
            ..odom_spec()
        };
        let m = topic
            .describe_mismatch("robot/odom", Role::Publisher, &asked)
            .unwrap();
        assert_eq!(m.code, ErrorCode::GeometryMismatch);
        assert!(
            m.message.starts_with(
                "topic 'robot/odom' exists with capacity 1024, mode lossless but this publisher \
                 asked for capacity 512, mode lossy;"
            ),
            "{}",
            m.message
        );
        assert!(!m.message.contains("slot_size"));
    }

    #[test]
    fn type_mismatch_wins_over_geometry_mismatch() {
        let asked = TopicSpec {
            capacity: 2,
            type_name: "B".into(),
            ..odom_spec()
        };
        let m = odom_spec()
            .describe_mismatch("t", Role::Publisher, &asked)
            .unwrap();
        assert_eq!(m.code, ErrorCode::TypeMismatch);
    }

    #[test]
    fn identical_specs_have_no_mismatch() {
        assert!(odom_spec()
            .describe_mismatch("t", Role::Subscriber, &odom_spec())
            .is_none());
    }

    #[test]
    fn bytes_topic_mismatch_says_bytes() {
        let bytes = TopicSpec {
            type_name: String::new(),
            type_size: 0,
            type_align: 1,
            ..odom_spec()
        };
        let m = bytes
            .describe_mismatch("raw", Role::Subscriber, &odom_spec())
            .unwrap();
        assert!(
            m.message
                .starts_with("topic 'raw' carries variable-length bytes (size 0, align 1)"),
            "{}",
            m.message
        );
    }

    #[test]
    fn request_topic_accessor_names_the_topic() {
        assert_eq!(
            Request::Delete {
                topic: "a/b".into()
            }
            .topic(),
            Some("a/b")
        );
        assert_eq!(Request::List.topic(), None);
        assert_eq!(Request::Stats { topic: None }.topic(), None);
    }

    fn arb_string() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), "[a-z/._-]{0,40}"]
    }

    fn arb_spec() -> impl Strategy<Value = TopicSpec> {
        (
            any::<u32>(),
            any::<u32>(),
            prop_oneof![Just(DeliveryMode::Lossless), Just(DeliveryMode::Lossy)],
            any::<u32>(),
            any::<u32>(),
            arb_string(),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(
                |(
                    capacity,
                    slot_size,
                    mode,
                    max_publishers,
                    max_subscribers,
                    type_name,
                    type_size,
                    type_align,
                )| TopicSpec {
                    capacity,
                    slot_size,
                    mode,
                    max_publishers,
                    max_subscribers,
                    type_name,
                    type_size,
                    type_align,
                },
            )
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        let role = prop_oneof![Just(Role::Publisher), Just(Role::Subscriber)];
        let start = prop_oneof![Just(StartAt::Latest), Just(StartAt::Oldest)];
        prop_oneof![
            (any::<u32>(), arb_string()).prop_map(|(version, client_name)| Request::Hello {
                version,
                client_name
            }),
            (arb_string(), proptest::option::of(arb_spec()))
                .prop_map(|(topic, spec)| Request::AttachPublisher { topic, spec }),
            (arb_string(), proptest::option::of(arb_spec()), start)
                .prop_map(|(topic, spec, start)| Request::AttachSubscriber { topic, spec, start }),
            (arb_string(), role, any::<u32>(), any::<u64>()).prop_map(
                |(topic, role, index, generation)| Request::Detach {
                    topic,
                    role,
                    index,
                    generation
                }
            ),
            Just(Request::List),
            proptest::option::of(arb_string()).prop_map(|topic| Request::Stats { topic }),
            arb_string().prop_map(|topic| Request::Delete { topic }),
            Just(Request::Shutdown),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn arbitrary_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_request(&bytes);
            let _ = decode_response(&bytes);
            let mut cur = Cursor::new(&bytes);
            // Read frames until an error: must terminate and never panic.
            while read_frame::<_, Request>(&mut cur).is_ok() {}
        }

        #[test]
        fn arbitrary_json_like_bytes_never_panic_the_decoder(
            body in r#"\{"op":"(hello|attach_publisher|attach_subscriber|detach|list|stats|delete|shutdown)"[ -~]{0,80}\}"#
        ) {
            let _ = decode_request(body.as_bytes());
            let mut cur = Cursor::new(frame_with_len(body.len() as u32, body.as_bytes()));
            let _ = read_frame::<_, Request>(&mut cur);
        }

        #[test]
        fn arbitrary_requests_round_trip(req in arb_request()) {
            prop_assert_eq!(&decode_request(&encode(&req).unwrap()).unwrap(), &req);
            let frame = encode_frame(&req).unwrap();
            let mut cur = Cursor::new(frame);
            let got: Request = read_frame(&mut cur).unwrap();
            prop_assert_eq!(got, req);
        }
    }
}
