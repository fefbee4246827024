//! The measuring loops run inside the participant processes.

use std::io;
use std::time::Duration;

use crate::error::{invalid_data, other};
use crate::payload::{self, Header, MIN_STAMPED_PAYLOAD};
use crate::protocol::{RoleReport, Timing};
use crate::stats::Hist;
use crate::transport::{Endpoint, Role, RunSpec, Scenario, Topology};
use crate::util::{monotonic_ns, process_cpu_ns};

const NS_PER_MS: u64 = 1_000_000;

/// Runs `role`'s loop for `spec` on `ep` and returns what it measured.
pub fn run_role(
    spec: &RunSpec,
    role: Role,
    timing: &Timing,
    ep: &mut dyn Endpoint,
) -> io::Result<RoleReport> {
    let len = spec.payload_bytes;
    if len < payload::MIN_PAYLOAD {
        return Err(other(format!(
            "payload {len} B is below the 8-byte minimum"
        )));
    }
    if spec.scenario.is_paced() && len < MIN_STAMPED_PAYLOAD {
        return Err(other(format!(
            "the wake-up scenario needs at least {MIN_STAMPED_PAYLOAD} B for its timestamp"
        )));
    }
    match (spec.scenario, role) {
        (Scenario::PingPong, Role::Ping) => ping(len, timing, ep),
        (Scenario::PingPong, Role::Pong) => pong(len, ep),
        (s, Role::Sender { index }) if s.is_paced() => paced_sender(len, index, timing, ep),
        (Scenario::Waiters, Role::Sender { index }) => batched_sender(len, index, timing, ep),
        (_, Role::Sender { index }) => sender(len, index, timing, ep),
        (_, Role::Receiver { .. }) => receiver(spec, ep),
        (scenario, role) => Err(other(format!("role {role} has no part in {scenario}"))),
    }
}

fn send_word(ep: &mut dyn Endpoint, len: usize, word: u64) -> io::Result<()> {
    ep.send(len, &mut |buf| payload::fill(buf, word))
}

fn recv_word(ep: &mut dyn Endpoint, len: usize) -> io::Result<u64> {
    let mut word = 0;
    ep.recv(&mut |buf| {
        word = payload::check(buf, len)?;
        Ok(())
    })?;
    Ok(word)
}

fn sender_id(index: usize) -> io::Result<u8> {
    u8::try_from(index).map_err(|_| other(format!("sender index {index} exceeds 255")))
}

fn measuring_done(t: &Timing, count: u64, elapsed_ns: u64) -> bool {
    count >= t.max_iters || (count >= t.min_iters && elapsed_ns >= t.measure_ms * NS_PER_MS)
}

/// Ping side: send, wait for the echo, record RTT/2.
fn ping(len: usize, t: &Timing, ep: &mut dyn Endpoint) -> io::Result<RoleReport> {
    let mut seq = 0u64;
    let mut exchange = |ep: &mut dyn Endpoint, warmup: bool| -> io::Result<(u64, u64)> {
        seq += 1;
        let word = Header {
            seq,
            sender: 0,
            warmup,
            stop: false,
        }
        .encode();
        let t0 = monotonic_ns();
        send_word(ep, len, word)?;
        let echo = recv_word(ep, len)?;
        let t1 = monotonic_ns();
        if echo != word {
            return Err(invalid_data(format!(
                "echo {echo:#x} does not match ping {word:#x}"
            )));
        }
        Ok((t0, t1))
    };

    let warm_until = monotonic_ns() + t.warmup_ms * NS_PER_MS;
    let mut warm = 0u64;
    loop {
        let (_, t1) = exchange(ep, true)?;
        warm += 1;
        if warm >= t.min_warmup && t1 >= warm_until {
            break;
        }
    }

    let mut hist = Hist::new();
    let start = monotonic_ns();
    let mut count = 0u64;
    let end = loop {
        let (t0, t1) = exchange(ep, false)?;
        hist.record((t1 - t0).div_ceil(2));
        count += 1;
        if measuring_done(t, count, t1 - start) {
            break t1;
        }
    };
    send_word(
        ep,
        len,
        Header {
            seq: seq + 1,
            stop: true,
            ..Header::default()
        }
        .encode(),
    )?;
    Ok(RoleReport {
        hist: hist.to_pairs(),
        measured: count,
        window_ns: end - start,
        total: warm + count,
        ..RoleReport::default()
    })
}

/// Pong side: echo every message until the stop message.
fn pong(len: usize, ep: &mut dyn Endpoint) -> io::Result<RoleReport> {
    let mut total = 0;
    loop {
        let word = recv_word(ep, len)?;
        if Header::decode(word).stop {
            break;
        }
        send_word(ep, len, word)?;
        total += 1;
    }
    Ok(RoleReport {
        total,
        ..RoleReport::default()
    })
}

/// Throughput / fan-out / fan-in sender: send back to back, recording the
/// wall time of every publish (fill + send to all receivers).
fn sender(len: usize, index: usize, t: &Timing, ep: &mut dyn Endpoint) -> io::Result<RoleReport> {
    let sender = sender_id(index)?;
    let mut seq = 0u64;
    let warm_until = monotonic_ns() + t.warmup_ms * NS_PER_MS;
    let mut warm = 0u64;
    loop {
        seq += 1;
        send_word(
            ep,
            len,
            Header {
                seq,
                sender,
                warmup: true,
                stop: false,
            }
            .encode(),
        )?;
        warm += 1;
        if warm >= t.min_warmup && monotonic_ns() >= warm_until {
            break;
        }
    }

    let mut hist = Hist::new();
    let cpu0 = process_cpu_ns();
    let start = monotonic_ns();
    let mut prev = start;
    let mut count = 0u64;
    loop {
        seq += 1;
        send_word(
            ep,
            len,
            Header {
                seq,
                sender,
                warmup: false,
                stop: false,
            }
            .encode(),
        )?;
        let now = monotonic_ns();
        hist.record(now - prev);
        prev = now;
        count += 1;
        if measuring_done(t, count, now - start) {
            break;
        }
    }
    let cpu_ns = process_cpu_ns() - cpu0;
    send_word(
        ep,
        len,
        Header {
            seq: seq + 1,
            sender,
            warmup: false,
            stop: true,
        }
        .encode(),
    )?;
    Ok(RoleReport {
        hist: hist.to_pairs(),
        measured: count,
        window_ns: prev - start,
        cpu_ns,
        total: warm + count,
        lost: 0,
    })
}

/// Publishes per histogram sample of the `waiters` sender (ns per `BATCH` publishes).
pub const BATCH: u64 = 100;

/// `waiters` sender: back to back like [`sender`], but timed in batches of [`BATCH`]
/// publishes, so the histogram holds ns per [`BATCH`] publishes (ns/publish with two
/// decimals, below the clock's granularity) and a preemption spoils one batch, not the median.
fn batched_sender(
    len: usize,
    index: usize,
    t: &Timing,
    ep: &mut dyn Endpoint,
) -> io::Result<RoleReport> {
    let sender = sender_id(index)?;
    let mut seq = 0u64;
    let mut publish = |ep: &mut dyn Endpoint, warmup: bool| -> io::Result<()> {
        seq += 1;
        let word = Header {
            seq,
            sender,
            warmup,
            stop: false,
        }
        .encode();
        send_word(ep, len, word)
    };
    let warm_until = monotonic_ns() + t.warmup_ms * NS_PER_MS;
    let mut warm = 0u64;
    while warm < t.min_warmup || monotonic_ns() < warm_until {
        for _ in 0..BATCH {
            publish(ep, true)?;
        }
        warm += BATCH;
    }
    let mut hist = Hist::new();
    let cpu0 = process_cpu_ns();
    let start = monotonic_ns();
    let mut prev = start;
    let mut count = 0u64;
    loop {
        for _ in 0..BATCH {
            publish(ep, false)?;
        }
        let now = monotonic_ns();
        hist.record(now - prev);
        prev = now;
        count += BATCH;
        if measuring_done(t, count, now - start) {
            break;
        }
    }
    let cpu_ns = process_cpu_ns() - cpu0;
    send_word(
        ep,
        len,
        Header {
            seq: seq + 1,
            sender,
            warmup: false,
            stop: true,
        }
        .encode(),
    )?;
    Ok(RoleReport {
        hist: hist.to_pairs(),
        measured: count,
        window_ns: prev - start,
        cpu_ns,
        total: warm + count,
        lost: 0,
    })
}

/// Wake-up sender: sleep, then send a message stamped with the send time, so
/// the receiver is blocked in the kernel whenever a message arrives.
fn paced_sender(
    len: usize,
    index: usize,
    t: &Timing,
    ep: &mut dyn Endpoint,
) -> io::Result<RoleReport> {
    let sender = sender_id(index)?;
    let pause = Duration::from_micros(t.wake_interval_us);
    let mut seq = 0u64;
    let mut send_stamped = |ep: &mut dyn Endpoint, warmup: bool| -> io::Result<()> {
        seq += 1;
        let word = Header {
            seq,
            sender,
            warmup,
            stop: false,
        }
        .encode();
        std::thread::sleep(pause);
        ep.send(len, &mut |buf| {
            payload::fill(buf, word);
            // Last thing before the transport sends: the timestamp.
            payload::stamp(buf, monotonic_ns());
        })
    };
    let warm = t.min_warmup.max(3);
    for _ in 0..warm {
        send_stamped(ep, true)?;
    }
    let start = monotonic_ns();
    let mut count = 0u64;
    loop {
        send_stamped(ep, false)?;
        count += 1;
        if measuring_done(t, count, monotonic_ns() - start) {
            break;
        }
    }
    send_word(
        ep,
        len,
        Header {
            seq: seq + 1,
            sender,
            warmup: false,
            stop: true,
        }
        .encode(),
    )?;
    Ok(RoleReport {
        measured: count,
        window_ns: monotonic_ns() - start,
        total: warm + count,
        ..RoleReport::default()
    })
}

/// Receiver of the one-way scenarios: checks every message and its
/// per-sender sequence, measures the receive rate (from the first measured
/// message on) or, for wake-up, the send-to-wake latency.
fn receiver(spec: &RunSpec, ep: &mut dyn Endpoint) -> io::Result<RoleReport> {
    let len = spec.payload_bytes;
    let stamped = spec.scenario.is_paced();
    let senders = match spec.topology() {
        Topology::ManyToOne { senders } => senders,
        _ => 1,
    };
    let mut last_seq = [0u64; 256];
    let mut stops = 0usize;
    let mut hist = Hist::new();
    let mut anchor: Option<u64> = None;
    let mut last_rx = 0u64;
    let (mut count, mut total, mut lost) = (0u64, 0u64, 0u64);
    while stops < senders {
        let (mut word, mut t_rx, mut sent_at) = (0u64, 0u64, 0u64);
        ep.recv(&mut |buf| {
            t_rx = monotonic_ns();
            word = payload::check(buf, len)?;
            if stamped {
                sent_at = payload::read_stamp(buf)?;
            }
            Ok(())
        })?;
        if let Some(t) = ep.rx_time_ns() {
            t_rx = t;
        }
        let h = Header::decode(word);
        let prev = &mut last_seq[usize::from(h.sender)];
        if h.seq <= *prev {
            return Err(invalid_data(format!(
                "sender {}: sequence went from {} to {} (duplicate or reordered message)",
                h.sender, *prev, h.seq
            )));
        }
        lost += h.seq - *prev - 1;
        *prev = h.seq;
        if h.stop {
            stops += 1;
            continue;
        }
        total += 1;
        if stamped {
            if !h.warmup {
                hist.record(t_rx.saturating_sub(sent_at));
                count += 1;
            }
            continue;
        }
        // Rate: the window opens at the first measured message and covers
        // every message received after it (warm-up ones of slower senders
        // in a fan-in included, as they took time too).
        match anchor {
            None if !h.warmup => anchor = Some(t_rx),
            None => {}
            Some(_) => {
                count += 1;
                last_rx = t_rx;
            }
        }
    }
    let window_ns = match anchor {
        Some(a) if count > 0 => last_rx - a,
        _ => 0,
    };
    Ok(RoleReport {
        hist: hist.to_pairs(),
        measured: count,
        window_ns,
        cpu_ns: 0,
        total,
        lost,
    })
}
