//! The `iceoryx2` contender (cargo feature `iceoryx2`): eclipse-iceoryx2's shared-memory
//! publish-subscribe, measured exactly like shmbus and the baselines.
//!
//! Configured the way iceoryx2 is used for low latency, and sized like the shmbus contenders:
//!
//! * `ipc::Service`, one node per participant, payload type `[u8]` with a maximum slice length
//!   of the run's payload size (static allocation: one preallocated data segment per publisher);
//! * zero copy: `loan_slice_uninit`, initialised through the safe API (zeroed), filled in place
//!   by the harness, `send`;
//! * busy-polling receivers: `receive()` until it yields a sample, inspected in place. There is
//!   no sleeping receiver (iceoryx2 publish-subscribe does not wake one up by itself; that needs
//!   an additional event service), so the `wakeup` scenario is skipped;
//! * lossless: the service does not overflow (`enable_safe_overflow(false)`) and publishers
//!   retry until delivered, so a full subscriber queue blocks the sender like a full shmbus
//!   ring. The queue depth per subscriber is the shmbus ring capacity for the payload size;
//! * no history, at most 8 subscribers and 3 publishers per service (more if a run needs them).
//!
//! Isolation and cleanup: every run gets its own iceoryx2 configuration whose root path (node
//! and static service files) lies inside the run's private directory and whose file prefix
//! contains the run's tag, so the `/dev/shm` segments of a run are recognisable. The service
//! names contain the tag as well. iceoryx2 removes the services, ports and nodes when the
//! participants drop them, but by design keeps one global management segment
//! (`/dev/shm/<prefix><hash>_node.<version>.global_mgmt`) and its empty `nodes`/`services`
//! directories; the cleanup registered in `prepare` unlinks every `/dev/shm` object with the
//! run's prefix (that segment, and whatever a killed participant left), and the harness removes
//! the run's directory.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::port::update_connections::UpdateConnections;
use iceoryx2::prelude::{
    ipc, set_log_level_from_env_or, BackpressureStrategy, Config, FileName, LogLevel, Node,
    NodeBuilder, NodeName, Path, PortFactory as _, SemanticString, ServiceName, SignalHandlingMode,
};
use iceoryx2::service::port_factory::publish_subscribe::PortFactory;

use crate::transport::{ChildCtx, Contender, Endpoint, Prepared, Role, RunSpec, Scenario, Support};

/// The service flavour: inter-process, single-threaded ports (what iceoryx2 users pick for IPC).
type Ipc = ipc::Service;
type Service = PortFactory<Ipc, [u8], ()>;

/// Subscribers per service (fan-out runs up to 8 receivers).
const MAX_SUBSCRIBERS: usize = 8;
/// Publishers per service (fan-in runs 3 senders).
const MAX_PUBLISHERS: usize = 3;
/// The harness holds one received sample at a time; one spare.
const MAX_BORROWED_SAMPLES: usize = 2;
/// How long `connect` waits for the run's other ports to show up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Where POSIX shared memory objects appear on Linux.
const SHM_DIR: &str = "/dev/shm";

/// The iceoryx2 contender.
pub struct Iceoryx2;

/// The contenders of this module, in report order.
pub fn contenders() -> Vec<Box<dyn Contender>> {
    vec![Box::new(Iceoryx2)]
}

/// Messages a subscriber queue holds before the publisher has to wait: the shmbus ring
/// capacity for the same payload size (about 4 MiB for small messages, 4..=1024 slots).
fn queue_depth(payload: usize) -> usize {
    let fit = (4usize << 20) / payload.max(64);
    fit.clamp(4, 1024).next_power_of_two().min(1024)
}

/// The file-name prefix of everything iceoryx2 creates for this run.
fn prefix(spec: &RunSpec) -> String {
    format!("iox2_{}_", spec.rendezvous.tag)
}

/// iceoryx2's root directory (nodes, static service configs) for this run: inside the run's
/// private directory, which the harness removes.
fn root_dir(spec: &RunSpec) -> PathBuf {
    spec.rendezvous.dir.join("iceoryx2")
}

fn error(context: impl std::fmt::Display, e: impl std::fmt::Debug) -> io::Error {
    io::Error::other(format!("iceoryx2: {context}: {e:?}"))
}

/// The default iceoryx2 configuration, with the run's root path and file prefix.
fn config(spec: &RunSpec) -> io::Result<Config> {
    let root = root_dir(spec);
    let root = root
        .to_str()
        .ok_or_else(|| io::Error::other(format!("iceoryx2: non-UTF-8 root path {root:?}")))?;
    // Like iceoryx2's own default ("/tmp/iceoryx2/"), with a trailing separator.
    let root = format!("{root}/");
    let mut config = Config::default();
    config.global.set_root_path(
        &Path::new(root.as_bytes()).map_err(|e| error(format!("root path {root:?}"), e))?,
    );
    let prefix = prefix(spec);
    config.global.prefix = FileName::new(prefix.as_bytes())
        .map_err(|e| error(format!("file prefix {prefix:?}"), e))?;
    // The private root never holds dead nodes of earlier processes (a killed participant's
    // leftovers are removed by the cleanup registered in `prepare`), so the dead-node scans at
    // node creation and destruction would only race with the run's own participants starting
    // and exiting (and then fall back to the global config, outside the run's root).
    config.global.node.cleanup_dead_nodes_on_creation = false;
    config.global.node.cleanup_dead_nodes_on_destruction = false;
    Ok(config)
}

/// Opens (or, for the first participant, creates) the run's service `topic`.
fn open_service(node: &Node<Ipc>, spec: &RunSpec, topic: &str) -> io::Result<Service> {
    let name = format!("{}/{topic}", spec.rendezvous.tag);
    let service_name =
        ServiceName::new(&name).map_err(|e| error(format!("service name {name:?}"), e))?;
    let subscribers = MAX_SUBSCRIBERS.max(spec.receivers);
    let publishers = MAX_PUBLISHERS.max(spec.senders);
    node.service_builder(&service_name)
        .publish_subscribe::<[u8]>()
        .max_subscribers(subscribers)
        .max_publishers(publishers)
        .max_nodes(subscribers + publishers)
        .history_size(0)
        .subscriber_max_buffer_size(queue_depth(spec.payload_bytes))
        .subscriber_max_borrowed_samples(MAX_BORROWED_SAMPLES)
        .enable_safe_overflow(false)
        .open_or_create()
        .map_err(|e| error(format!("open or create service {name:?}"), e))
}

/// Spins (politely) until `ready` holds, for at most `until`.
fn wait_until(
    what: impl Fn() -> String,
    until: Instant,
    mut ready: impl FnMut() -> bool,
) -> io::Result<()> {
    while !ready() {
        if Instant::now() >= until {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("iceoryx2: timed out waiting for {}", what()),
            ));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// Unlinks the `/dev/shm` objects whose names start with `prefix`.
fn unlink_shm(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(SHM_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(prefix) {
            // Best effort: a name another process already removed is gone either way.
            let _ = nix::sys::mman::shm_unlink(format!("/{name}").as_str());
        }
    }
}

impl Contender for Iceoryx2 {
    fn name(&self) -> &'static str {
        "iceoryx2"
    }

    fn description(&self) -> &'static str {
        "iceoryx2 0.10 publish-subscribe, zero copy (loan_slice_uninit, write in place, send), busy-polling receivers, lossless"
    }

    fn supports(&self, spec: &RunSpec) -> Support {
        if spec.scenario == Scenario::Wakeup {
            return Support::Skip(
                "iceoryx2 publish-subscribe does not wake a sleeping receiver by itself (an event service would be needed); its receivers busy-poll"
                    .into(),
            );
        }
        Support::Yes
    }

    fn prepare(&self, spec: &RunSpec) -> io::Result<Prepared> {
        // Fail early (in the coordinator) on a name iceoryx2 would reject.
        config(spec)?;
        let mut prepared = Prepared::new();
        // The participants create everything and iceoryx2 removes it when they drop their
        // ports and nodes, except its global management segment; that and whatever a killed
        // participant left in /dev/shm goes here. The root directory lives in the run's
        // directory, which the harness removes.
        let prefix = prefix(spec);
        prepared.on_cleanup(move || unlink_shm(&prefix));
        Ok(prepared)
    }

    fn connect(
        &self,
        spec: &RunSpec,
        role: Role,
        _ctx: &mut ChildCtx,
    ) -> io::Result<Box<dyn Endpoint>> {
        // iceoryx2 logs to stderr; keep it to warnings unless IOX2_LOG_LEVEL says otherwise.
        set_log_level_from_env_or(LogLevel::Warn);
        let config = config(spec)?;
        let node_name = format!("busbench-{role}");
        let node = NodeBuilder::new()
            .name(&NodeName::new(&node_name).map_err(|e| error("node name", e))?)
            .config(&config)
            // The harness owns the signals: SIGTERM/SIGINT must end a participant, not set a flag.
            .signal_handling_mode(SignalHandlingMode::Disabled)
            .create::<Ipc>()
            .map_err(|e| error("create node", e))?;

        let publisher = |service: &Service| {
            service
                .publisher_builder()
                .initial_max_slice_len(spec.payload_bytes)
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .create()
                .map_err(|e| error("create publisher", e))
        };
        let subscriber = |service: &Service| {
            service
                .subscriber_builder()
                .buffer_size(queue_depth(spec.payload_bytes))
                .create()
                .map_err(|e| error("create subscriber", e))
        };

        // Ping: publish "a", subscribe "b"; Pong: the reverse; senders publish and receivers
        // subscribe "a". Subscribers are created first, so the peer's first message finds them.
        let (pub_service, sub_service) = match role {
            Role::Ping => (
                Some(open_service(&node, spec, "a")?),
                Some(open_service(&node, spec, "b")?),
            ),
            Role::Pong => (
                Some(open_service(&node, spec, "b")?),
                Some(open_service(&node, spec, "a")?),
            ),
            Role::Sender { .. } => (Some(open_service(&node, spec, "a")?), None),
            Role::Receiver { .. } => (None, Some(open_service(&node, spec, "a")?)),
        };
        let subscriber = sub_service.as_ref().map(subscriber).transpose()?;
        let publisher = pub_service.as_ref().map(publisher).transpose()?;

        // Connections are established lazily (on send/receive). Wait until every peer port of
        // the run is registered, then connect explicitly, so the first measured message does
        // not pay for it and none is sent before all subscribers are attached.
        let until = Instant::now() + CONNECT_TIMEOUT;
        if let (Some(service), Some(port)) = (&pub_service, &publisher) {
            let want = spec.receivers;
            wait_until(
                || {
                    format!(
                        "{want} subscriber(s), {} present",
                        service.dynamic_config().number_of_subscribers()
                    )
                },
                until,
                || service.dynamic_config().number_of_subscribers() >= want,
            )?;
            port.update_connections()
                .map_err(|e| error("publisher: connect to the subscribers", e))?;
        }
        if let (Some(service), Some(port)) = (&sub_service, &subscriber) {
            let want = spec.senders;
            wait_until(
                || {
                    format!(
                        "{want} publisher(s), {} present",
                        service.dynamic_config().number_of_publishers()
                    )
                },
                until,
                || service.dynamic_config().number_of_publishers() >= want,
            )?;
            port.update_connections()
                .map_err(|e| error("subscriber: connect to the publishers", e))?;
        }

        Ok(Box::new(Iceoryx2Endpoint {
            publisher,
            subscriber,
            _pub_service: pub_service,
            _sub_service: sub_service,
            _node: node,
        }))
    }
}

/// One participant's ports. Fields drop in declaration order: ports, services, then the node
/// (which removes the node's files; the last participant's drop removes the services).
struct Iceoryx2Endpoint {
    publisher: Option<Publisher<Ipc, [u8], ()>>,
    subscriber: Option<Subscriber<Ipc, [u8], ()>>,
    _pub_service: Option<Service>,
    _sub_service: Option<Service>,
    _node: Node<Ipc>,
}

fn no_port(what: &str) -> io::Error {
    io::Error::other(format!("this role has no {what}"))
}

impl Endpoint for Iceoryx2Endpoint {
    fn send(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        let publisher = self
            .publisher
            .as_ref()
            .ok_or_else(|| no_port("publisher"))?;
        let sample = publisher
            .loan_slice_uninit(len)
            .map_err(|e| error(format_args!("loan {len} B"), e))?;
        // The loan is `[MaybeUninit<u8>]`: initialise it through the safe API (zeros) so the
        // harness gets a `&mut [u8]`, then let it write the payload in place.
        let mut sample = sample.write_from_fn(|_| 0u8);
        fill(sample.payload_mut());
        sample.send().map_err(|e| error("send", e))?;
        Ok(())
    }

    fn recv(&mut self, inspect: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<usize> {
        let subscriber = self
            .subscriber
            .as_ref()
            .ok_or_else(|| no_port("subscriber"))?;
        let sample = loop {
            match subscriber.receive().map_err(|e| error("receive", e))? {
                Some(sample) => break sample,
                None => std::hint::spin_loop(),
            }
        };
        let payload = sample.payload();
        inspect(payload)?;
        Ok(payload.len())
    }
}
