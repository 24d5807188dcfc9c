//! Applying one command to one aggregate: load, decide, append with the expected version,
//! reloading on a version conflict a bounded number of times. A rejection is recorded as the
//! command's outcome; a command id seen before changes nothing and reports its first outcome.
//! Issuers found registered are remembered: issuers are never removed. A command that creates
//! its aggregate is decided on no history, unread (see `Read`).
//!
//! Or many commands at once ([`Executor::execute_all`]): every aggregate they touch (but those
//! they create) loaded in one query, the commands decided one after the other in memory (each on the state the ones
//! before it left), then the saga's reactions to the events they decided, and all their effects
//! written in one transaction, all or nothing; tried once more when a client's command was
//! processed before, or another writer got to an aggregate first.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use financing_domain::saga::{self, EventPosition, Issued, Reaction};
use financing_domain::{
    Actor, Aggregate, ClientCommand, Command, CommandId, Investor, Invoice, Issuer, IssuerId,
};
use financing_event_store::{
    CommandMeta, Decided, EventStore, Loaded, Outcome, Rejected, Repository, StoreError, Stream,
};
use financing_messaging::CommandMessage;
use uuid::Uuid;

/// The chain a command belongs to: the client request that started it, what caused it, and
/// who asked for it (the client behind the chain; `None` for the Registering context's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    pub actor: Option<Actor>,
}

/// What one message asks of the executor.
#[derive(Debug, Clone)]
pub enum Job {
    Client(CommandMessage),
    React(Reaction, Origin),
}

pub struct Executor<S> {
    repository: Repository<S>,
    max_attempts: u32,
    registered_issuers: Mutex<HashSet<IssuerId>>,
}

impl<S: EventStore> Executor<S> {
    /// `max_attempts` bounds the reload-and-decide cycles a command gets when other writers
    /// keep changing its aggregate; past it the conflict is returned, to be retried later.
    pub fn new(repository: Repository<S>, max_attempts: u32) -> Executor<S> {
        Executor {
            repository,
            max_attempts: max_attempts.max(1),
            registered_issuers: Mutex::default(),
        }
    }

    /// The event store it writes to.
    pub fn store(&self) -> &S {
        self.repository.store()
    }

    /// A client command from `financing.commands`. Selling needs the issuer: it is looked up
    /// first.
    pub async fn client_command(&self, message: CommandMessage) -> Result<Outcome, StoreError> {
        let (issued, origin) = self.issue(message, None).await?;
        self.execute(&issued, origin).await
    }

    /// The command a client's message asks for, and its chain. A sale's issuer is taken as a
    /// `batch` being decided left it, if it holds the issuer.
    async fn issue(
        &self,
        message: CommandMessage,
        batch: Option<&Batch>,
    ) -> Result<(Issued, Origin), StoreError> {
        let issuer_registered = match &message.command {
            ClientCommand::SellInvoice { issuer_id, .. } => {
                match batch.and_then(|batch| batch.state::<Issuer>(*issuer_id)) {
                    Some(issuer) => issuer.state.is_registered(),
                    None => self.is_registered(*issuer_id).await?,
                }
            }
            _ => false,
        };
        let issued = Issued {
            id: message.command_id,
            command: message
                .command
                .into_command(issuer_registered, message.actor),
        };
        let origin = Origin {
            correlation_id: message.correlation_id,
            causation_id: message.command_id.as_uuid(),
            actor: message.actor,
        };
        Ok((issued, origin))
    }

    /// Whether the issuer is registered. A yes cannot go stale (issuers are never removed), so
    /// it is remembered; a no is asked again next time.
    async fn is_registered(&self, issuer_id: IssuerId) -> Result<bool, StoreError> {
        if self.registered_issuers().contains(&issuer_id) {
            return Ok(true);
        }
        let issuer = self.repository.load::<Issuer>(issuer_id).await?;
        let registered = issuer.state.is_registered();
        if registered {
            self.registered_issuers().insert(issuer_id);
        }
        Ok(registered)
    }

    fn registered_issuers(&self) -> MutexGuard<'_, HashSet<IssuerId>> {
        // A set of ids is never left half-changed by a panic.
        self.registered_issuers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A policy's reaction: its command, and the compensation if the command was rejected
    /// (now or on an earlier delivery).
    pub async fn react(&self, reaction: &Reaction, origin: Origin) -> Result<Outcome, StoreError> {
        let outcome = self.execute(&reaction.command, origin).await?;
        if let (Outcome::Rejected { .. }, Some(compensation)) = (&outcome, &reaction.compensation) {
            self.execute(compensation, origin).await?;
        }
        Ok(outcome)
    }

    /// Carries out every job as [`Executor::client_command`] and [`Executor::react`] would one
    /// after the other, then the saga's reactions to the events they applied, round after
    /// round until it has none left (a bid, the invoice's answer, the surplus released), all
    /// in one transaction: each job's outcome. A reaction processed before is not decided
    /// again: its first outcome stands (the reactions carried out here come back from the
    /// broker as the events' policies, and find themselves done). When the write finds a
    /// client's command processed before, the batch is decided once more with every job's
    /// first outcome looked up (such a command then reports it, as one at a time); when
    /// another writer got to an aggregate first, once more on the new states and without the
    /// saga's reactions (they then come back from the broker as the policies of the events
    /// written, as after one message at a time). Any other error (an outage), or a second
    /// failure, leaves the store as it was; the jobs can then be carried out one at a time.
    pub async fn execute_all(&self, jobs: Vec<Job>) -> Result<Vec<Outcome>, StoreError> {
        let started = Instant::now();
        let outcomes = match self.write_batch(jobs.clone(), Attempt::First).await {
            Err(StoreError::AlreadyProcessed(command_id)) => {
                tracing::debug!(%command_id, "a batch held a command processed before: decided again");
                self.write_batch(jobs, Attempt::AfterProcessedBefore).await
            }
            Err(StoreError::Conflict { aggregate_id, .. }) => {
                tracing::debug!(%aggregate_id, "a batch clashed: decided again without the saga's reactions");
                self.write_batch(jobs, Attempt::AfterClash).await
            }
            result => result,
        }?;
        metrics::histogram!("financing_batch_seconds").record(started.elapsed().as_secs_f64());
        Ok(outcomes)
    }

    /// Decides the jobs (and the saga's reactions to them, unless after a clash) and writes
    /// them in one transaction: each job's outcome.
    async fn write_batch(
        &self,
        jobs: Vec<Job>,
        attempt: Attempt,
    ) -> Result<Vec<Outcome>, StoreError> {
        // Reactions come back from the broker after they were decided with their cause: they
        // are looked up. A client's command is seldom sent again: it is looked up only after a
        // write found one processed before.
        let mut known: Vec<CommandId> = Vec::new();
        for job in &jobs {
            match job {
                Job::React(reaction, _) => known.extend(reaction.issued().map(|issued| issued.id)),
                Job::Client(message) if attempt != Attempt::First => known.push(message.command_id),
                Job::Client(_) => {}
            }
        }
        let mut batch = Batch {
            attempt,
            ..Batch::default()
        };
        if !known.is_empty() {
            batch.outcomes = self.store().outcomes(&known).await?.into_iter().collect();
        }
        let outcomes = self.decide_round(&mut batch, jobs).await?;
        // Reactions to events decided just now: their ids derive from new versions, so none
        // was processed before.
        while attempt != Attempt::AfterClash && !batch.reactions.is_empty() {
            let reactions = std::mem::take(&mut batch.reactions);
            self.decide_round(&mut batch, reactions).await?;
        }
        let results: Vec<_> = batch
            .decided
            .iter()
            .map(|d| (d.aggregate().0, d.result()))
            .collect();
        if !batch.decided.is_empty() {
            self.store().write_all(batch.decided).await?;
        }
        for &(aggregate, result) in &results {
            metrics::counter!("financing_commands_decided_total", "aggregate" => aggregate, "outcome" => result)
                .increment(1);
        }
        tracing::debug!(
            jobs = outcomes.len(),
            decided = results.len(),
            "a batch written"
        );
        Ok(outcomes)
    }

    /// Decides `jobs` in the batch, after reading in one query the streams they need that the
    /// batch has not read yet: each job's outcome.
    async fn decide_round(
        &self,
        batch: &mut Batch,
        jobs: Vec<Job>,
    ) -> Result<Vec<Outcome>, StoreError> {
        let mut missing = Vec::new();
        for stream in jobs.iter().flat_map(|job| batch.to_read_for(job)) {
            let known = batch.streams.contains_key(&stream) || batch.states.contains_key(&stream);
            if !known && !missing.contains(&stream) {
                missing.push(stream);
            }
        }
        if !missing.is_empty() {
            let loaded = self.store().load_streams(&missing).await?;
            if loaded.len() != missing.len() {
                return Err(StoreError::Corrupt(format!(
                    "{} streams loaded for {} asked",
                    loaded.len(),
                    missing.len()
                )));
            }
            batch.streams.extend(missing.into_iter().zip(loaded));
        }
        let mut outcomes = Vec::with_capacity(jobs.len());
        for job in jobs {
            let (command, compensation, origin) = match job {
                Job::Client(message) => {
                    let (issued, origin) = self.issue(message, Some(batch)).await?;
                    (issued, None, origin)
                }
                Job::React(reaction, origin) => (reaction.command, reaction.compensation, origin),
            };
            outcomes.push(
                self.decide_compensated(batch, &command, compensation, origin)
                    .await?,
            );
        }
        Ok(outcomes)
    }

    /// Decides a command of the batch, and its compensation if it is rejected.
    async fn decide_compensated(
        &self,
        batch: &mut Batch,
        command: &Issued,
        compensation: Option<Issued>,
        origin: Origin,
    ) -> Result<Outcome, StoreError> {
        let outcome = self.decide_in(batch, command, origin).await?;
        if let (Outcome::Rejected { .. }, Some(compensation)) = (&outcome, compensation) {
            self.decide_in(batch, &compensation, origin).await?;
        }
        Ok(outcome)
    }

    /// Decides a command of the batch on the state the ones before it left.
    async fn decide_in(
        &self,
        batch: &mut Batch,
        issued: &Issued,
        origin: Origin,
    ) -> Result<Outcome, StoreError> {
        if let Some(outcome) = batch.outcomes.get(&issued.id) {
            // The same command twice in the batch: it is processed once.
            return Ok(outcome.clone());
        }
        let meta = CommandMeta {
            command_id: issued.id,
            correlation_id: origin.correlation_id,
            causation_id: origin.causation_id,
            actor: origin.actor,
        };
        let read = batch.read_for(&issued.command);
        let outcome = match &issued.command {
            Command::Issuer(id, command) => {
                self.decide_one::<Issuer>(batch, *id, command, meta, read)
                    .await
            }
            Command::Investor(id, command) => {
                self.decide_one::<Investor>(batch, *id, command, meta, read)
                    .await
            }
            Command::Invoice(id, command) => {
                self.decide_one::<Invoice>(batch, *id, command, meta, read)
                    .await
            }
        }?;
        batch.outcomes.insert(issued.id, outcome.clone());
        Ok(outcome)
    }

    async fn decide_one<A: Aggregate>(
        &self,
        batch: &mut Batch,
        id: A::Id,
        command: &A::Command,
        meta: CommandMeta,
        read: Read,
    ) -> Result<Outcome, StoreError> {
        let key = (A::TYPE, id.into());
        let unread = !batch.states.contains_key(&key) && !batch.streams.contains_key(&key);
        if !batch.states.contains_key(&key) {
            let stream = match batch.streams.remove(&key) {
                Some(stream) => stream,
                None if read == Read::NotForACreation => Stream::default(),
                None => {
                    return Err(StoreError::Corrupt(format!(
                        "{} {} was not loaded",
                        A::TYPE,
                        key.1
                    )));
                }
            };
            let loaded = self.repository.fold::<A>(id, stream).await?;
            batch.states.insert(key, Box::new(loaded));
        }
        let loaded = batch
            .states
            .get_mut(&key)
            .and_then(|state| state.downcast_mut::<Loaded<A>>())
            .ok_or_else(|| {
                StoreError::Corrupt(format!("{} {} kept as another type", A::TYPE, key.1))
            })?;
        let mut decision = loaded.state.decide(id, command);
        if decision.is_err() && unread {
            // A creation refused on no history is decided again on what is stored.
            let stream = self.store().load_stream(A::TYPE, key.1).await?;
            *loaded = self.repository.fold::<A>(id, stream).await?;
            decision = loaded.state.decide(id, command);
        }
        let mut reactions = Vec::new();
        let (decided, outcome) = match decision {
            Ok(events) => {
                let append = self.repository.advance(loaded, &events, meta)?;
                for (version, (event, new)) in
                    (append.expected_version + 1..).zip(events.into_iter().zip(&append.events))
                {
                    let position = EventPosition {
                        aggregate_id: key.1,
                        version,
                    };
                    if let Some(reaction) = saga::on_event(position, &event.into()) {
                        let origin = Origin {
                            correlation_id: meta.correlation_id,
                            causation_id: new.metadata.event_id,
                            actor: meta.actor,
                        };
                        reactions.push(Job::React(reaction, origin));
                    }
                }
                (Decided::Applied(append), Outcome::Applied)
            }
            Err(rejection) => {
                let reason = rejection.to_string();
                let rejected = Rejected {
                    command_id: meta.command_id,
                    aggregate_type: A::TYPE,
                    aggregate_id: key.1,
                    reason: reason.clone(),
                    actor: meta.actor,
                };
                (Decided::Rejected(rejected), Outcome::Rejected { reason })
            }
        };
        batch.decided.push(decided);
        batch.reactions.extend(reactions);
        Ok(outcome)
    }

    pub async fn execute(&self, issued: &Issued, origin: Origin) -> Result<Outcome, StoreError> {
        let read = Read::for_command(&issued.command);
        match &issued.command {
            Command::Issuer(id, command) => {
                self.run::<Issuer>(*id, command, issued.id, origin, read)
                    .await
            }
            Command::Investor(id, command) => {
                self.run::<Investor>(*id, command, issued.id, origin, read)
                    .await
            }
            Command::Invoice(id, command) => {
                self.run::<Invoice>(*id, command, issued.id, origin, read)
                    .await
            }
        }
    }

    #[tracing::instrument(skip_all, fields(%command_id, aggregate = A::TYPE, aggregate_id = %id))]
    async fn run<A: Aggregate>(
        &self,
        id: A::Id,
        command: &A::Command,
        command_id: CommandId,
        origin: Origin,
        read: Read,
    ) -> Result<Outcome, StoreError> {
        let meta = CommandMeta {
            command_id,
            correlation_id: origin.correlation_id,
            causation_id: origin.causation_id,
            actor: origin.actor,
        };
        let started = std::time::Instant::now();
        let outcome = self.decide::<A>(id, command, meta, read).await;
        let result = outcome.as_ref().map_or("error", Outcome::result);
        metrics::counter!("financing_commands_decided_total", "aggregate" => A::TYPE, "outcome" => result)
            .increment(1);
        metrics::histogram!("financing_decide_seconds", "aggregate" => A::TYPE)
            .record(started.elapsed().as_secs_f64());
        outcome
    }

    /// Load, decide, write; again on a version clash, a bounded number of times. A command
    /// that creates its aggregate is first decided on no history, unread: its write fails if
    /// the aggregate exists, and a rejection is only ever decided on what was read.
    async fn decide<A: Aggregate>(
        &self,
        id: A::Id,
        command: &A::Command,
        meta: CommandMeta,
        mut read: Read,
    ) -> Result<Outcome, StoreError> {
        let command_id = meta.command_id;
        let mut attempt = 1;
        loop {
            let loaded = match read {
                Read::First => self.repository.load::<A>(id).await?,
                Read::NotForACreation => Loaded {
                    id,
                    state: A::default(),
                    version: 0,
                },
            };
            let written = match loaded.state.decide(id, command) {
                Err(_) if read == Read::NotForACreation => {
                    read = Read::First;
                    continue;
                }
                Ok(events) => {
                    let saved = self.repository.save(&loaded, &events, meta).await;
                    saved.map(|()| {
                        tracing::debug!(
                            version = loaded.version + events.len() as u64,
                            events = events.len(),
                            "command applied"
                        );
                        Outcome::Applied
                    })
                }
                Err(rejection) => {
                    let reason = rejection.to_string();
                    let store = self.repository.store();
                    let recorded = store
                        .record_rejection(Rejected {
                            command_id,
                            aggregate_type: A::TYPE,
                            aggregate_id: id.into(),
                            reason: reason.clone(),
                            actor: meta.actor,
                        })
                        .await;
                    recorded.map(|()| {
                        tracing::debug!(%reason, "command rejected");
                        Outcome::Rejected { reason }
                    })
                }
            };
            match written {
                Err(StoreError::Conflict { .. }) if attempt < self.max_attempts => {
                    tracing::debug!(attempt, "version conflict, deciding again");
                    attempt += 1;
                    read = Read::First;
                }
                Err(StoreError::AlreadyProcessed(_)) => {
                    let outcome = self.repository.store().outcome(command_id).await?;
                    let outcome = outcome.ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "command {command_id} processed without an outcome"
                        ))
                    })?;
                    tracing::info!(?outcome, "command already processed, nothing changed");
                    return Ok(outcome);
                }
                other => return other,
            }
        }
    }
}

/// Whether a command's aggregate is read before the command is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    First,
    /// A command that creates its aggregate is decided on no history: its write expects
    /// version 0 and fails if the aggregate exists after all (the command is then decided
    /// again on what is read), and a rejection is decided again on what is read.
    NotForACreation,
}

impl Read {
    fn for_command(command: &Command) -> Read {
        if command.creates_its_aggregate() {
            Read::NotForACreation
        } else {
            Read::First
        }
    }
}

/// Which try at writing a batch this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Attempt {
    /// The reactions' first outcomes looked up; the saga's reactions decided in the batch.
    #[default]
    First,
    /// After a client's command was found processed before: every job's first outcome looked
    /// up.
    AfterProcessedBefore,
    /// After another writer got to an aggregate first: every job's first outcome looked up,
    /// the saga's reactions left to the broker's delivery of the events, as one message at a
    /// time leaves them.
    AfterClash,
}

/// Commands of a batch decided so far, and the states they left.
#[derive(Default)]
struct Batch {
    attempt: Attempt,
    /// The streams loaded, until their aggregate's state is first needed.
    streams: HashMap<(&'static str, Uuid), Stream>,
    /// Each aggregate's `Loaded<A>`, as the commands decided so far left it.
    states: HashMap<(&'static str, Uuid), Box<dyn Any + Send + Sync>>,
    decided: Vec<Decided>,
    /// The outcome of every command decided so far, or processed before.
    outcomes: HashMap<CommandId, Outcome>,
    /// The saga's reactions to the events decided so far, not decided yet.
    reactions: Vec<Job>,
}

impl Batch {
    /// Whether a command's aggregate is read before the command is decided: always after a
    /// clash.
    fn read_for(&self, command: &Command) -> Read {
        match self.attempt {
            Attempt::AfterClash => Read::First,
            Attempt::First | Attempt::AfterProcessedBefore => Read::for_command(command),
        }
    }

    /// The streams a job of the batch needs read: none for a command processed before, nor
    /// for one that creates its aggregate; a compensation's unless its command is known to
    /// have applied.
    fn to_read_for(&self, job: &Job) -> Vec<(&'static str, Uuid)> {
        let unknown = |issued: &&Issued| !self.outcomes.contains_key(&issued.id);
        let needs_reading = |command: &Command| self.read_for(command) == Read::First;
        match job {
            Job::Client(message) if self.outcomes.contains_key(&message.command_id) => vec![],
            Job::Client(message) => {
                // Whether the issuer is registered does not change the stream.
                let command = message.command.clone().into_command(false, None);
                if needs_reading(&command) {
                    vec![command.stream()]
                } else {
                    vec![]
                }
            }
            Job::React(reaction, _) => {
                let applied = self.outcomes.get(&reaction.command.id) == Some(&Outcome::Applied);
                // Once the command applied, its compensation is never issued.
                let needed = if applied { 1 } else { 2 };
                reaction
                    .issued()
                    .take(needed)
                    .filter(unknown)
                    .filter(|issued| needs_reading(&issued.command))
                    .map(|issued| issued.command.stream())
                    .collect()
            }
        }
    }

    /// An aggregate as the commands decided so far left it, if any touched it.
    fn state<A: Aggregate>(&self, id: A::Id) -> Option<&Loaded<A>> {
        let state = self.states.get(&(A::TYPE, id.into()))?;
        state.downcast_ref::<Loaded<A>>()
    }
}
