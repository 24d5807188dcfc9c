//! Partitions the broker did not take a message for (failing, or not answering): the relayer
//! sends them nothing for a while, longer after each failure, and leaves them out of its claims
//! (whatever waits for them, however many aggregates), so that they never hold back the others.
//! When the wait is over, one message probes the partition, on its own, and only its answer
//! frees the partition.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The first wait after a failure; it doubles with each failure in a row.
const FIRST_HOLD: Duration = Duration::from_secs(1);
const LONGEST_HOLD: Duration = Duration::from_secs(60);

/// What to do with a message for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Send,
    /// The partition is held: not now.
    Skip,
    /// The partition's wait is over: send this one alone, as a probe.
    Probe,
}

#[derive(Debug, Default)]
pub struct HeldBack {
    partitions: HashMap<(String, i32), Hold>,
}

#[derive(Debug)]
struct Hold {
    failures: u32,
    /// `None` while a probe is out.
    until: Option<Instant>,
}

impl HeldBack {
    /// Where a message for `partition` of `topic` goes at `now`.
    pub fn route(&mut self, topic: &str, partition: i32, now: Instant) -> Route {
        let Some(hold) = self.partitions.get_mut(&(topic.to_owned(), partition)) else {
            return Route::Send;
        };
        match hold.until {
            Some(until) if until <= now => {
                hold.until = None;
                Route::Probe
            }
            _ => Route::Skip,
        }
    }

    /// The partitions of `topic` the next claim should leave out at `now`: those held, or
    /// being probed, in order.
    pub fn left_out(&self, topic: &str, now: Instant) -> Vec<i32> {
        let mut left_out: Vec<i32> = self
            .partitions
            .iter()
            .filter(|((held, _), hold)| held == topic && hold.until.is_none_or(|until| until > now))
            .map(|((_, partition), _)| *partition)
            .collect();
        left_out.sort_unstable();
        left_out
    }

    /// A message was refused by `partition` (or not answered): the partition is held, longer
    /// if it already was.
    pub fn refused(&mut self, topic: &str, partition: i32, now: Instant) {
        let hold = self
            .partitions
            .entry((topic.to_owned(), partition))
            .or_insert(Hold {
                failures: 0,
                until: None,
            });
        if hold.until.is_none_or(|until| until <= now) {
            hold.failures += 1;
            hold.until = Some(now + hold_after(hold.failures));
        }
    }

    /// The probe of `partition` was answered: the partition is free again if it took the
    /// message, else held longer.
    pub fn probed(&mut self, topic: &str, partition: i32, taken: bool, now: Instant) {
        let key = (topic.to_owned(), partition);
        if taken {
            self.partitions.remove(&key);
        } else if let Some(hold) = self.partitions.get_mut(&key) {
            hold.failures += 1;
            hold.until = Some(now + hold_after(hold.failures));
        }
    }

    /// Whether every one of the topic's `partitions` is held: the broker takes nothing.
    pub fn all_held(&self, topic: &str, partitions: i32) -> bool {
        (0..partitions).all(|p| self.partitions.contains_key(&(topic.to_owned(), p)))
    }
}

fn hold_after(failures: u32) -> Duration {
    FIRST_HOLD
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(LONGEST_HOLD)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: &str = "financing.events";

    #[test]
    fn a_refused_partition_is_skipped_then_probed_once_its_wait_is_over() {
        let mut back = HeldBack::default();
        let start = Instant::now();
        back.refused(TOPIC, 1, start);

        assert_eq!(back.route(TOPIC, 1, start), Route::Skip);
        assert_eq!(
            back.route(TOPIC, 2, start),
            Route::Send,
            "other partitions flow"
        );
        assert_eq!(back.left_out(TOPIC, start), [1]);

        let later = start + FIRST_HOLD;
        assert!(
            back.left_out(TOPIC, later).is_empty(),
            "claimed again once its wait is over"
        );
        assert_eq!(back.route(TOPIC, 1, later), Route::Probe);
        assert_eq!(
            back.route(TOPIC, 1, later),
            Route::Skip,
            "one probe at a time"
        );
        assert_eq!(
            back.left_out(TOPIC, later),
            [1],
            "left out while the probe is out"
        );
    }

    #[test]
    fn a_failed_probe_holds_twice_as_long_and_a_taken_one_frees_the_partition() {
        let mut back = HeldBack::default();
        let start = Instant::now();
        back.refused(TOPIC, 0, start);
        let probing = start + FIRST_HOLD;
        assert_eq!(back.route(TOPIC, 0, probing), Route::Probe);

        back.probed(TOPIC, 0, false, probing);
        assert_eq!(back.route(TOPIC, 0, probing + FIRST_HOLD), Route::Skip);
        let again = probing + FIRST_HOLD * 2;
        assert_eq!(back.route(TOPIC, 0, again), Route::Probe);

        back.probed(TOPIC, 0, true, again);
        assert_eq!(back.route(TOPIC, 0, again), Route::Send);
        assert!(back.left_out(TOPIC, again).is_empty());
    }

    #[test]
    fn a_held_partition_is_left_out_on_its_own_topic_only() {
        let mut back = HeldBack::default();
        let now = Instant::now();
        back.refused("financing.outcomes", 0, now);

        assert_eq!(back.left_out("financing.outcomes", now), [0]);
        assert!(back.left_out(TOPIC, now).is_empty(), "its events flow");
    }

    #[test]
    fn the_broker_takes_nothing_when_every_partition_is_held() {
        let mut back = HeldBack::default();
        let now = Instant::now();
        back.refused(TOPIC, 0, now);
        assert!(!back.all_held(TOPIC, 2));
        back.refused(TOPIC, 1, now);
        assert!(back.all_held(TOPIC, 2));
    }

    #[test]
    fn the_wait_doubles_up_to_a_ceiling() {
        assert_eq!(hold_after(1), FIRST_HOLD);
        assert_eq!(hold_after(2), FIRST_HOLD * 2);
        assert_eq!(hold_after(60), LONGEST_HOLD);
    }
}
