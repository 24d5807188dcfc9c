//! Where a stored event comes from and where it sits: what travels with every domain event,
//! whether it is read from the event store or from the bus.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::CommandId;
use crate::saga::EventPosition;

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
}

impl EventMeta {
    pub fn position(&self) -> EventPosition {
        EventPosition {
            aggregate_id: self.aggregate_id,
            version: self.version,
        }
    }
}
