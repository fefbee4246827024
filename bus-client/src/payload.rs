//! What a topic carries: a fixed-size zerocopy type `T`, or variable-length bytes `[u8]`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A message type. Implemented for every `T: FromBytes + IntoBytes + KnownLayout + Immutable`
/// (fixed size, checked against the topic's recorded type name, size and alignment) and for
/// `[u8]` (a byte topic: any length up to the slot size).
pub trait Payload: FromBytes + IntoBytes + KnownLayout + Immutable {
    /// The name recorded in the topic header.
    fn type_name() -> String;
    /// The size recorded in the topic header (0 for bytes).
    fn type_size() -> u32;
    /// The alignment recorded in the topic header.
    fn type_align() -> u32;
    /// The slot size a topic gets when none is given.
    fn default_slot_size() -> u32;
    /// View a slot's message bytes as `Self`; `None` if the length does not fit.
    fn from_message(bytes: &[u8]) -> Option<&Self>;
    /// Whether a message of `len` bytes is a valid `Self`.
    fn fits(len: usize) -> bool;
    /// View a slot's bytes as `Self` for writing.
    fn from_slot_mut(bytes: &mut [u8]) -> Option<&mut Self>;
    /// The message length to commit for a freshly loaned value of `Self`.
    fn loan_len(slot_size: usize) -> usize;
    /// A heap copy of `self`.
    fn to_box(&self) -> Box<Self>;
}

impl<T: FromBytes + IntoBytes + KnownLayout + Immutable> Payload for T {
    fn type_name() -> String {
        short_type_name(std::any::type_name::<T>())
    }
    fn type_size() -> u32 {
        std::mem::size_of::<T>() as u32
    }
    fn type_align() -> u32 {
        std::mem::align_of::<T>() as u32
    }
    fn default_slot_size() -> u32 {
        (std::mem::size_of::<T>() as u32).max(1)
    }
    fn from_message(bytes: &[u8]) -> Option<&T> {
        if bytes.len() != std::mem::size_of::<T>() {
            return None;
        }
        T::ref_from_bytes(bytes).ok()
    }
    fn fits(len: usize) -> bool {
        len == std::mem::size_of::<T>()
    }
    fn from_slot_mut(bytes: &mut [u8]) -> Option<&mut T> {
        T::mut_from_bytes(bytes.get_mut(..std::mem::size_of::<T>())?).ok()
    }
    fn loan_len(_slot_size: usize) -> usize {
        std::mem::size_of::<T>()
    }
    fn to_box(&self) -> Box<T> {
        // Built on the heap: a multi-megabyte `T` must never pass through the stack.
        let mut b = match T::new_box_zeroed() {
            Ok(b) => b,
            Err(_) => std::alloc::handle_alloc_error(std::alloc::Layout::new::<T>()),
        };
        b.as_mut_bytes().copy_from_slice(self.as_bytes());
        b
    }
}

impl Payload for [u8] {
    fn type_name() -> String {
        "bytes".to_string()
    }
    fn type_size() -> u32 {
        0
    }
    fn type_align() -> u32 {
        1
    }
    fn default_slot_size() -> u32 {
        4096
    }
    fn from_message(bytes: &[u8]) -> Option<&[u8]> {
        Some(bytes)
    }
    fn fits(_len: usize) -> bool {
        true
    }
    fn from_slot_mut(bytes: &mut [u8]) -> Option<&mut [u8]> {
        Some(bytes)
    }
    fn loan_len(slot_size: usize) -> usize {
        slot_size
    }
    fn to_box(&self) -> Box<[u8]> {
        self.into()
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
pub(crate) struct AlignedBuf {
    blocks: Vec<Block>,
    len: usize,
}

#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
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
