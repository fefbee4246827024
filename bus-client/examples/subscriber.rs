//! A subscriber: `cargo run --example subscriber -- [TOPIC] [COUNT]`.
//!
//! Needs a running `shmbusd` (see the publisher example). Prints what it receives; the sample
//! points straight into shared memory.

use bus_client::{Bus, RecvError};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// What the publisher example publishes (same name, size and alignment: the daemon checks).
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
    // It may start before the publisher: open the topic, or create it if it is not there yet.
    let mut subscriber = bus.subscriber::<Pose>(&topic).open_or_create()?;
    for _ in 0..count {
        match subscriber.recv() {
            Ok(pose) => println!("received {:?}", &*pose),
            Err(RecvError::Closed) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
