//! The type tag: a topic's geometry and payload type as one short string that is safe inside
//! a Zenoh key expression, so the same text travels as the encoding schema of every sample
//! and as one chunk of the exporter's liveliness token.
//!
//! ```text
//! shmbus1,<mode>,<capacity>,<slot_size>,<max_publishers>,<max_subscribers>,<size>,<align>,<type name>
//! shmbus1,lossless,1024,32,8,8,32,8,bus_tests::TestMsg
//! ```
//!
//! The type name keeps ASCII letters, digits, `_`, `.`, `:` and `-`; every other byte is
//! written `%XX` (so `[u8; 4]` becomes `%5Bu8%3B%204%5D`). A tag read from the network is
//! untrusted: [`TypeTag::parse`] checks the field count, every number, the escapes, the name's
//! length, and then the geometry with bus-core's one validator.

use bus_core::layout::{Geometry, Mode, TypeInfo, TYPE_NAME_MAX};

/// The first field: the tag format's version.
const VERSION: &str = "shmbus1";

/// The longest tag accepted from the network (a 128-byte name escaped is at most 384 bytes).
pub const MAX_TAG_LEN: usize = 512;

/// A validated geometry and its tag text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeTag {
    geometry: Geometry,
    text: String,
}

/// Why a tag was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed shmbus type tag {shown:?}: {why}")]
pub struct TagError {
    /// The tag, cut to 80 characters for the log.
    pub shown: String,
    /// What is wrong.
    pub why: String,
}

fn keeps(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
}

fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if keeps(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad escape at byte {i} of the type name"))?;
            out.push(hex);
            i += 3;
        } else if keeps(b) {
            out.push(b);
            i += 1;
        } else {
            return Err(format!(
                "byte {b:#04x} at {i} of the type name must be escaped"
            ));
        }
    }
    String::from_utf8(out).map_err(|_| "the type name is not UTF-8".to_string())
}

fn mode_text(mode: Mode) -> &'static str {
    match mode {
        Mode::Lossless => "lossless",
        Mode::Lossy => "lossy",
    }
}

impl TypeTag {
    /// The tag of a local topic's geometry.
    pub fn of(geometry: &Geometry) -> TypeTag {
        let g = geometry;
        let text = format!(
            "{VERSION},{},{},{},{},{},{},{},{}",
            mode_text(g.mode),
            g.capacity,
            g.slot_size,
            g.max_publishers,
            g.max_subscribers,
            g.type_info.size,
            g.type_info.align,
            escape(&g.type_info.name),
        );
        TypeTag {
            geometry: g.clone(),
            text,
        }
    }

    /// Parse and validate a tag that came from the network.
    pub fn parse(text: &str) -> Result<TypeTag, TagError> {
        let fail = |why: String| TagError {
            shown: text.chars().take(80).collect(),
            why,
        };
        if text.len() > MAX_TAG_LEN {
            return Err(fail(format!(
                "{} bytes long, at most {MAX_TAG_LEN} are accepted",
                text.len()
            )));
        }
        let fields: Vec<&str> = text.split(',').collect();
        let [version, mode, capacity, slot_size, pubs, subs, size, align, name] = fields[..] else {
            return Err(fail(format!("{} fields, 9 expected", fields.len())));
        };
        if version != VERSION {
            return Err(fail(format!(
                "format {version:?}, this bridge reads {VERSION:?}"
            )));
        }
        let mode = match mode {
            "lossless" => Mode::Lossless,
            "lossy" => Mode::Lossy,
            other => return Err(fail(format!("unknown mode {other:?}"))),
        };
        let number = |what: &str, v: &str| {
            // Digits only: no sign, no spaces, no leading '+' that u32::from_str would take.
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(fail(format!("{what} {v:?} is not a number")));
            }
            v.parse::<u32>()
                .map_err(|_| fail(format!("{what} {v:?} is out of range")))
        };
        let name = unescape(name).map_err(fail)?;
        if name.is_empty() || name.len() > TYPE_NAME_MAX {
            return Err(fail(format!(
                "type name of {} bytes; 1 to {TYPE_NAME_MAX} are allowed",
                name.len()
            )));
        }
        let geometry = Geometry {
            capacity: number("capacity", capacity)?,
            slot_size: number("slot size", slot_size)?,
            mode,
            max_publishers: number("max_publishers", pubs)?,
            max_subscribers: number("max_subscribers", subs)?,
            type_info: TypeInfo {
                name,
                size: number("type size", size)?,
                align: number("type alignment", align)?,
            },
        };
        geometry.validate().map_err(|e| fail(e.to_string()))?;
        // Keep the canonical text, so two equal geometries always have equal tags.
        Ok(TypeTag::of(&geometry))
    }

    /// The geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The tag text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for TypeTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = &self.geometry;
        write!(
            f,
            "{} {}, {} slots of {} bytes",
            g.mode, g.type_info, g.capacity, g.slot_size
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn geometry(name: &str, size: u32, align: u32, mode: Mode) -> Geometry {
        Geometry {
            capacity: 1024,
            slot_size: 64,
            mode,
            max_publishers: 8,
            max_subscribers: 16,
            type_info: TypeInfo {
                name: name.into(),
                size,
                align,
            },
        }
    }

    #[test]
    fn tag_round_trips_typed_and_byte_topics() {
        for g in [
            geometry("bus_tests::TestMsg", 32, 8, Mode::Lossless),
            geometry("[u8; 4]", 4, 1, Mode::Lossy),
            Geometry {
                type_info: TypeInfo::bytes(),
                ..geometry("x", 0, 1, Mode::Lossless)
            },
            geometry("crate::Odom<f64, [u8; 3]>", 16, 8, Mode::Lossless),
        ] {
            let tag = TypeTag::of(&g);
            let back = TypeTag::parse(tag.as_str()).unwrap();
            assert_eq!(back.geometry(), &g);
            assert_eq!(back.as_str(), tag.as_str());
        }
    }

    #[test]
    fn tag_is_a_valid_key_chunk() {
        let g = geometry("a::B<[u8; 3], *const u8> #?$/", 16, 8, Mode::Lossless);
        let tag = TypeTag::of(&g);
        assert!(!tag.as_str().contains(['/', '*', '$', '#', '?', ' ']));
        let key = format!("@shmbus/x/{}", tag.as_str());
        assert!(zenoh::key_expr::KeyExpr::try_from(key.as_str()).is_ok());
        assert_eq!(
            tag.as_str(),
            "shmbus1,lossless,1024,64,8,16,16,8,a::B%3C%5Bu8%3B%203%5D%2C%20%2Aconst%20u8%3E%20%23%3F%24%2F"
        );
    }

    #[test]
    fn tag_parse_refuses_malformed_tags() {
        let good = TypeTag::of(&geometry("T", 8, 8, Mode::Lossless));
        let good = good.as_str();
        for (bad, why) in [
            ("", "fields"),
            ("shmbus1,lossless", "fields"),
            (&good.replace("shmbus1", "shmbus2")[..], "format"),
            (&good.replace("lossless", "sometimes")[..], "mode"),
            (&good.replace(",1024,", ",-1,")[..], "not a number"),
            (&good.replace(",1024,", ",+1024,")[..], "not a number"),
            (&good.replace(",1024,", ",99999999999,")[..], "out of range"),
            (&good.replace(",1024,", ",1000,")[..], "power of two"),
            (&good.replace(",T", ",%ZZ")[..], "escape"),
            (&good.replace(",T", ",%FF")[..], "UTF-8"),
            (&good.replace(",T", ",a b")[..], "escaped"),
            (&good.replace(",T", ",")[..], "type name of 0"),
            (
                &good.replace(",8,8,T", ",128,8,T")[..],
                "larger than the slot",
            ),
        ] {
            let e = TypeTag::parse(bad).unwrap_err();
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
        }
        let long = format!("{good}{}", "x".repeat(MAX_TAG_LEN));
        assert!(TypeTag::parse(&long).unwrap_err().why.contains("long"));
    }

    proptest! {
        #[test]
        fn tag_parse_never_panics(text in any::<String>()) {
            let _ = TypeTag::parse(&text);
        }

        #[test]
        fn tag_parse_never_panics_near_valid(
            cap in any::<u32>(), slot in any::<u32>(), size in any::<u32>(),
            align in any::<u32>(), name in "[ -~]{0,140}")
        {
            let text = format!("shmbus1,lossy,{cap},{slot},4,4,{size},{align},{}", escape(&name));
            if let Ok(tag) = TypeTag::parse(&text) {
                prop_assert!(tag.geometry().validate().is_ok());
            }
        }
    }
}
