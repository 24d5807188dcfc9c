//! `financing rebuild`: rebuilds the read models from the event store, by global position,
//! while the system runs, then hands over to the live projector without a gap or a double
//! apply (see [`financing_read_model::Handover`]):
//!
//! 1. empty read models are made beside the live ones and every event is applied to them in
//!    global position order (each aggregate's in order, several aggregates at a time), then
//!    every rejection and failure;
//! 2. the aggregates with events recorded since shortly before the start are filled from the
//!    event store (an event that commits late, below the position already read, is among
//!    them), and the views the live projector has meanwhile moved further are caught up,
//!    until few are left or they stop shrinking;
//! 3. the live tables are locked (a bounded wait, tried again), the last of those are caught
//!    up, and the rebuilt tables take the live ones' place in the same transaction; the
//!    projector carries on on them. A live view the event store cannot bring the rebuilt one
//!    up to would go back in time: the handover is refused unless `--force` says so.
//!
//! A view whose events cannot be read or contradict it is recorded as stuck in the rebuilt
//! read models, and its later events are left alone.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use financing_domain::{Aggregate, Investor, Invoice, Issuer};
use financing_event_store::{EventStore, PgEventStore, RecordedEvent};
use financing_read_model::{Behind, Projected, ProjectionError, ReadModel};
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use uuid::Uuid;

/// Events read from the event store at a time.
const BATCH: i64 = 1000;

/// Catching up without the lock stops once fewer views than this are behind the live ones (or
/// after [`ROUNDS`]): the rest is caught up under the lock, while the projector and the queries
/// wait.
const FEW: usize = 100;
const ROUNDS: usize = 10;

/// How far before the start the rebuild looks for events that may have committed late: longer
/// than any append transaction takes.
const LATE_COMMITS: Duration = Duration::from_secs(60);

/// How long a handover waits for the live tables, and how often it tries.
const LOCK_PATIENCE: Duration = Duration::from_secs(2);
const LOCK_ATTEMPTS: usize = 10;

/// `parallel`: aggregates applied at the same time, each on a connection of its own (fewer
/// leave more of the machine to the running system). `force`: hand over even if a live view is
/// further than the event store allows (it goes back to what the event store says).
pub async fn run(
    store: &PgEventStore,
    live: &ReadModel,
    url: &str,
    parallel: u32,
    force: bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let Some(rebuilding) = ReadModel::start_rebuild(url, parallel)
        .await
        .context("cannot make fresh read models beside the live ones")?
    else {
        bail!("another rebuild is running on these read models");
    };
    let since = rebuilding.started_at - LATE_COMMITS;
    let rebuild = Rebuild {
        store,
        rebuilt: &rebuilding.read_model,
        parallel: parallel as usize,
        stuck: Mutex::default(),
    };
    let events = rebuild.replay().await?;
    println!(
        "replayed {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let outcomes = rebuild.record_outcomes().await?;
    println!("recorded {outcomes} rejections and failures");

    let recent = store
        .aggregates_recorded_since(since)
        .await
        .context("cannot read the event store")?;
    rebuild
        .fill_all(recent.iter().map(|(kind, id)| (kind.as_str(), *id, None)))
        .await?;
    let mut last = usize::MAX;
    for _ in 0..ROUNDS {
        let behind = live.ahead_of_rebuild().await?;
        if behind.len() < FEW || behind.len() >= last {
            break;
        }
        println!("{} views moved on meanwhile: catching up", behind.len());
        rebuild.catch_up(&behind).await?;
        last = behind.len();
    }

    let locked = Instant::now();
    let mut handover = None;
    for _ in 0..LOCK_ATTEMPTS {
        handover = live.hand_over(LOCK_PATIENCE).await?;
        if handover.is_some() {
            break;
        }
        println!("the live tables are busy (a long query?): trying again");
        rebuild.catch_up(&live.ahead_of_rebuild().await?).await?;
    }
    let Some(mut handover) = handover else {
        bail!("the live read models stayed locked by others: nothing was changed; try again");
    };
    let behind = handover.behind().await?;
    rebuild.catch_up(&behind).await?;
    let left = handover.behind().await?;
    for view in &left {
        eprintln!(
            "the live view of {} {} is at version {}, the event store brings it to {} only",
            view.aggregate_type, view.aggregate_id, view.live, view.rebuilt
        );
    }
    if !left.is_empty() && !force {
        drop(handover);
        bail!(
            "{} live views are further than the event store: the rebuilt read models would take \
             them back in time; nothing was changed (--force hands over anyway)",
            left.len()
        );
    }
    handover
        .complete(since)
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
    /// Aggregates (by type and id) whose view cannot be brought further: their later events
    /// are left alone.
    stuck: Mutex<HashSet<(String, Uuid)>>,
}

impl Rebuild<'_> {
    /// Every event, in global position order per aggregate; how many.
    async fn replay(&self) -> anyhow::Result<usize> {
        let total = self.store.backlog().await?.last_position;
        let progress = ProgressBar::new(u64::try_from(total).unwrap_or_default()).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40}] {pos}/{len} events, {per_sec}, {eta} left",
            )?
            .progress_chars("=> "),
        );
        progress.set_message("replaying");
        let (mut position, mut events) = (0, 0);
        loop {
            let batch = self
                .store
                .events_after(position, BATCH)
                .await
                .context("cannot read the event store")?;
            let Some(last) = batch.last() else { break };
            position = last.global_position;
            events += batch.len();
            self.apply_batch(&batch).await?;
            progress.set_length(progress.length().unwrap_or(0).max(position as u64));
            progress.set_position(position as u64);
        }
        progress.finish_and_clear();
        Ok(events)
    }

    /// The rejections and failures, from the event store; how many.
    async fn record_outcomes(&self) -> anyhow::Result<usize> {
        let outcomes = self.store.outcomes_without_events().await?;
        for outcome in &outcomes {
            match self.rebuilt.record_outcome(outcome).await {
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
        Ok(outcomes.len())
    }

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
            .try_collect()
            .await
    }

    /// Applies one event to the rebuilt views; a gap before it is filled from the event store.
    async fn apply(&self, recorded: &RecordedEvent) -> anyhow::Result<()> {
        if self.is_stuck(&recorded.aggregate_type, recorded.aggregate_id) {
            return Ok(());
        }
        match self.project(recorded).await? {
            Some(Projected::Gap { at }) => {
                self.fill(&recorded.aggregate_type, recorded.aggregate_id, at)
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Applies what the event store has after the rebuilt version of each view.
    async fn catch_up(&self, behind: &[Behind]) -> anyhow::Result<()> {
        let views = behind.iter().map(|view| {
            let at = u64::try_from(view.rebuilt).unwrap_or_default();
            (view.aggregate_type.as_str(), view.aggregate_id, Some(at))
        });
        self.fill_all(views).await
    }

    /// [`Rebuild::fill`] for each, several at a time, after the version given (`None`: the
    /// rebuilt view's version).
    async fn fill_all<'v>(
        &self,
        views: impl Iterator<Item = (&'v str, Uuid, Option<u64>)>,
    ) -> anyhow::Result<()> {
        futures::stream::iter(views)
            .map(|(aggregate_type, id, at)| async move {
                let at = match at {
                    Some(at) => at,
                    None => self
                        .rebuilt
                        .view_version(aggregate_type, id)
                        .await?
                        .unwrap_or(0),
                };
                self.fill(aggregate_type, id, at).await
            })
            .buffer_unordered(self.parallel)
            .try_collect()
            .await
    }

    /// Applies every event of the aggregate after version `at`, in order.
    async fn fill(&self, aggregate_type: &str, id: Uuid, at: u64) -> anyhow::Result<()> {
        let Some(aggregate_type) = known_type(aggregate_type) else {
            return Ok(());
        };
        if self.is_stuck(aggregate_type, id) {
            return Ok(());
        }
        let events = self
            .store
            .load_events(aggregate_type, id, at)
            .await
            .with_context(|| format!("cannot read {aggregate_type} {id}"))?;
        for recorded in &events {
            match self.project(recorded).await? {
                Some(Projected::Gap { at }) => {
                    let reason = "a version is missing from the event store";
                    return self.stuck(recorded, at, reason).await;
                }
                None => return Ok(()),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The event applied to the rebuilt views; `None` if it cannot be read or contradicts its
    /// view (the view is then recorded as stuck).
    async fn project(&self, recorded: &RecordedEvent) -> anyhow::Result<Option<Projected>> {
        let envelope = match recorded.envelope() {
            Ok(envelope) => envelope,
            Err(error) => {
                let at = recorded.version - 1;
                self.stuck(recorded, at, &format!("cannot be read: {error}"))
                    .await?;
                return Ok(None);
            }
        };
        match self.rebuilt.project(&envelope).await {
            Ok(projected) => Ok(Some(projected)),
            Err(ProjectionError::Contradiction(reason)) => {
                let at = recorded.version - 1;
                self.stuck(recorded, at, &format!("contradicts its view: {reason}"))
                    .await?;
                Ok(None)
            }
            Err(ProjectionError::Database(error)) => Err(error.into()),
        }
    }

    fn is_stuck(&self, aggregate_type: &str, id: Uuid) -> bool {
        let stuck = self.stuck.lock().expect("not poisoned");
        // Seldom any: no key is made for nothing.
        !stuck.is_empty() && stuck.contains(&(aggregate_type.to_owned(), id))
    }

    /// Records the view as stuck at `at` (said on stderr) and leaves its later events alone.
    async fn stuck(&self, recorded: &RecordedEvent, at: u64, reason: &str) -> anyhow::Result<()> {
        eprintln!(
            "{} {} stays at version {at}: version {} {reason}",
            recorded.aggregate_type, recorded.aggregate_id, recorded.version
        );
        self.stuck
            .lock()
            .expect("not poisoned")
            .insert((recorded.aggregate_type.clone(), recorded.aggregate_id));
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
