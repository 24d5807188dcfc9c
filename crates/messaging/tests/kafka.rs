//! Against the real broker (`KAFKA_BROKERS`, default 127.0.0.1:9092), on topics of their own.

use std::time::{Duration, Instant};

use financing_domain::{ClientCommand, CommandId, InvoiceId};
use financing_messaging::{CommandMessage, KafkaConfig, Publisher, WireForm};
use financing_testkit::{PATIENCE, create_topic, own_topics};
use rdkafka::consumer::Consumer;
use uuid::Uuid;

fn config() -> KafkaConfig {
    KafkaConfig {
        partitions: 2,
        ..own_topics()
    }
}

fn approve() -> CommandMessage {
    CommandMessage {
        command_id: CommandId::new_random(),
        correlation_id: Uuid::new_v4(),
        command: ClientCommand::ApproveFinancing {
            invoice_id: InvoiceId::new_random(),
        },
        actor: None,
    }
}

#[tokio::test]
async fn missing_topics_are_created_idempotently_and_a_message_arrives_with_its_headers() {
    let config = config();
    let topics = config.topics();
    // One made beforehand, as an operator may: it keeps its partitions.
    create_topic(&config, &topics.outcomes, 3).await;
    config.ensure_topics().await.unwrap();
    config.ensure_topics().await.unwrap();
    let counts = config.partition_counts(&topics.all()).await.unwrap();
    assert_eq!(counts[&topics.commands], 2);
    assert_eq!(counts[&topics.events], 2);
    assert_eq!(counts[&topics.outcomes], 3);
    assert_eq!(counts[&topics.registering_events], 1);
    assert_eq!(counts[&topics.dlq], 1);

    let message = approve();
    let publisher = Publisher::new(&config).unwrap();
    publisher
        .publish(&topics.commands, &message.record())
        .await
        .unwrap();

    let consumer = config
        .consumer(&format!("{}group", config.topic_prefix))
        .unwrap();
    consumer.subscribe(&[&topics.commands]).unwrap();
    let received = tokio::time::timeout(PATIENCE, consumer.recv())
        .await
        .expect("the message arrives")
        .unwrap();
    assert_eq!(CommandMessage::decode(&received).unwrap(), message);
}

#[tokio::test]
async fn publishing_fails_when_the_broker_cannot_be_reached() {
    let config = KafkaConfig {
        brokers: "127.0.0.1:1".into(),
        delivery_timeout: Duration::from_millis(500),
        ..config()
    };
    let started = Instant::now();
    let result = Publisher::new(&config)
        .unwrap()
        .publish(&config.topics().commands, &approve().record())
        .await;
    assert!(result.is_err(), "no acknowledgement, no success");
    assert!(started.elapsed() < Duration::from_secs(5));
}
