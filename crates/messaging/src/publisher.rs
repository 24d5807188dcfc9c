//! Publishing that answers only once the broker has acknowledged the message.

use std::future::Future;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use uuid::Uuid;

use crate::{KafkaConfig, Record};

/// An idempotent producer (no duplicates or reordering from its own retries), sending each
/// message as soon as possible.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
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
        let producer = config
            .client_config()
            .set("enable.idempotence", "true")
            .set("linger.ms", config.linger.as_millis().to_string())
            .set(
                "message.timeout.ms",
                config.delivery_timeout.as_millis().to_string(),
            )
            .create()?;
        Ok(Publisher { producer })
    }

    /// Sends `record` to `topic`, to the partition its key leads to, and waits for the
    /// acknowledgement.
    pub async fn publish(&self, topic: &str, record: &Record) -> Result<(), PublishError> {
        self.publish_to(topic, None, record).await
    }

    /// Sends `message` to `topic` as it is (its key, payload and headers, each possibly absent),
    /// to the partition its key leads to, and waits for the acknowledgement.
    pub async fn republish(&self, topic: &str, message: &impl Message) -> Result<(), PublishError> {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        record = record.headers(crate::kafka_headers(&crate::headers_of(message)));
        self.producer
            .send(record, Duration::from_secs(1))
            .await
            .map(|_delivery| ())
            .map_err(|(error, _message)| PublishError(error))
    }

    /// Sends `record` to `topic`, to `partition` if given, and waits for the acknowledgement.
    pub async fn publish_to(
        &self,
        topic: &str,
        partition: Option<i32>,
        record: &Record,
    ) -> Result<(), PublishError> {
        let mut kafka_record = FutureRecord::to(topic)
            .key(&record.key)
            .payload(&record.payload)
            .headers(record.kafka_headers());
        if let Some(partition) = partition {
            kafka_record = kafka_record.partition(partition);
        }
        self.producer
            .send(kafka_record, Duration::from_secs(1))
            .await
            .map(|_delivery| ())
            .map_err(|(error, _message)| PublishError(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
