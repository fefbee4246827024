//! A robot-style node in one thread: it listens to odometry (100 Hz), an IMU (200 Hz) and
//! lidar scans (10 Hz, variable length), runs a control step at 10 Hz, and publishes velocity
//! commands, all from one [`WaitSet`]: no thread per topic, no busy loop.
//!
//! ```text
//! cargo run --example node [-- --seconds N]
//! ```
//!
//! The bus is embedded (a daemon inside this process) and the sensors are simulated by three
//! publisher threads, so the example runs on its own. Point `SHMBUS_SOCKET` at a running
//! `shmbusd` to use that instead (the simulated sensors still publish; run real ones and pass
//! `--no-sensors` to listen to them only).

use std::error::Error;
use std::time::{Duration, Instant};

use bus_client::{TryRecvError, WaitSet};

mod sensors;
use sensors::{CmdVel, Imu, Odom};

fn main() -> Result<(), Box<dyn Error>> {
    let args = sensors::Args::parse()?;
    let bus = sensors::bus()?;

    // Open (or create) the topics before the sensors start, so that nothing is missed.
    let mut odom = bus.subscriber::<Odom>(sensors::ODOM).open_or_create()?;
    let mut imu = bus.subscriber::<Imu>(sensors::IMU).open_or_create()?;
    let mut scan = bus.subscriber::<[u8]>(sensors::SCAN).open_or_create()?;
    let mut cmd = bus.publisher::<CmdVel>(sensors::CMD_VEL).open_or_create()?;
    let sensors = (!args.no_sensors).then(|| sensors::start_threads(&bus, args.seconds));

    let mut set = WaitSet::new()?;
    let odom_ready = set.attach_subscriber(&odom)?;
    let imu_ready = set.attach_subscriber(&imu)?;
    let scan_ready = set.attach_subscriber(&scan)?;
    let control = set.attach_interval(Duration::from_millis(100));
    let end = set.attach_deadline(Instant::now() + args.seconds);

    let started = Instant::now();
    let mut counts = sensors::Counts::default();
    let mut last_odom = Odom::default();
    let mut ready = Vec::new();
    'run: loop {
        ready.clear();
        ready.extend_from_slice(set.wait(None)?);
        for &id in &ready {
            if id == odom_ready.id() {
                // Read every ready subscriber dry: the wait set reports it again only when
                // something new arrives.
                loop {
                    match odom.try_recv() {
                        Ok(m) => {
                            last_odom = *m;
                            counts.odom += 1;
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(e) => return Err(e.into()),
                    }
                }
            } else if id == imu_ready.id() {
                loop {
                    match imu.try_recv() {
                        Ok(m) => counts.imu(&m),
                        Err(TryRecvError::Empty) => break,
                        Err(e) => return Err(e.into()),
                    }
                }
            } else if id == scan_ready.id() {
                loop {
                    match scan.try_recv() {
                        Ok(m) => counts.scan(&m),
                        Err(TryRecvError::Empty) => break,
                        Err(e) => return Err(e.into()),
                    }
                }
            } else if id == control.id() {
                // The control step: steer towards the origin.
                let command = sensors::steer(&last_odom);
                cmd.publish(&command)?;
                counts.commands += 1;
                println!("{}", counts.line(started.elapsed(), &last_odom, &command));
            } else if id == end.id() {
                break 'run;
            }
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
