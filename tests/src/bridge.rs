//! Bridge processes for the integration tests: `shmbus-peer bridge ...` (the very code of
//! `shmbus-bridge`) on loopback, scouting off, with its JSON lines read as they come.

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Daemon, Peer};

/// A free TCP port on 127.0.0.1 (bound and released; good enough for a test).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The loopback endpoint of `port`.
pub fn endpoint(port: u16) -> String {
    format!("tcp/127.0.0.1:{port}")
}

/// A running bridge and what it printed so far.
pub struct Bridge {
    peer: Peer,
    /// The whole command line: program first.
    args: Vec<String>,
    /// Every event line so far.
    pub events: Vec<Value>,
    /// The last stats line.
    pub last_stats: Option<Value>,
}

/// Write a config file that makes the bridge print its counters every 100 ms.
fn stats_config(dir: &Path) -> String {
    let path = dir.join(format!("bridge-{}.toml", crate::now_ns()));
    std::fs::write(&path, "stats_interval_ms = 100\nscan_interval_ms = 50\n")
        .expect("write the bridge config");
    path.to_str().expect("a UTF-8 temp path").to_string()
}

impl Bridge {
    /// Start a bridge for daemon `d`, listening on `port` (loopback), with `args` (patterns,
    /// `--connect`, ...), and wait for its `started` event.
    pub fn start(exe: &str, d: &Daemon, port: u16, args: &[&str]) -> Bridge {
        Bridge::start_in(&[], exe, d, &endpoint(port), args)
    }

    /// Like [`Bridge::start`], listening on `listen`, with the command run through `wrapper`
    /// (e.g. `ip netns exec NAME`).
    pub fn start_in(
        wrapper: &[&str],
        exe: &str,
        d: &Daemon,
        listen: &str,
        args: &[&str],
    ) -> Bridge {
        let mut all: Vec<String> = wrapper.iter().map(|w| w.to_string()).collect();
        all.extend([exe.to_string(), "bridge".to_string()]);
        all.extend(
            [
                "--socket",
                d.socket_str(),
                "--listen",
                listen,
                "--config",
                &stats_config(d.dir()),
            ]
            .iter()
            .map(|a| a.to_string()),
        );
        all.extend(args.iter().map(|a| a.to_string()));
        let mut b = Bridge {
            peer: Bridge::spawn(&all),
            args: all,
            events: Vec::new(),
            last_stats: None,
        };
        b.wait_event(Duration::from_secs(20), "started", |_| true);
        b
    }

    fn spawn(argv: &[String]) -> Peer {
        let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
        Peer::spawn(&argv[0], &args)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.peer.pid()
    }

    /// What it logged so far.
    pub fn stderr(&self) -> String {
        self.peer.stderr()
    }

    fn take(&mut self, line: &str) -> Option<Value> {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "the bridge printed {line:?}, not JSON ({e}); stderr:\n{}",
                self.stderr()
            )
        });
        if let Some(stats) = v.get("stats") {
            self.last_stats = Some(stats.clone());
            return None;
        }
        self.events.push(v.clone());
        Some(v)
    }

    /// Read what is already there.
    pub fn pump(&mut self) {
        while let Some(line) = self.peer.try_line() {
            self.take(&line);
        }
    }

    /// The first event `name` (seen before or to come) for which `pred` holds; panics after
    /// `timeout`.
    pub fn wait_event(
        &mut self,
        timeout: Duration,
        name: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let hit = |v: &Value| v["event"] == name && pred(v);
        self.pump();
        if let Some(v) = self.events.iter().find(|v| hit(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "bridge `{}`: no {name} event within {timeout:?}; events {:?}; stderr:\n{}",
                self.args.join(" "),
                self.events,
                self.stderr()
            );
            let line = self.peer.line(left);
            if let Some(v) = self.take(&line) {
                if hit(&v) {
                    return v;
                }
            }
        }
    }

    /// Wait until the bridge exports `topic` and a remote importer subscribes to it.
    pub fn wait_exported_and_matched(&mut self, topic: &str) {
        let t = Duration::from_secs(20);
        self.wait_event(t, "exporting", |v| v["topic"] == topic);
        self.wait_event(t, "matched", |v| {
            v["topic"] == topic && v["matched"] == true
        });
    }

    /// Wait until the bridge imports `topic` (the local topic exists).
    pub fn wait_imported(&mut self, topic: &str) {
        self.wait_event(Duration::from_secs(20), "importing", |v| {
            v["topic"] == topic
        });
    }

    /// Whether an event `name` for `topic` was printed so far.
    pub fn saw(&mut self, name: &str, topic: &str) -> bool {
        self.pump();
        self.events
            .iter()
            .any(|v| v["event"] == name && v["topic"] == topic)
    }

    /// A stats line printed after this call (the counters are at least this fresh).
    pub fn fresh_stats(&mut self) -> Value {
        self.pump();
        self.last_stats = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.last_stats.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no stats line; stderr:\n{}", self.stderr());
            let line = self.peer.line(left);
            self.take(&line);
        }
        self.last_stats.clone().unwrap_or_default()
    }

    /// Poll the counters until `cond` holds; panics with the last counters after `timeout`.
    pub fn wait_stats(&mut self, timeout: Duration, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.fresh_stats();
            if cond(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "bridge counters never got there within {timeout:?}: {s}; stderr:\n{}",
                self.stderr()
            );
        }
    }

    /// SIGKILL it and reap it.
    pub fn kill(&mut self) {
        self.peer.kill_and_reap();
    }

    /// Start it again with the same arguments (after [`Bridge::kill`]); the events start
    /// afresh.
    pub fn restart(&mut self) {
        self.peer = Bridge::spawn(&self.args);
        self.events.clear();
        self.last_stats = None;
        self.wait_event(Duration::from_secs(20), "started", |_| true);
    }

    /// SIGTERM, and the final counters it prints on the way out.
    pub fn stop(mut self) -> Value {
        self.peer.terminate();
        let lines = self.peer.lines_until_eof(Duration::from_secs(10));
        for l in &lines {
            self.take(l);
        }
        let status = self.peer.wait_exit(Duration::from_secs(10));
        assert!(
            status.success(),
            "bridge exited with {status}; stderr:\n{}",
            self.stderr()
        );
        self.last_stats.clone().unwrap_or_default()
    }
}
