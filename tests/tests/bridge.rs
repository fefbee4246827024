//! The Zenoh bridge: two real daemons on two sockets, two real bridge processes
//! (`shmbus-peer bridge`, the code of `shmbus-bridge`) joined over loopback TCP with scouting
//! off, and the test process publishing on one side and subscribing on the other.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bus_client::{Bus, RecvTimeoutError, TryRecvError};
use bus_tests::bridge::{endpoint, free_port, Bridge};
use bus_tests::{check_of, Checker, Daemon, Peer, TestMsg};
use serde_json::Value;

const PEER: &str = env!("CARGO_BIN_EXE_shmbus-peer");
/// For a whole transfer (a loaded 2-core machine, debug builds).
const TRANSFER: Duration = Duration::from_secs(60);

/// Two sites: daemon and bridge A (listening) and daemon and bridge B (listening, and
/// connecting to A).
struct Sites {
    a: Daemon,
    b: Daemon,
    bridge_a: Bridge,
    bridge_b: Bridge,
}

fn sites(args_a: &[&str], args_b: &[&str]) -> Sites {
    let (a, b) = (Daemon::start(PEER, &[]), Daemon::start(PEER, &[]));
    let port_a = free_port();
    let bridge_a = Bridge::start(PEER, &a, port_a, args_a);
    let to_a = endpoint(port_a);
    let mut args = vec!["--connect", to_a.as_str()];
    args.extend_from_slice(args_b);
    let bridge_b = Bridge::start(PEER, &b, free_port(), &args);
    Sites {
        a,
        b,
        bridge_a,
        bridge_b,
    }
}

/// A fully determined message: every byte follows from its sequence number.
fn msg(publisher: u64, seq: u64) -> TestMsg {
    TestMsg {
        publisher,
        seq,
        stamp_ns: seq.wrapping_mul(0x9e37_79b9),
        check: check_of(publisher, seq),
    }
}

/// Byte message `i`: 8 to 1007 bytes, its sequence number first, then bytes that follow
/// from it.
fn blob(i: u64) -> Vec<u8> {
    let len = 8 + (i * 37 % 1000) as usize;
    let mut v = i.to_le_bytes().to_vec();
    v.extend((8..len).map(|j| (check_of(i, j as u64) & 0xff) as u8));
    v
}

fn seq_of(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The pids of the publishers and the subscribers of `topic`, from the daemon's stats (what
/// `shmbus stat` shows; `shmbus list` shows their counts).
fn port_pids(bus: &Bus, topic: &str) -> (Vec<u32>, Vec<u32>) {
    let stats = bus.stats(Some(topic)).expect("stats");
    let s = stats.first().expect("the topic's stats");
    (
        s.publishers.iter().map(|p| p.pid).collect(),
        s.subscribers.iter().map(|p| p.pid).collect(),
    )
}

fn list_counts(bus: &Bus, topic: &str) -> Option<(u32, u32)> {
    bus.list()
        .expect("list")
        .into_iter()
        .find(|t| t.name == topic)
        .map(|t| (t.publishers, t.subscribers))
}

#[test]
fn lossless_typed_and_byte_topics_arrive_complete_in_order_and_byte_identical() {
    const N: u64 = 10_000;
    let (typed, bytes) = ("it/b1/odom", "it/b1/log");
    let mut s = sites(&["--export", "it/b1/**"], &["--import", "it/b1/**"]);
    let (bus_a, bus_b) = (s.a.bus(), s.b.bus());
    let mut pub_typed = bus_a
        .publisher::<TestMsg>(typed)
        .capacity(256)
        .create()
        .unwrap();
    let mut pub_bytes = bus_a
        .publisher::<[u8]>(bytes)
        .capacity(256)
        .slot_size(1024)
        .create()
        .unwrap();
    for t in [typed, bytes] {
        s.bridge_a.wait_exported_and_matched(t);
        s.bridge_b.wait_imported(t);
    }
    // The importer created both topics on B with A's geometry.
    let mut sub_typed = bus_b.subscriber::<TestMsg>(typed).open().unwrap();
    let mut sub_bytes = bus_b.subscriber::<[u8]>(bytes).open().unwrap();
    assert_eq!(sub_typed.spec(), pub_typed.spec());
    assert_eq!(sub_bytes.spec(), pub_bytes.spec());

    std::thread::scope(|scope| {
        let typed_rx = scope.spawn(move || {
            let mut checker = Checker::new(true);
            for i in 0..N {
                let m = sub_typed.recv_timeout(TRANSFER).expect("a typed message");
                assert_eq!(*m, msg(1, i), "typed message {i}");
                checker.check(&m, m.sequence());
            }
            checker
        });
        let bytes_rx = scope.spawn(move || {
            for i in 0..N {
                let m = sub_bytes.recv_timeout(TRANSFER).expect("a byte message");
                assert_eq!(&m[..], &blob(i)[..], "byte message {i}");
            }
        });
        for i in 0..N {
            pub_typed.publish(&msg(1, i)).unwrap();
            pub_bytes.publish(&blob(i)[..]).unwrap();
        }
        let checker = typed_rx.join().expect("typed receiver");
        assert!(checker.errors.is_empty(), "{:?}", checker.errors);
        assert_eq!(checker.count.get(&1), Some(&N));
        bytes_rx.join().expect("byte receiver");
    });

    // `shmbus list` counts the bridge's ports; `shmbus stat` names their process.
    for t in [typed, bytes] {
        assert_eq!(
            list_counts(&bus_a, t),
            Some((1, 1)),
            "A: our publisher, the bridge"
        );
        assert_eq!(
            port_pids(&bus_a, t).1,
            vec![s.bridge_a.pid()],
            "A's subscriber"
        );
        assert_eq!(
            list_counts(&bus_b, t),
            Some((1, 0)),
            "B: the bridge publishes"
        );
        assert_eq!(
            port_pids(&bus_b, t).0,
            vec![s.bridge_b.pid()],
            "B's publisher"
        );
    }
    let a = s.bridge_a.stop();
    let b = s.bridge_b.stop();
    for t in [typed, bytes] {
        assert_eq!(n(&a["exports"][t]["sent"]), N, "{a}");
        let imp = &b["imports"][t];
        assert_eq!(n(&imp["published"]), N, "{b}");
        for c in ["gaps", "malformed", "refused", "dropped"] {
            assert_eq!(n(&imp[c]), 0, "{c}: {b}");
        }
    }
}

#[test]
fn a_topic_created_after_both_bridges_started_arrives_whole_at_a_remote_waiter() {
    // Two daemons, two bridges, a remote subscriber waiting for a topic that does not exist on
    // either side, then a burst many times the ring into a new lossless topic on A: bridge A's
    // exporter is attached by its watch before the creator may publish, and the waiter on B
    // is attached when B's importer creates the topic, so every message arrives, in order.
    const N: u64 = 10_000;
    let topic = "late/b1/t";
    let mut s = sites(&["--export", "late/**"], &["--import", "late/**"]);
    let (bus_a, bus_b) = (s.a.bus(), s.b.bus());
    // The path from A to B works (B's data subscription is known at A) before the burst.
    {
        let mut warm = bus_a.publisher::<u64>("late/warm").create().unwrap();
        s.bridge_a.wait_exported_and_matched("late/warm");
        s.bridge_b.wait_imported("late/warm");
        let mut sub = bus_b.subscriber::<u64>("late/warm").open().unwrap();
        let deadline = Instant::now() + TRANSFER;
        loop {
            warm.publish(&1).unwrap();
            match sub.recv_timeout(Duration::from_millis(100)) {
                Ok(_) => break,
                Err(RecvTimeoutError::Timeout) => {
                    assert!(Instant::now() < deadline, "nothing crossed the bridges")
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    let started = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            let watch_b = bus_b
                .watch_topics(topic)
                .existing(bus_client::StartAt::Oldest);
            let mut watch = watch_b.open().expect("watch on B");
            assert_eq!(watch.existing(), 0, "the topic exists on B already");
            started.store(true, Ordering::SeqCst);
            let mut sub = match watch.recv_timeout(TRANSFER).expect("the topic on B") {
                bus_client::TopicEvent::Created(sub) => sub,
                other => panic!("{other:?}"),
            };
            for i in 0..N {
                let m = sub.recv_timeout(TRANSFER).expect("a message on B");
                assert_eq!(seq_of(m.bytes()), i, "message {i} on B");
                assert_eq!(m.bytes(), &blob(i)[..], "message {i} on B");
            }
        });
        let deadline = Instant::now() + TRANSFER;
        while !started.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the waiter never watched");
            assert!(!waiter.is_finished(), "the waiter ended early");
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut publisher = bus_a
            .publisher::<[u8]>(topic)
            .capacity(64)
            .slot_size(1024)
            .create()
            .unwrap();
        for i in 0..N {
            publisher.publish(&blob(i)[..]).unwrap();
        }
        waiter.join().expect("the waiter on B");
    });
    let a = s.bridge_a.stop();
    assert_eq!(n(&a["exports"][topic]["sent"]), N, "{a}");
}

#[test]
fn both_directions_on_one_pattern_deliver_each_message_once_without_echo() {
    const N: u64 = 2_000;
    let topic = "it/duplex/chat";
    let both = ["--export", "it/duplex/**", "--import", "it/duplex/**"];
    let mut s = sites(&both, &both);
    let (bus_a, bus_b) = (s.a.bus(), s.b.bus());
    let create = |bus: &Bus| {
        bus.publisher::<TestMsg>(topic)
            .capacity(512)
            .create()
            .unwrap()
    };
    let (mut pub_a, mut pub_b) = (create(&bus_a), create(&bus_b));
    let mut sub_a = bus_a.subscriber::<TestMsg>(topic).open().unwrap();
    let mut sub_b = bus_b.subscriber::<TestMsg>(topic).open().unwrap();
    for bridge in [&mut s.bridge_a, &mut s.bridge_b] {
        bridge.wait_exported_and_matched(topic);
        bridge.wait_imported(topic);
    }
    std::thread::scope(|scope| {
        let receivers = [(&mut sub_a, "A"), (&mut sub_b, "B")].map(|(sub, side)| {
            scope.spawn(move || {
                let mut checker = Checker::new(true);
                for _ in 0..2 * N {
                    let m = sub.recv_timeout(TRANSFER).expect("a message");
                    checker.check(&m, m.sequence());
                }
                // Then nothing more: no echo comes back.
                std::thread::sleep(Duration::from_secs(1));
                match sub.try_recv() {
                    Err(TryRecvError::Empty) => {}
                    Ok(m) => panic!("side {side}: an extra message after 2N: {:?}", *m),
                    Err(e) => panic!("side {side}: {e}"),
                }
                (side, checker)
            })
        });
        let senders = [(&mut pub_a, 1), (&mut pub_b, 2)].map(|(p, id)| {
            scope.spawn(move || {
                for i in 0..N {
                    p.publish(&msg(id, i)).unwrap();
                }
            })
        });
        for t in senders {
            t.join().expect("sender");
        }
        for r in receivers {
            let (side, checker) = r.join().expect("receiver");
            assert!(
                checker.errors.is_empty(),
                "side {side}: {:?}",
                checker.errors
            );
            assert_eq!(checker.count.get(&1), Some(&N), "side {side}");
            assert_eq!(checker.count.get(&2), Some(&N), "side {side}");
        }
    });
    for bridge in [s.bridge_a, s.bridge_b] {
        let st = bridge.stop();
        let (exp, imp) = (&st["exports"][topic], &st["imports"][topic]);
        assert_eq!(n(&exp["sent"]), N, "{st}");
        assert_eq!(
            n(&exp["skipped_own"]),
            N,
            "what it imported stays home: {st}"
        );
        assert_eq!(n(&imp["published"]), N, "{st}");
    }
}

#[test]
fn denied_and_unexported_topics_never_appear_on_the_other_side() {
    let mut s = sites(
        &["--export", "it/**", "--deny", "it/secret/**"],
        &[
            "--import",
            "it/**",
            "--import",
            "other/**",
            "--deny",
            "it/private",
        ],
    );
    let bus_a = s.a.bus();
    let bus_b = s.b.bus();
    let topics = ["it/open", "it/secret/key", "it/private", "other/thing"];
    let mut pubs: Vec<_> = topics
        .iter()
        .map(|t| bus_a.publisher::<u64>(t).create().unwrap())
        .collect();
    s.bridge_a.wait_exported_and_matched("it/open");
    s.bridge_b.wait_imported("it/open");
    let mut sub = bus_b.subscriber::<u64>("it/open").open().unwrap();
    for i in 0..100u64 {
        for p in &mut pubs {
            p.publish(&i).unwrap();
        }
    }
    for i in 0..100u64 {
        assert_eq!(*sub.recv_timeout(TRANSFER).unwrap(), i);
    }
    // it/private went out (A exports it) but B refuses it; give it every chance to arrive.
    std::thread::sleep(Duration::from_millis(500));
    let on_b: Vec<String> = bus_b.list().unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(on_b, ["it/open"], "only the admitted topic exists on B");
    assert!(s.bridge_a.saw("exporting", "it/private"));
    for t in ["it/secret/key", "other/thing"] {
        assert!(!s.bridge_a.saw("exporting", t), "A exported {t}");
    }
    let b = s.bridge_b.fresh_stats();
    let imports = b["imports"].as_object().unwrap();
    assert_eq!(imports.keys().collect::<Vec<_>>(), ["it/open"], "{b}");
}

/// Publish `count` byte messages of `size` bytes (sequence first) as fast as possible,
/// while a consumer on B takes one every `pause`; returns (publisher time, messages the
/// consumer had when the publisher finished, consumer's messages, consumer's lag count,
/// last sequence seen).
fn slow_consumer(
    s: &mut Sites,
    topic: &str,
    lossy: bool,
    count: u64,
    size: usize,
    pause: Duration,
) -> (Duration, u64, Vec<u64>, u64) {
    let (bus_a, bus_b) = (s.a.bus(), s.b.bus());
    let builder = bus_a
        .publisher::<[u8]>(topic)
        .capacity(16)
        .slot_size(size as u32);
    let mut publisher = if lossy { builder.lossy() } else { builder }
        .create()
        .unwrap();
    s.bridge_a.wait_exported_and_matched(topic);
    s.bridge_b.wait_imported(topic);
    let mut sub = bus_b.subscriber::<[u8]>(topic).open().unwrap();
    let received = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let consumer = scope.spawn(|| {
            let (mut seqs, mut lagged) = (Vec::new(), 0);
            let mut quiet_since = Instant::now();
            while quiet_since.elapsed() < Duration::from_secs(2) || !done.load(Ordering::SeqCst) {
                match sub.recv_timeout(Duration::from_millis(50)) {
                    Ok(m) => {
                        assert_eq!(m.len(), size);
                        seqs.push(seq_of(&m));
                        received.fetch_add(1, Ordering::SeqCst);
                        quiet_since = Instant::now();
                        drop(m);
                        std::thread::sleep(pause);
                    }
                    Err(RecvTimeoutError::Lagged(k)) => lagged += k,
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(e) => panic!("consumer: {e}"),
                }
                if seqs.last() == Some(&(count - 1)) && done.load(Ordering::SeqCst) {
                    break;
                }
            }
            (seqs, lagged)
        });
        let start = Instant::now();
        let mut buf = vec![0u8; size];
        for i in 0..count {
            buf[..8].copy_from_slice(&i.to_le_bytes());
            publisher.publish(&buf).unwrap();
        }
        let took = start.elapsed();
        let had = received.load(Ordering::SeqCst);
        done.store(true, Ordering::SeqCst);
        let (seqs, lagged) = consumer.join().expect("consumer");
        (took, had, seqs, lagged)
    })
}

#[test]
fn lossy_topic_with_a_slow_remote_consumer_drops_counted_and_never_stalls_the_publisher() {
    const N: u64 = 2_000;
    let topic = "it/lossy/video";
    let mut s = sites(&["--export", "it/lossy/**"], &["--import", "it/lossy/**"]);
    let (took, _, seqs, consumer_lagged) =
        slow_consumer(&mut s, topic, true, N, 16 * 1024, Duration::from_millis(2));
    // 2,000 messages at 2 ms each would take the consumer 4 s; the publisher never waits.
    assert!(
        took < Duration::from_secs(2),
        "the lossy publisher took {took:?}"
    );
    assert!(
        (seqs.len() as u64) < N,
        "the slow consumer got all {N}: nothing was dropped"
    );
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "out of order: {seqs:?}"
    );
    // Every message is accounted for: received, or counted as lost where it was lost (the
    // exporter's lag on A, a gap on the way, the consumer's lag on B), or after the last one
    // received.
    let a = s.bridge_a.fresh_stats();
    let b = s.bridge_b.fresh_stats();
    let last = *seqs.last().expect("the consumer got something");
    let lost_a = n(&a["exports"][topic]["lagged"]);
    let gaps = n(&b["imports"][topic]["gaps"]);
    assert_eq!(
        seqs.len() as u64 + lost_a + gaps + consumer_lagged + (N - 1 - last),
        N,
        "received {}, lagged on A {lost_a}, gaps {gaps}, lagged on B {consumer_lagged}, \
         last {last}; A {a}; B {b}",
        seqs.len()
    );
    // Where the drops happen depends on who falls behind first (the exporter on A's ring, or
    // the consumer on B's); either way they are counted, and there are some.
    assert!(
        lost_a + gaps + consumer_lagged > 0,
        "nothing was counted as lost, yet {} of {N} arrived",
        seqs.len()
    );
}

#[test]
fn lossless_topic_with_a_slow_remote_consumer_back_pressures_without_loss() {
    const N: u64 = 400;
    let topic = "it/lossless/map";
    let mut s = sites(
        &["--export", "it/lossless/**"],
        &["--import", "it/lossless/**"],
    );
    let (took, had, seqs, lagged) =
        slow_consumer(&mut s, topic, false, N, 64 * 1024, Duration::from_millis(2));
    assert_eq!(seqs, (0..N).collect::<Vec<_>>(), "every message, in order");
    assert_eq!(lagged, 0);
    // Rings, Zenoh's queue and the TCP buffers hold some; the rest waited for the consumer.
    assert!(
        had >= N / 4,
        "the publisher finished in {took:?} when the consumer had only {had} of {N}: no back-pressure"
    );
    let b = s.bridge_b.fresh_stats();
    assert_eq!(n(&b["imports"][topic]["gaps"]), 0, "{b}");
}

#[test]
fn a_type_or_geometry_mismatch_is_refused_and_reported() {
    let (typed, shaped) = ("it/mm/pose", "it/mm/scan");
    let (a, b) = (Daemon::start(PEER, &[]), Daemon::start(PEER, &[]));
    let (bus_a, bus_b) = (a.bus(), b.bus());
    // B already has both topics: one with another type, one with another capacity.
    let mut sub_typed = bus_b.subscriber::<u64>(typed).create().unwrap();
    let mut sub_shaped = bus_b
        .subscriber::<TestMsg>(shaped)
        .capacity(64)
        .create()
        .unwrap();
    let mut pub_typed = bus_a.publisher::<TestMsg>(typed).create().unwrap();
    let mut pub_shaped = bus_a
        .publisher::<TestMsg>(shaped)
        .capacity(128)
        .create()
        .unwrap();
    let port_a = free_port();
    let mut bridge_a = Bridge::start(PEER, &a, port_a, &["--export", "it/mm/**"]);
    let to_a = endpoint(port_a);
    let mut bridge_b = Bridge::start(
        PEER,
        &b,
        free_port(),
        &["--connect", &to_a, "--import", "it/mm/**"],
    );
    for t in [typed, shaped] {
        bridge_a.wait_exported_and_matched(t);
        let refused = bridge_b.wait_event(Duration::from_secs(20), "refused", |v| v["topic"] == t);
        let reason = refused["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("differs"), "{refused}");
    }
    for i in 0..50 {
        pub_typed.publish(&msg(1, i)).unwrap();
        pub_shaped.publish(&msg(1, i)).unwrap();
    }
    let st = bridge_b.wait_stats(Duration::from_secs(20), |st| {
        [typed, shaped]
            .iter()
            .all(|t| st["imports"][t]["refused"].as_u64() >= Some(50))
    });
    for t in [typed, shaped] {
        assert_eq!(n(&st["imports"][t]["published"]), 0, "{st}");
        assert!(!bridge_b.saw("importing", t));
    }
    let log = bridge_b.stderr();
    assert!(log.contains("not importing topic it/mm/pose"), "{log}");
    assert!(matches!(sub_typed.try_recv(), Err(TryRecvError::Empty)));
    assert!(matches!(sub_shaped.try_recv(), Err(TryRecvError::Empty)));
    assert_eq!(sub_typed.spec().type_info.size, 8, "B's topic is untouched");
}

/// Receive on `sub` until a message with sequence above `after` arrives; returns when it did.
fn next_after(
    sub: &mut bus_client::Subscriber<TestMsg>,
    after: u64,
    checker: &mut Checker,
) -> Instant {
    let deadline = Instant::now() + TRANSFER;
    loop {
        let m = sub
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("traffic resumes");
        checker.check(&m, m.sequence());
        if m.seq > after {
            return Instant::now();
        }
    }
}

/// Drain what is there, checking it.
fn drain(sub: &mut bus_client::Subscriber<TestMsg>, checker: &mut Checker) {
    while let Ok(m) = sub.recv_timeout(Duration::from_millis(300)) {
        checker.check(&m, m.sequence());
    }
}

#[test]
fn a_killed_bridge_restarts_and_traffic_resumes_within_5_s_while_publishers_never_notice() {
    let topic = "it/k9/odom";
    let mut s = sites(&["--export", "it/k9/**"], &["--import", "it/k9/**"]);
    let bus_b = s.b.bus();
    // A publisher process on A, 1,000 messages a second, lossless (the default).
    let mut publisher = Peer::spawn(
        PEER,
        &[
            "pub",
            "--socket",
            s.a.socket_str(),
            "--topic",
            topic,
            "--count",
            "100000000",
            "--interval-us",
            "1000",
            "--ready",
        ],
    );
    publisher.expect_line("ready", Duration::from_secs(10));
    s.bridge_a.wait_exported_and_matched(topic);
    s.bridge_b.wait_imported(topic);
    let mut sub = bus_b.subscriber::<TestMsg>(topic).open().unwrap();
    // Lossless per publisher would flag the gaps the kills make; order and integrity stay.
    let mut checker = Checker::new(false);
    next_after(&mut sub, 100, &mut checker);

    // Kill the exporting bridge, then the importing one; each time traffic resumes within
    // 5 s of the restart.
    for victim in ["A", "B"] {
        let bridge = if victim == "A" {
            &mut s.bridge_a
        } else {
            &mut s.bridge_b
        };
        bridge.kill();
        drain(&mut sub, &mut checker);
        let last = checker.last.get(&1).copied().unwrap_or(0);
        std::thread::sleep(Duration::from_millis(500));
        let restarted = Instant::now();
        bridge.restart();
        let resumed = next_after(&mut sub, last, &mut checker);
        let after = resumed.duration_since(restarted);
        assert!(
            after < Duration::from_secs(5),
            "after killing bridge {victim}, traffic resumed {after:?} after its restart"
        );
    }
    // The publisher never noticed: it is still running and stops cleanly when told.
    assert!(publisher.is_running(), "stderr: {}", publisher.stderr());
    publisher.terminate();
    let summary = publisher.finish(Duration::from_secs(10));
    let sent = n(&summary["sent"]);
    // B's subscriber was never evicted or closed: it receives up to the last message.
    drain(&mut sub, &mut checker);
    assert!(checker.errors.is_empty(), "{:?}", checker.errors);
    assert_eq!(checker.last.get(&1), Some(&(sent - 1)), "{summary}");
}

/// A raw Zenoh session on loopback, connected to `port`, scouting off.
fn raw_zenoh(port: u16) -> zenoh::Session {
    use zenoh::Wait;
    let mut c = zenoh::Config::default();
    for (k, v) in [
        ("listen/endpoints", "[\"tcp/127.0.0.1:0\"]".to_string()),
        ("connect/endpoints", format!("[\"{}\"]", endpoint(port))),
        ("scouting/multicast/enabled", "false".to_string()),
    ] {
        c.insert_json5(k, &v).expect("a zenoh setting");
    }
    zenoh::open(c).wait().expect("a zenoh session")
}

#[test]
fn malformed_samples_from_the_network_are_counted_and_never_crash_the_bridge() {
    use bus_bridge::attachment::Attachment;
    use bus_bridge::type_tag::TypeTag;
    use zenoh::bytes::Encoding;
    use zenoh::Wait;

    let b = Daemon::start(PEER, &[]);
    let port = free_port();
    let mut bridge = Bridge::start(PEER, &b, port, &["--import", "it/bad/**"]);
    let session = raw_zenoh(port);
    let u64_spec = bus_client::Geometry {
        capacity: 64,
        slot_size: 8,
        mode: bus_client::Mode::Lossless,
        max_publishers: 4,
        max_subscribers: 4,
        type_info: bus_client::TypeInfo {
            name: "u64".into(),
            size: 8,
            align: 8,
        },
    };
    let tagged = Encoding::APPLICATION_OCTET_STREAM.with_schema(TypeTag::of(&u64_spec).as_str());
    let att = |stream| {
        Attachment {
            publisher: 0,
            sequence: stream,
            stream,
            time_ns: 0,
            origin: [9; 16],
        }
        .encode()
    };
    // Wait until the bridge's subscription reaches us: a good sample arrives.
    let bus_b = b.bus();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut good = loop {
        session
            .put("it/bad/good", 7u64.to_ne_bytes())
            .encoding(tagged.clone())
            .attachment(att(0))
            .wait()
            .unwrap();
        if let Ok(s) = bus_b.subscriber::<u64>("it/bad/good").open() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the bridge never imported it/bad/good"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let put = |key: &str, payload: &[u8], enc: Option<Encoding>, a: Option<&[u8]>| {
        let mut p = session.put(key, payload.to_vec());
        if let Some(e) = enc {
            p = p.encoding(e);
        }
        if let Some(a) = a {
            p = p.attachment(a.to_vec());
        }
        p.wait().unwrap();
    };
    let eight = 1u64.to_ne_bytes();
    put("it/bad/plain", &eight, None, Some(&att(1)));
    put(
        "it/bad/garbage",
        &eight,
        Some(Encoding::APPLICATION_OCTET_STREAM.with_schema("shmbus1,lossless,zz,%%")),
        Some(&att(1)),
    );
    put("it/bad/noatt", &eight, Some(tagged.clone()), None);
    put(
        "it/bad/noatt",
        &eight,
        Some(tagged.clone()),
        Some(&[1, 2, 3]),
    );
    put(
        "it/bad/size",
        &[1, 2, 3],
        Some(tagged.clone()),
        Some(&att(1)),
    );
    put("it/bad/k@y", &eight, Some(tagged.clone()), Some(&att(1)));
    // And the good topic still flows.
    put(
        "it/bad/good",
        &42u64.to_ne_bytes(),
        Some(tagged.clone()),
        Some(&att(1)),
    );
    let mut last = 0;
    while last != 42 {
        last = *good.recv_timeout(TRANSFER).expect("the good sample");
    }
    let st = bridge.wait_stats(Duration::from_secs(20), |st| {
        st["imports"]["it/bad/size"]["malformed"] == 1 && st["refused_keys"].as_u64() >= Some(1)
    });
    for t in ["it/bad/plain", "it/bad/garbage"] {
        assert!(n(&st["imports"][t]["malformed"]) >= 1, "{t}: {st}");
    }
    assert_eq!(n(&st["imports"]["it/bad/noatt"]["malformed"]), 2, "{st}");
    assert_eq!(n(&st["imports"]["it/bad/noatt"]["published"]), 0, "{st}");
    assert!(n(&st["imports"]["it/bad/good"]["published"]) >= 2, "{st}");
    let log = bridge.stderr();
    for what in [
        "no attachment",
        "not the 8-byte type",
        "carries no shmbus type tag",
        "malformed shmbus type tag",
        "does not name a shmbus topic",
    ] {
        assert!(log.contains(what), "the log does not say {what:?}:\n{log}");
    }
    let final_stats = bridge.stop();
    assert!(n(&final_stats["imports"]["it/bad/good"]["published"]) >= 2);
}
