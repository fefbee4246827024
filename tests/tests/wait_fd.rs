//! A `WaitSet` in a foreign event loop, with a real daemon and publisher processes: `poll()` on
//! its descriptor wakes when another process publishes, `try_wait` names the ready
//! subscriber, and a quiet loop (nothing published, or a ready subscriber left unread) sleeps
//! until `timeout_hint` instead of spinning.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use bus_client::{AttachmentId, Subscriber, TryRecvError, WaitSet};
use bus_tests::{unique_topic, Checker, Daemon, Peer, TestMsg};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

const PEER: &str = env!("CARGO_BIN_EXE_shmbus-peer");
const TRANSFER: Duration = Duration::from_secs(60);

fn publisher(d: &Daemon, topic: &str, id: u64, count: u64, interval_us: u64) -> Peer {
    let (id, count, pace) = (id.to_string(), count.to_string(), interval_us.to_string());
    Peer::spawn(
        PEER,
        &[
            "pub",
            "--socket",
            d.socket_str(),
            "--topic",
            topic,
            "--count",
            &count,
            "--id",
            &id,
            "--interval-us",
            &pace,
        ],
    )
}

/// What one turn of a poll loop saw.
struct Turn {
    /// `poll` said the descriptor is readable (else it timed out).
    readable: bool,
    ready: Vec<AttachmentId>,
}

/// One turn of the loop a foreign event loop runs: poll the descriptor for at most the hint
/// (capped at `cap`), then `try_wait`.
fn turn(set: &mut WaitSet, cap: Duration) -> Turn {
    let wait = set.timeout_hint().unwrap_or(cap).min(cap);
    let ms = i32::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX);
    let readable = {
        let mut fds = [PollFd::new(set.as_fd(), PollFlags::POLLIN)];
        let n = poll(&mut fds, PollTimeout::try_from(ms).expect("timeout")).expect("poll");
        n > 0
    };
    let ready = set.try_wait().expect("try_wait").to_vec();
    Turn { readable, ready }
}

fn drain(sub: &mut Subscriber<TestMsg>, checker: &mut Checker) {
    loop {
        match sub.try_recv() {
            Ok(m) => {
                let seq = m.sequence();
                checker.check(&m, seq);
            }
            Err(TryRecvError::Empty) => return,
            Err(e) => panic!("try_recv: {e}"),
        }
    }
}

/// Turns of the loop over `span` with nothing to read: (turns, readable wake-ups, reports).
fn quiet_turns(set: &mut WaitSet, span: Duration) -> (u32, u32, u32) {
    let start = Instant::now();
    let (mut turns, mut readable, mut reports) = (0, 0, 0);
    while start.elapsed() < span {
        let t = turn(set, span);
        turns += 1;
        readable += u32::from(t.readable);
        reports += t.ready.len() as u32;
    }
    (turns, readable, reports)
}

#[test]
fn poll_on_a_waitset_fd_wakes_for_other_processes_and_sleeps_when_quiet() {
    let d = Daemon::start(PEER, &[]);
    let bus = d.bus();
    let topics = [unique_topic("fd-a"), unique_topic("fd-b")];
    let mut subs: Vec<Subscriber<TestMsg>> = topics
        .iter()
        .map(|t| {
            bus.subscriber::<TestMsg>(t)
                .open_or_create()
                .expect("subscriber")
        })
        .collect();
    let mut set = WaitSet::new().expect("wait set");
    let attachments: Vec<_> = subs
        .iter()
        .map(|s| set.attach_subscriber(s).expect("attach"))
        .collect();
    let ids: Vec<AttachmentId> = attachments.iter().map(|a| a.id()).collect();

    // Before the first try_wait nothing is armed: the hint says to call it now.
    assert_eq!(set.timeout_hint(), Some(Duration::ZERO));
    assert!(set.try_wait().expect("first pass").is_empty());
    // Armed, with the daemon alive: only the descriptor can make anything ready.
    assert_eq!(
        set.timeout_hint(),
        None,
        "no periodic look while the daemon lives"
    );

    // Quiet: the loop wakes neither for the descriptor nor for a periodic look.
    let (turns, readable, reports) = quiet_turns(&mut set, Duration::from_millis(300));
    assert_eq!((readable, reports), (0, 0), "quiet, {turns} turns");
    assert!(turns <= 6, "{turns} turns of the loop in 300 ms of quiet");

    // Two publisher processes, one per topic, at two paces; the loop reads what poll says.
    let n = 200u64;
    let mut pubs = [
        publisher(&d, &topics[0], 1, n, 200),
        publisher(&d, &topics[1], 2, n, 1000),
    ];
    let mut checkers = [Checker::new(true), Checker::new(true)];
    let deadline = Instant::now() + TRANSFER;
    let (mut turns, mut readable) = (0u32, 0u32);
    while checkers.iter().any(|c| c.received < n) {
        assert!(
            Instant::now() < deadline,
            "received {} and {} of {n}",
            checkers[0].received,
            checkers[1].received
        );
        let t = turn(&mut set, Duration::from_secs(1));
        turns += 1;
        readable += u32::from(t.readable);
        for id in t.ready {
            let i = ids.iter().position(|x| *x == id).expect("a known id");
            drain(&mut subs[i], &mut checkers[i]);
        }
    }
    for (i, c) in checkers.iter().enumerate() {
        assert_eq!(c.error_count, 0, "{}: {:?}", topics[i], c.errors);
        assert_eq!(c.count.get(&(i as u64 + 1)), Some(&n), "{}", topics[i]);
    }
    assert!(readable > 0, "poll never saw the descriptor readable");
    for p in &mut pubs {
        let status = p.wait_exit(TRANSFER);
        assert!(status.success(), "{}: {status}: {}", p.name(), p.stderr());
    }
    eprintln!("{turns} turns ({readable} readable) for {} messages", 2 * n);

    // Quiet again after the burst: at most one stale wake-up left from the last messages.
    let (turns, readable, reports) = quiet_turns(&mut set, Duration::from_millis(300));
    assert!(
        readable <= 1 && reports == 0 && turns <= 7,
        "after the burst: {turns} turns, {readable} readable, {reports} reports"
    );

    // A ready subscriber left unread is reported once, then the loop sleeps: no spin on
    // readiness nobody drains.
    let mut one = publisher(&d, &topics[0], 1, 1, 0);
    assert!(one.wait_exit(TRANSFER).success(), "{}", one.stderr());
    let mut reported = 0;
    let start = Instant::now();
    while reported == 0 {
        assert!(start.elapsed() < TRANSFER, "the message was never reported");
        reported += turn(&mut set, Duration::from_secs(1))
            .ready
            .iter()
            .filter(|id| **id == ids[0])
            .count();
    }
    let (turns, readable, reports) = quiet_turns(&mut set, Duration::from_millis(300));
    assert!(
        readable <= 1 && reports == 0 && turns <= 7,
        "unread: {turns} turns, {readable} readable, {reports} reports"
    );
    // Still there to read, and reported again once something new arrives.
    assert_eq!(subs[0].try_recv().expect("the unread message").seq, 0);
    let mut more = publisher(&d, &topics[0], 3, 1, 0);
    assert!(more.wait_exit(TRANSFER).success(), "{}", more.stderr());
    let t = turn(&mut set, Duration::from_secs(10));
    assert!(t.readable && t.ready == [ids[0]], "after a new message");
    drop(attachments);
}

/// Read what a subscriber has, tolerating the errors a port may report around a daemon
/// restart; returns how many errors it saw.
fn drain_lenient(sub: &mut Subscriber<TestMsg>, checker: &mut Checker) -> u32 {
    let mut errors = 0;
    loop {
        match sub.try_recv() {
            Ok(m) => {
                let seq = m.sequence();
                checker.check(&m, seq);
            }
            Err(TryRecvError::Empty) => return errors,
            Err(_) => {
                errors += 1;
                if errors > 100 {
                    return errors;
                }
            }
        }
    }
}

#[test]
fn a_poll_loop_on_the_fd_follows_a_daemon_restart() {
    let mut d = Daemon::start(PEER, &[]);
    let bus = d.bus();
    let topic = unique_topic("fd-restart");
    let mut sub = bus
        .subscriber::<TestMsg>(&topic)
        .open_or_create()
        .expect("subscriber");
    let mut set = WaitSet::new().expect("wait set");
    let attachment = set.attach_subscriber(&sub).expect("attach");
    assert!(set.try_wait().expect("first pass").is_empty());

    let n = 50u64;
    let mut checker = Checker::new(true);
    let mut first = publisher(&d, &topic, 1, n, 100);
    let deadline = Instant::now() + TRANSFER;
    while checker.received < n {
        assert!(
            Instant::now() < deadline,
            "received {} of {n}",
            checker.received
        );
        if turn(&mut set, Duration::from_secs(1))
            .ready
            .contains(&attachment.id())
        {
            drain(&mut sub, &mut checker);
        }
    }
    assert!(first.wait_exit(TRANSFER).success(), "{}", first.stderr());
    assert_eq!(checker.error_count, 0, "{:?}", checker.errors);

    // The daemon restarts. Its descriptor stays quiet, but the hint brings the loop back
    // every 100 ms and try_wait reports the orphaned port until a receive hands it back;
    // then the wait set registers with the new daemon.
    drop(bus);
    d.kill();
    d.restart(&[]);
    let bus = d.bus();
    let registered = || {
        bus.stats(Some(&topic))
            .is_ok_and(|s| s.iter().all(|t| t.wakers.len() == 1))
    };
    let mut checker = Checker::new(true);
    let start = Instant::now();
    let (mut turns, mut reports) = (0u32, 0u32);
    while !registered() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not registered with the new daemon after {turns} turns, {reports} reports: {:?}",
            bus.stats(None)
        );
        let t = turn(&mut set, Duration::from_secs(1));
        turns += 1;
        if t.ready.contains(&attachment.id()) {
            reports += 1;
            drain_lenient(&mut sub, &mut checker);
        }
    }
    assert!(reports >= 1, "the orphaned port was never reported");
    // Then a publisher of the new daemon wakes the loop as before.
    let mut second = publisher(&d, &topic, 2, n, 100);
    let deadline = Instant::now() + TRANSFER;
    let mut readable = 0;
    while checker.count.get(&2).copied().unwrap_or(0) < n {
        assert!(
            Instant::now() < deadline,
            "received {:?} after the restart",
            checker.count
        );
        let t = turn(&mut set, Duration::from_secs(1));
        readable += u32::from(t.readable);
        if t.ready.contains(&attachment.id()) {
            drain(&mut sub, &mut checker);
        }
    }
    assert!(second.wait_exit(TRANSFER).success(), "{}", second.stderr());
    assert_eq!(checker.error_count, 0, "{:?}", checker.errors);
    assert!(
        readable > 0,
        "the descriptor never woke the loop after the restart"
    );
}
