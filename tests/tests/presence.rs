//! Presence with real processes and a real daemon: a publisher process waits for two
//! subscriber processes, sees the count fall when one is killed with `kill -9` (the daemon
//! releases its entry when its connection closes) and again when the other goes, a `WaitSet`
//! waking it at each change; a subscriber process waits for a publisher the same way; and
//! `stats` counts the messages published while nobody listened. Every wait is a wait for an
//! event, with a generous deadline.

use std::time::Duration;

use bus_client::{Bus, PresenceError};
use bus_tests::{unique_topic, Daemon, Peer, TestMsg};
use serde_json::{json, Value};

const PEER: &str = env!("CARGO_BIN_EXE_shmbus-peer");
const EVENT: Duration = Duration::from_secs(60);

fn peer(d: &Daemon, topic: &str, args: &[&str]) -> Peer {
    let mut all = vec![args[0], "--socket", d.socket_str(), "--topic", topic];
    all.extend_from_slice(&args[1..]);
    Peer::spawn(PEER, &all)
}

fn count(p: &mut Peer) -> Value {
    p.json(EVENT)["count"].clone()
}

#[test]
fn publisher_process_waits_for_two_subscribers_and_sees_a_killed_one_go() {
    let d = Daemon::start(PEER, &[]);
    let topic = unique_topic("presence-kill");
    let mut publisher = peer(&d, &topic, &["presence", "--wait", "2"]);
    publisher.expect_line("ready", EVENT);

    let mut first = peer(&d, &topic, &["hold"]);
    first.expect_line("ready", EVENT);
    let mut second = peer(&d, &topic, &["hold"]);
    second.expect_line("ready", EVENT);

    // wait_for_subscribers(2) returned, and a direct count agrees.
    assert_eq!(publisher.json(EVENT), json!({"count": 2, "direct": 2}));
    // Its one message reached both: they are attached and alive.
    first.expect_line("holding", EVENT);
    second.expect_line("holding", EVENT);
    publisher.expect_line("watching", EVENT);

    // kill -9: the daemon releases the entry when the connection closes, and rings.
    first.kill_and_reap();
    assert_eq!(
        count(&mut publisher),
        json!(1),
        "the WaitSet woke for the kill"
    );
    // Another process sees the same count from shared memory.
    let bus = d.bus();
    let observer = bus.subscriber::<TestMsg>(&topic).open().expect("observer");
    assert_eq!(observer.publisher_count(), 1);
    drop(observer);
    // The observer's attach and detach may each wake the WaitSet: counts of 2 and back to 1.
    second.kill_and_reap();
    loop {
        let c = count(&mut publisher);
        if c == json!(0) {
            break;
        }
        assert!(c == json!(1) || c == json!(2), "unexpected count {c}");
    }
    let status = publisher.wait_exit(EVENT);
    assert!(status.success(), "{}", publisher.stderr());
}

#[test]
fn subscriber_process_waits_for_a_publisher_and_sees_it_leave() {
    let d = Daemon::start(PEER, &[]);
    let topic = unique_topic("presence-sub");
    let mut subscriber = peer(&d, &topic, &["presence", "--subscriber", "--wait", "1"]);
    subscriber.expect_line("ready", EVENT);
    let bus = d.bus();
    let publisher = bus.publisher::<TestMsg>(&topic).open().expect("publisher");
    assert_eq!(subscriber.json(EVENT), json!({"count": 1, "direct": 1}));
    subscriber.expect_line("watching", EVENT);
    assert_eq!(publisher.subscriber_count(), 1);
    drop(publisher);
    assert_eq!(count(&mut subscriber), json!(0));
    let status = subscriber.wait_exit(EVENT);
    assert!(status.success(), "{}", subscriber.stderr());
}

#[test]
fn a_wait_for_peers_times_out_with_the_count_it_saw() {
    let d = Daemon::start(PEER, &[]);
    let bus: Bus = d.bus();
    let topic = unique_topic("presence-timeout");
    let publisher = bus
        .publisher::<TestMsg>(&topic)
        .create()
        .expect("publisher");
    let _subscriber = bus
        .subscriber::<TestMsg>(&topic)
        .open()
        .expect("subscriber");
    let err = publisher
        .wait_for_subscribers(2, Some(Duration::from_millis(20)))
        .expect_err("only one subscriber");
    assert_eq!(err, PresenceError::Timeout { count: 1 });
}

#[test]
fn stats_count_messages_published_while_no_subscriber_was_attached() {
    let d = Daemon::start(PEER, &[]);
    let bus = d.bus();
    let topic = unique_topic("presence-unheard");
    let mut publisher = bus
        .publisher::<TestMsg>(&topic)
        .create()
        .expect("publisher");
    let unheard = |bus: &Bus| bus.stats(Some(&topic)).expect("stats")[0].unheard;
    let mut seq = 0..;
    let mut publish = |n: usize| {
        for i in seq.by_ref().take(n) {
            publisher.publish(&TestMsg::new(1, i)).expect("publish");
        }
    };
    publish(3);
    assert_eq!(unheard(&bus), 3, "nobody listened");
    // Dropping a port waits for the daemon's answer to its detach: the daemon has rung by then.
    let listener = bus.subscriber::<TestMsg>(&topic).open().expect("listener");
    publish(5);
    assert_eq!(unheard(&bus), 3, "heard while the listener was attached");
    drop(listener);
    publish(2);
    assert_eq!(unheard(&bus), 5);
}
