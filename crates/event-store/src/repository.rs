//! Typed access to aggregates over any [`EventStore`]: load = latest snapshot + later events,
//! save = append with the expected version, plus a snapshot every `snapshot_every` events.

use financing_domain::{Actor, Aggregate, CommandId, Message, schema};
use uuid::Uuid;

use crate::store::{Append, EventMetadata, EventStore, NewEvent, Snapshot, StoreError, Stream};

/// The command an append belongs to, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandMeta {
    pub command_id: CommandId,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    /// Who asked for it: the client, or the client behind the saga's cause.
    pub actor: Option<Actor>,
}

impl CommandMeta {
    /// A command that starts a chain of its own (new command, correlation and causation ids),
    /// asked for by no one known: one written straight to the store.
    pub fn new_chain() -> CommandMeta {
        CommandMeta {
            command_id: CommandId::new_random(),
            correlation_id: Uuid::new_v4(),
            causation_id: Uuid::new_v4(),
            actor: None,
        }
    }
}

/// An aggregate's state and the version it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<A: Aggregate> {
    pub id: A::Id,
    pub state: A,
    pub version: u64,
}

#[derive(Debug)]
pub struct Repository<S> {
    store: S,
    snapshot_every: u64,
}

impl<S: EventStore> Repository<S> {
    /// `snapshot_every` is at least 1: a snapshot is taken whenever an append crosses a
    /// multiple of it.
    pub fn new(store: S, snapshot_every: u64) -> Repository<S> {
        Repository {
            store,
            snapshot_every: snapshot_every.max(1),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub async fn load<A: Aggregate>(&self, id: A::Id) -> Result<Loaded<A>, StoreError> {
        let stream = self.store.load_stream(A::TYPE, id.into()).await?;
        self.fold(id, stream).await
    }

    /// The aggregate's state from its stream as loaded ([`EventStore::load_streams`] loads
    /// several at once).
    pub async fn fold<A: Aggregate>(
        &self,
        id: A::Id,
        stream: Stream,
    ) -> Result<Loaded<A>, StoreError> {
        let aggregate_id: Uuid = id.into();
        let (mut state, mut version, events) = match stream.snapshot {
            Some(snapshot) => match serde_json::from_value::<A>(snapshot.state) {
                Ok(state) => (state, snapshot.version, stream.events),
                Err(error) => {
                    // A snapshot of an older shape of the state: the events are the truth.
                    tracing::warn!(%aggregate_id, %error, "ignoring a snapshot that does not decode");
                    let all = self.store.load_events(A::TYPE, aggregate_id, 0).await?;
                    (A::default(), 0, all)
                }
            },
            None => (A::default(), 0, stream.events),
        };
        for recorded in events {
            let corrupt = |reason: String| {
                let error = StoreError::Corrupt(format!(
                    "{} {aggregate_id} v{}: {reason}",
                    A::TYPE,
                    recorded.version
                ));
                tracing::error!(%error, "an aggregate's stored events cannot be replayed");
                error
            };
            let event = schema::decode::<A::Event>(
                &recorded.event_type,
                recorded.schema_version,
                recorded.payload,
            )
            .map_err(|e| corrupt(e.to_string()))?;
            state.apply(&event).map_err(|e| corrupt(e.to_string()))?;
            version = recorded.version;
        }
        Ok(Loaded { id, state, version })
    }

    /// Appends `events`, decided on `loaded`, as the effect of the command in `meta`.
    pub async fn save<A: Aggregate>(
        &self,
        loaded: &Loaded<A>,
        events: &[A::Event],
        meta: CommandMeta,
    ) -> Result<(), StoreError> {
        let append = self.advance(&mut loaded.clone(), events, meta)?;
        self.store.append(append).await
    }

    /// Moves `loaded` past `events`, decided on it as the effect of the command in `meta`, and
    /// returns the append that stores them (with a snapshot when it crosses a multiple of
    /// `snapshot_every`).
    pub fn advance<A: Aggregate>(
        &self,
        loaded: &mut Loaded<A>,
        events: &[A::Event],
        meta: CommandMeta,
    ) -> Result<Append, StoreError> {
        let expected_version = loaded.version;
        for event in events {
            // `decide` produced them on this state: failing here is a bug in the domain.
            loaded
                .state
                .apply(event)
                .map_err(|e| StoreError::Corrupt(format!("a decided event: {e}")))?;
        }
        loaded.version += events.len() as u64;
        let snapshot =
            if loaded.version / self.snapshot_every > expected_version / self.snapshot_every {
                Some(Snapshot {
                    version: loaded.version,
                    state: serde_json::to_value(&loaded.state)
                        .map_err(|e| StoreError::Corrupt(format!("a snapshot: {e}")))?,
                })
            } else {
                None
            };
        let events = events
            .iter()
            .map(|event| NewEvent {
                event_type: event.type_name().to_owned(),
                schema_version: schema::current_version(event.type_name()),
                payload: event.to_payload(),
                metadata: EventMetadata {
                    event_id: Uuid::new_v4(),
                    command_id: meta.command_id,
                    correlation_id: meta.correlation_id,
                    causation_id: meta.causation_id,
                    actor: meta.actor,
                },
            })
            .collect();
        Ok(Append {
            aggregate_type: A::TYPE,
            aggregate_id: loaded.id.into(),
            expected_version,
            command_id: meta.command_id,
            actor: meta.actor,
            events,
            snapshot,
        })
    }
}
