//! The benchmark plan and the interleaved execution of all contenders.
//!
//! For every scenario point (a [`Cell`]) the suite runs every applicable
//! contender once per round, round-robin (A B C, B C A, C A B, ...), and
//! merges each contender's rounds into one histogram / one rate, so slow
//! drift of the machine (frequency, noisy neighbours) hits all alike.

use std::io;

use crate::coordinator::{interrupted, Cell, Coordinator};
use crate::protocol::RoleReport;
use crate::report::{Row, Status};
use crate::roles::BATCH;
use crate::stats::Hist;
use crate::transport::{Contender, Role, Scenario, Support};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Payload sizes of the ping-pong scenario (quick and full runs alike).
pub const PINGPONG_PAYLOADS: [usize; 6] = [8, 64, KIB, 64 * KIB, MIB, 4 * MIB];

/// Payload sizes of the throughput scenario.
pub const THROUGHPUT_PAYLOADS: [usize; 2] = [64, KIB];
/// Receiver counts of the fan-out scenario.
pub const FANOUT_RECEIVERS: [usize; 4] = [1, 2, 4, 8];
/// Sender count of the fan-in scenario.
pub const FANIN_SENDERS: usize = 3;
/// Payload of the fan-out, fan-in and wake-up scenarios.
pub const SMALL_PAYLOAD: usize = 64;

/// Every cell of the selected scenarios, in execution order.
pub fn plan(scenarios: &[Scenario]) -> Vec<Cell> {
    let one = |scenario, payload_bytes| Cell {
        scenario,
        payload_bytes,
        senders: 1,
        receivers: 1,
    };
    let mut cells = Vec::new();
    for &scenario in Scenario::ALL.iter().filter(|s| scenarios.contains(s)) {
        match scenario {
            Scenario::PingPong => cells.extend(PINGPONG_PAYLOADS.iter().map(|&p| one(scenario, p))),
            Scenario::Throughput => {
                cells.extend(THROUGHPUT_PAYLOADS.iter().map(|&p| one(scenario, p)))
            }
            Scenario::FanOut => cells.extend(FANOUT_RECEIVERS.iter().map(|&n| Cell {
                receivers: n,
                ..one(scenario, SMALL_PAYLOAD)
            })),
            Scenario::FanIn => cells.push(Cell {
                senders: FANIN_SENDERS,
                ..one(scenario, SMALL_PAYLOAD)
            }),
            Scenario::Wakeup | Scenario::AsyncWake | Scenario::WaitSet8 | Scenario::Waiters => {
                cells.push(one(scenario, SMALL_PAYLOAD))
            }
        }
    }
    cells
}

/// A contender's merged results for one cell.
#[derive(Default)]
struct Agg {
    hist: Hist,
    msgs: u64,
    window_ns: u64,
    cpu_ns: u64,
    lost: u64,
    rounds: u32,
    /// `waiters`: the sender's ns per publish of every round (window / messages).
    per_round_ns: Vec<f64>,
    skipped: Option<String>,
    failed: Option<String>,
}

fn find(reports: &[(Role, RoleReport)], role: Role) -> io::Result<&RoleReport> {
    reports
        .iter()
        .find(|(r, _)| *r == role)
        .map(|(_, rep)| rep)
        .ok_or_else(|| crate::error::other(format!("no report from {role}")))
}

fn check_delivery(sent: u64, received: u64, lost: u64, who: &str) -> io::Result<()> {
    if received + lost != sent {
        return Err(crate::error::other(format!(
            "{who} received {received} (+{lost} lost) of {sent} messages"
        )));
    }
    Ok(())
}

impl Agg {
    fn active(&self) -> bool {
        self.skipped.is_none() && self.failed.is_none()
    }

    fn absorb(&mut self, cell: &Cell, reports: &[(Role, RoleReport)]) -> io::Result<()> {
        let sender0 = Role::Sender { index: 0 };
        let receiver0 = Role::Receiver { index: 0 };
        match cell.scenario {
            Scenario::PingPong => {
                let ping = find(reports, Role::Ping)?;
                self.hist.merge(&Hist::from_pairs(&ping.hist));
                // Two one-way messages per round trip.
                self.msgs += 2 * ping.measured;
                self.window_ns += ping.window_ns;
            }
            Scenario::Waiters => {
                // A lossy topic nobody reads: only the sender's figures count.
                // The histogram holds ns per BATCH publishes; a round's figure is its median.
                let tx = find(reports, sender0)?;
                let round = Hist::from_pairs(&tx.hist);
                if let Some(s) = round.summary() {
                    self.per_round_ns.push(s.p50 as f64 / BATCH as f64);
                }
                self.hist.merge(&round);
                self.msgs += tx.measured;
                self.window_ns += tx.window_ns;
                self.cpu_ns += tx.cpu_ns;
            }
            Scenario::Throughput
            | Scenario::FanIn
            | Scenario::Wakeup
            | Scenario::AsyncWake
            | Scenario::WaitSet8 => {
                let rx = find(reports, receiver0)?;
                let sent: u64 = reports
                    .iter()
                    .filter(|(r, _)| matches!(r, Role::Sender { .. }))
                    .map(|(_, rep)| rep.total)
                    .sum();
                check_delivery(sent, rx.total, rx.lost, "the receiver")?;
                self.lost += rx.lost;
                if cell.scenario.is_paced() {
                    self.hist.merge(&Hist::from_pairs(&rx.hist));
                } else {
                    self.msgs += rx.measured;
                    self.window_ns += rx.window_ns;
                }
            }
            Scenario::FanOut => {
                let tx = find(reports, sender0)?;
                for index in 0..cell.receivers {
                    let rx = find(reports, Role::Receiver { index })?;
                    check_delivery(tx.total, rx.total, rx.lost, &format!("receiver{index}"))?;
                    self.lost += rx.lost;
                }
                self.hist.merge(&Hist::from_pairs(&tx.hist));
                self.msgs += tx.measured;
                self.window_ns += tx.window_ns;
                self.cpu_ns += tx.cpu_ns;
            }
        }
        self.rounds += 1;
        Ok(())
    }

    fn into_row(self, name: &str, cell: &Cell) -> Row {
        let mut row = Row::new(name, cell);
        row.rounds = self.rounds;
        if let Some(reason) = self.skipped {
            row.status = Status::Skipped;
            row.note = reason;
            return row;
        }
        let mut notes = Vec::new();
        if let Some(err) = self.failed {
            row.status = Status::Failed;
            notes.push(err);
        }
        if self.rounds == 0 {
            if notes.is_empty() {
                row.status = Status::Skipped;
                notes.push("not run (interrupted)".to_string());
            }
            row.note = notes.join("; ");
            return row;
        }
        let has_latency = cell.scenario.is_paced()
            || matches!(cell.scenario, Scenario::PingPong | Scenario::FanOut);
        if cell.scenario == Scenario::Waiters {
            // Batches of BATCH publishes: the percentiles go to the note as ns per publish.
            row.samples = self.hist.len();
            if let Some(l) = self.hist.summary() {
                let per = |v: u64| v as f64 / BATCH as f64;
                notes.push(format!(
                    "batches of {BATCH}: ns/publish p50 {:.2} p99 {:.2} max {:.1}",
                    per(l.p50),
                    per(l.p99),
                    per(l.max)
                ));
            }
        } else if has_latency {
            row.latency = self.hist.summary();
            row.samples = self.hist.len();
        } else {
            row.samples = self.msgs;
        }
        if !cell.scenario.is_paced() && self.window_ns > 0 {
            let rate = self.msgs as f64 * 1e9 / self.window_ns as f64;
            row.msgs_per_s = Some(rate);
            row.bytes_per_s = Some(rate * cell.payload_bytes as f64);
        }
        if let Some(median) = median(&self.per_round_ns) {
            row.per_round_ns = self.per_round_ns.clone();
            let rounds: Vec<String> = self
                .per_round_ns
                .iter()
                .map(|ns| format!("{ns:.2}"))
                .collect();
            notes.push(format!(
                "median ns/publish per round {}; median of rounds {median:.2}",
                rounds.join(" ")
            ));
        }
        if cell.scenario == Scenario::FanOut && self.msgs > 0 {
            let cpu = self.cpu_ns as f64 / self.msgs as f64;
            row.sender_cpu_ns_per_msg = Some(cpu);
            notes.push(format!("sender CPU {cpu:.0} ns/msg"));
        }
        if self.lost > 0 {
            notes.push(format!("{} messages lost", self.lost));
        }
        row.note = notes.join("; ");
        row
    }
}

/// The median of `values` (the mean of the middle two for an even count); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Progress callback: `(done, total, line)`.
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize, &str);

/// Runs `cells` for `contenders`, `rounds` times each, interleaved. Returns
/// one row per (cell, contender), including skipped and failed ones. Stops
/// early (returning the rows finished so far) on SIGINT/SIGTERM.
pub fn run(
    coord: &Coordinator,
    contenders: &[Box<dyn Contender>],
    cells: &[Cell],
    rounds: u32,
    progress: Progress<'_>,
) -> Vec<Row> {
    let total_runs = cells
        .iter()
        .map(|cell| contenders.iter().filter(|c| c.runs(cell.scenario)).count())
        .sum::<usize>()
        * rounds as usize;
    let mut done = 0usize;
    let mut rows = Vec::new();
    for cell in cells {
        // Only the contenders that take part in this scenario (the issue 12 ones are opt-in).
        let contenders: Vec<&dyn Contender> = contenders
            .iter()
            .map(|c| c.as_ref())
            .filter(|c| c.runs(cell.scenario))
            .collect();
        let mut aggs: Vec<Agg> = contenders
            .iter()
            .map(|c| {
                let mut agg = Agg::default();
                if let Support::Skip(reason) = c.supports(&coord.spec(cell)) {
                    agg.skipped = Some(reason);
                }
                agg
            })
            .collect();
        'rounds: for round in 0..rounds as usize {
            for k in 0..contenders.len() {
                // Rotate the start so no contender always runs first.
                let i = (round + k) % contenders.len();
                done += 1;
                if !aggs[i].active() {
                    continue;
                }
                if interrupted() {
                    break 'rounds;
                }
                let contender = contenders[i];
                let spec = coord.spec(cell);
                let outcome = coord
                    .run(contender, &spec)
                    .and_then(|reports| aggs[i].absorb(cell, &reports));
                let label = format!(
                    "{} {} round {}/{} {}",
                    describe_cell(cell),
                    crate::report::fmt_size(cell.payload_bytes),
                    round + 1,
                    rounds,
                    contender.name()
                );
                match outcome {
                    Ok(()) => progress(done, total_runs, &format!("{label}: ok")),
                    Err(e) if interrupted() => {
                        progress(done, total_runs, &format!("{label}: {e}"));
                        break 'rounds;
                    }
                    Err(e) => {
                        progress(done, total_runs, &format!("{label}: FAILED: {e}"));
                        aggs[i].failed = Some(format!("round {}: {e}", round + 1));
                    }
                }
            }
        }
        // Also after an interruption: keep the rounds this cell completed.
        rows.extend(
            contenders
                .iter()
                .zip(aggs)
                .map(|(c, agg)| agg.into_row(c.name(), cell)),
        );
        if interrupted() {
            break;
        }
    }
    rows
}

/// `pingpong`, `fanout 1→4`, `fanin 3→1`, ...
pub fn describe_cell(cell: &Cell) -> String {
    match cell.scenario {
        Scenario::FanOut => format!("fanout 1→{}", cell.receivers),
        Scenario::FanIn => format!("fanin {}→1", cell.senders),
        s => s.name().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_plan_covers_every_scenario_with_small_and_large_payloads() {
        let cells = plan(&Scenario::ALL);
        for s in Scenario::ALL {
            assert!(cells.iter().any(|c| c.scenario == s), "{s}");
        }
        let pp: Vec<_> = cells
            .iter()
            .filter(|c| c.scenario == Scenario::PingPong)
            .map(|c| c.payload_bytes)
            .collect();
        assert!(pp.contains(&64) && pp.iter().any(|&p| p >= MIB));
        assert_eq!(
            cells
                .iter()
                .filter(|c| c.scenario == Scenario::FanOut)
                .count(),
            FANOUT_RECEIVERS.len()
        );
        assert_eq!(plan(&[Scenario::Wakeup]).len(), 1);
        assert_eq!(
            plan(&[Scenario::AsyncWake, Scenario::WaitSet8, Scenario::Waiters]).len(),
            3
        );
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
