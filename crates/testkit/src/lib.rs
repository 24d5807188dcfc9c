//! Test support: a database and topics of a test's own (tests never share state), waiting
//! until a condition holds (never a bare sleep), a topic made beforehand with the partitions a
//! test needs, reading a topic to its end, a proxy that stages an outage, a broker of a test's
//! own that it can crash, events as an earlier version stored them, and the keys and tokens of
//! the tests' parties.

mod broker;
mod keys;
mod proxy;

pub use broker::OwnBroker;
pub use keys::{
    auth_config, bad_tokens, bearer_for, operator, test_key_pair, token_for,
    token_issuer_and_audience,
};
pub use proxy::Proxy;

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use chrono::Utc;
use financing_domain::{CommandId, Event};
use financing_messaging::{
    CLOUDEVENTS_JSON, CONTENT_TYPE, EventEnvelope, EventMeta, GroupConsumer, KafkaConfig, Record,
};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use uuid::Uuid;

/// How long a test waits for the system before it fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Where the tests find PostgreSQL and the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Services {
    /// A database on the server, e.g. `postgres://postgres@127.0.0.1:5432/postgres`.
    pub database_url: String,
    /// The broker's bootstrap list.
    pub brokers: String,
}

impl Services {
    /// `DATABASE_URL` and `KAFKA_BROKERS`, or the local defaults the scripts start.
    pub fn from_env() -> Services {
        Services {
            database_url: std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
            brokers: KafkaConfig::from_env()
                .expect("valid Kafka settings")
                .brokers,
        }
    }

    /// The URL of a database no other test uses, on the same server; the services create it.
    pub fn own_database_url(&self) -> String {
        let (server, _) = self
            .database_url
            .rsplit_once('/')
            .expect("the database URL names a database");
        format!("{server}/financing_test_{}", Uuid::new_v4().simple())
    }

    /// The database server's address, for a [`Proxy`] to forward to.
    pub fn database_server(&self) -> SocketAddr {
        let (_, host_and_path) = self.database_url.split_once('@').expect("a user@host URL");
        let (host, _) = host_and_path
            .split_once('/')
            .expect("the URL names a database");
        host.to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .expect("the database host resolves")
    }

    /// The URL of a database no other test uses, reached through `proxy`.
    pub fn own_database_url_through(&self, proxy: &Proxy) -> String {
        let (user, _) = self.database_url.split_once('@').expect("a user@host URL");
        let database = Uuid::new_v4().simple();
        format!("{user}@{}/financing_test_{database}", proxy.addr())
    }

    /// The broker, with topics no other test uses.
    pub fn own_topics(&self) -> KafkaConfig {
        KafkaConfig {
            brokers: self.brokers.clone(),
            topic_prefix: format!("test-{}.", Uuid::new_v4().simple()),
            ..KafkaConfig::from_env().expect("valid Kafka settings")
        }
    }
}

/// [`Services::own_database_url`] on the services of the environment.
pub fn own_database_url() -> String {
    Services::from_env().own_database_url()
}

/// [`Services::own_topics`] on the services of the environment.
pub fn own_topics() -> KafkaConfig {
    Services::from_env().own_topics()
}

/// `event` as the relayer would publish it: version `version` of the stream of `aggregate_id`,
/// with ids of its own.
pub fn as_published(event: Event, aggregate_id: Uuid, version: u64) -> EventEnvelope {
    EventEnvelope {
        meta: EventMeta {
            aggregate_type: event.aggregate_type().into(),
            aggregate_id,
            version,
            schema_version: event.schema_version(),
            event_id: Uuid::new_v4(),
            command_id: CommandId::new_random(),
            correlation_id: Uuid::new_v4(),
            causation_id: Uuid::new_v4(),
            recorded_at: Utc::now(),
            actor: None,
        },
        event,
    }
}

/// Turns the aggregate's stored `BidOnInvoicePlaced` events into what the version before schema
/// version 2 wrote (`bid_amount` for `amount`, schema version 1), as rows kept from then are.
/// Returns how many it changed.
pub async fn as_written_at_schema_version_1(event_store: &sqlx::PgPool, aggregate_id: Uuid) -> u64 {
    sqlx::query(
        "UPDATE events SET schema_version = 1, \
         payload = (payload - 'amount') || jsonb_build_object('bid_amount', payload->'amount') \
         WHERE aggregate_id = $1 AND event_type = 'BidOnInvoicePlaced' AND schema_version = 2",
    )
    .bind(aggregate_id)
    .execute(event_store)
    .await
    .expect("the rows are rewritten")
    .rows_affected()
}

/// Polls `condition` until it returns `Some`, failing the test after [`PATIENCE`].
pub async fn wait_until<T, F, Fut>(what: &str, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates `topic` with `partitions` partitions, as an operator may have made it before the
/// system started (the system creates only the topics that are missing).
pub async fn create_topic(kafka: &KafkaConfig, topic: &str, partitions: i32) {
    kafka
        .create_topics(&[(topic, partitions)])
        .await
        .expect("the topic is created");
}

const END_MARKER: &str = "test-end-marker";

/// Everything on `topic` now, partition by partition in order. The broker's watermarks cannot
/// tell (Tansu counts batches, not records), so an end marker is written to every partition
/// and the topic is read from the start until each marker comes back.
pub async fn read_to_end(kafka: &KafkaConfig, topic: &str) -> Vec<OwnedMessage> {
    let partitions = kafka
        .partition_counts(&[topic])
        .await
        .expect("the broker tells the topic's partitions")
        .get(topic)
        .copied()
        .unwrap_or_else(|| kafka.partitions_to_create(topic));
    let producer: FutureProducer = kafka.client_config().create().expect("a producer");
    let marker = Uuid::new_v4().to_string();
    for partition in 0..partitions {
        let headers = OwnedHeaders::new().insert(Header {
            key: END_MARKER,
            value: Some(&marker),
        });
        let record = FutureRecord::<(), ()>::to(topic)
            .partition(partition)
            .headers(headers);
        producer
            .send(record, PATIENCE)
            .await
            .expect("the end marker is written");
    }

    let consumer: GroupConsumer = kafka
        .consumer(&format!("read-to-end-{marker}"))
        .expect("a consumer");
    consumer.subscribe(&[topic]).expect("subscribed");
    let mut ended = 0;
    let mut messages = Vec::new();
    while ended < partitions {
        let message = tokio::time::timeout(PATIENCE, consumer.recv())
            .await
            .expect("the topic's end markers arrive")
            .expect("a message")
            .detach();
        let is_marker = |m: &OwnedMessage| {
            m.headers()
                .and_then(|all| all.iter().find(|h| h.key == END_MARKER))
                .and_then(|h| h.value)
                .is_some_and(|value| value == marker.as_bytes())
        };
        if is_marker(&message) {
            ended += 1;
        } else if message
            .headers()
            .is_none_or(|all| all.iter().all(|h| h.key != END_MARKER))
        {
            messages.push(message);
        }
    }
    messages
}

/// A client command whose envelope names it (its id can be told FAILED), with data no
/// SellInvoice has: it can never be handled. Its command id and its record.
pub fn poison_command() -> (Uuid, Record) {
    let id = Uuid::new_v4();
    let envelope = serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "/financing/commands",
        "type": "financing.command.SellInvoice",
        "commandid": id,
        "correlationid": id,
        "data": { "asking_price": "ten" },
    });
    let record = Record {
        key: Uuid::new_v4().to_string(),
        payload: envelope.to_string().into_bytes(),
        headers: vec![(CONTENT_TYPE.into(), CLOUDEVENTS_JSON.into())],
    };
    (id, record)
}
