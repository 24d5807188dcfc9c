//! The event store in Postgres. Each append is one statement: the command id, the events (a
//! clash on `(aggregate_id, version)` is a [`StoreError::Conflict`]) and the snapshot; a batch
//! of commands' effects is the same statement for them all, in one transaction.

use chrono::{DateTime, Utc};
use financing_domain::{Actor, CommandId};
use serde_json::Value;
use sqlx::migrate::Migrator;
use sqlx::{FromRow, PgPool, Row};
use uuid::Uuid;

use crate::store::{
    Append, Decided, EventMetadata, EventStore, Outcome, RecordedEvent, Rejected, Snapshot,
    StoreError, Stream,
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
        actor: Option<Actor>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO failed_commands (command_id, aggregate_id, reason, actor_id, actor_role) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (command_id) DO NOTHING",
        )
        .bind(command_id.as_uuid())
        .bind(aggregate_id)
        .bind(reason)
        .bind(actor.map(|actor| actor.party))
        .bind(actor.map(|actor| actor.role.as_str()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// The columns [`EventRow`] reads, as a literal so that queries stay static strings.
macro_rules! event_columns {
    () => {
        "global_position, aggregate_type, aggregate_id, version, event_type, schema_version, \
         payload, event_id, command_id, correlation_id, causation_id, recorded_at, actor_id, \
         actor_role"
    };
}
pub(crate) use event_columns;

/// What a stream load selects: the snapshot's version and state (the state on the first row
/// only), then the event's columns.
macro_rules! snapshot_and_events {
    () => {
        "s.version AS snapshot_version, \
         CASE WHEN e.version IS NULL OR e.version = COALESCE(s.version, 0) + 1 \
         THEN s.state END AS snapshot_state, e.*"
    };
}

/// Each aggregate `a` (`kind`, `id`) joined to its latest snapshot `s` and the events `e` after
/// it. Lateral joins: an index lookup per aggregate, whatever the planner guesses of `a`.
macro_rules! stream_joins {
    () => {
        concat!(
            "LEFT JOIN LATERAL (SELECT version, state FROM snapshots ",
            "WHERE aggregate_type = a.kind AND aggregate_id = a.id) s ON true ",
            "LEFT JOIN LATERAL (SELECT ",
            event_columns!(),
            " FROM events WHERE aggregate_type = a.kind AND aggregate_id = a.id ",
            "AND version > COALESCE(s.version, 0)) e ON true"
        )
    };
}

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
    actor_id: Option<Uuid>,
    actor_role: Option<String>,
}

/// An actor as its two columns keep it; `None` where either is missing (or the role is not
/// one this version knows).
pub(crate) fn actor_from(id: Option<Uuid>, role: Option<&str>) -> Option<Actor> {
    Some(Actor::new(id?, role?.parse().ok()?))
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
                actor: actor_from(row.actor_id, row.actor_role.as_deref()),
            },
            recorded_at: row.recorded_at,
        }
    }
}

/// Adds a row of a stream load to the stream: its snapshot, its event, or neither.
fn add_row(stream: &mut Stream, row: &sqlx::postgres::PgRow) -> Result<(), StoreError> {
    let version: Option<i64> = row.try_get("snapshot_version")?;
    let state: Option<Value> = row.try_get("snapshot_state")?;
    if let (Some(version), Some(state)) = (version, state) {
        stream.snapshot = Some(Snapshot {
            version: from_db(version),
            state,
        });
    }
    if row.try_get::<Option<i64>, _>("global_position")?.is_some() {
        stream.events.push(EventRow::from_row(row)?.into());
    }
    Ok(())
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
    /// first only), or a single row of snapshot or nothing. (One aggregate is loaded far more
    /// often than several: this query costs a third less than `load_streams`' for one.)
    async fn load_stream(
        &self,
        aggregate_type: &'static str,
        aggregate_id: Uuid,
    ) -> Result<Stream, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            snapshot_and_events!(),
            " FROM (SELECT $1::text AS kind, $2::uuid AS id) AS a ",
            stream_joins!(),
            " ORDER BY e.version"
        ))
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_all(&self.pool)
        .await?;
        let mut stream = Stream::default();
        for row in rows {
            add_row(&mut stream, &row)?;
        }
        Ok(stream)
    }

    /// One round trip for them all: per aggregate, a row per event after its snapshot (the
    /// snapshot's columns filled on the first only), or a single row of snapshot or nothing.
    async fn load_streams(
        &self,
        aggregates: &[(&'static str, Uuid)],
    ) -> Result<Vec<Stream>, StoreError> {
        let (types, ids): (Vec<&str>, Vec<Uuid>) = aggregates.iter().copied().unzip();
        let rows = sqlx::query(concat!(
            "SELECT a.n, ",
            snapshot_and_events!(),
            " FROM UNNEST($1::text[], $2::uuid[]) WITH ORDINALITY AS a (kind, id, n) ",
            stream_joins!(),
            " ORDER BY a.n, e.version"
        ))
        .bind(types)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        let mut streams = vec![Stream::default(); aggregates.len()];
        for row in rows {
            let n: i64 = row.try_get("n")?;
            let stream = usize::try_from(n - 1)
                .ok()
                .and_then(|index| streams.get_mut(index))
                .ok_or_else(|| StoreError::Corrupt(format!("no aggregate number {n} was asked")))?;
            add_row(stream, &row)?;
        }
        Ok(streams)
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

    /// One statement, so one round trip and atomic on its own.
    async fn append(&self, append: Append) -> Result<(), StoreError> {
        let command_id = append.command_id;
        let processed = write(&self.pool, &[Decided::Applied(append)]).await?;
        if processed.is_empty() {
            return Err(StoreError::AlreadyProcessed(command_id));
        }
        Ok(())
    }

    /// The statement [`PgEventStore::append`] uses, for them all, in a transaction rolled back
    /// if a command id was known.
    async fn write_all(&self, decided: Vec<Decided>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let processed = write(&mut *tx, &decided).await?;
        if processed.len() != decided.len() {
            // A command id known before, or twice in the batch (its second row was skipped).
            let mut seen = std::collections::HashSet::new();
            let known = decided
                .iter()
                .map(Decided::command_id)
                .find(|id| !processed.contains(&id.as_uuid()) || !seen.insert(*id));
            tx.rollback().await?;
            let known = known
                .ok_or_else(|| StoreError::Corrupt("a batch's command ids do not add up".into()))?;
            return Err(StoreError::AlreadyProcessed(known));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_rejection(&self, rejected: Rejected) -> Result<(), StoreError> {
        let command_id = rejected.command_id;
        let processed = write(&self.pool, &[Decided::Rejected(rejected)]).await?;
        if processed.is_empty() {
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
        row.map(|(outcome, reason)| stored_outcome(&outcome, reason))
            .transpose()
    }

    async fn outcomes(
        &self,
        command_ids: &[CommandId],
    ) -> Result<Vec<(CommandId, Outcome)>, StoreError> {
        let ids: Vec<Uuid> = command_ids.iter().map(CommandId::as_uuid).collect();
        let rows: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(
            "SELECT command_id, outcome, reason FROM processed_commands \
             WHERE command_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, outcome, reason)| {
                Ok((CommandId::from(id), stored_outcome(&outcome, reason)?))
            })
            .collect()
    }
}

/// An outcome as `processed_commands` keeps it.
fn stored_outcome(outcome: &str, reason: Option<String>) -> Result<Outcome, StoreError> {
    match (outcome, reason) {
        ("applied", _) => Ok(Outcome::Applied),
        ("rejected", reason) => Ok(Outcome::Rejected {
            reason: reason.unwrap_or_default(),
        }),
        (other, _) => Err(StoreError::Corrupt(format!("unknown outcome {other:?}"))),
    }
}

/// Writes commands' effects in one statement: every command id as processed, then, only if
/// every one of them was new, the events and each aggregate's latest snapshot. Rows go in
/// aggregate by aggregate (each one's in the order given), so that two batches touching the
/// same aggregates take their locks in the same order rather than deadlock; the events' global
/// positions, drawn for the whole batch, follow the order given, so that a saga's reaction
/// decided in the batch of its cause comes after it across aggregates too. The ids that were
/// new; a clash on an aggregate's version is a [`StoreError::Conflict`] (naming the first
/// aggregate appended to, when there are several).
///
/// Every array is read through a sub-select, so that what the planner estimates does not
/// depend on the arrays' lengths: the server then keeps one plan for the statement instead of
/// planning it anew on every execution, which cost more than executing it (a third of the
/// statement's time on the server, measured with `pg_stat_statements`).
async fn write<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    decided: &[Decided],
) -> Result<Vec<Uuid>, StoreError> {
    let mut commands = Commands::default();
    let mut events = Events::default();
    let mut snapshots: Vec<(&'static str, Uuid, &Snapshot)> = Vec::new();
    // Where each decision's first event goes in the order given.
    let mut next_place = 1;
    let first_places: Vec<i64> = decided
        .iter()
        .map(|write| {
            let first = next_place;
            if let Decided::Applied(append) = write {
                next_place += i64::try_from(append.events.len()).unwrap_or(i64::MAX);
            }
            first
        })
        .collect();
    let mut by_aggregate: Vec<usize> = (0..decided.len()).collect();
    // Stable: one aggregate's writes keep their order.
    by_aggregate.sort_by_key(|&index| decided[index].aggregate());
    for index in by_aggregate {
        match &decided[index] {
            Decided::Applied(append) => {
                commands.push(
                    append.command_id,
                    append.aggregate_type,
                    append.aggregate_id,
                    append.actor,
                );
                commands.outcomes.push("applied");
                commands.reasons.push(None);
                events.push(append, first_places[index]);
                if let Some(snapshot) = &append.snapshot {
                    // The latest of an aggregate's only: a row cannot be upserted twice.
                    snapshots.retain(|(kind, id, _)| {
                        (*kind, *id) != (append.aggregate_type, append.aggregate_id)
                    });
                    snapshots.push((append.aggregate_type, append.aggregate_id, snapshot));
                }
            }
            Decided::Rejected(rejected) => {
                commands.push(
                    rejected.command_id,
                    rejected.aggregate_type,
                    rejected.aggregate_id,
                    rejected.actor,
                );
                commands.outcomes.push("rejected");
                commands.reasons.push(Some(&rejected.reason));
            }
        }
    }
    let conflict = decided.iter().find_map(|write| match write {
        Decided::Applied(append) => Some(StoreError::Conflict {
            aggregate_id: append.aggregate_id,
            expected_version: append.expected_version,
        }),
        Decided::Rejected(_) => None,
    });
    let all = i64::try_from(decided.len()).unwrap_or(i64::MAX);
    sqlx::query_scalar::<_, Vec<Uuid>>(
        "WITH processed AS ( \
             INSERT INTO processed_commands (command_id, aggregate_type, aggregate_id, outcome, \
                 reason, actor_id, actor_role) \
             SELECT * FROM UNNEST((SELECT $1::uuid[]), (SELECT $2::text[]), \
                 (SELECT $3::uuid[]), (SELECT $4::text[]), (SELECT $5::text[]), \
                 (SELECT $22::uuid[]), (SELECT $23::text[])) \
             ON CONFLICT (command_id) DO NOTHING \
             RETURNING command_id), \
         positions AS ( \
             SELECT row_number() OVER (ORDER BY position) AS place, position \
             FROM (SELECT nextval('events_global_position_seq') \
                       AS position \
                   FROM generate_series(1, cardinality((SELECT $21::bigint[])))) drawn \
             WHERE (SELECT count(*) FROM processed) = $20), \
         appended AS ( \
             INSERT INTO events (global_position, aggregate_type, aggregate_id, version, \
                 event_type, schema_version, payload, event_id, command_id, correlation_id, \
                 causation_id, actor_id, actor_role) \
             OVERRIDING SYSTEM VALUE \
             SELECT position, kind, id, version, event_type, schema_version, payload, \
                 event_id, command_id, correlation_id, causation_id, actor_id, actor_role \
             FROM UNNEST((SELECT $6::text[]), (SELECT $7::uuid[]), (SELECT $8::bigint[]), \
                 (SELECT $9::text[]), (SELECT $10::int[]), (SELECT $11::jsonb[]), \
                 (SELECT $12::uuid[]), (SELECT $13::uuid[]), (SELECT $14::uuid[]), \
                 (SELECT $15::uuid[]), (SELECT $21::bigint[]), (SELECT $24::uuid[]), \
                 (SELECT $25::text[])) \
                 WITH ORDINALITY AS e (kind, id, version, event_type, schema_version, payload, \
                     event_id, command_id, correlation_id, causation_id, place, actor_id, \
                     actor_role, n) \
             JOIN positions USING (place) \
             ORDER BY n), \
         snapshot AS ( \
             INSERT INTO snapshots (aggregate_type, aggregate_id, version, state) \
             SELECT * FROM UNNEST((SELECT $16::text[]), (SELECT $17::uuid[]), \
                 (SELECT $18::bigint[]), (SELECT $19::jsonb[])) \
             WHERE (SELECT count(*) FROM processed) = $20 \
             ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE \
             SET version = EXCLUDED.version, state = EXCLUDED.state, taken_at = now() \
             WHERE snapshots.version < EXCLUDED.version) \
         SELECT COALESCE(array_agg(command_id), '{}') FROM processed",
    )
    .bind(commands.ids)
    .bind(commands.types)
    .bind(commands.aggregates)
    .bind(commands.outcomes)
    .bind(commands.reasons)
    .bind(events.types)
    .bind(events.aggregates)
    .bind(events.versions)
    .bind(events.event_types)
    .bind(events.schema_versions)
    .bind(events.payloads)
    .bind(events.event_ids)
    .bind(events.command_ids)
    .bind(events.correlation_ids)
    .bind(events.causation_ids)
    .bind(
        snapshots
            .iter()
            .map(|(kind, _, _)| *kind)
            .collect::<Vec<_>>(),
    )
    .bind(snapshots.iter().map(|(_, id, _)| *id).collect::<Vec<_>>())
    .bind(
        snapshots
            .iter()
            .map(|(_, _, s)| to_db(s.version))
            .collect::<Vec<_>>(),
    )
    .bind(
        snapshots
            .iter()
            .map(|(_, _, s)| &s.state)
            .collect::<Vec<_>>(),
    )
    .bind(all)
    .bind(events.places)
    .bind(commands.actor_ids)
    .bind(commands.actor_roles)
    .bind(events.actor_ids)
    .bind(events.actor_roles)
    .fetch_one(executor)
    .await
    .map_err(|error| match (error, conflict) {
        // Only the events' (aggregate, version) can clash: a known command id does nothing.
        (sqlx::Error::Database(db), Some(conflict)) if db.is_unique_violation() => conflict,
        (other, _) => StoreError::from(other),
    })
}

/// The processed_commands rows of a write, column by column.
#[derive(Default)]
struct Commands<'a> {
    ids: Vec<Uuid>,
    types: Vec<&'static str>,
    aggregates: Vec<Uuid>,
    outcomes: Vec<&'static str>,
    reasons: Vec<Option<&'a str>>,
    actor_ids: Vec<Option<Uuid>>,
    actor_roles: Vec<Option<&'static str>>,
}

impl Commands<'_> {
    fn push(
        &mut self,
        command_id: CommandId,
        aggregate_type: &'static str,
        aggregate_id: Uuid,
        actor: Option<Actor>,
    ) {
        self.ids.push(command_id.as_uuid());
        self.types.push(aggregate_type);
        self.aggregates.push(aggregate_id);
        self.actor_ids.push(actor.map(|actor| actor.party));
        self.actor_roles
            .push(actor.map(|actor| actor.role.as_str()));
    }
}

/// The events rows of a write, column by column.
#[derive(Default)]
struct Events<'a> {
    types: Vec<&'static str>,
    aggregates: Vec<Uuid>,
    versions: Vec<i64>,
    event_types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    payloads: Vec<&'a Value>,
    event_ids: Vec<Uuid>,
    command_ids: Vec<Uuid>,
    correlation_ids: Vec<Uuid>,
    causation_ids: Vec<Uuid>,
    actor_ids: Vec<Option<Uuid>>,
    actor_roles: Vec<Option<&'static str>>,
    /// Each event's place in the order the batch gave.
    places: Vec<i64>,
}

impl<'a> Events<'a> {
    /// An append's events, numbered from the version after the one it expected, placed from
    /// `first_place` on.
    fn push(&mut self, append: &'a Append, first_place: i64) {
        let numbered = append.events.iter().zip(append.expected_version + 1..);
        for ((event, version), place) in numbered.zip(first_place..) {
            self.places.push(place);
            self.types.push(append.aggregate_type);
            self.aggregates.push(append.aggregate_id);
            self.versions.push(to_db(version));
            self.event_types.push(&event.event_type);
            self.schema_versions.push(event.schema_version);
            self.payloads.push(&event.payload);
            self.event_ids.push(event.metadata.event_id);
            self.command_ids.push(event.metadata.command_id.as_uuid());
            self.correlation_ids.push(event.metadata.correlation_id);
            self.causation_ids.push(event.metadata.causation_id);
            let actor = event.metadata.actor;
            self.actor_ids.push(actor.map(|actor| actor.party));
            self.actor_roles
                .push(actor.map(|actor| actor.role.as_str()));
        }
    }
}
