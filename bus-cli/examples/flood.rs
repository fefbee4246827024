//! Publish as fast as the subscribers allow, for measuring `shmbus record` and `shmbus echo`:
//! `cargo run --release -p bus-cli --example flood -- TOPIC COUNT SIZE [lossy|lossless] [RATE]`.
//!
//! Creates TOPIC as a byte topic with SIZE-byte slots (capacity 4096), waits until a
//! subscriber is attached, publishes COUNT messages of SIZE bytes (the first 8 bytes the
//! message number), waits until every subscriber has read everything (lossless) and prints
//! one line: messages, seconds, messages per second, MB per second. With RATE, publishes at
//! most RATE messages per second (paced every 256 messages). Uses $SHMBUS_SOCKET.

use std::time::{Duration, Instant};

use bus_client::Bus;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let topic = args.next().unwrap_or_else(|| "bench/flood".into());
    let count: u64 = args
        .next()
        .map(|c| c.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let size: usize = args.next().map(|c| c.parse()).transpose()?.unwrap_or(64);
    let lossy = args.next().as_deref() == Some("lossy");
    let rate: Option<f64> = args.next().map(|r| r.parse()).transpose()?;

    let bus = Bus::connect()?;
    let mut builder = bus
        .publisher::<[u8]>(&topic)
        .slot_size(u32::try_from(size)?)
        .capacity(4096);
    if lossy {
        builder = builder.lossy();
    }
    let mut publisher = builder.open_or_create()?;
    while bus
        .stats(Some(&topic))?
        .iter()
        .all(|t| t.subscribers.is_empty())
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut message = vec![0xa5u8; size];
    let start = Instant::now();
    for i in 0..count {
        if let (Some(rate), 0) = (rate, i % 256) {
            let due = Duration::from_secs_f64(i as f64 / rate);
            while start.elapsed() < due {
                std::hint::spin_loop();
            }
        }
        message[..8].copy_from_slice(&i.to_le_bytes());
        publisher.publish(&message)?;
    }
    if !lossy {
        while bus
            .stats(Some(&topic))?
            .iter()
            .any(|t| t.subscribers.iter().any(|s| s.lag > 0))
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{count} messages of {size} B in {secs:.3} s: {:.2} M msgs/s, {:.1} MB/s",
        count as f64 / secs / 1e6,
        (count as f64 * size as f64) / secs / 1e6
    );
    Ok(())
}
