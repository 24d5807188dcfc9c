//! A rolling upgrade loses nothing on the projector's side: topics that hold messages of the
//! earlier header form followed by CloudEvents are consumed whole, an old event as it was
//! stored then (schema version 1) included.

mod common;

use common::Setup;
use financing_domain::{Aggregate, CommandId, CommandOutcome, Investor};
use financing_event_store::EventStore;
use financing_messaging::{WireForm, legacy_record};
use financing_read_model::CommandStatus;
use financing_testkit::{as_written_at_schema_version_1, wait_until};
use uuid::Uuid;

#[tokio::test]
async fn events_and_outcomes_of_the_earlier_form_then_cloudevents_are_all_projected() {
    let setup = Setup::start().await;
    let topics = setup.kafka.topics();
    let id = setup.investor_with_a_bid_and_a_release().await;
    as_written_at_schema_version_1(&setup.event_store, id.as_uuid()).await;
    let stored = setup
        .store
        .store()
        .load_events(Investor::TYPE, id.into(), 0)
        .await
        .unwrap();
    let legacy = |version: usize| {
        let event = &stored[version - 1];
        legacy_record::event(&event.meta(), &event.event_type, &event.payload)
    };

    // An old relayer published versions 1 and 3 (the bid, at schema version 1), a new one 2
    // and 4.
    setup.publish_record(&topics.events, &legacy(1)).await;
    setup.relay(id, 2).await;
    setup.publish_record(&topics.events, &legacy(3)).await;
    setup.relay(id, 4).await;
    let outcome = |failed| CommandOutcome {
        command_id: CommandId::new_random(),
        failed,
        aggregate_type: Some(Investor::TYPE.into()),
        aggregate_id: Some(Uuid::new_v4()),
        reason: "why".into(),
        decided_at: chrono::Utc::now(),
        actor: None,
    };
    let (old, new) = (outcome(false), outcome(true));
    setup
        .publish_record(&topics.outcomes, &legacy_record::outcome(&old))
        .await;
    setup.publish_record(&topics.outcomes, &new.record()).await;

    setup.await_bid_and_release_shown(id).await;
    let status = |id| setup.read_model.command_status(id);
    wait_until("both outcomes are shown", || async {
        let shown = (
            status(old.command_id).await.ok()?,
            status(new.command_id).await.ok()?,
        );
        matches!(
            shown,
            (CommandStatus::Rejected { .. }, CommandStatus::Failed { .. })
        )
        .then_some(())
    })
    .await;
    setup.shutdown.cancel();
}
