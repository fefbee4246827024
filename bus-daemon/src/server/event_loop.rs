//! The event loop: one thread, `epoll` through mio, serving every connection.
//!
//! Readiness drives everything: a connection that has something to read is served (at most
//! [`READ_BUDGET`] requests per turn, the rest next turn, so no client starves the others), a
//! socket that drains gets the answers that waited for it, a worker that made a topic wakes the
//! loop through its `Waker`, and a signal through a socket pair its handler writes to. The only
//! timeouts are the deadlines in [`Timers`], armed only while there is work on a clock (a
//! repair to retry, a restart's grace, a held-back publisher's topic to watch): an idle daemon
//! waits in `epoll_wait` with no timeout and costs nothing, however many topics it has.
//!
//! A request that cannot be answered at once never blocks the loop: an attach to a topic being
//! created or that may yet be handed back after a restart is *parked* by name and planned again
//! when that is settled; a topic to create goes to a worker (`creator`). Until then its
//! connection is *busy*: nothing more is read from it, so its answers keep their order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus_proto::fdpass::{self, Received};
use bus_proto::frame;
use bus_proto::protocol::{ErrorCode, Request, Response};
use mio::{Events, Interest, Poll, Token, Waker};

use super::adopt::{self, ORPHAN_CHECK};
use super::announce::{self, TopicWatch, Watches, MAX_WATCHES_PER_CONNECTION};
use super::attach::{self, AttachRequest, CreateJob};
use super::connection::{Connection, Flushed, READ_BUDGET};
use super::creator::{Creator, Job};
use super::dispatch::{self, Outcome};
use super::disposal::{self, Disposer};
use super::registry::{Caller, Client, ClientId, Ctx, State};
use super::timers::{Timer, Timers};
use super::{watch, Answer};
use crate::acl::AccessConfig;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const SIGNALS: Token = Token(2);
/// Client `id` is token `CLIENT_BASE + id`.
const CLIENT_BASE: usize = 16;

/// How long after the adopt grace a recorded topic that no port handed back is kept: a port
/// that comes back later than that (its process made no call and did not wait) attaches anew.
const PENDING_KEEP: Duration = Duration::from_secs(60);
/// How often a repair that could not be decided is tried again, while any is pending.
const REPAIR_RETRY: Duration = Duration::from_millis(10);
/// How long to wait before accepting again after running out of descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

pub(super) static SIGNAL_STOP: AtomicBool = AtomicBool::new(false);
pub(super) static SIGNAL_RELOAD: AtomicBool = AtomicBool::new(false);
/// The write end of the signal socket pair (-1: none): the handlers write a byte to it.
static SIGNAL_FD: AtomicI32 = AtomicI32::new(-1);

/// Async-signal-safe: set the flag, then wake the loop.
pub(super) fn on_signal(flag: &AtomicBool) {
    flag.store(true, Ordering::SeqCst);
    let fd = SIGNAL_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: `write(2)` is async-signal-safe; `fd` is the write end of the loop's signal
        // socket pair, open for as long as it is stored here (cleared before it is closed),
        // and the buffer is one live byte on this stack. A full socket is fine: the loop is
        // woken already.
        let _ = unsafe { libc::write(fd, std::ptr::addr_of!(byte).cast(), 1) };
    }
}

/// How the world outside the loop stops it: a flag and a wake-up.
pub(super) struct Control {
    pub(super) stop: AtomicBool,
    pub(super) waker: Waker,
}

/// A creation a worker runs: who asked, and what to do with the segment.
type Tag = (ClientId, CreateJob);

pub(super) struct Server {
    ctx: Ctx,
    state: State,
    poll: Poll,
    listener: mio::net::UnixListener,
    conns: HashMap<ClientId, Connection>,
    /// Connections whose read budget ran out with requests perhaps left unread, and ones that
    /// may read again (an answer to their parked request went out).
    ready: VecDeque<ClientId>,
    timers: Timers,
    creator: Creator<Tag>,
    /// Attaches waiting, by topic name.
    parked: BTreeMap<String, Vec<(ClientId, AttachRequest)>>,
    control: Arc<Control>,
    /// The read end of the signal socket pair (standalone daemon only), and its write end.
    signals: Option<(mio::net::UnixStream, mio::net::UnixStream)>,
    next_client: ClientId,
    /// A `Shutdown` was answered: stop after this turn.
    stop_now: bool,
    /// Closes what clients sent, off the loop where a close could block.
    disposer: Disposer,
    /// Topic watches, by the id their channel's token is made from.
    watches: Watches,
}

impl Server {
    pub(super) fn new(
        ctx: Ctx,
        state: State,
        listener: std::os::unix::net::UnixListener,
    ) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listener = mio::net::UnixListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let control = Arc::new(Control {
            stop: AtomicBool::new(false),
            waker: Waker::new(poll.registry(), WAKER)?,
        });
        let c = control.clone();
        let creator = Creator::start(Arc::new(move || {
            let _ = c.waker.wake();
        }))?;
        let mut signals = None;
        if ctx.config.handle_signals {
            let (mut rx, tx) = mio::net::UnixStream::pair()?;
            poll.registry()
                .register(&mut rx, SIGNALS, Interest::READABLE)?;
            SIGNAL_FD.store(tx.as_raw_fd(), Ordering::SeqCst);
            signals = Some((rx, tx));
        }
        let mut timers = Timers::default();
        if let Some(d) = state.adopt_deadline {
            timers.arm(Timer::Adopt, d);
        }
        Ok(Server {
            ctx,
            state,
            poll,
            listener,
            conns: HashMap::new(),
            ready: VecDeque::new(),
            timers,
            creator,
            parked: BTreeMap::new(),
            control,
            signals,
            next_client: 1,
            stop_now: false,
            disposer: Disposer::default(),
            watches: Watches::default(),
        })
    }

    pub(super) fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    fn stop_requested(&self) -> bool {
        self.stop_now
            || self.control.stop.load(Ordering::SeqCst)
            || (self.ctx.config.handle_signals && SIGNAL_STOP.load(Ordering::SeqCst))
    }

    /// Serve until stopped, then stop gracefully: every topic is closed, every connection too.
    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        while !self.stop_requested() {
            if self.ctx.config.handle_signals && SIGNAL_RELOAD.swap(false, Ordering::SeqCst) {
                self.reload_rules();
            }
            let timeout = if self.ready.is_empty() {
                self.timers.timeout(Instant::now())
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "epoll_wait failed; stopping");
                    break;
                }
                continue;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => self.creations_done(),
                    SIGNALS => self.drain_signals(),
                    Token(t) => {
                        let id = t.wrapping_sub(CLIENT_BASE) as ClientId;
                        if !self.conns.contains_key(&id) {
                            self.watch_event(id, event);
                            continue;
                        }
                        if event.is_writable() {
                            self.flush(id);
                        }
                        let gone = event.is_read_closed() || event.is_error();
                        if gone && self.conns.get(&id).is_some_and(|c| c.busy) {
                            // Its process is gone while a request of it waits: let go of its
                            // ports now, not when the wait ends.
                            self.close(id);
                        } else if event.is_readable() || gone {
                            self.serve(id);
                        }
                    }
                }
            }
            for _ in 0..self.ready.len() {
                if let Some(id) = self.ready.pop_front() {
                    self.serve(id);
                }
            }
            self.run_timers();
            self.announce_gone();
        }
        self.shutdown();
    }

    fn reload_rules(&mut self) {
        let Some(path) = &self.ctx.config.acl_path else {
            tracing::info!("SIGHUP: no rules file configured; nothing to reload");
            return;
        };
        match AccessConfig::load(path) {
            Ok(acl) => {
                self.state.acl = acl;
                tracing::info!(path = %path.display(), "access rules reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "access rules NOT reloaded; keeping the old rules")
            }
        }
    }

    fn drain_signals(&mut self) {
        if let Some((rx, _)) = &mut self.signals {
            let mut buf = [0u8; 64];
            while matches!(rx.read(&mut buf), Ok(n) if n > 0) {}
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let out_of_files =
                        matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                    tracing::warn!(error = %e, "accept failed{}", if out_of_files { "; shmbusd is out of descriptors (raise its open-file limit); trying again shortly" } else { "" });
                    self.timers
                        .arm(Timer::Accept, Instant::now() + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// A new connection: refused past its uid's limit, else registered and served.
    fn admit(&mut self, mut stream: mio::net::UnixStream) {
        let cred = match fdpass::peer_credentials(&stream) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "no peer credentials; dropping the connection");
                // Whose it is is unknown: the daemon's own lane closes it.
                self.disposer.socket(self.ctx.uid, OwnedFd::from(stream));
                return;
            }
        };
        // Supplementary groups: rules that grant a gid admit members by any of their groups.
        let groups = fdpass::peer_groups(&stream).unwrap_or_else(|e| {
            tracing::debug!(error = %e, "no supplementary groups for a client; using its primary gid only");
            Vec::new()
        });
        let per_uid = self
            .state
            .clients_per_uid
            .get(&cred.uid)
            .copied()
            .unwrap_or(0);
        let max = self.state.acl.limits.max_clients_per_uid;
        let refusal = if per_uid >= u64::from(max) {
            Some(format!(
                "uid {} already has {per_uid} connections open, its limit (limits.max_clients_per_uid = {max}); close some or raise the limit",
                cred.uid
            ))
        } else if self.disposer.over(cred.uid) {
            Some(format!(
                "uid {} sent more descriptors than the daemon can close at once ({} wait); try again later",
                cred.uid,
                self.disposer.backlog(cred.uid)
            ))
        } else {
            None
        };
        if let Some(why) = refusal {
            let resp = Response::error(ErrorCode::LimitReached, why);
            // A new socket's buffer is empty: a short answer goes in one non-blocking send.
            if let Ok(bytes) = frame::encode_frame(&resp) {
                let _ = fdpass::send_some_with_fds(&stream, &bytes, &[]);
            }
            // What it may have queued before it was accepted is not closed on the loop.
            self.disposer.socket(cred.uid, OwnedFd::from(stream));
            return;
        }
        let id = self.next_client;
        self.next_client += 1;
        let token = Token(CLIENT_BASE + id as usize);
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(error = %e, "cannot watch a client connection; dropping it");
            self.disposer.socket(cred.uid, OwnedFd::from(stream));
            return;
        }
        tracing::debug!(
            client = id,
            pid = cred.pid,
            uid = cred.uid,
            "client connected"
        );
        self.state.clients.insert(
            id,
            Client {
                cred,
                name: String::new(),
                hello: false,
            },
        );
        *self.state.clients_per_uid.entry(cred.uid).or_default() += 1;
        let caller = Caller { id, cred, groups };
        self.conns.insert(id, Connection::new(stream, caller));
        self.ready.push_back(id);
    }

    /// Read and serve up to the budget of requests from connection `id`.
    fn serve(&mut self, id: ClientId) {
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            if conn.busy || conn.closing {
                return;
            }
            let uid = conn.caller.cred.uid;
            if self.disposer.over(uid) {
                tracing::warn!(
                    client = id,
                    uid,
                    backlog = self.disposer.backlog(uid),
                    "a uid sent more descriptors than the daemon can close at once; dropping its connection"
                );
                return self.close(id);
            }
            let read = conn.read();
            let discarded = conn.take_discarded();
            self.disposer.fds(uid, discarded);
            match read {
                Ok(Received::Frame(request, fds)) => self.request(id, request, fds),
                Ok(Received::WouldBlock) => return,
                Ok(Received::Closed) => return self.close(id),
                Err(e) if e.is_disconnect() => {
                    tracing::debug!(client = id, error = %e, "connection lost");
                    return self.close(id);
                }
                Err(e) => {
                    // A malformed frame: answer with a typed error and drop the connection,
                    // since the stream may be out of step. Everyone else is served on.
                    tracing::warn!(client = id, pid = conn.caller.cred.pid, error = %e, "malformed request");
                    conn.closing = true;
                    return self.answer(id, (e.to_response(), Vec::new()));
                }
            }
        }
        // The budget ran out: the others get their turn first.
        self.ready.push_back(id);
    }

    fn request(&mut self, id: ClientId, request: Request, fds: Vec<OwnedFd>) {
        let Some(caller) = self.conns.get(&id).map(|c| c.caller.clone()) else {
            return;
        };
        // Only a `Reattach` carries descriptors of its own (two memory files), and only of kinds
        // that close at once; a `Watch` carries its channel (a socket, checked and kept by
        // `start_watch`, disposed of like a connection when the watch ends); anything else is
        // disposed of off the loop and the request goes on without it.
        let wants_fds = matches!(request, Request::Reattach { .. });
        let fds = if matches!(request, Request::Watch { .. })
            || (wants_fds && fds.iter().all(disposal::closes_at_once))
        {
            fds
        } else {
            self.disposer.fds(caller.cred.uid, fds);
            Vec::new()
        };
        let outcome = dispatch::handle(&self.ctx, &mut self.state, &caller, request, fds);
        self.apply(id, outcome);
    }

    fn apply(&mut self, id: ClientId, outcome: Outcome) {
        match outcome {
            Outcome::Answer(answer) => self.answer(id, answer),
            Outcome::Silent => {}
            Outcome::Watch(topic) => {
                let at = Instant::now() + watch::period(self.ctx.config.stuck_timeout);
                self.timers.arm(Timer::Watch(topic), at);
            }
            Outcome::Park(req) => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.busy = true;
                }
                self.parked
                    .entry(req.topic.clone())
                    .or_default()
                    .push((id, req));
            }
            Outcome::Create(job) => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.busy = true;
                }
                let work = Job {
                    name: job.name.clone(),
                    layout: job.layout.clone(),
                    tag: (id, job),
                };
                if let Err(work) = self.creator.submit(work) {
                    let (_, job) = work.tag;
                    self.state.end_creation(&job.name);
                    self.unbusy(id);
                    self.answer(
                        id,
                        super::error(ErrorCode::Internal, "the daemon cannot create topics now"),
                    );
                }
            }
            Outcome::Adopted(topic, answer) => {
                self.answer(id, answer);
                self.replan(&topic);
            }
            Outcome::Stop(answer) => {
                self.answer(id, answer);
                self.stop_now = true;
            }
            Outcome::TopicWatch {
                pattern,
                existing,
                channel,
            } => {
                let answer = self.start_watch(id, pattern, existing, channel);
                self.answer(id, answer);
            }
        }
    }

    /// Start a topic watch for connection `id` over `channel`; the answer says how many
    /// existing topics it announces (their notices are written before the answer, as far as
    /// the channel takes them).
    fn start_watch(
        &mut self,
        id: ClientId,
        pattern: bus_proto::pattern::TopicPattern,
        existing: Option<bus_core::ring::StartAt>,
        channel: OwnedFd,
    ) -> Answer {
        let Some(caller) = self.conns.get(&id).map(|c| c.caller.clone()) else {
            self.disposer.socket(self.ctx.uid, channel);
            return super::error(ErrorCode::Internal, "the asking connection is gone");
        };
        let uid = caller.cred.uid;
        if self.watches.of(id).len() >= MAX_WATCHES_PER_CONNECTION {
            self.disposer.socket(uid, channel);
            return super::error(
                ErrorCode::LimitReached,
                format!("a connection may hold {MAX_WATCHES_PER_CONNECTION} topic watches at once; close one first"),
            );
        }
        let mut stream = match announce::channel_stream(channel) {
            Ok(s) => s,
            Err(fd) => {
                self.disposer.socket(uid, fd);
                return super::error(
                    ErrorCode::BadRequest,
                    "a watch channel must be a Unix stream socket (one end of a socket pair)",
                );
            }
        };
        let wid = self.next_client;
        self.next_client += 1;
        let token = Token(CLIENT_BASE + wid as usize);
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(error = %e, "cannot watch a topic watch's channel");
            self.disposer.socket(uid, OwnedFd::from(stream));
            return super::error(
                ErrorCode::Internal,
                "the daemon cannot poll the watch channel",
            );
        }
        let (mut watch, n) =
            TopicWatch::new(&self.ctx, &self.state, &caller, pattern, existing, stream);
        let pumped = watch.pump(&self.ctx, &mut self.state);
        self.watches.insert(wid, watch);
        if pumped.is_err() {
            self.end_watch(wid);
            return super::error(ErrorCode::Internal, "the watch channel broke at once");
        }
        tracing::debug!(
            client = id,
            watch = wid,
            existing = n,
            "topic watch started"
        );
        (Response::Watching { existing: n }, Vec::new())
    }

    /// Readiness on a watch channel: it drained (write more), or the client closed or wrote
    /// to it (the watch ends; nothing is read from it on the loop).
    fn watch_event(&mut self, id: ClientId, event: &mio::event::Event) {
        let Some(w) = self.watches.get_mut(id) else {
            return;
        };
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            return self.end_watch(id);
        }
        if event.is_writable() && w.pump(&self.ctx, &mut self.state).is_err() {
            self.end_watch(id);
        }
    }

    /// End watch `id`: release what it had not announced, close its channel off the loop.
    fn end_watch(&mut self, id: ClientId) {
        let Some(mut w) = self.watches.remove(id) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut w.channel.stream);
        let uid = w.channel.caller.cred.uid;
        let (stream, held) = w.end(&mut self.state);
        self.disposer.fds(uid, held);
        self.disposer.socket(uid, stream);
        tracing::debug!(watch = id, "topic watch ended");
    }

    /// Tell the watches of topics deleted since last time.
    fn announce_gone(&mut self) {
        for name in std::mem::take(&mut self.state.gone) {
            for id in self.watches.deleted(&name) {
                self.end_watch(id);
            }
        }
    }

    /// Topic `name` was just registered: attach the watchers' subscribers and tell them,
    /// before its creator is answered.
    fn announce_created(&mut self, name: &str) {
        self.announce_gone();
        for id in self.watches.created(&self.ctx, &mut self.state, name) {
            self.end_watch(id);
        }
    }

    /// Queue an answer for `id` and send what the socket takes.
    fn answer(&mut self, id: ClientId, (response, fds): Answer) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.queue(&response, fds).is_err() {
            tracing::warn!(
                client = id,
                pid = conn.caller.cred.pid,
                "a client left too many answers unread; dropping it"
            );
            return self.close(id);
        }
        self.flush(id);
    }

    fn flush(&mut self, id: ClientId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if !conn.has_output() && !conn.closing {
            return;
        }
        match conn.flush() {
            Ok(Flushed::All) if conn.closing => self.close(id),
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(client = id, error = %e, "cannot answer; dropping the connection");
                self.close(id);
            }
        }
    }

    /// A parked or created request of `id` was answered: it may read again.
    fn unbusy(&mut self, id: ClientId) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.busy = false;
            self.ready.push_back(id);
        }
    }

    /// Plan again the attaches parked on `name`.
    fn replan(&mut self, name: &str) {
        let Some(waiting) = self.parked.remove(name) else {
            return;
        };
        for (id, req) in waiting {
            let Some(caller) = self.conns.get(&id).map(|c| c.caller.clone()) else {
                continue;
            };
            self.unbusy(id);
            let outcome = dispatch::attach_outcome(&self.ctx, &mut self.state, &caller, req);
            self.apply(id, outcome);
        }
    }

    fn creations_done(&mut self) {
        let done: Vec<_> = self.creator.finished().collect();
        for d in done {
            let (id, job) = d.tag;
            let caller = self.conns.get(&id).map(|c| c.caller.clone());
            let answer = attach::finish(&self.ctx, &mut self.state, caller.as_ref(), job, d.made);
            if self.state.topics.contains_key(&d.name) {
                // Before the creator hears: it publishes nothing a watcher would miss.
                self.announce_created(&d.name);
            }
            if caller.is_some() {
                self.unbusy(id);
                self.answer(id, answer);
            }
            self.replan(&d.name);
        }
    }

    /// The connection closed (the process exited or was killed), or is dropped: let go of
    /// every port it held.
    fn close(&mut self, id: ClientId) {
        let Some(mut conn) = self.conns.remove(&id) else {
            return;
        };
        for w in self.watches.of(id) {
            self.end_watch(w);
        }
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let uid = conn.caller.cred.uid;
        let (stream, held) = conn.into_parts();
        self.disposer.fds(uid, held);
        self.disposer.socket(uid, stream);
        let Some(client) = self.state.clients.remove(&id) else {
            return;
        };
        if let Some(n) = self.state.clients_per_uid.get_mut(&client.cred.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.state.clients_per_uid.remove(&client.cred.uid);
            }
        }
        for waiting in self.parked.values_mut() {
            waiting.retain(|(w, _)| *w != id);
        }
        self.parked.retain(|_, w| !w.is_empty());
        if self.state.stopping {
            return;
        }
        self.state
            .release_ports(id, "its client went away", |_| true);
        tracing::debug!(client = id, name = client.name.as_str(), "client gone");
    }

    fn run_timers(&mut self) {
        let now = Instant::now();
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Repairs => self.state.run_repairs(),
                Timer::Accept => self.accept(),
                Timer::Watch(name) => {
                    if watch::tick(&mut self.state, &name, self.ctx.config.stuck_timeout, now) {
                        let at = now + watch::period(self.ctx.config.stuck_timeout);
                        self.timers.arm(Timer::Watch(name), at);
                    }
                }
                Timer::Orphans => {
                    if adopt::give_up_orphans(&mut self.state) {
                        self.timers.arm(Timer::Orphans, now + ORPHAN_CHECK);
                    }
                }
                Timer::Adopt => self.adopt_deadline(now),
            }
        }
        if !self.state.repairs.is_empty() {
            self.timers.arm(Timer::Repairs, now + REPAIR_RETRY);
        }
    }

    /// The adopt grace ended (or, later, the time recorded topics are kept).
    fn adopt_deadline(&mut self, now: Instant) {
        let Some(deadline) = self.state.adopt_deadline else {
            return;
        };
        if now >= deadline + PENDING_KEEP {
            adopt::forget_pending(&mut self.state);
            return;
        }
        if adopt::give_up_orphans(&mut self.state) {
            self.timers.arm(Timer::Orphans, now + ORPHAN_CHECK);
        }
        // Attaches that waited for a topic to be handed back now create it anew or fail.
        let names: Vec<String> = self.parked.keys().cloned().collect();
        for name in names {
            self.replan(&name);
        }
        if !self.state.pending.is_empty() {
            self.timers.arm(Timer::Adopt, deadline + PENDING_KEEP);
        }
    }

    fn shutdown(mut self) {
        self.state.stopping = true;
        for (name, topic) in &self.state.topics {
            topic.ring.close();
            tracing::debug!(topic = name.as_str(), "closed");
        }
        for conn in self.conns.values_mut() {
            let _ = conn.flush();
        }
        for (_, conn) in self.conns.drain() {
            let uid = conn.caller.cred.uid;
            let (stream, held) = conn.into_parts();
            self.disposer.fds(uid, held);
            self.disposer.socket(uid, stream);
        }
        for id in self.watches.ids() {
            if let Some(w) = self.watches.remove(id) {
                let uid = w.channel.caller.cred.uid;
                let (stream, held) = w.channel.into_parts();
                self.disposer.fds(uid, held);
                self.disposer.socket(uid, stream);
            }
        }
        SIGNAL_FD.store(-1, Ordering::SeqCst);
        self.signals = None;
        self.creator.stop();
        self.state.topics.clear();
    }
}
