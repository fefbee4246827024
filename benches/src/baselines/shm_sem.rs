//! Shared memory with process-shared POSIX semaphores: the textbook bounded-buffer
//! producer/consumer. Each direction is a ring of slots in a memfd with two unnamed
//! semaphores (`sem_init(pshared = 1)`) in front of it: `spaces` (initially the capacity) and
//! `items` (initially 0). The producer `sem_wait(spaces)`, writes the slot, `sem_post(items)`;
//! the consumer `sem_wait(items)`, reads the slot, `sem_post(spaces)`. glibc posts without a
//! system call while nobody waits and sleeps in a futex when the count is zero, so the
//! receiver of the wake-up scenario sleeps in the kernel.
//!
//! ```text
//!  0      items   sem_t
//!  64     spaces  sem_t
//!  128    slot 0, slot 1, ... (stride = payload rounded up to 64)
//! ```

use std::io;

use super::shm::{capacity, channels, create_memfd, round_up, Shm, LINE};
use crate::error::other;
use crate::transport::{ChildCtx, Contender, Endpoint, Prepared, Role, RunSpec, Scenario, Support};

/// The `shm_sem` baseline.
pub struct ShmSemaphore;

const ITEMS: usize = 0;
const SPACES: usize = 64;

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

const _: () = assert!(std::mem::size_of::<libc::sem_t>() <= 64);

/// One direction of a channel, as seen by one side.
struct Channel {
    items: *mut libc::sem_t,
    spaces: *mut libc::sem_t,
    slots: *mut u8,
    geometry: Geometry,
    next: usize,
}

impl Channel {
    fn open(shm: &Shm, index: usize, geometry: Geometry) -> io::Result<Channel> {
        let base = index * geometry.channel_len;
        let sem = std::mem::size_of::<libc::sem_t>();
        Ok(Channel {
            items: shm.at(base + ITEMS, sem)?.cast(),
            spaces: shm.at(base + SPACES, sem)?.cast(),
            slots: shm.at(base + LINE, geometry.capacity * geometry.stride)?,
            geometry,
            next: 0,
        })
    }

    fn slot(&self, i: usize) -> *mut u8 {
        // SAFETY: the index is reduced modulo the capacity, so the slot lies in the slot area.
        unsafe {
            self.slots
                .add((i % self.geometry.capacity) * self.geometry.stride)
        }
    }
}

/// `sem_wait`, retried on EINTR.
fn wait(sem: *mut libc::sem_t) -> io::Result<()> {
    loop {
        // SAFETY: `sem` points to a semaphore initialised with pshared = 1 by the
        // coordinator, inside a mapping the endpoint keeps alive.
        if unsafe { libc::sem_wait(sem) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn post(sem: *mut libc::sem_t) -> io::Result<()> {
    // SAFETY: as in `wait`.
    if unsafe { libc::sem_post(sem) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

struct SemEndpoint {
    tx: Option<Channel>,
    rx: Option<Channel>,
    len: usize,
    // Last: the channels point into it.
    _shm: Shm,
}

impl Endpoint for SemEndpoint {
    fn send(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        let ch = self
            .tx
            .as_mut()
            .ok_or_else(|| other("this role does not send"))?;
        if len != self.len {
            return Err(other(format!("sized for {} B, asked {len} B", self.len)));
        }
        wait(ch.spaces)?;
        // SAFETY: `spaces` granted us this slot: the consumer posted it after reading it and
        // reads it again only after our `items` post below.
        let payload = unsafe { std::slice::from_raw_parts_mut(ch.slot(ch.next), len) };
        fill(payload);
        ch.next += 1;
        post(ch.items)
    }

    fn recv(&mut self, inspect: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<usize> {
        let ch = self
            .rx
            .as_mut()
            .ok_or_else(|| other("this role does not receive"))?;
        wait(ch.items)?;
        // SAFETY: `items` says the producer finished this slot; it writes it again only after
        // our `spaces` post below.
        let payload = unsafe { std::slice::from_raw_parts(ch.slot(ch.next), self.len) };
        inspect(payload)?;
        ch.next += 1;
        post(ch.spaces)?;
        Ok(self.len)
    }
}

impl Contender for ShmSemaphore {
    fn name(&self) -> &'static str {
        "shm_sem"
    }

    fn description(&self) -> &'static str {
        "shared-memory ring with process-shared POSIX semaphores (sem_wait/sem_post)"
    }

    fn supports(&self, spec: &RunSpec) -> Support {
        match spec.scenario {
            Scenario::PingPong | Scenario::Throughput | Scenario::Wakeup => Support::Yes,
            _ => Support::Skip("measured in pingpong, throughput and wakeup".into()),
        }
    }

    fn prepare(&self, spec: &RunSpec) -> io::Result<Prepared> {
        let g = Geometry::of(spec.payload_bytes);
        let len = 2 * g.channel_len;
        let fd = create_memfd("shmbus-bench-sem", len)?;
        // The coordinator initialises the semaphores before any participant starts.
        let shm = Shm::map(&fd, len)?;
        for ch in 0..2 {
            let base = ch * g.channel_len;
            let sem = std::mem::size_of::<libc::sem_t>();
            for (offset, value) in [(ITEMS, 0u32), (SPACES, g.capacity as u32)] {
                let p = shm.at(base + offset, sem)?.cast::<libc::sem_t>();
                // SAFETY: `p` is aligned (64-byte offsets in a page-aligned mapping) room for
                // a sem_t, in a MAP_SHARED mapping, not yet used by anyone; pshared = 1 makes
                // it usable from every process that maps the memfd.
                if unsafe { libc::sem_init(p, 1, value) } != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        drop(shm);
        let mut prepared = Prepared::new();
        prepared.add_fd(fd);
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
        let tx = tx.map(|i| Channel::open(&shm, i, g)).transpose()?;
        let rx = rx.map(|i| Channel::open(&shm, i, g)).transpose()?;
        Ok(Box::new(SemEndpoint {
            tx,
            rx,
            len: spec.payload_bytes,
            _shm: shm,
        }))
    }
}
