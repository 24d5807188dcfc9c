//! The projector: consumes `financing.events` (and the outcomes on `financing.outcomes`) into
//! the read models of the `queries` database, created and migrated at start-up. Each event is
//! applied once per aggregate version in the same transaction as its row; an offset is stored
//! only after that commit. An event after a gap fills the gap from the event store first; a
//! view the event store cannot repair is recorded as stuck, and every second the views repaired
//! since (by any projector instance) are cleared.

mod gaps;

use std::time::Duration;

use financing_event_store::{PgEventStore, StoreError};
use financing_messaging::{
    CommandOutcome, DeadLetters, EventEnvelope, Group, HandleMessage, KafkaConfig, PROJECTOR_GROUP,
    PublishError, Topics, WireForm, connections_for,
};
use financing_read_model::{
    MIGRATOR, Projected, ProjectionError, ReadModel, Recorded, UPDATED_TABLES,
};
use financing_runtime::config::{ConfigError, text, var};
use financing_runtime::postgres::{
    connect_options, connect_until_ready, vacuum_while_autovacuum_off,
};
use financing_runtime::retry::Chain;
use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// `QUERIES_DATABASE_URL`: the read models (created and migrated at start-up).
    pub database_url: String,
    /// `DATABASE_URL`: the event store, read to fill gaps in the views.
    pub event_store_url: String,
    pub kafka: KafkaConfig,
    /// `PROJECTOR_GROUP`: the consumer group all instances share.
    pub group_id: String,
    /// `PROJECTOR_CONSUMERS`: consumers in this process, sharing the partitions (one by
    /// default, as the command handler's `COMMAND_HANDLER_CONSUMERS`).
    pub consumers: usize,
}

impl ProjectorConfig {
    pub fn from_env() -> Result<ProjectorConfig, ConfigError> {
        Ok(ProjectorConfig {
            database_url: text(
                "QUERIES_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/queries",
            ),
            event_store_url: text(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/financing",
            ),
            kafka: KafkaConfig::from_env()?,
            group_id: text("PROJECTOR_GROUP", PROJECTOR_GROUP),
            consumers: var("PROJECTOR_CONSUMERS", 1)?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create a Kafka client")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("invalid DATABASE_URL")]
    EventStore(#[source] sqlx::Error),
    #[error("shutdown requested during start-up")]
    ShutDown,
}

/// Why a message cannot be finished now: it is retried, never skipped.
#[derive(Debug, thiserror::Error)]
pub enum Transient {
    #[error("the read model database failed")]
    Database(#[from] sqlx::Error),
    #[error("the event store failed")]
    EventStore(#[source] sqlx::Error),
    #[error("the event store cannot be read")]
    Unreadable(#[source] StoreError),
    #[error("the dead-letter topic did not take the message")]
    DeadLetter(#[from] PublishError),
}

pub struct Projector {
    group: Group,
    dead_letters: DeadLetters,
    read_model: ReadModel,
    event_store: PgEventStore,
    topics: Topics,
    shutdown: CancellationToken,
}

impl Projector {
    /// Connects to the read-model database (creating and migrating it) and creates the topics,
    /// retrying while either is unavailable, then joins the consumer group.
    pub async fn build(
        config: ProjectorConfig,
        shutdown: CancellationToken,
    ) -> Result<Projector, StartError> {
        let url = &config.database_url;
        let connections = connections_for(config.consumers);
        let pool = connect_until_ready("the read models", url, &MIGRATOR, connections, &shutdown)
            .await
            .ok_or(StartError::ShutDown)?;
        let topics = config.kafka.topics();
        let subscribed = [&*topics.events, &topics.outcomes];
        let group = config
            .kafka
            .join(&config.group_id, &subscribed, config.consumers, &shutdown)
            .await
            .ok_or(StartError::ShutDown)??;
        // Read only when a gap needs filling: connections are made then.
        let event_store = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(
                connect_options(&config.event_store_url).map_err(StartError::EventStore)?,
            );
        Ok(Projector {
            group,
            dead_letters: DeadLetters::new(&config.kafka)?,
            read_model: ReadModel::new(pool),
            event_store: PgEventStore::new(event_store),
            topics,
            shutdown,
        })
    }

    /// Projects until shutdown, then commits the stored offsets.
    pub async fn run_until_stopped(self) {
        tracing::info!("projector consuming");
        let upkeep = tokio::spawn(vacuum_while_autovacuum_off(
            self.read_model.pool().clone(),
            UPDATED_TABLES,
            self.shutdown.clone(),
        ));
        let repaired = tokio::spawn(clear_repaired_views(
            self.read_model.clone(),
            self.shutdown.clone(),
        ));
        self.group.consume(&self, &self.shutdown).await;
        upkeep.abort();
        repaired.abort();
        tracing::info!("projector stopped");
    }

    async fn project(&self, message: &BorrowedMessage<'_>) -> Result<(), Transient> {
        let event = match EventEnvelope::decode(message) {
            Ok(event) => event,
            Err(error) => return Ok(self.dead_letters.send(message, &error.to_string()).await?),
        };
        let meta = &event.meta;
        let (aggregate_id, version, kind) =
            (meta.aggregate_id, meta.version, event.event.type_name());
        let projected = self.read_model.project(&event).await;
        let result = match &projected {
            Ok(projected) => projected.result(),
            Err(ProjectionError::Contradiction(_)) => "contradiction",
            Err(ProjectionError::Database(_)) => "error",
        };
        metrics::counter!("financing_events_projected_total", "result" => result).increment(1);
        match projected {
            Ok(Projected::Applied) => {
                tracing::debug!(%aggregate_id, version, kind, "projected");
            }
            Ok(Projected::Duplicate) => {
                tracing::debug!(%aggregate_id, version, kind, "already projected, skipped");
            }
            Ok(Projected::Gap { at }) => self.fill_gap(&event, at).await?,
            Err(ProjectionError::Contradiction(reason)) => {
                self.dead_letters.send(message, &reason).await?;
            }
            Err(ProjectionError::Database(error)) => return Err(error.into()),
        }
        Ok(())
    }

    async fn record_outcome(&self, message: &BorrowedMessage<'_>) -> Result<(), Transient> {
        let outcome = match CommandOutcome::decode(message) {
            Ok(outcome) => outcome,
            Err(error) => return Ok(self.dead_letters.send(message, &error.to_string()).await?),
        };
        match self.read_model.record_outcome(&outcome).await {
            Ok(()) => {
                let (command_id, reason) = (outcome.command_id, &outcome.reason);
                let failed = outcome.failed;
                tracing::debug!(%command_id, failed, %reason, "outcome recorded");
            }
            Err(ProjectionError::Contradiction(reason)) => {
                self.dead_letters.send(message, &reason).await?;
            }
            Err(ProjectionError::Database(error)) => return Err(error.into()),
        }
        Ok(())
    }
}

impl HandleMessage for Projector {
    type Error = Transient;

    async fn handle(&self, message: &BorrowedMessage<'_>) -> Result<(), Transient> {
        if message.topic() == self.topics.outcomes {
            self.record_outcome(message).await
        } else {
            self.project(message).await
        }
    }

    /// Every event and outcome in one transaction, all or nothing. A message that cannot be
    /// read, an event after a gap (as every event of a stuck view is) or contradicting the
    /// view, or the database failing leave them all to `handle`, one at a time.
    async fn handle_all(&self, messages: &[BorrowedMessage<'_>]) -> bool {
        let mut events = Vec::new();
        let mut outcomes = Vec::new();
        for message in messages {
            if message.topic() == self.topics.outcomes {
                let Ok(outcome) = CommandOutcome::decode(message) else {
                    return false;
                };
                outcomes.push(outcome);
            } else {
                let Ok(event) = EventEnvelope::decode(message) else {
                    return false;
                };
                events.push(event);
            }
        }
        // Outcomes after the events: an outcome and an event of one command give the same
        // status in either order (APPLIED wins over FAILED), as when they come one at a time
        // from their two topics.
        let recorded: Vec<Recorded<'_>> = (events.iter().map(Recorded::Event))
            .chain(outcomes.iter().map(Recorded::Outcome))
            .collect();
        match self.read_model.record_all(&recorded).await {
            Ok(Some(results)) => {
                for projected in results.into_iter().flatten() {
                    metrics::counter!("financing_events_projected_total", "result" => projected.result())
                        .increment(1);
                }
                true
            }
            // A gap or a contradiction: each is met again, and dealt with, on its own.
            Ok(None) => false,
            Err(error) => {
                tracing::debug!(error = %Chain(&error), "a batch is projected one message at a time");
                false
            }
        }
    }

    async fn set_aside(
        &self,
        message: &BorrowedMessage<'_>,
        reason: &str,
    ) -> Result<(), Transient> {
        Ok(self.dead_letters.send(message, reason).await?)
    }
}

/// How often the stuck views are checked for a repair.
const REPAIRS_CHECKED_EVERY: Duration = Duration::from_secs(1);

/// Clears the stuck views that moved again, every [`REPAIRS_CHECKED_EVERY`], until shutdown.
async fn clear_repaired_views(read_model: ReadModel, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(REPAIRS_CHECKED_EVERY) => {}
        }
        match read_model.clear_repaired().await {
            Ok(cleared) => {
                for view in cleared {
                    let (aggregate_type, aggregate_id) = (&view.aggregate_type, view.aggregate_id);
                    tracing::info!(aggregate_type, %aggregate_id, "a stuck view moves again");
                }
            }
            Err(error) => tracing::warn!(error = %Chain(&error), "cannot check the stuck views"),
        }
    }
}
