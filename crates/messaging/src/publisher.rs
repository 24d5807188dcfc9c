//! Publishing that answers only once the broker has acknowledged the message.

use std::future::Future;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};

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
    /// Sends `record` to `topic` and waits for the acknowledgement.
    fn publish(
        &self,
        topic: &str,
        record: &Record,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;
}

impl Publish for Publisher {
    fn publish(
        &self,
        topic: &str,
        record: &Record,
    ) -> impl Future<Output = Result<(), PublishError>> + Send {
        Publisher::publish(self, topic, record)
    }
}

/// A shared publisher publishes.
impl<P: Publish> Publish for std::sync::Arc<P> {
    fn publish(
        &self,
        topic: &str,
        record: &Record,
    ) -> impl Future<Output = Result<(), PublishError>> + Send {
        (**self).publish(topic, record)
    }
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

    /// Sends `record` to `topic` and waits for the acknowledgement.
    pub async fn publish(&self, topic: &str, record: &Record) -> Result<(), PublishError> {
        let kafka_record = FutureRecord::to(topic)
            .key(&record.key)
            .payload(&record.payload)
            .headers(record.kafka_headers());
        self.producer
            .send(kafka_record, Duration::from_secs(1))
            .await
            .map(|_delivery| ())
            .map_err(|(error, _message)| PublishError(error))
    }
}
