//! The event store in memory, with the same guarantees as Postgres, for unit tests.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use chrono::Utc;
use financing_domain::CommandId;
use uuid::Uuid;

use crate::store::{
    Append, Decided, EventStore, Outcome, RecordedEvent, Rejected, Snapshot, StoreError, Stream,
};

#[derive(Debug, Default)]
pub struct InMemoryEventStore {
    state: Mutex<State>,
}

#[derive(Debug, Default, Clone)]
struct State {
    events: Vec<RecordedEvent>,
    versions: HashMap<(&'static str, Uuid), u64>,
    snapshots: HashMap<(&'static str, Uuid), Snapshot>,
    outcomes: HashMap<CommandId, Outcome>,
}

impl InMemoryEventStore {
    pub fn new() -> InMemoryEventStore {
        InMemoryEventStore::default()
    }

    /// Every event appended so far, in global order.
    pub fn recorded(&self) -> Vec<RecordedEvent> {
        self.lock().events.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent: each method mutates it
        // only after every check has passed.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl EventStore for InMemoryEventStore {
    async fn load_stream(
        &self,
        aggregate_type: &'static str,
        aggregate_id: Uuid,
    ) -> Result<Stream, StoreError> {
        let snapshot = self
            .lock()
            .snapshots
            .get(&(aggregate_type, aggregate_id))
            .cloned();
        let after = snapshot.as_ref().map_or(0, |s| s.version);
        let events = self
            .load_events(aggregate_type, aggregate_id, after)
            .await?;
        Ok(Stream { snapshot, events })
    }

    async fn load_streams(
        &self,
        aggregates: &[(&'static str, Uuid)],
    ) -> Result<Vec<Stream>, StoreError> {
        let mut streams = Vec::with_capacity(aggregates.len());
        for &(aggregate_type, aggregate_id) in aggregates {
            streams.push(self.load_stream(aggregate_type, aggregate_id).await?);
        }
        Ok(streams)
    }

    async fn load_events(
        &self,
        aggregate_type: &'static str,
        aggregate_id: Uuid,
        after_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        Ok(self
            .lock()
            .events
            .iter()
            .filter(|e| e.aggregate_type == aggregate_type && e.aggregate_id == aggregate_id)
            .filter(|e| e.version > after_version)
            .cloned()
            .collect())
    }

    async fn append(&self, append: Append) -> Result<(), StoreError> {
        self.lock().append(append)
    }

    /// Applied to a copy of the state, which replaces it only if every write fits.
    async fn write_all(&self, decided: Vec<Decided>) -> Result<(), StoreError> {
        let mut state = self.lock();
        let mut draft = state.clone();
        for write in decided {
            match write {
                Decided::Applied(append) => draft.append(append)?,
                Decided::Rejected(rejected) => draft.reject(rejected)?,
            }
        }
        *state = draft;
        Ok(())
    }

    async fn record_rejection(&self, rejected: Rejected) -> Result<(), StoreError> {
        self.lock().reject(rejected)
    }

    async fn outcome(&self, command_id: CommandId) -> Result<Option<Outcome>, StoreError> {
        Ok(self.lock().outcomes.get(&command_id).cloned())
    }
}

impl State {
    fn append(&mut self, append: Append) -> Result<(), StoreError> {
        if self.outcomes.contains_key(&append.command_id) {
            return Err(StoreError::AlreadyProcessed(append.command_id));
        }
        let stream = (append.aggregate_type, append.aggregate_id);
        let current = self.versions.get(&stream).copied().unwrap_or(0);
        if current != append.expected_version {
            return Err(StoreError::Conflict {
                aggregate_id: append.aggregate_id,
                expected_version: append.expected_version,
            });
        }
        let mut version = current;
        for event in append.events {
            version += 1;
            let global_position = self.events.len() as i64 + 1;
            self.events.push(RecordedEvent {
                global_position,
                aggregate_type: append.aggregate_type.to_owned(),
                aggregate_id: append.aggregate_id,
                version,
                event_type: event.event_type,
                schema_version: event.schema_version,
                payload: event.payload,
                metadata: event.metadata,
                recorded_at: Utc::now(),
            });
        }
        self.versions.insert(stream, version);
        self.outcomes.insert(append.command_id, Outcome::Applied);
        if let Some(snapshot) = append.snapshot {
            self.snapshots.insert(stream, snapshot);
        }
        Ok(())
    }

    fn reject(&mut self, rejected: Rejected) -> Result<(), StoreError> {
        if self.outcomes.contains_key(&rejected.command_id) {
            return Err(StoreError::AlreadyProcessed(rejected.command_id));
        }
        let reason = rejected.reason;
        self.outcomes
            .insert(rejected.command_id, Outcome::Rejected { reason });
        Ok(())
    }
}
