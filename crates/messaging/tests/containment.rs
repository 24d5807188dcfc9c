//! A message that makes the handler panic is set aside with the reason, and the consumer goes on
//! with the next one: one bad message stops neither the consumer nor its process.

use std::convert::Infallible;
use std::sync::Mutex;

use financing_messaging::{HandleMessage, KafkaConfig, Publisher, Record};
use financing_testkit::{own_topics, wait_until};
use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use tokio_util::sync::CancellationToken;

/// Panics on the payload "boom"; records everything else, and what it is told to set aside.
#[derive(Default)]
struct Fragile {
    handled: Mutex<Vec<String>>,
    set_aside: Mutex<Vec<(String, String)>>,
}

fn payload(message: &BorrowedMessage<'_>) -> String {
    String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned()
}

impl HandleMessage for Fragile {
    type Error = Infallible;

    async fn handle(&self, message: &BorrowedMessage<'_>) -> Result<(), Infallible> {
        let payload = payload(message);
        assert_ne!(payload, "boom", "a payload this handler cannot stand");
        self.handled.lock().unwrap().push(payload);
        Ok(())
    }

    async fn set_aside(
        &self,
        message: &BorrowedMessage<'_>,
        reason: &str,
    ) -> Result<(), Infallible> {
        let entry = (payload(message), reason.to_owned());
        self.set_aside.lock().unwrap().push(entry);
        Ok(())
    }
}

#[tokio::test]
async fn a_message_that_makes_the_handler_panic_is_set_aside_and_the_next_is_handled() {
    let kafka = KafkaConfig {
        partitions: 1,
        ..own_topics()
    };
    let topic = kafka.topics().commands;
    let shutdown = CancellationToken::new();
    let group = kafka
        .join(
            &format!("{}group", kafka.topic_prefix),
            &[&topic],
            1,
            &shutdown,
        )
        .await
        .unwrap()
        .unwrap();
    let publisher = Publisher::new(&kafka).unwrap();
    for payload in ["boom", "fine"] {
        let record = Record {
            key: "k".into(),
            payload: payload.into(),
            headers: Vec::new(),
        };
        publisher.publish(&topic, &record).await.unwrap();
    }
    let fragile = Fragile::default();

    let test = async {
        wait_until("the message after the bad one is handled", || async {
            (*fragile.handled.lock().unwrap() == ["fine"]).then_some(())
        })
        .await;
        shutdown.cancel();
    };
    tokio::join!(group.consume(&fragile, &shutdown), test);

    let set_aside = fragile.set_aside.lock().unwrap();
    let [(payload, reason)] = &set_aside[..] else {
        panic!("one message set aside expected: {set_aside:?}");
    };
    assert_eq!(payload, "boom");
    assert!(
        reason.contains("handling it panicked") && reason.contains("cannot stand"),
        "{reason}"
    );
}
