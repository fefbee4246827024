//! Topic names and the shared-memory file names derived from them.
//!
//! A topic name is hierarchical: parts separated by `/`, e.g. `robot/odom` or
//! `md/XNAS/AAPL`. Each part is made of ASCII letters, digits, `_`, `-` and
//! `.`; no part is empty, `.` or `..`; the whole name is at most
//! [`MAX_TOPIC_NAME`] bytes. These rules keep names safe to embed in file names
//! (no path traversal) and easy to type.
//!
//! Segment files are named `shmbus-<uid>-<topic with '/' as '~'>-<instance as 16 hex digits>`,
//! always under `NAME_MAX` (255 bytes), so a clean-up can find exactly the
//! files of one uid's bus and nothing else.

use std::fmt;

/// The longest topic name, in bytes.
pub const MAX_TOPIC_NAME: usize = 200;

/// Every segment file name starts with this.
pub const SEGMENT_PREFIX: &str = "shmbus-";

/// The longest file name Linux accepts in one path component.
pub const NAME_MAX: usize = 255;

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

/// The `/dev/shm` file name of one instance of a topic's segment (no leading `/`;
/// prepend one for `shm_open`).
///
/// `/` becomes `~`; any byte outside the topic charset (only possible for an
/// unvalidated name) becomes `_`, and the escaped topic is cut to
/// [`MAX_TOPIC_NAME`] bytes, so the result always has no `/` and fits in
/// [`NAME_MAX`]. The instance number keeps names unique.
pub fn segment_file_name(uid: u32, topic: &str, instance: u64) -> String {
    let escaped: String = topic
        .bytes()
        .take(MAX_TOPIC_NAME)
        .map(|b| match b {
            b'/' => '~',
            b if is_name_byte(b) => char::from(b),
            _ => '_',
        })
        .collect();
    format!("{SEGMENT_PREFIX}{uid}-{escaped}-{instance:016x}")
}

/// True when `file_name` is a segment file name made by [`segment_file_name`] for `uid`.
///
/// Used to clean up stale segments: it never matches a file of another uid or
/// a file the bus did not name.
pub fn is_shmbus_segment_for_uid(file_name: &str, uid: u32) -> bool {
    if file_name.len() > NAME_MAX {
        return false;
    }
    let prefix = format!("{SEGMENT_PREFIX}{uid}-");
    let Some(rest) = file_name.strip_prefix(prefix.as_str()) else {
        return false;
    };
    let Some((topic, instance)) = rest.rsplit_once('-') else {
        return false;
    };
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC_NAME
        && topic.bytes().all(|b| b == b'~' || is_name_byte(b))
        && instance.len() == 16
        && instance
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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
    fn segment_name_contains_shmbus_and_no_slash() {
        let n = segment_file_name(1000, "md/XNAS/AAPL", 0xabc);
        assert_eq!(n, "shmbus-1000-md~XNAS~AAPL-0000000000000abc");
        assert!(is_shmbus_segment_for_uid(&n, 1000));
    }

    #[test]
    fn segment_name_stays_under_name_max_for_longest_topic() {
        let n = segment_file_name(u32::MAX, &"a/".repeat(100), u64::MAX);
        assert!(n.len() <= NAME_MAX, "{}", n.len());
        assert!(!n.contains('/'));
        assert!(is_shmbus_segment_for_uid(&n, u32::MAX));
        // Even an unvalidated, overlong, hostile name stays a single safe component.
        let n = segment_file_name(0, &"../é\0/".repeat(200), 1);
        assert!(n.len() <= NAME_MAX);
        assert!(!n.contains('/') && !n.contains('\0'));
    }

    #[test]
    fn segment_filter_ignores_other_uids_and_foreign_files() {
        let n = segment_file_name(1000, "robot/odom", 7);
        assert!(!is_shmbus_segment_for_uid(&n, 100));
        assert!(!is_shmbus_segment_for_uid(&n, 10000));
        for other in [
            "shmbus-1000-robot~odom",
            "shmbus-1000--0000000000000007",
            "shmbus-1000-robot~odom-7",
            "shmbus-1000-robot~odom-000000000000000G",
            "shmbus-1000-robot odom-0000000000000007",
            "pulse-shm-1234",
            "shmbusd.sock",
            "xshmbus-1000-robot~odom-0000000000000007",
        ] {
            assert!(!is_shmbus_segment_for_uid(other, 1000), "{other}");
        }
    }

    #[test]
    fn topic_name_type_validates() {
        assert!(TopicName::new("a/b").is_ok());
        assert!(TopicName::new("a/../b").is_err());
        assert_eq!(TopicName::new("x/y").unwrap().to_string(), "x/y");
    }

    proptest! {
        #[test]
        fn segment_names_of_valid_topics_are_recognised(
            topic in "[A-Za-z0-9_.-]{1,20}(/[A-Za-z0-9_-]{1,20}){0,5}",
            uid in any::<u32>(),
            instance in any::<u64>(),
        ) {
            prop_assume!(validate_topic_name(&topic).is_ok());
            let n = segment_file_name(uid, &topic, instance);
            prop_assert!(n.len() <= NAME_MAX);
            prop_assert!(!n.contains('/'));
            prop_assert!(is_shmbus_segment_for_uid(&n, uid));
        }

        #[test]
        fn validation_never_panics(name in any::<String>()) {
            let _ = validate_topic_name(&name);
            let n = segment_file_name(1, &name, 1);
            prop_assert!(n.len() <= NAME_MAX && !n.contains('/'));
        }
    }
}
