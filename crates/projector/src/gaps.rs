//! Filling a gap in a view from the event store, the source of truth: when an event arrives
//! and its view is short of the version before it (an earlier one was lost on the way,
//! dead-lettered, is past the topic's retention, or is just late), the missing versions are read
//! from the event store and applied first, in order. A view never waits for the bus to bring
//! them again, and one the event store cannot repair is logged loudly and recorded as stuck.

use financing_event_store::{EventStore, StoreError};
use financing_messaging::EventEnvelope;
use financing_read_model::{Projected, ProjectionError};

use crate::{Projector, Transient};

impl Projector {
    /// Applies the versions after `at` and before `event` from the event store, then `event`.
    pub(crate) async fn fill_gap(&self, event: &EventEnvelope, at: u64) -> Result<(), Transient> {
        let meta = &event.meta;
        let (aggregate_id, version) = (meta.aggregate_id, meta.version);
        let aggregate_type = event.event.aggregate_type();
        let stored = self
            .event_store
            .load_events(aggregate_type, aggregate_id, at)
            .await
            .map_err(|error| match error {
                StoreError::Database(error) => Transient::EventStore(error),
                other => Transient::Unreadable(other),
            });
        let stored = match stored {
            Ok(stored) => stored,
            Err(Transient::Unreadable(error)) => {
                return self.stuck(event, at, &error.to_string()).await;
            }
            Err(other) => return Err(other),
        };
        let missing: Vec<_> = stored.into_iter().filter(|e| e.version < version).collect();
        if missing.len() as u64 != version - at - 1 {
            let reason = format!(
                "the event store has {} of the {} versions between",
                missing.len(),
                version - at - 1
            );
            return self.stuck(event, at, &reason).await;
        }
        // Each filler commits on its own: a view stuck partway is stuck where it got to (a
        // record behind the view would be cleared as repaired).
        let mut reached = at;
        for recorded in missing {
            let filler = match recorded.envelope() {
                Ok(filler) => filler,
                Err(error) => return self.stuck(event, reached, &error.to_string()).await,
            };
            match self.read_model.project(&filler).await {
                Ok(Projected::Applied | Projected::Duplicate) => reached = filler.meta.version,
                Ok(Projected::Gap { at }) => {
                    let reason = format!("the view moved to {at} while it was being filled");
                    return self.stuck(event, at, &reason).await;
                }
                Err(ProjectionError::Contradiction(reason)) => {
                    return self.stuck(event, reached, &reason).await;
                }
                Err(ProjectionError::Database(error)) => return Err(error.into()),
            }
        }
        match self.read_model.project(event).await {
            Ok(_) => {}
            Err(ProjectionError::Contradiction(reason)) => {
                return self.stuck(event, version - 1, &reason).await;
            }
            Err(ProjectionError::Database(error)) => return Err(error.into()),
        }
        // Recorded as stuck before, perhaps by another projector: it is repaired now.
        self.read_model.clear_repaired().await?;
        metrics::counter!("financing_view_gaps_filled_total").increment(1);
        tracing::warn!(
            %aggregate_id,
            from = at + 1,
            to = version,
            "filled a gap in a view from the event store"
        );
        Ok(())
    }

    async fn stuck(&self, event: &EventEnvelope, at: u64, reason: &str) -> Result<(), Transient> {
        let meta = &event.meta;
        tracing::error!(
            aggregate_id = %meta.aggregate_id,
            at,
            version = meta.version,
            reason,
            "a view is stuck at a gap the event store cannot fill; rebuilding the read models \
             repairs it once the cause is fixed"
        );
        metrics::counter!("financing_views_stuck_total").increment(1);
        let (aggregate_type, aggregate_id) = (&meta.aggregate_type, meta.aggregate_id);
        self.read_model
            .record_stuck(aggregate_type, aggregate_id, at, meta.version, reason)
            .await?;
        Ok(())
    }
}
