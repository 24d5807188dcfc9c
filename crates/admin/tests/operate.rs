//! `financing inspect`, `status` and `rebuild` against a running system: every component on a
//! database and topics of the test's own, the real PostgreSQL and broker, driven through gRPC.

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use financing_acceptance::{Parts, System};
use financing_api::to_proto_id;
use financing_api::v1::{self, BidOnInvoiceCommand, GetInvestorRequest, SellInvoiceCommand};
use financing_domain::saga::{self, EventPosition};
use financing_domain::{Actor, InvestorId, IssuerId, Money, Role};
use financing_event_store::PgEventStore;
use financing_messaging::{CLOUDEVENTS_JSON, CONTENT_TYPE, Publisher, Record};
use financing_testkit::{as_written_at_schema_version_1, wait_until};
use sqlx::PgPool;
use uuid::Uuid;

/// Saga reactions owed but not decided yet: an event whose policy issues a command not
/// processed, or a rejected one whose compensation is not. Views and outcome counts can agree
/// for a moment while a reaction is still on its way; `None` if the store cannot be read.
async fn reactions_pending(store: &PgPool) -> Option<usize> {
    let processed: HashMap<Uuid, String> =
        sqlx::query_as("SELECT command_id, outcome FROM processed_commands")
            .fetch_all(store)
            .await
            .ok()?
            .into_iter()
            .collect();
    let events = PgEventStore::new(store.clone());
    let events = events.events_after(0, i64::MAX).await.ok()?;
    let mut pending = 0;
    for recorded in &events {
        let envelope = recorded.envelope().ok()?;
        let position = EventPosition {
            aggregate_id: recorded.aggregate_id,
            version: recorded.version,
        };
        let Some(reaction) = saga::on_event(position, &envelope.event) else {
            continue;
        };
        let owed = match processed
            .get(&reaction.command.id.as_uuid())
            .map(String::as_str)
        {
            None => true,
            Some("rejected") => reaction
                .compensation
                .is_some_and(|c| !processed.contains_key(&c.id.as_uuid())),
            Some(_) => false,
        };
        pending += usize::from(owed);
    }
    Some(pending)
}

/// Runs `financing` on the system's databases, broker and topics; its standard output.
async fn financing(system: &System, args: &[&str]) -> String {
    let (event_store, read_models) = system.databases();
    let kafka = system.kafka();
    let mut command = Command::new(env!("CARGO_BIN_EXE_financing"));
    command
        .args(args)
        .env("DATABASE_URL", event_store)
        .env("QUERIES_DATABASE_URL", read_models)
        .env("KAFKA_BROKERS", &kafka.brokers)
        .env("KAFKA_TOPIC_PREFIX", &kafka.topic_prefix)
        .env(
            "COMMAND_HANDLER_GROUP",
            format!("{}command-handler", kafka.topic_prefix),
        )
        .env(
            "PROJECTOR_GROUP",
            format!("{}projector", kafka.topic_prefix),
        );
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("the command runs");
    assert!(output.status.success(), "financing {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

fn money(units: u64) -> Option<v1::Money> {
    Some(v1::Money {
        amount: units as f64,
    })
}

/// A running system where populate registered issuers and investors.
struct Market {
    system: System,
    issuers: Vec<IssuerId>,
    investors: Vec<InvestorId>,
}

impl Market {
    async fn open(partitions: i32, issuers: usize, investors: usize, balance: u64) -> Market {
        let system = System::start_with(Parts::Everything, partitions).await;
        let registered =
            financing_populate::register(system.kafka(), issuers, investors, Money::units(balance))
                .await
                .expect("populate publishes");
        let market = Market {
            system,
            issuers: registered.issuers.iter().map(|(_, id)| *id).collect(),
            investors: registered.investors.iter().map(|(_, id)| *id).collect(),
        };
        let (event_store, _) = market.system.databases();
        let store = PgPool::connect(event_store).await.unwrap();
        let expected = (issuers + investors) as i64;
        wait_until("every registration is in the event store", || async {
            let created: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM events WHERE event_type IN ('IssuerCreated', 'InvestorCreated')",
            )
            .fetch_one(&store)
            .await
            .ok()?;
            (created == expected).then_some(())
        })
        .await;
        market
    }

    /// Sells an invoice asking 10 and bids `bid` on it, without waiting for either.
    async fn sell_and_bid(&self, n: usize, bid: u64) {
        let issuer_id = self.issuers[n % self.issuers.len()];
        let investor_id = self.investors[n % self.investors.len()];
        let sold = self
            .system
            .commands_as(Actor::new(issuer_id, Role::Issuer))
            .await
            .sell_invoice(SellInvoiceCommand {
                issuer_id: Some(to_proto_id(issuer_id)),
                asking_price: money(10),
            })
            .await
            .expect("the sale is queued");
        let invoice_id: Uuid = sold.into_inner().value.parse().unwrap();
        self.system
            .commands_as(Actor::new(investor_id, Role::Investor))
            .await
            .bid_on_invoice(BidOnInvoiceCommand {
                investor_id: Some(to_proto_id(investor_id)),
                invoice_id: Some(to_proto_id(invoice_id)),
                bid: money(bid),
            })
            .await
            .expect("the bid is queued");
    }

    async fn investor(&self, n: usize) -> Option<v1::Investor> {
        let mut queries = self.system.queries().await;
        let request = GetInvestorRequest {
            id: Some(to_proto_id(self.investors[n])),
        };
        queries
            .get_investor(request)
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    async fn read_models(&self) -> PgPool {
        PgPool::connect(self.system.databases().1).await.unwrap()
    }

    /// Waits until every view shows its aggregate's last version in the event store, and every
    /// command the event store decided or failed has its outcome.
    async fn await_settled(&self) {
        let (event_store, _) = self.system.databases();
        let store = PgPool::connect(event_store).await.unwrap();
        let views = self.read_models().await;
        wait_until("every view shows its aggregate's last version", || async {
            let stored: Vec<(Uuid, i64)> = sqlx::query_as(
                "SELECT aggregate_id, max(version) FROM events GROUP BY aggregate_id ORDER BY 1",
            )
            .fetch_all(&store)
            .await
            .ok()?;
            let shown: Vec<(Uuid, i64)> = sqlx::query_as(
                "SELECT id, version FROM issuers UNION ALL SELECT id, version FROM investors \
                 UNION ALL SELECT id, version FROM invoices ORDER BY 1",
            )
            .fetch_all(&views)
            .await
            .ok()?;
            let decided: i64 = sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM processed_commands) + (SELECT count(*) \
                 FROM failed_commands f WHERE NOT EXISTS \
                 (SELECT 1 FROM processed_commands p WHERE p.command_id = f.command_id))",
            )
            .fetch_one(&store)
            .await
            .ok()?;
            let outcomes: i64 = sqlx::query_scalar("SELECT count(*) FROM command_outcomes")
                .fetch_one(&views)
                .await
                .ok()?;
            let pending = reactions_pending(&store).await?;
            (stored == shown && decided == outcomes && pending == 0).then_some(())
        })
        .await;
    }

    /// Every read model's rows, as text, in a stable order (without the order of arrival).
    async fn dump(&self) -> BTreeMap<&'static str, Vec<String>> {
        let views = self.read_models().await;
        let mut dump = BTreeMap::new();
        for (table, query) in [
            (
                "issuers",
                "SELECT id, name, version, created_at FROM issuers",
            ),
            (
                "investors",
                "SELECT id, name, balance, reserved, committed, version, created_at FROM investors",
            ),
            (
                "invoices",
                "SELECT id, issuer_id, asking_price, status, winning_investor_id, winning_bid, \
                 version, created_at FROM invoices",
            ),
            (
                "command_outcomes",
                "SELECT command_id, status, reason, aggregate_type, aggregate_id \
                 FROM command_outcomes",
            ),
            ("stuck_views", "SELECT aggregate_id FROM stuck_views"),
        ] {
            let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT t::text FROM ({query}) t ORDER BY 1"
            )))
            .fetch_all(&views)
            .await
            .unwrap();
            dump.insert(table, rows.into_iter().map(|(row,)| row).collect());
        }
        dump
    }
}

#[tokio::test]
async fn inspect_shows_the_stream_beside_its_view_and_a_rebuild_repairs_a_damaged_view() {
    let market = Market::open(1, 1, 1, 100).await;
    market.sell_and_bid(0, 20).await;
    let settled = |balance: f64, reserved: f64| {
        let market = &market;
        async move {
            wait_until("the investor shows the bid", || async {
                let investor = market.investor(0).await?;
                (investor.balance == Some(v1::Money { amount: balance })
                    && investor.reserved == Some(v1::Money { amount: reserved }))
                .then_some(())
            })
            .await
        }
    };
    // 20 reserved by the bid, the 10 above the asking price released; a bid above the
    // balance is rejected.
    settled(90.0, 10.0).await;
    market.sell_and_bid(0, 1_000).await;
    market.await_settled().await;
    let investor = market.investors[0].as_uuid().to_string();
    // The bid kept as the version before its schema version 2 stored it: inspect, the rebuild
    // and the handler's next load below read it as version 2.
    let store = PgPool::connect(market.system.databases().0).await.unwrap();
    let aged = as_written_at_schema_version_1(&store, market.investors[0].as_uuid()).await;
    assert_eq!(aged, 1);

    let shown = financing(&market.system, &["inspect", &investor]).await;
    for expected in [
        "Investor ",
        "InvestorCreated",
        "InvestorFundsAdded",
        "BidOnInvoicePlaced",
        "InvestorFundsReleased",
        "\"INVESTOR_1\"",
        "agree: the read model shows version 4, as the event store",
    ] {
        assert!(shown.contains(expected), "{expected:?} in:\n{shown}");
    }
    assert!(
        !shown.contains("not yet"),
        "every event is published:\n{shown}"
    );
    let line = |event: &str| {
        shown
            .lines()
            .find(|l| l.contains(event))
            .unwrap_or_default()
    };
    let bid = line("BidOnInvoicePlaced");
    assert!(
        bid.contains("1 as 2") && bid.contains(r#""amount":"20.00""#),
        "the bid is shown as schema version 2 reads it:\n{shown}"
    );
    // Who asked for each: the investor for its bid and the surplus released, the Registering
    // context for its creation.
    let asked_by_the_investor = format!("investor {investor}");
    for event in ["BidOnInvoicePlaced", "InvestorFundsReleased"] {
        assert!(
            line(event).contains(&asked_by_the_investor),
            "{event}:\n{shown}"
        );
    }
    assert!(line("InvestorCreated").contains("registering"), "{shown}");

    let views = market.read_models().await;
    let outcomes = || async {
        let rows: Vec<(Uuid, String)> =
            sqlx::query_as("SELECT command_id, status FROM command_outcomes ORDER BY 1")
                .fetch_all(&market.read_models().await)
                .await
                .unwrap();
        rows
    };
    let decided = wait_until(
        "every decision has its outcome, a rejection among them",
        || async {
            let processed: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_commands")
                .fetch_one(&store)
                .await
                .ok()?;
            let rows = outcomes().await;
            let rejected = rows.iter().any(|(_, status)| status == "REJECTED");
            (rows.len() as i64 == processed && rejected).then_some(rows)
        },
    )
    .await;
    sqlx::query("UPDATE investors SET balance = 1 WHERE id = $1")
        .bind(market.investors[0].as_uuid())
        .execute(&views)
        .await
        .unwrap();
    sqlx::query("DELETE FROM command_outcomes")
        .execute(&views)
        .await
        .unwrap();
    let shown = financing(&market.system, &["inspect", &investor]).await;
    assert!(
        shown.contains("DISAGREE: balance is \"0.01\" in the view, \"90.00\" in the stream"),
        "{shown}"
    );

    let rebuilt = financing(&market.system, &["rebuild"]).await;
    assert!(
        rebuilt.contains("the rebuilt read models are live"),
        "{rebuilt}"
    );
    let shown = financing(&market.system, &["inspect", &investor]).await;
    assert!(shown.contains("agree: "), "{shown}");
    settled(90.0, 10.0).await;
    assert_eq!(
        outcomes().await,
        decided,
        "every outcome comes back from the event store"
    );

    // The live projector carries on on the rebuilt views.
    // 30 reserved by the bid, the 20 above the asking price released.
    market.sell_and_bid(0, 30).await;
    settled(80.0, 20.0).await;
}

#[tokio::test]
async fn status_reports_nothing_pending_once_the_system_has_settled_and_counts_dead_letters() {
    let market = Market::open(1, 1, 1, 100).await;
    market.sell_and_bid(0, 20).await;
    market.await_settled().await;
    let kafka = market.system.kafka().clone();
    Publisher::new(&kafka)
        .unwrap()
        .publish(
            &kafka.topics().commands,
            &Record {
                key: Uuid::new_v4().to_string(),
                payload: b"not a command".to_vec(),
                headers: vec![(CONTENT_TYPE.into(), CLOUDEVENTS_JSON.into())],
            },
        )
        .await
        .unwrap();

    let status = wait_until(
        "status shows the system settled, with one dead letter",
        || async {
            let status = financing(&market.system, &["status"]).await;
            let settled = [
                "unpublished events     0",
                "unpublished outcomes   0",
                "parked messages        0",
                "views stuck at a gap   0",
                "commands pending       0",
                "dead letters           1",
            ]
            .iter()
            .all(|line| status.contains(line));
            settled.then_some(status)
        },
    )
    .await;
    let projector = format!("group {}projector", kafka.topic_prefix);
    assert!(status.contains(&projector), "{status}");
    assert!(status.contains(&kafka.topics().outcomes), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_under_load_hands_over_without_a_gap_or_a_double_apply() {
    let market = Arc::new(Market::open(3, 2, 4, 1_000_000).await);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn({
        let (market, stop, sent) = (market.clone(), stop.clone(), sent.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let n = sent.fetch_add(1, Ordering::Relaxed);
                market.sell_and_bid(n, 10 + (n % 3) as u64).await;
            }
        }
    });
    wait_until("the load is under way", || async {
        (sent.load(Ordering::Relaxed) >= 50).then_some(())
    })
    .await;

    let rebuilt = financing(&market.system, &["rebuild"]).await;
    assert!(
        rebuilt.contains("the rebuilt read models are live"),
        "{rebuilt}"
    );
    let during = sent.load(Ordering::Relaxed);
    wait_until("the load goes on after the handover", || async {
        (sent.load(Ordering::Relaxed) >= during + 50).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();

    market.await_settled().await;
    let live = market.dump().await;
    assert!(
        live["invoices"].len() >= 100,
        "{} invoices",
        live["invoices"].len()
    );
    // A rebuild with nothing moving is the reference: the views the handover left must be
    // exactly what the event store says, row for row.
    let rebuilt = financing(&market.system, &["rebuild"]).await;
    assert!(
        rebuilt.contains("the rebuilt read models are live"),
        "{rebuilt}"
    );
    let after = market.dump().await;
    for (table, rows) in &after {
        let before = &live[table];
        let gone: Vec<_> = before.iter().filter(|row| !rows.contains(row)).collect();
        let new: Vec<_> = rows.iter().filter(|row| !before.contains(row)).collect();
        assert!(
            gone.is_empty() && new.is_empty(),
            "{table}: before the reference rebuild only {gone:?}, after it only {new:?}"
        );
    }
}
