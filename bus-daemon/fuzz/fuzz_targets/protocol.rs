//! Arbitrary bytes into the control protocol's decoders: as a frame body
//! (`decode_request`, `decode_response`) and as a stream of frames (`read_frame`). None may
//! panic; a body that decodes must re-encode and decode to the same message; `read_frame` must
//! never read past the frame it returns.

#![no_main]

use std::io::Cursor;

use bus_daemon::protocol::{
    decode_request, decode_response, encode, read_frame, Request, Response,
};
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
    let mut cur = Cursor::new(data);
    loop {
        let before = cur.position() as usize;
        match read_frame::<_, Request>(&mut cur) {
            Ok(_) => {
                let header: [u8; 4] = data[before..before + 4].try_into().expect("a header");
                let used = cur.position() as usize - before;
                assert_eq!(used, 4 + u32::from_le_bytes(header) as usize);
            }
            Err(_) => break,
        }
    }
    let mut cur = Cursor::new(data);
    while read_frame::<_, Response>(&mut cur).is_ok() {}
});
