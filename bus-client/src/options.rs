//! Topic options: every QoS default in one place.

use bus_core::layout::{Geometry, Mode, TypeInfo};

use crate::payload::DEFAULT_BYTES_SLOT;
use crate::Payload;

/// The shape of a topic, for the ports that create it (`create()`, `open_or_create()`).
/// `create()` requires an existing topic to have exactly these; `open_or_create()` does only
/// if some option was set explicitly, and otherwise takes the existing topic's own. `open()`
/// ignores them.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, Mode, TopicOptions};
/// let bus = Bus::embedded()?;
/// let mut options = TopicOptions::default();
/// options.capacity = Some(32);
/// options.mode = Mode::Lossy;
/// let publisher = bus.publisher::<u64>("doc/options").options(options.clone()).create()?;
/// assert_eq!((publisher.spec().capacity, publisher.spec().mode), (32, Mode::Lossy));
/// // A raw port states the same options as a geometry for a type known at run time.
/// let spec = options.geometry_for(bus_client::TypeInfo::bytes());
/// assert_eq!((spec.capacity, spec.slot_size), (32, 4096));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicOptions {
    /// Slots in the ring, a power of two. Default: as many as fit in 256 KiB of slots, between
    /// 8 and 1024 (a byte topic's 4 KiB slots: 64; a small typed message: 1024). See
    /// `docs/scale.md` for sizing.
    pub capacity: Option<u32>,
    /// Largest message in bytes. Default: `size_of::<T>()`, or 4096 for byte topics.
    pub slot_size: Option<u32>,
    /// Delivery mode. Default: lossless.
    pub mode: Mode,
    /// Publishers the topic can hold. Default: 8.
    pub max_publishers: u32,
    /// Subscribers the topic can hold. Default: 256, the most a topic can have (each entry
    /// costs 128 bytes of the topic's memory; a publisher looks only at the entries ever
    /// used).
    pub max_subscribers: u32,
    /// Whether any geometry option was set explicitly (then it must match an existing topic).
    pub(crate) explicit: bool,
}

impl Default for TopicOptions {
    fn default() -> Self {
        TopicOptions {
            capacity: None,
            slot_size: None,
            mode: Mode::Lossless,
            max_publishers: 8,
            max_subscribers: bus_core::layout::MAX_TABLE,
            explicit: false,
        }
    }
}

/// Budget of slot bytes for a default-sized ring: a byte topic (4 KiB slots) gets 64 slots and
/// commits about 300 KiB, where it committed 4 MiB with 1024 slots. A ring only has to absorb
/// the bursts and scheduling hiccups of its slowest subscriber; a topic that needs more says so
/// with `capacity`.
const DEFAULT_RING_BYTES: u64 = 256 << 10;
/// The fewest slots a default-sized ring gets, however large its slots.
const DEFAULT_MIN_CAPACITY: u64 = 8;

impl TopicOptions {
    /// The geometry these options give a topic carrying `T`.
    pub(crate) fn geometry<T: Payload + ?Sized>(&self) -> Geometry {
        self.geometry_with(T::type_info(), T::default_slot_size())
    }

    /// The geometry these options give a topic carrying a type known only at run time (raw
    /// ports, language bindings): the slot size defaults to the type's size, or 4096 bytes
    /// for a byte topic ([`TypeInfo::bytes`]).
    pub fn geometry_for(&self, type_info: TypeInfo) -> Geometry {
        let default_slot = if type_info.is_bytes() {
            DEFAULT_BYTES_SLOT
        } else {
            type_info.size.max(1)
        };
        self.geometry_with(type_info, default_slot)
    }

    fn geometry_with(&self, type_info: TypeInfo, default_slot: u32) -> Geometry {
        let slot_size = self.slot_size.unwrap_or(default_slot);
        let capacity = self.capacity.unwrap_or_else(|| {
            let fit = (DEFAULT_RING_BYTES / u64::from(slot_size.max(1)))
                .clamp(DEFAULT_MIN_CAPACITY, 1024);
            1 << (63 - fit.leading_zeros())
        });
        Geometry {
            capacity,
            slot_size,
            mode: self.mode,
            max_publishers: self.max_publishers,
            max_subscribers: self.max_subscribers,
            type_info,
        }
    }
}

/// Builder methods shared by publisher and subscriber builders.
macro_rules! topic_option_methods {
    () => {
        /// Slots in the ring (a power of two).
        pub fn capacity(mut self, capacity: u32) -> Self {
            self.options.capacity = Some(capacity);
            self.options.explicit = true;
            self
        }
        /// Largest message in bytes (byte topics; typed topics default to the type's size).
        pub fn slot_size(mut self, bytes: u32) -> Self {
            self.options.slot_size = Some(bytes);
            self.options.explicit = true;
            self
        }
        /// Delivery mode.
        pub fn mode(mut self, mode: $crate::Mode) -> Self {
            self.options.mode = mode;
            self.options.explicit = true;
            self
        }
        /// Lossy delivery: publishers never wait, slow subscribers get `Lagged`.
        pub fn lossy(self) -> Self {
            self.mode($crate::Mode::Lossy)
        }
        /// Publishers the topic can hold.
        pub fn max_publishers(mut self, n: u32) -> Self {
            self.options.max_publishers = n;
            self.options.explicit = true;
            self
        }
        /// Subscribers the topic can hold.
        pub fn max_subscribers(mut self, n: u32) -> Self {
            self.options.max_subscribers = n;
            self.options.explicit = true;
            self
        }
        /// All options at once.
        pub fn options(mut self, options: $crate::TopicOptions) -> Self {
            self.options = options;
            self.options.explicit = true;
            self
        }
        /// How to wait (for space when publishing, for messages when receiving).
        pub fn wait(mut self, strategy: $crate::WaitStrategy) -> Self {
            self.wait = strategy;
            self
        }
        /// Busy-poll: the lowest latency, a whole core while waiting.
        pub fn busy_poll(self) -> Self {
            self.wait($crate::WaitStrategy::BusyPoll)
        }
        /// Block on the futex at once: the lowest CPU.
        pub fn blocking(self) -> Self {
            self.wait($crate::WaitStrategy::Block)
        }
    };
}
pub(crate) use topic_option_methods;
