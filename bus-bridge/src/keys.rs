//! Topic names and Zenoh keys.
//!
//! * Data: topic `robot/odom` is key `<prefix>/robot/odom` (`robot/odom` without a prefix).
//!   On import the prefix is stripped, and what is left must be a valid topic name.
//! * Types: an exporter declares the liveliness token
//!   `@shmbus/<bridge zid>/<type tag>/<prefix>/<topic>` (see [`crate::type_tag`]). The `@shmbus`
//!   chunk is verbatim, so a `**` subscription of an application never sees these keys.
//! * Patterns: `*` and `**` mean in Zenoh what they mean in shmbus (one part; any number of
//!   parts, none included), so an import pattern becomes the key expression
//!   `<prefix>/<pattern>`.

use bus_proto::names::validate_topic_name;
use bus_proto::pattern::TopicPattern;
use zenoh::key_expr::{keyexpr, OwnedKeyExpr};

use crate::type_tag::TypeTag;

/// The first chunk of every liveliness token of a bridge.
pub const TOKEN_ROOT: &str = "@shmbus";

/// Maps topic names to keys and back, under an optional prefix.
#[derive(Debug, Clone)]
pub struct KeyMap {
    prefix: Option<OwnedKeyExpr>,
}

/// What a liveliness token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The exporting bridge's Zenoh id, as text.
    pub zid: String,
    /// The type tag's text (parse it with [`TypeTag::parse`]).
    pub tag: String,
    /// The topic.
    pub topic: String,
}

fn key(text: &str) -> Result<OwnedKeyExpr, String> {
    OwnedKeyExpr::autocanonize(text.to_string())
        .map_err(|e| format!("{text:?} is not a valid Zenoh key expression: {e}"))
}

impl KeyMap {
    /// A map under `prefix` (none, or a key without wildcards and without `@` chunks).
    pub fn new(prefix: Option<&str>) -> Result<KeyMap, String> {
        let prefix = match prefix {
            None | Some("") => None,
            Some(p) => {
                let k = OwnedKeyExpr::new(p).map_err(|e| {
                    format!("prefix {p:?} is not a valid Zenoh key (parts separated by single '/', no '#', '?' or '$'): {e}")
                })?;
                if k.is_wild() {
                    return Err(format!("prefix {p:?} must not contain wildcards"));
                }
                if p.split('/').any(|c| c.starts_with('@')) {
                    return Err(format!(
                        "prefix {p:?} has a part starting with '@'; such parts are reserved"
                    ));
                }
                Some(k)
            }
        };
        Ok(KeyMap { prefix })
    }

    /// The prefix, if any.
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref().map(|k| k.as_str())
    }

    fn under_prefix(&self, rest: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{p}/{rest}"),
            None => rest.to_string(),
        }
    }

    /// The key of a topic; refuses, saying why, a name that is not a valid key.
    pub fn key_of(&self, topic: &str) -> Result<OwnedKeyExpr, String> {
        validate_topic_name(topic).map_err(|e| format!("topic {topic:?}: {e}"))?;
        let text = self.under_prefix(topic);
        let k = OwnedKeyExpr::new(text.as_str()).map_err(|e| {
            format!("topic {topic:?} does not make a valid Zenoh key {text:?}: {e}")
        })?;
        if k.is_wild() {
            return Err(format!("topic {topic:?} makes a wildcard key {text:?}"));
        }
        Ok(k)
    }

    /// The topic a key names; refuses, saying why, a key outside the prefix or one that is
    /// not a valid topic name.
    pub fn topic_of(&self, key: &str) -> Result<String, String> {
        let topic = match &self.prefix {
            Some(p) => key
                .strip_prefix(p.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .ok_or_else(|| format!("key {key:?} is not under the prefix {:?}", p.as_str()))?,
            None => key,
        };
        validate_topic_name(topic)
            .map_err(|e| format!("key {key:?} does not name a shmbus topic: {e}"))?;
        Ok(topic.to_string())
    }

    /// The key expression that matches the data of every topic `pattern` admits.
    pub fn selector(&self, pattern: &TopicPattern) -> Result<OwnedKeyExpr, String> {
        key(&self.under_prefix(pattern.as_str()))
    }

    /// The liveliness token an exporter of `topic` declares.
    pub fn token(&self, zid: &str, tag: &TypeTag, topic: &str) -> Result<OwnedKeyExpr, String> {
        let data = self.key_of(topic)?;
        let k = key(&format!("{TOKEN_ROOT}/{zid}/{}/{data}", tag.as_str()))?;
        if k.is_wild() {
            return Err(format!("the token for topic {topic:?} would be a wildcard"));
        }
        Ok(k)
    }

    /// The key expression that matches the tokens of every topic `pattern` admits.
    pub fn token_selector(&self, pattern: &TopicPattern) -> Result<OwnedKeyExpr, String> {
        key(&format!(
            "{TOKEN_ROOT}/*/*/{}",
            self.under_prefix(pattern.as_str())
        ))
    }

    /// Read a liveliness token's key (untrusted).
    pub fn parse_token(&self, k: &keyexpr) -> Result<Token, String> {
        let text = k.as_str();
        let mut parts = text.splitn(4, '/');
        let (Some(TOKEN_ROOT), Some(zid), Some(tag), Some(data)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{text:?} is not a shmbus bridge's token"));
        };
        Ok(Token {
            zid: zid.to_string(),
            tag: tag.to_string(),
            topic: self.topic_of(data)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_core::layout::{Geometry, Mode, TypeInfo};

    fn pattern(p: &str) -> TopicPattern {
        TopicPattern::new(p).unwrap()
    }

    #[test]
    fn topic_maps_under_the_prefix_and_back() {
        let m = KeyMap::new(Some("site1/robot7")).unwrap();
        let k = m.key_of("robot/odom").unwrap();
        assert_eq!(k.as_str(), "site1/robot7/robot/odom");
        assert_eq!(m.topic_of(k.as_str()).unwrap(), "robot/odom");
        let none = KeyMap::new(None).unwrap();
        assert_eq!(
            none.key_of("md/XNAS/AAPL").unwrap().as_str(),
            "md/XNAS/AAPL"
        );
        assert_eq!(none.topic_of("md/XNAS/AAPL").unwrap(), "md/XNAS/AAPL");
    }

    #[test]
    fn bad_prefixes_are_refused_with_a_reason() {
        for (p, why) in [
            ("a/*", "wildcards"),
            ("a//b", "not a valid Zenoh key"),
            ("a#b", "not a valid Zenoh key"),
            ("@x/y", "reserved"),
            ("a/", "not a valid Zenoh key"),
        ] {
            let e = KeyMap::new(Some(p)).unwrap_err();
            assert!(e.contains(why), "{p}: {e}");
        }
    }

    #[test]
    fn keys_that_are_not_topics_are_refused_with_a_reason() {
        let m = KeyMap::new(Some("site")).unwrap();
        for (k, why) in [
            ("other/robot/odom", "not under the prefix"),
            ("siteX/robot", "not under the prefix"),
            ("site", "not under the prefix"),
            ("site/robot/od@m", "does not name a shmbus topic"),
            ("site/robot/é", "does not name a shmbus topic"),
            ("site/a/../b", "does not name a shmbus topic"),
        ] {
            let e = m.topic_of(k).unwrap_err();
            assert!(e.contains(why), "{k}: {e}");
        }
        assert!(m.key_of("a//b").unwrap_err().contains("empty part"));
    }

    #[test]
    fn patterns_become_key_expressions_that_agree_with_the_matcher() {
        let m = KeyMap::new(Some("p")).unwrap();
        for (pat, topics) in [
            (
                "robot/**",
                &["robot", "robot/odom", "robot/arm/joint", "robots/x"][..],
            ),
            ("md/*/AAPL", &["md/XNAS/AAPL", "md/AAPL", "md/a/b/AAPL"][..]),
            ("**", &["a", "a/b/c"][..]),
            ("**/odom", &["odom", "r/odom", "r/s/odom", "r/odomx"][..]),
        ] {
            let p = pattern(pat);
            let sel = m.selector(&p).unwrap();
            for t in topics {
                let k = m.key_of(t).unwrap();
                assert_eq!(sel.intersects(&k), p.matches(t), "{pat} vs {t}");
            }
        }
    }

    #[test]
    fn tokens_carry_the_tag_and_round_trip() {
        let m = KeyMap::new(Some("site")).unwrap();
        let tag = TypeTag::of(&Geometry {
            capacity: 64,
            slot_size: 16,
            mode: Mode::Lossy,
            max_publishers: 4,
            max_subscribers: 4,
            type_info: TypeInfo {
                name: "a::B".into(),
                size: 16,
                align: 8,
            },
        });
        let t = m.token("0123abcd", &tag, "robot/odom").unwrap();
        assert!(m
            .token_selector(&pattern("robot/**"))
            .unwrap()
            .intersects(&t));
        assert!(!m
            .token_selector(&pattern("base/**"))
            .unwrap()
            .intersects(&t));
        let back = m.parse_token(&t).unwrap();
        assert_eq!(
            back,
            Token {
                zid: "0123abcd".into(),
                tag: tag.as_str().into(),
                topic: "robot/odom".into()
            }
        );
        // An application's `**` never sees a bridge's tokens.
        assert!(!keyexpr::new("**").unwrap().intersects(&t));
        for bad in ["@shmbus/x", "@other/a/b/site/c", "@shmbus/a/b/elsewhere/c"] {
            assert!(m.parse_token(keyexpr::new(bad).unwrap()).is_err(), "{bad}");
        }
    }
}
