//! Framing: how one [`Request`] or [`Response`] travels on the control socket.
//!
//! ```text
//! +--------------------+----------------------------------------+
//! | len: u32 LE (4 B)  | body: `len` bytes of UTF-8 JSON         |
//! +--------------------+----------------------------------------+
//!   1 <= len <= MAX_FRAME
//! ```
//!
//! A length of 0 or above [`MAX_FRAME`] is rejected before anything is allocated, so a hostile
//! peer cannot make the daemon reserve the size it claims. Descriptors travel beside a frame as
//! `SCM_RIGHTS` ancillary data ([`crate::fdpass`]).
//!
//! **One decoder.** Every body is decoded by [`Message::decode`]: [`decode_request`] for
//! requests, [`decode_response`] for responses. They are strict (unknown fields and unknown
//! operations are errors, for every message, the field-less ones included), never panic, and
//! are the only way in: the blocking readers here and in `fdpass`, the daemon's non-blocking
//! [`FrameBuf`], the property tests and the fuzz target all call them. Nothing in this module
//! panics on any input; every error is a typed [`ProtocolError`].

use std::io::{self, Read, Write};

use serde::Serialize;

use crate::protocol::{ProtocolError, Request, Response};

/// The largest frame body accepted or sent, in bytes.
pub const MAX_FRAME: usize = 64 * 1024;

/// Size of the length prefix in bytes.
pub const FRAME_HEADER_LEN: usize = 4;

/// A message that travels in frames: it encodes as JSON and decodes strictly.
pub trait Message: Serialize + Sized {
    /// Decode one frame body. Never panics, whatever the bytes.
    fn decode(body: &[u8]) -> Result<Self, ProtocolError>;
}

impl Message for Request {
    fn decode(body: &[u8]) -> Result<Request, ProtocolError> {
        decode_request(body)
    }
}

impl Message for Response {
    fn decode(body: &[u8]) -> Result<Response, ProtocolError> {
        decode_response(body)
    }
}

/// Serializes one message into a frame body (JSON, no length prefix).
///
/// Fails with [`ProtocolError::FrameTooLarge`] if the body exceeds [`MAX_FRAME`].
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtocolError> {
    let body = serde_json::to_vec(msg).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    check_len(body.len())?;
    Ok(body)
}

/// Serializes one message into a complete frame: length prefix and body.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtocolError> {
    let body = encode(msg)?;
    let len = u32::try_from(body.len()).map_err(|_| ProtocolError::FrameTooLarge {
        len: body.len() as u64,
        max: MAX_FRAME,
    })?;
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Decodes a length prefix, checking it is in `1..=MAX_FRAME`.
pub fn parse_frame_len(header: [u8; FRAME_HEADER_LEN]) -> Result<usize, ProtocolError> {
    let len = u32::from_le_bytes(header);
    let len = usize::try_from(len).map_err(|_| ProtocolError::FrameTooLarge {
        len: u64::from(len),
        max: MAX_FRAME,
    })?;
    check_len(len)?;
    Ok(len)
}

fn check_len(len: usize) -> Result<(), ProtocolError> {
    if len == 0 {
        Err(ProtocolError::EmptyFrame)
    } else if len > MAX_FRAME {
        Err(ProtocolError::FrameTooLarge {
            len: len as u64,
            max: MAX_FRAME,
        })
    } else {
        Ok(())
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ProtocolError> {
    check_len(body.len())?;
    serde_json::from_slice(body).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

/// Decodes one frame body into a [`Request`]. Never panics, whatever the bytes.
///
/// Unknown fields are errors for every request, including the field-less ones.
pub fn decode_request(body: &[u8]) -> Result<Request, ProtocolError> {
    let req: Request = decode_json(body)?;
    if matches!(req, Request::List | Request::Status | Request::Shutdown) {
        only_tag(body)?;
    }
    Ok(req)
}

/// Decodes one frame body into a [`Response`]. Never panics, whatever the bytes.
///
/// Unknown fields are errors for every response, including the field-less ones.
pub fn decode_response(body: &[u8]) -> Result<Response, ProtocolError> {
    let resp: Response = decode_json(body)?;
    if matches!(
        resp,
        Response::Detached | Response::Deleted | Response::Stopping | Response::WakerRemoved
    ) {
        only_tag(body)?;
    }
    Ok(resp)
}

/// serde ignores unknown fields of unit variants in internally tagged enums;
/// this check rejects them, so field-less messages are as strict as the rest.
fn only_tag(body: &[u8]) -> Result<(), ProtocolError> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    match map.len() {
        1 => Ok(()),
        _ => Err(ProtocolError::Malformed(format!(
            "unexpected fields {:?}: this message has none",
            map.keys()
                .filter(|k| *k != "op" && *k != "kind")
                .collect::<Vec<_>>()
        ))),
    }
}

/// Writes one message as a frame.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), ProtocolError> {
    let frame = encode_frame(msg)?;
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame and decodes it with [`Message::decode`].
///
/// EOF before the first length byte is [`ProtocolError::Closed`]; EOF later is
/// [`ProtocolError::Truncated`]. The body buffer is allocated only after the
/// length has been checked against [`MAX_FRAME`].
pub fn read_frame<R: Read, M: Message>(r: &mut R) -> Result<M, ProtocolError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    match read_full(r, &mut header)? {
        0 => return Err(ProtocolError::Closed),
        n if n < FRAME_HEADER_LEN => {
            return Err(ProtocolError::Truncated {
                got: n,
                expected: FRAME_HEADER_LEN,
            })
        }
        _ => {}
    }
    let len = parse_frame_len(header)?;
    let mut body = vec![0u8; len];
    let got = read_full(r, &mut body)?;
    if got < len {
        return Err(ProtocolError::Truncated { got, expected: len });
    }
    M::decode(&body)
}

/// Reads until `buf` is full or EOF; returns the bytes read. Retries on EINTR.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = buf.get_mut(filled..).unwrap_or_default();
        match r.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Bytes received from a non-blocking socket, cut into frames as they complete: the daemon's
/// event loop pushes whatever arrived and pops whole messages. The length prefix is checked as
/// soon as its four bytes are in, so a hostile length never makes the buffer grow past
/// [`MAX_FRAME`] plus one read.
#[derive(Debug, Default)]
pub struct FrameBuf {
    buf: Vec<u8>,
}

impl FrameBuf {
    /// An empty buffer.
    pub fn new() -> FrameBuf {
        FrameBuf::default()
    }

    /// Append received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered that do not make a whole frame yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// How many more bytes complete the part of the frame being received: the rest of the
    /// length prefix, or once it is in (and checked), the rest of the body. Zero when a whole
    /// frame is buffered. A reader that never asks the socket for more than this never reads
    /// into the next frame, so the descriptors that arrive belong to this one (see
    /// `fdpass::FrameReader`). A bad length prefix is an error, as in [`FrameBuf::pop`].
    pub fn wanted(&self) -> Result<usize, ProtocolError> {
        match self.buf.first_chunk::<FRAME_HEADER_LEN>() {
            None => Ok(FRAME_HEADER_LEN - self.buf.len()),
            Some(header) => {
                let end = FRAME_HEADER_LEN + parse_frame_len(*header)?;
                Ok(end.saturating_sub(self.buf.len()))
            }
        }
    }

    /// The next whole message, decoded with [`Message::decode`]; `Ok(None)` until one is
    /// complete. A bad length or a malformed body is an error, after which the stream is out
    /// of step and should be dropped.
    pub fn pop<M: Message>(&mut self) -> Result<Option<M>, ProtocolError> {
        let Some(header) = self.buf.first_chunk::<FRAME_HEADER_LEN>() else {
            return Ok(None);
        };
        let len = parse_frame_len(*header)?;
        let end = FRAME_HEADER_LEN + len;
        if self.buf.len() < end {
            return Ok(None);
        }
        let result = M::decode(&self.buf[FRAME_HEADER_LEN..end]);
        self.buf.drain(..end);
        result.map(Some)
    }
}

#[cfg(test)]
mod tests;
