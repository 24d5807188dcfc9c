//! What travels between the components, whatever carries it (the event store, the bus): a
//! domain event with where it comes from and where it sits, and the outcome of a command that
//! produced no event.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::saga::EventPosition;
use crate::{Actor, CommandId, Event};

/// A domain event with its metadata, as the relayer publishes it and the saga and the read
/// models take it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventEnvelope {
    pub meta: EventMeta,
    pub event: Event,
}

/// A command that produced no event: the domain rejected it, or it failed outright (it could not
/// be decoded, or its aggregate could not be read).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutcome {
    pub command_id: CommandId,
    pub failed: bool,
    /// Unknown for a command that could not be decoded.
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<Uuid>,
    pub reason: String,
    pub decided_at: DateTime<Utc>,
    /// Who asked for the command (`None`: the Registering context, or unknown).
    pub actor: Option<Actor>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventMeta {
    pub aggregate_type: String,
    pub aggregate_id: Uuid,
    pub version: u64,
    pub schema_version: i32,
    pub event_id: Uuid,
    pub command_id: CommandId,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    pub recorded_at: DateTime<Utc>,
    /// Who asked for the change: the client behind the command, or behind the saga's cause
    /// (`None`: the Registering context).
    pub actor: Option<Actor>,
}

impl EventMeta {
    pub fn position(&self) -> EventPosition {
        EventPosition {
            aggregate_id: self.aggregate_id,
            version: self.version,
        }
    }
}
