//! Aggregates whose events the broker did not take (their partition is failing): left out of
//! the relayer's claims for a while, longer after each failure, so that they never hold back
//! the others.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// The first wait after a failure; it doubles with each failure in a row.
const FIRST_WAIT: Duration = Duration::from_millis(100);
const LONGEST_WAIT: Duration = Duration::from_secs(5);
/// The most aggregates left out of one claim (the rest wait their turn in the claims).
const MOST_HELD: usize = 10_000;

#[derive(Debug, Default)]
pub struct HeldBack {
    /// Per aggregate: failures in a row, and until when it is held back.
    failing: HashMap<Uuid, (u32, Instant)>,
}

impl HeldBack {
    /// The aggregates held back at `now`.
    pub fn now(&self, now: Instant) -> Vec<Uuid> {
        self.failing
            .iter()
            .filter(|(_, (_, until))| *until > now)
            .map(|(aggregate, _)| *aggregate)
            .take(MOST_HELD)
            .collect()
    }

    /// After a batch: the aggregates in `failing` are held back longer, the other `relayed`
    /// ones are free again.
    pub fn record(
        &mut self,
        relayed: impl IntoIterator<Item = Uuid>,
        failing: &[Uuid],
        now: Instant,
    ) {
        for aggregate in relayed {
            if !failing.contains(&aggregate) {
                self.failing.remove(&aggregate);
            }
        }
        for aggregate in failing {
            let (failures, until) = self.failing.entry(*aggregate).or_insert((0, now));
            *failures += 1;
            *until = now + wait_after(*failures);
        }
    }
}

fn wait_after(failures: u32) -> Duration {
    FIRST_WAIT
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(LONGEST_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_aggregate_is_held_back_longer_after_each_failure_and_freed_by_a_success() {
        let (failing, healthy) = (Uuid::new_v4(), Uuid::new_v4());
        let mut held = HeldBack::default();
        let start = Instant::now();
        held.record([failing, healthy], &[failing], start);
        assert_eq!(held.now(start), [failing]);
        assert!(held.now(start + FIRST_WAIT).is_empty(), "its wait is over");

        held.record([failing], &[failing], start + FIRST_WAIT);
        assert_eq!(
            held.now(start + FIRST_WAIT * 2),
            [failing],
            "it waits twice as long"
        );

        held.record([failing], &[], start + FIRST_WAIT * 3);
        assert!(held.now(start + FIRST_WAIT * 3).is_empty());
        assert!(held.failing.is_empty(), "a success forgets the failures");
    }

    #[test]
    fn the_wait_doubles_up_to_a_ceiling() {
        assert_eq!(wait_after(1), FIRST_WAIT);
        assert_eq!(wait_after(2), FIRST_WAIT * 2);
        assert_eq!(wait_after(60), LONGEST_WAIT);
    }
}
