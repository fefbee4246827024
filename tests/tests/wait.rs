//! Waiting on many topics and in async code, with real processes and a real daemon: a
//! `WaitSet` over three topics fed by three publisher processes, tokio `select!` over
//! `recv_async` with cancellation, the wake slots' cost to publishers (system calls counted
//! with `strace -f -c`), a waiter killed while armed, a daemon restarted under waiters, and the
//! open-file limit.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::process::Command;
use std::task::Poll;
use std::time::{Duration, Instant};

use bus_client::{Bus, Publisher, Subscriber, TryRecvError, TrySendError, WaitSet, WakerStat};
use bus_tests::{proc_state, unique_topic, wait_until, Daemon, Peer, TestMsg};
use serde_json::Value;

const PEER: &str = env!("CARGO_BIN_EXE_shmbus-peer");
const START: Duration = Duration::from_secs(10);
const TRANSFER: Duration = Duration::from_secs(60);

fn daemon() -> Daemon {
    Daemon::start(PEER, &[])
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

/// A `pub` peer sending `count` messages as publisher `id` from `first_seq`.
fn publisher(d: &Daemon, topic: &str, id: u64, first_seq: u64, count: u64, extra: &[&str]) -> Peer {
    let (id, first, count) = (id.to_string(), first_seq.to_string(), count.to_string());
    let mut args = vec![
        "pub",
        "--socket",
        d.socket_str(),
        "--topic",
        topic,
        "--count",
        &count,
        "--id",
        &id,
        "--first-seq",
        &first,
    ];
    args.extend_from_slice(extra);
    Peer::spawn(PEER, &args)
}

fn finish_all(peers: &mut [Peer]) {
    for p in peers {
        let status = p.wait_exit(TRANSFER);
        assert!(
            status.success(),
            "{} failed: {status}; stderr: {}",
            p.name(),
            p.stderr()
        );
    }
}

/// A waiting peer's summary shows, for each topic `i`, every message of publisher `i + 1` from
/// 0 to `count - 1`, in order, and nothing else.
fn assert_every_message(summary: &Value, topics: &[String], count: u64) {
    assert_eq!(summary["outcome"], "count", "summary: {summary}");
    for (i, t) in topics.iter().enumerate() {
        let s = &summary["topics"][t];
        let id = (i + 1).to_string();
        assert_eq!(u(&s["error_count"]), 0, "{t}: {s}");
        assert_eq!(u(&s["received"]), count, "{t}: {s}");
        assert_eq!(u(&s["first"][&id]), 0, "{t}: {s}");
        assert_eq!(u(&s["last"][&id]), count - 1, "{t}: {s}");
        assert_eq!(s["last"].as_object().map(|o| o.len()), Some(1), "{t}: {s}");
    }
}

/// User plus system CPU time of a process, in clock ticks (all its threads).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/pid/stat");
    // Fields after the command name (which is in parentheses and may hold spaces): state is
    // the 3rd field, utime the 14th and stime the 15th.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Over `span`, the process is asleep whenever looked at and uses almost no CPU: a waiter that
/// spun would show state `R` and about one tick per 10 ms.
fn assert_sleeps(pid: u32, span: Duration, what: &str) {
    let before = cpu_ticks(pid);
    let started = Instant::now();
    let (mut looks, mut asleep) = (0, 0);
    while started.elapsed() < span {
        looks += 1;
        if proc_state(pid) == Some('S') {
            asleep += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let used = cpu_ticks(pid) - before;
    // A spinning waiter uses span/10ms ticks (100 in 1 s); a sleeping one wakes each slice to
    // look at the daemon's epoch and uses none or one.
    assert!(
        used <= 5,
        "{what}: used {used} ticks of CPU in {span:?} while nothing was published"
    );
    assert!(
        asleep * 10 >= looks * 9,
        "{what}: asleep at {asleep} of {looks} looks"
    );
}

#[test]
fn waitset_on_three_topics_receives_everything_in_order_and_sleeps_when_quiet() {
    let d = daemon();
    let topics: Vec<String> = (0..3).map(|i| unique_topic(&format!("ws{i}"))).collect();
    let n = 4000u64;
    let count = (2 * n).to_string();
    let mut args = vec!["waitset", "--socket", d.socket_str(), "--count", &count];
    for t in &topics {
        args.extend_from_slice(&["--topic", t]);
    }
    let mut waiter = Peer::spawn(PEER, &args);
    waiter.expect_line("ready", START);
    assert_sleeps(
        waiter.pid(),
        Duration::from_secs(1),
        "the waiter before any message",
    );

    // Three publisher processes at three paces: flat out, every 50 µs, every 500 µs.
    let paces: [&[&str]; 3] = [&[], &["--interval-us", "50"], &["--interval-us", "500"]];
    let mut pubs: Vec<Peer> = topics
        .iter()
        .enumerate()
        .map(|(i, t)| publisher(&d, t, i as u64 + 1, 0, n, paces[i]))
        .collect();
    finish_all(&mut pubs);
    // Everything so far read (no subscriber lags), then quiet.
    let bus = d.bus();
    assert!(
        wait_until(TRANSFER, Duration::from_millis(20), || {
            topics.iter().all(|t| {
                bus.stats(Some(t)).is_ok_and(|s| {
                    s.iter()
                        .all(|t| t.published == n && t.subscribers.iter().all(|s| s.lag == 0))
                })
            })
        }),
        "the waiter did not read the first half: {:?}",
        bus.stats(None)
    );
    assert_sleeps(
        waiter.pid(),
        Duration::from_secs(1),
        "the waiter between bursts",
    );

    let mut pubs: Vec<Peer> = topics
        .iter()
        .enumerate()
        .map(|(i, t)| publisher(&d, t, i as u64 + 1, n, n, paces[(i + 1) % 3]))
        .collect();
    finish_all(&mut pubs);
    let summary = waiter.finish(TRANSFER);
    assert_every_message(&summary, &topics, 2 * n);
}

#[test]
fn tokio_select_over_three_topics_loses_nothing_to_cancelled_receives() {
    let d = daemon();
    let topics: Vec<String> = (0..3).map(|i| unique_topic(&format!("sel{i}"))).collect();
    let n = 1000u64;
    let count = n.to_string();
    let mut args = vec![
        "tokio-select",
        "--socket",
        d.socket_str(),
        "--count",
        &count,
        "--cancel-ms",
        "1",
    ];
    for t in &topics {
        args.extend_from_slice(&["--topic", t]);
    }
    let mut waiter = Peer::spawn(PEER, &args);
    waiter.expect_line("ready", START);
    // Every round of select! drops two receives mid-wait; the 2 ms publisher leaves gaps in
    // which the 1 ms timer cancels all three.
    let paces: [&[&str]; 3] = [&[], &["--interval-us", "200"], &["--interval-us", "2000"]];
    let mut pubs: Vec<Peer> = topics
        .iter()
        .enumerate()
        .map(|(i, t)| publisher(&d, t, i as u64 + 1, 0, n, paces[i]))
        .collect();
    finish_all(&mut pubs);
    let summary = waiter.finish(TRANSFER);
    assert_every_message(&summary, &topics, n);
    assert!(
        u(&summary["extra"]["cancels"]) > 0,
        "no receive was cancelled by the timer: {summary}"
    );
}

/// `strace -f -c` of a `pub` peer sending `count` messages: system call → calls.
fn publish_syscalls(d: &Daemon, topic: &str, count: u64, tag: &str) -> BTreeMap<String, u64> {
    let out = d.dir().join(format!("strace-{tag}-{count}.txt"));
    let count_s = count.to_string();
    let status = Command::new("strace")
        .args(["-f", "-c", "-o"])
        .arg(&out)
        .arg(PEER)
        .args(["pub", "--socket", d.socket_str(), "--topic", topic])
        .args(["--count", &count_s])
        .status()
        .expect("run strace (the CI installs it)");
    assert!(status.success(), "strace pub: {status}");
    bus_tests::strace_calls(&out)
}

fn calls(m: &BTreeMap<String, u64>, name: &str) -> u64 {
    m.get(name).copied().unwrap_or(0)
}

/// Publishing 50 times as many messages costs no more system calls: none per publish.
fn assert_no_syscall_per_publish(
    few: &BTreeMap<String, u64>,
    many: &BTreeMap<String, u64>,
    what: &str,
) {
    // The peer's parent watchdog wakes every 200 ms (`clock_nanosleep`, `getppid`), so a run
    // that lasts longer makes those calls whatever publishing does: they are not counted.
    let publishing = |m: &BTreeMap<String, u64>| {
        calls(m, "total")
            - calls(m, "clock_nanosleep")
            - calls(m, "nanosleep")
            - calls(m, "getppid")
    };
    let (a, b) = (publishing(few), publishing(many));
    assert!(
        b <= a + 3 && calls(many, "write") <= calls(few, "write") && calls(many, "futex") <= calls(few, "futex") + 2,
        "{what}: 1000 messages made {a} system calls, 50000 made {b}\n1000: {few:?}\n50000: {many:?}"
    );
}

fn make_lossy_topic(d: &Daemon, topic: &str) {
    let bus = d.bus();
    bus.publisher::<TestMsg>(topic)
        .lossy()
        .capacity(1024)
        .create()
        .expect("create the topic");
}

fn wakers(bus: &Bus, topic: &str) -> Vec<WakerStat> {
    bus.stats(Some(topic))
        .expect("stats")
        .into_iter()
        .next()
        .expect("the topic")
        .wakers
}

fn arm_peer(d: &Daemon, topic: &str, how: &[&str], line: &str) -> Peer {
    let mut args = vec!["arm", "--socket", d.socket_str(), "--topic", topic];
    args.extend_from_slice(how);
    let mut p = Peer::spawn(PEER, &args);
    p.expect_line(line, START);
    p
}

/// The publish path's system calls, counted: with no waiter, with a registered waiter that is
/// busy (not armed), with one armed once (woken by the first publish, then satisfied), and
/// after an armed waiter was killed with -9. A paced publisher with a waiter that sleeps
/// between messages shows that the count sees the wake-ups when they happen (and that a
/// publisher that attached before the waiter learns of it).
#[test]
fn publishing_makes_no_system_call_unless_a_waiter_sleeps() {
    let d = daemon();
    let bus = d.bus();
    let (few, many) = (1_000, 50_000);

    let none = unique_topic("sys-none");
    make_lossy_topic(&d, &none);
    let none_few = publish_syscalls(&d, &none, few, "none");
    let none_many = publish_syscalls(&d, &none, many, "none");
    assert_no_syscall_per_publish(&none_few, &none_many, "no waiter");

    let registered = unique_topic("sys-registered");
    make_lossy_topic(&d, &registered);
    let _waiter = arm_peer(&d, &registered, &["--register-only"], "registered");
    let ws = wakers(&bus, &registered);
    assert!(ws.len() == 1 && !ws[0].armed, "wakers: {ws:?}");
    let reg_few = publish_syscalls(&d, &registered, few, "registered");
    let reg_many = publish_syscalls(&d, &registered, many, "registered");
    assert_no_syscall_per_publish(&reg_few, &reg_many, "a registered waiter");
    assert_eq!(calls(&reg_few, "write"), calls(&none_few, "write"));

    let once = unique_topic("sys-once");
    make_lossy_topic(&d, &once);
    let _waiter = arm_peer(&d, &once, &["--once"], "armed");
    let ws = wakers(&bus, &once);
    assert!(ws.len() == 1 && ws[0].armed, "wakers: {ws:?}");
    let once_few = publish_syscalls(&d, &once, few, "once");
    // The first publish took the armed bit and woke the bell's word once (the waiter's own
    // process writes its eventfd): one futex call, no write, nothing asked of the daemon.
    assert_eq!(
        calls(&once_few, "futex"),
        calls(&none_few, "futex") + 1,
        "armed once: {once_few:?}\nno waiter: {none_few:?}"
    );
    assert_eq!(calls(&once_few, "write"), calls(&none_few, "write"));
    assert_eq!(calls(&once_few, "sendmsg"), calls(&none_few, "sendmsg"));
    assert!(!wakers(&bus, &once)[0].armed);
    let once_many = publish_syscalls(&d, &once, many, "once");
    assert_no_syscall_per_publish(&none_many, &once_many, "a waiter armed once, since woken");
    assert_eq!(calls(&once_many, "write"), calls(&none_many, "write"));

    let killed = unique_topic("sys-killed");
    make_lossy_topic(&d, &killed);
    let mut waiter = arm_peer(&d, &killed, &[], "armed");
    // It prints `armed` just before its first wait arms the slot.
    assert!(
        wait_until(START, Duration::from_millis(5), || {
            let ws = wakers(&bus, &killed);
            ws.len() == 1 && ws[0].armed
        }),
        "the waiter did not arm: {:?}",
        wakers(&bus, &killed)
    );
    waiter.kill_and_reap();
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
            wakers(&bus, &killed).is_empty()
        }),
        "the daemon did not reclaim the dead waiter's slot: {:?}",
        wakers(&bus, &killed)
    );
    let killed_few = publish_syscalls(&d, &killed, few, "killed");
    let killed_many = publish_syscalls(&d, &killed, many, "killed");
    assert_no_syscall_per_publish(&killed_few, &killed_many, "after the armed waiter died");
    assert_eq!(calls(&killed_few, "write"), calls(&none_few, "write"));

    // The control: a publisher (attached first) paced at 2 ms, a WaitSet waiter that reads
    // 300 messages and sleeps between them: about one futex wake-up per message.
    let paced = unique_topic("sys-paced");
    make_lossy_topic(&d, &paced);
    let out = d.dir().join("strace-paced.txt");
    let mut traced = Command::new("strace")
        .args(["-f", "-c", "-o"])
        .arg(&out)
        .arg(PEER)
        .args(["pub", "--socket", d.socket_str(), "--topic", &paced])
        .args(["--count", "1500", "--interval-us", "2000", "--id", "1"])
        .spawn()
        .expect("run strace");
    assert!(
        wait_until(START, Duration::from_millis(10), || {
            bus.stats(Some(&paced))
                .is_ok_and(|s| s.iter().any(|t| t.published > 0))
        }),
        "the paced publisher did not start"
    );
    let mut waiter = Peer::spawn(
        PEER,
        &[
            "waitset",
            "--socket",
            d.socket_str(),
            "--topic",
            &paced,
            "--count",
            "300",
        ],
    );
    waiter.expect_line("ready", START);
    let summary = waiter.finish(TRANSFER);
    assert_eq!(summary["outcome"], "count", "{summary}");
    let status = traced.wait().expect("strace");
    assert!(status.success(), "strace pub: {status}");
    let paced_calls = bus_tests::strace_calls(&out);
    let written = calls(&paced_calls, "futex").saturating_sub(calls(&none_few, "futex"));
    assert!(
        written >= 100,
        "a waiter that slept between 300 messages was woken by {written} futex calls: {paced_calls:?}"
    );
    eprintln!(
        "publish path system calls (strace -f -c of a pub process): no waiter {few}: {} total / \
         {many}: {}; registered {}/{}; armed once {}/{} (futex {} / {}); killed armed {}/{}; \
         paced with a sleeping waiter: {written} futex calls",
        calls(&none_few, "total"),
        calls(&none_many, "total"),
        calls(&reg_few, "total"),
        calls(&reg_many, "total"),
        calls(&once_few, "total"),
        calls(&once_many, "total"),
        calls(&once_few, "futex"),
        calls(&once_many, "futex"),
        calls(&killed_few, "total"),
        calls(&killed_many, "total"),
    );
}

#[test]
fn waitset_and_async_receiver_keep_working_across_a_daemon_restart() {
    let mut d = daemon();
    let topics: Vec<String> = (0..3).map(|i| unique_topic(&format!("rs{i}"))).collect();
    let n = 500u64;
    let count = (2 * n).to_string();
    let mut waitset_args = vec!["waitset", "--socket", d.socket_str(), "--count", &count];
    let mut select_args = vec![
        "tokio-select",
        "--socket",
        d.socket_str(),
        "--count",
        &count,
    ];
    for t in &topics {
        waitset_args.extend_from_slice(&["--topic", t]);
        select_args.extend_from_slice(&["--topic", t]);
    }
    let mut waitset = Peer::spawn(PEER, &waitset_args);
    waitset.expect_line("ready", START);
    let mut select = Peer::spawn(PEER, &select_args);
    select.expect_line("ready", START);

    let mut pubs: Vec<Peer> = topics
        .iter()
        .enumerate()
        .map(|(i, t)| publisher(&d, t, i as u64 + 1, 0, n, &["--interval-us", "100"]))
        .collect();
    finish_all(&mut pubs);
    let bus = d.bus();
    assert!(
        wait_until(TRANSFER, Duration::from_millis(20), || {
            topics.iter().all(|t| {
                bus.stats(Some(t)).is_ok_and(|s| {
                    s.iter().all(|t| {
                        t.subscribers.len() == 2
                            && t.subscribers.iter().all(|s| s.lag == 0)
                            && t.wakers.len() == 2
                    })
                })
            })
        }),
        "both waiters did not read the first half and wait: {:?}",
        bus.stats(None)
    );
    drop(bus);
    // Both now sleep on their eventfds, armed.
    d.kill();
    d.restart(&[]);
    let bus = d.bus();
    // Both register again with the new daemon.
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            topics.iter().all(|t| {
                bus.stats(Some(t))
                    .is_ok_and(|s| s.iter().all(|t| t.wakers.len() == 2))
            })
        }),
        "the waiters did not register with the restarted daemon: {:?}",
        bus.stats(None)
    );
    let mut pubs: Vec<Peer> = topics
        .iter()
        .enumerate()
        .map(|(i, t)| publisher(&d, t, i as u64 + 1, n, n, &["--interval-us", "100"]))
        .collect();
    finish_all(&mut pubs);
    assert_every_message(&waitset.finish(TRANSFER), &topics, 2 * n);
    assert_every_message(&select.finish(TRANSFER), &topics, 2 * n);
}

#[test]
fn at_the_open_file_limit_a_clear_error_and_nothing_leaked() {
    let d = daemon();
    let topic = unique_topic("fdlimit");
    let mut p = Peer::spawn(
        PEER,
        &[
            "fd-limit",
            "--socket",
            d.socket_str(),
            "--topic",
            &topic,
            "--spare",
            "12",
        ],
    );
    let report = p.json(START);
    assert_eq!(report["kind"], "too_many_files", "{report}");
    let error = report["error"].as_str().expect("an error sentence");
    let limit = u(&report["limit"]);
    assert!(
        error.contains("open-file limit") && error.contains(&format!("({limit})")),
        "the error names the limit: {error}"
    );
    assert!(u(&report["wait_sets"]) >= 2, "{report}");
    assert_eq!(
        report["fds_after"], report["fds_start"],
        "descriptors leaked: {report}"
    );
    p.expect_line("dropped", START);
    let bus = d.bus();
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
            wakers(&bus, &topic).is_empty()
        }),
        "wake slots left behind: {:?}",
        wakers(&bus, &topic)
    );
    p.terminate();
    assert!(p.wait_exit(START).success(), "{}", p.stderr());
}

fn lossless_pair(
    bus: &Bus,
    topic: &str,
    capacity: u32,
) -> (Publisher<TestMsg>, Subscriber<TestMsg>) {
    let p = bus
        .publisher::<TestMsg>(topic)
        .capacity(capacity)
        .create()
        .expect("create");
    let s = bus.subscriber::<TestMsg>(topic).open().expect("open");
    (p, s)
}

#[test]
fn waitset_reports_which_once_per_change_and_never_spins_on_undrained_readiness() {
    let d = daemon();
    let bus = d.bus();
    let (ta, tb) = (unique_topic("once-a"), unique_topic("once-b"));
    let (mut pa, mut sa) = lossless_pair(&bus, &ta, 64);
    let (mut pb, _sb) = lossless_pair(&bus, &tb, 64);
    let mut set = WaitSet::new().expect("wait set");
    let a = set.attach_subscriber(&sa).expect("attach a");
    let b = set.attach_subscriber(&_sb).expect("attach b");

    // Nothing yet: the wait times out, empty.
    let started = Instant::now();
    assert!(set
        .wait(Some(Duration::from_millis(50)))
        .unwrap()
        .is_empty());
    assert!(started.elapsed() >= Duration::from_millis(45));

    pa.publish(&TestMsg::new(1, 0)).unwrap();
    assert_eq!(set.wait(Some(START)).unwrap(), &[a.id()]);
    // Not drained: not reported again, and the wait sleeps its whole timeout.
    let started = Instant::now();
    assert!(set
        .wait(Some(Duration::from_millis(200)))
        .unwrap()
        .is_empty());
    assert!(started.elapsed() >= Duration::from_millis(190));
    // Something new on a: reported again; on b: b only.
    pa.publish(&TestMsg::new(1, 1)).unwrap();
    assert_eq!(set.wait(Some(START)).unwrap(), &[a.id()]);
    pb.publish(&TestMsg::new(2, 0)).unwrap();
    assert_eq!(set.wait(Some(START)).unwrap(), &[b.id()]);
    // Drain a: messages in order.
    assert_eq!(sa.try_recv().unwrap().seq, 0);
    assert_eq!(sa.try_recv().unwrap().seq, 1);
    assert!(matches!(sa.try_recv(), Err(TryRecvError::Empty)));

    // A woken wait from another thread: the waiter sleeps until then.
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        pa.publish(&TestMsg::new(1, 2)).unwrap();
        pa
    });
    let started = Instant::now();
    assert_eq!(set.wait(Some(START)).unwrap(), &[a.id()]);
    assert!(started.elapsed() >= Duration::from_millis(90));
    let mut pa = sender.join().unwrap();

    // A detached subscriber is no longer reported.
    let a_id = a.id();
    drop(a);
    pa.publish(&TestMsg::new(1, 3)).unwrap();
    let ready = set.wait(Some(Duration::from_millis(100))).unwrap().to_vec();
    assert!(!ready.contains(&a_id), "{ready:?}");
    drop(b);
    assert!(wakers(&bus, &ta).is_empty() && wakers(&bus, &tb).is_empty());
}

#[test]
fn waitset_deadlines_intervals_and_publishers_waiting_for_room() {
    let d = daemon();
    let bus = d.bus();
    let topic = unique_topic("room");
    let (mut p, mut s) = lossless_pair(&bus, &topic, 4);
    let mut set = WaitSet::new().expect("wait set");

    let started = Instant::now();
    let deadline = set.attach_deadline(started + Duration::from_millis(80));
    let interval = set.attach_interval(Duration::from_millis(30));
    let mut seen = Vec::new();
    while started.elapsed() < Duration::from_millis(200) {
        for id in set.wait(Some(Duration::from_millis(250))).unwrap() {
            seen.push((*id, started.elapsed()));
        }
    }
    let ticks: Vec<Duration> = seen
        .iter()
        .filter(|(id, _)| *id == interval.id())
        .map(|x| x.1)
        .collect();
    let fired: Vec<Duration> = seen
        .iter()
        .filter(|(id, _)| *id == deadline.id())
        .map(|x| x.1)
        .collect();
    assert_eq!(fired.len(), 1, "the deadline fires once: {seen:?}");
    assert!(fired[0] >= Duration::from_millis(80), "{seen:?}");
    assert!(
        (4..=7).contains(&ticks.len()) && ticks[0] >= Duration::from_millis(30),
        "the 30 ms interval in 200 ms: {seen:?}"
    );
    drop((deadline, interval));

    // Fill the ring; the publisher is not ready until the subscriber reads.
    let room = set.attach_publisher(&p).expect("attach publisher");
    for i in 0..4 {
        p.try_send(&TestMsg::new(1, i)).unwrap();
    }
    assert!(matches!(
        p.try_send(&TestMsg::new(1, 4)),
        Err(TrySendError::Full)
    ));
    // Reported once for the room it had, maybe: take that, then it must sleep.
    let first = set.wait(Some(Duration::from_millis(10))).unwrap().to_vec();
    assert!(
        first.is_empty() || first == [room.id()],
        "only the publisher is attached: {first:?}"
    );
    assert!(set
        .wait(Some(Duration::from_millis(100)))
        .unwrap()
        .is_empty());
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(s.try_recv().unwrap().seq, 0);
        s
    });
    assert_eq!(set.wait(Some(START)).unwrap(), &[room.id()]);
    p.try_send(&TestMsg::new(1, 4)).unwrap();
    let _s = reader.join().unwrap();
}

#[test]
fn async_receive_stream_and_lossless_send_with_back_pressure() {
    use futures_core::Stream;
    let d = daemon();
    let bus = d.bus();
    let topic = unique_topic("async");
    let (mut p, mut s) = lossless_pair(&bus, &topic, 8);
    let n = 2000u64;
    let local = tokio::task::LocalSet::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    local.block_on(&rt, async move {
        // The subscriber reads in another task, as a stream; the publisher sends 2000 through
        // a ring of 8, waiting for room whenever it is full.
        let reader = tokio::task::spawn_local(async move {
            let mut got = Vec::new();
            {
                let mut stream = s.stream();
                while (got.len() as u64) < n {
                    match std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await {
                        Some(Ok(m)) => got.push(m.seq),
                        other => panic!("the stream ended: {other:?}"),
                    }
                }
            }
            // A receive dropped after one poll (armed, mid-wait) loses nothing.
            let mut fut = Box::pin(s.recv_async());
            let ready =
                std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx).is_ready())).await;
            assert!(!ready, "nothing was published yet");
            drop(fut);
            (got, s)
        });
        for i in 0..n {
            p.send_async(&TestMsg::new(1, i)).await.expect("send_async");
        }
        let (got, mut s) = reader.await.expect("the reader");
        assert_eq!(got, (0..n).collect::<Vec<_>>());
        let mut loan = p.loan_async().await.expect("loan_async");
        *loan = TestMsg::new(1, n);
        loan.send();
        let seq = s.recv_async().await.expect("recv_async").seq;
        assert_eq!(seq, n);
        // The awaitable wait set.
        let mut set = WaitSet::new().expect("wait set");
        let a = set.attach_subscriber(&s).expect("attach");
        let sender = tokio::task::spawn_local(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            p.send_async(&TestMsg::new(1, n + 1)).await.expect("send");
            p
        });
        let ready = set
            .wait_async(Some(START))
            .await
            .expect("wait_async")
            .to_vec();
        assert_eq!(ready, vec![a.id()]);
        let _p = sender.await.expect("the sender");
        assert_eq!(s.try_recv().expect("the message").seq, n + 1);
    });
}

#[test]
fn one_port_holds_at_most_four_wake_slots_and_says_so() {
    let d = daemon();
    let bus = d.bus();
    let topic = unique_topic("per-port");
    let (_p, s) = lossless_pair(&bus, &topic, 8);
    let mut sets: Vec<(WaitSet, bus_client::Attachment)> = Vec::new();
    for _ in 0..4 {
        let mut set = WaitSet::new().expect("wait set");
        let a = set.attach_subscriber(&s).expect("attach");
        sets.push((set, a));
    }
    let mut fifth = WaitSet::new().expect("wait set");
    let e = fifth.attach_subscriber(&s).expect_err("a fifth wake slot");
    let text = e.to_string();
    assert!(
        text.contains("4 wake slots") && text.contains(&topic),
        "the refusal names the limit and the topic: {text}"
    );
    assert_eq!(wakers(&bus, &topic).len(), 4);
    // Giving one back makes room.
    sets.pop();
    let _a = fifth
        .attach_subscriber(&s)
        .expect("attach after one was dropped");
    assert_eq!(wakers(&bus, &topic).len(), 4);
}

/// `strace -f -c -p <pid>` of a running process for `span`: system call → calls. Waits for
/// strace to say it attached before the span starts, and stops it with SIGINT (it then
/// detaches and writes its summary).
fn trace_idle(d: &Daemon, pid: u32, span: Duration, tag: &str) -> BTreeMap<String, u64> {
    use std::io::BufRead;
    let out = d.dir().join(format!("strace-idle-{tag}.txt"));
    let mut strace = Command::new("strace")
        .args(["-f", "-c", "-o"])
        .arg(&out)
        .args(["-p", &pid.to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run strace (the CI installs it)");
    let mut stderr = std::io::BufReader::new(strace.stderr.take().expect("strace's stderr"));
    let mut line = String::new();
    let _ = stderr.read_line(&mut line);
    assert!(line.contains("attached"), "strace did not attach: {line:?}");
    // The span observed, not a bound asserted.
    std::thread::sleep(span);
    bus_tests::signal_child(&strace, nix::sys::signal::Signal::SIGINT);
    // It ends as SIGINT says (killed by it, after writing the summary).
    strace.wait().expect("strace");
    let text = std::fs::read_to_string(&out).expect("the strace summary");
    if text.trim().is_empty() {
        // strace -c writes no table at all when it saw no system call.
        return BTreeMap::from([("total".to_string(), 0)]);
    }
    bus_tests::strace_calls(&out)
}

#[test]
fn an_idle_subscriber_sleeps_without_system_calls_and_still_follows_a_daemon_restart() {
    let mut d = daemon();
    let topic = unique_topic("idle");
    let mut sub = Peer::spawn(
        PEER,
        &[
            "sub",
            "--socket",
            d.socket_str(),
            "--topic",
            &topic,
            "--count",
            "1",
            "--timeout-ms",
            "120000",
        ],
    );
    sub.expect_line("ready", START);
    let pid = sub.pid();
    // Blocked in `recv` on a quiet topic: asleep once its short spin is over.
    assert!(
        wait_until(START, Duration::from_millis(10), || proc_state(pid)
            == Some('S')),
        "the subscriber did not go to sleep"
    );
    let span = Duration::from_secs(2);
    let few = 5;
    let idle = trace_idle(&d, pid, span, "before");
    assert!(
        calls(&idle, "total") <= few
            && calls(&idle, "sched_yield") == 0
            && calls(&idle, "membarrier") == 0,
        "an idle subscriber made system calls in {span:?} (at most {few} allowed): {idle:?}"
    );

    // The daemon dies: the hang-up wakes the subscriber, which follows the restarted daemon.
    d.kill();
    d.restart(&[]);
    let bus = d.bus();
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(20), || {
            bus.stats(Some(&topic))
                .is_ok_and(|s| s.iter().any(|t| t.subscribers.len() == 1))
        }),
        "the subscriber did not re-attach to the restarted daemon: {:?}",
        bus.stats(None)
    );
    // Re-attached, it sleeps without looking around again.
    assert!(
        wait_until(START, Duration::from_millis(10), || proc_state(pid)
            == Some('S')),
        "the subscriber did not go back to sleep"
    );
    let after = trace_idle(&d, pid, span, "after");
    assert!(
        calls(&after, "total") <= few
            && calls(&after, "sched_yield") == 0
            && calls(&after, "membarrier") == 0,
        "after the restart the idle subscriber made system calls in {span:?}: {after:?}"
    );

    // A message published after the restart arrives.
    let mut p = publisher(&d, &topic, 1, 0, 1, &[]);
    finish_all(std::slice::from_mut(&mut p));
    let summary = sub.finish(TRANSFER);
    assert_eq!(summary["outcome"], "count", "summary: {summary}");
    assert_eq!(u(&summary["received"]), 1, "summary: {summary}");
    println!("idle subscriber, {span:?}: before the restart {idle:?}; after {after:?}");
}
