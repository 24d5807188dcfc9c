//! The projector against the real broker and PostgreSQL: a database for the event store and one
//! for the read models of a test's own, and topics of one partition.

use financing_domain::{Aggregate, Investor, InvestorCommand, InvestorId, InvoiceId, Money};
use financing_event_store::{CommandMeta, EventStore, MIGRATOR, PgEventStore, Repository};
use financing_messaging::{EventEnvelope, KafkaConfig, Publisher, Record, WireForm};
use financing_projector::{Projector, ProjectorConfig};
use financing_read_model::ReadModel;
use financing_runtime::postgres::connect_and_migrate;
use financing_testkit::{own_database_url, own_topics, wait_until};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub struct Setup {
    /// The running projector's.
    config: ProjectorConfig,
    pub store: Repository<PgEventStore>,
    pub event_store: PgPool,
    pub publisher: Publisher,
    pub kafka: KafkaConfig,
    pub read_model: ReadModel,
    pub shutdown: CancellationToken,
}

impl Setup {
    pub async fn start() -> Setup {
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
        let read_models =
            connect_and_migrate(&config.database_url, &financing_read_model::MIGRATOR, 2)
                .await
                .unwrap();
        let setup = Setup {
            store: Repository::new(PgEventStore::new(event_store.clone()), 100),
            event_store,
            publisher: Publisher::new(&kafka).unwrap(),
            kafka,
            read_model: ReadModel::new(read_models),
            shutdown: CancellationToken::new(),
            config,
        };
        let projector = setup.projector("projector", setup.shutdown.clone()).await;
        tokio::spawn(projector.run_until_stopped());
        setup
    }

    /// A projector on the test's read models, topics and event store, in a consumer group of
    /// the test's own named `group` (a new group reads the topics from the start).
    pub async fn projector(&self, group: &str, shutdown: CancellationToken) -> Projector {
        let config = ProjectorConfig {
            group_id: format!("{}{group}", self.kafka.topic_prefix),
            ..self.config.clone()
        };
        Projector::build(config, shutdown).await.unwrap()
    }

    /// A new investor with 100 (versions 1 and 2 of its stream).
    pub async fn register(&self) -> InvestorId {
        let id = InvestorId::new_random();
        let create = InvestorCommand::Create {
            name: "Ada".into(),
            funds: Money::units(100),
        };
        self.execute(id, create).await;
        id
    }

    /// A new investor with 100 that bid 20 and had 5 of it released (versions 1 to 4 of its
    /// stream: 85 balance, 15 reserved).
    pub async fn investor_with_a_bid_and_a_release(&self) -> InvestorId {
        let id = self.register().await;
        let bid = InvestorCommand::PlaceBid {
            invoice_id: InvoiceId::new_random(),
            amount: Money::units(20),
        };
        self.execute(id, bid).await;
        let release = InvestorCommand::ReleaseFunds {
            amount: Money::units(5),
        };
        self.execute(id, release).await;
        id
    }

    /// Waits until the investor's view shows version 4 of [`Setup::investor_with_a_bid_and_a_release`],
    /// and checks that no view is stuck.
    pub async fn await_bid_and_release_shown(&self, id: InvestorId) {
        let shown = wait_until("the view shows version 4", || async {
            let view = self.read_model.investor(id).await.ok()??;
            (view.reserved == Money::units(15)).then_some(view)
        })
        .await;
        assert_eq!(
            (shown.balance, shown.reserved, shown.committed),
            (Money::units(85), Money::units(15), Money::ZERO)
        );
        assert!(self.read_model.stuck_views().await.unwrap().is_empty());
    }

    pub async fn execute(&self, id: InvestorId, command: InvestorCommand) {
        let loaded = self.store.load::<Investor>(id).await.unwrap();
        let events = loaded.state.decide(id, &command).unwrap();
        let meta = CommandMeta::new_chain();
        self.store.save(&loaded, &events, meta).await.unwrap();
    }

    /// The stored version `version` of the investor's stream, as the relayer publishes it.
    pub async fn stored(&self, id: InvestorId, version: u64) -> EventEnvelope {
        let stored = self
            .store
            .store()
            .load_events(Investor::TYPE, id.into(), version - 1)
            .await
            .unwrap();
        stored[0].envelope().unwrap()
    }

    pub async fn publish(&self, message: &EventEnvelope) {
        self.publish_record(&self.kafka.topics().events, &message.record())
            .await;
    }

    pub async fn publish_record(&self, topic: &str, record: &Record) {
        self.publisher.publish(topic, record).await.unwrap();
    }

    /// Publishes the stored version `version` of the investor's stream, as the relayer would.
    pub async fn relay(&self, id: InvestorId, version: u64) {
        self.publish(&self.stored(id, version).await).await;
    }
}
