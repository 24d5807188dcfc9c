//! Publishing that answers only once the broker has acknowledged the message.

use std::future::Future;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message};
use tokio::sync::{Mutex, oneshot};
use uuid::Uuid;

use crate::{KafkaConfig, Record};

/// An idempotent producer (no duplicates or reordering from its own retries), sending each
/// message in the next request to its partition's broker (`KAFKA_MAX_IN_FLIGHT` requests at a
/// time, `KAFKA_LINGER_MS` after it came). A thread of its own hands each acknowledgement to
/// the publish waiting for it. A producer librdkafka gives up as fatal (the broker answered an
/// idempotent produce out of sequence, say) is replaced by a new one, under a new producer id:
/// the publish that met it fails, the next goes through.
///
/// Messages are queued in the order their publishes began, even while librdkafka's queue is
/// full: publishes started one after the other (a batch's, joined) reach each partition in
/// that order.
#[derive(Clone)]
pub struct Publisher {
    /// The producer in use; replaced when it turns fatal.
    producer: Arc<RwLock<Arc<BaseProducer<Acknowledgements>>>>,
    /// How a producer is made.
    settings: Arc<ClientConfig>,
    /// Held while a message is put in librdkafka's queue (a fair lock: its waiters take it in
    /// the order they came), so that one waiting for room is never overtaken; it keeps when a
    /// publish last gave up waiting for room.
    queueing: Arc<Mutex<Option<Instant>>>,
    /// The longest a publish waits for its answer.
    answer_within: Duration,
}

/// Where an acknowledgement goes: the publish waiting for it.
type Acknowledgement = oneshot::Sender<Result<(), KafkaError>>;

/// Hands the broker's answer for each message to the publish waiting for it.
struct Acknowledgements;

impl ClientContext for Acknowledgements {}

impl ProducerContext for Acknowledgements {
    type DeliveryOpaque = Box<Acknowledgement>;

    fn delivery(&self, delivered: &DeliveryResult<'_>, waiting: Box<Acknowledgement>) {
        let answer = delivered
            .as_ref()
            .map(drop)
            .map_err(|(error, _)| error.clone());
        // A publish that stopped waiting (cancelled) no longer needs its answer.
        let _ = waiting.send(answer);
    }
}

/// How long the acknowledging thread waits for librdkafka's events in one call. rdkafka's
/// poll spins through the last millisecond of each call (it rounds the time left down to
/// whole milliseconds): its own producers poll every 100 ms, which costs an idle process 1%
/// of a core. Acknowledgements are handed over as they come whatever this is; it only bounds
/// how long the thread outlives its publisher.
const POLL: Duration = Duration::from_secs(1);
/// How long a publish waits for room in librdkafka's queue (a broker that does not keep up)
/// before it fails.
const QUEUE_WAIT: Duration = Duration::from_secs(1);
/// How long past the delivery timeout a publish waits for its answer: librdkafka answers
/// within the timeout, so this only bounds the wait if the acknowledging thread died.
const ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// A producer made with `settings`, its acknowledgements polled by a thread of its own.
fn producer(settings: &ClientConfig) -> Result<Arc<BaseProducer<Acknowledgements>>, KafkaError> {
    let producer = Arc::new(settings.create_with_context(Acknowledgements)?);
    acknowledge(Arc::downgrade(&producer)).map_err(|error| {
        KafkaError::ClientCreation(format!("cannot start the acknowledging thread: {error}"))
    })?;
    Ok(producer)
}

/// Polls `producer` for its acknowledgements on a thread of its own, until the last publisher
/// holding it is gone.
fn acknowledge(producer: Weak<BaseProducer<Acknowledgements>>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("kafka acks".into())
        .spawn(move || {
            while let Some(producer) = producer.upgrade() {
                producer.poll(POLL);
            }
        })
        .map(drop)
}

#[derive(Debug, thiserror::Error)]
#[error("the broker did not acknowledge the message")]
pub struct PublishError(#[from] pub KafkaError);

/// Where messages are published: the broker ([`Publisher`]), or a stand-in in tests.
pub trait Publish: Send + Sync {
    /// Sends `record` to `topic` (to `partition` if given, else where its key leads) and waits
    /// for the acknowledgement.
    fn publish_to(
        &self,
        topic: &str,
        partition: Option<i32>,
        record: &Record,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;
}

impl Publish for Publisher {
    fn publish_to(
        &self,
        topic: &str,
        partition: Option<i32>,
        record: &Record,
    ) -> impl Future<Output = Result<(), PublishError>> + Send {
        Publisher::publish_to(self, topic, partition, record)
    }
}

/// A shared publisher publishes.
impl<P: Publish> Publish for std::sync::Arc<P> {
    fn publish_to(
        &self,
        topic: &str,
        partition: Option<i32>,
        record: &Record,
    ) -> impl Future<Output = Result<(), PublishError>> + Send {
        (**self).publish_to(topic, partition, record)
    }
}

/// The partition an aggregate's messages go to, on a topic of `partitions`: the same one
/// always (while the count does not change), so that they stay in order.
pub fn partition_for(aggregate_id: Uuid, partitions: i32) -> i32 {
    let partitions = partitions.max(1) as u128;
    (aggregate_id.as_u128() % partitions) as i32
}

impl Publisher {
    pub fn new(config: &KafkaConfig) -> Result<Publisher, KafkaError> {
        Publisher::with_settings(config, &[])
    }

    /// A publisher with librdkafka `settings` on top of the configuration's.
    fn with_settings(
        config: &KafkaConfig,
        settings: &[(&str, &str)],
    ) -> Result<Publisher, KafkaError> {
        let mut client = config.client_config();
        for (name, value) in settings {
            client.set(*name, *value);
        }
        client
            .set("enable.idempotence", "true")
            .set("linger.ms", config.linger.as_millis().to_string())
            .set(
                "max.in.flight.requests.per.connection",
                config.max_in_flight.to_string(),
            )
            .set(
                "message.timeout.ms",
                config.delivery_timeout.as_millis().to_string(),
            );
        Ok(Publisher {
            producer: Arc::new(RwLock::new(producer(&client)?)),
            settings: Arc::new(client),
            queueing: Arc::default(),
            answer_within: config.delivery_timeout + ANSWER_MARGIN,
        })
    }

    /// The producer in use.
    fn producer(&self) -> Arc<BaseProducer<Acknowledgements>> {
        Arc::clone(
            &self
                .producer
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Replaces `used` with a new producer if librdkafka gave it up as fatal (and no other
    /// publish replaced it first).
    fn replace_if_fatal(&self, used: &Arc<BaseProducer<Acknowledgements>>) {
        let Some((code, reason)) = used.client().fatal_error() else {
            return;
        };
        let mut slot = self
            .producer
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !Arc::ptr_eq(&slot, used) {
            return;
        }
        match producer(&self.settings) {
            Ok(new) => {
                *slot = new;
                tracing::error!(
                    ?code,
                    reason,
                    "the producer turned fatal; a new one replaces it"
                );
            }
            Err(error) => tracing::error!(
                ?code,
                reason,
                %error,
                "the producer turned fatal and cannot be replaced yet"
            ),
        }
    }

    /// Sends `record` to `topic`, to the partition its key leads to, and waits for the
    /// acknowledgement.
    pub async fn publish(&self, topic: &str, record: &Record) -> Result<(), PublishError> {
        self.publish_to(topic, None, record).await
    }

    /// Sends `message` to `topic` as it is (its key, payload and headers, each possibly absent),
    /// to the partition its key leads to, and waits for the acknowledgement.
    pub async fn republish(&self, topic: &str, message: &impl Message) -> Result<(), PublishError> {
        let headers = crate::kafka_headers(&crate::headers_of(message));
        self.send(topic, None, message.key(), message.payload(), headers)
            .await
    }

    /// Sends `record` to `topic`, to `partition` if given, and waits for the acknowledgement.
    pub async fn publish_to(
        &self,
        topic: &str,
        partition: Option<i32>,
        record: &Record,
    ) -> Result<(), PublishError> {
        let (key, payload) = (Some(record.key.as_bytes()), Some(record.payload.as_slice()));
        self.send(topic, partition, key, payload, record.kafka_headers())
            .await
    }

    /// Queues a message after those whose publishes began before it (waiting up to
    /// [`QUEUE_WAIT`] for room) and waits for the broker's answer. When one cannot be queued
    /// (no room in time, or refused at once), those that were waiting behind it fail too: none
    /// is sent ahead of it.
    async fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: OwnedHeaders,
    ) -> Result<(), PublishError> {
        let producer = self.producer();
        let sent = self
            .send_with(&producer, topic, partition, key, payload, headers)
            .await;
        if sent.is_err() {
            self.replace_if_fatal(&producer);
        }
        sent
    }

    /// [`Publisher::send`] through `producer`.
    async fn send_with(
        &self,
        producer: &BaseProducer<Acknowledgements>,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: OwnedHeaders,
    ) -> Result<(), PublishError> {
        let (acknowledgement, acknowledged) = oneshot::channel();
        let mut record =
            BaseRecord::<[u8], [u8], _>::with_opaque_to(topic, Box::new(acknowledgement))
                .headers(headers);
        (record.key, record.payload, record.partition) = (key, payload, partition);
        let full = || PublishError(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull));
        let began = Instant::now();
        let mut queueing = self.queueing.lock().await;
        if queueing.is_some_and(|gave_up| gave_up > began) {
            return Err(full());
        }
        let queued_at = Instant::now();
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    if queued_at.elapsed() >= QUEUE_WAIT {
                        *queueing = Some(Instant::now());
                        return Err(full());
                    }
                    record = returned;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((error, _)) => {
                    *queueing = Some(Instant::now());
                    return Err(PublishError(error));
                }
            }
        }
        drop(queueing);
        let answer = tokio::time::timeout(self.answer_within, acknowledged).await;
        match answer {
            Ok(Ok(answer)) => answer.map_err(PublishError),
            // The producer went away with the message (it is dropped with the publisher, or
            // once replaced and done with).
            Ok(Err(_)) => Err(PublishError(KafkaError::Canceled)),
            // No answer past the delivery timeout: the acknowledging thread is gone.
            Err(_) => Err(PublishError(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut,
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The threads of this process named like the acknowledging thread.
    fn acknowledging_threads() -> usize {
        let tasks = std::fs::read_dir("/proc/self/task").expect("Linux");
        tasks
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|name| name.trim_end() == "kafka acks")
            .count()
    }

    #[tokio::test]
    async fn a_publish_that_gets_no_answer_fails_once_past_the_delivery_timeout() {
        let config = KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            delivery_timeout: Duration::from_millis(200),
            ..KafkaConfig::from_env().unwrap()
        };
        let mut publisher = Publisher::new(&config).unwrap();
        // As if the acknowledging thread had died: a producer nothing polls for its answers.
        let unpolled = config
            .client_config()
            .create_with_context(Acknowledgements)
            .unwrap();
        publisher.producer = Arc::new(RwLock::new(Arc::new(unpolled)));
        let record = Record {
            key: "key".into(),
            payload: b"{}".to_vec(),
            headers: Vec::new(),
        };
        let started = Instant::now();
        let publish = publisher.publish("financing.commands", &record);
        let published = tokio::time::timeout(Duration::from_secs(60), publish)
            .await
            .expect("a publish without an answer must not wait for ever");
        assert!(published.is_err(), "no answer, no success: {published:?}");
        assert!(started.elapsed() >= config.delivery_timeout + ANSWER_MARGIN);
    }

    #[test]
    fn the_acknowledging_thread_lives_as_long_as_a_clone_of_its_publisher() {
        let config = KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            ..KafkaConfig::from_env().unwrap()
        };
        let before = acknowledging_threads();
        let publisher = Publisher::new(&config).unwrap();
        let clone = publisher.clone();
        drop(publisher);
        // Past the moment a stop would have been seen.
        std::thread::sleep(POLL + POLL / 2);
        assert_eq!(
            acknowledging_threads(),
            before + 1,
            "the clone still publishes"
        );
        drop(clone);
        let deadline = Instant::now() + 10 * POLL;
        while acknowledging_threads() > before {
            assert!(
                Instant::now() < deadline,
                "the thread outlived its publisher"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Against the broker of the environment (`KAFKA_BROKERS`), on a topic of the test's own.
    #[tokio::test]
    async fn publishes_begun_in_order_reach_their_partition_in_order_while_the_queue_is_full() {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::{Offset, TopicPartitionList};

        let config = KafkaConfig {
            topic_prefix: format!("test-{}.", Uuid::new_v4().simple()),
            ..KafkaConfig::from_env().unwrap()
        };
        config
            .create_topics(&[(&config.topics().events, 1)])
            .await
            .unwrap();
        let topic = config.topics().events;
        // Room for one message: nearly every publish waits for room, several at once.
        let publisher =
            Publisher::with_settings(&config, &[("queue.buffering.max.messages", "1")]).unwrap();
        let records: Vec<Record> = (0..60)
            .map(|n| Record {
                key: "one aggregate".into(),
                payload: n.to_string().into_bytes(),
                headers: Vec::new(),
            })
            .collect();
        let published = futures::future::join_all(
            records
                .iter()
                .map(|record| publisher.publish_to(&topic, Some(0), record)),
        )
        .await;
        assert!(published.iter().all(Result::is_ok), "{published:?}");

        let consumer: BaseConsumer = config
            .client_config()
            .set("group.id", format!("{}reader", config.topic_prefix))
            .create()
            .unwrap();
        let mut partition = TopicPartitionList::new();
        partition
            .add_partition_offset(&topic, 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&partition).unwrap();
        let mut received = Vec::new();
        while received.len() < records.len() {
            let message = consumer
                .poll(Duration::from_secs(30))
                .expect("the messages come")
                .unwrap();
            received.push(String::from_utf8(message.payload().unwrap().to_vec()).unwrap());
        }
        let sent: Vec<String> = (0..60).map(|n| n.to_string()).collect();
        assert_eq!(received, sent);
    }

    #[tokio::test]
    async fn a_producer_turned_fatal_is_replaced_and_publishing_goes_on() {
        use rdkafka::mocking::MockCluster;
        use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("commands", 1, 1).unwrap();
        let config = KafkaConfig {
            brokers: cluster.bootstrap_servers(),
            ..KafkaConfig::from_env().unwrap()
        };
        let publisher = Publisher::new(&config).unwrap();
        let record = Record {
            key: "key".into(),
            payload: b"{}".to_vec(),
            headers: Vec::new(),
        };
        publisher.publish("commands", &record).await.unwrap();

        // The broker answers one produce out of sequence: librdkafka gives the producer up.
        let out_of_order = RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER;
        cluster.request_errors(RDKafkaApiKey::Produce, &[out_of_order]);
        let refused = publisher.publish("commands", &record).await;
        assert!(refused.is_err(), "{refused:?}");

        let again = publisher.publish("commands", &record).await;
        assert!(again.is_ok(), "a new producer takes it: {again:?}");
    }

    #[test]
    fn an_aggregate_always_goes_to_the_same_partition_and_all_partitions_are_used() {
        let ids: Vec<Uuid> = (0..300).map(|_| Uuid::new_v4()).collect();
        for id in &ids {
            assert_eq!(partition_for(*id, 3), partition_for(*id, 3));
            assert!((0..3).contains(&partition_for(*id, 3)));
        }
        for partition in 0..3 {
            assert!(ids.iter().any(|id| partition_for(*id, 3) == partition));
        }
        assert_eq!(
            partition_for(Uuid::new_v4(), 0),
            0,
            "a count of zero is one partition"
        );
    }
}
