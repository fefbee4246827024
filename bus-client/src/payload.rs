//! What a topic carries: a fixed-size zerocopy type `T`, or variable-length bytes `[u8]`.

use bus_core::layout::TypeInfo;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A message type. Implemented for every `T: FromBytes + IntoBytes + KnownLayout + Immutable`
/// (fixed size, checked against the topic's recorded type name, size and alignment) and for
/// `[u8]` (a byte topic: any length up to the slot size).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bus_client::{Bus, Payload};
/// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
///
/// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
/// #[repr(C)]
/// struct Point { x: f32, y: f32 }
///
/// assert_eq!(Point::type_info().size, 8);      // recorded in the topic's header
/// assert_eq!(<[u8]>::type_info().size, 0);     // bytes: any length up to the slot size
/// let bus = Bus::embedded()?;
/// let mut publisher = bus.publisher::<Point>("doc/payload").create()?;
/// let mut subscriber = bus.subscriber::<Point>("doc/payload").open()?;
/// publisher.publish(&Point { x: 1.0, y: 2.0 })?;
/// assert_eq!(subscriber.recv()?.y, 2.0);
/// # Ok(()) }
/// ```
pub trait Payload: FromBytes + IntoBytes + KnownLayout + Immutable {
    /// The type recorded in the topic header: name, size (0 for bytes), alignment.
    fn type_info() -> TypeInfo;
    /// The slot size a topic gets when none is given.
    fn default_slot_size() -> u32;
    /// View a message's bytes as `Self`; `None` if the length does not fit.
    fn from_message(bytes: &[u8]) -> Option<&Self>;
    /// View a slot's bytes as `Self` for writing; `None` if the length does not fit.
    fn from_slot_mut(bytes: &mut [u8]) -> Option<&mut Self>;
    /// Whether a message of `len` bytes is a valid `Self`.
    fn fits(len: usize) -> bool;
    /// An owned copy of a message (what a stream yields): the value itself for a sized type,
    /// a `Vec<u8>` for bytes.
    type Owned;
    /// Copy a message out of its slot (its length fits `Self`).
    fn to_owned_message(bytes: &[u8]) -> Self::Owned;
}

impl<T: FromBytes + IntoBytes + KnownLayout + Immutable> Payload for T {
    fn type_info() -> TypeInfo {
        TypeInfo {
            name: short_type_name(std::any::type_name::<T>()),
            size: std::mem::size_of::<T>() as u32,
            align: std::mem::align_of::<T>() as u32,
        }
    }
    fn default_slot_size() -> u32 {
        (std::mem::size_of::<T>() as u32).max(1)
    }
    fn from_message(bytes: &[u8]) -> Option<&T> {
        T::ref_from_bytes(bytes).ok()
    }
    fn from_slot_mut(bytes: &mut [u8]) -> Option<&mut T> {
        T::mut_from_bytes(bytes).ok()
    }
    fn fits(len: usize) -> bool {
        len == std::mem::size_of::<T>()
    }
    type Owned = T;
    fn to_owned_message(bytes: &[u8]) -> T {
        // The length was checked against `T` (`fits`) before the message was taken.
        T::read_from_bytes(bytes).unwrap_or_else(|_| T::new_zeroed())
    }
}

impl Payload for [u8] {
    fn type_info() -> TypeInfo {
        TypeInfo::bytes()
    }
    fn default_slot_size() -> u32 {
        DEFAULT_BYTES_SLOT
    }
    fn from_message(bytes: &[u8]) -> Option<&[u8]> {
        Some(bytes)
    }
    fn from_slot_mut(bytes: &mut [u8]) -> Option<&mut [u8]> {
        Some(bytes)
    }
    fn fits(_len: usize) -> bool {
        true
    }
    type Owned = Vec<u8>;
    fn to_owned_message(bytes: &[u8]) -> Vec<u8> {
        bytes.to_vec()
    }
}

/// The slot size of a byte topic opened without one.
pub(crate) const DEFAULT_BYTES_SLOT: u32 = 4096;

/// `bytes` as a `T`. The bytes come from a slot of a topic whose validated layout sizes and
/// aligns the payload for `T`, and whose message length was checked against `T` (`fits`)
/// before the sample or loan was made; a mismatch is a broken invariant of this crate.
pub(crate) fn view<T: Payload + ?Sized>(bytes: &[u8]) -> &T {
    match T::from_message(bytes) {
        Some(v) => v,
        None => unreachable!("a message is sized and aligned for its type by the topic's layout"),
    }
}

/// [`view`] for writing.
pub(crate) fn view_mut<T: Payload + ?Sized>(bytes: &mut [u8]) -> &mut T {
    match T::from_slot_mut(bytes) {
        Some(v) => v,
        None => unreachable!("a slot is sized and aligned for its type by the topic's layout"),
    }
}

/// A type's name as written in code, without module paths: `my_app::msgs::Pose<other::Id>`
/// becomes `Pose<Id>`. Two programs that each define the same `Pose` agree on it; size and
/// alignment are checked beside it. Printable ASCII, at most 128 bytes.
pub(crate) fn short_type_name(full: &str) -> String {
    let mut out = String::new();
    let mut ident = String::new();
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            ident.push(c);
        } else if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            ident.clear(); // a module path segment: drop it
        } else {
            out.push_str(&ident);
            ident.clear();
            out.push(c);
        }
    }
    out.push_str(&ident);
    out.chars()
        .filter(|c| (' '..='~').contains(c))
        .take(128)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::short_type_name;

    #[test]
    fn type_names_drop_module_paths_everywhere() {
        assert_eq!(short_type_name("app::msgs::Pose"), "Pose");
        assert_eq!(
            short_type_name("a::Wrap<b::c::Inner, u64>"),
            "Wrap<Inner, u64>"
        );
        assert_eq!(short_type_name("[u8; 16]"), "[u8; 16]");
        assert_eq!(short_type_name("u64"), "u64");
    }
}

/// A heap buffer aligned to 64 bytes (the largest payload alignment), for lossy copies.
#[derive(Debug)]
pub(crate) struct AlignedBuf {
    blocks: Vec<Block>,
    len: usize,
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(64))]
struct Block([u8; 64]);

impl AlignedBuf {
    pub(crate) fn new(len: usize) -> AlignedBuf {
        AlignedBuf {
            blocks: vec![Block([0; 64]); len.div_ceil(64)],
            len,
        }
    }
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.blocks.as_bytes()[..self.len]
    }
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.blocks.as_mut_bytes()[..len]
    }
}
