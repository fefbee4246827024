//! Topic names: the one validator, used by the daemon, the client and the tools.
//!
//! A topic name is hierarchical: parts separated by `/`, e.g. `robot/odom` or
//! `md/XNAS/AAPL`. Each part is made of ASCII letters, digits, `_`, `-` and
//! `.`; no part is empty, `.` or `..`; the whole name is at most
//! [`MAX_TOPIC_NAME`] bytes. These rules keep names safe to embed in file names
//! (no path traversal) and easy to type.

use std::fmt;

/// The longest topic name, in bytes.
pub const MAX_TOPIC_NAME: usize = 200;

/// Which naming rule a topic name breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    /// The name is empty.
    #[error("topic name is empty; use a name like `robot/odom`")]
    Empty,
    /// The name is longer than [`MAX_TOPIC_NAME`].
    #[error("topic name is {len} bytes long; at most {max} bytes are allowed, shorten it")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name holds a character outside the allowed set.
    #[error("topic name has {ch:?} at byte {at}; only ASCII letters, digits, '_', '-', '.' and '/' (as separator) are allowed")]
    InvalidChar {
        /// The offending character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
    /// A part is empty: a leading, trailing or doubled `/`.
    #[error("topic name has an empty part at byte {at} (a leading, trailing or doubled '/'); write parts separated by single slashes, like `robot/odom`")]
    EmptyPart {
        /// Byte offset where the empty part starts.
        at: usize,
    },
    /// A part is `.` or `..`.
    #[error("topic name has a part {part:?} at byte {at}; '.' and '..' are not allowed as parts")]
    DotPart {
        /// `"."` or `".."`.
        part: String,
        /// Byte offset where the part starts.
        at: usize,
    },
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// Checks a topic name against the naming rules (see the module docs).
pub fn validate_topic_name(name: &str) -> Result<(), TopicNameError> {
    if name.is_empty() {
        return Err(TopicNameError::Empty);
    }
    if let Some((at, ch)) = name
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii() && (c == '/' || is_name_byte(c as u8))))
    {
        return Err(TopicNameError::InvalidChar { ch, at });
    }
    if name.len() > MAX_TOPIC_NAME {
        return Err(TopicNameError::TooLong {
            len: name.len(),
            max: MAX_TOPIC_NAME,
        });
    }
    let mut at = 0;
    for part in name.split('/') {
        match part {
            "" => return Err(TopicNameError::EmptyPart { at }),
            "." | ".." => {
                return Err(TopicNameError::DotPart {
                    part: part.to_string(),
                    at,
                })
            }
            _ => {}
        }
        at += part.len() + 1;
    }
    Ok(())
}

/// A validated topic name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(String);

impl TopicName {
    /// Validates `name` and wraps it.
    pub fn new(name: impl Into<String>) -> Result<Self, TopicNameError> {
        let name = name.into();
        validate_topic_name(&name)?;
        Ok(TopicName(name))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn topic_name_accepts_hierarchical_names() {
        for n in [
            "robot/odom",
            "md/XNAS/AAPL",
            "a",
            "a.b_c-d/e.f",
            "...",
            ".hidden/x",
            "v1.2/x",
        ] {
            validate_topic_name(n).unwrap_or_else(|e| panic!("{n}: {e}"));
        }
        validate_topic_name(&"a".repeat(MAX_TOPIC_NAME)).unwrap();
    }

    #[test]
    fn topic_name_rejects_empty() {
        assert_eq!(validate_topic_name(""), Err(TopicNameError::Empty));
    }

    #[test]
    fn topic_name_rejects_dot_dot_part() {
        assert_eq!(
            validate_topic_name("robot/../etc"),
            Err(TopicNameError::DotPart {
                part: "..".into(),
                at: 6
            })
        );
        assert_eq!(
            validate_topic_name(".."),
            Err(TopicNameError::DotPart {
                part: "..".into(),
                at: 0
            })
        );
        assert_eq!(
            validate_topic_name("a/."),
            Err(TopicNameError::DotPart {
                part: ".".into(),
                at: 2
            })
        );
    }

    #[test]
    fn topic_name_rejects_leading_trailing_and_double_slash() {
        assert_eq!(
            validate_topic_name("/robot"),
            Err(TopicNameError::EmptyPart { at: 0 })
        );
        assert_eq!(
            validate_topic_name("robot/"),
            Err(TopicNameError::EmptyPart { at: 6 })
        );
        assert_eq!(
            validate_topic_name("robot//odom"),
            Err(TopicNameError::EmptyPart { at: 6 })
        );
        assert_eq!(
            validate_topic_name("/"),
            Err(TopicNameError::EmptyPart { at: 0 })
        );
    }

    #[test]
    fn topic_name_rejects_bad_chars_with_byte_offset() {
        assert_eq!(
            validate_topic_name("robot odom"),
            Err(TopicNameError::InvalidChar { ch: ' ', at: 5 })
        );
        assert_eq!(
            validate_topic_name("aé/x"),
            Err(TopicNameError::InvalidChar { ch: 'é', at: 1 })
        );
        for bad in ["a\0b", "a\\b", "a~b", "a*b", "a\nb"] {
            assert!(matches!(
                validate_topic_name(bad),
                Err(TopicNameError::InvalidChar { at: 1, .. })
            ));
        }
    }

    #[test]
    fn topic_name_rejects_too_long() {
        assert_eq!(
            validate_topic_name(&"a".repeat(MAX_TOPIC_NAME + 1)),
            Err(TopicNameError::TooLong {
                len: MAX_TOPIC_NAME + 1,
                max: MAX_TOPIC_NAME
            })
        );
    }

    #[test]
    fn topic_name_errors_say_which_rule_and_where() {
        let msg = validate_topic_name("a//b").unwrap_err().to_string();
        assert!(
            msg.contains("empty part") && msg.contains("byte 2"),
            "{msg}"
        );
    }

    #[test]
    fn topic_name_type_validates() {
        assert!(TopicName::new("a/b").is_ok());
        assert!(TopicName::new("a/../b").is_err());
        assert_eq!(TopicName::new("x/y").unwrap().to_string(), "x/y");
    }

    proptest! {
        #[test]
        fn validation_never_panics(name in any::<String>()) {
            if validate_topic_name(&name).is_ok() {
                prop_assert!(name.len() <= MAX_TOPIC_NAME && !name.contains("//"));
            }
        }
    }
}
