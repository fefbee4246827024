//! Latency histograms and their summaries.

use hdrhistogram::Histogram;

/// Highest value a histogram tracks: one minute in ns. Larger values are
/// clamped (they would be a hang, which the run timeout reports anyway).
pub const MAX_TRACKABLE_NS: u64 = 60_000_000_000;

/// An HDR histogram of nanosecond values, 3 significant digits.
#[derive(Clone, Debug)]
pub struct Hist {
    inner: Histogram<u64>,
}

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

impl Hist {
    /// An empty histogram covering 1 ns ..= [`MAX_TRACKABLE_NS`].
    pub fn new() -> Self {
        // The bounds are constants that satisfy hdrhistogram's requirements
        // (low >= 1, high >= 2 * low, sigfig <= 5), so creation cannot fail.
        let inner = Histogram::new_with_bounds(1, MAX_TRACKABLE_NS, 3)
            .expect("constant histogram bounds are valid");
        Self { inner }
    }

    /// Records one value (clamped into the trackable range; 0 becomes 1).
    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.inner.saturating_record(ns.max(1));
    }

    /// Number of recorded values.
    pub fn len(&self) -> u64 {
        self.inner.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Adds all values of `other`.
    pub fn merge(&mut self, other: &Hist) {
        for v in other.inner.iter_recorded() {
            self.inner
                .saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }

    /// The recorded buckets as `(value, count)` pairs: a compact, lossless
    /// (at the histogram's precision) form for sending between processes.
    pub fn to_pairs(&self) -> Vec<(u64, u64)> {
        self.inner
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    /// Rebuilds a histogram from [`Hist::to_pairs`] output.
    pub fn from_pairs(pairs: &[(u64, u64)]) -> Self {
        let mut h = Self::new();
        for &(value, count) in pairs {
            h.inner.saturating_record_n(value.max(1), count);
        }
        h
    }

    /// Percentiles of the recorded values, `None` when empty.
    pub fn summary(&self) -> Option<Summary> {
        if self.is_empty() {
            return None;
        }
        let q = |p: f64| self.inner.value_at_quantile(p);
        Some(Summary {
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            max: self.inner.max(),
            samples: self.inner.len(),
        })
    }
}

/// Percentiles in ns (each the highest value equivalent to the bucket, as
/// hdrhistogram reports them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value.
    pub max: u64,
    /// Number of values.
    pub samples: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_uniform_values() {
        let mut h = Hist::new();
        for v in 1..=1000u64 {
            h.record(v * 100);
        }
        let s = h.summary().unwrap();
        assert_eq!(s.samples, 1000);
        // 3 significant digits: within 0.1 %.
        let near =
            |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 * 0.001 + 1.0;
        assert!(near(s.p50, 50_000), "{s:?}");
        assert!(near(s.p90, 90_000), "{s:?}");
        assert!(near(s.p99, 99_000), "{s:?}");
        assert!(near(s.p999, 99_900), "{s:?}");
        assert!(near(s.max, 100_000), "{s:?}");
        assert!(s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.p999 && s.p999 <= s.max);
    }

    #[test]
    fn pairs_roundtrip_and_merge() {
        let mut a = Hist::new();
        for v in [0u64, 5, 5, 7_000, 123_456_789, u64::MAX] {
            a.record(v);
        }
        let b = Hist::from_pairs(&a.to_pairs());
        assert_eq!(a.summary(), b.summary());
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!(m.len(), 12);
        assert_eq!(m.summary().unwrap().p50, a.summary().unwrap().p50);
        assert!(Hist::new().summary().is_none());
    }
}
