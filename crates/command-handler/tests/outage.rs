//! A database outage under a running command handler: it retries with backoff, and when the
//! database is back every message is applied, exactly once, and a poison is dead-lettered once.

mod common;

use financing_command_handler::CommandHandler;
use financing_domain::{IntegrationEvent, IssuerId};
use financing_messaging::{KafkaConfig, Publisher, integration_record};
use financing_testkit::{Proxy, Services, poison_command, read_to_end, wait_until};
use sqlx::PgPool;
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

async fn event_types(pool: &PgPool, aggregate_id: Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT event_type FROM events WHERE aggregate_id = $1 ORDER BY version")
        .bind(aggregate_id)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn await_created(pool: &PgPool, issuer_id: IssuerId) {
    wait_until(&format!("issuer {issuer_id} is created"), || async {
        (!event_types(pool, issuer_id.as_uuid()).await.is_empty()).then_some(())
    })
    .await;
}

/// A handler that reaches its database through a proxy the test can cut, on topics of one
/// partition; the database reached directly; the handler stops when this is dropped.
struct Running {
    proxy: Proxy,
    kafka: KafkaConfig,
    pool: PgPool,
    _stop: DropGuard,
}

impl Running {
    async fn start() -> Running {
        let services = Services::from_env();
        let proxy = Proxy::start(services.database_server()).await;
        let through_proxy = services.own_database_url_through(&proxy);
        let direct = through_proxy.replace(
            &proxy.addr().to_string(),
            &services.database_server().to_string(),
        );
        let kafka = KafkaConfig {
            partitions: 1,
            ..services.own_topics()
        };
        let config = common::config(&kafka, through_proxy);
        let shutdown = CancellationToken::new();
        let handler = CommandHandler::build(config, shutdown.clone())
            .await
            .unwrap();
        tokio::spawn(handler.run_until_stopped());
        Running {
            proxy,
            kafka,
            pool: PgPool::connect(&direct).await.unwrap(),
            _stop: shutdown.drop_guard(),
        }
    }
}

#[tokio::test]
async fn messages_wait_out_a_database_outage_and_none_is_lost_or_doubled() {
    let running = Running::start().await;
    let (proxy, kafka, pool) = (&running.proxy, &running.kafka, &running.pool);
    let publisher = Publisher::new(kafka).unwrap();
    let topic = kafka.topics().registering_events;
    let register = |id| {
        let event = IntegrationEvent::IssuerRegistered {
            id,
            name: "ACME".into(),
        };
        let (publisher, topic) = (&publisher, &topic);
        async move {
            let record = integration_record(&event);
            publisher.publish(topic, &record).await.unwrap();
        }
    };

    let before = IssuerId::new_random();
    register(before).await;
    await_created(pool, before).await;

    proxy.cut();
    let (during, after) = (IssuerId::new_random(), IssuerId::new_random());
    register(during).await;
    register(after).await;
    wait_until("the handler meets the outage", || async {
        (proxy.refused() > 0).then_some(())
    })
    .await;
    proxy.restore();

    for issuer_id in [during, after] {
        await_created(pool, issuer_id).await;
    }
    for issuer_id in [before, during, after] {
        assert_eq!(
            event_types(pool, issuer_id.as_uuid()).await,
            ["IssuerCreated"]
        );
    }
}

#[tokio::test]
async fn a_poison_command_met_during_an_outage_is_dead_lettered_once() {
    let running = Running::start().await;
    let (proxy, kafka, pool) = (&running.proxy, &running.kafka, &running.pool);

    proxy.cut();
    let (poison_id, poison) = poison_command();
    let publisher = Publisher::new(kafka).unwrap();
    publisher
        .publish(&kafka.topics().commands, &poison)
        .await
        .unwrap();
    // Long enough for the handler to try the poison several times (its backoff starts at
    // 100 ms; its parked-message loop alone asks every 200 ms).
    wait_until("the handler meets the outage again and again", || async {
        (proxy.refused() >= 20).then_some(())
    })
    .await;
    proxy.restore();

    wait_until("the command is told FAILED", || async {
        let failed: Option<String> =
            sqlx::query_scalar("SELECT reason FROM failed_commands WHERE command_id = $1")
                .bind(poison_id)
                .fetch_optional(pool)
                .await
                .unwrap();
        failed
    })
    .await;
    let letters = wait_until("the poison is dead-lettered", || async {
        let letters = read_to_end(kafka, &kafka.topics().dlq).await;
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert_eq!(letters.len(), 1, "one copy, however many retries");
}
