//! `financing rebuild`: rebuilds the read models from the event store, by global position,
//! while the system runs, then hands over to the live projector without a gap or a double
//! apply (see [`financing_read_model::Handover`]):
//!
//! 1. empty read models are made beside the live ones and every event is applied to them in
//!    global position order (each aggregate's in order, several aggregates at a time), then
//!    every rejection and failure;
//! 2. the views the live projector has meanwhile moved further are caught up from the event
//!    store, until few are left;
//! 3. the live tables are locked, the last of those are caught up, and the rebuilt tables take
//!    the live ones' place in the same transaction; the projector carries on on them.
//!
//! An event that commits late, below the position already read, reaches the rebuilt views
//! through the next version of its aggregate (the gap is filled from the event store) or
//! through step 2 and 3 (the live view has it).

use std::collections::HashMap;

use anyhow::Context;
use financing_domain::{Aggregate, Event, EventEnvelope, Investor, Invoice, Issuer};
use financing_event_store::{EventStore, PgEventStore, RecordedEvent};
use financing_read_model::{Behind, Projected, ProjectionError, ReadModel};
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use uuid::Uuid;

/// Events read from the event store at a time.
const BATCH: i64 = 1000;

/// Catching up without the lock stops once fewer views than this are behind the live ones:
/// the rest is caught up under the lock, while the projector and the queries wait.
const FEW: usize = 100;

/// `parallel`: aggregates whose events are applied at the same time, each on a connection of
/// its own (fewer leave more of the machine to the running system).
pub async fn run(
    store: &PgEventStore,
    live: &ReadModel,
    url: &str,
    parallel: u32,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let rebuilt = ReadModel::start_rebuild(url, parallel)
        .await
        .context("cannot make fresh read models beside the live ones")?;
    let rebuild = Rebuild {
        store,
        rebuilt: &rebuilt,
        parallel: parallel as usize,
    };
    let total = store.backlog().await?.last_position;
    let progress = ProgressBar::new(u64::try_from(total).unwrap_or_default()).with_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events, {per_sec}, {eta} left")?
            .progress_chars("=> "),
    );
    progress.set_message("replaying");
    let mut position = 0;
    let mut events = 0;
    loop {
        let batch = store
            .events_after(position, BATCH)
            .await
            .context("cannot read the event store")?;
        let Some(last) = batch.last() else { break };
        position = last.global_position;
        events += batch.len();
        rebuild.apply_batch(&batch).await?;
        progress.set_length(progress.length().unwrap_or(0).max(position as u64));
        progress.set_position(position as u64);
    }
    progress.finish_and_clear();
    println!(
        "replayed {events} events, up to global position {position}, in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let outcomes = store.outcomes_without_events().await?;
    for outcome in &outcomes {
        match rebuilt.record_outcome(outcome).await {
            Ok(()) => {}
            Err(ProjectionError::Contradiction(reason)) => {
                eprintln!(
                    "the outcome of command {} cannot be recorded: {reason}",
                    outcome.command_id
                );
            }
            Err(ProjectionError::Database(error)) => return Err(error.into()),
        }
    }
    println!("recorded {} rejections and failures", outcomes.len());

    loop {
        let behind = live.ahead_of_rebuild().await?;
        if behind.len() < FEW {
            break;
        }
        println!("{} views moved on meanwhile: catching up", behind.len());
        rebuild.catch_up(&behind).await?;
    }

    let locked = std::time::Instant::now();
    let mut handover = live
        .hand_over()
        .await
        .context("cannot lock the live read models")?;
    let behind = handover.behind().await?;
    rebuild.catch_up(&behind).await?;
    for left in handover.behind().await? {
        eprintln!(
            "the live view of {} {} is at version {}, the event store has it to version {}: \
             the rebuilt view replaces it",
            left.aggregate_type, left.aggregate_id, left.live, left.rebuilt
        );
    }
    handover
        .complete()
        .await
        .context("cannot put the rebuilt read models in place")?;
    println!(
        "the rebuilt read models are live ({} views caught up under the lock, held {} ms)",
        behind.len(),
        locked.elapsed().as_millis()
    );
    Ok(())
}

struct Rebuild<'a> {
    store: &'a PgEventStore,
    rebuilt: &'a ReadModel,
    parallel: usize,
}

impl Rebuild<'_> {
    /// Applies a batch of events in position order per aggregate, several aggregates at a time
    /// (each view is its own row: only an aggregate's own order matters).
    async fn apply_batch(&self, batch: &[RecordedEvent]) -> anyhow::Result<()> {
        let mut by_aggregate: HashMap<Uuid, Vec<&RecordedEvent>> = HashMap::new();
        for recorded in batch {
            by_aggregate
                .entry(recorded.aggregate_id)
                .or_default()
                .push(recorded);
        }
        futures::stream::iter(by_aggregate.into_values())
            .map(|events| async move {
                for recorded in events {
                    self.apply(recorded).await?;
                }
                anyhow::Ok(())
            })
            .buffer_unordered(self.parallel)
            .try_collect::<()>()
            .await
    }

    /// Applies one event to the rebuilt views; a gap before it is filled from the event store.
    async fn apply(&self, recorded: &RecordedEvent) -> anyhow::Result<()> {
        let Some(envelope) = self.decode(recorded) else {
            return Ok(());
        };
        match self.project(&envelope).await? {
            Some(Projected::Gap { at }) => {
                let Some(aggregate_type) = known_type(&recorded.aggregate_type) else {
                    return Ok(());
                };
                self.fill(aggregate_type, recorded.aggregate_id, at).await
            }
            _ => Ok(()),
        }
    }

    /// Applies what the event store has after the rebuilt version of each view.
    async fn catch_up(&self, behind: &[Behind]) -> anyhow::Result<()> {
        for view in behind {
            let Some(aggregate_type) = known_type(&view.aggregate_type) else {
                continue;
            };
            let at = u64::try_from(view.rebuilt).unwrap_or_default();
            self.fill(aggregate_type, view.aggregate_id, at).await?;
        }
        Ok(())
    }

    /// Applies every event of the aggregate after version `at`, in order.
    async fn fill(&self, aggregate_type: &'static str, id: Uuid, at: u64) -> anyhow::Result<()> {
        let events = self
            .store
            .load_events(aggregate_type, id, at)
            .await
            .with_context(|| format!("cannot read {aggregate_type} {id}"))?;
        for recorded in &events {
            let Some(envelope) = self.decode(recorded) else {
                return Ok(());
            };
            if let Some(Projected::Gap { at }) = self.project(&envelope).await? {
                self.stuck(recorded, at, "a version is missing from the event store")
                    .await?;
                return Ok(());
            }
        }
        Ok(())
    }

    fn decode(&self, recorded: &RecordedEvent) -> Option<EventEnvelope> {
        let decoded = Event::decode(
            &recorded.aggregate_type,
            &recorded.event_type,
            recorded.payload.clone(),
        );
        match decoded {
            Ok(event) => Some(EventEnvelope {
                meta: recorded.meta(),
                event,
            }),
            Err(error) => {
                eprintln!(
                    "{} {} version {} cannot be read: {error}",
                    recorded.aggregate_type, recorded.aggregate_id, recorded.version
                );
                None
            }
        }
    }

    /// The event applied to the rebuilt views; `None` if it contradicts them (said on stderr).
    async fn project(&self, envelope: &EventEnvelope) -> anyhow::Result<Option<Projected>> {
        match self.rebuilt.project(envelope).await {
            Ok(projected) => Ok(Some(projected)),
            Err(ProjectionError::Contradiction(reason)) => {
                let meta = &envelope.meta;
                eprintln!(
                    "{} {} version {} contradicts its view: {reason}",
                    meta.aggregate_type, meta.aggregate_id, meta.version
                );
                Ok(None)
            }
            Err(ProjectionError::Database(error)) => Err(error.into()),
        }
    }

    async fn stuck(&self, recorded: &RecordedEvent, at: u64, reason: &str) -> anyhow::Result<()> {
        eprintln!(
            "{} {} stays at version {at}: {reason}",
            recorded.aggregate_type, recorded.aggregate_id
        );
        self.rebuilt
            .record_stuck(
                &recorded.aggregate_type,
                recorded.aggregate_id,
                at,
                recorded.version,
                reason,
            )
            .await?;
        Ok(())
    }
}

/// The aggregate types this version knows, as the event store names them.
fn known_type(name: &str) -> Option<&'static str> {
    [Issuer::TYPE, Investor::TYPE, Invoice::TYPE]
        .into_iter()
        .find(|known| *known == name)
}
