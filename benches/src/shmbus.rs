//! The shmbus contenders: the bus itself, measured exactly like the baselines.
//!
//! * `shmbus_busy`: zero copy (`loan`, fill the slot in place, `send`), busy-polling receivers.
//! * `shmbus_copy`: the same, but the payload is built in a private buffer and `publish`ed
//!   (one copy), to show what the loan saves.
//! * `shmbus_block`: zero copy, receivers sleep on the futex (the one that runs `wakeup`).
//!
//! Each run gets its own daemon, embedded in the coordinator, on a socket in the run's private
//! directory; the participants connect to it. Topics are lossless byte topics whose slot size is
//! the run's payload size.

use std::io;

use bus_client::{Bus, Publisher, Subscriber, WaitStrategy};

use crate::transport::{ChildCtx, Contender, Endpoint, Prepared, Role, RunSpec, Scenario, Support};

/// One shmbus flavour.
pub struct Shmbus {
    name: &'static str,
    description: &'static str,
    loan: bool,
    receiver_wait: WaitStrategy,
}

/// The shmbus contenders, in report order.
pub fn contenders() -> Vec<Box<dyn Contender>> {
    vec![
        Box::new(Shmbus {
            name: "shmbus_busy",
            description: "shmbus, zero copy (loan, write in place, send), busy-polling receivers",
            loan: true,
            receiver_wait: WaitStrategy::BusyPoll,
        }),
        Box::new(Shmbus {
            name: "shmbus_copy",
            description: "shmbus, payload built in a private buffer and published (one copy), busy-polling receivers",
            loan: false,
            receiver_wait: WaitStrategy::BusyPoll,
        }),
        Box::new(Shmbus {
            name: "shmbus_block",
            description: "shmbus, zero copy, receivers sleep on the futex",
            loan: true,
            receiver_wait: WaitStrategy::Block,
        }),
    ]
}

pub(crate) fn socket(spec: &RunSpec) -> std::path::PathBuf {
    spec.rendezvous.dir.join("shmbus.sock")
}

/// Ring capacity for a run: a ring of about 256 KiB (it fits a core's L2 cache), between 2 and
/// 1024 slots. A FIFO ring cycles through every slot, so for large messages a small ring keeps
/// the working set hot, as a pool that reuses its freshest chunk does.
pub(crate) fn capacity(payload: usize) -> u32 {
    let fit = (256usize << 10) / payload.max(64);
    let pow2 = if fit.is_power_of_two() {
        fit
    } else {
        fit.next_power_of_two() / 2
    };
    pow2.clamp(2, 1024) as u32
}

/// Starts the run's daemon, embedded in the coordinator, on [`socket`]; it stops when the run
/// is over.
pub(crate) fn prepare_daemon(spec: &RunSpec) -> io::Result<Prepared> {
    let mut prepared = Prepared::new();
    let bus = Bus::embedded_at(socket(spec)).map_err(io::Error::other)?;
    prepared.set_info(format!(
        "{} slots of {} B",
        capacity(spec.payload_bytes),
        spec.payload_bytes
    ));
    prepared.on_cleanup(move || drop(bus));
    Ok(prepared)
}

impl Contender for Shmbus {
    fn name(&self) -> &'static str {
        self.name
    }

    fn description(&self) -> &'static str {
        self.description
    }

    fn supports(&self, spec: &RunSpec) -> Support {
        let blocking = self.receiver_wait == WaitStrategy::Block;
        if spec.scenario == Scenario::Wakeup && !blocking {
            return Support::Skip("busy-polling receivers never sleep".into());
        }
        if blocking && spec.scenario != Scenario::Wakeup && spec.payload_bytes > 64 {
            return Support::Skip("the blocking flavour is measured at 64 B".into());
        }
        Support::Yes
    }

    fn runs(&self, scenario: Scenario) -> bool {
        // The blocking flavour is the reference of the issue 12 wake-up scenarios.
        Scenario::CLASSIC.contains(&scenario)
            || (self.receiver_wait == WaitStrategy::Block
                && matches!(scenario, Scenario::AsyncWake | Scenario::WaitSet8))
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
        let bus = Bus::connect_to(socket(spec)).map_err(io::Error::other)?;
        let slot = spec.payload_bytes.max(8) as u32;
        let cap = capacity(spec.payload_bytes);
        let tag = &spec.rendezvous.tag;
        let publisher = |topic: &str| {
            bus.publisher::<[u8]>(topic)
                .capacity(cap)
                .slot_size(slot)
                .busy_poll()
                .open_or_create()
                .map_err(io::Error::other)
        };
        let subscriber = |topic: &str| {
            bus.subscriber::<[u8]>(topic)
                .capacity(cap)
                .slot_size(slot)
                .wait(self.receiver_wait)
                .open_or_create()
                .map_err(io::Error::other)
        };
        let (a, b) = (format!("bench/{tag}/a"), format!("bench/{tag}/b"));
        let (publisher, subscriber) = match role {
            // Open the subscriber first: the peer's first message must find it attached.
            Role::Ping => {
                let s = subscriber(&b)?;
                (Some(publisher(&a)?), Some(s))
            }
            Role::Pong => {
                let s = subscriber(&a)?;
                (Some(publisher(&b)?), Some(s))
            }
            Role::Sender { .. } => (Some(publisher(&a)?), None),
            Role::Receiver { .. } => (None, Some(subscriber(&a)?)),
        };
        Ok(Box::new(ShmbusEndpoint {
            _bus: bus,
            publisher,
            subscriber,
            loan: self.loan,
            scratch: Vec::new(),
        }))
    }
}

struct ShmbusEndpoint {
    _bus: Bus,
    publisher: Option<Publisher<[u8]>>,
    subscriber: Option<Subscriber<[u8]>>,
    loan: bool,
    scratch: Vec<u8>,
}

fn no_port(what: &str) -> io::Error {
    io::Error::other(format!("this role has no {what}"))
}

impl Endpoint for ShmbusEndpoint {
    fn send(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        let publisher = self
            .publisher
            .as_mut()
            .ok_or_else(|| no_port("publisher"))?;
        if self.loan {
            let mut slot = publisher.loan().map_err(io::Error::other)?;
            slot.set_len(len).map_err(io::Error::other)?;
            fill(&mut slot);
            slot.send();
        } else {
            self.scratch.resize(len, 0);
            fill(&mut self.scratch);
            publisher.publish(&self.scratch).map_err(io::Error::other)?;
        }
        Ok(())
    }

    fn recv(&mut self, inspect: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<usize> {
        let subscriber = self
            .subscriber
            .as_mut()
            .ok_or_else(|| no_port("subscriber"))?;
        let sample = subscriber.recv().map_err(io::Error::other)?;
        inspect(sample.bytes())?;
        Ok(sample.bytes().len())
    }
}
