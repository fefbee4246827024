//! Helpers shared by the subcommands: connecting, name checks, tables and units.

use std::path::Path;

use bus_client::{Bus, Geometry, RawSubscriber, StartAt, TopicEvent, WatchError};

use crate::error::CliError;

/// Connect to the daemon at `socket`.
pub fn connect(socket: &Path) -> Result<Bus, CliError> {
    Bus::connect_to(socket).map_err(|e| CliError::connect(e, socket))
}

/// Check a topic name before asking the daemon (exit code 2 with the rule it breaks).
pub fn check_topic(name: &str) -> Result<(), CliError> {
    bus_proto::names::validate_topic_name(name)
        .map_err(|e| CliError::usage(format!("invalid topic name {name:?}: {e}")))
}

/// Subscribe to `topic` whatever its type. A topic that does not exist yet is waited for
/// (saying so on standard error), never polled: the daemon attaches the subscriber when the
/// topic is created, before its creator can publish, so the first message is not missed. A
/// tool that watches must not create a topic, or the real publisher could no longer create it
/// with its own type.
pub fn watch(
    bus: &Bus,
    socket: &Path,
    topic: &str,
    start: StartAt,
) -> Result<RawSubscriber, CliError> {
    let mut watch = bus
        .watch_topics(topic)
        .existing(start)
        .open()
        .map_err(|e| CliError::open(e, socket))?;
    if watch.existing() == 0 {
        eprintln!(
            "shmbus: topic '{topic}' does not exist yet; waiting for it to be created (Ctrl-C to stop)"
        );
    }
    loop {
        match watch.recv() {
            Ok(TopicEvent::Created(sub)) => return Ok(*sub),
            Ok(_) => continue,
            Err(WatchError::Open(e)) => return Err(CliError::open(e, socket)),
            Err(e) => {
                return Err(CliError::failure(format!(
                    "waiting for topic '{topic}': {e}"
                )))
            }
        }
    }
}

/// `bytes` for byte topics, else the type's name and size.
pub fn type_label(spec: &Geometry) -> String {
    let t = &spec.type_info;
    if t.is_bytes() {
        "bytes".to_string()
    } else {
        format!("{} ({} B)", t.name, t.size)
    }
}

/// A byte count with a binary unit: `512 B`, `4.0 KiB`, `1.5 GiB`.
pub fn human_bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} {}", UNITS[0])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A rate with an SI prefix: `950`, `12.3k`, `4.50M`.
pub fn human_rate(r: f64) -> String {
    if r >= 1e9 {
        format!("{:.2}G", r / 1e9)
    } else if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else if r >= 1e4 {
        format!("{:.1}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

/// A plain text table: left-aligned text columns, right-aligned number columns.
pub struct Table {
    headers: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns as `(header, right-aligned)`.
    pub fn new(columns: &[(&'static str, bool)]) -> Table {
        Table {
            headers: columns.iter().map(|c| c.0).collect(),
            right: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut s = String::new();
            for (i, cell) in cells.enumerate() {
                let w = widths.get(i).copied().unwrap_or(0);
                let pad = w.saturating_sub(cell.chars().count());
                if i > 0 {
                    s.push_str("  ");
                }
                if self.right.get(i).copied().unwrap_or(false) {
                    s.extend(std::iter::repeat_n(' ', pad));
                    s.push_str(cell);
                } else {
                    s.push_str(cell);
                    s.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(s.trim_end());
            out.push('\n');
        };
        line(&mut self.headers.iter().copied());
        for row in &self.rows {
            line(&mut row.iter().map(String::as_str));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&[("NAME", false), ("N", true)]);
        t.row(vec!["a".into(), "1000".into()]);
        t.row(vec!["long/name".into(), "2".into()]);
        assert_eq!(
            t.render(),
            "NAME          N\na          1000\nlong/name     2\n"
        );
    }

    #[test]
    fn units() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(4096.0), "4.0 KiB");
        assert_eq!(human_bytes(1.5 * 1024.0 * 1024.0 * 1024.0), "1.5 GiB");
        assert_eq!(human_rate(950.0), "950");
        assert_eq!(human_rate(12_345.0), "12.3k");
        assert_eq!(human_rate(4_500_000.0), "4.50M");
    }
}
