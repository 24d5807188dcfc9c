//! The port: what an event store must do, whatever keeps the data.

use std::future::Future;

use chrono::{DateTime, Utc};
use financing_domain::{Actor, CommandId, DecodeError, Event, EventEnvelope, EventMeta};
use serde_json::Value;
use uuid::Uuid;

/// Who caused an event and under which command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventMetadata {
    pub event_id: Uuid,
    pub command_id: CommandId,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    /// Who asked for it (`None`: the Registering context).
    pub actor: Option<Actor>,
}

/// An event about to be appended.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Value,
    pub metadata: EventMetadata,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub global_position: i64,
    pub aggregate_type: String,
    pub aggregate_id: Uuid,
    pub version: u64,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Value,
    pub metadata: EventMetadata,
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// Where the event comes from and where it sits.
    pub fn meta(&self) -> EventMeta {
        EventMeta {
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id,
            version: self.version,
            schema_version: self.schema_version,
            event_id: self.metadata.event_id,
            command_id: self.metadata.command_id,
            correlation_id: self.metadata.correlation_id,
            causation_id: self.metadata.causation_id,
            recorded_at: self.recorded_at,
            actor: self.metadata.actor,
        }
    }
}

impl RecordedEvent {
    /// The domain event with its metadata, upcast to the current schema version; an error if
    /// this version of the domain cannot read it.
    pub fn envelope(&self) -> Result<EventEnvelope, DecodeError> {
        let event = Event::decode(
            &self.aggregate_type,
            &self.event_type,
            self.schema_version,
            self.payload.clone(),
        )?;
        let meta = EventMeta {
            schema_version: event.schema_version(),
            ..self.meta()
        };
        Ok(EventEnvelope { meta, event })
    }
}

/// An aggregate's state as of `version`, serialized.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub version: u64,
    pub state: Value,
}

/// An aggregate's stream as the executor reads it: the latest snapshot, if any, and the events
/// after it, in version order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stream {
    pub snapshot: Option<Snapshot>,
    pub events: Vec<RecordedEvent>,
}

/// One command's effect on one aggregate, written atomically: the events (numbered from
/// `expected_version + 1`), the command id as processed, and perhaps a new snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Append {
    pub aggregate_type: &'static str,
    pub aggregate_id: Uuid,
    pub expected_version: u64,
    pub command_id: CommandId,
    /// Who asked for the command.
    pub actor: Option<Actor>,
    pub events: Vec<NewEvent>,
    /// The state after these events, to store as the latest snapshot.
    pub snapshot: Option<Snapshot>,
}

/// A command the domain refused, to record as its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub command_id: CommandId,
    pub aggregate_type: &'static str,
    pub aggregate_id: Uuid,
    pub reason: String,
    /// Who asked for the command.
    pub actor: Option<Actor>,
}

/// One command's effect, in a batch written at once ([`EventStore::write_all`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Decided {
    Applied(Append),
    Rejected(Rejected),
}

impl Decided {
    pub fn command_id(&self) -> CommandId {
        match self {
            Decided::Applied(append) => append.command_id,
            Decided::Rejected(rejected) => rejected.command_id,
        }
    }

    /// Its name in metrics and logs: `applied` or `rejected`.
    pub fn result(&self) -> &'static str {
        match self {
            Decided::Applied(_) => "applied",
            Decided::Rejected(_) => "rejected",
        }
    }

    /// Who asked for the command.
    pub fn actor(&self) -> Option<Actor> {
        match self {
            Decided::Applied(append) => append.actor,
            Decided::Rejected(rejected) => rejected.actor,
        }
    }

    /// The aggregate it is about: its type and id.
    pub fn aggregate(&self) -> (&'static str, Uuid) {
        match self {
            Decided::Applied(append) => (append.aggregate_type, append.aggregate_id),
            Decided::Rejected(rejected) => (rejected.aggregate_type, rejected.aggregate_id),
        }
    }
}

/// What became of a processed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Rejected { reason: String },
}

impl Outcome {
    /// Its name in metrics and logs: `applied` or `rejected`.
    pub fn result(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Rejected { .. } => "rejected",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to the aggregate since it was loaded: reload and decide again.
    #[error(
        "version conflict on {aggregate_id}: version {expected_version} is no longer the latest"
    )]
    Conflict {
        aggregate_id: Uuid,
        expected_version: u64,
    },
    /// The command id was processed before (maybe concurrently): nothing was written.
    #[error("command {0} was already processed")]
    AlreadyProcessed(CommandId),
    #[error("stored data cannot be read: {0}")]
    Corrupt(String),
    /// The database refused what was to be stored (see
    /// [`financing_runtime::postgres::refuses_the_data`]): writing it again cannot succeed.
    #[error("the database refused the data: {0}")]
    Refused(String),
    #[error("event store database error")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> StoreError {
        if financing_runtime::postgres::refuses_the_data(&error) {
            StoreError::Refused(error.to_string())
        } else {
            StoreError::Database(error)
        }
    }
}

/// The event store the command handler writes through.
pub trait EventStore: Send + Sync {
    /// The latest snapshot of the aggregate, if any, and the events after it.
    fn load_stream(
        &self,
        aggregate_type: &'static str,
        aggregate_id: Uuid,
    ) -> impl Future<Output = Result<Stream, StoreError>> + Send;

    /// The streams of several aggregates (type and id), in the order asked.
    fn load_streams(
        &self,
        aggregates: &[(&'static str, Uuid)],
    ) -> impl Future<Output = Result<Vec<Stream>, StoreError>> + Send;

    /// The aggregate's events after `after_version`, in version order.
    fn load_events(
        &self,
        aggregate_type: &'static str,
        aggregate_id: Uuid,
        after_version: u64,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// Appends atomically. [`StoreError::Conflict`] if the aggregate is past
    /// `expected_version`; [`StoreError::AlreadyProcessed`] if the command id is known.
    fn append(&self, append: Append) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes the effects of several commands, in order (one aggregate's appends follow each
    /// other's versions), all or nothing: [`StoreError::Conflict`] if an aggregate is past the
    /// version an append expected; [`StoreError::AlreadyProcessed`] if a command id is known.
    fn write_all(
        &self,
        decided: Vec<Decided>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records that a command was rejected; [`StoreError::AlreadyProcessed`] if it is known.
    fn record_rejection(
        &self,
        rejected: Rejected,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// What became of a command, if it was processed.
    fn outcome(
        &self,
        command_id: CommandId,
    ) -> impl Future<Output = Result<Option<Outcome>, StoreError>> + Send;

    /// What became of those of these commands that were processed.
    fn outcomes(
        &self,
        command_ids: &[CommandId],
    ) -> impl Future<Output = Result<Vec<(CommandId, Outcome)>, StoreError>> + Send {
        async move {
            let mut known = Vec::new();
            for &command_id in command_ids {
                if let Some(outcome) = self.outcome(command_id).await? {
                    known.push((command_id, outcome));
                }
            }
            Ok(known)
        }
    }
}

/// A shared store is a store: several users (an executor and a test) can write through one.
impl<S: EventStore> EventStore for &S {
    fn load_stream(
        &self,
        aggregate_type: &'static str,
        aggregate_id: Uuid,
    ) -> impl Future<Output = Result<Stream, StoreError>> + Send {
        (**self).load_stream(aggregate_type, aggregate_id)
    }

    fn load_streams(
        &self,
        aggregates: &[(&'static str, Uuid)],
    ) -> impl Future<Output = Result<Vec<Stream>, StoreError>> + Send {
        (**self).load_streams(aggregates)
    }

    fn load_events(
        &self,
        aggregate_type: &'static str,
        aggregate_id: Uuid,
        after_version: u64,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send {
        (**self).load_events(aggregate_type, aggregate_id, after_version)
    }

    fn append(&self, append: Append) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).append(append)
    }

    fn write_all(
        &self,
        decided: Vec<Decided>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).write_all(decided)
    }

    fn record_rejection(
        &self,
        rejected: Rejected,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).record_rejection(rejected)
    }

    fn outcome(
        &self,
        command_id: CommandId,
    ) -> impl Future<Output = Result<Option<Outcome>, StoreError>> + Send {
        (**self).outcome(command_id)
    }

    fn outcomes(
        &self,
        command_ids: &[CommandId],
    ) -> impl Future<Output = Result<Vec<(CommandId, Outcome)>, StoreError>> + Send {
        (**self).outcomes(command_ids)
    }
}
