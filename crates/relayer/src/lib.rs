//! The relayer: publishes the event store's committed events to `financing.events`, keyed by
//! aggregate id (and the outcomes of commands that produced no event to `financing.outcomes`),
//! every `RELAY_INTERVAL_MS` and as soon as Postgres announces a commit. It works in bounded
//! batches under a lock (two instances never publish at once), never skips an event (an event
//! is unpublished until marked, however late its transaction commits), keeps each aggregate's
//! order, and marks as published only what the broker acknowledged. A partition that does not
//! take messages (failing) is held back with a backoff of its own, left out of the claims,
//! while the others keep flowing.

mod held_back;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use financing_domain::CommandId;
use financing_event_store::{
    EVENTS_APPENDED_CHANNEL, HeldPartitions, LeftOut, MIGRATOR, Outbox, PgEventStore, Published,
    RecordedEvent, StoreError, UPDATED_TABLES,
};
use financing_messaging::{
    KafkaConfig, Publish, PublishError, Publisher, Record, Topics, WireForm, partition_for,
};
use financing_runtime::config::{ConfigError, text, var};
use financing_runtime::postgres::{connect_until_ready, vacuum_while_autovacuum_off};
use financing_runtime::retry::{Chain, outage_backoff, until_ok};
use rdkafka::error::KafkaError;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::held_back::{HeldBack, Route};

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
    #[error("cannot reach the broker")]
    Broker(#[source] KafkaError),
    #[error("the broker has no topic {0} yet")]
    NoTopic(String),
    #[error("the broker takes nothing: every partition of {topic} refused or did not answer")]
    BrokerAway {
        topic: String,
        #[source]
        last: Option<PublishError>,
    },
}

/// How soon the relayer looks again after a pass that published something: events committed
/// meanwhile may have left their wake-up to the ones it just published.
const FOLLOW_UP: Duration = Duration::from_millis(5);
/// How long the partition counts read from the broker are trusted.
const PARTITIONS_FRESH_FOR: Duration = Duration::from_secs(60);

pub struct Relayer<P = Publisher> {
    pool: PgPool,
    outbox: Outbox,
    publisher: P,
    topics: Topics,
    config: RelayerConfig,
    held_back: Arc<Mutex<HeldBack>>,
    partitions: Mutex<Option<(Instant, HashMap<String, i32>)>>,
    shutdown: CancellationToken,
}

impl Relayer {
    /// Connects to the event store (creating and migrating it if needed), retrying while it is
    /// unavailable; `None` if shutdown came first.
    pub async fn build(
        config: RelayerConfig,
        shutdown: CancellationToken,
    ) -> Result<Option<Relayer>, KafkaError> {
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
            held_back: Arc::default(),
            partitions: Mutex::default(),
            shutdown,
        }))
    }
}

/// A message ready to go: where, and what to mark once the broker has it.
struct Outgoing {
    topic: String,
    partition: i32,
    record: Record,
    published: Published,
}

impl<P: Publish + Clone + 'static> Relayer<P> {
    /// The same relayer, publishing through `publisher` instead.
    pub fn publishing_through<Q: Publish>(self, publisher: Q) -> Relayer<Q> {
        Relayer {
            pool: self.pool,
            outbox: self.outbox,
            publisher,
            topics: self.topics,
            config: self.config,
            held_back: self.held_back,
            partitions: self.partitions,
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
        let upkeep = tokio::spawn(vacuum_while_autovacuum_off(
            self.pool.clone(),
            UPDATED_TABLES,
            self.shutdown.clone(),
        ));
        let backlog = tokio::spawn(watch_backlog(
            PgEventStore::new(self.pool.clone()),
            self.shutdown.clone(),
        ));
        let mut wakeups = until_ok("listening for commits", &self.shutdown, || async {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen(EVENTS_APPENDED_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        })
        .await;
        tracing::info!(interval = ?self.config.interval, "relayer running");
        let mut delays = outage_backoff();
        let mut published = 0;
        while !self.shutdown.is_cancelled() {
            published = match self.relay_after(published).await {
                Ok(published) => published,
                Err(error) => {
                    // Commits keep coming during an outage: only the backoff decides the next try.
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(error = %Chain(&error), retry_in = ?delay, "cannot relay yet");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            };
            delays = outage_backoff();
            // Appends that commit together wake the relayer once (see the event store's
            // migration 0005): after a pass that found events, look again soon.
            let wait = if published > 0 {
                FOLLOW_UP.min(self.config.interval)
            } else {
                self.config.interval
            };
            let woken = async {
                match wakeups.as_mut() {
                    Some(listener) => listener.recv().await.map(drop),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => {}
                _ = tokio::time::sleep(wait) => {}
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
        upkeep.abort();
        backlog.abort();
        tracing::info!("relayer stopped");
    }

    /// One pass of the loop, after one that published `before`: after an empty pass (an idle
    /// poll, or a wake-up) it first asks the outbox whether anything waits, in one query, and
    /// with nothing there it asks neither the lock nor the broker; after a busy pass more is
    /// likely waiting, so it goes straight to [`Relayer::relay_pending`].
    async fn relay_after(&self, before: usize) -> Result<usize, RelayError> {
        if before == 0 && !self.outbox.has_unpublished().await? {
            return Ok(0);
        }
        self.relay_pending().await
    }

    /// Publishes what is unpublished now, batch after batch, leaving out what goes to a held
    /// partition; returns how many events and outcomes it published. Another relayer holding
    /// the lock means there is nothing to do here. An error when the broker cannot be reached,
    /// or takes nothing at all.
    pub async fn relay_pending(&self) -> Result<usize, RelayError> {
        let partitions = self.partition_counts().await?;
        let count = |topic: &str| {
            partitions
                .get(topic)
                .copied()
                .ok_or_else(|| RelayError::NoTopic(topic.to_owned()))
        };
        let (events_topic, outcomes_topic) = (&self.topics.events, &self.topics.outcomes);
        let (event_partitions, outcome_partitions) = (count(events_topic)?, count(outcomes_topic)?);
        let mut published = 0;
        let partition_counts = (event_partitions, outcome_partitions);
        let mut left_out = self.left_out(partition_counts).await;
        loop {
            let claim = self.outbox.claim(self.config.batch_size, &left_out).await?;
            let Some(claim) = claim else {
                return Ok(published);
            };
            let (events, outcomes) = (claim.events(), claim.outcomes());
            let full = events.len().max(outcomes.len()) >= self.config.batch_size as usize;
            // Sent in position order through an idempotent producer, each aggregate to its own
            // partition: one aggregate's events reach it in order.
            let outgoing = events
                .iter()
                .map(|event| Outgoing {
                    topic: events_topic.clone(),
                    partition: partition_for(event.aggregate_id, event_partitions),
                    record: event_record(event),
                    published: Published::Event(event.global_position),
                })
                .chain(outcomes.iter().map(|outcome| {
                    let key = outcome.aggregate_id.unwrap_or(outcome.command_id.as_uuid());
                    Outgoing {
                        topic: outcomes_topic.clone(),
                        partition: partition_for(key, outcome_partitions),
                        record: outcome.record(),
                        published: if outcome.failed {
                            Published::Failure(outcome.command_id)
                        } else {
                            Published::Rejection(outcome.command_id)
                        },
                    }
                }));
            let (sends, probes) = self.route(outgoing).await;
            for probe in probes {
                self.probe(probe);
            }
            let results = futures::future::join_all(sends.iter().map(|out| {
                let Outgoing {
                    topic,
                    partition,
                    record,
                    ..
                } = out;
                self.publisher.publish_to(topic, Some(*partition), record)
            }))
            .await;

            let acknowledged: Vec<Published> = sends
                .iter()
                .zip(&results)
                .filter(|(_, result)| result.is_ok())
                .map(|(out, _)| out.published)
                .collect();
            let acked_positions: HashSet<i64> = acknowledged
                .iter()
                .filter_map(|p| match p {
                    Published::Event(position) => Some(*position),
                    _ => None,
                })
                .collect();
            let event_acks: Vec<bool> = events
                .iter()
                .map(|event| acked_positions.contains(&event.global_position))
                .collect();
            record_relay_times(events, &event_acks);
            let marked = publishable(events, &event_acks);
            let rejected = commands(&acknowledged, |p| match p {
                Published::Rejection(command) => Some(command),
                _ => None,
            });
            let failed = commands(&acknowledged, |p| match p {
                Published::Failure(command) => Some(command),
                _ => None,
            });
            let now = Instant::now();
            let mut last_refusal = None;
            {
                let mut held_back = self.held_back.lock().await;
                for (out, result) in sends.iter().zip(results) {
                    if let Err(error) = result {
                        held_back.refused(&out.topic, out.partition, now);
                        last_refusal = Some(error);
                    }
                }
                if last_refusal.is_some() && held_back.all_held(events_topic, event_partitions) {
                    drop(held_back);
                    claim.mark_published(&marked, &rejected, &failed).await?;
                    return Err(RelayError::BrokerAway {
                        topic: events_topic.clone(),
                        last: last_refusal,
                    });
                }
            }
            claim.mark_published(&marked, &rejected, &failed).await?;
            published += marked.len() + rejected.len() + failed.len();
            metrics::counter!("financing_events_published_total").increment(marked.len() as u64);
            metrics::counter!("financing_outcomes_published_total")
                .increment((rejected.len() + failed.len()) as u64);
            if let Some(error) = &last_refusal {
                tracing::warn!(
                    error = %Chain(error),
                    "the broker refused some messages; their partitions are held back, the \
                     others go on"
                );
            }
            if !full {
                return Ok(published);
            }
            // A full claim that sent nothing and met no partition it had not left out would
            // come back the same at once: the pass ends, the held wait their turn.
            let next = self.left_out(partition_counts).await;
            if sends.is_empty() && next == left_out {
                return Ok(published);
            }
            left_out = next;
        }
    }

    /// What the next claim leaves out: the partitions held back of the events and the
    /// outcomes topics, of `(events, outcomes)` partitions.
    async fn left_out(&self, (events, outcomes): (i32, i32)) -> LeftOut {
        let (held_back, now) = (self.held_back.lock().await, Instant::now());
        LeftOut {
            events: HeldPartitions {
                of: events,
                held: held_back.left_out(&self.topics.events, now),
            },
            outcomes: HeldPartitions {
                of: outcomes,
                held: held_back.left_out(&self.topics.outcomes, now),
            },
        }
    }

    /// Splits what is ready into what is sent now and the probes of partitions whose wait is
    /// over; what goes to a held partition stays unpublished.
    async fn route(
        &self,
        outgoing: impl Iterator<Item = Outgoing>,
    ) -> (Vec<Outgoing>, Vec<Outgoing>) {
        let mut held_back = self.held_back.lock().await;
        let now = Instant::now();
        let (mut sends, mut probes) = (Vec::new(), Vec::new());
        for out in outgoing {
            match held_back.route(&out.topic, out.partition, now) {
                Route::Send => sends.push(out),
                Route::Probe => probes.push(out),
                Route::Skip => {}
            }
        }
        (sends, probes)
    }

    /// Sends one message to a held partition on its own, and frees the partition if the broker
    /// takes it; nothing waits for the answer.
    fn probe(&self, out: Outgoing) {
        let (publisher, outbox) = (self.publisher.clone(), self.outbox.clone());
        let held_back = Arc::clone(&self.held_back);
        tokio::spawn(async move {
            let sent = publisher
                .publish_to(&out.topic, Some(out.partition), &out.record)
                .await;
            let taken = match sent {
                Ok(()) => outbox.mark_one(out.published).await.is_ok(),
                Err(_) => false,
            };
            let (topic, partition) = (&out.topic, out.partition);
            tracing::info!(topic, partition, taken, "probed a held partition");
            held_back
                .lock()
                .await
                .probed(topic, partition, taken, Instant::now());
        });
    }

    /// The partitions of the events and outcomes topics, read from the broker at most every
    /// minute.
    async fn partition_counts(&self) -> Result<HashMap<String, i32>, RelayError> {
        let mut known = self.partitions.lock().await;
        if let Some((read_at, counts)) = known.as_ref()
            && read_at.elapsed() < PARTITIONS_FRESH_FOR
        {
            return Ok(counts.clone());
        }
        let topics = [self.topics.events.as_str(), &self.topics.outcomes];
        let counts = self
            .config
            .kafka
            .partition_counts(&topics)
            .await
            .map_err(RelayError::Broker)?;
        if counts.len() == topics.len() {
            *known = Some((Instant::now(), counts.clone()));
        }
        Ok(counts)
    }
}

fn commands(
    published: &[Published],
    which: impl Fn(&Published) -> Option<&CommandId>,
) -> Vec<CommandId> {
    published.iter().filter_map(|p| which(p).copied()).collect()
}

fn event_record(event: &RecordedEvent) -> Record {
    financing_messaging::event_record(&event.meta(), &event.event_type, &event.payload)
}

/// How long each event the broker acknowledged took from its recording to the
/// acknowledgement (`financing_relay_seconds`).
fn record_relay_times(events: &[RecordedEvent], acknowledged: &[bool]) {
    let now = Utc::now();
    let histogram = metrics::histogram!("financing_relay_seconds");
    for (event, _) in events.iter().zip(acknowledged).filter(|(_, ok)| **ok) {
        histogram.record(seconds_between(event.recorded_at, now));
    }
}

/// Seconds from `then` to `now`, 0 if `now` is earlier (clocks apart).
fn seconds_between(then: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    (now - then)
        .to_std()
        .map_or(0.0, |waited| waited.as_secs_f64())
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

/// How often the outbox's backlog is read for the metrics.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// Every few seconds until shutdown, the events not published yet and how long the oldest has
/// waited (`financing_outbox_unpublished`, `financing_outbox_lag_seconds`), whichever relayer
/// publishes them and whatever partitions are held back.
async fn watch_backlog(store: PgEventStore, shutdown: CancellationToken) {
    loop {
        match store.backlog().await {
            Ok(backlog) => {
                let waited = backlog
                    .oldest_unpublished
                    .map_or(0.0, |oldest| seconds_between(oldest, Utc::now()));
                metrics::gauge!("financing_outbox_unpublished")
                    .set(backlog.unpublished_events as f64);
                metrics::gauge!("financing_outbox_lag_seconds").set(waited);
            }
            Err(error) => {
                tracing::debug!(error = %Chain(&error), "cannot read the outbox's backlog");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(BACKLOG_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
                actor: None,
            },
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn a_wait_is_the_seconds_between_two_times_and_never_negative() {
        let then = Utc::now();
        let later = then + chrono::Duration::milliseconds(1_500);
        assert_eq!(seconds_between(then, later), 1.5);
        assert_eq!(seconds_between(later, then), 0.0, "clocks apart");
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
