//! The hardware reference for a ring: a minimal two-process single-producer single-consumer
//! ring of fixed-size slots in shared memory (no daemon, no claims, no repair, no waking).
//!
//! One channel per direction, in a memfd the coordinator creates and both participants map:
//!
//! ```text
//!  0      consumed  u64   the consumer's index, published every RELEASE_EVERY messages
//!  128    slot 0    stamp u64 (sequence + 1, 0 = never written), then the payload
//!  ...    slot i at 128 + i * stride, stride = (8 + payload) rounded up to 64
//! ```
//!
//! The producer writes the payload in place (the harness fills every 64-byte line and the last
//! word) and stores the stamp with `Release`; it re-reads `consumed` only when it is about to
//! lap its cached copy. The consumer spins on the next stamp with `Acquire`, hands the slot to
//! the harness (which checks the first and last word), and publishes its index every
//! `RELEASE_EVERY` messages. This is what any shared-memory ring must do at least, so shmbus's
//! throughput and latency are read against it.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use super::shm::{capacity, channels, prepare_memfd, round_up, Shm, Spin, LINE};
use crate::error::{invalid_data, other};
use crate::transport::{ChildCtx, Contender, Endpoint, Prepared, Role, RunSpec, Scenario, Support};

/// The `spsc_floor` contender.
pub struct SpscFloor;

/// The consumer publishes its index every this many messages (or every `capacity / 2`, if
/// smaller, so that a producer waiting for room always gets it).
const RELEASE_EVERY: u64 = 64;

/// The geometry of one run's channels.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    stride: usize,
    capacity: usize,
    channel_len: usize,
}

impl Geometry {
    fn of(payload: usize) -> Geometry {
        let stride = round_up(8 + payload, 64);
        let capacity = capacity(stride, 2);
        let channel_len = round_up(LINE + capacity * stride, 4096);
        Geometry {
            stride,
            capacity,
            channel_len,
        }
    }

    fn release_every(&self) -> u64 {
        RELEASE_EVERY.min(self.capacity as u64 / 2).max(1)
    }
}

/// One direction of a channel, as seen by one side.
struct Channel {
    consumed: *const AtomicU64,
    slots: *mut u8,
    geometry: Geometry,
}

impl Channel {
    fn open(shm: &Shm, index: usize, geometry: Geometry) -> io::Result<Channel> {
        let base = index * geometry.channel_len;
        Ok(Channel {
            consumed: shm.at(base, 8)?.cast::<AtomicU64>(),
            slots: shm.at(base + LINE, geometry.capacity * geometry.stride)?,
            geometry,
        })
    }

    fn consumed(&self) -> &AtomicU64 {
        // SAFETY: 8-byte aligned (channels are page aligned) inside the mapping, which the
        // endpoint owns and keeps mapped; both processes access it only atomically.
        unsafe { &*self.consumed }
    }

    fn slot(&self, seq: u64) -> *mut u8 {
        let i = (seq as usize) & (self.geometry.capacity - 1);
        // SAFETY: i < capacity, so the slot lies inside the channel's slot area.
        unsafe { self.slots.add(i * self.geometry.stride) }
    }

    fn stamp(&self, seq: u64) -> &AtomicU64 {
        // SAFETY: slots are 64-byte aligned and start with their stamp; only atomics touch it.
        unsafe { &*self.slot(seq).cast::<AtomicU64>() }
    }
}

struct FloorEndpoint {
    tx: Option<Channel>,
    rx: Option<Channel>,
    /// Producer: next sequence, and the consumer index last read.
    next_tx: u64,
    cached_consumed: u64,
    /// Consumer: next sequence expected.
    next_rx: u64,
    len: usize,
    // Last: the channels point into it.
    _shm: Shm,
}

impl Endpoint for FloorEndpoint {
    fn send(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        let ch = self
            .tx
            .as_ref()
            .ok_or_else(|| other("this role does not send"))?;
        if len != self.len {
            return Err(other(format!("sized for {} B, asked {len} B", self.len)));
        }
        let seq = self.next_tx;
        let capacity = ch.geometry.capacity as u64;
        if seq - self.cached_consumed >= capacity {
            let mut spin = Spin::new();
            loop {
                // Acquire: the consumer's reads of the slot we are about to reuse are done.
                self.cached_consumed = ch.consumed().load(Ordering::Acquire);
                if seq - self.cached_consumed < capacity {
                    break;
                }
                spin.spin();
            }
        }
        let slot = ch.slot(seq);
        // SAFETY: the payload follows the stamp inside the slot (stride >= 8 + len). The
        // consumer has released this slot (acquire above, or an earlier one covering it) and
        // reads it again only after our stamp below, so nobody else accesses these bytes now.
        let payload = unsafe { std::slice::from_raw_parts_mut(slot.add(8), len) };
        fill(payload);
        // Release: the payload happens before the consumer's acquire of the stamp.
        ch.stamp(seq).store(seq + 1, Ordering::Release);
        self.next_tx = seq + 1;
        Ok(())
    }

    fn recv(&mut self, inspect: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<usize> {
        let ch = self
            .rx
            .as_ref()
            .ok_or_else(|| other("this role does not receive"))?;
        let seq = self.next_rx;
        let stamp = ch.stamp(seq);
        let mut spin = Spin::new();
        loop {
            let s = stamp.load(Ordering::Acquire);
            if s == seq + 1 {
                break;
            }
            if s > seq + 1 {
                return Err(invalid_data(format!(
                    "slot of message {seq} holds message {}: the producer lapped",
                    s - 1
                )));
            }
            spin.spin();
        }
        let slot = ch.slot(seq);
        // SAFETY: the stamp (acquire) says the producer finished this slot; it rewrites it
        // only after we publish an index past `seq`, which happens after this read.
        let payload = unsafe { std::slice::from_raw_parts(slot.add(8), self.len) };
        inspect(payload)?;
        self.next_rx = seq + 1;
        if self.next_rx.is_multiple_of(ch.geometry.release_every()) {
            // Release: our reads of every slot below happen before the producer reuses them.
            ch.consumed().store(self.next_rx, Ordering::Release);
        }
        Ok(self.len)
    }
}

impl Contender for SpscFloor {
    fn name(&self) -> &'static str {
        "spsc_floor"
    }

    fn description(&self) -> &'static str {
        "hardware reference: minimal 2-process SPSC ring (stamp per slot, index released every 64)"
    }

    fn supports(&self, spec: &RunSpec) -> Support {
        match spec.scenario {
            Scenario::PingPong | Scenario::Throughput => Support::Yes,
            _ => Support::Skip("the SPSC floor is measured in pingpong and throughput".into()),
        }
    }

    fn prepare(&self, spec: &RunSpec) -> io::Result<Prepared> {
        let g = Geometry::of(spec.payload_bytes);
        let mut prepared = Prepared::new();
        prepare_memfd(&mut prepared, "shmbus-bench-spsc", 2 * g.channel_len)?;
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
        Ok(Box::new(FloorEndpoint {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_keeps_a_release_within_every_lap() {
        for payload in [8, 64, 1024, 64 << 10, 4 << 20] {
            let g = Geometry::of(payload);
            assert!(g.capacity.is_power_of_two() && g.capacity >= 2, "{g:?}");
            assert!(g.stride >= 8 + payload && g.stride.is_multiple_of(64));
            // A producer waiting for room needs a release point inside every lap.
            assert!(g.release_every() <= g.capacity as u64 / 2, "{g:?}");
        }
        assert_eq!(Geometry::of(64).release_every(), 64);
    }
}
