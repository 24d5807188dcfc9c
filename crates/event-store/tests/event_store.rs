//! The event store contract, run against Postgres (a fresh database per test, from
//! `DATABASE_URL`) and against the in-memory twin, plus what only Postgres does (wake-ups, the
//! relayer's outbox).

use std::collections::HashMap;
use std::time::Duration;

use financing_domain::{
    Aggregate, CommandId, Event, Investor, InvestorCommand, InvestorEvent, InvestorId, Invoice,
    InvoiceId, Issuer, IssuerCommand, IssuerId, Message, Money,
};
use financing_event_store::{
    Append, CommandMeta, Decided, EVENTS_APPENDED_CHANNEL, EventMetadata, EventStore,
    HeldPartitions, InMemoryEventStore, LeftOut, Loaded, MIGRATOR, NewEvent, Outbox, Outcome,
    Parking, PgEventStore, Received, Rejected, Repository, StoreError, UPDATED_TABLES,
};
use financing_messaging::partition_for;
use financing_runtime::postgres::vacuum_if_autovacuum_off;
use financing_testkit::{as_written_at_schema_version_1, wait_until};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use uuid::Uuid;

/// The rejection of `command_id` on investor `aggregate_id`.
fn investor_rejection(command_id: CommandId, aggregate_id: Uuid, reason: &str) -> Rejected {
    Rejected {
        command_id,
        aggregate_type: Investor::TYPE,
        aggregate_id,
        reason: reason.into(),
        actor: None,
    }
}

/// Decides `command` on the investor's latest state and saves the result under `meta`.
async fn execute<S: EventStore>(
    repo: &Repository<S>,
    id: InvestorId,
    command: InvestorCommand,
    meta: CommandMeta,
) -> Result<(), StoreError> {
    let loaded = repo.load::<Investor>(id).await?;
    let events = loaded
        .state
        .decide(id, &command)
        .expect("the command is valid");
    repo.save(&loaded, &events, meta).await
}

async fn register<S: EventStore>(repo: &Repository<S>, funds: u64) -> InvestorId {
    let id = InvestorId::new_random();
    let create = InvestorCommand::Create {
        name: "Ada".into(),
        funds: Money::units(funds),
    };
    execute(repo, id, create, CommandMeta::new_chain())
        .await
        .unwrap();
    id
}

fn bid(units: u64) -> InvestorCommand {
    InvestorCommand::PlaceBid {
        invoice_id: InvoiceId::new_random(),
        amount: Money::units(units),
    }
}

async fn appended_events_load_back_in_order_with_their_metadata<S: EventStore>(store: S) {
    let repo = Repository::new(store, 100);
    let id = InvestorId::new_random();
    let fresh = repo.load::<Investor>(id).await.unwrap();
    assert_eq!((fresh.version, fresh.state.is_registered()), (0, false));

    let meta = CommandMeta::new_chain();
    let create = InvestorCommand::Create {
        name: "Ada".into(),
        funds: Money::units(100),
    };
    execute(&repo, id, create, meta).await.unwrap();

    let loaded = repo.load::<Investor>(id).await.unwrap();
    assert_eq!(loaded.version, 2);
    assert_eq!(loaded.state.balance(), Money::units(100));
    let recorded = repo
        .store()
        .load_events(Investor::TYPE, id.into(), 0)
        .await
        .unwrap();
    let shape: Vec<_> = recorded
        .iter()
        .map(|e| (e.aggregate_type.as_str(), e.version, e.event_type.as_str()))
        .collect();
    assert_eq!(
        shape,
        [
            ("Investor", 1, "InvestorCreated"),
            ("Investor", 2, "InvestorFundsAdded")
        ]
    );
    assert!(recorded[0].global_position < recorded[1].global_position);
    for event in &recorded {
        assert_eq!(event.metadata.command_id, meta.command_id);
        assert_eq!(event.metadata.correlation_id, meta.correlation_id);
        assert_eq!(event.metadata.causation_id, meta.causation_id);
        assert_eq!(event.schema_version, 1);
    }
    assert_eq!(
        InvestorEvent::from_payload(&recorded[1].event_type, recorded[1].payload.clone()),
        Ok(InvestorEvent::InvestorFundsAdded {
            investor_id: id,
            amount: Money::units(100)
        })
    );
    assert_eq!(
        repo.store().outcome(meta.command_id).await.unwrap(),
        Some(Outcome::Applied)
    );
}

async fn two_writers_at_the_same_version_conflict_and_the_loser_retries<S: EventStore>(store: S) {
    let repo = Repository::new(store, 100);
    let id = register(&repo, 100).await;
    let first = repo.load::<Investor>(id).await.unwrap();
    let second = first.clone();
    let (meta_a, meta_b) = (CommandMeta::new_chain(), CommandMeta::new_chain());
    let events_a = first.state.decide(id, &bid(10)).unwrap();
    let events_b = second.state.decide(id, &bid(20)).unwrap();

    let (a, b) = tokio::join!(
        repo.save(&first, &events_a, meta_a),
        repo.save(&second, &events_b, meta_b)
    );
    let (winner, loser, loser_meta) = match (a, b) {
        (Ok(()), Err(error)) => (meta_a, error, meta_b),
        (Err(error), Ok(())) => (meta_b, error, meta_a),
        other => panic!("exactly one writer must win, got {other:?}"),
    };
    assert!(
        matches!(loser, StoreError::Conflict { aggregate_id, expected_version: 2 } if aggregate_id == id.as_uuid()),
        "{loser:?}"
    );
    assert_eq!(
        repo.store().outcome(winner.command_id).await.unwrap(),
        Some(Outcome::Applied)
    );
    // The clash rolled the loser back entirely, its command id included: it can retry.
    assert_eq!(
        repo.store().outcome(loser_meta.command_id).await.unwrap(),
        None
    );
    execute(&repo, id, bid(1), loser_meta).await.unwrap();
    assert_eq!(repo.load::<Investor>(id).await.unwrap().version, 4);
}

async fn concurrent_writers_that_retry_on_conflict_lose_no_update<S: EventStore>(store: S) {
    let repo = Repository::new(store, 4);
    let id = register(&repo, 1000).await;
    let writer = |_| async {
        for _ in 0..5 {
            let meta = CommandMeta::new_chain();
            loop {
                match execute(&repo, id, bid(1), meta).await {
                    Ok(()) => break,
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(other) => panic!("{other}"),
                }
            }
        }
    };
    futures::future::join_all((0..8).map(writer)).await;

    let loaded = repo.load::<Investor>(id).await.unwrap();
    assert_eq!(loaded.version, 42);
    assert_eq!(loaded.state.reserved(), Money::units(40));
    assert_eq!(loaded.state.balance(), Money::units(960));
    let versions: Vec<u64> = repo
        .store()
        .load_events(Investor::TYPE, id.into(), 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, (1..=42).collect::<Vec<_>>());
}

async fn a_snapshot_plus_the_later_events_equals_a_full_replay<S: EventStore>(store: S) {
    let repo = Repository::new(store, 3);
    let id = register(&repo, 100).await;
    for units in 1..=5 {
        execute(&repo, id, bid(units), CommandMeta::new_chain())
            .await
            .unwrap();
    }

    let stream = repo
        .store()
        .load_stream(Investor::TYPE, id.into())
        .await
        .unwrap();
    assert_eq!(stream.snapshot.map(|s| s.version), Some(6));
    let tail: Vec<u64> = stream.events.iter().map(|e| e.version).collect();
    assert_eq!(tail, [7], "the events after the snapshot");
    let loaded = repo.load::<Investor>(id).await.unwrap();
    let history: Vec<InvestorEvent> = repo
        .store()
        .load_events(Investor::TYPE, id.into(), 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| InvestorEvent::from_payload(&e.event_type, e.payload).unwrap())
        .collect();
    assert_eq!(loaded.version, 7);
    assert_eq!(loaded.state, Investor::replay(&history).unwrap());
    assert_eq!(loaded.state.reserved(), Money::units(15));
}

async fn a_stream_holding_an_impossible_event_does_not_load<S: EventStore>(store: S) {
    let repo = Repository::new(store, 100);
    let id = register(&repo, 100).await;
    // Released funds that were never reserved: no decision of this domain writes that.
    let forged = InvestorEvent::InvestorFundsReleased {
        investor_id: id,
        amount: Money::units(50),
    };
    let append = Append {
        aggregate_type: Investor::TYPE,
        aggregate_id: id.into(),
        expected_version: 2,
        command_id: CommandId::new_random(),
        actor: None,
        events: vec![NewEvent {
            event_type: forged.type_name().into(),
            schema_version: 1,
            payload: forged.to_payload(),
            metadata: EventMetadata {
                event_id: Uuid::new_v4(),
                command_id: CommandId::new_random(),
                correlation_id: Uuid::new_v4(),
                causation_id: Uuid::new_v4(),
                actor: None,
            },
        }],
        snapshot: None,
    };
    repo.store().append(append).await.unwrap();

    let loaded = repo.load::<Investor>(id).await;
    assert!(
        matches!(&loaded, Err(StoreError::Corrupt(reason)) if reason.contains("v3")),
        "{loaded:?}"
    );
}

async fn a_duplicate_command_id_writes_nothing<S: EventStore>(store: S) {
    let repo = Repository::new(store, 100);
    let id = register(&repo, 100).await;
    let placed = CommandMeta::new_chain();
    execute(&repo, id, bid(10), placed).await.unwrap();

    let again = execute(&repo, id, bid(10), placed).await;
    assert!(matches!(again, Err(StoreError::AlreadyProcessed(c)) if c == placed.command_id));
    assert_eq!(repo.load::<Investor>(id).await.unwrap().version, 3);

    let refused = CommandId::new_random();
    let store = repo.store();
    store
        .record_rejection(investor_rejection(
            refused,
            id.into(),
            "insufficient balance",
        ))
        .await
        .unwrap();
    let twice = store
        .record_rejection(investor_rejection(refused, id.into(), "other"))
        .await;
    assert!(matches!(twice, Err(StoreError::AlreadyProcessed(_))));
    let then_applied = execute(
        &repo,
        id,
        bid(1),
        CommandMeta {
            command_id: refused,
            ..CommandMeta::new_chain()
        },
    )
    .await;
    assert!(matches!(then_applied, Err(StoreError::AlreadyProcessed(_))));
    assert_eq!(
        store.outcome(refused).await.unwrap(),
        Some(Outcome::Rejected {
            reason: "insufficient balance".into()
        })
    );
    assert_eq!(repo.load::<Investor>(id).await.unwrap().version, 3);
}

async fn aggregates_of_two_types_sharing_an_id_are_two_streams<S: EventStore>(store: S) {
    let repo = Repository::new(store, 100);
    let shared = Uuid::new_v4();
    let issuer_id = IssuerId::from(shared);
    let issuer = repo.load::<Issuer>(issuer_id).await.unwrap();
    let create = IssuerCommand::Create {
        name: "ACME".into(),
    };
    let events = issuer.state.decide(issuer_id, &create).unwrap();
    repo.save(&issuer, &events, CommandMeta::new_chain())
        .await
        .unwrap();
    let create = InvestorCommand::Create {
        name: "Ada".into(),
        funds: Money::units(100),
    };
    execute(
        &repo,
        InvestorId::from(shared),
        create,
        CommandMeta::new_chain(),
    )
    .await
    .unwrap();

    let issuer = repo.load::<Issuer>(issuer_id).await.unwrap();
    assert_eq!((issuer.version, issuer.state.is_registered()), (1, true));
    let investor = repo
        .load::<Investor>(InvestorId::from(shared))
        .await
        .unwrap();
    assert_eq!(
        (investor.version, investor.state.balance()),
        (2, Money::units(100))
    );
    let invoice = repo.load::<Invoice>(InvoiceId::from(shared)).await.unwrap();
    assert_eq!((invoice.version, invoice.state.status()), (0, None));
}

/// The append a command makes on the investor's state as `loaded` left it, which it advances.
fn advanced(
    repo: &Repository<impl EventStore>,
    loaded: &mut Loaded<Investor>,
    command: InvestorCommand,
) -> Decided {
    let events = loaded
        .state
        .decide(loaded.id, &command)
        .expect("the command is valid");
    Decided::Applied(
        repo.advance(loaded, &events, CommandMeta::new_chain())
            .unwrap(),
    )
}

async fn a_batch_is_written_in_order_and_loads_back_with_each_stream<S: EventStore>(store: S) {
    // Given two investors, and a snapshot at every append
    let repo = Repository::new(store, 1);
    let (ada, bob) = (register(&repo, 100).await, register(&repo, 50).await);
    let mut ada_now = repo.load::<Investor>(ada).await.unwrap();
    let mut bob_now = repo.load::<Investor>(bob).await.unwrap();

    // When a batch bids twice for Ada (two snapshots of one aggregate), is refused for Bob
    // and bids once for him in between
    let refused = CommandId::new_random();
    let batch = vec![
        advanced(&repo, &mut ada_now, bid(10)),
        Decided::Rejected(Rejected {
            command_id: refused,
            aggregate_type: Investor::TYPE,
            aggregate_id: bob.as_uuid(),
            reason: "insufficient balance".into(),
            actor: None,
        }),
        advanced(&repo, &mut bob_now, bid(5)),
        advanced(&repo, &mut ada_now, bid(20)),
    ];
    repo.store().write_all(batch).await.unwrap();

    // Then the events take the global order given, across aggregates
    let mut written = Vec::new();
    for id in [ada, bob] {
        let history = repo.store().load_events(Investor::TYPE, id.into(), 2);
        written.extend(history.await.unwrap());
    }
    written.sort_by_key(|e| e.global_position);
    let order: Vec<(Uuid, u64)> = written
        .iter()
        .map(|e| (e.aggregate_id, e.version))
        .collect();
    assert_eq!(order, [(ada.into(), 3), (bob.into(), 3), (ada.into(), 4)]);

    // And each stream holds its events in order, the states are as decided (from the latest
    // snapshots), the refusal is recorded, and one load reads both streams in the order asked
    assert_eq!(repo.load::<Investor>(ada).await.unwrap(), ada_now);
    assert_eq!(repo.load::<Investor>(bob).await.unwrap(), bob_now);
    assert_eq!(
        (ada_now.version, ada_now.state.reserved()),
        (4, Money::units(30))
    );
    let reason = "insufficient balance".to_owned();
    assert_eq!(
        repo.store().outcome(refused).await.unwrap(),
        Some(Outcome::Rejected { reason })
    );
    let history = repo.store().load_events(Investor::TYPE, ada.as_uuid(), 0);
    let versions: Vec<u64> = history.await.unwrap().iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    let streams = [
        (Investor::TYPE, bob.as_uuid()),
        (Investor::TYPE, ada.as_uuid()),
    ];
    let loaded = repo.store().load_streams(&streams).await.unwrap();
    let snapshots: Vec<Option<u64>> = loaded
        .iter()
        .map(|stream| stream.snapshot.as_ref().map(|s| s.version))
        .collect();
    assert_eq!(snapshots, [Some(3), Some(4)]);
    assert!(loaded.iter().all(|stream| stream.events.is_empty()));
}

async fn a_batch_with_a_conflict_or_a_known_command_writes_nothing<S: EventStore>(store: S) {
    // Given two investors, and a batch decided on their states
    let repo = Repository::new(store, 50);
    let ada = register(&repo, 100).await;
    let bob = register(&repo, 100).await;
    let mut ada_then = repo.load::<Investor>(ada).await.unwrap();
    let mut bob_then = repo.load::<Investor>(bob).await.unwrap();
    let first = advanced(&repo, &mut bob_then, bid(10));
    let stale = advanced(&repo, &mut ada_then, bid(10));

    // When another writer bids for Ada first, the batch conflicts and writes nothing
    execute(&repo, ada, bid(1), CommandMeta::new_chain())
        .await
        .unwrap();
    let written = repo.store().write_all(vec![first.clone(), stale]).await;
    assert!(
        matches!(written, Err(StoreError::Conflict { .. })),
        "{written:?}"
    );
    let registered = 2;
    assert_eq!(
        repo.load::<Investor>(bob).await.unwrap().version,
        registered
    );

    // When a batch holds a command processed before, it writes nothing either
    repo.store().write_all(vec![first.clone()]).await.unwrap();
    let mut bob_now = repo.load::<Investor>(bob).await.unwrap();
    let next = advanced(&repo, &mut bob_now, bid(10));
    let again = repo
        .store()
        .write_all(vec![next.clone(), first.clone()])
        .await;
    assert!(
        matches!(again, Err(StoreError::AlreadyProcessed(id)) if id == first.command_id()),
        "{again:?}"
    );
    assert_eq!(
        repo.load::<Investor>(bob).await.unwrap().version,
        registered + 1
    );

    // When a batch holds one command twice, it writes nothing
    let twice = repo
        .store()
        .write_all(vec![next.clone(), next.clone()])
        .await;
    assert!(
        matches!(twice, Err(StoreError::AlreadyProcessed(id)) if id == next.command_id()),
        "{twice:?}"
    );
    assert_eq!(
        repo.load::<Investor>(bob).await.unwrap().version,
        registered + 1
    );
}

async fn the_outcomes_of_several_commands_are_told_at_once<S: EventStore>(store: S) {
    // Given a command applied and one rejected
    let repo = Repository::new(&store, 100);
    let applied = CommandMeta::new_chain();
    let create = InvestorCommand::Create {
        name: "Ada".into(),
        funds: Money::units(100),
    };
    execute(&repo, InvestorId::new_random(), create, applied)
        .await
        .unwrap();
    let rejected = CommandId::new_random();
    store
        .record_rejection(investor_rejection(rejected, Uuid::new_v4(), "no"))
        .await
        .unwrap();

    // When asked for those and one never seen
    let mut told = store
        .outcomes(&[rejected, CommandId::new_random(), applied.command_id])
        .await
        .unwrap();

    // Then the two processed are told, as they were decided
    told.sort_by_key(|(id, _)| *id != applied.command_id);
    let rejection = Outcome::Rejected {
        reason: "no".into(),
    };
    assert_eq!(
        told,
        [
            (applied.command_id, Outcome::Applied),
            (rejected, rejection)
        ]
    );
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod in_memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(InMemoryEventStore::new()).await;
                }
            )*
        }

        mod postgres {
            use super::*;
            $(
                #[sqlx::test(migrator = "financing_event_store::MIGRATOR")]
                async fn $name(pool: PgPool) {
                    super::$name(PgEventStore::new(pool)).await;
                }
            )*
        }
    };
}

contract!(
    appended_events_load_back_in_order_with_their_metadata,
    two_writers_at_the_same_version_conflict_and_the_loser_retries,
    concurrent_writers_that_retry_on_conflict_lose_no_update,
    a_snapshot_plus_the_later_events_equals_a_full_replay,
    a_duplicate_command_id_writes_nothing,
    aggregates_of_two_types_sharing_an_id_are_two_streams,
    a_stream_holding_an_impossible_event_does_not_load,
    a_batch_is_written_in_order_and_loads_back_with_each_stream,
    a_batch_with_a_conflict_or_a_known_command_writes_nothing,
    the_outcomes_of_several_commands_are_told_at_once,
);

#[sqlx::test(migrator = "financing_event_store::MIGRATOR")]
async fn rows_of_an_older_schema_version_load_as_the_current_one(pool: PgPool) {
    let repo = Repository::new(PgEventStore::new(pool.clone()), 1000);
    let id = register(&repo, 100).await;
    let bid = bid(30);
    let InvestorCommand::PlaceBid { invoice_id, .. } = bid else {
        unreachable!()
    };
    execute(&repo, id, bid, CommandMeta::new_chain())
        .await
        .unwrap();
    let stored = repo
        .store()
        .load_events(Investor::TYPE, id.into(), 2)
        .await
        .unwrap();
    assert_eq!(
        stored[0].schema_version, 2,
        "written at the current version"
    );

    assert_eq!(as_written_at_schema_version_1(&pool, id.as_uuid()).await, 1);

    let loaded = repo.load::<Investor>(id).await.unwrap();
    assert_eq!(
        (
            loaded.version,
            loaded.state.balance(),
            loaded.state.reserved()
        ),
        (3, Money::units(70), Money::units(30)),
        "the handler's load reads version 1 as version 2"
    );
    let stored = repo
        .store()
        .load_events(Investor::TYPE, id.into(), 2)
        .await
        .unwrap();
    assert_eq!(stored[0].schema_version, 1, "the row is kept as it was");
    let envelope = stored[0].envelope().unwrap();
    assert_eq!(envelope.meta.schema_version, 2);
    assert_eq!(
        envelope.event,
        Event::Investor(InvestorEvent::BidOnInvoicePlaced {
            investor_id: id,
            invoice_id,
            amount: Money::units(30),
        })
    );
}

/// Whether the event store's connections on `url` are encrypted.
async fn encrypted(url: &str) -> bool {
    let pool = financing_runtime::postgres::connect_and_migrate(url, &MIGRATOR, 1)
        .await
        .expect("the server offers TLS (PostgreSQL's default on Debian)");
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_event_store_s_connections_are_encrypted_when_the_url_asks_and_only_then() {
    let url = financing_testkit::own_database_url();
    assert!(encrypted(&format!("{url}?sslmode=require")).await);
    assert!(
        !encrypted(&url).await,
        "a URL that asks nothing connects in plaintext"
    );
}

#[sqlx::test(migrator = "financing_event_store::MIGRATOR")]
async fn committed_events_wake_the_relayer_channel(pool: PgPool) {
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen(EVENTS_APPENDED_CHANNEL).await.unwrap();
    register(&Repository::new(PgEventStore::new(pool), 100), 1).await;
    let notification = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await;
    assert!(matches!(notification, Ok(Ok(_))), "{notification:?}");
}

#[sqlx::test(migrator = "financing_event_store::MIGRATOR")]
async fn a_write_that_appends_no_event_wakes_nobody(pool: PgPool) {
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen(EVENTS_APPENDED_CHANNEL).await.unwrap();
    let repo = Repository::new(PgEventStore::new(pool.clone()), 100);
    let id = register(&repo, 100).await;
    let woken = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await;
    assert!(matches!(woken, Ok(Ok(_))), "{woken:?}");
    let placed = CommandMeta::new_chain();
    execute(&repo, id, bid(10), placed).await.unwrap();
    let woken = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await;
    assert!(matches!(woken, Ok(Ok(_))), "{woken:?}");

    // Processed before: the write appends nothing.
    let again = execute(&repo, id, bid(10), placed).await;
    assert!(matches!(again, Err(StoreError::AlreadyProcessed(_))));
    // Notifications arrive in commit order: a wake-up from the write would come first.
    sqlx::query("SELECT pg_notify($1, 'after')")
        .bind(EVENTS_APPENDED_CHANNEL)
        .execute(&pool)
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.payload(), "after", "the write woke the relayer");
}

#[sqlx::test(migrator = "financing_event_store::MIGRATOR")]
async fn the_outbox_hands_out_unpublished_events_to_one_relayer_at_a_time(pool: PgPool) {
    let repo = Repository::new(PgEventStore::new(pool.clone()), 100);
    let first = register(&repo, 1).await;
    let second = register(&repo, 2).await;
    let outbox = Outbox::new(pool);

    let claim = outbox
        .claim(3, &LeftOut::default())
        .await
        .unwrap()
        .expect("the lock is free");
    let claimed: Vec<(Uuid, u64)> = claim
        .events()
        .iter()
        .map(|e| (e.aggregate_id, e.version))
        .collect();
    assert_eq!(
        claimed,
        [(first.into(), 1), (first.into(), 2), (second.into(), 1)]
    );
    assert!(
        outbox
            .claim(3, &LeftOut::default())
            .await
            .unwrap()
            .is_none(),
        "a second relayer must wait"
    );

    let published: Vec<i64> = claim.events()[..2]
        .iter()
        .map(|e| e.global_position)
        .collect();
    claim.mark_published(&published, &[], &[]).await.unwrap();

    let next = outbox
        .claim(10, &LeftOut::default())
        .await
        .unwrap()
        .expect("the lock was released");
    let remaining: Vec<(Uuid, u64)> = next
        .events()
        .iter()
        .map(|e| (e.aggregate_id, e.version))
        .collect();
    assert_eq!(remaining, [(second.into(), 1), (second.into(), 2)]);
    drop(next);
    // Dropping a claim rolls its transaction back in the background, releasing the lock soon.
    let again = wait_until("the dropped claim's lock is released", || async {
        outbox.claim(10, &LeftOut::default()).await.unwrap()
    })
    .await;
    assert_eq!(again.events().len(), 2, "a dropped claim marks nothing");
}

#[sqlx::test(migrator = "financing_event_store::MIGRATOR")]
async fn the_outbox_hands_out_rejections_and_failures_until_they_are_marked(pool: PgPool) {
    let store = PgEventStore::new(pool.clone());
    let investor_id = InvestorId::new_random();
    let (refused, failed) = (CommandId::new_random(), CommandId::new_random());
    store
        .record_rejection(investor_rejection(
            refused,
            investor_id.into(),
            "no such investor",
        ))
        .await
        .unwrap();
    store
        .record_failure(failed, None, "cannot decode BidOnInvoice", None)
        .await
        .unwrap();
    register(&Repository::new(store, 100), 1).await; // applied commands never wait here
    let outbox = Outbox::new(pool);

    let claim = outbox
        .claim(10, &LeftOut::default())
        .await
        .unwrap()
        .unwrap();
    let outcomes: Vec<_> = claim
        .outcomes()
        .iter()
        .map(|r| {
            (
                r.command_id,
                r.failed,
                r.aggregate_type.as_deref(),
                r.aggregate_id,
                r.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (
                refused,
                false,
                Some("Investor"),
                Some(investor_id.as_uuid()),
                "no such investor"
            ),
            (failed, true, None, None, "cannot decode BidOnInvoice"),
        ]
    );
    claim
        .mark_published(&[], &[refused], &[failed])
        .await
        .unwrap();
    let next = outbox
        .claim(10, &LeftOut::default())
        .await
        .unwrap()
        .unwrap();
    assert!(next.outcomes().is_empty());
}

#[sqlx::test(migrator = "financing_event_store::MIGRATOR")]
async fn the_outbox_tells_whether_an_event_or_an_outcome_waits_to_be_published(pool: PgPool) {
    let store = PgEventStore::new(pool.clone());
    let outbox = Outbox::new(pool);
    assert!(!outbox.has_unpublished().await.unwrap(), "an empty store");

    let refused = CommandId::new_random();
    let rejection = investor_rejection(refused, Uuid::new_v4(), "no such investor");
    store.record_rejection(rejection).await.unwrap();
    assert!(outbox.has_unpublished().await.unwrap(), "a rejection");
    let claim = outbox
        .claim(10, &LeftOut::default())
        .await
        .unwrap()
        .unwrap();
    claim.mark_published(&[], &[refused], &[]).await.unwrap();
    assert!(!outbox.has_unpublished().await.unwrap());

    let failed = CommandId::new_random();
    store
        .record_failure(failed, None, "undecodable", None)
        .await
        .unwrap();
    assert!(outbox.has_unpublished().await.unwrap(), "a failure");
    let claim = outbox
        .claim(10, &LeftOut::default())
        .await
        .unwrap()
        .unwrap();
    claim.mark_published(&[], &[], &[failed]).await.unwrap();
    assert!(!outbox.has_unpublished().await.unwrap());

    register(&Repository::new(store, 100), 1).await;
    assert!(outbox.has_unpublished().await.unwrap(), "events");
    let claim = outbox
        .claim(10, &LeftOut::default())
        .await
        .unwrap()
        .unwrap();
    let positions: Vec<i64> = claim.events().iter().map(|e| e.global_position).collect();
    claim.mark_published(&positions, &[], &[]).await.unwrap();
    assert!(!outbox.has_unpublished().await.unwrap(), "all published");
}

/// Until migration 6 an event carried its publication mark; upgrading a store keeps what was
/// not published yet waiting for the relayer, and only that.
#[sqlx::test(migrations = false)]
async fn events_unpublished_before_the_outbox_table_still_wait_after_it(pool: PgPool) {
    MIGRATOR.run_to(5, &pool).await.unwrap();
    let (published, waiting) = (Uuid::new_v4(), Uuid::new_v4());
    for (aggregate_id, published_at) in [(published, Some(chrono::Utc::now())), (waiting, None)] {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, version, event_type, \
                 schema_version, payload, event_id, command_id, correlation_id, causation_id, \
                 published_at) \
             VALUES ('Investor', $1, 1, 'InvestorCreated', 1, '{}', gen_random_uuid(), \
                 gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), $2)",
        )
        .bind(aggregate_id)
        .bind(published_at)
        .execute(&pool)
        .await
        .unwrap();
    }

    MIGRATOR.run(&pool).await.unwrap();

    let claim = Outbox::new(pool)
        .claim(10, &LeftOut::default())
        .await
        .unwrap()
        .unwrap();
    let claimed: Vec<Uuid> = claim.events().iter().map(|e| e.aggregate_id).collect();
    assert_eq!(claimed, [waiting]);
}

#[sqlx::test(migrator = "financing_event_store::MIGRATOR")]
async fn the_database_reckons_a_key_s_partition_as_the_relayer_does(pool: PgPool) {
    let mut keys: Vec<Uuid> = (0..500).map(|_| Uuid::new_v4()).collect();
    keys.extend([Uuid::nil(), Uuid::max()]);
    for partitions in [0, 1, 2, 3, 6, 7, 64, 1000, i32::MAX] {
        let reckoned: Vec<i32> = sqlx::query_scalar(
            "SELECT partition_for(key, $2) FROM UNNEST($1::uuid[]) WITH ORDINALITY AS k (key, n) \
                 ORDER BY n",
        )
        .bind(&keys)
        .bind(partitions)
        .fetch_all(&pool)
        .await
        .unwrap();
        let expected: Vec<i32> = keys.iter().map(|k| partition_for(*k, partitions)).collect();
        assert_eq!(reckoned, expected, "{partitions} partitions");
    }
}

#[sqlx::test(migrator = "financing_event_store::MIGRATOR")]
async fn the_outbox_leaves_out_the_events_and_outcomes_held_back(pool: PgPool) {
    // Given two aggregates' events, and outcomes: a rejection and a failure of each, and a
    // failure naming no aggregate
    let store = PgEventStore::new(pool.clone());
    let repo = Repository::new(&store, 100);
    let (held, free) = (register(&repo, 1).await, register(&repo, 2).await);
    let mut outcomes = HashMap::new();
    for aggregate in [held, free] {
        let (rejected, failed) = (CommandId::new_random(), CommandId::new_random());
        let rejection = investor_rejection(rejected, aggregate.into(), "no");
        store.record_rejection(rejection).await.unwrap();
        store
            .record_failure(failed, Some(aggregate.into()), "cannot decode", None)
            .await
            .unwrap();
        outcomes.insert(aggregate.as_uuid(), [rejected, failed]);
    }
    let anonymous = CommandId::new_random();
    store
        .record_failure(anonymous, None, "cannot decode", None)
        .await
        .unwrap();
    let outbox = Outbox::new(pool);

    // When the partition of one's events is held back, and those of the other's and the
    // anonymous outcomes
    let of = (2..)
        .find(|&n| {
            let held_on = partition_for(held.as_uuid(), n);
            held_on != partition_for(free.as_uuid(), n)
                && held_on != partition_for(anonymous.as_uuid(), n)
        })
        .unwrap();
    let left_out = LeftOut {
        events: HeldPartitions {
            of,
            held: vec![partition_for(held.as_uuid(), of)],
        },
        outcomes: HeldPartitions {
            of,
            held: vec![
                partition_for(free.as_uuid(), of),
                partition_for(anonymous.as_uuid(), of),
            ],
        },
    };
    let claim = outbox.claim(10, &left_out).await.unwrap().unwrap();

    // Then the claim holds the rest, and only the rest
    let aggregates: Vec<Uuid> = claim.events().iter().map(|e| e.aggregate_id).collect();
    assert_eq!(aggregates, [free.as_uuid(), free.as_uuid()]);
    let mut claimed: Vec<CommandId> = claim.outcomes().iter().map(|o| o.command_id).collect();
    let mut expected = outcomes[&held.as_uuid()].to_vec();
    claimed.sort_by_key(CommandId::as_uuid);
    expected.sort_by_key(CommandId::as_uuid);
    assert_eq!(claimed, expected);
}

#[sqlx::test(migrator = "financing_event_store::MIGRATOR")]
async fn a_rejection_or_a_failure_wakes_the_relayer_channel(pool: PgPool) {
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen(EVENTS_APPENDED_CHANNEL).await.unwrap();
    let store = PgEventStore::new(pool);
    let investor_id = InvestorId::new_random();
    store
        .record_rejection(investor_rejection(
            CommandId::new_random(),
            investor_id.into(),
            "no",
        ))
        .await
        .unwrap();
    let woken = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await;
    assert!(matches!(woken, Ok(Ok(_))), "{woken:?}");
    store
        .record_failure(CommandId::new_random(), None, "cannot decode", None)
        .await
        .unwrap();
    let woken = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await;
    assert!(matches!(woken, Ok(Ok(_))), "{woken:?}");
}

#[sqlx::test(migrator = "financing_event_store::MIGRATOR")]
async fn a_parked_message_is_kept_once_and_handed_out_when_due(pool: PgPool) {
    let parking = Parking::new(pool);
    let message = Received {
        topic: "financing.events".into(),
        partition: 2,
        offset: 41,
        key: Some(b"key".to_vec()),
        payload: Some(b"{not json".to_vec()),
        headers: vec![
            ("type".into(), Some(b"InvoiceApproved".to_vec())),
            ("empty".into(), None),
            // JSON text cannot hold a NUL: headers are kept whatever their bytes.
            ("binary".into(), Some(vec![0, 159, 255])),
        ],
    };
    parking
        .park(&message, "cannot decode", Duration::ZERO)
        .await
        .unwrap();
    parking
        .park(&message, "delivered again", Duration::ZERO)
        .await
        .unwrap();

    let lease = Duration::from_secs(60);
    let due = parking.claim_due(10, lease).await.unwrap();
    let [parked] = &due[..] else {
        panic!("parked once: {due:?}");
    };
    assert_eq!(parked.message, message);
    assert_eq!(
        (parked.reason.as_str(), parked.attempts),
        ("cannot decode", 0)
    );
    assert!(
        parking.claim_due(10, lease).await.unwrap().is_empty(),
        "claimed: handed to nobody else while the attempt lasts"
    );

    parking
        .postpone(parked.id, "still cannot", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        parking
            .claim_due(10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    let all = parking.all().await.unwrap();
    assert_eq!(
        (all[0].reason.as_str(), all[0].attempts),
        ("still cannot", 1)
    );

    parking.release(parked.id).await.unwrap();
    assert!(parking.all().await.unwrap().is_empty());
}

#[sqlx::test(migrator = "financing_event_store::MIGRATOR")]
async fn two_handlers_claiming_at_once_never_get_the_same_parked_message(pool: PgPool) {
    let (one, other) = (Parking::new(pool.clone()), Parking::new(pool));
    for offset in 0..40 {
        let message = Received {
            topic: "financing.events".into(),
            partition: 0,
            offset,
            key: None,
            payload: Some(b"{}".to_vec()),
            headers: Vec::new(),
        };
        one.park(&message, "cannot decode", Duration::ZERO)
            .await
            .unwrap();
    }
    let lease = Duration::from_secs(60);
    let mut claimed = Vec::new();
    for _ in 0..10 {
        let (a, b) = tokio::join!(one.claim_due(3, lease), other.claim_due(3, lease));
        claimed.extend(a.unwrap().into_iter().chain(b.unwrap()).map(|p| p.id));
    }
    let all = claimed.len();
    claimed.sort_unstable();
    claimed.dedup();
    assert_eq!((all, claimed.len()), (40, 40), "each handed out once");

    assert!(
        one.claim_due(1, lease).await.unwrap().is_empty(),
        "all are leased"
    );
}

#[sqlx::test(migrator = "financing_event_store::MIGRATOR")]
async fn a_parked_message_whose_lease_ran_out_is_handed_out_again(pool: PgPool) {
    let parking = Parking::new(pool);
    let message = Received {
        topic: "financing.events".into(),
        partition: 0,
        offset: 7,
        key: None,
        payload: Some(b"{}".to_vec()),
        headers: Vec::new(),
    };
    parking
        .park(&message, "cannot decode", Duration::ZERO)
        .await
        .unwrap();
    // Its handler died mid-attempt: neither released nor postponed.
    let first = parking.claim_due(1, Duration::ZERO).await.unwrap();
    let again = parking.claim_due(1, Duration::from_secs(60)).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(
        again.iter().map(|p| p.id).collect::<Vec<_>>(),
        [first[0].id]
    );
}

#[sqlx::test(migrator = "financing_event_store::MIGRATOR")]
async fn marking_a_command_s_failure_leaves_its_later_rejection_to_publish(pool: PgPool) {
    let store = PgEventStore::new(pool.clone());
    let command = CommandId::new_random();
    store
        .record_failure(command, None, "cannot read the investor", None)
        .await
        .unwrap();
    // Sent again once the cause was fixed, it was decided: rejected.
    store
        .record_rejection(investor_rejection(
            command,
            Uuid::new_v4(),
            "insufficient balance",
        ))
        .await
        .unwrap();
    let outbox = Outbox::new(pool);
    let claim = outbox
        .claim(10, &LeftOut::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claim.outcomes().len(), 2);

    claim.mark_published(&[], &[], &[command]).await.unwrap();
    let next = outbox
        .claim(10, &LeftOut::default())
        .await
        .unwrap()
        .unwrap();
    let left: Vec<(CommandId, bool)> = next
        .outcomes()
        .iter()
        .map(|o| (o.command_id, o.failed))
        .collect();
    assert_eq!(
        left,
        [(command, false)],
        "the rejection is still to publish"
    );
}

/// Publishing deletes events' outbox rows (their publication mark): where the server's
/// autovacuum is off, the upkeep pass vacuums the store's updated tables; with it on, it leaves
/// them to the server.
#[sqlx::test(migrator = "financing_event_store::MIGRATOR")]
async fn the_updated_tables_are_vacuumed_where_the_server_does_not(pool: PgPool) {
    let repo = Repository::new(PgEventStore::new(pool.clone()), 100);
    register(&repo, 100).await;
    let outbox = Outbox::new(pool.clone());
    let claim = outbox
        .claim(10, &LeftOut::default())
        .await
        .unwrap()
        .expect("an event to publish");
    let published: Vec<i64> = claim.events().iter().map(|e| e.global_position).collect();
    claim.mark_published(&published, &[], &[]).await.unwrap();
    let autovacuum: String = sqlx::query_scalar("SELECT current_setting('autovacuum')")
        .fetch_one(&pool)
        .await
        .unwrap();

    let vacuumed = vacuum_if_autovacuum_off(&pool, UPDATED_TABLES)
        .await
        .unwrap();

    assert_eq!(vacuumed, autovacuum == "off");
    if vacuumed {
        for table in UPDATED_TABLES {
            wait_until(&format!("{table} shows a vacuum"), || async {
                let vacuumed: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
                    "SELECT last_vacuum FROM pg_stat_user_tables WHERE relname = $1",
                )
                .bind(table)
                .fetch_one(&pool)
                .await
                .unwrap();
                vacuumed.map(drop)
            })
            .await;
        }
    }
}
