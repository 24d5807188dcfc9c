//! The consumer loop every component shares: one message at a time, retried through outages
//! (never skipped), its offset stored only once it is handled, and the stored offsets committed
//! when shutdown stops the loop. A message that makes the handler panic is set aside with the
//! reason: it cannot stop the consumer, let alone the process.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use financing_runtime::retry::{Chain, outage_backoff};
use futures::FutureExt;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use tokio_util::sync::CancellationToken;

use crate::{GroupConsumer, KafkaConfig, PublishError, Publisher, dead_letter};

/// What a component does with each message it consumes.
pub trait HandleMessage: Sync {
    type Error: std::error::Error + Send;

    /// Handles one message. An error means "not now" (a database or broker outage): the
    /// message is retried with backoff. A message that can never be handled must be set aside
    /// (see [`HandleMessage::set_aside`]) and reported handled.
    fn handle(
        &self,
        message: &BorrowedMessage<'_>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Sets aside a message that can never be handled, with the reason: on the dead-letter
    /// topic, with whatever its sender is owed. The loop calls it for a message whose handling
    /// panicked. An error means "not now", as for `handle`.
    fn set_aside(
        &self,
        message: &BorrowedMessage<'_>,
        reason: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Consumes until shutdown: the message in hand is finished (or, if shutdown comes while it
/// waits out an outage, left for redelivery) and the stored offsets committed.
pub(crate) async fn consume<H: HandleMessage>(
    consumer: &GroupConsumer,
    handler: &H,
    shutdown: &CancellationToken,
) {
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => break,
            received = consumer.recv() => received,
        };
        let message = match received {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(error = %Chain(&error), "cannot receive from the broker");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if !handle_until_done(handler, &message, shutdown).await {
            break;
        }
        if let Err(error) = consumer.store_offset_from_message(&message) {
            tracing::warn!(error = %Chain(&error), "cannot store the offset; the message may be redelivered");
        }
    }
    match consumer.commit_consumer_state(CommitMode::Sync) {
        // Nothing stored since the last automatic commit.
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => {
            tracing::warn!(error = %Chain(&error), "cannot commit offsets; messages may be redelivered");
        }
    }
}

/// `false` if shutdown came while waiting out an outage.
async fn handle_until_done<H: HandleMessage>(
    handler: &H,
    message: &BorrowedMessage<'_>,
    shutdown: &CancellationToken,
) -> bool {
    let mut delays = outage_backoff();
    // Once handling has panicked, the message is set aside instead.
    let mut panicked: Option<String> = None;
    loop {
        let attempt = match &panicked {
            None => {
                AssertUnwindSafe(handler.handle(message))
                    .catch_unwind()
                    .await
            }
            Some(reason) => {
                AssertUnwindSafe(handler.set_aside(message, reason))
                    .catch_unwind()
                    .await
            }
        };
        let error = match attempt {
            Ok(Ok(())) => return true,
            Ok(Err(error)) => Chain(&error).to_string(),
            Err(panic) => {
                let reason = format!("handling it panicked: {}", panic_message(&*panic));
                tracing::error!(
                    topic = message.topic(),
                    partition = message.partition(),
                    offset = message.offset(),
                    reason,
                    "a message made the handler panic; it is set aside"
                );
                if panicked.is_none() {
                    panicked = Some(reason);
                    continue;
                }
                // Setting it aside panicked too: a bug, tried again, loudly, like an outage.
                reason
            }
        };
        let delay = delays.next().unwrap_or(Duration::from_secs(5));
        tracing::warn!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            error,
            retry_in = ?delay,
            "cannot handle the message yet"
        );
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

/// Where messages that can never be handled go, with the reason.
#[derive(Clone)]
pub struct DeadLetters {
    publisher: Publisher,
    topic: String,
}

impl DeadLetters {
    pub fn new(config: &KafkaConfig) -> Result<DeadLetters, KafkaError> {
        Ok(DeadLetters {
            publisher: Publisher::new(config)?,
            topic: config.topics().dlq,
        })
    }

    pub async fn send(&self, message: &impl Message, reason: &str) -> Result<(), PublishError> {
        self.publisher
            .republish(&self.topic, &dead_letter(message, reason))
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
