//! Latency samples: kept whole (a run holds at most a few hundred thousand)
//! and sorted once, so percentiles are exact nearest-rank values.

use std::time::Duration;

/// Latencies in nanoseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples(Vec<u64>);

impl Samples {
    /// Room for `n` samples.
    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    /// Adds one latency.
    pub fn record(&mut self, d: Duration) {
        self.0.push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: Self) {
        self.0.extend(other.0);
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No samples?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `p`-quantile (0 < p ≤ 1) in microseconds by nearest rank; `None`
    /// without samples.
    pub fn percentile_us(&mut self, p: f64) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        self.0.sort_unstable();
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let rank = ((p * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
        #[allow(clippy::cast_precision_loss)]
        Some(self.0[rank - 1] as f64 / 1_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Samples;
    use std::time::Duration;

    #[test]
    fn nearest_rank() {
        let mut s = Samples::default();
        assert_eq!(s.percentile_us(0.5), None);
        for us in (1..=100).rev() {
            s.record(Duration::from_micros(us));
        }
        assert_eq!(s.percentile_us(0.5), Some(50.0));
        assert_eq!(s.percentile_us(0.99), Some(99.0));
        assert_eq!(s.percentile_us(1.0), Some(100.0));
    }
}
