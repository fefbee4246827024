//! Anonymous pipes, created in the coordinator and inherited by the
//! participants: two for ping-pong, one per receiver for fan-out, one shared
//! pipe (atomic writes up to `PIPE_BUF`) for fan-in.

use std::fs::File;
use std::io;

use nix::fcntl::OFlag;
use nix::unistd::pipe2;

use super::wire::{role_mismatch, StreamRx, StreamTx, Tx, WireEndpoint};
use crate::error::Context;
use crate::transport::{ChildCtx, Contender, Endpoint, Prepared, Role, RunSpec, Support, Topology};

/// The `pipe` baseline.
pub struct Pipe;

fn pipe_count(spec: &RunSpec) -> usize {
    match spec.topology() {
        Topology::Pair => 2,
        Topology::OneToMany { receivers } => receivers,
        Topology::ManyToOne { .. } => 1,
    }
}

// Descriptor indices in `Prepared`: pipe k has its read end at 2k and its
// write end at 2k + 1. For ping-pong, pipe 0 carries ping -> pong.
fn read_end(k: usize) -> usize {
    2 * k
}
fn write_end(k: usize) -> usize {
    2 * k + 1
}

impl Contender for Pipe {
    fn name(&self) -> &'static str {
        "pipe"
    }

    fn description(&self) -> &'static str {
        "anonymous pipe(2) pairs inherited across exec; fixed-size framing, write_all/read_exact"
    }

    fn supports(&self, spec: &RunSpec) -> Support {
        if spec.scenario == crate::transport::Scenario::FanIn && spec.payload_bytes > libc::PIPE_BUF
        {
            return Support::Skip(format!(
                "several writers on one pipe are only atomic up to PIPE_BUF ({} B)",
                libc::PIPE_BUF
            ));
        }
        Support::Yes
    }

    fn prepare(&self, spec: &RunSpec) -> io::Result<Prepared> {
        let mut prepared = Prepared::new();
        for _ in 0..pipe_count(spec) {
            let (r, w) = pipe2(OFlag::O_CLOEXEC).context("pipe2")?;
            prepared.add_fd(r);
            prepared.add_fd(w);
        }
        Ok(prepared)
    }

    fn connect(
        &self,
        spec: &RunSpec,
        role: Role,
        ctx: &mut ChildCtx,
    ) -> io::Result<Box<dyn Endpoint>> {
        let len = spec.payload_bytes;
        let tx = |ctx: &mut ChildCtx, k: usize| -> io::Result<Box<dyn Tx>> {
            Ok(Box::new(StreamTx(File::from(ctx.take_fd(write_end(k))?))))
        };
        let rx = |ctx: &mut ChildCtx, k: usize| -> io::Result<Box<dyn super::wire::Rx>> {
            Ok(Box::new(StreamRx::new(
                File::from(ctx.take_fd(read_end(k))?),
                len,
            )))
        };
        let (txs, rxs) = match (spec.topology(), role) {
            (Topology::Pair, Role::Ping) => (vec![tx(ctx, 0)?], vec![rx(ctx, 1)?]),
            (Topology::Pair, Role::Pong) => (vec![tx(ctx, 1)?], vec![rx(ctx, 0)?]),
            (Topology::OneToMany { receivers }, Role::Sender { .. }) => (
                (0..receivers)
                    .map(|k| tx(ctx, k))
                    .collect::<io::Result<Vec<_>>>()?,
                Vec::new(),
            ),
            (Topology::OneToMany { .. }, Role::Receiver { index }) => {
                (Vec::new(), vec![rx(ctx, index)?])
            }
            (Topology::ManyToOne { .. }, Role::Sender { .. }) => (vec![tx(ctx, 0)?], Vec::new()),
            (Topology::ManyToOne { .. }, Role::Receiver { .. }) => (Vec::new(), vec![rx(ctx, 0)?]),
            (topology, role) => return Err(role_mismatch(topology, role)),
        };
        Ok(Box::new(WireEndpoint::new(len, txs, rxs)))
    }
}
