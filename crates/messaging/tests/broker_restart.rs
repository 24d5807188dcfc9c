//! A consumer group and a publisher ride out a broker crash: after a kill -9 and a restart on
//! the same data, what the broker acknowledged before is still there, and the group carries on
//! consuming on its own.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Mutex;

use financing_messaging::{HandleMessage, KafkaConfig, Publisher, Record};
use financing_testkit::{OwnBroker, read_to_end, wait_until};
use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use tokio_util::sync::CancellationToken;

/// Remembers the payload of every message it is given.
#[derive(Default)]
struct Recorder {
    seen: Mutex<BTreeSet<String>>,
}

impl Recorder {
    fn has_all(&self, expected: &[String]) -> bool {
        let seen = self.seen.lock().unwrap();
        expected.iter().all(|payload| seen.contains(payload))
    }
}

impl HandleMessage for Recorder {
    type Error = Infallible;

    async fn handle(&self, message: &BorrowedMessage<'_>) -> Result<(), Infallible> {
        let payload = String::from_utf8_lossy(message.payload().unwrap_or_default());
        self.seen.lock().unwrap().insert(payload.into_owned());
        Ok(())
    }

    async fn set_aside(&self, _: &BorrowedMessage<'_>, reason: &str) -> Result<(), Infallible> {
        panic!("nothing here should be set aside: {reason}")
    }
}

fn payloads(prefix: &str) -> Vec<String> {
    (0..6).map(|n| format!("{prefix}-{n}")).collect()
}

/// Publishes each payload, trying again until the broker acknowledges it.
async fn publish_all(publisher: &Publisher, topic: &str, payloads: &[String]) {
    for payload in payloads {
        let record = Record {
            key: payload.clone(),
            payload: payload.clone().into_bytes(),
            headers: Vec::new(),
        };
        wait_until("the broker acknowledges", || async {
            publisher.publish(topic, &record).await.ok()
        })
        .await;
    }
}

#[tokio::test]
async fn a_group_carries_on_after_the_broker_is_killed_and_restarted() {
    let mut broker = OwnBroker::start().await;
    let kafka = KafkaConfig {
        partitions: 2,
        ..broker.kafka()
    };
    let topic = kafka.topics().commands;
    let shutdown = CancellationToken::new();
    let group_name = format!("{}group", kafka.topic_prefix);
    let group = kafka
        .join(&group_name, &[&topic], 2, &shutdown)
        .await
        .unwrap()
        .unwrap();
    let recorder = Recorder::default();
    let publisher = Publisher::new(&kafka).unwrap();
    let (before, after) = (payloads("before"), payloads("after"));

    let test = async {
        publish_all(&publisher, &topic, &before).await;
        wait_until("the group consumed the first messages", || async {
            recorder.has_all(&before).then_some(())
        })
        .await;

        broker.kill();
        broker.restart().await;

        publish_all(&publisher, &topic, &after).await;
        wait_until(
            "the group consumed the messages sent after the restart",
            || async { recorder.has_all(&after).then_some(()) },
        )
        .await;
        shutdown.cancel();
    };
    tokio::join!(group.consume(&recorder, &shutdown), test);

    let kept: BTreeSet<String> = read_to_end(&kafka, &topic)
        .await
        .iter()
        .map(|message| String::from_utf8_lossy(message.payload().unwrap_or_default()).into())
        .collect();
    let sent: BTreeSet<String> = before.into_iter().chain(after).collect();
    assert_eq!(
        kept, sent,
        "every acknowledged message survived the crash, once"
    );
}
