//! Criterion micro-benchmarks of the ring operations, over heap storage (no daemon, no
//! segment file, no processes).
//!
//! ```text
//! CARGO_TARGET_DIR=/tmp/target-crit cargo bench -p bus-benches --bench ring
//! ```
//!
//! | benchmark                          | what one iteration is                                     |
//! |------------------------------------|-----------------------------------------------------------|
//! | `ring/publish_copy/<size>`         | `try_send` (copy in) on a lossless ring, 1 subscriber      |
//! | `ring/recv_copy/<size>`            | `try_recv_into` (copy out) of that ring                    |
//! | `ring/send_recv_copy/<size>`       | `try_send` then `try_recv_into`: publish, consume at once  |
//! | `ring/loan_commit/<size>`          | `try_loan`, fill via `payload_mut`, `set_len`, `commit`    |
//! | `ring/recv_in_place/<size>`        | `try_recv`, look at the sample, drop it (release)          |
//! | `ring/lossy_publish/<size>`        | `try_send` on a lossy ring (atomic word stores)            |
//! | `ring/lossy_recv_into/<size>`      | `try_recv_into` on a lossy ring (validated copy)           |
//! | `ring/fanout_publish/<n>_subs`     | `try_send` of 64 B with `n` lossless subscribers attached  |
//! | `ring/pingpong/block`              | one round trip between two threads that sleep in futexes   |
//!
//! One-sided benchmarks (`publish_*`, `recv_*`, `loan_commit`, `fanout_*`, `lossy_*`) time the
//! operation in batches of at most one ring's worth with `iter_custom`; the other side
//! (draining, or pre-filling) runs between batches, untimed, so a lossless ring never fills and
//! a lossy one never laps its reader. `send_recv_copy` is the literal "the subscriber consumes
//! after each publish" loop, both sides timed. Rings have 256 slots, fewer for slots above
//! 16 KiB (64 KiB: 64 slots, 1 MiB: 16), so they stay in the caches.
//!
//! The single-threaded benchmarks time each batch with the wall clock, less the clock's own
//! cost, and by default run a batch again when the thread was preempted during it (its wall time
//! exceeds its CPU time): on a loaded machine, such as a shared 2-core runner, preemption
//! otherwise swamps nanosecond figures. `SHMBUS_BENCH_CLOCK=wall` keeps every batch. The
//! ping-pong is timed with the plain wall clock.
//!
//! Nobody sleeps in the single-threaded benchmarks, so every commit and every release takes the
//! doorbell fast path (a SeqCst fence and a load of the waiter count, no system call); the
//! `pingpong/block` benchmark is the slow path: each message wakes a thread sleeping in
//! `FUTEX_WAIT`, so one iteration is two futex wake-ups.
//!
//! Under `cargo test` (no `--bench` argument) criterion runs every benchmark once, untimed.

use std::hint::black_box;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use bus_core::doorbell::Futex;
use bus_core::layout::{Geometry, Layout, Mode, TypeInfo};
use bus_core::ring::{PublisherPort, RecvError, Ring, SendError, StartAt, SubscriberPort};
use bus_core::storage::{HeapRegion, RawStorage};
use bus_core::wait::WaitStrategy;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nix::time::{clock_gettime, ClockId};

type HeapRing = Ring<RawStorage<HeapRegion>, Futex>;
type Pub = PublisherPort<RawStorage<HeapRegion>, Futex>;
type Sub = SubscriberPort<RawStorage<HeapRegion>, Futex>;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// The ring size (slots times slot size) aimed at: 256 slots up to 16 KiB slots, then fewer (it
/// stays in the L3 cache; the 1 MiB rings have 16 slots, 16 MiB).
const RING_BYTES: usize = 4 * MIB;
/// The fan-out benchmark's table size: the same for every subscriber count, so only the number
/// of attached subscribers varies.
const FANOUT_MAX_SUBS: u32 = 8;

/// `64B`, `1KiB`, `64KiB`, `1MiB` (the sizes are powers of two).
fn label(size: usize) -> String {
    if size >= MIB {
        format!("{}MiB", size / MIB)
    } else if size >= KIB {
        format!("{}KiB", size / KIB)
    } else {
        format!("{size}B")
    }
}

/// Slots for a ring of `slot_size`-byte slots: 256, fewer for big slots, but at least 16 so
/// that a batch (one ring's worth) amortizes the two clock reads around it.
fn capacity_for(slot_size: usize) -> u32 {
    let slots = (RING_BYTES / slot_size).clamp(16, 256);
    // A power of two (the ring masks sequences).
    1 << slots.ilog2()
}

fn ring(slot_size: usize, mode: Mode, max_subscribers: u32) -> Arc<HeapRing> {
    let geometry = Geometry {
        capacity: capacity_for(slot_size),
        slot_size: u32::try_from(slot_size).expect("slot size fits u32"),
        mode,
        max_publishers: 1,
        max_subscribers,
        type_info: TypeInfo::bytes(),
    };
    let layout = Layout::compute(&geometry).expect("valid geometry");
    let region = HeapRegion::zeroed(usize::try_from(layout.total_len).expect("fits usize"));
    let storage = RawStorage::create(region, &layout).expect("heap storage");
    Arc::new(Ring::new(storage, Futex))
}

fn publisher(ring: &Arc<HeapRing>) -> Pub {
    let (index, generation) = ring.attach_any_publisher(1).expect("publisher entry");
    PublisherPort::new(ring.clone(), index, generation).expect("publisher port")
}

fn subscriber(ring: &Arc<HeapRing>) -> Sub {
    let (index, generation) = ring
        .attach_any_subscriber(1, StartAt::Latest)
        .expect("subscriber entry");
    SubscriberPort::new(ring.clone(), index, generation).expect("subscriber port")
}

/// A ring with one publisher and `subs` subscribers.
fn fixture(slot_size: usize, mode: Mode, max_subs: u32, subs: u32) -> (Pub, Vec<Sub>) {
    let r = ring(slot_size, mode, max_subs);
    let p = publisher(&r);
    let s = (0..subs).map(|_| subscriber(&r)).collect();
    (p, s)
}

fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 31 + 7) as u8).collect()
}

/// A timed batch whose wall time exceeds the thread's CPU time over it by more than this was
/// preempted (or, with steal-time accounting, its vCPU was stolen).
const PREEMPTED: Duration = Duration::from_nanos(500);
/// Re-runs of one preempted batch before it is taken as it is (so that a saturated machine
/// still makes progress).
const MAX_RERUNS: u32 = 20;

/// How the single-threaded benchmarks time a batch: with the wall clock (`Instant`, vDSO, no
/// system call) less the median cost of an empty timed section; by default a batch that was
/// preempted is thrown away and run again, which keeps nanosecond figures meaningful on a
/// loaded machine (a shared 2-core runner). Preemption shows as wall time the thread did not
/// spend on a CPU: `CLOCK_THREAD_CPUTIME_ID` is read just outside the timed section (a system
/// call, so never inside it). `SHMBUS_BENCH_CLOCK=wall` keeps every batch.
struct Timer {
    filter: bool,
    /// The median cost of one empty timed section: subtracted from every batch.
    overhead: Duration,
}

impl Timer {
    fn get() -> &'static Timer {
        static TIMER: OnceLock<Timer> = OnceLock::new();
        TIMER.get_or_init(|| {
            let filter = match std::env::var("SHMBUS_BENCH_CLOCK").as_deref() {
                Ok("filtered") | Err(_) => true,
                Ok("wall") => false,
                Ok(other) => panic!("SHMBUS_BENCH_CLOCK={other}: use filtered or wall"),
            };
            let mut empty: Vec<Duration> = (0..1001)
                .map(|_| {
                    let start = Instant::now();
                    black_box(start).elapsed()
                })
                .collect();
            empty.sort_unstable();
            Timer {
                filter,
                overhead: empty[empty.len() / 2],
            }
        })
    }

    /// The thread's CPU time, when filtering.
    fn cpu(&self) -> Option<Duration> {
        self.filter.then(|| {
            let ts = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
                .expect("CLOCK_THREAD_CPUTIME_ID exists on Linux");
            Duration::from(ts)
        })
    }
}

/// Run `iters` timed operations in batches of at most `batch`: `before(n)` (untimed), then
/// `op()` `n` times (timed), then `after(n)` (untimed). Returns the timed total, less the
/// clock's own cost per batch; a preempted batch is run again (see [`Timer`]).
fn batched(
    iters: u64,
    batch: u64,
    mut before: impl FnMut(u64),
    mut op: impl FnMut(),
    mut after: impl FnMut(u64),
) -> Duration {
    let timer = Timer::get();
    let mut total = Duration::ZERO;
    let mut left = iters;
    let mut reruns = 0;
    while left > 0 {
        let n = left.min(batch);
        before(n);
        let cpu_before = timer.cpu();
        let start = Instant::now();
        for _ in 0..n {
            op();
        }
        let wall = start.elapsed();
        let cpu_after = timer.cpu();
        after(n);
        if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
            if wall > b.saturating_sub(a) + PREEMPTED && reruns < MAX_RERUNS {
                reruns += 1;
                continue;
            }
        }
        reruns = 0;
        total += wall.saturating_sub(timer.overhead);
        left -= n;
    }
    total
}

fn send(p: &mut Pub, bytes: &[u8]) {
    p.try_send(black_box(bytes)).expect("the ring has room");
}

fn drain(s: &mut Sub) {
    if s.ring().geometry().mode == Mode::Lossless {
        // Receive in place and release each message.
        while s.try_recv().is_ok() {}
    } else {
        let mut buf = vec![0u8; s.ring().geometry().slot_size as usize];
        while s.try_recv_into(&mut buf).is_ok() {}
    }
}

fn recv_copy(s: &mut Sub, buf: &mut [u8]) {
    let (_, len) = s.try_recv_into(black_box(buf)).expect("a message is ready");
    black_box(len);
}

/// Set 1: Copying publish (`try_send`) and copying receive (`try_recv_into`), lossless.
fn bench_copy(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    for size in [64, KIB, 64 * KIB] {
        let msg = payload(size);
        let mut buf = vec![0u8; size];
        let (mut p, mut subs) = fixture(size, Mode::Lossless, 1, 1);
        let s = &mut subs[0];
        let batch = u64::from(p.ring().geometry().capacity);
        g.throughput(Throughput::Bytes(size as u64));

        g.bench_function(BenchmarkId::new("publish_copy", label(size)), |b| {
            b.iter_custom(|iters| {
                batched(iters, batch, |_| {}, || send(&mut p, &msg), |_| drain(s))
            })
        });
        g.bench_function(BenchmarkId::new("recv_copy", label(size)), |b| {
            b.iter_custom(|iters| {
                batched(
                    iters,
                    batch,
                    |n| (0..n).for_each(|_| send(&mut p, &msg)),
                    || recv_copy(s, &mut buf),
                    |_| {},
                )
            })
        });
        g.bench_function(BenchmarkId::new("send_recv_copy", label(size)), |b| {
            b.iter_custom(|iters| {
                batched(
                    iters,
                    batch,
                    |_| {},
                    || {
                        send(&mut p, &msg);
                        recv_copy(s, &mut buf);
                    },
                    |_| {},
                )
            })
        });
    }
    g.finish();
}

/// Set 2: Zero-copy publish (loan, write in place, commit) and zero-copy receive (sample, drop).
fn bench_in_place(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    for size in [64, KIB, 64 * KIB, MIB] {
        let (mut p, mut subs) = fixture(size, Mode::Lossless, 1, 1);
        let s = &mut subs[0];
        let batch = u64::from(p.ring().geometry().capacity);
        let mut fill = 0u8;
        let mut loan_commit = |p: &mut Pub| {
            fill = fill.wrapping_add(1);
            let mut loan = p.try_loan().expect("the ring has room");
            {
                let slot = loan.payload_mut().expect("lossless");
                slot[..size].fill(black_box(fill));
            }
            loan.set_len(size).expect("fits the slot");
            black_box(loan.commit());
        };

        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("loan_commit", label(size)), |b| {
            b.iter_custom(|iters| {
                batched(iters, batch, |_| {}, || loan_commit(&mut p), |_| drain(s))
            })
        });
        // The receive touches no payload byte (that is the point of zero copy): count messages.
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("recv_in_place", label(size)), |b| {
            b.iter_custom(|iters| {
                batched(
                    iters,
                    batch,
                    |n| (0..n).for_each(|_| loan_commit(&mut p)),
                    || {
                        let sample = s.try_recv().expect("a message is ready");
                        black_box(sample.bytes());
                        drop(sample);
                    },
                    |_| {},
                )
            })
        });
    }
    g.finish();
}

/// Set 3: Lossy publish (atomic word stores) and lossy validated copy-out.
fn bench_lossy(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    for size in [64, KIB] {
        let msg = payload(size);
        let mut buf = vec![0u8; size];
        let (mut p, mut subs) = fixture(size, Mode::Lossy, 1, 1);
        let s = &mut subs[0];
        let batch = u64::from(p.ring().geometry().capacity);
        g.throughput(Throughput::Bytes(size as u64));

        g.bench_function(BenchmarkId::new("lossy_publish", label(size)), |b| {
            // The subscriber is drained between batches only to keep it from lagging; a lossy
            // publisher never looks at subscribers.
            b.iter_custom(|iters| {
                batched(iters, batch, |_| {}, || send(&mut p, &msg), |_| drain(s))
            })
        });
        g.bench_function(BenchmarkId::new("lossy_recv_into", label(size)), |b| {
            b.iter_custom(|iters| {
                batched(
                    iters,
                    batch,
                    |n| (0..n).for_each(|_| send(&mut p, &msg)),
                    || recv_copy(s, &mut buf),
                    |_| {},
                )
            })
        });
    }
    g.finish();
}

/// Set 4: Fan-out: the publisher's cost per 64-byte message with 1, 2, 4 and 8 subscribers.
fn bench_fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    let msg = payload(64);
    g.throughput(Throughput::Elements(1));
    for n in [1, 2, 4, 8] {
        let (mut p, mut subs) = fixture(64, Mode::Lossless, FANOUT_MAX_SUBS, n);
        let batch = u64::from(p.ring().geometry().capacity);
        g.bench_function(
            BenchmarkId::new("fanout_publish", format!("{n}_subs")),
            |b| {
                b.iter_custom(|iters| {
                    batched(
                        iters,
                        batch,
                        |_| {},
                        || send(&mut p, &msg),
                        |_| subs.iter_mut().for_each(drain),
                    )
                })
            },
        );
    }
    g.finish();
}

/// The far side of a ping-pong: receive on `rx`, answer on `tx`, until `rx` closes.
fn echo(mut rx: Sub, mut tx: Pub, strategy: WaitStrategy) {
    loop {
        match rx.recv(strategy, None) {
            Ok(sample) => drop(sample),
            Err(RecvError::Closed) => return,
            Err(e) => panic!("echo recv: {e}"),
        }
        match tx.try_send(&[0u8; 8]) {
            Ok(_) => {}
            Err(SendError::Closed) => return,
            Err(e) => panic!("echo send: {e}"),
        }
    }
}

/// Set 5: wake-up. A round trip between two threads over two rings, each side sleeping in
/// `FUTEX_WAIT` (`WaitStrategy::Block`) until its message arrives: one iteration is two
/// publishes that find a sleeper and wake it (`FUTEX_WAKE`), and two wake-ups. Wall time.
fn bench_pingpong(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    g.throughput(Throughput::Elements(1));
    let strategy = WaitStrategy::Block;
    let ping = ring(64, Mode::Lossless, 1);
    let pong = ring(64, Mode::Lossless, 1);
    let (mut ping_tx, ping_rx) = (publisher(&ping), subscriber(&ping));
    let (pong_tx, mut pong_rx) = (publisher(&pong), subscriber(&pong));
    let far = thread::spawn(move || echo(ping_rx, pong_tx, strategy));
    g.bench_function(BenchmarkId::new("pingpong", "block"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                ping_tx.try_send(&[0u8; 8]).expect("the ring has room");
                drop(pong_rx.recv(strategy, None).expect("an answer"));
            }
            start.elapsed()
        })
    });
    g.finish();
    ping.close();
    pong.close();
    far.join().expect("the echo thread ends cleanly");
}

criterion_group! {
    name = benches;
    // 26 benchmarks at about 2.5 s each (0.5 s warm-up, 1.5 s of samples, the analysis with
    // 20k bootstrap resamples instead of 100k) keep a run near a minute on an idle machine.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .nresamples(20_000);
    targets = bench_copy, bench_in_place, bench_lossy, bench_fanout, bench_pingpong
}
criterion_main!(benches);
