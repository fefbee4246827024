//! POSIX message queues. The coordinator creates the queues (names contain
//! `shmbus`, e.g. `/shmbus-bench-<pid>-<run>-q0`) with `mq_msgsize` equal to
//! the payload and always `mq_unlink`s them after the run; participants open
//! them by name. Payloads above `/proc/sys/fs/mqueue/msgsize_max` are
//! skipped (that is the limit an unprivileged user gets).

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::mqueue::{
    mq_attr_member_t, mq_close, mq_open, mq_receive, mq_send, mq_unlink, MQ_OFlag, MqAttr, MqdT,
};
use nix::sys::stat::Mode;

use super::wire::{role_mismatch, Rx, Tx, WireEndpoint};
use crate::error::{other, Context};
use crate::transport::{ChildCtx, Contender, Endpoint, Prepared, Role, RunSpec, Support, Topology};

/// The `mqueue` baseline.
pub struct MessageQueue;

const MSGSIZE_MAX_PATH: &str = "/proc/sys/fs/mqueue/msgsize_max";
const MSG_MAX_PATH: &str = "/proc/sys/fs/mqueue/msg_max";
/// Linux's defaults, used when /proc cannot be read.
const DEFAULT_MSGSIZE_MAX: usize = 8192;
const DEFAULT_MSG_MAX: usize = 10;
/// Queue depth asked for (capped by `msg_max`).
const WANTED_DEPTH: usize = 10;

fn read_limit(path: &str, default: usize) -> usize {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

fn queue_names(spec: &RunSpec) -> Vec<String> {
    let n = match spec.topology() {
        Topology::Pair => 2,
        Topology::OneToMany { receivers } => receivers,
        Topology::ManyToOne { .. } => 1,
    };
    (0..n)
        .map(|k| format!("/{}-q{k}", spec.rendezvous.tag))
        .collect()
}

/// An open queue descriptor, closed on drop.
struct Mq {
    q: ManuallyDrop<MqdT>,
}

impl Mq {
    fn open(name: &str, flags: MQ_OFlag) -> io::Result<Self> {
        let q = mq_open(name, flags | MQ_OFlag::O_CLOEXEC, Mode::empty(), None)
            .with_context(|| format!("mq_open {name}"))?;
        Ok(Self {
            q: ManuallyDrop::new(q),
        })
    }
}

impl Drop for Mq {
    fn drop(&mut self) {
        // SAFETY: `self.q` is taken exactly once, here, and never used again.
        let q = unsafe { ManuallyDrop::take(&mut self.q) };
        let _ = mq_close(q);
    }
}

impl AsFd for Mq {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.q.as_fd()
    }
}

impl Tx for Mq {
    fn write_msg(&mut self, msg: &[u8]) -> io::Result<()> {
        loop {
            match mq_send(&self.q, msg, 0) {
                Ok(()) => return Ok(()),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e).context("mq_send"),
            }
        }
    }
}

impl Rx for Mq {
    fn read_msg(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let mut prio = 0;
        loop {
            match mq_receive(&self.q, buf, &mut prio) {
                Ok(n) => return Ok(Some(n)),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e).context("mq_receive"),
            }
        }
    }
}

impl Contender for MessageQueue {
    fn name(&self) -> &'static str {
        "mqueue"
    }

    fn description(&self) -> &'static str {
        "POSIX message queues (mq_send/mq_receive), one queue per direction/receiver, shared for fan-in"
    }

    fn supports(&self, spec: &RunSpec) -> Support {
        let max = read_limit(MSGSIZE_MAX_PATH, DEFAULT_MSGSIZE_MAX);
        if spec.payload_bytes > max {
            return Support::Skip(format!(
                "{} B exceeds {MSGSIZE_MAX_PATH} ({max} B)",
                spec.payload_bytes
            ));
        }
        Support::Yes
    }

    fn prepare(&self, spec: &RunSpec) -> io::Result<Prepared> {
        let mut prepared = Prepared::new();
        let depth = WANTED_DEPTH
            .min(read_limit(MSG_MAX_PATH, DEFAULT_MSG_MAX))
            .max(1);
        let to_attr = |v: usize| {
            mq_attr_member_t::try_from(v).map_err(|_| other(format!("{v} does not fit mq_attr")))
        };
        let attr = MqAttr::new(0, to_attr(depth)?, to_attr(spec.payload_bytes)?, 0);
        for name in queue_names(spec) {
            let q = mq_open(
                name.as_str(),
                MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDWR | MQ_OFlag::O_CLOEXEC,
                Mode::S_IRUSR | Mode::S_IWUSR,
                Some(&attr),
            )
            .with_context(|| format!("creating message queue {name}"))?;
            let owned = Mq {
                q: ManuallyDrop::new(q),
            };
            drop(owned);
            prepared.on_cleanup(move || {
                if let Err(e) = mq_unlink(name.as_str()) {
                    if e != Errno::ENOENT {
                        eprintln!("busbench: mq_unlink {name}: {e}");
                    }
                }
            });
        }
        Ok(prepared)
    }

    fn connect(
        &self,
        spec: &RunSpec,
        role: Role,
        _ctx: &mut ChildCtx,
    ) -> io::Result<Box<dyn Endpoint>> {
        let names = queue_names(spec);
        let tx = |k: usize| -> io::Result<Box<dyn Tx>> {
            Ok(Box::new(Mq::open(&names[k], MQ_OFlag::O_WRONLY)?))
        };
        let rx = |k: usize| -> io::Result<Box<dyn Rx>> {
            let name = names
                .get(k)
                .ok_or_else(|| other(format!("no message queue #{k}")))?;
            Ok(Box::new(Mq::open(name, MQ_OFlag::O_RDONLY)?))
        };
        let (txs, rxs) = match (spec.topology(), role) {
            (Topology::Pair, Role::Ping) => (vec![tx(0)?], vec![rx(1)?]),
            (Topology::Pair, Role::Pong) => (vec![tx(1)?], vec![rx(0)?]),
            (Topology::OneToMany { receivers }, Role::Sender { .. }) => (
                (0..receivers).map(tx).collect::<io::Result<Vec<_>>>()?,
                Vec::new(),
            ),
            (Topology::OneToMany { .. }, Role::Receiver { index }) => {
                (Vec::new(), vec![rx(index)?])
            }
            (Topology::ManyToOne { .. }, Role::Sender { .. }) => (vec![tx(0)?], Vec::new()),
            (Topology::ManyToOne { .. }, Role::Receiver { .. }) => (Vec::new(), vec![rx(0)?]),
            (topology, role) => return Err(role_mismatch(topology, role)),
        };
        Ok(Box::new(WireEndpoint::new(spec.payload_bytes, txs, rxs)))
    }
}
