//! Topic patterns: globs over topic names, one matcher for the daemon's access rules and the
//! tools (`shmbus record`, `play --topics`).
//!
//! A pattern is a `/`-separated list of parts, like a topic name: `*` matches exactly one part,
//! `**` matches any number of parts including none (so `robot/**` matches `robot`,
//! `robot/odom` and `robot/arm/joint`), and any other part matches itself exactly. A wildcard
//! must be a whole part (`odom*` is an error). Matching is linear in the number of parts; no
//! pattern can make it backtrack.
//!
//! ```
//! use bus_proto::pattern::TopicPattern;
//! let p = TopicPattern::new("md/*/AAPL").unwrap();
//! assert!(p.matches("md/XNAS/AAPL"));
//! assert!(!p.matches("md/XNAS/MSFT"));
//! assert!(TopicPattern::new("robot/**").unwrap().matches("robot"));
//! ```

use serde::{Deserialize, Serialize};

use crate::names::{validate_topic_name, MAX_TOPIC_NAME};

/// One part of a [`TopicPattern`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternPart {
    Exact(String),
    /// `*`: exactly one part.
    One,
    /// `**`: zero or more parts.
    Any,
}

/// A glob over topic names (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicPattern {
    text: String,
    parts: Vec<PatternPart>,
}

impl TopicPattern {
    /// Parses a pattern; the error says which part is wrong and why.
    pub fn new(text: &str) -> Result<TopicPattern, String> {
        if text.is_empty() {
            return Err("topic pattern is empty; use e.g. \"robot/**\" or \"**\"".into());
        }
        if text.len() > MAX_TOPIC_NAME * 2 {
            return Err(format!(
                "topic pattern is {} bytes long; at most {} are allowed",
                text.len(),
                MAX_TOPIC_NAME * 2
            ));
        }
        let mut parts = Vec::new();
        for part in text.split('/') {
            let p = match part {
                "*" => PatternPart::One,
                "**" => PatternPart::Any,
                _ if part.contains('*') => {
                    return Err(format!(
                        "topic pattern {text:?} has part {part:?}: a wildcard must be a whole part (`*` for one part, `**` for any number)"
                    ))
                }
                "" => {
                    return Err(format!(
                        "topic pattern {text:?} has an empty part (a leading, trailing or doubled '/')"
                    ))
                }
                _ => {
                    validate_topic_name(part)
                        .map_err(|e| format!("topic pattern {text:?}, part {part:?}: {e}"))?;
                    PatternPart::Exact(part.to_string())
                }
            };
            parts.push(p);
        }
        Ok(TopicPattern {
            text: text.to_string(),
            parts,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern has no wildcard (it names one topic).
    pub fn is_exact(&self) -> bool {
        self.parts
            .iter()
            .all(|p| matches!(p, PatternPart::Exact(_)))
    }

    /// True when `topic` matches. Linear in parts: O(pattern parts × topic parts).
    pub fn matches(&self, topic: &str) -> bool {
        let topic: Vec<&str> = topic.split('/').collect();
        // reach[j]: the pattern parts seen so far can consume exactly the first j topic parts.
        let mut reach = vec![false; topic.len() + 1];
        if let Some(first) = reach.first_mut() {
            *first = true;
        }
        for part in &self.parts {
            let mut next = vec![false; topic.len() + 1];
            match part {
                PatternPart::Any => {
                    let mut any = false;
                    for (n, r) in next.iter_mut().zip(&reach) {
                        any |= *r;
                        *n = any;
                    }
                }
                PatternPart::One => {
                    for (n, r) in next.iter_mut().skip(1).zip(&reach) {
                        *n = *r;
                    }
                }
                PatternPart::Exact(want) => {
                    for ((n, r), t) in next.iter_mut().skip(1).zip(&reach).zip(&topic) {
                        *n = *r && *t == want;
                    }
                }
            }
            reach = next;
        }
        reach.last().copied().unwrap_or(false)
    }
}

impl TryFrom<String> for TopicPattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        TopicPattern::new(&s)
    }
}

impl From<TopicPattern> for String {
    fn from(p: TopicPattern) -> String {
        p.text
    }
}

impl std::fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> TopicPattern {
        TopicPattern::new(s).unwrap()
    }

    #[test]
    fn single_star_matches_exactly_one_part() {
        let p = pat("md/*/AAPL");
        assert!(p.matches("md/XNAS/AAPL"));
        assert!(!p.matches("md/AAPL"));
        assert!(!p.matches("md/a/b/AAPL"));
        assert!(!p.matches("md/XNAS/MSFT"));
        assert!(pat("*").matches("x"));
        assert!(!pat("*").matches("x/y"));
    }

    #[test]
    fn double_star_matches_zero_or_more_parts() {
        let p = pat("robot/**");
        assert!(p.matches("robot"));
        assert!(p.matches("robot/odom"));
        assert!(p.matches("robot/arm/joint/3"));
        assert!(!p.matches("robots/odom"));
        assert!(!p.matches("x/robot/odom"));
        assert!(pat("**").matches("anything/at/all"));
        let mid = pat("a/**/z");
        assert!(mid.matches("a/z"));
        assert!(mid.matches("a/b/c/z"));
        assert!(!mid.matches("a/b/c"));
        let many = pat("**/x/**/y/**");
        assert!(many.matches("x/y"));
        assert!(many.matches("p/x/q/y/r"));
        assert!(!many.matches("y/x"));
    }

    #[test]
    fn exact_pattern_matches_only_itself() {
        let p = pat("robot/odom");
        assert!(p.matches("robot/odom"));
        assert!(!p.matches("robot/odom/x"));
        assert!(!p.matches("robot"));
        assert!(!p.matches("robot/odo"));
    }

    #[test]
    fn pathological_pattern_matches_quickly() {
        let p = pat(&["**"; 60].join("/"));
        let topic = ["a"; 100].join("/");
        assert!(p.matches(&topic));
        let p = pat(&format!("{}/b", ["**"; 60].join("/")));
        assert!(!p.matches(&topic));
    }

    #[test]
    fn bad_patterns_are_rejected_with_reason() {
        for (bad, why) in [
            ("", "empty"),
            ("robot/odom*", "whole part"),
            ("robot//odom", "empty part"),
            ("/robot", "empty part"),
            ("robot/../x", "'..'"),
            ("robot/o dom", "' '"),
        ] {
            let err = TopicPattern::new(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn exact_patterns_are_told_apart_from_globs() {
        assert!(pat("robot/odom").is_exact());
        assert!(!pat("robot/*").is_exact());
        assert!(!pat("**").is_exact());
    }
}
