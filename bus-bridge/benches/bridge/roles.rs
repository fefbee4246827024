//! The processes of the bridge benchmark: a daemon, and the two ends (A pings or sends, B
//! pongs or counts) over three links: shmbus through two bridges, raw Zenoh, a Unix socket.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use bus_client::{
    Bus, OpenError, RawPublisher, RawSubscriber, RecvTimeoutError, TypeInfo, WaitStrategy,
};
use zenoh::handlers::FifoChannelHandler;
use zenoh::pubsub::{Publisher, Subscriber};
use zenoh::qos::CongestionControl;
use zenoh::sample::Sample;
use zenoh::Wait;

/// Sequence numbers with this bit are warm-up messages: always echoed.
const WARM: u64 = 1 << 63;
/// The message B echoes when it has counted every message of a throughput run.
const DONE: u64 = u64::MAX;

/// One end of a link: send a message, receive the next (copied into `buf`).
pub trait Link {
    fn send(&mut self, msg: &[u8]);
    /// `false` on timeout.
    fn recv(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> bool;
}

fn seq(msg: &[u8]) -> u64 {
    msg.get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn message(size: usize, s: u64) -> Vec<u8> {
    let mut m = vec![0xa5u8; size];
    m[..8].copy_from_slice(&s.to_le_bytes());
    m
}

/// Send warm-up messages until one comes back (the path is up end to end).
fn warm_up(link: &mut dyn Link, size: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = Vec::new();
    for i in 0.. {
        assert!(Instant::now() < deadline, "the path never came up");
        link.send(&message(size, WARM | i));
        let until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < until {
            if link.recv(&mut buf, Duration::from_millis(50)) && seq(&buf) == WARM | i {
                return;
            }
        }
    }
}

/// A: ping-pong `iters` times; prints `{"p50":ns,"p90":ns,"p99":ns,"min":ns}` (round trips).
pub fn ping(link: &mut dyn Link, size: usize, iters: usize) {
    warm_up(link, size);
    let mut buf = Vec::new();
    let mut rtts = Vec::with_capacity(iters);
    for i in 0..iters as u64 {
        let m = message(size, i);
        let t0 = Instant::now();
        link.send(&m);
        loop {
            assert!(
                link.recv(&mut buf, Duration::from_secs(10)),
                "pong lost at {i}"
            );
            if seq(&buf) == i {
                break;
            }
        }
        rtts.push(t0.elapsed().as_nanos() as u64);
        assert_eq!(buf, m, "the echo differs");
    }
    rtts.sort_unstable();
    let at = |q: f64| rtts[((rtts.len() as f64 * q) as usize).min(rtts.len() - 1)];
    println!(
        "{}",
        serde_json::json!({"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "min": rtts[0]})
    );
}

/// A: send `count` messages as fast as the link takes them, then wait for B's `DONE`.
pub fn send_all(link: &mut dyn Link, size: usize, count: u64) {
    warm_up(link, size);
    let mut m = message(size, 0);
    for i in 0..count {
        m[..8].copy_from_slice(&i.to_le_bytes());
        link.send(&m);
    }
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if link.recv(&mut buf, Duration::from_millis(100)) && seq(&buf) == DONE {
            return;
        }
    }
    panic!("B never counted {count} messages");
}

/// B: echo everything (ping-pong), or echo warm-ups and count the rest (throughput), then
/// print `{"rate": msgs/s, "errors": n}` and echo `DONE`.
pub fn pong(link: &mut dyn Link, size: usize, count: Option<u64>) {
    let mut buf = Vec::new();
    let (mut got, mut errors, mut first) = (0u64, 0u64, None);
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if !link.recv(&mut buf, Duration::from_millis(100)) {
            continue;
        }
        let s = seq(&buf);
        match count {
            None => link.send(&buf),
            Some(_) if s & WARM != 0 => link.send(&buf),
            Some(n) => {
                let start = *first.get_or_insert_with(Instant::now);
                if s != got || buf.len() != size {
                    errors += 1;
                }
                got += 1;
                if got == n {
                    let secs = start.elapsed().as_secs_f64();
                    let rate = (n - 1) as f64 / secs.max(1e-9);
                    println!("{}", serde_json::json!({"rate": rate, "errors": errors}));
                    link.send(&message(size, DONE));
                    // Linger so the DONE leaves before the process goes.
                    std::thread::sleep(Duration::from_millis(500));
                    return;
                }
            }
        }
    }
}

/// shmbus: a byte topic to send on, another to receive from.
pub struct Shm {
    publisher: RawPublisher,
    subscriber: RawSubscriber,
}

impl Shm {
    /// Create `out` (lossless, 256 slots of `size`) and wait until `inbound` exists (the
    /// bridge creates it when the other side's bridge exports it).
    pub fn open(socket: &Path, out: &str, inbound: &str, size: usize) -> Shm {
        let bus = Bus::connect_to(socket).expect("connect to the daemon");
        let spec = bus_client::Geometry {
            capacity: 256,
            slot_size: size as u32,
            mode: bus_client::Mode::Lossless,
            max_publishers: 8,
            max_subscribers: 8,
            type_info: TypeInfo::bytes(),
        };
        let wait = match std::env::var("BRIDGEBENCH_WAIT").as_deref() {
            Ok("busy_poll") => WaitStrategy::BusyPoll,
            Ok("adaptive") => WaitStrategy::default(),
            Ok(w) if w.starts_with("spin:") => {
                let mut n = w.split(':').skip(1).map(|v| v.parse().unwrap_or(0));
                WaitStrategy::Adaptive {
                    spins: n.next().unwrap_or(0),
                    yields: n.next().unwrap_or(0),
                }
            }
            _ => WaitStrategy::Block,
        };
        let publisher = bus
            .raw_publisher(out)
            .wait(wait)
            .create(spec)
            .expect("create");
        let deadline = Instant::now() + Duration::from_secs(60);
        let subscriber = loop {
            match bus.raw_subscriber(inbound).wait(wait).open() {
                Ok(s) => break s,
                Err(OpenError::NotFound { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("{inbound}: {e}"),
            }
        };
        Shm {
            publisher,
            subscriber,
        }
    }
}

impl Link for Shm {
    fn send(&mut self, msg: &[u8]) {
        self.publisher.publish(msg).expect("publish");
    }

    fn recv(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> bool {
        match self.subscriber.recv_timeout(timeout) {
            Ok(m) => {
                buf.clear();
                buf.extend_from_slice(m.bytes());
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(e) => panic!("receive: {e}"),
        }
    }
}

/// Raw Zenoh: a publisher on one key, a subscriber on the other.
pub struct Raw {
    publisher: Publisher<'static>,
    subscriber: Subscriber<FifoChannelHandler<Sample>>,
    _session: zenoh::Session,
}

impl Raw {
    /// A session configured like the bridges' (see `main.rs`).
    pub fn open(config: zenoh::Config, out: &'static str, inbound: &'static str) -> Raw {
        let session = zenoh::open(config).wait().expect("zenoh session");
        let publisher = session
            .declare_publisher(out)
            .congestion_control(CongestionControl::Block)
            .express(std::env::var_os("BRIDGEBENCH_EXPRESS").is_some())
            .wait()
            .expect("publisher");
        let subscriber = session
            .declare_subscriber(inbound)
            .wait()
            .expect("subscriber");
        Raw {
            publisher,
            subscriber,
            _session: session,
        }
    }
}

impl Link for Raw {
    fn send(&mut self, msg: &[u8]) {
        self.publisher.put(msg).wait().expect("put");
    }

    fn recv(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> bool {
        match self.subscriber.recv_timeout(timeout) {
            Ok(Some(sample)) => {
                buf.clear();
                buf.extend_from_slice(&sample.payload().to_bytes());
                true
            }
            _ => false,
        }
    }
}

/// A Unix stream socket, fixed-size messages.
pub struct Unix {
    stream: UnixStream,
    size: usize,
}

impl Unix {
    /// B listens on `path` and takes one connection; A connects (retrying until B listens).
    pub fn open(path: &Path, listen: bool, size: usize) -> Unix {
        let stream = if listen {
            let l = UnixListener::bind(path).expect("bind");
            l.accept().expect("accept").0
        } else {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match UnixStream::connect(path) {
                    Ok(s) => break s,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => panic!("connect: {e}"),
                }
            }
        };
        Unix { stream, size }
    }
}

impl Link for Unix {
    fn send(&mut self, msg: &[u8]) {
        self.stream.write_all(msg).expect("write");
    }

    fn recv(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> bool {
        let _ = self.stream.set_read_timeout(Some(timeout));
        buf.resize(self.size, 0);
        self.stream.read_exact(buf).is_ok()
    }
}
