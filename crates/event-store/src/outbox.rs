//! What the relayer reads from the event store: the oldest unpublished events and command
//! outcomes (rejections and failures), claimed under a lock so that two relayers never publish
//! at once, and marked published once acknowledged.

use chrono::{DateTime, Utc};
use financing_domain::CommandId;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::postgres::{EventRow, event_columns};
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
    outcomes: Vec<RecordedOutcome>,
}

/// A command that produced no event: the domain rejected it, or it failed outright.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RecordedOutcome {
    #[sqlx(try_from = "Uuid")]
    pub command_id: CommandId,
    /// `true` for a failure, `false` for a rejection.
    pub failed: bool,
    /// Unknown for a command that could not be decoded.
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<Uuid>,
    pub reason: String,
    pub decided_at: DateTime<Utc>,
}

impl Outbox {
    pub fn new(pool: PgPool) -> Outbox {
        Outbox { pool }
    }

    /// The oldest unpublished events and outcomes, at most `limit` of each, events in position
    /// order, leaving out the aggregates in `held_back` (their partition is failing); `None`
    /// while another relayer holds the lock.
    ///
    /// An event whose transaction commits after a later position was published is still
    /// unpublished, so it is picked up by a later claim: nothing is skipped. An aggregate's
    /// versions commit in order, so its events come in order.
    pub async fn claim(&self, limit: u32, held_back: &[Uuid]) -> Result<Option<Claim>, StoreError> {
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
            " FROM events WHERE published_at IS NULL AND aggregate_id <> ALL($2) ",
            "ORDER BY global_position LIMIT $1"
        ))
        .bind(i64::from(limit))
        .bind(held_back)
        .fetch_all(&mut *tx)
        .await?;
        let outcomes = sqlx::query_as(
            "(SELECT command_id, false AS failed, aggregate_type, aggregate_id, reason, \
                 processed_at AS decided_at \
             FROM processed_commands \
             WHERE outcome = 'rejected' AND published_at IS NULL AND aggregate_id <> ALL($2)) \
             UNION ALL \
             (SELECT command_id, true, NULL, aggregate_id, reason, failed_at \
             FROM failed_commands WHERE published_at IS NULL) \
             ORDER BY decided_at LIMIT $1",
        )
        .bind(i64::from(limit))
        .bind(held_back)
        .fetch_all(&mut *tx)
        .await?;
        let events = rows.into_iter().map(RecordedEvent::from).collect();
        Ok(Some(Claim {
            tx,
            events,
            outcomes,
        }))
    }
}

impl Claim {
    pub fn events(&self) -> &[RecordedEvent] {
        &self.events
    }

    pub fn outcomes(&self) -> &[RecordedOutcome] {
        &self.outcomes
    }

    /// Marks the events at these global positions and the outcomes of these commands as
    /// published, and releases the lock.
    pub async fn mark_published(
        mut self,
        positions: &[i64],
        decided_commands: &[CommandId],
    ) -> Result<(), StoreError> {
        if !positions.is_empty() {
            sqlx::query("UPDATE events SET published_at = now() WHERE global_position = ANY($1)")
                .bind(positions)
                .execute(&mut *self.tx)
                .await?;
        }
        if !decided_commands.is_empty() {
            let ids: Vec<Uuid> = decided_commands.iter().map(CommandId::as_uuid).collect();
            for statement in [
                "UPDATE processed_commands SET published_at = now() \
                 WHERE command_id = ANY($1) AND published_at IS NULL",
                "UPDATE failed_commands SET published_at = now() \
                 WHERE command_id = ANY($1) AND published_at IS NULL",
            ] {
                sqlx::query(statement)
                    .bind(&ids)
                    .execute(&mut *self.tx)
                    .await?;
            }
        }
        self.tx.commit().await?;
        Ok(())
    }
}
