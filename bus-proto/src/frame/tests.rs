use super::*;
use crate::protocol::{
    check_version, describe_mismatch, DaemonStatus, ErrorCode, How, LimitsInfo, PublisherStat,
    Role, SubscriberStat, TopicInfo, TopicStats, Totals, Usage, WakerStat, PROTOCOL_VERSION,
};
use bus_core::layout::{Geometry, Mode, TypeInfo};
use bus_core::ring::StartAt;
use proptest::prelude::*;
use std::io::Cursor;

#[path = "../../tests/support/messages.rs"]
mod messages;
use messages::{every_request, every_response};

fn odom() -> Geometry {
    Geometry {
        capacity: 1024,
        slot_size: 64,
        mode: Mode::Lossless,
        max_publishers: 4,
        max_subscribers: 8,
        type_info: TypeInfo {
            name: "Odom".into(),
            size: 48,
            align: 8,
        },
    }
}

fn frame_with_len(len: u32, body: &[u8]) -> Vec<u8> {
    let mut v = len.to_le_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// A reader that reports its size as huge but fails if asked for more than
/// a few bytes: proves no body buffer is allocated for a rejected length.
struct CountingReader {
    data: Vec<u8>,
    pos: usize,
    max_request: usize,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.max_request = self.max_request.max(buf.len());
        let rest = &self.data[self.pos..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn frame_round_trips_every_request_kind() {
    let reqs = every_request();
    let mut buf = Vec::new();
    for r in &reqs {
        write_frame(&mut buf, r).unwrap();
    }
    let mut cur = Cursor::new(buf);
    for r in &reqs {
        let got: Request = read_frame(&mut cur).unwrap();
        assert_eq!(&got, r);
    }
    assert!(matches!(
        read_frame::<_, Request>(&mut cur),
        Err(ProtocolError::Closed)
    ));
}

#[test]
fn frame_round_trips_every_response_kind() {
    let resps = every_response();
    let mut buf = Vec::new();
    for r in &resps {
        write_frame(&mut buf, r).unwrap();
    }
    let mut cur = Cursor::new(buf);
    for r in &resps {
        let got: Response = read_frame(&mut cur).unwrap();
        assert_eq!(&got, r);
    }
}

#[test]
fn subscriber_start_defaults_to_latest_when_omitted() {
    let r = decode_request(
        br#"{"op":"attach","topic":"x","role":"subscriber","how":{"open":{"type_info":null}}}"#,
    )
    .unwrap();
    assert_eq!(
        r,
        Request::Attach {
            topic: "x".into(),
            role: Role::Subscriber,
            how: How::Open { type_info: None },
            start: StartAt::Latest
        }
    );
}

#[test]
fn decoder_rejects_unknown_fields_and_ops() {
    for body in [
        &br#"{"op":"list","extra":1}"#[..],
        br#"{"op":"shutdown","x":null}"#,
        br#"{"op":"status","x":null}"#,
        br#"{"op":"list_after"}"#,
        br#"{"op":"held","topic":"x","index":0,"generation":1,"extra":1}"#,
        br#"{"op":"delete","topic":"x","extra":1}"#,
        br#"{"op":"format_disk"}"#,
        br#"{"topic":"x"}"#,
        br#"{"op":"attach","topic":"x","role":"subscriber","how":{"open":{"type_info":null,"x":1}}}"#,
        br#"{"op":"attach","topic":"x","role":"subscriber","how":{"close":{}}}"#,
        br#"{"op":"attach","topic":"x","role":"publisher","how":{"create":{"exact":true,"spec":{"capacity":2,"slot_size":8,"mode":"lossless","max_publishers":1,"max_subscribers":1,"type_info":{"name":"bytes","size":0,"align":1},"evil":1}}}}"#,
        br#"{"op":"attach","topic":"x","role":"publisher","how":{"create":{"exact":true,"spec":{"capacity":2,"slot_size":8,"mode":"sideways","max_publishers":1,"max_subscribers":1,"type_info":{"name":"bytes","size":0,"align":1}}}}}"#,
        br#"{"op":"attach","topic":"x","role":"publisher","how":{"create":{"spec":{"capacity":2,"slot_size":8,"mode":"lossless","max_publishers":1,"max_subscribers":1,"type_info":{"name":"bytes","size":0,"align":1}}}}}"#,
    ] {
        assert!(
            matches!(decode_request(body), Err(ProtocolError::Malformed(_))),
            "accepted {}",
            String::from_utf8_lossy(body)
        );
    }
    for body in [
        &br#"{"kind":"detached","x":1}"#[..],
        br#"{"kind":"stopping","x":1}"#,
        br#"{"kind":"deleted","x":1}"#,
        br#"{"kind":"topics","topics":[],"next":null,"x":1}"#,
        br#"{"kind":"status","status":{"daemon_pid":1}}"#,
        br#"{"kind":"waker_removed","x":1}"#,
    ] {
        assert!(matches!(
            decode_response(body),
            Err(ProtocolError::Malformed(_))
        ));
    }
}

#[test]
fn every_reader_uses_the_strict_decoder() {
    let body = br#"{"op":"list","extra":1}"#;
    let frame = frame_with_len(body.len() as u32, body);
    assert!(read_frame::<_, Request>(&mut Cursor::new(&frame)).is_err());
    let mut buf = FrameBuf::new();
    buf.push(&frame);
    assert!(buf.pop::<Request>().is_err());
}

#[test]
fn a_listing_without_next_is_the_last_page() {
    assert_eq!(
        decode_response(br#"{"kind":"topics","topics":[]}"#).unwrap(),
        Response::Topics {
            topics: vec![],
            next: None
        }
    );
}

#[test]
fn frame_buf_says_what_completes_the_current_part() {
    let frame = encode_frame(&Request::Status).unwrap();
    let mut buf = FrameBuf::new();
    assert_eq!(buf.wanted().unwrap(), 4);
    buf.push(&frame[..3]);
    assert_eq!(buf.wanted().unwrap(), 1);
    buf.push(&frame[3..6]);
    assert_eq!(buf.wanted().unwrap(), frame.len() - 6);
    buf.push(&frame[6..]);
    assert_eq!(buf.wanted().unwrap(), 0);
    assert_eq!(buf.pop::<Request>().unwrap(), Some(Request::Status));
    buf.push(&0u32.to_le_bytes());
    assert!(matches!(buf.wanted(), Err(ProtocolError::EmptyFrame)));
}

#[test]
fn frame_buf_yields_frames_as_they_complete() {
    let reqs = every_request();
    let mut stream = Vec::new();
    for r in &reqs {
        write_frame(&mut stream, r).unwrap();
    }
    let mut buf = FrameBuf::new();
    let mut got = Vec::new();
    for chunk in stream.chunks(7) {
        buf.push(chunk);
        while let Some(r) = buf.pop::<Request>().unwrap() {
            got.push(r);
        }
    }
    assert_eq!(got, reqs);
    assert_eq!(buf.pending(), 0);
}

#[test]
fn frame_buf_refuses_a_hostile_length_at_once() {
    let mut buf = FrameBuf::new();
    buf.push(&u32::MAX.to_le_bytes());
    assert!(matches!(
        buf.pop::<Request>(),
        Err(ProtocolError::FrameTooLarge { .. })
    ));
    let mut buf = FrameBuf::new();
    buf.push(&0u32.to_le_bytes());
    assert!(matches!(
        buf.pop::<Request>(),
        Err(ProtocolError::EmptyFrame)
    ));
}

#[test]
fn decoder_rejects_oversize_length_without_allocating() {
    for len in [MAX_FRAME as u32 + 1, u32::MAX] {
        let mut r = CountingReader {
            data: frame_with_len(len, b"{}"),
            pos: 0,
            max_request: 0,
        };
        let err = read_frame::<_, Request>(&mut r).unwrap_err();
        assert!(matches!(err, ProtocolError::FrameTooLarge { len: l, .. } if l == u64::from(len)));
        assert_eq!(r.max_request, FRAME_HEADER_LEN, "only the header was read");
    }
}

#[test]
fn decoder_rejects_zero_length_frame() {
    let mut cur = Cursor::new(frame_with_len(0, b""));
    assert!(matches!(
        read_frame::<_, Request>(&mut cur),
        Err(ProtocolError::EmptyFrame)
    ));
    assert!(matches!(
        decode_request(b""),
        Err(ProtocolError::EmptyFrame)
    ));
}

#[test]
fn eof_inside_header_or_body_is_truncated() {
    let mut cur = Cursor::new(vec![5u8, 0]);
    assert!(matches!(
        read_frame::<_, Request>(&mut cur),
        Err(ProtocolError::Truncated {
            got: 2,
            expected: 4
        })
    ));
    let mut cur = Cursor::new(frame_with_len(20, br#"{"op":"#));
    assert!(matches!(
        read_frame::<_, Request>(&mut cur),
        Err(ProtocolError::Truncated {
            got: 6,
            expected: 20
        })
    ));
}

#[test]
fn invalid_utf8_and_bad_json_are_malformed() {
    let mut cur = Cursor::new(frame_with_len(3, &[0xff, 0xfe, 0xfd]));
    assert!(matches!(
        read_frame::<_, Request>(&mut cur),
        Err(ProtocolError::Malformed(_))
    ));
    assert!(matches!(
        decode_request(b"{\"op\":\"delete\",\"topic\":\"\xff\"}"),
        Err(ProtocolError::Malformed(_))
    ));
    assert!(matches!(
        decode_request(
            br#"{"op":"detach","topic":"x","role":"publisher","index":-1,"generation":0}"#
        ),
        Err(ProtocolError::Malformed(_))
    ));
}

#[test]
fn deeply_nested_json_is_rejected_not_stack_overflow() {
    let mut body = vec![b'['; 30_000];
    body.extend(vec![b']'; 30_000]);
    assert!(matches!(
        decode_request(&body),
        Err(ProtocolError::Malformed(_))
    ));
}

#[test]
fn encoder_refuses_message_above_max_frame() {
    let r = Request::Hello {
        version: 1,
        client_name: "x".repeat(MAX_FRAME),
    };
    assert!(matches!(
        encode_frame(&r),
        Err(ProtocolError::FrameTooLarge { .. })
    ));
    let mut sink = Vec::new();
    assert!(write_frame(&mut sink, &r).is_err());
    assert!(sink.is_empty(), "nothing is written for a refused frame");
}

#[test]
fn version_check_accepts_only_equal_version() {
    assert!(check_version(PROTOCOL_VERSION).is_ok());
    let err = check_version(PROTOCOL_VERSION + 1).unwrap_err();
    assert_eq!(err.code(), ErrorCode::VersionMismatch);
    let msg = err.to_string();
    let (client, daemon) = (
        format!("v{}", PROTOCOL_VERSION + 1),
        format!("v{PROTOCOL_VERSION}"),
    );
    assert!(msg.contains(&client) && msg.contains(&daemon), "{msg}");
    match err.to_response() {
        Response::Error { code, message } => {
            assert_eq!(code, ErrorCode::VersionMismatch);
            assert_eq!(message, msg);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn mismatch_of_types_names_both_types_and_the_fix() {
    let asked = Geometry {
        type_info: TypeInfo {
            name: "Other".into(),
            size: 40,
            align: 8,
        },
        ..odom()
    };
    let (code, message) =
        describe_mismatch("robot/odom", Role::Subscriber, &odom(), &asked).unwrap();
    assert_eq!(code, ErrorCode::TypeMismatch);
    assert_eq!(
        message,
        "topic 'robot/odom' carries `Odom` (size 48, align 8) but this subscriber asked for \
         `Other` (size 40, align 8); open it with the type the topic was created with, or \
         use another topic name"
    );
}

#[test]
fn mismatch_of_geometry_lists_only_differing_fields() {
    let asked = Geometry {
        capacity: 512,
        mode: Mode::Lossy,
        ..odom()
    };
    let (code, message) =
        describe_mismatch("robot/odom", Role::Publisher, &odom(), &asked).unwrap();
    assert_eq!(code, ErrorCode::GeometryMismatch);
    assert!(
        message.starts_with(
            "topic 'robot/odom' exists with capacity 1024, mode lossless but this publisher \
             asked for capacity 512, mode lossy;"
        ),
        "{message}"
    );
    assert!(!message.contains("slot_size"));
}

#[test]
fn type_mismatch_wins_over_geometry_mismatch_and_bytes_say_bytes() {
    let bytes = Geometry {
        type_info: TypeInfo::bytes(),
        capacity: 2,
        ..odom()
    };
    let (code, message) = describe_mismatch("raw", Role::Publisher, &bytes, &odom()).unwrap();
    assert_eq!(code, ErrorCode::TypeMismatch);
    assert!(
        message.starts_with("topic 'raw' carries variable-length bytes `bytes` (size 0, align 1)"),
        "{message}"
    );
    assert!(describe_mismatch("t", Role::Subscriber, &odom(), &odom()).is_none());
}

#[test]
fn request_topic_accessor_names_the_topic() {
    assert_eq!(
        Request::Delete {
            topic: "a/b".into()
        }
        .topic(),
        Some("a/b")
    );
    assert_eq!(Request::List.topic(), None);
    assert_eq!(Request::Stats { topic: None }.topic(), None);
}

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z/._-]{0,40}"]
}

fn arb_geometry() -> impl Strategy<Value = Geometry> {
    (
        any::<u32>(),
        any::<u32>(),
        prop_oneof![Just(Mode::Lossless), Just(Mode::Lossy)],
        any::<u32>(),
        any::<u32>(),
        arb_string(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(capacity, slot_size, mode, max_publishers, max_subscribers, name, size, align)| {
                Geometry {
                    capacity,
                    slot_size,
                    mode,
                    max_publishers,
                    max_subscribers,
                    type_info: TypeInfo { name, size, align },
                }
            },
        )
}

fn arb_request() -> impl Strategy<Value = Request> {
    let role = || prop_oneof![Just(Role::Publisher), Just(Role::Subscriber)];
    let start = prop_oneof![Just(StartAt::Latest), Just(StartAt::Oldest)];
    let how = prop_oneof![
        proptest::option::of(arb_geometry().prop_map(|g| g.type_info))
            .prop_map(|type_info| How::Open { type_info }),
        (arb_geometry(), any::<bool>()).prop_map(|(spec, exact)| How::Create { spec, exact }),
    ];
    prop_oneof![
        (any::<u32>(), arb_string()).prop_map(|(version, client_name)| Request::Hello {
            version,
            client_name
        }),
        (arb_string(), role(), how, start).prop_map(|(topic, role, how, start)| {
            Request::Attach {
                topic,
                role,
                how,
                start,
            }
        }),
        (arb_string(), role(), any::<u32>(), any::<u64>()).prop_map(
            |(topic, role, index, generation)| Request::Detach {
                topic,
                role,
                index,
                generation
            }
        ),
        Just(Request::List),
        arb_string().prop_map(|after| Request::ListAfter { after }),
        Just(Request::Status),
        (arb_string(), any::<u32>(), any::<u64>()).prop_map(|(topic, index, generation)| {
            Request::Held {
                topic,
                index,
                generation,
            }
        }),
        proptest::option::of(arb_string()).prop_map(|topic| Request::Stats { topic }),
        arb_string().prop_map(|after| Request::StatsAfter { after }),
        arb_string().prop_map(|topic| Request::Delete { topic }),
        Just(Request::Shutdown),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_request(&bytes);
        let _ = decode_response(&bytes);
        let mut cur = Cursor::new(&bytes);
        // Read frames until an error: must terminate and never panic.
        while read_frame::<_, Request>(&mut cur).is_ok() {}
        let mut buf = FrameBuf::new();
        buf.push(&bytes);
        while let Ok(Some(_)) = buf.pop::<Request>() {}
    }

    #[test]
    fn arbitrary_json_like_bytes_never_panic_the_decoder(
        body in r#"\{"op":"(hello|attach|detach|list|list_after|stats|stats_after|status|held|delete|shutdown|reattach)"[ -~]{0,80}\}"#
    ) {
        let _ = decode_request(body.as_bytes());
        let mut cur = Cursor::new(frame_with_len(body.len() as u32, body.as_bytes()));
        let _ = read_frame::<_, Request>(&mut cur);
    }

    #[test]
    fn arbitrary_requests_round_trip(req in arb_request()) {
        prop_assert_eq!(&decode_request(&encode(&req).unwrap()).unwrap(), &req);
        let frame = encode_frame(&req).unwrap();
        let mut cur = Cursor::new(frame);
        let got: Request = read_frame(&mut cur).unwrap();
        prop_assert_eq!(got, req);
    }
}
