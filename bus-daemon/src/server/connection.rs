//! One client connection on the event loop: its socket, the frame being received, and the
//! answers not sent yet.
//!
//! - **In.** A [`FrameReader`] takes whatever the socket has, never more than the rest of the
//!   current frame, with the descriptors that come along (at most two per frame: a `Reattach`
//!   hands a topic's two files back; more are set aside and closed where a close that blocks
//!   harms no one, see `disposal`). Every body goes through the
//!   protocol's one strict decoder. The loop reads at most [`READ_BUDGET`] requests from one
//!   connection per turn, so a client that floods cannot starve the others.
//! - **Out.** Answers are queued as whole frames, their descriptors beside them, and written
//!   without blocking as far as the socket takes them; the rest waits for the socket to drain.
//!   A client that does not read its answers cannot hold the loop: once more than
//!   [`MAX_OUTBOUND`] bytes or [`MAX_OUTBOUND_FDS`] descriptors wait for it, it is dropped (and
//!   its ports released).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use bus_proto::fdpass::{self, FrameReader, Received};
use bus_proto::frame;
use bus_proto::protocol::{ErrorCode, ProtocolError, Request, Response};

use super::registry::Caller;

/// Requests read from one connection per turn of the loop before the others get theirs.
pub(super) const READ_BUDGET: usize = 16;

/// Bytes of answers a client may leave unread before it is dropped. The client library asks one
/// thing at a time, so an honest client never has more than one answer (at most one frame)
/// waiting.
pub(super) const MAX_OUTBOUND: usize = 256 * 1024;

/// Descriptors an unread client may have waiting in its answers before it is dropped: bytes
/// alone do not bound them (a small answer can carry two), and each is one of the daemon's.
/// An honest client reads each answer before it asks again, so it never has more than two.
pub(super) const MAX_OUTBOUND_FDS: usize = 8;

/// Descriptors kept with one request (a `Reattach` hands two back).
const MAX_FDS: usize = 2;

/// A frame to send, how much of it went, and the descriptors that ride on its first byte.
struct Outgoing {
    bytes: Vec<u8>,
    sent: usize,
    fds: Vec<OwnedFd>,
}

/// The client left more than [`MAX_OUTBOUND`] bytes of answers unread.
#[derive(Debug)]
pub(super) struct Overflow;

/// How far [`Connection::flush`] got.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Flushed {
    /// Everything queued was sent.
    All,
    /// The socket is full; the rest waits for it to drain.
    Blocked,
}

pub(super) struct Connection {
    pub(super) stream: mio::net::UnixStream,
    pub(super) caller: Caller,
    reader: FrameReader,
    out: VecDeque<Outgoing>,
    out_bytes: usize,
    /// A request of this connection waits (a topic being created or handed back): nothing more
    /// is read from it until that one is answered, so answers keep the order of requests.
    pub(super) busy: bool,
    /// Close once everything queued is sent (after a malformed frame, or a refusal at connect).
    pub(super) closing: bool,
    /// Descriptors that may wait in `out` before the peer is dropped.
    max_fds: usize,
}

impl Connection {
    pub(super) fn new(stream: mio::net::UnixStream, caller: Caller) -> Connection {
        Connection {
            stream,
            caller,
            reader: FrameReader::new(MAX_FDS),
            out: VecDeque::new(),
            out_bytes: 0,
            busy: false,
            closing: false,
            max_fds: MAX_OUTBOUND_FDS,
        }
    }

    /// A watch channel (see `announce`): the daemon only writes to it, and up to `notices`
    /// notices (each with up to two descriptors) may wait in it.
    pub(super) fn channel(
        stream: mio::net::UnixStream,
        caller: Caller,
        notices: usize,
    ) -> Connection {
        Connection {
            reader: FrameReader::new(0),
            max_fds: notices * 2,
            ..Connection::new(stream, caller)
        }
    }

    /// Frames queued and not yet sent whole.
    pub(super) fn queued_frames(&self) -> usize {
        self.out.len()
    }

    /// The next request, if one is whole (see [`FrameReader::read`]).
    pub(super) fn read(&mut self) -> Result<Received<Request>, ProtocolError> {
        self.reader.read(&self.stream)
    }

    /// Descriptors that came beyond what a frame may carry: the caller disposes of them off
    /// the loop where closing them could block (`disposal`).
    pub(super) fn take_discarded(&mut self) -> Vec<OwnedFd> {
        self.reader.take_discarded()
    }

    /// Descriptors queued with answers not sent yet.
    pub(super) fn queued_fds(&self) -> usize {
        self.out.iter().map(|o| o.fds.len()).sum()
    }

    /// The socket and every descriptor the client sent that is still held, for a connection
    /// that is going away (answers not sent are dropped: their descriptors are the daemon's).
    pub(super) fn into_parts(mut self) -> (OwnedFd, Vec<OwnedFd>) {
        let fds = self.reader.take_all_fds();
        (OwnedFd::from(self.stream), fds)
    }

    /// Queue an answer with the descriptors that go beside it. An answer too large for a frame
    /// (which the daemon's pages never make) goes as an internal error instead.
    pub(super) fn queue(&mut self, response: &Response, fds: Vec<OwnedFd>) -> Result<(), Overflow> {
        let (bytes, fds) = match frame::encode_frame(response) {
            Ok(b) => (b, fds),
            Err(e) => {
                tracing::error!(error = %e, "an answer does not fit a frame");
                let fallback = Response::error(
                    ErrorCode::Internal,
                    format!("the answer does not fit a frame: {e}"),
                );
                match frame::encode_frame(&fallback) {
                    Ok(b) => (b, Vec::new()),
                    Err(_) => return Err(Overflow),
                }
            }
        };
        self.out_bytes += bytes.len();
        self.out.push_back(Outgoing {
            bytes,
            sent: 0,
            fds,
        });
        if self.out_bytes > MAX_OUTBOUND || self.queued_fds() > self.max_fds {
            return Err(Overflow);
        }
        Ok(())
    }

    /// Whether answers wait to be sent.
    pub(super) fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Send what the socket takes, without blocking.
    pub(super) fn flush(&mut self) -> io::Result<Flushed> {
        while let Some(o) = self.out.front_mut() {
            let rest = o.bytes.get(o.sent..).unwrap_or_default();
            let raw: Vec<RawFd> = if o.sent == 0 {
                o.fds.iter().map(|f| f.as_raw_fd()).collect()
            } else {
                Vec::new()
            };
            match fdpass::send_some_with_fds(&self.stream, rest, &raw) {
                Ok(n) => {
                    // The descriptors went with the first byte; ours are closed now.
                    o.fds.clear();
                    o.sent += n;
                    self.out_bytes -= n;
                    if o.sent >= o.bytes.len() {
                        self.out.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Blocked),
                Err(e) => return Err(e),
            }
        }
        Ok(Flushed::All)
    }
}
