//! `financing parked list` against the real event store: what the handler parked, and why.

use std::process::Command;
use std::time::Duration;

use financing_event_store::{MIGRATOR, Parking, Received};
use financing_runtime::postgres::connect_and_migrate;
use financing_testkit::own_database_url;

fn parked_list(database_url: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_financing"))
        .args(["parked", "list"])
        .env("DATABASE_URL", database_url)
        .output()
        .expect("the command runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn a_parked_message_is_listed_with_where_it_came_from_and_why() {
    let url = own_database_url();
    let pool = connect_and_migrate(&url, &MIGRATOR, 1).await.unwrap();
    assert!(parked_list(&url).contains("nothing parked"));

    let message = Received {
        topic: "financing.events".into(),
        partition: 1,
        offset: 7,
        key: None,
        payload: None,
        headers: vec![("type".into(), Some(b"InvoiceApproved".to_vec()))],
    };
    let reason = "stored data cannot be read: Investor 42 v2: cannot decode";
    Parking::new(pool)
        .park(&message, reason, Duration::from_secs(30))
        .await
        .unwrap();

    let listed = parked_list(&url);
    let line = listed
        .lines()
        .find(|line| line.contains(reason))
        .unwrap_or_else(|| {
            panic!("the parked message is listed with its reason: {listed}");
        });
    assert!(line.contains("financing.events/1/7"), "{line}");
}
