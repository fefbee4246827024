//! TCP over the loopback interface (127.0.0.1) with `TCP_NODELAY` on every
//! connection. The coordinator listens on an ephemeral port and passes the
//! listener to the hub participant and the port to everyone.

use std::io;
use std::net::{Ipv4Addr, TcpListener, TcpStream};

use super::wire::{hub_connections, Conn, StreamRx, StreamTx, WireEndpoint};
use crate::error::{other, Context};
use crate::transport::{ChildCtx, Contender, Endpoint, Prepared, Role, RunSpec, Support};

/// The `tcp_loopback` baseline.
pub struct TcpLoopback;

const LISTENER_FD: usize = 0;

fn conn(stream: TcpStream, len: usize) -> io::Result<Conn> {
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    let tx = stream.try_clone().context("duplicating a TCP socket")?;
    Ok((Box::new(StreamTx(tx)), Box::new(StreamRx::new(stream, len))))
}

impl Contender for TcpLoopback {
    fn name(&self) -> &'static str {
        "tcp_loopback"
    }

    fn description(&self) -> &'static str {
        "TCP over 127.0.0.1 with TCP_NODELAY, one connection per peer; fixed-size framing"
    }

    fn supports(&self, _spec: &RunSpec) -> Support {
        Support::Yes
    }

    fn prepare(&self, _spec: &RunSpec) -> io::Result<Prepared> {
        let mut prepared = Prepared::new();
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
        let port = listener.local_addr().context("getsockname")?.port();
        prepared.set_info(port.to_string());
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
            let listener = TcpListener::from(ctx.take_fd(LISTENER_FD)?);
            (0..hub_connections(spec))
                .map(|_| {
                    let (s, _) = listener.accept().context("accepting a TCP peer")?;
                    conn(s, len)
                })
                .collect::<io::Result<Vec<_>>>()?
        } else {
            let port: u16 = ctx.info().parse().map_err(|_| {
                other(format!(
                    "bad TCP port {:?} from the coordinator",
                    ctx.info()
                ))
            })?;
            let s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
            vec![conn(s, len)?]
        };
        Ok(Box::new(WireEndpoint::from_conns(spec, role, conns)?))
    }
}
