//! A deterministic, mutation-based fuzz of the control-protocol decoders: the CI stand-in for
//! the cargo-fuzz target in `bus-proto/fuzz` (which needs nightly and is run by hand). Both go
//! through the very decoders production uses (`Message::decode`: `decode_request` and
//! `decode_response`), also through the daemon's non-blocking `FrameBuf`.
//!
//! The proptests in `protocol.rs` feed random bytes and random well-formed requests; most random
//! bytes die at the first JSON byte. This test starts from valid frames of every request and
//! response kind and mutates them (bit flips, byte replacements with JSON-significant bytes,
//! insertions, deletions, splices of two frames, truncations, length-prefix rewrites, numbers
//! swapped for extreme ones), so that it reaches the decoder's deeper paths: every field of every
//! message, numbers out of range, strings with escapes, frames that run into each other.
//!
//! Properties, for every input:
//! * `decode_request`, `decode_response`, `read_frame`, `FrameBuf` and
//!   `fdpass::read_frame_with_fds` return (never panic), and reading a stream of frames
//!   terminates;
//! * a body that decodes re-encodes, and the re-encoding decodes to the same message;
//! * `read_frame` never reads past the frame it returns, and never allocates a body above
//!   `MAX_FRAME` (checked by the length it claims).
//!
//! `SHMBUS_FUZZ_ITERS` sets the number of mutated inputs (default 200 000, a few seconds).

use std::io::{Cursor, Write};
use std::os::unix::net::UnixStream;

use bus_core::layout::{Geometry, Mode, TypeInfo};
use bus_core::ring::StartAt;
use bus_proto::fdpass;
use bus_proto::frame::{
    decode_request, decode_response, encode, encode_frame, read_frame, FrameBuf, MAX_FRAME,
};
use bus_proto::protocol::{
    DaemonStatus, ErrorCode, How, LimitsInfo, ProtocolError, PublisherStat, Request, Response,
    Role, SubscriberStat, TopicInfo, TopicStats, Totals, Usage, WakerStat, PROTOCOL_VERSION,
};

#[path = "support/messages.rs"]
mod messages;
use messages::{every_request, every_response};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that matter to JSON and to the frame header.
const INTERESTING: &[u8] = b"{}[]\":,\\-+.0123456789eEtrufalsn \t\n\x00\xff\x7f\x80\xc3\xa9";
/// Replacement numbers that stress integer parsing.
const NUMBERS: &[&str] = &[
    "-1",
    "0",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "1e400",
    "-0",
    "1.5",
    "99999999999999999999999999999999",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(11) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                input.insert(i, INTERESTING[rng.below(INTERESTING.len())]);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                input.drain(i..i + n);
            }
            4 => {
                // Splice: a prefix of this input, a suffix of another seed.
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            5 => input.truncate(rng.below(len + 1)),
            6 => {
                // Replace the first run of digits with an extreme number.
                if let Some(start) = input.iter().position(u8::is_ascii_digit) {
                    let end = input[start..]
                        .iter()
                        .position(|b| !b.is_ascii_digit())
                        .map_or(input.len(), |e| start + e);
                    let n = NUMBERS[rng.below(NUMBERS.len())].as_bytes();
                    input.splice(start..end, n.iter().copied());
                }
            }
            7 => {
                // Duplicate a chunk (repeated keys, nested repeats).
                if len > 0 {
                    let i = rng.below(len);
                    let n = 1 + rng.below((len - i).min(32));
                    let chunk = input[i..i + n].to_vec();
                    let at = rng.below(input.len() + 1);
                    input.splice(at..at, chunk);
                }
            }
            8 if len >= 4 => {
                // Rewrite a length prefix (bodies start at 4 in framed inputs).
                let v: u32 = match rng.below(5) {
                    0 => 0,
                    1 => (len - 4) as u32 + 1,
                    2 => MAX_FRAME as u32 + 1,
                    3 => u32::MAX,
                    _ => rng.next() as u32 % (MAX_FRAME as u32 + 2),
                };
                input[..4].copy_from_slice(&v.to_le_bytes());
            }
            9 => {
                // Deep nesting at a random place.
                let at = rng.below(len + 1);
                let depth = 1 + rng.below(300);
                let nest: Vec<u8> = std::iter::repeat_n(b'[', depth).collect();
                input.splice(at..at, nest);
            }
            _ => {
                // An escape sequence inside a string.
                let at = rng.below(len + 1);
                let esc: &[u8] = match rng.below(4) {
                    0 => b"\\u0000",
                    1 => b"\\ud800",
                    2 => b"\\uDFFF\\u",
                    _ => b"\\",
                };
                input.splice(at..at, esc.iter().copied());
            }
        }
        if input.len() > 4 * MAX_FRAME {
            input.truncate(4 * MAX_FRAME);
        }
    }
}

/// Every decoder on one body; a decoded message must survive a re-encoding.
fn check_body(body: &[u8]) {
    if let Ok(req) = decode_request(body) {
        let again = encode(&req).expect("a decoded request re-encodes");
        assert_eq!(
            decode_request(&again).expect("and decodes again"),
            req,
            "request round trip from {:?}",
            String::from_utf8_lossy(body)
        );
    }
    if let Ok(resp) = decode_response(body) {
        let again = encode(&resp).expect("a decoded response re-encodes");
        assert_eq!(decode_response(&again).expect("and decodes again"), resp);
    }
}

/// `read_frame` over a stream: terminates, never reads past a frame it returns.
fn check_stream(bytes: &[u8]) {
    // The daemon's non-blocking framer, fed in small pieces: never panics, never grows past a
    // frame, and agrees with the blocking reader on what it decodes.
    let mut buf = FrameBuf::new();
    let mut popped = Vec::new();
    'feed: for chunk in bytes.chunks(97) {
        buf.push(chunk);
        loop {
            match buf.pop::<Request>() {
                Ok(Some(r)) => popped.push(r),
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
        assert!(buf.pending() <= MAX_FRAME + 4 + 97);
    }
    let mut cur = Cursor::new(bytes);
    let mut frames = 0;
    loop {
        let before = cur.position() as usize;
        match read_frame::<_, Request>(&mut cur) {
            Ok(r) => {
                assert_eq!(
                    popped.get(frames),
                    Some(&r),
                    "FrameBuf and read_frame disagree"
                );
                let used = cur.position() as usize - before;
                let claimed = u32::from_le_bytes(
                    bytes[before..before + 4]
                        .try_into()
                        .expect("a header was read"),
                ) as usize;
                assert_eq!(used, 4 + claimed, "read_frame read past its frame");
                frames += 1;
                assert!(frames <= bytes.len(), "read_frame made no progress");
            }
            Err(ProtocolError::FrameTooLarge { len, .. }) => {
                assert!(len > MAX_FRAME as u64);
                break;
            }
            Err(_) => break,
        }
    }
}

fn iterations() -> usize {
    std::env::var("SHMBUS_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

#[test]
fn mutated_frames_never_panic_and_decoded_messages_round_trip() {
    let mut seeds: Vec<Vec<u8>> = every_request()
        .iter()
        .map(|r| encode_frame(r).expect("seed"))
        .collect();
    seeds.extend(
        every_response()
            .iter()
            .map(|r| encode_frame(r).expect("seed")),
    );
    // Two frames back to back.
    let two = [seeds[1].clone(), seeds[6].clone()].concat();
    seeds.push(two);
    let mut rng = Rng(0x5eed_f00d);
    let n = iterations();
    let mut decoded = 0usize;
    for _ in 0..n {
        let mut input = seeds[rng.below(seeds.len())].clone();
        mutate(&mut rng, &seeds, &mut input);
        // As a framed stream, and as a bare body (the header bytes included or skipped).
        check_stream(&input);
        check_body(&input);
        if input.len() > 4 {
            check_body(&input[4..]);
            if decode_request(&input[4..]).is_ok() || decode_response(&input[4..]).is_ok() {
                decoded += 1;
            }
        }
    }
    eprintln!("{n} mutated inputs, {decoded} still decoded to a message");
    assert!(
        decoded > n / 100,
        "the mutations are too destructive to reach past the parser"
    );
}

#[test]
fn mutated_frames_over_a_real_socket_never_panic_or_leak() {
    let seeds: Vec<Vec<u8>> = every_request()
        .iter()
        .map(|r| encode_frame(r).expect("seed"))
        .collect();
    let mut rng = Rng(0xfd_5eed);
    for _ in 0..(iterations() / 100).max(500) {
        let mut input = seeds[rng.below(seeds.len())].clone();
        mutate(&mut rng, &seeds, &mut input);
        let (a, b) = UnixStream::pair().expect("socketpair");
        b.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        // Write from a thread: a frame may be larger than the socket buffer.
        let writer = std::thread::spawn(move || {
            let mut a = a;
            let _ = a.write_all(&input);
        });
        // Read until an error (EOF when the writer is done): must terminate.
        let mut frames = 0;
        while fdpass::read_frame_with_fds::<Request>(&b, 4).is_ok() {
            frames += 1;
            assert!(frames < 1000);
        }
        // Closing our end unblocks a writer stuck on a full buffer (EPIPE).
        drop(b);
        writer.join().expect("writer");
    }
}
