//! The `shmbus` binary against a real daemon (embedded in this test process, on a private
//! socket in a fresh temporary directory). Every wait is bounded; children are killed on
//! failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

#[test]
fn pipeline_pub_to_echo_delivers_every_line_in_order() {
    let d = Daemon::start("pipe");
    // The topic exists before echo attaches (echo never creates one).
    drop(d.bus.publisher::<[u8]>("pipe/t").create().unwrap());
    let echo = Running::spawn(&mut d.shmbus(&["echo", "pipe/t", "-n", "10000"]));
    d.wait_subscribers("pipe/t", 1);
    let input: String = (1..=10_000).map(|i| format!("{i}\n")).collect();
    let published = run_with_input(&mut d.shmbus(&["pub", "pipe/t"]), input.as_bytes());
    assert_ok(&published);
    let echoed = echo.wait();
    assert_ok(&echoed);
    assert!(
        echoed.stderr.contains("listening on pipe/t"),
        "{}",
        echoed.stderr
    );
    assert!(
        echoed.stdout == input,
        "echo lost, duplicated or reordered lines"
    );
}

#[test]
fn list_and_stat_show_topic_and_subscriber() {
    let d = Daemon::start("list");
    let mut sub = d
        .bus
        .subscriber::<[u8]>("robot/odom")
        .open_or_create()
        .unwrap();
    let mut publisher = d.bus.publisher::<[u8]>("robot/odom").open().unwrap();
    for i in 0..5u8 {
        publisher.publish(&[i; 8]).unwrap();
    }
    drop(sub.recv().unwrap());

    let out = run(&mut d.shmbus(&["list", "--json"]));
    assert_ok(&out);
    let topics: Value = serde_json::from_str(&out.stdout).unwrap();
    let t = topics
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "robot/odom")
        .unwrap_or_else(|| panic!("topic missing: {topics}"));
    assert_eq!(t["subscribers"], 1);
    assert_eq!(t["publishers"], 1);
    assert_eq!(t["published"], 5);
    assert_eq!(t["spec"]["mode"], "lossless");
    let bytes = t["bytes"].as_u64().expect("committed bytes");
    assert!(
        bytes
            >= u64::from(t["spec"]["capacity"].as_u64().unwrap() as u32)
                * t["spec"]["slot_size"].as_u64().unwrap(),
        "{t}"
    );

    let out = run(&mut d.shmbus(&["list"]));
    assert_ok(&out);
    assert!(out.stdout.starts_with("TOPIC"), "{}", out.stdout);
    assert!(out.stdout.contains("robot/odom"), "{}", out.stdout);
    assert!(out.stdout.contains("MEMORY"), "{}", out.stdout);
    assert!(
        out.stdout.contains("of shared memory committed"),
        "{}",
        out.stdout
    );

    let out = run(&mut d.shmbus(&["stat", "robot/odom", "--json", "--interval-ms", "20"]));
    assert_ok(&out);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    let t = &report["topics"][0];
    assert_eq!(t["name"], "robot/odom");
    assert_eq!(t["published"], 5);
    let subs = t["subscribers"].as_array().unwrap();
    assert_eq!(subs.len(), 1, "{report}");
    assert_eq!(subs[0]["lag"], 4, "{report}");
    assert_eq!(t["max_lag"], 4);
    // One name for the size in both JSON outputs.
    assert_eq!(t["bytes"].as_u64(), Some(bytes), "{report}");
    assert!(t.get("memory").is_none(), "{report}");
    assert!(t["messages_per_sec"].is_number());
    assert_eq!(
        t["unheard"], 0,
        "a subscriber heard every message: {report}"
    );

    // Published to nobody: counted as unheard.
    let mut lonely = d.bus.publisher::<[u8]>("robot/lonely").create().unwrap();
    for i in 0..3u8 {
        lonely.publish(&[i]).unwrap();
    }
    let out = run(&mut d.shmbus(&["stat", "robot/lonely", "--json", "--interval-ms", "20"]));
    assert_ok(&out);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["topics"][0]["unheard"], 3, "{report}");

    let out = run(&mut d.shmbus(&["stat", "--interval-ms", "20"]));
    assert_ok(&out);
    assert!(out.stdout.contains("UNHEARD"), "{}", out.stdout);
    assert!(out.stdout.contains("MSG/S"), "{}", out.stdout);
    assert!(out.stdout.contains("LAG"), "{}", out.stdout);

    let out = run(&mut d.shmbus(&["stat", "no/such", "--interval-ms", "20"]));
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("shmbus list"), "{}", out.stderr);
}

#[test]
fn stat_watch_into_a_pipe_writes_reports_without_terminal_codes() {
    let d = Daemon::start("watch");
    let _sub = d
        .bus
        .subscriber::<[u8]>("watch/t")
        .open_or_create()
        .unwrap();
    let watch = Running::spawn(&mut d.shmbus(&["stat", "--watch", "--interval-ms", "20"]));
    watch.wait_stdout("two reports", |out| out.matches("TOPIC").count() >= 2);
    let out = watch.stop();
    assert!(!out.stdout.contains('\x1b'), "{:?}", out.stdout);
    assert!(out.stdout.contains("\n\nTOPIC"), "{:?}", out.stdout);
    assert!(out.stdout.contains("watch/t"), "{}", out.stdout);
}

#[test]
fn stat_watch_on_a_terminal_refreshes_in_place() {
    const CLEAR: &str = "\x1b[H\x1b[2J";
    let d = Daemon::start("watchtty");
    let _sub = d
        .bus
        .subscriber::<[u8]>("watch/t")
        .open_or_create()
        .unwrap();
    // script(1) gives the tool a pseudo-terminal and copies what it writes there.
    let command = format!(
        "{} --socket {} stat --watch --interval-ms 20",
        env!("CARGO_BIN_EXE_shmbus"),
        d.socket.display()
    );
    let mut c = Command::new("script");
    c.args(["-qfec", &command, "/dev/null"])
        .env_remove("SHMBUS_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let watch = Running::spawn(&mut c);
    watch.wait_stdout("two refreshes", |out| out.matches(CLEAR).count() >= 2);
    let out = watch.stop();
    assert!(out.stdout.contains("watch/t"), "{}", out.stdout);
}

#[test]
fn doctor_passes_with_live_daemon_and_fails_with_dead_socket() {
    let d = Daemon::start("doctor");
    let out = run(&mut d.shmbus(&["doctor"]));
    assert_ok(&out);
    assert!(
        out.stdout.contains("OK    daemon: shmbusd (pid"),
        "{}",
        out.stdout
    );
    // Segments are sealed memory files: the probe must work wherever the bus works, and the
    // line must not send anyone to resize /dev/shm.
    assert!(
        out.stdout.contains(
            "OK    shared memory: sealed memory files work; segments do not use /dev/shm"
        ),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("shm-size") && !out.stdout.contains("remount"),
        "{}",
        out.stdout
    );
    let memory = out
        .stdout
        .lines()
        .find(|l| l.contains("  memory limit: "))
        .unwrap_or_else(|| panic!("no memory limit line:\n{}", out.stdout));
    assert!(
        memory.starts_with("OK  ") || memory.starts_with("WARN"),
        "{memory}"
    );
    assert!(!out.stdout.contains("FAIL"), "{}", out.stdout);

    let dead = d.socket.with_file_name("nobody-here.sock");
    let out = run(&mut shmbus_at(&dead, &["doctor"]));
    assert_eq!(out.status.code(), Some(1), "{}", out.stdout);
    assert!(
        out.stdout.contains("FAIL  daemon: none answers"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("shmbusd"), "{}", out.stdout);
}

/// A file in /dev/shm named like an older shmbus's segment, removed on drop.
struct OldSegmentFile(PathBuf);

impl Drop for OldSegmentFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The doctor's line about shmbus files in /dev/shm.
fn stale_line(stdout: &str) -> &str {
    stdout
        .lines()
        .find(|l| l.contains("  stale files: "))
        .unwrap_or_else(|| panic!("no stale files line:\n{stdout}"))
}

#[test]
fn doctor_reports_old_shm_files_unless_a_process_holds_them() {
    let d = Daemon::start("doctor-old");
    // The name an older shmbus gave a segment: shmbus-<uid>-<topic>-<instance>. The topic
    // starts with '-' so the name sorts before other files of ours and is always listed.
    let name = format!(
        "shmbus-{}--doctor-test-{}-0000000000000001",
        nix::unistd::geteuid().as_raw(),
        std::process::id()
    );
    let path = Path::new("/dev/shm").join(&name);
    if let Err(e) = std::fs::write(&path, [0u8; 4096]) {
        eprintln!("skipped: cannot make {} ({e})", path.display());
        return;
    }
    let file = OldSegmentFile(path);

    let out = run(&mut d.shmbus(&["doctor"]));
    assert_ok(&out); // a WARN, not a FAIL
    let line = stale_line(&out.stdout);
    assert!(line.starts_with("WARN"), "{line}");
    assert!(line.contains(&name), "{line}");
    assert!(line.contains("older shmbus version"), "{line}");
    assert!(line.contains("safe to remove"), "{line}");

    // Held open by a process (this one): in use, not listed as stale.
    let held = std::fs::File::open(&file.0).unwrap();
    let out = run(&mut d.shmbus(&["doctor"]));
    assert_ok(&out);
    let line = stale_line(&out.stdout);
    assert!(!line.contains(&name), "{line}");
    drop(held);
}

#[test]
fn invalid_topic_name_exits_2_naming_the_rule() {
    let d = Daemon::start("names");
    let out = run(&mut d.shmbus(&["pub", "a/../b", "x"]));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("'..' are not allowed"),
        "{}",
        out.stderr
    );

    let out = run(&mut d.shmbus(&["echo", "bad name"]));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("only ASCII letters"), "{}", out.stderr);
}

#[test]
fn no_daemon_exits_2_and_suggests_shmbusd() {
    let dir = TempDir::new("nodaemon");
    let out = run(&mut shmbus_at(&dir.0.join("shmbusd.sock"), &["list"]));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("Start the daemon with `shmbusd`"),
        "{}",
        out.stderr
    );
}

#[test]
fn pub_errors_have_distinct_exit_codes() {
    let d = Daemon::start("puberr");
    let out = run(&mut d.shmbus(&["pub", "small", "--slot-size", "4", "0123456789"]));
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("slot size"), "{}", out.stderr);

    // The topic exists with 4-byte slots: asking for others is a refusal (3) that names only
    // what was asked (not the capacity that follows from it) and the command that deletes it.
    let out = run(&mut d.shmbus(&["pub", "small", "--slot-size", "8", "x"]));
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("exists with slot size 4 but this command asked for --slot-size 8"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("`shmbus delete small`"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("capacity"), "{}", out.stderr);
    // The options given, when they match, are all that is compared.
    let out = run(&mut d.shmbus(&["pub", "small", "--slot-size", "4", "x"]));
    assert_ok(&out);

    let out = run(&mut d.shmbus(&["pub", "small", "--rate", "0", "x"]));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
}

#[test]
fn echo_replays_lossy_topic_as_json_lines() {
    let d = Daemon::start("replay");
    let out = run_with_input(
        &mut d.shmbus(&["pub", "replay/t", "--lossy"]),
        b"a\nb\n\xff",
    );
    assert_ok(&out);
    let out = run(&mut d.shmbus(&[
        "echo", "replay/t", "--replay", "-n", "3", "--format", "json",
    ]));
    assert_ok(&out);
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert_eq!(lines[0]["seq"], 0);
    assert_eq!(lines[0]["data"], "a");
    assert_eq!(lines[1]["seq"], 1);
    assert_eq!(lines[1]["data"], "b");
    assert_eq!(lines[2]["len"], 1);
    assert_eq!(lines[2]["encoding"], "hex");
    assert_eq!(lines[2]["data"], "ff");
}

#[test]
fn echo_reads_typed_topic_as_hex_and_exits_0_when_deleted() {
    let d = Daemon::start("typed");
    let mut publisher = d.bus.publisher::<u64>("typed/t").create().unwrap();
    let echo = Running::spawn(&mut d.shmbus(&["echo", "typed/t"]));
    d.wait_subscribers("typed/t", 1);
    publisher.publish(&0x0102_0304_0506_0708).unwrap();
    // The message is in the ring before the topic closes: echo drains it, then sees Closed.
    d.bus.delete("typed/t").unwrap();
    let out = echo.wait();
    assert_ok(&out);
    assert_eq!(out.stdout, "0807060504030201\n");
}

#[test]
fn echo_waits_for_a_missing_topic_and_never_creates_it() {
    let d = Daemon::start("wait");
    let echo = Running::spawn(&mut d.shmbus(&["echo", "later/t", "-n", "1"]));
    // Wait until echo has looked, found nothing and said so (a fixed sleep would race a slow
    // start on a loaded machine).
    let deadline = std::time::Instant::now() + WAIT;
    while !echo.stderr.text().contains("does not exist yet; waiting") {
        assert!(
            std::time::Instant::now() < deadline,
            "echo never said it waits: {}",
            echo.stderr.text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        d.bus.list().unwrap().iter().all(|t| t.name != "later/t"),
        "echo created the topic it watches"
    );
    // The real publisher creates it with its own type; echo attaches and prints the message.
    let mut publisher = d.bus.publisher::<u32>("later/t").create().unwrap();
    d.wait_subscribers("later/t", 1);
    publisher.publish(&0x0a0b_0c0d).unwrap();
    let out = echo.wait();
    assert_ok(&out);
    assert!(
        out.stderr.contains("does not exist yet; waiting"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "0d0c0b0a\n");
}

#[test]
fn echo_started_before_its_topic_prints_every_line_of_a_pipeline() {
    // `shmbus echo t -n N & seq 1 N | shmbus pub t`: echo waits for the topic, the daemon
    // attaches it when `pub` creates the topic and before `pub` may publish, so every line
    // arrives, in order, though N is many times the lossless ring's capacity (pub waits).
    const N: usize = 30_000;
    let d = Daemon::start("echo_pipe");
    let n = N.to_string();
    let echo = Running::spawn(&mut d.shmbus(&["echo", "pipe/t", "-n", &n]));
    let deadline = std::time::Instant::now() + WAIT;
    while !echo.stderr.text().contains("does not exist yet; waiting") {
        assert!(
            std::time::Instant::now() < deadline,
            "echo never said it waits: {}",
            echo.stderr.text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let input: String = (1..=N).map(|i| format!("{i}\n")).collect();
    let out = run_with_input(&mut d.shmbus(&["pub", "pipe/t"]), input.as_bytes());
    assert_ok(&out);
    let stats = d.bus.stats(Some("pipe/t")).unwrap();
    assert!(
        stats[0].spec.capacity < N as u32 / 4,
        "the burst must be larger than the ring: {:?}",
        stats[0].spec
    );
    let out = echo.wait();
    assert_ok(&out);
    assert_eq!(out.stdout, input, "echo missed or reordered lines");
}

#[test]
fn hz_reports_rate_and_jitter() {
    let d = Daemon::start("hz");
    drop(d.bus.publisher::<[u8]>("hz/t").create().unwrap());
    let hz = Running::spawn(&mut d.shmbus(&["hz", "hz/t", "-n", "20"]));
    d.wait_subscribers("hz/t", 1);
    let input: String = (0..20).map(|i| format!("{i}\n")).collect();
    let out = run_with_input(
        &mut d.shmbus(&["pub", "hz/t", "--rate", "200"]),
        input.as_bytes(),
    );
    assert_ok(&out);
    let out = hz.wait();
    assert_ok(&out);
    let line = out.stdout.lines().last().unwrap_or_default();
    assert!(line.starts_with("average rate: "), "{}", out.stdout);
    assert!(
        line.contains("std dev") && line.contains("window 19"),
        "{line}"
    );
    let rate: f64 = line["average rate: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        rate > 5.0 && rate < 400.0,
        "rate {rate} for a 200 Hz publisher"
    );
}

#[test]
fn help_documents_exit_codes_and_subcommands() {
    let out = run(Command::new(env!("CARGO_BIN_EXE_shmbus"))
        .arg("--help")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped()));
    assert_ok(&out);
    for needle in [
        "Exit codes",
        "list",
        "stat",
        "echo",
        "pub",
        "hz",
        "doctor",
        "delete",
        "record",
        "play",
        "info",
        "SHMBUS_SOCKET",
    ] {
        assert!(
            out.stdout.contains(needle),
            "{needle} missing:\n{}",
            out.stdout
        );
    }
    for sub in [
        "list", "stat", "echo", "pub", "hz", "doctor", "delete", "record", "play", "info",
    ] {
        let out = run(Command::new(env!("CARGO_BIN_EXE_shmbus"))
            .args([sub, "--help"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()));
        assert_ok(&out);
        assert!(
            out.stdout.contains("Usage: shmbus"),
            "{sub}: {}",
            out.stdout
        );
    }
}

fn topic_names(d: &Daemon) -> Vec<String> {
    d.bus.list().unwrap().into_iter().map(|t| t.name).collect()
}

#[test]
fn delete_refuses_while_ports_are_attached_unless_forced() {
    let d = Daemon::start("delbusy");
    drop(d.bus.publisher::<[u8]>("del/busy").create().unwrap());
    drop(d.bus.publisher::<[u8]>("del/idle").create().unwrap());
    let echo = Running::spawn(&mut d.shmbus(&["echo", "del/busy"]));
    d.wait_subscribers("del/busy", 1);

    // Refused, naming the subscriber's process; with a pattern, nothing at all is deleted.
    let pid = echo.child.id().to_string();
    for args in [
        &["delete", "del/busy", "--yes"][..],
        &["delete", "del/**", "--yes"],
    ] {
        let out = run(&mut d.shmbus(args));
        assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
        assert!(
            out.stderr
                .contains(&format!("'del/busy' has 1 subscriber (pid {pid}) attached")),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("--force"), "{}", out.stderr);
        assert_eq!(topic_names(&d), ["del/busy", "del/idle"]);
    }

    // --force closes it for the subscriber, which drains and exits 0 as on Bus::delete.
    let out = run(&mut d.shmbus(&["delete", "del/busy", "--yes", "--force"]));
    assert_ok(&out);
    assert_eq!(out.stdout, "deleted del/busy\n");
    assert_ok(&echo.wait());
    assert_eq!(topic_names(&d), ["del/idle"]);
}

#[test]
fn delete_takes_names_and_patterns_and_refuses_unknown_names() {
    let d = Daemon::start("delpat");
    for t in ["del/x/1", "del/x/2", "del/y", "keep/1"] {
        drop(d.bus.publisher::<[u8]>(t).create().unwrap());
    }
    // A name that matches nothing: refused, and nothing else is deleted either.
    let out = run(&mut d.shmbus(&["delete", "del/y", "no/such", "--yes"]));
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("no topic 'no/such'"), "{}", out.stderr);
    assert_eq!(topic_names(&d).len(), 4);

    let out = run(&mut d.shmbus(&["delete", "del/x/*", "del/y", "--yes"]));
    assert_ok(&out);
    assert_eq!(
        out.stdout,
        "deleted del/x/1\ndeleted del/x/2\ndeleted del/y\n"
    );
    assert_eq!(topic_names(&d), ["keep/1"]);

    let out = run(&mut d.shmbus(&["delete", "bad//name", "--yes"]));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
}

#[test]
fn delete_without_yes_asks_on_a_terminal_and_refuses_without_one() {
    let d = Daemon::start("delask");
    drop(d.bus.publisher::<[u8]>("del/t").create().unwrap());
    // Standard input is /dev/null: no one can confirm.
    let out = run(&mut d.shmbus(&["delete", "del/t"]));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("not a terminal"), "{}", out.stderr);
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    assert_eq!(topic_names(&d), ["del/t"]);

    // On a terminal (a pseudo-terminal from script(1)), "n" keeps it and "y" deletes it.
    let on_tty = |answer: &str| {
        let command = format!(
            "{} --socket {} delete del/t",
            env!("CARGO_BIN_EXE_shmbus"),
            d.socket.display()
        );
        let mut c = Command::new("script");
        c.args(["-qec", &command, "/dev/null"])
            .env_remove("SHMBUS_SOCKET")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        run_with_input(&mut c, answer.as_bytes())
    };
    let out = on_tty("n\n");
    assert_eq!(out.status.code(), Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("delete 1 topic: del/t? [y/N]"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("nothing was deleted"), "{}", out.stdout);
    assert_eq!(topic_names(&d), ["del/t"]);
    let out = on_tty("y\n");
    assert_ok(&out);
    assert!(out.stdout.contains("deleted del/t"), "{}", out.stdout);
    assert!(topic_names(&d).is_empty());
}

#[test]
fn pub_rate_above_machine_speed_sends_everything_unthrottled() {
    let d = Daemon::start("rate");
    drop(d.bus.publisher::<[u8]>("rate/t").create().unwrap());
    let echo = Running::spawn(&mut d.shmbus(&["echo", "rate/t", "-n", "100000"]));
    d.wait_subscribers("rate/t", 1);
    let input: String = (1..=100_000).map(|i| format!("{i}\n")).collect();
    // A billion messages per second is beyond any machine: the pacer never sleeps.
    let published = run_with_input(
        &mut d.shmbus(&["pub", "rate/t", "--rate", "1000000000"]),
        input.as_bytes(),
    );
    assert_ok(&published);
    let echoed = echo.wait();
    assert_ok(&echoed);
    assert!(
        echoed.stdout == input,
        "lost, duplicated or reordered lines"
    );
}

#[test]
fn doctor_reports_files_of_embedded_daemons_whose_process_is_gone() {
    let d = Daemon::start("embleft");
    let out = run(&mut d.shmbus(&["doctor"]));
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("embedded daemons:"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(line.starts_with("OK"), "{line}");
    assert!(line.contains("no files left by exited processes"), "{line}");
    // A process that has exited (and been reaped) and this live one.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let live = std::process::id();
    for pid in [dead, live] {
        for suffix in ["", ".lock", ".status", ".topics"] {
            let name = format!("shmbus-embedded-{pid}-0.sock{suffix}");
            std::fs::write(d.dir.0.join(name), b"").unwrap();
        }
    }
    let out = run(&mut d.shmbus(&["doctor"]));
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("embedded daemons:"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(line.starts_with("WARN"), "{line}");
    assert!(line.contains("4 file(s)"), "{line}");
    assert!(
        line.contains(&format!("shmbus-embedded-{dead}-0.sock.lock")),
        "{line}"
    );
    assert!(
        !line.contains(&format!("shmbus-embedded-{live}-")),
        "{line}"
    );
}
