//! `shmbus record`, `play` and `info` against real daemons, as separate processes: a
//! recording played into a fresh daemon gives back every payload in order; the Python `mcap`
//! package reads what the recorder wrote; splits, SIGINT, SIGTERM, kill -9 and a full disk (a
//! file-size limit, and as root a really full tmpfs) each
//! leave readable files; rate, loop, start offset, filters and remaps do what they say.
//!
//! The Python checks run when `SHMBUS_TEST_PYTHON` names an interpreter (`.ci/run` makes a
//! virtual environment with the `mcap` package); they fail if that interpreter lacks the
//! package, and are skipped with a NOTICE when the variable is unset.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bus_client::{Bus, Geometry, RawSubscriber, RecvTimeoutError, StartAt};
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

const N: u64 = 10_000;

fn typed_payload(i: u64) -> [u64; 3] {
    [i, i.wrapping_mul(3), !i]
}

fn bytes_payload(i: u64) -> Vec<u8> {
    let mut v = format!("bytes-{i}-").into_bytes();
    v.extend(std::iter::repeat_n(b'x', (i % 50) as usize));
    v
}

fn lossy_payload(i: u64) -> Vec<u8> {
    let mut v = vec![(i % 251) as u8; 64];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

fn signal(running: &Running, sig: Signal) {
    kill(Pid::from_raw(running.child.id() as i32), sig).unwrap();
}

/// `shmbus info --json FILE`, which must succeed.
fn info(d: &Daemon, file: &Path) -> Value {
    let out = run(&mut d.shmbus(&["info", "--json", file.to_str().unwrap()]));
    assert_ok(&out);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// Wait until every subscriber of `topic` has read everything published.
fn wait_drained(bus: &Bus, topic: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = bus.stats(Some(topic)).unwrap();
        if stats
            .iter()
            .all(|t| t.subscribers.iter().all(|s| s.lag == 0))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "recorder did not catch up: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The interpreter with the `mcap` package, or `None` (with a NOTICE) when none is configured.
fn python() -> Option<PathBuf> {
    let Some(python) = std::env::var_os("SHMBUS_TEST_PYTHON") else {
        eprintln!("NOTICE: SHMBUS_TEST_PYTHON is not set: skipping the check with the Python mcap reader (.ci/run sets it)");
        return None;
    };
    let out = Command::new(&python)
        .args(["-c", "import mcap"])
        .output()
        .unwrap_or_else(|e| panic!("SHMBUS_TEST_PYTHON={python:?} does not run: {e}"));
    assert!(
        out.status.success(),
        "SHMBUS_TEST_PYTHON={python:?} has no mcap package: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(PathBuf::from(python))
}

const PY_READ: &str = r#"
import json, sys
from mcap.reader import make_reader, NonSeekingReader
path = sys.argv[1]
out = {"linear": {}, "linear_error": None, "indexed": None, "summary": None, "topics": None}
with open(path, "rb") as f:
    try:
        for _, channel, message in NonSeekingReader(f).iter_messages(log_time_order=False):
            out["linear"][channel.topic] = out["linear"].get(channel.topic, 0) + 1
    except Exception as e:
        out["linear_error"] = type(e).__name__ + ": " + str(e)
if out["linear_error"] is None:
    with open(path, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        if summary is not None:
            out["topics"] = sorted(c.topic for c in summary.channels.values())
            out["summary"] = {summary.channels[i].topic: n
                              for i, n in summary.statistics.channel_message_counts.items()}
        indexed = {}
        last = 0
        for _, channel, message in reader.iter_messages():
            indexed[channel.topic] = indexed.get(channel.topic, 0) + 1
            assert message.log_time >= last, "log time order"
            last = message.log_time
        out["indexed"] = indexed
print(json.dumps(out))
"#;

/// What the Python reader makes of `file`.
fn python_read(python: &Path, file: &Path) -> Value {
    let out = Command::new(python)
        .args(["-c", PY_READ])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python reader failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn as_counts(v: &Value) -> BTreeMap<String, u64> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

/// Read `n` messages from `sub` (bounded wait).
fn collect(mut sub: RawSubscriber, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::with_capacity(n);
    let topic = sub.topic().to_string();
    let deadline = Instant::now() + WAIT;
    while got.len() < n {
        match sub.recv_timeout(Duration::from_millis(100)) {
            Ok(s) => got.push(s.bytes().to_vec()),
            Err(RecvTimeoutError::Timeout) => {
                assert!(
                    Instant::now() < deadline,
                    "only {} of {n} messages on {}",
                    got.len(),
                    topic
                )
            }
            Err(e) => panic!("{topic}: {e}"),
        }
    }
    got
}

/// Create `topic` in `bus` with `spec` and subscribe to it.
fn subscribe_new(bus: &Bus, topic: &str, spec: &Geometry) -> RawSubscriber {
    drop(bus.raw_publisher(topic).create(spec.clone()).unwrap());
    bus.raw_subscriber(topic)
        .start_at(StartAt::Latest)
        .open()
        .unwrap()
}

fn spec_of(bus: &Bus, topic: &str) -> Geometry {
    bus.list()
        .unwrap()
        .into_iter()
        .find(|t| t.name == topic)
        .unwrap()
        .spec
}

#[test]
fn record_then_play_gives_back_every_payload_in_order_and_python_agrees() {
    let a = Daemon::start("rec-a");
    let topics = ["rec/typed", "rec/bytes", "rec/lossy"];
    let mut typed = a.bus.publisher::<[u64; 3]>(topics[0]).create().unwrap();
    let mut bytes = a
        .bus
        .publisher::<[u8]>(topics[1])
        .slot_size(128)
        .create()
        .unwrap();
    let mut lossy = a
        .bus
        .publisher::<[u8]>(topics[2])
        .lossy()
        .slot_size(64)
        .capacity(16_384) // holds every message: the recorder cannot lag out of any
        .create()
        .unwrap();
    let file = a.dir.0.join("three.mcap");
    let rec = Running::spawn(&mut a.shmbus(&[
        "record",
        "rec/**",
        "-o",
        file.to_str().unwrap(),
        "--compression",
        "lz4",
    ]));
    for t in topics {
        a.wait_subscribers(t, 1);
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            (0..N).for_each(|i| {
                typed.publish(&typed_payload(i)).unwrap();
            })
        });
        s.spawn(|| {
            (0..N).for_each(|i| {
                bytes.publish(&bytes_payload(i)).unwrap();
            })
        });
        s.spawn(|| {
            (0..N).for_each(|i| {
                lossy.publish(&lossy_payload(i)).unwrap();
            })
        });
    });
    for t in topics {
        wait_drained(&a.bus, t);
    }
    signal(&rec, Signal::SIGINT);
    let out = rec.wait();
    assert_ok(&out);
    assert!(
        out.stderr.contains("30000 messages on 3 topics"),
        "{}",
        out.stderr
    );

    // SIGINT finished the file: summary, counts, geometry, no loss.
    let v = info(&a, &file);
    assert_eq!(v["finished"], true, "{v}");
    assert_eq!(v["from_summary"], true, "{v}");
    assert_eq!(v["messages"], 3 * N);
    assert!(
        v["compression"]["lz4"]["chunks"].as_u64().unwrap() >= 1,
        "{v}"
    );
    for t in v["topics"].as_array().unwrap() {
        assert_eq!(t["messages"], N, "{t}");
        assert_eq!(t["lost"], 0, "{t}");
        assert_eq!(t["dropped"], 0, "{t}");
    }
    let typed_topic = &v["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == topics[0])
        .unwrap();
    assert_eq!(typed_topic["type_size"], 24);
    assert_eq!(typed_topic["type_align"], 8);
    assert_eq!(typed_topic["mode"], "lossless");
    let text = run(&mut a.shmbus(&["info", file.to_str().unwrap()]));
    assert_ok(&text);
    assert!(
        text.stdout.contains("finished (summary and index)"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("rec/lossy") && text.stdout.contains("lossy"),
        "{}",
        text.stdout
    );

    if let Some(python) = python() {
        let py = python_read(&python, &file);
        let want: BTreeMap<String, u64> = topics.iter().map(|t| (t.to_string(), N)).collect();
        assert_eq!(py["linear_error"], Value::Null, "{py}");
        assert_eq!(as_counts(&py["linear"]), want, "{py}");
        assert_eq!(as_counts(&py["indexed"]), want, "{py}");
        assert_eq!(as_counts(&py["summary"]), want, "{py}");
        let mut names: Vec<&str> = topics.to_vec();
        names.sort();
        assert_eq!(py["topics"], serde_json::json!(names), "{py}");
    }

    // Play into a fresh daemon whose subscribers wait on the recorded topics.
    let b = Daemon::start("rec-b");
    let subs: Vec<RawSubscriber> = topics
        .iter()
        .map(|t| subscribe_new(&b.bus, t, &spec_of(&a.bus, t)))
        .collect();
    let readers: Vec<_> = subs
        .into_iter()
        .map(|s| std::thread::spawn(move || collect(s, N as usize)))
        .collect();
    let out = run(&mut b.shmbus(&["play", file.to_str().unwrap(), "--rate", "1000"]));
    assert_ok(&out);
    let got: Vec<Vec<Vec<u8>>> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    for i in 0..N {
        let want: Vec<u8> = typed_payload(i)
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        assert_eq!(got[0][i as usize], want, "typed message {i}");
        assert_eq!(got[1][i as usize], bytes_payload(i), "byte message {i}");
        assert_eq!(got[2][i as usize], lossy_payload(i), "lossy message {i}");
    }

    // Into an empty daemon, play creates each topic with the recorded geometry and type.
    let c = Daemon::start("rec-c");
    let out = run(&mut c.shmbus(&["play", file.to_str().unwrap(), "--rate", "1000"]));
    assert_ok(&out);
    for t in topics {
        assert_eq!(spec_of(&c.bus, t), spec_of(&a.bus, t), "{t}");
    }
}

#[test]
fn split_size_yields_several_finished_files_whose_counts_add_up() {
    let d = Daemon::start("split");
    let mut publisher = d
        .bus
        .publisher::<[u8]>("split/t")
        .slot_size(256)
        .create()
        .unwrap();
    let base = d.dir.0.join("parts.mcap");
    let rec = Running::spawn(&mut d.shmbus(&[
        "record",
        "split/t",
        "-o",
        base.to_str().unwrap(),
        "--compression",
        "none",
        "--split-size",
        "65536",
    ]));
    d.wait_subscribers("split/t", 1);
    let n = 5_000u64;
    for i in 0..n {
        let mut m = vec![(i % 256) as u8; 100];
        m[..8].copy_from_slice(&i.to_le_bytes());
        publisher.publish(&m).unwrap();
    }
    wait_drained(&d.bus, "split/t");
    signal(&rec, Signal::SIGTERM);
    let out = rec.wait();
    assert_ok(&out);
    let mut parts: Vec<PathBuf> = std::fs::read_dir(&d.dir.0)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("parts_")
        })
        .collect();
    parts.sort_by_key(|p| {
        let name = p.file_stem().unwrap().to_str().unwrap().to_string();
        name["parts_".len()..].parse::<u32>().unwrap()
    });
    assert!(
        parts.len() >= 5,
        "{} parts: {parts:?}\n{}",
        parts.len(),
        out.stderr
    );
    assert!(
        !base.exists(),
        "a split recording writes only numbered parts"
    );
    let python = python();
    let mut total = 0;
    for p in &parts {
        let v = info(&d, p);
        assert_eq!(v["finished"], true, "{v}");
        assert_eq!(v["from_summary"], true, "{v}");
        // A part closes at the first chunk past the limit: chunks are at most half the limit.
        assert!(v["size"].as_u64().unwrap() < 2 * 65_536, "{v}");
        let count = v["messages"].as_u64().unwrap();
        total += count;
        if let Some(python) = &python {
            let py = python_read(python, p);
            assert_eq!(py["linear_error"], Value::Null, "{py}");
            assert_eq!(
                as_counts(&py["indexed"]).values().sum::<u64>(),
                count,
                "{py}"
            );
        }
    }
    assert_eq!(total, n, "the parts' counts add up to every message");
}

#[test]
fn kill_9_leaves_a_file_readable_up_to_its_last_complete_chunk() {
    let d = Daemon::start("kill9");
    let mut publisher = d.bus.publisher::<[u8]>("crash/t").create().unwrap();
    let file = d.dir.0.join("crash.mcap");
    let rec = Running::spawn(&mut d.shmbus(&[
        "record",
        "crash/t",
        "-o",
        file.to_str().unwrap(),
        "--chunk-size",
        "4096",
    ]));
    d.wait_subscribers("crash/t", 1);
    let payload = |i: u64| format!("message {i}").into_bytes();
    for i in 0..3_000u64 {
        publisher.publish(&payload(i)).unwrap();
    }
    wait_drained(&d.bus, "crash/t");
    // Past the chunk age, so that what was received is in closed chunks; then more that is not.
    std::thread::sleep(Duration::from_millis(1_300));
    for i in 3_000..3_100u64 {
        publisher.publish(&payload(i)).unwrap();
    }
    signal(&rec, Signal::SIGKILL);
    let out = rec.wait();
    assert_eq!(out.status.code(), None, "killed by a signal");

    let v = info(&d, &file);
    assert_eq!(v["finished"], false, "{v}");
    let kept = v["messages"].as_u64().unwrap();
    assert!(
        kept >= 3_000,
        "every message of the closed chunks is readable: {v}"
    );
    assert!(kept <= 3_100, "{v}");
    if let Some(python) = python() {
        let py = python_read(&python, &file);
        // Python's linear reader stops with an error at the cut, after the same messages.
        assert!(py["linear_error"].is_string(), "{py}");
        assert_eq!(as_counts(&py["linear"]).get("crash/t"), Some(&kept), "{py}");
    }
    // Played: exactly the first `kept` messages, in order.
    let b = Daemon::start("kill9-b");
    let sub = subscribe_new(&b.bus, "crash/t", &spec_of(&d.bus, "crash/t"));
    let reader = std::thread::spawn(move || collect(sub, kept as usize));
    let out = run(&mut b.shmbus(&["play", file.to_str().unwrap(), "--rate", "1000"]));
    assert_ok(&out);
    assert!(out.stderr.contains("was not finished"), "{}", out.stderr);
    let got = reader.join().unwrap();
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m, &payload(i as u64));
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_leaves_a_valid_file() {
    // A file-size limit of 256 KiB on the recorder: its writes past it fail with EFBIG, as
    // they would with ENOSPC on a full disk. Works for any user.
    full_disk_case("full-fsize", |shmbus, file| {
        format!("ulimit -f 256 && exec {shmbus} record full/t -o {file} --compression none --chunk-size 16384")
    });
}

#[test]
fn a_really_full_filesystem_is_a_clear_error_and_leaves_a_valid_file() {
    // A real ENOSPC: a 256 KiB tmpfs in a private mount namespace (root only). The namespace
    // and its tmpfs go with the script, so the file is copied out after the recorder exits.
    let probe = Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("NOTICE: no private mount namespace with a tmpfs here (not root?); the ENOSPC case is skipped, the EFBIG case covers the same path");
        return;
    }
    full_disk_case("full-tmpfs", |shmbus, file| {
        format!(
            "unshare -m sh -c 'mount -t tmpfs -o size=256k tmpfs /mnt && {shmbus} record full/t -o /mnt/full.mcap --compression none --chunk-size 16384; rc=$?; cp /mnt/full.mcap {file}; exit $rc'"
        )
    });
}

/// Record `full/t` with the command `script(shmbus, file)` makes (one whose writes fail past
/// 256 KiB) while a publisher floods it: the recorder exits 1 saying the disk is full, and the
/// file is a valid, finished MCAP file whose messages Python reads too.
fn full_disk_case(tag: &str, script: impl Fn(&str, &str) -> String) {
    let d = Daemon::start(tag);
    let mut publisher = d
        .bus
        .publisher::<[u8]>("full/t")
        .slot_size(512)
        .create()
        .unwrap();
    let file = d.dir.0.join("full.mcap");
    let shmbus = format!(
        "{} --socket {}",
        env!("CARGO_BIN_EXE_shmbus"),
        d.socket.display()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script(&shmbus, &file.display().to_string())])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let rec = Running::spawn(&mut cmd);
    d.wait_subscribers("full/t", 1);
    let sender = std::thread::spawn(move || {
        for i in 0..4_000u64 {
            let mut m = vec![(i % 256) as u8; 400];
            m[..8].copy_from_slice(&i.to_le_bytes());
            if publisher.publish(&m).is_err() {
                break;
            }
        }
    });
    let out = rec.wait();
    sender.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("the disk is full"), "{}", out.stderr);
    assert!(
        out.stderr.contains("is a valid MCAP file"),
        "{}",
        out.stderr
    );
    // One story: the summary names the file it also calls valid, as cut short.
    assert!(!out.stderr.contains("no complete file"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("into {} (cut short; see below)", file.display()))
            || out
                .stderr
                .contains("into /mnt/full.mcap (cut short; see below)"),
        "{}",
        out.stderr
    );
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size <= 256 * 1024, "{size}");

    let v = info(&d, &file);
    assert_eq!(v["finished"], true, "{v}");
    assert_eq!(v["damage"], Value::Null, "{v}");
    let kept = v["messages"].as_u64().unwrap();
    assert!(kept > 0, "{v}");
    if let Some(python) = python() {
        let py = python_read(&python, &file);
        assert_eq!(py["linear_error"], Value::Null, "{py}");
        assert_eq!(as_counts(&py["indexed"]).get("full/t"), Some(&kept), "{py}");
    }
}

/// A recording of `play/x` and `play/y`: 20 messages each, 15 ms apart.
fn paced_recording(d: &Daemon) -> PathBuf {
    let mut x = d.bus.publisher::<[u8]>("play/x").create().unwrap();
    let mut y = d.bus.publisher::<[u8]>("play/y").create().unwrap();
    let file = d.dir.0.join("paced.mcap");
    let rec = Running::spawn(&mut d.shmbus(&["record", "play/*", "-o", file.to_str().unwrap()]));
    d.wait_subscribers("play/x", 1);
    d.wait_subscribers("play/y", 1);
    for i in 0..20 {
        x.publish(format!("x{i}").as_bytes()).unwrap();
        y.publish(format!("y{i}").as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(15));
    }
    wait_drained(&d.bus, "play/x");
    wait_drained(&d.bus, "play/y");
    signal(&rec, Signal::SIGINT);
    assert_ok(&rec.wait());
    file
}

/// Topics created after the recorder started, that match its pattern, are recorded from their
/// first message; a topic that does not match is left alone.
/// Wait until the recorder says it watches its patterns: from then on no new topic is missed.
fn wait_watching(rec: &Running) {
    let deadline = Instant::now() + WAIT;
    while !rec.stderr.text().contains("shmbus record: watching") {
        assert!(
            Instant::now() < deadline,
            "the recorder never said it watches: {}",
            rec.stderr.text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Per topic, the messages `info --json` counts in `file`.
fn message_counts(d: &Daemon, file: &Path) -> BTreeMap<String, u64> {
    let v = info(d, file);
    assert_eq!(v["finished"], true, "{v}");
    v["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["topic"].as_str().unwrap().to_owned(),
                t["messages"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_recorder_started_before_its_topics_records_a_burst_on_a_new_topic_from_the_first_message() {
    // A burst many times the lossless ring, published by a process that creates the topic
    // and exits at once, and a short burst into a new lossy topic: the daemon attaches the
    // recorder before either creator may publish, so every message is recorded.
    const BURST: usize = 20_000;
    const SHORT: usize = 32;
    let d = Daemon::start("burst");
    let file = d.dir.0.join("burst.mcap");
    let rec = Running::spawn(&mut d.shmbus(&["record", "burst/**", "-o", file.to_str().unwrap()]));
    wait_watching(&rec);
    let lines = |n: usize| -> String { (0..n).map(|i| format!("m{i}\n")).collect() };
    let out = run_with_input(
        &mut d.shmbus(&["pub", "burst/lossless"]),
        lines(BURST).as_bytes(),
    );
    assert_ok(&out);
    let out = run_with_input(
        &mut d.shmbus(&["pub", "burst/lossy", "--lossy"]),
        lines(SHORT).as_bytes(),
    );
    assert_ok(&out);
    assert!(spec_of(&d.bus, "burst/lossless").capacity < BURST as u32 / 4);
    // The short burst fits the lossy ring: a recorder attached from the first message keeps
    // all of it, one attached later (at the newest) none.
    assert!(spec_of(&d.bus, "burst/lossy").capacity >= SHORT as u32);
    wait_drained(&d.bus, "burst/lossless");
    wait_drained(&d.bus, "burst/lossy");
    signal(&rec, Signal::SIGINT);
    assert_ok(&rec.wait());
    assert_eq!(
        message_counts(&d, &file),
        BTreeMap::from([
            ("burst/lossless".to_owned(), BURST as u64),
            ("burst/lossy".to_owned(), SHORT as u64)
        ])
    );
    // Played back: every payload, in order, from the first.
    let e = Daemon::start("burst-b");
    let sub = subscribe_new(&e.bus, "burst/lossless", &spec_of(&d.bus, "burst/lossless"));
    let reader = std::thread::spawn(move || collect(sub, BURST));
    let out = run(&mut e.shmbus(&["play", file.to_str().unwrap(), "--topics", "burst/lossless"]));
    assert_ok(&out);
    let want: Vec<Vec<u8>> = (0..BURST).map(|i| format!("m{i}").into_bytes()).collect();
    assert_eq!(reader.join().unwrap(), want);
}

#[test]
fn topics_that_appear_while_recording_are_picked_up() {
    let d = Daemon::start("late");
    let file = d.dir.0.join("late.mcap");
    let rec = Running::spawn(&mut d.shmbus(&["record", "late/**", "-o", file.to_str().unwrap()]));
    // The recorder is watching (and has found nothing) before the topics exist.
    wait_watching(&rec);
    let mut a = d.bus.publisher::<[u8]>("late/a").create().unwrap();
    let mut b = d.bus.publisher::<u64>("late/deep/b").create().unwrap();
    let mut other = d.bus.publisher::<[u8]>("other/c").create().unwrap();
    d.wait_subscribers("late/a", 1);
    d.wait_subscribers("late/deep/b", 1);
    for i in 0..500u64 {
        a.publish(format!("a{i}").as_bytes()).unwrap();
        b.publish(&i).unwrap();
        other.publish(b"not recorded").unwrap();
    }
    wait_drained(&d.bus, "late/a");
    wait_drained(&d.bus, "late/deep/b");
    let other_subs = d.bus.stats(Some("other/c")).unwrap()[0].subscribers.len();
    assert_eq!(
        other_subs, 0,
        "the recorder subscribed to a topic its pattern excludes"
    );
    signal(&rec, Signal::SIGINT);
    assert_ok(&rec.wait());

    let v = info(&d, &file);
    assert_eq!(v["finished"], true, "{v}");
    let counts: BTreeMap<String, u64> = v["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["topic"].as_str().unwrap().to_owned(),
                t["messages"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        BTreeMap::from([("late/a".to_owned(), 500), ("late/deep/b".to_owned(), 500)]),
        "{v}"
    );
    // Played back: the first message of a late topic is there.
    let e = Daemon::start("late-b");
    let sub = subscribe_new(&e.bus, "late/a", &spec_of(&d.bus, "late/a"));
    let reader = std::thread::spawn(move || collect(sub, 500));
    let out = run(&mut e.shmbus(&[
        "play",
        file.to_str().unwrap(),
        "--rate",
        "1000",
        "--topics",
        "late/a",
    ]));
    assert_ok(&out);
    let got = reader.join().unwrap();
    let want: Vec<Vec<u8>> = (0..500).map(|i| format!("a{i}").into_bytes()).collect();
    assert_eq!(got, want);
}

#[test]
fn play_rate_loop_offset_filters_and_remaps() {
    let d = Daemon::start("play");
    let file = paced_recording(&d);
    let f = file.to_str().unwrap();
    let spec = spec_of(&d.bus, "play/x");

    // --rate 2 and --rate 4 replay the ~300 ms recording in about a half and a quarter of the
    // time (as play measures it, without the process start, which a loaded machine makes slow).
    let b = Daemon::start("play-b");
    let timed = |rate: &str| {
        let out = run(&mut b.shmbus(&["play", f, "--rate", rate]));
        assert_ok(&out);
        let secs: f64 = out
            .stderr
            .split(" topics in ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no time in {}", out.stderr));
        Duration::from_secs_f64(secs)
    };
    let normal = timed("1");
    let double = timed("2");
    let fast = timed("4");
    assert!(normal >= Duration::from_millis(250), "{normal:?}");
    // Ideal: 1/2 and 1/4 of the time; the margins leave room for a loaded machine.
    assert!(
        double * 4 < normal * 3,
        "--rate 2 took {double:?}, --rate 1 {normal:?}"
    );
    assert!(
        fast * 2 < normal,
        "--rate 4 took {fast:?}, --rate 1 {normal:?}"
    );

    // --topics and --remap: only play/x, published as moved/x.
    let c = Daemon::start("play-c");
    let sub = subscribe_new(&c.bus, "moved/x", &spec);
    let reader = std::thread::spawn(move || collect(sub, 20));
    let out = run(&mut c.shmbus(&[
        "play",
        f,
        "--rate",
        "100",
        "--topics",
        "play/x",
        "--remap",
        "play/x:=moved/x",
    ]));
    assert_ok(&out);
    let got = reader.join().unwrap();
    let want: Vec<Vec<u8>> = (0..20).map(|i| format!("x{i}").into_bytes()).collect();
    assert_eq!(got, want);
    let names: Vec<String> = c.bus.list().unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        ["moved/x"],
        "play/y is filtered out and play/x renamed"
    );

    // --start-offset skips the beginning: the last messages only.
    let sub = c.bus.raw_subscriber("moved/x").open().unwrap();
    let out = run(&mut c.shmbus(&[
        "play",
        f,
        "--rate",
        "100",
        "--topics",
        "play/x",
        "--remap",
        "play/x:=moved/x",
        "--start-offset",
        "0.15",
    ]));
    assert_ok(&out);
    let mut sub = sub;
    let mut tail = Vec::new();
    while let Ok(s) = sub.try_recv() {
        tail.push(s.bytes().to_vec());
    }
    assert!(
        !tail.is_empty() && tail.len() < 20,
        "{} messages",
        tail.len()
    );
    assert_eq!(tail[..], want[20 - tail.len()..]);

    // --loop repeats until Ctrl-C.
    let sub = c.bus.raw_subscriber("moved/x").open().unwrap();
    let looping = Running::spawn(&mut c.shmbus(&[
        "play",
        f,
        "--rate",
        "20",
        "--loop",
        "--topics",
        "play/x",
        "--remap",
        "play/x:=moved/x",
    ]));
    let got = collect(sub, 50);
    assert_eq!(got[..20], want[..]);
    assert_eq!(got[20..40], want[..]);
    signal(&looping, Signal::SIGINT);
    let out = looping.wait();
    assert_ok(&out);
    assert!(out.stderr.contains("(stopped)"), "{}", out.stderr);
}

#[test]
fn damaged_or_foreign_files_are_errors_with_a_message() {
    let d = Daemon::start("bad");
    let junk = d.dir.0.join("junk.mcap");
    std::fs::write(&junk, b"this is not an mcap file at all").unwrap();
    for sub in ["info", "play"] {
        let out = run(&mut d.shmbus(&[sub, junk.to_str().unwrap()]));
        assert_eq!(out.status.code(), Some(1), "{sub}: {}", out.stderr);
        assert!(
            out.stderr.contains("not a readable MCAP file"),
            "{sub}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
    let out = run(&mut d.shmbus(&["record"]));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--all"), "{}", out.stderr);
    let out = run(&mut d.shmbus(&["record", "a*b"]));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    let out = run(&mut d.shmbus(&["play", junk.to_str().unwrap(), "--remap", "a=b"]));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
}

#[test]
fn split_duration_starts_a_new_file_per_span_of_receive_time() {
    let d = Daemon::start("split-time");
    let mut publisher = d.bus.publisher::<[u8]>("span/t").create().unwrap();
    let base = d.dir.0.join("span.mcap");
    let rec = Running::spawn(&mut d.shmbus(&[
        "record",
        "span/t",
        "-o",
        base.to_str().unwrap(),
        "--split-duration",
        "0.2",
    ]));
    d.wait_subscribers("span/t", 1);
    for i in 0..100u64 {
        publisher.publish(&i.to_le_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(8));
    }
    wait_drained(&d.bus, "span/t");
    signal(&rec, Signal::SIGINT);
    assert_ok(&rec.wait());
    let mut total = 0;
    let mut parts = 0;
    while d.dir.0.join(format!("span_{parts}.mcap")).exists() {
        let v = info(&d, &d.dir.0.join(format!("span_{parts}.mcap")));
        assert!(v["duration_ns"].as_u64().unwrap() < 200_000_000, "{v}");
        total += v["messages"].as_u64().unwrap();
        parts += 1;
    }
    assert!(
        parts >= 3,
        "{parts} parts for 0.8 s of messages split every 0.2 s"
    );
    assert_eq!(total, 100);
}

#[test]
fn overflow_drop_keeps_publishers_going_and_counts_what_it_dropped() {
    let d = Daemon::start("drop");
    let n = 20_000u64;
    let mut publisher = d
        .bus
        .publisher::<[u8]>("drop/t")
        .slot_size(4096)
        .create()
        .unwrap();
    let file = d.dir.0.join("drop.mcap");
    // 1 MiB of queue against 80 MB published at memory speed: the zstd writer cannot keep
    // up, so the reader must drop.
    let rec = Running::spawn(&mut d.shmbus(&[
        "record",
        "drop/t",
        "-o",
        file.to_str().unwrap(),
        "--overflow",
        "drop",
        "--queue-size",
        "1048576",
        "--compression",
        "zstd",
    ]));
    d.wait_subscribers("drop/t", 1);
    let mut m = vec![0u8; 4096];
    for i in 0..n {
        // Incompressible enough to keep zstd busy.
        let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for w in m.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        m[..8].copy_from_slice(&i.to_le_bytes());
        publisher.publish(&m).unwrap();
    }
    wait_drained(&d.bus, "drop/t");
    signal(&rec, Signal::SIGINT);
    let out = rec.wait();
    assert_ok(&out);
    assert!(
        out.stderr.contains("dropped (queue full)"),
        "{}",
        out.stderr
    );
    let v = info(&d, &file);
    let t = &v["topics"][0];
    let (kept, dropped, lost) = (
        t["messages"].as_u64().unwrap(),
        t["dropped"].as_u64().unwrap(),
        t["lost"].as_u64().unwrap(),
    );
    assert!(dropped > 0, "{v}");
    assert_eq!(lost, 0, "the reader kept up with the ring: {v}");
    assert_eq!(
        kept + dropped,
        n,
        "every message is written or counted as dropped: {v}"
    );
    assert_eq!(v["overflow"], "drop");
}
