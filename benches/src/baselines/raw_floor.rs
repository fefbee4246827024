//! The floor: two processes ping-ponging one cache line of shared memory.
//!
//! A 4 KiB memfd is created in the coordinator and inherited by both
//! participants, which map it `MAP_SHARED`. Its first cache line holds two
//! `AtomicU64`s, one per direction. A side publishes the message's header
//! word with a `Release` store; the other busy-polls with `Acquire` loads
//! until the value changes. There is no payload beyond the 8-byte word and
//! no kernel involvement: nothing that moves data between two processes can
//! be faster, so every other contender is read relative to this line.

use std::hint::spin_loop;
use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use super::wire::role_mismatch;
use crate::error::Context;
use crate::payload::MIN_PAYLOAD;
use crate::transport::{
    ChildCtx, Contender, Endpoint, Prepared, Role, RunSpec, Scenario, Support, Topology,
};

/// The `raw_floor` baseline.
pub struct RawFloor;

const MEMFD_FD: usize = 0;
const MAP_LEN: usize = 4096;
/// Slot written by the ping side, read by the pong side.
const PING_SLOT: usize = 0;
/// Slot written by the pong side, read by the ping side.
const PONG_SLOT: usize = 1;
/// Spins before yielding the CPU once (only reached if the peer is not
/// running, e.g. on a single CPU or while it starts up).
const SPINS_BEFORE_YIELD: u32 = 1 << 16;

/// A `MAP_SHARED` mapping of the floor's memfd, unmapped on drop.
struct Mapping {
    ptr: NonNull<std::ffi::c_void>,
}

impl Mapping {
    fn slot(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < 2);
        // SAFETY: the mapping is MAP_LEN (4096) bytes, page aligned, readable
        // and writable, and lives as long as `self`; slots 0 and 1 lie in its
        // first 16 bytes, 8-byte aligned. Both processes only ever access
        // them through atomics, so creating shared references is sound.
        unsafe { &*self.ptr.as_ptr().cast::<AtomicU64>().add(i) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/MAP_LEN is exactly the region returned by mmap, and
        // no reference into it outlives `self` (slot() borrows self).
        let _ = unsafe { munmap(self.ptr, MAP_LEN) };
    }
}

struct FloorEndpoint {
    map: Mapping,
    tx: usize,
    rx: usize,
    last_rx: u64,
}

impl Endpoint for FloorEndpoint {
    fn send(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> io::Result<()> {
        debug_assert_eq!(len, MIN_PAYLOAD);
        let mut word = [0u8; MIN_PAYLOAD];
        fill(&mut word);
        self.map
            .slot(self.tx)
            .store(u64::from_le_bytes(word), Ordering::Release);
        Ok(())
    }

    fn recv(&mut self, inspect: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<usize> {
        let slot = self.map.slot(self.rx);
        let mut spins = 0u32;
        let word = loop {
            let v = slot.load(Ordering::Acquire);
            if v != self.last_rx {
                break v;
            }
            spins += 1;
            if spins == SPINS_BEFORE_YIELD {
                spins = 0;
                std::thread::yield_now();
            } else {
                spin_loop();
            }
        };
        // Every message carries a fresh sequence number, so consecutive
        // words always differ and "changed" means "new message".
        self.last_rx = word;
        inspect(&word.to_le_bytes())?;
        Ok(MIN_PAYLOAD)
    }
}

impl Contender for RawFloor {
    fn name(&self) -> &'static str {
        "raw_floor"
    }

    fn description(&self) -> &'static str {
        "lower bound: one shared cache line (memfd, MAP_SHARED), AtomicU64 busy-poll, 8 B only"
    }

    fn supports(&self, spec: &RunSpec) -> Support {
        if spec.scenario != Scenario::PingPong {
            return Support::Skip("the floor is a ping-pong of one cache line only".into());
        }
        if spec.payload_bytes != MIN_PAYLOAD {
            return Support::Skip(format!(
                "payload-less floor: runs at {MIN_PAYLOAD} B (the header word) only"
            ));
        }
        Support::Yes
    }

    fn prepare(&self, _spec: &RunSpec) -> io::Result<Prepared> {
        let mut prepared = Prepared::new();
        let fd =
            memfd_create("shmbus-bench-floor", MFdFlags::MFD_CLOEXEC).context("memfd_create")?;
        let file = std::fs::File::from(fd);
        file.set_len(MAP_LEN as u64)
            .context("sizing the floor memfd")?;
        prepared.add_fd(file.into());
        Ok(prepared)
    }

    fn connect(
        &self,
        spec: &RunSpec,
        role: Role,
        ctx: &mut ChildCtx,
    ) -> io::Result<Box<dyn Endpoint>> {
        let (tx, rx) = match (spec.topology(), role) {
            (Topology::Pair, Role::Ping) => (PING_SLOT, PONG_SLOT),
            (Topology::Pair, Role::Pong) => (PONG_SLOT, PING_SLOT),
            (topology, role) => return Err(role_mismatch(topology, role)),
        };
        let fd = ctx.take_fd(MEMFD_FD)?;
        let len =
            NonZeroUsize::new(MAP_LEN).ok_or_else(|| crate::error::other("zero map length"))?;
        // SAFETY: a fresh mapping chosen by the kernel (addr = None) of a
        // memfd sized to MAP_LEN; it aliases no Rust object. The only other
        // accessor is the peer process, through atomics (see Mapping::slot).
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )
        }
        .context("mmap of the floor memfd")?;
        let map = Mapping { ptr };
        // The memfd starts zeroed and the harness never sends a zero word.
        let last_rx = map.slot(rx).load(Ordering::Acquire);
        Ok(Box::new(FloorEndpoint {
            map,
            tx,
            rx,
            last_rx,
        }))
    }
}
