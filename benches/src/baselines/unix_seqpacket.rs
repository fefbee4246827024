//! `SOCK_SEQPACKET` Unix domain sockets: connection-oriented, message
//! boundaries preserved, one `send`/`recv` per message. A message must fit
//! into the socket's send buffer; larger payloads are reported as skipped.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::socket::{
    accept, bind, connect, listen, recv, send, socket, socketpair, AddressFamily, Backlog,
    MsgFlags, SockFlag, SockType, UnixAddr,
};

use super::wire::{hub_connections, Conn, Rx, Tx, WireEndpoint};
use crate::error::{other, Context};
use crate::transport::{ChildCtx, Contender, Endpoint, Prepared, Role, RunSpec, Support};

/// The `unix_seqpacket` baseline.
pub struct UnixSeqpacket;

const LISTENER_FD: usize = 0;

fn socket_path(spec: &RunSpec) -> PathBuf {
    spec.rendezvous.dir.join("seqpacket.sock")
}

fn new_socket() -> io::Result<OwnedFd> {
    socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("socket(AF_UNIX, SOCK_SEQPACKET)")
}

/// One end of a seqpacket connection (the same descriptor serves both
/// directions, shared through an `Rc`).
struct Packet(std::rc::Rc<OwnedFd>);

impl Tx for Packet {
    fn write_msg(&mut self, msg: &[u8]) -> io::Result<()> {
        loop {
            match send(self.0.as_raw_fd(), msg, MsgFlags::MSG_NOSIGNAL) {
                Ok(n) if n == msg.len() => return Ok(()),
                Ok(n) => {
                    return Err(other(format!(
                        "seqpacket send wrote {n} of {} bytes",
                        msg.len()
                    )))
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e).context("seqpacket send"),
            }
        }
    }
}

impl AsFd for Packet {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Rx for Packet {
    fn read_msg(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match recv(self.0.as_raw_fd(), buf, MsgFlags::empty()) {
                // We never send empty packets, so 0 is the peer's shutdown.
                Ok(0) => return Ok(None),
                Ok(n) => return Ok(Some(n)),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e).context("seqpacket recv"),
            }
        }
    }
}

fn conn(fd: OwnedFd) -> Conn {
    let fd = std::rc::Rc::new(fd);
    (Box::new(Packet(fd.clone())), Box::new(Packet(fd)))
}

/// Whether one message of `len` bytes can be sent at all on a fresh
/// seqpacket socket (the limit is the send buffer size, `EMSGSIZE` above).
fn probe_message_size(len: usize) -> io::Result<Option<String>> {
    let (a, _b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .context("socketpair(AF_UNIX, SOCK_SEQPACKET)")?;
    let msg = vec![0u8; len];
    match send(a.as_raw_fd(), &msg, MsgFlags::MSG_NOSIGNAL) {
        Ok(_) | Err(Errno::EAGAIN) => Ok(None),
        Err(Errno::EMSGSIZE) => Ok(Some(format!(
            "{len} B exceeds the SOCK_SEQPACKET message limit (send buffer; EMSGSIZE)"
        ))),
        Err(e) => Err(e).context("probing the seqpacket message size"),
    }
}

impl Contender for UnixSeqpacket {
    fn name(&self) -> &'static str {
        "unix_seqpacket"
    }

    fn description(&self) -> &'static str {
        "AF_UNIX SOCK_SEQPACKET, one connection per peer; one send/recv per message"
    }

    fn supports(&self, spec: &RunSpec) -> Support {
        match probe_message_size(spec.payload_bytes) {
            Ok(None) => Support::Yes,
            Ok(Some(reason)) => Support::Skip(reason),
            Err(e) => Support::Skip(format!("cannot probe the seqpacket limit: {e}")),
        }
    }

    fn prepare(&self, spec: &RunSpec) -> io::Result<Prepared> {
        let mut prepared = Prepared::new();
        let path = socket_path(spec);
        let fd = new_socket()?;
        let addr =
            UnixAddr::new(&path).with_context(|| format!("socket path {}", path.display()))?;
        bind(fd.as_raw_fd(), &addr).with_context(|| format!("binding {}", path.display()))?;
        prepared.on_cleanup(move || {
            let _ = std::fs::remove_file(&path);
        });
        listen(&fd, Backlog::new(64).context("listen backlog")?).context("listen")?;
        prepared.add_fd(fd);
        Ok(prepared)
    }

    fn connect(
        &self,
        spec: &RunSpec,
        role: Role,
        ctx: &mut ChildCtx,
    ) -> io::Result<Box<dyn Endpoint>> {
        let conns = if spec.is_hub(role) {
            let listener = ctx.take_fd(LISTENER_FD)?;
            (0..hub_connections(spec))
                .map(|_| {
                    let raw = accept(listener.as_raw_fd()).context("accepting a seqpacket peer")?;
                    // SAFETY: accept(2) just returned this descriptor; nothing
                    // else owns it, and it is wrapped exactly once.
                    Ok(conn(unsafe { OwnedFd::from_raw_fd(raw) }))
                })
                .collect::<io::Result<Vec<_>>>()?
        } else {
            let path = socket_path(spec);
            let fd = new_socket()?;
            let addr =
                UnixAddr::new(&path).with_context(|| format!("socket path {}", path.display()))?;
            connect(fd.as_raw_fd(), &addr)
                .with_context(|| format!("connecting to {}", path.display()))?;
            vec![conn(fd)]
        };
        Ok(Box::new(WireEndpoint::from_conns(spec, role, conns)?))
    }
}
