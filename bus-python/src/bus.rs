//! `shmbus.Bus`: connect (default socket, a given socket, embedded daemon) and open ports.

use bus_client::{Bus as RustBus, Geometry, Mode, StartAt, TopicOptions, TypeInfo, WaitStrategy};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::IntoPy;
use crate::publisher::Publisher;
use crate::subscriber::Subscriber;

/// A connection to the shmbus daemon. Ports keep it alive.
#[pyclass(module = "shmbus", frozen)]
pub(crate) struct Bus {
    bus: RustBus,
}

/// How a port is opened.
enum How {
    Open,
    Create,
    OpenOrCreate,
}

fn how(how: &str) -> PyResult<How> {
    match how {
        "open" => Ok(How::Open),
        "create" => Ok(How::Create),
        "open_or_create" => Ok(How::OpenOrCreate),
        other => Err(PyValueError::new_err(format!(
            "how={other:?}: expected 'open', 'create' or 'open_or_create'"
        ))),
    }
}

pub(crate) fn wait_strategy(wait: &str) -> PyResult<WaitStrategy> {
    match wait {
        "adaptive" => Ok(WaitStrategy::default()),
        "busy" => Ok(WaitStrategy::BusyPoll),
        "block" => Ok(WaitStrategy::Block),
        other => Err(PyValueError::new_err(format!(
            "wait={other:?}: expected 'adaptive', 'busy' or 'block'"
        ))),
    }
}

/// `type=(name, size, align)`, or None for a byte topic.
fn type_info(t: Option<(String, u32, u32)>) -> PyResult<Option<TypeInfo>> {
    let Some((name, size, align)) = t else {
        return Ok(None);
    };
    if align == 0 || !align.is_power_of_two() {
        return Err(PyValueError::new_err(format!(
            "type alignment {align} is not a power of two"
        )));
    }
    Ok(Some(TypeInfo { name, size, align }))
}

fn geometry(
    t: &Option<TypeInfo>,
    slot_size: Option<u32>,
    capacity: Option<u32>,
    lossy: bool,
) -> Geometry {
    let mut options = TopicOptions::default();
    options.slot_size = slot_size;
    options.capacity = capacity;
    options.mode = if lossy { Mode::Lossy } else { Mode::Lossless };
    options.geometry_for(t.clone().unwrap_or_else(TypeInfo::bytes))
}

#[pymethods]
impl Bus {
    /// Connect to the daemon at `socket`, or at the default socket ($SHMBUS_SOCKET, else
    /// $XDG_RUNTIME_DIR/shmbus/shmbusd.sock, else /tmp/shmbus-$UID/shmbusd.sock).
    #[staticmethod]
    #[pyo3(signature = (socket=None))]
    fn connect(py: Python<'_>, socket: Option<std::path::PathBuf>) -> PyResult<Bus> {
        let bus = py
            .detach(|| match socket {
                Some(s) => RustBus::connect_to(s),
                None => RustBus::connect(),
            })
            .map_err(IntoPy::into_py)?;
        Ok(Bus { bus })
    }

    /// Start a daemon inside this process (on a private socket, `socket_path`) and connect to
    /// it. Other processes reach it with SHMBUS_SOCKET=bus.socket_path. It stops when this
    /// bus and its ports are gone. Its socket and side files are removed when the process
    /// exits, and when SIGTERM, SIGINT or SIGHUP ends it (unless the application handles
    /// that signal itself; see `shmbus._cleanup`).
    #[staticmethod]
    fn embedded(py: Python<'_>) -> PyResult<Bus> {
        let bus = py.detach(RustBus::embedded).map_err(IntoPy::into_py)?;
        py.import("shmbus._cleanup")?.call_method0("install")?;
        Ok(Bus { bus })
    }

    /// The daemon's socket path.
    #[getter]
    fn socket_path(&self) -> String {
        self.bus.socket_path().to_string_lossy().into_owned()
    }

    /// A publisher on `topic`. `how`: 'create' (default: create the topic with these
    /// options, or attach if it exists with exactly them), 'open' (it must exist), or
    /// 'open_or_create'. `type=(name, size, align)` makes a typed topic (messages of exactly
    /// `size` bytes); None is a byte topic (messages up to `slot_size`, default 4096).
    /// `wait`: 'adaptive' (default), 'busy' or 'block', for waiting on a full lossless ring.
    #[pyo3(signature = (topic, slot_size=None, capacity=None, lossy=false, *, r#type=None, how="create", wait="adaptive"))]
    #[allow(clippy::too_many_arguments)]
    fn publisher(
        &self,
        py: Python<'_>,
        topic: &str,
        slot_size: Option<u32>,
        capacity: Option<u32>,
        lossy: bool,
        r#type: Option<(String, u32, u32)>,
        how: &str,
        wait: &str,
    ) -> PyResult<Publisher> {
        let t = type_info(r#type)?;
        let verb = self::how(how)?;
        let builder = self.bus.raw_publisher(topic).wait(wait_strategy(wait)?);
        let spec = geometry(&t, slot_size, capacity, lossy);
        let port = py
            .detach(move || match verb {
                How::Open => builder.open(t.unwrap_or_else(TypeInfo::bytes)),
                How::Create => builder.create(spec),
                How::OpenOrCreate => builder.open_or_create(spec),
            })
            .map_err(IntoPy::into_py)?;
        Ok(Publisher::new(port))
    }

    /// A subscriber on `topic`. `how`: 'open' (default: the topic must exist; with no `type`
    /// any type is accepted and read as bytes), 'create' or 'open_or_create' (with the
    /// options, for a subscriber that starts before its publisher). `replay=True` starts
    /// with what the ring still holds instead of the next message. `wait`: 'adaptive'
    /// (default), 'busy' (lowest latency, a whole core) or 'block'.
    #[pyo3(signature = (topic, *, r#type=None, how="open", slot_size=None, capacity=None, lossy=false, replay=false, wait="adaptive"))]
    #[allow(clippy::too_many_arguments)]
    fn subscriber(
        &self,
        py: Python<'_>,
        topic: &str,
        r#type: Option<(String, u32, u32)>,
        how: &str,
        slot_size: Option<u32>,
        capacity: Option<u32>,
        lossy: bool,
        replay: bool,
        wait: &str,
    ) -> PyResult<Subscriber> {
        let t = type_info(r#type)?;
        let verb = self::how(how)?;
        let start = if replay {
            StartAt::Oldest
        } else {
            StartAt::Latest
        };
        let strategy = wait_strategy(wait)?;
        let builder = self
            .bus
            .raw_subscriber(topic)
            .wait(strategy)
            .start_at(start);
        let spec = geometry(&t, slot_size, capacity, lossy);
        let port = py
            .detach(move || match (verb, t) {
                (How::Open, None) => builder.open(),
                (How::Open, Some(t)) => builder.open_as(t),
                (How::Create, _) => builder.create(spec),
                (How::OpenOrCreate, _) => builder.open_or_create(spec),
            })
            .map_err(IntoPy::into_py)?;
        Ok(Subscriber::new(port, strategy != WaitStrategy::Block))
    }

    /// Delete a topic: its subscribers drain what is left, then see it closed.
    fn delete(&self, py: Python<'_>, topic: &str) -> PyResult<()> {
        py.detach(|| self.bus.delete(topic))
            .map_err(IntoPy::into_py)
    }

    /// The names of the topics this process may see.
    fn topics(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let topics = py.detach(|| self.bus.list()).map_err(IntoPy::into_py)?;
        Ok(topics.into_iter().map(|t| t.name).collect())
    }

    fn __repr__(&self) -> String {
        format!("shmbus.Bus(socket_path={:?})", self.bus.socket_path())
    }
}

/// Remove the socket and side files of every embedded daemon this process started (the
/// daemons keep serving the ports attached; no other process can reach them any more). For
/// `shmbus._cleanup`, when the process is about to end.
#[pyfunction(name = "_remove_embedded_files")]
pub(crate) fn remove_embedded_files(py: Python<'_>) {
    py.detach(RustBus::remove_embedded_files);
}
