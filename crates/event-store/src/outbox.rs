//! What the relayer reads from the event store: the oldest unpublished events and command
//! outcomes (rejections and failures), claimed under a lock so that two relayers never publish
//! at once, and marked published once acknowledged.
//!
//! Events wait in `unpublished_events`, a table of their positions that the insert fills (by
//! trigger); marking them deletes those narrow rows. An event row is written once and never
//! changed: a mark that rewrote it cost as much Postgres time as the insert itself.

use chrono::{DateTime, Utc};
use financing_domain::{CommandId, CommandOutcome};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::postgres::{EventRow, actor_from, event_columns};
use crate::store::{RecordedEvent, StoreError};

/// The advisory lock a relayer holds while it publishes a batch.
const RELAY_LOCK: i64 = 0x0046_494e_5245_4c41;

#[derive(Debug, Clone)]
pub struct Outbox {
    pool: PgPool,
}

/// A batch of unpublished events and outcomes, held under the relay lock until it is marked or
/// dropped.
#[derive(Debug)]
pub struct Claim {
    tx: Transaction<'static, Postgres>,
    events: Vec<RecordedEvent>,
    outcomes: Vec<CommandOutcome>,
}

/// What a claim leaves out, the relayer holding back the partitions they go to (failing, or
/// being probed): events by their aggregate, outcomes by their key (an outcome's aggregate, or
/// its command when it names none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeftOut {
    pub events: HeldPartitions,
    pub outcomes: HeldPartitions,
}

/// The partitions held back of a topic of `of` partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldPartitions {
    pub of: i32,
    pub held: Vec<i32>,
}

/// One thing the broker acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The event at this global position.
    Event(i64),
    /// The rejection of this command.
    Rejection(CommandId),
    /// The failure of this command.
    Failure(CommandId),
}

/// An outcome as stored (a rejection in `processed_commands`, a failure in
/// `failed_commands`), with the columns [`outcome_columns`] selects.
#[derive(sqlx::FromRow)]
pub(crate) struct OutcomeRow {
    command_id: Uuid,
    failed: bool,
    aggregate_type: Option<String>,
    aggregate_id: Option<Uuid>,
    reason: String,
    decided_at: DateTime<Utc>,
    actor_id: Option<Uuid>,
    actor_role: Option<String>,
}

/// The two halves of an outcome query, as literals so that queries stay static strings: the
/// rejections, then the failures, each followed by its own conditions.
macro_rules! rejections {
    () => {
        "SELECT command_id, false AS failed, aggregate_type, aggregate_id, reason, \
         processed_at AS decided_at, actor_id, actor_role FROM processed_commands \
         WHERE outcome = 'rejected'"
    };
}
macro_rules! failures {
    () => {
        "SELECT command_id, true, NULL, aggregate_id, reason, failed_at, actor_id, actor_role \
         FROM failed_commands"
    };
}
pub(crate) use {failures, rejections};

impl From<OutcomeRow> for CommandOutcome {
    fn from(row: OutcomeRow) -> CommandOutcome {
        CommandOutcome {
            command_id: CommandId::from(row.command_id),
            failed: row.failed,
            aggregate_type: row.aggregate_type,
            aggregate_id: row.aggregate_id,
            reason: row.reason,
            decided_at: row.decided_at,
            actor: actor_from(row.actor_id, row.actor_role.as_deref()),
        }
    }
}

impl Outbox {
    pub fn new(pool: PgPool) -> Outbox {
        Outbox { pool }
    }

    /// Marks one event, or one outcome, as published, outside any claim (what a probe of a
    /// failing partition got through).
    pub async fn mark_one(&self, published: Published) -> Result<(), StoreError> {
        let mut connection = self.pool.acquire().await?;
        match published {
            Published::Event(position) => mark(&mut connection, &[position], &[], &[]).await,
            Published::Rejection(command) => mark(&mut connection, &[], &[command], &[]).await,
            Published::Failure(command) => mark(&mut connection, &[], &[], &[command]).await,
        }
    }

    /// Whether any event or outcome waits to be published, in one cheap query: an idle relayer
    /// asks this on each poll instead of taking the lock and reading the batches.
    pub async fn has_unpublished(&self) -> Result<bool, StoreError> {
        let waiting = sqlx::query_scalar(
            "SELECT EXISTS (SELECT FROM unpublished_events) \
             OR EXISTS (SELECT FROM processed_commands \
                        WHERE outcome = 'rejected' AND published_at IS NULL) \
             OR EXISTS (SELECT FROM failed_commands WHERE published_at IS NULL)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(waiting)
    }

    /// The oldest unpublished events and outcomes, at most `limit` of each, events in position
    /// order, but for those `left_out`; `None` while another relayer holds the lock.
    ///
    /// An event whose transaction commits after a later position was published is still
    /// unpublished, so it is picked up by a later claim: nothing is skipped. An aggregate's
    /// versions commit in order, so its events come in order.
    pub async fn claim(&self, limit: u32, left_out: &LeftOut) -> Result<Option<Claim>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(RELAY_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok(None);
        }
        let rows: Vec<EventRow> = sqlx::query_as(concat!(
            "SELECT ",
            event_columns!(),
            " FROM unpublished_events JOIN events USING (global_position) ",
            "WHERE (cardinality($2::int[]) = 0 OR partition_for(aggregate_id, $3) <> ALL($2)) ",
            "ORDER BY global_position LIMIT $1"
        ))
        .bind(i64::from(limit))
        .bind(&left_out.events.held)
        .bind(left_out.events.of)
        .fetch_all(&mut *tx)
        .await?;
        let outcomes: Vec<OutcomeRow> = sqlx::query_as(concat!(
            "(",
            rejections!(),
            " AND published_at IS NULL AND (cardinality($2::int[]) = 0 ",
            "OR partition_for(aggregate_id, $3) <> ALL($2))) UNION ALL (",
            failures!(),
            " WHERE published_at IS NULL AND (cardinality($2::int[]) = 0 ",
            "OR partition_for(COALESCE(aggregate_id, command_id), $3) <> ALL($2))) ",
            "ORDER BY decided_at LIMIT $1"
        ))
        .bind(i64::from(limit))
        .bind(&left_out.outcomes.held)
        .bind(left_out.outcomes.of)
        .fetch_all(&mut *tx)
        .await?;
        let events = rows.into_iter().map(RecordedEvent::from).collect();
        let outcomes = outcomes.into_iter().map(CommandOutcome::from).collect();
        Ok(Some(Claim {
            tx,
            events,
            outcomes,
        }))
    }
}

/// Marks what the broker acknowledged as published: events by position, outcomes by command id
/// in the table each came from (a command can be both failed, then rejected once sent again).
async fn mark(
    connection: &mut PgConnection,
    positions: &[i64],
    rejected: &[CommandId],
    failed: &[CommandId],
) -> Result<(), StoreError> {
    if !positions.is_empty() {
        sqlx::query("DELETE FROM unpublished_events WHERE global_position = ANY($1)")
            .bind(positions)
            .execute(&mut *connection)
            .await?;
    }
    let ids = |commands: &[CommandId]| commands.iter().map(CommandId::as_uuid).collect::<Vec<_>>();
    if !rejected.is_empty() {
        sqlx::query(
            "UPDATE processed_commands SET published_at = now() \
             WHERE command_id = ANY($1) AND outcome = 'rejected' AND published_at IS NULL",
        )
        .bind(ids(rejected))
        .execute(&mut *connection)
        .await?;
    }
    if !failed.is_empty() {
        sqlx::query(
            "UPDATE failed_commands SET published_at = now() \
             WHERE command_id = ANY($1) AND published_at IS NULL",
        )
        .bind(ids(failed))
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

impl Claim {
    pub fn events(&self) -> &[RecordedEvent] {
        &self.events
    }

    pub fn outcomes(&self) -> &[CommandOutcome] {
        &self.outcomes
    }

    /// Marks the events at these global positions, the rejections and the failures of these
    /// commands as published, and releases the lock.
    pub async fn mark_published(
        mut self,
        positions: &[i64],
        rejected: &[CommandId],
        failed: &[CommandId],
    ) -> Result<(), StoreError> {
        mark(&mut self.tx, positions, rejected, failed).await?;
        self.tx.commit().await?;
        Ok(())
    }
}
