//! Latency samples and their percentiles.

use std::fmt::Write;
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Samples(Vec<Duration>);

impl Samples {
    pub fn push(&mut self, sample: Duration) {
        self.0.push(sample);
    }

    /// The sample below which `fraction` of all samples fall (nearest rank).
    fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
        let rank = (fraction * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    pub fn summary(&self) -> String {
        let mut sorted = self.0.clone();
        sorted.sort();
        if sorted.is_empty() {
            return "no samples".into();
        }
        let mut line = String::new();
        for (label, fraction) in [("median", 0.5), ("p90", 0.9), ("p99", 0.99)] {
            let value = Self::percentile(&sorted, fraction);
            let _ = write!(line, "{label} {:>7.1} ms  ", value.as_secs_f64() * 1e3);
        }
        let max = sorted[sorted.len() - 1];
        let _ = write!(line, "max {:>7.1} ms", max.as_secs_f64() * 1e3);
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(Samples::percentile(&sorted, 0.5), Duration::from_millis(50));
        assert_eq!(
            Samples::percentile(&sorted, 0.99),
            Duration::from_millis(99)
        );
        assert_eq!(
            Samples::percentile(&sorted[..1], 0.99),
            Duration::from_millis(1)
        );
    }
}
