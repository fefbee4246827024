//! Result rows and their three renderings: a markdown table, JSON Lines and
//! an SVG plot (see [`crate::svg`]).

use std::fmt::Write as _;

use serde::Serialize;

use crate::coordinator::Cell;
use crate::stats::Summary;
use crate::suite::describe_cell;
use crate::transport::Scenario;

/// Outcome of a (contender, cell) pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Measured (possibly partially, see the note).
    Ok,
    /// Not applicable; the note says why.
    Skipped,
    /// A run failed; the note has the error.
    Failed,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Skipped => "skipped",
            Status::Failed => "failed",
        }
    }
}

/// One result line.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Contender name.
    pub transport: String,
    /// Scenario.
    pub scenario: Scenario,
    /// Message size.
    pub payload_bytes: usize,
    /// Sending processes.
    pub senders: usize,
    /// Receiving processes.
    pub receivers: usize,
    /// Outcome.
    pub status: Status,
    /// Skip reason, error, or remarks.
    pub note: String,
    /// Percentiles (pingpong: one-way; fanout: per publish; wakeup: send-to-wake).
    pub latency: Option<Summary>,
    /// Message rate.
    pub msgs_per_s: Option<f64>,
    /// Payload byte rate.
    pub bytes_per_s: Option<f64>,
    /// Latency samples, or measured messages for rate-only scenarios.
    pub samples: u64,
    /// Rounds merged.
    pub rounds: u32,
    /// Fan-out: publisher CPU time per message.
    pub sender_cpu_ns_per_msg: Option<f64>,
}

impl Row {
    /// An empty `Ok` row for `cell`.
    pub fn new(transport: &str, cell: &Cell) -> Self {
        Self {
            transport: transport.to_string(),
            scenario: cell.scenario,
            payload_bytes: cell.payload_bytes,
            senders: cell.senders,
            receivers: cell.receivers,
            status: Status::Ok,
            note: String::new(),
            latency: None,
            msgs_per_s: None,
            bytes_per_s: None,
            samples: 0,
            rounds: 0,
            sender_cpu_ns_per_msg: None,
        }
    }

    fn cell(&self) -> Cell {
        Cell {
            scenario: self.scenario,
            payload_bytes: self.payload_bytes,
            senders: self.senders,
            receivers: self.receivers,
        }
    }
}

/// What the percentile columns of a scenario mean (JSON `metric`).
pub fn latency_metric(scenario: Scenario) -> Option<&'static str> {
    match scenario {
        Scenario::PingPong => Some("one_way_ns (RTT/2)"),
        Scenario::FanOut => Some("publish_ns (sender wall time per message)"),
        Scenario::Wakeup => Some("send_to_wake_ns"),
        Scenario::Throughput | Scenario::FanIn => None,
    }
}

/// `8 B`, `64 B`, `1 KiB`, `64 KiB`, `4 MiB`, ...
pub fn fmt_size(bytes: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} B")
    }
}

/// `950`, `12.3k`, `1.23M`, `4.56G`.
pub fn fmt_si(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn opt_u64(v: Option<u64>) -> String {
    v.map_or_else(|| "—".to_string(), |v| v.to_string())
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The markdown report: header line, table of measured (and failed) rows,
/// a list of skipped combinations, and a legend of the metrics.
pub fn markdown(header: &str, rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}\n");
    out.push_str(
        "| transport | scenario | payload | p50 ns | p90 ns | p99 ns | p99.9 ns | max ns | msgs/s | MB/s | samples | notes |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for r in rows.iter().filter(|r| r.status != Status::Skipped) {
        let l = r.latency;
        let note = match r.status {
            Status::Failed => format!("**FAILED**: {}", r.note),
            _ => r.note.clone(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.transport,
            describe_cell(&r.cell()),
            fmt_size(r.payload_bytes),
            opt_u64(l.map(|l| l.p50)),
            opt_u64(l.map(|l| l.p90)),
            opt_u64(l.map(|l| l.p99)),
            opt_u64(l.map(|l| l.p999)),
            opt_u64(l.map(|l| l.max)),
            r.msgs_per_s.map_or_else(|| "—".into(), fmt_si),
            r.bytes_per_s
                .map_or_else(|| "—".into(), |b| format!("{:.1}", b / 1e6)),
            r.samples,
            md_escape(&note),
        );
    }
    // Skipped combinations, grouped by contender and reason.
    let mut skipped: Vec<(&str, &str, Vec<String>)> = Vec::new();
    for r in rows.iter().filter(|r| r.status == Status::Skipped) {
        let what = format!("{} {}", describe_cell(&r.cell()), fmt_size(r.payload_bytes));
        match skipped
            .iter_mut()
            .find(|(t, n, _)| *t == r.transport && *n == r.note)
        {
            Some((_, _, list)) => list.push(what),
            None => skipped.push((&r.transport, &r.note, vec![what])),
        }
    }
    if !skipped.is_empty() {
        out.push_str("\nSkipped:\n");
        for (transport, note, list) in skipped {
            let _ = writeln!(out, "- {transport} ({}): {note}", list.join(", "));
        }
    }
    out.push_str(
        "\nMetrics: pingpong = one-way latency (RTT/2), msgs/s counts both directions; \
         throughput, fanin = receive rate at the (single) receiver, no latency; \
         fanout 1→N = publisher wall time per message (fill + send to all N), msgs/s = publishes/s at the sender; \
         wakeup = send-to-wake latency of a receiver blocked in the kernel (CLOCK_MONOTONIC stamped by the sender). \
         MB/s = payload bytes per message × msgs/s / 10^6.\n",
    );
    out
}

#[derive(Serialize)]
struct JsonRow<'a> {
    transport: &'a str,
    scenario: &'a str,
    payload_bytes: usize,
    senders: usize,
    receivers: usize,
    status: &'a str,
    metric: Option<&'a str>,
    p50_ns: Option<u64>,
    p90_ns: Option<u64>,
    p99_ns: Option<u64>,
    p999_ns: Option<u64>,
    max_ns: Option<u64>,
    msgs_per_s: Option<f64>,
    bytes_per_s: Option<f64>,
    samples: u64,
    rounds: u32,
    sender_cpu_ns_per_msg: Option<f64>,
    note: &'a str,
}

fn round1(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite())
        .map(|v| (v * 10.0).round() / 10.0)
}

/// One JSON object for `row` (no trailing newline).
pub fn json_line(row: &Row) -> String {
    let l = row.latency;
    let j = JsonRow {
        transport: &row.transport,
        scenario: row.scenario.name(),
        payload_bytes: row.payload_bytes,
        senders: row.senders,
        receivers: row.receivers,
        status: row.status.name(),
        metric: latency_metric(row.scenario).filter(|_| l.is_some()),
        p50_ns: l.map(|l| l.p50),
        p90_ns: l.map(|l| l.p90),
        p99_ns: l.map(|l| l.p99),
        p999_ns: l.map(|l| l.p999),
        max_ns: l.map(|l| l.max),
        msgs_per_s: round1(row.msgs_per_s),
        bytes_per_s: round1(row.bytes_per_s),
        samples: row.samples,
        rounds: row.rounds,
        sender_cpu_ns_per_msg: round1(row.sender_cpu_ns_per_msg),
        note: &row.note,
    };
    // Serializing this plain struct (strings, integers, finite floats or
    // null) cannot fail.
    serde_json::to_string(&j).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// All rows as JSON Lines.
pub fn json_lines(rows: &[Row]) -> String {
    rows.iter().map(|r| json_line(r) + "\n").collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        let cell = Cell {
            scenario: Scenario::PingPong,
            payload_bytes: 64,
            senders: 1,
            receivers: 1,
        };
        let mut r = Row::new("pipe", &cell);
        r.latency = Some(Summary {
            p50: 1500,
            p90: 1800,
            p99: 2500,
            p999: 9000,
            max: 12000,
            samples: 1000,
        });
        r.msgs_per_s = Some(654_321.04);
        r.bytes_per_s = Some(654_321.04 * 64.0);
        r.samples = 1000;
        r.rounds = 3;
        r
    }

    #[test]
    fn json_line_has_the_required_keys() {
        let line = json_line(&row());
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        for key in [
            "transport",
            "scenario",
            "payload_bytes",
            "p50_ns",
            "p90_ns",
            "p99_ns",
            "p999_ns",
            "max_ns",
            "msgs_per_s",
            "bytes_per_s",
            "samples",
            "rounds",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {line}");
        }
        assert_eq!(v["transport"], "pipe");
        assert_eq!(v["scenario"], "pingpong");
        assert_eq!(v["payload_bytes"], 64);
        assert_eq!(v["p999_ns"], 9000);
        assert_eq!(v["msgs_per_s"], 654321.0);
        assert_eq!(v["status"], "ok");

        let mut skipped = row();
        skipped.status = Status::Skipped;
        skipped.latency = None;
        skipped.msgs_per_s = None;
        let v: serde_json::Value = serde_json::from_str(&json_line(&skipped)).unwrap();
        assert!(v["p50_ns"].is_null() && v["msgs_per_s"].is_null());
        assert_eq!(v["status"], "skipped");
    }

    #[test]
    fn markdown_table_lists_rows_and_skips() {
        let mut skipped = row();
        skipped.transport = "mqueue".into();
        skipped.status = Status::Skipped;
        skipped.note = "too big".into();
        let md = markdown("# header", &[row(), skipped]);
        assert!(md.starts_with("# header\n"));
        assert!(md.contains("| pipe | pingpong | 64 B | 1500 | 1800 | 2500 | 9000 | 12000 | 654.3k | 41.9 | 1000 |"), "{md}");
        assert!(md.contains("- mqueue (pingpong 64 B): too big"), "{md}");
        assert!(!md.contains("| mqueue |"));
    }

    #[test]
    fn sizes_and_rates_format() {
        assert_eq!(fmt_size(8), "8 B");
        assert_eq!(fmt_size(1024), "1 KiB");
        assert_eq!(fmt_size(65536), "64 KiB");
        assert_eq!(fmt_size(4 << 20), "4 MiB");
        assert_eq!(fmt_size(1000), "1000 B");
        assert_eq!(fmt_si(950.0), "950");
        assert_eq!(fmt_si(12_345.0), "12.3k");
        assert_eq!(fmt_si(1_234_567.0), "1.23M");
    }
}
