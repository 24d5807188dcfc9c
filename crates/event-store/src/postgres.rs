//! The event store in Postgres. Each append is one transaction: the command id, the events
//! (a clash on `(aggregate_id, version)` is a [`StoreError::Conflict`]) and the snapshot.

use chrono::{DateTime, Utc};
use financing_domain::CommandId;
use serde_json::Value;
use sqlx::migrate::Migrator;
use sqlx::{FromRow, PgPool, Row};
use uuid::Uuid;

use crate::store::{
    Append, EventMetadata, EventStore, Outcome, RecordedEvent, Snapshot, StoreError, Stream,
};

/// The event store's schema, as versioned migration files run at start-up.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone)]
pub struct PgEventStore {
    pool: PgPool,
}

impl PgEventStore {
    /// A store on a database already migrated with [`MIGRATOR`].
    pub fn new(pool: PgPool) -> PgEventStore {
        PgEventStore { pool }
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Records that a client command could not be carried out at all, for the relayer to tell
    /// the read model. The command is not processed: sent again, it can still apply.
    pub async fn record_failure(
        &self,
        command_id: CommandId,
        aggregate_id: Option<Uuid>,
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO failed_commands (command_id, aggregate_id, reason) VALUES ($1, $2, $3) \
             ON CONFLICT (command_id) DO NOTHING",
        )
        .bind(command_id.as_uuid())
        .bind(aggregate_id)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// The columns [`EventRow`] reads, as a literal so that queries stay static strings.
macro_rules! event_columns {
    () => {
        "global_position, aggregate_type, aggregate_id, version, event_type, schema_version, \
         payload, event_id, command_id, correlation_id, causation_id, recorded_at"
    };
}
pub(crate) use event_columns;

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    global_position: i64,
    aggregate_type: String,
    aggregate_id: Uuid,
    version: i64,
    event_type: String,
    schema_version: i32,
    payload: Value,
    event_id: Uuid,
    command_id: Uuid,
    correlation_id: Uuid,
    causation_id: Uuid,
    recorded_at: DateTime<Utc>,
}

impl From<EventRow> for RecordedEvent {
    fn from(row: EventRow) -> RecordedEvent {
        RecordedEvent {
            global_position: row.global_position,
            aggregate_type: row.aggregate_type,
            aggregate_id: row.aggregate_id,
            version: from_db(row.version),
            event_type: row.event_type,
            schema_version: row.schema_version,
            payload: row.payload,
            metadata: EventMetadata {
                event_id: row.event_id,
                command_id: CommandId::from(row.command_id),
                correlation_id: row.correlation_id,
                causation_id: row.causation_id,
            },
            recorded_at: row.recorded_at,
        }
    }
}

/// Versions are positive BIGINTs in the database.
fn to_db(version: u64) -> i64 {
    i64::try_from(version).expect("an aggregate version fits in a BIGINT")
}

fn from_db(version: i64) -> u64 {
    u64::try_from(version).expect("the schema keeps versions positive")
}

impl EventStore for PgEventStore {
    /// One round trip: a row per event after the snapshot (the snapshot's columns filled on the
    /// first only), or a single row of snapshot or nothing.
    async fn load_stream(
        &self,
        aggregate_type: &'static str,
        aggregate_id: Uuid,
    ) -> Result<Stream, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT s.version AS snapshot_version, ",
            "CASE WHEN e.version IS NULL OR e.version = COALESCE(s.version, 0) + 1 ",
            "THEN s.state END AS snapshot_state, e.* ",
            "FROM (SELECT 1) AS one ",
            "LEFT JOIN snapshots s ON s.aggregate_type = $1 AND s.aggregate_id = $2 ",
            "LEFT JOIN LATERAL (SELECT ",
            event_columns!(),
            " FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ",
            "AND version > COALESCE(s.version, 0)) e ON true ",
            "ORDER BY e.version"
        ))
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_all(&self.pool)
        .await?;
        let mut stream = Stream::default();
        for row in rows {
            let version: Option<i64> = row.try_get("snapshot_version")?;
            let state: Option<Value> = row.try_get("snapshot_state")?;
            if let (Some(version), Some(state)) = (version, state) {
                stream.snapshot = Some(Snapshot {
                    version: from_db(version),
                    state,
                });
            }
            if row.try_get::<Option<i64>, _>("global_position")?.is_some() {
                stream.events.push(EventRow::from_row(&row)?.into());
            }
        }
        Ok(stream)
    }

    async fn load_events(
        &self,
        aggregate_type: &'static str,
        aggregate_id: Uuid,
        after_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND version > $3 ",
            "ORDER BY version"
        ))
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(to_db(after_version))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(RecordedEvent::from).collect())
    }

    /// One statement, so one round trip and atomic on its own: the command id as processed,
    /// then, only if it was new, the events and the snapshot.
    async fn append(&self, append: Append) -> Result<(), StoreError> {
        let events = &append.events;
        let versions: Vec<i64> = (1..=events.len() as u64)
            .map(|n| to_db(append.expected_version + n))
            .collect();
        let column = |f: fn(&crate::NewEvent) -> Uuid| events.iter().map(f).collect::<Vec<_>>();
        let snapshot = append.snapshot.as_ref();
        let new = sqlx::query_scalar::<_, bool>(
            "WITH processed AS ( \
                 INSERT INTO processed_commands (command_id, aggregate_type, aggregate_id, outcome) \
                 VALUES ($1, $2, $3, 'applied') ON CONFLICT (command_id) DO NOTHING \
                 RETURNING command_id), \
             appended AS ( \
                 INSERT INTO events (aggregate_type, aggregate_id, version, event_type, \
                     schema_version, payload, event_id, command_id, correlation_id, causation_id) \
                 SELECT $2, $3, e.* FROM UNNEST($4::bigint[], $5::text[], $6::int[], \
                     $7::jsonb[], $8::uuid[], $9::uuid[], $10::uuid[], $11::uuid[]) AS e \
                 WHERE EXISTS (SELECT 1 FROM processed)), \
             snapshot AS ( \
                 INSERT INTO snapshots (aggregate_id, aggregate_type, version, state) \
                 SELECT $3, $2, $12, $13 WHERE $12::bigint IS NOT NULL \
                     AND EXISTS (SELECT 1 FROM processed) \
                 ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE \
                 SET version = EXCLUDED.version, state = EXCLUDED.state, taken_at = now() \
                 WHERE snapshots.version < EXCLUDED.version) \
             SELECT EXISTS (SELECT 1 FROM processed)",
        )
        .bind(append.command_id.as_uuid())
        .bind(append.aggregate_type)
        .bind(append.aggregate_id)
        .bind(versions)
        .bind(events.iter().map(|e| e.event_type.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.schema_version).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.payload.clone()).collect::<Vec<_>>())
        .bind(column(|e| e.metadata.event_id))
        .bind(column(|e| e.metadata.command_id.as_uuid()))
        .bind(column(|e| e.metadata.correlation_id))
        .bind(column(|e| e.metadata.causation_id))
        .bind(snapshot.map(|s| to_db(s.version)))
        .bind(snapshot.map(|s| &s.state))
        .fetch_one(&self.pool)
        .await
        .map_err(|error| match error {
            // Only the events' (aggregate, version) can clash: the processed id does nothing.
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict {
                aggregate_id: append.aggregate_id,
                expected_version: append.expected_version,
            },
            other => StoreError::from(other),
        })?;
        if !new {
            return Err(StoreError::AlreadyProcessed(append.command_id));
        }
        Ok(())
    }

    async fn record_rejection(
        &self,
        command_id: CommandId,
        aggregate_type: &'static str,
        aggregate_id: Uuid,
        reason: &str,
    ) -> Result<(), StoreError> {
        let recorded = sqlx::query(
            "INSERT INTO processed_commands (command_id, aggregate_type, aggregate_id, outcome, reason) \
             VALUES ($1, $2, $3, 'rejected', $4) ON CONFLICT (command_id) DO NOTHING",
        )
        .bind(command_id.as_uuid())
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        if recorded.rows_affected() == 0 {
            return Err(StoreError::AlreadyProcessed(command_id));
        }
        Ok(())
    }

    async fn outcome(&self, command_id: CommandId) -> Result<Option<Outcome>, StoreError> {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT outcome, reason FROM processed_commands WHERE command_id = $1")
                .bind(command_id.as_uuid())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(outcome, reason)| match (outcome.as_str(), reason) {
            ("applied", _) => Ok(Outcome::Applied),
            ("rejected", reason) => Ok(Outcome::Rejected {
                reason: reason.unwrap_or_default(),
            }),
            (other, _) => Err(StoreError::Corrupt(format!("unknown outcome {other:?}"))),
        })
        .transpose()
    }
}
