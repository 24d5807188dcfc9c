//! A consumer handles the messages of different keys at the same time and those of one key in
//! order; an offset is stored only when every message before it in its partition is handled.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use financing_messaging::{HandleMessage, KafkaConfig, Publisher, Record};
use financing_testkit::{own_topics, wait_until};
use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use tokio_util::sync::CancellationToken;

/// Records, per key, the sequence numbers handled, and the most messages in hand at once. A
/// message whose payload is `blocked` is "not now" until the test lets it through.
#[derive(Default)]
struct Recorder {
    handled: Mutex<HashMap<String, Vec<u32>>>,
    in_hand: AtomicUsize,
    most_in_hand: AtomicUsize,
    blocked_tries: AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
#[error("not now")]
struct NotNow;

impl HandleMessage for Recorder {
    type Error = NotNow;

    async fn handle(&self, message: &BorrowedMessage<'_>) -> Result<(), NotNow> {
        let key = String::from_utf8_lossy(message.key().unwrap()).into_owned();
        let payload = String::from_utf8_lossy(message.payload().unwrap()).into_owned();
        if payload == "blocked" {
            self.blocked_tries.fetch_add(1, Ordering::SeqCst);
            return Err(NotNow);
        }
        let now = self.in_hand.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_hand.fetch_max(now, Ordering::SeqCst);
        // Long enough for the other keys' messages to be taken up meanwhile.
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.in_hand.fetch_sub(1, Ordering::SeqCst);
        let sequence = payload.parse().unwrap();
        let mut handled = self.handled.lock().unwrap();
        handled.entry(key).or_default().push(sequence);
        Ok(())
    }

    async fn set_aside(&self, _: &BorrowedMessage<'_>, reason: &str) -> Result<(), NotNow> {
        panic!("nothing is set aside here: {reason}");
    }
}

impl Recorder {
    fn count(&self) -> usize {
        self.handled.lock().unwrap().values().map(Vec::len).sum()
    }
}

fn one_partition() -> KafkaConfig {
    KafkaConfig {
        partitions: 1,
        ..own_topics()
    }
}

async fn publish(publisher: &Publisher, topic: &str, key: &str, payload: &str) {
    let record = Record {
        key: key.into(),
        payload: payload.into(),
        headers: Vec::new(),
    };
    publisher.publish(topic, &record).await.unwrap();
}

#[tokio::test]
async fn keys_are_handled_side_by_side_and_each_key_in_order() {
    let kafka = one_partition();
    let topic = kafka.topics().commands;
    let publisher = Publisher::new(&kafka).unwrap();
    kafka.ensure_topics().await.unwrap();
    // Published before the group joins: the consumer finds them all ready.
    for sequence in 0..40 {
        for key in ["a", "b", "c", "d"] {
            publish(&publisher, &topic, key, &sequence.to_string()).await;
        }
    }
    let shutdown = CancellationToken::new();
    let group_id = format!("{}group", kafka.topic_prefix);
    let group = kafka.join(&group_id, &[&topic], 1, &shutdown).await;
    let group = group.unwrap().unwrap();
    let recorder = Recorder::default();

    let test = async {
        wait_until("every message is handled", || async {
            (recorder.count() == 160).then_some(())
        })
        .await;
        shutdown.cancel();
    };
    tokio::join!(group.consume(&recorder, &shutdown), test);

    let handled = recorder.handled.lock().unwrap();
    for (key, sequence) in handled.iter() {
        assert_eq!(
            *sequence,
            (0..40).collect::<Vec<_>>(),
            "key {key} in order, once each"
        );
    }
    let most = recorder.most_in_hand.load(Ordering::SeqCst);
    assert!(
        most > 1,
        "messages of different keys handled at the same time: {most}"
    );
}

#[tokio::test]
async fn an_offset_waits_for_every_message_before_it_in_its_partition() {
    let kafka = one_partition();
    let topic = kafka.topics().commands;
    let publisher = Publisher::new(&kafka).unwrap();
    kafka.ensure_topics().await.unwrap();
    publish(&publisher, &topic, "a", "blocked").await;
    publish(&publisher, &topic, "b", "1").await;
    let group_id = format!("{}group", kafka.topic_prefix);

    // The first consumer handles "b" but never "a", and is stopped.
    let shutdown = CancellationToken::new();
    let group = kafka.join(&group_id, &[&topic], 1, &shutdown).await;
    let group = group.unwrap().unwrap();
    let first = Recorder::default();
    let test = async {
        wait_until("b is handled while a waits", || async {
            (first.count() == 1 && first.blocked_tries.load(Ordering::SeqCst) > 0).then_some(())
        })
        .await;
        shutdown.cancel();
    };
    tokio::join!(group.consume(&first, &shutdown), test);
    drop(group);

    // The next one is given "a" again: b's offset, past a's, was not committed.
    let shutdown = CancellationToken::new();
    let group = kafka.join(&group_id, &[&topic], 1, &shutdown).await;
    let group = group.unwrap().unwrap();
    let second = Recorder::default();
    let test = async {
        wait_until("a is delivered again", || async {
            (second.blocked_tries.load(Ordering::SeqCst) > 0).then_some(())
        })
        .await;
        shutdown.cancel();
    };
    tokio::join!(group.consume(&second, &shutdown), test);
}
