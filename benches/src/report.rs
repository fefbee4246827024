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
    /// `waiters`: the sender's ns per publish of every round, in run order.
    pub per_round_ns: Vec<f64>,
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
            per_round_ns: Vec::new(),
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
        Scenario::Wakeup | Scenario::AsyncWake | Scenario::WaitSet8 => Some("send_to_wake_ns"),
        Scenario::Waiters => Some("publish_ns (sender wall time per message)"),
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
    out.push_str(&ratios(rows));
    out.push_str(&waiting(rows));
    out.push_str(
        "\nMetrics: pingpong = one-way latency (RTT/2), msgs/s counts both directions; \
         throughput, fanin = receive rate at the (single) receiver, no latency; \
         fanout 1→N = publisher wall time per message (fill + send to all N), msgs/s = publishes/s at the sender; \
         wakeup = send-to-wake latency of a receiver blocked in the kernel (CLOCK_MONOTONIC stamped by the sender); \
         asyncwake, waitset8 = the same for async receivers and a WaitSet; \
         waiters = publisher wall time per message (timed in batches of 100) on a lossy topic with 0/1/8 registered, unarmed wake slots. \
         MB/s = payload bytes per message × msgs/s / 10^6.\n",
    );
    out
}

/// The references every shmbus row is read against, as (name, what it is).
const REFERENCES: [(&str, &str); 3] = [
    ("spsc_floor", "minimal SPSC ring, same payload"),
    ("raw_floor", "one cache line, 8 B"),
    ("iceoryx2", "same payload"),
];

/// The reference row for `reference` that a shmbus row in `cell` is compared with:
/// `raw_floor` runs only at 8 B ping-pong, so every ping-pong size is read against that.
fn reference_row<'a>(rows: &'a [Row], reference: &str, row: &Row) -> Option<&'a Row> {
    rows.iter().find(|r| {
        r.transport == reference
            && r.status == Status::Ok
            && r.scenario == row.scenario
            && r.senders == row.senders
            && r.receivers == row.receivers
            && (r.payload_bytes == row.payload_bytes
                || (reference == "raw_floor" && r.scenario == Scenario::PingPong))
    })
}

/// The figure a ratio is taken of: one-way p50 for ping-pong (lower is better), the receive
/// rate for throughput (higher is better).
fn ratio_figure(r: &Row) -> Option<f64> {
    match r.scenario {
        Scenario::PingPong => r.latency.map(|l| l.p50 as f64),
        Scenario::Throughput => r.msgs_per_s,
        _ => None,
    }
}

/// The "ratios" section: every measured shmbus ping-pong and throughput row against
/// `spsc_floor`, `raw_floor` and iceoryx2 of the same run. Empty when there is nothing to
/// compare.
pub fn ratios(rows: &[Row]) -> String {
    let mut lines = Vec::new();
    for row in rows.iter().filter(|r| {
        r.transport.starts_with("shmbus")
            && r.status == Status::Ok
            && matches!(r.scenario, Scenario::PingPong | Scenario::Throughput)
    }) {
        let Some(mine) = ratio_figure(row) else {
            continue;
        };
        let cells: Vec<String> = REFERENCES
            .iter()
            .map(|(reference, _)| {
                reference_row(rows, reference, row)
                    .and_then(|r| Some((r, ratio_figure(r)?)))
                    .filter(|(_, theirs)| *theirs > 0.0)
                    .map_or_else(
                        || "—".to_string(),
                        |(r, theirs)| format!("{:.2}x ({})", mine / theirs, fmt_figure(r, theirs)),
                    )
            })
            .collect();
        if cells.iter().all(|c| c == "—") {
            continue;
        }
        lines.push(format!(
            "| {} | {} {} | {} | {} |",
            row.transport,
            describe_cell(&row.cell()),
            fmt_size(row.payload_bytes),
            fmt_figure(row, mine),
            cells.join(" | ")
        ));
    }
    if lines.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\nRatios (same run): ping-pong = shmbus one-way p50 / the reference's (lower is better; \
         raw_floor is the 8 B cache-line ping-pong); throughput = shmbus msgs/s / the \
         reference's (higher is better).\n\n",
    );
    out.push_str("| shmbus | cell | shmbus |");
    for (reference, what) in REFERENCES {
        let _ = write!(out, " vs {reference} ({what}) |");
    }
    out.push_str("\n|---|---|---:|");
    out.push_str(&"---:|".repeat(REFERENCES.len()));
    out.push('\n');
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The async contenders of `asyncwake` and the goal of issue 12: at most this fraction of the
/// tokio `UnixStream` wake-up latency of the same runtime flavour.
const ASYNC_GOAL: f64 = 0.5;

fn ok_row<'a>(rows: &'a [Row], transport: &str, scenario: Scenario) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.transport == transport && r.scenario == scenario && r.status == Status::Ok)
}

fn p50_p99(r: &Row) -> Option<(u64, u64)> {
    r.latency.map(|l| (l.p50, l.p99))
}

/// (median, max - min) of a row's per-round figures.
fn median_spread(r: &Row) -> Option<(f64, f64)> {
    let median = crate::suite::median(&r.per_round_ns)?;
    let lo = r.per_round_ns.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = r
        .per_round_ns
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    Some((median, hi - lo))
}

/// The issue 12 section: async wake-up against tokio's `UnixStream` (goal: at most 0.5x), a
/// WaitSet over 8 topics against one blocking topic, and the publish cost with registered but
/// unarmed waiters against none (goal: within noise). Empty when none of it ran.
pub fn waiting(rows: &[Row]) -> String {
    let mut lines = Vec::new();
    let wake_pairs = [
        ("shmbus_async_ct", "tokio_unix_ct", true),
        ("shmbus_async_mt", "tokio_unix_mt", true),
        ("shmbus_block", "unix_stream", false),
        ("shmbus_async_ct", "shmbus_block", false),
    ];
    for (mine, theirs, goal) in wake_pairs {
        let (Some(a), Some(b)) = (
            ok_row(rows, mine, Scenario::AsyncWake),
            ok_row(rows, theirs, Scenario::AsyncWake),
        ) else {
            continue;
        };
        let (Some((a50, a99)), Some((b50, b99))) = (p50_p99(a), p50_p99(b)) else {
            continue;
        };
        let r50 = a50 as f64 / b50.max(1) as f64;
        let r99 = a99 as f64 / b99.max(1) as f64;
        let verdict = if !goal {
            "(no goal)".to_string()
        } else if r50 <= ASYNC_GOAL {
            format!("met (p50 ≤ {ASYNC_GOAL}x)")
        } else {
            format!("**missed** (p50 > {ASYNC_GOAL}x)")
        };
        lines.push(format!(
            "| asyncwake | {mine} | {theirs} | {a50} / {a99} ns | {b50} / {b99} ns | {r50:.2}x ({r99:.2}x) | {verdict} |"
        ));
    }
    for (mine, theirs) in [
        ("shmbus_waitset8", "shmbus_block"),
        ("shmbus_waitset1", "shmbus_block"),
    ] {
        let (Some(a), Some(b)) = (
            ok_row(rows, mine, Scenario::WaitSet8),
            ok_row(rows, theirs, Scenario::WaitSet8),
        ) else {
            continue;
        };
        let (Some((a50, a99)), Some((b50, b99))) = (p50_p99(a), p50_p99(b)) else {
            continue;
        };
        lines.push(format!(
            "| waitset8 | {mine} | {theirs} | {a50} / {a99} ns | {b50} / {b99} ns | {:.2}x ({:.2}x) | (no goal) |",
            a50 as f64 / b50.max(1) as f64,
            a99 as f64 / b99.max(1) as f64
        ));
    }
    if let Some((m0, s0)) =
        ok_row(rows, "shmbus_waiters0", Scenario::Waiters).and_then(median_spread)
    {
        for mine in ["shmbus_waiters1", "shmbus_waiters8"] {
            let Some((m, s)) = ok_row(rows, mine, Scenario::Waiters).and_then(median_spread) else {
                continue;
            };
            let noise = s0.max(s);
            let verdict = if (m - m0).abs() <= noise {
                "met (within noise)"
            } else {
                "**missed** (outside noise)"
            };
            lines.push(format!(
                "| waiters | {mine} | shmbus_waiters0 | {m:.1} ns/publish (spread {s:.1}) | {m0:.1} ns/publish (spread {s0:.1}) | {:+.1} ns ({:.2}x) | {verdict} |",
                m - m0,
                m / m0
            ));
        }
    }
    if lines.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\nWaiting on many topics and async (issue 12), same run: asyncwake and waitset8 compare \
         send-to-wake p50 / p99 (ratio = this / reference, lower is better; goal: shmbus async at \
         most 0.5x tokio's UnixStream of the same runtime flavour); waiters compares the median \
         over rounds of ns per publish (goal: the difference within the larger spread, max - min \
         over rounds, of the two).\n\n",
    );
    out.push_str(
        "| scenario | this | reference | this | reference | ratio p50 (p99) | verdict |\n",
    );
    out.push_str("|---|---|---|---:|---:|---:|---|\n");
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn fmt_figure(r: &Row, v: f64) -> String {
    match r.scenario {
        Scenario::PingPong => format!("{v:.0} ns"),
        _ => format!("{}/s", fmt_si(v)),
    }
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
    fn ratios_compare_shmbus_with_the_floors_of_the_same_run() {
        let mut rows = Vec::new();
        let mut add = |transport: &str, scenario, payload_bytes, p50: Option<u64>, rate| {
            let cell = Cell {
                scenario,
                payload_bytes,
                senders: 1,
                receivers: 1,
            };
            let mut r = Row::new(transport, &cell);
            r.latency = p50.map(|p50| Summary {
                p50,
                p90: p50,
                p99: p50,
                p999: p50,
                max: p50,
                samples: 10,
            });
            r.msgs_per_s = rate;
            rows.push(r);
        };
        add("shmbus_busy", Scenario::PingPong, 64, Some(200), Some(1e6));
        add("spsc_floor", Scenario::PingPong, 64, Some(100), Some(2e6));
        add("raw_floor", Scenario::PingPong, 8, Some(80), Some(3e6));
        add("shmbus_busy", Scenario::Throughput, 64, None, Some(30e6));
        add("spsc_floor", Scenario::Throughput, 64, None, Some(40e6));
        add("iceoryx2", Scenario::Throughput, 64, None, Some(2e6));
        let text = ratios(&rows);
        assert!(
            text.contains(
                "| shmbus_busy | pingpong 64 B | 200 ns | 2.00x (100 ns) | 2.50x (80 ns) | — |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| shmbus_busy | throughput 64 B | 30.00M/s | 0.75x (40.00M/s) | — | 15.00x (2.00M/s) |"),
            "{text}"
        );
        assert!(markdown("# h", &rows).contains("Ratios (same run)"));
        // Nothing to compare: no section.
        assert!(ratios(&rows[..1]).is_empty());
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
