//! The acceptance harness: starts the system's components on a database and topics of the
//! test's own, then offers only what a client has: the gRPC services, publishing to Kafka, and
//! a feed of what appears on `financing.events`.
//!
//! Topics get one partition here, so that everything on `financing.events` is in one total
//! order and a test can assert the exact events, in order, as the original suite did.

use std::net::SocketAddr;
use std::time::Duration;

use financing_api::v1::commands_client::CommandsClient;
use financing_command_handler::{CommandHandler, HandlerConfig};
use financing_domain::{Event, IntegrationEvent};
use financing_listener::{Listener, ListenerConfig};
use financing_messaging::{EventMessage, KafkaConfig, Publisher, integration_record};
use financing_relayer::{Relayer, RelayerConfig};
use financing_testkit::{PATIENCE, own_database_url, own_topics, read_to_end, wait_until};
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// A running system; dropping it shuts every component down.
pub struct System {
    kafka: KafkaConfig,
    listener: SocketAddr,
    publisher: Publisher,
    /// What the test has read from `financing.events` so far.
    pub events: EventFeed,
    _shutdown: DropGuard,
}

impl System {
    /// Starts the listener, the command handler and the relayer, and waits until the listener
    /// reports SERVING.
    pub async fn start() -> System {
        financing_runtime::telemetry::init();
        let kafka = KafkaConfig {
            partitions: 1,
            ..own_topics()
        };
        let database_url = own_database_url();
        let shutdown = CancellationToken::new();

        let listener = Listener::build(
            ListenerConfig {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                kafka: kafka.clone(),
            },
            shutdown.clone(),
        )
        .await
        .expect("the listener starts");
        let listener_addr = listener.local_addr();
        tokio::spawn(listener.run_until_stopped());

        let handler = CommandHandler::build(
            HandlerConfig {
                database_url: database_url.clone(),
                kafka: kafka.clone(),
                group_id: format!("{}command-handler", kafka.topic_prefix),
                snapshot_every: 50,
                max_attempts: 10,
            },
            shutdown.clone(),
        )
        .await
        .expect("the command handler starts");
        tokio::spawn(handler.run_until_stopped());

        let relayer = Relayer::build(
            RelayerConfig {
                database_url,
                kafka: kafka.clone(),
                interval: Duration::from_millis(100),
                batch_size: 500,
            },
            shutdown.clone(),
        )
        .await
        .expect("the relayer starts")
        .expect("not shut down");
        tokio::spawn(relayer.run_until_stopped());

        let system = System {
            events: EventFeed::new(&kafka),
            publisher: Publisher::new(&kafka).expect("a producer"),
            listener: listener_addr,
            kafka,
            _shutdown: shutdown.drop_guard(),
        };
        system
            .await_serving("financing.v1.Commands", system.listener)
            .await;
        system
    }

    pub async fn commands(&self) -> CommandsClient<Channel> {
        CommandsClient::new(channel(self.listener).await)
    }

    /// Publishes an integration event on `registering.events`, as Registering would.
    pub async fn publish(&self, event: &IntegrationEvent) {
        self.publisher
            .publish(
                &self.kafka.topics().registering_events,
                &integration_record(event),
            )
            .await
            .expect("the broker takes the event");
    }

    /// Asserts that `financing.events` holds nothing but what the test has read: no event
    /// was published that the test did not expect.
    pub async fn assert_nothing_else_published(&self) {
        let all: Vec<Event> = read_to_end(&self.kafka, &self.kafka.topics().events)
            .await
            .iter()
            .map(|message| EventMessage::decode(message).expect("a domain event").event)
            .collect();
        assert_eq!(
            all.len(),
            self.events.read(),
            "unexpected events after the expected ones: {:?}",
            &all[self.events.read().min(all.len())..]
        );
    }

    async fn await_serving(&self, service: &str, addr: SocketAddr) {
        let health = HealthClient::new(channel(addr).await);
        wait_until(&format!("{service} is SERVING"), || {
            let mut health = health.clone();
            let request = HealthCheckRequest {
                service: service.to_owned(),
            };
            async move {
                let status = health.check(request).await.ok()?.into_inner().status;
                (status == ServingStatus::Serving as i32).then_some(())
            }
        })
        .await;
    }
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect()
        .await
        .expect("the server accepts connections")
}

/// A test's reading position on `financing.events`.
pub struct EventFeed {
    consumer: StreamConsumer,
    read: usize,
}

impl EventFeed {
    fn new(kafka: &KafkaConfig) -> EventFeed {
        let consumer = kafka
            .consumer(&format!("{}acceptance", kafka.topic_prefix))
            .expect("a consumer");
        consumer
            .subscribe(&[&kafka.topics().events])
            .expect("subscribed");
        EventFeed { consumer, read: 0 }
    }

    /// The next event on the topic.
    pub async fn next(&mut self) -> EventMessage {
        let message = tokio::time::timeout(PATIENCE, self.consumer.recv())
            .await
            .expect("an event is published")
            .expect("the broker delivers it");
        self.read += 1;
        EventMessage::decode(&message).expect("a domain event")
    }

    /// Asserts that the next events are exactly these, in this order.
    pub async fn expect(&mut self, expected: impl IntoIterator<Item = Event>) {
        for (n, expected) in expected.into_iter().enumerate() {
            let actual = self.next().await.event;
            assert_eq!(
                actual,
                expected,
                "event {} after the ones already read",
                n + 1
            );
        }
    }

    /// How many events the test has read.
    pub fn read(&self) -> usize {
        self.read
    }
}
