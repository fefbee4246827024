//! The segment layout: one topic is one shared-memory segment.
//!
//! ```text
//!  offset                    size                      what                         mapped by a subscriber
//!  0                         4096                      SegmentHeader (plain data)   read-only
//!  4096   CONTROL_OFFSET     512                       Control (atomics)            read-write
//!  publishers_offset         max_publishers  * 128     PublisherEntry table         read-write
//!  subscribers_offset        max_subscribers * 128     SubscriberEntry table        read-write
//!  wakers_offset             WAKE_SLOTS * 16           WakeEntry table              read-write
//!  slots_offset (page)       capacity * slot_stride    the slot ring                read-only
//!
//!  one slot (slot_stride bytes, a multiple of 64):
//!  +0   stamp      u64   (sequence << 2) | state, see `stamp`
//!  +8   len        u32   payload length in bytes, <= slot_size
//!  +12  publisher  u32   index of the publisher that wrote it
//!  +payload_offset       payload, slot_size bytes (payload_offset = max(16, type_align))
//!  ...  padding up to slot_stride (at least up to slot_size rounded to 16: lossy topics copy
//!       their payloads in whole 16-byte units, see `ring::words`)
//! ```
//!
//! The header is written once by the creator (the daemon) and never changes. A client copies
//! it out of the mapping, validates the copy ([`SegmentHeader::validate`]) and from then on
//! uses only the validated [`Layout`], so a later write to the shared header cannot change the
//! offsets a client computes with. All offsets are computed in one place: [`Layout::compute`].

use thiserror::Error;

use crate::entries::WAKE_SLOTS;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The first eight bytes of every shmbus segment.
pub const MAGIC: [u8; 8] = *b"SHMBUS\0\x01";
/// Bumped whenever the layout below changes in any way (2: the `shared` flag of the solo
/// claim; 3: the subscribers' high-water mark in the control block's flags; 4: the wake slots
/// and the bells' `armed` bitmaps; 5: the presence bell and the unheard count in the flags).
pub const LAYOUT_VERSION: u32 = 5;
/// The page size the layout is built on; the mapping page size must divide it.
pub const SEGMENT_PAGE: u64 = 4096;
/// Where the header lives.
pub const HEADER_OFFSET: u64 = 0;
/// The size reserved for the header: a whole page, so it can be mapped read-only on its own.
pub const HEADER_REGION: u64 = SEGMENT_PAGE;
/// Where the control block lives.
pub const CONTROL_OFFSET: u64 = HEADER_REGION;
/// The size of the control block.
pub const CONTROL_LEN: u64 = 512;
/// The size of one publisher or subscriber table entry (two cache lines, so that adjacent-line
/// prefetching cannot make neighbours share).
pub const ENTRY_LEN: u64 = 128;
/// The size of one wake slot entry ([`crate::entries::WakeEntry`]).
pub const WAKE_ENTRY_LEN: u64 = 16;
/// The size of the per-slot header (stamp, length, publisher).
pub const SLOT_HEADER_LEN: u64 = 16;
/// Slot strides are multiples of this (one cache line).
pub const SLOT_ALIGN: u64 = 64;
/// Longest type name recorded in the header.
pub const TYPE_NAME_MAX: usize = 128;

/// Smallest ring capacity.
pub const MIN_CAPACITY: u32 = 2;
/// Largest ring capacity.
pub const MAX_CAPACITY: u32 = 1 << 20;
/// Largest slot (payload) size: 1 GiB.
pub const MAX_SLOT_SIZE: u32 = 1 << 30;
/// Largest publisher or subscriber table.
pub const MAX_TABLE: u32 = 256;
/// Largest payload alignment.
pub const MAX_TYPE_ALIGN: u32 = 64;
/// Largest segment: 1 TiB (anything larger is a corrupted header, not a topic).
pub const MAX_SEGMENT_LEN: u64 = 1 << 40;

/// How a topic treats a subscriber that falls behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
#[repr(u32)]
pub enum Mode {
    /// A publisher never overwrites a slot a live subscriber has not released; it waits or
    /// gets `Full`. Subscribers read the slot in place. The default.
    #[default]
    Lossless = 1,
    /// A publisher never waits; a subscriber that falls behind gets `Lagged(n)`. Reads are
    /// validated copies.
    Lossy = 2,
}

impl Mode {
    fn from_u32(v: u32) -> Option<Mode> {
        match v {
            1 => Some(Mode::Lossless),
            2 => Some(Mode::Lossy),
            _ => None,
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Lossless => "lossless",
            Mode::Lossy => "lossy",
        })
    }
}

/// The payload type a topic carries, as recorded in its header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct TypeInfo {
    /// `std::any::type_name` of the payload type, or `"bytes"` for byte topics.
    pub name: String,
    /// `size_of` the type; 0 for byte topics (variable length up to the slot size).
    pub size: u32,
    /// `align_of` the type; 1 for byte topics.
    pub align: u32,
}

impl TypeInfo {
    /// The type of a byte topic: variable-length `[u8]` up to the slot size.
    pub fn bytes() -> TypeInfo {
        TypeInfo {
            name: BYTES_TYPE_NAME.into(),
            size: 0,
            align: 1,
        }
    }

    /// Whether this is a byte topic's type (variable-length messages up to the slot size).
    pub fn is_bytes(&self) -> bool {
        self.size == 0
    }
}

impl std::fmt::Display for TypeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_bytes() {
            write!(
                f,
                "variable-length bytes `{}` (size 0, align {})",
                self.name, self.align
            )
        } else {
            write!(
                f,
                "`{}` (size {}, align {})",
                self.name, self.size, self.align
            )
        }
    }
}

/// The type name of byte topics.
pub const BYTES_TYPE_NAME: &str = "bytes";

/// The shape of a topic: everything needed to compute its layout. The control protocol
/// carries this very type, and [`Geometry::validate`] is the one validator of topic options.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct Geometry {
    /// Number of slots, a power of two.
    pub capacity: u32,
    /// Largest payload in bytes.
    pub slot_size: u32,
    /// Delivery mode.
    pub mode: Mode,
    /// Size of the publisher table.
    pub max_publishers: u32,
    /// Size of the subscriber table.
    pub max_subscribers: u32,
    /// The payload type.
    pub type_info: TypeInfo,
}

/// Why a geometry or a mapped segment was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LayoutError {
    /// The capacity is not a power of two in range.
    #[error("capacity {0} must be a power of two between {MIN_CAPACITY} and {MAX_CAPACITY}")]
    Capacity(u32),
    /// The slot size is out of range.
    #[error("slot size {0} must be between 1 and {MAX_SLOT_SIZE} bytes")]
    SlotSize(u32),
    /// A table size is out of range.
    #[error("{what} {value} must be between 1 and {MAX_TABLE}")]
    Table {
        /// Which table.
        what: &'static str,
        /// The value given.
        value: u32,
    },
    /// The type does not fit the slot or has an unsupported alignment.
    #[error("payload type `{name}` (size {size}, align {align}) does not fit: {why}")]
    Type {
        /// Type name.
        name: String,
        /// Type size.
        size: u32,
        /// Type alignment.
        align: u32,
        /// What is wrong.
        why: &'static str,
    },
    /// The segment would be larger than any sane topic.
    #[error("segment would be larger than {MAX_SEGMENT_LEN} bytes")]
    TooLarge,
}

/// Why a mapped segment failed validation. Every field of the header is checked; a segment that
/// fails gives one of these, never a panic.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SegmentError {
    /// The mapping is shorter than the header.
    #[error("segment is {0} bytes, shorter than its header")]
    Truncated(u64),
    /// Not an shmbus segment.
    #[error("not an shmbus segment (bad magic)")]
    BadMagic,
    /// Built by another version of the layout.
    #[error("segment layout version {found}, this build reads version {LAYOUT_VERSION}")]
    Version {
        /// The version in the header.
        found: u32,
    },
    /// Unknown delivery mode.
    #[error("unknown delivery mode {0}")]
    BadMode(u32),
    /// The geometry in the header is invalid.
    #[error("invalid geometry: {0}")]
    Geometry(#[from] LayoutError),
    /// A recorded offset or length disagrees with the one computed from the geometry.
    #[error("header field `{field}` is {found}, the geometry implies {expected}")]
    Inconsistent {
        /// Which field.
        field: &'static str,
        /// What the header says.
        found: u64,
        /// What the geometry implies.
        expected: u64,
    },
    /// The mapping is shorter than the segment the header describes.
    #[error("segment describes {expected} bytes but only {mapped} are mapped")]
    ShortMapping {
        /// Bytes the header describes.
        expected: u64,
        /// Bytes mapped.
        mapped: u64,
    },
    /// The type name is not printable ASCII of a valid length.
    #[error("type name in the header is malformed")]
    BadTypeName,
}

/// The header at offset 0 of every segment. Plain data, written once by the creator.
///
/// ```text
///  0   magic               [u8; 8]
///  8   layout_version      u32
///  12  header_len          u32   (size_of::<SegmentHeader>() = 256)
///  16  mode                u32   (1 lossless, 2 lossy)
///  20  capacity            u32
///  24  slot_size           u32
///  28  payload_offset      u32
///  32  slot_stride         u64
///  40  max_publishers      u32
///  44  max_subscribers     u32
///  48  type_size           u32
///  52  type_align          u32
///  56  control_offset      u64
///  64  publishers_offset   u64
///  72  subscribers_offset  u64
///  80  slots_offset        u64
///  88  total_len           u64
///  96  type_name_len       u32
///  100 reserved            u32
///  104 type_name           [u8; 128]
///  232 wakers_offset       u64
///  240 reserved            [u8; 16]
/// ```
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SegmentHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`LAYOUT_VERSION`].
    pub layout_version: u32,
    /// `size_of::<SegmentHeader>()`.
    pub header_len: u32,
    /// [`Mode`] as a number.
    pub mode: u32,
    /// Number of slots.
    pub capacity: u32,
    /// Largest payload.
    pub slot_size: u32,
    /// Offset of the payload inside a slot.
    pub payload_offset: u32,
    /// Bytes from one slot to the next.
    pub slot_stride: u64,
    /// Publisher table entries.
    pub max_publishers: u32,
    /// Subscriber table entries.
    pub max_subscribers: u32,
    /// Payload type size (0 for bytes).
    pub type_size: u32,
    /// Payload type alignment.
    pub type_align: u32,
    /// Offset of the control block.
    pub control_offset: u64,
    /// Offset of the publisher table.
    pub publishers_offset: u64,
    /// Offset of the subscriber table.
    pub subscribers_offset: u64,
    /// Offset of the first slot.
    pub slots_offset: u64,
    /// Length of the whole segment.
    pub total_len: u64,
    /// Bytes used in `type_name`.
    pub type_name_len: u32,
    /// Zero.
    pub reserved0: u32,
    /// The payload type's name.
    pub type_name: [u8; TYPE_NAME_MAX],
    /// Offset of the wake slot table.
    pub wakers_offset: u64,
    /// Zero.
    pub reserved1: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<SegmentHeader>() == 256);
const _: () = assert!(std::mem::align_of::<SegmentHeader>() == 8);

/// Offsets and sizes of every region, computed from a [`Geometry`] by [`Layout::compute`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The geometry this layout was computed from.
    pub geometry: Geometry,
    /// Offset of the payload inside a slot.
    pub payload_offset: u64,
    /// Bytes from one slot to the next.
    pub slot_stride: u64,
    /// Offset of the publisher table.
    pub publishers_offset: u64,
    /// Offset of the subscriber table.
    pub subscribers_offset: u64,
    /// Offset of the wake slot table.
    pub wakers_offset: u64,
    /// Offset of the first slot (page aligned).
    pub slots_offset: u64,
    /// Total segment length (page aligned).
    pub total_len: u64,
}

fn round_up(v: u64, to: u64) -> Option<u64> {
    debug_assert!(to.is_power_of_two());
    Some(v.checked_add(to - 1)? & !(to - 1))
}

impl Geometry {
    /// Check every field of the geometry.
    pub fn validate(&self) -> Result<(), LayoutError> {
        let g = self;
        if !g.capacity.is_power_of_two() || g.capacity < MIN_CAPACITY || g.capacity > MAX_CAPACITY {
            return Err(LayoutError::Capacity(g.capacity));
        }
        if g.slot_size == 0 || g.slot_size > MAX_SLOT_SIZE {
            return Err(LayoutError::SlotSize(g.slot_size));
        }
        for (what, value) in [
            ("max_publishers", g.max_publishers),
            ("max_subscribers", g.max_subscribers),
        ] {
            if value == 0 || value > MAX_TABLE {
                return Err(LayoutError::Table { what, value });
            }
        }
        let t = &g.type_info;
        let bad = |why| LayoutError::Type {
            name: t.name.clone(),
            size: t.size,
            align: t.align,
            why,
        };
        if !t.align.is_power_of_two() || t.align > MAX_TYPE_ALIGN {
            return Err(bad("alignment must be a power of two no larger than 64"));
        }
        if t.size > g.slot_size {
            return Err(bad("the type is larger than the slot size"));
        }
        if !t.size.is_multiple_of(t.align) {
            return Err(bad("the size is not a multiple of the alignment"));
        }
        if t.name.is_empty() || t.name.len() > TYPE_NAME_MAX || !t.name.bytes().all(is_name_byte) {
            return Err(bad("the type name must be 1 to 128 printable ASCII bytes"));
        }
        Ok(())
    }
}

/// How an existing topic's [`Geometry`] differs from one asked for; see [`Geometry::mismatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// The payload types differ (name, size or alignment).
    Type {
        /// The topic's type.
        existing: TypeInfo,
        /// The type asked for.
        requested: TypeInfo,
    },
    /// The types agree; these fields differ: `(field, existing, requested)`.
    Shape(Vec<(&'static str, String, String)>),
}

impl Geometry {
    /// Compare this geometry (an existing topic's) with one asked for: `None` when they are
    /// equal. A type difference wins over a shape difference, since it is the likelier root
    /// cause.
    pub fn mismatch(&self, requested: &Geometry) -> Option<Mismatch> {
        if self.type_info != requested.type_info {
            return Some(Mismatch::Type {
                existing: self.type_info.clone(),
                requested: requested.type_info.clone(),
            });
        }
        let mut fields = Vec::new();
        let mut diff = |name: &'static str, a: String, b: String| {
            if a != b {
                fields.push((name, a, b));
            }
        };
        diff(
            "capacity",
            self.capacity.to_string(),
            requested.capacity.to_string(),
        );
        diff(
            "slot_size",
            self.slot_size.to_string(),
            requested.slot_size.to_string(),
        );
        diff("mode", self.mode.to_string(), requested.mode.to_string());
        diff(
            "max_publishers",
            self.max_publishers.to_string(),
            requested.max_publishers.to_string(),
        );
        diff(
            "max_subscribers",
            self.max_subscribers.to_string(),
            requested.max_subscribers.to_string(),
        );
        (!fields.is_empty()).then_some(Mismatch::Shape(fields))
    }

    /// Bytes of message storage the ring needs (`capacity * slot_size`), without headers.
    pub fn ring_bytes(&self) -> u64 {
        u64::from(self.capacity) * u64::from(self.slot_size)
    }
}

fn is_name_byte(b: u8) -> bool {
    (0x20..0x7f).contains(&b)
}

impl Layout {
    /// Compute the layout of a segment for `geometry`. This is the only place offsets are made.
    pub fn compute(geometry: &Geometry) -> Result<Layout, LayoutError> {
        geometry.validate()?;
        let g = geometry;
        let payload_offset = SLOT_HEADER_LEN.max(u64::from(g.type_info.align));
        let slot_stride = round_up(payload_offset + u64::from(g.slot_size), SLOT_ALIGN)
            .ok_or(LayoutError::TooLarge)?;
        let publishers_offset = CONTROL_OFFSET + CONTROL_LEN;
        let subscribers_offset = publishers_offset + u64::from(g.max_publishers) * ENTRY_LEN;
        let wakers_offset = subscribers_offset + u64::from(g.max_subscribers) * ENTRY_LEN;
        let tables_end = wakers_offset + WAKE_SLOTS as u64 * WAKE_ENTRY_LEN;
        let slots_offset = round_up(tables_end, SEGMENT_PAGE).ok_or(LayoutError::TooLarge)?;
        let ring_len = slot_stride
            .checked_mul(u64::from(g.capacity))
            .ok_or(LayoutError::TooLarge)?;
        let total_len = slots_offset
            .checked_add(ring_len)
            .and_then(|end| round_up(end, SEGMENT_PAGE))
            .ok_or(LayoutError::TooLarge)?;
        if total_len > MAX_SEGMENT_LEN {
            return Err(LayoutError::TooLarge);
        }
        Ok(Layout {
            geometry: geometry.clone(),
            payload_offset,
            slot_stride,
            publishers_offset,
            subscribers_offset,
            wakers_offset,
            slots_offset,
            total_len,
        })
    }

    /// The header that describes this layout.
    pub fn header(&self) -> SegmentHeader {
        let g = &self.geometry;
        let mut type_name = [0u8; TYPE_NAME_MAX];
        let name = g.type_info.name.as_bytes();
        // `Geometry::validate` bounded the name to TYPE_NAME_MAX bytes.
        let n = name.len().min(TYPE_NAME_MAX);
        type_name[..n].copy_from_slice(&name[..n]);
        SegmentHeader {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            header_len: std::mem::size_of::<SegmentHeader>() as u32,
            mode: g.mode as u32,
            capacity: g.capacity,
            slot_size: g.slot_size,
            payload_offset: self.payload_offset as u32,
            slot_stride: self.slot_stride,
            max_publishers: g.max_publishers,
            max_subscribers: g.max_subscribers,
            type_size: g.type_info.size,
            type_align: g.type_info.align,
            control_offset: CONTROL_OFFSET,
            publishers_offset: self.publishers_offset,
            subscribers_offset: self.subscribers_offset,
            slots_offset: self.slots_offset,
            total_len: self.total_len,
            type_name_len: n as u32,
            reserved0: 0,
            type_name,
            wakers_offset: self.wakers_offset,
            reserved1: [0; 16],
        }
    }

    /// Offset of slot `index` (which must be below the capacity).
    #[inline]
    pub fn slot_offset(&self, index: usize) -> u64 {
        self.slots_offset + index as u64 * self.slot_stride
    }

    /// Offset of publisher entry `index`.
    #[inline]
    pub fn publisher_offset(&self, index: usize) -> u64 {
        self.publishers_offset + index as u64 * ENTRY_LEN
    }

    /// Offset of subscriber entry `index`.
    #[inline]
    pub fn subscriber_offset(&self, index: usize) -> u64 {
        self.subscribers_offset + index as u64 * ENTRY_LEN
    }

    /// Offset of wake slot `index`.
    #[inline]
    pub fn waker_offset(&self, index: usize) -> u64 {
        self.wakers_offset + index as u64 * WAKE_ENTRY_LEN
    }
}

impl SegmentHeader {
    /// Copy the header out of the first bytes of a mapping. The copy is what gets validated, so
    /// a concurrent writer cannot change it between the check and the use.
    pub fn read_from(bytes: &[u8]) -> Result<SegmentHeader, SegmentError> {
        SegmentHeader::read_from_prefix(bytes)
            .map(|(h, _)| h)
            .map_err(|_| SegmentError::Truncated(bytes.len() as u64))
    }

    /// Validate every field against the layout its geometry implies and against the mapped
    /// length; return that layout.
    pub fn validate(&self, mapped_len: u64) -> Result<Layout, SegmentError> {
        if self.magic != MAGIC {
            return Err(SegmentError::BadMagic);
        }
        if self.layout_version != LAYOUT_VERSION {
            return Err(SegmentError::Version {
                found: self.layout_version,
            });
        }
        let expect = |field, found: u64, expected: u64| {
            if found == expected {
                Ok(())
            } else {
                Err(SegmentError::Inconsistent {
                    field,
                    found,
                    expected,
                })
            }
        };
        expect(
            "header_len",
            u64::from(self.header_len),
            std::mem::size_of::<SegmentHeader>() as u64,
        )?;
        let mode = Mode::from_u32(self.mode).ok_or(SegmentError::BadMode(self.mode))?;
        let name_len = self.type_name_len as usize;
        let name = self
            .type_name
            .get(..name_len)
            .filter(|n| !n.is_empty() && n.iter().copied().all(is_name_byte))
            .ok_or(SegmentError::BadTypeName)?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| SegmentError::BadTypeName)?;
        let geometry = Geometry {
            capacity: self.capacity,
            slot_size: self.slot_size,
            mode,
            max_publishers: self.max_publishers,
            max_subscribers: self.max_subscribers,
            type_info: TypeInfo {
                name,
                size: self.type_size,
                align: self.type_align,
            },
        };
        let layout = Layout::compute(&geometry)?;
        expect(
            "payload_offset",
            u64::from(self.payload_offset),
            layout.payload_offset,
        )?;
        expect("slot_stride", self.slot_stride, layout.slot_stride)?;
        expect("control_offset", self.control_offset, CONTROL_OFFSET)?;
        expect(
            "publishers_offset",
            self.publishers_offset,
            layout.publishers_offset,
        )?;
        expect(
            "subscribers_offset",
            self.subscribers_offset,
            layout.subscribers_offset,
        )?;
        expect("wakers_offset", self.wakers_offset, layout.wakers_offset)?;
        expect("slots_offset", self.slots_offset, layout.slots_offset)?;
        expect("total_len", self.total_len, layout.total_len)?;
        if mapped_len < layout.total_len {
            return Err(SegmentError::ShortMapping {
                expected: layout.total_len,
                mapped: mapped_len,
            });
        }
        Ok(layout)
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
