//! Where a ring's memory lives. The ring algorithm ([`crate::ring`]) is generic over
//! [`Storage`]; [`RawStorage`] lays it over a byte region (an `mmap`'d segment, or an aligned
//! heap buffer for unit tests and Miri), and under `--cfg loom` a model storage builds the same
//! atomics as loom objects.

use std::ops::{Deref, DerefMut};

use crate::entries::{Control, PublisherEntry, SlotHeader, SubscriberEntry, WakeEntry, WAKE_SLOTS};
use crate::layout::Layout;
use crate::sync::AtomicU64;

/// The memory of one ring.
///
/// # Safety
/// Implementors guarantee that every reference they return points to memory that stays valid
/// for the lifetime of `&self`, that `slot(i)`, `payload*(i)` are valid for every
/// `i < capacity` and panic for any other `i` (never reaching outside the ring), that a payload is at least `slot_size` bytes and `payload_words` at least
/// `slot_size.div_ceil(8)` words (and `slot_size.div_ceil(16) * 2` when they are 16-byte
/// aligned: the lossy copies then move whole 16-byte units), and that distinct indices never
/// overlap.
pub unsafe trait Storage: Send + Sync {
    /// A shared view of a payload.
    type Payload<'a>: Deref<Target = [u8]>
    where
        Self: 'a;
    /// An exclusive view of a payload.
    type PayloadMut<'a>: DerefMut<Target = [u8]>
    where
        Self: 'a;

    /// The validated layout.
    fn layout(&self) -> &Layout;
    /// The control block.
    fn control(&self) -> &Control;
    /// Publisher entry `index`, if in range.
    fn publisher(&self, index: usize) -> Option<&PublisherEntry>;
    /// Subscriber entry `index`, if in range.
    fn subscriber(&self, index: usize) -> Option<&SubscriberEntry>;
    /// Wake slot `index`, if in range (below [`crate::entries::WAKE_SLOTS`]).
    fn waker(&self, index: usize) -> Option<&WakeEntry>;
    /// The header of slot `index`. `index` must be below the capacity (the ring masks it).
    fn slot(&self, index: usize) -> &SlotHeader;
    /// The first `len` bytes of slot `index`'s payload (`len <= slot_size`).
    ///
    /// # Safety
    /// No one may write this payload while the returned view lives (the lossless protocol:
    /// the slot is committed and the reader's cursor protects it).
    unsafe fn payload(&self, index: usize, len: usize) -> Self::Payload<'_>;
    /// Slot `index`'s whole payload, `slot_size` bytes, for writing.
    ///
    /// # Safety
    /// No one else may read or write this payload while the returned view lives (the lossless
    /// protocol: the writer owns the claim and every subscriber has released the slot).
    unsafe fn payload_mut(&self, index: usize) -> Self::PayloadMut<'_>;
    /// Slot `index`'s payload as atomic words, for the lossy mode's validated copies.
    ///
    /// # Safety
    /// The words alias the bytes that [`Storage::payload`] and [`Storage::payload_mut`] hand
    /// out. While the returned words are in use, no `payload` or `payload_mut` view of the same
    /// slot may live (mixing atomic and non-atomic access to one byte is a data race): the
    /// lossy mode reads and writes its payloads only through these words and never makes a
    /// plain view of them, and the lossless mode never calls this.
    unsafe fn payload_words(&self, index: usize) -> &[AtomicU64];
}

#[cfg(not(loom))]
pub use raw::{HeapRegion, RawStorage, Region};

#[cfg(not(loom))]
mod raw {
    use super::*;
    use crate::layout::{SegmentError, SegmentHeader, CONTROL_OFFSET, HEADER_REGION, SEGMENT_PAGE};
    use std::ptr::NonNull;

    /// A contiguous region of memory that holds one segment: a shared mapping or a heap buffer.
    ///
    /// # Safety
    /// `as_ptr()` must be aligned to [`SEGMENT_PAGE`], valid for reads of `len()` bytes for as
    /// long as the region lives, and must not move. It must be valid for writes wherever the
    /// user of the storage writes (a subscriber's mapping may be read-only over the header and
    /// the slots; a subscriber never writes there).
    pub unsafe trait Region: Send + Sync {
        /// Start of the region.
        fn as_ptr(&self) -> *mut u8;
        /// Length in bytes.
        fn len(&self) -> usize;
        /// Whether the region is empty.
        fn is_empty(&self) -> bool {
            self.len() == 0
        }
    }

    /// A zeroed, page-aligned heap buffer: ring storage for unit tests, property tests and Miri.
    pub struct HeapRegion {
        ptr: NonNull<u8>,
        layout: std::alloc::Layout,
    }

    impl HeapRegion {
        /// Allocate `len` zeroed bytes aligned to a page.
        pub fn zeroed(len: usize) -> HeapRegion {
            let layout = std::alloc::Layout::from_size_align(len.max(1), SEGMENT_PAGE as usize)
                .expect("heap region size overflows");
            // SAFETY: `layout` has a non-zero size.
            let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
            let ptr = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
            HeapRegion { ptr, layout }
        }
    }

    impl Drop for HeapRegion {
        fn drop(&mut self) {
            // SAFETY: allocated in `zeroed` with exactly this layout, freed once.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
        }
    }

    // SAFETY: the buffer is exclusively owned; all shared access goes through atomics or the
    // ring's protocol.
    unsafe impl Send for HeapRegion {}
    // SAFETY: as above.
    unsafe impl Sync for HeapRegion {}

    // SAFETY: page aligned (the allocation's alignment), valid for `layout.size()` bytes until
    // drop, never moves, and writable everywhere.
    unsafe impl Region for HeapRegion {
        fn as_ptr(&self) -> *mut u8 {
            self.ptr.as_ptr()
        }
        fn len(&self) -> usize {
            self.layout.size()
        }
    }

    /// A ring laid over a [`Region`] at the offsets of its validated [`Layout`].
    pub struct RawStorage<R: Region> {
        region: R,
        base: NonNull<u8>,
        layout: Layout,
    }

    impl<R: Region> RawStorage<R> {
        /// Copy the header out of `region`, validate it against the region's length and lay the
        /// ring over it. A corrupted segment gives a typed error.
        pub fn open(region: R) -> Result<RawStorage<R>, SegmentError> {
            let len = region.len();
            if !(region.as_ptr() as usize).is_multiple_of(SEGMENT_PAGE as usize) {
                return Err(SegmentError::Truncated(len as u64));
            }
            if len < std::mem::size_of::<SegmentHeader>() {
                return Err(SegmentError::Truncated(len as u64));
            }
            // SAFETY: the region is valid for reads of `len` bytes, and `len` is at least the
            // header's size; the pointer is page aligned, hence aligned for the header. The
            // header is plain data (every bit pattern valid) and is copied out with a volatile
            // read because another process may hold the mapping.
            let header =
                unsafe { std::ptr::read_volatile(region.as_ptr() as *const SegmentHeader) };
            let layout = header.validate(len as u64)?;
            let base = NonNull::new(region.as_ptr()).ok_or(SegmentError::Truncated(0))?;
            Ok(RawStorage {
                region,
                base,
                layout,
            })
        }

        /// Write a fresh segment for `layout` into `region` (which must be zeroed and at least
        /// `layout.total_len` bytes, and not yet shared with anyone who reads it) and open it.
        pub fn create(region: R, layout: &Layout) -> Result<RawStorage<R>, SegmentError> {
            if (region.len() as u64) < layout.total_len {
                return Err(SegmentError::ShortMapping {
                    expected: layout.total_len,
                    mapped: region.len() as u64,
                });
            }
            let header = layout.header();
            debug_assert!(HEADER_REGION as usize >= std::mem::size_of::<SegmentHeader>());
            // SAFETY: the region is valid for writes of at least `total_len` bytes, which
            // exceeds the header; page alignment satisfies the header's alignment; nobody else
            // reads the segment before `create` returns.
            unsafe { std::ptr::write_volatile(region.as_ptr() as *mut SegmentHeader, header) };
            let storage = RawStorage::open(region)?;
            crate::ring::initialize(&storage);
            Ok(storage)
        }

        /// The region underneath.
        pub fn region(&self) -> &R {
            &self.region
        }

        /// A shared reference to the `T` at `offset` in the region.
        ///
        /// # Safety
        /// `offset .. offset + size_of::<T>()` must lie inside the region, and `offset` must be
        /// aligned for `T`: in practice an offset that the validated [`Layout`] computed for an
        /// index below its table's length (the control block, an entry, a slot header). `T`
        /// must be valid for every bit pattern and shared through atomics only (the control
        /// block, the entries and the slot headers are made of atomics), so that a reference
        /// to it may alias the memory other processes write.
        #[inline]
        unsafe fn at<T>(&self, offset: u64) -> &T {
            debug_assert!(offset as usize + std::mem::size_of::<T>() <= self.region.len());
            debug_assert!((offset as usize).is_multiple_of(std::mem::align_of::<T>()));
            // SAFETY: the caller guarantees that the offset lies inside the region, which is
            // valid for reads for as long as `self` lives and never moves (`Region`), and is
            // aligned for `T`; `T` is made only of atomics, valid for any bit pattern, and
            // shared access to atomics is sound.
            unsafe { &*(self.base.as_ptr().add(offset as usize) as *const T) }
        }

        /// The start of slot `index`'s payload. Panics unless `index` is below the capacity.
        ///
        /// This is on every send and receive, and the assert stays in release builds: it is
        /// one compare against a value already in cache, which the ring's own index (masked
        /// with `capacity - 1`) always passes, so the branch is never taken and predicted as
        /// such; it is what keeps a bad index from any caller (the safe `Storage` methods take
        /// a plain `usize`) from ever becoming a pointer outside the segment.
        #[inline]
        fn payload_ptr(&self, index: usize) -> *mut u8 {
            assert!(
                index < self.layout.geometry.capacity as usize,
                "payload index {index} out of range (capacity {})",
                self.layout.geometry.capacity
            );
            let offset = self.layout.slot_offset(index) + self.layout.payload_offset;
            // SAFETY: index < capacity (asserted above), so the payload, `payload_offset` into
            // slot `index`, lies inside the validated segment, which lies inside the region.
            unsafe { self.base.as_ptr().add(offset as usize) }
        }
    }

    // SAFETY: the storage only hands out atomics and protocol-governed payload views.
    unsafe impl<R: Region> Send for RawStorage<R> {}
    // SAFETY: as above.
    unsafe impl<R: Region> Sync for RawStorage<R> {}

    // SAFETY: every offset comes from the validated layout, which lies inside the region; slot
    // indices are below the capacity (asserted in `slot` and `payload_ptr`, in every build);
    // payloads are `slot_size` bytes at `payload_offset` and slots do not overlap (stride >=
    // payload_offset + slot_size). `payload_offset` is a multiple of 16 and the stride a multiple
    // of 64, so the word view is 16-byte aligned and `stride - payload_offset`, a multiple of 16,
    // holds `slot_size` rounded up to 16 bytes.
    unsafe impl<R: Region> Storage for RawStorage<R> {
        type Payload<'a>
            = &'a [u8]
        where
            R: 'a;
        type PayloadMut<'a>
            = &'a mut [u8]
        where
            R: 'a;

        fn layout(&self) -> &Layout {
            &self.layout
        }

        #[inline]
        fn control(&self) -> &Control {
            // SAFETY: the control block sits at a fixed, page-aligned offset inside every
            // validated segment (the region is at least `total_len` bytes, checked in `open`).
            unsafe { self.at(CONTROL_OFFSET) }
        }

        #[inline]
        fn publisher(&self, index: usize) -> Option<&PublisherEntry> {
            (index < self.layout.geometry.max_publishers as usize).then(|| {
                // SAFETY: index < max_publishers (checked just above), so the entry's offset,
                // computed by the validated layout, lies inside the region and is aligned to
                // the entries' 128 bytes.
                unsafe { self.at(self.layout.publisher_offset(index)) }
            })
        }

        #[inline]
        fn subscriber(&self, index: usize) -> Option<&SubscriberEntry> {
            (index < self.layout.geometry.max_subscribers as usize).then(|| {
                // SAFETY: index < max_subscribers (checked just above), so the entry's offset,
                // computed by the validated layout, lies inside the region and is aligned to
                // the entries' 128 bytes.
                unsafe { self.at(self.layout.subscriber_offset(index)) }
            })
        }

        #[inline]
        fn waker(&self, index: usize) -> Option<&WakeEntry> {
            (index < WAKE_SLOTS).then(|| {
                // SAFETY: index < WAKE_SLOTS (checked just above), the length of the wake
                // table the validated layout places inside the region, aligned for its entries.
                unsafe { self.at(self.layout.waker_offset(index)) }
            })
        }

        #[inline]
        fn slot(&self, index: usize) -> &SlotHeader {
            assert!(
                index < self.layout.geometry.capacity as usize,
                "slot index {index} out of range (capacity {})",
                self.layout.geometry.capacity
            );
            // SAFETY: index < capacity (asserted just above), so the slot header, at the start
            // of slot `index` in the validated layout, lies inside the region and is aligned
            // to the slots' 64 bytes.
            unsafe { self.at(self.layout.slot_offset(index)) }
        }

        #[inline]
        unsafe fn payload(&self, index: usize, len: usize) -> &[u8] {
            let len = len.min(self.layout.geometry.slot_size as usize);
            // SAFETY: in bounds (see the impl's comment); the caller guarantees no writer.
            unsafe { std::slice::from_raw_parts(self.payload_ptr(index), len) }
        }

        #[inline]
        unsafe fn payload_mut(&self, index: usize) -> &mut [u8] {
            let len = self.layout.geometry.slot_size as usize;
            // SAFETY: in bounds (see the impl's comment); the caller guarantees exclusivity.
            unsafe { std::slice::from_raw_parts_mut(self.payload_ptr(index), len) }
        }

        #[inline]
        unsafe fn payload_words(&self, index: usize) -> &[AtomicU64] {
            // Whole 16-byte units: the payload area (stride - payload_offset, a multiple of
            // 16) holds `slot_size` rounded up to 16.
            let words = (self.layout.geometry.slot_size as usize).div_ceil(16) * 2;
            // SAFETY: in bounds and aligned (see the impl's comment); atomics may alias any
            // bit pattern; the caller guarantees no plain view of this payload lives meanwhile.
            unsafe {
                std::slice::from_raw_parts(self.payload_ptr(index) as *const AtomicU64, words)
            }
        }
    }
}

#[cfg(loom)]
pub use model::ModelStorage;

#[cfg(loom)]
mod model {
    use super::*;
    use crate::sync::AtomicU64;
    use loom::cell::{ConstPtr, MutPtr, UnsafeCell};

    /// The ring built from loom objects, so that loom sees every access: atomics as loom
    /// atomics, and each payload as a loom `UnsafeCell` whose borrows loom checks for races.
    pub struct ModelStorage {
        layout: Layout,
        control: Control,
        publishers: Vec<PublisherEntry>,
        subscribers: Vec<SubscriberEntry>,
        wakers: Vec<WakeEntry>,
        slots: Vec<SlotHeader>,
        payloads: Vec<UnsafeCell<Vec<u8>>>,
        words: Vec<Vec<AtomicU64>>,
    }

    impl ModelStorage {
        /// A fresh, initialised ring for `layout`.
        pub fn new(layout: &Layout) -> ModelStorage {
            let g = &layout.geometry;
            let slot_size = g.slot_size as usize;
            let storage = ModelStorage {
                layout: layout.clone(),
                control: Control::default(),
                publishers: (0..g.max_publishers).map(|_| Default::default()).collect(),
                subscribers: (0..g.max_subscribers).map(|_| Default::default()).collect(),
                wakers: (0..WAKE_SLOTS).map(|_| Default::default()).collect(),
                slots: (0..g.capacity).map(|_| Default::default()).collect(),
                payloads: (0..g.capacity)
                    .map(|_| UnsafeCell::new(vec![0; slot_size]))
                    .collect(),
                words: (0..g.capacity)
                    .map(|_| {
                        (0..slot_size.div_ceil(8))
                            .map(|_| AtomicU64::new(0))
                            .collect()
                    })
                    .collect(),
            };
            crate::ring::initialize(&storage);
            storage
        }
    }

    /// A tracked shared borrow of a payload.
    pub struct ModelRef {
        ptr: ConstPtr<Vec<u8>>,
        len: usize,
    }
    impl Deref for ModelRef {
        type Target = [u8];
        fn deref(&self) -> &[u8] {
            // SAFETY: loom tracks this borrow for as long as `ptr` lives and reports a race if
            // anyone writes meanwhile, which is what the models are for.
            unsafe { &self.ptr.deref()[..self.len] }
        }
    }

    /// A tracked exclusive borrow of a payload.
    pub struct ModelMut {
        ptr: MutPtr<Vec<u8>>,
    }
    impl Deref for ModelMut {
        type Target = [u8];
        fn deref(&self) -> &[u8] {
            // SAFETY: as for `ModelRef`.
            unsafe { self.ptr.deref() }
        }
    }
    impl DerefMut for ModelMut {
        fn deref_mut(&mut self) -> &mut [u8] {
            // SAFETY: loom tracks this exclusive borrow and reports any concurrent access.
            unsafe { self.ptr.deref() }
        }
    }

    // SAFETY: the atomics are loom atomics and every payload access goes through loom's
    // `UnsafeCell`, which checks that no two threads access a payload in conflict: that check is
    // what the models are for.
    unsafe impl Send for ModelStorage {}
    // SAFETY: as above.
    unsafe impl Sync for ModelStorage {}

    // SAFETY: every vector has exactly the lengths the trait promises.
    unsafe impl Storage for ModelStorage {
        type Payload<'a> = ModelRef;
        type PayloadMut<'a> = ModelMut;

        fn layout(&self) -> &Layout {
            &self.layout
        }
        fn control(&self) -> &Control {
            &self.control
        }
        fn publisher(&self, index: usize) -> Option<&PublisherEntry> {
            self.publishers.get(index)
        }
        fn subscriber(&self, index: usize) -> Option<&SubscriberEntry> {
            self.subscribers.get(index)
        }
        fn waker(&self, index: usize) -> Option<&WakeEntry> {
            self.wakers.get(index)
        }
        fn slot(&self, index: usize) -> &SlotHeader {
            &self.slots[index]
        }
        unsafe fn payload(&self, index: usize, len: usize) -> ModelRef {
            ModelRef {
                ptr: self.payloads[index].get(),
                len,
            }
        }
        unsafe fn payload_mut(&self, index: usize) -> ModelMut {
            ModelMut {
                ptr: self.payloads[index].get_mut(),
            }
        }
        unsafe fn payload_words(&self, index: usize) -> &[AtomicU64] {
            &self.words[index]
        }
    }
}
