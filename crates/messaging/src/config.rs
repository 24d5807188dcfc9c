//! Where the broker is, how topics are named and made, and how clients are configured.

use std::collections::HashMap;
use std::time::Duration;

use financing_runtime::config::{ConfigError, text, var};
use financing_runtime::retry::until_ok;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::util::Timeout;
use tokio_util::sync::CancellationToken;

use crate::group::GroupContext;
use crate::{Group, GroupConsumer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `KAFKA_BROKERS`, a comma-separated bootstrap list.
    pub brokers: String,
    /// `KAFKA_PARTITIONS`: partitions of `financing.commands` and `financing.events` when this
    /// system creates them (see [`KafkaConfig::partitions_to_create`]).
    pub partitions: i32,
    /// `KAFKA_TOPIC_PREFIX`: put before every topic name (tests run on their own topics).
    pub topic_prefix: String,
    /// `KAFKA_DELIVERY_TIMEOUT_MS`: how long a publish may wait for the broker's
    /// acknowledgement before it fails.
    pub delivery_timeout: Duration,
    /// `KAFKA_LINGER_MS`: how long a producer waits for more messages to send in one request.
    /// None by default: with one request in flight, what comes while it is answered goes
    /// in the next one anyway.
    pub linger: Duration,
    /// `KAFKA_MAX_IN_FLIGHT`: produce requests a publisher has sent and not yet had answered,
    /// per broker connection (1 to 5, the idempotent producer's limit). A broker answers a
    /// connection's requests one after the other, so a second request in flight saves only
    /// the way there and back; with one, what queued meanwhile goes in the next request, and
    /// the broker's work per request is spread over more messages.
    pub max_in_flight: u32,
    /// `KAFKA_FETCH_WAIT_MS`: the longest a consumer's fetch waits for data. The broker
    /// answers as soon as data arrives; an idle consumer asks again each time it expires.
    pub fetch_wait: Duration,
    /// `KAFKA_SESSION_TIMEOUT_MS`: how long a consumer that stopped (a crash, a kill -9, a
    /// network cut) keeps its partitions before the group gives them to the others. Heartbeats
    /// go every third of it, at most every second.
    pub session_timeout: Duration,
    /// How clients authenticate to the broker and protect the connection.
    pub security: BrokerSecurity,
}

/// How a client reaches a broker that asks for more than plaintext.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BrokerSecurity {
    /// `KAFKA_SECURITY_PROTOCOL`: `plaintext` (by default), `sasl_plaintext`, `ssl` or
    /// `sasl_ssl`, as librdkafka names them.
    pub protocol: Option<String>,
    /// `KAFKA_SASL_USERNAME` and `KAFKA_SASL_PASSWORD`, with `KAFKA_SASL_MECHANISM` (default
    /// `SCRAM-SHA-512`, what Nisshi and Kafka offer).
    pub sasl: Option<SaslCredentials>,
    /// `KAFKA_SSL_CA_LOCATION`: the CA certificate (PEM) the broker's is verified against.
    pub ca_location: Option<String>,
}

/// A SASL user; the password is never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslCredentials {
    pub mechanism: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl BrokerSecurity {
    fn from_env() -> BrokerSecurity {
        let optional = |name| Some(text(name, "")).filter(|value| !value.is_empty());
        let sasl = optional("KAFKA_SASL_USERNAME").map(|username| SaslCredentials {
            mechanism: text("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            username,
            password: text("KAFKA_SASL_PASSWORD", ""),
        });
        BrokerSecurity {
            protocol: optional("KAFKA_SECURITY_PROTOCOL"),
            sasl,
            ca_location: optional("KAFKA_SSL_CA_LOCATION"),
        }
    }

    fn apply(&self, config: &mut ClientConfig) {
        if let Some(protocol) = &self.protocol {
            config.set("security.protocol", protocol);
        }
        if let Some(sasl) = &self.sasl {
            config
                .set("sasl.mechanism", &sasl.mechanism)
                .set("sasl.username", &sasl.username)
                .set("sasl.password", &sasl.password);
        }
        if let Some(ca) = &self.ca_location {
            config.set("ssl.ca.location", ca);
        }
    }
}

const MAX_POLL_INTERVAL: Duration = Duration::from_secs(300);

/// `requests` if an idempotent producer may have that many in flight.
fn idempotent_in_flight(requests: u32) -> Result<u32, ConfigError> {
    if (1..=5).contains(&requests) {
        return Ok(requests);
    }
    Err(ConfigError {
        name: "KAFKA_MAX_IN_FLIGHT".to_owned(),
        value: requests.to_string(),
        reason: "an idempotent producer has 1 to 5 requests in flight".to_owned(),
    })
}

fn millis(duration: Duration) -> String {
    duration.as_millis().to_string()
}

/// The consumer group the command handlers join unless `COMMAND_HANDLER_GROUP` says otherwise.
pub const COMMAND_HANDLER_GROUP: &str = "financing-command-handler";

/// The consumer group the projectors join unless `PROJECTOR_GROUP` says otherwise.
pub const PROJECTOR_GROUP: &str = "financing-projector";

/// The topics of the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Client commands from the listener.
    pub commands: String,
    /// Integration events from the Registering context.
    pub registering_events: String,
    /// Domain events published by the relayer.
    pub events: String,
    /// Commands the domain rejected, published by the relayer for the read model.
    pub outcomes: String,
    /// Messages no consumer could decode, with the reason.
    pub dlq: String,
}

impl Topics {
    pub fn all(&self) -> [&str; 5] {
        [
            &self.commands,
            &self.registering_events,
            &self.events,
            &self.outcomes,
            &self.dlq,
        ]
    }
}

impl KafkaConfig {
    pub fn from_env() -> Result<KafkaConfig, ConfigError> {
        Ok(KafkaConfig {
            brokers: text("KAFKA_BROKERS", "127.0.0.1:9092"),
            partitions: var("KAFKA_PARTITIONS", 3)?,
            topic_prefix: text("KAFKA_TOPIC_PREFIX", ""),
            delivery_timeout: Duration::from_millis(var("KAFKA_DELIVERY_TIMEOUT_MS", 5000)?),
            linger: Duration::from_millis(var("KAFKA_LINGER_MS", 0)?),
            max_in_flight: idempotent_in_flight(var("KAFKA_MAX_IN_FLIGHT", 1)?)?,
            fetch_wait: Duration::from_millis(var("KAFKA_FETCH_WAIT_MS", 25)?),
            session_timeout: Duration::from_millis(var("KAFKA_SESSION_TIMEOUT_MS", 6000)?),
            security: BrokerSecurity::from_env(),
        })
    }

    pub fn topics(&self) -> Topics {
        let name = |base: &str| format!("{}{base}", self.topic_prefix);
        Topics {
            commands: name("financing.commands"),
            registering_events: name("registering.events"),
            events: name("financing.events"),
            outcomes: name("financing.outcomes"),
            dlq: name("financing.dlq"),
        }
    }

    /// Settings every client shares: the broker, how to reach it securely if it asks, and a
    /// broker that went away tried again within a second of its return (librdkafka's default
    /// backoff grows to 10 s).
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "1000");
        self.security.apply(&mut config);
        config
    }

    /// A consumer in `group` that starts from the earliest offset when the group has none and
    /// commits only the offsets the application stores, after it has handled a message.
    pub fn consumer(&self, group: &str) -> Result<GroupConsumer, KafkaError> {
        self.member(group, 0)
    }

    fn member(&self, group: &str, member: usize) -> Result<GroupConsumer, KafkaError> {
        self.client_config()
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", self.fetch_wait.as_millis().to_string())
            .set("session.timeout.ms", millis(self.session_timeout))
            .set("heartbeat.interval.ms", millis(self.heartbeat_interval()))
            // How long one message may take, outages waited out included, before the group
            // gives the consumer's partitions to another: past it the consumer rejoins, and
            // what it had not committed is delivered again, which changes nothing.
            .set("max.poll.interval.ms", millis(MAX_POLL_INTERVAL))
            .create_with_context(GroupContext::new(group, member))
    }

    /// How many partitions each of these topics has; a topic the broker does not have is
    /// left out. Asked on a thread of its own (the client's calls block).
    pub async fn partition_counts(
        &self,
        topics: &[&str],
    ) -> Result<HashMap<String, i32>, KafkaError> {
        let (config, timeout) = (self.client_config(), self.delivery_timeout);
        let names: Vec<String> = topics.iter().map(|&name| name.to_owned()).collect();
        let lookup = tokio::task::spawn_blocking(move || {
            let client: BaseConsumer = config.create()?;
            let mut counts = HashMap::new();
            for name in names {
                let metadata = client.fetch_metadata(Some(&name), timeout)?;
                let found = metadata
                    .topics()
                    .iter()
                    .find(|topic| topic.name() == name && topic.error().is_none());
                if let Some(topic) = found {
                    let count = i32::try_from(topic.partitions().len()).unwrap_or(i32::MAX);
                    counts.insert(name, count);
                }
            }
            Ok(counts)
        });
        lookup.await.unwrap_or_else(|_| Err(KafkaError::Canceled))
    }

    /// The partitions this system gives a topic when it creates it (a topic that exists keeps
    /// its own; [`KafkaConfig::partition_counts`] tells them): `KAFKA_PARTITIONS` to the ones
    /// that carry its volume (commands and events), which instances share out; one to the
    /// others (registrations, outcomes, dead letters), which carry few messages. Every fetch
    /// reads each partition its consumer has on every round, so an idle partition still
    /// costs the broker.
    pub fn partitions_to_create(&self, topic: &str) -> i32 {
        let topics = self.topics();
        if topic == topics.commands || topic == topics.events {
            self.partitions
        } else {
            1
        }
    }

    fn heartbeat_interval(&self) -> Duration {
        (self.session_timeout / 3).min(Duration::from_secs(1))
    }

    /// `count` consumers in `group` subscribed to `topics`, once the system's topics exist
    /// (created here, retried while the broker is away); `None` if shutdown comes first. The
    /// group shares the partitions out among them, so they work in parallel and each
    /// partition stays in order.
    pub async fn join(
        &self,
        group: &str,
        topics: &[&str],
        count: usize,
        shutdown: &CancellationToken,
    ) -> Option<Result<Group, KafkaError>> {
        until_ok("creating topics", shutdown, || self.ensure_topics()).await?;
        let member = |n| {
            let consumer = self.member(group, n)?;
            consumer.subscribe(topics)?;
            Ok(consumer)
        };
        let consumers: Result<Vec<_>, KafkaError> = (0..count.max(1)).map(member).collect();
        Some(consumers.map(|consumers| Group {
            kafka: self.clone(),
            name: group.to_owned(),
            topics: topics.iter().map(|&topic| topic.to_owned()).collect(),
            consumers,
        }))
    }

    /// Creates the system's topics that are missing; existing ones are left as they are.
    pub async fn ensure_topics(&self) -> Result<(), KafkaError> {
        // Only the missing ones are asked for: a broker may log every refusal as an error.
        let names = self.topics();
        let existing = self.partition_counts(&names.all()).await?;
        let missing: Vec<(&str, i32)> = names
            .all()
            .into_iter()
            .filter(|name| !existing.contains_key(*name))
            .map(|name| (name, self.partitions_to_create(name)))
            .collect();
        self.create_topics(&missing).await
    }

    /// Creates these topics, each with its partitions; one that exists already is left as it
    /// is.
    pub async fn create_topics(&self, topics: &[(&str, i32)]) -> Result<(), KafkaError> {
        if topics.is_empty() {
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let new_topics: Vec<NewTopic> = topics
            .iter()
            .map(|&(name, partitions)| NewTopic::new(name, partitions, TopicReplication::Fixed(1)))
            .collect();
        let options =
            AdminOptions::new().request_timeout(Some(Timeout::After(self.delivery_timeout)));
        for (result, (_, partitions)) in admin
            .create_topics(&new_topics, &options)
            .await?
            .into_iter()
            .zip(topics)
        {
            match result {
                Ok(name) => tracing::info!(topic = %name, partitions, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    tracing::warn!(topic = %name, %code, "cannot create topic");
                    return Err(KafkaError::AdminOp(code));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idempotent_producer_takes_one_to_five_requests_in_flight() {
        for requests in 1..=5 {
            assert_eq!(idempotent_in_flight(requests).unwrap(), requests);
        }
        for requests in [0, 6, 1000] {
            let error = idempotent_in_flight(requests).unwrap_err().to_string();
            assert!(error.contains("KAFKA_MAX_IN_FLIGHT"), "{error}");
            assert!(error.contains("1 to 5"), "{error}");
        }
    }

    #[test]
    fn commands_and_events_are_shared_out_the_rest_has_one_partition() {
        let kafka = KafkaConfig {
            partitions: 6,
            topic_prefix: "test.".to_owned(),
            ..KafkaConfig::from_env().unwrap()
        };
        let topics = kafka.topics();
        assert_eq!(kafka.partitions_to_create(&topics.commands), 6);
        assert_eq!(kafka.partitions_to_create(&topics.events), 6);
        for topic in [&topics.registering_events, &topics.outcomes, &topics.dlq] {
            assert_eq!(kafka.partitions_to_create(topic), 1, "{topic}");
        }
    }
}
