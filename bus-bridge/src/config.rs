//! What the bridge is told: the command line and the `--config` TOML file, merged into one
//! [`Settings`].
//!
//! ```toml
//! socket = "/run/user/1000/shmbus/shmbusd.sock"
//! listen = ["tcp/0.0.0.0:7447"]
//! connect = ["tcp/192.0.2.7:7447"]
//! scout = false                    # multicast scouting; on by default only without endpoints
//! prefix = "site1"
//! export = ["robot/**"]
//! import = ["base/**"]
//! deny = ["robot/secret/**"]
//! stats_interval_ms = 10000        # a stats line on stdout; 0: only at exit
//! wait = "block"                   # how local ports wait: block (default), adaptive,
//!                                  # busy_poll, or { spins = 100, yields = 0 }
//!
//! [[qos]]                          # first matching rule wins
//! topics = "robot/cmd/**"
//! priority = "real_time"           # real_time, interactive_high, interactive_low,
//!                                  # data_high, data (default), data_low, background
//! express = true                   # send at once, without batching
//! congestion = "block"             # block or drop; default: block lossless, drop lossy
//!
//! [zenoh]                          # passed to Zenoh unchanged (or zenoh_config = "z.json5")
//! transport.link.tx.queue.congestion_control.block.wait_before_close = 5000000
//! ```
//!
//! Lists from the command line are added to the file's; a flag given on the command line wins
//! over the file. Unknown keys are errors, so a typo cannot silently change what is bridged.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bus_core::wait::WaitStrategy;
use bus_proto::pattern::TopicPattern;
use serde::Deserialize;

use crate::cli::BridgeArgs;
use crate::keys::KeyMap;
use crate::qos::QosRule;

/// How the bridge's local ports wait: a name, or `{ spins = N, yields = M }` (spin N times,
/// yield M times, then sleep on the futex).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum WaitChoice {
    /// `"block"` (the default), `"adaptive"` or `"busy_poll"`.
    Named(WaitName),
    /// Spin, then yield, then sleep.
    Spin {
        /// Busy iterations before yielding.
        spins: u32,
        /// Yields before sleeping.
        yields: u32,
    },
}

/// The named wait strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitName {
    /// Sleep on the futex at once: the default. The bridge shares its cores with Zenoh's
    /// runtime threads, which do the actual work; a spinning port takes their CPU (on two
    /// vCPUs, adaptive spinning made a bridged round trip 7x slower than blocking).
    Block,
    /// The client's default: spin a few microseconds, yield, then sleep.
    Adaptive,
    /// Spin: a core per waiting port; only with cores to spare.
    BusyPoll,
}

impl WaitChoice {
    /// The client's strategy.
    pub fn strategy(self) -> WaitStrategy {
        match self {
            WaitChoice::Named(WaitName::Block) => WaitStrategy::Block,
            WaitChoice::Named(WaitName::Adaptive) => WaitStrategy::default(),
            WaitChoice::Named(WaitName::BusyPoll) => WaitStrategy::BusyPoll,
            WaitChoice::Spin { spins, yields } => WaitStrategy::Adaptive { spins, yields },
        }
    }
}

/// The `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    socket: Option<PathBuf>,
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    connect: Vec<String>,
    scout: Option<bool>,
    #[serde(default)]
    export: Vec<TopicPattern>,
    #[serde(default)]
    import: Vec<TopicPattern>,
    #[serde(default)]
    deny: Vec<TopicPattern>,
    prefix: Option<String>,
    /// Ignored: local topics are announced by the daemon, never polled for.
    scan_interval_ms: Option<u64>,
    stats_interval_ms: Option<u64>,
    wait: Option<WaitChoice>,
    #[serde(default)]
    qos: Vec<QosRule>,
    zenoh: Option<toml::Table>,
    zenoh_config: Option<PathBuf>,
}

/// Where Zenoh's own configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZenohSource {
    /// Zenoh's defaults, with a faster connect retry (see docs/bridge.md).
    Default,
    /// The `[zenoh]` table, as JSON.
    Inline(String),
    /// A Zenoh json5 file.
    File(PathBuf),
}

/// Everything the bridge runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The local daemon.
    pub socket: PathBuf,
    /// Zenoh endpoints to listen on.
    pub listen: Vec<String>,
    /// Zenoh endpoints to connect to.
    pub connect: Vec<String>,
    /// Multicast scouting.
    pub scout: bool,
    /// Local topics that go out.
    pub export: Vec<TopicPattern>,
    /// Remote topics that come in.
    pub import: Vec<TopicPattern>,
    /// Topics never bridged, whatever `export` and `import` say.
    pub deny: Vec<TopicPattern>,
    /// Topic names and keys.
    pub keys: KeyMap,
    /// Per-topic QoS, first match wins.
    pub qos: Vec<QosRule>,
    /// Zenoh's configuration.
    pub zenoh: ZenohSource,
    /// Ignored (kept so older files still load): local topics are announced by the daemon.
    pub scan_interval: Duration,
    /// How often a stats line is printed (`None`: only at exit).
    pub stats_interval: Option<Duration>,
    /// How local ports wait.
    pub wait: WaitChoice,
}

fn patterns(texts: &[String], flag: &str) -> Result<Vec<TopicPattern>, String> {
    texts
        .iter()
        .map(|t| TopicPattern::new(t).map_err(|e| format!("--{flag}: {e}")))
        .collect()
}

/// Read the `--config` file.
pub fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
}

impl Settings {
    /// Merge the command line with its config file (read here, if named).
    pub fn resolve(args: &BridgeArgs) -> Result<Settings, String> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Settings::merge(args, file)
    }

    /// Merge the command line with an already read config file.
    pub fn merge(args: &BridgeArgs, file: FileConfig) -> Result<Settings, String> {
        let join = |a: &[String], b: Vec<String>| b.into_iter().chain(a.iter().cloned()).collect();
        let mut export = file.export;
        export.extend(patterns(&args.export, "export")?);
        let mut import = file.import;
        import.extend(patterns(&args.import, "import")?);
        let mut deny = file.deny;
        deny.extend(patterns(&args.deny, "deny")?);
        if export.is_empty() && import.is_empty() {
            return Err(
                "nothing to bridge: give at least one --export or --import pattern \
                 (e.g. --export 'robot/**'); nothing is bridged unless a pattern admits it"
                    .into(),
            );
        }
        let prefix = args.prefix.clone().or(file.prefix);
        let keys = KeyMap::new(prefix.as_deref()).map_err(|e| format!("--prefix: {e}"))?;
        let zenoh = match (file.zenoh, file.zenoh_config) {
            (Some(_), Some(_)) => {
                return Err(
                    "the config file has both a [zenoh] table and zenoh_config; keep one".into(),
                )
            }
            (Some(table), None) => ZenohSource::Inline(
                serde_json::to_string(&table)
                    .map_err(|e| format!("the [zenoh] table cannot be passed on: {e}"))?,
            ),
            (None, Some(path)) => ZenohSource::File(path),
            (None, None) => ZenohSource::Default,
        };
        let stats_ms = file.stats_interval_ms.unwrap_or(10_000);
        Ok(Settings {
            socket: args
                .socket
                .clone()
                .or(file.socket)
                .unwrap_or_else(bus_proto::paths::default_socket_path),
            listen: join(&args.listen, file.listen),
            connect: join(&args.connect, file.connect),
            scout: args.scout || file.scout.unwrap_or(false),
            export,
            import,
            deny,
            keys,
            qos: file.qos,
            zenoh,
            scan_interval: Duration::from_millis(file.scan_interval_ms.unwrap_or(250).max(10)),
            stats_interval: (stats_ms > 0).then(|| Duration::from_millis(stats_ms)),
            wait: file.wait.unwrap_or(WaitChoice::Named(WaitName::Block)),
        })
    }

    fn denied(&self, topic: &str) -> bool {
        self.deny.iter().any(|p| p.matches(topic))
    }

    /// Whether a local topic goes out.
    pub fn exports(&self, topic: &str) -> bool {
        self.export.iter().any(|p| p.matches(topic)) && !self.denied(topic)
    }

    /// Whether a remote topic comes in.
    pub fn imports(&self, topic: &str) -> bool {
        self.import.iter().any(|p| p.matches(topic)) && !self.denied(topic)
    }

    /// The index of the first import pattern that admits `topic`: the one subscription of
    /// several overlapping ones that delivers its samples.
    pub fn first_import(&self, topic: &str) -> Option<usize> {
        self.import.iter().position(|p| p.matches(topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(list: &[&str]) -> BridgeArgs {
        BridgeArgs::try_parse_from(std::iter::once("shmbus-bridge").chain(list.iter().copied()))
            .unwrap()
    }

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn deny_wins_over_export_and_import() {
        let s = Settings::merge(
            &args(&[
                "--socket",
                "/tmp/x.sock",
                "--export",
                "robot/**",
                "--import",
                "base/**",
                "--deny",
                "robot/secret/**",
                "--deny",
                "base/private",
            ]),
            FileConfig::default(),
        )
        .unwrap();
        assert!(s.exports("robot/odom"));
        assert!(!s.exports("robot/secret/key"));
        assert!(!s.exports("base/odom"));
        assert!(s.imports("base/odom"));
        assert!(!s.imports("base/private"));
        assert!(!s.imports("robot/odom"));
    }

    #[test]
    fn nothing_is_bridged_without_a_pattern() {
        let e = Settings::merge(&args(&["--deny", "x"]), FileConfig::default()).unwrap_err();
        assert!(e.contains("nothing to bridge"), "{e}");
    }

    #[test]
    fn file_and_command_line_merge() {
        let f = file(
            r#"
            socket = "/from/file.sock"
            listen = ["tcp/127.0.0.1:7000"]
            export = ["a/**"]
            prefix = "filesite"
            stats_interval_ms = 0
            wait = "busy_poll"
            [[qos]]
            topics = "a/fast"
            priority = "real_time"
            express = true
            congestion = "drop"
            [zenoh]
            mode = "peer"
            [zenoh.scouting.multicast]
            enabled = false
            "#,
        );
        let s = Settings::merge(
            &args(&[
                "--listen",
                "tcp/127.0.0.1:7001",
                "--export",
                "b",
                "--prefix",
                "clisite",
            ]),
            f,
        )
        .unwrap();
        assert_eq!(s.socket, PathBuf::from("/from/file.sock"));
        assert_eq!(s.listen, ["tcp/127.0.0.1:7000", "tcp/127.0.0.1:7001"]);
        assert!(s.exports("a/x") && s.exports("b"));
        assert_eq!(s.keys.prefix(), Some("clisite"));
        assert_eq!(s.stats_interval, None);
        assert_eq!(s.wait, WaitChoice::Named(WaitName::BusyPoll));
        let spin: FileConfig = toml::from_str("wait = { spins = 100, yields = 0 }").unwrap();
        assert_eq!(
            spin.wait.map(WaitChoice::strategy),
            Some(WaitStrategy::Adaptive {
                spins: 100,
                yields: 0
            })
        );
        assert_eq!(s.qos.len(), 1);
        let ZenohSource::Inline(json) = &s.zenoh else {
            panic!("{:?}", s.zenoh)
        };
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["scouting"]["multicast"]["enabled"], false);
        assert_eq!(v["mode"], "peer");
    }

    #[test]
    fn config_file_typos_and_bad_patterns_are_errors() {
        assert!(toml::from_str::<FileConfig>("exports = [\"a\"]").is_err());
        assert!(toml::from_str::<FileConfig>("export = [\"a*\"]").is_err());
        assert!(toml::from_str::<FileConfig>("[[qos]]\ntopics = \"a\"\nprio = \"data\"").is_err());
        assert!(toml::from_str::<FileConfig>("wait = \"sometimes\"").is_err());
        let e = Settings::merge(&args(&["--export", "a/**x"]), FileConfig::default()).unwrap_err();
        assert!(e.contains("--export"), "{e}");
        let both = file("export = [\"a\"]\nzenoh_config = \"z.json5\"\n[zenoh]\nmode = \"peer\"");
        assert!(Settings::merge(&args(&[]), both)
            .unwrap_err()
            .contains("keep one"));
    }

    #[test]
    fn overlapping_imports_deliver_through_the_first() {
        let s = Settings::merge(
            &args(&["--import", "robot/**", "--import", "robot/odom"]),
            FileConfig::default(),
        )
        .unwrap();
        assert_eq!(s.first_import("robot/odom"), Some(0));
        assert_eq!(s.first_import("base"), None);
    }
}
