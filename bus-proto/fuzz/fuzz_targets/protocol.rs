//! Arbitrary bytes into the control protocol's decoders, the very ones production uses: as a
//! frame body (`decode_request`, `decode_response`), as a stream of frames (`read_frame`), and
//! through the daemon's non-blocking `FrameBuf`. None may panic; a body that decodes must
//! re-encode and decode to the same message; `read_frame` must never read past the frame it
//! returns, and `FrameBuf` must agree with it.

#![no_main]

use std::io::Cursor;

use bus_proto::frame::{decode_request, decode_response, encode, read_frame, FrameBuf};
use bus_proto::protocol::{Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = decode_request(data) {
        let again = encode(&req).expect("a decoded request re-encodes");
        assert_eq!(decode_request(&again).expect("and decodes"), req);
    }
    if let Ok(resp) = decode_response(data) {
        let again = encode(&resp).expect("a decoded response re-encodes");
        assert_eq!(decode_response(&again).expect("and decodes"), resp);
    }
    let mut buf = FrameBuf::new();
    buf.push(data);
    let mut popped = Vec::new();
    while let Ok(Some(r)) = buf.pop::<Request>() {
        popped.push(r);
    }
    let mut cur = Cursor::new(data);
    let mut n = 0;
    loop {
        let before = cur.position() as usize;
        match read_frame::<_, Request>(&mut cur) {
            Ok(r) => {
                assert_eq!(popped.get(n), Some(&r));
                n += 1;
                let header: [u8; 4] = data[before..before + 4].try_into().expect("a header");
                let used = cur.position() as usize - before;
                assert_eq!(used, 4 + u32::from_le_bytes(header) as usize);
            }
            Err(_) => break,
        }
    }
    assert_eq!(n, popped.len());
    let mut cur = Cursor::new(data);
    while read_frame::<_, Response>(&mut cur).is_ok() {}
});
