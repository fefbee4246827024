//! Topic watches: a client waiting for a topic by name or by pattern is told when it is
//! created, with a subscriber of its own already attached from the topic's first message.
//!
//! A client asks with `watch` (a pattern, and whether topics that exist already are wanted)
//! and hands over one end of a socket pair, the *channel*. The daemon writes notices to the
//! channel, never to the control connection (whose answers a client reads one per request):
//!
//! - **created**: when a topic is registered ([`Watches::created`], called by the event loop
//!   after the creation's worker is done and **before** the creator's attach is answered), each
//!   watch whose pattern matches and whose owner may subscribe to the topic gets a subscriber
//!   entry attached for its owner (at the first message: nothing can be published yet) and a
//!   `topic_created` notice with the segment's descriptors. On a lossless topic the creator's
//!   publishers then wait for the watcher: nothing is lost, even a burst larger than the ring.
//! - **existing**: topics that exist when the watch starts, when asked for, are announced the
//!   same way with a subscriber attached where the watch asked; they are kept as names in a
//!   backlog and attached only as the channel drains (at most [`PUMP_FDS`] descriptors
//!   queued), so a watch over thousands of topics holds no more than a few descriptors.
//! - **deleted**: a topic announced on a channel and then deleted is announced as gone.
//!
//! The access rules are checked per topic, for the owner's credentials, when it is announced:
//! a topic the owner may not subscribe to is never named on its channel.
//!
//! The subscribers belong to the owner's control connection, like any port it attached: the
//! client detaches them there, and they go when it closes. A watch ends when its owner's
//! connection closes, when the client closes (or writes to) its end of the channel, or when
//! the channel holds more than [`MAX_UNSENT`] notices the client has not read: the daemon then
//! closes its end, and the subscribers of notices it had not written yet are released (the
//! client never learns of them). The channel is closed off the loop, like a connection
//! (`disposal`).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::os::fd::OwnedFd;

use bus_core::ring::StartAt;
use bus_proto::pattern::TopicPattern;
use bus_proto::protocol::{Response, Role};

use super::attach;
use super::connection::Connection;
use super::dispatch;
use super::registry::{Caller, ClientId, Ctx, State};
use crate::acl::Action;

/// Watches one connection may hold at once (each holds one of the daemon's descriptors).
pub(super) const MAX_WATCHES_PER_CONNECTION: usize = 16;
/// Notices a channel may hold unwritten (its socket is full) before the watch is ended.
pub(super) const MAX_UNSENT: usize = 64;
/// Descriptors queued on a channel beyond which existing topics wait in the backlog.
const PUMP_FDS: usize = 16;

/// The channel broke or overflowed: the watch ends.
#[derive(Debug)]
pub(super) struct Broken;

/// A port announced in a notice not yet written whole: released if the watch ends first.
type Unsent = Option<(String, u32, u64)>;

/// One watch: its owner, its pattern, its channel and what it announced.
pub(super) struct TopicWatch {
    pub(super) owner: ClientId,
    caller: Caller,
    pattern: TopicPattern,
    existing: Option<StartAt>,
    pub(super) channel: Connection,
    /// Topics announced (a deletion is told only for these).
    announced: BTreeSet<String>,
    /// Existing topics still to announce.
    backlog: VecDeque<String>,
    /// One entry per notice in the channel's queue, in order.
    unsent: VecDeque<Unsent>,
}

impl TopicWatch {
    /// A watch of `pattern` for `caller` over `stream`; the existing topics it asked for go to
    /// its backlog. Returns it and how many existing topics it will announce.
    pub(super) fn new(
        ctx: &Ctx,
        state: &State,
        caller: &Caller,
        pattern: TopicPattern,
        existing: Option<StartAt>,
        stream: mio::net::UnixStream,
    ) -> (TopicWatch, u32) {
        let backlog: VecDeque<String> = match existing {
            Some(_) => state
                .topics
                .keys()
                .filter(|name| pattern.matches(name) && may_subscribe(ctx, state, caller, name))
                .cloned()
                .collect(),
            None => VecDeque::new(),
        };
        let n = u32::try_from(backlog.len()).unwrap_or(u32::MAX);
        let watch = TopicWatch {
            owner: caller.id,
            caller: caller.clone(),
            pattern,
            existing,
            channel: Connection::channel(stream, caller.clone(), MAX_UNSENT),
            announced: BTreeSet::new(),
            backlog,
            unsent: VecDeque::new(),
        };
        (watch, n)
    }

    /// Attach a subscriber of the owner to `name` and queue its notice.
    fn announce(
        &mut self,
        ctx: &Ctx,
        state: &mut State,
        name: &str,
        start: StartAt,
        existing: bool,
    ) -> Result<(), Broken> {
        if self.announced.contains(name) || !may_subscribe(ctx, state, &self.caller, name) {
            return Ok(());
        }
        let (answer, fds) =
            attach::attach_port(state, &self.caller, name, Role::Subscriber, start, false);
        let Response::Attached {
            topic,
            spec,
            index,
            generation,
            segment_len,
            ..
        } = answer
        else {
            tracing::warn!(topic = name, answer = ?answer, "a watcher's subscriber could not be attached; it is not told of the topic");
            return Ok(());
        };
        let notice = Response::TopicCreated {
            topic: topic.clone(),
            spec,
            index,
            generation,
            segment_len,
            existing,
        };
        self.announced.insert(topic.clone());
        self.unsent.push_back(Some((topic, index, generation)));
        self.channel.queue(&notice, fds).map_err(|_| Broken)?;
        Ok(())
    }

    /// A topic matching the pattern was created: announce it at once (its creator is answered
    /// after this).
    fn created(&mut self, ctx: &Ctx, state: &mut State, name: &str) -> Result<(), Broken> {
        if !self.pattern.matches(name) {
            return Ok(());
        }
        // A name in the backlog was deleted and created again: announce the new one now.
        self.backlog.retain(|n| n != name);
        self.announce(ctx, state, name, StartAt::Oldest, false)?;
        self.flush()
    }

    /// A topic was deleted: tell the channel if the topic was announced on it.
    fn deleted(&mut self, name: &str) -> Result<(), Broken> {
        self.backlog.retain(|n| n != name);
        if !self.announced.remove(name) {
            return Ok(());
        }
        let notice = Response::TopicDeleted {
            topic: name.to_string(),
        };
        self.unsent.push_back(None);
        self.channel
            .queue(&notice, Vec::new())
            .map_err(|_| Broken)?;
        self.flush()
    }

    /// Write what the channel takes, then attach and announce backlog topics while few
    /// descriptors wait.
    pub(super) fn pump(&mut self, ctx: &Ctx, state: &mut State) -> Result<(), Broken> {
        self.flush()?;
        let start = self.existing.unwrap_or(StartAt::Latest);
        while self.channel.queued_fds() < PUMP_FDS {
            let Some(name) = self.backlog.pop_front() else {
                break;
            };
            if state.topics.contains_key(&name) {
                self.announce(ctx, state, &name, start, true)?;
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Broken> {
        self.channel.flush().map_err(|_| Broken)?;
        while self.unsent.len() > self.channel.queued_frames() {
            self.unsent.pop_front();
        }
        Ok(())
    }

    /// End the watch: release the subscribers of notices not written whole, and return the
    /// channel for disposal off the loop.
    pub(super) fn end(self, state: &mut State) -> (OwnedFd, Vec<OwnedFd>) {
        for (topic, index, generation) in self.unsent.into_iter().flatten() {
            let _ = dispatch::detach(
                state,
                &self.caller,
                &topic,
                Role::Subscriber,
                index,
                generation,
            );
        }
        self.channel.into_parts()
    }
}

/// Every watch, by the id its channel's token is made from.
#[derive(Default)]
pub(super) struct Watches {
    by_id: HashMap<ClientId, TopicWatch>,
}

impl Watches {
    pub(super) fn insert(&mut self, id: ClientId, watch: TopicWatch) {
        self.by_id.insert(id, watch);
    }

    pub(super) fn get_mut(&mut self, id: ClientId) -> Option<&mut TopicWatch> {
        self.by_id.get_mut(&id)
    }

    pub(super) fn remove(&mut self, id: ClientId) -> Option<TopicWatch> {
        self.by_id.remove(&id)
    }

    /// The watches `owner` holds.
    pub(super) fn of(&self, owner: ClientId) -> Vec<ClientId> {
        let mut ids: Vec<ClientId> = self
            .by_id
            .iter()
            .filter(|(_, w)| w.owner == owner)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Every watch.
    pub(super) fn ids(&self) -> Vec<ClientId> {
        let mut ids: Vec<ClientId> = self.by_id.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// `name` was just created: announce it to every watch it matches, in the order the
    /// watches started. Returns the watches that broke.
    pub(super) fn created(&mut self, ctx: &Ctx, state: &mut State, name: &str) -> Vec<ClientId> {
        let mut broken = Vec::new();
        for id in self.ids() {
            if let Some(w) = self.by_id.get_mut(&id) {
                if w.created(ctx, state, name).is_err() {
                    broken.push(id);
                }
            }
        }
        broken
    }

    /// `name` was deleted. Returns the watches that broke.
    pub(super) fn deleted(&mut self, name: &str) -> Vec<ClientId> {
        let mut broken = Vec::new();
        for id in self.ids() {
            if let Some(w) = self.by_id.get_mut(&id) {
                if w.deleted(name).is_err() {
                    broken.push(id);
                }
            }
        }
        broken
    }
}

/// Whether `caller` may subscribe to `topic` (a watch learns of nothing else).
fn may_subscribe(ctx: &Ctx, state: &State, caller: &Caller, topic: &str) -> bool {
    state.acl.allows_with_groups(
        ctx.uid,
        &caller.cred,
        &caller.groups,
        topic,
        Action::Subscribe,
    )
}

/// Check that a descriptor a client sent as a watch channel is a Unix stream socket, and make
/// it a non-blocking stream for the loop.
pub(super) fn channel_stream(fd: OwnedFd) -> Result<mio::net::UnixStream, OwnedFd> {
    use nix::sys::socket::{getsockname, getsockopt, sockopt, SockType, UnixAddr};
    use std::os::fd::AsRawFd;
    let unix = getsockname::<UnixAddr>(fd.as_raw_fd()).is_ok();
    let stream = matches!(getsockopt(&fd, sockopt::SockType), Ok(SockType::Stream));
    if !(unix && stream) {
        return Err(fd);
    }
    let std = std::os::unix::net::UnixStream::from(fd);
    if std.set_nonblocking(true).is_err() {
        return Err(OwnedFd::from(std));
    }
    Ok(mio::net::UnixStream::from_std(std))
}
