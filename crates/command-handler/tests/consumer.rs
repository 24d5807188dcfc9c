//! The handler against the real broker and Postgres: its own topics (one partition, so order
//! is total) and its own database.

mod common;

use financing_command_handler::{CommandHandler, HandlerConfig};
use financing_domain::{
    Actor, Bid, ClientCommand, CommandId, Event, EventMeta, IntegrationEvent, InvestorEvent,
    InvestorId, InvoiceEvent, InvoiceId, IssuerEvent, IssuerId, Money, Role,
};
use financing_messaging::{
    CommandMessage, KafkaConfig, Publisher, Record, WireForm, headers, integration_record,
    legacy_record,
};
use financing_testkit::{
    PATIENCE, as_published, own_database_url, own_topics, poison_command, read_to_end, wait_until,
};
use rdkafka::Message;
use rdkafka::message::{Headers, OwnedMessage};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct Setup {
    config: HandlerConfig,
    publisher: Publisher,
}

impl Setup {
    fn new() -> Setup {
        let kafka = KafkaConfig {
            partitions: 1,
            ..own_topics()
        };
        let config = common::config(&kafka, own_database_url());
        Setup {
            publisher: Publisher::new(&kafka).unwrap(),
            config,
        }
    }

    async fn start(&self) -> (CancellationToken, JoinHandle<()>) {
        let shutdown = CancellationToken::new();
        let handler = CommandHandler::build(self.config.clone(), shutdown.clone())
            .await
            .unwrap();
        (shutdown, tokio::spawn(handler.run_until_stopped()))
    }

    async fn publish(&self, topic: &str, record: Record) {
        self.publisher.publish(topic, &record).await.unwrap();
    }

    async fn event_types(&self, pool: &PgPool, aggregate_id: Uuid) -> Vec<String> {
        sqlx::query_scalar("SELECT event_type FROM events WHERE aggregate_id = $1 ORDER BY version")
            .bind(aggregate_id)
            .fetch_all(pool)
            .await
            .unwrap()
    }

    async fn await_events(&self, pool: &PgPool, aggregate_id: Uuid, expected: &[&str]) {
        wait_until(&format!("{aggregate_id} has {expected:?}"), || async {
            (self.event_types(pool, aggregate_id).await == expected).then_some(())
        })
        .await;
    }

    async fn dead_letters(&self) -> Vec<OwnedMessage> {
        read_to_end(&self.config.kafka, &self.config.kafka.topics().dlq).await
    }

    /// The dead letters, once there is one.
    async fn await_dead_letters(&self) -> Vec<OwnedMessage> {
        wait_until("a message is dead-lettered", || async {
            let letters = self.dead_letters().await;
            (!letters.is_empty()).then_some(letters)
        })
        .await
    }
}

fn registered(issuer_id: IssuerId) -> Record {
    integration_record(&IntegrationEvent::IssuerRegistered {
        id: issuer_id,
        name: "ACME".into(),
    })
}

fn sell(issuer_id: IssuerId) -> (InvoiceId, Record) {
    let command_id = CommandId::new_random();
    let invoice_id = InvoiceId::for_sale(command_id);
    let message = CommandMessage {
        command_id,
        correlation_id: command_id.as_uuid(),
        command: ClientCommand::SellInvoice {
            invoice_id,
            issuer_id,
            asking_price: Money::units(10),
        },
        actor: Some(Actor::new(issuer_id, Role::Issuer)),
    };
    (invoice_id, message.record())
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_once_with_its_reason_and_the_rest_is_handled() {
    let setup = Setup::new();
    let topics = setup.config.kafka.topics();
    let (shutdown, running) = setup.start().await;
    let pool = PgPool::connect(&setup.config.database_url).await.unwrap();

    let (poison_id, poison) = poison_command();
    setup.publish(&topics.commands, poison.clone()).await;
    let issuer_id = IssuerId::new_random();
    setup
        .publish(&topics.registering_events, registered(issuer_id))
        .await;
    // Registrations and sales travel on different topics: sell once the issuer exists.
    setup
        .await_events(&pool, issuer_id.as_uuid(), &["IssuerCreated"])
        .await;
    let (invoice_id, sale) = sell(issuer_id);
    setup.publish(&topics.commands, sale).await;
    setup
        .await_events(&pool, invoice_id.as_uuid(), &["InvoiceCreated"])
        .await;

    // The poison and the sale are different keys, handled side by side.
    let dead_letters = setup.await_dead_letters().await;
    let [letter] = &dead_letters[..] else {
        panic!("one dead letter expected, got {}", dead_letters.len());
    };
    assert_eq!(letter.payload(), Some(&poison.payload[..]));
    let header = |name: &str| {
        letter
            .headers()
            .and_then(|all| all.iter().find(|h| h.key == name))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let reason = header(headers::DLQ_REASON).unwrap();
    assert!(reason.starts_with("cannot decode SellInvoice"), "{reason}");
    assert_eq!(
        header(headers::DLQ_TOPIC).as_deref(),
        Some(topics.commands.as_str())
    );
    let failure: (Option<Uuid>, String) =
        sqlx::query_as("SELECT aggregate_id, reason FROM failed_commands WHERE command_id = $1")
            .bind(poison_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        failure.1.starts_with("cannot decode SellInvoice"),
        "the client is told its command FAILED, and why: {failure:?}"
    );

    // A graceful restart resumes after the committed offsets: the poison is not seen again.
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, running)
        .await
        .unwrap()
        .unwrap();
    let (shutdown, _running) = setup.start().await;
    let (second_invoice, second_sale) = sell(issuer_id);
    setup.publish(&topics.commands, second_sale).await;
    setup
        .await_events(&pool, second_invoice.as_uuid(), &["InvoiceCreated"])
        .await;
    assert_eq!(
        setup.dead_letters().await.len(),
        1,
        "the poison was not handled again"
    );
    assert_eq!(
        setup.event_types(&pool, invoice_id.as_uuid()).await,
        ["InvoiceCreated"]
    );
    shutdown.cancel();
}

#[tokio::test]
async fn a_redelivered_registration_creates_the_issuer_once() {
    let setup = Setup::new();
    let topics = setup.config.kafka.topics();
    let (shutdown, _running) = setup.start().await;
    let pool = PgPool::connect(&setup.config.database_url).await.unwrap();

    let issuer_id = IssuerId::new_random();
    setup
        .publish(&topics.registering_events, registered(issuer_id))
        .await;
    setup
        .publish(&topics.registering_events, registered(issuer_id))
        .await;
    // The next message on the same partition is handled only after both copies.
    let marker = IssuerId::new_random();
    setup
        .publish(&topics.registering_events, registered(marker))
        .await;
    setup
        .await_events(&pool, marker.as_uuid(), &["IssuerCreated"])
        .await;
    assert_eq!(
        setup.event_types(&pool, issuer_id.as_uuid()).await,
        ["IssuerCreated"]
    );
    shutdown.cancel();
}

#[tokio::test]
async fn a_registration_the_database_refuses_is_dead_lettered_and_the_next_is_handled() {
    let setup = Setup::new();
    let topics = setup.config.kafka.topics();
    let (shutdown, _running) = setup.start().await;
    let pool = PgPool::connect(&setup.config.database_url).await.unwrap();

    // PostgreSQL keeps no NUL character in text: retrying this would block the partition.
    let refused = IntegrationEvent::IssuerRegistered {
        id: IssuerId::new_random(),
        name: "nul\u{0}byte".into(),
    };
    setup
        .publish(&topics.registering_events, integration_record(&refused))
        .await;
    let next = IssuerId::new_random();
    setup
        .publish(&topics.registering_events, registered(next))
        .await;
    setup
        .await_events(&pool, next.as_uuid(), &["IssuerCreated"])
        .await;

    // The two are different issuers, handled side by side: the next may be done first.
    let dead_letters = setup.await_dead_letters().await;
    let [letter] = &dead_letters[..] else {
        panic!("one dead letter expected, got {}", dead_letters.len());
    };
    let reason = letter
        .headers()
        .and_then(|all| all.iter().find(|h| h.key == headers::DLQ_REASON))
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap();
    assert!(
        reason.starts_with("the database refused the data"),
        "{reason}"
    );
    shutdown.cancel();
}

async fn parked_messages(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as("SELECT topic, reason FROM parked_messages ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_event_of_a_schema_newer_than_the_saga_reads_is_parked_not_dropped() {
    let setup = Setup::new();
    let topics = setup.config.kafka.topics();
    let (shutdown, _running) = setup.start().await;
    let pool = PgPool::connect(&setup.config.database_url).await.unwrap();

    let readable = as_published(
        Event::Issuer(IssuerEvent::IssuerCreated {
            issuer_id: IssuerId::new_random(),
            name: "ACME".into(),
        }),
        Uuid::new_v4(),
        1,
    )
    .record();
    let mut envelope: serde_json::Value = serde_json::from_slice(&readable.payload).unwrap();
    envelope["schemaversion"] = 2.into();
    let unreadable = Record {
        payload: envelope.to_string().into_bytes(),
        ..readable
    };
    setup.publish(&topics.events, unreadable).await;

    let parked = wait_until("the event is parked", || async {
        let parked = parked_messages(&pool).await;
        (!parked.is_empty()).then_some(parked)
    })
    .await;
    assert_eq!(parked[0].0, topics.events);
    assert!(
        parked[0]
            .1
            .contains("schema version 2 is newer than this version reads"),
        "{parked:?}"
    );
    assert!(
        setup.dead_letters().await.is_empty(),
        "nothing owed is dead-lettered"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn a_reaction_whose_aggregate_cannot_be_read_is_parked_and_goes_through_once_it_can() {
    let setup = Setup::new();
    let topics = setup.config.kafka.topics();
    let (shutdown, _running) = setup.start().await;
    let pool = PgPool::connect(&setup.config.database_url).await.unwrap();

    // An investor with 10 reserved by a bid that financed an invoice asking 10.
    let issuer_id = IssuerId::new_random();
    setup
        .publish(&topics.registering_events, registered(issuer_id))
        .await;
    let issuer_created = ["IssuerCreated"];
    setup
        .await_events(&pool, issuer_id.as_uuid(), &issuer_created)
        .await;
    let (invoice_id, sale) = sell(issuer_id);
    setup.publish(&topics.commands, sale).await;
    let investor_id = InvestorId::new_random();
    let registration = IntegrationEvent::InvestorRegistered {
        id: investor_id,
        name: "Ada".into(),
        balance: Money::units(100),
    };
    setup
        .publish(
            &topics.registering_events,
            integration_record(&registration),
        )
        .await;
    // The two topics are consumed independently: a bid decided before the registration would
    // rightly be rejected.
    let registered = ["InvestorCreated", "InvestorFundsAdded"];
    setup
        .await_events(&pool, investor_id.as_uuid(), &registered)
        .await;
    let bid = CommandMessage {
        command_id: CommandId::new_random(),
        correlation_id: Uuid::new_v4(),
        command: ClientCommand::BidOnInvoice {
            investor_id,
            invoice_id,
            bid: Money::units(10),
        },
        actor: Some(Actor::new(investor_id, Role::Investor)),
    };
    setup.publish(&topics.commands, bid.record()).await;
    let placed = [&registered[..], &["BidOnInvoicePlaced"]].concat();
    setup
        .await_events(&pool, investor_id.as_uuid(), &placed)
        .await;
    let financed = ["InvoiceCreated", "InvoiceFinanced"];
    setup
        .await_events(&pool, invoice_id.as_uuid(), &financed)
        .await;

    // Its stream becomes unreadable, then the invoice is approved: 10 are owed to committed.
    let damage = |payload: serde_json::Value| {
        sqlx::query("UPDATE events SET payload = $2 WHERE aggregate_id = $1 AND version = 2")
            .bind(investor_id.as_uuid())
            .bind(payload)
            .execute(&pool)
    };
    let original: serde_json::Value =
        sqlx::query_scalar("SELECT payload FROM events WHERE aggregate_id = $1 AND version = 2")
            .bind(investor_id.as_uuid())
            .fetch_one(&pool)
            .await
            .unwrap();
    damage(serde_json::json!({ "amount": "not money" }))
        .await
        .unwrap();
    let approved = InvoiceEvent::InvoiceApproved {
        invoice_id,
        sold_price: Money::units(10),
        bid: Bid {
            investor_id,
            amount: Money::units(10),
        },
    };
    let approved = as_published(Event::Invoice(approved), invoice_id.as_uuid(), 3).record();
    setup.publish(&topics.events, approved).await;
    let parked = wait_until("the reaction is parked", || async {
        let parked = parked_messages(&pool).await;
        (!parked.is_empty()).then_some(parked)
    })
    .await;
    assert!(
        parked[0].1.contains(&format!("Investor {investor_id} v2")),
        "{parked:?}"
    );

    // Repaired, the parked reaction goes through on a later attempt.
    damage(original).await.unwrap();
    let committed = [&placed[..], &["InvestorFundsCommitted"]].concat();
    setup
        .await_events(&pool, investor_id.as_uuid(), &committed)
        .await;
    wait_until("nothing is parked any more", || async {
        parked_messages(&pool).await.is_empty().then_some(())
    })
    .await;
    assert!(setup.dead_letters().await.is_empty());
    shutdown.cancel();
}

/// What the handler's three topics may hold during a rolling upgrade: messages an earlier
/// version wrote in the header form, then CloudEvents. Every one is handled.
#[tokio::test]
async fn topics_holding_the_earlier_form_then_cloudevents_are_consumed_whole() {
    let setup = Setup::new();
    let topics = setup.config.kafka.topics();
    let (shutdown, _running) = setup.start().await;
    let pool = PgPool::connect(&setup.config.database_url).await.unwrap();

    // registering.events
    let (old_issuer, new_issuer) = (IssuerId::new_random(), IssuerId::new_random());
    let old_registration = IntegrationEvent::IssuerRegistered {
        id: old_issuer,
        name: "Old".into(),
    };
    setup
        .publish(
            &topics.registering_events,
            legacy_record::integration(&old_registration),
        )
        .await;
    setup
        .publish(&topics.registering_events, registered(new_issuer))
        .await;
    for issuer in [old_issuer, new_issuer] {
        setup
            .await_events(&pool, issuer.as_uuid(), &["IssuerCreated"])
            .await;
    }

    // financing.commands
    let (old_invoice, old_sale) = sell(old_issuer);
    let old_sale = CommandMessage::decode(&as_received(&old_sale)).unwrap();
    setup
        .publish(&topics.commands, legacy_record::command(&old_sale))
        .await;
    let (new_invoice, new_sale) = sell(new_issuer);
    setup.publish(&topics.commands, new_sale).await;
    for invoice in [old_invoice, new_invoice] {
        setup
            .await_events(&pool, invoice.as_uuid(), &["InvoiceCreated"])
            .await;
    }

    // financing.events: a bid an earlier relayer published (schema version 1: `bid_amount`),
    // then one a new relayer did; the saga answers each on its invoice.
    let investor_id = InvestorId::new_random();
    let placed = |invoice_id, version| {
        as_published(
            Event::Investor(InvestorEvent::BidOnInvoicePlaced {
                investor_id,
                invoice_id,
                amount: Money::units(25),
            }),
            investor_id.as_uuid(),
            version,
        )
    };
    let old_bid = placed(old_invoice, 3);
    let old_meta = EventMeta {
        schema_version: 1,
        ..old_bid.meta.clone()
    };
    let version_1 = serde_json::json!({
        "investor_id": investor_id,
        "invoice_id": old_invoice,
        "bid_amount": "25.00",
    });
    setup
        .publish(
            &topics.events,
            legacy_record::event(&old_meta, "BidOnInvoicePlaced", &version_1),
        )
        .await;
    setup
        .publish(&topics.events, placed(new_invoice, 4).record())
        .await;
    let financed = ["InvoiceCreated", "InvoiceFinanced"];
    for invoice in [old_invoice, new_invoice] {
        setup
            .await_events(&pool, invoice.as_uuid(), &financed)
            .await;
        let bid: serde_json::Value = sqlx::query_scalar(
            "SELECT payload->'bid'->'amount' FROM events WHERE aggregate_id = $1 AND version = 2",
        )
        .bind(invoice.as_uuid())
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(bid, "25.00", "the bid's amount is read in either form");
    }
    assert!(setup.dead_letters().await.is_empty());
    assert!(parked_messages(&pool).await.is_empty());
    shutdown.cancel();
}

/// A record as a consumer receives it.
fn as_received(record: &Record) -> OwnedMessage {
    OwnedMessage::new(
        Some(record.payload.clone()),
        Some(record.key.clone().into_bytes()),
        String::new(),
        rdkafka::Timestamp::NotAvailable,
        0,
        0,
        Some(record.kafka_headers()),
    )
}
