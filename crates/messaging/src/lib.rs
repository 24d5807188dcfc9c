//! Kafka for Financing: [`KafkaConfig`] and the [`Topics`], topic creation at start-up,
//! [`Publisher`] (answers only once the broker acknowledged), consumer [`Group`]s that store
//! offsets by hand and watch their own progress, and the wire form of every message: a
//! CloudEvents JSON envelope keyed by aggregate id.

mod config;
mod consume;
mod group;
mod publisher;
mod trace;
mod wire;

pub use config::{
    BrokerSecurity, COMMAND_HANDLER_GROUP, KafkaConfig, PROJECTOR_GROUP, SaslCredentials, Topics,
};
pub use consume::{DeadLetters, HandleMessage, connections_for};
pub use financing_domain::{CommandOutcome, EventEnvelope, EventMeta};
pub use group::{Group, GroupConsumer, LagReader, PartitionLag, ProgressWatch, Stall};
pub use publisher::{Publish, PublishError, Publisher, partition_for};
pub use trace::{TRACEPARENT, correlation_of_traceparent, traceparent};
#[cfg(feature = "test-support")]
pub use wire::legacy_record;
pub use wire::{
    CLOUDEVENTS_JSON, CONTENT_TYPE, CommandMessage, Form, Glimpse, Record, Undecodable, WireForm,
    dead_letter, event_record, glimpse, headers, headers_of, integration_event, integration_record,
    kafka_headers,
};
