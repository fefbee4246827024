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
