//! Partitions the broker did not take a message for (failing, or not answering): the relayer
//! sends them nothing for a while, longer after each failure, and leaves the aggregates routed
//! to them out of its claims, so that they never hold back the others. When the wait is over,
//! one message probes the partition, on its own, and only its answer frees the partition.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// The first wait after a failure; it doubles with each failure in a row.
const FIRST_HOLD: Duration = Duration::from_secs(1);
const LONGEST_HOLD: Duration = Duration::from_secs(60);
/// The most aggregates left out of one claim (the rest wait their turn in the claims).
const MOST_LEFT_OUT: usize = 10_000;

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
    /// The aggregates routed to the partition met while it was held.
    aggregates: HashSet<Uuid>,
}

impl HeldBack {
    /// Where a message of `aggregate` for `partition` of `topic` goes at `now`.
    pub fn route(&mut self, topic: &str, partition: i32, aggregate: Uuid, now: Instant) -> Route {
        let Some(hold) = self.partitions.get_mut(&(topic.to_owned(), partition)) else {
            return Route::Send;
        };
        hold.aggregates.insert(aggregate);
        match hold.until {
            Some(until) if until <= now => {
                hold.until = None;
                Route::Probe
            }
            _ => Route::Skip,
        }
    }

    /// The aggregates whose messages for `topic` the next claim should leave out at `now`:
    /// those of its partitions held, or being probed.
    pub fn left_out(&self, topic: &str, now: Instant) -> Vec<Uuid> {
        self.partitions
            .iter()
            .filter(|((held, _), hold)| held == topic && hold.until.is_none_or(|until| until > now))
            .flat_map(|(_, hold)| hold.aggregates.iter().copied())
            .take(MOST_LEFT_OUT)
            .collect()
    }

    /// A message of `aggregate` was refused by `partition` (or not answered): the partition is
    /// held, longer if it already was.
    pub fn refused(&mut self, topic: &str, partition: i32, aggregate: Uuid, now: Instant) {
        let hold = self
            .partitions
            .entry((topic.to_owned(), partition))
            .or_insert_with(|| Hold {
                failures: 0,
                until: None,
                aggregates: HashSet::new(),
            });
        hold.aggregates.insert(aggregate);
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
        let (held, other) = (Uuid::new_v4(), Uuid::new_v4());
        let mut back = HeldBack::default();
        let start = Instant::now();
        back.refused(TOPIC, 1, held, start);

        assert_eq!(back.route(TOPIC, 1, other, start), Route::Skip);
        assert_eq!(
            back.route(TOPIC, 2, other, start),
            Route::Send,
            "other partitions flow"
        );
        let mut left_out = back.left_out(TOPIC, start);
        left_out.sort();
        let mut expected = vec![held, other];
        expected.sort();
        assert_eq!(
            left_out, expected,
            "every aggregate met on the held partition"
        );

        let later = start + FIRST_HOLD;
        assert_eq!(back.route(TOPIC, 1, held, later), Route::Probe);
        assert_eq!(
            back.route(TOPIC, 1, other, later),
            Route::Skip,
            "one probe at a time"
        );
        assert_eq!(
            back.left_out(TOPIC, later).len(),
            2,
            "left out while the probe is out"
        );
    }

    #[test]
    fn a_failed_probe_holds_twice_as_long_and_a_taken_one_frees_the_partition() {
        let aggregate = Uuid::new_v4();
        let mut back = HeldBack::default();
        let start = Instant::now();
        back.refused(TOPIC, 0, aggregate, start);
        let probing = start + FIRST_HOLD;
        assert_eq!(back.route(TOPIC, 0, aggregate, probing), Route::Probe);

        back.probed(TOPIC, 0, false, probing);
        assert_eq!(
            back.route(TOPIC, 0, aggregate, probing + FIRST_HOLD),
            Route::Skip
        );
        let again = probing + FIRST_HOLD * 2;
        assert_eq!(back.route(TOPIC, 0, aggregate, again), Route::Probe);

        back.probed(TOPIC, 0, true, again);
        assert_eq!(back.route(TOPIC, 0, aggregate, again), Route::Send);
        assert!(back.left_out(TOPIC, again).is_empty());
    }

    #[test]
    fn a_held_partition_leaves_out_its_aggregates_on_its_own_topic_only() {
        let aggregate = Uuid::new_v4();
        let mut back = HeldBack::default();
        let now = Instant::now();
        back.refused("financing.outcomes", 0, aggregate, now);

        assert_eq!(back.left_out("financing.outcomes", now), [aggregate]);
        assert!(back.left_out(TOPIC, now).is_empty(), "its events flow");
    }

    #[test]
    fn the_broker_takes_nothing_when_every_partition_is_held() {
        let mut back = HeldBack::default();
        let now = Instant::now();
        back.refused(TOPIC, 0, Uuid::new_v4(), now);
        assert!(!back.all_held(TOPIC, 2));
        back.refused(TOPIC, 1, Uuid::new_v4(), now);
        assert!(back.all_held(TOPIC, 2));
    }

    #[test]
    fn the_wait_doubles_up_to_a_ceiling() {
        assert_eq!(hold_after(1), FIRST_HOLD);
        assert_eq!(hold_after(2), FIRST_HOLD * 2);
        assert_eq!(hold_after(60), LONGEST_HOLD);
    }
}
