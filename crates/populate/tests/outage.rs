//! `populate` started while the broker cannot be reached: it says so, keeps trying, and once
//! the broker is back registers everyone it printed.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Stdio;

use financing_domain::IntegrationEvent;
use financing_messaging::integration_event;
use financing_testkit::{PATIENCE, Proxy, own_topics, read_to_end, wait_until};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

#[tokio::test]
async fn populate_waits_out_a_broker_outage_then_registers_everyone() {
    let kafka = own_topics();
    let broker: SocketAddr = kafka.brokers.parse().expect("one broker address");
    let proxy = Proxy::start(broker).await;
    proxy.cut();

    let mut populate = Command::new(env!("CARGO_BIN_EXE_populate"))
        .args(["--issuers", "2", "--investors", "3", "--balance", "50"])
        .env("KAFKA_BROKERS", proxy.addr().to_string())
        .env("KAFKA_TOPIC_PREFIX", &kafka.topic_prefix)
        .env("KAFKA_PARTITIONS", kafka.partitions.to_string())
        .env("KAFKA_DELIVERY_TIMEOUT_MS", "1000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("populate starts");
    let (warned, warnings) = watch::channel(false);
    let mut stderr = BufReader::new(populate.stderr.take().expect("piped")).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            if line.contains("registering failed") {
                warned.send_replace(true);
            }
        }
    });

    wait_until("populate reports that registering failed", || async {
        (*warnings.borrow()).then_some(())
    })
    .await;
    proxy.restore();
    let mut stdout = String::new();
    populate
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut stdout)
        .await
        .expect("populate's output");
    let status = tokio::time::timeout(PATIENCE, populate.wait())
        .await
        .expect("populate ends once the broker is back")
        .expect("an exit status");
    assert!(status.success(), "populate failed: {stdout}");

    let printed: BTreeSet<String> = stdout
        .lines()
        .filter(|line| {
            ["ISSUER_", "INVESTOR_"]
                .iter()
                .any(|p| line.trim().starts_with(p))
        })
        .filter_map(|line| line.split('"').nth(3))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        printed.len(),
        5,
        "two issuers and three investors in {stdout}"
    );
    let topic = kafka.topics().registering_events;
    let registered: BTreeSet<String> = read_to_end(&kafka, &topic)
        .await
        .iter()
        .map(
            |message| match integration_event(message).expect("a registration") {
                IntegrationEvent::IssuerRegistered { id, .. } => id.to_string(),
                IntegrationEvent::InvestorRegistered { id, balance, .. } => {
                    assert_eq!(balance.to_string(), "50.00");
                    id.to_string()
                }
            },
        )
        .collect();
    assert_eq!(registered, printed);
}
