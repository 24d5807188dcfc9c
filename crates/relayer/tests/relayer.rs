//! The relayer against real Postgres (a database of its own) and the real broker (topics of its
//! own). Events are written with plain SQL so that tests control when transactions commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use financing_messaging::{
    CommandOutcome, EventEnvelope, GroupConsumer, KafkaConfig, Publish, PublishError, Publisher,
    Record, WireForm, partition_for,
};
use financing_relayer::{RelayError, Relayer, RelayerConfig};
use financing_testkit::{
    PATIENCE, create_topic, own_database_url, own_topics, read_to_end, wait_until,
};
use rdkafka::consumer::Consumer;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Small batches: a burst of events takes several claims.
fn config() -> RelayerConfig {
    RelayerConfig {
        database_url: own_database_url(),
        kafka: own_topics(),
        interval: Duration::from_millis(100),
        batch_size: 5,
    }
}

async fn start(config: &RelayerConfig, shutdown: &CancellationToken) -> PgPool {
    // The relayer creates topics in the background; the test's consumer needs them now.
    config.kafka.ensure_topics().await.unwrap();
    let relayer = Relayer::build(config.clone(), shutdown.clone())
        .await
        .unwrap()
        .unwrap();
    tokio::spawn(relayer.run_until_stopped());
    PgPool::connect(&config.database_url).await.unwrap()
}

/// Inserts version `version` of an investor's stream on `connection`, in whatever transaction
/// it is in.
async fn insert(connection: &mut PgConnection, aggregate_id: Uuid, version: i64) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, version, event_type, schema_version, \
             payload, event_id, command_id, correlation_id, causation_id) \
         VALUES ('Investor', $1, $2, 'InvestorFundsAdded', 1, $3, gen_random_uuid(), \
             gen_random_uuid(), gen_random_uuid(), gen_random_uuid())",
    )
    .bind(aggregate_id)
    .bind(version)
    .bind(serde_json::json!({ "investor_id": aggregate_id, "amount": "1.00" }))
    .execute(connection)
    .await
    .unwrap();
}

fn consumer(config: &RelayerConfig) -> GroupConsumer {
    let consumer = config
        .kafka
        .consumer(&format!("{}test", config.kafka.topic_prefix))
        .unwrap();
    consumer
        .subscribe(&[&config.kafka.topics().events])
        .unwrap();
    consumer
}

async fn unpublished(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM unpublished_events")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Which transaction wrote each version of the aggregate's events as they stand: an update
/// would show a new one.
async fn row_writers(pool: &PgPool, aggregate_id: Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT xmin::text FROM events WHERE aggregate_id = $1 ORDER BY version")
        .bind(aggregate_id)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Reads events until `done` says so; returns each aggregate's versions in arrival order.
async fn receive_until(
    consumer: &GroupConsumer,
    received: &mut HashMap<Uuid, Vec<u64>>,
    done: impl Fn(&HashMap<Uuid, Vec<u64>>) -> bool,
) {
    while !done(received) {
        let message = tokio::time::timeout(PATIENCE, consumer.recv())
            .await
            .expect("the relayer keeps publishing")
            .unwrap();
        let event = EventEnvelope::decode(&message).unwrap();
        received
            .entry(event.meta.aggregate_id)
            .or_default()
            .push(event.meta.version);
    }
}

#[tokio::test]
async fn an_event_whose_transaction_commits_late_is_still_published() {
    let config = config();
    let shutdown = CancellationToken::new();
    let pool = start(&config, &shutdown).await;
    let consumer = consumer(&config);
    let (early, late) = (Uuid::new_v4(), Uuid::new_v4());

    // `late` takes the lower position but commits after `early` is already published.
    let mut slow = pool.begin().await.unwrap();
    insert(&mut slow, late, 1).await;
    insert(&mut pool.acquire().await.unwrap(), early, 1).await;
    let mut received = HashMap::new();
    receive_until(&consumer, &mut received, |r| r.contains_key(&early)).await;
    assert!(!received.contains_key(&late));

    slow.commit().await.unwrap();
    receive_until(&consumer, &mut received, |r| r.contains_key(&late)).await;
    assert_eq!(received[&late], [1]);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_committing_out_of_order_lose_nothing_and_keep_each_aggregate_in_order()
 {
    const AGGREGATES: usize = 12;
    const VERSIONS: i64 = 8;
    let config = config();
    let shutdown = CancellationToken::new();
    let pool = start(&config, &shutdown).await;
    start(&config, &shutdown).await; // a second relayer on the same store

    let aggregates: Vec<Uuid> = (0..AGGREGATES).map(|_| Uuid::new_v4()).collect();
    // One commit of many events wakes both relayers at once.
    let mut bulk = pool.begin().await.unwrap();
    for aggregate_id in &aggregates {
        insert(&mut bulk, *aggregate_id, 1).await;
    }
    bulk.commit().await.unwrap();
    let appenders = aggregates.iter().map(|&aggregate_id| {
        let pool = pool.clone();
        tokio::spawn(async move {
            for version in 2..=VERSIONS {
                let mut tx = pool.begin().await.unwrap();
                insert(&mut tx, aggregate_id, version).await;
                // Hold the transaction a random while: commits land out of position order.
                sqlx::query("SELECT pg_sleep(random() * 0.03)")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        })
    });
    futures::future::join_all(appenders).await;

    // Once nothing is left unpublished, the topic is final: read all of it.
    wait_until("every event is marked published", || async {
        (unpublished(&pool).await == 0).then_some(())
    })
    .await;
    let mut received: HashMap<Uuid, Vec<u64>> = HashMap::new();
    for message in read_to_end(&config.kafka, &config.kafka.topics().events).await {
        let meta = EventEnvelope::decode(&message).unwrap().meta;
        received
            .entry(meta.aggregate_id)
            .or_default()
            .push(meta.version);
    }
    for aggregate_id in &aggregates {
        assert_eq!(
            received[aggregate_id],
            (1..=VERSIONS as u64).collect::<Vec<_>>(),
            "{aggregate_id}: every version once, in order"
        );
    }
    shutdown.cancel();
}

#[tokio::test]
async fn events_the_broker_did_not_acknowledge_stay_unpublished_until_it_does() {
    let healthy = config();
    let unreachable = RelayerConfig {
        kafka: KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            delivery_timeout: Duration::from_millis(300),
            ..healthy.kafka.clone()
        },
        ..healthy.clone()
    };
    let shutdown = CancellationToken::new();
    let failing = Relayer::build(unreachable, shutdown.clone())
        .await
        .unwrap()
        .unwrap();
    let pool = PgPool::connect(&healthy.database_url).await.unwrap();
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    for version in 1..=5 {
        insert(&mut pool.acquire().await.unwrap(), first, version).await;
    }
    insert(&mut pool.acquire().await.unwrap(), second, 1).await;
    let written = row_writers(&pool, first).await;

    let result = failing.relay_pending().await;
    assert!(matches!(result, Err(RelayError::Broker(_))), "{result:?}");
    assert_eq!(unpublished(&pool).await, 6);

    healthy.kafka.ensure_topics().await.unwrap();
    let relayer = Relayer::build(healthy, shutdown).await.unwrap().unwrap();
    assert_eq!(relayer.relay_pending().await.unwrap(), 6);
    assert_eq!(unpublished(&pool).await, 0);
    assert_eq!(
        row_writers(&pool, first).await,
        written,
        "publishing leaves the event rows as they were written"
    );
}

/// Records a command's outcome with plain SQL: a rejection, or a failure.
async fn record_outcome(pool: &PgPool, command_id: Uuid, aggregate_id: Uuid, failed: bool) {
    let statement = if failed {
        "INSERT INTO failed_commands (command_id, aggregate_id, reason) \
         VALUES ($1, $2, 'cannot decode SellInvoice')"
    } else {
        "INSERT INTO processed_commands (command_id, aggregate_type, aggregate_id, outcome, reason) \
         VALUES ($1, 'Invoice', $2, 'rejected', 'invoice is AVAILABLE, not FINANCED')"
    };
    sqlx::query(statement)
        .bind(command_id)
        .bind(aggregate_id)
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn rejected_and_failed_commands_are_published_to_the_outcomes_topic() {
    let config = config();
    config.kafka.ensure_topics().await.unwrap();
    let shutdown = CancellationToken::new();
    let relayer = Relayer::build(config.clone(), shutdown)
        .await
        .unwrap()
        .unwrap();
    let pool = PgPool::connect(&config.database_url).await.unwrap();
    let (rejected, failed, aggregate_id) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    record_outcome(&pool, rejected, aggregate_id, false).await;
    record_outcome(&pool, failed, aggregate_id, true).await;

    assert_eq!(relayer.relay_pending().await.unwrap(), 2);
    let published: HashMap<Uuid, CommandOutcome> =
        read_to_end(&config.kafka, &config.kafka.topics().outcomes)
            .await
            .iter()
            .map(|message| CommandOutcome::decode(message).unwrap())
            .map(|outcome| (outcome.command_id.as_uuid(), outcome))
            .collect();
    assert_eq!(published.len(), 2);
    let rejection = &published[&rejected];
    assert!(!rejection.failed);
    assert_eq!(
        (rejection.aggregate_type.as_deref(), rejection.aggregate_id),
        (Some("Invoice"), Some(aggregate_id))
    );
    assert_eq!(rejection.reason, "invoice is AVAILABLE, not FINANCED");
    let failure = &published[&failed];
    assert!(failure.failed);
    assert_eq!(failure.reason, "cannot decode SellInvoice");
    assert_eq!(
        relayer.relay_pending().await.unwrap(),
        0,
        "marked as published"
    );
}

#[tokio::test]
async fn a_rejection_wakes_the_relayer_without_waiting_for_its_next_poll() {
    let config = RelayerConfig {
        interval: Duration::from_secs(3600),
        ..config()
    };
    let shutdown = CancellationToken::new();
    let pool = start(&config, &shutdown).await;
    // The relayer is idle once the first event is through: only a wake-up makes it look again.
    let consumer = consumer(&config);
    let first = Uuid::new_v4();
    insert(&mut pool.acquire().await.unwrap(), first, 1).await;
    receive_until(&consumer, &mut HashMap::new(), |r| r.contains_key(&first)).await;

    let (command_id, aggregate_id) = (Uuid::new_v4(), Uuid::new_v4());
    record_outcome(&pool, command_id, aggregate_id, false).await;
    wait_until("the rejection is published", || async {
        let published: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM processed_commands \
             WHERE command_id = $1 AND published_at IS NOT NULL",
        )
        .bind(command_id)
        .fetch_one(&pool)
        .await
        .ok()?;
        (published == 1).then_some(())
    })
    .await;
    shutdown.cancel();
}

/// The broker, but for one partition of `topic`, which refuses everything while it is made to
/// fail; it counts what each aggregate tried to send there.
struct PartlyFailing {
    broker: Publisher,
    topic: String,
    failing: Mutex<Option<i32>>,
    attempts: Mutex<HashMap<String, usize>>,
}

impl Publish for PartlyFailing {
    async fn publish_to(
        &self,
        topic: &str,
        partition: Option<i32>,
        record: &Record,
    ) -> Result<(), PublishError> {
        let failing = *self.failing.lock().unwrap();
        if topic == self.topic && partition.is_some() && partition == failing {
            *self
                .attempts
                .lock()
                .unwrap()
                .entry(record.key.clone())
                .or_default() += 1;
            let refused = rdkafka::types::RDKafkaErrorCode::NotLeaderForPartition;
            return Err(PublishError(rdkafka::error::KafkaError::MessageProduction(
                refused,
            )));
        }
        self.broker.publish_to(topic, partition, record).await
    }
}

/// A relayer publishing through [`PartlyFailing`] (`partition` of `topic` failing), the stand-in
/// itself, and the event store.
async fn through_failing(
    config: &RelayerConfig,
    topic: &str,
    partition: i32,
    shutdown: CancellationToken,
) -> (Relayer<Arc<PartlyFailing>>, Arc<PartlyFailing>, PgPool) {
    let publisher = Arc::new(PartlyFailing {
        broker: Publisher::new(&config.kafka).unwrap(),
        topic: topic.to_owned(),
        failing: Mutex::new(Some(partition)),
        attempts: Mutex::default(),
    });
    let relayer = Relayer::build(config.clone(), shutdown)
        .await
        .unwrap()
        .unwrap()
        .publishing_through(Arc::clone(&publisher));
    let pool = PgPool::connect(&config.database_url).await.unwrap();
    (relayer, publisher, pool)
}

/// An aggregate whose messages go to `partition` of a topic of `partitions` (or, with
/// `other_than`, to any other).
fn aggregate_on(partition: i32, partitions: i32, other_than: bool) -> Uuid {
    loop {
        let id = Uuid::new_v4();
        if (partition_for(id, partitions) == partition) != other_than {
            return id;
        }
    }
}

#[tokio::test]
async fn a_partition_that_refuses_messages_holds_back_only_its_aggregates() {
    let config = config();
    config.kafka.ensure_topics().await.unwrap();
    let partitions = config.kafka.partitions;
    let shutdown = CancellationToken::new();
    let stuck = Uuid::new_v4();
    let failing = partition_for(stuck, partitions);
    let (relayer, publisher, pool) = through_failing(
        &config,
        &config.kafka.topics().events,
        failing,
        shutdown.clone(),
    )
    .await;
    // More of the stuck aggregate's events than a batch holds, ahead of the healthy one's.
    let healthy = aggregate_on(failing, partitions, true);
    for version in 1..=12 {
        insert(&mut pool.acquire().await.unwrap(), stuck, version).await;
    }
    for version in 1..=3 {
        insert(&mut pool.acquire().await.unwrap(), healthy, version).await;
    }
    let consumer = consumer(&config);
    tokio::spawn(relayer.run_until_stopped());

    let mut received = HashMap::new();
    receive_until(&consumer, &mut received, |r| {
        r.get(&healthy).is_some_and(|versions| versions.len() == 3)
    })
    .await;
    assert_eq!(received[&healthy], [1, 2, 3]);
    // A newcomer on the held partition is not even tried (at most once, as a probe), while
    // another healthy aggregate goes through.
    let (newcomer, later) = (
        aggregate_on(failing, partitions, false),
        aggregate_on(failing, partitions, true),
    );
    for version in 1..=4 {
        insert(&mut pool.acquire().await.unwrap(), newcomer, version).await;
        insert(&mut pool.acquire().await.unwrap(), later, version).await;
    }
    receive_until(&consumer, &mut received, |r| {
        r.get(&later).is_some_and(|versions| versions.len() == 4)
    })
    .await;
    let tried = publisher
        .attempts
        .lock()
        .unwrap()
        .get(&newcomer.to_string())
        .copied();
    assert!(
        tried.unwrap_or(0) <= 1,
        "the newcomer was tried {tried:?} times"
    );
    assert!(!received.contains_key(&stuck));

    *publisher.failing.lock().unwrap() = None;
    receive_until(&consumer, &mut received, |r| {
        [(stuck, 12), (newcomer, 4)]
            .iter()
            .all(|(id, n)| r.get(id).is_some_and(|versions| versions.len() == *n))
    })
    .await;
    assert_eq!(
        received[&stuck],
        (1..=12).collect::<Vec<_>>(),
        "in order, once"
    );
    assert_eq!(received[&newcomer], [1, 2, 3, 4], "in order, once");
    shutdown.cancel();
}

#[tokio::test]
async fn outcomes_for_a_refusing_partition_hold_back_only_their_own() {
    let config = config();
    // Outcomes on several partitions, as a topic created before one was the default keeps.
    let (outcomes_topic, partitions, failing) = (config.kafka.topics().outcomes, 3, 0);
    create_topic(&config.kafka, &outcomes_topic, partitions).await;
    config.kafka.ensure_topics().await.unwrap();
    let (relayer, publisher, pool) =
        through_failing(&config, &outcomes_topic, failing, CancellationToken::new()).await;
    // More failures for the refusing partition than two claims hold, older than the others:
    // the first claim's are refused, the second's not even tried.
    let stuck: Vec<Uuid> = (0..config.batch_size * 2 + 2)
        .map(|_| aggregate_on(failing, partitions, false))
        .collect();
    for aggregate in &stuck {
        record_outcome(&pool, Uuid::new_v4(), *aggregate, true).await;
    }
    let mut healthy = [
        aggregate_on(failing, partitions, true),
        aggregate_on(failing, partitions, true),
    ];
    for aggregate in healthy {
        record_outcome(&pool, Uuid::new_v4(), aggregate, true).await;
    }

    let published = tokio::time::timeout(PATIENCE, relayer.relay_pending())
        .await
        .expect("the pass ends though its oldest failures cannot be sent")
        .unwrap();
    assert_eq!(published, healthy.len(), "the other partitions' failures");
    let mut on_topic: Vec<Uuid> = read_to_end(&config.kafka, &outcomes_topic)
        .await
        .iter()
        .filter_map(|message| CommandOutcome::decode(message).unwrap().aggregate_id)
        .collect();
    on_topic.sort();
    healthy.sort();
    assert_eq!(on_topic, healthy);
    let tried: usize = publisher.attempts.lock().unwrap().values().sum();
    assert_eq!(
        tried, config.batch_size as usize,
        "the first claim's failures were tried once each, the rest not at all"
    );

    // An event of an aggregate whose failure is held back goes to its own topic all the same.
    insert(&mut pool.acquire().await.unwrap(), stuck[0], 1).await;
    assert_eq!(relayer.relay_pending().await.unwrap(), 1);
    let events = read_to_end(&config.kafka, &config.kafka.topics().events).await;
    let published: Vec<Uuid> = events
        .iter()
        .map(|message| EventEnvelope::decode(message).unwrap().meta.aggregate_id)
        .collect();
    assert_eq!(published, [stuck[0]]);
}

#[tokio::test]
async fn a_refusing_partition_with_more_waiting_aggregates_than_a_claim_holds_stops_no_other() {
    let config = RelayerConfig {
        batch_size: 100,
        ..config()
    };
    config.kafka.ensure_topics().await.unwrap();
    let partitions = config.kafka.partitions;
    let failing = 0;
    let (relayer, publisher, pool) = through_failing(
        &config,
        &config.kafka.topics().events,
        failing,
        CancellationToken::new(),
    )
    .await;
    // Far more aggregates waiting for the refusing partition than a relayer could list, each
    // with one event, all older than the healthy one's.
    let waiting = 10_600;
    let inserted = sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, version, event_type, schema_version, \
             payload, event_id, command_id, correlation_id, causation_id) \
         SELECT 'Investor', id, 1, 'InvestorFundsAdded', 1, \
             jsonb_build_object('investor_id', id, 'amount', '1.00'), gen_random_uuid(), \
             gen_random_uuid(), gen_random_uuid(), gen_random_uuid() \
         FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, $3 * 8)) AS ids \
         WHERE partition_for(id, $1) = $2 LIMIT $3",
    )
    .bind(partitions)
    .bind(failing)
    .bind(waiting)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(inserted.rows_affected(), waiting as u64);
    let healthy = aggregate_on(failing, partitions, true);
    insert(&mut pool.acquire().await.unwrap(), healthy, 1).await;

    let published = tokio::time::timeout(PATIENCE, relayer.relay_pending())
        .await
        .expect("the pass ends")
        .unwrap();
    assert_eq!(
        published, 1,
        "the healthy aggregate's event, in the first pass"
    );
    let events = read_to_end(&config.kafka, &config.kafka.topics().events).await;
    let on_topic: Vec<Uuid> = events
        .iter()
        .map(|message| EventEnvelope::decode(message).unwrap().meta.aggregate_id)
        .collect();
    assert_eq!(on_topic, [healthy]);
    let tried: usize = publisher.attempts.lock().unwrap().values().sum();
    assert_eq!(
        tried, config.batch_size as usize,
        "the first claim's were tried once each, the others not at all"
    );
}
