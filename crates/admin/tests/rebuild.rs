//! `financing rebuild` against real event store and read model databases of the test's own: a
//! view stuck at a gap is recorded as such, and only that view.

use std::process::Command;

use financing_domain::{
    Aggregate, Investor, InvestorCommand, InvestorId, InvoiceId, Issuer, IssuerCommand, IssuerId,
    Money,
};
use financing_event_store::{CommandMeta, PgEventStore, Repository};
use financing_read_model::ReadModel;
use financing_runtime::postgres::connect_and_migrate;
use financing_testkit::own_database_url;
use uuid::Uuid;

/// Decides `command` on the aggregate's latest state and saves its events.
async fn execute<A: Aggregate>(repo: &Repository<PgEventStore>, id: A::Id, command: A::Command) {
    let loaded = repo.load::<A>(id).await.unwrap();
    let events = loaded.state.decide(id, &command).unwrap();
    repo.save(&loaded, &events, CommandMeta::new_chain())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_stuck_investor_leaves_the_issuer_that_shares_its_id_alone() {
    let (store_url, queries_url) = (own_database_url(), own_database_url());
    let store = connect_and_migrate(&store_url, &financing_event_store::MIGRATOR, 2)
        .await
        .unwrap();
    let queries = connect_and_migrate(&queries_url, &financing_read_model::MIGRATOR, 2)
        .await
        .unwrap();
    let repo = Repository::new(PgEventStore::new(store.clone()), 100);
    // An investor whose version 2 is lost, then an issuer with the same id.
    let id = Uuid::new_v4();
    let investor = InvestorId::from(id);
    let create = InvestorCommand::Create {
        name: "Ada".into(),
        funds: Money::units(100),
    };
    execute::<Investor>(&repo, investor, create).await;
    for _ in 0..2 {
        let bid = InvestorCommand::PlaceBid {
            invoice_id: InvoiceId::new_random(),
            amount: Money::units(10),
        };
        execute::<Investor>(&repo, investor, bid).await;
    }
    sqlx::query("DELETE FROM events WHERE aggregate_type = 'Investor' AND version = 2")
        .execute(&store)
        .await
        .unwrap();
    let issuer = IssuerId::from(id);
    let name = "ACME".to_string();
    execute::<Issuer>(&repo, issuer, IssuerCommand::Create { name }).await;

    let output = Command::new(env!("CARGO_BIN_EXE_financing"))
        .arg("rebuild")
        .env("DATABASE_URL", &store_url)
        .env("QUERIES_DATABASE_URL", &queries_url)
        .output()
        .expect("the command runs");
    assert!(output.status.success(), "{output:?}");

    let read_model = ReadModel::new(queries);
    let stuck: Vec<(String, Uuid)> = read_model
        .stuck_views()
        .await
        .unwrap()
        .into_iter()
        .map(|view| (view.aggregate_type, view.aggregate_id))
        .collect();
    assert_eq!(stuck, [("Investor".to_string(), id)]);
    let shown = read_model.issuer(issuer).await.unwrap();
    assert_eq!(shown.map(|view| view.name).as_deref(), Some("ACME"));
}
