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

/// How long a watcher waits before it looks again, `watched` after it began: a tenth of that,
/// between 2 ms and 1 s. Each latency is then measured to within a tenth, and a watcher looks
/// less and less often as the system slows, so that thousands of them cannot flood the query
/// service (and slow it down further).
pub fn next_look(watched: Duration) -> Duration {
    (watched / 10).clamp(Duration::from_millis(2), Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_look_a_tenth_of_the_time_watched_later() {
        assert_eq!(next_look(Duration::ZERO), Duration::from_millis(2));
        assert_eq!(
            next_look(Duration::from_millis(50)),
            Duration::from_millis(5)
        );
        assert_eq!(next_look(Duration::from_secs(60)), Duration::from_secs(1));
    }

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
