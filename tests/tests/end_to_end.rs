//! End-to-end tests: a real daemon process, real publisher and subscriber processes
//! (`shmbus-peer`), real shared memory in /dev/shm. The test process itself is sometimes one of
//! the parties. Every wait is bounded; every child is killed and reaped, and every temporary
//! directory removed, by drop guards even when a test fails.

use std::time::{Duration, Instant};

use bus_client::{OpenError, RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError};
use bus_tests::{
    proc_state, segment_holders, segment_token, shm_entries_containing, unique_topic, Checker,
    Daemon, Peer, TestMsg,
};
use serde_json::Value;

const PEER: &str = env!("CARGO_BIN_EXE_shmbus-peer");
/// For a peer to start and open its port.
const START: Duration = Duration::from_secs(10);
/// For a whole transfer to complete (generous: a loaded 2-core machine, debug builds).
const TRANSFER: Duration = Duration::from_secs(30);

fn daemon() -> Daemon {
    Daemon::start(PEER, &[])
}

/// A `sub` peer that has printed `ready` (its subscriber is attached).
fn sub(d: &Daemon, topic: &str, count: u64, extra: &[&str]) -> Peer {
    let count = count.to_string();
    let mut args = vec![
        "sub",
        "--socket",
        d.socket_str(),
        "--topic",
        topic,
        "--count",
        &count,
    ];
    args.extend_from_slice(extra);
    let mut p = Peer::spawn(PEER, &args);
    p.expect_line("ready", START);
    p
}

/// A `pub` peer (running).
fn publ(d: &Daemon, topic: &str, count: u64, extra: &[&str]) -> Peer {
    let count = count.to_string();
    let mut args = vec![
        "pub",
        "--socket",
        d.socket_str(),
        "--topic",
        topic,
        "--count",
        &count,
    ];
    args.extend_from_slice(extra);
    Peer::spawn(PEER, &args)
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

/// A sub summary shows every message of each `(publisher id, count)` from seq 0, in order,
/// nothing lost, nothing else.
fn assert_got_everything(summary: &Value, publishers: &[(u64, u64)]) {
    assert_eq!(
        summary["errors"],
        Value::Array(vec![]),
        "summary: {summary}"
    );
    assert_eq!(u(&summary["error_count"]), 0, "summary: {summary}");
    let total: u64 = publishers.iter().map(|p| p.1).sum();
    assert_eq!(u(&summary["received"]), total, "summary: {summary}");
    assert_eq!(u(&summary["lagged"]), 0, "summary: {summary}");
    assert_eq!(
        summary["per_publisher"].as_object().map(|o| o.len()),
        Some(publishers.len()),
        "summary: {summary}"
    );
    for (id, count) in publishers {
        let id = id.to_string();
        assert_eq!(
            u(&summary["first_per_publisher"][&id]),
            0,
            "publisher {id}: {summary}"
        );
        assert_eq!(
            u(&summary["per_publisher"][&id]),
            count - 1,
            "publisher {id}: {summary}"
        );
        assert_eq!(
            u(&summary["count_per_publisher"][&id]),
            *count,
            "publisher {id}: {summary}"
        );
    }
    assert_eq!(u(&summary["first_topic_seq"]), 0, "summary: {summary}");
    assert_eq!(
        u(&summary["last_topic_seq"]),
        total - 1,
        "summary: {summary}"
    );
}

#[test]
fn one_publisher_one_subscriber_deliver_every_message_in_order() {
    const N: u64 = 50_000;
    let d = daemon();
    let topic = unique_topic("one-to-one");
    let mut s = sub(&d, &topic, N, &[]);
    let mut p = publ(&d, &topic, N, &["--id", "1"]);
    assert_eq!(u(&p.finish(TRANSFER)["sent"]), N);
    let summary = s.finish(TRANSFER);
    assert_got_everything(&summary, &[(1, N)]);
}

#[test]
fn fan_out_to_four_subscriber_processes_each_gets_every_message() {
    const N: u64 = 20_000;
    let d = daemon();
    let topic = unique_topic("fan-out");
    let mut subs: Vec<Peer> = (0..4).map(|_| sub(&d, &topic, N, &[])).collect();
    let mut p = publ(&d, &topic, N, &["--id", "3"]);
    assert_eq!(u(&p.finish(TRANSFER)["sent"]), N);
    for s in &mut subs {
        let summary = s.finish(TRANSFER);
        assert_got_everything(&summary, &[(3, N)]);
    }
}

#[test]
fn two_publisher_processes_each_keep_their_order_and_lose_nothing() {
    const N: u64 = 20_000;
    let d = daemon();
    let topic = unique_topic("two-pubs");
    let mut s = sub(&d, &topic, 2 * N, &[]);
    let mut p1 = publ(&d, &topic, N, &["--id", "1"]);
    let mut p2 = publ(&d, &topic, N, &["--id", "2"]);
    assert_eq!(u(&p1.finish(TRANSFER)["sent"]), N);
    assert_eq!(u(&p2.finish(TRANSFER)["sent"]), N);
    let summary = s.finish(TRANSFER);
    assert_got_everything(&summary, &[(1, N), (2, N)]);
}

#[test]
fn lossless_back_pressure_stops_a_publisher_at_capacity() {
    // The subscriber holds the ring full on purpose: no eviction during the test.
    let d = Daemon::start(PEER, &["--stuck-timeout-ms", "60000"]);
    let topic = unique_topic("back-pressure");
    let bus = d.bus();
    // This process subscribes and does not read.
    let mut subscriber = bus
        .subscriber::<TestMsg>(&topic)
        .capacity(8)
        .open_or_create()
        .expect("open the subscriber");
    let mut p = publ(
        &d,
        &topic,
        100,
        &["--capacity", "8", "--try-send", "--id", "4"],
    );
    let summary = p.finish(TRANSFER);
    assert_eq!(u(&summary["accepted"]), 8, "summary: {summary}");
    assert_eq!(summary["full"], Value::Bool(true), "summary: {summary}");
    for seq in 0..8 {
        let sample = subscriber
            .try_recv()
            .unwrap_or_else(|e| panic!("message {seq}: {e:?}"));
        assert_eq!(sample.sequence(), seq);
        assert_eq!(
            (sample.publisher, sample.seq, sample.is_intact()),
            (4, seq, true)
        );
    }
    assert_eq!(subscriber.try_recv().err(), Some(TryRecvError::Empty));
}

#[test]
fn lossy_subscriber_that_falls_behind_gets_lagged_then_the_newest() {
    const CAPACITY: u64 = 16;
    const N: u64 = 1000;
    let d = daemon();
    let topic = unique_topic("lossy-lag");
    let bus = d.bus();
    let mut subscriber = bus
        .subscriber::<TestMsg>(&topic)
        .lossy()
        .capacity(CAPACITY as u32)
        .open_or_create()
        .expect("open the subscriber");
    let mut p = publ(&d, &topic, N, &["--lossy", "--capacity", "16", "--id", "5"]);
    assert_eq!(u(&p.finish(TRANSFER)["sent"]), N);

    // Everything but the last CAPACITY messages was overwritten: the subscriber, at 0, is told
    // it lost exactly N - CAPACITY of them and resumes at the oldest one still present.
    match subscriber.try_recv() {
        Err(TryRecvError::Lagged(n)) => assert_eq!(n, N - CAPACITY),
        Err(e) => panic!("expected Lagged, got {e:?}"),
        Ok(s) => panic!("expected Lagged, got message {}", s.sequence()),
    }
    let mut checker = Checker::new(false);
    let mut seqs = Vec::new();
    loop {
        match subscriber.try_recv() {
            Ok(s) => {
                checker.check(&s, s.sequence());
                assert_eq!(s.seq, s.sequence(), "payload seq vs topic seq");
                seqs.push(s.seq);
            }
            Err(TryRecvError::Empty) => break,
            Err(e) => panic!("after the lag: {e:?}"),
        }
        assert!(seqs.len() as u64 <= CAPACITY, "more than the ring holds");
    }
    assert_eq!(checker.errors, Vec::<String>::new());
    assert_eq!(seqs, (N - CAPACITY..N).collect::<Vec<_>>());
    assert_eq!(subscriber.lagged(), N - CAPACITY);
}

#[test]
fn blocked_subscriber_process_is_woken_by_a_publish() {
    let d = daemon();
    let topic = unique_topic("wake-up");
    let mut s = sub(&d, &topic, 1, &["--blocking", "--timeout-ms", "20000"]);
    let bus = d.bus();
    let mut publisher = bus
        .publisher::<TestMsg>(&topic)
        .open_or_create()
        .expect("open the publisher");

    // The subscriber process must be asleep (state S) for a continuous 100 ms.
    let pid = s.pid();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut asleep_since: Option<Instant> = None;
    loop {
        let state = proc_state(pid);
        match (state, asleep_since) {
            (Some('S'), None) => asleep_since = Some(Instant::now()),
            (Some('S'), Some(t)) if t.elapsed() >= Duration::from_millis(100) => break,
            (Some('S'), Some(_)) => {}
            _ => asleep_since = None,
        }
        assert!(
            Instant::now() < deadline,
            "the subscriber never slept for 100 ms (last state {state:?})"
        );
        std::thread::sleep(Duration::from_millis(2));
    }

    let mut sample = publisher.loan().expect("loan");
    *sample = TestMsg::new(6, 0);
    sample.send();
    let sent = Instant::now();
    let status = s.wait_exit(Duration::from_secs(2));
    let woke_in = sent.elapsed();
    eprintln!("subscriber process woke and exited {woke_in:?} after the publish");
    assert!(status.success(), "exit {status}; stderr {}", s.stderr());
    assert!(woke_in < Duration::from_secs(2), "took {woke_in:?}");
    let summary = s.json(Duration::from_secs(1));
    assert_got_everything(&summary, &[(6, 1)]);
}

#[test]
fn late_joiner_starts_with_the_next_message_and_replay_gets_what_the_ring_holds() {
    let d = daemon();
    let topic = unique_topic("late-joiner");
    let opts = ["--lossy", "--capacity", "16", "--id", "7"];
    let mut first = publ(&d, &topic, 10, &opts);
    assert_eq!(u(&first.finish(TRANSFER)["sent"]), 10);

    // A default subscriber (in this process) and a replaying one (another process) join late.
    let bus = d.bus();
    let mut late = bus
        .subscriber::<TestMsg>(&topic)
        .lossy()
        .capacity(16)
        .open_or_create()
        .expect("open the late subscriber");
    let mut replay = sub(&d, &topic, 11, &["--lossy", "--capacity", "16", "--replay"]);
    assert_eq!(
        late.recv_timeout(Duration::from_millis(200)).err(),
        Some(RecvTimeoutError::Timeout),
        "a late joiner must not see what was published before it joined"
    );

    let mut next = publ(
        &d,
        &topic,
        1,
        &[&opts[..], &["--first-seq", "10"][..]].concat(),
    );
    assert_eq!(u(&next.finish(TRANSFER)["sent"]), 1);
    {
        let m = late
            .recv_timeout(Duration::from_secs(5))
            .expect("the late joiner gets the next message");
        assert_eq!(
            (m.sequence(), m.publisher, m.seq, m.is_intact()),
            (10, 7, 10, true)
        );
    }
    assert_eq!(late.try_recv().err(), Some(TryRecvError::Empty));

    let summary = replay.finish(TRANSFER);
    assert_eq!(
        summary["errors"],
        Value::Array(vec![]),
        "summary: {summary}"
    );
    assert_eq!(u(&summary["received"]), 11, "summary: {summary}");
    assert_eq!(u(&summary["lagged"]), 0, "summary: {summary}");
    assert_eq!(u(&summary["first_per_publisher"]["7"]), 0, "{summary}");
    assert_eq!(u(&summary["per_publisher"]["7"]), 10, "{summary}");
    assert_eq!(u(&summary["first_topic_seq"]), 0, "{summary}");
    assert_eq!(u(&summary["last_topic_seq"]), 10, "{summary}");
}

#[test]
fn opening_a_topic_with_another_type_is_refused_with_a_clear_error() {
    let d = daemon();
    let topic = unique_topic("type-mismatch");
    let bus = d.bus();
    let _publisher = bus
        .publisher::<TestMsg>(&topic)
        .open_or_create()
        .expect("open the publisher");
    match bus.subscriber::<u32>(&topic).open() {
        Err(OpenError::TypeMismatch { message: msg, .. }) => {
            assert!(msg.contains("TestMsg"), "names the topic's type: {msg}");
            assert!(msg.contains("u32"), "names the requested type: {msg}");
            assert!(msg.contains(&topic), "names the topic: {msg}");
        }
        Err(e) => panic!("expected TypeMismatch, got {e:?}"),
        Ok(_) => panic!("a u32 subscriber opened a TestMsg topic"),
    }
    // The refusal leaves the topic usable with the right type.
    bus.subscriber::<TestMsg>(&topic)
        .open_or_create()
        .expect("the right type still opens");
}

#[test]
fn killed_subscriber_holding_a_sample_releases_a_blocked_publisher() {
    // Only the kill may release the publisher, not an eviction of the stuck holder.
    let d = Daemon::start(PEER, &["--stuck-timeout-ms", "60000"]);
    let topic = unique_topic("killed-holder");
    let mut holder = Peer::spawn(
        PEER,
        &[
            "hold",
            "--socket",
            d.socket_str(),
            "--topic",
            &topic,
            "--capacity",
            "4",
        ],
    );
    holder.expect_line("ready", START);
    let bus = d.bus();
    let mut publisher = bus
        .publisher::<TestMsg>(&topic)
        .capacity(4)
        .blocking()
        .open_or_create()
        .expect("open the publisher");
    publisher
        .send_timeout(&TestMsg::new(9, 0), Duration::from_secs(5))
        .expect("the first message");
    holder.expect_line("holding", START);

    // The holder keeps message 0: the ring takes 3 more, then it is full.
    let mut accepted = 0;
    loop {
        match publisher.try_send(&TestMsg::new(9, 1 + accepted)) {
            Ok(_) => accepted += 1,
            Err(TrySendError::Full) => break,
            Err(e) => panic!("try_send: {e:?}"),
        }
        assert!(accepted <= 4, "the ring never filled up");
    }
    assert_eq!(accepted, 3);
    assert!(
        matches!(
            publisher.send_timeout(&TestMsg::new(9, 4), Duration::from_millis(50)),
            Err(SendTimeoutError::Timeout)
        ),
        "the held slot blocks the publisher"
    );

    let killed = Instant::now();
    holder.kill();
    let result = publisher.send_timeout(&TestMsg::new(9, 4), Duration::from_secs(5));
    let released_in = killed.elapsed();
    eprintln!("publisher released {released_in:?} after the kill");
    // The stuck timeout is a minute, so only the kill can have released it (how fast is a
    // benchmark's question, not a test's).
    assert!(result.is_ok(), "send after the kill: {result:?}");
}

#[test]
fn nothing_is_left_behind_after_the_daemon_stops() {
    let mut d = daemon();
    let topics: Vec<String> = (0..3).map(|_| unique_topic("clean-stop")).collect();
    for topic in &topics {
        let mut s = sub(&d, topic, 100, &[]);
        let mut p = publ(&d, topic, 100, &[]);
        assert_eq!(u(&p.finish(TRANSFER)["sent"]), 100);
        assert_got_everything(&s.finish(TRANSFER), &[(1, 100)]);
    }
    // One more subscriber process is still attached (and waiting) when the daemon stops.
    let mut live = sub(&d, &topics[0], 1_000_000, &[]);
    // Segments are anonymous sealed memory: held by the daemon (and the live subscriber),
    // never a file in /dev/shm.
    assert_eq!(d.segments(), {
        let mut t = topics.clone();
        t.sort();
        t
    });
    for topic in &topics {
        let holders = segment_holders(topic);
        assert!(holders.contains(&d.pid()), "{topic}: {holders:?}");
        let named = shm_entries_containing(&segment_token(topic));
        assert!(named.is_empty(), "a file in /dev/shm: {named:?}");
    }
    assert_eq!(
        segment_holders(&topics[0]).len(),
        2,
        "the daemon and the live subscriber"
    );
    let lock = {
        let mut s = d.socket().as_os_str().to_os_string();
        s.push(".lock");
        std::path::PathBuf::from(s)
    };
    assert!(d.socket().exists());

    d.terminate();
    let status = d
        .wait_exit(Duration::from_secs(10))
        .expect("the daemon stops within 10 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "daemon log:\n{}", d.log());
    // The memory of a topic nobody uses is gone with the daemon; the live subscriber may still
    // map its topic until it has seen the topic closed and let go.
    for topic in &topics[1..] {
        let left = segment_holders(topic);
        assert!(left.is_empty(), "{topic} still held by {left:?}");
    }
    let left = segment_holders(&topics[0]);
    assert!(left.iter().all(|&p| p == live.pid()), "{left:?}");
    for suffix in [".lock", ".status", ".topics"] {
        let mut s = d.socket().as_os_str().to_os_string();
        s.push(suffix);
        assert!(
            !std::path::Path::new(&s).exists(),
            "{suffix} file is left behind"
        );
    }
    assert!(!d.socket().exists(), "the socket file is left behind");
    assert!(!lock.exists(), "the lock file is left behind");
    let summary = live.finish(TRANSFER);
    assert_eq!(
        summary["outcome"], "closed",
        "the live subscriber: {summary}"
    );
    assert!(segment_holders(&topics[0]).is_empty());
}

#[test]
fn second_daemon_on_the_same_socket_refuses_to_start() {
    let d = daemon();
    let mut second = Peer::spawn(PEER, &["daemon", "--socket", d.socket_str()]);
    let status = second.wait_exit(Duration::from_secs(10));
    let stderr = second.stderr_after_exit();
    assert_eq!(status.code(), Some(3), "stderr:\n{stderr}");
    assert!(
        stderr.contains(&d.pid().to_string()),
        "stderr names the running daemon's pid {}:\n{stderr}",
        d.pid()
    );
    // The first daemon still serves its socket.
    let bus = d.bus();
    assert_eq!(bus.daemon_pid(), d.pid());
    bus.subscriber::<TestMsg>(&unique_topic("second-daemon"))
        .open_or_create()
        .expect("the first daemon still serves");
}

#[test]
fn subscribers_drain_then_see_closed_when_the_daemon_stops() {
    let mut d = daemon();
    let topic = unique_topic("drain");
    let bus = d.bus();
    let mut subscriber = bus
        .subscriber::<TestMsg>(&topic)
        .open_or_create()
        .expect("open the subscriber");
    let mut p = publ(&d, &topic, 100, &["--id", "12"]);
    assert_eq!(u(&p.finish(TRANSFER)["sent"]), 100);

    d.terminate();
    let status = d
        .wait_exit(Duration::from_secs(10))
        .expect("the daemon stops within 10 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "daemon log:\n{}", d.log());

    let mut checker = Checker::new(true);
    for i in 0..100 {
        let m = subscriber
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("pending message {i}: {e:?}"));
        checker.check(&m, m.sequence());
    }
    assert_eq!(checker.errors, Vec::<String>::new());
    assert_eq!(checker.last.get(&12), Some(&99));
    assert_eq!(
        subscriber.recv_timeout(Duration::from_secs(5)).err(),
        Some(RecvTimeoutError::Closed)
    );
    assert_eq!(subscriber.try_recv().err(), Some(TryRecvError::Closed));
}

#[test]
fn stuck_lossless_subscriber_is_evicted_after_the_timeout_and_told_so() {
    let d = Daemon::start(PEER, &["--stuck-timeout-ms", "300"]);
    let topic = unique_topic("evict");
    let bus = d.bus();
    // This process subscribes and never reads: the ring fills after 4 messages.
    let mut stuck = bus
        .subscriber::<TestMsg>(&topic)
        .capacity(4)
        .open_or_create()
        .expect("open the subscriber");
    let started = Instant::now();
    let mut p = publ(&d, &topic, 20, &["--capacity", "4", "--id", "13"]);
    let summary = p.finish(TRANSFER);
    let took = started.elapsed();
    assert_eq!(u(&summary["sent"]), 20, "summary: {summary}");
    assert!(
        took >= Duration::from_millis(300),
        "the publisher got past a full ring before the stuck timeout ({took:?})"
    );
    assert_eq!(stuck.try_recv().err(), Some(TryRecvError::Evicted));

    // The evicted entry is not reused while its port lives (a late cursor store of that port
    // must not land in another subscriber's entry): with the other entries of the default
    // table taken, one more subscriber finds the table full until the evicted port is dropped.
    let open = || bus.subscriber::<TestMsg>(&topic).open();
    let table = stuck.spec().max_subscribers;
    let others: Vec<_> = (1..table).map(|_| open().expect("a free entry")).collect();
    match open() {
        Err(e @ OpenError::TableFull { .. }) => assert!(e.to_string().contains(&topic), "{e}"),
        other => panic!("expected a full table, got {other:?}"),
    }
    drop(stuck);
    let reused = open().expect("the evicted entry is free once its port detached");
    drop((others, reused));
}
