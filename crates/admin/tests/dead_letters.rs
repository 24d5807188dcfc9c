//! `financing dead-letters` against the real broker: a dead letter is listed with where it came
//! from and why, shown whole, and sent back to its topic as it was.

use std::process::Command;

use financing_messaging::{CONTENT_TYPE, DeadLetters, KafkaConfig, Publisher};
use financing_testkit::{PATIENCE, own_topics, poison_command, read_to_end};
use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

fn financing(kafka: &KafkaConfig, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_financing"))
        .args(args)
        .env("KAFKA_BROKERS", &kafka.brokers)
        .env("KAFKA_TOPIC_PREFIX", &kafka.topic_prefix)
        .output()
        .expect("the command runs");
    assert!(output.status.success(), "financing {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn a_dead_letter_is_listed_shown_and_sent_back_to_its_topic() {
    let kafka = own_topics();
    kafka.ensure_topics().await.unwrap();
    let topic = kafka.topics().commands;
    let (command_id, original) = poison_command();
    let command_id = command_id.to_string();
    Publisher::new(&kafka)
        .unwrap()
        .publish(&topic, &original)
        .await
        .unwrap();
    let received = read_to_end(&kafka, &topic).await;
    let reason = "cannot decode SellInvoice: amount \"ten\" is not a decimal number";
    DeadLetters::new(&kafka)
        .unwrap()
        .send(&received[0], reason)
        .await
        .unwrap();

    let listed = financing(&kafka, &["dead-letters", "list"]);
    let line = listed
        .lines()
        .find(|line| line.contains(reason))
        .unwrap_or_else(|| panic!("the dead letter is listed with its reason: {listed}"));
    let origin = format!(
        "{topic}/{}/{}",
        received[0].partition(),
        received[0].offset()
    );
    assert!(line.contains(&origin), "{line}");
    assert!(line.contains("financing.command.SellInvoice"), "{line}");
    let position = line.split_whitespace().next().unwrap();

    let shown = financing(&kafka, &["dead-letters", "show", position]);
    assert!(
        shown.contains(r#""data":{"asking_price":"ten"}"#),
        "{shown}"
    );
    assert!(shown.contains(&original.key), "{shown}");
    assert!(shown.contains(&command_id), "{shown}");

    let sent = financing(&kafka, &["dead-letters", "redrive", position]);
    assert!(
        sent.contains(&format!("{position} sent back to {topic}")),
        "{sent}"
    );
    let again = read_to_end(&kafka, &topic).await;
    assert_eq!(again.len(), 2, "the original and the one sent back");
    let redriven = &again[1];
    assert_eq!(redriven.payload(), Some(&original.payload[..]));
    assert_eq!(redriven.key(), Some(original.key.as_bytes()));
    let names: Vec<&str> = redriven
        .headers()
        .map(|all| all.iter().map(|h| h.key).collect())
        .unwrap_or_default();
    assert_eq!(names, [CONTENT_TYPE], "without dlq-* headers");
}

#[tokio::test]
async fn a_redriven_message_keeps_no_key_and_null_headers_as_they_were() {
    let kafka = own_topics();
    kafka.ensure_topics().await.unwrap();
    let topic = kafka.topics().registering_events;
    let producer: FutureProducer = kafka.client_config().create().unwrap();
    let headers = OwnedHeaders::new().insert(Header::<&str> {
        key: "type",
        value: None,
    });
    let keyless = FutureRecord::<(), _>::to(&topic)
        .payload("no key, a null type")
        .headers(headers);
    producer.send(keyless, PATIENCE).await.unwrap();
    let received = read_to_end(&kafka, &topic).await;
    DeadLetters::new(&kafka)
        .unwrap()
        .send(&received[0], "missing header \"type\"")
        .await
        .unwrap();
    let listed = financing(&kafka, &["dead-letters", "list"]);
    let line = listed
        .lines()
        .find(|l| l.contains("missing header"))
        .unwrap();
    let position = line.split_whitespace().next().unwrap();

    financing(&kafka, &["dead-letters", "redrive", position]);
    let again = read_to_end(&kafka, &topic).await;
    let redriven = again.last().unwrap();
    assert_eq!(redriven.key(), None, "still without a key");
    let header = redriven.headers().unwrap().iter().next().unwrap();
    assert_eq!(
        (header.key, header.value),
        ("type", None),
        "a null value stays null"
    );
}

#[tokio::test]
async fn an_unknown_position_is_a_clear_error() {
    let kafka = own_topics();
    kafka.ensure_topics().await.unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_financing"))
        .args(["dead-letters", "show", "0:999"])
        .env("KAFKA_BROKERS", &kafka.brokers)
        .env("KAFKA_TOPIC_PREFIX", &kafka.topic_prefix)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("no dead letter at 0:999"), "{error}");
}
