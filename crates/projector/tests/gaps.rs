//! A view never stays behind a version the bus did not bring: the projector fills the gap from
//! the event store. One the event store cannot fill is recorded as stuck, loudly.

mod common;

use common::Setup;
use financing_domain::Money;
use financing_testkit::{as_written_at_schema_version_1, wait_until};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Waits until no view is recorded as stuck (a repaired one is cleared within a second).
async fn await_no_stuck_view(setup: &Setup) {
    wait_until("no view is stuck", || async {
        let stuck = setup.read_model.stuck_views().await.ok()?;
        stuck.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_event_after_versions_the_bus_lost_brings_them_from_the_event_store() {
    let setup = Setup::start().await;
    let id = setup.investor_with_a_bid_and_a_release().await;

    // Versions 2 and 3 never come over the bus.
    setup.relay(id, 1).await;
    setup.relay(id, 4).await;

    setup.await_bid_and_release_shown(id).await;
    setup.shutdown.cancel();
}

#[tokio::test]
async fn a_gap_the_event_store_cannot_fill_is_recorded_as_stuck_until_the_view_moves() {
    let setup = Setup::start().await;
    let id = setup.register().await;
    let (first, second) = (setup.stored(id, 1).await, setup.stored(id, 2).await);
    // Version 2 is published, but the event store lost version 1.
    sqlx::query("DELETE FROM events WHERE aggregate_id = $1 AND version = 1")
        .bind(id.as_uuid())
        .execute(&setup.event_store)
        .await
        .unwrap();
    setup.relay(id, 2).await;

    let stuck = wait_until("the view is recorded as stuck", || async {
        let stuck = setup.read_model.stuck_views().await.ok()?;
        (!stuck.is_empty()).then_some(stuck)
    })
    .await;
    assert_eq!(stuck[0].aggregate_id, id.as_uuid());
    assert_eq!((stuck[0].at_version, stuck[0].next_version), (0, 2));
    assert!(
        stuck[0].reason.contains("has 0 of the 1 versions"),
        "{stuck:?}"
    );
    assert!(setup.read_model.investor(id).await.unwrap().is_none());

    // The missing version comes after all (redriven, say), then the next one again.
    setup.publish(&first).await;
    setup.publish(&second).await;
    wait_until("the view shows the funds", || async {
        let view = setup.read_model.investor(id).await.ok()??;
        (view.balance == Money::units(100)).then_some(())
    })
    .await;
    await_no_stuck_view(&setup).await;
    setup.shutdown.cancel();
}

#[tokio::test]
async fn a_view_stuck_under_one_projector_and_repaired_under_another_is_stuck_no_more() {
    let setup = Setup::start().await;
    // Another projector on the same read models, ready before the view is stuck (a group of its
    // own: it reads the topic from the start once it runs).
    let other_shutdown = CancellationToken::new();
    let other = setup.projector("other", other_shutdown.clone()).await;
    let id = setup.register().await;
    // The event store loses version 1 for a while: the first projector records the view stuck.
    let hide = "UPDATE events SET aggregate_id = $2 WHERE aggregate_id = $1 AND version = 1";
    let hidden = Uuid::new_v4();
    let (lost, kept) = (id.as_uuid(), hidden);
    sqlx::query(hide)
        .bind(lost)
        .bind(kept)
        .execute(&setup.event_store)
        .await
        .unwrap();
    setup.relay(id, 2).await;
    wait_until("the view is recorded as stuck", || async {
        let stuck = setup.read_model.stuck_views().await.ok()?;
        (!stuck.is_empty()).then_some(())
    })
    .await;

    // Version 1 is back; the other projector repairs the view from the event store.
    sqlx::query(hide)
        .bind(kept)
        .bind(lost)
        .execute(&setup.event_store)
        .await
        .unwrap();
    tokio::spawn(other.run_until_stopped());
    wait_until("the view shows the funds", || async {
        let view = setup.read_model.investor(id).await.ok()??;
        (view.balance == Money::units(100)).then_some(())
    })
    .await;
    await_no_stuck_view(&setup).await;
    other_shutdown.cancel();
    setup.shutdown.cancel();
}

#[tokio::test]
async fn a_gap_is_filled_with_rows_of_an_older_schema_version_read_as_the_current_one() {
    let setup = Setup::start().await;
    let id = setup.investor_with_a_bid_and_a_release().await;
    let last = setup.stored(id, 4).await;
    // The bid (version 3) was stored before its schema version 2.
    assert_eq!(
        as_written_at_schema_version_1(&setup.event_store, id.as_uuid()).await,
        1
    );

    // Only the first and the last come over the bus: the bid is read from the store.
    setup.relay(id, 1).await;
    setup.publish(&last).await;

    setup.await_bid_and_release_shown(id).await;
    setup.shutdown.cancel();
}

#[tokio::test]
async fn a_view_stuck_partway_through_a_fill_is_recorded_at_the_version_it_reached() {
    let setup = Setup::start().await;
    let id = setup.investor_with_a_bid_and_a_release().await;
    setup.relay(id, 1).await;
    // Version 3 cannot be read: a fill from 1 applies version 2, then stops.
    sqlx::query(
        "UPDATE events SET payload = '{\"nonsense\": true}' \
         WHERE aggregate_id = $1 AND version = 3",
    )
    .bind(id.as_uuid())
    .execute(&setup.event_store)
    .await
    .unwrap();
    setup.relay(id, 4).await;

    let stuck = wait_until("the view is recorded as stuck", || async {
        let stuck = setup.read_model.stuck_views().await.ok()?;
        (!stuck.is_empty()).then_some(stuck)
    })
    .await;
    assert_eq!((stuck[0].at_version, stuck[0].next_version), (2, 4));
    assert!(
        setup.read_model.clear_repaired().await.unwrap().is_empty(),
        "still stuck: not cleared as repaired"
    );
    setup.shutdown.cancel();
}
