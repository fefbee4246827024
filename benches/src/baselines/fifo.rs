//! Named pipes (FIFOs) created with `mkfifo` inside the run's private
//! directory (`/tmp/shmbus-bench-<pid>-<run>/`), opened by path by the
//! participants and removed after the run.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use nix::sys::stat::Mode;
use nix::unistd::mkfifo;

use super::wire::{role_mismatch, Rx, StreamRx, StreamTx, Tx, WireEndpoint};
use crate::error::Context;
use crate::transport::{
    ChildCtx, Contender, Endpoint, Prepared, Role, RunSpec, Scenario, Support, Topology,
};

/// The `fifo` baseline.
pub struct Fifo;

fn fifo_paths(spec: &RunSpec) -> Vec<PathBuf> {
    let dir = &spec.rendezvous.dir;
    match spec.topology() {
        Topology::Pair => vec![dir.join("ping2pong.fifo"), dir.join("pong2ping.fifo")],
        Topology::OneToMany { receivers } => (0..receivers)
            .map(|k| dir.join(format!("rx{k}.fifo")))
            .collect(),
        Topology::ManyToOne { .. } => vec![dir.join("fanin.fifo")],
    }
}

fn open_write(path: &Path) -> io::Result<Box<dyn Tx>> {
    // Blocks until the reader has opened its end.
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening FIFO {} for writing", path.display()))?;
    Ok(Box::new(StreamTx(f)))
}

fn open_read(path: &Path, len: usize) -> io::Result<Box<dyn Rx>> {
    // Blocks until a writer has opened its end.
    let f: File =
        File::open(path).with_context(|| format!("opening FIFO {} for reading", path.display()))?;
    Ok(Box::new(StreamRx::new(f, len)))
}

impl Contender for Fifo {
    fn name(&self) -> &'static str {
        "fifo"
    }

    fn description(&self) -> &'static str {
        "named pipes (mkfifo) in a private shmbus temp dir; fixed-size framing"
    }

    fn supports(&self, spec: &RunSpec) -> Support {
        if spec.scenario == Scenario::FanIn && spec.payload_bytes > libc::PIPE_BUF {
            return Support::Skip(format!(
                "several writers on one FIFO are only atomic up to PIPE_BUF ({} B)",
                libc::PIPE_BUF
            ));
        }
        Support::Yes
    }

    fn prepare(&self, spec: &RunSpec) -> io::Result<Prepared> {
        let mut prepared = Prepared::new();
        for path in fifo_paths(spec) {
            mkfifo(&path, Mode::S_IRUSR | Mode::S_IWUSR)
                .with_context(|| format!("mkfifo {}", path.display()))?;
            prepared.on_cleanup(move || {
                if let Err(e) = std::fs::remove_file(&path) {
                    if e.kind() != io::ErrorKind::NotFound {
                        eprintln!("busbench: removing {}: {e}", path.display());
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
        let len = spec.payload_bytes;
        let paths = fifo_paths(spec);
        // Every pair of processes opens its FIFOs in the same order (the
        // ping -> pong direction first), so the blocking opens cannot deadlock.
        let (txs, rxs) = match (spec.topology(), role) {
            (Topology::Pair, Role::Ping) => {
                let tx = open_write(&paths[0])?;
                (vec![tx], vec![open_read(&paths[1], len)?])
            }
            (Topology::Pair, Role::Pong) => {
                let rx = open_read(&paths[0], len)?;
                (vec![open_write(&paths[1])?], vec![rx])
            }
            (Topology::OneToMany { .. }, Role::Sender { .. }) => (
                paths
                    .iter()
                    .map(|p| open_write(p))
                    .collect::<io::Result<Vec<_>>>()?,
                Vec::new(),
            ),
            (Topology::OneToMany { .. }, Role::Receiver { index }) => {
                let path = paths
                    .get(index)
                    .ok_or_else(|| crate::error::other(format!("no FIFO for receiver {index}")))?;
                (Vec::new(), vec![open_read(path, len)?])
            }
            (Topology::ManyToOne { .. }, Role::Sender { .. }) => {
                (vec![open_write(&paths[0])?], Vec::new())
            }
            (Topology::ManyToOne { .. }, Role::Receiver { .. }) => {
                (Vec::new(), vec![open_read(&paths[0], len)?])
            }
            (topology, role) => return Err(role_mismatch(topology, role)),
        };
        Ok(Box::new(WireEndpoint::new(len, txs, rxs)))
    }
}
