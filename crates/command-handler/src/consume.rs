//! The consumer loop: one message at a time, from decoding to the stored offset.

use std::time::Duration;

use financing_domain::saga::{self, Reaction};
use financing_event_store::StoreError;
use financing_messaging::{
    CommandMessage, EventMessage, PublishError, Undecodable, dead_letter, integration_event,
};
use financing_runtime::retry::{Chain, outage_backoff};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;

use crate::{CommandHandler, Origin};

/// What a message asks for.
enum Work {
    Client(CommandMessage),
    React(Reaction, Origin),
    Nothing,
}

/// Why a message cannot be finished now: it is retried, never skipped.
#[derive(Debug, thiserror::Error)]
enum Transient {
    #[error("the event store failed")]
    Store(#[from] StoreError),
    #[error("the dead-letter topic did not take the message")]
    DeadLetter(#[from] PublishError),
}

impl CommandHandler {
    /// Handles messages until shutdown: the message in hand is finished (or left for
    /// redelivery), its offset stored, and the stored offsets committed before returning.
    pub async fn run_until_stopped(self) {
        tracing::info!("command handler consuming");
        loop {
            let received = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                received = self.consumer.recv() => received,
            };
            let message = match received {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(error = %Chain(&error), "cannot receive from the broker");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            if !self.handle_until_done(&message).await {
                break;
            }
            if let Err(error) = self.consumer.store_offset_from_message(&message) {
                tracing::warn!(error = %Chain(&error), "cannot store the offset; the message may be redelivered");
            }
        }
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last automatic commit.
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => {
                tracing::warn!(error = %Chain(&error), "cannot commit offsets; messages may be redelivered");
            }
        }
        tracing::info!("command handler stopped");
    }

    /// Retries through outages; `false` if shutdown came first (the message is redelivered).
    async fn handle_until_done(&self, message: &BorrowedMessage<'_>) -> bool {
        let mut delays = outage_backoff();
        loop {
            let Err(error) = self.handle(message).await else {
                return true;
            };
            let delay = delays.next().unwrap_or(Duration::from_secs(5));
            tracing::warn!(
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                error = %Chain(&error),
                retry_in = ?delay,
                "cannot handle the message yet"
            );
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn handle(&self, message: &BorrowedMessage<'_>) -> Result<(), Transient> {
        let outcome = match self.work(message) {
            Err(undecodable) => return self.dead_letter(message, &undecodable.to_string()).await,
            Ok(Work::Nothing) => return Ok(()),
            Ok(Work::Client(command)) => self.executor.client_command(command).await,
            Ok(Work::React(reaction, origin)) => self.executor.react(&reaction, origin).await,
        };
        match outcome {
            Ok(_) => Ok(()),
            Err(StoreError::Corrupt(reason)) => self.dead_letter(message, &reason).await,
            Err(error) => Err(error.into()),
        }
    }

    fn work(&self, message: &BorrowedMessage<'_>) -> Result<Work, Undecodable> {
        let topic = message.topic();
        if topic == self.topics.commands {
            Ok(Work::Client(CommandMessage::decode(message)?))
        } else if topic == self.topics.registering_events {
            let reaction = saga::on_integration_event(&integration_event(message)?);
            // An integration event starts a chain of its own.
            let chain = reaction.command.id.as_uuid();
            let origin = Origin {
                correlation_id: chain,
                causation_id: chain,
            };
            Ok(Work::React(reaction, origin))
        } else {
            let EventMessage { meta, event } = EventMessage::decode(message)?;
            let origin = Origin {
                correlation_id: meta.correlation_id,
                causation_id: meta.event_id,
            };
            Ok(saga::on_event(meta.position(), &event)
                .map_or(Work::Nothing, |reaction| Work::React(reaction, origin)))
        }
    }

    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        reason: &str,
    ) -> Result<(), Transient> {
        self.dead_letters
            .publish(&self.topics.dlq, &dead_letter(message, reason))
            .await?;
        tracing::warn!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            reason,
            "message sent to the dead-letter topic"
        );
        Ok(())
    }
}
