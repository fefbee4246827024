//! Signals as the notification: each message goes into a slot of a shared-memory ring and the
//! sender `sigqueue`s a real-time signal whose value is the message's sequence number; the
//! receiver blocks the signal and takes it with `sigwaitinfo`, then reads the slot the value
//! names. Every message costs a signal, so this measures what notifying by signal costs.
//!
//! ```text
//!  0      receiver pid  i32   written by the receiver once it has blocked the signal
//!  64     consumed      u64   the receiver's index (so the sender never laps it)
//!  128    slot 0, slot 1, ... (stride = payload rounded up to 64)
//! ```

use std::io;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::shm::{capacity, channels, prepare_memfd, round_up, Shm, LINE};
use crate::error::{invalid_data, other};
use crate::transport::{ChildCtx, Contender, Endpoint, Prepared, Role, RunSpec, Scenario, Support};

/// The `signal` baseline.
pub struct Signals;

const PID: usize = 0;
const CONSUMED: usize = 64;
/// How long a sender waits for its receiver to show up.
const PEER_PATIENCE: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug)]
struct Geometry {
    stride: usize,
    capacity: usize,
    channel_len: usize,
}

impl Geometry {
    fn of(payload: usize) -> Geometry {
        let stride = round_up(payload, 64);
        let capacity = capacity(stride, 2);
        Geometry {
            stride,
            capacity,
            channel_len: round_up(LINE + capacity * stride, 4096),
        }
    }
}

fn signal_number() -> libc::c_int {
    libc::SIGRTMIN()
}

/// A signal set holding only our signal.
fn signal_set() -> io::Result<libc::sigset_t> {
    // SAFETY: sigemptyset initialises the set it is given; sigaddset adds a valid signal.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        if libc::sigemptyset(&mut set) != 0 || libc::sigaddset(&mut set, signal_number()) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(set)
    }
}

struct Channel {
    pid: *const AtomicI32,
    consumed: *const AtomicU64,
    slots: *mut u8,
    geometry: Geometry,
}

impl Channel {
    fn open(shm: &Shm, index: usize, geometry: Geometry) -> io::Result<Channel> {
        let base = index * geometry.channel_len;
        Ok(Channel {
            pid: shm.at(base + PID, 4)?.cast(),
            consumed: shm.at(base + CONSUMED, 8)?.cast(),
            slots: shm.at(base + LINE, geometry.capacity * geometry.stride)?,
            geometry,
        })
    }

    fn pid(&self) -> &AtomicI32 {
        // SAFETY: aligned, inside the mapping the endpoint keeps alive, only accessed atomically.
        unsafe { &*self.pid }
    }

    fn consumed(&self) -> &AtomicU64 {
        // SAFETY: as for `pid`.
        unsafe { &*self.consumed }
    }

    fn slot(&self, seq: u64) -> *mut u8 {
        let i = (seq as usize) & (self.geometry.capacity - 1);
        // SAFETY: i < capacity, so the slot lies in the slot area.
        unsafe { self.slots.add(i * self.geometry.stride) }
    }
}

struct SignalEndpoint {
    tx: Option<(Channel, libc::pid_t)>,
    rx: Option<(Channel, libc::sigset_t)>,
    next_tx: u64,
    cached_consumed: u64,
    next_rx: u64,
    len: usize,
    // Last: the channels point into it.
    _shm: Shm,
}

impl Endpoint for SignalEndpoint {
    fn send(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        let (ch, pid) = self
            .tx
            .as_ref()
            .ok_or_else(|| other("this role does not send"))?;
        if len != self.len {
            return Err(other(format!("sized for {} B, asked {len} B", self.len)));
        }
        let seq = self.next_tx;
        let capacity = ch.geometry.capacity as u64;
        while seq - self.cached_consumed >= capacity {
            // Acquire: the receiver's read of the slot we reuse is done.
            self.cached_consumed = ch.consumed().load(Ordering::Acquire);
            if seq - self.cached_consumed >= capacity {
                std::thread::yield_now();
            }
        }
        // SAFETY: the receiver released this slot (acquire above) and reads it again only
        // after the signal below.
        let payload = unsafe { std::slice::from_raw_parts_mut(ch.slot(seq), len) };
        fill(payload);
        let value = libc::sigval {
            sival_ptr: (seq + 1) as usize as *mut libc::c_void,
        };
        loop {
            // SAFETY: sigqueue only reads its arguments; `pid` is the receiver's.
            if unsafe { libc::sigqueue(*pid, signal_number(), value) } == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // The receiver's queue of real-time signals is full: let it catch up.
                Some(libc::EAGAIN) => std::thread::yield_now(),
                Some(libc::EINTR) => {}
                _ => return Err(e),
            }
        }
        self.next_tx = seq + 1;
        Ok(())
    }

    fn recv(&mut self, inspect: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<usize> {
        let (ch, set) = self
            .rx
            .as_ref()
            .ok_or_else(|| other("this role does not receive"))?;
        let value = loop {
            // SAFETY: an all-zero siginfo_t is a valid buffer for sigwaitinfo to fill.
            let mut info = unsafe { std::mem::zeroed::<libc::siginfo_t>() };
            // SAFETY: `set` is initialised and `info` is a valid out-pointer.
            let sig = unsafe { libc::sigwaitinfo(set, &mut info) };
            if sig == signal_number() {
                // SAFETY: a signal sent with sigqueue carries its value in si_value.
                break unsafe { info.si_value().sival_ptr } as usize as u64;
            }
            let e = io::Error::last_os_error();
            if sig != -1 || e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        let seq = self.next_rx;
        if value != seq + 1 {
            return Err(invalid_data(format!(
                "signal says message {}, expected {seq}",
                value.wrapping_sub(1)
            )));
        }
        // SAFETY: the signal was sent after the sender wrote the slot; it rewrites the slot
        // only after we publish an index past `seq`, below.
        let payload = unsafe { std::slice::from_raw_parts(ch.slot(seq), self.len) };
        inspect(payload)?;
        self.next_rx = seq + 1;
        ch.consumed().store(self.next_rx, Ordering::Release);
        Ok(self.len)
    }
}

impl Contender for Signals {
    fn name(&self) -> &'static str {
        "signal"
    }

    fn description(&self) -> &'static str {
        "sigqueue (real-time signal with the sequence as value) + sigwaitinfo, payload in shared memory"
    }

    fn supports(&self, spec: &RunSpec) -> Support {
        match spec.scenario {
            Scenario::PingPong | Scenario::Throughput | Scenario::Wakeup => Support::Yes,
            _ => Support::Skip("measured in pingpong, throughput and wakeup".into()),
        }
    }

    fn prepare(&self, spec: &RunSpec) -> io::Result<Prepared> {
        let g = Geometry::of(spec.payload_bytes);
        let mut prepared = Prepared::new();
        prepare_memfd(&mut prepared, "shmbus-bench-signal", 2 * g.channel_len)?;
        prepared.set_info(format!("{} slots of {} B", g.capacity, g.stride));
        Ok(prepared)
    }

    fn connect(
        &self,
        spec: &RunSpec,
        role: Role,
        ctx: &mut ChildCtx,
    ) -> io::Result<Box<dyn Endpoint>> {
        let g = Geometry::of(spec.payload_bytes);
        let (tx, rx) = channels(spec, role)?;
        let shm = Shm::inherited(ctx, 2 * g.channel_len)?;
        let rx = match rx {
            Some(i) => {
                let ch = Channel::open(&shm, i, g)?;
                let set = signal_set()?;
                // Block the signal before anyone can send it (so it queues for sigwaitinfo
                // instead of killing us), then tell the sender where to send.
                // SAFETY: `set` is initialised; the old mask is not wanted.
                let rc =
                    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
                if rc != 0 {
                    return Err(io::Error::from_raw_os_error(rc));
                }
                ch.pid().store(std::process::id() as i32, Ordering::Release);
                Some((ch, set))
            }
            None => None,
        };
        let tx = match tx {
            Some(i) => {
                let ch = Channel::open(&shm, i, g)?;
                let deadline = Instant::now() + PEER_PATIENCE;
                let pid = loop {
                    let pid = ch.pid().load(Ordering::Acquire);
                    if pid != 0 {
                        break pid;
                    }
                    if Instant::now() > deadline {
                        return Err(other("the receiver never published its pid"));
                    }
                    std::thread::sleep(Duration::from_micros(100));
                };
                Some((ch, pid))
            }
            None => None,
        };
        Ok(Box::new(SignalEndpoint {
            tx,
            rx,
            next_tx: 0,
            cached_consumed: 0,
            next_rx: 0,
            len: spec.payload_bytes,
            _shm: shm,
        }))
    }
}
