//! The command side, through gRPC and Kafka only: integration events and commands in, the
//! exact domain events out on `financing.events`, in order.

use financing_acceptance::System;
use financing_api::v1::{
    self, ApproveFinancingCommand, BidOnInvoiceCommand, ReverseFinancingCommand, SellInvoiceCommand,
};
use financing_domain::{
    Actor, Bid, Event, IntegrationEvent, InvestorEvent, InvestorId, InvoiceEvent, InvoiceId,
    IssuerEvent, IssuerId, Money, Role,
};
use tonic::Request;

fn uuid(id: impl ToString) -> Option<v1::Uuid> {
    Some(v1::Uuid {
        value: id.to_string(),
    })
}

fn money(amount: Money) -> Option<v1::Money> {
    Some(v1::Money {
        amount: amount.to_f64(),
    })
}

async fn register_issuer(system: &mut System) -> IssuerId {
    let id = IssuerId::new_random();
    let name = "TEST_ISSUER_1".to_owned();
    system
        .publish(&IntegrationEvent::IssuerRegistered {
            id,
            name: name.clone(),
        })
        .await;
    system
        .events
        .expect([Event::Issuer(IssuerEvent::IssuerCreated {
            issuer_id: id,
            name,
        })])
        .await;
    id
}

async fn register_investor(system: &mut System, balance: Money) -> InvestorId {
    let id = InvestorId::new_random();
    let name = "TEST_INVESTOR_1".to_owned();
    system
        .publish(&IntegrationEvent::InvestorRegistered {
            id,
            name: name.clone(),
            balance,
        })
        .await;
    system
        .events
        .expect([
            Event::Investor(InvestorEvent::InvestorCreated {
                investor_id: id,
                name,
            }),
            Event::Investor(InvestorEvent::InvestorFundsAdded {
                investor_id: id,
                amount: balance,
            }),
        ])
        .await;
    id
}

fn issuer(id: IssuerId) -> Actor {
    Actor::new(id, Role::Issuer)
}

fn investor(id: InvestorId) -> Actor {
    Actor::new(id, Role::Investor)
}

async fn sell(system: &System, issuer_id: IssuerId, asking_price: Money) -> InvoiceId {
    let reply = system
        .commands_as(issuer(issuer_id))
        .await
        .sell_invoice(SellInvoiceCommand {
            issuer_id: uuid(issuer_id),
            asking_price: money(asking_price),
        })
        .await
        .expect("the command is queued");
    reply.into_inner().value.parse().expect("an invoice id")
}

async fn sell_invoice(system: &mut System, asking_price: Money) -> (IssuerId, InvoiceId) {
    let issuer_id = register_issuer(system).await;
    let invoice_id = sell(system, issuer_id, asking_price).await;
    system
        .events
        .expect([Event::Invoice(InvoiceEvent::InvoiceCreated {
            invoice_id,
            issuer_id,
            asking_price,
        })])
        .await;
    (issuer_id, invoice_id)
}

async fn bid(system: &System, investor_id: InvestorId, invoice_id: InvoiceId, amount: Money) {
    system
        .commands_as(investor(investor_id))
        .await
        .bid_on_invoice(BidOnInvoiceCommand {
            investor_id: uuid(investor_id),
            invoice_id: uuid(invoice_id),
            bid: money(amount),
        })
        .await
        .expect("the command is queued");
}

fn placed(investor_id: InvestorId, invoice_id: InvoiceId, amount: Money) -> Event {
    Event::Investor(InvestorEvent::BidOnInvoicePlaced {
        investor_id,
        invoice_id,
        amount,
    })
}

fn released(investor_id: InvestorId, amount: Money) -> Event {
    Event::Investor(InvestorEvent::InvestorFundsReleased {
        investor_id,
        amount,
    })
}

/// A bid placed, refused by the invoice, and given back.
fn bid_rejected_by_the_invoice(
    investor_id: InvestorId,
    invoice_id: InvoiceId,
    amount: Money,
) -> [Event; 3] {
    [
        placed(investor_id, invoice_id, amount),
        Event::Invoice(InvoiceEvent::BidOnInvoiceRejected {
            invoice_id,
            bid: Bid {
                investor_id,
                amount,
            },
        }),
        released(investor_id, amount),
    ]
}

struct Financed {
    issuer_id: IssuerId,
    invoice_id: InvoiceId,
    asking_price: Money,
    bid: Bid,
}

/// An invoice asking 10, financed by an investor's bid of 20 (with 100 of balance).
async fn finance_an_invoice(system: &mut System) -> Financed {
    let asking_price = Money::units(10);
    let (issuer_id, invoice_id) = sell_invoice(system, asking_price).await;
    let investor_id = register_investor(system, Money::units(100)).await;
    let bid_amount = Money::units(20);
    bid(system, investor_id, invoice_id, bid_amount).await;
    let winning = Bid {
        investor_id,
        amount: bid_amount,
    };
    system
        .events
        .expect([
            placed(investor_id, invoice_id, bid_amount),
            Event::Invoice(InvoiceEvent::InvoiceFinanced {
                invoice_id,
                asking_price,
                bid: winning,
            }),
            released(investor_id, Money::units(10)),
        ])
        .await;
    Financed {
        issuer_id,
        invoice_id,
        asking_price,
        bid: winning,
    }
}

#[tokio::test]
async fn a_registered_issuer_is_created() {
    let mut system = System::start().await;
    register_issuer(&mut system).await;
    system.assert_nothing_else_published().await;
}

#[tokio::test]
async fn a_registered_investor_is_created_with_its_balance() {
    let mut system = System::start().await;
    register_investor(&mut system, Money::units(100)).await;
    system.assert_nothing_else_published().await;
}

#[tokio::test]
async fn a_registered_issuer_sells_an_invoice() {
    let mut system = System::start().await;
    sell_invoice(&mut system, Money::units(20)).await;
    system.assert_nothing_else_published().await;
}

#[tokio::test]
async fn an_unregistered_issuer_sells_nothing() {
    let mut system = System::start().await;
    let unregistered = IssuerId::new_random();
    let refused = sell(&system, unregistered, Money::units(20)).await;
    // A sale queued after it on the same key is handled after it: had the first one created
    // an invoice, its event would come first.
    let (_, invoice_id) = sell_invoice(&mut system, Money::units(20)).await;
    assert_ne!(invoice_id, refused);
    system.assert_nothing_else_published().await;
}

#[tokio::test]
async fn a_bid_above_the_asking_price_finances_the_invoice_and_releases_the_surplus() {
    let mut system = System::start().await;
    finance_an_invoice(&mut system).await;
    system.assert_nothing_else_published().await;
}

#[tokio::test]
async fn a_bid_below_the_asking_price_is_rejected_and_released() {
    let mut system = System::start().await;
    let (_, invoice_id) = sell_invoice(&mut system, Money::units(10)).await;
    let investor_id = register_investor(&mut system, Money::units(100)).await;
    let amount = Money::units(5);
    bid(&system, investor_id, invoice_id, amount).await;
    system
        .events
        .expect(bid_rejected_by_the_invoice(investor_id, invoice_id, amount))
        .await;
    system.assert_nothing_else_published().await;
}

#[tokio::test]
async fn a_bid_above_the_balance_reserves_nothing() {
    let mut system = System::start().await;
    let (_, invoice_id) = sell_invoice(&mut system, Money::units(10)).await;
    let investor_id = register_investor(&mut system, Money::units(5)).await;
    bid(&system, investor_id, invoice_id, Money::units(10)).await;
    // The investor's next bid is handled after the refused one (same key, same partition):
    // its events come first only if the refused bid produced none.
    let amount = Money::units(5);
    bid(&system, investor_id, invoice_id, amount).await;
    system
        .events
        .expect(bid_rejected_by_the_invoice(investor_id, invoice_id, amount))
        .await;
    system.assert_nothing_else_published().await;
}

#[tokio::test]
async fn a_bid_on_a_missing_invoice_gives_the_funds_back() {
    let mut system = System::start().await;
    let investor_id = register_investor(&mut system, Money::units(100)).await;
    let missing = InvoiceId::new_random();
    bid(&system, investor_id, missing, Money::units(30)).await;
    system
        .events
        .expect([
            placed(investor_id, missing, Money::units(30)),
            released(investor_id, Money::units(30)),
        ])
        .await;
    system.assert_nothing_else_published().await;
}

#[tokio::test]
async fn a_bid_on_an_id_that_is_not_an_invoice_gives_the_funds_back() {
    let mut system = System::start().await;
    let issuer_id = register_issuer(&mut system).await;
    let investor_id = register_investor(&mut system, Money::units(100)).await;
    // An issuer's id is no invoice's: the bid finds no invoice and is released.
    let not_an_invoice = InvoiceId::from(issuer_id.as_uuid());
    bid(&system, investor_id, not_an_invoice, Money::units(30)).await;
    system
        .events
        .expect([
            placed(investor_id, not_an_invoice, Money::units(30)),
            released(investor_id, Money::units(30)),
        ])
        .await;
    system.assert_nothing_else_published().await;
}

#[tokio::test]
async fn approving_a_financed_invoice_commits_the_sold_price() {
    let mut system = System::start().await;
    let financed = finance_an_invoice(&mut system).await;
    system
        .commands_as(issuer(financed.issuer_id))
        .await
        .approve_financing(ApproveFinancingCommand {
            invoice_id: uuid(financed.invoice_id),
        })
        .await
        .expect("the command is queued");
    system
        .events
        .expect([
            Event::Invoice(InvoiceEvent::InvoiceApproved {
                invoice_id: financed.invoice_id,
                sold_price: financed.asking_price,
                bid: financed.bid,
            }),
            Event::Investor(InvestorEvent::InvestorFundsCommitted {
                investor_id: financed.bid.investor_id,
                amount: financed.asking_price,
            }),
        ])
        .await;
    system.assert_nothing_else_published().await;
}

#[tokio::test]
async fn reversing_a_financed_invoice_releases_the_sold_price() {
    let mut system = System::start().await;
    let financed = finance_an_invoice(&mut system).await;
    system
        .commands_as(issuer(financed.issuer_id))
        .await
        .reverse_financing(ReverseFinancingCommand {
            invoice_id: uuid(financed.invoice_id),
        })
        .await
        .expect("the command is queued");
    system
        .events
        .expect([
            Event::Invoice(InvoiceEvent::InvoiceReversed {
                invoice_id: financed.invoice_id,
                sold_price: financed.asking_price,
                bid: financed.bid,
            }),
            released(financed.bid.investor_id, financed.asking_price),
        ])
        .await;
    system.assert_nothing_else_published().await;
}

#[tokio::test]
async fn approving_or_reversing_an_invoice_that_is_not_financed_changes_nothing() {
    let mut system = System::start().await;
    let (issuer_id, invoice_id) = sell_invoice(&mut system, Money::units(10)).await;
    let mut commands = system.commands_as(issuer(issuer_id)).await;
    let target = || uuid(invoice_id);
    commands
        .approve_financing(ApproveFinancingCommand {
            invoice_id: target(),
        })
        .await
        .expect("the command is queued");
    commands
        .reverse_financing(ReverseFinancingCommand {
            invoice_id: target(),
        })
        .await
        .expect("the command is queued");
    // Still AVAILABLE: a bid after them (handled after them, same key) finances it.
    let investor_id = register_investor(&mut system, Money::units(100)).await;
    bid(&system, investor_id, invoice_id, Money::units(10)).await;
    let winning = Bid {
        investor_id,
        amount: Money::units(10),
    };
    system
        .events
        .expect([
            placed(investor_id, invoice_id, Money::units(10)),
            Event::Invoice(InvoiceEvent::InvoiceFinanced {
                invoice_id,
                asking_price: Money::units(10),
                bid: winning,
            }),
        ])
        .await;
    system.assert_nothing_else_published().await;
}

#[tokio::test]
async fn a_sale_retried_with_its_idempotency_key_creates_one_invoice() {
    let mut system = System::start().await;
    let issuer_id = register_issuer(&mut system).await;
    let mut commands = system.commands_as(issuer(issuer_id)).await;
    let mut ids = Vec::new();
    for _attempt in 0..3 {
        let mut request = Request::new(SellInvoiceCommand {
            issuer_id: uuid(issuer_id),
            asking_price: money(Money::units(15)),
        });
        request
            .metadata_mut()
            .insert("idempotency-key", "invoice-2026-0042".parse().unwrap());
        ids.push(
            commands
                .sell_invoice(request)
                .await
                .unwrap()
                .into_inner()
                .value,
        );
    }
    assert!(ids.windows(2).all(|pair| pair[0] == pair[1]), "{ids:?}");
    let invoice_id: InvoiceId = ids[0].parse().unwrap();
    system
        .events
        .expect([Event::Invoice(InvoiceEvent::InvoiceCreated {
            invoice_id,
            issuer_id,
            asking_price: Money::units(15),
        })])
        .await;
    // A sale after the retries (same key) comes next: the retries created nothing.
    sell_invoice(&mut system, Money::units(1)).await;
    system.assert_nothing_else_published().await;
}

#[tokio::test]
async fn a_client_s_trace_id_and_identity_follow_every_event_of_its_saga() {
    let mut system = System::start().await;
    let asking_price = Money::units(10);
    let (_, invoice_id) = sell_invoice(&mut system, asking_price).await;
    let investor_id = register_investor(&mut system, Money::units(100)).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = Request::new(BidOnInvoiceCommand {
        investor_id: uuid(investor_id),
        invoice_id: uuid(invoice_id),
        bid: money(Money::units(20)),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    system
        .commands_as(investor(investor_id))
        .await
        .bid_on_invoice(request)
        .await
        .expect("the command is queued");

    // The bid, the invoice's answer and the surplus released: one chain, on two aggregates,
    // each event recording who asked for it (the audit trail).
    let mut types = Vec::new();
    for _ in 0..3 {
        let event = system.events.next().await;
        assert_eq!(
            event.meta.correlation_id.simple().to_string(),
            trace_id,
            "{event:?}"
        );
        assert_eq!(event.meta.actor, Some(investor(investor_id)), "{event:?}");
        types.push(event.event.type_name());
    }
    assert_eq!(
        types,
        [
            "BidOnInvoicePlaced",
            "InvoiceFinanced",
            "InvestorFundsReleased"
        ]
    );
    system.assert_nothing_else_published().await;
}
