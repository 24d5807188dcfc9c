//! The query side, through Kafka and gRPC only, as the original suite did: domain events are
//! published on `financing.events` as the relayer would, and the answers of the query service
//! are asserted. Only the projector and the query service run.

use std::collections::HashMap;

use chrono::Utc;
use financing_acceptance::{Parts, System};
use financing_api::to_proto_id;
use financing_api::v1::{
    self, GetCommandStatusRequest, GetInvestorRequest, GetInvoiceRequest, GetIssuerRequest,
};
use financing_auth::Bearer;
use financing_domain::{
    Actor, Bid, CommandId, Event, InvestorEvent, InvestorId, InvoiceEvent, InvoiceId, IssuerEvent,
    IssuerId, Money, Role,
};
use financing_messaging::{CommandOutcome, EventEnvelope};
use financing_testkit::{as_published, bad_tokens, operator};
use tonic::Code;
use uuid::Uuid;

/// Publishes events the way the relayer does: each aggregate's versions numbered in order.
struct Scenario {
    system: System,
    versions: HashMap<Uuid, u64>,
    published: Vec<EventEnvelope>,
}

impl Scenario {
    async fn start() -> Scenario {
        Scenario {
            system: System::start_with(Parts::ReadSide, 1).await,
            versions: HashMap::new(),
            published: Vec::new(),
        }
    }

    /// Publishes the aggregate's next event; returns it as published.
    async fn publish(&mut self, event: Event) -> EventEnvelope {
        let aggregate_id = match &event {
            Event::Issuer(IssuerEvent::IssuerCreated { issuer_id, .. }) => issuer_id.as_uuid(),
            Event::Investor(e) => investor_of(e).as_uuid(),
            Event::Invoice(e) => invoice_of(e).as_uuid(),
        };
        let version = self.versions.entry(aggregate_id).or_default();
        *version += 1;
        let message = as_published(event, aggregate_id, *version);
        self.system.publish_event(&message).await;
        self.published.push(message.clone());
        message
    }

    async fn publish_all(&mut self, events: impl IntoIterator<Item = Event>) {
        for event in events {
            self.publish(event).await;
        }
    }

    async fn await_investor(&self, expected: v1::Investor) {
        self.system.await_investor(&expected).await;
    }

    /// Waits until the invoices listed are these, in this order.
    async fn await_invoices(&self, expected: Vec<v1::Invoice>) {
        let what = format!("the invoices are {expected:?}");
        let expected = &expected;
        self.system
            .await_query(&what, |mut queries| async move {
                let invoices = queries
                    .all_invoices(v1::Page::default())
                    .await
                    .ok()?
                    .into_inner()
                    .invoices;
                (invoices == *expected).then_some(())
            })
            .await;
    }
}

fn investor_of(event: &InvestorEvent) -> InvestorId {
    match event {
        InvestorEvent::InvestorCreated { investor_id, .. }
        | InvestorEvent::InvestorFundsAdded { investor_id, .. }
        | InvestorEvent::BidOnInvoicePlaced { investor_id, .. }
        | InvestorEvent::InvestorFundsReleased { investor_id, .. }
        | InvestorEvent::InvestorFundsCommitted { investor_id, .. } => *investor_id,
    }
}

fn invoice_of(event: &InvoiceEvent) -> InvoiceId {
    match event {
        InvoiceEvent::InvoiceCreated { invoice_id, .. }
        | InvoiceEvent::InvoiceFinanced { invoice_id, .. }
        | InvoiceEvent::BidOnInvoiceRejected { invoice_id, .. }
        | InvoiceEvent::InvoiceApproved { invoice_id, .. }
        | InvoiceEvent::InvoiceReversed { invoice_id, .. } => *invoice_id,
    }
}

fn money(units: u64) -> Option<v1::Money> {
    Some(v1::Money {
        amount: Money::units(units).to_f64(),
    })
}

fn investor_view(id: InvestorId, balance: u64, reserved: u64, committed: u64) -> v1::Investor {
    v1::Investor {
        id: Some(to_proto_id(id)),
        balance: money(balance),
        reserved: money(reserved),
        committed: money(committed),
        name: "Ada".into(),
    }
}

fn invoice_view(
    id: InvoiceId,
    issuer_id: IssuerId,
    asking: u64,
    status: v1::InvoiceStatus,
    winning: Option<Bid>,
) -> v1::Invoice {
    v1::Invoice {
        id: Some(to_proto_id(id)),
        issuer_id: Some(to_proto_id(issuer_id)),
        asking_price: money(asking),
        status: status.into(),
        winning_bid: winning.map(|bid| v1::Bid {
            investor_id: Some(to_proto_id(bid.investor_id)),
            amount: Some(v1::Money {
                amount: bid.amount.to_f64(),
            }),
        }),
    }
}

mod event {
    use super::*;

    pub fn issuer_created(issuer_id: IssuerId) -> Event {
        Event::Issuer(IssuerEvent::IssuerCreated {
            issuer_id,
            name: "ACME".into(),
        })
    }
    pub fn investor_created(investor_id: InvestorId) -> Event {
        Event::Investor(InvestorEvent::InvestorCreated {
            investor_id,
            name: "Ada".into(),
        })
    }
    pub fn funds_added(investor_id: InvestorId, units: u64) -> Event {
        Event::Investor(InvestorEvent::InvestorFundsAdded {
            investor_id,
            amount: Money::units(units),
        })
    }
    pub fn bid_placed(investor_id: InvestorId, invoice_id: InvoiceId, units: u64) -> Event {
        Event::Investor(InvestorEvent::BidOnInvoicePlaced {
            investor_id,
            invoice_id,
            amount: Money::units(units),
        })
    }
    pub fn released(investor_id: InvestorId, units: u64) -> Event {
        Event::Investor(InvestorEvent::InvestorFundsReleased {
            investor_id,
            amount: Money::units(units),
        })
    }
    pub fn committed(investor_id: InvestorId, units: u64) -> Event {
        Event::Investor(InvestorEvent::InvestorFundsCommitted {
            investor_id,
            amount: Money::units(units),
        })
    }
    pub fn invoice_created(invoice_id: InvoiceId, issuer_id: IssuerId, units: u64) -> Event {
        Event::Invoice(InvoiceEvent::InvoiceCreated {
            invoice_id,
            issuer_id,
            asking_price: Money::units(units),
        })
    }
    pub fn financed(invoice_id: InvoiceId, units: u64, bid: Bid) -> Event {
        Event::Invoice(InvoiceEvent::InvoiceFinanced {
            invoice_id,
            asking_price: Money::units(units),
            bid,
        })
    }
    pub fn approved(invoice_id: InvoiceId, units: u64, bid: Bid) -> Event {
        Event::Invoice(InvoiceEvent::InvoiceApproved {
            invoice_id,
            sold_price: Money::units(units),
            bid,
        })
    }
    pub fn reversed(invoice_id: InvoiceId, units: u64, bid: Bid) -> Event {
        Event::Invoice(InvoiceEvent::InvoiceReversed {
            invoice_id,
            sold_price: Money::units(units),
            bid,
        })
    }
}

fn bid(investor_id: InvestorId, units: u64) -> Bid {
    Bid {
        investor_id,
        amount: Money::units(units),
    }
}

/// An issuer selling an invoice asking 15, financed by an investor's bid of 20.
async fn financed_invoice(scenario: &mut Scenario) -> (IssuerId, InvoiceId, InvestorId) {
    let (issuer_id, invoice_id, investor_id) = (
        IssuerId::new_random(),
        InvoiceId::new_random(),
        InvestorId::new_random(),
    );
    scenario
        .publish_all([
            event::issuer_created(issuer_id),
            event::invoice_created(invoice_id, issuer_id, 15),
            event::investor_created(investor_id),
            event::funds_added(investor_id, 20),
            event::bid_placed(investor_id, invoice_id, 20),
            event::financed(invoice_id, 15, bid(investor_id, 20)),
        ])
        .await;
    (issuer_id, invoice_id, investor_id)
}

#[tokio::test]
async fn with_no_invoice_sold_all_invoices_is_empty() {
    let scenario = Scenario::start().await;
    let mut queries = scenario.system.queries().await;
    assert!(
        queries
            .all_invoices(v1::Page::default())
            .await
            .unwrap()
            .into_inner()
            .invoices
            .is_empty()
    );
    assert!(
        queries
            .all_investors(v1::Page::default())
            .await
            .unwrap()
            .into_inner()
            .investors
            .is_empty()
    );
    assert!(
        queries
            .all_issuers(v1::Page::default())
            .await
            .unwrap()
            .into_inner()
            .issuers
            .is_empty()
    );
}

#[tokio::test]
async fn two_invoices_on_sale_are_listed_available_in_order_without_bids() {
    let mut scenario = Scenario::start().await;
    let (issuer_id, first, second) = (
        IssuerId::new_random(),
        InvoiceId::new_random(),
        InvoiceId::new_random(),
    );
    scenario
        .publish_all([
            event::issuer_created(issuer_id),
            event::invoice_created(first, issuer_id, 15),
            event::invoice_created(second, issuer_id, 20),
        ])
        .await;
    scenario
        .await_invoices(vec![
            invoice_view(first, issuer_id, 15, v1::InvoiceStatus::Available, None),
            invoice_view(second, issuer_id, 20, v1::InvoiceStatus::Available, None),
        ])
        .await;
}

#[tokio::test]
async fn a_financed_invoice_shows_the_winning_bid() {
    let mut scenario = Scenario::start().await;
    let (issuer_id, invoice_id, investor_id) = financed_invoice(&mut scenario).await;
    let winning = Some(bid(investor_id, 20));
    scenario
        .await_invoices(vec![invoice_view(
            invoice_id,
            issuer_id,
            15,
            v1::InvoiceStatus::Financed,
            winning,
        )])
        .await;
}

#[tokio::test]
async fn an_approved_invoice_keeps_its_winning_bid() {
    let mut scenario = Scenario::start().await;
    let (issuer_id, invoice_id, investor_id) = financed_invoice(&mut scenario).await;
    scenario
        .publish(event::approved(invoice_id, 15, bid(investor_id, 20)))
        .await;
    let winning = Some(bid(investor_id, 20));
    scenario
        .await_invoices(vec![invoice_view(
            invoice_id,
            issuer_id,
            15,
            v1::InvoiceStatus::Approved,
            winning,
        )])
        .await;
}

#[tokio::test]
async fn a_reversed_invoice_keeps_its_winning_bid() {
    let mut scenario = Scenario::start().await;
    let (issuer_id, invoice_id, investor_id) = financed_invoice(&mut scenario).await;
    scenario
        .publish(event::reversed(invoice_id, 15, bid(investor_id, 20)))
        .await;
    let winning = Some(bid(investor_id, 20));
    scenario
        .await_invoices(vec![invoice_view(
            invoice_id,
            issuer_id,
            15,
            v1::InvoiceStatus::Reversed,
            winning,
        )])
        .await;
}

#[tokio::test]
async fn registered_investors_are_listed_with_an_empty_balance() {
    let mut scenario = Scenario::start().await;
    let (first, second) = (InvestorId::new_random(), InvestorId::new_random());
    scenario
        .publish_all([
            event::investor_created(first),
            event::investor_created(second),
        ])
        .await;
    let expected = [
        investor_view(first, 0, 0, 0),
        investor_view(second, 0, 0, 0),
    ];
    let expected = &expected;
    scenario
        .system
        .await_query("both investors are listed", |mut queries| async move {
            let investors = queries
                .all_investors(v1::Page::default())
                .await
                .ok()?
                .into_inner()
                .investors;
            (investors == *expected).then_some(())
        })
        .await;
}

#[tokio::test]
async fn funds_added_twice_add_up() {
    let mut scenario = Scenario::start().await;
    let id = InvestorId::new_random();
    scenario
        .publish_all([
            event::investor_created(id),
            event::funds_added(id, 20),
            event::funds_added(id, 30),
        ])
        .await;
    scenario.await_investor(investor_view(id, 50, 0, 0)).await;
}

#[tokio::test]
async fn a_bid_reserves_funds_and_a_release_returns_the_surplus() {
    let mut scenario = Scenario::start().await;
    let (id, invoice_id) = (InvestorId::new_random(), InvoiceId::new_random());
    scenario
        .publish_all([
            event::investor_created(id),
            event::funds_added(id, 30),
            event::bid_placed(id, invoice_id, 20),
            event::released(id, 5),
        ])
        .await;
    scenario.await_investor(investor_view(id, 15, 15, 0)).await;
}

#[tokio::test]
async fn an_approved_financing_commits_the_reserved_funds() {
    let mut scenario = Scenario::start().await;
    let (id, invoice_id) = (InvestorId::new_random(), InvoiceId::new_random());
    scenario
        .publish_all([
            event::investor_created(id),
            event::funds_added(id, 15),
            event::bid_placed(id, invoice_id, 15),
            event::committed(id, 15),
        ])
        .await;
    scenario.await_investor(investor_view(id, 0, 0, 15)).await;
}

#[tokio::test]
async fn a_reversed_financing_releases_the_reserved_funds() {
    let mut scenario = Scenario::start().await;
    let (id, invoice_id) = (InvestorId::new_random(), InvoiceId::new_random());
    scenario
        .publish_all([
            event::investor_created(id),
            event::funds_added(id, 15),
            event::bid_placed(id, invoice_id, 15),
            event::released(id, 15),
        ])
        .await;
    scenario.await_investor(investor_view(id, 15, 0, 0)).await;
}

#[tokio::test]
async fn lookups_by_id_find_what_exists_and_say_not_found_otherwise() {
    let mut scenario = Scenario::start().await;
    let (issuer_id, invoice_id, investor_id) = financed_invoice(&mut scenario).await;
    scenario
        .await_investor(investor_view(investor_id, 0, 20, 0))
        .await;
    let mut queries = scenario.system.queries().await;

    let issuer = queries
        .get_issuer(GetIssuerRequest {
            id: Some(to_proto_id(issuer_id)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        issuer,
        v1::Issuer {
            id: Some(to_proto_id(issuer_id)),
            name: "ACME".into()
        }
    );
    let invoice = queries
        .get_invoice(GetInvoiceRequest {
            id: Some(to_proto_id(invoice_id)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        invoice,
        invoice_view(
            invoice_id,
            issuer_id,
            15,
            v1::InvoiceStatus::Financed,
            Some(bid(investor_id, 20))
        )
    );
    let issuers = queries
        .all_issuers(v1::Page::default())
        .await
        .unwrap()
        .into_inner()
        .issuers;
    assert_eq!(issuers, [issuer]);

    let unknown = Some(to_proto_id(Uuid::new_v4()));
    let statuses = [
        queries
            .get_issuer(GetIssuerRequest {
                id: unknown.clone(),
            })
            .await
            .unwrap_err(),
        queries
            .get_invoice(GetInvoiceRequest {
                id: unknown.clone(),
            })
            .await
            .unwrap_err(),
        queries
            .get_investor(GetInvestorRequest { id: unknown })
            .await
            .unwrap_err(),
    ];
    for status in statuses {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    let malformed = GetInvestorRequest {
        id: Some(v1::Uuid { value: "x".into() }),
    };
    let status = queries.get_investor(malformed).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, r#"id.value: "x" is not a UUID"#)
    );
}

#[tokio::test]
async fn a_duplicated_event_is_applied_once() {
    let mut scenario = Scenario::start().await;
    let id = InvestorId::new_random();
    scenario.publish(event::investor_created(id)).await;
    let added = scenario.publish(event::funds_added(id, 20)).await;
    scenario.system.publish_event(&added).await;
    // A later version of the same aggregate is applied after both copies (same partition).
    scenario.publish(event::funds_added(id, 1)).await;
    scenario.await_investor(investor_view(id, 21, 0, 0)).await;
}

#[tokio::test]
async fn a_redelivered_old_version_never_takes_the_view_back() {
    let mut scenario = Scenario::start().await;
    let (id, invoice_id) = (InvestorId::new_random(), InvoiceId::new_random());
    scenario
        .publish_all([
            event::investor_created(id),
            event::funds_added(id, 30),
            event::bid_placed(id, invoice_id, 20),
            event::released(id, 5),
        ])
        .await;
    for old in &scenario.published[1..3] {
        scenario.system.publish_event(old).await;
    }
    scenario.publish(event::released(id, 1)).await;
    scenario.await_investor(investor_view(id, 16, 14, 0)).await;
}

#[tokio::test]
async fn a_command_is_pending_then_applied_or_rejected_with_its_reason() {
    let mut scenario = Scenario::start().await;
    let id = InvestorId::new_random();
    let mut queries = scenario.system.queries().await;

    let created = scenario.publish(event::investor_created(id)).await;
    let rejected = CommandId::new_random();
    scenario
        .system
        .publish_outcome(&CommandOutcome {
            command_id: rejected,
            failed: false,
            aggregate_type: Some("Investor".into()),
            aggregate_id: Some(id.as_uuid()),
            reason: "insufficient balance: bid 10.00 but balance is 5.00".into(),
            decided_at: Utc::now(),
            actor: None,
        })
        .await;

    let unknown = GetCommandStatusRequest {
        command_id: Some(to_proto_id(CommandId::new_random())),
    };
    let unknown = queries
        .get_command_status(unknown)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (unknown.status(), unknown.reason.as_str()),
        (v1::CommandStatus::Pending, "")
    );
    let system = &scenario.system;
    system
        .await_command_status(created.meta.command_id, v1::CommandStatus::Applied)
        .await;
    let reply = system
        .await_command_status(rejected, v1::CommandStatus::Rejected)
        .await;
    assert_eq!(
        reply.reason,
        "insufficient balance: bid 10.00 but balance is 5.00"
    );
    assert_eq!(reply.command_id, Some(to_proto_id(rejected)));
}

#[tokio::test]
async fn the_lists_come_whole_to_old_clients_and_a_page_at_a_time_to_those_that_ask() {
    let mut scenario = Scenario::start().await;
    let issuers: Vec<IssuerId> = (0..5).map(|_| IssuerId::new_random()).collect();
    for issuer_id in &issuers {
        scenario.publish(event::issuer_created(*issuer_id)).await;
    }
    let listed = |reply: v1::AllIssuersReply| -> Vec<IssuerId> {
        reply
            .issuers
            .iter()
            .map(|issuer| issuer.id.as_ref().unwrap().value.parse().unwrap())
            .collect()
    };
    let whole = scenario
        .system
        .await_query("every issuer is listed", |mut queries| async move {
            let reply = queries.all_issuers(v1::Page::default()).await.ok()?;
            let reply = reply.into_inner();
            (reply.issuers.len() == 5).then_some(reply)
        })
        .await;
    assert_eq!(whole.next_page_token, "");
    let whole = listed(whole);
    let mut sorted = whole.clone();
    sorted.sort();
    let mut published = issuers.clone();
    published.sort();
    assert_eq!(sorted, published);

    let mut queries = scenario.system.queries().await;
    let mut paged = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = v1::Page {
            page_size: 2,
            page_token,
        };
        let reply = queries.all_issuers(request).await.unwrap().into_inner();
        assert!(reply.issuers.len() <= 2);
        page_token = reply.next_page_token.clone();
        paged.extend(listed(reply));
        if page_token.is_empty() {
            break;
        }
    }
    assert_eq!(
        paged, whole,
        "the pages hold every issuer once, in the list's order"
    );

    for (request, message) in [
        (
            v1::Page {
                page_size: 10_001,
                page_token: String::new(),
            },
            "page_size: must be at most 10000",
        ),
        (
            v1::Page {
                page_size: 2,
                page_token: "x".into(),
            },
            "page_token: is not a next_page_token this service gave",
        ),
    ] {
        let status = queries.all_investors(request).await.unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::InvalidArgument, message)
        );
    }
}

#[tokio::test]
async fn every_party_reads_the_market_and_what_is_its_own_and_an_operator_everything() {
    let mut scenario = Scenario::start().await;
    let (issuer_id, invoice_id, investor_id) = financed_invoice(&mut scenario).await;
    let (other_issuer, other_investor) = (IssuerId::new_random(), InvestorId::new_random());
    scenario
        .publish_all([
            event::issuer_created(other_issuer),
            event::investor_created(other_investor),
        ])
        .await;
    // A command of the investor's, decided.
    let mut placed = as_published(
        event::funds_added(investor_id, 1),
        investor_id.as_uuid(),
        scenario.versions[&investor_id.as_uuid()] + 1,
    );
    let investor = Actor::new(investor_id, Role::Investor);
    placed.meta.actor = Some(investor);
    scenario.system.publish_event(&placed).await;
    let command = placed.meta.command_id;
    scenario
        .system
        .await_command_status(command, v1::CommandStatus::Applied)
        .await;

    let issuer = Actor::new(issuer_id, Role::Issuer);
    let investor_request = |id: InvestorId| GetInvestorRequest {
        id: Some(to_proto_id(id)),
    };
    let issuer_request = |id: IssuerId| GetIssuerRequest {
        id: Some(to_proto_id(id)),
    };
    let status_request = |id: CommandId| GetCommandStatusRequest {
        command_id: Some(to_proto_id(id)),
    };
    let invoice_request = GetInvoiceRequest {
        id: Some(to_proto_id(invoice_id)),
    };
    // Allowed: the market to anyone, each party its own.
    for actor in [issuer, investor, operator()] {
        let mut queries = scenario.system.queries_as(actor).await;
        queries.all_invoices(v1::Page::default()).await.unwrap();
        queries.get_invoice(invoice_request.clone()).await.unwrap();
    }
    let mut as_investor = scenario.system.queries_as(investor).await;
    as_investor
        .get_investor(investor_request(investor_id))
        .await
        .unwrap();
    as_investor
        .get_command_status(status_request(command))
        .await
        .unwrap();
    let mut as_issuer = scenario.system.queries_as(issuer).await;
    as_issuer
        .get_issuer(issuer_request(issuer_id))
        .await
        .unwrap();
    let mut as_operator = scenario.system.queries().await;
    as_operator
        .all_investors(v1::Page::default())
        .await
        .unwrap();
    as_operator.all_issuers(v1::Page::default()).await.unwrap();
    as_operator
        .get_investor(investor_request(other_investor))
        .await
        .unwrap();
    as_operator
        .get_issuer(issuer_request(other_issuer))
        .await
        .unwrap();
    as_operator
        .get_command_status(status_request(command))
        .await
        .unwrap();

    // Denied: anything of someone else's, and the whole lists.
    let stranger = Actor::new(other_investor, Role::Investor);
    let mut as_stranger = scenario.system.queries_as(stranger).await;
    let denied = [
        as_investor
            .get_investor(investor_request(other_investor))
            .await
            .map(drop),
        as_investor
            .get_issuer(issuer_request(issuer_id))
            .await
            .map(drop),
        as_investor
            .all_investors(v1::Page::default())
            .await
            .map(drop),
        as_issuer
            .get_issuer(issuer_request(other_issuer))
            .await
            .map(drop),
        as_issuer.all_issuers(v1::Page::default()).await.map(drop),
        // The issuer's id, read as an investor's.
        as_issuer
            .get_investor(investor_request(InvestorId::from(issuer_id.as_uuid())))
            .await
            .map(drop),
        as_stranger
            .get_command_status(status_request(command))
            .await
            .map(drop),
    ];
    for (n, answer) in denied.into_iter().enumerate() {
        let status = answer.expect_err(&format!("request {n} is denied"));
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "request {n}: {status:?}"
        );
    }
    // A command nobody decided yet tells nothing, to anyone.
    let pending = as_stranger
        .get_command_status(status_request(CommandId::new_random()))
        .await
        .unwrap();
    assert_eq!(pending.into_inner().status(), v1::CommandStatus::Pending);

    // Without a valid token, nothing at all.
    for (what, token) in bad_tokens(investor) {
        let mut queries = scenario.system.queries_with(Bearer::new(&token)).await;
        let status = queries.all_invoices(v1::Page::default()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    }
}
