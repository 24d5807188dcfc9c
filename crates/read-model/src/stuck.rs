//! The views the projector could not bring up to date, for operators: each stuck at a version,
//! with the next one it has and why the versions between could not be applied. The database
//! holds the truth: a view that moved past the version it was stuck at (repaired by whichever
//! projector, or a rebuild) is cleared by [`ReadModel::clear_repaired`].

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
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE \
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

    /// Clears every stuck view that moved past the version it was stuck at, wherever it was
    /// repaired: the views cleared.
    pub async fn clear_repaired(&self) -> Result<Vec<StuckView>, sqlx::Error> {
        sqlx::query_as(
            "DELETE FROM stuck_views s WHERE at_version < COALESCE(CASE aggregate_type \
                 WHEN 'Issuer' THEN (SELECT version FROM issuers WHERE id = s.aggregate_id) \
                 WHEN 'Investor' THEN (SELECT version FROM investors WHERE id = s.aggregate_id) \
                 WHEN 'Invoice' THEN (SELECT version FROM invoices WHERE id = s.aggregate_id) \
             END, 0) \
             RETURNING aggregate_id, aggregate_type, at_version, next_version, reason, since",
        )
        .fetch_all(&self.pool)
        .await
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
