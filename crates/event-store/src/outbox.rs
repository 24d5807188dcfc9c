//! What the relayer reads from the event store: the oldest unpublished events, claimed under a
//! lock so that two relayers never publish at once, and marked published once acknowledged.

use sqlx::{PgPool, Postgres, Transaction};

use crate::postgres::{EventRow, event_columns};
use crate::store::{RecordedEvent, StoreError};

/// The advisory lock a relayer holds while it publishes a batch.
const RELAY_LOCK: i64 = 0x0046_494e_5245_4c41;

#[derive(Debug, Clone)]
pub struct Outbox {
    pool: PgPool,
}

/// A batch of unpublished events, held under the relay lock until it is marked or dropped.
#[derive(Debug)]
pub struct Claim {
    tx: Transaction<'static, Postgres>,
    events: Vec<RecordedEvent>,
}

impl Outbox {
    pub fn new(pool: PgPool) -> Outbox {
        Outbox { pool }
    }

    /// The oldest unpublished events, at most `limit`, in commit-visible position order; `None`
    /// while another relayer holds the lock.
    ///
    /// An event whose transaction commits after a later position was published is still
    /// unpublished, so it is picked up by a later claim: nothing is skipped. An aggregate's
    /// versions commit in order, so its events come in order.
    pub async fn claim(&self, limit: u32) -> Result<Option<Claim>, StoreError> {
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
            " FROM events WHERE published_at IS NULL ORDER BY global_position LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let events = rows.into_iter().map(RecordedEvent::from).collect();
        Ok(Some(Claim { tx, events }))
    }
}

impl Claim {
    pub fn events(&self) -> &[RecordedEvent] {
        &self.events
    }

    /// Marks the events at these global positions as published and releases the lock.
    pub async fn mark_published(mut self, positions: &[i64]) -> Result<(), StoreError> {
        if !positions.is_empty() {
            sqlx::query("UPDATE events SET published_at = now() WHERE global_position = ANY($1)")
                .bind(positions)
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }
}
