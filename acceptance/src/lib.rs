//! The acceptance harness: starts the system's components on a database and topics of the
//! test's own, then offers only what a client has: the gRPC services, publishing to Kafka, and
//! a feed of what appears on `financing.events`.
//!
//! Unless asked otherwise, topics get one partition, so that everything on `financing.events`
//! is in one total order and a test can assert the exact events, in order, as the original
//! suite did.

mod services;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use financing_api::to_proto_id;
use financing_api::v1::commands_client::CommandsClient;
use financing_api::v1::queries_client::QueriesClient;
use financing_api::v1::{self, CommandStatusReply, GetCommandStatusRequest, GetInvestorRequest};
use financing_auth::{Actor, Bearer};
use financing_command_handler::{CommandHandler, HandlerConfig};
use financing_domain::{CommandId, Event, IntegrationEvent};
use financing_listener::{Listener, ListenerConfig};
use financing_messaging::{
    CommandOutcome, EventEnvelope, GroupConsumer, KafkaConfig, Publisher, Record, WireForm,
    integration_record,
};
use financing_projector::{Projector, ProjectorConfig};
use financing_queries::{QueryServer, QueryServerConfig};
use financing_relayer::{Relayer, RelayerConfig};
use financing_testkit::{PATIENCE, auth_config, bearer_for, operator, read_to_end, wait_until};
use rdkafka::consumer::Consumer;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// A client of the command service that sends one party's token.
pub type Commands = CommandsClient<InterceptedService<Channel, Bearer>>;
/// A client of the query service that sends one party's token.
pub type Queries = QueriesClient<InterceptedService<Channel, Bearer>>;

/// Which components a test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parts {
    /// All five components.
    Everything,
    /// The projector and the query service: for tests that publish domain events themselves.
    ReadSide,
}

/// A running system; dropping it shuts every component down.
pub struct System {
    kafka: KafkaConfig,
    listener: Option<SocketAddr>,
    queries: Option<SocketAddr>,
    publisher: Publisher,
    /// What the test has read from `financing.events` so far.
    pub events: EventFeed,
    /// The event store's and the read models' databases.
    databases: (String, String),
    shutdown: CancellationToken,
    components: Option<Runtime>,
    /// Dropped after the components are told to stop.
    _containers: Option<services::Containers>,
}

/// Dropping a system stops its components without waiting for them: a Kafka consumer's close
/// can block for as long as its group takes to rebalance, and a test has no reason to wait.
impl Drop for System {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(components) = self.components.take() {
            components.shutdown_background();
        }
    }
}

impl System {
    /// Everything, on one-partition topics.
    pub async fn start() -> System {
        System::start_with(Parts::Everything, 1).await
    }

    /// Starts the parts on commands and events topics of `partitions` partitions (the others
    /// have one), and waits until each gRPC service reports SERVING.
    pub async fn start_with(parts: Parts, partitions: i32) -> System {
        financing_runtime::telemetry::init();
        let (services, containers) = services::for_test().await;
        let kafka = KafkaConfig {
            partitions,
            ..services.own_topics()
        };
        let shutdown = CancellationToken::new();
        let name = |component: &str| format!("{}{component}", kafka.topic_prefix);
        // The components run on a runtime of their own, threaded as in production; the test
        // never waits for it to wind down (see `Drop`).
        let components = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the components");
        let run = components.handle().clone();

        // The read side alone has no event store: its projector would find nothing there.
        let event_store = services.own_database_url();
        let mut listener = None;
        if parts == Parts::Everything {
            let config = ListenerConfig {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                kafka: kafka.clone(),
                auth: auth_config(),
                tls: None,
            };
            let server = run.spawn(Listener::build(config, shutdown.clone()));
            let server = server.await.unwrap().expect("the listener starts");
            listener = Some(server.local_addr());
            run.spawn(server.run_until_stopped());

            let handler = HandlerConfig {
                database_url: event_store.clone(),
                kafka: kafka.clone(),
                group_id: name("command-handler"),
                snapshot_every: 50,
                max_attempts: 10,
                consumers: partitions as usize,
                parked_retry: Duration::from_secs(1),
            };
            let handler = run.spawn(CommandHandler::build(handler, shutdown.clone()));
            let handler = handler.await.unwrap().expect("the command handler starts");
            run.spawn(handler.run_until_stopped());

            let relayer = RelayerConfig {
                database_url: event_store.clone(),
                kafka: kafka.clone(),
                interval: Duration::from_millis(100),
                batch_size: 500,
            };
            let relayer = run.spawn(Relayer::build(relayer, shutdown.clone()));
            let relayer = relayer.await.unwrap().expect("the relayer starts");
            run.spawn(relayer.expect("not shut down").run_until_stopped());
        }

        let read_models = services.own_database_url();
        let databases = (event_store.clone(), read_models.clone());
        let projector = ProjectorConfig {
            database_url: read_models.clone(),
            event_store_url: event_store,
            kafka: kafka.clone(),
            group_id: name("projector"),
            consumers: partitions as usize,
        };
        let projector = run.spawn(Projector::build(projector, shutdown.clone()));
        let projector = projector.await.unwrap().expect("the projector starts");
        run.spawn(projector.run_until_stopped());
        let config = QueryServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: read_models,
            auth: auth_config(),
            tls: None,
        };
        let server = run.spawn(QueryServer::build(config, shutdown.clone()));
        let server = server.await.unwrap().expect("the query service starts");
        let queries = Some(server.local_addr());
        run.spawn(server.run_until_stopped());

        let system = System {
            events: EventFeed::new(&kafka),
            publisher: Publisher::new(&kafka).expect("a producer"),
            listener,
            queries,
            kafka,
            databases,
            shutdown,
            components: Some(components),
            _containers: containers,
        };
        if let Some(addr) = system.listener {
            await_serving("financing.v1.Commands", addr).await;
        }
        if let Some(addr) = system.queries {
            await_serving("financing.v1.Queries", addr).await;
        }
        system
    }

    /// The broker and topics this system uses.
    pub fn kafka(&self) -> &KafkaConfig {
        &self.kafka
    }

    /// The URLs of the event store's and the read models' databases, for an operator's tools.
    pub fn databases(&self) -> (&str, &str) {
        (&self.databases.0, &self.databases.1)
    }

    /// The command service, for `actor` (every request carries its token).
    pub async fn commands_as(&self, actor: Actor) -> Commands {
        let addr = self.listener.expect("this system runs the listener");
        CommandsClient::with_interceptor(channel(addr).await, bearer_for(actor))
    }

    /// The query service, for `actor`.
    pub async fn queries_as(&self, actor: Actor) -> Queries {
        self.queries_with(bearer_for(actor)).await
    }

    /// The query service, with a credential of the test's making.
    pub async fn queries_with(&self, bearer: Bearer) -> Queries {
        let addr = self.queries.expect("this system runs the query service");
        QueriesClient::with_interceptor(channel(addr).await, bearer)
    }

    /// The query service, for an operator, who may read everything.
    pub async fn queries(&self) -> Queries {
        self.queries_as(operator()).await
    }

    /// Polls the query service, as an operator, until `probe` answers `Some`, and returns
    /// that.
    pub async fn await_query<T, F, Fut>(&self, what: &str, probe: F) -> T
    where
        F: Fn(Queries) -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let queries = self.queries().await;
        wait_until(what, || probe(queries.clone())).await
    }

    /// Waits until `GetInvestor` answers exactly `expected`.
    pub async fn await_investor(&self, expected: &v1::Investor) {
        let what = format!("the investor is {expected:?}");
        self.await_query(&what, |mut queries| async move {
            let request = GetInvestorRequest {
                id: expected.id.clone(),
            };
            let shown = queries.get_investor(request).await.ok()?.into_inner();
            (shown == *expected).then_some(())
        })
        .await;
    }

    /// Waits until `GetCommandStatus` says `status` for the command, and returns its reply.
    pub async fn await_command_status(
        &self,
        command_id: CommandId,
        status: v1::CommandStatus,
    ) -> CommandStatusReply {
        let what = format!("command {command_id} is {status:?}");
        self.await_query(&what, |mut queries| async move {
            let request = GetCommandStatusRequest {
                command_id: Some(to_proto_id(command_id)),
            };
            let reply = queries.get_command_status(request).await.ok()?.into_inner();
            (reply.status() == status).then_some(reply)
        })
        .await
    }

    /// Publishes an integration event on `registering.events`, as Registering would.
    pub async fn publish(&self, event: &IntegrationEvent) {
        let topic = self.kafka.topics().registering_events;
        self.publish_record(&topic, integration_record(event)).await;
    }

    /// Publishes a domain event on `financing.events`, as the relayer would.
    pub async fn publish_event(&self, event: &EventEnvelope) {
        let topic = self.kafka.topics().events;
        self.publish_record(&topic, event.record()).await;
    }

    /// Publishes a command's outcome on `financing.outcomes`, as the relayer would.
    pub async fn publish_outcome(&self, outcome: &CommandOutcome) {
        let topic = self.kafka.topics().outcomes;
        self.publish_record(&topic, outcome.record()).await;
    }

    async fn publish_record(&self, topic: &str, record: Record) {
        self.publisher
            .publish(topic, &record)
            .await
            .expect("the broker takes the message");
    }

    /// Asserts that `financing.events` holds nothing but what the test has read: no event
    /// was published that the test did not expect.
    pub async fn assert_nothing_else_published(&self) {
        let all: Vec<Event> = read_to_end(&self.kafka, &self.kafka.topics().events)
            .await
            .iter()
            .map(|message| {
                EventEnvelope::decode(message)
                    .expect("a domain event")
                    .event
            })
            .collect();
        assert_eq!(
            all.len(),
            self.events.read(),
            "unexpected events after the expected ones: {:?}",
            &all[self.events.read().min(all.len())..]
        );
    }
}

async fn await_serving(service: &str, addr: SocketAddr) {
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

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect()
        .await
        .expect("the server accepts connections")
}

/// A test's reading position on `financing.events`.
pub struct EventFeed {
    consumer: GroupConsumer,
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
    pub async fn next(&mut self) -> EventEnvelope {
        let message = tokio::time::timeout(PATIENCE, self.consumer.recv())
            .await
            .expect("an event is published")
            .expect("the broker delivers it");
        self.read += 1;
        EventEnvelope::decode(&message).expect("a domain event")
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
