//! `SOCK_STREAM` Unix domain sockets. The coordinator binds and listens on a
//! path in the run's private directory; the hub participant accepts one
//! connection per peer, the others connect by path.

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use super::wire::{hub_connections, Conn, StreamRx, StreamTx, WireEndpoint};
use crate::error::Context;
use crate::transport::{ChildCtx, Contender, Endpoint, Prepared, Role, RunSpec, Scenario, Support};

/// The `unix_stream` baseline.
pub struct UnixStreamSocket;

const LISTENER_FD: usize = 0;

pub(crate) fn socket_path(spec: &RunSpec) -> PathBuf {
    spec.rendezvous.dir.join("stream.sock")
}

fn conn(stream: UnixStream, len: usize) -> io::Result<Conn> {
    let tx = stream
        .try_clone()
        .context("duplicating a Unix stream socket")?;
    Ok((Box::new(StreamTx(tx)), Box::new(StreamRx::new(stream, len))))
}

impl Contender for UnixStreamSocket {
    fn name(&self) -> &'static str {
        "unix_stream"
    }

    fn description(&self) -> &'static str {
        "AF_UNIX SOCK_STREAM, one connection per peer; fixed-size framing, write_all/read_exact"
    }

    fn supports(&self, _spec: &RunSpec) -> Support {
        Support::Yes
    }

    fn runs(&self, scenario: Scenario) -> bool {
        // The blocking reference of `asyncwake` (next to tokio's UnixStream).
        Scenario::CLASSIC.contains(&scenario) || scenario == Scenario::AsyncWake
    }

    fn prepare(&self, spec: &RunSpec) -> io::Result<Prepared> {
        let mut prepared = Prepared::new();
        let path = socket_path(spec);
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("binding Unix socket {}", path.display()))?;
        prepared.on_cleanup(move || {
            let _ = std::fs::remove_file(&path);
        });
        prepared.add_fd(listener.into());
        Ok(prepared)
    }

    fn connect(
        &self,
        spec: &RunSpec,
        role: Role,
        ctx: &mut ChildCtx,
    ) -> io::Result<Box<dyn Endpoint>> {
        let len = spec.payload_bytes;
        let conns = if spec.is_hub(role) {
            let listener = UnixListener::from(ctx.take_fd(LISTENER_FD)?);
            (0..hub_connections(spec))
                .map(|_| {
                    let (s, _) = listener.accept().context("accepting a Unix stream peer")?;
                    conn(s, len)
                })
                .collect::<io::Result<Vec<_>>>()?
        } else {
            let path = socket_path(spec);
            let s = UnixStream::connect(&path)
                .with_context(|| format!("connecting to {}", path.display()))?;
            vec![conn(s, len)?]
        };
        Ok(Box::new(WireEndpoint::from_conns(spec, role, conns)?))
    }
}
