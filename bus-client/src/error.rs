//! Errors, one type per operation where what can go wrong differs.
//!
//! | operation | error |
//! | --- | --- |
//! | [`Bus::connect`](crate::Bus::connect), [`Bus::embedded`](crate::Bus::embedded) | [`ConnectError`] |
//! | opening a port: `open()`, `create()`, `open_or_create()` | [`OpenError`] (names the topic) |
//! | [`Bus::list`](crate::Bus::list), `stats`, `delete`, `shutdown_daemon` | [`RequestError`] |
//! | `loan()`, `publish()` (wait for space) | [`SendError`] |
//! | `try_loan()`, `try_send()` | [`TrySendError`] (adds `Full`) |
//! | `loan_timeout()`, `send_timeout()` | [`SendTimeoutError`] (adds `Timeout`) |
//! | `recv()` | [`RecvError`] |
//! | `try_recv()` | [`TryRecvError`] (adds `Empty`) |
//! | `recv_timeout()` | [`RecvTimeoutError`] (adds `Timeout`) |
//! | setting up a [`WaitSet`](crate::WaitSet) or an async wait | [`WaitError`] |

use std::io;
use std::path::PathBuf;

use bus_core::ring::{RecvError as CoreRecv, SendError as CoreSend};
use bus_proto::protocol::ErrorCode;

// The errors below carry these as their sources.
/// ```
/// use bus_client::error::{MapError, SegmentError};
///
/// // A mapping whose header does not describe a valid segment (here: too short to hold one).
/// let e = MapError::Invalid(SegmentError::Truncated(64));
/// assert!(e.to_string().starts_with("invalid segment"));
/// ```
pub use bus_core::layout::SegmentError;
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::Bus;
/// use bus_client::error::{ConnectError, StartError};
/// let dir = std::env::temp_dir().join(format!("shmbus-doc-start-{}", std::process::id()));
/// let socket = dir.join("shmbusd.sock");
/// let _first = Bus::embedded_at(&socket)?;
/// // A second daemon on the same socket is refused, naming the one that runs.
/// match Bus::embedded_at(&socket) {
///     Err(ConnectError::Embedded(StartError::AlreadyRunning { .. })) => {}
///     other => panic!("{other:?}"),
/// }
/// # Ok(()) }
/// ```
#[cfg(feature = "embedded")]
pub use bus_daemon::StartError;
/// ```
/// use bus_client::error::ProtocolError;
/// use bus_client::{ConnectError, RequestError};
///
/// /// Whether a failed request means the daemon went away (as opposed to refusing).
/// fn daemon_gone(e: &RequestError) -> bool {
///     matches!(
///         e,
///         RequestError::Protocol(ProtocolError::Closed | ProtocolError::Truncated { .. })
///             | RequestError::Connect(ConnectError::Unreachable { .. })
///     )
/// }
/// assert!(daemon_gone(&RequestError::Protocol(ProtocolError::Closed)));
/// ```
pub use bus_proto::protocol::ProtocolError;
/// ```
/// use bus_client::error::{MapError, SealStep, SealedFileError};
/// use bus_client::OpenError;
///
/// /// What to tell an operator when a topic's memory could not be mapped.
/// fn advice(e: &OpenError) -> Option<String> {
///     match e {
///         OpenError::Map { source: MapError::Create(SealedFileError { step: SealStep::Reserve(n), .. }), .. } => {
///             Some(format!("the machine could not reserve {n} bytes of memory for the topic"))
///         }
///         OpenError::Map { topic, source } => Some(format!("topic {topic}: {source}")),
///         _ => None,
///     }
/// }
/// let e = OpenError::Map {
///     topic: "t".into(),
///     source: MapError::Create(SealedFileError {
///         step: SealStep::Reserve(4096),
///         source: std::io::Error::from_raw_os_error(28),
///     }),
/// };
/// assert!(advice(&e).unwrap().contains("4096 bytes"));
/// ```
pub use bus_proto::segment::{MapError, SealStep, SealedFileError};

/// The call that runs a daemon inside the process, as the error texts of this crate name it
/// for Rust callers. The C and Python bindings show their own call in its place
/// ([`in_language`]).
pub const EMBEDDED_CALL: &str = "Bus::embedded()";

/// An error text of this crate for a caller in another language: the Rust call
/// [`EMBEDDED_CALL`] replaced by `embedded_call`, the binding's own (`shmbus_connect_embedded()`
/// in C, `shmbus.Bus.embedded()` in Python).
pub fn in_language(message: &str, embedded_call: &str) -> String {
    message.replace(EMBEDDED_CALL, embedded_call)
}

/// `Debug` prints what `Display` does, then each source in turn: a `main` that returns
/// `Result<(), E>` shows the sentence that says what to do, not the enum's fields.
macro_rules! debug_as_display {
    ($($t:ty),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{self}")?;
                let mut source = std::error::Error::source(self);
                if source.is_some() {
                    f.write_str("\n\nCaused by:")?;
                }
                while let Some(s) = source {
                    write!(f, "\n    {s}")?;
                    source = s.source();
                }
                Ok(())
            }
        }
    )*};
}
debug_as_display!(ConnectError, OpenError, RequestError, WaitError);

/// Why connecting to the daemon failed.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, ConnectError};
/// let dir = std::env::temp_dir().join(format!("shmbus-doc-{}", std::process::id()));
/// match Bus::connect_to(dir.join("nobody.sock")) {
///     Err(ConnectError::Unreachable { socket, .. }) => assert!(socket.ends_with("nobody.sock")),
///     other => panic!("no daemon there: {other:?}"),
/// }
/// # Ok(()) }
/// ```
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No daemon answers at the socket.
    #[error("cannot connect to shmbusd at {socket}: {source}. Is the daemon running? Start `shmbusd` (or `shmbusd --socket {socket}`), or use Bus::embedded() to run one inside this process")]
    Unreachable {
        /// The socket tried.
        socket: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The daemon refused the connection (a limit, another protocol version).
    #[error("shmbusd at {socket} refused the connection ({code:?}): {message}")]
    Refused {
        /// The socket.
        socket: PathBuf,
        /// The daemon's error code.
        code: ErrorCode,
        /// What went wrong and what to do.
        message: String,
    },
    /// The conversation with the daemon failed.
    #[error("talking to shmbusd at {socket}: {source}")]
    Protocol {
        /// The socket.
        socket: PathBuf,
        /// What failed.
        source: ProtocolError,
    },
    /// The daemon accepted no connection, or did not answer `hello`, within the control
    /// timeout (`SHMBUS_CONTROL_TIMEOUT_MS`, 30 s by default): it is hung or overloaded.
    #[error("shmbusd at {socket} did not answer within {after:?}; it may be hung (`shmbus doctor` looks at it)")]
    TimedOut {
        /// The socket.
        socket: PathBuf,
        /// How long the client waited.
        after: std::time::Duration,
    },
    /// The embedded daemon could not start.
    #[cfg(feature = "embedded")]
    #[error("starting the embedded daemon: {0}")]
    Embedded(#[from] bus_daemon::StartError),
}

/// Why a publisher or subscriber could not be opened. Every variant names the topic.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, OpenError};
/// let bus = Bus::embedded()?;
/// let err = bus.subscriber::<u64>("doc/open-error/missing").open().unwrap_err();
/// assert!(matches!(err, OpenError::NotFound { .. }));
/// assert_eq!(err.topic(), "doc/open-error/missing");
/// bus.publisher::<u64>("doc/open-error").create()?;
/// let err = bus.subscriber::<u32>("doc/open-error").open().unwrap_err();
/// assert!(matches!(err, OpenError::TypeMismatch { .. }), "{err}");
/// # Ok(()) }
/// ```
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The topic does not exist (`open()` never creates one).
    #[error("{message}")]
    NotFound {
        /// The topic.
        topic: String,
        /// The daemon's sentence.
        message: String,
    },
    /// The topic carries another payload type.
    #[error("{message}")]
    TypeMismatch {
        /// The topic.
        topic: String,
        /// Both types and what to do.
        message: String,
    },
    /// The topic exists with other options (`create()`, or explicit options).
    #[error("{message}")]
    GeometryMismatch {
        /// The topic.
        topic: String,
        /// The differing options and what to do.
        message: String,
    },
    /// The topic name breaks the naming rules.
    #[error("{message}")]
    InvalidName {
        /// The topic.
        topic: String,
        /// Which rule, where.
        message: String,
    },
    /// The options are invalid (out of range, inconsistent with the type).
    #[error("{message}")]
    InvalidOptions {
        /// The topic.
        topic: String,
        /// Which option and why.
        message: String,
    },
    /// The daemon's access rules refuse this.
    #[error("permission denied on topic '{topic}': {message}")]
    PermissionDenied {
        /// The topic.
        topic: String,
        /// Who may not do what, and the fix.
        message: String,
    },
    /// The topic's publisher or subscriber table is full.
    #[error("{message}")]
    TableFull {
        /// The topic.
        topic: String,
        /// The limit and what to do.
        message: String,
    },
    /// A per-uid limit (topics, bytes) was reached.
    #[error("{message}")]
    LimitReached {
        /// The topic.
        topic: String,
        /// Which limit, and what to do.
        message: String,
    },
    /// The daemon refused for another reason (it is stopping, or failed internally).
    #[error("shmbusd refused topic '{topic}' ({code:?}): {message}")]
    Refused {
        /// The topic.
        topic: String,
        /// The daemon's error code.
        code: ErrorCode,
        /// What went wrong.
        message: String,
    },
    /// The conversation with the daemon failed.
    #[error("opening topic '{topic}': talking to shmbusd: {source}")]
    Protocol {
        /// The topic.
        topic: String,
        /// What failed.
        source: ProtocolError,
    },
    /// The topic's shared memory could not be mapped, or its header did not validate.
    #[error("mapping the shared memory of topic '{topic}': {source}")]
    Map {
        /// The topic.
        topic: String,
        /// What failed.
        source: MapError,
    },
    /// The segment does not describe the topic the daemon says it is: someone with write
    /// access to it changed its header.
    #[error("the shared memory of topic '{topic}' was tampered with: {message}")]
    Tampered {
        /// The topic.
        topic: String,
        /// What disagrees.
        message: String,
    },
    /// Reconnecting to a restarted daemon failed.
    #[error("opening topic '{topic}': {source}")]
    Connect {
        /// The topic.
        topic: String,
        /// Why the connection failed.
        source: Box<ConnectError>,
    },
}

impl OpenError {
    /// The topic this error is about.
    pub fn topic(&self) -> &str {
        match self {
            OpenError::NotFound { topic, .. }
            | OpenError::TypeMismatch { topic, .. }
            | OpenError::GeometryMismatch { topic, .. }
            | OpenError::InvalidName { topic, .. }
            | OpenError::InvalidOptions { topic, .. }
            | OpenError::PermissionDenied { topic, .. }
            | OpenError::TableFull { topic, .. }
            | OpenError::LimitReached { topic, .. }
            | OpenError::Refused { topic, .. }
            | OpenError::Protocol { topic, .. }
            | OpenError::Map { topic, .. }
            | OpenError::Tampered { topic, .. }
            | OpenError::Connect { topic, .. } => topic,
        }
    }

    pub(crate) fn from_daemon(topic: &str, code: ErrorCode, message: String) -> OpenError {
        let topic = topic.to_string();
        match code {
            ErrorCode::NoSuchTopic => OpenError::NotFound { topic, message },
            ErrorCode::TypeMismatch => OpenError::TypeMismatch { topic, message },
            ErrorCode::GeometryMismatch => OpenError::GeometryMismatch { topic, message },
            ErrorCode::InvalidTopicName => OpenError::InvalidName { topic, message },
            ErrorCode::InvalidOptions => OpenError::InvalidOptions { topic, message },
            ErrorCode::PermissionDenied => OpenError::PermissionDenied { topic, message },
            ErrorCode::TableFull => OpenError::TableFull { topic, message },
            ErrorCode::LimitReached => OpenError::LimitReached { topic, message },
            code => OpenError::Refused {
                topic,
                code,
                message,
            },
        }
    }

    pub(crate) fn from_request(topic: &str, e: RequestError) -> OpenError {
        match e {
            RequestError::Refused { code, message } => OpenError::from_daemon(topic, code, message),
            RequestError::Protocol(source) => OpenError::Protocol {
                topic: topic.to_string(),
                source,
            },
            RequestError::Connect(source) => OpenError::Connect {
                topic: topic.to_string(),
                source: Box::new(source),
            },
            RequestError::TimedOut { after } => OpenError::Protocol {
                topic: topic.to_string(),
                source: ProtocolError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("shmbusd did not answer within {after:?}; it may be hung (`shmbus doctor` looks at it)"),
                )),
            },
        }
    }
}

/// Why a request to the daemon (list, stats, delete, shutdown) failed.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, ErrorCode, RequestError};
/// let bus = Bus::embedded()?;
/// let err: RequestError = bus.delete("doc/request-error/missing").unwrap_err();
/// assert_eq!(err.code(), Some(ErrorCode::NoSuchTopic));
/// # Ok(()) }
/// ```
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The daemon answered with an error.
    #[error("shmbusd refused ({code:?}): {message}")]
    Refused {
        /// The daemon's error code.
        code: ErrorCode,
        /// What went wrong and what to do.
        message: String,
    },
    /// The conversation with the daemon failed.
    #[error("talking to shmbusd: {0}")]
    Protocol(#[from] ProtocolError),
    /// The daemon went away and a new one could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The daemon did not answer within the control timeout (`SHMBUS_CONTROL_TIMEOUT_MS`, 30 s
    /// by default). The connection is dropped (a late answer would be out of step) and the
    /// next call connects again; the ports it carried re-attach as after a daemon restart.
    #[error(
        "shmbusd did not answer within {after:?}; it may be hung (`shmbus doctor` looks at it)"
    )]
    TimedOut {
        /// How long the client waited.
        after: std::time::Duration,
    },
}

impl RequestError {
    /// The daemon's error code, if it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            RequestError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Why a wait set or an async wait could not be set up.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{WaitError, WaitSet};
/// // Making a wait set needs an eventfd; only the open-file limit stands in the way.
/// match WaitSet::new() {
///     Ok(_set) => {}
///     Err(WaitError::TooManyFiles { limit }) => eprintln!("raise `ulimit -n` above {limit}"),
///     Err(e) => return Err(e.into()),
/// }
/// # Ok(()) }
/// ```
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The process has as many open files as its limit allows (after the soft limit was
    /// raised to the hard one): an eventfd could not be made.
    #[error("cannot make an eventfd: the process has reached its open-file limit ({limit}); close files or raise `ulimit -n`")]
    TooManyFiles {
        /// The open-file limit.
        limit: u64,
    },
    /// The topic has no free wake slot (each waiter on descriptors takes one).
    #[error("topic '{topic}' has no free wake slot: {message}")]
    SlotsFull {
        /// The topic.
        topic: String,
        /// The daemon's sentence.
        message: String,
    },
    /// The daemon refused, or could not be reached.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// A system call failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A message longer than the topic's slot.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, SendError, TooLarge};
/// let bus = Bus::embedded()?;
/// let mut publisher = bus.publisher::<[u8]>("doc/too-large").slot_size(8).create()?;
/// let err = publisher.publish(&[0; 9]).unwrap_err();
/// assert_eq!(err, SendError::TooLarge(TooLarge { len: 9, max: 8 }));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("message of {len} bytes does not fit the topic's slot size of {max} bytes")]
pub struct TooLarge {
    /// Bytes offered.
    pub len: usize,
    /// The slot size.
    pub max: usize,
}

macro_rules! send_errors {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $extra:ident,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vm])* $extra,)*
            /// The topic was closed (the daemon is stopping or the topic was deleted).
            #[error("the topic is closed")]
            Closed,
            /// This publisher's entry was taken away (the topic was deleted, or the daemon
            /// gave it up after a restart and it could not attach anew); open a new one.
            #[error("this publisher was detached from the topic; open a new one")]
            Evicted,
            /// The message does not fit the slot.
            #[error("{0}")]
            TooLarge(TooLarge),
            /// The message has the wrong size for the topic's type (raw publishers on typed
            /// topics).
            #[error("message of {len} bytes is not the {expected}-byte type the topic carries")]
            WrongSize {
                /// Bytes offered.
                len: usize,
                /// The type's size.
                expected: usize,
            },
            /// The message was dropped: the daemon repaired this publisher's claim, believing
            /// it dead.
            #[error("this publisher's claim was repaired by the daemon; the message was dropped")]
            Repaired,
            /// The message was dropped: the slot's previous message was never finished within
            /// a second (its publisher hung or died with no daemon), so this sequence was skipped
            /// for the topic to move on.
            #[error("the slot's previous message was never finished; this message was dropped so the topic can move on")]
            Stalled,
            /// The topic's shared state is corrupted (a claim counter out of range).
            #[error("the topic's shared state is corrupted")]
            Corrupted,
        }

        impl $name {
            pub(crate) fn from_core(e: CoreSend) -> Option<$name> {
                Some(match e {
                    CoreSend::Closed => $name::Closed,
                    CoreSend::Evicted => $name::Evicted,
                    CoreSend::TooLarge { len, max } => $name::TooLarge(TooLarge { len, max }),
                    CoreSend::Repaired => $name::Repaired,
                    CoreSend::Stalled => $name::Stalled,
                    CoreSend::Corrupted => $name::Corrupted,
                    _ => return None,
                })
            }
        }

        impl From<TooLarge> for $name {
            fn from(e: TooLarge) -> $name {
                $name::TooLarge(e)
            }
        }
    };
}

send_errors!(
    /// Why a blocking `loan()` or `publish()` failed.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use bus_client::{Bus, SendError};
    /// let bus = Bus::embedded()?;
    /// let mut publisher = bus.publisher::<[u8]>("doc/send-error").slot_size(4).create()?;
    /// assert!(matches!(publisher.publish(b"too long"), Err(SendError::TooLarge(_))));
    /// # Ok(()) }
    /// ```
    SendError {}
);
send_errors!(
    /// Why a `try_loan()` or `try_send()` failed.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use bus_client::{Bus, TrySendError};
    /// let bus = Bus::embedded()?;
    /// let mut publisher = bus.publisher::<u8>("doc/try-send-error").capacity(8).create()?;
    /// let _slow = bus.subscriber::<u8>("doc/try-send-error").open()?;  // never reads
    /// for n in 0..8 {
    ///     publisher.try_send(&n)?;
    /// }
    /// assert_eq!(publisher.try_send(&8), Err(TrySendError::Full));   // lossless: nothing lost
    /// # Ok(()) }
    /// ```
    TrySendError {
        /// Lossless topic: every slot is held by a subscriber that has not caught up. Try
        /// again, or use a waiting send.
        #[error("the ring is full: a subscriber has not released the oldest slot")]
        Full,
    }
);
send_errors!(
    /// Why a `loan_timeout()` or `send_timeout()` failed.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use bus_client::{Bus, SendTimeoutError};
    /// let bus = Bus::embedded()?;
    /// let mut publisher = bus.publisher::<u8>("doc/send-timeout-error").capacity(8).create()?;
    /// let _slow = bus.subscriber::<u8>("doc/send-timeout-error").open()?;  // never reads
    /// for n in 0..8 {
    ///     publisher.try_send(&n)?;
    /// }
    /// let waited = publisher.send_timeout(&8, Duration::from_millis(10));
    /// assert_eq!(waited, Err(SendTimeoutError::Timeout));
    /// # Ok(()) }
    /// ```
    SendTimeoutError {
        /// No slot freed up before the timeout.
        #[error("timed out waiting for a free slot")]
        Timeout,
    }
);

impl From<CoreSend> for SendError {
    fn from(e: CoreSend) -> SendError {
        // A wait without a deadline never times out and never reports `Full`; a ring that
        // did would be corrupted.
        SendError::from_core(e).unwrap_or(SendError::Corrupted)
    }
}

impl From<CoreSend> for TrySendError {
    fn from(e: CoreSend) -> TrySendError {
        match e {
            CoreSend::Full => TrySendError::Full,
            e => TrySendError::from_core(e).unwrap_or(TrySendError::Corrupted),
        }
    }
}

impl From<CoreSend> for SendTimeoutError {
    fn from(e: CoreSend) -> SendTimeoutError {
        match e {
            CoreSend::Timeout | CoreSend::Full => SendTimeoutError::Timeout,
            e => SendTimeoutError::from_core(e).unwrap_or(SendTimeoutError::Corrupted),
        }
    }
}

macro_rules! recv_errors {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $extra:ident,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vm])* $extra,)*
            /// Lossy topic: this subscriber fell behind and `n` messages were overwritten
            /// before it read them. The next receive returns the oldest message still present.
            #[error("fell behind: {0} messages were overwritten before they were read")]
            Lagged(u64),
            /// The topic is closed and every message has been read.
            #[error("the topic is closed and drained")]
            Closed,
            /// This subscriber was detached: it held a lossless topic back too long, the topic
            /// was deleted, or the daemon gave it up after a restart and it could not attach
            /// anew. Drop every sample it still holds (their slots may be reused) and open a
            /// new subscriber, which starts at the newest message.
            #[error("this subscriber was evicted from the topic; drop its samples and open a new one")]
            Evicted,
        }

        impl $name {
            pub(crate) fn from_core(e: CoreRecv) -> Option<$name> {
                Some(match e {
                    CoreRecv::Lagged(n) => $name::Lagged(n),
                    CoreRecv::Closed => $name::Closed,
                    CoreRecv::Evicted => $name::Evicted,
                    _ => return None,
                })
            }
        }
    };
}

recv_errors!(
    /// Why a blocking `recv()` returned no message.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use bus_client::{Bus, RecvError};
    /// let bus = Bus::embedded()?;
    /// let mut subscriber = bus.subscriber::<u64>("doc/recv-error").open_or_create()?;
    /// bus.delete("doc/recv-error")?;                  // closes the topic for its ports
    /// assert!(matches!(subscriber.recv().err(), Some(RecvError::Closed | RecvError::Evicted)));
    /// # Ok(()) }
    /// ```
    RecvError {}
);
recv_errors!(
    /// Why a `try_recv()` returned no message.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use bus_client::{Bus, TryRecvError};
    /// let bus = Bus::embedded()?;
    /// let mut subscriber = bus.subscriber::<u64>("doc/try-recv-error").open_or_create()?;
    /// assert_eq!(subscriber.try_recv().err(), Some(TryRecvError::Empty));
    /// # Ok(()) }
    /// ```
    TryRecvError {
        /// Nothing new yet.
        #[error("no message yet")]
        Empty,
    }
);
recv_errors!(
    /// Why a `recv_timeout()` returned no message.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use bus_client::{Bus, RecvTimeoutError};
    /// let bus = Bus::embedded()?;
    /// let mut subscriber = bus.subscriber::<u64>("doc/recv-timeout-error").open_or_create()?;
    /// let waited = subscriber.recv_timeout(Duration::from_millis(10));
    /// assert_eq!(waited.err(), Some(RecvTimeoutError::Timeout));
    /// # Ok(()) }
    /// ```
    RecvTimeoutError {
        /// Nothing arrived before the timeout.
        #[error("timed out waiting for a message")]
        Timeout,
    }
);

/// The receive errors, with the waiting ones folded in: what the port core returns, turned
/// into the caller's type by the operation.
pub(crate) trait FromRecv: Sized {
    fn from_recv(e: CoreRecv) -> Self;
}

impl FromRecv for RecvError {
    fn from_recv(e: CoreRecv) -> RecvError {
        // No deadline and waiting: `Empty` and `Timeout` cannot end a blocking receive.
        RecvError::from_core(e).unwrap_or(RecvError::Closed)
    }
}

impl FromRecv for TryRecvError {
    fn from_recv(e: CoreRecv) -> TryRecvError {
        match e {
            CoreRecv::Empty | CoreRecv::Timeout => TryRecvError::Empty,
            e => TryRecvError::from_core(e).unwrap_or(TryRecvError::Closed),
        }
    }
}

impl FromRecv for RecvTimeoutError {
    fn from_recv(e: CoreRecv) -> RecvTimeoutError {
        match e {
            CoreRecv::Empty | CoreRecv::Timeout => RecvTimeoutError::Timeout,
            e => RecvTimeoutError::from_core(e).unwrap_or(RecvTimeoutError::Closed),
        }
    }
}

pub(crate) trait FromSend: Sized {
    fn from_send(e: CoreSend) -> Self;
}

impl FromSend for SendError {
    fn from_send(e: CoreSend) -> SendError {
        e.into()
    }
}

impl FromSend for TrySendError {
    fn from_send(e: CoreSend) -> TrySendError {
        e.into()
    }
}

impl FromSend for SendTimeoutError {
    fn from_send(e: CoreSend) -> SendTimeoutError {
        e.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_the_sentence_and_its_sources() {
        let e = ConnectError::Unreachable {
            socket: PathBuf::from("/run/x/shmbusd.sock"),
            source: io::Error::from_raw_os_error(2),
        };
        let debug = format!("{e:?}");
        assert!(
            debug.starts_with(&format!("{e}\n\nCaused by:\n    No such file or directory")),
            "{debug}"
        );
        assert!(debug.contains(EMBEDDED_CALL), "{debug}");
        assert!(!debug.contains("Unreachable {"), "{debug}");

        // A chain two deep: the open error, its connect error, the I/O error.
        let e = OpenError::Connect {
            topic: "robot/odom".into(),
            source: Box::new(e),
        };
        let debug = format!("{e:?}");
        let lines: Vec<&str> = debug.lines().collect();
        assert_eq!(lines[0], e.to_string());
        assert_eq!(lines[2], "Caused by:");
        assert!(
            lines[3].starts_with("    cannot connect to shmbusd"),
            "{debug}"
        );
        assert!(
            lines[4].starts_with("    No such file or directory"),
            "{debug}"
        );

        // No source: the sentence alone.
        let e = RequestError::Refused {
            code: ErrorCode::NoSuchTopic,
            message: "no topic 'x'".into(),
        };
        assert_eq!(format!("{e:?}"), e.to_string());
    }

    #[test]
    fn in_language_names_the_binding_call() {
        let m = "…, or use Bus::embedded() to run one inside this process";
        assert_eq!(
            in_language(m, "shmbus.Bus.embedded()"),
            "…, or use shmbus.Bus.embedded() to run one inside this process"
        );
    }
}
