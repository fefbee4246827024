//! The `node` example in tokio: one task `select!`s over three `recv_async` futures and a
//! 10 Hz interval, and publishes velocity commands with `send_async`. A receive that loses a
//! `select!` is dropped mid-wait and loses nothing: the next one gets the message.
//!
//! ```text
//! cargo run --example async_node [-- --seconds N]
//! ```
//!
//! The bus is embedded and the sensors simulated, as in `node`; set `SHMBUS_SOCKET` to use a
//! running `shmbusd`, and pass `--no-sensors` to listen to real ones only.

use std::error::Error;
use std::time::{Duration, Instant};

use bus_client::Bus;

mod sensors;
use sensors::{CmdVel, Imu, Odom};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = sensors::Args::parse()?;
    let bus: Bus = sensors::bus()?;

    let mut odom = bus.subscriber::<Odom>(sensors::ODOM).open_or_create()?;
    let mut imu = bus.subscriber::<Imu>(sensors::IMU).open_or_create()?;
    let mut scan = bus.subscriber::<[u8]>(sensors::SCAN).open_or_create()?;
    let mut cmd = bus.publisher::<CmdVel>(sensors::CMD_VEL).open_or_create()?;
    // The sensors publish from their own threads, as separate programs would.
    let sensors = (!args.no_sensors).then(|| sensors::start_threads(&bus, args.seconds));

    let started = Instant::now();
    let mut control = tokio::time::interval(Duration::from_millis(100));
    control.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    control.tick().await; // the first tick is immediate
    let end = tokio::time::sleep(args.seconds);
    tokio::pin!(end);
    let mut counts = sensors::Counts::default();
    let mut last_odom = Odom::default();
    loop {
        tokio::select! {
            m = odom.recv_async() => {
                last_odom = *m?;
                counts.odom += 1;
            }
            m = imu.recv_async() => counts.imu(&*m?),
            m = scan.recv_async() => counts.scan(&m?),
            _ = control.tick() => {
                let command = sensors::steer(&last_odom);
                // Lossless back-pressure: waits (without blocking the runtime) if the topic is
                // full.
                cmd.send_async(&command).await?;
                counts.commands += 1;
                println!("{}", counts.line(started.elapsed(), &last_odom, &command));
            }
            _ = &mut end => break,
        }
    }
    if let Some(threads) = sensors {
        for t in threads {
            t.join().map_err(|_| "a sensor thread panicked")??;
        }
    }
    println!("{}", counts.summary(started.elapsed()));
    Ok(())
}
