//! What `node` and `async_node` share: the message types, simulated sensors, the control law
//! and the printout.

use std::error::Error;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bus_client::{Bus, Publisher};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub const ODOM: &str = "robot/odom";
pub const IMU: &str = "robot/imu";
pub const SCAN: &str = "robot/scan";
pub const CMD_VEL: &str = "robot/cmd_vel";

/// Where the robot is (odometry).
#[derive(Debug, Default, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Odom {
    pub x: f64,
    pub y: f64,
    pub theta: f64,
    pub stamp_ns: u64,
}

/// One inertial measurement.
#[derive(Debug, Default, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Imu {
    pub accel: [f32; 3],
    pub gyro: [f32; 3],
    pub stamp_ns: u64,
}

/// A velocity command.
#[derive(Debug, Default, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct CmdVel {
    pub linear: f64,
    pub angular: f64,
}

/// The command line: `[--seconds N] [--no-sensors]`.
pub struct Args {
    pub seconds: Duration,
    pub no_sensors: bool,
}

impl Args {
    pub fn parse() -> Result<Args, Box<dyn Error>> {
        let mut args = Args {
            seconds: Duration::from_secs(3),
            no_sensors: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            match a.as_str() {
                "--seconds" => {
                    let n: f64 = it.next().ok_or("--seconds needs a value")?.parse()?;
                    args.seconds = Duration::try_from_secs_f64(n)?;
                }
                "--no-sensors" => args.no_sensors = true,
                other => {
                    return Err(format!(
                        "unknown argument {other:?}; try --seconds N, --no-sensors"
                    )
                    .into())
                }
            }
        }
        Ok(args)
    }
}

/// The daemon at `$SHMBUS_SOCKET` if set, else one embedded in this process.
pub fn bus() -> Result<Bus, Box<dyn Error>> {
    Ok(match std::env::var_os("SHMBUS_SOCKET") {
        Some(socket) => Bus::connect_to(socket)?,
        None => Bus::embedded()?,
    })
}

/// A sensor's reading `i` at `t` seconds.
pub fn odom_at(t: f64) -> Odom {
    Odom {
        x: 2.0 * (0.3 * t).cos(),
        y: 2.0 * (0.3 * t).sin(),
        theta: 0.3 * t + std::f64::consts::FRAC_PI_2,
        stamp_ns: (t * 1e9) as u64,
    }
}

pub fn imu_at(t: f64) -> Imu {
    Imu {
        accel: [0.0, 0.0, 9.81],
        gyro: [0.0, 0.0, 0.3 + 0.01 * (40.0 * t).sin() as f32],
        stamp_ns: (t * 1e9) as u64,
    }
}

/// A lidar scan of 360 to 720 one-byte ranges (its length varies, as a byte topic allows).
pub fn scan_at(i: u64, out: &mut Vec<u8>) {
    out.clear();
    let n = 360 + (i * 37 % 361) as usize;
    out.extend((0..n).map(|k| ((k as u64 + i) % 200) as u8));
}

/// Simulated sensors on three threads, publishing for `length`: odometry at 100 Hz, the IMU at
/// 200 Hz, scans at 10 Hz.
pub fn start_threads(bus: &Bus, length: Duration) -> Vec<JoinHandle<Result<(), String>>> {
    fn every<T: bus_client::Payload + ?Sized>(
        mut publisher: Publisher<T>,
        period: Duration,
        length: Duration,
        mut step: impl FnMut(&mut Publisher<T>, f64, u64) -> Result<(), String> + Send + 'static,
    ) -> JoinHandle<Result<(), String>>
    where
        Publisher<T>: Send + 'static,
    {
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut next = start;
            let mut i = 0;
            while next - start < length {
                step(&mut publisher, (next - start).as_secs_f64(), i)?;
                i += 1;
                next += period;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            Ok(())
        })
    }
    let open = |e: bus_client::OpenError| e.to_string();
    let (odom, imu, scan) = match (
        bus.publisher::<Odom>(ODOM).open_or_create().map_err(open),
        bus.publisher::<Imu>(IMU).open_or_create().map_err(open),
        bus.publisher::<[u8]>(SCAN).open_or_create().map_err(open),
    ) {
        (Ok(o), Ok(i), Ok(s)) => (o, i, s),
        (o, i, s) => {
            let e = [o.err(), i.err(), s.err()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>();
            return vec![std::thread::spawn(move || Err(e.join("; ")))];
        }
    };
    let mut buf = Vec::new();
    vec![
        every(odom, Duration::from_millis(10), length, |p, t, _| {
            p.publish(&odom_at(t)).map(drop).map_err(|e| e.to_string())
        }),
        every(imu, Duration::from_millis(5), length, |p, t, _| {
            p.publish(&imu_at(t)).map(drop).map_err(|e| e.to_string())
        }),
        every(scan, Duration::from_millis(100), length, move |p, _, i| {
            scan_at(i, &mut buf);
            p.publish(&buf).map(drop).map_err(|e| e.to_string())
        }),
    ]
}

/// The control law: drive towards the origin, turning to face it.
pub fn steer(odom: &Odom) -> CmdVel {
    let distance = odom.x.hypot(odom.y);
    let bearing = (-odom.y).atan2(-odom.x) - odom.theta;
    let bearing = bearing.sin().atan2(bearing.cos());
    CmdVel {
        linear: (0.5 * distance).min(1.0),
        angular: 1.5 * bearing,
    }
}

/// What arrived, for the printout.
#[derive(Debug, Default)]
pub struct Counts {
    pub odom: u64,
    pub imu: u64,
    pub scans: u64,
    pub scan_bytes: u64,
    pub commands: u64,
    pub yaw_rate: f64,
}

impl Counts {
    pub fn imu(&mut self, m: &Imu) {
        self.imu += 1;
        self.yaw_rate = f64::from(m.gyro[2]);
    }

    pub fn scan(&mut self, m: &[u8]) {
        self.scans += 1;
        self.scan_bytes += m.len() as u64;
    }

    /// One line per control step.
    pub fn line(&self, at: Duration, odom: &Odom, cmd: &CmdVel) -> String {
        format!(
            "t={:5.2}s  odom {:4} (x {:+.2} y {:+.2})  imu {:4} (yaw rate {:+.3})  scans {:3}  -> cmd_vel {:.2} m/s {:+.2} rad/s",
            at.as_secs_f64(),
            self.odom,
            odom.x,
            odom.y,
            self.imu,
            self.yaw_rate,
            self.scans,
            cmd.linear,
            cmd.angular
        )
    }

    /// The last line.
    pub fn summary(&self, took: Duration) -> String {
        format!(
            "done in {:.2} s: {} odometry, {} IMU, {} scans ({} bytes), {} commands",
            took.as_secs_f64(),
            self.odom,
            self.imu,
            self.scans,
            self.scan_bytes,
            self.commands
        )
    }
}
