//! The consumer loop every component shares. It takes the messages the consumer has ready (up
//! to [`MOST_AT_ONCE`]) and offers them to the handler all at once; if it does not take them
//! that way, it handles those of different keys concurrently, those of one key (one
//! aggregate) one after the other, in order. Each is retried through outages (never skipped);
//! offsets are stored only once the messages before them in their partition are handled too,
//! and the stored offsets are committed when shutdown stops the loop. A message that makes the
//! handler panic is set aside with the reason: it cannot stop the consumer, let alone the
//! process.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use financing_runtime::retry::{Chain, outage_backoff};
use futures::{FutureExt, StreamExt};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{GroupConsumer, KafkaConfig, PublishError, Publisher, dead_letter, glimpse};

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

    /// Handles the messages the consumer had ready (one or more; one key's in order) at once,
    /// all or none: `true` once every one is handled. `false` (the default) leaves every one of
    /// them to [`HandleMessage::handle`], one at a time, so nothing of theirs may have been
    /// done.
    fn handle_all(&self, messages: &[BorrowedMessage<'_>]) -> impl Future<Output = bool> + Send {
        let _ = messages;
        async { false }
    }

    /// Sets aside a message that can never be handled, with the reason: on the dead-letter
    /// topic, with whatever its sender is owed. The loop calls it for a message whose handling
    /// panicked. An error means "not now", as for `handle`.
    fn set_aside(
        &self,
        message: &BorrowedMessage<'_>,
        reason: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// The most messages a consumer takes at once.
const MOST_AT_ONCE: usize = 64;
/// The most keys whose messages one consumer handles at the same time.
const KEYS_AT_ONCE: usize = 4;

/// The database connections `consumers` consumers can use at once.
pub fn connections_for(consumers: usize) -> u32 {
    u32::try_from(consumers.max(1) * KEYS_AT_ONCE).unwrap_or(u32::MAX)
}

/// Consumes until shutdown: the messages in hand are finished (or, if shutdown comes while one
/// waits out an outage, it and the ones after it in its partition are left for redelivery) and
/// the stored offsets committed.
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
        let first = match received {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(error = %Chain(&error), "cannot receive from the broker");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let mut messages = vec![first];
        while messages.len() < MOST_AT_ONCE {
            match consumer.recv().now_or_never() {
                Some(Ok(message)) => messages.push(message),
                // An error is met again, and reported, by the next wait.
                Some(Err(_)) | None => break,
            }
        }
        record_delays(&messages);
        let all_at_once = take_all_at_once(handler, &messages).await;
        let handled = if all_at_once {
            vec![true; messages.len()]
        } else {
            handle_by_key(handler, &messages, shutdown).await
        };
        let mut stopped: HashSet<(&str, i32)> = HashSet::new();
        for (message, handled) in messages.iter().zip(handled) {
            let partition = (message.topic(), message.partition());
            if !handled || stopped.contains(&partition) {
                stopped.insert(partition);
                continue;
            }
            if let Err(error) = consumer.store_offset_from_message(message) {
                tracing::warn!(error = %Chain(&error), "cannot store the offset; the message may be redelivered");
            }
        }
        if !stopped.is_empty() {
            break;
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

/// Whether the handler took the messages all at once (counted in `financing_batches_total`).
/// A batch that panics is handled one message at a time: each panic is then caught with its
/// message.
async fn take_all_at_once<H: HandleMessage>(handler: &H, messages: &[BorrowedMessage<'_>]) -> bool {
    let taken = AssertUnwindSafe(handler.handle_all(messages))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let reason = panic_message(&*panic);
            tracing::warn!(reason, "handling a batch panicked; one message at a time");
            false
        });
    let result = if taken { "written" } else { "one_at_a_time" };
    metrics::counter!("financing_batches_total", "result" => result).increment(1);
    taken
}

/// How long each message took from its producer to this consumer
/// (`financing_consume_delay_seconds`): the broker's acknowledgement, its delivery and the
/// consumer's queue.
fn record_delays(messages: &[BorrowedMessage<'_>]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        });
    for message in messages {
        if let Some(produced) = message.timestamp().to_millis() {
            let waited = (now - produced).max(0) as f64 / 1e3;
            let topic = message.topic().to_owned();
            metrics::histogram!("financing_consume_delay_seconds", "topic" => topic).record(waited);
        }
    }
    metrics::histogram!("financing_batch_messages").record(messages.len() as f64);
}

/// Handles `messages`, one key's after the other in order, up to [`KEYS_AT_ONCE`] keys at a
/// time. Per message: whether it was handled (`false` if shutdown came first).
async fn handle_by_key<H: HandleMessage>(
    handler: &H,
    messages: &[BorrowedMessage<'_>],
    shutdown: &CancellationToken,
) -> Vec<bool> {
    let mut by_key: HashMap<Option<&[u8]>, Vec<usize>> = HashMap::new();
    for (index, message) in messages.iter().enumerate() {
        by_key.entry(message.key()).or_default().push(index);
    }
    let mut handled = vec![false; messages.len()];
    let chains = futures::stream::iter(by_key.into_values())
        .map(|chain| async move {
            let mut done = Vec::with_capacity(chain.len());
            for index in chain {
                if !handle_until_done(handler, &messages[index], shutdown).await {
                    break;
                }
                done.push(index);
            }
            done
        })
        .buffer_unordered(KEYS_AT_ONCE);
    let done: Vec<Vec<usize>> = chains.collect().await;
    for index in done.into_iter().flatten() {
        handled[index] = true;
    }
    handled
}

/// `false` if shutdown came while waiting out an outage.
async fn handle_until_done<H: HandleMessage>(
    handler: &H,
    message: &BorrowedMessage<'_>,
    shutdown: &CancellationToken,
) -> bool {
    // Every line logged while handling it names the chain of work it belongs to.
    let span = match glimpse(message).correlation_id {
        Some(correlation_id) => tracing::info_span!("message", %correlation_id),
        None => tracing::info_span!("message"),
    };
    handle_in_span(handler, message, shutdown)
        .instrument(span)
        .await
}

async fn handle_in_span<H: HandleMessage>(
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
        metrics::counter!("financing_dead_letters_total", "from" => message.topic().to_owned())
            .increment(1);
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
