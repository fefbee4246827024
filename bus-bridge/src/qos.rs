//! Per-topic QoS of the exporting side: congestion control (from the topic's mode unless a
//! rule says otherwise), priority and express.
//!
//! A lossless topic is sent with Zenoh's blocking congestion control: when the network or the
//! remote side cannot keep up, the exporter waits, so it holds the local ring, so the local
//! publisher waits. A lossy topic is sent with congestion control `drop`: Zenoh drops what it
//! cannot send, and nothing local ever waits.

use bus_core::layout::Mode;
use bus_proto::pattern::TopicPattern;
use serde::Deserialize;
use zenoh::qos::{CongestionControl, Priority};

/// Zenoh's priorities, by their names in Zenoh's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriorityName {
    /// The highest.
    RealTime,
    /// Interactive, high.
    InteractiveHigh,
    /// Interactive, low.
    InteractiveLow,
    /// Data, high.
    DataHigh,
    /// Data (Zenoh's default).
    Data,
    /// Data, low.
    DataLow,
    /// The lowest.
    Background,
}

impl PriorityName {
    fn zenoh(self) -> Priority {
        match self {
            PriorityName::RealTime => Priority::RealTime,
            PriorityName::InteractiveHigh => Priority::InteractiveHigh,
            PriorityName::InteractiveLow => Priority::InteractiveLow,
            PriorityName::DataHigh => Priority::DataHigh,
            PriorityName::Data => Priority::Data,
            PriorityName::DataLow => Priority::DataLow,
            PriorityName::Background => Priority::Background,
        }
    }
}

/// What to do when Zenoh cannot send at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Congestion {
    /// Wait (and so hold the local ring).
    Block,
    /// Drop the message.
    Drop,
}

/// One `[[qos]]` rule of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QosRule {
    /// The topics it applies to.
    pub topics: TopicPattern,
    /// Zenoh priority.
    pub priority: Option<PriorityName>,
    /// Send at once, without batching.
    pub express: Option<bool>,
    /// Override the congestion control the topic's mode implies.
    pub congestion: Option<Congestion>,
}

/// The QoS one exported topic is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qos {
    /// Congestion control.
    pub congestion: CongestionControl,
    /// Priority.
    pub priority: Priority,
    /// Express.
    pub express: bool,
}

/// The QoS of `topic` (of delivery `mode`) under `rules`: the first rule that matches, with
/// the mode's congestion control where the rule does not set one.
pub fn qos_for(rules: &[QosRule], topic: &str, mode: Mode) -> Qos {
    let rule = rules.iter().find(|r| r.topics.matches(topic));
    let congestion = match (rule.and_then(|r| r.congestion), mode) {
        (Some(Congestion::Block), _) | (None, Mode::Lossless) => CongestionControl::Block,
        (Some(Congestion::Drop), _) | (None, Mode::Lossy) => CongestionControl::Drop,
    };
    Qos {
        congestion,
        priority: rule
            .and_then(|r| r.priority)
            .map_or(Priority::DEFAULT, PriorityName::zenoh),
        express: rule.and_then(|r| r.express).unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(topics: &str, congestion: Option<Congestion>) -> QosRule {
        QosRule {
            topics: TopicPattern::new(topics).unwrap(),
            priority: Some(PriorityName::RealTime),
            express: Some(true),
            congestion,
        }
    }

    #[test]
    fn lossless_blocks_and_lossy_drops_by_default() {
        let q = qos_for(&[], "a", Mode::Lossless);
        assert_eq!(q.congestion, CongestionControl::Block);
        assert_eq!(q.priority, Priority::DEFAULT);
        assert!(!q.express);
        assert_eq!(
            qos_for(&[], "a", Mode::Lossy).congestion,
            CongestionControl::Drop
        );
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let rules = [rule("a/fast", Some(Congestion::Drop)), rule("a/**", None)];
        let fast = qos_for(&rules, "a/fast", Mode::Lossless);
        assert_eq!(fast.congestion, CongestionControl::Drop);
        assert_eq!(fast.priority, Priority::RealTime);
        assert!(fast.express);
        let other = qos_for(&rules, "a/other", Mode::Lossless);
        assert_eq!(other.congestion, CongestionControl::Block);
        assert!(other.express);
        assert_eq!(
            qos_for(&rules, "b", Mode::Lossless).priority,
            Priority::DEFAULT
        );
    }
}
