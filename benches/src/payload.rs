//! Message contents: what the harness writes into every message and checks
//! on receipt.
//!
//! Every message starts with a 64-bit *header word* (little endian):
//!
//! | bits   | meaning                                        |
//! |--------|------------------------------------------------|
//! | 0..48  | sequence number, per sender, starting at 1     |
//! | 48..56 | sender index (fan-in)                          |
//! | 62     | warm-up message (not measured)                 |
//! | 63     | stop: the sender is done; carries no data      |
//!
//! The sender writes the header word at the start of **every 64-byte line**
//! of the payload and into the last 8 bytes, so that every message really
//! costs a write of every cache line. The receiver checks that the first and
//! the last word are identical and that the length is as expected, which
//! catches torn, short or stale messages. Paced scenarios additionally store
//! the send time (`CLOCK_MONOTONIC`, ns) at offset 8.

use std::io;

use crate::error::invalid_data;

/// Smallest payload the harness sends: the header word.
pub const MIN_PAYLOAD: usize = 8;
/// Where the send timestamp is stored.
pub const STAMP_OFFSET: usize = 8;
/// Smallest payload that can carry a timestamp without it being overwritten
/// by the trailing header word.
pub const MIN_STAMPED_PAYLOAD: usize = 24;
/// Cache-line stride of the header copies.
pub const LINE: usize = 64;

const SEQ_MASK: u64 = (1 << 48) - 1;
const SENDER_SHIFT: u32 = 48;
const FLAG_WARMUP: u64 = 1 << 62;
const FLAG_STOP: u64 = 1 << 63;

/// The decoded header word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// Per-sender sequence number (1-based, 48 bits).
    pub seq: u64,
    /// Index of the sending process (fan-in), 0..=255.
    pub sender: u8,
    /// A warm-up message: delivered and checked but not measured.
    pub warmup: bool,
    /// The sender's last message.
    pub stop: bool,
}

impl Header {
    /// Packs the header into its word.
    pub fn encode(self) -> u64 {
        (self.seq & SEQ_MASK)
            | (u64::from(self.sender) << SENDER_SHIFT)
            | if self.warmup { FLAG_WARMUP } else { 0 }
            | if self.stop { FLAG_STOP } else { 0 }
    }

    /// Unpacks a header word.
    pub fn decode(word: u64) -> Self {
        Self {
            seq: word & SEQ_MASK,
            sender: ((word >> SENDER_SHIFT) & 0xff) as u8,
            warmup: word & FLAG_WARMUP != 0,
            stop: word & FLAG_STOP != 0,
        }
    }
}

#[inline]
fn put(buf: &mut [u8], off: usize, word: u64) {
    buf[off..off + 8].copy_from_slice(&word.to_le_bytes());
}

#[inline]
fn get(buf: &[u8], off: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&buf[off..off + 8]);
    u64::from_le_bytes(w)
}

/// Writes `word` at the start of every 64-byte line of `buf` and into its
/// last 8 bytes. Buffers shorter than 8 bytes are left untouched (the
/// harness never sends them).
#[inline]
pub fn fill(buf: &mut [u8], word: u64) {
    let len = buf.len();
    if len < MIN_PAYLOAD {
        return;
    }
    let mut off = 0;
    while off + 8 <= len {
        put(buf, off, word);
        off += LINE;
    }
    put(buf, len - 8, word);
}

/// Stores a timestamp at [`STAMP_OFFSET`]; `buf` must be at least
/// [`MIN_STAMPED_PAYLOAD`] long (shorter buffers are left untouched).
#[inline]
pub fn stamp(buf: &mut [u8], ns: u64) {
    if buf.len() >= MIN_STAMPED_PAYLOAD {
        put(buf, STAMP_OFFSET, ns);
    }
}

/// Reads the timestamp written by [`stamp`].
pub fn read_stamp(buf: &[u8]) -> io::Result<u64> {
    if buf.len() < MIN_STAMPED_PAYLOAD {
        return Err(invalid_data(format!(
            "{}-byte message is too short for a timestamp",
            buf.len()
        )));
    }
    Ok(get(buf, STAMP_OFFSET))
}

/// Checks a received message and returns its header word.
pub fn check(buf: &[u8], expected_len: usize) -> io::Result<u64> {
    if buf.len() != expected_len {
        return Err(invalid_data(format!(
            "received {} bytes, expected {expected_len}",
            buf.len()
        )));
    }
    if buf.len() < MIN_PAYLOAD {
        return Err(invalid_data(format!(
            "{}-byte message has no header",
            buf.len()
        )));
    }
    let first = get(buf, 0);
    let last = get(buf, buf.len() - 8);
    if first != last {
        return Err(invalid_data(format!(
            "torn message: first word {first:#x} != last word {last:#x}"
        )));
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip() {
        for h in [
            Header {
                seq: 1,
                sender: 0,
                warmup: true,
                stop: false,
            },
            Header {
                seq: SEQ_MASK,
                sender: 255,
                warmup: false,
                stop: true,
            },
            Header {
                seq: 12345,
                sender: 2,
                warmup: false,
                stop: false,
            },
        ] {
            assert_eq!(Header::decode(h.encode()), h);
        }
    }

    #[test]
    fn fill_then_check_for_all_sizes() {
        for len in [8usize, 16, 24, 64, 65, 100, 1024, 65536] {
            let mut buf = vec![0xaau8; len];
            let word = Header {
                seq: 7,
                sender: 1,
                warmup: false,
                stop: false,
            }
            .encode();
            fill(&mut buf, word);
            assert_eq!(check(&buf, len).unwrap(), word);
            // Every line carries the word.
            for off in (0..len.saturating_sub(7)).step_by(LINE) {
                assert_eq!(get(&buf, off), word, "len {len} off {off}");
            }
            assert!(check(&buf, len + 1).is_err());
        }
    }

    #[test]
    fn torn_message_is_detected() {
        let mut buf = vec![0u8; 128];
        fill(&mut buf, 5);
        put(&mut buf, 120, 6);
        assert!(check(&buf, 128).is_err());
    }

    #[test]
    fn stamp_survives_fill_order() {
        let mut buf = vec![0u8; 64];
        fill(&mut buf, 9);
        stamp(&mut buf, 123_456);
        assert_eq!(check(&buf, 64).unwrap(), 9);
        assert_eq!(read_stamp(&buf).unwrap(), 123_456);
        assert!(read_stamp(&buf[..16]).is_err());
    }
}
