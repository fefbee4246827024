//! A publisher: `cargo run --example publisher -- [TOPIC] [COUNT]`.
//!
//! Needs a running `shmbusd` (`cargo run -p bus-daemon --bin shmbusd`), found at the default
//! socket or `$SHMBUS_SOCKET`. Run `cargo run --example subscriber` beside it.

use std::time::Duration;

use bus_client::Bus;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// What this example publishes.
#[derive(Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Pose {
    /// Message number.
    pub seq: u64,
    /// Position.
    pub x: f64,
    /// Position.
    pub y: f64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let topic = args.next().unwrap_or_else(|| "example/pose".to_string());
    let count: u64 = args.next().map(|c| c.parse()).transpose()?.unwrap_or(10);

    let bus = Bus::connect()?;
    let mut publisher = bus.publisher::<Pose>(&topic).create()?;
    for seq in 0..count {
        let mut pose = publisher.loan()?; // a slot in shared memory
        pose.seq = seq;
        pose.x = seq as f64 * 0.5;
        pose.y = -(seq as f64);
        pose.send();
        println!("published {seq} on {topic}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
