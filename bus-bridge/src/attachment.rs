//! The attachment every bridged sample carries: where it came from and where it sits in its
//! stream, so the receiver sees gaps.
//!
//! ```text
//! offset  width  field
//!      0      2  magic "sb"
//!      2      1  version (1)
//!      3      1  flags (0; others are refused)
//!      4      4  publisher: the origin topic's publisher table entry that wrote it
//!      8      8  sequence: the message's sequence in the origin topic
//!     16      8  stream: the exporter's own counter for this topic, from 0, without holes
//!     24      8  time: CLOCK_REALTIME ns when the exporting bridge took it from the ring
//!     32     16  origin: the exporting bridge's Zenoh id
//! ```
//!
//! All little-endian, 48 bytes. `sequence` can jump where the origin topic held messages the
//! exporter did not send (its own imports, lag on a lossy topic); `stream` jumps only where
//! the network lost messages, and restarts at 0 when the exporter does.

/// The encoded length.
pub const LEN: usize = 48;
const MAGIC: [u8; 2] = *b"sb";
const VERSION: u8 = 1;

/// What a bridged sample carries besides its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attachment {
    /// The origin topic's publisher entry.
    pub publisher: u32,
    /// The message's sequence in the origin topic.
    pub sequence: u64,
    /// The exporter's per-topic counter.
    pub stream: u64,
    /// When the exporter took it (ns since the epoch).
    pub time_ns: u64,
    /// The exporting bridge's Zenoh id.
    pub origin: [u8; 16],
}

/// Why an attachment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentError {
    /// Missing altogether (not sent by a shmbus bridge).
    #[error("no attachment (not sent by a shmbus bridge)")]
    Missing,
    /// Wrong length.
    #[error("attachment of {0} bytes, {LEN} expected")]
    Length(usize),
    /// Wrong magic, version or flags.
    #[error(
        "attachment header {0:02x?} is not a shmbus bridge's (magic \"sb\", version 1, flags 0)"
    )]
    Header([u8; 4]),
}

fn u64_at(b: &[u8; LEN], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

impl Attachment {
    /// Encode.
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..2].copy_from_slice(&MAGIC);
        b[2] = VERSION;
        b[4..8].copy_from_slice(&self.publisher.to_le_bytes());
        b[8..16].copy_from_slice(&self.sequence.to_le_bytes());
        b[16..24].copy_from_slice(&self.stream.to_le_bytes());
        b[24..32].copy_from_slice(&self.time_ns.to_le_bytes());
        b[32..48].copy_from_slice(&self.origin);
        b
    }

    /// Decode untrusted bytes.
    pub fn decode(bytes: Option<&[u8]>) -> Result<Attachment, AttachmentError> {
        let bytes = bytes.ok_or(AttachmentError::Missing)?;
        let b: &[u8; LEN] = bytes
            .try_into()
            .map_err(|_| AttachmentError::Length(bytes.len()))?;
        let header = [b[0], b[1], b[2], b[3]];
        if header[0..2] != MAGIC || header[2] != VERSION || header[3] != 0 {
            return Err(AttachmentError::Header(header));
        }
        let mut publisher = [0u8; 4];
        publisher.copy_from_slice(&b[4..8]);
        let mut origin = [0u8; 16];
        origin.copy_from_slice(&b[32..48]);
        Ok(Attachment {
            publisher: u32::from_le_bytes(publisher),
            sequence: u64_at(b, 8),
            stream: u64_at(b, 16),
            time_ns: u64_at(b, 24),
            origin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn attachment_round_trips() {
        let a = Attachment {
            publisher: 3,
            sequence: u64::MAX - 1,
            stream: 42,
            time_ns: 1_700_000_000_000_000_000,
            origin: [7; 16],
        };
        assert_eq!(Attachment::decode(Some(&a.encode())), Ok(a));
    }

    #[test]
    fn attachment_refuses_missing_short_long_and_foreign() {
        let good = Attachment {
            publisher: 0,
            sequence: 0,
            stream: 0,
            time_ns: 0,
            origin: [0; 16],
        }
        .encode();
        assert_eq!(Attachment::decode(None), Err(AttachmentError::Missing));
        assert_eq!(
            Attachment::decode(Some(&good[..47])),
            Err(AttachmentError::Length(47))
        );
        assert_eq!(
            Attachment::decode(Some(&[good.as_slice(), &[0]].concat())),
            Err(AttachmentError::Length(49))
        );
        for (at, v) in [(0, b'x'), (2, 2), (3, 1)] {
            let mut bad = good;
            bad[at] = v;
            assert!(matches!(
                Attachment::decode(Some(&bad)),
                Err(AttachmentError::Header(_))
            ));
        }
    }

    proptest! {
        #[test]
        fn attachment_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            if let Ok(a) = Attachment::decode(Some(&bytes)) {
                prop_assert_eq!(&a.encode()[..], &bytes[..]);
            }
        }
    }
}
