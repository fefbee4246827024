//! The daemon's control plane against a real `shmbusd` process: it decodes requests with the
//! protocol's one strict decoder, and one client's slow request (creating a large topic) does
//! not hold up the others.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bus_proto::fdpass;
use bus_proto::frame::{decode_request, MAX_FRAME};
use bus_proto::protocol::{ErrorCode, ProtocolError, Request, Response, PROTOCOL_VERSION};
use bus_tests::{unique_topic, Daemon, TempDir};

const PEER: &str = env!("CARGO_BIN_EXE_shmbus-peer");

fn hello(socket: &Path) -> UnixStream {
    let stream = UnixStream::connect(socket).expect("connect to shmbusd");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let req = Request::Hello {
        version: PROTOCOL_VERSION,
        client_name: "control-plane-test".into(),
    };
    fdpass::write_frame_with_fds(&stream, &req, &[]).expect("send hello");
    match fdpass::read_frame_with_fds::<Response>(&stream, 1) {
        Ok((Response::HelloOk { .. }, fds)) => assert_eq!(fds.len(), 1, "the status page"),
        other => panic!("hello: {other:?}"),
    }
    stream
}

/// The body the proptests and the fuzz target reject must be rejected by the running daemon
/// too: production decodes with the same strict decoder.
#[test]
fn shmbusd_refuses_an_unknown_field_with_a_typed_error_and_serves_on() {
    let d = Daemon::start(PEER, &[]);
    let body = br#"{"op":"list","extra":1}"#;
    assert!(
        matches!(decode_request(body), Err(ProtocolError::Malformed(_))),
        "the strict decoder itself refuses it"
    );
    let stream = hello(d.socket());
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(body);
    fdpass::send_with_fds(&stream, &frame, &[]).expect("send the frame");
    match fdpass::read_frame_with_fds::<Response>(&stream, 0) {
        Ok((Response::Error { code, message }, _)) => {
            assert_eq!(code, ErrorCode::BadRequest, "{message}");
            assert!(message.contains("extra"), "names the field: {message}");
        }
        other => panic!("expected a typed protocol error, got {other:?}"),
    }
    // The stream may be out of step after a malformed frame: the daemon closes it...
    assert!(matches!(
        fdpass::read_frame_with_fds::<Response>(&stream, 0),
        Err(ProtocolError::Closed)
    ));
    // ...and keeps serving everyone else.
    let other = hello(d.socket());
    fdpass::write_frame_with_fds(&other, &Request::List, &[]).expect("list");
    assert!(matches!(
        fdpass::read_frame_with_fds::<Response>(&other, 0),
        Ok((Response::Topics { .. }, _))
    ));
    assert!(d.bus().list().is_ok());
    assert!(MAX_FRAME > body.len());
}

fn rules_allowing(dir: &Path, bytes: u64) -> PathBuf {
    let path = dir.join("rules.toml");
    std::fs::write(&path, format!("[limits]\nmax_bytes_per_uid = {bytes}\n")).expect("rules");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// Creating a topic reserves and zeroes all of its memory, which takes a while for a large
/// one. It runs outside the daemon's registry lock: another client's `list` is answered
/// meanwhile, in a small fraction of the creation's time.
#[test]
fn a_list_is_answered_while_a_1_gib_topic_is_being_created() {
    const GIB: u64 = 1 << 30;
    let dir = TempDir::new("big-create");
    let rules = rules_allowing(dir.path(), 4 * GIB);
    let d = Daemon::start(PEER, &["--", "--rules", rules.to_str().expect("utf-8")]);
    let topic = unique_topic("one-gib");
    let (creator, lister) = (d.bus(), d.bus());
    // Warm both connections up.
    creator.list().expect("list");
    lister.list().expect("list");

    let (done_tx, done_rx) = mpsc::channel();
    let create = std::thread::spawn(move || {
        let started = Instant::now();
        let publisher = creator
            .publisher::<[u8]>(&topic)
            .capacity(1024)
            .slot_size(1 << 20)
            .create();
        let took = started.elapsed();
        let _ = done_tx.send(());
        (started, took, publisher.map(|p| p.spec().ring_bytes()))
    });
    // Lists from the other connection until the creation is done: (start, latency).
    let mut lists = Vec::new();
    while done_rx.try_recv().is_err() {
        let at = Instant::now();
        lister
            .list()
            .expect("a list while a topic is being created");
        lists.push((at, at.elapsed()));
    }
    let (started, took, created) = create.join().expect("the creating thread");
    assert_eq!(created.expect("create the 1 GiB topic"), GIB);
    let during: Vec<Duration> = lists
        .iter()
        .filter(|(at, lat)| *at > started && *at + *lat < started + took)
        .map(|(_, lat)| *lat)
        .collect();
    let slowest = during.iter().max().copied().unwrap_or_default();
    eprintln!(
        "creating a 1 GiB topic took {took:?}; {} lists were answered meanwhile, the slowest in {slowest:?}",
        during.len()
    );
    assert!(
        during.len() >= 3,
        "only {} lists were answered during a {took:?} creation: the creation blocks the daemon",
        during.len()
    );
    assert!(
        slowest * 4 < took,
        "a list took {slowest:?} during a {took:?} creation: it waited for the creation"
    );
}

/// A client that sends requests and never reads the answers is dropped once its unread answers
/// pass the daemon's bound; meanwhile everyone else is answered at once (the loop never blocks
/// on it).
#[test]
fn a_client_that_never_reads_its_answers_is_dropped_and_others_are_served_meanwhile() {
    let d = Daemon::start(PEER, &[]);
    let flooder = hello(d.socket());
    let other = hello(d.socket());
    let frame = bus_proto::frame::encode_frame(&Request::Status).expect("encode");
    let writer = flooder.try_clone().expect("clone");
    let flood = std::thread::spawn(move || {
        // Blocking writes: they stop only when the daemon closes the connection.
        let mut sent = 0u64;
        while fdpass::send_with_fds(&writer, &frame, &[]).is_ok() {
            sent += 1;
            if sent > 10_000_000 {
                break;
            }
        }
        sent
    });
    let mut slowest = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !flood.is_finished() {
        assert!(Instant::now() < deadline, "the flooder was never dropped");
        let asked = Instant::now();
        fdpass::write_frame_with_fds(&other, &Request::List, &[]).expect("list");
        match fdpass::read_frame_with_fds::<Response>(&other, 0) {
            Ok((Response::Topics { .. }, _)) => {}
            other => panic!("list during the flood: {other:?}"),
        }
        slowest = slowest.max(asked.elapsed());
    }
    let sent = flood.join().expect("the flooding thread");
    eprintln!("flooder dropped after {sent} unread requests; slowest list meanwhile {slowest:?}");
    assert!(sent < 10_000_000, "the daemon never dropped the flooder");
    assert!(
        slowest < Duration::from_secs(1),
        "another client waited {slowest:?} for an answer"
    );
    assert!(
        d.log().contains("left too many answers unread"),
        "{}",
        d.log()
    );
}

/// `held` notices are never answered, and a client cannot make the daemon watch a topic it
/// holds no publisher on, or one that is not full, however many it sends.
#[test]
fn held_notices_are_never_answered_and_cannot_start_a_watch_without_a_full_topic() {
    let d = Daemon::start(PEER, &[]);
    let bus = d.bus();
    let topic = unique_topic("held");
    let mut publisher = bus
        .publisher::<u64>(&topic)
        .capacity(4)
        .open_or_create()
        .expect("publisher");
    let _subscriber = bus.subscriber::<u64>(&topic).open().expect("subscriber");
    publisher.try_send(&1).expect("room");
    let liar = hello(d.socket());
    for i in 0..10_000u64 {
        let notice = Request::Held {
            topic: if i % 2 == 0 {
                topic.clone()
            } else {
                "no/such".into()
            },
            index: (i % 8) as u32,
            generation: i,
        };
        fdpass::write_frame_with_fds(&liar, &notice, &[]).expect("notice");
    }
    // The first answer on the connection is the status asked after the notices.
    fdpass::write_frame_with_fds(&liar, &Request::Status, &[]).expect("status");
    match fdpass::read_frame_with_fds::<Response>(&liar, 0) {
        Ok((Response::Status { status }, _)) => {
            assert_eq!(status.totals.watched, 0, "a lie started a watch")
        }
        other => panic!("expected the status, got {other:?}"),
    }
    // The publisher's own notice on a topic that is not full starts nothing either; once the
    // ring is full, its notice starts a watch.
    assert_eq!(bus.status().expect("status").totals.watched, 0);
    while publisher.try_send(&2).is_ok() {}
    assert!(
        bus_tests::wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
            bus.status().is_ok_and(|s| s.totals.watched == 1)
        }),
        "a full ring and a held-back publisher: the topic is watched"
    );
}
