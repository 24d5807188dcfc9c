//! Seeding demo data: registers issuers and investors by publishing `IssuerRegistered` and
//! `InvestorRegistered` to `registering.events`, as the Registering context would.

use financing_domain::{IntegrationEvent, InvestorId, IssuerId, Money};
use financing_messaging::{KafkaConfig, PublishError, Publisher, integration_record};
use futures::{StreamExt, TryStreamExt};
use rdkafka::error::KafkaError;

/// Registrations awaiting the broker's acknowledgement at once.
const IN_FLIGHT: usize = 256;

/// Who was registered, with their names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub issuers: Vec<(String, IssuerId)>,
    pub investors: Vec<(String, InvestorId)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PopulateError {
    #[error("cannot create a Kafka producer")]
    Kafka(#[from] KafkaError),
    #[error("the broker did not take a registration")]
    Publish(#[from] PublishError),
}

impl Registered {
    /// Fresh ids for `issuers` issuers (`ISSUER_1`, ...) and `investors` investors
    /// (`INVESTOR_1`, ...).
    pub fn random(issuers: usize, investors: usize) -> Registered {
        Registered {
            issuers: (1..=issuers)
                .map(|n| (format!("ISSUER_{n}"), IssuerId::new_random()))
                .collect(),
            investors: (1..=investors)
                .map(|n| (format!("INVESTOR_{n}"), InvestorId::new_random()))
                .collect(),
        }
    }

    /// Publishes every registration, investors with `balance` each, many at a time; returns
    /// once the broker has acknowledged them all. Publishing again is safe: the handler applies
    /// a registration once, however often it is delivered.
    pub async fn publish(&self, kafka: &KafkaConfig, balance: Money) -> Result<(), PopulateError> {
        let issuer_events =
            self.issuers
                .iter()
                .map(|(name, id)| IntegrationEvent::IssuerRegistered {
                    id: *id,
                    name: name.clone(),
                });
        let investor_events =
            self.investors
                .iter()
                .map(|(name, id)| IntegrationEvent::InvestorRegistered {
                    id: *id,
                    name: name.clone(),
                    balance,
                });
        let publisher = Publisher::new(kafka)?;
        let topic = kafka.topics().registering_events;
        let publisher = &publisher;
        let topic = topic.as_str();
        futures::stream::iter(issuer_events.chain(investor_events))
            .map(|event| async move { publisher.publish(topic, &integration_record(&event)).await })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<()>()
            .await?;
        Ok(())
    }
}

/// Registers `issuers` issuers and `investors` investors with `balance` each, once.
pub async fn register(
    kafka: &KafkaConfig,
    issuers: usize,
    investors: usize,
    balance: Money,
) -> Result<Registered, PopulateError> {
    let registered = Registered::random(issuers, investors);
    registered.publish(kafka, balance).await?;
    Ok(registered)
}
