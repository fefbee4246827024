//! Zenoh's configuration: the pass-through section (or file), then the bridge's endpoints
//! and scouting flag on top.

use zenoh::Config;

use crate::config::{Settings, ZenohSource};

fn json_list(items: &[String]) -> String {
    serde_json::Value::from(items.to_vec()).to_string()
}

fn set(config: &mut Config, key: &str, value: &str, what: &str) -> Result<(), String> {
    config
        .insert_json5(key, value)
        .map_err(|e| format!("{what}: Zenoh refused {value}: {e}"))
}

/// The Zenoh configuration the bridge opens its session with.
///
/// * The `[zenoh]` table or the `zenoh_config` file is taken unchanged; without either, Zenoh's
///   defaults with a connect retry of 250 ms growing to 1 s (Zenoh's own: 1 s to 4 s), so that
///   a restarted peer is reached again within about a second.
/// * `--listen` and `--connect` replace the endpoints of that configuration when given.
/// * With explicit endpoints multicast scouting is off unless `--scout`; `--scout` turns it on
///   in any case.
pub fn zenoh_config(s: &Settings) -> Result<Config, String> {
    let mut config = match &s.zenoh {
        ZenohSource::Default => {
            let mut c = Config::default();
            set(
                &mut c,
                "connect/retry",
                r#"{"period_init_ms": 250, "period_max_ms": 1000, "period_increase_factor": 2}"#,
                "connect retry",
            )?;
            c
        }
        ZenohSource::Inline(json) => Config::from_json5(json)
            .map_err(|e| format!("the [zenoh] table of the config file: {e}"))?,
        ZenohSource::File(path) => Config::from_file(path)
            .map_err(|e| format!("the Zenoh config file {}: {e}", path.display()))?,
    };
    if !s.listen.is_empty() {
        set(
            &mut config,
            "listen/endpoints",
            &json_list(&s.listen),
            "--listen",
        )?;
    }
    if !s.connect.is_empty() {
        set(
            &mut config,
            "connect/endpoints",
            &json_list(&s.connect),
            "--connect",
        )?;
    }
    if s.scout || !s.listen.is_empty() || !s.connect.is_empty() {
        let on = if s.scout { "true" } else { "false" };
        set(&mut config, "scouting/multicast/enabled", on, "--scout")?;
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::BridgeArgs;
    use crate::config::FileConfig;
    use clap::Parser;

    fn settings(args: &[&str], file: &str) -> Settings {
        let args =
            BridgeArgs::try_parse_from(std::iter::once("b").chain(args.iter().copied())).unwrap();
        let file: FileConfig = toml::from_str(file).unwrap();
        Settings::merge(&args, file).unwrap()
    }

    fn get(c: &Config, key: &str) -> serde_json::Value {
        serde_json::from_str(&c.get_json(key).unwrap()).unwrap()
    }

    #[test]
    fn explicit_endpoints_turn_scouting_off_unless_asked() {
        let c = zenoh_config(&settings(
            &["--export", "a", "--listen", "tcp/127.0.0.1:7447"],
            "",
        ))
        .unwrap();
        assert_eq!(get(&c, "scouting/multicast/enabled"), false);
        assert_eq!(
            get(&c, "listen/endpoints"),
            serde_json::json!(["tcp/127.0.0.1:7447"])
        );
        let c = zenoh_config(&settings(
            &[
                "--export",
                "a",
                "--connect",
                "tcp/127.0.0.1:7447",
                "--scout",
            ],
            "",
        ))
        .unwrap();
        assert_eq!(get(&c, "scouting/multicast/enabled"), true);
        assert_eq!(get(&c, "connect/retry")["period_max_ms"], 1000);
    }

    #[test]
    fn the_zenoh_section_passes_through_and_flags_win() {
        let c = zenoh_config(&settings(
            &["--export", "a", "--connect", "tcp/127.0.0.1:9"],
            "[zenoh]\nmode = \"client\"\n[zenoh.connect]\nendpoints = [\"tcp/127.0.0.1:8\"]\n",
        ))
        .unwrap();
        assert_eq!(get(&c, "mode"), "client");
        assert_eq!(
            get(&c, "connect/endpoints"),
            serde_json::json!(["tcp/127.0.0.1:9"])
        );
    }

    #[test]
    fn bad_endpoints_and_bad_sections_are_refused() {
        let e =
            zenoh_config(&settings(&["--export", "a", "--listen", "nonsense"], "")).unwrap_err();
        assert!(e.contains("--listen"), "{e}");
        let e =
            zenoh_config(&settings(&["--export", "a"], "[zenoh]\nno_such_key = 1\n")).unwrap_err();
        assert!(e.contains("[zenoh]"), "{e}");
    }
}
