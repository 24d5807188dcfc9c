//! Consumer groups: the consumers of one process, which log every partition they are given or
//! lose, consuming side by side; how far a group is behind, partition by partition; and a watch
//! that says loudly when a partition with messages waiting stops moving (nobody holds it, or
//! whoever does is stuck).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use financing_runtime::retry::Chain;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::KafkaConfig;
use crate::consume::{HandleMessage, consume};

/// A consumer that logs its share of the group's partitions whenever it changes.
pub type GroupConsumer = StreamConsumer<GroupContext>;

/// Names a consumer in the logs: its group and its number in the process.
pub struct GroupContext {
    group: String,
    member: usize,
}

impl GroupContext {
    pub(crate) fn new(group: &str, member: usize) -> GroupContext {
        GroupContext {
            group: group.to_owned(),
            member,
        }
    }
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    /// Takes or gives up the partitions as rdkafka's default does, without first asking
    /// librdkafka which rebalance protocol is in use: that question is never answered once the
    /// consumer is closing (librdkafka issue 4041), so dropping a consumer hung for good (seen
    /// in the acceptance suite, a test's thread stuck in `rd_kafka_rebalance_protocol`). These
    /// consumers use the default assignment strategies, whose protocol is eager.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        let partitions = &*partitions;
        let (rebalance, taken) = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                (Rebalance::Assign(partitions), consumer.assign(partitions))
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                (Rebalance::Revoke(partitions), consumer.unassign())
            }
            other => (
                Rebalance::Error(KafkaError::Rebalance(other.into())),
                consumer.unassign(),
            ),
        };
        if let Err(error) = taken {
            let (group, member) = (&self.group, self.member);
            tracing::warn!(group, member, error = %Chain(&error), "cannot apply a rebalance");
        }
        self.post_rebalance(consumer, &rebalance);
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (group, member) = (&self.group, self.member);
        match rebalance {
            Rebalance::Assign(partitions) => {
                let partitions = listed(partitions);
                tracing::info!(group, member, partitions, "partitions assigned");
            }
            Rebalance::Revoke(partitions) => {
                let partitions = listed(partitions);
                tracing::info!(group, member, partitions, "partitions revoked");
            }
            Rebalance::Error(error) => {
                tracing::warn!(group, member, error = %Chain(error), "rebalance failed");
            }
        }
    }
}

fn listed(partitions: &TopicPartitionList) -> String {
    let names: Vec<String> = partitions
        .elements()
        .iter()
        .map(|p| format!("{}/{}", p.topic(), p.partition()))
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// This process's members of a consumer group, subscribed to its topics.
pub struct Group {
    pub(crate) kafka: KafkaConfig,
    pub(crate) name: String,
    pub(crate) topics: Vec<String>,
    pub(crate) consumers: Vec<GroupConsumer>,
}

impl Group {
    /// Runs every consumer until shutdown, concurrently (each handles its partitions in
    /// order), while watching the group's progress.
    pub async fn consume<H: HandleMessage>(&self, handler: &H, shutdown: &CancellationToken) {
        let watch = tokio::spawn(watch_progress(
            self.kafka.clone(),
            self.name.clone(),
            self.topics.clone(),
            shutdown.clone(),
        ));
        let each = self
            .consumers
            .iter()
            .map(|consumer| consume(consumer, handler, shutdown));
        futures::future::join_all(each).await;
        watch.abort();
    }
}

/// Where a group stands on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset; `None` before its first commit there.
    pub committed: Option<i64>,
    /// The partition's earliest and next offsets.
    pub start: i64,
    pub end: i64,
}

impl PartitionLag {
    /// Messages on the partition that the group has not committed past.
    pub fn waiting(&self) -> i64 {
        let from = self.committed.unwrap_or(self.start).max(self.start);
        (self.end - from).max(0)
    }
}

/// Reads a group's committed offsets and its topics' ends, without joining the group.
pub struct LagReader {
    client: BaseConsumer,
    topics: Vec<String>,
    timeout: Duration,
}

impl LagReader {
    pub fn new(
        kafka: &KafkaConfig,
        group: &str,
        topics: &[String],
    ) -> Result<LagReader, KafkaError> {
        Ok(LagReader {
            client: kafka.client_config().set("group.id", group).create()?,
            topics: topics.to_vec(),
            timeout: kafka.delivery_timeout,
        })
    }

    /// Every partition of the topics, in order. Blocking: it waits for the broker's answers.
    pub fn read(&self) -> Result<Vec<PartitionLag>, KafkaError> {
        let mut partitions = TopicPartitionList::new();
        for topic in &self.topics {
            let metadata = self.client.fetch_metadata(Some(topic), self.timeout)?;
            for found in metadata.topics() {
                for partition in found.partitions() {
                    partitions.add_partition(found.name(), partition.id());
                }
            }
        }
        let committed = self.client.committed_offsets(partitions, self.timeout)?;
        committed
            .elements()
            .iter()
            .map(|element| {
                let (topic, partition) = (element.topic(), element.partition());
                let (start, end) = self
                    .client
                    .fetch_watermarks(topic, partition, self.timeout)?;
                Ok(PartitionLag {
                    topic: topic.to_owned(),
                    partition,
                    committed: match element.offset() {
                        Offset::Offset(offset) => Some(offset),
                        _ => None,
                    },
                    start,
                    end,
                })
            })
            .collect()
    }
}

/// A partition with messages waiting whose committed offset has not moved for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    pub topic: String,
    pub partition: i32,
    pub waiting: i64,
    pub still_for: Duration,
}

/// Remembers since when each partition's committed offset has stood still with messages
/// waiting.
#[derive(Debug, Default)]
pub struct ProgressWatch {
    still_since: HashMap<(String, i32), (Option<i64>, Instant)>,
}

impl ProgressWatch {
    /// Takes a reading made at `now`; returns the partitions that have had messages waiting
    /// and no progress for `patience` or longer.
    pub fn stalled(
        &mut self,
        reading: &[PartitionLag],
        now: Instant,
        patience: Duration,
    ) -> Vec<Stall> {
        let mut stalls = Vec::new();
        for lag in reading {
            let key = (lag.topic.clone(), lag.partition);
            let (committed, since) = self.still_since.entry(key).or_insert((lag.committed, now));
            if *committed != lag.committed || lag.waiting() == 0 {
                (*committed, *since) = (lag.committed, now);
                continue;
            }
            let still_for = now.saturating_duration_since(*since);
            if still_for >= patience {
                stalls.push(Stall {
                    topic: lag.topic.clone(),
                    partition: lag.partition,
                    waiting: lag.waiting(),
                    still_for,
                });
            }
        }
        stalls
    }
}

/// How often the watch reads the group's lag.
const WATCH_EVERY: Duration = Duration::from_secs(5);

/// How long a partition may stand still with messages waiting before it is reported: past a
/// crashed member's session timeout and the rebalance that follows, with room for the
/// auto-commit interval.
fn patience(kafka: &KafkaConfig) -> Duration {
    (kafka.session_timeout * 3).max(Duration::from_secs(30))
}

/// Every few seconds until shutdown, reads `group`'s lag (the `financing_consumer_lag` gauge,
/// messages waiting per topic) and logs an error for each partition
/// that has had messages waiting without progress for longer than a crash and a rebalance take,
/// and again at most every half minute while it lasts; and says when it moves again.
async fn watch_progress(
    kafka: KafkaConfig,
    group: String,
    topics: Vec<String>,
    shutdown: CancellationToken,
) {
    let reader = match LagReader::new(&kafka, &group, &topics) {
        Ok(reader) => Arc::new(reader),
        Err(error) => {
            tracing::error!(group, error = %Chain(&error), "cannot watch the group's progress");
            return;
        }
    };
    let patience = patience(&kafka);
    let mut watch = ProgressWatch::default();
    let mut reported: HashMap<(String, i32), Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(WATCH_EVERY) => {}
        }
        let read = Arc::clone(&reader);
        let reading = match tokio::task::spawn_blocking(move || read.read()).await {
            Ok(Ok(reading)) => reading,
            Ok(Err(error)) => {
                tracing::debug!(group, error = %Chain(&error), "cannot read the group's lag");
                continue;
            }
            Err(_) => return,
        };
        let mut waiting: HashMap<&str, i64> = HashMap::new();
        for lag in &reading {
            *waiting.entry(&lag.topic).or_default() += lag.waiting();
        }
        for (topic, waiting) in waiting {
            metrics::gauge!("financing_consumer_lag", "group" => group.clone(), "topic" => topic.to_owned())
                .set(waiting as f64);
        }
        let now = Instant::now();
        let stalls = watch.stalled(&reading, now, patience);
        reported.retain(|(topic, partition), _| {
            let moving = !stalls
                .iter()
                .any(|s| &s.topic == topic && s.partition == *partition);
            if moving {
                tracing::info!(group, topic, partition, "partition moving again");
            }
            !moving
        });
        for stall in stalls {
            let key = (stall.topic.clone(), stall.partition);
            if reported
                .get(&key)
                .is_some_and(|at| now.duration_since(*at) < Duration::from_secs(30))
            {
                continue;
            }
            reported.insert(key, now);
            tracing::error!(
                group,
                topic = stall.topic,
                partition = stall.partition,
                waiting = stall.waiting,
                still_for = ?stall.still_for,
                "no progress on a partition with messages waiting: no consumer holds it, or the \
                 one that does is stuck"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATIENCE: Duration = Duration::from_secs(30);

    fn at(committed: Option<i64>, end: i64) -> Vec<PartitionLag> {
        vec![PartitionLag {
            topic: "t".into(),
            partition: 0,
            committed,
            start: 0,
            end,
        }]
    }

    #[test]
    fn waiting_counts_from_the_commit_or_from_the_start_before_any() {
        assert_eq!(at(Some(4), 10)[0].waiting(), 6);
        assert_eq!(at(None, 10)[0].waiting(), 10);
        let mut truncated = at(Some(2), 10);
        truncated[0].start = 5;
        assert_eq!(truncated[0].waiting(), 5);
    }

    #[test]
    fn a_partition_with_messages_waiting_and_no_progress_is_stalled_after_the_patience() {
        let mut watch = ProgressWatch::default();
        let start = Instant::now();
        assert!(watch.stalled(&at(Some(3), 9), start, PATIENCE).is_empty());
        assert!(
            watch
                .stalled(&at(Some(3), 12), start + PATIENCE / 2, PATIENCE)
                .is_empty()
        );
        let stalls = watch.stalled(&at(Some(3), 12), start + PATIENCE, PATIENCE);
        assert_eq!(
            stalls,
            [Stall {
                topic: "t".into(),
                partition: 0,
                waiting: 9,
                still_for: PATIENCE
            }]
        );
    }

    #[test]
    fn progress_restarts_the_clock() {
        let mut watch = ProgressWatch::default();
        let start = Instant::now();
        watch.stalled(&at(Some(3), 9), start, PATIENCE);
        watch.stalled(&at(Some(4), 9), start + PATIENCE, PATIENCE);
        assert!(
            watch
                .stalled(&at(Some(4), 9), start + PATIENCE + PATIENCE / 2, PATIENCE)
                .is_empty()
        );
    }

    #[test]
    fn a_partition_with_nothing_waiting_is_never_stalled() {
        let mut watch = ProgressWatch::default();
        let start = Instant::now();
        watch.stalled(&at(Some(9), 9), start, PATIENCE);
        assert!(
            watch
                .stalled(&at(Some(9), 9), start + PATIENCE * 3, PATIENCE)
                .is_empty()
        );
    }

    #[test]
    fn a_partition_nobody_ever_committed_on_stalls_too() {
        let mut watch = ProgressWatch::default();
        let start = Instant::now();
        watch.stalled(&at(None, 5), start, PATIENCE);
        assert_eq!(
            watch
                .stalled(&at(None, 5), start + PATIENCE, PATIENCE)
                .len(),
            1
        );
    }
}
