//! Access control: who may publish or subscribe on which topics, and per-uid limits.
//!
//! The rules come from a TOML file:
//!
//! ```toml
//! # Without rules, only the daemon's own uid may publish or subscribe.
//! [[rule]]
//! topics = "robot/**"
//! publish = { uids = [1000], gids = [] }
//! subscribe = { uids = [1000, 1001], gids = [100] }
//! create = { uids = [1002] }
//!
//! [limits]
//! max_topics = 65536
//! max_bytes_per_uid = 2147483648
//! max_clients_per_uid = 1024
//! ```
//!
//! # Semantics
//!
//! - The daemon's own uid is always allowed. No one else is, unless a rule
//!   grants it: root gets no special pass (run the daemon as root, or list
//!   uid 0, to change that).
//! - **Any-match**: a request is allowed when *any* rule whose `topics`
//!   pattern matches the topic lists the peer's uid, primary gid or one of its
//!   supplementary gids for that action. Rules only grant; there are no deny
//!   rules, so their order never matters.
//! - Patterns are [`TopicPattern`]s (shared with the tools, in `bus_proto::pattern`): globs
//!   over `/`-separated parts: `*` matches exactly one part, `**` matches any number of parts
//!   including none (so `robot/**` matches `robot`, `robot/odom` and `robot/arm/joint`), and
//!   any other part matches itself exactly. A wildcard must be a whole part (`odom*` is an
//!   error).
//! - **Creating** a topic needs `create` or `publish` on its name: a publisher may make the
//!   topic it publishes on, and `create` lets a uid make topics it will not write (a launcher
//!   that sets topics up). `subscribe` alone never creates: a subscriber cannot squat a name
//!   with a geometry of its choosing before the publisher comes. **Deleting** needs the
//!   topic's creator's uid or the daemon's.
//! - Unknown keys anywhere are errors, so a typo cannot silently change access.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use bus_proto::fdpass::PeerCred;
pub use bus_proto::pattern::TopicPattern;

/// What a peer wants to do on a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Attach a publisher.
    Publish,
    /// Attach a subscriber.
    Subscribe,
    /// Create a topic (granted by `create` or by `publish`).
    Create,
}

/// Errors loading an access configuration.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// The file could not be read.
    #[error("cannot read access configuration {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid access configuration{}: {message}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Parse {
        /// The file, if loaded from one.
        path: Option<PathBuf>,
        /// What is wrong, with line and column.
        message: String,
    },
    /// The file is writable by everyone, so anyone could grant themselves access.
    #[error("refusing access configuration {}: it is world-writable (mode {mode:04o}); run `chmod o-w {}`", path.display(), path.display())]
    Insecure {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Who is granted one action: listed uids and gids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// User ids granted.
    #[serde(default)]
    pub uids: Vec<u32>,
    /// Group ids granted (primary or supplementary).
    #[serde(default)]
    pub gids: Vec<u32>,
}

impl Grant {
    fn admits(&self, uid: u32, gid: u32, groups: &[u32]) -> bool {
        self.uids.contains(&uid)
            || self.gids.contains(&gid)
            || groups.iter().any(|g| self.gids.contains(g))
    }
}

/// One `[[rule]]`: a topic pattern and who may publish and subscribe there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Which topics the rule covers.
    pub topics: TopicPattern,
    /// Who may publish.
    #[serde(default)]
    pub publish: Grant,
    /// Who may subscribe.
    #[serde(default)]
    pub subscribe: Grant,
    /// Who may create topics here without publishing (publishers may create too).
    #[serde(default)]
    pub create: Grant,
}

impl Rule {
    fn admits(&self, action: Action, uid: u32, gid: u32, groups: &[u32]) -> bool {
        match action {
            Action::Publish => self.publish.admits(uid, gid, groups),
            Action::Subscribe => self.subscribe.admits(uid, gid, groups),
            Action::Create => {
                self.create.admits(uid, gid, groups) || self.publish.admits(uid, gid, groups)
            }
        }
    }
}

/// Per-uid resource limits. Missing keys take the defaults.
///
/// Memory is the limit meant to bind: a topic's cost is the shared memory it commits, and
/// `max_bytes_per_uid` caps it for each uid. The topic count only guards against a runaway
/// creator; the default fits 4,096 default byte topics (about 300 KiB each) and some 20,000
/// small typed ones before memory binds. Each topic also holds two of the daemon's descriptors
/// (see `docs/scale.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Topics one uid may create (default 65,536).
    pub max_topics: u32,
    /// Shared-memory bytes one uid's topics may take (default 2 GiB).
    pub max_bytes_per_uid: u64,
    /// Control connections one uid may hold open (default 1,024: a process holds one per
    /// `Bus`).
    pub max_clients_per_uid: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_topics: 65_536,
            max_bytes_per_uid: 2 << 30,
            max_clients_per_uid: 1024,
        }
    }
}

/// The access rules and limits of a daemon. The default has no rules (only
/// the daemon's uid is allowed) and default [`Limits`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// The `[[rule]]` entries.
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
    /// The `[limits]` table.
    #[serde(default)]
    pub limits: Limits,
}

impl AccessConfig {
    /// Loads and parses a TOML file. Refuses a world-writable file.
    pub fn load(path: &Path) -> Result<AccessConfig, AclError> {
        let io_err = |source| AclError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(io_err)?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o002 != 0 {
            return Err(AclError::Insecure {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = fs::read_to_string(path).map_err(io_err)?;
        Self::from_toml_str(&text).map_err(|e| match e {
            AclError::Parse { message, .. } => AclError::Parse {
                path: Some(path.to_path_buf()),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text.
    pub fn from_toml_str(text: &str) -> Result<AccessConfig, AclError> {
        toml::from_str(text).map_err(|e| AclError::Parse {
            path: None,
            message: e.to_string(),
        })
    }

    /// Whether `peer` may do `action` on `topic` (without supplementary groups).
    pub fn allows(&self, daemon_uid: u32, peer: &PeerCred, topic: &str, action: Action) -> bool {
        self.allows_with_groups(daemon_uid, peer, &[], topic, action)
    }

    /// Whether `peer`, also a member of `supplementary_gids`, may do `action` on `topic`.
    pub fn allows_with_groups(
        &self,
        daemon_uid: u32,
        peer: &PeerCred,
        supplementary_gids: &[u32],
        topic: &str,
        action: Action,
    ) -> bool {
        if peer.uid == daemon_uid {
            return true;
        }
        self.rules.iter().any(|r| {
            r.topics.matches(topic) && r.admits(action, peer.uid, peer.gid, supplementary_gids)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
# default: only the daemon's own uid may publish or subscribe
[[rule]]
topics = "robot/**"
publish = { uids = [1000], gids = [] }
subscribe = { uids = [1000, 1001], gids = [100] }

[[rule]]
topics = "md/*/AAPL"
subscribe = { uids = [2000] }

[limits]
max_topics = 65536
max_bytes_per_uid = 2147483648
max_clients_per_uid = 1024
"#;

    const DAEMON: u32 = 500;

    fn peer(uid: u32, gid: u32) -> PeerCred {
        PeerCred { pid: 1, uid, gid }
    }

    #[test]
    fn example_config_parses() {
        let c = AccessConfig::from_toml_str(EXAMPLE).unwrap();
        assert_eq!(c.rules.len(), 2);
        assert_eq!(c.rules[0].topics.as_str(), "robot/**");
        assert_eq!(c.rules[0].subscribe.gids, vec![100]);
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn empty_config_allows_only_daemon_uid() {
        let c = AccessConfig::from_toml_str("").unwrap();
        assert!(c.allows(DAEMON, &peer(DAEMON, 1), "a", Action::Publish));
        assert!(!c.allows(DAEMON, &peer(1000, 1000), "a", Action::Subscribe));
        assert_eq!(c, AccessConfig::default());
    }

    #[test]
    fn root_gets_no_special_pass() {
        let c = AccessConfig::from_toml_str(EXAMPLE).unwrap();
        assert!(!c.allows(DAEMON, &peer(0, 0), "robot/odom", Action::Subscribe));
        assert!(c.allows(0, &peer(0, 0), "robot/odom", Action::Subscribe));
    }

    #[test]
    fn rule_grants_by_uid_per_action() {
        let c = AccessConfig::from_toml_str(EXAMPLE).unwrap();
        assert!(c.allows(DAEMON, &peer(1000, 1), "robot/odom", Action::Publish));
        assert!(c.allows(DAEMON, &peer(1001, 1), "robot/odom", Action::Subscribe));
        assert!(!c.allows(DAEMON, &peer(1001, 1), "robot/odom", Action::Publish));
        assert!(!c.allows(DAEMON, &peer(1000, 1), "other/odom", Action::Publish));
    }

    #[test]
    fn rule_grants_by_primary_or_supplementary_gid() {
        let c = AccessConfig::from_toml_str(EXAMPLE).unwrap();
        assert!(c.allows(DAEMON, &peer(3000, 100), "robot/x", Action::Subscribe));
        assert!(!c.allows(DAEMON, &peer(3000, 7), "robot/x", Action::Subscribe));
        assert!(c.allows_with_groups(
            DAEMON,
            &peer(3000, 7),
            &[5, 100],
            "robot/x",
            Action::Subscribe
        ));
        assert!(!c.allows_with_groups(DAEMON, &peer(3000, 7), &[100], "robot/x", Action::Publish));
    }

    #[test]
    fn create_is_granted_by_create_or_publish_never_by_subscribe() {
        let text = r#"
[[rule]]
topics = "robot/**"
publish = { uids = [1] }
subscribe = { uids = [2] }
create = { uids = [3] }
"#;
        let c = AccessConfig::from_toml_str(text).unwrap();
        assert!(c.allows(DAEMON, &peer(1, 9), "robot/odom", Action::Create));
        assert!(!c.allows(DAEMON, &peer(2, 9), "robot/odom", Action::Create));
        assert!(c.allows(DAEMON, &peer(3, 9), "robot/odom", Action::Create));
        assert!(!c.allows(DAEMON, &peer(3, 9), "robot/odom", Action::Publish));
        assert!(!c.allows(DAEMON, &peer(3, 9), "robot/odom", Action::Subscribe));
        assert!(!c.allows(DAEMON, &peer(1, 9), "other/odom", Action::Create));
        assert!(c.allows(DAEMON, &peer(DAEMON, 9), "other/odom", Action::Create));
    }

    #[test]
    fn any_matching_rule_grants_regardless_of_order() {
        let text = r#"
[[rule]]
topics = "robot/**"
subscribe = { uids = [1] }
[[rule]]
topics = "robot/odom"
subscribe = { uids = [2] }
"#;
        let c = AccessConfig::from_toml_str(text).unwrap();
        assert!(c.allows(DAEMON, &peer(1, 9), "robot/odom", Action::Subscribe));
        assert!(c.allows(DAEMON, &peer(2, 9), "robot/odom", Action::Subscribe));
        assert!(!c.allows(DAEMON, &peer(2, 9), "robot/arm", Action::Subscribe));
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
        let text = "[[rule]]\ntopics = \"a*\"\n";
        let err = AccessConfig::from_toml_str(text).unwrap_err().to_string();
        assert!(
            err.contains("whole part") && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_errors_everywhere() {
        for text in [
            "[[rule]]\ntopics = \"a\"\npublsh = { uids = [1] }\n",
            "[[rule]]\ntopics = \"a\"\npublish = { uid = [1] }\n",
            "[limits]\nmax_topic = 3\n",
            "[[rules]]\ntopics = \"a\"\n",
            "allow_all = true\n",
        ] {
            let err = AccessConfig::from_toml_str(text).unwrap_err();
            assert!(err.to_string().contains("unknown field"), "{text:?}: {err}");
        }
    }

    #[test]
    fn rule_without_topics_is_an_error() {
        assert!(AccessConfig::from_toml_str("[[rule]]\npublish = { uids = [1] }\n").is_err());
    }

    #[test]
    fn default_limits_fit_real_systems_with_memory_binding() {
        let l = Limits::default();
        assert!(l.max_topics >= 4096);
        assert!(l.max_clients_per_uid >= 1024);
        // 4,096 default byte topics (about 300 KiB each) fit under the memory limit, and
        // memory binds before the topic count for topics of that size.
        let byte_topic = 300 * 1024u64;
        assert!(4096 * byte_topic <= l.max_bytes_per_uid);
        assert!(u64::from(l.max_topics) * byte_topic > l.max_bytes_per_uid);
    }

    #[test]
    fn limits_default_when_missing_or_partial() {
        let c = AccessConfig::from_toml_str("[limits]\nmax_topics = 3\n").unwrap();
        assert_eq!(c.limits.max_topics, 3);
        assert_eq!(c.limits.max_bytes_per_uid, 2 << 30);
        assert_eq!(c.limits.max_clients_per_uid, 1024);
    }

    fn temp_file(tag: &str, text: &str, mode: u32) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("shmbus-test-acl-{}-{tag}.toml", std::process::id()));
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn load_reads_file_and_names_it_in_errors() {
        let ok = temp_file("ok", EXAMPLE, 0o644);
        assert_eq!(AccessConfig::load(&ok).unwrap().rules.len(), 2);
        fs::remove_file(&ok).unwrap();
        let bad = temp_file("bad", "[[rule]]\n", 0o600);
        let err = AccessConfig::load(&bad).unwrap_err().to_string();
        assert!(err.contains(&*bad.to_string_lossy()), "{err}");
        fs::remove_file(&bad).unwrap();
        let missing = AccessConfig::load(Path::new("/nonexistent/shmbus-acl.toml"));
        assert!(matches!(missing, Err(AclError::Io { .. })));
    }

    #[test]
    fn world_writable_config_is_refused() {
        let p = temp_file("ww", EXAMPLE, 0o666);
        assert!(matches!(
            AccessConfig::load(&p),
            Err(AclError::Insecure { mode: 0o666, .. })
        ));
        fs::remove_file(&p).unwrap();
    }

    #[test]
    fn config_round_trips_through_toml() {
        let c = AccessConfig::from_toml_str(EXAMPLE).unwrap();
        let text = toml::to_string(&c).unwrap();
        assert_eq!(AccessConfig::from_toml_str(&text).unwrap(), c);
    }
}
