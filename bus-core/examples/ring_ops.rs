//! A single-thread driver of the ring over heap memory, for instruction counts under
//! callgrind (`perf stat` is not available everywhere; callgrind's counts are stable):
//!
//! ```sh
//! cargo build --release -p shmbus-core --example ring_ops
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     target/release/examples/ring_ops lossless 64 100000
//! callgrind_annotate --inclusive=yes /tmp/cg.out | grep ring_ops::
//! ```
//!
//! Each operation is one `#[inline(never)]` function (`publish_copy`, `publish_loan`,
//! `receive_in_place`, `receive_copy`, `publish_batch`, `receive_batch`), so the annotated
//! inclusive count divided by the number of messages is the cost of one operation.

#[cfg(loom)]
fn main() {}

#[cfg(not(loom))]
fn main() {
    driver::main();
}

#[cfg(not(loom))]
mod driver {
    use std::sync::Arc;

    use bus_core::doorbell::Futex;
    use bus_core::layout::{Geometry, Layout, Mode, TypeInfo};
    use bus_core::ring::{PublisherPort, Ring, StartAt, SubscriberPort};
    use bus_core::storage::{HeapRegion, RawStorage};

    type Pub = PublisherPort<RawStorage<HeapRegion>, Futex>;
    type Sub = SubscriberPort<RawStorage<HeapRegion>, Futex>;

    /// Messages per batch in the batch variants (and the burst of the one-by-one variants,
    /// so that both see the same ring occupancy).
    const BURST: usize = 32;

    #[inline(never)]
    fn publish_copy(p: &mut Pub, msg: &[u8]) {
        p.try_send(msg).expect("room");
    }

    #[inline(never)]
    fn publish_loan(p: &mut Pub, msg: &[u8]) {
        let mut loan = p.try_loan().expect("room");
        loan.write(msg).expect("fits");
        loan.commit();
    }

    #[inline(never)]
    fn receive_in_place(s: &mut Sub) -> u8 {
        let sample = s.try_recv().expect("a message");
        let b = sample.bytes();
        b[0] ^ b[b.len() - 1]
    }

    #[inline(never)]
    fn receive_copy(s: &mut Sub, buf: &mut [u8]) -> usize {
        s.try_recv_into(buf).expect("a message").1
    }

    #[inline(never)]
    fn publish_batch(p: &mut Pub, msgs: &[&[u8]]) {
        assert_eq!(p.try_send_many(msgs).expect("room"), msgs.len());
    }

    #[inline(never)]
    fn receive_batch(s: &mut Sub) -> usize {
        let mut x = 0u8;
        let n = s
            .try_recv_many(BURST, |_, bytes| x ^= bytes[0] ^ bytes[bytes.len() - 1])
            .expect("messages");
        n + usize::from(x)
    }

    pub fn main() {
        let args: Vec<String> = std::env::args().collect();
        let mode = match args.get(1).map(String::as_str) {
            Some("lossy") => Mode::Lossy,
            _ => Mode::Lossless,
        };
        let size: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
        let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
        let layout = Layout::compute(&Geometry {
            capacity: 1024,
            slot_size: size as u32,
            mode,
            max_publishers: 4,
            max_subscribers: 4,
            type_info: TypeInfo::bytes(),
        })
        .expect("geometry");
        let region = HeapRegion::zeroed(layout.total_len as usize);
        let ring = Arc::new(Ring::new(
            RawStorage::create(region, &layout).expect("storage"),
            Futex,
        ));
        let (pi, pg) = ring.attach_any_publisher(1).expect("publisher");
        let (si, sg) = ring.attach_any_subscriber(2, StartAt::Latest).expect("sub");
        let mut p = PublisherPort::new(ring.clone(), pi, pg).expect("port");
        let mut s = SubscriberPort::new(ring.clone(), si, sg).expect("port");
        let msg = vec![0x5au8; size];
        let batch: Vec<&[u8]> = (0..BURST).map(|_| &msg[..]).collect();
        let mut buf = vec![0u8; size];
        let mut check = 0usize;
        for _ in 0..n / BURST {
            match mode {
                Mode::Lossless => {
                    for _ in 0..BURST / 2 {
                        publish_copy(&mut p, &msg);
                        publish_loan(&mut p, &msg);
                    }
                    for _ in 0..BURST / 2 {
                        check += usize::from(receive_in_place(&mut s));
                        check += receive_copy(&mut s, &mut buf);
                    }
                    publish_batch(&mut p, &batch);
                    check += receive_batch(&mut s);
                }
                Mode::Lossy => {
                    for _ in 0..BURST {
                        publish_copy(&mut p, &msg);
                    }
                    for _ in 0..BURST {
                        check += receive_copy(&mut s, &mut buf);
                    }
                }
            }
        }
        println!("{check}");
    }
}
