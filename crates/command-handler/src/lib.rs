//! The command handler. It consumes client commands (`financing.commands`), integration events
//! (`registering.events`) and domain events (`financing.events`, for the saga's policies), and
//! applies each resulting command to one aggregate in the event store: the messages its
//! consumer has ready all together in one transaction, with the saga's reactions to the events
//! they produce, or, if that batch cannot be written whole, one at a time (the reactions then
//! wait for the events to come back from the broker). Domain rejections are recorded as
//! outcomes. A message whose effect is owed but cannot happen now is parked in the event store
//! and tried again until it goes through; one that can never be handled goes to `financing.dlq`
//! with the reason (a client command's outcome is then FAILED). An offset is stored only once
//! its message's effect is committed.

mod consume;
mod executor;

use std::time::Duration;

use financing_event_store::{MIGRATOR, Parking, PgEventStore, Repository};
use financing_messaging::{
    COMMAND_HANDLER_GROUP, DeadLetters, Group, KafkaConfig, Topics, connections_for,
};
use financing_runtime::config::{ConfigError, text, var};
use financing_runtime::postgres::connect_until_ready;
use tokio_util::sync::CancellationToken;

pub use executor::{Executor, Job, Origin};

#[derive(Debug, Clone)]
pub struct HandlerConfig {
    /// `DATABASE_URL`: the event store (created and migrated at start-up).
    pub database_url: String,
    pub kafka: KafkaConfig,
    /// `COMMAND_HANDLER_GROUP`: the consumer group all instances share.
    pub group_id: String,
    /// `SNAPSHOT_EVERY`: events between two snapshots of an aggregate.
    pub snapshot_every: u64,
    /// `MAX_CONFLICT_ATTEMPTS`: reload-and-decide cycles per command on version conflicts.
    pub max_attempts: u32,
    /// `COMMAND_HANDLER_CONSUMERS`: consumers in this process, sharing the partitions; more
    /// than the topics' partitions leaves some idle. One by default: it takes what every
    /// partition has ready as one batch, and each consumer costs the broker a fetch per
    /// `KAFKA_FETCH_WAIT_MS` while idle (measured in the README's Benchmarks, in git).
    pub consumers: usize,
    /// `PARKED_RETRY_MS`: the wait before a parked message is tried again, doubling after
    /// each failed attempt (at most an hour).
    pub parked_retry: Duration,
}

impl HandlerConfig {
    pub fn from_env() -> Result<HandlerConfig, ConfigError> {
        Ok(HandlerConfig {
            database_url: text(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/financing",
            ),
            kafka: KafkaConfig::from_env()?,
            group_id: text("COMMAND_HANDLER_GROUP", COMMAND_HANDLER_GROUP),
            snapshot_every: var("SNAPSHOT_EVERY", 50)?,
            max_attempts: var("MAX_CONFLICT_ATTEMPTS", 10)?,
            consumers: var("COMMAND_HANDLER_CONSUMERS", 1)?,
            parked_retry: Duration::from_millis(var("PARKED_RETRY_MS", 30_000)?),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create a Kafka client")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("shutdown requested during start-up")]
    ShutDown,
}

pub struct CommandHandler {
    group: Group,
    dead_letters: DeadLetters,
    executor: Executor<PgEventStore>,
    parking: Parking,
    parked_retry: Duration,
    topics: Topics,
    shutdown: CancellationToken,
}

impl CommandHandler {
    /// Connects to Postgres (creating and migrating the database) and creates the topics,
    /// retrying while either is unavailable, then joins the consumer group.
    pub async fn build(
        config: HandlerConfig,
        shutdown: CancellationToken,
    ) -> Result<CommandHandler, StartError> {
        let url = &config.database_url;
        // A connection for each message handled at once, and one for the parked retries.
        let connections = connections_for(config.consumers) + 1;
        let pool = connect_until_ready("the event store", url, &MIGRATOR, connections, &shutdown)
            .await
            .ok_or(StartError::ShutDown)?;
        let topics = config.kafka.topics();
        let subscribed = [
            &*topics.commands,
            &topics.registering_events,
            &topics.events,
        ];
        let group = config
            .kafka
            .join(&config.group_id, &subscribed, config.consumers, &shutdown)
            .await
            .ok_or(StartError::ShutDown)??;
        let parking = Parking::new(pool.clone());
        let repository = Repository::new(PgEventStore::new(pool), config.snapshot_every);
        Ok(CommandHandler {
            parking,
            parked_retry: config.parked_retry,
            group,
            dead_letters: DeadLetters::new(&config.kafka)?,
            executor: Executor::new(repository, config.max_attempts),
            topics,
            shutdown,
        })
    }

    /// Handles messages, and tries parked ones again, until shutdown; then commits the stored
    /// offsets.
    pub async fn run_until_stopped(self) {
        tracing::info!("command handler consuming");
        tokio::join!(
            self.group.consume(&self, &self.shutdown),
            self.retry_parked(&self.shutdown)
        );
        tracing::info!("command handler stopped");
    }
}
