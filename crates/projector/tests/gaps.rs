//! A view never stays behind a version the bus did not bring: the projector fills the gap from
//! the event store. One the event store cannot fill is recorded as stuck, loudly.

use financing_domain::{
    Aggregate, CommandId, Investor, InvestorCommand, InvestorId, InvoiceId, Money,
};
use financing_event_store::{CommandMeta, EventStore, MIGRATOR, PgEventStore, Repository};
use financing_messaging::{EventEnvelope, KafkaConfig, Publisher, WireForm};
use financing_projector::{Projector, ProjectorConfig};
use financing_read_model::ReadModel;
use financing_runtime::postgres::connect_and_migrate;
use financing_testkit::{own_database_url, own_topics, wait_until};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct Setup {
    store: Repository<PgEventStore>,
    event_store: PgPool,
    publisher: Publisher,
    kafka: KafkaConfig,
    read_model: ReadModel,
    shutdown: CancellationToken,
}

impl Setup {
    async fn start() -> Setup {
        let kafka = KafkaConfig {
            partitions: 1,
            ..own_topics()
        };
        let event_store_url = own_database_url();
        let event_store = connect_and_migrate(&event_store_url, &MIGRATOR, 2)
            .await
            .unwrap();
        let config = ProjectorConfig {
            database_url: own_database_url(),
            event_store_url,
            group_id: format!("{}projector", kafka.topic_prefix),
            consumers: 1,
            kafka: kafka.clone(),
        };
        let shutdown = CancellationToken::new();
        let projector = Projector::build(config.clone(), shutdown.clone())
            .await
            .unwrap();
        tokio::spawn(projector.run_until_stopped());
        let read_models = PgPool::connect(&config.database_url).await.unwrap();
        Setup {
            store: Repository::new(PgEventStore::new(event_store.clone()), 100),
            event_store,
            publisher: Publisher::new(&kafka).unwrap(),
            kafka,
            read_model: ReadModel::new(read_models),
            shutdown,
        }
    }

    /// A new investor with 100 (versions 1 and 2 of its stream).
    async fn register(&self) -> InvestorId {
        let id = InvestorId::new_random();
        let create = InvestorCommand::Create {
            name: "Ada".into(),
            funds: Money::units(100),
        };
        self.execute(id, create).await;
        id
    }

    async fn execute(&self, id: InvestorId, command: InvestorCommand) {
        let loaded = self.store.load::<Investor>(id).await.unwrap();
        let events = loaded.state.decide(id, &command).unwrap();
        let meta = CommandMeta {
            command_id: CommandId::new_random(),
            correlation_id: Uuid::new_v4(),
            causation_id: Uuid::new_v4(),
        };
        self.store.save(&loaded, &events, meta).await.unwrap();
    }

    /// The stored version `version` of the investor's stream, as the relayer publishes it.
    async fn stored(&self, id: InvestorId, version: u64) -> EventEnvelope {
        let stored = self
            .store
            .store()
            .load_events(Investor::TYPE, id.into(), version - 1)
            .await
            .unwrap();
        stored[0].envelope().unwrap()
    }

    async fn publish(&self, message: &EventEnvelope) {
        let topic = self.kafka.topics().events;
        self.publisher
            .publish(&topic, &message.record())
            .await
            .unwrap();
    }

    /// Publishes the stored version `version` of the investor's stream, as the relayer would.
    async fn relay(&self, id: InvestorId, version: u64) {
        self.publish(&self.stored(id, version).await).await;
    }
}

#[tokio::test]
async fn an_event_after_versions_the_bus_lost_brings_them_from_the_event_store() {
    let setup = Setup::start().await;
    let id = setup.register().await;
    let bid = InvestorCommand::PlaceBid {
        invoice_id: InvoiceId::new_random(),
        amount: Money::units(20),
    };
    setup.execute(id, bid).await;
    let release = InvestorCommand::ReleaseFunds {
        amount: Money::units(5),
    };
    setup.execute(id, release).await;

    // Versions 2 and 3 never come over the bus.
    setup.relay(id, 1).await;
    setup.relay(id, 4).await;

    let shown = wait_until("the view shows version 4", || async {
        let view = setup.read_model.investor(id).await.ok()??;
        (view.reserved == Money::units(15)).then_some(view)
    })
    .await;
    assert_eq!(
        (shown.balance, shown.reserved, shown.committed),
        (Money::units(85), Money::units(15), Money::ZERO)
    );
    assert!(setup.read_model.stuck_views().await.unwrap().is_empty());
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
    assert!(setup.read_model.stuck_views().await.unwrap().is_empty());
    setup.shutdown.cancel();
}
