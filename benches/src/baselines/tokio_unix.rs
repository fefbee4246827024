//! tokio's `UnixStream` (`asyncwake` only): the reference of the async wake-up goal of issue
//! 12. The sender is the plain blocking `unix_stream` sender (`write_all` of the fixed-size
//! frame on the connection the hub accepted); the receiver reads the frame through tokio's
//! reactor (`readable().await` then `try_read`, what `read_exact` does) in a current-thread
//! runtime (`block_on` per message) or in a task of a multi-thread runtime that stamps the
//! receive time and hands a copy over, exactly like `shmbus_async_ct` / `shmbus_async_mt`.

use std::io;

use tokio::net::UnixStream;
use tokio::runtime::Runtime;

use super::unix_stream::{socket_path, UnixStreamSocket};
use crate::error::Context;
use crate::transport::{ChildCtx, Contender, Endpoint, Prepared, Role, RunSpec, Scenario, Support};
use crate::util::monotonic_ns;
use crate::waiting::{runtime, Handoff};

/// `tokio_unix_ct` / `tokio_unix_mt`.
pub struct TokioUnix {
    name: &'static str,
    description: &'static str,
    multi: bool,
}

/// Both flavours.
pub fn contenders() -> [TokioUnix; 2] {
    [
        TokioUnix {
            name: "tokio_unix_ct",
            description: "tokio UnixStream receiver in a current-thread runtime, blocking unix_stream sender (asyncwake)",
            multi: false,
        },
        TokioUnix {
            name: "tokio_unix_mt",
            description: "tokio UnixStream receiver in a task of a multi-thread runtime, blocking unix_stream sender (asyncwake)",
            multi: true,
        },
    ]
}

/// Reads exactly one frame through the reactor.
async fn read_frame(stream: &UnixStream, buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        stream.readable().await?;
        match stream.try_read(&mut buf[got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

enum Rx {
    Current { stream: UnixStream, buf: Vec<u8> },
    Multi(Handoff),
}

/// The receiver. Field order: the stream (or the task owning it) goes before its runtime.
struct TokioUnixRx {
    rx: Rx,
    rt: Runtime,
}

impl Contender for TokioUnix {
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
        if spec.scenario == Scenario::AsyncWake {
            Support::Yes
        } else {
            Support::Skip("measured in asyncwake only".into())
        }
    }

    fn prepare(&self, spec: &RunSpec) -> io::Result<Prepared> {
        UnixStreamSocket.prepare(spec)
    }

    fn connect(
        &self,
        spec: &RunSpec,
        role: Role,
        ctx: &mut ChildCtx,
    ) -> io::Result<Box<dyn Endpoint>> {
        if spec.is_hub(role) {
            // The sender accepts, as for unix_stream.
            return UnixStreamSocket.connect(spec, role, ctx);
        }
        let path = socket_path(spec);
        let std_stream = std::os::unix::net::UnixStream::connect(&path)
            .with_context(|| format!("connecting to {}", path.display()))?;
        std_stream
            .set_nonblocking(true)
            .context("making the socket non-blocking")?;
        let rt = runtime(self.multi)?;
        let stream = {
            let _guard = rt.enter();
            UnixStream::from_std(std_stream).context("registering the socket with tokio")?
        };
        let len = spec.payload_bytes;
        let rx = if self.multi {
            let (tx, handoff) = Handoff::channel();
            rt.spawn(async move {
                let mut buf = vec![0u8; len];
                loop {
                    let msg = match read_frame(&stream, &mut buf).await {
                        Ok(()) => {
                            let at = monotonic_ns();
                            Ok((buf.clone(), at))
                        }
                        Err(e) => Err(e),
                    };
                    let failed = msg.is_err();
                    if tx.send(msg).is_err() || failed {
                        break;
                    }
                }
            });
            Rx::Multi(handoff)
        } else {
            Rx::Current {
                stream,
                buf: vec![0u8; len],
            }
        };
        Ok(Box::new(TokioUnixRx { rx, rt }))
    }
}

impl Endpoint for TokioUnixRx {
    fn send(&mut self, _len: usize, _fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        Err(io::Error::other("an async receiver does not send"))
    }

    fn recv(&mut self, inspect: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<usize> {
        match &mut self.rx {
            Rx::Current { stream, buf } => self.rt.block_on(async {
                read_frame(stream, buf).await?;
                inspect(buf)?;
                Ok(buf.len())
            }),
            Rx::Multi(handoff) => handoff.recv(inspect),
        }
    }

    fn rx_time_ns(&self) -> Option<u64> {
        match &self.rx {
            Rx::Current { .. } => None,
            Rx::Multi(handoff) => handoff.last_rx(),
        }
    }
}
