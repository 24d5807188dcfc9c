//! Rebuilding beside the live read models, on real Postgres: one rebuild at a time, a handover
//! that waits no longer than it is told for the live tables, finds the live views the rebuild
//! has not seen, and puts the rebuilt rows in the live tables' place.

use std::time::Duration;

use financing_domain::{CommandId, Event, EventEnvelope, EventMeta, IssuerEvent, IssuerId};
use financing_read_model::{MIGRATOR, Page, ReadModel};
use financing_runtime::postgres::connect_and_migrate;
use financing_testkit::own_database_url;
use uuid::Uuid;

fn issuer_created(id: IssuerId, name: &str) -> EventEnvelope {
    EventEnvelope {
        meta: EventMeta {
            aggregate_type: "Issuer".into(),
            aggregate_id: id.as_uuid(),
            version: 1,
            schema_version: 1,
            event_id: Uuid::new_v4(),
            command_id: CommandId::new_random(),
            correlation_id: Uuid::new_v4(),
            causation_id: Uuid::new_v4(),
            recorded_at: chrono::Utc::now(),
            actor: None,
        },
        event: Event::Issuer(IssuerEvent::IssuerCreated {
            issuer_id: id,
            name: name.into(),
        }),
    }
}

#[tokio::test]
async fn one_rebuild_at_a_time_and_its_tables_take_the_live_ones_place() {
    let url = own_database_url();
    let live = ReadModel::new(connect_and_migrate(&url, &MIGRATOR, 2).await.unwrap());
    let (kept, lost) = (IssuerId::new_random(), IssuerId::new_random());
    live.project(&issuer_created(lost, "only in the live tables"))
        .await
        .unwrap();

    let first = ReadModel::start_rebuild(&url, 2)
        .await
        .unwrap()
        .expect("alone");
    assert!(
        ReadModel::start_rebuild(&url, 2).await.unwrap().is_none(),
        "a second rebuild waits for the first"
    );
    // A long reader holds a live table: the handover waits no longer than it is told.
    let reader = live.pool().clone();
    let mut reading = reader.begin().await.unwrap();
    sqlx::query("LOCK TABLE invoices IN ACCESS SHARE MODE")
        .execute(&mut *reading)
        .await
        .unwrap();
    assert!(
        live.hand_over(Duration::from_millis(100))
            .await
            .unwrap()
            .is_none()
    );
    drop(reading);
    first
        .read_model
        .project(&issuer_created(kept, "rebuilt"))
        .await
        .unwrap();
    let mut handover = live
        .hand_over(Duration::from_secs(2))
        .await
        .unwrap()
        .expect("nothing else holds the tables");
    let behind = handover.behind().await.unwrap();
    assert_eq!(
        behind.iter().map(|b| b.aggregate_id).collect::<Vec<_>>(),
        [lost.as_uuid()],
        "the live view the rebuild has not seen is behind"
    );
    handover.complete(first.started_at).await.unwrap();
    drop(first);

    let listed = live.issuers(Page::default()).await.unwrap().rows;
    assert_eq!(
        listed.iter().map(|i| i.id).collect::<Vec<_>>(),
        [kept],
        "the live pool reads the rebuilt table"
    );
    assert!(
        ReadModel::start_rebuild(&url, 2).await.unwrap().is_some(),
        "a finished rebuild lets the next one start"
    );
}
