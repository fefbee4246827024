//! [`Bus`]: a connection to the daemon, and the door to topics.

use std::marker::PhantomData;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bus_core::wait::WaitStrategy;
use bus_daemon::protocol::{
    ErrorCode, Request, Response, Role, StartAt as WireStart, TopicInfo, TopicSpec, TopicStats,
};
use bus_daemon::segment::{self, Access, SegmentFds, ShmRing};

use crate::conn::{unexpected, Conn};
use crate::options::topic_option_methods;
use crate::{Error, Payload, Publisher, StartAt, Subscriber, TopicOptions};

/// A connection to `shmbusd`. Cheap to clone; ports keep it alive. Dropping the last clone
/// (and every port) closes the connection, and the daemon frees what this process held.
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

static EMBEDDED: AtomicU64 = AtomicU64::new(0);

impl Bus {
    /// Connect to the daemon at the default socket: `$SHMBUS_SOCKET`, else
    /// `$XDG_RUNTIME_DIR/shmbus/shmbusd.sock`, else `/tmp/shmbus-$UID/shmbusd.sock`.
    pub fn connect() -> Result<Bus, Error> {
        Bus::connect_to(bus_daemon::paths::default_socket_path())
    }

    /// Connect to the daemon at `socket`.
    pub fn connect_to(socket: impl AsRef<Path>) -> Result<Bus, Error> {
        Ok(Bus {
            conn: Arc::new(Conn::connect(socket.as_ref(), None)?),
        })
    }

    /// Start a daemon inside this process, on a private socket, and connect to it. Other
    /// processes reach it through [`Bus::socket_path`] (pass it as `SHMBUS_SOCKET`). The daemon
    /// stops, removing every segment, when the last clone of this bus and its ports are gone.
    pub fn embedded() -> Result<Bus, Error> {
        let dir = bus_daemon::paths::default_socket_path()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let n = EMBEDDED.fetch_add(1, Ordering::Relaxed);
        Bus::embedded_at(dir.join(format!("shmbus-embedded-{}-{n}.sock", std::process::id())))
    }

    /// Start a daemon inside this process on `socket` and connect to it.
    pub fn embedded_at(socket: impl Into<PathBuf>) -> Result<Bus, Error> {
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

    /// A publisher on `topic` carrying `T` (a zerocopy type, or `[u8]` for bytes).
    pub fn publisher<T: Payload + ?Sized>(&self, topic: &str) -> PublisherBuilder<'_, T> {
        PublisherBuilder {
            bus: self,
            topic: topic.to_string(),
            options: TopicOptions::default(),
            wait: WaitStrategy::default(),
            _t: PhantomData,
        }
    }

    /// A subscriber on `topic` carrying `T` (a zerocopy type, or `[u8]` for bytes).
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

    /// Every topic this process may see.
    pub fn list(&self) -> Result<Vec<TopicInfo>, Error> {
        match self.conn.request(&Request::List)?.0 {
            Response::Topics { topics } => Ok(topics),
            other => Err(unexpected(&other)),
        }
    }

    /// Stats of one topic, or of all.
    pub fn stats(&self, topic: Option<&str>) -> Result<Vec<TopicStats>, Error> {
        match self
            .conn
            .request(&Request::Stats {
                topic: topic.map(str::to_string),
            })?
            .0
        {
            Response::Stats { topics } => Ok(topics),
            other => Err(unexpected(&other)),
        }
    }

    /// Delete a topic: its ports see `Closed`, its segment is removed.
    pub fn delete(&self, topic: &str) -> Result<(), Error> {
        self.conn
            .request(&Request::Delete {
                topic: topic.to_string(),
            })
            .map(drop)
    }

    /// Ask the daemon to stop (only the daemon's own uid may).
    pub fn shutdown_daemon(&self) -> Result<(), Error> {
        self.conn.request(&Request::Shutdown).map(drop)
    }

    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }
}

/// Attach a port: ask without a spec unless options were explicit; create on NoSuchTopic.
pub(crate) fn attach_port<T: Payload + ?Sized>(
    conn: &Conn,
    topic: &str,
    options: &TopicOptions,
    role: Role,
    start: StartAt,
) -> Result<Attached, Error> {
    {
        let spec = options.spec::<T>();
        let ask = |spec: Option<TopicSpec>| match role {
            Role::Publisher => Request::AttachPublisher {
                topic: topic.to_string(),
                spec,
            },
            Role::Subscriber => Request::AttachSubscriber {
                topic: topic.to_string(),
                spec,
                start: match start {
                    StartAt::Latest => WireStart::Latest,
                    StartAt::Oldest => WireStart::Oldest,
                },
            },
        };
        let result = if options.explicit {
            conn.request(&ask(Some(spec.clone())))
        } else {
            match conn.request(&ask(None)) {
                Err(Error::NoSuchTopic(_)) => conn.request(&ask(Some(spec.clone()))),
                other => other,
            }
        };
        let (resp, fds) = result?;
        let Response::Attached {
            spec: actual,
            index,
            generation,
            ..
        } = resp
        else {
            return Err(unexpected(&resp));
        };
        let attached = |fds: SegmentFds| -> Result<Attached, Error> {
            let access = match role {
                Role::Publisher => Access::ReadWrite,
                Role::Subscriber => Access::Subscriber,
            };
            let ring = segment::open_ring(fds.control.as_fd(), fds.data.as_fd(), access)?;
            // The header is only as trustworthy as whoever can write the segment: it must
            // describe exactly the topic the daemon says it is.
            let mapped = segment::spec_of(ring.geometry());
            if mapped != actual {
                return Err(Error::Invalid(format!(
                    "the segment of topic '{topic}' describes {mapped:?}, but the daemon says {actual:?}: the segment was tampered with"
                )));
            }
            Ok(Attached {
                ring,
                fds,
                index: index as usize,
                generation,
                spec: actual.clone(),
            })
        };
        let detach = || {
            let _ = conn.request(&Request::Detach {
                topic: topic.to_string(),
                role,
                index,
                generation,
            });
        };
        if let Some(m) = actual.describe_mismatch(topic, role, &spec_with_geometry(&actual, &spec))
        {
            detach();
            return Err(Error::from_daemon(m.code, m.message));
        }
        let mut fds = fds.into_iter();
        let (Some(control), Some(data)) = (fds.next(), fds.next()) else {
            detach();
            return Err(Error::Refused {
                code: ErrorCode::Internal,
                message: "the daemon did not send the segment's two descriptors".into(),
            });
        };
        attached(SegmentFds { control, data }).inspect_err(|_| detach())
    }
}

/// `requested`'s type with `actual`'s geometry: only the type is checked when the geometry
/// was not given explicitly (and when it was, the daemon has checked it already).
fn spec_with_geometry(actual: &TopicSpec, requested: &TopicSpec) -> TopicSpec {
    TopicSpec {
        type_name: requested.type_name.clone(),
        type_size: requested.type_size,
        type_align: requested.type_align,
        ..actual.clone()
    }
}

pub(crate) struct Attached {
    pub(crate) ring: Arc<ShmRing>,
    /// The segment's descriptors, kept to hand back to a restarted daemon.
    pub(crate) fds: SegmentFds,
    pub(crate) index: usize,
    pub(crate) generation: u64,
    pub(crate) spec: TopicSpec,
}

/// Opens a [`Publisher`]; see [`Bus::publisher`].
pub struct PublisherBuilder<'b, T: ?Sized> {
    bus: &'b Bus,
    topic: String,
    options: TopicOptions,
    wait: WaitStrategy,
    _t: PhantomData<fn(&T)>,
}

impl<T: Payload + ?Sized> PublisherBuilder<'_, T> {
    topic_option_methods!();

    /// Attach the publisher, creating the topic if it does not exist.
    pub fn open(self) -> Result<Publisher<T>, Error> {
        let conn = self.bus.conn();
        let a = attach_port::<T>(
            conn,
            &self.topic,
            &self.options,
            Role::Publisher,
            StartAt::Latest,
        )?;
        Publisher::new(conn.clone(), self.topic, self.options, a, self.wait)
    }
}

/// Opens a [`Subscriber`]; see [`Bus::subscriber`].
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

    /// Attach the subscriber, creating the topic if it does not exist.
    pub fn open(self) -> Result<Subscriber<T>, Error> {
        let conn = self.bus.conn();
        let a = attach_port::<T>(
            conn,
            &self.topic,
            &self.options,
            Role::Subscriber,
            self.start,
        )?;
        Subscriber::new(conn.clone(), self.topic, self.options, a, self.wait)
    }
}
