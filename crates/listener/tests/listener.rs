//! The listener on port 0 against the real broker, on topics of its own.

use std::net::SocketAddr;
use std::time::Duration;

use financing_api::v1::commands_client::CommandsClient;
use financing_api::v1::{self, BidOnInvoiceCommand, SellInvoiceCommand};
use financing_domain::{ClientCommand, CommandId, InvoiceId, IssuerId, Money};
use financing_listener::{Listener, ListenerConfig};
use financing_messaging::{CommandMessage, GroupConsumer, KafkaConfig, WireForm};
use financing_testkit::{PATIENCE, own_topics, wait_until};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use uuid::Uuid;

struct Running {
    addr: SocketAddr,
    kafka: KafkaConfig,
    _stop: tokio_util::sync::DropGuard,
}

async fn start(kafka: KafkaConfig) -> Running {
    let shutdown = CancellationToken::new();
    let config = ListenerConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        kafka: kafka.clone(),
    };
    let listener = Listener::build(config, shutdown.clone()).await.unwrap();
    let addr = listener.local_addr();
    tokio::spawn(listener.run_until_stopped());
    Running {
        addr,
        kafka,
        _stop: shutdown.drop_guard(),
    }
}

impl Running {
    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn commands(&self) -> CommandsClient<Channel> {
        CommandsClient::new(self.channel().await)
    }

    /// Waits until health says SERVING: the topics exist.
    async fn ready(&self) {
        let health = HealthClient::new(self.channel().await);
        wait_until("the listener is SERVING", || {
            let mut health = health.clone();
            async move {
                let request = HealthCheckRequest {
                    service: "financing.v1.Commands".into(),
                };
                let status = health.check(request).await.ok()?.into_inner().status;
                (status == ServingStatus::Serving as i32).then_some(())
            }
        })
        .await;
    }

    fn consumer(&self) -> GroupConsumer {
        let consumer = self
            .kafka
            .consumer(&format!("{}test", self.kafka.topic_prefix))
            .unwrap();
        consumer
            .subscribe(&[&self.kafka.topics().commands])
            .unwrap();
        consumer
    }
}

async fn next_command(consumer: &GroupConsumer) -> (String, CommandMessage) {
    let message = tokio::time::timeout(PATIENCE, consumer.recv())
        .await
        .expect("a command is queued")
        .unwrap();
    let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
    (key, CommandMessage::decode(&message).unwrap())
}

fn id(value: impl ToString) -> Option<v1::Uuid> {
    Some(v1::Uuid {
        value: value.to_string(),
    })
}

fn money(amount: f64) -> Option<v1::Money> {
    Some(v1::Money { amount })
}

fn command_id_header<T>(response: &tonic::Response<T>) -> CommandId {
    response
        .metadata()
        .get("x-command-id")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_sale_is_queued_keyed_by_the_new_invoice_and_answered_with_its_id() {
    let listener = start(own_topics()).await;
    listener.ready().await;
    let issuer_id = IssuerId::new_random();

    let response = listener
        .commands()
        .await
        .sell_invoice(SellInvoiceCommand {
            issuer_id: id(issuer_id),
            asking_price: money(10.5),
        })
        .await
        .unwrap();
    let command_id = command_id_header(&response);
    let invoice_id: InvoiceId = response.into_inner().value.parse().unwrap();
    assert_eq!(invoice_id, InvoiceId::for_sale(command_id));

    let (key, queued) = next_command(&listener.consumer()).await;
    assert_eq!(key, invoice_id.to_string());
    assert_eq!(
        queued,
        CommandMessage {
            command_id,
            correlation_id: command_id.as_uuid(),
            command: ClientCommand::SellInvoice {
                invoice_id,
                issuer_id,
                asking_price: Money::from_cents(1050),
            },
        }
    );
}

#[tokio::test]
async fn a_client_s_traceparent_names_the_chain_its_command_starts() {
    let listener = start(own_topics()).await;
    listener.ready().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = tonic::Request::new(BidOnInvoiceCommand {
        investor_id: id(Uuid::new_v4()),
        invoice_id: id(Uuid::new_v4()),
        bid: money(5.0),
    });
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    let response = listener
        .commands()
        .await
        .bid_on_invoice(request)
        .await
        .unwrap();
    let command_id = command_id_header(&response);

    let (_, queued) = next_command(&listener.consumer()).await;
    assert_eq!(queued.command_id, command_id);
    assert_eq!(queued.correlation_id, Uuid::parse_str(trace_id).unwrap());
}

#[tokio::test]
async fn malformed_requests_are_refused_naming_the_field_and_nothing_is_queued() {
    let listener = start(own_topics()).await;
    listener.ready().await;
    let mut client = listener.commands().await;
    let valid = || BidOnInvoiceCommand {
        investor_id: id(Uuid::new_v4()),
        invoice_id: id(Uuid::new_v4()),
        bid: money(20.0),
    };
    let cases = [
        (
            "investor_id",
            BidOnInvoiceCommand {
                investor_id: None,
                ..valid()
            },
        ),
        (
            "investor_id.value",
            BidOnInvoiceCommand {
                investor_id: id("42"),
                ..valid()
            },
        ),
        (
            "invoice_id.value",
            BidOnInvoiceCommand {
                invoice_id: id(""),
                ..valid()
            },
        ),
        (
            "bid",
            BidOnInvoiceCommand {
                bid: None,
                ..valid()
            },
        ),
        (
            "bid.amount",
            BidOnInvoiceCommand {
                bid: money(f64::NAN),
                ..valid()
            },
        ),
        (
            "bid.amount",
            BidOnInvoiceCommand {
                bid: money(f64::INFINITY),
                ..valid()
            },
        ),
        (
            "bid.amount",
            BidOnInvoiceCommand {
                bid: money(0.0),
                ..valid()
            },
        ),
        (
            "bid.amount",
            BidOnInvoiceCommand {
                bid: money(-5.0),
                ..valid()
            },
        ),
        (
            "bid.amount",
            BidOnInvoiceCommand {
                bid: money(1.234),
                ..valid()
            },
        ),
        (
            "bid.amount",
            BidOnInvoiceCommand {
                bid: money(1e13),
                ..valid()
            },
        ),
    ];
    for (field, request) in cases {
        let status = client.bid_on_invoice(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(&format!("{field}: ")),
            "{field}: {}",
            status.message()
        );
    }

    let accepted = valid();
    client.bid_on_invoice(accepted.clone()).await.unwrap();
    let (_, first_queued) = next_command(&listener.consumer()).await;
    let investor_id = accepted.investor_id.unwrap().value.parse().unwrap();
    assert!(
        matches!(first_queued.command, ClientCommand::BidOnInvoice { investor_id: queued, .. } if queued == investor_id),
        "only the valid request was queued, first: {first_queued:?}"
    );
}

#[tokio::test]
async fn a_retried_sale_with_the_same_idempotency_key_is_the_same_command_and_invoice() {
    let listener = start(own_topics()).await;
    listener.ready().await;
    let mut client = listener.commands().await;
    let issuer_id = Uuid::new_v4();
    let sell = |key: &str, amount: f64| {
        let mut request = Request::new(SellInvoiceCommand {
            issuer_id: id(issuer_id),
            asking_price: money(amount),
        });
        request
            .metadata_mut()
            .insert("idempotency-key", key.parse().unwrap());
        request
    };

    let first = client.sell_invoice(sell("order-17", 10.0)).await.unwrap();
    let retry = client.sell_invoice(sell("order-17", 10.0)).await.unwrap();
    assert_eq!(command_id_header(&first), command_id_header(&retry));
    assert_eq!(first.get_ref(), retry.get_ref());
    // Another key, or the same key on another sale, is another command.
    let other_key = client.sell_invoice(sell("order-18", 10.0)).await.unwrap();
    let other_sale = client.sell_invoice(sell("order-17", 12.0)).await.unwrap();
    for other in [other_key, other_sale] {
        assert_ne!(command_id_header(&first), command_id_header(&other));
        assert_ne!(first.get_ref(), other.get_ref());
    }
}

#[tokio::test]
async fn without_a_broker_a_command_gets_unavailable_not_ok() {
    let listener = start(KafkaConfig {
        brokers: "127.0.0.1:1".into(),
        delivery_timeout: Duration::from_millis(500),
        ..own_topics()
    })
    .await;
    let status = listener
        .commands()
        .await
        .approve_financing(v1::ApproveFinancingCommand {
            invoice_id: id(Uuid::new_v4()),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn reflection_lists_the_commands_and_health_services() {
    let listener = start(own_topics()).await;
    let mut reflection = ServerReflectionClient::new(listener.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("{reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["financing.v1.Commands", "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
}
