//! A handler that dies without a word (kill -9) does not keep its partitions for long: its
//! group gives them to the handler still alive, which carries on with them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use financing_command_handler::CommandHandler;
use financing_domain::{IntegrationEvent, IssuerId};
use financing_messaging::{KafkaConfig, integration_record};
use financing_testkit::{create_topic, own_database_url, own_topics, wait_until};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 4;

/// Kills the process when dropped, so that a failing test leaves nothing running.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Registers one issuer on each partition of `registering.events`; returns their ids.
async fn register_one_per_partition(kafka: &KafkaConfig) -> Vec<IssuerId> {
    let producer: FutureProducer = kafka.client_config().create().unwrap();
    let topic = kafka.topics().registering_events;
    let mut issuers = Vec::new();
    for partition in 0..PARTITIONS {
        let issuer_id = IssuerId::new_random();
        let record = integration_record(&IntegrationEvent::IssuerRegistered {
            id: issuer_id,
            name: format!("issuer on partition {partition}"),
        });
        let message = FutureRecord::to(&topic)
            .partition(partition)
            .key(&record.key)
            .payload(&record.payload)
            .headers(record.kafka_headers());
        producer
            .send(message, financing_testkit::PATIENCE)
            .await
            .unwrap();
        issuers.push(issuer_id);
    }
    issuers
}

async fn await_created(pool: &PgPool, issuers: &[IssuerId]) {
    let ids: Vec<uuid::Uuid> = issuers.iter().map(|id| id.as_uuid()).collect();
    wait_until("every issuer is created", || async {
        let created: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE event_type = 'IssuerCreated' AND aggregate_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_one(pool)
        .await
        .ok()?;
        (created == ids.len() as i64).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_handler_killed_mid_stream_hands_its_partitions_to_the_survivor() {
    let kafka = KafkaConfig {
        partitions: PARTITIONS,
        ..own_topics()
    };
    // Registrations get one partition from the system; these come on several.
    create_topic(&kafka, &kafka.topics().registering_events, PARTITIONS).await;
    let config = common::config(&kafka, own_database_url());
    let shutdown = CancellationToken::new();
    let survivor = CommandHandler::build(config.clone(), shutdown.clone())
        .await
        .unwrap();
    let _running = tokio::spawn(survivor.run_until_stopped());
    let pool = PgPool::connect(&config.database_url).await.unwrap();
    await_created(&pool, &register_one_per_partition(&kafka).await).await;

    // A second handler, the real binary, joins the group and takes its share.
    let mut peer = Command::new(env!("CARGO_BIN_EXE_command-handler"))
        .env("DATABASE_URL", &config.database_url)
        .env("KAFKA_BROKERS", &kafka.brokers)
        .env("KAFKA_TOPIC_PREFIX", &kafka.topic_prefix)
        .env("KAFKA_PARTITIONS", PARTITIONS.to_string())
        .env("COMMAND_HANDLER_GROUP", &config.group_id)
        .env("COMMAND_HANDLER_CONSUMERS", "1")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = BufReader::new(peer.stderr.take().unwrap());
    let mut peer = Killed(peer);
    let (assigned, assignment) = mpsc::channel();
    std::thread::spawn(move || {
        let holds_partitions = |line: &String| {
            line.contains("partitions assigned") && !line.contains("partitions=\"none\"")
        };
        // Read to the end, so that the peer never blocks on a full pipe.
        for line in logs.lines().map_while(Result::ok) {
            if holds_partitions(&line) {
                let _ = assigned.send(());
            }
        }
    });
    wait_until("the peer holds partitions", || async {
        assignment.try_recv().ok()
    })
    .await;

    peer.0.kill().unwrap();
    peer.0.wait().unwrap();
    // Every partition has work now, the dead peer's too: the survivor must get them all.
    await_created(&pool, &register_one_per_partition(&kafka).await).await;
    shutdown.cancel();
}
