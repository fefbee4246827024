//! The lossy mode's payload copies: a writer and a reader that may run at the same time on one
//! slot, validated afterwards by the slot's stamp (the seqlock in `publisher` and
//! `subscriber`). Rust's memory model allows such a race only between atomic accesses of the
//! same size, so every access to a lossy payload goes through this module, in one of two
//! *granularities*, always the same for every access of one topic on one machine:
//!
//! * **16-byte units** (x86_64 with AVX, payloads 16-byte aligned, outside Miri and loom):
//!   aligned `movdqa` loads and stores, which every x86_64 processor with AVX performs
//!   single-copy atomically (Intel SDM vol. 3A §9.1.1, AMD APM vol. 2 §7.3.2): relaxed
//!   128-bit atomic accesses, in assembly because Rust has no stable `AtomicU128`. Every
//!   message is written and read in whole units (the tail unit padded), so the units of a
//!   writer and a reader always coincide. The reader moves two units at a time into a
//!   32-byte register and stores that to its private buffer: as many loads and stores per KiB
//!   as a `memcpy`.
//! * **8-byte words** everywhere else: `AtomicU64` relaxed loads and stores in Rust (loom and
//!   Miri check these).
//!
//! The slot's payload area has room for whole units: the payload offset is a multiple of 16
//! and the slot stride a multiple of 64, so `slot_size` rounded up to 16 bytes fits.

use crate::sync::{AtomicU64, Ordering};

/// Bytes in one wide unit.
#[cfg_attr(loom, allow(dead_code))]
const UNIT: usize = 16;

/// Whether `words` (a lossy payload of `words.len()` 8-byte words) is accessed in 16-byte
/// units on this machine. The same for every slot of a topic (same alignment, same CPU).
#[inline]
fn wide(words: &[AtomicU64]) -> bool {
    #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
    {
        (words.as_ptr() as usize).is_multiple_of(UNIT) && std::is_x86_feature_detected!("avx")
    }
    #[cfg(not(all(target_arch = "x86_64", not(loom), not(miri))))]
    {
        let _ = words;
        false
    }
}

/// Store `bytes` into `words` (a lossy writer's copy). `words` must hold at least
/// `bytes.len()` rounded up to 16 bytes (the storage's contract).
pub(crate) fn store(words: &[AtomicU64], bytes: &[u8]) {
    if wide(words) {
        #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
        {
            let units = bytes.len() / UNIT;
            let tail = &bytes[units * UNIT..];
            let total = units + usize::from(!tail.is_empty());
            assert!(total * UNIT <= words.len() * 8, "payload words too short");
            // SAFETY: `words` is 16-byte aligned (checked in `wide`) and holds at least
            // `units` whole units (asserted above); `bytes` holds `units * 16` bytes. The loop
            // reads the private `bytes` (unaligned) and writes each unit with one aligned
            // `movdqa`, a single-copy-atomic 16-byte store (see the module documentation), the
            // same size as every other access to this payload.
            unsafe { wide::store_units(words.as_ptr().cast_mut().cast(), bytes.as_ptr(), units) };
            if !tail.is_empty() {
                let mut last = [0u8; UNIT];
                last[..tail.len()].copy_from_slice(tail);
                // SAFETY: as above, for the unit after the whole ones (asserted in bounds),
                // from a private 16-byte buffer.
                unsafe {
                    wide::store_units(
                        words.as_ptr().add(units * 2).cast_mut().cast(),
                        last.as_ptr(),
                        1,
                    )
                };
            }
        }
        return;
    }
    store_words(words, bytes);
}

/// Load `buf.len()` bytes from `words` (a lossy reader's copy; the caller validates it).
/// `words` must hold at least `buf.len()` rounded up to 16 bytes.
pub(crate) fn load(words: &[AtomicU64], buf: &mut [u8]) {
    if wide(words) {
        #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
        {
            let len = buf.len();
            let pairs = len / (2 * UNIT);
            let mut done = pairs * 2 * UNIT;
            let total = len.div_ceil(UNIT);
            assert!(total * UNIT <= words.len() * 8, "payload words too short");
            // SAFETY: `words` is 16-byte aligned and holds at least `2 * pairs` units
            // (asserted above); `buf` holds `pairs * 32` bytes and we borrow it exclusively.
            // Each unit is read with one aligned `movdqa`, a single-copy-atomic 16-byte load,
            // the same size as every write to this payload.
            unsafe { wide::load_pairs(words.as_ptr().cast(), buf.as_mut_ptr(), pairs) };
            while done < len {
                let mut unit = [0u8; UNIT];
                // SAFETY: unit `done / 16` is in bounds (asserted above) and aligned; the
                // destination is a private 16-byte buffer.
                unsafe { wide::load_unit(words.as_ptr().add(done / 8).cast(), unit.as_mut_ptr()) };
                let n = (len - done).min(UNIT);
                buf[done..done + n].copy_from_slice(&unit[..n]);
                done += n;
            }
        }
        return;
    }
    load_words(words, buf);
}

/// The 8-byte path of [`store`]: relaxed `AtomicU64` stores.
fn store_words(words: &[AtomicU64], bytes: &[u8]) {
    let mut chunks = bytes.chunks_exact(8);
    for (w, chunk) in words.iter().zip(&mut chunks) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        w.store(u64::from_ne_bytes(b), Ordering::Relaxed);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        if let Some(w) = words.get(bytes.len() / 8) {
            w.store(u64::from_ne_bytes(b), Ordering::Relaxed);
        }
    }
}

/// The 8-byte path of [`load`]: relaxed `AtomicU64` loads.
fn load_words(words: &[AtomicU64], buf: &mut [u8]) {
    let len = buf.len();
    let mut chunks = buf.chunks_exact_mut(8);
    for (w, chunk) in words.iter().zip(&mut chunks) {
        chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        if let Some(w) = words.get(len / 8) {
            let b = w.load(Ordering::Relaxed).to_ne_bytes();
            let n = rest.len();
            rest.copy_from_slice(&b[..n]);
        }
    }
}

#[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
mod wide {
    /// Store `units` 16-byte units from `src` (any alignment) to `dst` (16-byte aligned) with
    /// aligned 16-byte stores.
    ///
    /// # Safety
    /// `src` readable and `dst` writable for `16 * units` bytes; `dst` 16-byte aligned; the
    /// CPU has AVX (the atomicity of `movdqa`).
    #[inline]
    pub(super) unsafe fn store_units(dst: *mut u8, src: *const u8, units: usize) {
        if units == 0 {
            return;
        }
        // SAFETY: the caller's contract; the loop touches exactly `16 * units` bytes on each
        // side, no stack, and only the registers named.
        unsafe {
            std::arch::asm!(
                "2:",
                "movdqu xmm0, xmmword ptr [{src}]",
                "movdqa xmmword ptr [{dst}], xmm0",
                "add {src}, 16",
                "add {dst}, 16",
                "dec {n}",
                "jnz 2b",
                src = inout(reg) src => _,
                dst = inout(reg) dst => _,
                n = inout(reg) units => _,
                out("xmm0") _,
                options(nostack),
            );
        }
    }

    /// Load `pairs` pairs of 16-byte units from `src` (16-byte aligned) with aligned 16-byte
    /// loads, and store each pair to `dst` (any alignment) as 32 bytes.
    ///
    /// # Safety
    /// `src` readable and `dst` writable for `32 * pairs` bytes; `src` 16-byte aligned; the
    /// CPU has AVX.
    #[inline]
    pub(super) unsafe fn load_pairs(src: *const u8, dst: *mut u8, pairs: usize) {
        if pairs == 0 {
            return;
        }
        // SAFETY: the caller's contract (AVX for the `v` instructions); the loop touches
        // exactly `32 * pairs` bytes on each side, no stack, and only the registers named.
        // `vzeroupper` leaves the upper halves clean for SSE code that follows.
        unsafe {
            std::arch::asm!(
                "2:",
                "vmovdqa xmm0, xmmword ptr [{src}]",
                "vmovdqa xmm1, xmmword ptr [{src} + 16]",
                "vinsertf128 ymm0, ymm0, xmm1, 1",
                "vmovdqu ymmword ptr [{dst}], ymm0",
                "add {src}, 32",
                "add {dst}, 32",
                "dec {n}",
                "jnz 2b",
                "vzeroupper",
                src = inout(reg) src => _,
                dst = inout(reg) dst => _,
                n = inout(reg) pairs => _,
                out("ymm0") _,
                out("ymm1") _,
                options(nostack),
            );
        }
    }

    /// Load one 16-byte unit from `src` (16-byte aligned) into `dst`.
    ///
    /// # Safety
    /// `src` readable and `dst` writable for 16 bytes; `src` 16-byte aligned; the CPU has AVX.
    #[inline]
    pub(super) unsafe fn load_unit(src: *const u8, dst: *mut u8) {
        // SAFETY: the caller's contract; one aligned 16-byte load, one 16-byte store.
        unsafe {
            std::arch::asm!(
                "movdqa xmm0, xmmword ptr [{src}]",
                "movdqu xmmword ptr [{dst}], xmm0",
                src = in(reg) src,
                dst = in(reg) dst,
                out("xmm0") _,
                options(nostack),
            );
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Words for `len` bytes rounded up to 16, 16-byte aligned (as a payload is).
    /// One spare word, so that a 16-byte aligned run of them can be sliced out.
    fn payload(len: usize) -> Vec<AtomicU64> {
        (0..len.div_ceil(16) * 2 + 1)
            .map(|_| AtomicU64::new(0))
            .collect()
    }

    #[test]
    fn every_length_round_trips_through_either_granularity() {
        for len in [
            0usize, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 1024, 4099,
        ] {
            let words = payload(len);
            let aligned = if (words.as_ptr() as usize).is_multiple_of(16) {
                &words[..]
            } else {
                &words[1..]
            };
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            store(aligned, &bytes);
            let mut back = vec![0xeeu8; len];
            load(aligned, &mut back);
            assert_eq!(back, bytes, "len {len}, wide {}", wide(aligned));
            // The 8-byte path reads the same bytes (both paths lay bytes out in memory order).
            let mut back = vec![0xeeu8; len];
            load_words(aligned, &mut back);
            assert_eq!(back, bytes, "len {len} through 8-byte words");
        }
    }
}
