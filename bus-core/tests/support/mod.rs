//! Shared helpers for the loom models (`tests/loom_*.rs`): a tiny model ring, its ports, the
//! model checker with a preemption bound, and self-describing payloads.
//!
//! Every model runs on capacity 2, so that three or four messages wrap the ring.

#![allow(dead_code)]

use std::sync::Arc;

use bus_core::doorbell::ModelDoorbell;
use bus_core::layout::{Geometry, Layout, Mode, TypeInfo};
use bus_core::ring::{PublisherPort, Ring, StartAt, SubscriberPort};
use bus_core::storage::ModelStorage;

/// The ring every model runs on.
pub type ModelRing = Ring<ModelStorage, ModelDoorbell>;
/// A publisher port on a model ring.
pub type Pub = PublisherPort<ModelStorage, ModelDoorbell>;
/// A subscriber port on a model ring.
pub type Sub = SubscriberPort<ModelStorage, ModelDoorbell>;

/// Slots in every model ring.
pub const CAPACITY: u32 = 2;

/// A fresh model ring with two slots of `slot_size` bytes and tables of `publishers` and
/// `subscribers` entries (keep them as small as the model allows: every entry is scanned).
pub fn ring(mode: Mode, slot_size: u32, publishers: u32, subscribers: u32) -> Arc<ModelRing> {
    let layout = Layout::compute(&Geometry {
        capacity: CAPACITY,
        slot_size,
        mode,
        max_publishers: publishers,
        max_subscribers: subscribers,
        type_info: TypeInfo::bytes(),
    })
    .expect("model geometry is valid");
    Arc::new(Ring::new(ModelStorage::new(&layout), ModelDoorbell::new()))
}

/// Attach a publisher on the first free entry and open its port.
pub fn publisher(ring: &Arc<ModelRing>, pid: u32) -> Pub {
    let (i, g) = ring.attach_any_publisher(pid).expect("publisher entry");
    PublisherPort::new(ring.clone(), i, g).expect("publisher port")
}

/// Attach a subscriber on the first free entry and open its port.
pub fn subscriber(ring: &Arc<ModelRing>, pid: u32, start: StartAt) -> Sub {
    let (i, g) = ring
        .attach_any_subscriber(pid, start)
        .expect("subscriber entry");
    SubscriberPort::new(ring.clone(), i, g).expect("subscriber port")
}

/// Explore `f` with loom, bounding preemptions to `bound` so the suite stays fast.
pub fn check<F>(bound: usize, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let executions = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = executions.clone();
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(bound);
    builder.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f();
    });
    // Shown with `--nocapture`: how much of the model loom explored.
    println!(
        "loom explored {} executions (preemption bound {bound})",
        executions.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// An 8-byte payload that says who wrote it and which of its messages it is.
pub fn msg(publisher: u8, n: u8) -> [u8; 8] {
    [publisher, n, publisher ^ n, 0xA5, n, publisher, !n, 0x5A]
}

/// A 16-byte payload made of two equal words, both `n`: a mix of two messages shows as
/// unequal words.
pub fn words(n: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&n.to_ne_bytes());
    b[8..].copy_from_slice(&n.to_ne_bytes());
    b
}

/// Decode a [`words`] payload, asserting both words agree (no torn read).
pub fn decode_words(b: &[u8]) -> u64 {
    assert_eq!(b.len(), 16, "payload length");
    let lo = u64::from_ne_bytes(b[..8].try_into().unwrap());
    let hi = u64::from_ne_bytes(b[8..].try_into().unwrap());
    assert_eq!(
        lo, hi,
        "torn payload: words {lo} and {hi} come from two messages"
    );
    lo
}
