//! The relayer: publishes the event store's committed events to `financing.events`, keyed by
//! aggregate id (and the outcomes of commands that produced no event to `financing.outcomes`),
//! every `RELAY_INTERVAL_MS` and as soon as Postgres announces a commit. It works in bounded
//! batches under a lock (two instances never publish at once), never skips an event (an event
//! is unpublished until marked, however late its transaction commits), keeps each aggregate's
//! order, and marks as published only what the broker acknowledged. An aggregate whose events
//! the broker does not take (its partition is failing) is held back with a backoff of its own
//! while the others keep flowing.

mod held_back;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use financing_domain::CommandId;
use financing_event_store::{
    EVENTS_APPENDED_CHANNEL, MIGRATOR, Outbox, RecordedEvent, RecordedOutcome, StoreError,
};
use financing_messaging::{
    KafkaConfig, OutcomeMessage, Publish, PublishError, Publisher, Record, Topics,
};
use financing_runtime::config::{ConfigError, text, var};
use financing_runtime::postgres::connect_until_ready;
use financing_runtime::retry::{Chain, outage_backoff, until_ok};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::held_back::HeldBack;

#[derive(Debug, Clone)]
pub struct RelayerConfig {
    /// `DATABASE_URL`: the event store.
    pub database_url: String,
    pub kafka: KafkaConfig,
    /// `RELAY_INTERVAL_MS`: how often to look for events without a wake-up.
    pub interval: Duration,
    /// `RELAY_BATCH_SIZE`: events claimed and published at a time.
    pub batch_size: u32,
}

impl RelayerConfig {
    pub fn from_env() -> Result<RelayerConfig, ConfigError> {
        Ok(RelayerConfig {
            database_url: text(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/financing",
            ),
            kafka: KafkaConfig::from_env()?,
            interval: Duration::from_millis(var("RELAY_INTERVAL_MS", 100)?),
            batch_size: var("RELAY_BATCH_SIZE", 500)?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot read or mark events")]
    Store(#[from] StoreError),
    #[error(
        "none of the {claimed} events and outcomes claimed was acknowledged; they stay unpublished"
    )]
    NotAcknowledged {
        claimed: usize,
        #[source]
        first: PublishError,
    },
}

pub struct Relayer<P = Publisher> {
    pool: PgPool,
    outbox: Outbox,
    publisher: P,
    topics: Topics,
    config: RelayerConfig,
    held_back: Mutex<HeldBack>,
    shutdown: CancellationToken,
}

impl Relayer {
    /// Connects to the event store (creating and migrating it if needed), retrying while it is
    /// unavailable; `None` if shutdown came first.
    pub async fn build(
        config: RelayerConfig,
        shutdown: CancellationToken,
    ) -> Result<Option<Relayer>, rdkafka::error::KafkaError> {
        let url = &config.database_url;
        let connected = connect_until_ready("the event store", url, &MIGRATOR, 4, &shutdown).await;
        let Some(pool) = connected else {
            return Ok(None);
        };
        Ok(Some(Relayer {
            outbox: Outbox::new(pool.clone()),
            pool,
            publisher: Publisher::new(&config.kafka)?,
            topics: config.kafka.topics(),
            config,
            held_back: Mutex::default(),
            shutdown,
        }))
    }
}

impl<P: Publish> Relayer<P> {
    /// The same relayer, publishing through `publisher` instead.
    pub fn publishing_through<Q: Publish>(self, publisher: Q) -> Relayer<Q> {
        Relayer {
            pool: self.pool,
            outbox: self.outbox,
            publisher,
            topics: self.topics,
            config: self.config,
            held_back: self.held_back,
            shutdown: self.shutdown,
        }
    }

    /// Relays until shutdown. Topics are created in the background: until they exist,
    /// publishing fails and is retried like any outage.
    pub async fn run_until_stopped(self) {
        let kafka = self.config.kafka.clone();
        let shutdown = self.shutdown.clone();
        let topics = tokio::spawn(async move {
            until_ok("creating topics", &shutdown, || kafka.ensure_topics()).await;
        });
        let mut wakeups = until_ok("listening for commits", &self.shutdown, || async {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen(EVENTS_APPENDED_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        })
        .await;
        tracing::info!(interval = ?self.config.interval, "relayer running");
        let mut delays = outage_backoff();
        while !self.shutdown.is_cancelled() {
            if let Err(error) = self.relay_pending().await {
                // Commits keep coming during an outage: only the backoff decides the next try.
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(error = %Chain(&error), retry_in = ?delay, "cannot relay yet");
                tokio::select! {
                    _ = self.shutdown.cancelled() => {}
                    _ = tokio::time::sleep(delay) => {}
                }
                continue;
            }
            delays = outage_backoff();
            let woken = async {
                match wakeups.as_mut() {
                    Some(listener) => listener.recv().await.map(drop),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => {}
                _ = tokio::time::sleep(self.config.interval) => {}
                woken = woken => if let Err(error) = woken {
                    // Polling carries on; the listener reconnects on its next use.
                    tracing::warn!(error = %Chain(&error), "commit wake-ups interrupted");
                    tokio::time::sleep(self.config.interval).await;
                }
            }
            // One pass publishes everything committed so far: wake-ups already waiting are
            // answered by it.
            if let Some(listener) = wakeups.as_mut() {
                while listener.next_buffered().is_some() {}
            }
        }
        topics.abort();
        tracing::info!("relayer stopped");
    }

    /// Publishes what is unpublished now, batch after batch, but for the aggregates held back;
    /// returns how many events and outcomes it published. Another relayer holding the lock
    /// means there is nothing to do here. An error if two batches in a row were refused whole:
    /// then it is the broker that is away, not some partitions.
    pub async fn relay_pending(&self) -> Result<usize, RelayError> {
        let mut published = 0;
        let mut refused_whole = false;
        loop {
            let held_back = self.held_back.lock().await.now(Instant::now());
            let Some(claim) = self
                .outbox
                .claim(self.config.batch_size, &held_back)
                .await?
            else {
                return Ok(published);
            };
            let events = claim.events();
            let outcomes = claim.outcomes();
            let event_records: Vec<Record> = events.iter().map(event_record).collect();
            let outcome_records: Vec<Record> = outcomes.iter().map(outcome_record).collect();
            // Sent in position order through an idempotent producer: one aggregate's events
            // reach its partition in order.
            let (event_results, outcome_results) = futures::join!(
                self.publish_all(&self.topics.events, &event_records),
                self.publish_all(&self.topics.outcomes, &outcome_records),
            );

            let acknowledged: Vec<bool> = event_results.iter().map(Result::is_ok).collect();
            let marked = publishable(events, &acknowledged);
            let decided: Vec<CommandId> = outcomes
                .iter()
                .zip(&outcome_results)
                .filter_map(|(outcome, result)| result.is_ok().then_some(outcome.command_id))
                .collect();
            let claimed = events.len() + outcomes.len();
            let full = events.len().max(outcomes.len()) >= self.config.batch_size as usize;
            let failing = failing_aggregates(events, &acknowledged, outcomes, &outcome_results);
            self.held_back.lock().await.record(
                events.iter().map(|e| e.aggregate_id),
                &failing,
                Instant::now(),
            );
            claim.mark_published(&marked, &decided).await?;
            published += marked.len() + decided.len();

            let mut failures = event_results
                .into_iter()
                .chain(outcome_results)
                .filter_map(Result::err);
            let Some(first) = failures.next() else {
                tracing::debug!(published = claimed, "batch relayed");
                if full {
                    continue;
                }
                return Ok(published);
            };
            let failed = 1 + failures.count();
            if failed == claimed {
                if refused_whole {
                    return Err(RelayError::NotAcknowledged { claimed, first });
                }
                // Perhaps only these aggregates' partitions: the next claim leaves them out.
                refused_whole = true;
                tracing::warn!(
                    claimed,
                    aggregates = failing.len(),
                    error = %Chain(&first),
                    "the broker took none of a batch; its aggregates are held back"
                );
                continue;
            }
            refused_whole = false;
            tracing::warn!(
                failed,
                claimed,
                aggregates = failing.len(),
                error = %Chain(&first),
                "the broker did not take some events; their aggregates are held back, the rest \
                 goes on"
            );
            if !full {
                return Ok(published);
            }
        }
    }

    async fn publish_all(&self, topic: &str, records: &[Record]) -> Vec<Result<(), PublishError>> {
        let sends = records.iter().map(|r| self.publisher.publish(topic, r));
        futures::future::join_all(sends).await
    }
}

fn event_record(event: &RecordedEvent) -> Record {
    financing_messaging::event_record(&event.meta(), &event.event_type, &event.payload)
}

fn outcome_record(outcome: &RecordedOutcome) -> Record {
    OutcomeMessage {
        command_id: outcome.command_id,
        failed: outcome.failed,
        aggregate_type: outcome.aggregate_type.clone(),
        aggregate_id: outcome.aggregate_id,
        reason: outcome.reason.clone(),
        decided_at: outcome.decided_at,
    }
    .record()
}

/// The positions that may be marked published: each aggregate's acknowledged events up to its
/// first unacknowledged one. The rest is published again later, after the failed event, so
/// consumers still see every version of an aggregate in order.
fn publishable(events: &[RecordedEvent], acknowledged: &[bool]) -> Vec<i64> {
    let mut failed: HashSet<Uuid> = HashSet::new();
    events
        .iter()
        .zip(acknowledged)
        .filter_map(|(event, ok)| {
            if !ok {
                failed.insert(event.aggregate_id);
            }
            (*ok && !failed.contains(&event.aggregate_id)).then_some(event.global_position)
        })
        .collect()
}

/// The aggregates with an event or an outcome the broker did not acknowledge.
fn failing_aggregates(
    events: &[RecordedEvent],
    acknowledged: &[bool],
    outcomes: &[RecordedOutcome],
    outcome_results: &[Result<(), PublishError>],
) -> Vec<Uuid> {
    let events = events
        .iter()
        .zip(acknowledged)
        .filter(|(_, ok)| !**ok)
        .map(|(event, _)| event.aggregate_id);
    let outcomes = outcomes
        .iter()
        .zip(outcome_results)
        .filter(|(_, result)| result.is_err())
        .filter_map(|(outcome, _)| outcome.aggregate_id);
    let mut failing: Vec<Uuid> = events.chain(outcomes).collect();
    failing.sort_unstable();
    failing.dedup();
    failing
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use financing_event_store::EventMetadata;

    fn event(position: i64, aggregate_id: Uuid) -> RecordedEvent {
        RecordedEvent {
            global_position: position,
            aggregate_type: "Investor".into(),
            aggregate_id,
            version: position as u64,
            event_type: "InvestorCreated".into(),
            schema_version: 1,
            payload: serde_json::json!({}),
            metadata: EventMetadata {
                event_id: Uuid::new_v4(),
                command_id: CommandId::new_random(),
                correlation_id: Uuid::new_v4(),
                causation_id: Uuid::new_v4(),
            },
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn everything_acknowledged_is_marked() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let events = [event(1, a), event(2, b), event(3, a)];
        assert_eq!(publishable(&events, &[true, true, true]), [1, 2, 3]);
    }

    #[test]
    fn nothing_after_an_aggregate_s_failed_event_is_marked_but_other_aggregates_are() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let events = [
            event(1, a),
            event(2, a),
            event(3, b),
            event(4, a),
            event(5, b),
        ];
        assert_eq!(
            publishable(&events, &[true, false, true, true, true]),
            [1, 3, 5]
        );
    }

    #[test]
    fn nothing_unacknowledged_is_marked() {
        let a = Uuid::new_v4();
        assert!(publishable(&[event(1, a), event(2, a)], &[false, false]).is_empty());
    }
}
