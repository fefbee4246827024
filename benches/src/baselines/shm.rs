//! Shared plumbing of the shared-memory baselines (`spsc_floor`, `shm_sem`, `signal`): a
//! memfd created in the coordinator, inherited by every participant and mapped `MAP_SHARED`,
//! split into one *channel* per direction, and the ring geometry they share.

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;

use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use crate::error::{other, Context};
use crate::transport::{ChildCtx, Prepared, Role, RunSpec, Topology};

/// Index of the memfd in [`Prepared::add_fd`] order.
const MEMFD_FD: usize = 0;
/// Channels are laid out on this alignment (two cache lines, so that adjacent-line prefetch
/// cannot couple a producer's and a consumer's fields).
pub(crate) const LINE: usize = 128;

/// Slot count of a ring for `stride`-byte slots: about 256 KiB (the size busbench gives the
/// shmbus rings), a power of two between `min` and 1024.
pub(crate) fn capacity(stride: usize, min: usize) -> usize {
    let fit = (256usize << 10) / stride.max(64);
    let pow2 = if fit.is_power_of_two() {
        fit
    } else {
        fit.next_power_of_two() / 2
    };
    pow2.clamp(min.next_power_of_two(), 1024)
}

/// Rounds `v` up to a multiple of `to` (a power of two).
pub(crate) fn round_up(v: usize, to: usize) -> usize {
    (v + to - 1) & !(to - 1)
}

/// Which channel a role writes and which it reads: channel 0 carries ping (or the sender's
/// messages), channel 1 carries pong.
pub(crate) fn channels(spec: &RunSpec, role: Role) -> io::Result<(Option<usize>, Option<usize>)> {
    match (spec.topology(), role) {
        (Topology::Pair, Role::Ping) => Ok((Some(0), Some(1))),
        (Topology::Pair, Role::Pong) => Ok((Some(1), Some(0))),
        (Topology::OneToMany { receivers: 1 }, Role::Sender { .. }) => Ok((Some(0), None)),
        (Topology::OneToMany { receivers: 1 }, Role::Receiver { .. }) => Ok((None, Some(0))),
        (topology, role) => Err(super::wire::role_mismatch(topology, role)),
    }
}

/// Creates a zeroed memfd of `len` bytes.
pub(crate) fn create_memfd(name: &str, len: usize) -> io::Result<OwnedFd> {
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC).context("memfd_create")?;
    let file = std::fs::File::from(fd);
    file.set_len(len as u64).context("sizing the memfd")?;
    Ok(file.into())
}

/// Creates a zeroed memfd of `len` bytes and registers it for the participants.
pub(crate) fn prepare_memfd(prepared: &mut Prepared, name: &str, len: usize) -> io::Result<()> {
    prepared.add_fd(create_memfd(name, len)?);
    Ok(())
}

/// A `MAP_SHARED` read-write mapping of a memfd, unmapped on drop.
pub(crate) struct Shm {
    ptr: NonNull<std::ffi::c_void>,
    len: usize,
}

impl Shm {
    /// Maps the whole of `fd` (`len` bytes).
    pub(crate) fn map(fd: &OwnedFd, len: usize) -> io::Result<Shm> {
        let n = NonZeroUsize::new(len).ok_or_else(|| other("zero-length mapping"))?;
        // SAFETY: a fresh mapping chosen by the kernel (addr = None) of a memfd of at least
        // `len` bytes; it aliases no Rust object. Other processes reach it only through the
        // protocols of the baselines (atomics, semaphores, or slots handed over by them).
        let ptr = unsafe {
            mmap(
                None,
                n,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }
        .context("mmap of the memfd")?;
        Ok(Shm { ptr, len })
    }

    /// Maps the memfd the coordinator prepared.
    pub(crate) fn inherited(ctx: &mut ChildCtx, len: usize) -> io::Result<Shm> {
        let fd = ctx.take_fd(MEMFD_FD)?;
        Shm::map(&fd, len)
    }

    /// The address of byte `offset`; `offset + size` must lie inside the mapping.
    pub(crate) fn at(&self, offset: usize, size: usize) -> io::Result<*mut u8> {
        if offset.checked_add(size).is_none_or(|end| end > self.len) {
            return Err(other(format!(
                "offset {offset} + {size} outside a {}-byte mapping",
                self.len
            )));
        }
        // SAFETY: `offset` lies inside the mapping (checked above).
        Ok(unsafe { self.ptr.as_ptr().cast::<u8>().add(offset) })
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` is exactly the region returned by mmap; the endpoints that
        // hold pointers into it own the `Shm` and drop it last.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

/// Spins, yielding the CPU now and then (only reached when the peer does not run, e.g. while
/// it starts up or when both share a CPU).
pub(crate) struct Spin(u32);

impl Spin {
    pub(crate) fn new() -> Spin {
        Spin(0)
    }

    #[inline]
    pub(crate) fn spin(&mut self) {
        self.0 += 1;
        if self.0 >= 1 << 14 {
            self.0 = 0;
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}
