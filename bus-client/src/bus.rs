//! [`Bus`]: a connection to the daemon, and the door to topics.

use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

use bus_core::ring::StartAt;
use bus_core::wait::WaitStrategy;
use bus_proto::protocol::{
    DaemonStatus, How, ProtocolError, Request, Response, TopicInfo, TopicStats,
};

use crate::conn::{unexpected, Conn};
use crate::error::{ConnectError, OpenError, RequestError};
use crate::options::topic_option_methods;
use crate::port::Port;
use crate::publisher::Sender;
use crate::raw::{RawPublisherBuilder, RawSubscriberBuilder};
use crate::subscriber::Receiver;
use crate::{Payload, Publisher, Subscriber, TopicOptions};

/// A connection to `shmbusd`. Cheap to clone; ports keep it alive. Dropping the last clone
/// (and every port) closes the connection, and the daemon frees what this process held.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::Bus;
/// // A daemon inside this process; `Bus::connect()` reaches a running `shmbusd` instead.
/// let bus = Bus::embedded()?;
/// let mut publisher = bus.publisher::<u64>("doc/bus").create()?;
/// let mut subscriber = bus.subscriber::<u64>("doc/bus").open()?;
/// publisher.publish(&1)?;
/// assert_eq!(*subscriber.recv()?, 1);
/// assert!(bus.list()?.iter().any(|t| t.name == "doc/bus"));
/// assert_eq!(bus.daemon_pid(), std::process::id());  // embedded: the daemon is this process
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Bus {
    conn: Arc<Conn>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("socket", &self.conn.socket())
            .finish()
    }
}

impl Bus {
    /// Connect to the daemon at the default socket: `$SHMBUS_SOCKET`, else
    /// `$XDG_RUNTIME_DIR/shmbus/shmbusd.sock`, else `/tmp/shmbus-$UID/shmbusd.sock`.
    pub fn connect() -> Result<Bus, ConnectError> {
        Bus::connect_to(bus_proto::paths::default_socket_path())
    }

    /// Connect to the daemon at `socket`.
    pub fn connect_to(socket: impl AsRef<Path>) -> Result<Bus, ConnectError> {
        Ok(Bus {
            conn: Arc::new(Conn::connect(socket.as_ref(), None)?),
        })
    }

    /// Start a daemon inside this process, on a private socket, and connect to it. Other
    /// processes reach it through [`Bus::socket_path`] (pass it as `SHMBUS_SOCKET`). The daemon
    /// stops, closing every topic, when the last clone of this bus and its ports are gone.
    ///
    /// Its socket and the files beside it (`shmbus-embedded-<pid>-<n>.sock`, `.lock`,
    /// `.status`, `.topics`, in the default socket's directory) are removed when the process
    /// exits even if the daemon is still running then (a thread still held a port when `main`
    /// returned). A process ended by a signal's default action (SIGTERM or SIGINT in a Rust
    /// program that does not handle them, SIGKILL) leaves them: a program that handles its
    /// signals calls [`Bus::remove_embedded_files`] before it ends. Either way the next
    /// embedded start in that directory removes the files of every embedded daemon whose
    /// process is gone (`shmbus doctor` reports them meanwhile).
    #[cfg(feature = "embedded")]
    pub fn embedded() -> Result<Bus, ConnectError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static EMBEDDED: AtomicU64 = AtomicU64::new(0);
        let dir = bus_proto::paths::default_socket_path()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        for stale in bus_proto::paths::stale_embedded_files(&dir) {
            let _ = std::fs::remove_file(stale);
        }
        let n = EMBEDDED.fetch_add(1, Ordering::Relaxed);
        let socket = dir.join(bus_proto::paths::embedded_socket_name(
            std::process::id(),
            n,
        ));
        exit_cleanup::register(&socket);
        Bus::embedded_at(socket)
    }

    /// Remove now the socket and side files of every daemon [`Bus::embedded`] started in
    /// this process, as happens anyway when the process exits. For a process about to end by a
    /// signal, which skips the exit hook: call it where the signal is handled, then end. A
    /// daemon still running keeps serving the ports already attached, but no other process can
    /// reach it any more. Not async-signal-safe (it takes a lock and allocates): call it from a
    /// thread that received the signal's notice (`signal-hook`'s iterator, `tokio::signal`,
    /// `ctrlc`), never from a raw `sigaction` handler. The Python module calls it on SIGTERM,
    /// SIGINT and SIGHUP (see `docs/faults.md`).
    #[cfg(feature = "embedded")]
    pub fn remove_embedded_files() {
        exit_cleanup::remove_now();
    }

    /// Start a daemon inside this process on `socket` and connect to it.
    #[cfg(feature = "embedded")]
    pub fn embedded_at(socket: impl Into<std::path::PathBuf>) -> Result<Bus, ConnectError> {
        let handle = bus_daemon::spawn(bus_daemon::Config::new(socket.into()))?;
        let socket = handle.socket_path().to_path_buf();
        Ok(Bus {
            conn: Arc::new(Conn::connect(&socket, Some(handle))?),
        })
    }

    /// The daemon's socket.
    pub fn socket_path(&self) -> &Path {
        self.conn.socket()
    }

    /// The daemon's process id.
    pub fn daemon_pid(&self) -> u32 {
        self.conn.daemon_pid()
    }

    /// A publisher on `topic` carrying `T` (a zerocopy type, or `[u8]` for bytes). Finish with
    /// `create()`, `open()` or `open_or_create()`.
    pub fn publisher<T: Payload + ?Sized>(&self, topic: &str) -> PublisherBuilder<'_, T> {
        PublisherBuilder {
            bus: self,
            topic: topic.to_string(),
            options: TopicOptions::default(),
            wait: WaitStrategy::default(),
            _t: PhantomData,
        }
    }

    /// A subscriber on `topic` carrying `T` (a zerocopy type, or `[u8]` for bytes). Finish
    /// with `open()`, `open_or_create()` or `create()`.
    pub fn subscriber<T: Payload + ?Sized>(&self, topic: &str) -> SubscriberBuilder<'_, T> {
        SubscriberBuilder {
            bus: self,
            topic: topic.to_string(),
            options: TopicOptions::default(),
            wait: WaitStrategy::default(),
            start: StartAt::Latest,
            _t: PhantomData,
        }
    }

    /// A subscriber that reads any topic's messages as bytes, whatever its type.
    pub fn raw_subscriber(&self, topic: &str) -> RawSubscriberBuilder<'_> {
        RawSubscriberBuilder {
            bus: self,
            topic: topic.to_string(),
            wait: WaitStrategy::default(),
            start: StartAt::Latest,
        }
    }

    /// A publisher of bytes into a topic whose type the caller states.
    pub fn raw_publisher(&self, topic: &str) -> RawPublisherBuilder<'_> {
        RawPublisherBuilder {
            bus: self,
            topic: topic.to_string(),
            wait: WaitStrategy::default(),
        }
    }

    /// Watch for topics matching `pattern` (`*` one part, `**` any number; a plain name
    /// watches one topic): each one created from now on is announced with a subscriber of this
    /// process already attached from its first message, and each announced one that is deleted
    /// as gone. Finish with `open()`; see [`TopicWatch`](crate::TopicWatch).
    pub fn watch_topics(&self, pattern: &str) -> crate::TopicWatchBuilder<'_> {
        crate::TopicWatchBuilder {
            bus: self,
            pattern: pattern.to_string(),
            existing: None,
            wait: WaitStrategy::default(),
        }
    }

    /// A subscriber of `topic` as bytes: now if the topic exists (from the next message), else
    /// as soon as it is created (from its first message: nothing is lost), waiting at most
    /// `timeout` (forever with `None`). A topic not created in time is
    /// [`OpenError::NotFound`]. The same as `raw_subscriber(topic).open_or_wait(timeout)`.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use bus_client::Bus;
    /// use std::time::Duration;
    /// let bus = Bus::embedded()?;
    /// let socket = bus.socket_path().to_path_buf();
    /// let publisher = std::thread::spawn(move || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    ///     let bus = Bus::connect_to(socket)?;
    ///     let mut p = bus.publisher::<[u8]>("doc/later").create()?;
    ///     p.publish(b"first")?;
    ///     Ok(())
    /// });
    /// let mut sub = bus.wait_for_topic("doc/later", Some(Duration::from_secs(30)))?;
    /// assert_eq!(sub.recv()?.bytes(), b"first");
    /// publisher.join().unwrap().unwrap();
    /// # Ok(()) }
    /// ```
    pub fn wait_for_topic(
        &self,
        topic: &str,
        timeout: Option<std::time::Duration>,
    ) -> Result<crate::RawSubscriber, OpenError> {
        self.raw_subscriber(topic).open_or_wait(timeout)
    }

    /// Every topic this process may see, in name order (asked for page by page: a daemon
    /// with thousands of topics answers in several frames).
    pub fn list(&self) -> Result<Vec<TopicInfo>, RequestError> {
        self.pages(
            Request::List,
            |after| Request::ListAfter { after },
            |r| match r {
                Response::Topics { topics, next } => Ok((topics, next)),
                other => Err(unexpected(&other)),
            },
        )
    }

    /// Stats of one topic, or of all (page by page, as [`Bus::list`]).
    pub fn stats(&self, topic: Option<&str>) -> Result<Vec<TopicStats>, RequestError> {
        let first = Request::Stats {
            topic: topic.map(str::to_string),
        };
        self.pages(
            first,
            |after| Request::StatsAfter { after },
            |r| match r {
                Response::Stats { topics, next } => Ok((topics, next)),
                other => Err(unexpected(&other)),
            },
        )
    }

    /// The daemon's totals, this uid's usage, and every limit the daemon enforces.
    pub fn status(&self) -> Result<DaemonStatus, RequestError> {
        match self.conn.request(&Request::Status)?.0 {
            Response::Status { status } => Ok(status),
            other => Err(unexpected(&other).into()),
        }
    }

    /// Ask `first`, then `more(next)` while the daemon says more follow; a `next` that does not
    /// move forward is a protocol error (a daemon cannot make this loop forever).
    fn pages<T>(
        &self,
        first: Request,
        more: impl Fn(String) -> Request,
        split: impl Fn(Response) -> Result<(Vec<T>, Option<String>), ProtocolError>,
    ) -> Result<Vec<T>, RequestError> {
        let mut all = Vec::new();
        let mut request = first;
        let mut last: Option<String> = None;
        loop {
            let (items, next) = split(self.conn.request(&request)?.0)?;
            all.extend(items);
            let Some(next) = next else {
                return Ok(all);
            };
            if last.as_ref().is_some_and(|l| next.as_str() <= l.as_str()) {
                return Err(ProtocolError::Malformed(format!(
                    "the daemon's pages do not move forward (next page after '{next}')"
                ))
                .into());
            }
            last = Some(next.clone());
            request = more(next);
        }
    }

    /// Delete a topic: its ports see `Closed` (subscribers after draining what is left).
    pub fn delete(&self, topic: &str) -> Result<(), RequestError> {
        let request = Request::Delete {
            topic: topic.to_string(),
        };
        match self.conn.request(&request)?.0 {
            Response::Deleted => Ok(()),
            other => Err(unexpected(&other).into()),
        }
    }

    /// Ask the daemon to stop (only the daemon's own uid may).
    pub fn shutdown_daemon(&self) -> Result<(), RequestError> {
        match self.conn.request(&Request::Shutdown)?.0 {
            Response::Stopping => Ok(()),
            other => Err(unexpected(&other).into()),
        }
    }

    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }
}

/// Opens a [`Publisher`]; see [`Bus::publisher`].
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, PublisherBuilder};
/// let bus = Bus::embedded()?;
/// let builder: PublisherBuilder<'_, [u8]> = bus.publisher::<[u8]>("doc/pub-builder");
/// let publisher = builder.capacity(16).slot_size(256).lossy().create()?;
/// assert_eq!((publisher.spec().capacity, publisher.spec().slot_size), (16, 256));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PublisherBuilder<'b, T: ?Sized> {
    bus: &'b Bus,
    topic: String,
    options: TopicOptions,
    wait: WaitStrategy,
    _t: PhantomData<fn(&T)>,
}

impl<T: Payload + ?Sized> PublisherBuilder<'_, T> {
    topic_option_methods!();

    fn attach(self, how: How) -> Result<Publisher<T>, OpenError> {
        let port = Port::attach(self.bus.conn(), &self.topic, how, StartAt::Latest)?;
        Ok(Publisher::new(Sender::new(port, self.wait)))
    }

    /// Attach to the existing topic; it must carry `T`. Fails with
    /// [`OpenError::NotFound`] if there is no such topic: `open()` never creates one, so a
    /// mistyped name is an error, not a new empty topic.
    pub fn open(self) -> Result<Publisher<T>, OpenError> {
        self.attach(How::Open {
            type_info: Some(T::type_info()),
        })
    }

    /// Create the topic with these options, or attach to it if it exists with exactly these
    /// options and type (so a restarted program creates the same topic again without error).
    pub fn create(self) -> Result<Publisher<T>, OpenError> {
        let spec = self.options.geometry::<T>();
        self.attach(How::Create { spec, exact: true })
    }

    /// Attach to the topic if it exists (it must carry `T`; options set explicitly must
    /// match), or create it with these options.
    pub fn open_or_create(self) -> Result<Publisher<T>, OpenError> {
        let spec = self.options.geometry::<T>();
        let exact = self.options.explicit;
        self.attach(How::Create { spec, exact })
    }
}

/// Opens a [`Subscriber`]; see [`Bus::subscriber`].
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, StartAt, SubscriberBuilder};
/// let bus = Bus::embedded()?;
/// let mut publisher = bus.publisher::<u32>("doc/sub-builder").create()?;
/// let mut early = bus.subscriber::<u32>("doc/sub-builder").open()?; // keeps the message below
/// publisher.publish(&8)?;
/// let builder: SubscriberBuilder<'_, u32> = bus.subscriber::<u32>("doc/sub-builder");
/// let mut late = builder.start_at(StartAt::Oldest).open()?;        // replays what is held
/// assert_eq!((*early.recv()?, *late.recv()?), (8, 8));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SubscriberBuilder<'b, T: ?Sized> {
    bus: &'b Bus,
    topic: String,
    options: TopicOptions,
    wait: WaitStrategy,
    start: StartAt,
    _t: PhantomData<fn(&T)>,
}

impl<T: Payload + ?Sized> SubscriberBuilder<'_, T> {
    topic_option_methods!();

    /// Where to start: [`StartAt::Latest`] (the default: messages published from now on) or
    /// [`StartAt::Oldest`] (replay what the ring still holds).
    pub fn start_at(mut self, start: StartAt) -> Self {
        self.start = start;
        self
    }

    /// Replay what the ring still holds before new messages.
    pub fn replay(self) -> Self {
        self.start_at(StartAt::Oldest)
    }

    fn attach(self, how: How) -> Result<Subscriber<T>, OpenError> {
        let port = Port::attach(self.bus.conn(), &self.topic, how, self.start)?;
        Ok(Subscriber::new(Receiver::new(port, self.wait, T::fits)))
    }

    /// Attach to the existing topic; it must carry `T`. Fails with [`OpenError::NotFound`]
    /// if there is no such topic.
    pub fn open(self) -> Result<Subscriber<T>, OpenError> {
        self.attach(How::Open {
            type_info: Some(T::type_info()),
        })
    }

    /// Attach to the topic if it exists (it must carry `T`; options set explicitly must
    /// match), or create it with these options: for a subscriber that may start before its
    /// publishers.
    pub fn open_or_create(self) -> Result<Subscriber<T>, OpenError> {
        let spec = self.options.geometry::<T>();
        let exact = self.options.explicit;
        self.attach(How::Create { spec, exact })
    }

    /// Create the topic with these options, or attach to it if it exists with exactly these
    /// options and type.
    pub fn create(self) -> Result<Subscriber<T>, OpenError> {
        let spec = self.options.geometry::<T>();
        self.attach(How::Create { spec, exact: true })
    }

    /// Attach to the topic if it exists (it must carry `T`), else wait for it to be created,
    /// at most `timeout` (forever with `None`), and attach from its first message: the daemon
    /// attaches this subscriber before it answers the creator, so nothing published is missed
    /// (a lossless topic's publishers wait for it). Never creates the topic. A topic not
    /// created in time is [`OpenError::NotFound`].
    pub fn open_or_wait(
        self,
        timeout: Option<std::time::Duration>,
    ) -> Result<Subscriber<T>, OpenError> {
        let how = How::Open {
            type_info: Some(T::type_info()),
        };
        let port =
            crate::topic_watch::open_or_wait(self.bus, &self.topic, how, self.start, timeout)?;
        Ok(Subscriber::new(Receiver::new(port, self.wait, T::fits)))
    }
}

/// Removing embedded daemons' files when the process exits with their daemons still running.
#[cfg(feature = "embedded")]
mod exit_cleanup {
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, Once, PoisonError, TryLockError};

    /// The sockets of this process's embedded daemons.
    static SOCKETS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    /// Remove `socket` and its side files when the process exits (a daemon stopped before
    /// then has removed them already).
    pub(super) fn register(socket: &Path) {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            // SAFETY: atexit(3) takes a function of no arguments that must not unwind;
            // `at_exit` is an `extern "C" fn()` (a panic in it aborts instead of unwinding)
            // that only try-locks a mutex and removes files. Nothing else is required.
            let _ = unsafe { libc::atexit(at_exit) };
        });
        if let Ok(mut sockets) = SOCKETS.lock() {
            sockets.push(socket.to_path_buf());
        }
    }

    /// Remove the files of every embedded daemon this process started, now.
    pub(super) fn remove_now() {
        let sockets = SOCKETS.lock().unwrap_or_else(PoisonError::into_inner);
        remove(&sockets);
    }

    extern "C" fn at_exit() {
        // Never wait at exit: a thread that held the lock is frozen mid-push, rarely.
        let sockets = match SOCKETS.try_lock() {
            Ok(sockets) => sockets,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        remove(&sockets);
    }

    fn remove(sockets: &[PathBuf]) {
        for socket in sockets {
            bus_proto::paths::remove_socket_files(socket);
        }
    }
}
