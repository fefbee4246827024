//! Threat: a uid granted only `subscribe` that writes everything it has mapped (its topic's
//! control file is writable to it) and asks the daemon for whatever it likes. Each test runs a
//! real `shmbusd`, honest parties as the daemon's uid, and the attacker as uid 65534 in its own
//! process (`shmbus-peer forge-*`, which drops to that uid first). The tests need root (to
//! drop to another uid) and print a notice and return without it.
//!
//! docs/security.md names these tests beside the claims they prove.

use bus_client::{Bus, OpenError};
use bus_tests::{unique_topic, Daemon, Peer, TempDir};
use serde_json::Value;

mod hostile;
use hostile::*;

/// The daemon arguments for rules that let uid 65534 only subscribe on `it/atk/**`, and a
/// socket it may reach (`--socket-group 65534`), plus `extra`.
fn nobody_subscribes_args(dir: &TempDir, extra: &[&str]) -> Vec<String> {
    let rules = write_rules(
        dir.path(),
        &format!("[[rule]]\ntopics = \"it/atk/**\"\nsubscribe = {{ uids = [{NOBODY}] }}\n"),
    );
    let mut args: Vec<String> = [
        "--",
        "--rules",
        rules.to_str().expect("utf-8"),
        "--socket-group",
        &NOBODY.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A daemon with [`nobody_subscribes_args`].
fn daemon_nobody_subscribes(tag: &str, extra: &[&str]) -> (TempDir, Daemon) {
    let dir = TempDir::new(tag);
    let args = nobody_subscribes_args(&dir, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Daemon::start(PEER, &args);
    (dir, d)
}

fn attacker(cmd: &str, d: &Daemon, topic: &str) -> Peer {
    let uid = NOBODY.to_string();
    Peer::spawn(
        PEER,
        &[
            cmd,
            "--socket",
            d.socket_str(),
            "--topic",
            topic,
            "--uid",
            &uid,
            "--gid",
            &uid,
        ],
    )
}

/// Attack: a subscriber writes a publisher entry with its own pid into the control file; the
/// daemon is killed and restarted; the subscriber asks the new daemon to hand that publisher
/// back. Before the fix the new daemon trusted the orphan list read from the control file and
/// returned the data file read-write. Now the hand-back is decided by the daemon's records
/// and the rules: the forged publisher is refused with no descriptor, and the attacker's real
/// subscriber comes back with a read-only data file; the honest subscriber receives only what
/// the honest publisher sent.
#[test]
fn a_subscriber_cannot_become_a_publisher_across_a_daemon_restart() {
    if skip_unless_root("a_subscriber_cannot_become_a_publisher_across_a_daemon_restart") {
        return;
    }
    let (dir, mut d) = daemon_nobody_subscribes("sec-forge-pub", &[]);
    let topic = unique_topic("atk/forge");
    let bus = d.bus();
    let mut publisher = bus
        .publisher::<[u8]>(&topic)
        .slot_size(64)
        .capacity(64)
        .create()
        .expect("honest publisher");
    let mut subscriber = bus
        .subscriber::<[u8]>(&topic)
        .open()
        .expect("honest subscriber");
    let mut atk = attacker("forge-publisher", &d, &topic);
    let forged = atk.json(START);
    assert!(forged["forged"]["index"].is_u64(), "{forged}");

    d.kill();
    let again = nobody_subscribes_args(&dir, &["--adopt-grace-ms", "3000"]);
    let again: Vec<&str> = again.iter().map(String::as_str).collect();
    d.restart(&again);
    // The honest ports follow the restart on their next call.
    publisher
        .publish(b"honest-1")
        .expect("publish after the restart");
    let got = subscriber
        .recv_timeout(TRANSFER)
        .expect("the honest subscriber follows the restart");
    assert_eq!(&got[..], b"honest-1");
    drop(got);

    let answer: Value = atk.json(TRANSFER);
    assert_eq!(
        answer["publisher"]["code"], "BadRequest",
        "the forged publisher must not come back: {answer}"
    );
    assert_eq!(answer["publisher_fds"], serde_json::json!([]), "{answer}");
    assert_eq!(
        answer["subscriber"]["ok"], "attached",
        "the attacker's real subscriber comes back: {answer}"
    );
    assert_eq!(
        answer["subscriber_fds"],
        serde_json::json!(["read-write", "read-only"]),
        "a subscriber's data file is read-only: {answer}"
    );
    atk.wait_exit(START);
    // Nothing but the honest publisher's messages arrive.
    for i in 2..20u32 {
        let m = format!("honest-{i}");
        publisher.publish(m.as_bytes()).expect("publish");
        let got = subscriber.recv_timeout(TRANSFER).expect("receive");
        assert_eq!(&got[..], m.as_bytes());
    }
}

/// Attack: a subscriber fills its topic's subscriber table with forged entries (pid 1, cursors
/// at the oldest message) and exits. Before the fix they outlived it: new subscribers got
/// `TableFull`, and the lossless topic stayed held far beyond the stuck timeout, since the
/// watch evicted only entries the daemon had handed out. Now an honest subscriber still opens
/// (the daemon frees entries it never handed out when the table looks full) and an honest
/// publisher sends more than a ring's worth (the watch frees them when the ring is held).
#[test]
fn forged_subscriber_entries_neither_fill_the_table_nor_hold_the_ring() {
    if skip_unless_root("forged_subscriber_entries_neither_fill_the_table_nor_hold_the_ring") {
        return;
    }
    let (_dir, d) = daemon_nobody_subscribes("sec-ghosts", &["--stuck-timeout-ms", "60000"]);
    let topic = unique_topic("atk/ghosts");
    let bus = d.bus();
    let mut publisher = bus
        .publisher::<[u8]>(&topic)
        .slot_size(64)
        .capacity(16)
        .max_subscribers(4)
        .create()
        .expect("honest publisher");
    let mut atk = attacker("forge-subscribers", &d, &topic);
    let v = atk.json(START);
    assert_eq!(v["forged"], 3, "the rest of a 4-entry table: {v}");
    atk.wait_exit(START);
    // The table looks full: the daemon frees what it never handed out.
    let mut subscriber = bus
        .subscriber::<[u8]>(&topic)
        .open()
        .expect("an honest subscriber opens despite the forged entries");
    // More than a ring's worth, each received: nothing forged holds the ring (the stuck
    // timeout is a minute, so no eviction by age is involved).
    for i in 0..64u32 {
        publisher
            .send_timeout(&i.to_le_bytes(), TRANSFER)
            .unwrap_or_else(|e| panic!("send {i}: {e}; daemon log:\n{}", d.log()));
        let got = subscriber.recv_timeout(TRANSFER).expect("receive");
        assert_eq!(&got[..], &i.to_le_bytes());
    }
    let log = d.log();
    assert!(log.contains("never handed out"), "{log}");
}

/// Grants mean what they say: `subscribe` does not create. A subscribe-only uid that opens a
/// missing topic with `open_or_create()` is refused, naming the `create` right, and the topic
/// does not exist afterwards; the daemon's uid creates as before.
#[test]
fn subscribe_does_not_grant_create() {
    if skip_unless_root("subscribe_does_not_grant_create") {
        return;
    }
    let (_dir, d) = daemon_nobody_subscribes("sec-create", &[]);
    let topic = unique_topic("atk/squat");
    let (v, _p) = probe_as_nobody(&d, &[&topic], false);
    let r = topic_result(&v, &topic);
    assert!(
        r.starts_with("permission_denied") && r.contains("create"),
        "a subscribe-only uid created '{topic}': {r}"
    );
    let bus: Bus = d.bus();
    assert!(matches!(
        bus.subscriber::<[u8]>(&topic).open(),
        Err(OpenError::NotFound { .. })
    ));
    bus.publisher::<bus_tests::TestMsg>(&topic)
        .create()
        .expect("the daemon's uid creates");
    let (v, _p) = probe_as_nobody(&d, &[&topic], false);
    assert_eq!(topic_result(&v, &topic), "ok", "and nobody may subscribe");
}

/// `strace -f -c` of a `shmbus-peer pub` of `count` messages, `interval_us` apart.
fn traced_publish(
    d: &Daemon,
    dir: &TempDir,
    topic: &str,
    count: u64,
    interval_us: u64,
    tag: &str,
) -> std::collections::BTreeMap<String, u64> {
    let out = dir.path().join(format!("strace-{tag}.txt"));
    let status = std::process::Command::new("strace")
        .args(["-f", "-c", "-o"])
        .arg(&out)
        .arg(PEER)
        .args(["pub", "--socket", d.socket_str(), "--topic", topic])
        .args(["--count", &count.to_string()])
        .args(["--interval-us", &interval_us.to_string()])
        .status()
        .expect("run strace (the CI installs it)");
    assert!(status.success(), "strace pub: {status}");
    bus_tests::strace_calls(&out)
}

fn eventfds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.as_os_str() == "anon_inode:[eventfd]")
                })
                .count()
        })
        .unwrap_or(0)
}

/// Attack: a subscriber sets every armed bit of its topic's bells, over and over (forged
/// wake-ups for all 256 wake slots). Before the fix each forged bit made a publisher fetch a
/// descriptor from the daemon and write it (937x slower `try_send`, a map that grew without
/// bound), and the waiters' eventfds were handed to any port holder, which could block them.
/// Now a ringer wakes the bell's word once whatever bits are set, and a waiter's eventfd never
/// leaves its process (the daemon holds none for it): under the storm an honest publisher
/// makes at most one `futex` call per message, no write and no request more than without it,
/// and an honest `WaitSet` waiter in another process receives its messages.
#[test]
fn forged_wake_bits_cost_a_publisher_one_futex_call_and_reach_no_descriptor() {
    if skip_unless_root("forged_wake_bits_cost_a_publisher_one_futex_call_and_reach_no_descriptor")
    {
        return;
    }
    let (dir, d) = daemon_nobody_subscribes("sec-storm", &[]);
    let topic = unique_topic("atk/storm");
    let bus = d.bus();
    // A small lossy ring: a waiter that is not woken while the messages come loses them
    // (`Lagged`), so a hidden wake-up cannot go unnoticed.
    bus.publisher::<bus_tests::TestMsg>(&topic)
        .lossy()
        .capacity(16)
        .create()
        .expect("the topic");
    let count = 600;
    let base = traced_publish(&d, &dir, &topic, count, 500, "base");

    let daemon_eventfds = eventfds_of(d.pid());
    let count_s = "300".to_string();
    let mut waiter = Peer::spawn(
        PEER,
        &[
            "waitset",
            "--socket",
            d.socket_str(),
            "--topic",
            &topic,
            "--count",
            &count_s,
            "--timeout-ms",
            "30000",
        ],
    );
    waiter.expect_line("ready", START);
    assert_eq!(
        eventfds_of(d.pid()),
        daemon_eventfds,
        "the daemon took a waiter's eventfd"
    );
    // The storm outlasts the waiter's own deadline: a wake-up it hid would end the waiter
    // with "timeout", not "count".
    let uid = NOBODY.to_string();
    let mut atk = Peer::spawn(
        PEER,
        &[
            "storm-wake-bits",
            "--socket",
            d.socket_str(),
            "--topic",
            &topic,
            "--uid",
            &uid,
            "--gid",
            &uid,
            "--seconds",
            "300",
        ],
    );
    let v = atk.json(START);
    assert_eq!(v["storming"], true, "{v}");

    let storm = traced_publish(&d, &dir, &topic, count, 500, "storm");
    let summary = waiter.finish(TRANSFER);
    assert_eq!(
        summary["outcome"], "count",
        "the waiter under the storm: {summary}"
    );
    assert_eq!(
        summary["topics"][&topic]["error_count"], 0,
        "the waiter under the storm missed messages: {summary}"
    );
    let call =
        |m: &std::collections::BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    for k in ["write", "sendmsg", "recvmsg", "openat", "mmap"] {
        assert_eq!(
            call(&storm, k),
            call(&base, k),
            "{k}: under the storm {storm:?}\nwithout it {base:?}"
        );
    }
    assert!(
        call(&storm, "futex") <= call(&base, "futex") + count + 16,
        "more than one futex call per message: {storm:?}\nwithout the storm {base:?}"
    );
    atk.kill_and_reap();
}

/// A watch announces only topics its owner may subscribe to: a uid granted `it/atk/**` that
/// watches every topic (`**`) is told of a topic created there and of its deletion, and never
/// of a topic created and deleted elsewhere meanwhile.
#[test]
fn a_watch_never_names_a_topic_its_owner_may_not_see() {
    if skip_unless_root("a_watch_never_names_a_topic_its_owner_may_not_see") {
        return;
    }
    let (_dir, d) = daemon_nobody_subscribes("sec-watch", &[]);
    let uid = NOBODY.to_string();
    let mut watcher = Peer::spawn(
        PEER,
        &[
            "watch-as",
            "--socket",
            d.socket_str(),
            "--pattern",
            "**",
            "--uid",
            &uid,
            "--gid",
            &uid,
            "--seconds",
            "3",
        ],
    );
    let v = watcher.json(START);
    assert_eq!(v["watching"], "**", "{v}");
    let secret = unique_topic("secret/hidden");
    let visible = unique_topic("atk/seen");
    let bus = d.bus();
    let hidden = bus
        .publisher::<[u8]>(&secret)
        .slot_size(64)
        .create()
        .expect("a topic nobody may not see");
    let seen = bus
        .publisher::<[u8]>(&visible)
        .slot_size(64)
        .create()
        .expect("a topic nobody may subscribe to");
    let v = watcher.json(START);
    assert_eq!(v["created"], visible.as_str(), "{v}");
    drop((hidden, seen));
    bus.delete(&secret).expect("delete the hidden topic");
    bus.delete(&visible).expect("delete the visible topic");
    let mut rest = Vec::new();
    loop {
        let v = watcher.json(TRANSFER);
        if v.get("end").is_some() {
            break;
        }
        rest.push(v);
    }
    assert_eq!(
        rest,
        vec![serde_json::json!({ "deleted": visible })],
        "the watcher of another uid saw more than its topic"
    );
}
