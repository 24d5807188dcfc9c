//! The views the projector could not bring up to date, for operators: each stuck at a version,
//! with the next one it has and why the versions between could not be applied.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::ReadModel;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StuckView {
    pub aggregate_id: Uuid,
    pub aggregate_type: String,
    /// The version the view shows.
    pub at_version: i64,
    /// The version that arrived after the gap.
    pub next_version: i64,
    pub reason: String,
    pub since: DateTime<Utc>,
}

impl ReadModel {
    /// Records that the view of an aggregate is stuck at `at_version` (kept from the first
    /// time, with the latest reason).
    pub async fn record_stuck(
        &self,
        aggregate_type: &str,
        aggregate_id: Uuid,
        at_version: u64,
        next_version: u64,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO stuck_views (aggregate_id, aggregate_type, at_version, next_version, reason) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (aggregate_id) DO UPDATE \
             SET at_version = EXCLUDED.at_version, next_version = EXCLUDED.next_version, \
                 reason = EXCLUDED.reason",
        )
        .bind(aggregate_id)
        .bind(aggregate_type)
        .bind(i64::try_from(at_version).unwrap_or(i64::MAX))
        .bind(i64::try_from(next_version).unwrap_or(i64::MAX))
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The view of the aggregate is moving again.
    pub async fn clear_stuck(&self, aggregate_id: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM stuck_views WHERE aggregate_id = $1")
            .bind(aggregate_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every stuck view, longest stuck first.
    pub async fn stuck_views(&self) -> Result<Vec<StuckView>, sqlx::Error> {
        sqlx::query_as(
            "SELECT aggregate_id, aggregate_type, at_version, next_version, reason, since \
             FROM stuck_views ORDER BY since",
        )
        .fetch_all(&self.pool)
        .await
    }
}
