//! Subscribing to a topic whatever its payload type, as raw bytes (for `echo` and `hz`).
//!
//! Byte topics are opened as `[u8]`. A typed topic (say `my_crate::Odom`) can only be opened
//! with a type whose recorded name, size and alignment match; [`Raw`] takes on the topic's
//! recorded type for the one subscriber this process opens, so that a monitoring tool can
//! read the message bytes of any topic. It only ever reads them as bytes.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use bus_client::{Bus, Payload, RecvError, Sample, StartAt, Subscriber, TopicSpec};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::error::CliError;

/// The message bytes of a typed topic.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Raw([u8]);

/// The type [`Raw`] stands for: (name, size, alignment).
static STANDS_FOR: Mutex<Option<(String, u32, u32)>> = Mutex::new(None);

fn stands_for() -> (String, u32, u32) {
    STANDS_FOR
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_else(|| ("bytes".to_string(), 0, 1))
}

impl Payload for Raw {
    fn type_name() -> String {
        stands_for().0
    }
    fn type_size() -> u32 {
        stands_for().1
    }
    fn type_align() -> u32 {
        stands_for().2
    }
    fn default_slot_size() -> u32 {
        stands_for().1.max(1)
    }
    fn from_message(bytes: &[u8]) -> Option<&Raw> {
        Raw::ref_from_bytes(bytes).ok()
    }
    fn fits(_len: usize) -> bool {
        true
    }
    fn from_slot_mut(bytes: &mut [u8]) -> Option<&mut Raw> {
        Raw::mut_from_bytes(bytes).ok()
    }
    fn loan_len(slot_size: usize) -> usize {
        match stands_for().1 {
            0 => slot_size,
            n => n as usize,
        }
    }
    fn to_box(&self) -> Box<Raw> {
        let mut b = match Raw::new_box_zeroed_with_elems(self.0.len()) {
            Ok(b) => b,
            Err(_) => std::alloc::handle_alloc_error(std::alloc::Layout::for_value(self)),
        };
        b.0.copy_from_slice(&self.0);
        b
    }
}

/// A subscriber on a byte topic or on a typed one (read as bytes).
pub enum AnySubscriber {
    Bytes(Subscriber<[u8]>),
    Typed(Subscriber<Raw>),
}

/// A received message, as bytes.
pub enum AnySample<'a> {
    Bytes(Sample<'a, [u8]>),
    Typed(Sample<'a, Raw>),
}

impl AnySample<'_> {
    pub fn sequence(&self) -> u64 {
        match self {
            AnySample::Bytes(s) => s.sequence(),
            AnySample::Typed(s) => s.sequence(),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            AnySample::Bytes(s) => s.bytes(),
            AnySample::Typed(s) => s.bytes(),
        }
    }
}

impl AnySubscriber {
    /// Subscribe to `topic` with its existing options; a missing topic is created as a byte
    /// topic with the defaults.
    pub fn open(
        bus: &Bus,
        socket: &Path,
        topic: &str,
        start: StartAt,
    ) -> Result<AnySubscriber, CliError> {
        let existing = bus
            .list()
            .map_err(|e| CliError::bus(e, socket))?
            .into_iter()
            .find(|t| t.name == topic);
        let sub = match existing {
            Some(info) if !info.spec.is_bytes() => {
                *STANDS_FOR.lock().unwrap_or_else(|p| p.into_inner()) = Some((
                    info.spec.type_name.clone(),
                    info.spec.type_size,
                    info.spec.type_align,
                ));
                bus.subscriber::<Raw>(topic)
                    .start_at(start)
                    .open()
                    .map(AnySubscriber::Typed)
            }
            _ => bus
                .subscriber::<[u8]>(topic)
                .start_at(start)
                .open()
                .map(AnySubscriber::Bytes),
        };
        sub.map_err(|e| CliError::bus(e, socket))
    }

    pub fn spec(&self) -> &TopicSpec {
        match self {
            AnySubscriber::Bytes(s) => s.spec(),
            AnySubscriber::Typed(s) => s.spec(),
        }
    }

    /// Receive the next message, waiting at most `timeout` (forever with `None`).
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<AnySample<'_>, RecvError> {
        match (self, timeout) {
            (AnySubscriber::Bytes(s), None) => s.recv().map(AnySample::Bytes),
            (AnySubscriber::Bytes(s), Some(t)) => s.recv_timeout(t).map(AnySample::Bytes),
            (AnySubscriber::Typed(s), None) => s.recv().map(AnySample::Typed),
            (AnySubscriber::Typed(s), Some(t)) => s.recv_timeout(t).map(AnySample::Typed),
        }
    }
}
