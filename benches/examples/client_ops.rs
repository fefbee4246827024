//! A single-thread driver of the client API on an embedded daemon, for instruction counts
//! under callgrind: what a `publish` and a `try_recv` cost through `bus-client` (its daemon
//! epoch check included) next to the bare ring (`bus-core/examples/ring_ops.rs`).
//!
//! ```sh
//! cargo build --release -p bus-benches --example client_ops
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/client.out \
//!     target/release/examples/client_ops 100000
//! callgrind_annotate --inclusive=yes /tmp/client.out | grep client_ops::
//! callgrind_annotate --auto=yes /tmp/client.out | grep -A3 "fn stale"
//! ```

use bus_client::Bus;

#[inline(never)]
fn publish_one(p: &mut bus_client::Publisher<[u8]>, msg: &[u8]) {
    p.publish(msg).expect("room");
}

#[inline(never)]
fn receive_one(s: &mut bus_client::Subscriber<[u8]>) -> u8 {
    let sample = s.try_recv().expect("a message");
    let b = sample.bytes();
    b[0] ^ b[b.len() - 1]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let bus = Bus::embedded()?;
    let mut s = bus
        .subscriber::<[u8]>("bench/client_ops")
        .capacity(1024)
        .slot_size(64)
        .create()?;
    let mut p = bus
        .publisher::<[u8]>("bench/client_ops")
        .capacity(1024)
        .slot_size(64)
        .busy_poll()
        .open()?;
    let msg = [0x5au8; 64];
    let mut check = 0usize;
    for _ in 0..n / 32 {
        for _ in 0..32 {
            publish_one(&mut p, &msg);
        }
        for _ in 0..32 {
            check += usize::from(receive_one(&mut s));
        }
    }
    println!("{check}");
    Ok(())
}
