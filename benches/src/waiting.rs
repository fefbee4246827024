//! The issue 12 contenders: waiting on many topics and async receive.
//!
//! * `shmbus_async_ct`, `shmbus_async_mt` (`asyncwake`): the receiver awaits
//!   `Subscriber::recv_async` in a tokio current-thread runtime (`block_on` per message) or in a
//!   task of a multi-thread runtime (the task stamps the receive time and hands a copy to the
//!   harness's thread). The sender is the plain zero-copy publisher of `shmbus_block`.
//! * `shmbus_waitset8`, `shmbus_waitset1` (`waitset8`): the sender rotates over 8 topics (or
//!   uses one), the receiver waits on a `WaitSet` holding all of them and reads the ready one.
//! * `shmbus_waiters0`, `shmbus_waiters1`, `shmbus_waiters8` (`waiters`): the sender publishes
//!   back to back on a lossy topic; an idle process holds 8 subscribers of it, 0, 1 or 8 of them
//!   attached to their own `WaitSet` (a wake slot registered with the daemon) that never waits,
//!   so no slot is ever armed. The idle process learns the end from a small control topic.
//!
//! Each run gets its own embedded daemon, as for the other shmbus contenders.

use std::io;
use std::sync::mpsc;

use bus_client::{Attachment, Bus, Publisher, Subscriber, TryRecvError, WaitSet, WaitStrategy};
use tokio::runtime::{Builder, Runtime};

use crate::payload::{self, Header};
use crate::shmbus::{capacity, prepare_daemon, socket};
use crate::transport::{ChildCtx, Contender, Endpoint, Prepared, Role, RunSpec, Scenario, Support};
use crate::util::monotonic_ns;

/// The issue 12 shmbus contenders, in report order.
pub fn contenders() -> Vec<Box<dyn Contender>> {
    vec![
        Box::new(ShmbusAsync {
            name: "shmbus_async_ct",
            description: "shmbus, receiver awaits recv_async in a tokio current-thread runtime (asyncwake)",
            multi: false,
        }),
        Box::new(ShmbusAsync {
            name: "shmbus_async_mt",
            description: "shmbus, receiver awaits recv_async in a task of a tokio multi-thread runtime (asyncwake)",
            multi: true,
        }),
        Box::new(ShmbusWaitSet {
            name: "shmbus_waitset8",
            description: "shmbus, sends rotate over 8 topics, the receiver waits on a WaitSet of all 8 (waitset8)",
            topics: 8,
        }),
        Box::new(ShmbusWaitSet {
            name: "shmbus_waitset1",
            description: "shmbus, one topic, the receiver waits on a WaitSet holding it (waitset8)",
            topics: 1,
        }),
        Box::new(ShmbusWaiters {
            name: "shmbus_waiters0",
            description: "shmbus, publish cost on a lossy topic with 8 idle subscribers, no wake slot (waiters)",
            waiters: 0,
        }),
        Box::new(ShmbusWaiters {
            name: "shmbus_waiters1",
            description: "shmbus, the same with 1 wake slot registered, never armed (waiters)",
            waiters: 1,
        }),
        Box::new(ShmbusWaiters {
            name: "shmbus_waiters8",
            description: "shmbus, the same with 8 wake slots registered, never armed (waiters)",
            waiters: 8,
        }),
    ]
}

fn bus(spec: &RunSpec) -> io::Result<Bus> {
    Bus::connect_to(socket(spec)).map_err(io::Error::other)
}

fn topic(spec: &RunSpec, name: &str) -> String {
    format!("bench/{}/{name}", spec.rendezvous.tag)
}

/// A lossless byte topic sized for the run, as the other shmbus contenders open it.
fn publisher(bus: &Bus, spec: &RunSpec, name: &str) -> io::Result<Publisher<[u8]>> {
    bus.publisher::<[u8]>(&topic(spec, name))
        .capacity(capacity(spec.payload_bytes))
        .slot_size(spec.payload_bytes.max(8) as u32)
        .busy_poll()
        .open_or_create()
        .map_err(io::Error::other)
}

fn subscriber(
    bus: &Bus,
    spec: &RunSpec,
    name: &str,
    wait: WaitStrategy,
) -> io::Result<Subscriber<[u8]>> {
    bus.subscriber::<[u8]>(&topic(spec, name))
        .capacity(capacity(spec.payload_bytes))
        .slot_size(spec.payload_bytes.max(8) as u32)
        .wait(wait)
        .open_or_create()
        .map_err(io::Error::other)
}

fn loan_send(
    publisher: &mut Publisher<[u8]>,
    len: usize,
    fill: &mut dyn FnMut(&mut [u8]),
) -> io::Result<()> {
    let mut slot = publisher.loan().map_err(io::Error::other)?;
    slot.set_len(len).map_err(io::Error::other)?;
    fill(&mut slot);
    slot.send();
    Ok(())
}

fn only(spec: &RunSpec, scenario: Scenario) -> Support {
    if spec.scenario == scenario {
        Support::Yes
    } else {
        Support::Skip(format!("measured in {scenario} only"))
    }
}

fn not_here(role: Role, what: &str) -> io::Error {
    io::Error::other(format!("{role} has no {what} in this contender"))
}

/// A sending endpoint: zero-copy sends rotating over `publishers` (one for a single topic).
pub(crate) struct Rotating {
    _bus: Bus,
    publishers: Vec<Publisher<[u8]>>,
    next: usize,
}

impl Endpoint for Rotating {
    fn send(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        let i = self.next;
        self.next = (i + 1) % self.publishers.len();
        loan_send(&mut self.publishers[i], len, fill)
    }

    fn recv(&mut self, _inspect: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<usize> {
        Err(io::Error::other("a sender does not receive"))
    }
}

// ---------------------------------------------------------------------------------------------
// Async receivers, shared with the tokio UnixStream baseline.

/// A message received on a runtime thread: its bytes and when it was received.
pub(crate) type Handed = io::Result<(Vec<u8>, u64)>;

/// A tokio runtime of either flavour, IO and timers enabled (an async receive of shmbus also
/// arms a timer for its periodic check). Worker threads run wherever the process is pinned (the
/// harness pins the participant; threads inherit its affinity).
pub(crate) fn runtime(multi: bool) -> io::Result<Runtime> {
    if multi {
        Builder::new_multi_thread().enable_all().build()
    } else {
        Builder::new_current_thread().enable_all().build()
    }
}

/// The receiving side of a multi-thread contender: the task receives and stamps, the
/// harness's thread takes the copies from `rx`.
pub(crate) struct Handoff {
    rx: mpsc::Receiver<Handed>,
    last_rx: Option<u64>,
}

impl Handoff {
    /// The sending end goes to the task, which stamps each message when its receive returns.
    pub(crate) fn channel() -> (mpsc::Sender<Handed>, Handoff) {
        let (tx, rx) = mpsc::channel();
        (tx, Handoff { rx, last_rx: None })
    }

    pub(crate) fn recv(
        &mut self,
        inspect: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<usize> {
        let (bytes, at) = self
            .rx
            .recv()
            .map_err(|_| io::Error::other("the receiving task ended"))??;
        self.last_rx = Some(at);
        inspect(&bytes)?;
        Ok(bytes.len())
    }

    pub(crate) fn last_rx(&self) -> Option<u64> {
        self.last_rx
    }
}

/// `shmbus_async_ct` / `shmbus_async_mt`.
struct ShmbusAsync {
    name: &'static str,
    description: &'static str,
    multi: bool,
}

enum AsyncRx {
    Current(Box<Subscriber<[u8]>>),
    Multi(Handoff),
}

/// The receiver of `shmbus_async_*`. Field order: the runtime (and its task, which owns the
/// subscriber in the multi-thread flavour) goes before the connection.
struct ShmbusAsyncRx {
    rx: AsyncRx,
    rt: Runtime,
    _bus: Bus,
}

impl Contender for ShmbusAsync {
    fn name(&self) -> &'static str {
        self.name
    }

    fn description(&self) -> &'static str {
        self.description
    }

    fn runs(&self, scenario: Scenario) -> bool {
        scenario == Scenario::AsyncWake
    }

    fn supports(&self, spec: &RunSpec) -> Support {
        only(spec, Scenario::AsyncWake)
    }

    fn prepare(&self, spec: &RunSpec) -> io::Result<Prepared> {
        prepare_daemon(spec)
    }

    fn connect(
        &self,
        spec: &RunSpec,
        role: Role,
        _ctx: &mut ChildCtx,
    ) -> io::Result<Box<dyn Endpoint>> {
        let bus = bus(spec)?;
        match role {
            Role::Sender { .. } => {
                let publishers = vec![publisher(&bus, spec, "a")?];
                Ok(Box::new(Rotating {
                    _bus: bus,
                    publishers,
                    next: 0,
                }))
            }
            Role::Receiver { .. } => {
                let rt = runtime(self.multi)?;
                let mut sub = subscriber(&bus, spec, "a", WaitStrategy::Block)?;
                {
                    // Register the wake slot now, not in the first measured wait.
                    let _guard = rt.enter();
                    sub.prepare_async().map_err(io::Error::other)?;
                }
                let rx = if self.multi {
                    let (tx, handoff) = Handoff::channel();
                    rt.spawn(async move {
                        loop {
                            let msg = match sub.recv_async().await {
                                Ok(sample) => {
                                    let at = monotonic_ns();
                                    Ok((sample.bytes().to_vec(), at))
                                }
                                Err(e) => Err(io::Error::other(e)),
                            };
                            let failed = msg.is_err();
                            if tx.send(msg).is_err() || failed {
                                break;
                            }
                        }
                    });
                    AsyncRx::Multi(handoff)
                } else {
                    AsyncRx::Current(Box::new(sub))
                };
                Ok(Box::new(ShmbusAsyncRx { rx, rt, _bus: bus }))
            }
            _ => Err(not_here(role, "part")),
        }
    }
}

impl Endpoint for ShmbusAsyncRx {
    fn send(&mut self, _len: usize, _fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        Err(io::Error::other("an async receiver does not send"))
    }

    fn recv(&mut self, inspect: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<usize> {
        match &mut self.rx {
            AsyncRx::Current(sub) => self.rt.block_on(async {
                let sample = sub.recv_async().await.map_err(io::Error::other)?;
                inspect(sample.bytes())?;
                Ok(sample.bytes().len())
            }),
            AsyncRx::Multi(handoff) => handoff.recv(inspect),
        }
    }

    fn rx_time_ns(&self) -> Option<u64> {
        match &self.rx {
            AsyncRx::Current(_) => None,
            AsyncRx::Multi(handoff) => handoff.last_rx(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// WaitSet over many topics.

/// `shmbus_waitset8` / `shmbus_waitset1`.
struct ShmbusWaitSet {
    name: &'static str,
    description: &'static str,
    topics: usize,
}

/// The receiver: one wait set over every topic; `pending` holds the subscribers the last wait
/// reported ready and that were not read yet. Order across topics is not defined, so when
/// several hold messages (the stop message follows the last one without a pause; a receiver
/// that fell behind) it reads the topic the sender's rotation comes to next, `expect`, first:
/// it tries that one before the reported ones and before sleeping (one `try_recv`, empty
/// whenever the receiver keeps up).
struct WaitSetRx {
    set: WaitSet,
    // Attachments before subscribers: detaching needs nothing of the port.
    attachments: Vec<Attachment>,
    subs: Vec<Subscriber<[u8]>>,
    pending: Vec<usize>,
    expect: usize,
    _bus: Bus,
}

impl Contender for ShmbusWaitSet {
    fn name(&self) -> &'static str {
        self.name
    }

    fn description(&self) -> &'static str {
        self.description
    }

    fn runs(&self, scenario: Scenario) -> bool {
        scenario == Scenario::WaitSet8
    }

    fn supports(&self, spec: &RunSpec) -> Support {
        only(spec, Scenario::WaitSet8)
    }

    fn prepare(&self, spec: &RunSpec) -> io::Result<Prepared> {
        prepare_daemon(spec)
    }

    fn connect(
        &self,
        spec: &RunSpec,
        role: Role,
        _ctx: &mut ChildCtx,
    ) -> io::Result<Box<dyn Endpoint>> {
        let bus = bus(spec)?;
        let names: Vec<String> = (0..self.topics).map(|i| format!("t{i}")).collect();
        match role {
            Role::Sender { .. } => {
                let publishers = names
                    .iter()
                    .map(|n| publisher(&bus, spec, n))
                    .collect::<io::Result<Vec<_>>>()?;
                Ok(Box::new(Rotating {
                    _bus: bus,
                    publishers,
                    next: 0,
                }))
            }
            Role::Receiver { .. } => {
                let subs = names
                    .iter()
                    .map(|n| subscriber(&bus, spec, n, WaitStrategy::Block))
                    .collect::<io::Result<Vec<_>>>()?;
                let mut set = WaitSet::new().map_err(io::Error::other)?;
                let attachments = subs
                    .iter()
                    .map(|s| set.attach_subscriber(s).map_err(io::Error::other))
                    .collect::<io::Result<Vec<_>>>()?;
                Ok(Box::new(WaitSetRx {
                    set,
                    attachments,
                    subs,
                    pending: Vec::new(),
                    expect: 0,
                    _bus: bus,
                }))
            }
            _ => Err(not_here(role, "part")),
        }
    }
}

impl Endpoint for WaitSetRx {
    fn send(&mut self, _len: usize, _fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        Err(io::Error::other("a wait-set receiver does not send"))
    }

    fn recv(&mut self, inspect: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<usize> {
        let topics = self.subs.len();
        loop {
            let expect = self.expect;
            match self.subs[expect].try_recv() {
                Ok(sample) => {
                    self.expect = (expect + 1) % topics;
                    inspect(sample.bytes())?;
                    return Ok(sample.bytes().len());
                }
                Err(TryRecvError::Empty) => {}
                Err(e) => return Err(io::Error::other(e)),
            }
            while !self.pending.is_empty() {
                let at = self
                    .pending
                    .iter()
                    .position(|&i| i == self.expect)
                    .unwrap_or(self.pending.len() - 1);
                let i = self.pending[at];
                match self.subs[i].try_recv() {
                    Ok(sample) => {
                        // Keep `i` pending: it may hold more; it leaves once it is empty.
                        self.expect = (i + 1) % topics;
                        inspect(sample.bytes())?;
                        return Ok(sample.bytes().len());
                    }
                    Err(TryRecvError::Empty) => {
                        self.pending.swap_remove(at);
                    }
                    Err(e) => return Err(io::Error::other(e)),
                }
            }
            let ready = self.set.wait(None).map_err(io::Error::other)?;
            for id in ready {
                if let Some(i) = self.attachments.iter().position(|a| a.id() == *id) {
                    self.pending.push(i);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Publish cost with registered, unarmed waiters.

/// `shmbus_waiters{0,1,8}`.
struct ShmbusWaiters {
    name: &'static str,
    description: &'static str,
    waiters: usize,
}

/// Idle subscribers of the data topic per run (whatever the number of waiters).
const IDLE_SUBSCRIBERS: usize = 8;

/// The sender: lossy data topic, and the control topic that carries the stop message.
struct WaitersTx {
    data: Publisher<[u8]>,
    control: Publisher<[u8]>,
    len: usize,
    _bus: Bus,
}

/// The idle process. Field order: wait sets (and their registrations) before the ports.
struct WaitersRx {
    _sets: Vec<(WaitSet, Attachment)>,
    _idle: Vec<Subscriber<[u8]>>,
    control: Subscriber<[u8]>,
    _bus: Bus,
}

impl ShmbusWaiters {
    fn data_publisher(bus: &Bus, spec: &RunSpec) -> io::Result<Publisher<[u8]>> {
        bus.publisher::<[u8]>(&topic(spec, "data"))
            .capacity(capacity(spec.payload_bytes))
            .slot_size(spec.payload_bytes.max(8) as u32)
            .lossy()
            .busy_poll()
            .open_or_create()
            .map_err(io::Error::other)
    }

    fn data_subscriber(bus: &Bus, spec: &RunSpec) -> io::Result<Subscriber<[u8]>> {
        bus.subscriber::<[u8]>(&topic(spec, "data"))
            .capacity(capacity(spec.payload_bytes))
            .slot_size(spec.payload_bytes.max(8) as u32)
            .lossy()
            .busy_poll()
            .open_or_create()
            .map_err(io::Error::other)
    }
}

impl Contender for ShmbusWaiters {
    fn name(&self) -> &'static str {
        self.name
    }

    fn description(&self) -> &'static str {
        self.description
    }

    fn runs(&self, scenario: Scenario) -> bool {
        scenario == Scenario::Waiters
    }

    fn supports(&self, spec: &RunSpec) -> Support {
        only(spec, Scenario::Waiters)
    }

    fn prepare(&self, spec: &RunSpec) -> io::Result<Prepared> {
        prepare_daemon(spec)
    }

    fn connect(
        &self,
        spec: &RunSpec,
        role: Role,
        _ctx: &mut ChildCtx,
    ) -> io::Result<Box<dyn Endpoint>> {
        let bus = bus(spec)?;
        match role {
            Role::Sender { .. } => Ok(Box::new(WaitersTx {
                data: Self::data_publisher(&bus, spec)?,
                control: publisher(&bus, spec, "control")?,
                len: spec.payload_bytes,
                _bus: bus,
            })),
            Role::Receiver { .. } => {
                let control = subscriber(&bus, spec, "control", WaitStrategy::Block)?;
                let idle = (0..IDLE_SUBSCRIBERS)
                    .map(|_| Self::data_subscriber(&bus, spec))
                    .collect::<io::Result<Vec<_>>>()?;
                // One wait set per waiter, as independent waiters would have; attaching
                // registers the wake slot, and no wait ever arms it.
                let sets = idle
                    .iter()
                    .take(self.waiters)
                    .map(|s| {
                        let mut set = WaitSet::new().map_err(io::Error::other)?;
                        let a = set.attach_subscriber(s).map_err(io::Error::other)?;
                        Ok((set, a))
                    })
                    .collect::<io::Result<Vec<_>>>()?;
                Ok(Box::new(WaitersRx {
                    _sets: sets,
                    _idle: idle,
                    control,
                    _bus: bus,
                }))
            }
            _ => Err(not_here(role, "part")),
        }
    }
}

impl Endpoint for WaitersTx {
    fn send(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        let mut stop = false;
        let mut slot = self.data.loan().map_err(io::Error::other)?;
        slot.set_len(len).map_err(io::Error::other)?;
        fill(&mut slot);
        if let Ok(word) = payload::check(&slot, self.len) {
            stop = Header::decode(word).stop;
        }
        slot.send();
        if stop {
            // The idle process does not read the flood; tell it on the control topic.
            loan_send(&mut self.control, len, &mut |buf| {
                let stop = Header {
                    seq: 1,
                    stop: true,
                    ..Header::default()
                };
                payload::fill(buf, stop.encode());
            })?;
        }
        Ok(())
    }

    fn recv(&mut self, _inspect: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<usize> {
        Err(io::Error::other("a sender does not receive"))
    }
}

impl Endpoint for WaitersRx {
    fn send(&mut self, _len: usize, _fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        Err(io::Error::other("the idle process does not send"))
    }

    /// Only the control topic: sleeps in the futex until the stop message.
    fn recv(&mut self, inspect: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<usize> {
        let sample = self.control.recv().map_err(io::Error::other)?;
        inspect(sample.bytes())?;
        Ok(sample.bytes().len())
    }
}
