//! Applying one command to one aggregate: load, decide, append with the expected version,
//! reloading on a version conflict a bounded number of times. A rejection is recorded as the
//! command's outcome; a command id seen before changes nothing and reports its first outcome.
//! Issuers found registered are remembered: issuers are never removed.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use financing_domain::saga::{Issued, Reaction};
use financing_domain::{
    Aggregate, ClientCommand, Command, CommandId, Investor, Invoice, Issuer, IssuerId,
};
use financing_event_store::{CommandMeta, EventStore, Outcome, Repository, StoreError};
use financing_messaging::CommandMessage;
use uuid::Uuid;

/// The chain a command belongs to: the client request that started it and what caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
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
        let issuer_registered = match &message.command {
            ClientCommand::SellInvoice { issuer_id, .. } => self.is_registered(*issuer_id).await?,
            _ => false,
        };
        let issued = Issued {
            id: message.command_id,
            command: message.command.into_command(issuer_registered),
        };
        let origin = Origin {
            correlation_id: message.correlation_id,
            causation_id: message.command_id.as_uuid(),
        };
        self.execute(&issued, origin).await
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

    pub async fn execute(&self, issued: &Issued, origin: Origin) -> Result<Outcome, StoreError> {
        match &issued.command {
            Command::Issuer(id, command) => {
                self.run::<Issuer>(*id, command, issued.id, origin).await
            }
            Command::Investor(id, command) => {
                self.run::<Investor>(*id, command, issued.id, origin).await
            }
            Command::Invoice(id, command) => {
                self.run::<Invoice>(*id, command, issued.id, origin).await
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
    ) -> Result<Outcome, StoreError> {
        let meta = CommandMeta {
            command_id,
            correlation_id: origin.correlation_id,
            causation_id: origin.causation_id,
        };
        let started = std::time::Instant::now();
        let outcome = self.decide::<A>(id, command, command_id, meta).await;
        let result = match &outcome {
            Ok(Outcome::Applied) => "applied",
            Ok(Outcome::Rejected { .. }) => "rejected",
            Err(_) => "error",
        };
        metrics::counter!("financing_commands_decided_total", "aggregate" => A::TYPE, "outcome" => result)
            .increment(1);
        metrics::histogram!("financing_decide_seconds", "aggregate" => A::TYPE)
            .record(started.elapsed().as_secs_f64());
        outcome
    }

    /// Load, decide, write; again on a version clash, a bounded number of times.
    async fn decide<A: Aggregate>(
        &self,
        id: A::Id,
        command: &A::Command,
        command_id: CommandId,
        meta: CommandMeta,
    ) -> Result<Outcome, StoreError> {
        let mut attempt = 1;
        loop {
            let loaded = self.repository.load::<A>(id).await?;
            let written = match loaded.state.decide(id, command) {
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
                        .record_rejection(command_id, A::TYPE, id.into(), &reason)
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
