//! What the handler does with each message: decode it, turn it into work for the executor, or
//! dead-letter it with the reason.

use financing_domain::saga::{self, Reaction};
use financing_event_store::StoreError;
use financing_messaging::{
    CommandMessage, EventMessage, HandleMessage, PublishError, Undecodable, integration_event,
};
use rdkafka::Message;
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
pub enum Transient {
    #[error("the event store failed")]
    Store(#[from] StoreError),
    #[error("the dead-letter topic did not take the message")]
    DeadLetter(#[from] PublishError),
}

impl HandleMessage for CommandHandler {
    type Error = Transient;

    async fn handle(&self, message: &BorrowedMessage<'_>) -> Result<(), Transient> {
        let outcome = match self.work(message) {
            Err(undecodable) => {
                return Ok(self
                    .dead_letters
                    .send(message, &undecodable.to_string())
                    .await?);
            }
            Ok(Work::Nothing) => return Ok(()),
            Ok(Work::Client(command)) => self.executor.client_command(command).await,
            Ok(Work::React(reaction, origin)) => self.executor.react(&reaction, origin).await,
        };
        match outcome {
            Ok(_) => Ok(()),
            Err(error @ (StoreError::Corrupt(_) | StoreError::Refused(_))) => {
                Ok(self.dead_letters.send(message, &error.to_string()).await?)
            }
            Err(error) => Err(error.into()),
        }
    }
}

impl CommandHandler {
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
}
