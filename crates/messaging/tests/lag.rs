//! A group's lag as the broker reports it: messages waiting on a partition nobody consumes are
//! counted, and the progress watch reports the partition as stalled once it has waited long
//! enough; consuming and committing clears it.

use std::time::{Duration, Instant};

use financing_messaging::{KafkaConfig, LagReader, ProgressWatch, Publisher, Record};
use financing_testkit::{own_topics, wait_until};
use rdkafka::consumer::{CommitMode, Consumer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_nobody_consumes_are_counted_and_reported_stalled() {
    let kafka = KafkaConfig {
        partitions: 1,
        ..own_topics()
    };
    kafka.ensure_topics().await.unwrap();
    let topic = kafka.topics().commands;
    let group = format!("{}group", kafka.topic_prefix);
    let publisher = Publisher::new(&kafka).unwrap();
    for n in 0..3 {
        let record = Record {
            key: n.to_string(),
            payload: b"waiting".to_vec(),
            headers: Vec::new(),
        };
        publisher.publish(&topic, &record).await.unwrap();
    }
    let reader = LagReader::new(&kafka, &group, std::slice::from_ref(&topic)).unwrap();
    let read = || async { tokio::task::block_in_place(|| reader.read()).unwrap() };

    let reading = read().await;
    assert_eq!(reading.len(), 1);
    assert_eq!((reading[0].committed, reading[0].waiting()), (None, 3));
    let mut watch = ProgressWatch::default();
    let patience = Duration::from_secs(30);
    let start = Instant::now();
    assert!(watch.stalled(&reading, start, patience).is_empty());
    let stalls = watch.stalled(&read().await, start + patience, patience);
    assert_eq!(stalls.len(), 1, "nobody consumes it: stalled");
    assert_eq!(stalls[0].waiting, 3);

    // A member of the group consumes everything and commits: nothing waits any more.
    let consumer = kafka.consumer(&group).unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    for _ in 0..3 {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .unwrap()
            .unwrap();
        consumer.store_offset_from_message(&message).unwrap();
    }
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();
    let reading = wait_until("the commit shows", || async {
        let reading = read().await;
        (reading[0].waiting() == 0).then_some(reading)
    })
    .await;
    assert_eq!(reading[0].committed, Some(3));
    assert!(
        watch
            .stalled(&reading, start + patience * 2, patience)
            .is_empty()
    );
}
