//! `shmbus-peer` commands that attack as another uid, without the client library: they drop to
//! the given uid first (needs root), speak the raw protocol, and write whatever they have mapped.
//! Each prints JSON lines with what it did and what the daemon answered; the tests in
//! `tests/tests/security_*.rs` assert the honest parties' outcome.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bus_core::ring::StartAt;
use bus_proto::fdpass;
use bus_proto::protocol::{How, Request, Response, Role, PROTOCOL_VERSION};
use bus_proto::segment::{self, Access};
use bus_proto::wake::WakeBell;
use serde_json::json;

use super::{fail, say};

/// Drop to `uid`/`gid` with no supplementary group. Call before any thread starts.
pub fn drop_to(uid: u32, gid: u32) -> Result<(), nix::Error> {
    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
    setgroups(&[])
        .and_then(|_| setgid(Gid::from_raw(gid)))
        .and_then(|_| setuid(Uid::from_raw(uid)))
}

/// A raw connection that said hello; returns it and the daemon's pid.
fn hello(socket: &Path) -> Result<(UnixStream, u32), String> {
    let s = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let req = Request::Hello {
        version: PROTOCOL_VERSION,
        client_name: "attacker".into(),
    };
    match exchange(&s, &req, &[])? {
        (Response::HelloOk { daemon_pid, .. }, _) => Ok((s, daemon_pid)),
        (other, _) => Err(format!("hello: {other:?}")),
    }
}

fn exchange(
    s: &UnixStream,
    req: &Request,
    fds: &[i32],
) -> Result<(Response, Vec<OwnedFd>), String> {
    fdpass::write_frame_with_fds(s, req, fds).map_err(|e| format!("send: {e}"))?;
    fdpass::read_frame_with_fds::<Response>(s, 4).map_err(|e| format!("receive: {e}"))
}

/// The answer as JSON: `{"ok": ...}` or `{"code": ..., "message": ...}`.
fn answer_json(resp: &Response) -> serde_json::Value {
    match resp {
        Response::Error { code, message } => {
            json!({ "code": format!("{code:?}"), "message": message })
        }
        Response::Attached {
            index, generation, ..
        } => json!({ "ok": "attached", "index": index, "generation": generation }),
        other => json!({ "ok": format!("{other:?}") }),
    }
}

/// The access mode (`O_RDONLY`, `O_RDWR`) of a descriptor.
fn access_mode(fd: &OwnedFd) -> &'static str {
    // SAFETY: F_GETFL on a live descriptor takes no memory.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    match flags & libc::O_ACCMODE {
        libc::O_RDONLY => "read-only",
        libc::O_RDWR => "read-write",
        _ => "other",
    }
}

/// What an attacker holds after subscribing with the raw protocol: its connection and the
/// daemon's pid, its entry (index, generation), the segment's two descriptors, and its mapping.
struct Subscribed {
    conn: UnixStream,
    daemon_pid: u32,
    entry: (u32, u64),
    fds: Vec<OwnedFd>,
    ring: std::sync::Arc<bus_proto::segment::ShmRing>,
}

/// Drop to `uid`/`gid`, say hello and subscribe to `topic` with the raw protocol, and map the
/// segment as a subscriber does (control read-write, data read-only).
fn subscribe_as(socket: &Path, topic: &str, (uid, gid): (u32, u32)) -> Result<Subscribed, String> {
    drop_to(uid, gid).map_err(|e| format!("drop privileges: {e}"))?;
    let (conn, daemon_pid) = hello(socket).map_err(|e| format!("hello: {e}"))?;
    let attach = Request::Attach {
        topic: topic.into(),
        role: Role::Subscriber,
        how: How::Open { type_info: None },
        start: StartAt::Latest,
    };
    let (entry, fds) = match exchange(&conn, &attach, &[]) {
        Ok((
            Response::Attached {
                index, generation, ..
            },
            fds,
        )) if fds.len() == 2 => ((index, generation), fds),
        other => return Err(format!("subscribe: {other:?}")),
    };
    let ring = segment::open_ring(
        fds[0].as_fd(),
        fds[1].as_fd(),
        Access::Subscriber,
        WakeBell::new(),
    )
    .map_err(|e| format!("map: {e}"))?;
    Ok(Subscribed {
        conn,
        daemon_pid,
        entry,
        fds,
        ring,
    })
}

/// `forge-publisher`: as `uid`, subscribe to `topic` (raw protocol), write a publisher entry
/// with this process's pid into the control file, print `{"forged": ...}`, then wait (at most
/// 60 s) for a daemon with another pid to answer on the socket, and ask it to hand back the
/// forged publisher entry and then the real subscriber entry. Prints `{"publisher": answer,
/// "publisher_fds": [...], "subscriber": answer, "subscriber_fds": [...]}`.
pub fn forge_publisher(socket: &Path, topic: &str, (uid, gid): (u32, u32)) -> ExitCode {
    let Subscribed {
        conn,
        daemon_pid: first_daemon,
        entry: (sub_index, sub_generation),
        fds,
        ring,
    } = match subscribe_as(socket, topic, (uid, gid)) {
        Ok(s) => s,
        Err(e) => return fail("attack", e),
    };
    let pid = std::process::id();
    let (pub_index, pub_generation) = match ring.attach_any_publisher(pid) {
        Ok(p) => p,
        Err(e) => return fail("forge a publisher entry", e),
    };
    say(&json!({
        "forged": { "index": pub_index, "generation": pub_generation, "pid": pid },
        "subscriber": { "index": sub_index, "generation": sub_generation },
    })
    .to_string());
    // Keep the old connection until the daemon is gone: its ports stay ours until then.
    let deadline = Instant::now() + Duration::from_secs(60);
    let conn2 = loop {
        if Instant::now() >= deadline {
            return fail("wait for a restarted daemon", "none came within 60 s");
        }
        match hello(socket) {
            Ok((c, pid)) if pid != first_daemon => break c,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    drop(conn);
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut out = serde_json::Map::new();
    for (what, role, index, generation) in [
        (
            "publisher",
            Role::Publisher,
            pub_index as u32,
            pub_generation,
        ),
        ("subscriber", Role::Subscriber, sub_index, sub_generation),
    ] {
        let req = Request::Reattach {
            topic: topic.into(),
            role,
            index,
            generation,
        };
        match exchange(&conn2, &req, &raw) {
            Ok((resp, got)) => {
                out.insert(what.into(), answer_json(&resp));
                let modes: Vec<&str> = got.iter().map(access_mode).collect();
                out.insert(format!("{what}_fds"), json!(modes));
            }
            Err(e) => {
                out.insert(what.into(), json!({ "error": e }));
            }
        }
    }
    say(&serde_json::Value::Object(out).to_string());
    ExitCode::SUCCESS
}

/// `forge-subscribers`: as `uid`, subscribe to `topic` (raw protocol), then fill the rest of
/// the subscriber table with forged entries claiming pid 1 and cursors at the oldest message,
/// print `{"forged": N}`, and exit (the forged entries stay in the control file).
pub fn forge_subscribers(socket: &Path, topic: &str, (uid, gid): (u32, u32)) -> ExitCode {
    let Subscribed {
        conn: _conn,
        fds: _fds,
        ring,
        ..
    } = match subscribe_as(socket, topic, (uid, gid)) {
        Ok(s) => s,
        Err(e) => return fail("attack", e),
    };
    let mut forged = 0;
    while ring.attach_any_subscriber(1, StartAt::Oldest).is_ok() {
        forged += 1;
    }
    say(&json!({ "forged": forged }).to_string());
    ExitCode::SUCCESS
}

/// `storm-wake-bits`: as `uid`, subscribe to `topic` (raw protocol), print `{"storming": true}`,
/// then for `seconds` keep setting every armed bit of both bells in the control file, as fast
/// as it can (a forged wake-up for every slot, again and again).
pub fn storm_wake_bits(
    socket: &Path,
    topic: &str,
    (uid, gid): (u32, u32),
    seconds: u64,
) -> ExitCode {
    use bus_core::storage::Storage;
    let Subscribed {
        conn: _conn,
        fds: _fds,
        ring,
        ..
    } = match subscribe_as(socket, topic, (uid, gid)) {
        Ok(s) => s,
        Err(e) => return fail("attack", e),
    };
    say(&json!({ "storming": true, "pid": std::process::id() }).to_string());
    let control = ring.storage().control();
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut rounds: u64 = 0;
    while Instant::now() < until {
        for bell in [&control.data, &control.space] {
            for word in bell.armed.iter() {
                word.store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
            }
        }
        rounds += 1;
    }
    say(&json!({ "rounds": rounds }).to_string());
    ExitCode::SUCCESS
}

/// `watch-as`: as `uid`, watch `pattern` with the client library and print one JSON line per
/// event (`{"created": name}` or `{"deleted": name}`) until `seconds` pass with no event.
pub fn watch_as(socket: &Path, pattern: &str, (uid, gid): (u32, u32), seconds: u64) -> ExitCode {
    if let Err(e) = drop_to(uid, gid) {
        return fail("drop privileges", e);
    }
    let bus = match bus_client::Bus::connect_to(socket) {
        Ok(b) => b,
        Err(e) => return fail("connect", e),
    };
    let mut watch = match bus.watch_topics(pattern).open() {
        Ok(w) => w,
        Err(e) => return fail("watch", e),
    };
    say(&json!({ "watching": pattern }).to_string());
    let mut kept = Vec::new();
    loop {
        match watch.recv_timeout(Duration::from_secs(seconds)) {
            Ok(bus_client::TopicEvent::Created(sub)) => {
                say(&json!({ "created": sub.topic() }).to_string());
                kept.push(sub);
            }
            Ok(bus_client::TopicEvent::Deleted(name)) => {
                say(&json!({ "deleted": name }).to_string());
            }
            Ok(_) => {}
            Err(e) => {
                say(&json!({ "end": e.to_string() }).to_string());
                return ExitCode::SUCCESS;
            }
        }
    }
}
