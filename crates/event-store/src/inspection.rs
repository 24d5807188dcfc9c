//! What an operator asks of the event store: one aggregate's whole history with its
//! publication marks and latest snapshot, the backlog the relayer has not got through yet, and
//! every event in global order and every outcome (to rebuild the read models from).

use chrono::{DateTime, Utc};
use financing_domain::CommandOutcome;
use serde_json::Value;
use sqlx::{FromRow, Row};
use uuid::Uuid;

use crate::PgEventStore;
use crate::outbox::{OutcomeRow, failures, rejections};
use crate::postgres::{EventRow, event_columns};
use crate::store::{RecordedEvent, StoreError};

/// An event as stored, and whether the relayer has published it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub event: RecordedEvent,
    pub published: bool,
}

/// An aggregate's latest snapshot, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSnapshot {
    pub aggregate_type: String,
    pub version: u64,
    pub state: Value,
    pub taken_at: DateTime<Utc>,
}

/// What the event store holds that has not reached the broker yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    pub unpublished_events: i64,
    /// When the oldest unpublished event was recorded.
    pub oldest_unpublished: Option<DateTime<Utc>>,
    /// Rejections and failures not published on the outcomes topic yet.
    pub unpublished_outcomes: i64,
    pub parked_messages: i64,
    /// The latest global position (0: no event yet).
    pub last_position: i64,
}

impl PgEventStore {
    /// Every event of the aggregate, in version order, whatever its type (streams are per type
    /// and id: should two types share an id, each type's stream comes whole, one after the
    /// other).
    pub async fn history(&self, aggregate_id: Uuid) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            ", NOT EXISTS (SELECT FROM unpublished_events u \
               WHERE u.global_position = events.global_position) AS published \
             FROM events WHERE aggregate_id = $1 ORDER BY aggregate_type, version"
        ))
        .bind(aggregate_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredEvent {
                    event: EventRow::from_row(row)?.into(),
                    published: row.try_get("published")?,
                })
            })
            .collect()
    }

    /// The aggregate's latest snapshot, if one was taken.
    pub async fn latest_snapshot(
        &self,
        aggregate_id: Uuid,
    ) -> Result<Option<StoredSnapshot>, StoreError> {
        let row: Option<(String, i64, Value, DateTime<Utc>)> = sqlx::query_as(
            "SELECT aggregate_type, version, state, taken_at FROM snapshots \
             WHERE aggregate_id = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(aggregate_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(
            |(aggregate_type, version, state, taken_at)| StoredSnapshot {
                aggregate_type,
                version: u64::try_from(version).unwrap_or_default(),
                state,
                taken_at,
            },
        ))
    }

    /// What is still to be published, and what the handler parked.
    pub async fn backlog(&self) -> Result<Backlog, StoreError> {
        let (
            unpublished_events,
            oldest_unpublished,
            unpublished_outcomes,
            parked_messages,
            last_position,
        ) = sqlx::query_as(
            "SELECT \
                     (SELECT count(*) FROM unpublished_events), \
                     (SELECT min(recorded_at) FROM unpublished_events \
                          JOIN events USING (global_position)), \
                     (SELECT count(*) FROM processed_commands \
                          WHERE outcome = 'rejected' AND published_at IS NULL) \
                     + (SELECT count(*) FROM failed_commands WHERE published_at IS NULL), \
                     (SELECT count(*) FROM parked_messages), \
                     (SELECT COALESCE(max(global_position), 0) FROM events)",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(Backlog {
            unpublished_events,
            oldest_unpublished,
            unpublished_outcomes,
            parked_messages,
            last_position,
        })
    }

    /// At most `limit` events after global position `after`, in position order.
    pub async fn events_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE global_position > $1 ORDER BY global_position LIMIT $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(RecordedEvent::from).collect())
    }

    /// Every command that produced no event: the rejections, and the failures of commands
    /// never decided since, in the order they were recorded.
    pub async fn outcomes_without_events(&self) -> Result<Vec<CommandOutcome>, StoreError> {
        let rows: Vec<OutcomeRow> = sqlx::query_as(concat!(
            "(",
            rejections!(),
            ") UNION ALL (",
            failures!(),
            " WHERE command_id NOT IN (SELECT command_id FROM processed_commands)) ",
            "ORDER BY decided_at"
        ))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(CommandOutcome::from).collect())
    }

    /// Every aggregate (type and id) with an event recorded since `since`.
    pub async fn aggregates_recorded_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, Uuid)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT DISTINCT aggregate_type, aggregate_id FROM events WHERE recorded_at >= $1",
        )
        .bind(since)
        .fetch_all(self.pool())
        .await?)
    }
}
