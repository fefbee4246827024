//! Shared plumbing of the kernel-based baselines: message-level send and
//! receive halves, and an [`Endpoint`] built from them.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::{other, Context};
use crate::transport::{Endpoint, Role, RunSpec, Topology};

/// The sending half of a channel: writes whole messages.
pub(crate) trait Tx {
    /// Writes all of `msg` (loops over partial writes).
    fn write_msg(&mut self, msg: &[u8]) -> io::Result<()>;
}

/// The receiving half of a channel: reads whole messages.
pub(crate) trait Rx: AsFd {
    /// Reads one message into `buf` (which is one byte longer than the
    /// payload, so that an oversized datagram shows up as a wrong length).
    /// `Ok(None)` means the peer closed the channel at a message boundary.
    fn read_msg(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>>;
}

/// A byte stream written with `write_all` (pipes, FIFOs, stream sockets).
pub(crate) struct StreamTx<W>(pub W);

impl<W: Write> Tx for StreamTx<W> {
    fn write_msg(&mut self, msg: &[u8]) -> io::Result<()> {
        self.0.write_all(msg)
    }
}

/// A byte stream framed by the fixed payload size of the run: one message is
/// exactly `len` bytes, read with as many `read` calls as it takes.
pub(crate) struct StreamRx<R> {
    inner: R,
    len: usize,
}

impl<R> StreamRx<R> {
    pub(crate) fn new(inner: R, len: usize) -> Self {
        Self { inner, len }
    }
}

impl<R: AsFd> AsFd for StreamRx<R> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl<R: Read + AsFd> Rx for StreamRx<R> {
    fn read_msg(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let want = self.len;
        let buf = buf
            .get_mut(..want)
            .ok_or_else(|| other(format!("receive buffer shorter than {want} bytes")))?;
        let mut got = 0;
        while got < want {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("peer closed the stream mid-message ({got} of {want} bytes)"),
                    ))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Some(want))
    }
}

/// A send half and a receive half of one bidirectional connection.
pub(crate) type Conn = (Box<dyn Tx>, Box<dyn Rx>);

/// An [`Endpoint`] over message channels: a send fans out to every `Tx`
/// (the payload is filled once), a receive takes the next message from any
/// `Rx` (multiplexed with `poll(2)` when there are several).
pub(crate) struct WireEndpoint {
    txs: Vec<Box<dyn Tx>>,
    rxs: Vec<Box<dyn Rx>>,
    tx_buf: Vec<u8>,
    rx_buf: Vec<u8>,
    next_rx: usize,
}

impl WireEndpoint {
    pub(crate) fn new(payload: usize, txs: Vec<Box<dyn Tx>>, rxs: Vec<Box<dyn Rx>>) -> Self {
        Self {
            tx_buf: if txs.is_empty() {
                Vec::new()
            } else {
                vec![0; payload]
            },
            rx_buf: if rxs.is_empty() {
                Vec::new()
            } else {
                vec![0; payload + 1]
            },
            txs,
            rxs,
            next_rx: 0,
        }
    }

    /// Builds the endpoint of `role` from connections: for `Ping`/`Pong`
    /// exactly one connection used both ways; for the hub of a one-to-many
    /// (many-to-one) run one connection per receiver (sender) of which only
    /// the send (receive) halves are kept; for everyone else one connection.
    pub(crate) fn from_conns(spec: &RunSpec, role: Role, conns: Vec<Conn>) -> io::Result<Self> {
        let (txs, rxs): (Vec<_>, Vec<_>) = conns.into_iter().unzip();
        let (txs, rxs) = match (spec.topology(), role) {
            (Topology::Pair, Role::Ping | Role::Pong) => (txs, rxs),
            (Topology::OneToMany { .. }, Role::Sender { .. })
            | (Topology::ManyToOne { .. }, Role::Sender { .. }) => (txs, Vec::new()),
            (Topology::OneToMany { .. }, Role::Receiver { .. })
            | (Topology::ManyToOne { .. }, Role::Receiver { .. }) => (Vec::new(), rxs),
            (topology, role) => return Err(role_mismatch(topology, role)),
        };
        Ok(Self::new(spec.payload_bytes, txs, rxs))
    }

    fn pick_rx(&mut self) -> io::Result<usize> {
        if self.rxs.len() == 1 {
            return Ok(0);
        }
        loop {
            let mut fds: Vec<PollFd<'_>> = self
                .rxs
                .iter()
                .map(|rx| PollFd::new(rx.as_fd(), PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e).context("poll on the receive channels"),
            }
            let n = fds.len();
            for k in 0..n {
                let i = (self.next_rx + k) % n;
                if fds[i].revents().is_some_and(|r| !r.is_empty()) {
                    self.next_rx = (i + 1) % n;
                    return Ok(i);
                }
            }
        }
    }
}

/// The error for a role that does not exist in a topology.
pub(crate) fn role_mismatch(topology: Topology, role: Role) -> io::Error {
    other(format!(
        "role {role} does not exist in topology {topology:?}"
    ))
}

impl Endpoint for WireEndpoint {
    fn send(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        if self.txs.is_empty() {
            return Err(other("this endpoint has no send channel"));
        }
        if self.tx_buf.len() < len {
            self.tx_buf.resize(len, 0);
        }
        let msg = &mut self.tx_buf[..len];
        fill(msg);
        for tx in &mut self.txs {
            tx.write_msg(msg)?;
        }
        Ok(())
    }

    fn recv(&mut self, inspect: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<usize> {
        loop {
            if self.rxs.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "every peer closed its channel before its stop message",
                ));
            }
            let i = self.pick_rx()?;
            match self.rxs[i].read_msg(&mut self.rx_buf)? {
                Some(n) => {
                    inspect(&self.rx_buf[..n])?;
                    return Ok(n);
                }
                None => {
                    // This peer is done; keep serving the others.
                    self.rxs.remove(i);
                    self.next_rx = 0;
                }
            }
        }
    }
}

/// Number of connections the hub of `spec` accepts.
pub(crate) fn hub_connections(spec: &RunSpec) -> usize {
    match spec.topology() {
        Topology::Pair => 1,
        Topology::OneToMany { receivers } => receivers,
        Topology::ManyToOne { senders } => senders,
    }
}
