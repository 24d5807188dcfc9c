//! A handler that takes the messages a consumer has ready all at once gets them in order; when
//! it does not take them, each is handled one at a time instead; offsets are stored either way.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use financing_messaging::{HandleMessage, KafkaConfig, Publisher, Record};
use financing_testkit::{own_topics, wait_until};
use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use tokio_util::sync::CancellationToken;

/// The sequence number a batch holding it is refused for, the first time.
const REFUSED: u32 = 20;

/// Records, per key, the sequence numbers handled, and how: in batches (their sizes) or one at
/// a time.
#[derive(Default)]
struct Batcher {
    handled: Mutex<HashMap<String, Vec<u32>>>,
    batches: Mutex<Vec<usize>>,
    one_at_a_time: Mutex<Vec<u32>>,
    refused: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

fn key_and_sequence(message: &BorrowedMessage<'_>) -> (String, u32) {
    let key = String::from_utf8_lossy(message.key().unwrap()).into_owned();
    let payload = String::from_utf8_lossy(message.payload().unwrap()).into_owned();
    (key, payload.parse().unwrap())
}

impl Batcher {
    fn record(&self, message: &BorrowedMessage<'_>) -> u32 {
        let (key, sequence) = key_and_sequence(message);
        let mut handled = self.handled.lock().unwrap();
        handled.entry(key).or_default().push(sequence);
        sequence
    }

    fn count(&self) -> usize {
        self.handled.lock().unwrap().values().map(Vec::len).sum()
    }
}

impl HandleMessage for Batcher {
    type Error = Never;

    async fn handle(&self, message: &BorrowedMessage<'_>) -> Result<(), Never> {
        let sequence = self.record(message);
        self.one_at_a_time.lock().unwrap().push(sequence);
        Ok(())
    }

    async fn handle_all(&self, messages: &[BorrowedMessage<'_>]) -> bool {
        let holds_refused = messages.iter().any(|m| key_and_sequence(m).1 == REFUSED);
        if holds_refused && !self.refused.swap(true, Ordering::SeqCst) {
            return false;
        }
        for message in messages {
            self.record(message);
        }
        self.batches.lock().unwrap().push(messages.len());
        true
    }

    async fn set_aside(&self, _: &BorrowedMessage<'_>, reason: &str) -> Result<(), Never> {
        panic!("nothing is set aside here: {reason}");
    }
}

async fn publish(publisher: &Publisher, topic: &str, key: &str, sequence: u32) {
    let record = Record {
        key: key.into(),
        payload: sequence.to_string().into_bytes(),
        headers: Vec::new(),
    };
    publisher.publish(topic, &record).await.unwrap();
}

#[tokio::test]
async fn messages_taken_all_at_once_or_one_at_a_time_are_each_handled_once_in_order() {
    let kafka = KafkaConfig {
        partitions: 1,
        ..own_topics()
    };
    let topic = kafka.topics().commands;
    let publisher = Publisher::new(&kafka).unwrap();
    kafka.ensure_topics().await.unwrap();
    // Published before the group joins: the consumer finds them ready, many at a time.
    for sequence in 0..40 {
        for key in ["a", "b"] {
            publish(&publisher, &topic, key, sequence).await;
        }
    }
    let group_id = format!("{}group", kafka.topic_prefix);
    let shutdown = CancellationToken::new();
    let group = kafka.join(&group_id, &[&topic], 1, &shutdown).await;
    let group = group.unwrap().unwrap();
    let batcher = Batcher::default();
    let test = async {
        wait_until("every message is handled", || async {
            (batcher.count() == 80).then_some(())
        })
        .await;
        shutdown.cancel();
    };
    tokio::join!(group.consume(&batcher, &shutdown), test);
    drop(group);

    let handled = batcher.handled.lock().unwrap().clone();
    for (key, sequence) in &handled {
        assert_eq!(
            *sequence,
            (0..40).collect::<Vec<_>>(),
            "key {key} in order, once each"
        );
    }
    let batches = batcher.batches.lock().unwrap().clone();
    assert!(
        batches.iter().any(|size| *size > 1),
        "several taken at once: {batches:?}"
    );
    let one_at_a_time = batcher.one_at_a_time.lock().unwrap().clone();
    assert!(
        one_at_a_time.contains(&REFUSED),
        "the refused batch handled one at a time: {one_at_a_time:?}"
    );

    // The offsets of both kinds were stored: the group's next member starts after them.
    publish(&publisher, &topic, "a", 40).await;
    let shutdown = CancellationToken::new();
    let group = kafka.join(&group_id, &[&topic], 1, &shutdown).await;
    let group = group.unwrap().unwrap();
    let next = Batcher::default();
    let test = async {
        wait_until("the new message is handled", || async {
            (next.count() > 0).then_some(())
        })
        .await;
        shutdown.cancel();
    };
    tokio::join!(group.consume(&next, &shutdown), test);
    let handled = next.handled.lock().unwrap().clone();
    assert_eq!(handled, HashMap::from([("a".to_owned(), vec![40])]));
}
