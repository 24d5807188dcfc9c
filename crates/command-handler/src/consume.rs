//! What the handler does with each message: decode it and turn it into work for the executor;
//! park it when the effect it owes cannot happen now (it is tried again until it goes through);
//! or set it aside on the dead-letter topic when it never can, telling the client its command
//! FAILED.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use financing_domain::saga;
use financing_event_store::{Parked, Received, StoreError};
use financing_messaging::{
    CommandMessage, EventEnvelope, HandleMessage, PublishError, Undecodable, WireForm, glimpse,
    headers_of, integration_event,
};
use financing_runtime::retry::Chain;
use futures::FutureExt;
use rdkafka::Message;
use rdkafka::Timestamp;
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders, OwnedMessage};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{CommandHandler, Job, Origin};

/// How many parked messages a handler claims at a time, and for how long: more than their
/// attempts take one after the other (a handler that dies holding them delays them this long).
const PARKED_CLAIM: u32 = 20;
const PARKED_LEASE: Duration = Duration::from_secs(120);

/// What a message asks for.
enum Work {
    Do(Job),
    Nothing,
}

/// What became of a message.
enum Handled {
    Done,
    /// Its effect is owed but cannot happen now: parked and tried again.
    Park(String),
    /// It can never be handled: set aside.
    SetAside(String),
}

/// Why a message cannot be finished now: it is retried, never skipped.
#[derive(Debug, thiserror::Error)]
pub enum Transient {
    #[error("the event store failed")]
    Store(#[from] StoreError),
    #[error("the dead-letter topic did not take the message")]
    DeadLetter(#[from] PublishError),
}

impl HandleMessage for CommandHandler {
    type Error = Transient;

    async fn handle(&self, message: &BorrowedMessage<'_>) -> Result<(), Transient> {
        match self.act(message).await? {
            Handled::Done => Ok(()),
            Handled::Park(reason) => self.park(message, &reason).await,
            Handled::SetAside(reason) => self.dead_letter(message, &reason).await,
        }
    }

    /// What every message asks, decided together and written in one transaction. A message
    /// that cannot be read, and any trouble writing, leave them all to `handle`: one at a time,
    /// each with its own retries, parking or dead letter.
    async fn handle_all(&self, messages: &[BorrowedMessage<'_>]) -> bool {
        let mut jobs = Vec::with_capacity(messages.len());
        for message in messages {
            match self.work(message) {
                Ok(Work::Do(job)) => jobs.push(job),
                Ok(Work::Nothing) => {}
                Err(_) => return false,
            }
        }
        if jobs.is_empty() {
            return true;
        }
        match self.executor.execute_all(jobs).await {
            Ok(_) => true,
            Err(error) => {
                tracing::debug!(error = %Chain(&error), "a batch is handled one message at a time");
                false
            }
        }
    }

    /// A message that made the handler panic: a client command is dead-lettered (and FAILED);
    /// what the saga or Registering is owed is parked, never dropped.
    async fn set_aside(
        &self,
        message: &BorrowedMessage<'_>,
        reason: &str,
    ) -> Result<(), Transient> {
        if message.topic() == self.topics.commands {
            self.dead_letter(message, reason).await
        } else {
            self.park(message, reason).await
        }
    }
}

impl CommandHandler {
    /// Parks a message whose effect is owed, to be tried again. One the event store refuses to
    /// keep (it cannot take its bytes) is dead-lettered instead.
    async fn park(&self, message: &impl Message, reason: &str) -> Result<(), Transient> {
        let delay = self.retry_parked_after(0);
        match self.parking.park(&received(message), reason, delay).await {
            Ok(()) => {}
            Err(StoreError::Refused(refused)) => {
                let reason = format!("{reason}; and it cannot be parked: {refused}");
                return self.dead_letter(message, &reason).await;
            }
            Err(error) => return Err(error.into()),
        }
        tracing::error!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            reason,
            retry_in = ?delay,
            "a message whose effect is owed cannot be handled now; parked"
        );
        Ok(())
    }

    /// Sends a message that can never be handled to the dead-letter topic; a client command's
    /// outcome is then FAILED. The failure is recorded first: while the event store is down,
    /// each retry would otherwise add another copy to the dead-letter topic.
    async fn dead_letter(&self, message: &impl Message, reason: &str) -> Result<(), Transient> {
        self.record_failure(message, reason).await?;
        Ok(self.dead_letters.send(message, reason).await?)
    }

    /// Decodes the message and does what it asks; an error is an outage.
    async fn act(&self, message: &impl Message) -> Result<Handled, StoreError> {
        let from_the_saga = message.topic() == self.topics.events;
        let work = match self.work(message) {
            Ok(work) => work,
            // An event the saga owes a reaction to: perhaps a newer handler can read it.
            Err(undecodable) if from_the_saga => return Ok(Handled::Park(undecodable.to_string())),
            Err(undecodable) => return Ok(Handled::SetAside(undecodable.to_string())),
        };
        let outcome = match work {
            Work::Nothing => return Ok(Handled::Done),
            Work::Do(Job::Client(command)) => self.executor.client_command(command).await,
            Work::Do(Job::React(reaction, origin)) => self.executor.react(&reaction, origin).await,
        };
        let from_a_client = message.topic() == self.topics.commands;
        match outcome {
            Ok(_) => Ok(Handled::Done),
            // The message's own data can never be stored (a NUL in a name): no retry can help.
            Err(error @ StoreError::Refused(_)) => Ok(Handled::SetAside(error.to_string())),
            // The aggregate's stream cannot be read: a client is told; a reaction is owed, and
            // a fixed stream or a newer handler will carry it out.
            Err(error @ StoreError::Corrupt(_)) if from_a_client => {
                Ok(Handled::SetAside(error.to_string()))
            }
            Err(error @ StoreError::Corrupt(_)) => Ok(Handled::Park(error.to_string())),
            Err(error) => Err(error),
        }
    }

    fn work(&self, message: &impl Message) -> Result<Work, Undecodable> {
        let topic = message.topic();
        if topic == self.topics.commands {
            Ok(Work::Do(Job::Client(CommandMessage::decode(message)?)))
        } else if topic == self.topics.registering_events {
            let reaction = saga::on_integration_event(&integration_event(message)?);
            // An integration event starts a chain of its own.
            let chain = reaction.command.id.as_uuid();
            let origin = Origin {
                correlation_id: chain,
                causation_id: chain,
                actor: None,
            };
            Ok(Work::Do(Job::React(reaction, origin)))
        } else {
            let EventEnvelope { meta, event } = EventEnvelope::decode(message)?;
            let origin = Origin {
                correlation_id: meta.correlation_id,
                causation_id: meta.event_id,
                actor: meta.actor,
            };
            Ok(
                saga::on_event(meta.position(), &event).map_or(Work::Nothing, |reaction| {
                    Work::Do(Job::React(reaction, origin))
                }),
            )
        }
    }

    /// A client command that cannot be carried out FAILED, with the reason, for its client to
    /// see. Without a readable command id nobody can ask for it.
    async fn record_failure(&self, message: &impl Message, reason: &str) -> Result<(), Transient> {
        if message.topic() != self.topics.commands {
            return Ok(());
        }
        let glimpse = glimpse(message);
        let Some(command_id) = glimpse.command_id else {
            return Ok(());
        };
        let aggregate_id = message
            .key()
            .and_then(|key| std::str::from_utf8(key).ok())
            .and_then(|key| key.parse::<Uuid>().ok());
        let store = self.executor.store();
        store
            .record_failure(command_id, aggregate_id, reason, glimpse.actor)
            .await?;
        tracing::warn!(%command_id, reason, "command failed");
        Ok(())
    }

    /// Tries the parked messages that are due again, every so often, until shutdown: a few at
    /// a time, claimed, so that another handler instance never tries the same one at once.
    pub(crate) async fn retry_parked(&self, shutdown: &CancellationToken) {
        // After a full claim, more are likely due: claim again at once.
        let mut full = false;
        loop {
            if !full {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(self.parked_retry.min(Duration::from_secs(5))) => {}
                }
            }
            let due = match self.parking.claim_due(PARKED_CLAIM, PARKED_LEASE).await {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(error = %Chain(&error), "cannot read the parked messages");
                    full = false;
                    continue;
                }
            };
            full = due.len() == PARKED_CLAIM as usize;
            let claimed = std::time::Instant::now();
            for parked in due {
                if shutdown.is_cancelled() {
                    return;
                }
                // Past half the lease another instance may soon claim the rest: they are
                // left to whoever claims them once it ends.
                if claimed.elapsed() > PARKED_LEASE / 2 {
                    full = false;
                    break;
                }
                if let Err(error) = self.retry(&parked).await {
                    tracing::warn!(error = %Chain(&error), id = parked.id, "cannot retry a parked message yet");
                }
            }
        }
    }

    async fn retry(&self, parked: &Parked) -> Result<(), Transient> {
        let message = as_kafka_message(&parked.message);
        let (topic, offset) = (&parked.message.topic, parked.message.offset);
        // A message that still makes the handler panic stays parked.
        let attempt = AssertUnwindSafe(self.act(&message)).catch_unwind().await;
        let attempt = attempt.unwrap_or_else(|_| Ok(Handled::Park("handling it panicked".into())));
        let still = match attempt {
            Ok(Handled::Done) => {
                self.parking.release(parked.id).await?;
                tracing::info!(
                    topic,
                    offset,
                    attempts = parked.attempts + 1,
                    "a parked message went through"
                );
                return Ok(());
            }
            Ok(Handled::SetAside(reason)) => {
                self.dead_letter(&message, &reason).await?;
                self.parking.release(parked.id).await?;
                return Ok(());
            }
            Ok(Handled::Park(reason)) => reason,
            Err(error) => Chain(&error).to_string(),
        };
        let delay = self.retry_parked_after(parked.attempts + 1);
        self.parking.postpone(parked.id, &still, delay).await?;
        tracing::error!(
            topic,
            offset,
            attempts = parked.attempts + 1,
            reason = still,
            retry_in = ?delay,
            "a parked message still cannot be handled"
        );
        Ok(())
    }

    /// The wait before the next attempt: `PARKED_RETRY_MS`, doubling with each failed attempt,
    /// at most an hour.
    fn retry_parked_after(&self, attempts: u32) -> Duration {
        self.parked_retry
            .saturating_mul(2u32.saturating_pow(attempts.min(16)))
            .min(Duration::from_secs(3600))
    }
}

fn received(message: &impl Message) -> Received {
    Received {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec),
        headers: headers_of(message),
    }
}

/// A parked message as the broker delivered it.
fn as_kafka_message(message: &Received) -> OwnedMessage {
    let headers = message.headers.iter().fold(
        OwnedHeaders::new_with_capacity(message.headers.len()),
        |all, (key, value)| {
            all.insert(Header {
                key,
                value: value.as_deref(),
            })
        },
    );
    OwnedMessage::new(
        message.payload.clone(),
        message.key.clone(),
        message.topic.clone(),
        Timestamp::NotAvailable,
        message.partition,
        message.offset,
        Some(headers),
    )
}
