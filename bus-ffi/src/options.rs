//! What C passes to open a port: the verb, the payload type, the topic options, the wait
//! strategy. Every field is checked; an unknown constant is `SHMBUS_ERR_INVALID_ARGUMENT`.

use std::ffi::c_char;

use bus_client::{Geometry, Mode, TopicOptions, TypeInfo, WaitStrategy};

use crate::bus::utf8;
use crate::status::{guard, Error, ShmbusStatus};

/// Verb: attach to an existing topic; fails with `SHMBUS_ERR_NOT_FOUND` if there is none.
pub const SHMBUS_OPEN: u32 = 0;
/// Verb: create the topic with these options, or attach if it exists with exactly them.
pub const SHMBUS_CREATE: u32 = 1;
/// Verb: attach if the topic exists (its type must match), else create it.
pub const SHMBUS_OPEN_OR_CREATE: u32 = 2;

/// Mode: a publisher never overwrites what a subscriber has not released (the default).
pub const SHMBUS_LOSSLESS: u32 = 0;
/// Mode: a publisher never waits; a subscriber that falls behind gets `SHMBUS_ERR_LAGGED`.
pub const SHMBUS_LOSSY: u32 = 1;

/// Wait strategy: spin a little, yield, then sleep on the futex (the default).
pub const SHMBUS_WAIT_ADAPTIVE: u32 = 0;
/// Wait strategy: spin: the lowest latency, a whole core while waiting.
pub const SHMBUS_WAIT_BUSY_POLL: u32 = 1;
/// Wait strategy: sleep on the futex at once: the lowest CPU.
pub const SHMBUS_WAIT_BLOCK: u32 = 2;

/// A payload type, described at run time. A byte topic (variable-length messages up to the
/// slot size) is `{"bytes", 0, 1}`, or simply a NULL `shmbus_type` pointer.
#[repr(C)]
pub struct ShmbusType {
    /// The type's name, NUL-terminated UTF-8; the topic records it and every port must give
    /// the same one (Rust ports use the Rust type's name, e.g. `"Odometry"`).
    pub name: *const c_char,
    /// `sizeof` the type; 0 for a byte topic.
    pub size: u32,
    /// `alignof` the type; 1 for a byte topic.
    pub align: u32,
}

/// The shape of a topic, for `SHMBUS_CREATE` and `SHMBUS_OPEN_OR_CREATE` (ignored by
/// `SHMBUS_OPEN`). Fill it with `shmbus_topic_options_init`, then set what you need; 0 means
/// the default. `size` lets later versions append fields without breaking callers.
#[repr(C)]
pub struct ShmbusTopicOptions {
    /// `sizeof(shmbus_topic_options)`, set by `shmbus_topic_options_init`.
    pub size: u32,
    /// Slots in the ring, a power of two; 0: as many as fit in 256 KiB, between 8 and 1024.
    pub capacity: u32,
    /// Largest message in bytes; 0: the type's size, or 4096 for a byte topic.
    pub slot_size: u32,
    /// `SHMBUS_LOSSLESS` (0) or `SHMBUS_LOSSY`.
    pub mode: u32,
    /// Publishers the topic can hold; 0: 8.
    pub max_publishers: u32,
    /// Subscribers the topic can hold; 0: 256 (the most a topic can have).
    pub max_subscribers: u32,
}

/// Fill `options` with the defaults (and its `size`). NULL is `SHMBUS_ERR_NULL`.
///
/// # Safety
/// `options` is NULL or valid for writing a `shmbus_topic_options`.
#[no_mangle]
pub unsafe extern "C" fn shmbus_topic_options_init(
    options: *mut ShmbusTopicOptions,
) -> ShmbusStatus {
    guard(|| {
        let defaults = ShmbusTopicOptions {
            size: std::mem::size_of::<ShmbusTopicOptions>() as u32,
            capacity: 0,
            slot_size: 0,
            mode: SHMBUS_LOSSLESS,
            max_publishers: 0,
            max_subscribers: 0,
        };
        // SAFETY: forwarded contract.
        unsafe { crate::handle::write_out(options, defaults, "options") }
    })
}

/// How a port is opened.
pub(crate) enum Verb {
    Open,
    Create,
    OpenOrCreate,
}

pub(crate) fn verb(verb: u32) -> Result<Verb, Error> {
    match verb {
        SHMBUS_OPEN => Ok(Verb::Open),
        SHMBUS_CREATE => Ok(Verb::Create),
        SHMBUS_OPEN_OR_CREATE => Ok(Verb::OpenOrCreate),
        v => Err(Error::invalid(format!(
            "verb {v} is none of SHMBUS_OPEN, SHMBUS_CREATE, SHMBUS_OPEN_OR_CREATE"
        ))),
    }
}

/// The payload type; `None` for a NULL pointer.
///
/// # Safety
/// `t` is NULL or points to a `shmbus_type` whose `name` is NULL or NUL-terminated.
pub(crate) unsafe fn type_info(t: *const ShmbusType) -> Result<Option<TypeInfo>, Error> {
    if t.is_null() {
        return Ok(None);
    }
    if !t.is_aligned() {
        return Err(Error::invalid("type is misaligned"));
    }
    // SAFETY: non-NULL and aligned; readable by the caller's contract.
    let t = unsafe { &*t };
    // SAFETY: forwarded contract.
    let name = unsafe { utf8(t.name, "type->name") }?;
    if t.align == 0 || !t.align.is_power_of_two() {
        return Err(Error::invalid(format!(
            "type->align {} is not a power of two",
            t.align
        )));
    }
    Ok(Some(TypeInfo {
        name: name.to_string(),
        size: t.size,
        align: t.align,
    }))
}

/// The topic geometry for `type_info` and the options (NULL: defaults).
///
/// # Safety
/// `o` is NULL or points to readable memory of at least `o->size` bytes.
pub(crate) unsafe fn geometry(
    o: *const ShmbusTopicOptions,
    type_info: TypeInfo,
) -> Result<Geometry, Error> {
    let mut options = TopicOptions::default();
    if !o.is_null() {
        if !o.is_aligned() {
            return Err(Error::invalid("options is misaligned"));
        }
        // SAFETY: non-NULL and aligned; the `size` field is readable by the contract.
        let size = unsafe { (*o).size } as usize;
        if size != std::mem::size_of::<ShmbusTopicOptions>() {
            return Err(Error::invalid(format!(
                "options->size is {size}, not sizeof(shmbus_topic_options) = {}: call \
                 shmbus_topic_options_init first",
                std::mem::size_of::<ShmbusTopicOptions>()
            )));
        }
        // SAFETY: the whole struct is readable: its size says so.
        let o = unsafe { &*o };
        options.capacity = (o.capacity != 0).then_some(o.capacity);
        options.slot_size = (o.slot_size != 0).then_some(o.slot_size);
        options.mode = match o.mode {
            SHMBUS_LOSSLESS => Mode::Lossless,
            SHMBUS_LOSSY => Mode::Lossy,
            m => return Err(Error::invalid(format!("options->mode {m} is unknown"))),
        };
        if o.max_publishers != 0 {
            options.max_publishers = o.max_publishers;
        }
        if o.max_subscribers != 0 {
            options.max_subscribers = o.max_subscribers;
        }
    }
    Ok(options.geometry_for(type_info))
}

pub(crate) fn wait_strategy(wait: u32) -> Result<WaitStrategy, Error> {
    match wait {
        SHMBUS_WAIT_ADAPTIVE => Ok(WaitStrategy::default()),
        SHMBUS_WAIT_BUSY_POLL => Ok(WaitStrategy::BusyPoll),
        SHMBUS_WAIT_BLOCK => Ok(WaitStrategy::Block),
        w => Err(Error::invalid(format!("wait strategy {w} is unknown"))),
    }
}
