//! `shmbus hz`: message rate and inter-arrival jitter over a sliding window.

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use bus_client::{RecvTimeoutError, StartAt};
use clap::Args;

use crate::error::{is_broken_pipe, CliError};
use crate::util;

#[derive(Debug, Args)]
#[command(
    long_about = "Subscribe to TOPIC (of any payload type) and print, once per second, the \
message rate and the inter-arrival times over the last --window messages: mean, min, max and \
standard deviation, like `ros2 topic hz`. The rate is 1 / mean inter-arrival time. On lossy topics \
the messages lost to lag are counted too."
)]
pub struct HzArgs {
    /// The topic, like `robot/odom`.
    topic: String,

    /// Compute the statistics over the last N inter-arrival times.
    #[arg(long, default_value_t = 10_000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    window: u64,

    /// Stop after COUNT messages (then print a last report).
    #[arg(short = 'n', long = "count", value_name = "COUNT",
          value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
}

const REPORT_EVERY: Duration = Duration::from_secs(1);

pub fn run(socket: &Path, args: &HzArgs) -> Result<(), CliError> {
    util::check_topic(&args.topic)?;
    let bus = util::connect(socket)?;
    let mut sub = util::watch(&bus, socket, &args.topic, StartAt::Latest)?;
    eprintln!("listening on {}", args.topic);
    let mut stats = Window::new(args.window as usize);
    let mut last: Option<Instant> = None;
    let mut received = 0u64;
    let mut lost = 0u64;
    let mut new_since_report = 0u64;
    let mut next_report = Instant::now() + REPORT_EVERY;
    let mut stdout = std::io::stdout().lock();
    let mut report = |stats: &Window, new: u64, lost: u64| -> Result<bool, CliError> {
        let text = if new == 0 {
            "no new messages\n".to_string()
        } else {
            stats.describe(lost)
        };
        match stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Ok(()) => Ok(true),
            Err(e) if is_broken_pipe(&e) => Ok(false),
            Err(e) => Err(CliError::io(e, "writing to standard output")),
        }
    };
    loop {
        let timeout = next_report.saturating_duration_since(Instant::now());
        match sub.recv_timeout(timeout) {
            Ok(sample) => {
                drop(sample);
                let now = Instant::now();
                if let Some(prev) = last {
                    stats.push(now.duration_since(prev).as_secs_f64());
                }
                last = Some(now);
                received += 1;
                new_since_report += 1;
                if args.count.is_some_and(|n| received >= n) {
                    report(&stats, new_since_report, lost)?;
                    return Ok(());
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Lagged(n)) => lost += n,
            Err(RecvTimeoutError::Closed) => {
                if new_since_report > 0 {
                    report(&stats, new_since_report, lost)?;
                }
                return Ok(());
            }
            Err(RecvTimeoutError::Evicted) => {
                return Err(CliError::recv(bus_client::RecvError::Evicted, &args.topic))
            }
            Err(e) => {
                return Err(CliError::failure(format!(
                    "receiving from '{}': {e}",
                    args.topic
                )))
            }
        }
        if Instant::now() >= next_report {
            if !report(&stats, new_since_report, lost)? {
                return Ok(());
            }
            new_since_report = 0;
            next_report = Instant::now() + REPORT_EVERY;
        }
    }
}

/// The last `cap` inter-arrival times, in seconds.
struct Window {
    gaps: VecDeque<f64>,
    cap: usize,
}

impl Window {
    fn new(cap: usize) -> Window {
        Window {
            gaps: VecDeque::with_capacity(cap.min(1 << 16)),
            cap: cap.max(1),
        }
    }

    fn push(&mut self, gap: f64) {
        if self.gaps.len() == self.cap {
            self.gaps.pop_front();
        }
        self.gaps.push_back(gap);
    }

    /// (mean, min, max, population std dev), or `None` before two messages arrived.
    fn summary(&self) -> Option<(f64, f64, f64, f64)> {
        if self.gaps.is_empty() {
            return None;
        }
        let n = self.gaps.len() as f64;
        let mean = self.gaps.iter().sum::<f64>() / n;
        let min = self.gaps.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.gaps.iter().copied().fold(0.0, f64::max);
        let var = self.gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n;
        Some((mean, min, max, var.sqrt()))
    }

    fn describe(&self, lost: u64) -> String {
        let lost = if lost > 0 {
            format!("  lost {lost}")
        } else {
            String::new()
        };
        match self.summary() {
            None => format!("1 message (a rate needs two){lost}\n"),
            Some((mean, min, max, sd)) => {
                let rate = if mean > 0.0 {
                    1.0 / mean
                } else {
                    f64::INFINITY
                };
                format!(
                    "average rate: {rate:.3} Hz  mean {}  min {}  max {}  std dev {}  window {}{lost}\n",
                    ms(mean),
                    ms(min),
                    ms(max),
                    ms(sd),
                    self.gaps.len()
                )
            }
        }
    }
}

fn ms(secs: f64) -> String {
    format!("{:.3} ms", secs * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_slides_and_summarises() {
        let mut w = Window::new(3);
        assert!(w.summary().is_none());
        for g in [10.0, 0.1, 0.2, 0.3] {
            w.push(g);
        }
        let (mean, min, max, sd) = w.summary().unwrap();
        assert!((mean - 0.2).abs() < 1e-12);
        assert_eq!((min, max), (0.1, 0.3));
        assert!((sd - (0.02f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!(w.describe(0).starts_with("average rate: 5.000 Hz"));
        assert!(w.describe(4).trim_end().ends_with("lost 4"));
    }
}
