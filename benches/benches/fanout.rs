//! Criterion benchmarks of the publisher's cost as a topic's subscriber table grows, over heap
//! storage (no daemon, no processes). A file of its own (the ring benchmarks are `ring.rs`).
//!
//! ```text
//! CARGO_TARGET_DIR=/tmp/target-crit cargo bench -p bus-benches --bench fanout
//! ```
//!
//! | benchmark | what one iteration is |
//! | --- | --- |
//! | `fanout/publish/<n>_subs` | `try_send` of 64 B with `n` lossless subscribers attached, in a table of 256 (the default) |
//! | `fanout/near_full/table_<t>` | `try_send` of 64 B with one subscriber in a table of `t` entries, the ring kept 4 slots short of full: the publisher rescans the subscriber table every 4 messages |
//!
//! `publish/*` is the O(1) claim: the publisher's cost per message with 64 subscribers must be
//! within 1.2x of with 1 (it rescans the table once per ring's worth, and reads each active
//! cursor then). `near_full/*` is the worst case for the table's size: a rescan every few
//! messages; the gate scans only the entries below the table's high-water mark, so a table of
//! 256 with one subscriber costs what a table of 16 does.
//!
//! Batches are timed with `iter_custom` and the other side (draining the subscribers, filling
//! the ring back up) runs between batches, untimed. Under `cargo test` criterion runs each
//! once, untimed.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus_core::doorbell::Futex;
use bus_core::layout::{Geometry, Layout, Mode, TypeInfo, MAX_TABLE};
use bus_core::ring::{PublisherPort, Ring, StartAt, SubscriberPort};
use bus_core::storage::{HeapRegion, RawStorage};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

type HeapRing = Ring<RawStorage<HeapRegion>, Futex>;
type Pub = PublisherPort<RawStorage<HeapRegion>, Futex>;
type Sub = SubscriberPort<RawStorage<HeapRegion>, Futex>;

const CAPACITY: u32 = 256;
/// How far from full the `near_full` ring is kept: a rescan every this many messages.
const SHORT: u64 = 4;

fn ring(max_subscribers: u32) -> Arc<HeapRing> {
    let geometry = Geometry {
        capacity: CAPACITY,
        slot_size: 64,
        mode: Mode::Lossless,
        max_publishers: 1,
        max_subscribers,
        type_info: TypeInfo::bytes(),
    };
    let layout = Layout::compute(&geometry).expect("valid geometry");
    let region = HeapRegion::zeroed(usize::try_from(layout.total_len).expect("fits usize"));
    let storage = RawStorage::create(region, &layout).expect("heap storage");
    Arc::new(Ring::new(storage, Futex))
}

fn fixture(table: u32, subs: u32) -> (Pub, Vec<Sub>) {
    let r = ring(table);
    let (index, generation) = r.attach_any_publisher(1).expect("publisher entry");
    let p = PublisherPort::new(r.clone(), index, generation).expect("publisher port");
    let s = (0..subs)
        .map(|_| {
            let (index, generation) = r
                .attach_any_subscriber(1, StartAt::Latest)
                .expect("subscriber entry");
            SubscriberPort::new(r.clone(), index, generation).expect("subscriber port")
        })
        .collect();
    (p, s)
}

fn drain(s: &mut Sub, n: u64) {
    for _ in 0..n {
        if s.try_recv().is_err() {
            break;
        }
    }
}

/// Time `iters` sends in batches of `batch`, running `between` (untimed) after each batch.
fn timed(
    iters: u64,
    batch: u64,
    p: &mut Pub,
    msg: &[u8],
    mut between: impl FnMut(u64),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(batch);
        let start = Instant::now();
        for _ in 0..n {
            p.try_send(black_box(msg)).expect("the ring has room");
        }
        total += start.elapsed();
        between(n);
        left -= n;
    }
    total
}

fn bench_publish(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(1));
    let msg = [7u8; 64];
    for n in [1u32, 8, 64] {
        let (mut p, mut subs) = fixture(MAX_TABLE, n);
        g.bench_function(BenchmarkId::new("publish", format!("{n}_subs")), |b| {
            b.iter_custom(|iters| {
                timed(iters, u64::from(CAPACITY), &mut p, &msg, |k| {
                    subs.iter_mut().for_each(|s| drain(s, k))
                })
            })
        });
    }
    g.finish();
}

fn bench_near_full(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(1));
    let msg = [7u8; 64];
    for table in [16u32, MAX_TABLE] {
        let (mut p, mut subs) = fixture(table, 1);
        // Fill all but SHORT slots; then each batch of SHORT fills the ring and the subscriber
        // frees SHORT slots between batches: the publisher rescans at every batch.
        for _ in 0..u64::from(CAPACITY) - SHORT {
            p.try_send(&msg).expect("room");
        }
        g.bench_function(
            BenchmarkId::new("near_full", format!("table_{table}")),
            |b| {
                b.iter_custom(|iters| {
                    timed(iters, SHORT, &mut p, &msg, |k| {
                        subs.iter_mut().for_each(|s| drain(s, k))
                    })
                })
            },
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .nresamples(20_000);
    targets = bench_publish, bench_near_full
}
criterion_main!(benches);
