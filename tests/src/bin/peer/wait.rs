//! `shmbus-peer` commands that wait on descriptors: a `WaitSet` over several topics, the same in
//! tokio with `select!` over `recv_async`, and a waiter that arms and then only sleeps (to be
//! killed while armed).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bus_client::{Bus, RecvError, Subscriber, TryRecvError, WaitSet};
use bus_tests::{Checker, TestMsg};
use serde_json::json;

use super::{fail, say, stopping};

/// The summary every waiting command prints: per topic, what arrived and what was wrong.
fn summary(topics: &[String], checkers: &[Checker], outcome: &str, extra: serde_json::Value) {
    let per_topic: BTreeMap<&str, serde_json::Value> = topics
        .iter()
        .zip(checkers)
        .map(|(t, c)| {
            (
                t.as_str(),
                json!({
                    "received": c.received,
                    "errors": c.errors,
                    "error_count": c.error_count,
                    "first": c.first,
                    "last": c.last,
                }),
            )
        })
        .collect();
    say(&json!({ "topics": per_topic, "outcome": outcome, "extra": extra }).to_string());
}

fn open_all(bus: &Bus, topics: &[String]) -> Result<Vec<Subscriber<TestMsg>>, String> {
    topics
        .iter()
        .map(|t| {
            bus.subscriber::<TestMsg>(t)
                .open_or_create()
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// `waitset`: one thread, one `WaitSet` over `topics`; read every ready subscriber dry after
/// each wait; stop when each topic delivered `count` messages (or on the deadline, or
/// SIGTERM). Prints `ready` once attached, then a summary line with the number of waits.
pub(super) fn waitset(socket: &Path, topics: &[String], count: u64, timeout_ms: u64) -> ExitCode {
    let bus = match Bus::connect_to(socket) {
        Ok(b) => b,
        Err(e) => return fail("connect", e),
    };
    let mut subs = match open_all(&bus, topics) {
        Ok(s) => s,
        Err(e) => return fail("open", e),
    };
    let mut set = match WaitSet::new() {
        Ok(s) => s,
        Err(e) => return fail("wait set", e),
    };
    let mut ids = Vec::new();
    let mut guards = Vec::new();
    for s in &subs {
        match set.attach_subscriber(s) {
            Ok(a) => {
                ids.push(a.id());
                guards.push(a);
            }
            Err(e) => return fail("attach", e),
        }
    }
    say("ready");
    let mut checkers: Vec<Checker> = topics.iter().map(|_| Checker::new(true)).collect();
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let (mut waits, mut spurious) = (0u64, 0u64);
    let mut outcome = "count";
    while checkers.iter().any(|c| c.received < count) {
        if stopping() {
            outcome = "sigterm";
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            outcome = "timeout";
            break;
        }
        let ready = match set.wait(Some(left)) {
            Ok(r) => r.to_vec(),
            Err(e) => return fail("wait", e),
        };
        waits += 1;
        let mut got_any = false;
        for (i, sub) in subs.iter_mut().enumerate() {
            if !ready.contains(&ids[i]) {
                continue;
            }
            loop {
                match sub.try_recv() {
                    Ok(m) => {
                        got_any = true;
                        let seq = m.sequence();
                        checkers[i].check(&m, seq);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(e) => {
                        checkers[i].errors.push(format!("receive: {e}"));
                        break;
                    }
                }
            }
        }
        if !got_any && !ready.is_empty() {
            spurious += 1;
        }
    }
    drop(guards);
    summary(
        topics,
        &checkers,
        outcome,
        json!({ "waits": waits, "spurious": spurious }),
    );
    ExitCode::SUCCESS
}

/// A message with its topic sequence number, or why none came.
type Received = Result<(u64, TestMsg), RecvError>;

/// `tokio-select`: a current-thread tokio runtime `select!`s over `recv_async` on three topics
/// until each delivered `count` messages. Every round makes three new futures and drops the two
/// that lost, mid-wait: a cancelled receive must lose nothing. With `cancel_ms`, a fourth
/// branch (a timer) also cancels all three every so often.
pub(super) fn tokio_select(
    socket: &Path,
    topics: &[String],
    count: u64,
    timeout_ms: u64,
    cancel_ms: Option<u64>,
) -> ExitCode {
    if topics.len() != 3 {
        return fail("tokio-select", "needs exactly three --topic");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail("tokio runtime", e),
    };
    runtime.block_on(async move {
        let bus = match Bus::connect_to(socket) {
            Ok(b) => b,
            Err(e) => return fail("connect", e),
        };
        let mut subs = match open_all(&bus, topics) {
            Ok(s) => s,
            Err(e) => return fail("open", e),
        };
        say("ready");
        let mut checkers: Vec<Checker> = topics.iter().map(|_| Checker::new(true)).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
        let cancel_every = Duration::from_millis(cancel_ms.unwrap_or(3_600_000));
        let (mut cancels, mut outcome) = (0u64, "count");
        let [a, b, c] = &mut subs[..] else {
            return fail("tokio-select", "three subscribers");
        };
        while checkers.iter().any(|ch| ch.received < count) {
            if stopping() {
                outcome = "sigterm";
                break;
            }
            let got: Option<(usize, Received)> = tokio::select! {
                r = a.recv_async() => Some((0, r.map(|m| (m.sequence(), *m)))),
                r = b.recv_async() => Some((1, r.map(|m| (m.sequence(), *m)))),
                r = c.recv_async() => Some((2, r.map(|m| (m.sequence(), *m)))),
                _ = tokio::time::sleep(cancel_every) => { cancels += 1; None }
                _ = tokio::time::sleep_until(deadline) => { outcome = "timeout"; break; }
            };
            match got {
                Some((i, Ok((seq, m)))) => checkers[i].check(&m, seq),
                Some((i, Err(e))) => {
                    checkers[i].errors.push(format!("receive: {e}"));
                    outcome = "error";
                    break;
                }
                None => {}
            }
        }
        summary(topics, &checkers, outcome, json!({ "cancels": cancels }));
        ExitCode::SUCCESS
    })
}

/// `arm`: wait on `topic` through a wake slot without reading, in one of three ways:
/// * default: a `WaitSet` waits (armed) until the process is killed;
/// * `once`: an async receive is polled once (which arms the slot) and then forgotten: the
///   waiter is armed once and never again (a waiter that is woken and then stays busy), so the
///   first publish writes its eventfd and no later one does;
/// * `register_only`: the wake slot is registered and never armed.
///
/// Prints `armed` (or `registered`) when it is so.
pub(super) fn arm(socket: &Path, topic: &str, once: bool, register_only: bool) -> ExitCode {
    let bus = match Bus::connect_to(socket) {
        Ok(b) => b,
        Err(e) => return fail("connect", e),
    };
    let mut sub = match bus.subscriber::<TestMsg>(topic).open_or_create() {
        Ok(s) => s,
        Err(e) => return fail("open", e),
    };
    if register_only || once {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => return fail("tokio runtime", e),
        };
        let _enter = runtime.enter();
        if let Err(e) = sub.prepare_async() {
            return fail("prepare async", e);
        }
        if once {
            let mut future = Box::pin(sub.recv_async());
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            if future.as_mut().poll(&mut cx).is_ready() {
                return fail("arm", "a message was already there");
            }
            // Never polled again and never dropped: its wake slot stays armed until a ringer
            // takes it.
            std::mem::forget(future);
            say("armed");
        } else {
            say("registered");
        }
        while !stopping() {
            std::thread::sleep(Duration::from_millis(50));
        }
        return ExitCode::SUCCESS;
    }
    let mut set = match WaitSet::new() {
        Ok(s) => s,
        Err(e) => return fail("wait set", e),
    };
    let _guard = match set.attach_subscriber(&sub) {
        Ok(a) => a,
        Err(e) => return fail("attach", e),
    };
    // Said just before the first wait arms the slot (a test waits for the daemon to see it).
    say("armed");
    while !stopping() {
        let _ = set.wait(Some(Duration::from_secs(3600)));
    }
    ExitCode::SUCCESS
}

/// Descriptors this process has open.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// `fd-limit`: open subscribers on `topic`, lower this process's open-file limit (soft and
/// hard) to what it has open plus `spare`, then make wait sets, each with one of the
/// subscribers attached, until one fails.
/// Prints one JSON line: the error (its kind and sentence), the limit, how many wait sets
/// succeeded, and the open descriptors at the start, at the failure and after dropping them
/// all; then `dropped` and waits for SIGTERM (so that the test can look at the daemon).
pub(super) fn fd_limit(socket: &Path, topic: &str, spare: u64) -> ExitCode {
    use nix::sys::resource::{setrlimit, Resource};
    let bus = match Bus::connect_to(socket) {
        Ok(b) => b,
        Err(e) => return fail("connect", e),
    };
    // Enough subscribers, opened before the limit drops, that the wait sets' eventfds run out
    // first (one port holds at most four wake slots).
    let mut subs = Vec::new();
    for _ in 0..(spare / 4 + 2) {
        match bus.subscriber::<TestMsg>(topic).open_or_create() {
            Ok(s) => subs.push(s),
            Err(e) => return fail("open", e),
        }
    }
    let start = open_fds();
    let limit = start as u64 + spare;
    if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, limit, limit) {
        return fail("setrlimit", e);
    }
    let mut sets = Vec::new();
    let error = loop {
        let mut set = match WaitSet::new() {
            Ok(s) => s,
            Err(e) => break e,
        };
        match set.attach_subscriber(&subs[sets.len() / 4 % subs.len()]) {
            Ok(a) => sets.push((set, a)),
            Err(e) => break e,
        }
        if sets.len() > 10_000 {
            return fail("fd-limit", "no error after 10000 wait sets");
        }
    };
    let kind = match &error {
        bus_client::WaitError::TooManyFiles { .. } => "too_many_files",
        bus_client::WaitError::SlotsFull { .. } => "slots_full",
        bus_client::WaitError::Request(_) => "request",
        bus_client::WaitError::Io(_) => "io",
        _ => "other",
    };
    let at_error = open_fds();
    let made = sets.len();
    // Attachments before their sets (either order must release everything).
    drop(sets);
    let after = open_fds();
    say(&json!({
        "kind": kind,
        "error": error.to_string(),
        "limit": limit,
        "wait_sets": made,
        "fds_start": start,
        "fds_at_error": at_error,
        "fds_after": after,
    })
    .to_string());
    say("dropped");
    while !stopping() {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(subs);
    ExitCode::SUCCESS
}
