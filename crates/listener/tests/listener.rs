//! The listener on port 0 against the real broker, on topics of its own.

use std::net::SocketAddr;
use std::time::Duration;

use financing_api::v1::commands_client::CommandsClient;
use financing_api::v1::{self, BidOnInvoiceCommand, SellInvoiceCommand};
use financing_auth::{Actor, Bearer, Role};
use financing_domain::{ClientCommand, CommandId, InvoiceId, IssuerId, Money};
use financing_listener::{Listener, ListenerConfig};
use financing_messaging::{CommandMessage, GroupConsumer, KafkaConfig, WireForm};
use financing_testkit::{
    PATIENCE, auth_config, bad_tokens, bearer_for, operator, own_topics, wait_until,
};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
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
        auth: auth_config(),
        tls: None,
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

    /// The service, for `actor`: every request carries its token.
    async fn commands_as(
        &self,
        actor: Actor,
    ) -> CommandsClient<InterceptedService<Channel, Bearer>> {
        CommandsClient::with_interceptor(self.channel().await, bearer_for(actor))
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
    let issuer = Actor::new(issuer_id, Role::Issuer);

    let response = listener
        .commands_as(issuer)
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
            actor: Some(issuer),
        }
    );
}

#[tokio::test]
async fn a_client_s_traceparent_names_the_chain_its_command_starts() {
    let listener = start(own_topics()).await;
    listener.ready().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let investor = Actor::new(Uuid::new_v4(), Role::Investor);
    let mut request = tonic::Request::new(BidOnInvoiceCommand {
        investor_id: id(investor.party),
        invoice_id: id(Uuid::new_v4()),
        bid: money(5.0),
    });
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    let response = listener
        .commands_as(investor)
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
    let investor = Actor::new(Uuid::new_v4(), Role::Investor);
    let mut client = listener.commands_as(investor).await;
    let valid = || BidOnInvoiceCommand {
        investor_id: id(investor.party),
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
    let issuer_id = Uuid::new_v4();
    let mut client = listener
        .commands_as(Actor::new(issuer_id, Role::Issuer))
        .await;
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
        .commands_as(operator())
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

#[tokio::test]
async fn a_request_without_a_valid_token_is_unauthenticated_and_nothing_is_queued() {
    let listener = start(own_topics()).await;
    listener.ready().await;
    let investor = Actor::new(Uuid::new_v4(), Role::Investor);
    let bid = || BidOnInvoiceCommand {
        investor_id: id(investor.party),
        invoice_id: id(Uuid::new_v4()),
        bid: money(5.0),
    };
    let mut anonymous = CommandsClient::new(listener.channel().await);
    let mut refusals = vec![("no token".to_owned(), anonymous.bid_on_invoice(bid()).await)];
    for (what, token) in bad_tokens(investor) {
        let mut client = CommandsClient::new(listener.channel().await);
        let request = Bearer::new(&token).request(bid());
        refusals.push((what.to_owned(), client.bid_on_invoice(request).await));
        if !token.is_empty() {
            let status = refusals.last().unwrap().1.as_ref().unwrap_err();
            assert!(
                !status.message().contains(&token),
                "{what}: the token is echoed"
            );
        }
    }
    for (what, answer) in refusals {
        let status = answer.expect_err(&what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    }

    // The first command queued is the first one with a valid token.
    listener
        .commands_as(investor)
        .await
        .bid_on_invoice(bid())
        .await
        .unwrap();
    let (_, first) = next_command(&listener.consumer()).await;
    assert_eq!(first.actor, Some(investor));
}

#[tokio::test]
async fn a_party_acting_for_another_is_denied_and_nothing_is_queued() {
    let listener = start(own_topics()).await;
    listener.ready().await;
    let (issuer_id, investor_id) = (IssuerId::new_random(), Uuid::new_v4());
    let issuer = Actor::new(issuer_id, Role::Issuer);
    let investor = Actor::new(investor_id, Role::Investor);
    let sale = || SellInvoiceCommand {
        issuer_id: id(issuer_id),
        asking_price: money(10.0),
    };
    let bid = || BidOnInvoiceCommand {
        investor_id: id(investor_id),
        invoice_id: id(Uuid::new_v4()),
        bid: money(5.0),
    };
    let approval = || v1::ApproveFinancingCommand {
        invoice_id: id(Uuid::new_v4()),
    };
    let other_issuer = Actor::new(Uuid::new_v4(), Role::Issuer);
    let other_investor = Actor::new(Uuid::new_v4(), Role::Investor);
    // The issuer's own id, but as an investor; and the other way round.
    let issuer_as_investor = Actor::new(issuer_id, Role::Investor);
    let investor_as_issuer = Actor::new(investor_id, Role::Issuer);
    let mut denied = Vec::new();
    for actor in [other_issuer, issuer_as_investor, operator()] {
        let answer = listener.commands_as(actor).await.sell_invoice(sale()).await;
        denied.push((format!("{actor} sells for {issuer}"), answer.map(|_| ())));
    }
    for actor in [other_investor, investor_as_issuer, operator()] {
        let answer = listener
            .commands_as(actor)
            .await
            .bid_on_invoice(bid())
            .await;
        denied.push((format!("{actor} bids for {investor}"), answer.map(|_| ())));
    }
    let answer = listener
        .commands_as(investor)
        .await
        .approve_financing(approval())
        .await;
    denied.push(("an investor approves".into(), answer.map(|_| ())));
    let answer = listener
        .commands_as(investor)
        .await
        .reverse_financing(v1::ReverseFinancingCommand {
            invoice_id: id(Uuid::new_v4()),
        })
        .await;
    denied.push(("an investor reverses".into(), answer.map(|_| ())));
    for (what, answer) in denied {
        let status = answer.expect_err(&what);
        assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
    }

    // Each for itself is allowed, and the first command queued.
    listener
        .commands_as(issuer)
        .await
        .sell_invoice(sale())
        .await
        .unwrap();
    listener
        .commands_as(investor)
        .await
        .bid_on_invoice(bid())
        .await
        .unwrap();
    listener
        .commands_as(issuer)
        .await
        .approve_financing(approval())
        .await
        .unwrap();
    listener
        .commands_as(operator())
        .await
        .approve_financing(approval())
        .await
        .unwrap();
    let consumer = listener.consumer();
    let mut asked_by = Vec::new();
    for _ in 0..4 {
        asked_by.push(
            next_command(&consumer)
                .await
                .1
                .actor
                .map(|actor| actor.role),
        );
    }
    asked_by.sort_by_key(|role| role.map(Role::as_str));
    assert_eq!(
        asked_by,
        [
            Some(Role::Investor),
            Some(Role::Issuer),
            Some(Role::Issuer),
            Some(Role::Operator)
        ]
    );
}

#[tokio::test]
async fn a_listener_given_a_certificate_serves_tls_and_only_tls() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("financing-tls-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let shutdown = CancellationToken::new();
    let config = ListenerConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        kafka: own_topics(),
        auth: auth_config(),
        tls: Some(financing_api::TlsFiles { cert, key }),
    };
    let listener = Listener::build(config, shutdown.clone()).await.unwrap();
    let port = listener.local_addr().port();
    tokio::spawn(listener.run_until_stopped());
    let _stop = shutdown.drop_guard();

    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            certified.cert.pem(),
        ))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("a TLS client that trusts the certificate connects");
    let issuer = Actor::new(Uuid::new_v4(), Role::Issuer);
    let client = CommandsClient::with_interceptor(channel, bearer_for(issuer));
    let answered = wait_until("the listener answers over TLS", || {
        let mut client = client.clone();
        async move {
            let request = SellInvoiceCommand {
                issuer_id: id(issuer.party),
                asking_price: money(1.0),
            };
            client.sell_invoice(request).await.ok()
        }
    })
    .await;
    assert!(!answered.get_ref().value.is_empty());

    let plaintext = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await;
    let refused = match plaintext {
        Err(_) => true,
        Ok(channel) => HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "a plaintext client gets no answer");
}
